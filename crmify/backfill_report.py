"""How a backfill run's progress reads: its counts with their labels and its time left.

Shared by the ``crmify_backfill`` command (its progress bar and closing line) and the admin's progress page
(:mod:`crmify.admin.backfill`), so both name the counts alike and estimate the time left the same way. The
dry run's own figures read through :meth:`crmify.backfill.BackfillPlan.rows`.
"""

from __future__ import annotations

from django.db import models

from crmify.backfill import format_duration
from crmify.models import BackfillRun


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
