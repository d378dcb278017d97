"""``HubSpotSandbox``: an offline HubSpot CRM (contacts and their properties) for the demo, our tests
and users' tests.

Built by the pytest plugin (``hubspot_sandbox``), ``python -m crmify.sandbox --crm hubspot``, the
``crmify_sandbox --crm hubspot`` command, or a test. The order of checks is the shared one of
``core.BaseSandboxServer``; this module says how HubSpot words each answer: ``Authorization:
Bearer`` (401 INVALID_AUTHENTICATION), the per-10-second rolling limit (429 ``policyName``
TEN_SECONDLY_ROLLING) and the daily one (429 DAILY), and ``X-HubSpot-RateLimit-*`` headers on every
answer. ``Faults.requests_per_second`` is the average: 10 allows 100 calls in any 10 seconds, the
Free/Starter private-app limit.

Webhooks are HubSpot's contact events (``events``), signed with the configured secret (v3 by
default): creation, one propertyChange per changed property, deletion and merge.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from crmify.sandbox.control import ControlError
from crmify.sandbox.core import ApiRoute, BaseSandboxServer, RateGate
from crmify.sandbox.faults import Faults
from crmify.sandbox.messages import Request, Response, proxy_unavailable
from crmify.sandbox.ratelimit import QuotaReading, RollingWindow, TokenBucket
from crmify.sandbox.stats import ThrottleKind
from crmify.sandbox.webhooks import WebhookConfig

from . import events
from .api import Account, resolve
from .contacts import ContactStore, hubspot_now
from .errors import HubSpotError, error_response, rate_limited
from .schema import HubSpotDialect, JsonDict, PropertyDef, standard_properties

DEFAULT_TOKEN: Final = "pat-sandbox-token"
#: HubSpot's rolling interval, in seconds.
INTERVAL_SECONDS: Final = 10
#: A Free/Starter private app: 100 calls per 10 s, 250,000 a day (``shared/hubspot-api.md``).
DEFAULT_FAULTS: Final = Faults(requests_per_second=10.0, daily_quota=250_000)


class HubSpotSandbox(BaseSandboxServer):
    """A HubSpot CRM look-alike on ``host:port`` (port 0 picks a free one). ``url`` is the base URL a
    client is given instead of ``https://api.hubapi.com``; ``token`` is the private-app token."""

    api_prefix = "/crm/"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str = DEFAULT_TOKEN,
        faults: Faults | None = None,
        properties: Sequence[PropertyDef] = (),
        dialect: HubSpotDialect | None = None,
        state_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] = hubspot_now,
        log_requests: bool = False,
        webhooks: WebhookConfig | None = None,
    ) -> None:
        self.token = token
        self.dialect = dialect if dialect is not None else HubSpotDialect()
        self.contacts = ContactStore(
            standard_properties(self.dialect, properties),
            self.dialect,
            state_file=state_file,
            clock=clock,
            on_change=self.report_change,
        )
        self._account = self._new_account()
        self._window = RollingWindow(None, INTERVAL_SECONDS)
        super().__init__(
            host,
            port,
            faults=faults if faults is not None else DEFAULT_FAULTS,
            webhooks=webhooks,
            log_requests=log_requests,
        )

    @property
    def api_key(self) -> str:
        """The token under the name the Insightly sandbox gives its key (shared test helpers)."""
        return self.token

    @property
    def url(self) -> str:
        """The base URL (``BACKEND_OPTIONS['API_URL']``): paths start with ``/crm/v3/``."""
        return f"http://{self.host}:{self.port}"

    def leads(self) -> list[JsonDict]:
        """Every contact with every property it has: what ``GET /_sandbox/leads`` answers."""
        return self.contacts.all_contacts()

    def add_contact(self, properties: JsonDict) -> JsonDict:
        """Seed a contact in-process, validated like ``POST /crm/v3/objects/contacts``."""
        return self.contacts.create({"properties": properties})

    # --- the hooks of core.BaseSandboxServer ----------------------------------------------------

    def banner(self) -> list[str]:
        lines = [
            f"HubSpot CRM sandbox: {self.url}",
            f"Private-app token: {self.token}  (Authorization: Bearer)",
        ]
        if self.contacts.state_file is not None:
            lines.append(f"Contacts kept in: {self.contacts.state_file}")
        return lines

    def webhook_format(self) -> events.HubSpotWebhookFormat:
        return events.HubSpotWebhookFormat()

    def salesperson_edit(
        self, lead_id: str, fields: Mapping[str, Any], status: str | None
    ) -> JsonDict:
        changes = dict(fields)
        if status is not None:
            changes["hs_lead_status"] = self._lead_status_value(status)
        with _as_control_errors():
            return self.contacts.edit(lead_id, changes)

    def salesperson_delete(self, lead_id: str) -> None:
        with _as_control_errors():
            self.contacts.archive(lead_id, source=events.SALESPERSON)

    def salesperson_merge(self, lead_id: str, into: str) -> JsonDict:
        with _as_control_errors():
            return self.contacts.merge(lead_id, into)

    def _lead_status_value(self, status: str) -> str:
        """The hs_lead_status option whose value or label is ``status`` (case ignored)."""
        options = self.contacts.index.by_name["hs_lead_status"].options
        wanted = status.strip().casefold()
        for value, label in options:
            if wanted in (value.casefold(), label.casefold()):
                return value
        known = ", ".join(f"{value} ({label})" for value, label in options)
        raise ControlError(400, f"No hs_lead_status {status!r}; the options are {known}.")

    def _new_account(self) -> Account:
        """What the handlers reach, with a fresh search limit (at construction and on reset)."""
        self._search_gate = TokenBucket(self.dialect.search_requests_per_second)
        return Account(self.contacts, self._search_gate.try_take, self.dialect.batch_max_inputs)

    def clear_account(self) -> None:
        self.contacts.clear()
        self._account = self._new_account()

    def rate_gate(self, faults: Faults) -> RateGate:
        rate = faults.requests_per_second
        limit = None if rate is None else max(1, round(rate * INTERVAL_SECONDS))
        self._window = RollingWindow(limit, INTERVAL_SECONDS)
        return self._window

    def route(self, request: Request, subpath: str) -> ApiRoute:
        return resolve(self._account, request.method, subpath)

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.token.encode()
        )

    def unauthorized(self, request: Request) -> Response:
        if not request.headers.get("authorization"):
            text = (
                "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
            )
        else:
            text = "The access token provided is invalid or has expired."
        return error_response(HubSpotError(401, "INVALID_AUTHENTICATION", text))

    def throttled(
        self, kind: ThrottleKind, retry_after: int, reading: QuotaReading | None
    ) -> Response:
        if kind == "quota":
            response = rate_limited("DAILY", "You have reached your daily limit.")
        else:
            response = rate_limited(
                "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit."
            )
        if self.dialect.retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def injected_error(self, status: int) -> Response:
        if status == 503:
            return proxy_unavailable()
        return error_response(HubSpotError(status, "INTERNAL_ERROR", "internal error"))

    def not_found(self, request: Request) -> Response:
        return error_response(
            HubSpotError(404, "OBJECT_NOT_FOUND", f"No resource at {request.path}.")
        )

    def decorate(self, response: Response, reading: QuotaReading) -> None:
        window = self._window
        response.headers.update(
            {
                "X-HubSpot-RateLimit-Daily": str(reading.limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(reading.remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(INTERVAL_SECONDS * 1000),
                "X-HubSpot-RateLimit-Max": str(
                    window.limit if window.limit is not None else window.remaining()
                ),
                "X-HubSpot-RateLimit-Remaining": str(window.remaining()),
            }
        )


@contextlib.contextmanager
def _as_control_errors() -> Iterator[None]:
    """The store's refusals (400 a bad property, 404 no contact, 409 a twin e-mail) for the control API."""
    try:
        yield
    except HubSpotError as error:
        raise ControlError(error.status, error.message) from None
