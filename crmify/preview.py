"""What the mapper preview shows: the configuration, a check of each mapping, and what rows would send.

Called by the admin's mapper preview page (``crmify.admin.preview``); bulk tools may reuse it. Nothing here
writes to the database or calls the CRM except :func:`compare_with_crm`, which the page calls only when staff
press "Compare with CRM": one fetch through ``crmify.api.fetch_from_crm``, kept in the ledger like every
CRM call. Payloads are built on leads held in memory: a row's existing lead (so an update shows as the
partial update it would be) or an unsaved :func:`crmify.tracking.new_lead`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TypeAlias

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.db import models, router
from django.db.models import ForeignObjectRel, Q

from crmify.api import fetch_from_crm
from crmify.backends.base import BaseBackend, length_problems
from crmify.conf import crmify_settings
from crmify.exceptions import BackendError, MappingError, PermanentBackendError
from crmify.loading import get_lead_model, get_mapper, walk_path
from crmify.mappers import LeadModelFieldMapper, MappedLead, SourcePath, source_label
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead, SyncState
from crmify.secrets import redact

# The engine's own wrapper around ``mapper.map``: the preview reports exactly the error a save would record
# (a buggy callable in a site's mapper becomes a MappingError there too, not a 500 here).
from crmify.tracking import assign_values, fingerprint, map_for_crm, new_lead
from crmify.worker import current_backend

#: How many rows "sample" and a search show at most.
SAMPLE_SIZE = 10


def to_json(value: Any) -> str:
    """Pretty JSON as the page shows payloads and CRM records: sorted keys, real characters, not escapes."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def dotted_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Configuration:
    """The settings the preview works from, loaded; ``errors`` says what could not be loaded and why."""

    lead_model_setting: str
    lead_model: type[models.Model] | None
    mapper_setting: str
    mapper: LeadModelFieldMapper | None
    backend_setting: str
    backend: BaseBackend | None
    errors: tuple[str, ...] = ()

    @property
    def lead_model_label(self) -> str:
        """``"testapp.UserProfile (user profile)"``: the app label and the model's name for people."""
        if self.lead_model is None:
            return ""
        meta = self.lead_model._meta
        return f"{meta.label} ({meta.verbose_name})"

    @property
    def backend_class(self) -> str:
        return dotted_path(self.backend.configured_class) if self.backend is not None else ""

    @property
    def can_preview_rows(self) -> bool:
        return self.lead_model is not None and self.mapper is not None


def load_configuration() -> Configuration:
    """Load ``LEAD_MODEL``, the mapper and the backend, collecting errors instead of raising them.

    The backend is the worker's (:func:`crmify.worker.current_backend`); building it does no I/O.
    """
    errors: list[str] = []
    lead_model: type[models.Model] | None = None
    mapper: LeadModelFieldMapper | None = None
    backend: BaseBackend | None = None
    try:
        lead_model = get_lead_model()
    except ImproperlyConfigured as exc:
        errors.append(str(exc))
    try:
        mapper = get_mapper()
    except ImproperlyConfigured as exc:
        errors.append(str(exc))
    try:
        backend = current_backend()
    except Exception as exc:
        # A site's backend may fail in its constructor for any reason: the page says so instead of a 500.
        errors.append(redact(f"The backend cannot be built: {type(exc).__name__}: {exc}"))
    return Configuration(
        lead_model_setting=crmify_settings.LEAD_MODEL,
        lead_model=lead_model,
        mapper_setting=crmify_settings.LEAD_MODEL_FIELDMAPPER,
        mapper=mapper,
        backend_setting=crmify_settings.BACKEND,
        backend=backend,
        errors=tuple(errors),
    )


# -- mapping checks -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingCheck:
    """One declared mapping or fallback and what checking it against the models found.

    ``source_kind`` reads like "CharField (max 150)", "method", "property" or "callable"; ``target_kind``
    like "lead field (max 255)" or "custom field Nickname__c". ``errors`` make the mapping fail for every
    row; ``notes`` may make it fail for some.
    """

    source: str
    target: str
    is_fallback: bool
    source_kind: str
    target_kind: str
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


