"""Upgrading a django-crmify 1.3 database in place, and the facts the table checks read.

django-crmify 1.3 kept one table, ``crmify_lead``, built by its migrations ``0001_initial``, 0003-0005 and an
``anchor`` migration each site generated with ``makemigrations`` (so its name varies). Our ``0001_initial``
has the same name as 1.3's, so Django believes a 1.3 site applied it. Migration ``0002_upgrade_from_1_3``
calls :func:`forwards`, which tells a 1.3 table by its columns (not by migration names) and converts it:
our tables are created, every old lead is carried over with its CRM id, status, last sync time and link
to its ``LEAD_MODEL`` row, and marked synced with the fingerprints our engine would have recorded after
sending exactly what 1.3 sent, so the upgrade sends nothing and the next change is an update.

The system checks (``crmify.checks``: E060, E061) call :func:`schema_problems`, :func:`pending_migrations`
and :func:`foreign_migration_files`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.apps.registry import Apps
from django.core.management.color import no_style
from django.db import DatabaseError, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

import crmify.migrations
from crmify.loading import get_lead_model
from crmify.models import BackfillRun, LedgerEntry, PullCursor, SyncState
from crmify.models import Lead as CurrentLead
from crmify.tracking import fingerprint

#: The migrations django-crmify ships, in order: add each new one here (a test compares this with the
#: folder). Any other module in ``crmify/migrations`` was left behind by an older install (pip does not
#: delete files a site generated there): check E061.
SHIPPED_MIGRATIONS: tuple[str, ...] = (
    "0001_initial",
    "0002_upgrade_from_1_3",
    "0003_ledger_batch",
    "0004_crm_outage",
    "0005_funnel_and_delivery",
    "0006_changes_from_crm",
)

#: Where the 1.3 rows wait while our tables are built: a plain copy, so none of the old table's index,
#: constraint or sequence names (which PostgreSQL keeps per schema) clash with the new table's.
LEGACY_COPY_TABLE = "crmify_lead_1_3_upgrade"

#: Old leads read and written per round trip: the old table is never held in memory whole.
CHUNK_SIZE = 1000

#: 1.3 columns and the ``Lead`` field each becomes. NULL becomes "" (our text fields are not null).
TEXT_COLUMNS: dict[str, str] = {
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "phone": "phone",
    "mobile_phone": "mobile_phone",
    "street_address": "street_address",
    "city": "city",
    "state": "state",
    "country": "country",
    "lead_source": "lead_source",
    "external_status": "status",
    "external_id": "external_id",
}

#: 1.3 columns with no field of ours: kept in ``Lead.legacy_values`` (never sent; 1.3 never sent them).
LEGACY_COLUMNS: tuple[str, ...] = ("secondary_email", "dob")


class UpgradeError(Exception):
    """A 1.3 value that does not fit crmify 2; the migration rolls back and the old table is untouched."""


def table_columns(connection: BaseDatabaseWrapper, table: str) -> set[str] | None:
    """The column names of ``table``, or None when there is no such table."""
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return None
        return {
            column.name for column in connection.introspection.get_table_description(cursor, table)
        }


def is_1_3_lead_table(columns: set[str]) -> bool:
    """Whether ``crmify_lead`` has 1.3's shape: a CRM id, but none of our sync state."""
    return "external_id" in columns and "sync_state" not in columns


# -- the migration ------------------------------------------------------------------------------------


