"""The mapper preview shows the whole record the CRM will hold and, apart, the update sent now; it warns
when the row's lead already failed (with the CRM's message) or when the CRM would refuse a value."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from crmify import api
from crmify.backends.insightly import InsightlyBackend
from crmify.models import Lead, SyncState
from crmify.sandbox import SandboxServer
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db

URL = reverse("admin:crmify_lead_mapper_preview")


def synced(**fields: Any) -> tuple[User, Lead]:
    user = make_user(**fields)
    lead = lead_of(user)
    api.sync_now(lead)
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    return user, lead


def preview(client: Any, user: User) -> tuple[Any, str]:
    response = client.get(URL, {"q": str(user.pk)})
    (row,) = response.context["rows"]
    return row, html.unescape(response.content.decode())


def test_a_changed_synced_row_shows_the_whole_record_and_apart_the_update(
    admin_client: Any, insightly: SandboxServer
) -> None:
    user, lead = synced(first_name="Grace", last_name="Hopper", email="grace@example.com")
    User.objects.filter(pk=user.pk).update(
        first_name="Amazing"
    )  # no signal: the lead is not touched
    user.refresh_from_db()
    row, page = preview(admin_client, user)
    assert row.payload == {"LEAD_ID": int(lead.external_id), "FIRST_NAME": "Amazing"}
    assert row.record is not None
    assert {key: row.record[key] for key in ("FIRST_NAME", "LAST_NAME", "EMAIL")} == {
        "FIRST_NAME": "Amazing",
        "LAST_NAME": "Hopper",
        "EMAIL": "grace@example.com",
    }
    assert isinstance(row.record["LEAD_STATUS_ID"], int)  # the cached status table: no call
    assert "The record the CRM will hold" in page and "The update sent now" in page
    assert not row.up_to_date


def test_an_unchanged_synced_row_says_nothing_would_be_sent(
    admin_client: Any, insightly: SandboxServer
) -> None:
    user, _lead = synced(first_name="Grace", last_name="Hopper")
    row, page = preview(admin_client, user)
    assert row.up_to_date
    assert row.record is not None and row.record["LAST_NAME"] == "Hopper"
    assert "Nothing: the CRM holds these values since the last sync" in page


def test_a_new_row_sends_the_whole_record_as_its_create(admin_client: Any) -> None:
    user = make_user(first_name="Ada")
    Lead.objects.filter(source_id=str(user.pk)).delete()
    row, page = preview(admin_client, user)
    assert row.operation == "create" and row.record == row.payload
    assert "A create: it sends the whole record above." in page


def test_a_failed_rows_preview_warns_with_the_crms_message(admin_client: Any) -> None:
    user = make_user(first_name="Erin")
    Lead.objects.filter(pk=lead_of(user).pk).update(
        sync_state=SyncState.FAILED,
        last_error="HTTP 400: Custom field Plan__c (DROPDOWN) cannot take the value 'Enterprise'.",
    )
    row, page = preview(admin_client, user)
    (warning,) = [w for w in row.warnings if "failed" in w]
    assert warning.startswith("This row's lead failed its last sync")
    assert warning.endswith(
        "The CRM said: HTTP 400: Custom field Plan__c (DROPDOWN) cannot take the value 'Enterprise'."
    )
    assert warning in page


def test_insightly_names_a_dropdown_value_it_would_refuse_from_its_cached_definitions(
    insightly: SandboxServer,
) -> None:
    backend = InsightlyBackend({"API_URL": insightly.url}, {"API_KEY": insightly.api_key})
    offered = Lead(custom_fields={"Plan__c": "Pro"})
    refused = Lead(custom_fields={"Plan__c": "Enterprise", "Colour__c": "red"})
    assert backend.refusals(refused) == []  # nothing known yet, and no call to learn it
    assert insightly.stats()["total"] == 0
    lead = Lead.objects.create(
        email="p@example.com", last_name="P", custom_fields={"Plan__c": "Pro"}
    )
    api.sync_now(lead)  # a sync with custom fields caches the account's definitions
    assert backend.refusals(offered) == []
    assert backend.refusals(refused) == [
        "Custom field Colour__c does not exist in this Insightly account.",
        "Custom field Plan__c (DROPDOWN) cannot take 'Enterprise': its options are Free, Plus, Pro.",
    ]