#: What a source path ends on: a field, a relation's reverse side, a generic foreign key, or an attribute.
#: A string: Django's ``Field`` cannot be subscripted at run time (django-stubs types it generic).
PathEnd: TypeAlias = "models.Field[Any, Any] | ForeignObjectRel | GenericForeignKey | None"


@dataclass(frozen=True, slots=True)
class _Side:
    kind: str
    max_length: int | None = None
    errors: tuple[str, ...] = ()


def _path_end(model: type[models.Model], path: str) -> tuple[type[models.Model], PathEnd]:
    """The model a string path ends on and its last part there as a field (a relation's reverse side
    included), or None for an attribute; ``ImproperlyConfigured`` (from :func:`walk_path`) when it does
    not exist."""
    hops = walk_path(model, path)
    owner = hops[-1][1] if hops else model
    try:
        return owner, owner._meta.get_field(path.rsplit("__", 1)[-1])
    except FieldDoesNotExist:
        return owner, None


def _check_source(model: type[models.Model], source: SourcePath) -> _Side:
    if not isinstance(source, str):
        return _Side("callable")
    try:
        owner, model_field = _path_end(model, source)
    except ImproperlyConfigured as exc:
        return _Side("missing", errors=(str(exc),))
    if model_field is None:
        # getattr_static: reading a property here would run it on the class, not on a row.
        attribute = inspect.getattr_static(owner, source.rsplit("__", 1)[-1], None)
        if isinstance(attribute, property | cached_property):
            return _Side("property")
        return _Side("method" if callable(attribute) else "attribute")
    kind = type(model_field).__name__
    if model_field.is_relation:
        related = model_field.related_model
        label = related._meta.label if isinstance(related, type) else "?"
        return _Side(
            f"{kind} to {label}",
            errors=(
                f"{source!r} is a relation: it gives a {label} object, not a value. "
                f"Map one of its fields instead ({source}__<field>).",
            ),
        )
    max_length = getattr(model_field, "max_length", None)
    return _Side(f"{kind} (max {max_length})" if max_length else kind, max_length)


def _check_target(target: str) -> _Side:
    if target.startswith(CUSTOM_FIELD_PREFIX):
        return _Side(f"custom field {target.removeprefix(CUSTOM_FIELD_PREFIX)}")
    if target in MAPPABLE_FIELDS:
        max_length = getattr(Lead._meta.get_field(target), "max_length", None)
        return _Side(
            f"lead field (max {max_length})" if max_length else "lead field (text)", max_length
        )
    return _Side(
        "unknown",
        errors=(
            f"{target!r} is not a lead field. Lead fields are {', '.join(MAPPABLE_FIELDS)}; "
            f"custom fields start with {CUSTOM_FIELD_PREFIX!r}.",
        ),
    )


def check_mappings(
    mapper: LeadModelFieldMapper, lead_model: type[models.Model]
) -> list[MappingCheck]:
    """Check every mapping and fallback of ``mapper`` against ``lead_model`` and the lead, in declared order."""
    checks: list[MappingCheck] = []
    for source, target, is_fallback in mapper.mappings():
        source_side = _check_source(lead_model, source)
        target_side = _check_target(target)
        notes: tuple[str, ...] = ()
        if (
            source_side.max_length
            and target_side.max_length
            and source_side.max_length > target_side.max_length
        ):
            notes = (
                f"The source holds up to {source_side.max_length} characters and the lead keeps "
                f"{target_side.max_length}: a longer value fails to map.",
            )
        checks.append(
            MappingCheck(
                source=source_label(source),
                target=target,
                is_fallback=is_fallback,
                source_kind=source_side.kind,
                target_kind=target_side.kind,
                errors=source_side.errors + target_side.errors,
                notes=notes,
            )
        )
    return checks


# -- choosing rows ------------------------------------------------------------------------------------


