"""Staff screens that tell the truth, in a real browser on the demo stack: "Compare with CRM" shows a
status changed in the CRM by name (one the funnel refuses to take back: a status the CRM may change
otherwise comes back to the lead, and then nothing differs), an import of a profile-owned column goes to the profile (or is refused
with where to change it), the mapper preview warns on a failed row, and a failure's whole reason is one
click from the changelist at 1,400 px.

Named to run before ``test_demo_browser.py``: its last test leaves the worker busy with a backfill.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import OpenPage, eventually, row_text, upload_csv
from tests.e2e.stack import API_KEY, DemoStack

# On the Insightly demo: the drift is made through Insightly's own API, and the seeded failure is its
# dropdown's message. The screens themselves know no CRM.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("demo", ["insightly"], indirect=True)]

Shot = Callable[..., Any]
CHANGELIST = "/admin/crmify/lead/"
ERIN_ERROR = "HTTP 400: Custom field Plan__c (DROPDOWN) cannot take the value 'Enterprise'."


def crm_api(demo: DemoStack, method: str, path: str, body: Any = None) -> Any:
    """The sandbox CRM's own v3.1 API, as a salesperson's tool would call it."""
    request = urllib.request.Request(
        f"{demo.sandbox_url}/v3.1/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    request.add_unredirected_header(
        "Authorization", "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def listed(open_page: OpenPage, query: str, email: str, shows: str) -> Any:
    """The changelist at ``query``, once the worker has brought ``email``'s row to show ``shows``."""
    page = open_page(f"{CHANGELIST}{query}")
    eventually(lambda: shows in row_text(page, email), page=page)
    return page


def test_compare_shows_a_status_changed_in_the_crm_by_name(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = listed(open_page, "?q=alan%40example.com", "alan@example.com", "Synced")
    crm_lead = demo.crm_lead("alan@example.com")
    assert crm_lead is not None and crm_lead["status"] == "Contacted"
    statuses = crm_api(demo, "GET", "LeadStatuses?include_converted=true")
    # A step back in the funnel: read back from the CRM (webhook, poll), it is refused, so it stays a
    # difference for staff to see (issue 14; a step forward would come back to the lead).
    earlier = next(s["LEAD_STATUS_ID"] for s in statuses if s["LEAD_STATUS"] == "Not Contacted")
    crm_api(demo, "PUT", "Leads", {"LEAD_ID": crm_lead["id"], "LEAD_STATUS_ID": earlier})

    page.get_by_role("link", name="Alan Turing").click()
    page.get_by_role("button", name="Compare with CRM").click()  # one fetch, staff's own
    status = page.locator("table.crmify-comparison tr[data-field=status]")
    cells = status.locator("td").all_inner_texts()
    assert cells[0] == "Contacted" and cells[2] == "Not Contacted"
    assert "≠ differs" in cells[3]
    plan = page.locator("table.crmify-comparison tr[data-field='custom_fields.Plan__c']")
    assert "≠" not in plan.inner_text() and plan.locator("td").nth(2).inner_text() != ""
    assert "not in the record" not in page.inner_text("#content")
    assert "1 field differs between the app and the CRM." in page.inner_text("#content")
    shot(page, "admin-compare-drift")


def test_an_import_writes_the_company_to_the_profile_and_refuses_the_name(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = listed(open_page, "?q=grace%40example.com", "grace@example.com", "Synced")
    page.goto(f"{CHANGELIST}import/")
    content = (
        "email,first_name,company\n"
        "grace@example.com,Grace,Imported Co\n"
        "ngozi@example.com,Nkechi,\n"
        "newbie@example.com,,\n"
    )
    upload_csv(page, content)
    rows = page.locator("table.crmify-import-preview tbody tr")
    grace = rows.filter(has_text="grace@example.com").inner_text()
    assert "company will be written to user profile" in grace and "sends it to the CRM" in grace
    ngozi = rows.filter(has_text="ngozi@example.com").locator("td.errors").inner_text()
    assert "first_name: filled from user profile" in ngozi and "change it there" in ngozi
    assert "No last name" in rows.filter(has_text="newbie@example.com").inner_text()
    assert page.locator("a.crmify-skipped-file").get_attribute("download") == "skipped-rows.csv"
    shot(page, "admin-import-ownership")

    page.get_by_role("button", name="Import the 2 valid rows, skip the invalid ones").click()
    assert "1 invalid row was skipped" in page.inner_text("ul.messagelist")
    eventually(lambda: (demo.crm_lead("grace@example.com") or {}).get("company") == "Imported Co")
    assert (demo.crm_lead("ngozi@example.com") or {}).get("first_name") == "Ngozi"
    # The profile holds it now: its next save keeps it (it is where the mapper reads the company).
    page.goto("/admin/shop/userprofile/?q=grace")
    page.locator("#result_list tbody tr a").first.click()
    assert page.input_value("#id_company") == "Imported Co"


def test_the_mapper_preview_warns_on_a_failed_row_with_the_crms_message(
    open_page: OpenPage, shot: Shot
) -> None:
    page = listed(open_page, "?sync_state__exact=failed", "erin@example.com", "Failed")
    page.goto(f"{CHANGELIST}preview/")
    page.fill("input[name=q]", "erin@example.com")
    page.get_by_role("button", name="Search").click()
    row = page.locator(".crmify-row")
    warnings = row.locator(".crmify-messages li.warning").all_inner_texts()
    failed = [w for w in warnings if w.startswith("This row's lead failed its last sync")]
    assert failed and failed[0].endswith(f"The CRM said: {ERIN_ERROR}")
    assert "The record the CRM will hold" in row.inner_text()
    shot(page, "admin-mapper-preview-failed")


def test_the_whole_failure_reason_is_one_click_from_the_changelist_at_1400_px(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = listed(open_page, "?sync_state__exact=failed", "erin@example.com", "Failed")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.reload()
    row = page.locator("#result_list tbody tr").filter(has_text="erin@example.com")
    summary = row.locator("td.field-error_start details summary")
    box = summary.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1400  # on screen, no scrolling
    whole = row.locator(".crmify-error-whole")
    assert not whole.is_visible()
    summary.click()
    assert whole.is_visible() and whole.inner_text() == ERIN_ERROR
    whole_box = whole.bounding_box()
    assert whole_box is not None and whole_box["x"] + whole_box["width"] <= 1400  # it wraps
    shot(page, "admin-changelist-failure-open", full_page=False)

    row.get_by_role("link", name="Erin Example").click()
    failure = page.locator("#failure")
    assert ERIN_ERROR in failure.locator(".crmify-last-error").inner_text()
    first_field = page.locator("fieldset").first.bounding_box()
    failure_box = failure.bounding_box()
    ledger_box = page.locator("#ledger").bounding_box()
    assert failure_box and ledger_box and first_field
    assert failure_box["y"] < ledger_box["y"] < first_field["y"]
    support = page.input_value("#crmify-support-text")
    assert ERIN_ERROR in support and "Latest CRM calls" in support and API_KEY not in support
    shot(page, "admin-lead-failure-top", full_page=False)
