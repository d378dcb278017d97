"""Staff workflows that tell the truth (issue 15), in Chromium on the demo stack: the funnel that does not
move back by itself, and the sync health page with its charts and the CRM-unreachable state. (The backfill
that says "Finished" only once the sandbox holds every lead is the last test of ``test_demo_browser.py``.)

Runs after ``test_demo_browser.py`` on the same session's stack; the health test, which makes the sandbox
drop every connection for a while, comes last and gives the sandbox its faults back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import OpenPage, eventually, row_text, sign_up
from tests.e2e.stack import DemoStack
from tests.e2e.test_demo_browser import CHANGELIST, run_action

pytestmark = pytest.mark.slow

Shot = Callable[..., Any]


def test_the_email_link_after_a_purchase_leaves_the_lead_converted(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = open_page("/signup/", user=None)
    sign_up(page, "pierre", "Pierre", "Curie", "piezoelectricity-1880")
    eventually(lambda: page.inner_text("#lead-sync") == "Synced", page=page)

    page.select_option("#id_plan", "Pro")
    page.get_by_role("button", name="Buy").click()
    eventually(lambda: demo.crm_status("pierre@example.com") == "Converted")
    eventually(lambda: page.inner_text("#lead-sync") == "Synced", page=page)

    page.click("#email-link")  # the welcome e-mail's link, followed after buying
    assert "your lead stays Converted" in page.inner_text(".msg")

    admin = open_page(f"{CHANGELIST}?q=pierre%40example.com")
    row = row_text(admin, "pierre@example.com")
    assert "Converted" in row and "kept; refused Contacted" in row
    assert demo.crm_status("pierre@example.com") == "Converted"
    admin.get_by_role("link", name="Pierre Curie").click()
    assert "Contacted refused: it would have moved the lead back from Converted." in (
        admin.inner_text("#content")
    )
    assert "Refused, not sent" in admin.inner_text("#ledger")
    shot(admin, "admin-lead-refused")

    # Staff may still move it back, on purpose, through the action's own confirmation page.
    admin.goto(f"{CHANGELIST}?q=pierre%40example.com")
    row_box = admin.locator("#result_list tbody tr").filter(has_text="pierre@example.com")
    row_box.locator("input.action-select").check()
    admin.select_option("select[name=action]", "force_status")
    admin.click("button[name=index]")
    assert "Force a status on the selected leads?" in admin.inner_text("#content")
    assert demo.crm_status("pierre@example.com") == "Converted"  # nothing moved yet
    admin.select_option("#crmify-force-status", "Contacted")
    shot(admin, "admin-force-status", full_page=False)
    admin.get_by_role("button", name="Yes, force this status").click()
    assert "Force the status Contacted: 1 queued" in admin.inner_text("ul.messagelist")
    eventually(lambda: demo.crm_status("pierre@example.com") == "Contacted")


def test_the_health_page_draws_its_charts_and_shows_the_crm_unreachable(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page = open_page(CHANGELIST)
    page.get_by_role("link", name="Sync health").click()
    charts = page.locator("figure.crmify-chart svg")
    assert charts.count() == 4
    # The sign-ups, purchases and backfill of the earlier tests are on the calls and leads charts.
    assert page.locator("#crmify-chart-calls rect.crmify-bar--ok").count() > 0
    assert page.locator("#crmify-chart-leads rect.crmify-bar--synced").count() > 0
    assert page.locator("#crmify-chart-quota rect.crmify-bar--calls").count() > 0
    state = page.inner_text("#crmify-crm-state .crmify-state-label")
    assert state in ("Reachable", "No recent calls")
    shot(page, "admin-health")

    demo.set_faults(drop_rate=1.0)  # the CRM stops answering: every connection is dropped
    try:
        admin = open_page(f"{CHANGELIST}?q=ada%40example.com")
        assert "Re-sync: 1 queued" in run_action(admin, "ada@example.com", "resync")
        label = page.locator("#crmify-crm-state .crmify-state-label")
        eventually(lambda: label.inner_text() == "Unreachable", page=page)
        assert "did not get an answer" in page.inner_text("#crmify-crm-state")
        shot(page, "admin-health-unreachable")
    finally:
        demo.reset_faults()
    # Back: the retry gets through and the page says so (no CRM call made by the page itself).
    eventually(lambda: label.inner_text() == "Reachable", page=page, seconds=60)
