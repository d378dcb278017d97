"""Webhook deliveries as HubSpot and Insightly send them, for the webhook tests.

Signatures are computed here from HubSpot's documented formulas, independently of ``crmify.webhook_auth``,
so a mistake there cannot hide in both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from crmify.compat import task_backends

HUBSPOT_URL = "/crm/webhooks/hubspot/"
INSIGHTLY_URL = "/crm/webhooks/insightly/"

#: Distinctive, so a hit in a log is never a coincidence.
SECRET = "crmify-Hook-Secret-3b9e71d0"
USERNAME = "crmify-hook-user-5a2c"
PASSWORD = "crmify-Hook-Pass-c48f09e6"

HUBSPOT_SETTINGS: dict[str, Any] = {
    "BACKEND": "crmify.backends.hubspot.HubSpotBackend",
    "TASK_BACKEND": "dummy",
    "WEBHOOK_AUTH": {"SECRET": SECRET},
}
INSIGHTLY_SETTINGS: dict[str, Any] = {
    "BACKEND": "crmify.backends.insightly.InsightlyBackend",
    "TASK_BACKEND": "dummy",
    "WEBHOOK_AUTH": {"USERNAME": USERNAME, "PASSWORD": PASSWORD},
}


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(body: bytes) -> str:
    """The body as the documented formulas read it (a UTF-8 string); bytes that are not UTF-8 (a test's
    bad body) survive the round trip unchanged."""
    return body.decode("utf-8", "surrogateescape")


def _utf8(source: str) -> bytes:
    return source.encode("utf-8", "surrogateescape")


def v3_signature(secret: str, uri: str, body: bytes, timestamp: str, method: str = "POST") -> str:
    source = _utf8(f"{method}{uri}{_text(body)}{timestamp}")
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def v2_signature(secret: str, uri: str, body: bytes, method: str = "POST") -> str:
    return hashlib.sha256(_utf8(f"{secret}{method}{uri}{_text(body)}")).hexdigest()


def v1_signature(secret: str, body: bytes) -> str:
    return hashlib.sha256(_utf8(f"{secret}{_text(body)}")).hexdigest()


def hubspot_event(
    subscription: str = "contact.propertyChange", object_id: int = 101, **more: Any
) -> dict[str, Any]:
    """One event of a HubSpot webhook body, as the documented payload has it."""
    return {
        "eventId": 1,
        "subscriptionId": 2,
        "portalId": 3,
        "appId": 4,
        "occurredAt": 1767225600000,  # 2026-01-01T00:00:00Z
        "subscriptionType": subscription,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM",
        "propertyName": "hs_lead_status",
        "propertyValue": "CONNECTED",
        **more,
    }


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def v3_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    uri: str = "http://testserver" + HUBSPOT_URL,
    timestamp: int | None = None,
) -> dict[str, str]:
    stamp = str(now_ms() if timestamp is None else timestamp)
    return {
        "X-HubSpot-Signature-v3": v3_signature(secret, uri, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }


def post_hubspot(
    client: Client, body: Any, headers: dict[str, str] | None = None, **extra: Any
) -> Any:
    """POST ``body`` (JSON-encoded unless bytes) to the HubSpot endpoint, v3-signed unless ``headers``."""
    data = encode(body)
    return client.post(
        HUBSPOT_URL,
        data=data,
        content_type="application/json",
        headers=v3_headers(data) if headers is None else headers,
        **extra,
    )


def basic(username: str = USERNAME, password: str = PASSWORD) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }


def post_insightly(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    """POST ``body`` to the Insightly endpoint with the right Basic credentials unless ``headers``."""
    return client.post(
        INSIGHTLY_URL,
        data=encode(body),
        content_type="application/json",
        headers=basic() if headers is None else headers,
    )


def queued_events() -> list[list[dict[str, Any]]]:
    """The events of every ``apply_webhook_task`` the dummy Tasks backend recorded, in order."""
    results = task_backends["dummy"].results
    return [r.args[0] for r in results if r.task.name == "apply_webhook_task"]


# -- fixtures (imported by the webhook test modules) -----------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_webhooks() -> Iterator[None]:
    """No delivery remembered from another test (the replay memory is in the cache); no task recorded."""
    cache.clear()
    task_backends["dummy"].clear()
    yield
    task_backends["dummy"].clear()


@pytest.fixture
def hubspot_hooks(configure: Callable[..., None]) -> None:
    """HubSpot is the CRM; its app secret is configured."""
    configure(**HUBSPOT_SETTINGS)


@pytest.fixture
def insightly_hooks(configure: Callable[..., None]) -> None:
    """Insightly is the CRM; its webhook's Basic credentials are configured."""
    configure(**INSIGHTLY_SETTINGS)
