"""The fault soak in CI: 200 users through four writers and two ``db_worker`` processes into a sandbox
that fails a third of the calls (the scenario and its checks: ``tests/reliability/soak.py``).

The full soak (2,000 users, with its table of figures) is ``make soak`` (``bench/soak.py``).
``SOAK_USERS`` changes the load here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.sweeper import sweep
from tests.conftest import calls, crmify_for
from tests.factories import lead_of, make_user
from tests.reliability.soak import Soak, run_soak, soak_crmify

USERS = int(os.environ.get("SOAK_USERS", "200"))


def soaked(sandbox: SandboxServer | HubSpotSandbox, configure: Callable[..., None]) -> Soak:
    """Run the soak against ``sandbox`` and check what holds on every CRM: the CRM ends equal to the app
    with no duplicate, loss or orphan; every kind of fault was met (the soak proves nothing against a
    healthy sandbox); only the rejected users failed, and every one of them did."""
    settings = soak_crmify(sandbox)
    configure(**settings)
    soak = run_soak(sandbox, settings, users=USERS, timeout=300)
    print("\n".join(f"{name}: {value}" for name, value in soak.figures()))

    assert soak.problems == []
    assert (soak.duplicates, soak.lost, soak.orphans) == (0, 0, 0)
    assert all(
        soak.injected()[kind] > 0 for kind in ("error", "burst_429", "drop", "create_timeout")
    )
    assert soak.ledger["transient"] > 0
    assert soak.states["failed"] == soak.changes["reject"] > 0
    assert soak.states["deleted"] == soak.changes["delete"] > 0
    assert soak.states["synced"] == USERS - soak.changes["reject"] - soak.changes["delete"]
    return soak


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_crm_ends_equal_to_the_app_under_faults_without_duplicates_or_losses(
    postgres_only: None, sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    soaked(sandbox, configure)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_hubspot_batches_end_equal_to_the_app_under_faults_without_duplicates_or_losses(
    postgres_only: None, hubspot_sandbox: HubSpotSandbox, configure: Callable[..., None]
) -> None:
    """The same soak on HubSpot: the leads go in batch upserts and updates; 5xx, 429s, dropped
    connections and timed-out creates and upserts as above; contacts already in HubSpot (409s on
    creates); users given an e-mail HubSpot refuses, named in 207 answers among good inputs."""
    figures = dict(soaked(hubspot_sandbox, configure).figures())
    assert int(figures["batch calls"].replace(",", "")) > 0
    assert int(figures["batch answers 207 (some inputs refused)"]) > 0
    # Contacts HubSpot had before the run: each adopted by its user's lead, by a create's 409 or an
    # upsert by e-mail (a mismatch is one of soak.problems).
    adopted, seeded = figures[
        "contacts in HubSpot before the run, adopted by their user's lead"
    ].split(" of ")
    assert int(adopted) > 0 and int(seeded) > 0


@pytest.mark.django_db(transaction=True)
def test_a_user_deleted_after_a_timed_out_create_leaves_no_lead_in_the_crm(
    insightly: SandboxServer, configure: Callable[..., None]
) -> None:
    """A path of the soak, pinned down: the create timed out but made the lead, the user was deleted
    before the retry, and the tombstone used to be called deleted without a CRM call, leaving the CRM
    lead behind. Now the worker looks the lead up by e-mail and deletes it."""
    configure(**crmify_for(insightly, TIMEOUT=0.5))
    insightly.set_faults(create_timeout_rate=1.0, create_timeout_delay=1.0)
    user = make_user()
    lead = lead_of(user)
    assert (lead.sync_state, lead.external_id, len(insightly.leads())) == (
        SyncState.RETRYING,
        "",
        1,
    )

    user.delete()

    lead.refresh_from_db()
    assert (lead.sync_state, lead.tombstone) == (SyncState.DELETED, True)
    assert insightly.leads() == []
    assert calls(insightly, "DELETE /Leads/{id}") == 1
    assert list(lead.ledger.order_by("started_at", "id").values_list("operation", "outcome"))[
        -2:
    ] == [
        ("lookup", LedgerEntry.Outcome.OK),
        ("delete", LedgerEntry.Outcome.OK),
    ]


@pytest.mark.django_db
def test_the_sweeper_leaves_a_lead_waiting_in_the_database_queue_alone(
    configure: Callable[..., None],
) -> None:
    """Found by the soak: behind a backlog longer than ``SWEEP_PENDING_AFTER`` every pending lead was
    queued again at each pass, and the backlog grew by itself (1,316 extra tasks in one pass)."""
    configure(TASK_BACKEND="default")
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(queued_at=timezone.now() - timedelta(hours=1))
    assert DBTaskResult.objects.filter(status="READY").count() == 1

    assert sweep().queued_lost == 0
    assert DBTaskResult.objects.count() == 1

    # A worker took the task and died: now the lead's enqueue is lost, and the sweeper queues it.
    DBTaskResult.objects.update(status="RUNNING")
    assert sweep().queued_lost == 1
    assert DBTaskResult.objects.filter(status="READY").count() == 1
