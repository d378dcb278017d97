"""How a backfill run's progress reads: its counts with their labels, the leads it queued and where they
are (delivered to the CRM or not), the time left, and today's use of the CRM's quota by the backfill and
by live changes.

Shared by the ``crmify_backfill`` command (its progress bars and closing line) and the admin's progress page
(:mod:`crmify.admin.backfill`), so both name the counts alike, say "Finished" at the same moment (every lead
the run queued reached a final state: mapping rows is not delivering them) and estimate the time left the
same way. :func:`run_progress` computes every figure both show, in one place, so a new block (today's use
of a quota share, say) is added once. The dry run's own figures read through
:meth:`crmify.backfill.BackfillPlan.rows`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crmify.backfill import format_duration
from crmify.models import BackfillRun, Lead, SyncState
from crmify.ratelimit import QuotaShare, QuotaState
from crmify.worker import current_backend

#: Leads a run queued that have not reached a final state yet.
WAITING_STATES = (SyncState.PENDING, SyncState.SYNCING, SyncState.RETRYING)


@dataclass(frozen=True)
class Delivery:
    """Where the leads a run queued stand with the CRM (one aggregate query, :func:`delivery_of`)."""

    queued: int = 0
    synced: int = 0
    failed: int = 0
    waiting: int = 0

    @property
    def settled(self) -> int:
        """Leads in a final state: synced, failed, or deleted since (a final state too)."""
        return self.queued - self.waiting

    @property
    def percent(self) -> int:
        return 100 if not self.queued else int(100 * self.settled / self.queued)


def delivery_of(run: BackfillRun) -> Delivery:
    """Count the leads ``run`` queued by state, in one aggregate query whatever their number. A lead a
    later run queued again counts for that run."""
    figures = Lead.objects.filter(backfill_run=run).aggregate(
        queued=Count("pk"),
        synced=Count("pk", filter=Q(sync_state=SyncState.SYNCED)),
        failed=Count("pk", filter=Q(sync_state=SyncState.FAILED)),
        waiting=Count("pk", filter=Q(sync_state__in=WAITING_STATES)),
    )
    return Delivery(**figures)


class Stage(models.TextChoices):
    """Where a run is, as staff read it: only ``finished`` when every lead it queued was delivered."""

    WAITING = "waiting", _("Waiting for the task worker")
    MAPPING = "mapping", _("Mapping rows")
    DELIVERING = "delivering", _("Delivering to the CRM")
    FINISHED = "finished", _("Finished")
    CANCELLED = "cancelled", _("Cancelled")
    FAILED = "failed", _("Failed")


@dataclass(frozen=True)
class RunProgress:
    """Every figure of a run's progress, for the admin's page and the command's bars."""

    run: BackfillRun
    delivery: Delivery
    stage: Stage
    mapping_eta: str | None
    delivery_eta: str | None

    @property
    def stage_label(self) -> str:
        return str(self.stage.label)

    @property
    def settled(self) -> bool:
        """Nothing will move any more: the rows are mapped (or the run stopped) and no lead is waiting.
        The admin's page stops refreshing then, the command stops following."""
        return not self.run.is_active and not self.delivery.waiting


def run_progress(run: BackfillRun) -> RunProgress:
    """The progress of ``run``: the rows mapped (from the run), the leads delivered (one query), the
    stage, and the time left of each part. The delivery's time left assumes one call a lead at the
    backend's pace (``requests_per_second``), the pace every worker shares; None when it keeps none."""
    delivery = delivery_of(run)
    if run.state == BackfillRun.State.PENDING:
        stage = Stage.WAITING
    elif run.state == BackfillRun.State.RUNNING:
        stage = Stage.MAPPING
    elif run.state == BackfillRun.State.FINISHED:
        stage = Stage.DELIVERING if delivery.waiting else Stage.FINISHED
    else:
        stage = Stage(run.state)  # cancelled or failed; its queued leads are still delivered
    return RunProgress(
        run=run,
        delivery=delivery,
        stage=stage,
        mapping_eta=eta_text(run) if run.is_active else None,
        delivery_eta=_delivery_eta(delivery.waiting),
    )


def _delivery_eta(waiting: int) -> str | None:
    if not waiting:
        return None
    try:
        rate = current_backend().requests_per_second()
    except ImproperlyConfigured:
        return None  # the system checks say why the backend cannot be built
    return format_duration(waiting / rate) if rate else None


def run_counts(run: BackfillRun) -> list[tuple[str, int]]:
    """``(label, count)`` for each of ``BackfillRun.COUNTS``, labelled by the field's verbose name."""
    return [(_label(name), getattr(run, name)) for name in BackfillRun.COUNTS]


def _label(name: str) -> str:
    field = BackfillRun._meta.get_field(name)
    assert isinstance(field, models.Field)  # the counts are integer columns, never relations
    return str(field.verbose_name)


def counts_sentence(run: BackfillRun) -> str:
    """``"5 scanned, 5 created, 0 updated, ..."``: the counts as one line of text."""
    return ", ".join(f"{count:,} {label}" for label, count in run_counts(run))


def eta_text(run: BackfillRun, seconds_per_row: float | None = None) -> str | None:
    """The time left as ``format_duration`` text, or None while there is no pace to go by.

    ``seconds_per_row`` is a pace the caller measured itself (the command's ``--wait`` loop: the run may
    have stood still for days before it resumed); without it the run's own pace since it started counts.
    """
    if seconds_per_row is not None:
        seconds: float | None = seconds_per_row * max(run.total_estimate - run.scanned, 0)
    else:
        seconds = run.eta_seconds()
    return format_duration(seconds) if seconds is not None else None


def quota_share_rows(
    state: QuotaState | None, live_share: float, now: datetime | None = None
) -> list[tuple[str, str]]:
    """``(label, value)`` rows for today's use of the CRM's quota by each share (the backfill's, and the
    ``LIVE_QUOTA_SHARE`` kept for live changes), and whether the backfill is paused and until when.

    Empty when the backend reports no quota. The live figure is the CRM's own count of the window's calls
    less the backfill's (``QuotaState.used_by``). Read by the admin's backfill progress page.
    """
    if state is None or state.limit is None or state.remaining is None:
        return []
    kept = math.ceil(state.limit * live_share)
    backfill, live = state.used_by(QuotaShare.BACKFILL), state.used_by(QuotaShare.LIVE)
    rows = [
        (
            "CRM quota used today",
            f"{state.limit - state.remaining:,} of {state.limit:,}"
            + (f" (the window resets about {_when(state.resets_at)})" if state.resets_at else ""),
        ),
        ("By the backfill", f"{backfill:,} of its {state.limit - kept:,}"),
        ("By live sign-ups and changes", f"{live:,} of the {kept:,} kept for them"),
    ]
    paused = state.paused_until(live_share, now)
    rows.append(("Backfill", f"paused until {_when(paused[0])}" if paused else "sending"))
    return rows


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
