"""``BaseSandboxServer``: what every CRM sandbox shares, whatever API it speaks.

The Insightly sandbox (``server.SandboxServer``) and the HubSpot one
(``hubspot.server.HubSpotSandbox``) subclass it and fill a few hooks: where their API lives, how a
request is authorised, how a refusal, a throttle and an injected error look in their dialect, which
limit gate and account they have, what a salesperson can do to a lead, and how their webhooks look.
The lifecycle (bind at construction, serve from a thread or the foreground, stop cutting open
connections and the webhook sender), the faults and their dice, the daily quota, the counters, the
webhook sender and the ``/_sandbox/`` control API live here once.

A subclass's store reports each write to :meth:`BaseSandboxServer.report_change`, which hands it to
the webhook sender (``webhooks.WebhookSender``): the salesperson's changes always, the API's while
``webhooks_for_api_changes`` is on.

``dispatch`` is called by the wire handler for every request and decides, in order, for API calls:

1. injected latency, then an injected dropped connection (the network fails first);
2. authentication (401s consume neither tokens nor quota);
3. the provider's short-interval limit (429 "rate");
4. an injected 429 burst (429 "fault");
5. the daily quota (429 "quota"); a request passing here is counted, whatever its outcome;
6. an injected 500/503, else the real handler; a successful create may then be held back
   ``create_timeout_delay`` seconds (the record exists; the client times out).

``/_sandbox/`` calls go to ``control`` untouched by any of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self

from .control import ControlError, handle_control
from .faults import FaultDice, Faults
from .handler import SandboxHTTPServer
from .messages import Request, Response, message
from .ratelimit import DailyQuota, QuotaReading
from .schema import JsonDict
from .stats import Stats, ThrottleKind
from .webhooks import WebhookConfig, WebhookFormat, WebhookSender

CONTROL_PREFIX: Final = "/_sandbox/"


class RateGate(Protocol):
    """A short-interval limit (a token bucket, a rolling window): may this request pass?"""

    def try_take(self) -> bool: ...


@dataclass(frozen=True)
class ApiRoute:
    """A resolved API request: the stats template, whether it creates a record (for the
    create-timeout fault), and the call that answers it once limits and faults let it through."""

    template: str
    handle: Callable[[Request], Response]
    is_create: bool = False


class BaseSandboxServer:
    """A CRM look-alike on ``host:port`` (port 0 picks a free one); subclasses speak one API.

    The socket is bound at construction, so ``url`` is known before ``start()``. A stopped server
    cannot be started again; build a new one (with the same state file to keep the records). Usable
    as a context manager, which starts and stops it. ``webhooks`` are the webhook settings it starts
    with (and goes back to on ``reset``); none sends no webhooks until configured.
    """

    #: The path every API call starts with (``"/v3.1/"``, ``"/crm/"``); others answer 404.
    api_prefix: str = "/"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        faults: Faults,
        webhooks: WebhookConfig | None = None,
        log_requests: bool = False,
    ) -> None:
        self.log_requests = log_requests
        self.webhooks = WebhookSender(self.webhook_format(), webhooks)
        self.default_faults = faults
        self._faults = faults
        self._config_lock = threading.Lock()
        self._dice = FaultDice(faults.seed)
        self._gate = self.rate_gate(faults)
        self._quota = DailyQuota(faults.daily_quota, faults.quota_window_seconds)
        self._stats = Stats()
        self._stopping = threading.Event()
        self._serving = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._httpd = SandboxHTTPServer((host, port), self)

    # --- hooks of a provider -----------------------------------------------------------------

    def rate_gate(self, faults: Faults) -> RateGate:
        """The short-interval limit for ``faults`` (rebuilt when its settings change)."""
        raise NotImplementedError

    def route(self, request: Request, subpath: str) -> ApiRoute:
        """Resolve an API call; ``subpath`` is what follows :attr:`api_prefix`."""
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def unauthorized(self, request: Request) -> Response:
        """The provider's 401 answer."""
        raise NotImplementedError

    def throttled(
        self, kind: ThrottleKind, retry_after: int, reading: QuotaReading | None
    ) -> Response:
        """The provider's 429 answer for ``kind``; ``reading`` is the quota's when it caused it."""
        raise NotImplementedError

    def injected_error(self, status: int) -> Response:
        """An injected 500 or 503 as the provider (or a proxy in front of it) answers it."""
        raise NotImplementedError

    def decorate(self, response: Response, reading: QuotaReading) -> None:
        """Add the provider's rate-limit headers to every API answer."""

    def clear_account(self) -> None:
        """Forget the account's records (``reset``)."""
        raise NotImplementedError

    def leads(self) -> list[JsonDict]:
        """Every record, for ``GET /_sandbox/leads`` and tests."""
        raise NotImplementedError

    def banner(self) -> list[str]:
        """What the CLI prints first: the URL and the credentials to configure."""
        raise NotImplementedError

    def webhook_format(self) -> WebhookFormat:
        """How this CRM's webhooks look and are authenticated (called once, at construction)."""
        raise NotImplementedError

    def salesperson_edit(
        self, lead_id: str, fields: Mapping[str, Any], status: str | None
    ) -> JsonDict:
        """A salesperson edits a lead (``POST /_sandbox/leads/<id>/edit``): ``fields`` in the CRM's
        names, ``status`` a status by name. Answers the lead; raises ``ControlError`` (400, 404)."""
        raise NotImplementedError

    def salesperson_delete(self, lead_id: str) -> None:
        """A salesperson deletes a lead (``DELETE /_sandbox/leads/<id>``); ``ControlError`` 404."""
        raise NotImplementedError

    def salesperson_convert(self, lead_id: str) -> JsonDict:
        """A salesperson converts a lead, where the CRM has conversion."""
        raise ControlError(404, f"{self.webhooks.format.crm} has no lead conversion.")

    def salesperson_merge(self, lead_id: str, into: str) -> JsonDict:
        """A salesperson merges the lead into ``into``, where the CRM has merging."""
        raise ControlError(404, f"{self.webhooks.format.crm} leads cannot be merged.")

    # --- webhooks (also reached over HTTP through control.py) ---------------------------------

    def report_change(self, items: list[JsonDict], by_api: bool) -> None:
        """Called by the store after a write with its webhook items (HubSpot events, an Insightly
        lead) and whether the CRM's API made it: queues them for the webhook URL, if any."""
        self.webhooks.submit(items, by_api=by_api)

    def configure_webhooks(
        self, config: WebhookConfig | None = None, **changes: Any
    ) -> WebhookConfig:
        """Where and how to send webhooks from now on (see ``webhooks.WebhookConfig``); ValueError
        when a setting is bad or not this CRM's."""
        return self.webhooks.configure(config, **changes)

    def reset_webhooks(self) -> None:
        """Back to the webhook settings the server was built with; queue and log emptied."""
        self.webhooks.reset()

    def webhook_report(self) -> JsonDict:
        """What ``GET /_sandbox/webhooks`` answers: the settings (no secrets), how many deliveries
        are still to be sent, and the log."""
        return {
            "config": self.webhooks.config.to_dict(),
            "pending": self.webhooks.pending(),
            "deliveries": self.webhooks.deliveries(),
        }

    # --- addresses ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        host = str(self._httpd.server_address[0])
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The API base URL clients are given."""
        return f"http://{self.host}:{self.port}{self.api_prefix}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}{CONTROL_PREFIX}"

    # --- faults and inspection (also reached over HTTP through control.py) ---------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults``) and/or change some fields (``changes``).

        Takes effect for the next request. Changing ``requests_per_second`` rebuilds the rate
        gate; changing ``daily_quota`` or ``quota_window_seconds`` starts a fresh quota window.
        A ``seed`` restarts the random sequence, so the same settings replay.
        """
        with self._config_lock:
            new = (faults if faults is not None else self._faults).updated(changes)
            old, self._faults = self._faults, new
            if new.requests_per_second != old.requests_per_second:
                self._gate = self.rate_gate(new)
            if (new.daily_quota, new.quota_window_seconds) != (
                old.daily_quota,
                old.quota_window_seconds,
            ):
                self._quota = DailyQuota(new.daily_quota, new.quota_window_seconds)
            if new.seed is not None or old.seed is not None:
                self._dice.reseed(new.seed)
            return new

    def reset(self) -> None:
        """Forget records, stats, used quota and webhooks queued or logged; refill the gate; webhook
        settings back to the server's first ones. Faults are left as they are."""
        with self._config_lock:
            self.webhooks.reset()
            self.clear_account()
            self._stats.reset()
            self._quota.reset()
            self._gate = self.rate_gate(self._faults)
            self._dice.reseed(self._faults.seed)

    def stats(self) -> dict[str, Any]:
        """Request counts (see ``Stats.snapshot``) plus the quota as the headers report it."""
        reading = self._quota.peek()
        return {
            **self._stats.snapshot(),
            "quota": {"limit": reading.limit, "remaining": reading.remaining},
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve from a daemon thread and return at once."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a sandbox server starts once; build a new one to restart")
        self._serving = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"crmify-sandbox-{self.port}",
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until ``stop()`` (from elsewhere) or Ctrl-C."""
        if self._stopped:
            raise RuntimeError("this sandbox server was stopped")
        self._serving = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def stop(self) -> None:
        """Stop serving, wake held-back answers, cut open connections. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._serving:
            self._httpd.shutdown()  # waits for serve_forever to return
        self._serving = False
        self._httpd.server_close()
        self._httpd.close_connections()
        self.webhooks.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- used by the wire handler ------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def pause(self, seconds: float) -> bool:
        """Sleep in a request thread; True if cut short because the server is stopping."""
        return self._stopping.wait(seconds)

    def dispatch(self, request: Request) -> Response:
        """Answer one parsed request (see the module docstring for the order of checks)."""
        if request.path.startswith(CONTROL_PREFIX):
            return handle_control(self, request, request.path[len(CONTROL_PREFIX) :])
        if request.path.lower().startswith(self.api_prefix.lower()):
            return self._api(request, request.path[len(self.api_prefix) :])
        return self.not_found(request)

    def not_found(self, request: Request) -> Response:
        """The answer outside the API's prefix."""
        return message(
            404, f"No resource at {request.path}; the API lives under {self.api_prefix}."
        )

    def _api(self, request: Request, subpath: str) -> Response:
        faults = self._faults  # one consistent snapshot for the whole request
        route = self.route(request, subpath)
        delay = self._dice.delay(faults)
        if delay > 0:
            self._stats.inject("latency")
            if self.pause(delay):
                return Response(0, drop=True)
        if self._dice.happens(faults.drop_rate):
            self._stats.inject("drop")
            self._stats.record(route.template, "dropped")
            return Response(0, drop=True)
        if not self.authorized(request):
            return self._finish(route, self.unauthorized(request), self._quota.peek())
        if not self._gate.try_take():
            return self._throttle(route, "rate", 1)
        if self._dice.happens(faults.burst_429_rate):
            self._stats.inject("burst_429")
            return self._throttle(route, "fault", 1)
        reading = self._quota.consume()
        if not reading.allowed:
            return self._throttle(route, "quota", reading.retry_after, reading)
        status = self._dice.error_status(faults)
        if status is not None:
            self._stats.inject("error")
            return self._finish(route, self.injected_error(status), reading)
        response = route.handle(request)
        if (
            route.is_create
            and response.status in (200, 201)
            and self._dice.happens(faults.create_timeout_rate)
        ):
            self._stats.inject("create_timeout")
            response.delay = faults.create_timeout_delay
        return self._finish(route, response, reading)

    def _throttle(
        self,
        route: ApiRoute,
        kind: ThrottleKind,
        retry_after: int,
        reading: QuotaReading | None = None,
    ) -> Response:
        response = self.throttled(kind, retry_after, reading)
        return self._finish(route, response, reading or self._quota.peek(), kind)

    def _finish(
        self,
        route: ApiRoute,
        response: Response,
        reading: QuotaReading,
        throttle: ThrottleKind | None = None,
    ) -> Response:
        self.decorate(response, reading)
        self._stats.record(route.template, response.status, throttle)
        return response
