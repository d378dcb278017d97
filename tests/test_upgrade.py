"""A django-crmify 1.3.0 site upgrades in place: ``migrate`` alone converts its ``crmify_lead``.

The 1.3.0 database is built from its migrations' SQL as ``sqlmigrate`` emits it
(``tests/fixtures/crmify_1_3_<vendor>.sql``), with the applied records a 1.3.0 site has (its generated
anchor migration under an unusual name), then upgraded by ``migrate``. These tests run on SQLite and, in
the PostgreSQL pass (``CRMIFY_TEST_DB=postgres``), on PostgreSQL; the CRM is the sandbox over real HTTP.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.urls import reverse

import crmify.migrations
from crmify.checks import check_tables
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.tracking import fingerprint
from crmify.upgrade import (
    LEGACY_COPY_TABLE,
    SHIPPED_MIGRATIONS,
    UpgradeError,
    schema_problems,
    table_columns,
)
from tests.admin_fixtures import login, make_lead, people
from tests.conftest import calls, postgres_pass_only
from tests.doubles import Enqueued

FIXTURES = Path(__file__).parent / "fixtures"

#: crmify's rows in a 1.3.0 site's django_migrations; its generated anchor migration has its own name.
APPLIED_1_3 = (
    "0001_initial",
    "0003_lead_last_synced",
    "0004_lead_external_status",
    "0005_lead_sync_hash",
    "0002_auto_20180314_0942",
)

LAST_SYNCED = datetime.datetime(2019, 3, 14, 9, 42, 17, tzinfo=datetime.UTC)

pytestmark = pytest.mark.django_db(transaction=True)

__all__ = ["login", "people"]  # fixtures, imported for pytest


def run_sql_file(path: Path) -> None:
    """Run a file of statements that each end with ``;`` at the end of a line (``--`` lines skipped)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("--")]
    with connection.cursor() as cursor:
        for statement in "\n".join(lines).split(";\n"):
            if statement.strip():
                cursor.execute(statement)


@pytest.fixture
def db_1_3() -> Iterator[None]:
    """crmify's tables replaced by a 1.3.0 site's; afterwards crmify is at its latest migration again."""
    call_command("migrate", "crmify", "zero", verbosity=0)
    run_sql_file(FIXTURES / f"crmify_1_3_{connection.vendor}.sql")
    recorder = MigrationRecorder(connection)
    for name in APPLIED_1_3:
        recorder.record_applied("crmify", name)
    yield
    call_command("migrate", "crmify", verbosity=0)  # converts whatever a failing test left behind
    recorder.migration_qs.filter(app="crmify").exclude(name__in=SHIPPED_MIGRATIONS).delete()


@pytest.fixture
def site(insightly: SandboxServer, enqueued: Enqueued) -> Enqueued:
    """The sandbox as the CRM, tasks recorded (nothing runs until the test runs them)."""
    return enqueued


def old_lead(user: User | None, **values: Any) -> int:
    """Insert a lead as 1.3.0 kept it (NULL for what it did not have); returns its id."""
    row: dict[str, Any] = {"first_name": "", "last_name": "", "external_id": "", **values}
    if user is not None:
        row["anchor_id"] = user.pk
    if "last_synced" in row:
        row["last_synced"] = connection.ops.adapt_datetimefield_value(row["last_synced"])
    if "dob" in row:
        row["dob"] = connection.ops.adapt_datefield_value(row["dob"])
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in row)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO crmify_lead ({columns}) VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )
        cursor.execute("SELECT MAX(id) FROM crmify_lead")
        return int(cursor.fetchone()[0])


def users(*names: str) -> list[User]:
    """Users made as a 1.3.0 site's users were, without crmify's receivers (the table is 1.3's)."""
    return User.objects.bulk_create(
        User(username=name, first_name=name.title(), last_name="Old", email=f"{name}@example.com")
        for name in names
    )


def crm_lead(sandbox: SandboxServer, user: User, status: str | None = None) -> str:
    """The CRM record 1.3.0 made for ``user``, seeded in the sandbox; returns its id."""
    fields: dict[str, Any] = {
        "FIRST_NAME": user.first_name,
        "LAST_NAME": user.last_name,
        "EMAIL": user.email,
    }
    if status is not None:
        fields["LEAD_STATUS_ID"] = next(s.id for s in sandbox.state.statuses if s.name == status)
    return str(sandbox.add_lead(fields)["LEAD_ID"])


