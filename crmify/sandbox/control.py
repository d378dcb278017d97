"""The ``/_sandbox/`` control API: lets another process steer and inspect a running sandbox.

``SandboxServer.dispatch`` sends every ``/_sandbox/...`` request here. These calls need no
credentials, are never rate-limited, never count against the quota and never suffer faults:
they are the test harness's back door, not part of the CRM's API. The sandbox binds to 127.0.0.1
by default, which is what keeps that door private.

    GET  /_sandbox/faults   current Faults as JSON
    PUT  /_sandbox/faults   change some Faults fields (others kept); answers the new Faults
    DELETE /_sandbox/faults back to the faults the server was built with
    POST /_sandbox/reset    forget leads, counters and used quota (faults stay)
    GET  /_sandbox/leads    every lead, unpaged, with LEAD_STATUS and LEAD_SOURCE by name
    GET  /_sandbox/stats    request counts by route and status, 429s by cause, faults injected, quota
    GET  /_sandbox/health   liveness and the API base URL
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from .faults import Faults
from .messages import Request, Response, json_response, message
from .schema import JsonDict


class Controllable(Protocol):
    """What the control API needs from the server (``SandboxServer`` provides it)."""

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


def handle_control(target: Controllable, request: Request, subpath: str) -> Response:
    """Answer one control request; ``subpath`` is what follows ``/_sandbox/``."""
    route = (request.method, subpath.strip("/").lower())
    if route == ("GET", "faults"):
        return json_response(200, target.faults.to_dict())
    if route == ("PUT", "faults"):
        return _put_faults(target, request)
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
    return message(404, f"No sandbox control endpoint {request.method} {request.path}.")


def _put_faults(target: Controllable, request: Request) -> Response:
    try:
        changes = json.loads(request.body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return message(400, f"The body is not valid JSON: {error}.")
    if not isinstance(changes, Mapping):
        return message(400, "The body must be a JSON object of Faults fields.")
    try:
        faults = target.set_faults(**changes)
    except ValueError as error:
        return message(400, str(error))
    return json_response(200, faults.to_dict())
