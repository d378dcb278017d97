"""A salesperson's work in the CRM, through the control API, as a client of the CRM's API then sees it:
edits that move the modification time, conversion, deletion, merging, and the webhooks they send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from crmify.sandbox import Dialect, Faults, SandboxServer
from crmify.sandbox.hubspot import HubSpotDialect, HubSpotSandbox

START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
QUIET = Faults(requests_per_second=None, daily_quota=None)
CONTACTS = "/crm/v3/objects/contacts"


class Clock:
    """The sandbox's clock, moved by the test (so "modified later" needs no sleeping)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def later(self, minutes: int = 5) -> None:
        self.now += timedelta(minutes=minutes)


def control(server: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, server.control_url + path, timeout=10, **kwargs)


def insightly(**kwargs: Any) -> tuple[SandboxServer, Clock, requests.Session]:
    clock = Clock()
    server = SandboxServer(faults=QUIET, clock=clock, **kwargs).start()
    session = requests.Session()
    session.auth = (server.api_key, "")
    return server, clock, session


def hubspot(**kwargs: Any) -> tuple[HubSpotSandbox, Clock, requests.Session]:
    clock = Clock()
    server = HubSpotSandbox(faults=QUIET, clock=clock, **kwargs).start()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.token}"
    return server, clock, session


@pytest.fixture
def crm() -> Any:
    server, clock, session = insightly()
    yield server, clock, session
    server.stop()


@pytest.fixture
def hub() -> Any:
    server, clock, session = hubspot()
    yield server, clock, session
    server.stop()


# -- Insightly ----------------------------------------------------------------------------------------


