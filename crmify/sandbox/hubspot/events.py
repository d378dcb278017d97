"""HubSpot's webhook events for the sandbox's contacts (``shared/hubspot-api.md``, Webhooks).

``contacts.ContactStore`` builds one event per thing a write did (:func:`creation`, one
:func:`property_change` per changed property, :func:`deletion`, :func:`merge`) and hands them to the
server, whose :class:`HubSpotWebhookFormat` stamps the ids once and renders the body on each attempt
for ``crmify.sandbox.webhooks.WebhookSender``. A body is a JSON array of::

    {objectId, eventId, subscriptionId, portalId, appId, occurredAt (ms), subscriptionType,
     attemptNumber (0 on the first attempt), changeSource, propertyName, propertyValue}

with ``propertyName``/``propertyValue`` on property changes only, and ``primaryObjectId`` and
``mergedObjectIds`` on a merge. ``changeSource`` is ``CRM_UI`` for what a salesperson does through the
control API and ``INTEGRATION`` for what a client does through the API.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from .schema import JsonDict

#: What a salesperson's change in HubSpot's own pages reports as ``changeSource``.
SALESPERSON: Final = "CRM_UI"
#: What a change made through the API by an app (crmify) reports.
API: Final = "INTEGRATION"
PORTAL_ID: Final = 62_515_431
APP_ID: Final = 1_160_452
#: One subscription of the sandbox's app per event type, as an app has once it subscribed to each.
SUBSCRIPTION_IDS: Final = {
    "contact.creation": 2_401_001,
    "contact.propertyChange": 2_401_002,
    "contact.deletion": 2_401_003,
    "contact.merge": 2_401_004,
}
#: Events in one request at most when batching (HubSpot's own maximum is not documented).
MAX_BATCH: Final = 100


def occurred_at(moment: datetime) -> int:
    """Milliseconds since the epoch, as ``occurredAt`` carries them."""
    return int(moment.timestamp() * 1000)


def _event(kind: str, contact_id: str, source: str, moment: datetime) -> JsonDict:
    return {
        "objectId": int(contact_id),
        "subscriptionType": kind,
        "occurredAt": occurred_at(moment),
        "changeSource": source,
    }


def creation(contact_id: str, source: str, moment: datetime) -> JsonDict:
    return _event("contact.creation", contact_id, source, moment)


def property_change(
    contact_id: str, name: str, value: str, source: str, moment: datetime
) -> JsonDict:
    """One changed property; a cleared one reports ``""``."""
    return {
        **_event("contact.propertyChange", contact_id, source, moment),
        "propertyName": name,
        "propertyValue": value,
    }


def deletion(contact_id: str, source: str, moment: datetime) -> JsonDict:
    return _event("contact.deletion", contact_id, source, moment)


def merge(primary_id: str, merged_ids: Sequence[str], source: str, moment: datetime) -> JsonDict:
    """The merge of ``merged_ids`` into ``primary_id``; its ``objectId`` is the primary's."""
    return {
        **_event("contact.merge", primary_id, source, moment),
        "primaryObjectId": int(primary_id),
        "mergedObjectIds": [int(one) for one in merged_ids],
    }


class HubSpotWebhookFormat:
    """HubSpot's side of ``WebhookSender``: signed bodies of up to :data:`MAX_BATCH` events."""

    crm = "HubSpot"
    signs = True
    basic_auth = False
    max_batch = MAX_BATCH

    def __init__(self) -> None:
        self._event_ids = itertools.count(1)
        self._lock = threading.Lock()

    def prepare(self, items: Sequence[JsonDict]) -> list[JsonDict]:
        with self._lock:
            return [
                {
                    "eventId": next(self._event_ids),
                    "subscriptionId": SUBSCRIPTION_IDS[item["subscriptionType"]],
                    "portalId": PORTAL_ID,
                    "appId": APP_ID,
                    **item,
                }
                for item in items
            ]

    def body(self, items: Sequence[JsonDict], attempt: int) -> bytes:
        return json.dumps([{**item, "attemptNumber": attempt - 1} for item in items]).encode()
