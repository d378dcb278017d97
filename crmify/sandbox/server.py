"""``SandboxServer``: an offline Insightly v3.1 for the demo, our tests and users' tests.

Built by the pytest plugin, the ``python -m crmify.sandbox`` CLI, the ``crmify_sandbox``
management command, or directly by a test. The order of checks for every ``/v3.1/`` call (faults,
auth, the per-second token bucket, bursts, the daily quota, errors, the handler) is the shared one
of ``core.BaseSandboxServer``; this module says how Insightly words each answer: 401 with a Basic
challenge, 429 with ``Retry-After`` and ``{"Message": ...}``, ``X-RateLimit-Limit`` and
``X-RateLimit-Remaining`` on every answer, and a 503 as a proxy's HTML page.

Insightly's own order of these checks is unknown; this one keeps 429s and 401s free, as the
brief for the sandbox asks.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

from .api import resolve
from .core import ApiRoute, BaseSandboxServer, RateGate
from .dates import utc_now
from .faults import Faults
from .messages import Request, Response, message, proxy_unavailable
from .ratelimit import QuotaReading, TokenBucket
from .schema import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_SOURCE_NAMES,
    DEFAULT_STATUS_NAMES,
    CustomFieldDef,
    Dialect,
    JsonDict,
)
from .state import SandboxState
from .stats import ThrottleKind

API_PREFIX: Final = "/v3.1/"
DEFAULT_API_KEY: Final = "sandbox-key"
_THROTTLE_TEXT: Final[dict[ThrottleKind, str]] = {
    "rate": "API rate limit exceeded: too many requests per second.",
    "fault": "API rate limit exceeded.",
}


class SandboxServer(BaseSandboxServer):
    """An Insightly v3.1 look-alike on ``host:port`` (port 0 picks a free one); see
    ``core.BaseSandboxServer`` for the lifecycle, faults and control API."""

    api_prefix = API_PREFIX

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = DEFAULT_API_KEY,
        faults: Faults | None = None,
        lead_statuses: Sequence[str] = DEFAULT_STATUS_NAMES,
        lead_sources: Sequence[str] = DEFAULT_SOURCE_NAMES,
        custom_fields: Sequence[CustomFieldDef] = DEFAULT_CUSTOM_FIELDS,
        state_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        log_requests: bool = False,
        dialect: Dialect | None = None,
    ) -> None:
        self.api_key = api_key
        self.state = SandboxState(
            lead_statuses=lead_statuses,
            lead_sources=lead_sources,
            custom_fields=custom_fields,
            state_file=state_file,
            clock=clock,
            dialect=dialect,
        )
        super().__init__(
            host, port, faults=faults if faults is not None else Faults(), log_requests=log_requests
        )

    def leads(self) -> list[JsonDict]:
        """Every lead, ordered by id, with its status and source by name (``LEAD_STATUS``,
        ``LEAD_SOURCE``) beside their ids: what ``GET /_sandbox/leads`` answers."""
        return self.state.readable_leads()

    def add_lead(self, fields: JsonDict) -> JsonDict:
        """Seed a lead in-process, validated like ``POST /Leads`` but free of limits/faults."""
        return self.state.create_lead(fields)

    # --- the hooks of core.BaseSandboxServer ----------------------------------------------------

    def banner(self) -> list[str]:
        lines = [
            f"Insightly v3.1 sandbox: {self.url}",
            f"API key: {self.api_key}  (HTTP Basic user name, empty password)",
        ]
        if self.state.state_file is not None:
            lines.append(f"Leads kept in: {self.state.state_file}")
        return lines

    def clear_account(self) -> None:
        self.state.clear()

    def rate_gate(self, faults: Faults) -> RateGate:
        return TokenBucket(faults.requests_per_second)

    def route(self, request: Request, subpath: str) -> ApiRoute:
        route = resolve(request.method, subpath)
        return ApiRoute(
            route.template, lambda req: route.handle(self.state, req), is_create=route.is_create
        )

    def authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, _password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Only the user name is compared; whether Insightly rejects a non-empty password is
        # unknown, and clients are told to send an empty one anyway.
        return hmac.compare_digest(user.encode(), self.api_key.encode())

    def unauthorized(self, request: Request) -> Response:
        denied = message(401, "Authorization has been denied for this request.")
        denied.headers["WWW-Authenticate"] = 'Basic realm="Insightly"'
        return denied

    def throttled(
        self, kind: ThrottleKind, retry_after: int, reading: QuotaReading | None
    ) -> Response:
        if kind == "quota" and reading is not None:
            text = (
                f"Daily API quota of {reading.limit} requests exhausted; "
                f"it resets in {reading.retry_after} s."
            )
        else:
            text = _THROTTLE_TEXT.get(kind, "API rate limit exceeded.")
        return message(429, text, {"Retry-After": str(retry_after)})

    def injected_error(self, status: int) -> Response:
        """500 with Insightly's JSON shape, or 503 as an HTML page from a proxy in front of it."""
        if status == 503:
            return proxy_unavailable()
        return message(status, "An error has occurred.")

    def decorate(self, response: Response, reading: QuotaReading) -> None:
        response.headers["X-RateLimit-Limit"] = str(reading.limit)
        response.headers["X-RateLimit-Remaining"] = str(reading.remaining)
