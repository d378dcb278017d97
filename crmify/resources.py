"""Leads to and from files: the django-import-export resource behind the Lead admin's Import and Export.

``LeadResource`` is used by ``crmify.admin.import_export.LeadImportExportMixin`` (and may be used by a
site's own scripts: ``LeadResource().import_data(dataset, dry_run=True)``). Rows are matched to leads by
e-mail, compared case-insensitively; every row is checked before anything is applied; saving goes through
the engine (:func:`crmify.tracking.save_if_changed`), so a new or changed lead is fingerprinted and queued
with the import's transaction, and a dry run, which django-import-export rolls back, queues nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.contrib.admin.utils import quote
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models.functions import Lower, Trim
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from import_export import fields, resources, widgets
from import_export.results import RowResult

from crmify.backends.base import BaseBackend
from crmify.conf import crmify_settings
from crmify.loading import get_mapper
from crmify.mappers import LeadModelFieldMapper
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead
from crmify.preview import last_name_warning
from crmify.tracking import save_if_changed, source_model, source_row
from crmify.transitions import funnel_statuses, moves_back, status_key
from crmify.worker import current_backend

#: The columns an import reads, in the order an export writes them: every field a mapper may fill, and
#: the custom fields as one JSON object (``{"plan": "pro"}``).
IMPORT_COLUMNS: tuple[str, ...] = (
    "email",
    *(name for name in MAPPABLE_FIELDS if name != "email"),
    "custom_fields",
)
#: Columns an export adds after :data:`IMPORT_COLUMNS`; an import ignores them (the engine owns them).
EXPORT_ONLY_COLUMNS: tuple[str, ...] = ("sync_state", "crm_id", "last_error", "last_synced_at")

#: What a spreadsheet runs as a formula when a cell starts with it (OWASP "CSV injection").
FORMULA_TRIGGERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
#: Put before such a cell on export so it reads as text; taken off again on import.
FORMULA_ESCAPE = "'"

#: E-mails looked up per query when an import loads the leads it matches (well under SQLite's limit).
LOOKUP_CHUNK = 500


def escape_formula(value: Any) -> Any:
    """``value`` as a spreadsheet shows it as text: a string that would run as a formula gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return FORMULA_ESCAPE + value
    return value


def clean_text(value: Any) -> str:
    """A cell as text: stripped, empty for a blank cell, without the ``'`` an export put before a formula
    trigger (so an exported file imports back as it was)."""
    text = "" if value is None else str(value).strip()
    if text.startswith(FORMULA_ESCAPE) and text[1:].startswith(FORMULA_TRIGGERS):
        return text[1:]
    return text


def email_key(value: Any) -> str:
    """The form in which e-mails are compared: stripped and lower-case."""
    return clean_text(value).lower()


def known_statuses() -> dict[str, str]:
    """Statuses an import accepts, by :func:`status_key`: the ``CRMIFY`` statuses (the funnel's stages of
    ``LEAD_STATUS_ORDER`` too) and every status a lead already has (a CRM's own statuses arrive that way).
    One query."""
    configured = funnel_statuses()
    used = Lead.objects.exclude(status="").values_list("status", flat=True).distinct()
    # The configured spelling wins over a variant some lead was given.
    return {status_key(status): status for status in (*used, *configured)}


def leads_by_email(keys: Iterable[str]) -> dict[str, list[Lead]]:
    """The leads whose e-mail matches one of ``keys`` (see :func:`email_key`), oldest first.

    One query per :data:`LOOKUP_CHUNK` e-mails, instead of one per row.
    """
    wanted = sorted(set(keys) - {""})
    found: dict[str, list[Lead]] = defaultdict(list)
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        queryset = (
            Lead.objects.annotate(email_key=Lower(Trim("email")))
            .filter(email_key__in=chunk)
            .order_by("pk")
        )
        for lead in queryset:
            # The annotation above; LeadQuerySet's stubs do not carry annotations.
            found[lead.email_key].append(lead)  # type: ignore[attr-defined]
    return found