def test_a_status_set_by_name_shows_in_the_api_with_date_updated_moved(crm):
    server, clock, session = crm
    lead = server.add_lead({"LAST_NAME": "Lovelace"})
    clock.later()
    answer = control(
        server, "POST", f"leads/{lead['LEAD_ID']}/edit", json={"status": "disqualified"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["LEAD_STATUS"] == "Disqualified"

    read = session.get(server.url + f"Leads/{lead['LEAD_ID']}", timeout=5).json()
    disqualified = server.state.status_id("Disqualified")
    assert read["LEAD_STATUS_ID"] == disqualified != lead["LEAD_STATUS_ID"]
    assert read["DATE_UPDATED_UTC"] == "2026-03-02 09:05:00"
    assert read["DATE_CREATED_UTC"] == "2026-03-02 09:00:00"
    # A poller asking for changes since before the edit finds it.
    found = session.get(
        server.url + "Leads/Search",
        params={"updated_after_utc": "2026-03-02T09:04:00Z"},
        timeout=5,
    ).json()
    assert [one["LEAD_ID"] for one in found] == [lead["LEAD_ID"]]


def test_fields_in_insightlys_names_are_checked_as_a_put_is(crm):
    server, _clock, session = crm
    lead_id = server.add_lead({"LAST_NAME": "Lovelace"})["LEAD_ID"]
    contacted = server.state.status_id("Contacted")
    answer = control(
        server,
        "POST",
        f"leads/{lead_id}/edit",
        json={"fields": {"LEAD_STATUS_ID": contacted, "OWNER_USER_ID": 42, "TITLE": "Countess"}},
    )
    assert answer.status_code == 200
    read = session.get(server.url + f"Leads/{lead_id}", timeout=5).json()
    assert (read["LEAD_STATUS_ID"], read["OWNER_USER_ID"], read["TITLE"]) == (
        contacted,
        42,
        "Countess",
    )
    for body, words in (
        ({"fields": {"LEAD_STATUS_ID": 1}}, "LEAD_STATUS_ID"),
        ({"fields": {"EMAIL_ADDRESS": "a@b.c"}}, "EMAIL"),
        ({"status": "Hot"}, "No lead status 'Hot'; this account has Not Contacted"),
        ({"fields": []}, '{"fields"'),
        ({"colour": "red"}, "unknown key(s): colour"),
        ({}, "Nothing to edit"),
    ):
        refused = control(server, "POST", f"leads/{lead_id}/edit", json=body)
        assert refused.status_code == 400 and words in refused.json()["Message"], body
    assert session.get(server.url + f"Leads/{lead_id}", timeout=5).json() == read  # nothing applied
    assert (
        control(server, "POST", "leads/71999999/edit", json={"status": "Contacted"}).status_code
        == 404
    )
    assert (
        control(server, "POST", "leads/abc/edit", json={"status": "Contacted"}).status_code == 404
    )
    assert control(server, "POST", f"leads/{lead_id}/edit", data=b"{").status_code == 400


def test_conversion_sets_the_converted_fields_and_status(crm):
    server, clock, session = crm
    lead_id = server.add_lead({"LAST_NAME": "Lovelace"})["LEAD_ID"]
    clock.later()
    answer = control(server, "POST", f"leads/{lead_id}/convert")
    assert answer.status_code == 200 and answer.json()["LEAD_STATUS"] == "Converted"

    read = session.get(server.url + f"Leads/{lead_id}", timeout=5).json()
    assert read["CONVERTED"] is True
    assert read["CONVERTED_DATE_UTC"] == read["DATE_UPDATED_UTC"] == "2026-03-02 09:05:00"
    assert read["LEAD_STATUS_ID"] == server.state.status_id("Converted")
    ids = [read[f"CONVERTED_{kind}_ID"] for kind in ("CONTACT", "ORGANISATION", "OPPORTUNITY")]
    assert all(isinstance(one, int) for one in ids) and len(set(ids)) == 3
    again = control(server, "POST", f"leads/{lead_id}/convert")
    assert again.status_code == 400 and "already converted" in again.json()["Message"]


def test_conversion_can_leave_date_updated_alone():
    server, clock, session = insightly(dialect=Dialect(conversion_bumps_updated=False))
    try:
        lead_id = server.add_lead({"LAST_NAME": "Lovelace"})["LEAD_ID"]
        clock.later()
        control(server, "POST", f"leads/{lead_id}/convert").raise_for_status()
        read = session.get(server.url + f"Leads/{lead_id}", timeout=5).json()
        assert read["CONVERTED"] is True and read["CONVERTED_DATE_UTC"] == "2026-03-02 09:05:00"
        assert read["DATE_UPDATED_UTC"] == "2026-03-02 09:00:00"
    finally:
        server.stop()


def test_a_deleted_lead_is_gone_and_sends_no_webhook(crm, receiver):
    server, _clock, session = crm
    gone = server.add_lead({"LAST_NAME": "Gone"})["LEAD_ID"]
    kept = server.add_lead({"LAST_NAME": "Kept"})["LEAD_ID"]
    control(server, "PUT", "webhooks", json={"url": receiver.url}).raise_for_status()
    answer = control(server, "DELETE", f"leads/{gone}")
    assert answer.status_code == 200 and answer.json() == {"deleted": str(gone)}
    assert session.get(server.url + f"Leads/{gone}", timeout=5).status_code == 404
    assert [lead["LEAD_ID"] for lead in session.get(server.url + "Leads", timeout=5).json()] == [
        kept
    ]
    assert control(server, "DELETE", f"leads/{gone}").status_code == 404
    # Deliveries leave in order: the later edit arriving first and alone shows the delete sent none.
    control(server, "POST", f"leads/{kept}/edit", json={"status": "Contacted"}).raise_for_status()
    (request,) = receiver.wait_for(1)
    assert request.json()["entity"]["LEAD_ID"] == kept
    assert server.webhooks.wait_idle(5) and len(receiver.received) == 1


def test_an_edit_and_a_conversion_each_send_the_workflow_webhook(crm, receiver):
    server, _clock, _session = crm
    lead_id = server.add_lead({"LAST_NAME": "Lovelace"})["LEAD_ID"]
    control(server, "PUT", "webhooks", json={"url": receiver.url}).raise_for_status()
    control(server, "POST", f"leads/{lead_id}/edit", json={"status": "Contacted"})
    control(server, "POST", f"leads/{lead_id}/convert")
    edited, converted = (request.json()["entity"] for request in receiver.wait_for(2))
    assert edited["LEAD_STATUS_ID"] == server.state.status_id("Contacted")
    assert edited["CONVERTED"] is False
    assert converted["CONVERTED"] is True
    assert converted["LEAD_STATUS_ID"] == server.state.status_id("Converted")


def test_insightly_leads_cannot_be_merged(crm):
    server, _clock, _session = crm
    lead_id = server.add_lead({"LAST_NAME": "A"})["LEAD_ID"]
    answer = control(server, "POST", f"leads/{lead_id}/merge", json={"into": "1"})
    assert answer.status_code == 404 and "Insightly" in answer.json()["Message"]


# -- HubSpot ------------------------------------------------------------------------------------------


def test_a_hubspot_edit_shows_in_reads_with_lastmodifieddate_moved(hub):
    server, clock, session = hub
    lead_id = server.add_contact({"email": "ada@example.com", "lifecyclestage": "customer"})["id"]
    clock.later()
    answer = control(
        server,
        "POST",
        f"leads/{lead_id}/edit",
        # A salesperson may move the stage back, which the API may not.
        json={"status": "Unqualified", "fields": {"lifecyclestage": "lead"}},
    )
    assert answer.status_code == 200, answer.text

    read = session.get(
        server.url + f"{CONTACTS}/{lead_id}",
        params={"properties": "hs_lead_status,lifecyclestage,lastmodifieddate"},
        timeout=5,
    ).json()
    assert read["properties"]["hs_lead_status"] == "UNQUALIFIED"
    assert read["properties"]["lifecyclestage"] == "lead"
    assert read["properties"]["lastmodifieddate"] == read["updatedAt"] == "2026-03-02T09:05:00.000Z"
    assert read["createdAt"] == "2026-03-02T09:00:00.000Z"
    found = session.post(
        server.url + f"{CONTACTS}/search",
        json={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "hs_lead_status", "operator": "EQ", "value": "UNQUALIFIED"}
                    ]
                }
            ]
        },
        timeout=5,
    ).json()
    assert [one["id"] for one in found["results"]] == [lead_id]


