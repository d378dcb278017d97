"""Import and export of leads on the Lead changelist (django-import-export): the preview of every row, the
dry run that sends and queues nothing, the confirm step that applies all rows or none and queues the
changed leads, export with the changelist's filters, formula escaping, refused files and permissions."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import openpyxl
import pytest
import tablib
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from crmify.admin.lead import LeadAdmin
from crmify.backends import locmem
from crmify.models import Lead, SyncState
from tests.admin_fixtures import EXPORT, export, login, make_lead, make_staff, people, texts
from tests.doubles import Enqueued

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]
Capture = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]

CHANGELIST = reverse("admin:crmify_lead_changelist")
IMPORT = reverse("admin:crmify_lead_import")
PROCESS_IMPORT = reverse("admin:crmify_lead_process_import")
#: The index of each format in the import form (LeadImportExportMixin.import_formats).
IMPORT_FORMAT = {"csv": "0", "xlsx": "1", "json": "2"}
HEADERS = ("email", "first_name", "last_name", "company", "status")


def csv_bytes(*rows: dict[str, str], headers: tuple[str, ...] = HEADERS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=headers)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def upload(client: Client, content: bytes, fmt: str = "csv", name: str | None = None) -> Any:
    """The first step: upload a file and get the dry run's preview."""
    upload_file = SimpleUploadedFile(name or f"leads.{fmt}", content)
    return client.post(
        IMPORT, {"resource": "0", "format": IMPORT_FORMAT[fmt], "import_file": upload_file}
    )


def confirm(client: Client, preview: Any) -> Any:
    """The second step: confirm what the preview showed."""
    return client.post(PROCESS_IMPORT, preview.context["confirm_form"].initial, follow=True)


def preview_rows(response: Any) -> list[tuple[int, str, list[str]]]:
    return [(row.number, row.kind, row.errors) for row in response.context["crmify_import"].rows]


def file_errors(response: Any) -> list[str]:
    return list(response.context["form"].errors.get("import_file", []))


@pytest.fixture
def mixed_file() -> Iterator[bytes]:
    """Leads already there (one to update, one unchanged, one deleted from the CRM) and a file with a
    new row, those three, and one row for each per-row error."""
    make_lead(
        email="Ann@Example.com",
        first_name="Ann",
        last_name="Lee",
        company="Old Co",
        external_id="crm-ann",
        sync_state=SyncState.SYNCED,
    )
    make_lead(email="bo@example.com", first_name="Bo", last_name="Bee", company="Same")
    make_lead(email="gone@example.com", tombstone=True, sync_state=SyncState.DELETED)
    locmem.leads["crm-ann"] = {"email": "Ann@Example.com"}
    yield csv_bytes(
        {"email": "new@example.com", "first_name": "Nia", "last_name": "New", "company": "N"},
        {
            "email": " ann@example.com ",
            "first_name": "Ann",
            "last_name": "Lee",
            "company": "New Co",
        },
        {"email": "bo@example.com", "first_name": "Bo", "last_name": "Bee", "company": "Same"},
        {"email": "gone@example.com", "first_name": "Gone", "last_name": "", "company": ""},
    )


def invalid_rows() -> list[dict[str, str]]:
    return [
        {"email": "", "first_name": "No", "last_name": "Mail", "company": ""},
        {"email": "not-an-email", "first_name": "Bad", "last_name": "Mail", "company": ""},
        {"email": "odd@example.com", "first_name": "Odd", "company": "", "status": "Bogus"},
        {"email": "long@example.com", "first_name": "Long", "company": "x" * 300},
    ]


# -- the preview -----------------------------------------------------------------------------------


