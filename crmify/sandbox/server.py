"""``SandboxServer``: an offline Insightly v3.1 for the demo, our tests and users' tests.

Built by the pytest plugin, the ``python -m crmify.sandbox`` CLI, the ``crmify_sandbox``
management command, or directly by a test. The order of checks for every ``/v3.1/`` call (faults,
auth, the per-second token bucket, bursts, the daily quota, errors, the handler) is the shared one
of ``core.BaseSandboxServer``; this module says how Insightly words each answer: 401 with a Basic
challenge, 429 with ``Retry-After`` and ``{"Message": ...}``, ``X-RateLimit-Limit`` and
``X-RateLimit-Remaining`` on every answer, and a 503 as a proxy's HTML page.

Insightly's own order of these checks is unknown; this one keeps 429s and 401s free, as the
brief for the sandbox asks.

Webhooks are Insightly's workflow webhook "on create and every edit": one POST per created or edited
lead, ``{"entity": {FIELD: value, ...}}`` with the lead's fields as the API reads them but dates as
``/Date(<ms>+0000)/``, and Basic credentials when a username is set. A delete sends none.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from .api import resolve
from .control import ControlError
from .core import ApiRoute, BaseSandboxServer, RateGate
from .dates import format_webhook_date, utc_now
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
from .state import LeadNotFound, SandboxState
from .stats import ThrottleKind
from .validation import ValidationError
from .webhooks import WebhookConfig

API_PREFIX: Final = "/v3.1/"
DEFAULT_API_KEY: Final = "sandbox-key"
_THROTTLE_TEXT: Final[dict[ThrottleKind, str]] = {
    "rate": "API rate limit exceeded: too many requests per second.",
    "fault": "API rate limit exceeded.",
}
#: The lead's date fields, which a workflow webhook writes as ``/Date(ms+offset)/``.
_DATE_FIELDS: Final = (
    "DATE_CREATED_UTC",
    "DATE_UPDATED_UTC",
    "CONVERTED_DATE_UTC",
    "LAST_ACTIVITY_DATE_UTC",
    "NEXT_ACTIVITY_DATE_UTC",
)


class InsightlyWebhookFormat:
    """Insightly's side of ``webhooks.WebhookSender``: one lead a request, Basic auth, no signature."""

    crm = "Insightly"
    signs = False
    basic_auth = True
    max_batch = 1

    def prepare(self, items: Sequence[JsonDict]) -> list[JsonDict]:
        return [
            {
                name: format_webhook_date(value) if name in _DATE_FIELDS and value else value
                for name, value in lead.items()
            }
            for lead in items
        ]

    def body(self, items: Sequence[JsonDict], attempt: int) -> bytes:
        (entity,) = items
        return json.dumps({"entity": entity}).encode()


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
        webhooks: WebhookConfig | None = None,
    ) -> None:
        self.api_key = api_key
        self.state = SandboxState(
            lead_statuses=lead_statuses,
            lead_sources=lead_sources,
            custom_fields=custom_fields,
            state_file=state_file,
            clock=clock,
            dialect=dialect,
            on_change=self.report_change,
        )
        super().__init__(
            host,
            port,
            faults=faults if faults is not None else Faults(),
            webhooks=webhooks,
            log_requests=log_requests,
        )

    def leads(self) -> list[JsonDict]:
        """Every lead, ordered by id, with its status and source by name (``LEAD_STATUS``,
        ``LEAD_SOURCE``) beside their ids: what ``GET /_sandbox/leads`` answers."""
        return self.state.readable_leads()

    def add_lead(self, fields: JsonDict) -> JsonDict:
        """Seed a lead in-process, validated like ``POST /Leads`` but free of limits/faults."""
        return self.state.create_lead(fields)

    # --- the hooks of core.BaseSandboxServer ----------------------------------------------------

    def webhook_format(self) -> InsightlyWebhookFormat:
        return InsightlyWebhookFormat()

    def salesperson_edit(
        self, lead_id: str, fields: Mapping[str, Any], status: str | None
    ) -> JsonDict:
        with _as_control_errors():
            changes = dict(fields)
            if status is not None:
                changes["LEAD_STATUS_ID"] = self.state.status_id(status)
            return self.state.readable(self.state.edit_lead(_lead_id(lead_id), changes))

    def salesperson_convert(self, lead_id: str) -> JsonDict:
        with _as_control_errors():
            return self.state.readable(self.state.convert_lead(_lead_id(lead_id)))

    def salesperson_delete(self, lead_id: str) -> None:
        with _as_control_errors():
            self.state.delete_lead(_lead_id(lead_id))

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


def _lead_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ControlError(404, f"No lead {text!r}: Insightly lead ids are numbers.") from None


@contextlib.contextmanager
def _as_control_errors() -> Iterator[None]:
    """The state's refusals as the control API's answers: 400 for a bad edit, 404 for no lead."""
    try:
        yield
    except ValidationError as error:
        raise ControlError(400, str(error)) from None
    except LeadNotFound as error:
        raise ControlError(404, str(error)) from None
