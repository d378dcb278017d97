"""What an inbound webhook says, in crmify's terms: a short list of :class:`WebhookEvent` s.

Called by the views in :mod:`crmify.webhooks` once the sender is verified: :func:`hubspot_events` and
:func:`insightly_events` read a parsed JSON body and return the events, or raise :class:`MalformedBody`
(the view answers 400 and nothing is queued). The events travel to the task worker as the task's JSON
argument (``crmify.webhook_worker.apply_webhook_task``), which turns them into ``CrmChange`` s with
:func:`latest_by_id`. A body is a hint, not the truth: a changed record is read back from the CRM.

HubSpot posts a JSON array of events: ``contact.creation``, ``.propertyChange`` and ``.restore`` are
"changed"; ``contact.deletion`` and ``.privacyDeletion`` "deleted"; ``contact.merge`` "merged" (each of
``mergedObjectIds`` into ``primaryObjectId``); any other subscription type (associations, other objects)
is ignored. Insightly's workflow posts ``{"entity": {...the record's fields...}}``: a lead (``LEAD_ID``)
is "changed"; a record without ``LEAD_ID`` (a workflow on contacts or organisations pointed here by
mistake) is a malformed body, so the workflow's log shows the mistake.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

#: HubSpot subscription types, by what they mean for a lead.
HUBSPOT_KINDS: dict[str, Literal["changed", "deleted", "merged"]] = {
    "contact.creation": "changed",
    "contact.propertyChange": "changed",
    "contact.restore": "changed",
    "contact.deletion": "deleted",
    "contact.privacyDeletion": "deleted",
    "contact.merge": "merged",
}


class WebhookEvent(TypedDict):
    """One thing a webhook said about one CRM record (JSON-ready: it is a task argument).

    ``kind`` "changed" (read the record back), "deleted", or "merged" (into ``survivor``); ``at`` the
    time the CRM gave the event, ISO 8601, or None.
    """

    id: str
    kind: Literal["changed", "deleted", "merged"]
    survivor: str
    at: str | None


class MalformedBody(ValueError):
    """A webhook body that is not the documented shape; the message says what is wrong (never quoting
    the body) and is the 400's text."""


def _record_id(value: Any, what: str) -> str:
    """A CRM record id (a positive integer, or its digits) as text."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise MalformedBody(f"{what} is not a record id")
    return str(int(value))


def _milliseconds(value: Any) -> str | None:
    """HubSpot's ``occurredAt`` (milliseconds since 1970) as ISO 8601, None if absent or unreadable."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat()


def hubspot_events(body: Any) -> list[WebhookEvent]:
    """The events of a HubSpot webhook body (a JSON array of event objects)."""
    if not isinstance(body, list):
        raise MalformedBody("a HubSpot webhook body is a JSON array of events")
    events: list[WebhookEvent] = []
    for number, item in enumerate(body):
        if not isinstance(item, Mapping) or not isinstance(item.get("subscriptionType"), str):
            raise MalformedBody(f"event {number} has no subscriptionType")
        kind = HUBSPOT_KINDS.get(item["subscriptionType"])
        if kind is None:
            continue
        at = _milliseconds(item.get("occurredAt"))
        if kind != "merged":
            record = _record_id(item.get("objectId"), f"event {number}'s objectId")
            events.append(WebhookEvent(id=record, kind=kind, survivor="", at=at))
            continue
        survivor = _record_id(item.get("primaryObjectId"), f"event {number}'s primaryObjectId")
        merged = item.get("mergedObjectIds")
        if not isinstance(merged, list):
            raise MalformedBody(f"event {number} has no mergedObjectIds list")
        for loser in merged:
            record = _record_id(loser, f"event {number}'s mergedObjectIds")
            if record != survivor:
                events.append(WebhookEvent(id=record, kind="merged", survivor=survivor, at=at))
        events.append(WebhookEvent(id=survivor, kind="changed", survivor="", at=at))
    return events


def insightly_events(body: Any) -> list[WebhookEvent]:
    """The event of an Insightly workflow webhook body (``{"entity": {"LEAD_ID": ..., ...}}``)."""
    entity = body.get("entity") if isinstance(body, Mapping) else None
    if not isinstance(entity, Mapping):
        raise MalformedBody('an Insightly webhook body is {"entity": {...}}')
    if "LEAD_ID" not in entity:
        raise MalformedBody("the entity has no LEAD_ID: this endpoint takes workflows on Leads")
    record = _record_id(entity["LEAD_ID"], "LEAD_ID")
    return [WebhookEvent(id=record, kind="changed", survivor="", at=None)]


def latest_by_id(events: Iterable[Mapping[str, Any]]) -> dict[str, WebhookEvent]:
    """The last word on each record: the event with the latest ``at`` (the later one in the list when
    equal or unknown), so a record deleted and then restored in one batch is read back, not deleted."""
    latest: dict[str, WebhookEvent] = {}
    for event in events:
        record = WebhookEvent(
            id=str(event["id"]),
            kind=event["kind"],
            survivor=str(event.get("survivor") or ""),
            at=event.get("at"),
        )
        seen = latest.get(record["id"])
        if seen is None or not (seen["at"] and record["at"] and record["at"] < seen["at"]):
            latest[record["id"]] = record
    return latest


def read_back_ids(latest: Mapping[str, WebhookEvent]) -> list[str]:
    """The records to read from the CRM: those last said to have changed."""
    return [record for record, event in latest.items() if event["kind"] == "changed"]


def events_for(ids: Sequence[str]) -> list[WebhookEvent]:
    """A "changed" event for each of ``ids``: what a task queued again to read them later carries."""
    return [WebhookEvent(id=record, kind="changed", survivor="", at=None) for record in ids]