def test_preview_lists_new_updated_unchanged_skipped_and_invalid_rows_with_their_errors(
    login: Login, mixed_file: bytes
) -> None:
    content = mixed_file + csv_bytes(*invalid_rows()).split(b"\n", 1)[1]
    before = list(Lead.objects.order_by("pk").values())
    response = upload(login("root"), content)
    assert response.status_code == 200
    assert "confirm_form" not in response.context  # an invalid row: nothing can be confirmed
    rows = preview_rows(response)
    assert [(number, kind) for number, kind, _errors in rows] == [
        (1, "new"),
        (2, "update"),
        (3, "skip"),
        (4, "deleted"),
        (5, "invalid"),
        (6, "invalid"),
        (7, "invalid"),
        (8, "invalid"),
    ]
    errors = {number: errors for number, _kind, errors in rows}
    assert errors[5] == ["email: An e-mail address is required: leads are matched by it."]
    assert errors[6] == ["email: “not-an-email” is not a valid e-mail address."]
    assert errors[7] == [
        "status: Unknown status “Bogus”: use one of AttemptedContact, Contacted, Converted, "
        "Disqualified, NotContacted."
    ]
    assert errors[8] == ["company: Ensure this value has at most 255 characters (it has 300)."]
    html = response.content.decode()
    assert "Some rows are invalid" in html and "Skipped: deleted from the CRM" in html
    assert "Invalid: <strong>4</strong>" in html and "New: <strong>1</strong>" in html
    assert list(Lead.objects.order_by("pk").values()) == before  # the dry run left nothing
    # The valid rows may still be imported (skipping the invalid ones): the upload waits for that
    # confirm, which removes it (tests/test_import_ownership.py covers a file with no valid row).
    stored = response.context["form"].cleaned_data["import_file"].tmp_storage_name
    skip_form = response.context["crmify_skip_form"]
    assert skip_form.initial["import_file_name"] == stored


def test_a_status_some_lead_has_is_accepted_in_any_case_and_stored_as_spelled(
    login: Login,
) -> None:
    make_lead(status="Nurturing")
    client = login("root")
    preview = upload(
        client,
        csv_bytes({"email": "n@example.com", "status": "nurturing"}, headers=("email", "status")),
    )
    assert preview_rows(preview) == [(1, "new", [])]
    confirm(client, preview)
    assert Lead.objects.get(email="n@example.com").status == "Nurturing"


def test_a_status_spelled_with_spaces_is_the_configured_one(login: Login) -> None:
    client = login("root")
    content = csv_bytes(
        {"email": "s@example.com", "status": "not contacted"}, headers=("email", "status")
    )
    preview = upload(client, content)
    assert preview_rows(preview) == [(1, "new", [])]
    confirm(client, preview)
    assert Lead.objects.get(email="s@example.com").status == "NotContacted"


def test_the_same_email_twice_in_a_file_or_on_two_leads_is_an_invalid_row(login: Login) -> None:
    make_lead(email="twin@example.com")
    make_lead(email="TWIN@example.com")
    rows = preview_rows(
        upload(
            login("root"),
            csv_bytes(
                {"email": "a@example.com"},
                {"email": "A@example.com"},
                {"email": "twin@example.com"},
                headers=("email",),
            ),
        )
    )
    assert rows[0] == (1, "new", [])
    assert rows[1] == (2, "invalid", ["email: Row 1 of this file has the same e-mail."])
    assert rows[2][1] == "invalid" and "2 leads have this e-mail" in rows[2][2][0]


def test_a_file_without_an_email_column_is_refused_as_a_whole(login: Login) -> None:
    response = upload(login("root"), csv_bytes({"first_name": "Ann"}, headers=("first_name",)))
    assert "confirm_form" not in response.context
    assert response.context["result"].has_errors()
    html = response.content.decode()
    assert "are not present in the file headers: email" in html
    assert "Traceback" not in html


# -- nothing leaks out of the dry run ----------------------------------------------------------------


def valid_file() -> bytes:
    return csv_bytes(
        {"email": "new@example.com", "first_name": "Nia", "last_name": "New", "company": "N"},
        {"email": "ann@example.com", "first_name": "Ann", "last_name": "Lee", "company": "New Co"},
        {"email": "bo@example.com", "first_name": "Bo", "last_name": "Bee", "company": "Same"},
        {"email": "gone@example.com", "first_name": "Gone", "last_name": "", "company": ""},
    )


