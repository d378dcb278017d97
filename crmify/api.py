"""crmify's public API for site code and the admin.

Everything here records intent on the ``Lead`` rows and queues work after commit; only :func:`sync_now`
calls the CRM inside the caller's request. The seed README's "a purchase triggers a Conversion event" is::

    from crmify import api
    api.mark_converted(request.user.profile)   # the LEAD_MODEL row: request.user if LEAD_MODEL is User

Functions taking a row take a ``Lead`` or a ``LEAD_MODEL`` row; any other row raises ``TypeError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from crmify.backends.base import BaseBackend
from crmify.conf import crmify_settings
from crmify.crm_state import forget_outage
from crmify.exceptions import BackendError, PermanentBackendError
from crmify.ledger import classify
from crmify.loading import get_lead_model
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.ratelimit import QuotaState
from crmify.secrets import redact
from crmify.tracking import (
    find_lead,
    may_set_status,
    request_crm_delete,
    save_if_changed,
    source_row,
    track,
)
from crmify.worker import (
    SyncOutcome,
    current_backend,
    enqueue_lead_on_commit,
    process_lead,
    recorded_call,
    release_waiting_leads,
)


@dataclass
class BulkResult:
    """What a bulk call did: leads queued, and leads skipped by reason (the admin's message reads it)."""

    queued: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{self.queued} queued" + (f"; skipped: {reasons}" if reasons else "")


#: A lead whose mapping failed: it holds blank (never mapped) or stale values, so it must not be sent.
MAPPING_FAILED = Q(sync_state=SyncState.FAILED, fingerprint="", tombstone=False)


def mapping_failed(lead: Lead) -> bool:
    """Whether ``lead`` as loaded is one :data:`MAPPING_FAILED` describes."""
    return lead.sync_state == SyncState.FAILED and not lead.fingerprint and not lead.tombstone


def lead_row(obj: object) -> models.Model:
    """``obj`` if it is a saved ``LEAD_MODEL`` row; else a ``TypeError`` (``ValueError`` if unsaved).

    Tracking any other row (``request.user`` when the lead model is a profile) would make a stray lead
    that the lead model's mapper cannot map.
    """
    lead_model = get_lead_model()
    # Compared as concrete models: a proxy shares its concrete model's leads, a child model has its own.
    if (
        not isinstance(obj, models.Model)
        or obj._meta.concrete_model is not lead_model._meta.concrete_model
    ):
        raise TypeError(
            f"crmify.api takes a Lead or a {lead_model._meta.label} row "
            f"(CRMIFY['LEAD_MODEL']), not {type(obj).__module__}.{type(obj).__qualname__}: "
            f"pass the {lead_model.__name__} the lead is about."
        )
    if obj.pk is None:
        raise ValueError(f"This {lead_model._meta.label} is not saved yet: save it first.")
    return obj


def lead_for(obj: Lead | models.Model) -> Lead:
    """The lead of a ``Lead`` or a ``LEAD_MODEL`` row (mapping the row first if it has no lead yet).

    Raises ``TypeError`` for a row of any other model (see :func:`lead_row`).
    """
    if isinstance(obj, Lead):
        return obj
    row = lead_row(obj)
    return find_lead(row) or track(row)


def sync(obj: Lead | models.Model) -> Lead:
    """Map a ``LEAD_MODEL`` row now (as a save would) and queue it if it changed.

    Raises ``TypeError`` for a row of any other model (see :func:`lead_row`).
    """
    return obj if isinstance(obj, Lead) else track(lead_row(obj))


def set_status(obj: Lead | models.Model, status: str, *, force: bool = False) -> Lead:
    """Move a lead's status and queue the change (site code; the admin's bulk action is :func:`set_status_of`).

    Takes a ``Lead`` or a ``LEAD_MODEL`` row; a row of another model raises ``TypeError``. The funnel does
    not move back by itself: a change to an earlier stage (``LEAD_STATUS_ORDER``) is refused unless
    ``force`` is true; the refusal is recorded on the lead (``status_refused``, the admin and the ledger
    show it) and the lead comes back with its status as it was. A lead whose mapping failed is not sent
    (it would reach the CRM blank or stale): the status is recorded on it, the lead stays failed with its
    mapping error, and the status goes out with its values once the mapping works (the next save of the
    row, "Retry failed", ``crmify_sync --drift``). It does not raise: a purchase must not fail because a
    mapper did.
    """
    lead = lead_for(obj)
    if not may_set_status(lead, status, force=force):
        lead.refresh_from_db(fields=["status", "status_refused", "status_refused_at"])
        return lead
    if lead.pk is not None and Lead.objects.filter(MAPPING_FAILED, pk=lead.pk).update(
        status=status, updated_at=timezone.now()
    ):
        lead.status = status
        return lead
    if lead.pk is not None and not lead.fingerprint:
        lead.refresh_from_db()  # a copy loaded while its mapping failed: send the values mapped since
    lead.status = status
    return save_if_changed(lead)


def save_lead(lead: Lead) -> Lead:
    """Keep staff's edits to a lead's values (the admin's change form) and queue it if they changed.

    Saving the row directly would leave its fingerprint behind and send nothing.
    """
    return save_if_changed(lead)


def mark_converted(obj: Lead | models.Model, *, force: bool = False) -> Lead:
    """Set ``LEAD_CONVERTED_STATUS``: the conversion reaches the CRM (see :func:`set_status`)."""
    return set_status(obj, crmify_settings.LEAD_CONVERTED_STATUS, force=force)


def mark_dead(obj: Lead | models.Model, *, force: bool = False) -> Lead:
    """Set ``LEAD_DEAD_STATUS`` (see :func:`set_status`)."""
    return set_status(obj, crmify_settings.LEAD_DEAD_STATUS, force=force)


def set_status_of(leads: Iterable[Lead], status: str, *, force: bool = False) -> BulkResult:
    """Move many leads to ``status`` and queue those that changed (the admin's "Mark converted/dead",
    and with ``force`` its "Force a status", which may move leads back in the funnel).

    A tombstone is skipped (it would not be sent: staff re-sync it first), and so is a lead whose mapping
    failed (it holds stale or blank values; "Retry failed" maps it again), and, without ``force``, a lead
    the change would move back in the funnel (recorded on it as :func:`set_status` does).
    """
    result = BulkResult()
    with transaction.atomic():
        for lead in leads:
            if lead.tombstone:
                result.skipped["deleted from the CRM"] += 1
            elif mapping_failed(lead):
                result.skipped["mapping failed"] += 1
            elif lead.status == status:
                result.skipped[f"already {status}"] += 1
            elif set_status(lead, status, force=force).status != status:
                result.skipped["would move back in the funnel"] += 1
            else:
                result.queued += 1
    return result


def gone_from_crm() -> Q:
    """Leads whose CRM record is gone: deleted by us or in the CRM (read back, or a 404 to an update), or
    failed because the CRM answered 404 to an update (before such leads were marked deleted in the CRM;
    the ledger's last word on a failed lead is why it failed)."""
    last_call = LedgerEntry.objects.filter(lead=OuterRef(OuterRef("pk"))).order_by(
        "-started_at", "-id"
    )
    said_404 = Exists(
        LedgerEntry.objects.filter(
            pk=Subquery(last_call.values("pk")[:1]),
            operation__in=("update", "sync"),  # "sync": a backend that reports no calls of its own
            http_status=404,
        )
    )
    return (
        Q(sync_state=SyncState.DELETED)
        | Q(deleted_in_crm_at__isnull=False)
        | (Q(sync_state=SyncState.FAILED) & Q(said_404))
    )


def resync(leads: Iterable[Lead]) -> BulkResult:
    """Queue a full sync of each lead, changed or not (the admin's "Re-sync").

    A lead whose mapping failed is mapped again from its source row first, as "Retry failed" does; if
    that still fails it is skipped, not sent blank or stale.
    """
    result = BulkResult()
    with transaction.atomic():
        ids: list[int] = []
        for lead in leads:
            if lead.sync_state == SyncState.SYNCING:
                result.skipped["already syncing"] += 1
                continue
            reason = _remap(lead) if mapping_failed(lead) else None
            if reason:
                result.skipped[reason] += 1
                continue
            ids.append(lead.pk)
        # A lead whose CRM record is gone drops its stale CRM id: the send creates a new record.
        Lead.objects.filter(pk__in=ids).force_pending(gone_from_crm())
        for lead_id in ids:
            enqueue_lead_on_commit(lead_id)
        result.queued = len(ids)
    return result


def retry_failed(leads: Iterable[Lead]) -> BulkResult:
    """Queue failed leads again with a fresh count of attempts.

    A lead whose mapping failed is mapped again from its source row first: sending what it holds would
    send stale or blank values. If the mapping still fails it stays failed with the new message.
    """
    result = BulkResult()
    with transaction.atomic():
        for lead in leads:
            if lead.sync_state != SyncState.FAILED:
                result.skipped["not failed"] += 1
                continue
            if mapping_failed(lead):
                reason = _remap(lead)
                if reason:
                    result.skipped[reason] += 1
                else:
                    result.queued += 1
                continue
            if not Lead.objects.filter(pk=lead.pk).retry_failed():
                result.skipped["not failed"] += 1  # it moved on since it was loaded
                continue
            enqueue_lead_on_commit(lead.pk)
            result.queued += 1
    return result


def _remap(lead: Lead) -> str | None:
    """Map a lead's source row again (queuing it when that works); else the reason it was not queued."""
    row = source_row(lead)
    if row is None:
        return "source row gone"
    remapped = track(row, lead=lead)
    return "mapping still fails" if remapped.sync_state == SyncState.FAILED else None


def delete_from_crm(leads: Iterable[Lead]) -> BulkResult:
    """Delete leads from the CRM, keeping tombstones that later saves do not re-create."""
    result = BulkResult()
    with transaction.atomic():
        for lead in leads:
            if request_crm_delete(lead):
                result.queued += 1
            else:
                result.skipped["already deleted"] += 1
    return result


def sync_now(lead: Lead) -> SyncOutcome:
    """Send ``lead`` to the CRM inside this request and say what happened (the admin's "Sync now").

    A lead whose mapping failed is mapped again first; if that still fails it is "failed", nothing sent.
    """
    if lead.sync_state == SyncState.SYNCING:
        return SyncOutcome.SKIPPED
    if mapping_failed(lead) and _remap(lead):
        return SyncOutcome.FAILED
    if lead.tombstone and lead.sync_state != SyncState.DELETED:
        Lead.objects.filter(pk=lead.pk).delete_now()
    else:
        Lead.objects.filter(pk=lead.pk).force_pending(gone_from_crm())
    return process_lead(lead.pk)


def crm_backend() -> BaseBackend:
    """The configured backend as the worker uses it (a plain class wrapped in the contract's defaults):
    built once per thread, no I/O.

    For callers that read its documented, I/O-free parts (``record_url``, ``health``, the ``supports_*``
    flags; the admin's columns and banner). Raises ``ImproperlyConfigured`` if ``BACKEND`` cannot be built.
    """
    return current_backend()


def crm_health() -> QuotaState | None:
    """What the CRM last said about its quota and our API key (no I/O), or None if the backend cannot say."""
    return crm_backend().health()


def send_waiting_leads() -> int:
    """Send every lead waiting for the CRM now (the admin's "Send waiting leads now"): the outage is
    forgotten and the leads are queued in the order they changed. If the CRM still does not answer, the
    first calls mark it down again and the leads wait again. How many were queued."""
    forget_outage()
    return release_waiting_leads()


def waiting_for_crm_count() -> int:
    """How many leads wait for the CRM to answer again (one count query): the banner, ``crmify_check``."""
    return Lead.objects.waiting_for_crm().count()


@dataclass(frozen=True, slots=True)
class CrmRecord:
    """A lead as the CRM holds it: ``raw`` as the backend fetched it, ``values`` by lead field name
    (:meth:`crmify.backends.base.BaseBackend.read_record`)."""

    raw: dict[str, Any]
    values: dict[str, Any]


def fetch_from_crm(lead: Lead) -> dict[str, Any] | None:
    """The CRM's current record of ``lead`` as the backend returns it; None when there is none.

    Called by site code; the admin's "Compare with CRM" calls :func:`read_from_crm`. Like
    :func:`sync_now` it is a CRM call staff asked for, and it is kept in the ledger as a ``fetch``.
    Raises :class:`BackendError` (its text free of secrets) when the backend cannot fetch or the call fails.
    """
    record = _fetch(lead, read=False)
    return record.raw if record is not None else None


def read_from_crm(lead: Lead) -> CrmRecord | None:
    """:func:`fetch_from_crm`, with the record also read by lead field names (status and source by name,
    custom fields by key) in the same recorded call: what "Compare with CRM" lines up with the app."""
    return _fetch(lead, read=True)


def _fetch(lead: Lead, *, read: bool) -> CrmRecord | None:
    if not crm_backend().supports_fetch:
        raise PermanentBackendError("This CRM backend cannot fetch leads (supports_fetch is off).")
    if not lead.external_id:
        return None

    def call(crm: BaseBackend) -> CrmRecord | None:
        raw = crm.fetch_lead(lead.external_id)
        if raw is None:
            return None
        return CrmRecord(raw, crm.read_record(raw) if read else {})

    fetched, error = recorded_call(lead, "fetch", call)
    record: CrmRecord | None = fetched
    if error is not None:
        # A site's own backend may quote its key in an exception: only the redacted text leaves here.
        if isinstance(error, BackendError):
            raise BackendError(redact(error.message), status_code=error.status_code) from None
        raise BackendError(redact(classify(error).message)) from None
    return record
