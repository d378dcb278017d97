"""The whole trip over real HTTP: a salesperson changes a lead in a sandbox CRM, the sandbox sends its
webhook (signed with v3, or with Insightly's Basic auth) to the site's endpoint on a live Django server,
and the lead follows within 5 seconds, with nothing pushed back.

The site runs the immediate Tasks backend, so the webhook's task reads the record back and applies it
inside the delivery's request. The sandboxes send webhooks for crmify's own API calls too, as the real
CRMs do: those come back as reads that change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from crmify.models import Lead
from crmify.sandbox import SandboxServer
from crmify.sandbox.core import BaseSandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.signals import lead_changed_in_crm
from tests.conftest import calls
from tests.factories import lead_of, make_user
from tests.webhook_senders import HUBSPOT_URL, INSIGHTLY_URL, PASSWORD, SECRET, USERNAME

pytestmark = pytest.mark.django_db(transaction=True)

#: The issue's promise: a change made in the CRM reaches the lead within this many seconds by webhook.
WITHIN = 5.0


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    lead_changed_in_crm.connect(lambda **kw: got.append(kw), weak=False, dispatch_uid="t:live")
    yield got
    lead_changed_in_crm.disconnect(dispatch_uid="t:live")


_Crm = TypeVar("_Crm", bound=BaseSandboxServer)


def sending_to(crm: _Crm, url: str, **auth: str) -> Iterator[_Crm]:
    """``crm`` sending its webhooks to ``url`` for the test, retrying quickly."""
    crm.configure_webhooks(url=url, retry_delays=(0.5,), max_attempts=3, **auth)
    yield crm
    crm.webhooks.wait_idle(WITHIN)
    crm.reset_webhooks()  # no late delivery reaches the live server during another test


@pytest.fixture
def hubspot_sending(
    hubspot: HubSpotSandbox, live_server: Any, configure: Callable[..., None]
) -> Iterator[HubSpotSandbox]:
    configure(WEBHOOK_AUTH={"SECRET": SECRET})
    yield from sending_to(hubspot, live_server.url + HUBSPOT_URL, secret=SECRET)


@pytest.fixture
def insightly_sending(
    insightly: SandboxServer, live_server: Any, configure: Callable[..., None]
) -> Iterator[SandboxServer]:
    configure(WEBHOOK_AUTH={"USERNAME": USERNAME, "PASSWORD": PASSWORD})
    yield from sending_to(
        insightly, live_server.url + INSIGHTLY_URL, username=USERNAME, password=PASSWORD
    )


def wait_for(condition: Callable[[], bool]) -> float:
    """Seconds until ``condition()`` held; fails after :data:`WITHIN`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < WITHIN, "not within 5 s"
        time.sleep(0.05)
    return time.monotonic() - started


def fresh(lead: Lead) -> Lead:
    return Lead.objects.get(pk=lead.pk)


def delivered(crm: BaseSandboxServer) -> list[Any]:
    """The last answer the site gave to each delivery the sandbox sent."""
    return [delivery["last_status"] for delivery in crm.webhooks.deliveries()]


def test_a_hubspot_status_change_reaches_the_lead_within_5_s_and_is_not_pushed_back(
    hubspot_sending: HubSpotSandbox, heard: list[dict[str, Any]]
) -> None:
    crm = hubspot_sending
    lead = lead_of(make_user())
    assert crm.webhooks.wait_idle(WITHIN)  # the contact's creation, sent back: nothing changes
    writes = calls(crm, "PATCH /objects/contacts/{id}") + calls(crm, "POST /objects/contacts")

    crm.salesperson_edit(lead.external_id, {}, status="UNQUALIFIED")
    wait_for(lambda: fresh(lead).status == "Disqualified")

    assert crm.webhooks.wait_idle(WITHIN)
    assert set(delivered(crm)) == {200}
    assert [(h["lead"].pk, h["via"]) for h in heard] == [(lead.pk, "webhook")]
    assert (
        calls(crm, "PATCH /objects/contacts/{id}") + calls(crm, "POST /objects/contacts") == writes
    )


def test_a_hubspot_merge_hands_the_lead_the_surviving_contact(
    hubspot_sending: HubSpotSandbox,
) -> None:
    crm = hubspot_sending
    lead = lead_of(make_user())
    survivor = crm.add_contact({"email": "kept@example.com", "hs_lead_status": "CONNECTED"})["id"]

    crm.salesperson_merge(lead.external_id, into=survivor)
    wait_for(lambda: fresh(lead).external_id == survivor)

    assert crm.webhooks.wait_idle(WITHIN)
    assert set(delivered(crm)) == {200}


def test_a_hubspot_deletion_marks_the_lead_deleted_in_the_crm(
    hubspot_sending: HubSpotSandbox,
) -> None:
    crm = hubspot_sending
    lead = lead_of(make_user())

    crm.salesperson_delete(lead.external_id)

    wait_for(lambda: fresh(lead).deleted_in_crm_at is not None)


def test_an_insightly_workflow_status_change_reaches_the_lead_within_5_s(
    insightly_sending: SandboxServer, heard: list[dict[str, Any]]
) -> None:
    crm = insightly_sending
    lead = lead_of(make_user())
    assert crm.webhooks.wait_idle(WITHIN)
    updates = calls(crm, "PUT /Leads")

    crm.salesperson_edit(lead.external_id, {}, status="Disqualified")
    wait_for(lambda: fresh(lead).status == "Disqualified")

    assert crm.webhooks.wait_idle(WITHIN)
    assert set(delivered(crm)) == {200}
    assert [(h["lead"].pk, h["via"]) for h in heard] == [(lead.pk, "webhook")]
    assert calls(crm, "PUT /Leads") == updates