def test_preview_enqueues_nothing_on_the_dummy_backend(
    login: Login, mixed_file: bytes, enqueued: Enqueued, django_capture_on_commit_callbacks: Capture
) -> None:
    client = login("root")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        preview = upload(client, mixed_file)
    assert "confirm_form" in preview.context
    assert callbacks == [] and enqueued.results == []


def test_preview_writes_no_task_row_on_the_database_backend(
    login: Login, mixed_file: bytes, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="default")
    client = login("root")
    tasks_before = DBTaskResult.objects.count()
    preview = upload(client, mixed_file)
    assert "confirm_form" in preview.context
    assert DBTaskResult.objects.count() == tasks_before
    confirm(client, preview)
    # The new and the changed lead: their task rows were written in the import's transaction.
    assert DBTaskResult.objects.count() == tasks_before + 2


def test_preview_sends_nothing_to_the_crm(
    login: Login, mixed_file: bytes, django_capture_on_commit_callbacks: Capture
) -> None:
    client = login("root")
    with django_capture_on_commit_callbacks(execute=True):
        preview = upload(client, mixed_file)
    assert "confirm_form" in preview.context
    assert locmem.calls == []


# -- confirm ---------------------------------------------------------------------------------------


def test_confirm_imports_the_rows_and_sends_the_new_and_changed_leads(
    login: Login, mixed_file: bytes, django_capture_on_commit_callbacks: Capture
) -> None:
    client = login("root")
    preview = upload(client, mixed_file)
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm(client, preview)
    assert texts(response) == [
        "Import finished: 1 new and 1 updated leads queued for the CRM; "
        "1 unchanged and 1 deleted from the CRM skipped."
    ]
    new = Lead.objects.get(email="new@example.com")
    assert (new.first_name, new.status, new.source_type_id) == ("Nia", "NotContacted", None)
    ann = Lead.objects.get(external_id="crm-ann")
    assert (ann.email, ann.company) == ("Ann@Example.com", "New Co")  # matched, kept its spelling
    assert Lead.objects.get(email="gone@example.com").first_name == "Ada"  # the tombstone stays
    assert sorted((call.operation, call.payload["email"]) for call in locmem.calls) == [
        ("create", "new@example.com"),
        ("update", "Ann@Example.com"),
    ]


def test_confirm_queues_exactly_the_new_and_changed_leads(
    login: Login, mixed_file: bytes, enqueued: Enqueued, django_capture_on_commit_callbacks: Capture
) -> None:
    client = login("root")
    preview = upload(client, mixed_file)
    with django_capture_on_commit_callbacks(execute=True):
        confirm(client, preview)
    expected = Lead.objects.filter(email__in=["new@example.com", "Ann@Example.com"])
    assert sorted(enqueued.lead_ids) == sorted(lead.pk for lead in expected)
    assert set(expected.values_list("sync_state", flat=True)) == {SyncState.PENDING}


def test_a_row_that_turns_invalid_before_confirm_rolls_back_the_whole_import(
    login: Login, mixed_file: bytes, enqueued: Enqueued, django_capture_on_commit_callbacks: Capture
) -> None:
    client = login("root")
    preview = upload(client, mixed_file)
    make_lead(email="bo@example.com")  # the unchanged row now matches two leads
    leads_before = list(Lead.objects.order_by("pk").values())
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm(client, preview)
    assert response.redirect_chain[-1][0] == IMPORT
    assert texts(response)[0].startswith("Nothing was imported: 1 row is invalid now")
    assert list(Lead.objects.order_by("pk").values()) == leads_before
    assert enqueued.results == [] and locmem.calls == []


