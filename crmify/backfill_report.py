"""How a backfill run's progress reads: its counts with their labels, its time left, and today's use of the
CRM's quota by the backfill and by live changes.

Shared by the ``crmify_backfill`` command (its progress bar and closing line) and the admin's progress page
(:mod:`crmify.admin.backfill`), so both name the counts alike and estimate the time left the same way. The
dry run's own figures read through :meth:`crmify.backfill.BackfillPlan.rows`.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.db import models
from django.utils import timezone

from crmify.backfill import format_duration
from crmify.models import BackfillRun
from crmify.ratelimit import QuotaShare, QuotaState


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
