"""The webhook endpoints (``crmify.urls``) take what each CRM sends and queue it for the task worker.

Deliveries are signed here from HubSpot's documented formulas (``tests/webhook_senders.py``); the dummy
Tasks backend records what would run, so these tests see exactly which events were queued. What is refused
is in ``tests/test_webhook_security.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.test import Client
from django.urls import reverse

from crmify.backends.hubspot import HubSpotBackend
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.signals import lead_changed_in_crm
from tests.conftest import calls, crm_writes
from tests.factories import lead_of, make_user
from tests.test_checks import crmify_messages, ids, only
from tests.webhook_senders import (
    HUBSPOT_SETTINGS,
    HUBSPOT_URL,
    INSIGHTLY_SETTINGS,
    INSIGHTLY_URL,
    SECRET,
    encode,
    fresh_webhooks,
    hubspot_event,
    hubspot_hooks,
    insightly_hooks,
    post_hubspot,
    post_insightly,
    queued_events,
    v1_signature,
    v2_signature,
    v3_headers,
)

__all__ = ["fresh_webhooks", "hubspot_hooks", "insightly_hooks"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db


def test_the_endpoints_are_named_under_the_sites_prefix() -> None:
    assert reverse("crmify:webhook-hubspot") == HUBSPOT_URL
    assert reverse("crmify:webhook-insightly") == INSIGHTLY_URL


# -- HubSpot ---------------------------------------------------------------------------------------------


def test_a_signed_property_change_is_queued_as_a_change_to_read_back(
    hubspot_hooks: None, client: Client
) -> None:
    response = post_hubspot(client, [hubspot_event("contact.propertyChange", 101)])

    assert response.status_code == 200
    assert queued_events() == [
        [{"id": "101", "kind": "changed", "survivor": "", "at": "2026-01-01T00:00:00+00:00"}]
    ]


def test_creation_restore_deletion_and_privacy_deletion_are_read_as_their_kinds(
    hubspot_hooks: None, client: Client
) -> None:
    body = [
        hubspot_event("contact.creation", 1),
        hubspot_event("contact.restore", 2),
        hubspot_event("contact.deletion", 3),
        hubspot_event("contact.privacyDeletion", 4),
    ]

    assert post_hubspot(client, body).status_code == 200

    [events] = queued_events()
    assert [(e["id"], e["kind"]) for e in events] == [
        ("1", "changed"),
        ("2", "changed"),
        ("3", "deleted"),
        ("4", "deleted"),
    ]


def test_a_merge_names_the_survivor_for_each_merged_record_and_reads_the_survivor_back(
    hubspot_hooks: None, client: Client
) -> None:
    merge = hubspot_event(
        "contact.merge", 7, primaryObjectId=7, mergedObjectIds=[5, 6], newObjectId=7
    )

    assert post_hubspot(client, [merge]).status_code == 200

    [events] = queued_events()
    assert [(e["id"], e["kind"], e["survivor"]) for e in events] == [
        ("5", "merged", "7"),
        ("6", "merged", "7"),
        ("7", "changed", ""),
    ]


def test_events_about_other_things_are_ignored_and_nothing_is_queued_for_them(
    hubspot_hooks: None, client: Client
) -> None:
    body = [
        hubspot_event("contact.associationChange", 1),
        hubspot_event("company.propertyChange", 2),
        hubspot_event("deal.creation", 3),
    ]

    response = post_hubspot(client, body)

    assert response.status_code == 200
    assert queued_events() == []


def test_the_view_makes_no_crm_call_and_writes_no_lead(hubspot_hooks: None, client: Client) -> None:
    # The backend points nowhere: a CRM call from the view would fail the request.
    assert post_hubspot(client, [hubspot_event()]).status_code == 200
    assert Lead.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_older_signature_version_is_taken_when_the_site_lists_it(
    configure: Callable[..., None], client: Client, version: str
) -> None:
    configure(**HUBSPOT_SETTINGS, WEBHOOK_SIGNATURE_VERSIONS=["v3", version])
    body = encode([hubspot_event()])
    signature = (
        v1_signature(SECRET, body)
        if version == "v1"
        else v2_signature(SECRET, "http://testserver" + HUBSPOT_URL, body)
    )

    response = post_hubspot(
        client,
        body,
        headers={"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": version},
    )

    assert response.status_code == 200
    assert [e["id"] for e in queued_events()[0]] == ["101"]


def test_the_secret_can_come_from_the_environment(
    configure: Callable[..., None], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(**{**HUBSPOT_SETTINGS, "WEBHOOK_AUTH": {}})
    monkeypatch.setenv("CRMIFY_WEBHOOK_SECRET", SECRET)

    assert post_hubspot(client, [hubspot_event()]).status_code == 200
    assert len(queued_events()) == 1


def test_behind_a_tls_proxy_the_public_uri_is_what_is_signed(
    hubspot_hooks: None, client: Client, settings: Any
) -> None:
    settings.USE_X_FORWARDED_HOST = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    body = encode([hubspot_event()])
    public = "https://www.example.com" + HUBSPOT_URL

    response = post_hubspot(
        client,
        body,
        headers={
            **v3_headers(body, uri=public),
            "X-Forwarded-Host": "www.example.com",
            "X-Forwarded-Proto": "https",
        },
    )

    assert response.status_code == 200
    assert len(queued_events()) == 1


class SiteHubSpot(HubSpotBackend):
    """A site's own subclass of the HubSpot backend."""


