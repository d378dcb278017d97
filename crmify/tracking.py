"""Records what the CRM should hold, in the site's own transaction: the outbox half of the engine.

Called by the signal receivers (``crmify.signals``), the sweeper's drift scan and the public API. Mapping
does no network I/O; a row whose mapped values did not change costs one read and no write; a changed lead
is marked pending and queued with the site's transaction (on commit, or in it for the database Tasks
backend), so a rolled-back transaction sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, IntegrityError, connections, models, router, transaction
from django.utils import timezone

from crmify.backends.base import BaseBackend
from crmify.conf import crmify_settings
from crmify.exceptions import MappingError
from crmify.ledger import write_refusal
from crmify.loading import get_mapper
from crmify.mappers import LeadModelFieldMapper, MappedLead, fit_to_crm
from crmify.models import Lead, SyncState
from crmify.transitions import (
    moves_back,
    note_changed,
    note_mapping_failed,
    note_tombstone,
    prepare_insert,
    status_key,
)
from crmify.worker import current_backend, enqueue_lead_on_commit

logger = logging.getLogger("crmify")


def fingerprint(values: Mapping[str, Any]) -> str:
    """A stable sha256 of lead values: sorted keys, UTF-8, so the same values always hash the same."""
    text = json.dumps(
        values, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_lead(instance: models.Model, using: str | None = None) -> Lead | None:
    """The lead tracking ``instance``, if there is one."""
    return Lead.objects.using(using or router.db_for_write(Lead)).of_rows([instance]).first()


def new_lead(
    instance: models.Model, using: str | None = None, *, source_type: ContentType | None = None
) -> Lead:
    """An unsaved lead for ``instance``, at ``LEAD_NEW_STATUS``; :func:`track` inserts it.

    The backfill passes the chunk's ``source_type``: looking it up per row costs more than the lead.
    """
    return Lead(
        source_type=source_type or ContentType.objects.db_manager(using).get_for_model(instance),
        source_id=str(instance.pk),
        status=crmify_settings.LEAD_NEW_STATUS,
    )


def source_model(lead: Lead) -> type[models.Model] | None:
    """The model of ``lead``'s source row, or None for a lead without one (added by hand, imported).

    ``get_for_id`` is served from the content-type cache; ``lead.source_type`` would be a query.
    """
    if lead.source_type_id is None:
        return None
    return (
        ContentType.objects.db_manager(lead._state.db).get_for_id(lead.source_type_id).model_class()
    )


def source_row(lead: Lead) -> models.Model | None:
    """The ``LEAD_MODEL`` row ``lead`` was mapped from, or None when it is gone."""
    model = source_model(lead) if lead.source_id else None
    if model is None:
        return None
    return model._default_manager.filter(pk=lead.source_id).first()


def mapped_fingerprint(mapped: MappedLead) -> str:
    """The fingerprint of a mapper's output, kept as ``Lead.source_fingerprint``."""
    return fingerprint({"values": mapped.values, "custom_fields": mapped.custom_fields})


def _crm_rules() -> BaseBackend | None:
    """The configured backend, whose hooks say what the CRM accepts (a plain class's are the defaults:
    no limits, ISO 8601 dates); None if it cannot be built (the worker reports why when it syncs)."""
    try:
        return current_backend()
    except Exception:
        return None


def map_for_crm(instance: models.Model, mapper: LeadModelFieldMapper) -> MappedLead | MappingError:
    """``mapper.map(instance)`` fitted to the CRM (:func:`crmify.mappers.fit_to_crm`), or the error to
    record on the lead; the site's save never fails here. Also called by the backfill and the mapper
    preview, so all three map a row alike."""
    try:
        mapped = mapper.map(instance)
        rules = _crm_rules()
        return mapped if rules is None else fit_to_crm(mapped, rules)
    except MappingError as exc:
        return exc
    except DatabaseError:
        raise  # the site's transaction is broken: its save fails as it would without crmify
    except Exception as exc:
        # A bug in a site's mapper (a callable that raises) must not break the site's save either.
        logger.exception(
            "crmify: the mapper raised for %s %s", type(instance).__name__, instance.pk
        )
        return MappingError(f"{type(exc).__name__}: {exc}")


#: ``SELECT source_fingerprint ... WHERE source = ?`` per database alias, built once from the model.
_lookup_sql: dict[str, str] = {}


