"""The ledger of CRM calls: how the engine reads a backend's error, and the rows each call leaves.

Called by the worker (each lead's calls) and the backfill (its listing of the CRM); ``classify`` also by
the public API. Every text a row keeps goes through ``crmify.secrets.redact``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured

from crmify.backends.base import CallRecord
from crmify.exceptions import BackendError, MappingError, PermanentBackendError, QuotaExhausted
from crmify.models import Lead, LedgerEntry
from crmify.secrets import redact

#: How much of an error the lead (``last_error``) and a ledger row keep.
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Failure:
    """How the engine reads an exception from a backend."""

    message: str
    permanent: bool
    retry_after: float | None = None
    resets_at: datetime | None = None

    @property
    def outcome(self) -> str:
        return LedgerEntry.Outcome.PERMANENT if self.permanent else LedgerEntry.Outcome.TRANSIENT


def classify(exc: BaseException) -> Failure:
    """Permanent for crmify's permanent errors, mapping and configuration errors; transient otherwise."""
    if isinstance(exc, QuotaExhausted):
        return Failure(str(exc), permanent=False, resets_at=exc.resets_at)
    if isinstance(exc, PermanentBackendError | MappingError | ImproperlyConfigured):
        return Failure(str(exc), permanent=True)
    if isinstance(exc, BackendError):
        return Failure(str(exc), permanent=False, retry_after=exc.retry_after)
    # Any other exception from a custom backend: retried, with its text kept.
    return Failure(f"{type(exc).__name__}: {exc}", permanent=False)


def write_ledger(
    lead: Lead | None,
    records: list[CallRecord],
    operation: str,
    started_at: datetime,
    started: float,
    error: BaseException | None,
) -> None:
    """One ledger row per CRM call the backend reported, or one for the whole operation if it reported none.

    An error the backend raised after calls that went well (an unknown status found after the lookup by
    e-mail) gets a row of its own too: the ledger's last word on a failed lead is always why it failed.
    ``lead`` is None for calls made for no one lead (the backfill's listing of the CRM).
    """
    if not records or (error is not None and records[-1].outcome == LedgerEntry.Outcome.OK):
        failure = classify(error) if error is not None else None
        records = [
            *records,
            CallRecord(
                operation,
                outcome=failure.outcome if failure else LedgerEntry.Outcome.OK,
                http_status=getattr(error, "status_code", None),
                duration_ms=int((time.monotonic() - started) * 1000),
                error=failure.message if failure else "",
            ),
        ]
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            lead_id=lead.pk if lead is not None else None,
            operation=record.operation,
            started_at=started_at,
            duration_ms=record.duration_ms,
            outcome=record.outcome,
            http_status=record.http_status,
            error=redact(record.error)[:MAX_ERROR_LENGTH],
            request_summary=redact(record.request_summary),
            response_summary=redact(record.response_summary),
        )
        for record in records
    )


def write_refusal(lead: Lead, current: str, wanted: str, now: datetime) -> None:
    """The ledger's row for an automatic status change the funnel refused (``crmify.tracking``): no CRM
    call was made, so it takes no time and has no HTTP status; its outcome is ``refused``."""
    LedgerEntry.objects.create(
        lead_id=lead.pk,
        operation="status",
        started_at=now,
        outcome=LedgerEntry.Outcome.REFUSED,
        error=(
            f"Status change to {wanted!r} refused: it would move the lead back from {current!r} "
            "(an automatic change never does; staff may force it)."
        ),
    )