class TextWidget(widgets.CharWidget):  # type: ignore[misc]
    """Text cells through :func:`clean_text` on import (``LeadResource.export_field`` escapes every
    exported cell, this column's included)."""

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> str:
        return clean_text(value)


class LeadRowResult(RowResult):  # type: ignore[misc]
    """A row's result, telling a tombstone apart from an unchanged row (both are skipped), with what the
    preview says beside it."""

    #: The row matched a lead deleted from the CRM: an import does not bring it back.
    deleted_from_crm = False

    def __init__(self) -> None:
        super().__init__()
        #: What the row does besides the lead (a value written to its source row).
        self.notes: list[str] = []
        #: What staff should know before importing it (no last name).
        self.warnings: list[str] = []


def source_admin_path(lead: Lead) -> str:
    """The default admin site's page of ``lead``'s source row, or "" when it has none there."""
    model = source_model(lead)
    if model is None:
        return ""
    try:
        return reverse(
            f"admin:{model._meta.app_label}_{model._meta.model_name}_change",
            args=[quote(lead.source_id)],
        )
    except NoReverseMatch:
        return ""


def source_name(lead: Lead) -> str:
    """``"user profile 3"``: the source row of ``lead`` as the import's messages name it."""
    model = source_model(lead)
    label = model._meta.verbose_name if model is not None else "source row"
    return f"{label} {lead.source_id}"


