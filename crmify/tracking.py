"""Records what the CRM should hold, in the site's own transaction: the outbox half of the engine.

Called by the signal receivers (``crmify.signals``), the sweeper's drift scan and the public API. Mapping
does no network I/O; a lead whose values did not change costs one read and no write; a changed lead is
marked pending and queued after commit, so a rolled-back transaction sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, router, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from crmify.conf import crmify_settings
from crmify.exceptions import MappingError
from crmify.loading import get_mapper
from crmify.mappers import LeadModelFieldMapper, MappedLead
from crmify.models import Lead, SyncState
from crmify.queue import enqueue_lead_on_commit

logger = logging.getLogger("crmify")


def fingerprint(values: Mapping[str, Any]) -> str:
    """A stable sha256 of lead values: sorted keys, UTF-8, so the same values always hash the same."""
    text = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pending_unless_syncing() -> Case:
    """The new ``sync_state`` for a changed lead: pending, unless a worker holds it (it re-queues itself)."""
    return Case(
        When(sync_state=SyncState.SYNCING, then=Value(SyncState.SYNCING)),
        default=Value(SyncState.PENDING),
    )


def find_lead(instance: models.Model, using: str | None = None) -> Lead | None:
    """The lead tracking ``instance``, if there is one."""
    source_type = ContentType.objects.db_manager(using).get_for_model(instance)
    return (
        Lead.objects.using(using or router.db_for_write(Lead))
        .filter(source_type=source_type, source_id=str(instance.pk))
        .first()
    )


def track(
    instance: models.Model,
    *,
    status: str | None = None,
    mapper: LeadModelFieldMapper | None = None,
    lead: Lead | None = None,
) -> Lead:
    """Map ``instance`` and record the result on its lead, creating the lead on first sight.

    ``status`` moves the lead's status as well (the status model, ``api.mark_converted``). ``lead`` may be
    passed when the caller already loaded it (batch callers), saving the read.
    """
    using = router.db_for_write(Lead, instance=instance)
    if lead is None:
        lead = find_lead(instance, using)
    if lead is None:
        lead = Lead(
            source_type=ContentType.objects.db_manager(using).get_for_model(instance),
            source_id=str(instance.pk),
            status=crmify_settings.LEAD_NEW_STATUS,
        )
    try:
        mapped = (mapper or get_mapper()).map(instance)
    except MappingError as exc:
        _record_mapping_error(lead, exc, using)
        return lead
    return apply_values(lead, mapped, status=status, using=using)


def apply_values(
    lead: Lead, mapped: MappedLead, *, status: str | None = None, using: str | None = None
) -> Lead:
    """Write mapped values onto ``lead`` and queue a sync if what the CRM should hold changed."""
    for name, value in mapped.values.items():
        setattr(lead, name, value)
    if mapped.custom_fields:
        lead.custom_fields = {**(lead.custom_fields or {}), **mapped.custom_fields}
    if status is not None:
        lead.status = status
    return save_if_changed(lead, using=using)


def save_if_changed(lead: Lead, *, using: str | None = None) -> Lead:
    """Persist ``lead``'s values when their fingerprint changed, and queue it after commit.

    A tombstone keeps its new values but is not queued: staff must re-sync it to bring it back.
    """
    new_fingerprint = fingerprint(lead.crm_values())
    if lead.pk is not None and new_fingerprint == lead.fingerprint:
        return lead
    lead.fingerprint = new_fingerprint
    using = using or router.db_for_write(Lead, instance=lead)
    now = timezone.now()
    if lead.pk is None and _insert(lead, now, using):
        enqueue_lead_on_commit(lead.pk, using)
        return lead
    values = {name: getattr(lead, name) for name in (*lead.crm_values(), "fingerprint")}
    queryset = Lead.objects.using(using).filter(pk=lead.pk)
    if lead.tombstone:
        queryset.update(**values, updated_at=now)
        return lead
    queryset.update(
        **values,
        sync_state=pending_unless_syncing(),
        queued_at=now,
        attempts=0,
        next_attempt_at=None,
        updated_at=now,
    )
    lead.sync_state = SyncState.PENDING
    enqueue_lead_on_commit(lead.pk, using)
    return lead


def _insert(lead: Lead, now: Any, using: str) -> bool:
    """Insert a new lead; False when a concurrent save inserted it first (then ``lead`` gets its pk)."""
    lead.sync_state = SyncState.PENDING
    lead.queued_at = now
    try:
        with transaction.atomic(using=using):
            lead.save(using=using, force_insert=True)
    except IntegrityError:
        existing = Lead.objects.using(using).get(
            source_type=lead.source_type, source_id=lead.source_id
        )
        lead.pk = existing.pk
        lead._state.adding = False
        return False
    return True


def _record_mapping_error(lead: Lead, exc: MappingError, using: str) -> None:
    """Fail the lead with the mapper's message; the site's own save goes on."""
    logger.warning("crmify: mapping lead for %s failed: %s", lead.source_id, exc)
    lead.sync_state = SyncState.FAILED
    lead.last_error = f"Mapping failed: {exc}"
    # An empty fingerprint makes the next successful mapping count as a change.
    lead.fingerprint = ""
    if lead.pk is None:
        _insert(lead, timezone.now(), using)
    Lead.objects.using(using).filter(pk=lead.pk).update(
        sync_state=SyncState.FAILED, last_error=lead.last_error, fingerprint="", updated_at=timezone.now()
    )


def source_deleted(instance: models.Model) -> None:
    """Follow a deleted ``LEAD_MODEL`` row per ``ON_DELETE``: delete from the CRM, keeping a tombstone."""
    if crmify_settings.ON_DELETE != "delete":
        return
    using = router.db_for_write(Lead, instance=instance)
    lead = find_lead(instance, using)
    if lead is not None:
        request_crm_delete(lead, using=using)


def request_crm_delete(lead: Lead, *, using: str | None = None) -> bool:
    """Make ``lead`` a tombstone and queue its deletion from the CRM; False if it already is one."""
    if lead.tombstone:
        return False
    using = using or router.db_for_write(Lead, instance=lead)
    now = timezone.now()
    never_sent = not lead.external_id and lead.sync_state != SyncState.SYNCING
    Lead.objects.using(using).filter(pk=lead.pk).update(
        tombstone=True,
        sync_state=Case(
            When(sync_state=SyncState.SYNCING, then=Value(SyncState.SYNCING)),
            default=Value(SyncState.DELETED if never_sent else SyncState.DELETING),
        ),
        attempts=0,
        next_attempt_at=None,
        queued_at=now,
        updated_at=now,
    )
    lead.tombstone = True
    if not never_sent:
        enqueue_lead_on_commit(lead.pk, using)
    return True
