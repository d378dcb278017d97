"""What an import may change on a lead that comes from a source row, its warnings, and importing the valid
rows of a file while skipping (and handing back) the invalid ones."""

from __future__ import annotations

import base64
import csv
import io
import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crmify.mappers import DjangoUserFieldMapper
from crmify.models import Lead, SyncState
from tests.admin_fixtures import login, make_lead, people, texts
from tests.factories import lead_of, make_profile, make_user

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]
IMPORT = reverse("admin:crmify_lead_import")
PROCESS_IMPORT = reverse("admin:crmify_lead_process_import")


class FirstNameWritableMapper(DjangoUserFieldMapper):
    """The default user mapper, letting an import write the first name back to the user."""

    import_to_source_fields = frozenset({"first_name"})


def upload(client: Client, text: str) -> Any:
    return client.post(
        IMPORT,
        {
            "resource": "0",
            "format": "0",
            "import_file": SimpleUploadedFile("leads.csv", text.encode()),
        },
    )


def rows(response: Any) -> dict[int, Any]:
    return {row.number: row for row in response.context["crmify_import"].rows}


def confirm(client: Client, preview: Any, *, skip_invalid: bool = False) -> Any:
    form = preview.context["crmify_skip_form" if skip_invalid else "confirm_form"]
    data = {**form.initial, **({"crmify_skip_invalid": "1"} if skip_invalid else {})}
    return client.post(PROCESS_IMPORT, data, follow=True)


# -- field ownership ------------------------------------------------------------------------------------