def requests_made(sandbox: SandboxServer) -> int:
    return sum(sum(by_status.values()) for by_status in sandbox.stats()["requests"].values())


def synced_1_3_lead(sandbox: SandboxServer, user: User, **values: Any) -> int:
    """A lead 1.3.0 had synced for ``user``: its CRM record exists with what 1.3.0 sent."""
    status = values.get("external_status")
    return old_lead(
        user,
        first_name=user.first_name,
        last_name=user.last_name,
        email=user.email,
        external_id=crm_lead(sandbox, user, status),
        last_synced=LAST_SYNCED,
        sync_hash="b'bm90IHJlYWQ='",
        **values,
    )


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


def test_migrate_carries_every_1_3_lead_over_and_sends_or_queues_nothing(
    db_1_3: None, site: Enqueued, insightly: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crmify.upgrade.CHUNK_SIZE", 2)  # three leads: two chunks
    ada, bob, cyd = users("ada", "bob", "cyd")
    ada_id = synced_1_3_lead(
        insightly,
        ada,
        external_status="Contacted",
        phone="555-0100",
        secondary_email="ada@work.example.com",
        dob=datetime.date(1815, 12, 10),
        lead_source="Web",
    )
    bob_id = synced_1_3_lead(insightly, bob)
    never_synced_id = old_lead(cyd, first_name="Cyd", email="cyd@example.com")
    before = requests_made(insightly)

    call_command("migrate", verbosity=0)

    assert requests_made(insightly) == before
    assert site.lead_ids == []
    user_type = ContentType.objects.get_for_model(User)
    ada_lead = Lead.objects.get(pk=ada_id)
    assert (ada_lead.source_type, ada_lead.source_id) == (user_type, str(ada.pk))
    assert ada_lead.external_id == insightly.leads()[0]["LEAD_ID"].__str__()
    assert (ada_lead.status, ada_lead.phone, ada_lead.lead_source) == (
        "Contacted",
        "555-0100",
        "Web",
    )
    assert ada_lead.last_synced_at == LAST_SYNCED
    assert ada_lead.sync_state == SyncState.SYNCED
    assert ada_lead.legacy_values == {
        "secondary_email": "ada@work.example.com",
        "dob": "1815-12-10",
    }
    assert ada_lead.custom_fields == {}  # sent to the CRM; 1.3.0 never sent these
    # Marked synced exactly as the worker leaves a lead it has just sent.
    assert ada_lead.fingerprint == ada_lead.synced_fingerprint == fingerprint(ada_lead.crm_values())
    assert ada_lead.synced_values == ada_lead.crm_values()
    bob_lead = Lead.objects.get(pk=bob_id)
    assert (bob_lead.status, bob_lead.phone, bob_lead.legacy_values) == ("", "", {})
    assert (bob_lead.sync_state, bob_lead.source_id) == (SyncState.SYNCED, str(bob.pk))
    pending = Lead.objects.get(pk=never_synced_id)
    assert (pending.sync_state, pending.external_id, pending.source_id) == (
        SyncState.PENDING,
        "",
        str(cyd.pk),
    )
    assert pending.queued_at is not None  # the sweeper sends it once SWEEP_PENDING_AFTER has passed
    assert table_columns(connection, LEGACY_COPY_TABLE) is None


def test_after_the_upgrade_an_unchanged_save_sends_nothing_and_a_rename_is_one_update(
    db_1_3: None, site: Enqueued, insightly: SandboxServer
) -> None:
    (ada,) = users("ada")
    lead_id = synced_1_3_lead(insightly, ada, external_status="Contacted", lead_source="Web")
    crm_id = insightly.leads()[0]["LEAD_ID"]
    call_command("migrate", verbosity=0)
    before = requests_made(insightly)

    ada.save()
    assert site.lead_ids == []
    assert requests_made(insightly) == before

    ada.first_name = "Augusta"
    ada.save()
    assert site.lead_ids == [lead_id]
    assert site.run_all() == ["synced"]
    assert (calls(insightly, "PUT /Leads"), calls(insightly, "POST /Leads")) == (1, 0)
    (record,) = insightly.leads()
    assert (record["LEAD_ID"], record["FIRST_NAME"], record["LAST_NAME"]) == (
        crm_id,
        "Augusta",
        "Old",
    )
    assert Lead.objects.get(pk=lead_id).external_id == str(crm_id)
    # Only what changed: 1.3's values count as sent.
    sent = LedgerEntry.objects.get(operation="update").request_summary
    assert sent == f'PUT /Leads {{"LEAD_ID": {crm_id}, "FIRST_NAME": "Augusta"}}'


def test_after_the_upgrade_a_new_user_is_one_create_numbered_after_the_old_leads(
    db_1_3: None, site: Enqueued, insightly: SandboxServer
) -> None:
    (ada,) = users("ada")
    old_id = synced_1_3_lead(insightly, ada)
    call_command("migrate", verbosity=0)

    newcomer = User.objects.create(username="dan", first_name="Dan", email="dan@example.com")
    (lead_id,) = site.lead_ids
    assert site.run_all() == ["synced"]
    assert calls(insightly, "POST /Leads") == 1
    assert calls(insightly, "PUT /Leads") == 0
    lead = Lead.objects.get(pk=lead_id)
    assert lead_id > old_id
    assert (lead.source_id, lead.sync_state) == (str(newcomer.pk), SyncState.SYNCED)
    assert len(insightly.leads()) == 2


def test_check_reports_a_1_3_table_as_e060_and_migrate_still_runs(
    db_1_3: None, site: Enqueued, insightly: SandboxServer
) -> None:
    (ada,) = users("ada")
    synced_1_3_lead(insightly, ada)

    messages = [m for m in checks.run_checks() if m.id == "crmify.E060"]
    assert len(messages) == 1
    assert "crmify_lead is django-crmify 1.3's, not converted yet" in messages[0].msg
    assert "table crmify_ledgerentry missing" in messages[0].msg
    assert "manage.py migrate" in str(messages[0].hint)

    # migrate runs every check first: E060 must not stop the command that fixes it.
    call_command("migrate", verbosity=0, skip_checks=False)

    assert "crmify.E060" not in ids(checks.run_checks())
    assert Lead.objects.get().source_id == str(ada.pk)


def test_a_1_3_value_too_long_for_crmify_2_stops_migrate_and_keeps_the_old_table(
    db_1_3: None, site: Enqueued
) -> None:
    (ada,) = users("ada")
    bad = old_lead(ada, first_name="Ada", external_id="77", external_status="x" * 150)

    with pytest.raises(
        UpgradeError, match=f"lead {bad}: its external_status is 150 characters long"
    ):
        call_command("migrate", verbosity=0)

    columns = table_columns(connection, "crmify_lead")
    assert columns is not None and "anchor_id" in columns  # rolled back: still 1.3's, rows and all
    assert table_columns(connection, LEGACY_COPY_TABLE) is None
    with connection.cursor() as cursor:
        cursor.execute("UPDATE crmify_lead SET external_status = 'Contacted'")
    call_command("migrate", verbosity=0)
    assert Lead.objects.get(pk=bad).status == "Contacted"


def test_on_the_current_schema_the_upgrade_migration_leaves_leads_as_they_are(
    site: Enqueued,
) -> None:
    (ada,) = users("ada")
    ada.save()  # a lead, pending, as the engine made it
    lead = Lead.objects.get()
    call_command("migrate", "crmify", "0001", verbosity=0)
    assert "legacy_values" not in (table_columns(connection, "crmify_lead") or set())
    (message,) = check_tables(databases=["default"])
    # Every later migration's columns are missing at 0001 too, each named.
    assert message.id == "crmify.E060"
    for column in (
        "crmify_lead.backfill_run_id",
        "crmify_lead.legacy_values",
        "crmify_lead.status_refused",
        "crmify_lead.status_refused_at",
        "crmify_lead.deleted_in_crm_at",
        "crmify_lead.crm_modified_at",
        "crmify_lead.waiting_for_crm",
        "crmify_ledgerentry.batch",
        "crmify_ledgerentry.direction",
    ):
        assert f"{column} missing" in message.msg, column

    call_command("migrate", "crmify", verbosity=0)

    after = Lead.objects.get()
    fields = ("source_id", "email", "sync_state", "fingerprint", "source_fingerprint", "queued_at")
    assert [getattr(after, name) for name in fields] == [getattr(lead, name) for name in fields]
    assert after.legacy_values == {}


@pytest.mark.django_db
def test_the_lead_page_shows_what_1_3_kept_read_only_and_only_when_there_is_some(
    login: Callable[[str], Client],
) -> None:
    kept = make_lead(legacy_values={"secondary_email": "ada@work.example.com", "dob": "1815-12-10"})
    plain = make_lead()
    client = login("root")

    response = client.get(reverse("admin:crmify_lead_change", args=[kept.pk]))
    html = response.content.decode()
    assert "Kept from django-crmify 1.3" in html
    assert "ada@work.example.com" in html and "1815-12-10" in html
    assert "legacy_values" not in response.context["adminform"].form.fields
    plain_page = client.get(reverse("admin:crmify_lead_change", args=[plain.pk]))
    assert "Kept from django-crmify 1.3" not in plain_page.content.decode()


@pytest.mark.django_db
def test_a_leftover_1_3_anchor_migration_is_e061_before_migrate_fails_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leftover = tmp_path / "0006_lead_anchor.py"
    leftover.write_text(
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('crmify', '0005_lead_sync_hash')]\n"
        "    operations = []\n"
    )
    monkeypatch.setattr(crmify.migrations, "__path__", [*crmify.migrations.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "crmify.migrations.0006_lead_anchor", raising=False)

    (message,) = check_tables(databases=["default"])
    assert message.id == "crmify.E061"
    assert str(leftover) in message.msg
    assert "Delete it" in str(message.hint)
    with pytest.raises(SystemCheckError, match=r"crmify\.E061"):
        call_command("migrate", verbosity=0, skip_checks=False)


def test_every_migration_file_is_one_crmify_ships() -> None:
    shipped = sorted(
        path.stem
        for folder in crmify.migrations.__path__
        for path in Path(folder).glob("*.py")
        if path.stem != "__init__"
    )
    assert shipped == list(SHIPPED_MIGRATIONS)


def test_e060_is_quiet_before_crmify_is_migrated() -> None:
    """Django's migrate runs the checks before it creates anything: there is nothing to report yet."""
    assert check_tables(databases=["default"]) == []  # migrated: the shape is right
    call_command("migrate", "crmify", "zero", verbosity=0)
    try:
        assert table_columns(connection, "crmify_lead") is None
        assert check_tables(databases=["default"]) == []
    finally:
        call_command("migrate", "crmify", verbosity=0)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="a SQLite file")