class LeadResource(resources.ModelResource):  # type: ignore[misc]
    """Import and export of leads, matched by e-mail.

    Per-row checks (an invalid row is listed with its errors and stops the whole import):

    - ``email`` is required and must be a valid address; it appears once per file and matches at most
      one live lead (compared stripped and case-insensitively; the lead keeps its own spelling);
    - ``status``, when given, is ``LEAD_NEW_STATUS``, ``LEAD_CONVERTED_STATUS``, ``LEAD_DEAD_STATUS`` or
      a status some lead already has (any case; stored in the known spelling). A blank status keeps the
      lead's, and a new lead starts at ``LEAD_NEW_STATUS``;
    - no value is longer than its field allows.

    - on a lead with a source row (a ``LEAD_MODEL`` row), a column the mapper fills from that row is
      refused, with a message naming the row to change instead, unless the mapper lists the field in
      ``import_to_source_fields``: then the value is written to the source row
      (``LeadModelFieldMapper.import_to_source``) and the preview says so. A value equal to the lead's
      is no change and passes (an exported file imports back).

    Only the columns present in the file are written. Unchanged rows and leads deleted from the CRM
    (tombstones) are skipped and reported. A row without a last name is imported with a warning.
    """

    sync_state = fields.Field(attribute="sync_state", column_name="sync_state", readonly=True)
    crm_id = fields.Field(attribute="external_id", column_name="crm_id", readonly=True)
    last_error = fields.Field(attribute="last_error", column_name="last_error", readonly=True)
    last_synced_at = fields.Field(
        attribute="last_synced_at",
        column_name="last_synced_at",
        readonly=True,
        widget=widgets.DateTimeWidget(),
    )

    class Meta:
        model = Lead
        fields = (*IMPORT_COLUMNS, *EXPORT_ONLY_COLUMNS)
        export_order = fields
        import_id_fields = ("email",)
        skip_unchanged = True
        report_skipped = True
        # The confirmed import is one transaction (and its queued syncs commit with it) whatever the
        # site's IMPORT_EXPORT_USE_TRANSACTIONS says; the dry run needs one to roll back into.
        use_transactions = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._leads: dict[str, list[Lead]] = {}
        self._statuses: dict[str, str] = {}
        self._first_row_of: dict[str, int] = {}
        self._tombstones: set[int] = set()
        self._mapper: LeadModelFieldMapper | None = None
        self._owned: set[str] = set()
        self._backend: BaseBackend | None = None
        #: Values for source rows, by lead (``id()``): written when the row is saved, not before.
        self._to_source: dict[int, list[tuple[str, Any]]] = {}
        self._notes: dict[int, list[str]] = defaultdict(list)
        self._pending_warnings: list[str] = []

    @classmethod
    def get_row_result_class(cls) -> type[LeadRowResult]:
        return LeadRowResult

    @classmethod
    def widget_from_django_field(cls, f: models.Field[Any, Any], default: Any = None) -> Any:
        if isinstance(f, (models.CharField, models.TextField)):
            return TextWidget
        return super().widget_from_django_field(f, default or widgets.Widget)

    def get_import_fields(self) -> list[fields.Field]:
        """The columns an import reads: the export-only ones are left out of the checks and the preview."""
        return [field for field in super().get_import_fields() if not field.readonly]

    # -- import: once per file --------------------------------------------------------------------------

    def before_import(self, dataset: Any, **kwargs: Any) -> None:
        """Tidy the file (header case, blank lines), then load what every row is checked against: the
        leads its e-mails match and the known statuses, in a few queries for the whole file."""
        dataset.headers = [clean_text(header).lower() for header in dataset.headers or ()]
        # Spreadsheets keep trailing blank lines; they are not rows anyone meant to import.
        for index in reversed(range(len(dataset))):
            if not any(clean_text(value) for value in dataset[index]):
                del dataset[index]
        emails = dataset["email"] if "email" in dataset.headers else ()
        self._leads = leads_by_email(email_key(email) for email in emails)
        self._statuses = known_statuses()
        self._first_row_of = {}
        self._tombstones = set()
        self._to_source, self._notes = {}, defaultdict(list)
        try:
            self._mapper = get_mapper()
            self._owned = self._mapper.filled_fields()
        except ImproperlyConfigured:
            # The system checks report it; meanwhile no column may overwrite what the mapper fills.
            self._mapper = None
            self._owned = {*MAPPABLE_FIELDS, CUSTOM_FIELD_PREFIX}
        try:
            self._backend = current_backend()
        except Exception:
            self._backend = None  # the last-name warning then says what the lead itself holds

    # -- import: each row --------------------------------------------------------------------------------

    def before_import_row(self, row: dict[str, Any], **kwargs: Any) -> None:
        """Refuse a second row for the same e-mail: which of the two should win is the file's to say."""
        key = email_key(row.get("email"))
        if not key:
            return
        number = kwargs.get("row_number", 0)
        first = self._first_row_of.setdefault(key, number)
        if first != number:
            raise ValidationError(
                {"email": _("Row %(row)s of this file has the same e-mail.") % {"row": first}}
            )

    def get_instance(self, instance_loader: Any, row: dict[str, Any]) -> Lead | None:
        """The lead with the row's e-mail, from the leads :meth:`before_import` loaded.

        A live lead wins over tombstones; two live leads with the e-mail make the row invalid rather
        than update one of them at random.
        """
        matches = self._leads.get(email_key(row.get("email")), [])
        live = [lead for lead in matches if not lead.tombstone]
        if len(live) > 1:
            raise ValidationError(
                {
                    "email": _(
                        "%(count)s leads have this e-mail (ids %(ids)s): merge them in the admin first."
                    )
                    % {"count": len(live), "ids": ", ".join(str(lead.pk) for lead in live)}
                }
            )
        chosen = live or matches
        return chosen[0] if chosen else None

    def init_instance(self, row: dict[str, Any] | None = None) -> Lead:
        """A new lead: no source row (``source_type`` stays NULL), at ``LEAD_NEW_STATUS``."""
        return Lead(status=crmify_settings.LEAD_NEW_STATUS)

    def import_field(
        self,
        field: fields.Field,
        instance: Lead,
        row: dict[str, Any],
        is_m2m: bool = False,
        **kwargs: Any,
    ) -> None:
        """Set one column on the lead; a ``ValueError`` becomes that column's error in the preview."""
        before = self._owned_values(instance)
        if field.column_name not in row or field.attribute not in (
            "email",
            "status",
            "custom_fields",
        ):
            super().import_field(field, instance, row, is_m2m, **kwargs)
        elif field.attribute == "email":
            self._import_email(instance, field.clean(row))
        elif field.attribute == "status":
            self._import_status(instance, field.clean(row))
        else:
            self._import_custom_fields(instance, clean_text(row[field.column_name]))
        if instance.pk is not None and instance.source_type_id is not None:
            self._check_ownership(instance, field.attribute, before, kwargs.get("row_number", 0))

    def _owned_values(self, lead: Lead) -> dict[str, Any]:
        """The lead's values the mapper fills, by target (``custom_fields__<key>`` for custom fields)."""
        values: dict[str, Any] = {name: getattr(lead, name) for name in MAPPABLE_FIELDS}
        values |= {
            CUSTOM_FIELD_PREFIX + key: value for key, value in (lead.custom_fields or {}).items()
        }
        return values

    def _check_ownership(
        self, lead: Lead, column: str, before: dict[str, Any], row_number: int
    ) -> None:
        """Refuse, or send to the source row, what this column changed in fields the mapper fills."""
        after = self._owned_values(lead)
        changed = [
            target
            for target in sorted(before.keys() | after.keys())
            if before.get(target) != after.get(target)
            and (target in self._owned or CUSTOM_FIELD_PREFIX in self._owned)
        ]
        writable = self._mapper.import_to_source_fields if self._mapper is not None else frozenset()
        refused = [target for target in changed if target not in writable]
        if refused:
            where = source_name(lead)
            path = source_admin_path(lead)
            keys = [target.removeprefix(CUSTOM_FIELD_PREFIX) for target in refused]
            raise ValueError(
                _(
                    "%(fields)sfilled from %(source)s for this lead: change it there%(link)s, or "
                    "leave the column out. Imported into the lead only, the next save of %(source)s "
                    "would put the old value back."
                )
                % {
                    # A plain column is named by the error's own prefix; custom fields by their keys.
                    "fields": "" if refused == [column] else f"{', '.join(keys)}: ",
                    "source": where,
                    "link": f" ({path})" if path else "",
                }
            )
        for target in changed:
            self._to_source.setdefault(id(lead), []).append((target, after.get(target)))
            self._notes[row_number].append(
                _("%(field)s will be written to %(source)s, which sends it to the CRM.")
                % {"field": target.removeprefix(CUSTOM_FIELD_PREFIX), "source": source_name(lead)}
            )

    def _import_email(self, lead: Lead, value: str) -> None:
        key = email_key(value)
        if not key:
            raise ValueError(_("An e-mail address is required: leads are matched by it."))
        try:
            validate_email(key)
        except ValidationError:
            message = _("“%(email)s” is not a valid e-mail address.") % {"email": value}
            raise ValueError(message) from None
        # A matched lead keeps its own spelling: re-casing it would send an update for nothing.
        if email_key(lead.email) != key:
            lead.email = key

    def _import_status(self, lead: Lead, value: str) -> None:
        if not value:
            return  # a blank cell keeps the lead's status (LEAD_NEW_STATUS for a new lead)
        status = self._statuses.get(status_key(value))
        if status is None:
            raise ValueError(
                _("Unknown status “%(status)s”: use one of %(known)s.")
                % {"status": value, "known": ", ".join(sorted(set(self._statuses.values())))}
            )
        if lead.pk is not None and moves_back(lead.status, status):
            # The funnel rule: an import is an automatic change; staff go back with "Force a status".
            raise ValueError(
                _(
                    "Status “%(status)s” would move this lead back from “%(current)s”: an import "
                    "never does. Use the leads' action “Force a status” to move it back."
                )
                % {"status": status, "current": lead.status}
            )
        lead.status = status

    def _import_custom_fields(self, lead: Lead, value: str) -> None:
        """Merge a JSON object of custom fields into the lead's: keys not in the cell are kept, a blank
        cell changes nothing, a key set to ``null`` is removed."""
        if not value:
            return
        try:
            given = json.loads(value)
        except ValueError:
            given = None
        if not isinstance(given, dict) or not all(
            isinstance(item, str | int | float | bool) or item is None for item in given.values()
        ):
            raise ValueError(
                _(
                    'Custom fields must be a JSON object of names and plain values, like {"plan": "pro"}.'
                )
            )
        merged = {**(lead.custom_fields or {}), **given}
        lead.custom_fields = {name: item for name, item in merged.items() if item is not None}

    def dehydrate_custom_fields(self, lead: Lead) -> str:
        """Custom fields as one JSON cell (empty when there are none), the form an import reads."""
        return (
            json.dumps(lead.custom_fields, ensure_ascii=False, sort_keys=True)
            if lead.custom_fields
            else ""
        )

    def skip_row(
        self,
        instance: Lead,
        original: Lead,
        row: dict[str, Any],
        import_validation_errors: dict[str, Any] | None = None,
    ) -> bool:
        """Skip an unchanged row (django-import-export's ``skip_unchanged``) and any tombstone."""
        if instance.pk is not None and instance.tombstone:
            self._tombstones.add(instance.pk)
            return True
        return bool(super().skip_row(instance, original, row, import_validation_errors))

    def check_fields(
        self, instance: Lead, import_validation_errors: dict[str, Any] | None = None
    ) -> None:
        """Add the model's own field checks (``max_length``) to the row's errors and raise them together.

        Only the imported columns are checked, and no uniqueness query is made: leads imported here have
        no source row, and the e-mail's uniqueness was checked against the file and the loaded leads.
        """
        errors = dict(import_validation_errors or {})
        imported = {field.attribute for field in self.get_import_fields()} - set(errors)
        exclude = [field.name for field in Lead._meta.fields if field.name not in imported]
        try:
            instance.clean_fields(exclude=exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def do_instance_save(self, instance: Lead, is_create: bool) -> None:
        """Save through the engine: fingerprint the lead and queue it with the import's transaction.

        Values for the source row go there first (the mapper's ``import_to_source``); the row's save maps
        it onto the lead, so the lead is read back before its own save compares fingerprints.
        """
        pending = self._to_source.pop(id(instance), [])
        source = source_row(instance) if pending and self._mapper is not None else None
        if source is not None and self._mapper is not None:
            for target, value in pending:
                self._mapper.import_to_source(source, target, value)
            instance.refresh_from_db(fields=["fingerprint", "source_fingerprint"])
        save_if_changed(instance, using=self.get_db_connection_name())

    def validate_instance(
        self,
        instance: Lead,
        import_validation_errors: dict[str, Any] | None = None,
        validate_unique: bool = True,
    ) -> None:
        """The model's own field checks (:meth:`check_fields`); a valid row gets its warnings."""
        self.check_fields(instance, import_validation_errors)
        warning = last_name_warning(instance, self._backend, None)
        if warning:
            self._pending_warnings = [warning]

    def after_import_row(
        self, row: dict[str, Any], row_result: LeadRowResult, **kwargs: Any
    ) -> None:
        row_result.deleted_from_crm = row_result.is_skip() and (
            row_result.object_id in self._tombstones
        )
        row_result.notes = self._notes.pop(kwargs.get("row_number", 0), [])
        row_result.warnings, self._pending_warnings = (
            self._pending_warnings if not row_result.is_skip() else [],
            [],
        )

    # -- export ------------------------------------------------------------------------------------------

    def export_field(self, field: fields.Field, instance: Lead, **kwargs: Any) -> Any:
        """Every exported cell, escaped so that a spreadsheet shows it rather than runs it."""
        return escape_formula(super().export_field(field, instance, **kwargs))
