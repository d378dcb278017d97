"""Readable failures in the admin: the whole reason one click from the changelist, and a failed lead's
page that opens with why (last error, ledger, "Copy for support" with credentials masked)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crmify.admin.lead import LeadAdmin
from crmify.models import Lead, LedgerEntry, SyncState
from tests.admin_fixtures import login, make_lead, make_ledger, people

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]
CHANGELIST = reverse("admin:crmify_lead_changelist")
LONG_ERROR = (
    "HTTP 400: Custom field Plan__c (DROPDOWN) cannot take the value 'Enterprise'. "
    "Its options are Free, Plus, Pro; change the plan on the profile or the mapper's choices, "
    "then retry the lead."
)
SECRET = "sk-live-0123456789abcdef"


def change_url(lead: Lead) -> str:
    return reverse("admin:crmify_lead_change", args=[lead.pk])


def test_the_changelist_opens_the_whole_reason_in_place_in_one_click(login: Login) -> None:
    make_lead(sync_state=SyncState.FAILED, last_error=LONG_ERROR)
    html = login("root").get(CHANGELIST).content.decode()
    cell = re.search(r'<td class="field-error_start">(.*?)</td>', html, re.S)
    assert cell is not None
    # Closed: the start; opened (one click on the summary, no JavaScript): every word, as text.
    assert re.search(r"<details class=\"crmify-error\"><summary>HTTP 400: Custom field", cell[1])
    whole = re.search(r'<div class="crmify-error-whole">(.*?)</div>', cell[1], re.S)
    assert whole is not None and "then retry the lead." in whole[1]
    assert "Free, Plus, Pro" in whole[1]


def test_a_short_error_is_shown_whole_without_a_fold(login: Login) -> None:
    make_lead(sync_state=SyncState.FAILED, last_error="HTTP 500")
    html = login("root").get(CHANGELIST).content.decode()
    assert '<span class="crmify-error">HTTP 500</span>' in html


def test_the_error_column_sits_beside_the_state_it_explains() -> None:
    columns = list(LeadAdmin.list_display)
    assert columns.index("error_start") == columns.index("sync_state_badge") + 1


@override_settings(
    CRMIFY={
        "BACKEND": "crmify.backends.locmem.LocmemBackend",
        "TASK_BACKEND": "immediate",
        "BACKEND_AUTH": {"API_KEY": SECRET},
    }
)
def test_a_failed_leads_page_opens_with_the_error_the_ledger_and_masked_support_text(
    login: Login,
) -> None:
    lead = make_lead(sync_state=SyncState.FAILED, last_error=LONG_ERROR, attempts=1)
    make_ledger(lead, 2)
    LedgerEntry.objects.filter(lead=lead).update(
        request_summary=f"POST /Leads Authorization: {SECRET}", outcome="permanent"
    )
    html = login("root").get(change_url(lead)).content.decode()
    failure, ledger, first_field = (
        html.index('id="failure"'),
        html.index('id="ledger"'),
        html.index('name="first_name"'),
    )
    assert failure < ledger < first_field  # why, first; the 17 fields after
    assert html.count('id="ledger"') == 1
    support = re.search(r'<textarea id="crmify-support-text"[^>]*>(.*?)</textarea>', html, re.S)
    assert support is not None
    text = support[1]
    assert LONG_ERROR.replace("'", "&#x27;") in text
    assert "POST /Leads Authorization: ***" in text
    assert SECRET not in text


def test_a_synced_leads_page_keeps_its_ledger_below_the_form(login: Login) -> None:
    lead = make_lead(sync_state=SyncState.SYNCED, external_id="5")
    make_ledger(lead, 1)
    html = login("root").get(change_url(lead)).content.decode()
    assert 'id="failure"' not in html
    assert html.index('name="first_name"') < html.index('id="ledger"')


def test_a_leads_page_costs_the_same_queries_with_10_or_1000_leads_and_ledger_rows(
    login: Login,
) -> None:
    client = login("root")
    lead = make_lead(sync_state=SyncState.FAILED, last_error=LONG_ERROR)

    def grow_to(count: int) -> None:
        others = count - Lead.objects.count()
        Lead.objects.bulk_create(
            Lead(email=f"bulk{count}-{i}@example.com", fingerprint=f"b{count}-{i}")
            for i in range(others)
        )
        make_ledger(lead, count - LedgerEntry.objects.filter(lead=lead).count())

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(change_url(lead))
        assert response.status_code == 200
        return len(captured)

    grow_to(10)
    client.get(change_url(lead))  # warm the caches, as any earlier request would have
    ten = queries()
    grow_to(1000)
    assert Lead.objects.count() == 1000 and LedgerEntry.objects.filter(lead=lead).count() == 1000
    assert queries() == ten
