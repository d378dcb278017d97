"""Webhook security: whatever does not come from the CRM is refused, a repeated delivery does nothing
twice, a bad body is a 400, and nothing secret reaches a log.

Every case checks three things: the status the CRM (or an attacker) gets, that no ``apply_webhook_task``
was queued (so nothing can be applied), and that no log record (crmify's, Django's, any logger's) carries
the secret, the Basic credentials, a signature sent, or the body. Signatures are computed from HubSpot's
documented formulas (``tests/webhook_senders.py``), not by crmify's code.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client, RequestFactory

from crmify.compat import task_backends
from crmify.webhooks import MAX_BODY_BYTES, hubspot_webhook, insightly_webhook
from tests.webhook_senders import (
    HUBSPOT_SETTINGS,
    HUBSPOT_URL,
    INSIGHTLY_SETTINGS,
    PASSWORD,
    SECRET,
    USERNAME,
    basic,
    encode,
    fresh_webhooks,
    hubspot_event,
    hubspot_hooks,
    insightly_hooks,
    now_ms,
    post_hubspot,
    post_insightly,
    queued_events,
    v1_signature,
    v3_headers,
)

__all__ = ["fresh_webhooks", "hubspot_hooks", "insightly_hooks"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

#: In every body below, so a body quoted in a log is found.
BODY_MARKER = "crmify-Body-Marker-e5d21a"
OTHER_SECRET = "crmify-Other-Secret-77b1c2"


def event(
    subscription: str = "contact.propertyChange", object_id: int = 101, **more: Any
) -> dict[str, Any]:
    return hubspot_event(subscription, object_id, propertyValue=BODY_MARKER, **more)


BODY = [event()]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Callable[..., None]:
    """Call it with the signatures a test sent: fails if any log record quotes a secret or the body."""
    caplog.set_level(logging.DEBUG)

    def check(*sent: str) -> None:
        secrets = [SECRET, OTHER_SECRET, PASSWORD, BODY_MARKER, *sent]
        secrets += [
            value.split(" ", 1)[1] for value in basic().values()
        ]  # the Basic header's value
        for record in caplog.records:
            text = record.getMessage() + (record.exc_text or "") + repr(record.__dict__)
            for secret in secrets:
                assert secret not in text, f"{record.name} logged a secret: {record.getMessage()}"

    return check


def refused(response: Any, status: int) -> None:
    assert response.status_code == status, response.content
    assert queued_events() == []


# -- HubSpot signatures ----------------------------------------------------------------------------------


def test_a_wrong_signature_is_refused(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    body = encode(BODY)
    headers = v3_headers(body, secret=OTHER_SECRET)

    refused(post_hubspot(client, body, headers), 403)
    logs(headers["X-HubSpot-Signature-v3"])


def test_a_body_changed_after_signing_is_refused(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    headers = v3_headers(encode(BODY))
    tampered = encode([event(object_id=666)])

    refused(post_hubspot(client, tampered, headers), 403)
    logs(headers["X-HubSpot-Signature-v3"])


@pytest.mark.parametrize("skew_seconds", [-301, 301], ids=["old", "future"])
def test_a_timestamp_outside_five_minutes_is_refused_though_correctly_signed(
    hubspot_hooks: None, client: Client, logs: Callable[..., None], skew_seconds: int
) -> None:
    body = encode(BODY)
    headers = v3_headers(body, timestamp=now_ms() + skew_seconds * 1000)

    refused(post_hubspot(client, body, headers), 403)
    logs(headers["X-HubSpot-Signature-v3"])


def test_a_timestamp_within_five_minutes_is_taken(hubspot_hooks: None, client: Client) -> None:
    body = encode(BODY)

    response = post_hubspot(client, body, v3_headers(body, timestamp=now_ms() - 240_000))

    assert response.status_code == 200
    assert len(queued_events()) == 1


def test_no_signature_is_a_401(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    refused(post_hubspot(client, BODY, headers={}), 401)
    logs()


def test_a_v3_signature_without_its_timestamp_is_a_401(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    headers = v3_headers(encode(BODY))
    del headers["X-HubSpot-Request-Timestamp"]

    refused(post_hubspot(client, BODY, headers), 401)
    logs(headers["X-HubSpot-Signature-v3"])


def test_a_v1_signature_is_not_taken_unless_the_site_lists_v1(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    body = encode(BODY)
    signature = v1_signature(SECRET, body)
    headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v1"}

    refused(post_hubspot(client, body, headers), 401)
    logs(signature)


def test_a_wrong_v3_signature_is_refused_even_beside_a_right_v1_one(
    configure: Callable[..., None], client: Client, logs: Callable[..., None]
) -> None:
    configure(**HUBSPOT_SETTINGS, WEBHOOK_SIGNATURE_VERSIONS=["v3", "v1"])
    body = encode(BODY)
    v1 = v1_signature(SECRET, body)
    headers = {
        **v3_headers(body, secret=OTHER_SECRET),
        "X-HubSpot-Signature": v1,
        "X-HubSpot-Signature-Version": "v1",
    }

    refused(post_hubspot(client, body, headers), 403)
    logs(v1, headers["X-HubSpot-Signature-v3"])


def test_without_a_configured_secret_everything_is_refused(
    configure: Callable[..., None], client: Client, logs: Callable[..., None]
) -> None:
    configure(**{**HUBSPOT_SETTINGS, "WEBHOOK_AUTH": {}})
    body = encode(BODY)
    headers = v3_headers(body, secret="")  # what an empty secret would sign

    refused(post_hubspot(client, body, headers), 403)
    logs(headers["X-HubSpot-Signature-v3"])


# -- replays ---------------------------------------------------------------------------------------------


def test_a_replayed_hubspot_delivery_is_answered_200_and_queued_once(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    body = encode(BODY)
    headers = v3_headers(body)

    first = post_hubspot(client, body, headers)
    again = post_hubspot(client, body, headers)

    assert (first.status_code, again.status_code) == (200, 200)
    assert len(queued_events()) == 1
    logs(headers["X-HubSpot-Signature-v3"])


def test_a_replayed_v1_delivery_is_queued_once(
    configure: Callable[..., None], client: Client, logs: Callable[..., None]
) -> None:
    configure(**HUBSPOT_SETTINGS, WEBHOOK_SIGNATURE_VERSIONS=["v1"])
    body = encode(BODY)
    signature = v1_signature(SECRET, body)
    headers = {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": "v1"}

    statuses = [post_hubspot(client, body, headers).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert len(queued_events()) == 1
    logs(signature)


def test_a_replayed_insightly_delivery_is_queued_once(
    insightly_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    body = {"entity": {"LEAD_ID": 5, "FIRST_NAME": BODY_MARKER}}

    statuses = [post_insightly(client, body).status_code for _ in range(2)]

    assert statuses == [200, 200]
    assert len(queued_events()) == 1
    logs()


def test_a_delivery_that_could_not_be_queued_is_taken_when_the_crm_sends_it_again(
    hubspot_hooks: None, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = encode(BODY)
    headers = v3_headers(body)
    backend = task_backends["dummy"]
    with monkeypatch.context() as patch:
        patch.setattr(backend, "enqueue", _broker_down)
        first = post_hubspot(client, body, headers)

    again = post_hubspot(client, body, headers)

    assert (first.status_code, again.status_code) == (503, 200)
    assert len(queued_events()) == 1


def _broker_down(*args: Any) -> Any:
    raise ConnectionError("the broker does not answer")


# -- Insightly credentials -------------------------------------------------------------------------------


def test_no_basic_credentials_is_a_401_that_asks_for_them(
    insightly_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    response = post_insightly(client, {"entity": {"LEAD_ID": 5}}, headers={})

    refused(response, 401)
    assert response["WWW-Authenticate"].startswith("Basic")
    logs()


@pytest.mark.parametrize(
    "authorization",
    [
        basic(USERNAME, "wrong-password")["Authorization"],
        basic("someone-else", PASSWORD)["Authorization"],
        basic(USERNAME, PASSWORD + "x")["Authorization"],
        "Basic not-base64!",
        "Basic " + base64.b64encode(f"{USERNAME}{PASSWORD}".encode()).decode(),  # no colon
    ],
    ids=["wrong password", "wrong user", "longer password", "not base64", "no colon"],
)
def test_wrong_basic_credentials_are_refused(
    insightly_hooks: None, client: Client, logs: Callable[..., None], authorization: str
) -> None:
    body = {"entity": {"LEAD_ID": 5, "FIRST_NAME": BODY_MARKER}}

    refused(post_insightly(client, body, headers={"Authorization": authorization}), 403)
    logs(authorization.split(" ", 1)[1])


def test_without_configured_credentials_insightly_deliveries_are_refused(
    configure: Callable[..., None], client: Client, logs: Callable[..., None]
) -> None:
    configure(**{**INSIGHTLY_SETTINGS, "WEBHOOK_AUTH": {"USERNAME": USERNAME}})  # no password

    refused(post_insightly(client, {"entity": {"LEAD_ID": 5}}, headers=basic(USERNAME, "")), 403)
    logs()


# -- bodies ----------------------------------------------------------------------------------------------


class ExplodingStream(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the body was read")

    readline = read


@pytest.mark.parametrize(
    ("settings_for", "view"),
    [(HUBSPOT_SETTINGS, hubspot_webhook), (INSIGHTLY_SETTINGS, insightly_webhook)],
    ids=["hubspot_hooks", "insightly_hooks"],
)
def test_a_body_over_the_limit_is_a_413_without_reading_it(
    configure: Callable[..., None],
    logs: Callable[..., None],
    settings_for: dict[str, Any],
    view: Callable[..., Any],
) -> None:
    configure(**settings_for)
    request = RequestFactory().generic(
        "POST", "/crm/webhooks/", content_type="application/json", headers=basic()
    )
    request.META["CONTENT_LENGTH"] = str(MAX_BODY_BYTES + 1)
    request.META["wsgi.input"] = ExplodingStream()
    request._stream = ExplodingStream()  # type: ignore[attr-defined]

    response = view(request)

    refused(response, 413)
    logs()


def test_a_body_just_over_the_limit_sent_whole_is_a_413(
    hubspot_hooks: None, client: Client, logs: Callable[..., None]
) -> None:
    padding = "x" * MAX_BODY_BYTES
    body = encode([event(propertyName=padding)])

    refused(post_hubspot(client, body), 413)
    logs()


#: Signed (or Basic-authorised) bodies that are not what the CRM documents, each a 400.
HUBSPOT_BAD_BODIES = {
    "not JSON": b"[{" + BODY_MARKER.encode(),
    "not UTF-8": b"\xff\xfe\xfa" + BODY_MARKER.encode(),
    "an object, not an array": encode({"objectId": 1, "propertyValue": BODY_MARKER}),
    "an event without subscriptionType": encode([{"objectId": 1, "propertyValue": BODY_MARKER}]),
    "an event without objectId": encode([{**event(), "objectId": None}]),
    "an objectId that is not an id": encode([event(object_id=-3)]),
    "a merge without mergedObjectIds": encode([event("contact.merge", 7, primaryObjectId=7)]),
    "a good event then a bad one": encode([event(), "not an event"]),
    "nested past the stack": b"[" * 200_000 + b"]" * 200_000,
}


@pytest.mark.parametrize("body", HUBSPOT_BAD_BODIES.values(), ids=HUBSPOT_BAD_BODIES.keys())
def test_a_signed_hubspot_body_of_the_wrong_shape_is_a_400_with_nothing_queued(
    hubspot_hooks: None, client: Client, logs: Callable[..., None], body: bytes
) -> None:
    headers = v3_headers(body)

    refused(post_hubspot(client, body, headers), 400)
    logs(headers["X-HubSpot-Signature-v3"])


INSIGHTLY_BAD_BODIES = {
    "not JSON": b"{" + BODY_MARKER.encode(),
    "an array": encode([{"LEAD_ID": 5, "FIRST_NAME": BODY_MARKER}]),
    "no entity": encode({"LEAD_ID": 5, "FIRST_NAME": BODY_MARKER}),
    "an entity that is not an object": encode({"entity": BODY_MARKER}),
    "a LEAD_ID that is not an id": encode({"entity": {"LEAD_ID": "5; drop", "X": BODY_MARKER}}),
    "another record type": encode({"entity": {"CONTACT_ID": 5, "FIRST_NAME": BODY_MARKER}}),
}


@pytest.mark.parametrize("body", INSIGHTLY_BAD_BODIES.values(), ids=INSIGHTLY_BAD_BODIES.keys())
def test_an_insightly_body_of_the_wrong_shape_is_a_400_with_nothing_queued(
    insightly_hooks: None, client: Client, logs: Callable[..., None], body: bytes
) -> None:
    refused(post_insightly(client, body), 400)
    logs()


# -- methods and endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_anything_but_post_is_a_405(
    hubspot_hooks: None, client: Client, logs: Callable[..., None], method: str
) -> None:
    refused(getattr(client, method)(HUBSPOT_URL), 405)
    logs()


def test_the_endpoint_of_the_other_crm_is_a_404(
    configure: Callable[..., None], client: Client, logs: Callable[..., None]
) -> None:
    every_credential = {**HUBSPOT_SETTINGS["WEBHOOK_AUTH"], **INSIGHTLY_SETTINGS["WEBHOOK_AUTH"]}
    configure(**{**HUBSPOT_SETTINGS, "WEBHOOK_AUTH": every_credential})
    refused(post_insightly(client, {"entity": {"LEAD_ID": 5}}), 404)

    configure(**{**INSIGHTLY_SETTINGS, "WEBHOOK_AUTH": every_credential})
    refused(post_hubspot(client, BODY), 404)
    logs()


def test_with_a_backend_of_neither_crm_both_endpoints_are_404(
    configure: Callable[..., None], client: Client
) -> None:
    configure(BACKEND="crmify.backends.locmem.LocmemBackend", TASK_BACKEND="dummy")

    refused(post_hubspot(client, BODY), 404)
    refused(post_insightly(client, {"entity": {"LEAD_ID": 5}}), 404)


def test_the_endpoints_need_no_csrf_token(hubspot_hooks: None, logs: Callable[..., None]) -> None:
    client = Client(enforce_csrf_checks=True)

    assert post_hubspot(client, BODY).status_code == 200
    logs()


def test_a_refusal_is_logged_with_its_reason_and_the_senders_address(
    hubspot_hooks: None, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crmify")
    body = encode(BODY)

    post_hubspot(client, body, v3_headers(body, secret=OTHER_SECRET), REMOTE_ADDR="203.0.113.9")

    [record] = [r for r in caplog.records if r.name == "crmify"]
    assert "wrong v3 signature" in record.getMessage()
    assert "203.0.113.9" in record.getMessage()
    assert json.dumps(BODY)[:20] not in record.getMessage()
