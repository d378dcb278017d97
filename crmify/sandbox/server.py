"""``SandboxServer``: an offline Insightly v3.1 for the demo, our tests and users' tests.

Built by the pytest plugin, the ``python -m crmify.sandbox`` CLI, the ``crmify_sandbox``
management command, or directly by a test. ``dispatch`` is called by the wire handler for every
request and decides, in order, for ``/v3.1/`` calls:

1. injected latency, then an injected dropped connection (the network fails first);
2. authentication (401s consume neither tokens nor quota);
3. the per-second token bucket (429 "rate", ``Retry-After: 1``);
4. an injected 429 burst (429 "fault", ``Retry-After: 1``);
5. the daily quota (429 "quota", ``Retry-After`` = seconds to the window reset); a request
   passing here is counted, whatever its outcome, since it reached the API;
6. an injected 500/503, else the real handler; a successful ``POST /Leads`` may then be held
   back ``create_timeout_delay`` seconds (the lead exists; the client times out).

Insightly's own order of these checks is unknown; this one keeps 429s and 401s free, as the
brief for the sandbox asks. ``/_sandbox/`` calls go to ``control`` untouched by any of it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from .api import Route, resolve
from .control import handle_control
from .dates import utc_now
from .faults import FaultDice, Faults
from .handler import SandboxHTTPServer
from .messages import Request, Response, message
from .ratelimit import DailyQuota, QuotaReading, TokenBucket
from .schema import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_SOURCE_NAMES,
    DEFAULT_STATUS_NAMES,
    CustomFieldDef,
    Dialect,
    JsonDict,
)
from .state import SandboxState
from .stats import Stats, ThrottleKind

API_PREFIX: Final = "/v3.1/"
CONTROL_PREFIX: Final = "/_sandbox/"
DEFAULT_API_KEY: Final = "sandbox-key"
_HTML_503: Final = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your "
    b"request. Please try again later.</p></body></html>"
)


class SandboxServer:
    """An Insightly v3.1 look-alike on ``host:port`` (port 0 picks a free one).

    The socket is bound at construction, so ``url`` is known before ``start()``. A stopped
    server cannot be started again; build a new one (with the same ``state_file`` to keep
    the leads). Usable as a context manager, which starts and stops it.
    """

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
        self.log_requests = log_requests
        self.state = SandboxState(
            lead_statuses=lead_statuses,
            lead_sources=lead_sources,
            custom_fields=custom_fields,
            state_file=state_file,
            clock=clock,
            dialect=dialect,
        )
        self.default_faults = faults if faults is not None else Faults()
        self._faults = self.default_faults
        self._config_lock = threading.Lock()
        self._dice = FaultDice(self._faults.seed)
        self._bucket = TokenBucket(self._faults.requests_per_second)
        self._quota = DailyQuota(self._faults.daily_quota, self._faults.quota_window_seconds)
        self._stats = Stats()
        self._stopping = threading.Event()
        self._serving = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._httpd = SandboxHTTPServer((host, port), self)

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
        """The API base URL clients are given, ending in ``/v3.1/``."""
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}{CONTROL_PREFIX}"

    # --- faults and inspection (also reached over HTTP through control.py) ---------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults``) and/or change some fields (``changes``).

        Takes effect for the next request. Changing ``requests_per_second`` refills the
        bucket; changing ``daily_quota`` or ``quota_window_seconds`` starts a fresh quota
        window. A ``seed`` restarts the random sequence, so the same settings replay.
        """
        with self._config_lock:
            new = (faults if faults is not None else self._faults).updated(changes)
            old, self._faults = self._faults, new
            if new.requests_per_second != old.requests_per_second:
                self._bucket = TokenBucket(new.requests_per_second)
            if (new.daily_quota, new.quota_window_seconds) != (
                old.daily_quota,
                old.quota_window_seconds,
            ):
                self._quota = DailyQuota(new.daily_quota, new.quota_window_seconds)
            if new.seed is not None or old.seed is not None:
                self._dice.reseed(new.seed)
            return new

    def reset(self) -> None:
        """Forget leads, stats and used quota; refill the bucket. Faults are left as they are."""
        with self._config_lock:
            self.state.clear()
            self._stats.reset()
            self._quota.reset()
            self._bucket = TokenBucket(self._faults.requests_per_second)
            self._dice.reseed(self._faults.seed)

    def leads(self) -> list[JsonDict]:
        """Every lead, ordered by id, with its status and source by name (``LEAD_STATUS``,
        ``LEAD_SOURCE``) beside their ids: what ``GET /_sandbox/leads`` answers."""
        return self.state.readable_leads()

    def add_lead(self, fields: JsonDict) -> JsonDict:
        """Seed a lead in-process, validated like ``POST /Leads`` but free of limits/faults."""
        return self.state.create_lead(fields)

    def stats(self) -> dict[str, Any]:
        """Request counts (see ``Stats.snapshot``) plus the quota as the headers report it."""
        reading = self._quota.peek()
        return {
            **self._stats.snapshot(),
            "quota": {"limit": reading.limit, "remaining": reading.remaining},
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Serve from a daemon thread and return at once."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a SandboxServer starts once; build a new one to restart")
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
            raise RuntimeError("this SandboxServer was stopped")
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
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
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
        if request.path.lower().startswith(API_PREFIX):
            return self._api(request, request.path[len(API_PREFIX) :])
        return message(404, f"No resource at {request.path}; the API lives under {API_PREFIX}.")

    def _api(self, request: Request, subpath: str) -> Response:
        faults = self._faults  # one consistent snapshot for the whole request
        route = resolve(request.method, subpath)
        delay = self._dice.delay(faults)
        if delay > 0:
            self._stats.inject("latency")
            if self.pause(delay):
                return Response(0, drop=True)
        if self._dice.happens(faults.drop_rate):
            self._stats.inject("drop")
            self._stats.record(route.template, "dropped")
            return Response(0, drop=True)
        if not self._authorized(request):
            denied = message(401, "Authorization has been denied for this request.")
            denied.headers["WWW-Authenticate"] = 'Basic realm="Insightly"'
            return self._finish(route, denied, self._quota.peek())
        if not self._bucket.try_take():
            return self._throttle(
                route, "rate", 1, "API rate limit exceeded: too many requests per second."
            )
        if self._dice.happens(faults.burst_429_rate):
            self._stats.inject("burst_429")
            return self._throttle(route, "fault", 1, "API rate limit exceeded.")
        reading = self._quota.consume()
        if not reading.allowed:
            return self._throttle(
                route,
                "quota",
                reading.retry_after,
                f"Daily API quota of {reading.limit} requests exhausted; "
                f"it resets in {reading.retry_after} s.",
                reading,
            )
        status = self._dice.error_status(faults)
        if status is not None:
            self._stats.inject("error")
            return self._finish(route, _injected_error(status), reading)
        response = route.handle(self.state, request)
        if (
            route.is_create
            and response.status in (200, 201)
            and self._dice.happens(faults.create_timeout_rate)
        ):
            self._stats.inject("create_timeout")
            response.delay = faults.create_timeout_delay
        return self._finish(route, response, reading)

    def _authorized(self, request: Request) -> bool:
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

    def _throttle(
        self,
        route: Route,
        kind: ThrottleKind,
        retry_after: int,
        text: str,
        reading: QuotaReading | None = None,
    ) -> Response:
        response = message(429, text, {"Retry-After": str(retry_after)})
        return self._finish(route, response, reading or self._quota.peek(), kind)

    def _finish(
        self,
        route: Route,
        response: Response,
        reading: QuotaReading,
        throttle: ThrottleKind | None = None,
    ) -> Response:
        response.headers["X-RateLimit-Limit"] = str(reading.limit)
        response.headers["X-RateLimit-Remaining"] = str(reading.remaining)
        self._stats.record(route.template, response.status, throttle)
        return response


def _injected_error(status: int) -> Response:
    """500 with Insightly's JSON shape, or 503 as an HTML page from a proxy in front of it."""
    if status == 503:
        return Response(503, _HTML_503, "text/html; charset=utf-8")
    return message(status, "An error has occurred.")