def test_xlsx_and_json_files_import_like_csv(login: Login) -> None:
    client = login("root")
    sheet = tablib.Dataset(headers=["Email", "First_Name", "phone"])
    sheet.append(["xl@example.com", "Excel", 5551234])
    sheet.append([None, None, None])  # a blank line a spreadsheet keeps is not a row
    preview = upload(client, sheet.export("xlsx"), "xlsx")
    assert preview_rows(preview) == [(1, "new", [])]
    confirm(client, preview)
    lead = Lead.objects.get(email="xl@example.com")
    assert (lead.first_name, lead.phone) == ("Excel", "5551234")

    rows = [{"email": "js@example.com", "last_name": "Json", "status": "Converted"}]
    preview = upload(client, json.dumps(rows).encode(), "json")
    assert preview_rows(preview) == [(1, "new", [])]
    confirm(client, preview)
    assert Lead.objects.get(email="js@example.com").status == "Converted"


# -- export ----------------------------------------------------------------------------------------


def export_leads() -> tuple[Lead, Lead]:
    failed = make_lead(
        email="failed@example.com",
        external_id="crm-9",
        sync_state=SyncState.FAILED,
        last_error="HTTP 400: LAST_NAME is required",
        first_name="Zoë",
    )
    synced = make_lead(email="ok@example.com", external_id="crm-1", sync_state=SyncState.SYNCED)
    return failed, synced


def test_csv_export_honours_the_changelist_filter_and_includes_sync_columns(login: Login) -> None:
    export_leads()
    response = export(login("root"), "csv", "?sync_state__exact=failed")
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [row["email"] for row in rows] == ["failed@example.com"]
    assert rows[0]["first_name"] == "Zoë"
    assert (rows[0]["sync_state"], rows[0]["crm_id"], rows[0]["last_error"]) == (
        "failed",
        "crm-9",
        "HTTP 400: LAST_NAME is required",
    )


def test_xlsx_export_honours_the_changelist_filter_and_includes_sync_columns(login: Login) -> None:
    export_leads()
    response = export(login("root"), "xlsx", "?sync_state__exact=failed")
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    header, *rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert len(rows) == 1
    record = dict(zip(header, rows[0], strict=True))
    assert (record["email"], record["sync_state"], record["crm_id"]) == (
        "failed@example.com",
        "failed",
        "crm-9",
    )
    assert record["last_error"] == "HTTP 400: LAST_NAME is required"


