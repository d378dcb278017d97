"""Changes from the CRM over real HTTP against each sandbox (issue 14's "must show" beside the poller's and
the webhooks' own tests): a conflict decided by the rule and logged, and a record a salesperson deleted
marked on its lead, which a later save does not create again until staff re-sync it.

The salesperson works through the sandbox's control API (``POST /_sandbox/leads/<id>/edit``, ``DELETE
/_sandbox/leads/<id>``), the site reads the CRM back with one poll (``crmify.poller.poll``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from crmify import api
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.poller import poll
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.worker import process_lead
from tests.conftest import crm_writes
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db

Sandbox = SandboxServer | HubSpotSandbox

#: How each CRM's salesperson disqualifies a lead (the sandbox's ``status``: a name, or HubSpot's value).
DISQUALIFIED = {"insightly": "Disqualified", "hubspot": "UNQUALIFIED"}


@pytest.fixture(params=["insightly", "hubspot"])
def crm(request: pytest.FixtureRequest) -> Iterator[tuple[str, Sandbox]]:
    """Each sandbox as the site's CRM (the conftest's ``insightly`` / ``hubspot`` fixtures), polled."""
    name = str(request.param)
    server: Sandbox = request.getfixturevalue(name)
    # Inside the sandbox fixture's own override, and undone before it: no setting outlives the test.
    with override_settings(CRMIFY={**settings.CRMIFY, "PULL_INTERVAL": 60}):
        yield name, server


def salesperson(server: Sandbox, method: str, lead: Lead, action: str = "", **body: Any) -> None:
    """The control API, over HTTP: what a salesperson does in the CRM's own pages."""
    url = f"{server.control_url}leads/{lead.external_id}{'/' + action if action else ''}"
    response = requests.request(method, url, json=body or None, timeout=5)
    assert response.status_code == 200, response.text


def signed_up(capture: Any, **fields: Any) -> Lead:
    with capture(execute=True):
        user = make_user(**fields)
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    poll()  # the site's first poll: its watermark starts here
    return lead


def converted_but_not_sent(lead: Lead) -> Lead:
    """The app converts the lead and its push has not gone out yet (no worker ran: it waits for one)."""
    api.mark_converted(lead)
    lead = Lead.objects.get(pk=lead.pk)
    assert (lead.status, lead.sync_state) == ("Converted", SyncState.PENDING)
    return lead


def test_a_conflict_is_won_by_the_crm_for_a_field_it_owns_and_logged(
    crm: tuple[str, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    name, server = crm
    lead = signed_up(django_capture_on_commit_callbacks)
    lead = converted_but_not_sent(lead)
    salesperson(server, "POST", lead, "edit", status=DISQUALIFIED[name])

    report = poll()

    assert report.inbound.conflicts == 1 and not report.error
    lead.refresh_from_db()
    assert lead.status == "Disqualified"  # the CRM owns the status (CONFLICT_WINNER "crm")
    (row,) = LedgerEntry.objects.filter(lead=lead, outcome=LedgerEntry.Outcome.CONFLICT)
    assert row.direction == LedgerEntry.Direction.IN and row.operation == "pull"
    assert "app 'Converted', CRM 'Disqualified'" in row.request_summary
    assert 'the CRM wins (CONFLICT_WINNER "crm"' in row.error
    # The app's push finds nothing left to send: the CRM's value stands, and nothing goes back.
    before = crm_writes(server)
    process_lead(lead.pk)
    assert crm_writes(server) == before
    assert Lead.objects.get(pk=lead.pk).sync_state == SyncState.SYNCED


def test_with_the_app_as_winner_the_conflict_is_logged_and_the_apps_value_goes_to_the_crm(
    crm: tuple[str, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    name, server = crm
    with override_settings(CRMIFY={**settings.CRMIFY, "CONFLICT_WINNER": "app"}):
        lead = signed_up(django_capture_on_commit_callbacks)
        lead = converted_but_not_sent(lead)
        salesperson(server, "POST", lead, "edit", status=DISQUALIFIED[name])

        assert poll().inbound.conflicts == 1
        lead.refresh_from_db()
        assert lead.status == "Converted"
        (row,) = LedgerEntry.objects.filter(lead=lead, outcome=LedgerEntry.Outcome.CONFLICT)
        assert 'the app wins (CONFLICT_WINNER "app"' in row.error
        before = crm_writes(server)
        process_lead(lead.pk)
        assert crm_writes(server) > before
        assert poll().inbound.applied == 0  # the app's own push, read back, changes nothing
        assert Lead.objects.get(pk=lead.pk).status == "Converted"


def test_a_record_deleted_in_the_crm_is_marked_and_not_created_again_until_staff_re_sync_it(
    crm: tuple[str, Sandbox], django_capture_on_commit_callbacks: Any
) -> None:
    _name, server = crm
    lead = signed_up(django_capture_on_commit_callbacks, email="gone@example.com")
    salesperson(server, "DELETE", lead)

    report = poll(deletes=True)

    assert report.inbound.deleted == 1 and not report.error
    lead.refresh_from_db()
    assert lead.tombstone and lead.deleted_in_crm_at is not None
    assert lead.sync_state == SyncState.DELETED
    # The user changes their name: saved on the site, not sent, and no new record in the CRM.
    before = crm_writes(server)
    with django_capture_on_commit_callbacks(execute=True):
        user = lead.source_type.get_object_for_this_type(pk=lead.source_id)  # type: ignore[union-attr]
        user.first_name = "Renamed"
        user.save()
    assert crm_writes(server) == before
    assert not [row for row in server.leads() if "gone@example.com" in str(row).lower()]
    # Staff's Re-sync creates a new record.
    with django_capture_on_commit_callbacks(execute=True):
        api.resync([lead])
    again = Lead.objects.get(pk=lead.pk)
    assert again.sync_state == SyncState.SYNCED and again.deleted_in_crm_at is None
    assert again.external_id and again.external_id != lead.external_id
    assert [row for row in server.leads() if "gone@example.com" in str(row).lower()]