def _known_source_fingerprint(instance: models.Model, using: str) -> str | None:
    """The ``source_fingerprint`` of ``instance``'s lead, or None if it has no lead.

    Raw SQL on purpose: this runs on every save of every lead row, and compiling the same ORM query each
    time costs several times what the indexed read itself costs (see ``bench/save_overhead.py``).
    """
    connection = connections[using]
    sql = _lookup_sql.get(using)
    if sql is None:
        quote = connection.ops.quote_name
        columns = {field.name: quote(str(field.column)) for field in Lead._meta.concrete_fields}
        sql = _lookup_sql[using] = (
            f"SELECT {columns['source_fingerprint']} FROM {quote(Lead._meta.db_table)} "
            f"WHERE {columns['source_type']} = %s AND {columns['source_id']} = %s"
        )
    source_type = ContentType.objects.db_manager(using).get_for_model(instance)
    with connection.cursor() as cursor:
        cursor.execute(sql, [source_type.pk, str(instance.pk)])
        row = cursor.fetchone()
    return None if row is None else str(row[0])


def track_saved(instance: models.Model, *, created: bool = False) -> None:
    """The receivers' path for a saved ``LEAD_MODEL`` row: as :func:`track`, but cheap when nothing moved.

    A row whose mapper output is what was recorded last time costs one indexed read of one column and
    no write; a row the site just created skips even that read.
    """
    using = router.db_for_write(Lead, instance=instance)
    mapper = get_mapper()
    mapped = map_for_crm(instance, mapper)
    if created:
        track(instance, mapper=mapper, lead=new_lead(instance, using), mapped=mapped)
        return
    unchanged = not isinstance(mapped, MappingError) and (
        _known_source_fingerprint(instance, using) == mapped_fingerprint(mapped)
    )
    if not unchanged:
        track(instance, mapper=mapper, mapped=mapped)


def track(
    instance: models.Model,
    *,
    status: str | None = None,
    mapper: LeadModelFieldMapper | None = None,
    lead: Lead | None = None,
    mapped: MappedLead | MappingError | None = None,
) -> Lead:
    """Map ``instance`` and record the result on its lead, creating the lead on first sight.

    Called by the receivers, the sweeper's drift scan and ``crmify.api``. ``status`` moves the lead's
    status as well (the status model, ``api.mark_converted``). ``lead`` may be passed when the caller
    already loaded it, or built it with :func:`new_lead` (batch callers, a row just created), saving the
    read; ``mapped`` when the caller already mapped the row.
    """
    using = router.db_for_write(Lead, instance=instance)
    if lead is None:
        lead = find_lead(instance, using) or new_lead(instance, using)
    if status is not None and not may_set_status(lead, status, using=using):
        status = None  # the row's other values still go through
    if mapped is None:
        mapped = map_for_crm(instance, mapper or get_mapper())
    return apply_values(lead, mapped, status=status, using=using)


def may_set_status(
    lead: Lead, status: str, *, force: bool = False, using: str | None = None
) -> bool:
    """Whether ``lead`` may move to ``status`` (``track`` for the status model, ``api.set_status``).

    The funnel rule (:func:`crmify.transitions.moves_back`) is decided on the status the database holds,
    not on a copy loaded earlier. A refused change is recorded on the lead (shown in the admin) and in its
    ledger, and the caller leaves the status alone. ``force`` (staff, code that means it) skips the rule.
    A change that goes through forgets an earlier refusal. A lead not saved yet has nothing to go back from.
    """
    if lead.pk is None:
        return True
    using = using or router.db_for_write(Lead, instance=lead)
    queryset = Lead.objects.using(using).filter(pk=lead.pk)
    current = queryset.values_list("status", "status_refused").first()
    if current is None:
        return True
    status_now, refused = current
    if status_key(status_now) == status_key(status):
        return True  # no move at all: nothing to refuse, and an old refusal still stands
    if not force and moves_back(status_now, status):
        now = timezone.now()
        queryset.refuse_status(status, now)
        write_refusal(lead, status_now, status, now)
        logger.info("crmify: lead %s stays %s (refused %s)", lead.pk, status_now, status)
        return False
    if refused:
        queryset.clear_refused_status()
    return True