def test_a_hubspot_edit_is_validated(hub):
    server, _clock, _session = hub
    lead_id = server.add_contact({"email": "ada@example.com"})["id"]
    server.add_contact({"email": "bob@example.com"})
    for body, status, words in (
        ({"fields": {"hs_lead_status": "WARM"}}, 400, "INVALID_OPTION"),
        ({"fields": {"shoe_size": "9"}}, 400, "PROPERTY_DOESNT_EXIST"),
        ({"fields": {"lastmodifieddate": "x"}}, 400, "READ_ONLY_VALUE"),
        ({"status": "Warm"}, 400, "NEW (New)"),
        ({"fields": {"email": "BOB@example.com"}}, 409, "Existing ID"),
    ):
        answer = control(server, "POST", f"leads/{lead_id}/edit", json=body)
        assert answer.status_code == status and words in answer.json()["Message"], body
    assert control(server, "POST", "leads/999/edit", json={"status": "New"}).status_code == 404


def test_a_hubspot_delete_archives_the_contact_and_sends_contact_deletion(hub, receiver):
    server, _clock, session = hub
    lead_id = server.add_contact({"email": "ada@example.com"})["id"]
    control(server, "PUT", "webhooks", json={"url": receiver.url, "secret": "s"}).raise_for_status()
    assert control(server, "DELETE", f"leads/{lead_id}").status_code == 200
    assert session.get(server.url + f"{CONTACTS}/{lead_id}", timeout=5).status_code == 404
    assert session.get(server.url + CONTACTS, timeout=5).json()["results"] == []
    (event,) = receiver.wait_for(1)[0].json()
    assert (event["subscriptionType"], event["objectId"], event["changeSource"]) == (
        "contact.deletion",
        int(lead_id),
        "CRM_UI",
    )
    assert control(server, "DELETE", f"leads/{lead_id}").status_code == 404


