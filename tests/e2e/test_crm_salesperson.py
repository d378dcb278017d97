"""A salesperson's changes in the CRM reach the shop (issue 14), in Chromium on the demo stack: its real
``db_worker``, its sandbox sending signed webhooks (HubSpot v3) or Basic-auth workflow webhooks (Insightly)
to the running site, and the polls the worker schedules itself every ``PULL_INTERVAL`` seconds.

The salesperson works through the sandbox's control API; the shop's home page and the admin's ledger show
what came back; the sandbox's counters show that nothing was pushed back.

Named to run before ``test_demo_browser.py``: its backfill leaves the worker busy for a while after it
finishes, reading back the webhooks the CRM sends for each of crmify's own 500 creates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import calls
from tests.e2e.conftest import OpenPage, eventually, row_text, sign_up
from tests.e2e.stack import PULL_INTERVAL, DemoStack
from tests.e2e.test_demo_browser import CHANGELIST

pytestmark = pytest.mark.slow

Shot = Callable[..., Any]

#: How each CRM's salesperson disqualifies a lead (the sandbox's ``status``: a name, or HubSpot's label).
DISQUALIFY = {"insightly": "Disqualified", "hubspot": "Unqualified"}
#: Seconds a webhook may take from the salesperson's click to the shop's page (the issue's figure).
WEBHOOK_SECONDS = 5
#: What one poll may add to its interval: the worker picking the task up, the poll, a page reload.
POLL_SLACK = 2


def signed_up(open_page: OpenPage, demo: DemoStack, username: str, last: str) -> tuple[Any, str]:
    """A customer signs up and waits for the lead to reach the CRM: their page, and the CRM's id."""
    page = open_page("/signup/", user=None)
    sign_up(page, username, username.title(), last, f"{username}-password-1953")
    eventually(lambda: page.inner_text("#lead-sync") == "Synced", page=page)
    record = demo.crm_lead(f"{username}@example.com")
    assert record is not None
    return page, str(record["id"])


def ledger_of(open_page: OpenPage, email: str, name: str) -> Any:
    admin = open_page(f"{CHANGELIST}?q={email.replace('@', '%40')}")
    admin.get_by_role("link", name=name).click()
    return admin


def test_a_lead_disqualified_in_the_crm_reaches_the_shop_by_webhook_within_5_s(
    open_page: OpenPage, demo: DemoStack, shot: Shot
) -> None:
    page, crm_id = signed_up(open_page, demo, "rosalind", "Franklin")
    assert page.inner_text("#sales-contact") == "yes"
    updates = calls(demo, demo.update_route)

    started = time.monotonic()
    demo.salesperson(crm_id, status=DISQUALIFY[demo.crm])
    eventually(
        lambda: page.inner_text("#lead-status") == "Disqualified",
        seconds=WEBHOOK_SECONDS,
        page=page,
    )
    print(f"{demo.crm}: by webhook in {time.monotonic() - started:.2f} s")
    # The shop's receiver of lead_changed_in_crm stopped its sales contact (it runs once the lead's
    # change has committed: a page may show the one a moment before the other).
    eventually(lambda: page.inner_text("#sales-contact") == "no", seconds=3, page=page)

    # The sandbox delivered its webhook, and the site took it (a poll due at the same moment may apply
    # the change first: then the webhook's read finds nothing new; tests/test_webhooks_live.py shows
    # the webhook alone, without polls).
    eventually(lambda: demo.webhook_statuses()[-1] == 200, seconds=WEBHOOK_SECONDS)
    admin = ledger_of(open_page, "rosalind@example.com", "Rosalind Franklin")
    ledger = admin.inner_text("#ledger")
    assert "From the CRM" in ledger and ("webhook" in ledger or "pull" in ledger)
    assert "→ 'Disqualified'" in ledger
    shot(admin, "admin-lead-from-crm")
    time.sleep(2)  # what a push back would take to go out
    assert calls(demo, demo.update_route) == updates  # nothing went back to the CRM


def test_with_webhooks_off_the_next_poll_brings_the_change_within_one_interval(
    open_page: OpenPage, demo: DemoStack
) -> None:
    demo.set_webhooks(url=None)
    try:
        page, crm_id = signed_up(open_page, demo, "barbara", "McClintock")
        updates = calls(demo, demo.update_route)
        started = time.monotonic()
        demo.salesperson(crm_id, status=DISQUALIFY[demo.crm])
        eventually(
            lambda: page.inner_text("#lead-status") == "Disqualified",
            seconds=PULL_INTERVAL + POLL_SLACK,
            page=page,
        )
        print(
            f"{demo.crm}: by poll in {time.monotonic() - started:.2f} s (every {PULL_INTERVAL} s)"
        )
        eventually(lambda: page.inner_text("#sales-contact") == "no", seconds=3, page=page)
        ledger = ledger_of(open_page, "barbara@example.com", "Barbara McClintock").inner_text(
            "#ledger"
        )
        assert "From the CRM" in ledger and "pull" in ledger and "webhook" not in ledger
        time.sleep(2)
        assert calls(demo, demo.update_route) == updates
    finally:
        demo.reset_webhooks()


@pytest.mark.parametrize("demo", ["hubspot"], indirect=True)
def test_a_hubspot_merge_hands_the_lead_the_surviving_contact(
    open_page: OpenPage, demo: DemoStack
) -> None:
    _, survivor = signed_up(open_page, demo, "chien", "Wu")
    _, merged = signed_up(open_page, demo, "chienshiung", "Wu")

    demo.salesperson(merged, "merge", into=survivor)

    admin = open_page(f"{CHANGELIST}?q=chienshiung%40example.com")
    eventually(
        lambda: survivor in row_text(admin, "chienshiung@example.com"), seconds=10, page=admin
    )
    ledger = ledger_of(open_page, "chienshiung@example.com", "Chienshiung Wu").inner_text("#ledger")
    assert f"merged into {survivor} in the CRM (was {merged})" in ledger