def apply_values(
    lead: Lead,
    mapped: MappedLead | MappingError,
    *,
    status: str | None = None,
    using: str | None = None,
) -> Lead:
    """Record what ``mapped`` means for ``lead`` (:func:`decide`): write its values and queue a sync if what
    the CRM should hold changed, or fail the lead with the mapper's message."""
    using = using or router.db_for_write(Lead, instance=lead)
    change = decide(lead, mapped, status=status)
    if change is RowChange.MAPPING_FAILED:
        _record_mapping_error(lead, str(mapped), using)
        return lead
    try:
        return _record(lead, change, using)
    except IntegrityError:
        if not lead._state.adding:
            raise
        # The row got a lead since we looked (a concurrent first save, a re-used primary key):
        # record the same values on that one.
        existing = Lead.objects.using(using).get(
            source_type=lead.source_type, source_id=lead.source_id
        )
        waiting, sent_as = existing.sync_state == SyncState.PENDING, existing.fingerprint
        result = apply_values(existing, mapped, status=status, using=using)
        if waiting and result.fingerprint == sent_as:
            # Unchanged, so not queued above. Most often a backfill chunk read the row a moment before
            # the site's save made its lead: send it as the live change it is, not in the chunk's turn
            # (which may wait for the quota's reset).
            enqueue_lead_on_commit(existing.pk, using)
        return result


def assign_values(lead: Lead, mapped: MappedLead, *, status: str | None = None) -> None:
    """Set mapped values (and ``status``) on ``lead`` in memory, with their source fingerprint.

    Called by :func:`apply_values` before it saves, and by the backfill, which saves whole chunks in bulk.
    """
    for name, value in mapped.values.items():
        setattr(lead, name, value)
    if mapped.custom_fields:
        lead.custom_fields = {**(lead.custom_fields or {}), **mapped.custom_fields}
    if status is not None:
        lead.status = status
    lead.source_fingerprint = mapped_fingerprint(mapped)


class RowChange(StrEnum):
    """What a source row's mapped values mean for its lead (:func:`decide`)."""

    #: The row has no lead yet: insert one, pending.
    NEW = "new"
    #: What the CRM should hold moved: the lead is marked changed and queued.
    CHANGED = "changed"
    #: Nothing to write.
    UNCHANGED = "unchanged"
    #: The mapper's output moved but what the CRM should hold did not: only its fingerprint is recorded.
    SOURCE_MOVED = "source moved"
    #: Deleted from the CRM and its values moved: never queued (staff re-sync it). The save path keeps the
    #: new values on it; the backfill and the import leave a tombstone alone.
    TOMBSTONED = "tombstoned"
    #: The mapper raised: the lead is failed with its message, nothing is sent.
    MAPPING_FAILED = "mapping failed"


def decide(
    lead: Lead,
    mapped: MappedLead | MappingError | None = None,
    *,
    status: str | None = None,
    quick: bool = False,
) -> RowChange:
    """What ``mapped`` (the mapper's output for ``lead``'s source row) means for ``lead``: the one decision
    behind the receivers and the drift scan (through :func:`track`), the public API and the import
    (through :func:`save_if_changed`) and the backfill, which writes the leads itself in bulk.

    ``lead`` unsaved means the row has no lead yet. Unless the answer is ``UNCHANGED`` (found by ``quick``)
    or ``MAPPING_FAILED``, ``mapped``'s values and ``status`` are assigned to ``lead`` and, when it is
    ``NEW``, ``CHANGED`` or ``TOMBSTONED``, its new fingerprint: the caller writes what it decided.
    ``mapped`` None: the values are on ``lead`` already (staff's edits, an imported row). ``quick`` (the
    backfill): the same mapper output as recorded last time is unchanged without mapping it onto the lead,
    as the receivers' cheap check in :func:`track_saved` does.
    """
    if isinstance(mapped, MappingError):
        return RowChange.MAPPING_FAILED
    adding = lead.pk is None
    source_moved = False
    if mapped is not None:
        if (
            quick
            and not adding
            and lead.fingerprint
            and lead.source_fingerprint == mapped_fingerprint(mapped)
        ):
            return RowChange.UNCHANGED
        recorded_source = lead.source_fingerprint
        assign_values(lead, mapped, status=status)
        source_moved = lead.source_fingerprint != recorded_source
    new_fingerprint = fingerprint(lead.crm_values())
    if not adding and new_fingerprint == lead.fingerprint:
        return RowChange.SOURCE_MOVED if source_moved else RowChange.UNCHANGED
    lead.fingerprint = new_fingerprint
    if adding:
        return RowChange.NEW
    return RowChange.TOMBSTONED if lead.tombstone else RowChange.CHANGED