def forwards(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """``RunPython`` of ``0002_upgrade_from_1_3``: convert a 1.3 table, else add ``legacy_values``.

    ``apps`` already has ``Lead.legacy_values`` (the migration adds it to the state first); on a fresh
    install or a site on our 0001 schema, adding that column is all there is to do.
    """
    lead_model = apps.get_model("crmify", "Lead")
    columns = table_columns(schema_editor.connection, lead_model._meta.db_table)
    if columns is None:
        return
    if is_1_3_lead_table(columns):
        _convert(apps, schema_editor)
    elif "legacy_values" not in columns:
        schema_editor.add_field(lead_model, lead_model._meta.get_field("legacy_values"))


def backwards(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Drop ``legacy_values`` again. A converted 1.3 table stays converted: there is no way back to 1.3."""
    lead_model = apps.get_model("crmify", "Lead")
    columns = table_columns(schema_editor.connection, lead_model._meta.db_table) or set()
    if "legacy_values" in columns:
        schema_editor.remove_field(lead_model, lead_model._meta.get_field("legacy_values"))


def _convert(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    connection = schema_editor.connection
    quote = connection.ops.quote_name
    lead_model = apps.get_model("crmify", "Lead")
    table = lead_model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {quote(LEGACY_COPY_TABLE)} AS SELECT * FROM {quote(table)}")
        cursor.execute(f"DROP TABLE {quote(table)}")
        existing = set(connection.introspection.table_names(cursor))
    for name in ("Lead", "LedgerEntry", "BackfillRun"):
        model = apps.get_model("crmify", name)
        if model._meta.db_table not in existing:
            schema_editor.create_model(model)
    columns = table_columns(connection, LEGACY_COPY_TABLE) or set()
    source = _Source(apps, connection.alias) if "anchor_id" in columns else None
    for chunk in _old_rows(connection.alias, columns):
        lead_model.objects.using(connection.alias).bulk_create(
            [_lead_from(row, lead_model, source) for row in chunk]
        )
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {quote(LEGACY_COPY_TABLE)}")
        # The old ids were kept (admin links stay valid): new leads must be numbered after them.
        for sql in connection.ops.sequence_reset_sql(no_style(), [lead_model]):
            cursor.execute(sql)


def _old_rows(alias: str, columns: set[str]) -> Iterator[list[dict[str, Any]]]:
    """The copied 1.3 rows, ``CHUNK_SIZE`` at a time in id order, values converted as Django reads them."""
    reader = _reader_model(columns)
    names = sorted(columns & {"id", *TEXT_COLUMNS, *LEGACY_COLUMNS, "last_synced", "anchor_id"})
    last_id = None
    while True:
        rows = reader._default_manager.using(alias).order_by("id")
        if last_id is not None:
            rows = rows.filter(id__gt=last_id)
        chunk = list(rows.values(*names)[:CHUNK_SIZE])
        if not chunk:
            return
        last_id = chunk[-1]["id"]
        yield chunk


def _reader_model(columns: set[str]) -> type[models.Model]:
    """An unmanaged model over the copied 1.3 rows, so dates and times are read as Django reads them
    (SQLite keeps them as text; a site with ``USE_TZ`` gets aware times)."""
    meta = type(
        "Meta",
        (),
        {
            "app_label": "crmify_1_3",
            "db_table": LEGACY_COPY_TABLE,
            "managed": False,
            "apps": Apps(),
        },
    )
    fields: dict[str, Any] = {"id": models.IntegerField(primary_key=True)}
    for column in columns & {*TEXT_COLUMNS, "secondary_email"}:
        fields[column] = models.TextField(null=True)
    if "dob" in columns:
        fields["dob"] = models.DateField(null=True)
    if "last_synced" in columns:
        fields["last_synced"] = models.DateTimeField(null=True)
    if "anchor_id" in columns:
        # Read as the database gives it; the LEAD_MODEL's primary key field turns it into the value
        # whose str() our leads keep as source_id (a UUID kept as hex on SQLite, say).
        fields["anchor_id"] = models.TextField(null=True)
    return type("Lead13", (models.Model,), {"__module__": __name__, "Meta": meta, **fields})


class _Source:
    """How a 1.3 ``anchor_id`` becomes our link: ``LEAD_MODEL``'s content type and the row's key as text."""

    def __init__(self, apps: Apps, alias: str) -> None:
        lead_model = get_lead_model()
        content_type = apps.get_model("contenttypes", "ContentType")
        found, _ = content_type.objects.using(alias).get_or_create(
            app_label=lead_model._meta.app_label, model=lead_model._meta.model_name
        )
        self.type_id = int(found.pk)
        self.pk_field = lead_model._meta.pk

    def source_id(self, anchor: Any) -> str:
        """``str(instance.pk)`` of the row 1.3 stored as ``anchor``, as ``tracking.new_lead`` keeps it."""
        assert self.pk_field is not None
        return str(self.pk_field.to_python(anchor))


def _lead_from(row: dict[str, Any], lead_model: Any, source: _Source | None) -> Any:
    """One of our leads for a 1.3 row, in the state our engine leaves a lead it has just synced."""
    lead = lead_model(id=row["id"])
    for column, name in TEXT_COLUMNS.items():
        value = row.get(column) or ""
        max_length = lead_model._meta.get_field(name).max_length
        if max_length is not None and len(value) > max_length:
            raise UpgradeError(
                f"crmify 1.3 lead {row['id']}: its {column} is {len(value)} characters long and "
                f"crmify 2 keeps {max_length}. Shorten it in crmify_lead and run migrate again."
            )
        setattr(lead, name, value)
    anchor = row.get("anchor_id")
    if anchor is not None and source is not None:
        lead.source_type_id = source.type_id
        lead.source_id = source.source_id(anchor)
    lead.legacy_values = _legacy_values(row)
    lead.last_synced_at = row.get("last_synced")
    # The fingerprint of what 1.3 holds, by the rule the engine uses (Lead.crm_values, then
    # tracking.fingerprint): the current rule, not a frozen copy, or every lead would look changed.
    values = CurrentLead.crm_values(lead)
    lead.fingerprint = fingerprint(values)
    if lead.external_id:
        # 1.3 sent a lead before every save of it (a failed send failed the save): its row is what the
        # CRM holds. lead_source counts as sent although 1.3 never sent it, so a rename stays one PUT.
        lead.sync_state = SyncState.SYNCED
        lead.synced_fingerprint = lead.fingerprint
        lead.synced_values = values
    else:
        # Never synced: pending, with no task; the sweeper sends it after SWEEP_PENDING_AFTER.
        lead.sync_state = SyncState.PENDING
        lead.queued_at = timezone.now()
    return lead


def _legacy_values(row: dict[str, Any]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for column in LEGACY_COLUMNS:
        value = row.get(column)
        if isinstance(value, datetime.date):
            kept[column] = value.isoformat()
        elif value:
            kept[column] = str(value)
    return kept


# -- what the checks read -----------------------------------------------------------------------------


def expected_columns() -> dict[str, set[str]]:
    """Each crmify table and the columns this code reads and writes."""
    return {
        model._meta.db_table: {str(field.column) for field in model._meta.concrete_fields}
        for model in (CurrentLead, LedgerEntry, BackfillRun, PullCursor)
    }


def schema_problems(connection: BaseDatabaseWrapper) -> list[str]:
    """What is wrong with crmify's tables on ``connection``: a 1.3 table, a missing table, missing
    columns ("crmify_lead.legacy_values missing"). Empty when none of them exists yet (not migrated:
    Django's own notice covers it) or when the database cannot be reached (a check must not fail for
    that)."""
    # Opening a SQLite file that is not there would create it: a project before its first migrate.
    name = str(connection.settings_dict["NAME"] or "")
    if (
        connection.vendor == "sqlite"
        and name != ":memory:"
        and "mode=memory" not in name
        and not os.path.exists(name)
    ):
        return []
    expected = expected_columns()
    try:
        with connection.cursor() as cursor:
            present = set(connection.introspection.table_names(cursor))
            if not present & expected.keys():
                return []
            problems: list[str] = []
            for table, columns in expected.items():
                if table not in present:
                    problems.append(f"table {table} missing")
                    continue
                found = {
                    column.name
                    for column in connection.introspection.get_table_description(cursor, table)
                }
                if table == CurrentLead._meta.db_table and is_1_3_lead_table(found):
                    problems.append(f"{table} is django-crmify 1.3's, not converted yet")
                else:
                    problems += [f"{table}.{column} missing" for column in sorted(columns - found)]
            return problems
    except DatabaseError:
        return []


def pending_migrations(connection: BaseDatabaseWrapper) -> list[str]:
    """crmify's shipped migrations not yet recorded as applied on ``connection``."""
    applied = {
        name for app, name in MigrationRecorder(connection).applied_migrations() if app == "crmify"
    }
    return [name for name in SHIPPED_MIGRATIONS if name not in applied]


def foreign_migration_files() -> list[Path]:
    """Modules in crmify's migrations folder that django-crmify does not ship (a 1.3 site's generated
    ``0006_lead_anchor.py``, which pip leaves behind and which breaks Django's migration graph)."""
    found: list[Path] = []
    # The package's __path__, as Django's MigrationLoader reads it.
    for folder in crmify.migrations.__path__:
        for path in sorted(Path(folder).glob("*.py")):
            if path.stem != "__init__" and path.stem not in SHIPPED_MIGRATIONS:
                found.append(path)
    return found