def test_e060_does_not_create_a_sqlite_file_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "db.sqlite3"
    probe = SQLiteWrapper({**connection.settings_dict, "NAME": str(missing)}, alias="probe")

    assert schema_problems(probe) == []
    assert not missing.exists()


@pytest.fixture
def postgres_only() -> None:
    postgres_pass_only()


@pytest.mark.postgres
def test_on_postgresql_the_new_table_takes_its_own_index_and_sequence_names(
    postgres_only: None, db_1_3: None, site: Enqueued, insightly: SandboxServer
) -> None:
    (ada,) = users("ada")
    old_id = synced_1_3_lead(insightly, ada)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'crmify_lead'")
        old_indexes = {row[0] for row in cursor.fetchall()}
    assert any(name.endswith("_like") for name in old_indexes)  # 1.3's external_id pattern index

    call_command("migrate", verbosity=0)

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'crmify_lead'")
        indexes = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT pg_get_serial_sequence('crmify_lead', 'id')")
        (sequence,) = cursor.fetchone()
        cursor.execute(f"SELECT last_value FROM {sequence}")
        (last_value,) = cursor.fetchone()
    assert "crmify_lead_unique_source" in indexes
    assert "crmify_lead_anchor_id_key" not in indexes
    assert last_value >= old_id
    newcomer = User.objects.create(username="dan", email="dan@example.com")
    assert Lead.objects.get(source_id=str(newcomer.pk)).pk > old_id