def test_a_merged_contact_leaves_listings_and_reads_answer_the_primary(hub, receiver):
    server, clock, session = hub
    primary = server.add_contact({"email": "ada@example.com", "firstname": "Ada"})["id"]
    merged = server.add_contact({"email": "ada.l@example.com", "jobtitle": "Countess"})["id"]
    control(server, "PUT", "webhooks", json={"url": receiver.url}).raise_for_status()
    clock.later()
    answer = control(server, "POST", f"leads/{merged}/merge", json={"into": primary})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == primary

    listed = session.get(server.url + CONTACTS, timeout=5).json()["results"]
    assert [one["id"] for one in listed] == [primary]
    searched = session.post(server.url + f"{CONTACTS}/search", json={"query": "ada"}, timeout=5)
    assert [one["id"] for one in searched.json()["results"]] == [primary]
    read = session.get(
        server.url + f"{CONTACTS}/{merged}",
        params={"properties": "email,jobtitle,hs_merged_object_ids"},
        timeout=5,
    ).json()
    assert read["id"] == primary
    assert read["properties"]["hs_merged_object_ids"] == merged
    # The primary keeps its values and takes the merged one's where it had none.
    assert read["properties"]["email"] == "ada@example.com"
    assert read["properties"]["jobtitle"] == "Countess"
    assert read["updatedAt"] == "2026-03-02T09:05:00.000Z"

    (event,) = receiver.wait_for(1)[0].json()
    assert event["subscriptionType"] == "contact.merge"
    assert event["objectId"] == event["primaryObjectId"] == int(primary)
    assert event["mergedObjectIds"] == [int(merged)]


def test_merges_chain_and_batch_reads_follow_them(hub):
    server, _clock, session = hub
    first, second, third = (server.add_contact({"email": f"{n}@example.com"})["id"] for n in "abc")
    control(server, "POST", f"leads/{first}/merge", json={"into": second}).raise_for_status()
    control(server, "POST", f"leads/{second}/merge", json={"into": third}).raise_for_status()
    answer = session.post(
        server.url + f"{CONTACTS}/batch/read",
        json={"inputs": [{"id": first}], "properties": ["hs_merged_object_ids"]},
        timeout=5,
    ).json()
    (result,) = answer["results"]
    assert result["id"] == third
    assert sorted(result["properties"]["hs_merged_object_ids"].split(";")) == sorted(
        [first, second]
    )


def test_a_merged_contacts_id_can_answer_404():
    server, _clock, session = hubspot(dialect=HubSpotDialect(merged_reads="not_found"))
    try:
        primary = server.add_contact({"email": "a@example.com"})["id"]
        merged = server.add_contact({"email": "b@example.com"})["id"]
        control(server, "POST", f"leads/{merged}/merge", json={"into": primary}).raise_for_status()
        assert session.get(server.url + f"{CONTACTS}/{merged}", timeout=5).status_code == 404
        assert session.get(server.url + f"{CONTACTS}/{primary}", timeout=5).status_code == 200
    finally:
        server.stop()


def test_a_bad_merge_is_refused_and_changes_nothing(hub):
    server, _clock, _session = hub
    one = server.add_contact({"email": "a@example.com"})["id"]
    for body, status in (
        ({"into": one}, 400),
        ({"into": "999"}, 404),
        ({}, 400),
        ({"into": True}, 400),
    ):
        assert control(server, "POST", f"leads/{one}/merge", json=body).status_code == status, body
    assert control(server, "POST", "leads/999/merge", json={"into": one}).status_code == 404
    assert [contact["id"] for contact in server.leads()] == [one]


def test_hubspot_contacts_are_not_converted(hub):
    server, _clock, _session = hub
    one = server.add_contact({"email": "a@example.com"})["id"]
    answer = control(server, "POST", f"leads/{one}/convert")
    assert answer.status_code == 404 and "HubSpot" in answer.json()["Message"]


def test_a_merge_survives_a_restart(tmp_path):
    state_file = tmp_path / "hubspot.json"
    server, _clock, _session = hubspot(state_file=state_file)
    try:
        primary = server.add_contact({"email": "a@example.com"})["id"]
        merged = server.add_contact({"email": "b@example.com"})["id"]
        control(server, "POST", f"leads/{merged}/merge", json={"into": primary}).raise_for_status()
    finally:
        server.stop()
    again, _clock, session = hubspot(state_file=state_file)
    try:
        assert session.get(again.url + f"{CONTACTS}/{merged}", timeout=5).json()["id"] == primary
    finally:
        again.stop()
