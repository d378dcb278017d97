"""Crash safety: ``kill -9`` a worker in the middle of a batch of syncs (``db_worker`` and RQ's ``rqworker``)
and of a backfill, and two workers racing for one lead.

The kill lands at the worst moment: the sandbox's create-timeout trap holds a create it has already
made, so the CRM has the lead and crmify does not know it. After a restarted worker and the sweeper
(``manage.py crmify_sync``) every lead is synced once: the dead worker's claim is given back, and the next
attempt adopts the CRM's lead by e-mail instead of creating a twin. ``tests/test_backfill.py`` covers a kill
inside a backfill chunk's write (and its resume); here the kill lands in the chunk's syncs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult

from crmify import backfill
from crmify.backfill import BackfillOptions
from crmify.models import Lead, SyncState
from crmify.sandbox import SandboxServer
from crmify.tracking import track
from crmify.worker import enqueue_lead
from tests.conftest import FAST_SANDBOX, calls, crmify_for
from tests.factories import lead_of, make_user
from tests.reliability.processes import (
    Worker,
    finish,
    kill,
    start_db_worker,
    start_rq_worker,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEADS = 30
#: Leads synced before the kill: some, not all.
SYNCED_BEFORE_KILL = 8


#: How each kind of worker starts (in batch or burst mode: it exits when the queue is empty), and the
#: Tasks backend alias it serves.
WORKERS: dict[str, tuple[Callable[[dict[str, Any]], Worker], str]] = {
    "db_worker": (start_db_worker, "default"),
    "rqworker": (start_rq_worker, "rq"),
}


def kill_while_a_create_is_held(sandbox: SandboxServer, worker: Any) -> Lead:
    """Once ``SYNCED_BEFORE_KILL`` leads are synced, hold the next create after the CRM made it, and
    ``kill -9`` the worker while it waits for the answer. Returns the lead it was syncing."""
    wait_until(
        lambda: Lead.objects.filter(sync_state=SyncState.SYNCED).count() >= SYNCED_BEFORE_KILL,
        message=f"{SYNCED_BEFORE_KILL} leads synced",
    )
    # The worker's TIMEOUT (5 s) is far shorter than the hold: it is still waiting when it dies.
    sandbox.set_faults(create_timeout_rate=1.0, create_timeout_delay=60)
    wait_until(
        lambda: sandbox.stats()["injected"]["create_timeout"] >= 1,
        message="a create made in the CRM and held",
    )
    kill(worker)
    sandbox.set_faults(create_timeout_rate=0.0)
    # Read after the kill, when nothing moves any more: a lead whose create was answered just before the
    # hold began may still have looked "syncing" a moment earlier.
    in_crm = {lead["EMAIL"] for lead in sandbox.leads()}
    held = [
        lead for lead in Lead.objects.filter(sync_state=SyncState.SYNCING) if lead.email in in_crm
    ]
    assert len(held) == 1, held
    return held[0]


@pytest.mark.parametrize(
    ("work", "kind"), [("batch", "db_worker"), ("backfill", "db_worker"), ("batch", "rqworker")]
)
def test_a_worker_killed_mid_work_loses_and_duplicates_nothing(
    work: str,
    kind: str,
    crm: SandboxServer,
    configure: Callable[..., None],
    request: pytest.FixtureRequest,
) -> None:
    start_worker, task_backend = WORKERS[kind]
    if kind == "rqworker":
        request.getfixturevalue("redis_db")
    settings = crmify_for(crm, task_backend=task_backend, **FAST_SANDBOX)
    configure(TASK_BACKEND=task_backend, AUTO_SYNC=work == "batch")
    # Each save queues its sync (batch); or the rows exist before crmify's backfill (backfill).
    users = [make_user(first_name=f"Crash {n}") for n in range(LEADS)]
    if work == "backfill":
        backfill.start(BackfillOptions(batch_size=10))

    doomed = start_worker(settings)
    victim = kill_while_a_create_is_held(crm, doomed)
    synced = Lead.objects.filter(sync_state=SyncState.SYNCED).count()
    assert SYNCED_BEFORE_KILL <= synced < LEADS
    assert any(lead["EMAIL"] == victim.email for lead in crm.leads())

    # A restarted worker finishes what is still queued; the dead worker's lead stays claimed.
    finish(start_worker(settings))
    victim.refresh_from_db()
    assert victim.sync_state == SyncState.SYNCING
    assert Lead.objects.exclude(sync_state=SyncState.SYNCED).exists()

    # The sweeper gives back the stale claim and queues whatever the dead worker's task never reached.
    configure(CLAIM_TIMEOUT=0, SWEEP_PENDING_AFTER=0)
    out = StringIO()
    call_command("crmify_sync", stdout=out)
    assert "1 stale claims released" in out.getvalue()
    finish(start_worker(settings))

    # Nothing lost: every lead synced with its values. Nothing duplicated: one CRM lead per e-mail.
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.SYNCED}
    crm_leads = {lead["EMAIL"]: lead for lead in crm.leads()}
    assert Counter(lead["EMAIL"] for lead in crm.leads()) == {user.email: 1 for user in users}
    for user in users:
        lead = lead_of(user)
        assert int(lead.external_id) == crm_leads[user.email]["LEAD_ID"]
        assert crm_leads[user.email]["FIRST_NAME"] == user.first_name
    # One create per lead, the dead worker's included; its lead was adopted by e-mail, then updated.
    assert calls(crm, "POST /Leads") == LEADS
    assert calls(crm, "PUT /Leads") >= 1
    assert victim.ledger.filter(operation="update", outcome="ok").exists()


@pytest.mark.postgres
def test_two_worker_processes_racing_for_one_lead_make_one_crm_call(
    postgres_only: None, crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="default")
    user = make_user(email="race@example.com")
    lead = track(user)  # queues one sync (committed at once: no transaction around the test)
    assert enqueue_lead(lead.pk)  # and a second, as a site's save and the sweeper might
    assert DBTaskResult.objects.count() == 2
    # Each CRM call takes 3 s: the first worker holds the lead while the second reaches it.
    crm.set_faults(latency=3.0)

    workers = [
        start_db_worker(crmify_for(crm, task_backend="default", **FAST_SANDBOX)) for _ in range(2)
    ]
    for worker in workers:
        finish(worker)

    tasks = list(DBTaskResult.objects.order_by("started_at"))
    assert sorted(task.return_value for task in tasks) == ["skipped", "synced"]
    # Both workers ran one task each, the second while the first was inside its CRM calls.
    assert tasks[0].worker_ids != tasks[1].worker_ids
    assert tasks[1].started_at < tasks[0].finished_at
    assert (calls(crm, "GET /Leads/Search"), calls(crm, "POST /Leads")) == (1, 1)
    assert [lead["EMAIL"] for lead in crm.leads()] == ["race@example.com"]
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert User.objects.count() == 1
