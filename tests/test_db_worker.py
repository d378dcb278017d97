"""A real ``db_worker`` process (django-tasks-db) drains the syncs the site queued, each lead exactly once.

The locmem CRM lives inside the worker processes, so the test reads the outcome where the site would: the
``Lead`` rows and the ledger. The worker opens the test's own database (``tests.reliability.processes``);
on SQLite that is a file both processes share.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django_tasks_db.models import DBTaskResult

from crmify.models import Lead, LedgerEntry, SyncState
from tests.factories import lead_of, make_user
from tests.reliability.processes import finish, start_db_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_db_worker_processes_drain_queued_syncs_exactly_once(
    configure: Callable[..., None],
) -> None:
    configure(TASK_BACKEND="default")
    users = [make_user(first_name=f"Worker {n}") for n in range(12)]
    # Changed again before any worker ran: two tasks for these leads, still one create each.
    for user in users[:4]:
        user.last_name = "Changed"
        user.save()
    assert DBTaskResult.objects.count() == 16
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.PENDING}

    # Two workers race over the queue; the claim keeps them off each other's leads.
    workers = [start_db_worker(), start_db_worker()]
    for worker in workers:
        finish(worker)

    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}
    for user in users:
        lead = lead_of(user)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert lead.external_id
        assert lead.synced_fingerprint == lead.fingerprint
        ledger = list(lead.ledger.values_list("operation", "outcome"))
        assert ledger == [("create", "ok")], f"{lead}: {ledger}"
    assert LedgerEntry.objects.count() == len(users)
    assert {lead.last_name for lead in Lead.objects.filter(last_name="Changed")} == {"Changed"}
    assert Lead.objects.filter(last_name="Changed").count() == 4
