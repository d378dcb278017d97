"""Finds work that fell through the cracks and queues it again.

Called by ``manage.py crmify_sync`` and the ``crmify.tasks.sweep_task`` task (schedule either). It gives back
claims of workers that died, queues due retries and pending leads whose enqueue was lost (not those still
waiting in the database queue behind a backlog), prunes ledger entries older than
``LEDGER_RETENTION_DAYS``, and with ``drift=True`` re-maps every ``LEAD_MODEL`` row to catch writes that
bypassed the signals (``queryset.update``, ``bulk_create``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from crmify.conf import crmify_settings
from crmify.loading import get_lead_model, get_mapper
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.queue import backend_supports_defer, crmify_task, waiting_in_queue
from crmify.sources import iterate_source_rows
from crmify.tracking import new_lead, track
from crmify.worker import LEAD_TASKS, enqueue_lead


@dataclass
class SweepReport:
    """What one sweep did, for the command's output and the task's result."""

    released_claims: int = 0
    queued_retries: int = 0
    queued_lost: int = 0
    pruned_ledger: int = 0
    drift_scanned: int = 0
    drift_queued: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.released_claims} stale claims released, {self.queued_retries} due retries queued, "
            f"{self.queued_lost} lost enqueues queued, {self.pruned_ledger} old ledger entries pruned"
        )
        if self.drift_scanned:
            text += f", {self.drift_scanned} rows scanned for drift, {self.drift_queued} changed"
        return text


def sweep(*, drift: bool = False) -> SweepReport:
    """Run one sweep; see the module docstring."""
    report = SweepReport()
    now = timezone.now()
    report.released_claims = release_stale_claims(
        now - timedelta(seconds=crmify_settings.CLAIM_TIMEOUT)
    )
    lost_before = now - timedelta(seconds=crmify_settings.SWEEP_PENDING_AFTER)
    # A backend that can defer already holds a task for each retry; only long-overdue ones were lost.
    due_before = lost_before if backend_supports_defer() else now
    due_ids = list(Lead.objects.retry_due(due_before).values_list("pk", flat=True))
    lost_ids = list(Lead.objects.lost(lost_before).values_list("pk", flat=True))
    waiting = waiting_in_queue([*due_ids, *lost_ids], LEAD_TASKS)
    report.queued_retries = _requeue(due_ids, waiting, now)
    report.queued_lost = _requeue(lost_ids, waiting, now)
    days = crmify_settings.LEDGER_RETENTION_DAYS
    if days is not None:
        report.pruned_ledger = prune_ledger(now - timedelta(days=days))
    if drift:
        report.drift_scanned, report.drift_queued = scan_drift()
    return report


@crmify_task
def sweep_task(drift: bool = False) -> dict[str, Any]:
    """One sweep (see :func:`sweep`), as a task; schedule it every few minutes."""
    return asdict(sweep(drift=drift))


def release_stale_claims(before: Any) -> int:
    """Give back claims older than ``before``: their worker died (``kill -9``, a lost machine)."""
    return Lead.objects.release_stale_claims(before)


#: Ledger rows deleted per statement, and statements per sweep: each delete stays short (no long lock,
#: no huge transaction); a backlog larger than one sweep's share is finished by the next sweeps.
PRUNE_BATCH = 1000
PRUNE_BATCHES_PER_SWEEP = 100


def prune_ledger(before: Any) -> int:
    """Delete ledger entries that started before ``before``, ``PRUNE_BATCH`` rows a statement and at most
    ``PRUNE_BATCHES_PER_SWEEP`` statements; how many went.

    The entries of a lead that is failed now are kept, however old: they say why it failed, and
    "Re-sync" reads the last one (a 404 on update re-creates the CRM record).
    """
    old = LedgerEntry.objects.filter(started_at__lt=before).exclude(
        lead__sync_state=SyncState.FAILED
    )
    pruned = 0
    for _ in range(PRUNE_BATCHES_PER_SWEEP):
        ids = list(old.order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            break
        pruned += LedgerEntry.objects.filter(pk__in=ids).delete()[0]
    return pruned


def _requeue(ids: list[int], waiting: set[int], now: Any) -> int:
    ids = [lead_id for lead_id in ids if lead_id not in waiting]
    Lead.objects.filter(pk__in=ids).mark_queued(now)
    return sum(1 for lead_id in ids if enqueue_lead(lead_id))


def scan_drift() -> tuple[int, int]:
    """Re-map every source row; track the ones whose values moved behind the signals' back."""
    mapper = get_mapper()
    source_type = ContentType.objects.get_for_model(get_lead_model())
    scanned = queued = 0
    for rows in iterate_source_rows(mapper):
        leads = {lead.source_id: lead for lead in Lead.objects.of_rows(rows)}
        for row in rows:
            scanned += 1
            lead = leads.get(str(row.pk))
            before = lead.fingerprint if lead else None
            # A row without a lead (bulk_create) gets a new one here: no per-row lookup.
            after = track(row, mapper=mapper, lead=lead or new_lead(row, source_type=source_type))
            if after.fingerprint != before and after.sync_state == SyncState.PENDING:
                queued += 1
    return scanned, queued