def test_a_column_the_mapper_fills_is_refused_for_a_lead_with_a_source_row(login: Login) -> None:
    client = login("root")
    user = make_user(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    lead = lead_of(user)
    response = upload(
        client, "email,first_name,company\nada@example.com,Augusta,Analytical Engines\n"
    )
    (row,) = rows(response).values()
    assert row.kind == "invalid"
    (error,) = row.errors
    assert error.startswith(
        f"first_name: filled from user {user.pk} for this lead: change it there"
    )
    assert reverse("admin:auth_user_change", args=[user.pk]) in error
    assert "the next save of" in error
    assert "confirm_form" not in response.context
    lead.refresh_from_db()
    assert lead.first_name == "Ada"


def test_a_column_the_mapper_does_not_fill_still_imports_onto_a_sourced_lead(login: Login) -> None:
    client = login("root")
    user = make_user(first_name="Ada", email="ada@example.com")
    response = upload(client, "email,first_name,company\nada@example.com,Ada,Analytical Engines\n")
    (row,) = rows(response).values()
    assert row.kind == "update" and row.errors == []  # the same first name is no change
    confirm(client, response)
    assert lead_of(user).company == "Analytical Engines"


def test_a_field_the_mapper_writes_back_goes_to_the_source_row_and_stays(
    login: Login, configure: Callable[..., None], django_capture_on_commit_callbacks: Any
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.test_import_ownership.FirstNameWritableMapper")
    client = login("root")
    user = make_user(first_name="Ada", email="ada@example.com")
    response = upload(client, "email,first_name\nada@example.com,Augusta\n")
    (row,) = rows(response).values()
    assert row.kind == "update"
    assert row.notes == [
        f"first_name will be written to user {user.pk}, which sends it to the CRM."
    ]
    assert "which sends it to the CRM" in response.content.decode()
    user.refresh_from_db()
    assert user.first_name == "Ada"  # the preview wrote nothing

    with django_capture_on_commit_callbacks(execute=False):
        confirm(client, response)
    user.refresh_from_db()
    lead = lead_of(user)
    assert user.first_name == "Augusta"
    assert lead.first_name == "Augusta" and lead.sync_state == SyncState.PENDING
    user.save()  # the next save of the profile keeps the imported value
    assert lead_of(user).first_name == "Augusta"


# -- warnings --------------------------------------------------------------------------------------------


def test_a_row_without_a_name_is_imported_with_a_warning(login: Login) -> None:
    client = login("root")
    response = upload(client, "email,first_name,last_name\nnameless@example.com,,\n")
    (row,) = rows(response).values()
    assert row.kind == "new" and row.errors == []
    assert row.warnings == [
        "No last name, and none will be sent: a CRM that requires one will refuse this lead."
    ]
    assert "No last name" in response.content.decode()
    assert "confirm_form" in response.context


# -- skipping invalid rows ------------------------------------------------------------------------------

MIXED = (
    "email,first_name,last_name,status\n"
    "lise@example.com,Lise,Meitner,NotContacted\n"
    "not-an-email,Bad,Row,\n"
    "otto@example.com,Otto,Hahn,\n"
    "emmy@example.com,Emmy,Noether,Sleeping\n"
)


def test_staff_may_import_the_valid_rows_and_download_the_skipped_ones(login: Login) -> None:
    client = login("root")
    response = upload(client, MIXED)
    assert "confirm_form" not in response.context  # no ordinary confirm with invalid rows
    preview = response.context["crmify_import"]
    assert (preview.importable, preview.invalid) == (2, 2)
    page = response.content.decode()
    assert "Import the 2 valid rows, skip the invalid ones" in page
    assert 'download="skipped-rows.csv"' in page

    header, encoded = preview.skipped_file.split(",", 1)
    assert header == "data:text/csv;charset=utf-8;base64"
    skipped = list(csv.reader(io.StringIO(base64.b64decode(encoded).decode("utf-8-sig"))))
    assert skipped[0] == ["email", "first_name", "last_name", "status", "row", "errors"]
    assert [line[:5] for line in skipped[1:]] == [
        ["not-an-email", "Bad", "Row", "", "2"],
        ["emmy@example.com", "Emmy", "Noether", "Sleeping", "4"],
    ]
    assert "is not a valid e-mail address" in skipped[1][5] and "Unknown status" in skipped[2][5]

    done = confirm(client, response, skip_invalid=True)
    assert sorted(Lead.objects.values_list("email", flat=True)) == [
        "lise@example.com",
        "otto@example.com",
    ]
    messages = texts(done)
    assert "2 invalid rows were skipped: nothing of them was imported." in messages
    assert any(message.startswith("Import finished: 2 new") for message in messages)


def test_a_row_turning_invalid_before_a_skipping_confirm_is_skipped_whole(login: Login) -> None:
    client = login("root")
    response = upload(client, MIXED)
    make_lead(email="otto@example.com")
    make_lead(email="otto@example.com")  # two live leads with the e-mail: the row is invalid now
    confirm(client, response, skip_invalid=True)
    assert Lead.objects.filter(email="lise@example.com").count() == 1
    assert not Lead.objects.filter(email="otto@example.com", first_name="Otto").exists()


def test_without_choosing_to_skip_a_confirm_with_an_invalid_row_imports_nothing(
    login: Login,
) -> None:
    client = login("root")
    response = upload(client, MIXED)
    form = response.context["crmify_skip_form"]
    done = client.post(PROCESS_IMPORT, form.initial, follow=True)  # the skip field left out
    assert texts(done)[0].startswith("Nothing was imported")
    assert not Lead.objects.exists()


def test_a_file_with_no_valid_row_offers_no_import_and_its_upload_is_removed(login: Login) -> None:
    response = upload(login("root"), "email,first_name\nnot-an-email,Bad\n")
    assert "crmify_skip_form" not in response.context and "confirm_form" not in response.context
    # No confirm will come to remove the upload (people's details): it is gone already.
    stored = response.context["form"].cleaned_data["import_file"].tmp_storage_name
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), os.path.basename(stored)))


def test_a_skipping_confirm_removes_the_upload(login: Login) -> None:
    client = login("root")
    response = upload(client, MIXED)
    stored = response.context["form"].cleaned_data["import_file"].tmp_storage_name
    confirm(client, response, skip_invalid=True)
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), os.path.basename(stored)))


def test_a_custom_field_the_mapper_fills_is_refused_by_key_and_others_import(
    login: Login, profile_leads: None
) -> None:
    client = login("root")
    profile = make_profile(make_user(email="kit@example.com"), nickname="kit")
    lead = lead_of(profile)
    refused = upload(client, 'email,custom_fields\nkit@example.com,"{""Nickname__c"": ""K""}"\n')
    (row,) = rows(refused).values()
    (error,) = row.errors
    assert error.startswith(f"custom_fields: Nickname__c: filled from user profile {profile.pk}")
    accepted = upload(client, 'email,custom_fields\nkit@example.com,"{""Tier"": ""gold""}"\n')
    (row,) = rows(accepted).values()
    assert row.kind == "update" and row.errors == []
    confirm(client, accepted)
    lead.refresh_from_db()
    assert lead.custom_fields == {"Nickname__c": "kit", "Tier": "gold"}
