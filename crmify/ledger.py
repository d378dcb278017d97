"""The ledger of CRM calls: how the engine reads a backend's error, and the rows each call leaves.

Called by the worker (each lead's calls, and each batch call's rows per lead) and the backfill (its listing of the CRM); ``classify`` also by
the public API; :func:`write_inbound` by ``crmify.inbound`` (changes read back from the CRM). Every text a
row keeps goes through ``crmify.secrets.redact``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import requests
from django.core.exceptions import ImproperlyConfigured

from crmify.backends.base import BatchItem, CallRecord
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
    #: The error says the CRM itself is unreachable or failing (no answer, a timeout, a 5xx), not that
    #: it refused this lead: ``crmify.crm_state`` counts these towards marking the CRM down.
    outage: bool = False
    #: The CRM answered (with an error about this lead): it is up, whatever this lead's fate.
    answered: bool = False
    #: The CRM answered 404: it has no record by the id asked for (on an update: deleted in the CRM).
    not_found: bool = False

    @property
    def outcome(self) -> str:
        return LedgerEntry.Outcome.PERMANENT if self.permanent else LedgerEntry.Outcome.TRANSIENT


def classify(exc: BaseException) -> Failure:
    """Permanent for crmify's permanent errors, mapping and configuration errors; transient otherwise."""
    status = getattr(exc, "status_code", None)
    answered = isinstance(exc, BackendError) and status is not None and status < 500
    if isinstance(exc, QuotaExhausted):
        return Failure(str(exc), permanent=False, resets_at=exc.resets_at, answered=answered)
    if isinstance(exc, PermanentBackendError | MappingError | ImproperlyConfigured):
        return Failure(str(exc), permanent=True, answered=answered, not_found=status == 404)
    if isinstance(exc, BackendError):
        # No answer at all (a connection error, a timeout: no status) or the CRM failing (5xx).
        outage = status is None or status >= 500
        return Failure(
            str(exc), permanent=False, retry_after=exc.retry_after, outage=outage, answered=answered
        )
    # Any other exception from a custom backend: retried, with its text kept; a network error (a 1.3
    # backend calling requests itself) says the CRM is unreachable.
    return Failure(
        f"{type(exc).__name__}: {exc}",
        permanent=False,
        outage=isinstance(
            exc, ConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout
        ),
    )


def write_ledger(
    lead: Lead | None,
    records: list[CallRecord],
    operation: str,
    started_at: datetime,
    started: float,
    error: BaseException | None,
    direction: str = LedgerEntry.Direction.OUT,
) -> None:
    """One ledger row per CRM call the backend reported, or one for the whole operation if it reported none.

    An error the backend raised after calls that went well (an unknown status found after the lookup by
    e-mail) gets a row of its own too: the ledger's last word on a failed lead is always why it failed.
    ``lead`` is None for calls made for no one lead (the backfill's listing of the CRM). ``direction`` is
    ``in`` for the calls that read changes back (the poller's, the webhook task's).
    """
    lead_id = lead.pk if lead is not None else None
    LedgerEntry.objects.bulk_create(
        _entry(lead_id, record, started_at, direction=direction)
        for record in _with_last_word(records, operation, started, error)
    )


def write_batch_ledger(
    leads: Sequence[Lead],
    records: list[CallRecord],
    operation: str,
    started_at: datetime,
    started: float,
    error: BaseException | None,
    items: Sequence[BatchItem],
) -> None:
    """The rows of one batch call (the worker's ``sync_leads``): one per lead per CRM call the backend
    reported, all carrying one new ``batch`` id, so a lead's ledger shows the call it shared.

    ``error`` failed the whole call: every lead's rows read as :func:`write_ledger` would write them.
    Otherwise ``items`` (one per lead) decide each lead's row of the last call: the CRM's own message
    for a lead it refused (one input of a 207), the call's outcome for the others.
    """
    batch = uuid.uuid4()
    records = _with_last_word(records, operation, started, error)
    *earlier, last = records
    entries = []
    for lead, item in zip(leads, items, strict=True):
        own = last
        if error is None and item.error is not None:
            failure = classify(item.error)
            status = getattr(item.error, "status_code", None) or last.http_status
            own = replace(last, outcome=failure.outcome, http_status=status, error=failure.message)
        entries += [_entry(lead.pk, record, started_at, batch) for record in [*earlier, own]]
    LedgerEntry.objects.bulk_create(entries)


def _with_last_word(
    records: list[CallRecord], operation: str, started: float, error: BaseException | None
) -> list[CallRecord]:
    """``records``, with a closing record for the whole operation when the backend reported none, or
    when it raised ``error`` after its last call went well."""
    if records and (error is None or records[-1].outcome != LedgerEntry.Outcome.OK):
        return records
    failure = classify(error) if error is not None else None
    return [
        *records,
        CallRecord(
            operation,
            outcome=failure.outcome if failure else LedgerEntry.Outcome.OK,
            http_status=getattr(error, "status_code", None),
            duration_ms=int((time.monotonic() - started) * 1000),
            error=failure.message if failure else "",
        ),
    ]


def _entry(
    lead_id: int | None,
    record: CallRecord,
    started_at: datetime,
    batch: uuid.UUID | None = None,
    *,
    direction: str = LedgerEntry.Direction.OUT,
) -> LedgerEntry:
    return LedgerEntry(
        lead_id=lead_id,
        direction=direction,
        operation=record.operation,
        started_at=started_at,
        duration_ms=record.duration_ms,
        outcome=record.outcome,
        http_status=record.http_status,
        error=redact(record.error)[:MAX_ERROR_LENGTH],
        request_summary=redact(record.request_summary),
        response_summary=redact(record.response_summary),
        batch=batch,
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


@dataclass(frozen=True, slots=True)
class InboundNote:
    """One ledger row of a change read back from the CRM (no CRM call of its own: it takes no time and
    has no HTTP status): its ``outcome``, what came in (``summary``) and what crmify made of it
    (``note``, for a conflict or a refusal)."""

    outcome: str = LedgerEntry.Outcome.OK
    summary: str = ""
    note: str = ""


def write_inbound(lead: Lead, operation: str, notes: Sequence[InboundNote], now: datetime) -> None:
    """The rows of a change read back from the CRM for ``lead`` (``crmify.inbound``), direction IN:
    ``operation`` is how it came (``"pull"``, ``"webhook"``)."""
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            lead_id=lead.pk,
            operation=operation,
            started_at=now,
            outcome=note.outcome,
            direction=LedgerEntry.Direction.IN,
            request_summary=redact(note.summary),
            error=redact(note.note)[:MAX_ERROR_LENGTH],
        )
        for note in notes
    )
