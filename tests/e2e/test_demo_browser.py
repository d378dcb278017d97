"""The demo site and crmify's admin in a real browser (Debian's Chromium, headless, through Playwright).

One ``demo/run.py`` stack per CRM serves the whole module: the sandbox over HTTP (Insightly, then
HubSpot: every test runs on both), the ``db_worker`` process and ``runserver``, on the demo's own seeded
SQLite database. Each test acts as a person would
(clicks, forms) and checks the outcome where that person would see it, in the admin or on the site, and
where it matters in the CRM itself (the sandbox's control API). Syncs happen in the worker, so the
tests reload until the page shows them, with a deadline. Any console or page error fails the test
(``tests/e2e/conftest.py``); each main page is saved as a screenshot artifact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import calls
from tests.e2e.conftest import VIEWER, OpenPage, eventually, row_text, sign_up, upload_csv
from tests.e2e.stack import DemoStack

pytestmark = pytest.mark.slow

Shot = Callable[..., Any]
CHANGELIST = "/admin/crmify/lead/"


#: What the failed lead's page shows: the CRM's own 400 (Insightly), or crmify's refusal before sending,
#: naming the option the account lacks (HubSpot's properties are checked first).
PLAN_REFUSED = {
    "insightly": "HTTP 400: Custom field Plan__c (DROPDOWN) cannot take the value 'Enterprise'.",
    "hubspot": "Not sent: 'Enterprise' is no option of 'Plan__c' (options: Free, Plus, Pro).",
}


def assert_admin_layout(page: Any) -> None:
    """The page fits the window and its breadcrumbs bar is drawn (Django 5.2 and 6 mark it up
    differently; crmify's CSS styles both)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    background = page.locator(".breadcrumbs").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")


def run_action(page: Any, email: str, action: str) -> str:
    """Tick the changelist row of ``email``, run ``action`` and return the message the admin shows."""
    row = page.locator("#result_list tbody tr").filter(has_text=email)
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    return str(page.locator("ul.messagelist").inner_text())


def test_a_sign_up_becomes_a_crm_lead_the_email_link_contacts_it_and_a_purchase_converts_it(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = open_page("/signup/", user=None)
    sign_up(page, "marie", "Marie", "Curie", "polonium-and-radium-1898", "Institut du Radium")
    eventually(lambda: page.inner_text("#lead-sync") == "Synced", page=page)
    crm_lead = demo.crm_lead("marie@example.com")
    assert crm_lead is not None
    assert (crm_lead["first_name"], crm_lead["last_name"], crm_lead["company"]) == (
        "Marie",
        "Curie",
        "Institut du Radium",
    )
    assert crm_lead["status"] == "Not Contacted"
    shot(page, "site-after-signup")

    page.click("#email-link")  # Basic Lead Management
    assert "now Contacted" in page.inner_text(".msg")
    eventually(lambda: demo.crm_status("marie@example.com") == "Contacted")

    page.select_option("#id_plan", "Pro")  # Basic Sales Funnel
    page.get_by_role("button", name="Buy").click()
    eventually(lambda: demo.crm_status("marie@example.com") == "Converted")

    admin = open_page(f"{CHANGELIST}?q=marie%40example.com")
    eventually(lambda: "Synced" in row_text(admin, "marie@example.com"), page=admin)
    assert "Converted" in row_text(admin, "marie@example.com")
    shot(admin, "admin-changelist-search")


def test_mark_converted_and_resync_from_the_changelist_reach_the_crm(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = open_page(CHANGELIST)
    summary = page.locator("nav.crmify-summary")
    assert "Failed: 3" in summary.inner_text()
    shot(page, "admin-changelist", full_page=False)
    page.fill("#searchbar", "ada@example.com")
    page.press("#searchbar", "Enter")
    eventually(lambda: "Synced" in row_text(page, "ada@example.com"), page=page)
    assert demo.crm_status("ada@example.com") == "Not Contacted"

    assert "Mark converted (Converted): 1 queued" in run_action(
        page, "ada@example.com", "mark_converted"
    )
    eventually(lambda: demo.crm_status("ada@example.com") == "Converted")
    eventually(lambda: "Synced" in row_text(page, "ada@example.com"), page=page)

    updates = calls(demo, demo.update_route)
    assert "Re-sync: 1 queued" in run_action(page, "ada@example.com", "resync")
    eventually(lambda: calls(demo, demo.update_route) > updates)

    page.get_by_role("link", name="Ada Lovelace").click()
    ledger = page.locator("#ledger tbody tr")
    eventually(lambda: ledger.count() >= 3, page=page)  # create, the conversion, the re-sync
    shot(page, "admin-lead-ledger")


def test_a_failed_lead_shows_the_crms_own_message(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = open_page(f"{CHANGELIST}?sync_state__exact=failed")
    eventually(lambda: "erin@example.com" in row_text(page, "erin@example.com"), page=page)
    assert "nadia@example.com" in page.inner_text("#result_list")
    shot(page, "admin-changelist-failed")

    page.get_by_role("link", name="Erin Example").click()
    body = page.inner_text("#content")
    assert PLAN_REFUSED[demo.crm] in body
    assert demo.crm_lead("erin@example.com") is None
    shot(page, "admin-lead-failed")


def test_the_mapper_preview_shows_fallbacks_and_the_payload(
    open_page: OpenPage, shot: Shot
) -> None:
    page = open_page(f"{CHANGELIST}preview/")
    page.fill("input[name=q]", "soren@example.com")
    page.get_by_role("button", name="Search").click()
    row = page.locator(".crmify-row")
    assert row.count() == 1
    # Søren gave no first name: the mapper's fallback sends his user name.
    first_name = row.locator("tr").filter(has_text="First name")
    assert "soren" in first_name.inner_text()
    assert "from fallback" in first_name.inner_text()
    assert "update of CRM lead" in row.locator("h2").inner_text()
    assert_admin_layout(page)
    shot(page, "admin-mapper-preview")


def test_import_preview_names_the_bad_row_and_its_error(open_page: OpenPage, shot: Shot) -> None:
    page = open_page(f"{CHANGELIST}import/")
    content = (
        "email,first_name,last_name,company,status\n"
        "lise@example.com,Lise,Meitner,Kaiser Wilhelm Institut,NotContacted\n"
        "not-an-email,Bad,Row,,\n"
    )
    upload_csv(page, content)
    body = page.inner_text("#content")
    assert "Some rows are invalid" in body
    assert "New: 1" in body and "Invalid: 1" in body
    bad_row = page.locator("table.crmify-import-preview tbody tr").filter(has_text="not-an-email")
    assert bad_row.locator("td.errors").inner_text() == (
        "email: “not-an-email” is not a valid e-mail address."
    )
    assert_admin_layout(page)  # the wide preview scrolls in its box, the page keeps its bars
    shot(page, "admin-import-preview")


def test_staff_without_permissions_see_no_actions_or_tools(open_page: OpenPage, shot: Shot) -> None:
    page = open_page(f"{CHANGELIST}?q=ada%40example.com", user=VIEWER)
    assert "ada@example.com" in row_text(page, "ada@example.com")
    assert page.locator("select[name=action]").count() == 0
    tools = page.inner_text(".object-tools") if page.locator(".object-tools").count() else ""
    assert "Backfill" not in tools and "Import" not in tools
    shot(page, "admin-changelist-viewer")
    page.get_by_role("link", name="Ada Lovelace").click()
    assert page.get_by_role("button", name="Sync now").count() == 0


def test_backfill_says_finished_only_once_the_crm_holds_every_lead(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    from playwright.sync_api import expect  # here: without playwright the fixtures skip or fail

    page = open_page(f"{CHANGELIST}backfill/")
    page.get_by_role("button", name="Dry run").click()
    figures = page.locator(".crmify-backfill-figures tr")
    assert figures.filter(has_text="Leads to create").locator("td").inner_text() == "500"
    assert "customer0000@example.com" not in demo.crm_emails()
    assert_admin_layout(page)
    # The options form is drawn as the admin's own forms are (forms.css: rows with a rule under each).
    row = page.locator(".crmify-backfill-options .form-row").first
    assert row.evaluate("e => getComputedStyle(e).borderBottomStyle") == "solid"
    shot(page, "admin-backfill-dry-run")

    page.get_by_role("button", name="Start backfill").click()
    # The page refreshes itself until every lead the run queued is delivered; the locators follow each
    # reload. Mapping the rows is done long before the worker has sent them.
    stage = page.locator(".crmify-backfill-progress .crmify-run-state")
    expect(page.locator("#crmify-backfill-progress")).to_have_attribute(
        "value", "100", timeout=60_000
    )
    expect(stage).to_have_text("Finished", timeout=120_000)
    # "Finished" means delivered: the sandbox holds every one of the 500 customers now.
    customers = {email for email in demo.crm_emails() if email.startswith("customer")}
    assert len(customers) == 500
    delivery = page.locator("#crmify-backfill-delivery-figures")
    assert "Waiting to be sent\t0" in delivery.inner_text()
    expect(page.locator("#crmify-backfill-delivery")).to_have_attribute("value", "100")
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    shot(page, "admin-backfill-progress")


def sign_up_offline(open_page: OpenPage, name: str) -> str:
    """A person signs up on the demo site while its CRM is away; their e-mail address."""
    page = open_page("/signup/", user=None)
    username = f"{name.lower()}-outage"
    sign_up(page, username, name, "Outage", "no-crm-today-2026", company="Offline Ltd")
    page.wait_for_selector("#lead-sync")
    return f"{username}@example.com"


def outage_banner(page: Any) -> str:
    banner = page.locator(".crmify-outage")
    return str(banner.inner_text()) if banner.count() else ""


def test_a_stopped_crm_shows_a_banner_with_the_waiting_leads_and_its_return_clears_it(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    demo.stop_sandbox()
    try:
        # The site keeps working: people sign up while the CRM does not answer.
        emails = [
            sign_up_offline(open_page, name)
            for name in ("Ottilie", "Quentin", "Rosalind", "Sixtus")
        ]
        admin = open_page(CHANGELIST)
        text = eventually(
            lambda: (
                (found := re.search(r"(\d+) leads are waiting", outage_banner(admin)))
                and int(found.group(1)) >= len(emails)
                and outage_banner(admin)
            ),
            page=admin,
            seconds=60,
        )
        assert text.startswith("The CRM has not answered since ")
        assert "(Could not reach the CRM: connection refused)" in text
        assert "and will be sent when it answers" in text
        assert admin.get_by_role("button", name="Send waiting leads now").is_visible()
        shot(admin, "admin-outage-banner")
    finally:
        demo.start_sandbox()
    # The CRM answers again: the probe notices, the waiting leads go, the banner clears itself.
    eventually(lambda: set(emails) <= demo.crm_emails(), seconds=60)
    eventually(lambda: not outage_banner(admin), page=admin, seconds=30)
    for email in emails:
        eventually(lambda email=email: "Synced" in row_text(admin, email), page=admin)
