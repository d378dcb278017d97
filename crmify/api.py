"""crmify's public API for site code and the admin.

Everything here records intent on the ``Lead`` rows and queues work after commit; only :func:`sync_now`
calls the CRM inside the caller's request. The seed README's "a purchase triggers a Conversion event" is::

    from crmify import api
    api.mark_converted(request.user)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import models, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from crmify.conf import crmify_settings
from crmify.models import Lead, SyncState
from crmify.queue import enqueue_lead_on_commit
from crmify.tracking import (
    find_lead,
    pending_unless_syncing,
    request_crm_delete,
    save_if_changed,
    source_row,
    track,
)
from crmify.worker import process_lead


@dataclass
class BulkResult:
    """What a bulk call did: leads queued, and leads skipped by reason (the admin's message reads it)."""

    queued: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{self.queued} queued" + (f"; skipped: {reasons}" if reasons else "")


def lead_for(obj: Lead | models.Model) -> Lead:
    """The lead of a ``Lead`` or a ``LEAD_MODEL`` row (mapping the row first if it has no lead yet)."""
    if isinstance(obj, Lead):
        return obj
    return find_lead(obj) or track(obj)


def sync(obj: Lead | models.Model) -> Lead:
    """Map a ``LEAD_MODEL`` row now (as a save would) and queue it if it changed."""
    return track(obj) if not isinstance(obj, Lead) else obj


def set_status(obj: Lead | models.Model, status: str) -> Lead:
    """Move a lead's status and queue the change."""
    lead = lead_for(obj)
    lead.status = status
    return save_if_changed(lead)


def mark_converted(obj: Lead | models.Model) -> Lead:
    """Set ``LEAD_CONVERTED_STATUS``: the conversion reaches the CRM."""
    return set_status(obj, crmify_settings.LEAD_CONVERTED_STATUS)


def mark_dead(obj: Lead | models.Model) -> Lead:
    """Set ``LEAD_DEAD_STATUS``."""
    return set_status(obj, crmify_settings.LEAD_DEAD_STATUS)


def _force_pending(lead: Lead) -> None:
    """Make ``lead`` send everything again, even if nothing changed; a tombstone comes back to life."""
    Lead.objects.filter(pk=lead.pk).update(
        synced_fingerprint="",
        synced_values={},
        tombstone=False,
        attempts=0,
        next_attempt_at=None,
        queued_at=timezone.now(),
        sync_state=pending_unless_syncing(),
        # A deleted lead's CRM record is gone: create a new one (decided on the row, not a stale copy).
        external_id=Case(
            When(sync_state=SyncState.DELETED, then=Value("")), default=F("external_id")
        ),
    )


def resync(leads: Iterable[Lead]) -> BulkResult:
    """Queue a full sync of each lead, changed or not (the admin's "Re-sync")."""
    result = BulkResult()
    with transaction.atomic():
        for lead in leads:
            if lead.sync_state == SyncState.SYNCING:
                result.skipped["already syncing"] += 1
                continue
            _force_pending(lead)
            enqueue_lead_on_commit(lead.pk)
            result.queued += 1
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
            if not lead.fingerprint and not lead.tombstone:
                reason = _remap(lead)
                if reason:
                    result.skipped[reason] += 1
                else:
                    result.queued += 1
                continue
            state = SyncState.DELETING if lead.tombstone else SyncState.PENDING
            if not Lead.objects.filter(pk=lead.pk, sync_state=SyncState.FAILED).update(
                sync_state=state, attempts=0, next_attempt_at=None, queued_at=timezone.now()
            ):
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


def sync_now(lead: Lead) -> str:
    """Send ``lead`` to the CRM inside this request and say what happened (the admin's "Sync now")."""
    if lead.sync_state == SyncState.SYNCING:
        return "skipped"
    if lead.tombstone and lead.sync_state != SyncState.DELETED:
        Lead.objects.filter(pk=lead.pk).update(sync_state=SyncState.DELETING, next_attempt_at=None)
    else:
        _force_pending(lead)
    return process_lead(lead.pk)