def test_a_subclass_of_the_crms_backend_serves_its_endpoint(
    configure: Callable[..., None], client: Client
) -> None:
    configure(**{**HUBSPOT_SETTINGS, "BACKEND": "tests.test_webhooks.SiteHubSpot"})

    assert post_hubspot(client, [hubspot_event()]).status_code == 200
    assert len(queued_events()) == 1


# -- Insightly -------------------------------------------------------------------------------------------


def test_an_insightly_lead_workflow_is_queued_as_a_change_to_read_back(
    insightly_hooks: None, client: Client
) -> None:
    entity = {
        "LEAD_ID": 4242,
        "FIRST_NAME": "Ada",
        "LEAD_STATUS_ID": 7,
        "DATE_UPDATED_UTC": "/Date(1489116850787-0800)/",
    }

    response = post_insightly(client, {"entity": entity})

    assert response.status_code == 200
    assert queued_events() == [[{"id": "4242", "kind": "changed", "survivor": "", "at": None}]]


def test_insightly_credentials_can_come_from_the_environment(
    configure: Callable[..., None], client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(**{**INSIGHTLY_SETTINGS, "WEBHOOK_AUTH": {}})
    monkeypatch.setenv("CRMIFY_WEBHOOK_USERNAME", INSIGHTLY_SETTINGS["WEBHOOK_AUTH"]["USERNAME"])
    monkeypatch.setenv("CRMIFY_WEBHOOK_PASSWORD", INSIGHTLY_SETTINGS["WEBHOOK_AUTH"]["PASSWORD"])

    assert post_insightly(client, {"entity": {"LEAD_ID": "17"}}).status_code == 200
    assert queued_events() == [[{"id": "17", "kind": "changed", "survivor": "", "at": None}]]


def test_a_workflow_on_another_record_type_is_a_400_that_says_so(
    insightly_hooks: None, client: Client
) -> None:
    response = post_insightly(client, {"entity": {"CONTACT_ID": 9, "FIRST_NAME": "Ada"}})

    assert response.status_code == 400
    assert b"LEAD_ID" in response.content
    assert queued_events() == []


# -- system checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("versions", [["v3", "v4"], "v3", ["V3"]], ids=["v4", "a string", "V3"])
def test_an_unknown_signature_version_is_E120(versions: Any) -> None:
    message = only(crmify_messages(WEBHOOK_SIGNATURE_VERSIONS=versions), "crmify.E120")

    assert "v1, v2, v3" in (message.hint or "")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_accepting_a_signature_without_a_timestamp_warns_W121(version: str) -> None:
    messages = crmify_messages(WEBHOOK_SIGNATURE_VERSIONS=["v3", version])

    assert ids(messages) == ["crmify.W121"]
    assert version in only(messages, "crmify.W121").msg


def test_webhook_auth_that_is_not_a_dict_is_E122() -> None:
    messages = crmify_messages(WEBHOOK_AUTH="crmify-Hook-Secret")

    only(messages, "crmify.E122")


def test_the_default_webhook_settings_pass_the_checks() -> None:
    assert crmify_messages(WEBHOOK_SIGNATURE_VERSIONS=["v3"], WEBHOOK_AUTH={"SECRET": SECRET}) == []


# -- over real HTTP, to the lead -------------------------------------------------------------------------
# The sandboxes as the CRM (the conftest's ``hubspot`` and ``insightly`` fixtures) and the immediate Tasks
# backend: the delivery's task runs at once, reads the record back over HTTP and applies it.


def salesperson_patches(crm: HubSpotSandbox, contact_id: str, **properties: str) -> None:
    """A change made in HubSpot's UI: the contact's properties, through the sandbox's API."""
    requests.patch(
        f"{crm.url}/crm/v3/objects/contacts/{contact_id}",
        json={"properties": properties},
        headers={"Authorization": f"Bearer {crm.token}"},
        timeout=5,
    ).raise_for_status()


@pytest.mark.django_db(transaction=True)
def test_over_http_a_status_changed_in_hubspot_reaches_the_lead_and_is_not_pushed_back(
    hubspot: HubSpotSandbox, configure: Callable[..., None], client: Client
) -> None:
    configure(WEBHOOK_AUTH={"SECRET": SECRET})
    user = make_user()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    salesperson_patches(hubspot, lead.external_id, hs_lead_status="UNQUALIFIED")
    writes = crm_writes(hubspot)
    heard: list[dict[str, Any]] = []
    lead_changed_in_crm.connect(lambda **kw: heard.append(kw), weak=False, dispatch_uid="t:hs")
    try:
        response = post_hubspot(
            client, [hubspot_event("contact.propertyChange", int(lead.external_id))]
        )
    finally:
        lead_changed_in_crm.disconnect(dispatch_uid="t:hs")

    assert response.status_code == 200
    assert lead_of(user).status == "Disqualified"
    assert [(h["lead"].pk, h["via"]) for h in heard] == [(lead.pk, "webhook")]
    assert crm_writes(hubspot) == writes  # read back, never pushed back
    user.first_name = "Augusta"
    user.save()  # the next push carries the CRM's status, not the old one
    assert crm_writes(hubspot) > writes
    [contact] = [c for c in hubspot.leads() if c["id"] == lead.external_id]
    assert contact["properties"]["hs_lead_status"] == "UNQUALIFIED"


@pytest.mark.django_db(transaction=True)
def test_over_http_a_contact_deleted_in_hubspot_marks_the_lead_deleted_in_the_crm(
    hubspot: HubSpotSandbox, configure: Callable[..., None], client: Client
) -> None:
    configure(WEBHOOK_AUTH={"SECRET": SECRET})
    lead = lead_of(make_user())
    requests.delete(
        f"{hubspot.url}/crm/v3/objects/contacts/{lead.external_id}",
        headers={"Authorization": f"Bearer {hubspot.token}"},
        timeout=5,
    ).raise_for_status()

    response = post_hubspot(client, [hubspot_event("contact.deletion", int(lead.external_id))])

    assert response.status_code == 200
    lead.refresh_from_db()
    assert lead.deleted_in_crm_at is not None and lead.tombstone


@pytest.mark.django_db(transaction=True)
def test_over_http_a_status_changed_by_an_insightly_workflow_reaches_the_lead(
    insightly: SandboxServer, configure: Callable[..., None], client: Client
) -> None:
    configure(WEBHOOK_AUTH=INSIGHTLY_SETTINGS["WEBHOOK_AUTH"])
    user = make_user()
    lead = lead_of(user)
    disqualified = next(s.id for s in insightly.state.statuses if s.name == "Disqualified")
    record = insightly.state.update_lead(
        {"LEAD_ID": int(lead.external_id), "LEAD_STATUS_ID": disqualified}
    )
    updates = calls(insightly, "PUT /Leads")

    # The workflow posts the record as it was when it ran; crmify reads it back all the same.
    response = post_insightly(client, {"entity": {**record, "LEAD_STATUS_ID": 1}})

    assert response.status_code == 200
    assert lead_of(user).status == "Disqualified"
    assert calls(insightly, "PUT /Leads") == updates
    user.first_name = "Augusta"
    user.save()  # the next push carries the CRM's status, not the old one
    assert calls(insightly, "PUT /Leads") == updates + 1
    [stored] = [r for r in insightly.leads() if r["LEAD_ID"] == int(lead.external_id)]
    assert stored["LEAD_STATUS_ID"] == disqualified
