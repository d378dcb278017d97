"""The sweeper (``crmify_sync`` and ``sweep_task``): gives back claims of dead workers, queues due retries and
lost enqueues, prunes the ledger, and with ``drift`` catches writes that bypassed the signals."""

from __future__ import annotations

import datetime
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crmify import api, sweeper
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError, TransientBackendError
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sweeper import sweep
from crmify.tasks import sweep_task
from tests.doubles import Enqueued
from tests.engine_helpers import Configure, make_due, operations
from tests.factories import lead_of, make_user, user_values

pytestmark = pytest.mark.django_db(transaction=True)


# -- the sweeper -----------------------------------------------------------------------------------------


def test_sweeper_requeues_pending_leads_whose_enqueue_was_lost(enqueued: Enqueued) -> None:
    lead = lead_of(make_user())
    enqueued.clear()  # the broker lost it
    report = sweep()
    assert report.queued_lost == 0  # too recent: its task may still be on its way
    Lead.objects.filter(pk=lead.pk).update(queued_at=timezone.now() - datetime.timedelta(hours=1))
    report = sweep()
    assert report.queued_lost == 1
    assert enqueued.lead_ids == [lead.pk]
    assert enqueued.run_all() == ["synced"]


def test_sweeper_releases_claims_of_dead_workers_and_syncs_them() -> None:
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(
        sync_state=SyncState.SYNCING,
        fingerprint="changed",
        claim_token="dead-worker",
        claimed_at=timezone.now() - datetime.timedelta(hours=2),
    )
    report = sweep()
    assert report.released_claims == 1
    lead.refresh_from_db()
    assert lead.claim_token == ""
    assert lead.sync_state == SyncState.SYNCED
    assert operations() == ["create", "update"]


def test_sweeper_leaves_fresh_claims_alone() -> None:
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(
        sync_state=SyncState.SYNCING, claim_token="busy-worker", claimed_at=timezone.now()
    )
    assert sweep().released_claims == 0
    assert Lead.objects.get(pk=lead.pk).claim_token == "busy-worker"


def test_sweeper_runs_due_retries() -> None:
    locmem.fail_next(TransientBackendError("timeout"))
    lead = lead_of(make_user())
    assert sweep().queued_retries == 0
    make_due(lead)
    assert sweep().queued_retries == 1
    assert lead_of(User.objects.get()).sync_state == SyncState.SYNCED


# -- the drift scan --------------------------------------------------------------------------------------


def test_drift_scan_finds_rows_changed_by_queryset_update() -> None:
    user = make_user()
    User.objects.filter(pk=user.pk).update(first_name="Behind")
    assert operations() == ["create"]
    report = sweep(drift=True)
    assert (report.drift_scanned, report.drift_queued) == (1, 1)
    assert locmem.leads["1"]["first_name"] == "Behind"
    assert sweep(drift=True).drift_queued == 0


def test_drift_scan_finds_rows_created_by_bulk_create() -> None:
    User.objects.bulk_create([User(**user_values()) for _ in range(3)])
    assert Lead.objects.count() == 0
    report = sweep(drift=True)
    assert (report.drift_scanned, report.drift_queued) == (3, 3)
    assert Lead.objects.filter(sync_state=SyncState.SYNCED).count() == 3
    assert operations() == ["create"] * 3


def test_drift_scan_does_not_resurrect_tombstones() -> None:
    user = make_user()
    api.delete_from_crm([lead_of(user)])
    User.objects.filter(pk=user.pk).update(first_name="Behind")
    assert sweep(drift=True).drift_queued == 0
    assert operations() == ["create", "delete"]


# -- the command and the task ----------------------------------------------------------------------------


def test_crmify_sync_command_prints_what_it_did() -> None:
    User.objects.bulk_create([User(**user_values()) for _ in range(2)])
    out = StringIO()
    call_command("crmify_sync", "--drift", stdout=out)
    assert out.getvalue().strip() == (
        "crmify sweep: 0 stale claims released, 0 due retries queued, 0 lost enqueues queued, "
        "0 old ledger entries pruned, 2 rows scanned for drift, 2 changed."
    )
    assert operations() == ["create", "create"]


def test_crmify_sync_without_drift_reports_the_queue_work() -> None:
    out = StringIO()
    call_command("crmify_sync", stdout=out)
    assert out.getvalue().strip() == (
        "crmify sweep: 0 stale claims released, 0 due retries queued, 0 lost enqueues queued, "
        "0 old ledger entries pruned."
    )


def test_sweep_task_returns_the_report() -> None:
    make_user()
    result = sweep_task.using(backend="immediate").enqueue(drift=True)
    assert result.return_value["drift_scanned"] == 1
    assert result.return_value["released_claims"] == 0


# -- pruning the ledger ----------------------------------------------------------------------------------


def test_the_sweeper_prunes_ledger_entries_older_than_the_retention(configure: Configure) -> None:
    configure(LEDGER_RETENTION_DAYS=30)
    synced = lead_of(make_user())
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    failed = lead_of(make_user())
    now = timezone.now()
    LedgerEntry.objects.update(started_at=now - datetime.timedelta(days=31))
    LedgerEntry.objects.create(  # a call made for no one lead (the backfill's listing)
        lead=None, operation="list", outcome="ok", started_at=now - datetime.timedelta(days=400)
    )
    recent = LedgerEntry.objects.create(
        lead=synced, operation="update", outcome="ok", started_at=now - datetime.timedelta(days=29)
    )
    out = StringIO()
    call_command("crmify_sync", stdout=out)
    assert "2 old ledger entries pruned" in out.getvalue()
    # The recent call stays, and so does the old one that says why a lead is failed.
    assert set(LedgerEntry.objects.values_list("pk", flat=True)) == {
        recent.pk,
        *failed.ledger.values_list("pk", flat=True),
    }
    assert failed.ledger.get().outcome == LedgerEntry.Outcome.PERMANENT


def test_the_sweeper_prunes_in_bounded_batches_and_the_next_sweep_goes_on(
    configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeper, "PRUNE_BATCH", 2)
    monkeypatch.setattr(sweeper, "PRUNE_BATCHES_PER_SWEEP", 2)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            operation="list", outcome="ok", started_at=timezone.now() - datetime.timedelta(days=91)
        )
        for _ in range(5)
    )
    with CaptureQueriesContext(connection) as queries:
        assert sweep().pruned_ledger == 4  # two deletes of two rows: the default 90 days applies
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2
    assert sweep().pruned_ledger == 1
    assert LedgerEntry.objects.count() == 0


def test_ledger_retention_none_keeps_every_entry(configure: Configure) -> None:
    configure(LEDGER_RETENTION_DAYS=None)
    lead_of(make_user())
    LedgerEntry.objects.update(started_at=timezone.now() - datetime.timedelta(days=3650))
    assert sweep().pruned_ledger == 0
    assert LedgerEntry.objects.count() == 1