def email_lookup(lead_model: type[models.Model], mapper: LeadModelFieldMapper) -> str | None:
    """The ORM path to search rows by e-mail: the mapper's primary e-mail source when it is a plain field
    path (``user__email``), else the model's own ``email`` field; None when there is neither."""
    candidates = [
        source
        for source, target, is_fallback in mapper.mappings()
        if target == "email" and not is_fallback and isinstance(source, str)
    ]
    for path in [*candidates, "email"]:
        try:
            _, model_field = _path_end(lead_model, path)
        except ImproperlyConfigured:
            continue
        if isinstance(model_field, models.Field) and not model_field.is_relation:
            return path
    return None


def sample_rows(lead_model: type[models.Model], size: int = SAMPLE_SIZE) -> list[models.Model]:
    """The first ``size`` rows of ``lead_model`` by primary key."""
    return list(lead_model._default_manager.order_by("pk")[:size])


def find_rows(
    lead_model: type[models.Model],
    mapper: LeadModelFieldMapper,
    query: str,
    limit: int = SAMPLE_SIZE,
) -> list[models.Model]:
    """Rows whose primary key is ``query`` or whose e-mail (see :func:`email_lookup`) is, ignoring case."""
    query = query.strip()
    if not query:
        return []
    condition = Q()
    # Not a primary key (``to_python`` refuses it): search by e-mail only.
    with contextlib.suppress(ValidationError):
        condition |= Q(pk=lead_model._meta.pk.to_python(query))
    path = email_lookup(lead_model, mapper)
    if path is not None:
        condition |= Q(**{f"{path}__iexact": query})
    if not condition:
        return []
    return list(lead_model._default_manager.filter(condition).order_by("pk")[:limit])


# -- row previews -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadValue:
    """One lead value of a previewed row. ``origin``: ``"mapping"``, ``"fallback"`` or ``"lead"`` (not
    mapped: the value the lead holds, such as its status)."""

    name: str
    label: str
    value: Any
    origin: str = "mapping"

    @property
    def empty(self) -> bool:
        return self.value in ("", None)

    @property
    def from_fallback(self) -> bool:
        return self.origin == "fallback"


@dataclass(frozen=True, slots=True)
class CrmComparison:
    """The CRM's current record for a row's lead, or why there is none (the "Compare with CRM" answer)."""

    record: dict[str, Any] | None
    error: str = ""

    @property
    def record_json(self) -> str:
        return to_json(self.record) if self.record is not None else ""


@dataclass(frozen=True, slots=True)
class RowPreview:
    """What one source row would become and send. ``payload`` is None when it cannot be built (a mapping
    error, an unknown status, a backend without payload preview); ``warnings`` say why and what to fix."""

    pk: Any
    label: str
    lead_pk: int | None = None
    values: tuple[LeadValue, ...] = ()
    external_id: str = ""
    #: The body of the next call: a create's whole record, or an update of what changed since the last sync.
    payload: dict[str, Any] | None = None
    #: The whole record the CRM will hold after that call (for a create, the payload itself).
    record: dict[str, Any] | None = None
    #: The CRM holds these values already (as last synced): a save would send nothing.
    up_to_date: bool = False
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    can_compare: bool = False
    comparison: CrmComparison | None = None

    @property
    def operation(self) -> str:
        return "update" if self.external_id else "create"

    @property
    def payload_json(self) -> str:
        return to_json(self.payload) if self.payload is not None else ""

    @property
    def record_json(self) -> str:
        return to_json(self.record) if self.record is not None else ""


def existing_leads(instances: Iterable[models.Model]) -> dict[str, Lead]:
    """The leads tracking ``instances`` by the rows' primary key as text, in one query (one model)."""
    rows = list(instances)
    if not rows:
        return {}
    source_type = ContentType.objects.get_for_model(rows[0])
    # The database the engine writes leads to (as crmify.tracking.find_lead reads them).
    leads = Lead.objects.using(router.db_for_write(Lead)).filter(
        source_type=source_type, source_id__in=[str(row.pk) for row in rows]
    )
    return {lead.source_id: lead for lead in leads}