def save_if_changed(lead: Lead, *, using: str | None = None) -> Lead:
    """Persist ``lead``'s values (set on it by the caller: staff's edits, an import) when their fingerprint
    changed, and queue it; see :func:`decide` and :func:`_record`."""
    using = using or router.db_for_write(Lead, instance=lead)
    return _record(lead, decide(lead), using)


def _record(lead: Lead, change: RowChange, using: str) -> Lead:
    """Write what :func:`decide` found for ``lead`` and queue it when it is new or changed.

    The lead's write and (on the database Tasks backend) its task commit together, in the site's
    transaction or in one of their own: a rollback leaves neither. A tombstone keeps its new values but
    is not queued: staff must re-sync it to bring it back.
    """
    if change is RowChange.UNCHANGED:
        return lead
    if change is RowChange.SOURCE_MOVED:
        _remember_source_fingerprint(lead, using)
        return lead
    now = timezone.now()
    if change is RowChange.NEW:
        # Raises IntegrityError, the savepoint rolled back, if the row got a lead since we looked.
        with transaction.atomic(using=using):
            _insert(lead, now, using)
            enqueue_lead_on_commit(lead.pk, using)
        return lead
    values = {
        name: getattr(lead, name)
        for name in (*lead.crm_values(), "fingerprint", "source_fingerprint")
    }
    queryset = Lead.objects.using(using).filter(pk=lead.pk)
    if change is RowChange.CHANGED:
        with transaction.atomic(using=using):
            if queryset.mark_changed(now, **values):
                enqueue_lead_on_commit(lead.pk, using)
                note_changed(lead)
                return lead
    # A tombstone (mark_changed refuses it, even when this copy was loaded before it became one)
    # keeps its new values, unqueued.
    queryset.update(**values, updated_at=now)
    return lead


def _remember_source_fingerprint(lead: Lead, using: str) -> None:
    """Record a new mapper output that left the CRM's values as they were (rare), so the receivers' cheap
    check matches it next time."""
    if lead.pk is None or not lead.source_fingerprint:
        return
    Lead.objects.using(using).filter(pk=lead.pk).exclude(
        source_fingerprint=lead.source_fingerprint
    ).update(source_fingerprint=lead.source_fingerprint)


def _insert(lead: Lead, now: Any, using: str, *, failed: str = "") -> None:
    """Insert a new lead, pending (or ``failed`` with a mapping error); raises ``IntegrityError`` if the row
    already has one."""
    prepare_insert([lead], now, failed=failed)
    lead.save(using=using, force_insert=True)


def _record_mapping_error(lead: Lead, error: str, using: str) -> None:
    """Fail the lead with the mapper's message ``error``; the site's own save goes on.

    A tombstone keeps its state (it has nothing to send); the message is still shown.
    """
    logger.warning("crmify: mapping lead for %s failed: %s", lead.source_id, error)
    message = f"Mapping failed: {error}"
    # Empty fingerprints make the next successful mapping count as a change (and tell
    # api.retry_failed to map the row again rather than send what the lead holds).
    lead.fingerprint = lead.source_fingerprint = ""
    now = timezone.now()
    if lead.pk is None:
        try:
            with transaction.atomic(using=using):
                _insert(lead, now, using, failed=message)
            return
        except IntegrityError:
            lead.pk = (
                Lead.objects.using(using)
                .get(source_type=lead.source_type, source_id=lead.source_id)
                .pk
            )
    note_mapping_failed(lead, message)
    Lead.objects.using(using).filter(pk=lead.pk).fail_mapping(message, now)


def source_deleted(instance: models.Model) -> None:
    """Follow a deleted ``LEAD_MODEL`` row per ``ON_DELETE``: delete from the CRM, keeping a tombstone."""
    if crmify_settings.ON_DELETE != "delete":
        return
    using = router.db_for_write(Lead, instance=instance)
    lead = find_lead(instance, using)
    if lead is not None:
        request_crm_delete(lead, using=using)


def request_crm_delete(lead: Lead, *, using: str | None = None) -> bool:
    """Make ``lead`` a tombstone and queue its deletion from the CRM; False if it already is one.

    Decided on the row as it is in the database, not on ``lead`` as loaded: an admin action may hold a
    lead read before a worker gave it a CRM id, and that record must still be deleted.
    """
    using = using or router.db_for_write(Lead, instance=lead)
    deleted, queued = Lead.objects.using(using).filter(pk=lead.pk).request_delete()
    if not (deleted or queued):
        return False
    note_tombstone(lead)
    if queued:
        enqueue_lead_on_commit(lead.pk, using)
    return True
