"""Plain request/response values passed between the wire handler and the routers.

``handler.RequestHandler`` parses the socket into a ``Request``, ``SandboxServer.dispatch``
turns it into a ``Response``, and the handler writes (or, for faults, withholds) it. Keeping
HTTP parsing out of ``api``/``control`` lets them be plain functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request. ``query`` keys are lower-cased (ASP.NET binds them case-blind)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class Response:
    """What to send back.

    ``drop`` closes the connection without a byte; ``delay`` holds the finished response
    back (the create-timeout fault: the work is done, the client just never hears).
    """

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON body (compact, UTF-8, non-ASCII kept readable)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status, body, JSON_TYPE, dict(headers or {}))


def message(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """An error in the ASP.NET shape Insightly is reported to use: ``{"Message": "..."}``."""
    return json_response(status, {"Message": text}, headers)


def empty(status: int) -> Response:
    """No body at all (``DELETE`` answers 202 like this)."""
    return Response(status, b"", None)


_HTML_503 = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your "
    b"request. Please try again later.</p></body></html>"
)


def proxy_unavailable() -> Response:
    """A 503 as an HTML page from a proxy in front of the CRM (an injected fault of every sandbox)."""
    return Response(503, _HTML_503, "text/html; charset=utf-8")