def _lead_value(target: str, value: Any, mapped: MappedLead) -> LeadValue:
    """A mapped value labelled as the lead admin names its field (custom fields by their key)."""
    if target.startswith(CUSTOM_FIELD_PREFIX):
        label = f"{target.removeprefix(CUSTOM_FIELD_PREFIX)} (custom field)"
    else:
        label = str(getattr(Lead._meta.get_field(target), "verbose_name", target))
    return LeadValue(
        target, label, value, "fallback" if target in mapped.from_fallback else "mapping"
    )


def _lead_values(lead: Lead, mapped: MappedLead) -> tuple[LeadValue, ...]:
    """Mapped values in the admin's field order, custom fields after, the status last if not mapped."""
    values = [
        _lead_value(name, mapped.values[name], mapped)
        for name in MAPPABLE_FIELDS
        if name in mapped.values
    ]
    values += [
        _lead_value(CUSTOM_FIELD_PREFIX + key, value, mapped)
        for key, value in mapped.custom_fields.items()
    ]
    if "status" not in mapped.values:
        # Not mapped: the lead keeps its own status (LEAD_NEW_STATUS for a new one).
        values.append(replace(_lead_value("status", lead.status, mapped), origin="lead"))
    return tuple(values)


def crm_max_lengths(backend: BaseBackend) -> Mapping[str, int]:
    """Longest values the CRM accepts, by payload key: the backend's ``max_lengths`` (part of the
    contract of ``crmify.backends.base.BaseBackend``, empty by default); none if a site's backend set it
    to something that is not a mapping."""
    lengths = backend.max_lengths
    return lengths if isinstance(lengths, Mapping) else {}


def _build_payload(lead: Lead, backend: BaseBackend) -> tuple[dict[str, Any] | None, str]:
    """``backend.build_payload(lead)`` and an error to warn with (the message of an unknown status)."""
    try:
        return backend.build_payload(lead), ""
    except PermanentBackendError as exc:
        # An unknown status or source when the CRM's table is cached: the sync would fail the same way.
        return None, redact(exc.message)
    except Exception as exc:
        # A site's backend may raise anything; the page shows it rather than failing.
        return None, redact(f"The backend cannot build the payload: {type(exc).__name__}: {exc}")


def _whole_record(lead: Lead, backend: BaseBackend) -> dict[str, Any] | None:
    """The whole record the CRM holds once ``lead`` is sent: the backend's payload for the lead as if it
    had never been synced (a re-sync sends everything), built on a copy so ``lead`` keeps its state."""
    whole = copy.copy(lead)
    whole.synced_values = {}
    record, _error = _build_payload(whole, backend)
    return record


def _state_warnings(lead: Lead) -> list[str]:
    """What the row's lead already went through that staff must know before trusting the preview."""
    if lead.pk is None or lead.sync_state != SyncState.FAILED:
        return []
    return [
        f"This row's lead failed its last sync and stays failed until its values change or staff "
        f"retry it. The CRM said: {redact(lead.last_error) or '(no message)'}"
    ]


def last_name_warning(
    lead: Lead, backend: BaseBackend | None, payload: Mapping[str, Any] | None
) -> str:
    """What the CRM gets for ``lead`` without a last name ("" when it has one): the mapper preview's and
    the import preview's warning."""
    if lead.last_name:
        return ""
    filled = backend.missing_last_name(lead) if backend is not None else None
    if filled is not None:
        sent = str(filled)
    else:
        # A backend that does not say: whatever its payload carries as the last name.
        sent = str((payload or {}).get("LAST_NAME") or (payload or {}).get("last_name") or "")
    if sent:
        return f"No last name: {sent!r} will be sent as the last name instead."
    return "No last name, and none will be sent: a CRM that requires one will refuse this lead."


