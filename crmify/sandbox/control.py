"""The ``/_sandbox/`` control API: lets another process steer and inspect a running sandbox.

``BaseSandboxServer.dispatch`` sends every ``/_sandbox/...`` request here. These calls need no
credentials, are never rate-limited, never count against the quota and never suffer faults:
they are the test harness's back door, not part of the CRM's API. The sandbox binds to 127.0.0.1
by default, which is what keeps that door private.

    GET  /_sandbox/faults   current Faults as JSON
    PUT  /_sandbox/faults   change some Faults fields (others kept); answers the new Faults
    DELETE /_sandbox/faults back to the faults the server was built with
    POST /_sandbox/reset    forget leads, counters, used quota, queued webhooks and their log; webhook
                            settings back to the ones the server was built with (faults stay)
    GET  /_sandbox/leads    every lead, unpaged (Insightly: LEAD_STATUS and LEAD_SOURCE by name)
    GET  /_sandbox/stats    request counts by route and status, 429s by cause, faults injected, quota
    GET  /_sandbox/health   liveness and the API base URL

What a salesperson does in the CRM's own pages (each answers the lead as ``GET /_sandbox/leads``
shows it, moves its modification time as a UI edit does, and sends the CRM's webhook):

    POST   /_sandbox/leads/<id>/edit     {"fields": {...}} in the CRM's own names (Insightly:
                                         LEAD_STATUS_ID, OWNER_USER_ID, ...; HubSpot: hs_lead_status,
                                         lifecyclestage, ...) and/or {"status": "<name>"}, the status
                                         by name (Insightly: "Disqualified"; HubSpot: an
                                         hs_lead_status value or label, "UNQUALIFIED"/"Unqualified")
    POST   /_sandbox/leads/<id>/convert  Insightly: convert the lead (CONVERTED, CONVERTED_DATE_UTC,
                                         CONVERTED_*_ID, status Converted)
    DELETE /_sandbox/leads/<id>          delete it (HubSpot: archived, contact.deletion; Insightly:
                                         gone, no webhook, as Insightly has no delete event)
    POST   /_sandbox/leads/<id>/merge    HubSpot: {"into": "<primary id>"} merges the lead into the
                                         primary (contact.merge)

The webhooks the sandbox sends (``webhooks.WebhookSender``):

    GET    /_sandbox/webhooks   {"config": settings without secrets, "pending": n, "deliveries":
                                [{id, state, items, attempts: [{attempt, at, status, error,
                                seconds}], last_status, last_error, next_attempt_at}]}
    PUT    /_sandbox/webhooks   change some settings (others kept): url, secret, signature_version
                                ("v3" | "v2" | "v1"), username, password, max_attempts,
                                retry_delays ([seconds, ...]), timeout, batch,
                                webhooks_for_api_changes; answers them (without secrets)
    DELETE /_sandbox/webhooks   back to the settings the server was built with; queue and log emptied

A bad body is a 400 naming the problem; an unknown lead a 404; what the CRM does not have (converting
a HubSpot contact, merging Insightly leads) a 404 saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .faults import Faults
from .messages import Request, Response, json_response, message
from .schema import JsonDict
from .webhooks import WebhookConfig


class ControlError(Exception):
    """A control call that cannot be done: ``status`` and the text of the answer's ``Message``.
    Raised by a sandbox's salesperson hooks."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Controllable(Protocol):
    """What the control API needs from the server (``core.BaseSandboxServer`` provides it)."""

    @property
    def faults(self) -> Faults: ...

    @property
    def url(self) -> str: ...

    @property
    def default_faults(self) -> Faults: ...

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults: ...

    def reset(self) -> None: ...

    def leads(self) -> list[JsonDict]: ...

    def stats(self) -> dict[str, Any]: ...

    def salesperson_edit(
        self, lead_id: str, fields: Mapping[str, Any], status: str | None
    ) -> JsonDict: ...

    def salesperson_convert(self, lead_id: str) -> JsonDict: ...

    def salesperson_delete(self, lead_id: str) -> None: ...

    def salesperson_merge(self, lead_id: str, into: str) -> JsonDict: ...

    def configure_webhooks(
        self, config: WebhookConfig | None = None, **changes: Any
    ) -> WebhookConfig: ...

    def webhook_report(self) -> JsonDict: ...

    def reset_webhooks(self) -> None: ...