def test_cells_a_spreadsheet_would_run_are_escaped_and_import_back_unchanged(login: Login) -> None:
    make_lead(
        email="formula@example.com",
        first_name='=HYPERLINK("http://evil.example","click")',
        last_name="+cmd",
        company="@SUM(A1)",
        title="-2+3",
        city="\tx",
        phone="+44 20 7946 0000",
    )
    client = login("root")
    rows = list(csv.DictReader(io.StringIO(export(client, "csv").content.decode("utf-8-sig"))))
    (row,) = rows
    assert row["first_name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert (row["last_name"], row["company"], row["title"]) == ("'+cmd", "'@SUM(A1)", "'-2+3")
    assert row["city"] == "'\tx" and row["phone"] == "'+44 20 7946 0000"
    assert row["email"] == "formula@example.com"  # ordinary cells are left alone

    sheet = openpyxl.load_workbook(io.BytesIO(export(client, "xlsx").content)).active
    assert sheet is not None
    cells = {cell.value: cell.data_type for cell in sheet[2]}
    assert cells['\'=HYPERLINK("http://evil.example","click")'] == "s"  # text, not a formula

    exported = export(client, "csv").content
    assert preview_rows(upload(client, exported)) == [(1, "skip", [])]


# -- refused files ---------------------------------------------------------------------------------


def test_custom_fields_export_as_json_and_import_back_merged(
    login: Login, django_capture_on_commit_callbacks: Capture
) -> None:
    make_lead(email="cf@example.com", custom_fields={"plan": "pro", "seats": 3})
    client = login("root")
    rows = list(csv.DictReader(io.StringIO(export(client, "csv").content.decode("utf-8-sig"))))
    assert json.loads(rows[0]["custom_fields"]) == {"plan": "pro", "seats": 3}

    headers = ("email", "custom_fields")
    content = csv_bytes(
        {"email": "cf@example.com", "custom_fields": '{"seats": 5, "plan": null, "vip": true}'},
        {"email": "new-cf@example.com", "custom_fields": '{"plan": "team"}'},
        headers=headers,
    )
    preview = upload(client, content)
    assert [kind for _, kind, _ in preview_rows(preview)] == ["update", "new"]
    with django_capture_on_commit_callbacks(execute=True):
        confirm(client, preview)
    assert Lead.objects.get(email="cf@example.com").custom_fields == {"seats": 5, "vip": True}
    assert Lead.objects.get(email="new-cf@example.com").custom_fields == {"plan": "team"}
    sent = {call.payload["email"]: call.payload for call in locmem.calls}
    assert sent["new-cf@example.com"]["custom_fields"] == {"plan": "team"}


@pytest.mark.parametrize("cell", ["not json", "[1, 2]", '{"nested": {"a": 1}}'])
def test_custom_fields_that_are_not_a_flat_json_object_are_a_row_error(
    login: Login, cell: str
) -> None:
    content = csv_bytes(
        {"email": "cf@example.com", "custom_fields": cell}, headers=("email", "custom_fields")
    )
    preview = upload(login("root"), content)
    [(_, kind, errors)] = preview_rows(preview)
    assert kind == "invalid"
    assert any("Custom fields must be a JSON object of names and plain values" in e for e in errors)


def test_a_file_over_the_size_limit_is_refused_with_the_limit(
    login: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LeadAdmin, "import_max_bytes", 100)
    response = upload(login("root"), b"email\n" + b"a@example.com\n" * 20)
    assert response.status_code == 200
    assert file_errors(response) == [
        "This file is 286\xa0bytes; an import takes at most 100\xa0bytes. Split it into smaller files."
    ]
    assert "result" not in response.context


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        ("email\nü@example.com\n".encode("utf-16"), "csv", "This file is not UTF-8 text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "csv", "This file is not UTF-8 text"),
        (b"email,first_name\na@example.com,Ann\n", "xlsx", "This file is not an Excel workbook"),
        (b'[{"email": "a@example.com",', "json", "This file is not valid JSON"),
    ],
    ids=["utf16-csv", "binary-as-csv", "csv-as-xlsx", "broken-json"],
)
def test_a_file_in_the_wrong_format_or_encoding_gets_a_clear_message(
    login: Login, content: bytes, fmt: str, message: str
) -> None:
    response = upload(login("root"), content, fmt)
    assert response.status_code == 200
    (error,) = file_errors(response)
    assert error.startswith(message)
    assert Lead.objects.count() == 0


# -- permissions -----------------------------------------------------------------------------------


def staff_with(username: str, *codenames: str) -> User:
    """Staff with only ``codenames``, and without the lead their creation made."""
    user = make_staff(username, *codenames)
    Lead.objects.filter(source_id=str(user.pk)).delete()
    return user


def test_staff_who_cannot_add_leads_get_403_on_import_and_see_no_import_button(
    login: Login, mixed_file: bytes
) -> None:
    client = login("viewer")  # may view and change leads, not add them
    assert client.get(IMPORT).status_code == 403
    assert upload(client, mixed_file).status_code == 403
    assert client.post(PROCESS_IMPORT, {}).status_code == 403
    html = client.get(CHANGELIST).content.decode()
    assert IMPORT not in html and EXPORT in html


def test_staff_who_cannot_view_leads_get_403_on_export(client: Client) -> None:
    client.force_login(staff_with("stranger"))
    assert client.get(EXPORT).status_code == 403
    assert client.post(EXPORT, {"format": "0"}).status_code == 403


def test_staff_with_add_and_change_see_both_buttons_beside_crmifys_tools(client: Client) -> None:
    client.force_login(
        staff_with("importer", "view_lead", "add_lead", "change_lead", "preview_mapping")
    )
    html = client.get(CHANGELIST).content.decode()
    assert IMPORT in html and EXPORT in html
    assert reverse("admin:crmify_lead_mapper_preview") in html
    assert 'class="crmify-summary"' in html  # still crmify's changelist
    assert client.get(IMPORT).status_code == 200