def preview_row(
    instance: models.Model,
    mapper: LeadModelFieldMapper,
    backend: BaseBackend | None,
    lead: Lead | None = None,
) -> RowPreview:
    """What ``instance`` maps to and what ``backend`` would send for it, with warnings.

    ``lead`` is the row's existing lead (its CRM id and last synced values make the payload an update);
    without one an unsaved new lead is used. The lead is changed in memory only and never saved.
    """
    lead = lead if lead is not None else new_lead(instance)
    base = RowPreview(
        pk=instance.pk,
        label=str(instance),
        lead_pk=lead.pk,
        external_id=lead.external_id,
        can_compare=bool(lead.external_id and backend is not None and backend.supports_fetch),
        notes=(
            ("Deleted from the CRM (a tombstone): saves do not send it until staff re-sync it.",)
            if lead.tombstone
            else ()
        ),
    )
    mapped = map_for_crm(instance, mapper)
    if isinstance(mapped, MappingError):
        return replace(base, warnings=(f"Mapping failed: {mapped}",))
    assign_values(lead, mapped)  # in memory only: the preview never saves the lead
    # As the engine decides "unchanged": the values' fingerprint is the one the last sync recorded.
    up_to_date = bool(
        lead.external_id
        and lead.sync_state == SyncState.SYNCED
        and fingerprint(lead.crm_values()) == lead.synced_fingerprint
    )
    warnings: list[str] = _state_warnings(lead)
    payload: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    if backend is None:
        pass  # the configuration error is shown at the top of the page
    elif backend.supports_payload_preview:
        payload, error = _build_payload(lead, backend)
        if error:
            warnings.append(error)
        elif lead.external_id and lead.synced_values:
            record = _whole_record(lead, backend)
        else:
            record = payload  # a create, or a re-sync: the call carries the whole record
        warnings += [redact(problem) for problem in backend.refusals(lead)]
    else:
        base = replace(
            base,
            notes=(
                *base.notes,
                f"{backend.display_name} cannot show its payload (supports_payload_preview is off).",
            ),
        )
    if last_name := last_name_warning(lead, backend, payload):
        warnings.append(last_name)
    if lead.email:
        try:
            validate_email(lead.email)
        except ValidationError:
            warnings.append(f"{lead.email!r} is not a valid e-mail address: the CRM may refuse it.")
    if payload is not None and backend is not None:
        warnings += length_problems(backend.payload_fields(payload), crm_max_lengths(backend))
    return replace(
        base,
        values=_lead_values(lead, mapped),
        payload=payload,
        record=record,
        up_to_date=up_to_date,
        warnings=tuple(warnings),
    )


def preview_rows(
    instances: Iterable[models.Model], configuration: Configuration
) -> list[RowPreview]:
    """:func:`preview_row` for each of ``instances``, their leads read in one query."""
    rows = list(instances)
    if configuration.mapper is None:
        return []
    leads = existing_leads(rows)
    return [
        preview_row(row, configuration.mapper, configuration.backend, leads.get(str(row.pk)))
        for row in rows
    ]


def compare_with_crm(row: RowPreview) -> RowPreview:
    """``row`` with the CRM's current record of its lead beside the payload: the preview's one CRM call,
    made only when staff press "Compare with CRM". Errors come back as text, free of credentials."""
    # The lead as stored (not the preview's in-memory copy): its CRM id is what gets fetched.
    lead = (
        Lead.objects.filter(pk=row.lead_pk).first()
        if row.can_compare and row.lead_pk is not None
        else None
    )
    if lead is None or not lead.external_id:
        return replace(row, comparison=CrmComparison(None, "This row has no lead in the CRM yet."))
    try:
        record = fetch_from_crm(lead)
    except BackendError as exc:
        return replace(row, comparison=CrmComparison(None, str(exc)))
    if record is None:
        error = f"The CRM has no lead {lead.external_id}: it was deleted there."
        return replace(row, comparison=CrmComparison(None, error))
    return replace(row, comparison=CrmComparison(record))