def handle_control(target: Controllable, request: Request, subpath: str) -> Response:
    """Answer one control request; ``subpath`` is what follows ``/_sandbox/``."""
    parts = [part for part in subpath.split("/") if part]
    if len(parts) in (2, 3) and parts[0].lower() == "leads":
        return _lead_action(target, request, parts[1], parts[2].lower() if len(parts) == 3 else "")
    route = (request.method, "/".join(parts).lower())
    if route == ("GET", "faults"):
        return json_response(200, target.faults.to_dict())
    if route == ("PUT", "faults"):
        return _put_settings(request, target.set_faults)
    if route == ("DELETE", "faults"):
        return json_response(200, target.set_faults(target.default_faults).to_dict())
    if route == ("POST", "reset"):
        target.reset()
        return json_response(200, {"reset": True})
    if route == ("GET", "leads"):
        return json_response(200, target.leads())
    if route == ("GET", "stats"):
        return json_response(200, target.stats())
    if route == ("GET", "health"):
        return json_response(200, {"status": "ok", "url": target.url})
    if route == ("GET", "webhooks"):
        return json_response(200, target.webhook_report())
    if route == ("PUT", "webhooks"):
        return _put_settings(request, target.configure_webhooks)
    if route == ("DELETE", "webhooks"):
        target.reset_webhooks()
        return json_response(200, target.webhook_report())
    return _no_endpoint(request)


def _no_endpoint(request: Request) -> Response:
    return message(404, f"No sandbox control endpoint {request.method} {request.path}.")


def _lead_action(target: Controllable, request: Request, lead_id: str, action: str) -> Response:
    """The salesperson's ``/_sandbox/leads/<id>[/<action>]`` calls."""
    try:
        if (request.method, action) == ("DELETE", ""):
            target.salesperson_delete(lead_id)
            return json_response(200, {"deleted": lead_id})
        if request.method != "POST" or action not in ("edit", "convert", "merge"):
            return _no_endpoint(request)
        body = _json_object(request)
        if action == "convert":
            return json_response(200, target.salesperson_convert(lead_id))
        if action == "merge":
            into = body.get("into")
            if not isinstance(into, str | int) or isinstance(into, bool) or str(into) == "":
                raise ControlError(400, 'The body must name the primary lead: {"into": "<id>"}.')
            return json_response(200, target.salesperson_merge(lead_id, str(into)))
        fields = body.get("fields", {})
        status = body.get("status")
        unknown = sorted(set(body) - {"fields", "status"})
        if unknown or not isinstance(fields, Mapping) or not isinstance(status, str | None):
            raise ControlError(
                400,
                'The body must be {"fields": {NAME: value, ...}} and/or {"status": "<name>"}'
                + (f"; unknown key(s): {', '.join(unknown)}." if unknown else "."),
            )
        if not fields and status is None:
            raise ControlError(400, "Nothing to edit: give fields and/or a status.")
        return json_response(200, target.salesperson_edit(lead_id, fields, status))
    except ControlError as error:
        return message(error.status, error.text)


def _json_object(request: Request) -> JsonDict:
    try:
        body = json.loads(request.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ControlError(400, f"The body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise ControlError(400, "The body must be a JSON object.")
    return body


def _put_settings(request: Request, apply: Callable[..., Faults | WebhookConfig]) -> Response:
    """``PUT /_sandbox/faults`` and ``PUT /_sandbox/webhooks``: some fields changed, the rest kept."""
    try:
        settings = apply(**_json_object(request))
    except ControlError as error:
        return message(error.status, error.text)
    except (TypeError, ValueError) as error:
        return message(400, str(error))
    return json_response(200, settings.to_dict())
