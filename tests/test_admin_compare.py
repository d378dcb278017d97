""" "Compare with CRM" shows the record by name: status and source resolved from the CRM's ids, custom
fields aligned by key, differences marked, and "last sent" the whole lead of the last sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.test import Client
from django.urls import reverse

from crmify.backends.base import BaseBackend
from crmify.backends.insightly import InsightlyBackend
from crmify.models import Lead, SyncState
from crmify.sandbox import SandboxServer
from tests.admin_fixtures import login, make_lead, people

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]


def sync_now(client: Client, lead: Lead) -> Lead:
    client.post(reverse("admin:crmify_lead_sync_now", args=[lead.pk]))
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    return lead


def crm_put(sandbox: SandboxServer, body: dict[str, Any]) -> None:
    """A salesperson's change in the CRM, through its own API."""
    answer = requests.put(sandbox.url + "Leads", json=body, auth=(sandbox.api_key, ""), timeout=5)
    assert answer.ok, answer.text


def status_id(sandbox: SandboxServer, name: str) -> int:
    answer = requests.get(
        sandbox.url + "LeadStatuses",
        params={"include_converted": "true"},
        auth=(sandbox.api_key, ""),
        timeout=5,
    )
    return next(int(row["LEAD_STATUS_ID"]) for row in answer.json() if row["LEAD_STATUS"] == name)


def compared(client: Client, lead: Lead) -> tuple[dict[str, Any], str]:
    response = client.post(reverse("admin:crmify_lead_compare", args=[lead.pk]))
    return {
        row.name: row for row in response.context["comparison"].fields
    }, response.content.decode()


def test_a_status_changed_in_the_crm_shows_by_name_and_is_marked(
    login: Login, insightly: SandboxServer
) -> None:
    client = login("root")
    lead = sync_now(
        client,
        make_lead(last_name="Hopper", email="grace@example.com", custom_fields={"Plan__c": "Pro"}),
    )
    crm_put(
        insightly,
        {"LEAD_ID": int(lead.external_id), "LEAD_STATUS_ID": status_id(insightly, "Converted")},
    )

    rows, html = compared(client, lead)
    status = rows["status"]
    assert (status.app_now, status.crm_now) == ("NotContacted", "Converted")
    assert status.differs
    # The app's spelling and the CRM's are one status: only the drift is marked.
    assert not rows["email"].differs
    plan = rows["custom_fields.Plan__c"]
    assert (plan.label, plan.app_now, plan.crm_now, plan.differs) == (
        "Plan__c (custom field)",
        "Pro",
        "Pro",
        False,
    )
    assert "not in the record" not in html
    assert "1 field differs between the app and the CRM." in html


def test_a_custom_field_changed_in_the_crm_is_marked_on_its_own_row(
    login: Login, insightly: SandboxServer
) -> None:
    client = login("root")
    lead = sync_now(client, make_lead(last_name="Hopper", custom_fields={"Plan__c": "Pro"}))
    crm_put(
        insightly,
        {
            "LEAD_ID": int(lead.external_id),
            "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Free"}],
        },
    )
    rows, _ = compared(client, lead)
    plan = rows["custom_fields.Plan__c"]
    assert (plan.app_now, plan.crm_now, plan.differs) == ("Pro", "Free", True)
    assert not rows["status"].differs


def test_last_sent_is_the_whole_lead_after_a_partial_update(
    login: Login, insightly: SandboxServer
) -> None:
    client = login("root")
    lead = sync_now(client, make_lead(first_name="Grace", last_name="Hopper", phone="555"))
    Lead.objects.filter(pk=lead.pk).update(first_name="Amazing")
    lead.refresh_from_db()
    lead = sync_now(client, lead)  # sends only FIRST_NAME
    rows, _ = compared(client, lead)
    assert (rows["first_name"].last_sent, rows["phone"].last_sent) == ("Amazing", "555")
    assert rows["last_name"].last_sent == "Hopper" and rows["status"].last_sent == "NotContacted"


def test_insightly_reads_an_id_the_account_no_longer_lists_as_such(
    insightly: SandboxServer,
) -> None:
    backend = InsightlyBackend({"API_URL": insightly.url}, {"API_KEY": insightly.api_key})
    values = backend.read_record(
        {
            "LEAD_ID": 1,
            "FIRST_NAME": "Ada",
            "LEAD_STATUS_ID": 999_999,
            "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": None}],
        }
    )
    assert values["first_name"] == "Ada"
    assert values["status"] == "#999999 (an id LeadStatuses does not list)"
    assert values["lead_source"] == "" and values["custom_fields"] == {}


def test_insightly_reads_custom_fields_by_the_keys_custom_fields_names(
    insightly: SandboxServer,
) -> None:
    backend = InsightlyBackend(
        {"API_URL": insightly.url, "CUSTOM_FIELDS": {"plan": "Plan__c"}},
        {"API_KEY": insightly.api_key},
    )
    values = backend.read_record(
        {"CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Pro"}]}
    )
    assert values["custom_fields"] == {"plan": "Pro"}


def test_a_backend_whose_records_use_field_names_needs_no_reading() -> None:
    assert BaseBackend().read_record({"email": "a@example.com"}) == {"email": "a@example.com"}
