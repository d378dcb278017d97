"""Finds work that fell through the cracks and queues it again.

Called by ``manage.py crmify_sync`` (cron, for sites that prefer it) and the ``crmify.tasks.sweep_task``
task, which schedules itself every ``SWEEP_INTERVAL`` seconds on any Tasks backend that can defer: no cron
needed. It gives back claims of workers that died, queues due retries and pending leads whose enqueue was
lost (not those still waiting in the database queue behind a backlog), probes a CRM that is down if its
probe is overdue and releases leads still waiting for a CRM that is up (``crmify.crm_state``), prunes
ledger entries older than ``LEDGER_RETENTION_DAYS``, and with ``drift=True`` re-maps every ``LEAD_MODEL``
row to catch writes that bypassed the signals (``queryset.update``, ``bulk_create``).

One sweep at a time across every process: a sweep takes a lock in the shared cache first (a cron sweep
and a scheduled one that meet, or two schedules, do not sweep twice at once).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from crmify.conf import crmify_settings
from crmify.crm_state import crm_state, shared_cache
from crmify.loading import get_lead_model, get_mapper
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.queue import backend_supports_defer, crmify_task, waiting_in_queue
from crmify.schedule import Schedule
from crmify.sources import iterate_source_rows
from crmify.tracking import new_lead, track
from crmify.worker import LEAD_TASKS, enqueue_lead, probe_crm, release_waiting_leads

#: The shared cache's key of the running sweep's lock.
_RUNNING = "crmify:sweep:running"


@dataclass
class SweepReport:
    """What one sweep did, for the command's output and the task's result."""

    released_claims: int = 0
    queued_retries: int = 0
    queued_lost: int = 0
    pruned_ledger: int = 0
    drift_scanned: int = 0
    drift_queued: int = 0
    #: Leads that still waited for a CRM that answers again (the news of its return was lost).
    released_waiting: int = 0
    #: Another sweep was running: this one did nothing.
    skipped: bool = False

    def __str__(self) -> str:
        if self.skipped:
            return "skipped: another sweep is running"
        text = (
            f"{self.released_claims} stale claims released, {self.queued_retries} due retries queued, "
            f"{self.queued_lost} lost enqueues queued, {self.pruned_ledger} old ledger entries pruned"
        )
        if self.drift_scanned:
            text += f", {self.drift_scanned} rows scanned for drift, {self.drift_queued} changed"
        if self.released_waiting:
            text += f", {self.released_waiting} leads waiting for the CRM queued"
        return text


def sweep(*, drift: bool = False) -> SweepReport:
    """Run one sweep, unless another is running anywhere; see the module docstring."""
    cache = shared_cache()
    # Held at most CLAIM_TIMEOUT: a sweeper killed mid-sweep does not stop sweeping for good.
    if not cache.add(_RUNNING, 1, timeout=crmify_settings.CLAIM_TIMEOUT):
        return SweepReport(skipped=True)
    try:
        return _sweep(drift)
    finally:
        cache.delete(_RUNNING)


def _sweep(drift: bool) -> SweepReport:
    report = SweepReport()
    now = timezone.now()
    # The CRM: a probe whose task was lost (or a backend that cannot defer it) is made here; leads
    # still waiting for a CRM that is up go now.
    if crm_state().down:
        probe_crm()
    elif Lead.objects.waiting_for_crm().exists():
        report.released_waiting = release_waiting_leads()
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
def sweep_task(drift: bool = False, schedule: str = "") -> dict[str, Any]:
    """One sweep (see :func:`sweep`), as a task. Queued by :data:`SWEEPS` with the token of the
    schedule (``schedule``), it first queues the next sweep of that schedule, so a worker that dies
    mid-sweep does not end it; a schedule that another replaced stops."""
    if schedule and not SWEEPS.go_on(schedule):
        return asdict(SweepReport(skipped=True))
    return asdict(sweep(drift=drift))


#: The sweeps' own schedule, every ``SWEEP_INTERVAL`` seconds (``crmify.schedule``).
SWEEPS = Schedule(
    "sweep", sweep_task, lambda: crmify_settings.SWEEP_INTERVAL, "the sweep", args=(False,)
)


def start_sweeping() -> bool:
    """Start the schedule of sweeps (every ``SWEEP_INTERVAL`` seconds) unless one runs: True if this
    call started it.

    Called after ``migrate`` (a fresh site, every deploy) and whenever a worker starts a crmify task
    (``crmify.schedule.connect_schedules``), so the schedule starts with the workers and comes back if
    its task was lost. A Tasks backend that cannot defer has no schedule (``crmify.W065``: use cron).
    """
    return SWEEPS.start()


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
