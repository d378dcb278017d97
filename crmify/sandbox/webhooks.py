"""The sandboxes' webhook sender: delivers what changed in the CRM to a configured URL, as the CRM would.

One :class:`WebhookSender` per sandbox, built by ``core.BaseSandboxServer`` with the sandbox's
:class:`WebhookFormat` (HubSpot's event array, signed; Insightly's workflow ``{"entity": ...}`` with
Basic auth). A store calls the server after each write, the server calls :meth:`WebhookSender.submit`;
a background thread POSTs each delivery with a short timeout and keeps a log (``GET /_sandbox/webhooks``).

Retries follow HubSpot's documented rule, used for both CRMs (Insightly's is unknown): a connection
failure, a timeout or any status but 2xx and 400, 401, 403, 404, 405 is tried again after
``retry_delays[n - 1]`` seconds (the last delay repeats), up to ``max_attempts`` in all; HubSpot bodies
carry the attempt as ``attemptNumber`` (0 for the first). Each attempt is signed afresh (a new
``X-HubSpot-Request-Timestamp``), so a retry is not refused by a receiver's 5-minute rule.

Signatures (``shared/hubspot-api.md``), one function a version, so a reader can check each against the
documented formula:

- v1: ``X-HubSpot-Signature`` = hex SHA-256(secret + body), ``X-HubSpot-Signature-Version: v1``;
- v2: ``X-HubSpot-Signature`` = hex SHA-256(secret + method + URI + body), version ``v2``;
- v3: ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256(secret, method + URI + body + timestamp) with
  ``X-HubSpot-Request-Timestamp`` (milliseconds). The URI is the full URL posted to, as configured.

:meth:`WebhookSender.stop` ends the thread promptly, cutting a request in flight.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import heapq
import hmac
import http.client
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

from .schema import JsonDict

SignatureVersion = Literal["v3", "v2", "v1"]
SIGNATURE_VERSIONS: Final = ("v3", "v2", "v1")
#: Answers HubSpot does not retry (its documentation); any other non-2xx answer is retried.
FINAL_STATUSES: Final = frozenset({400, 401, 403, 404, 405})
#: How many deliveries ``GET /_sandbox/webhooks`` keeps (the oldest finished ones are forgotten).
LOG_SIZE: Final = 500
USER_AGENT: Final = "crmify-sandbox-webhooks/1.0"


# --- signatures ------------------------------------------------------------------------------------


def sign_v1(secret: str, body: bytes) -> str:
    """HubSpot v1: hex SHA-256 of the secret followed by the body."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """HubSpot v2: hex SHA-256 of secret + method + URI + body."""
    return hashlib.sha256((secret + method + uri).encode() + body).hexdigest()


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot v3: base64 HMAC-SHA256 keyed with the secret over method + URI + body + timestamp."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def signature_headers(
    version: SignatureVersion, secret: str, method: str, uri: str, body: bytes, now_ms: int
) -> dict[str, str]:
    """The headers HubSpot sends for ``version``."""
    if version == "v3":
        timestamp = str(now_ms)
        return {
            "X-HubSpot-Signature-v3": sign_v3(secret, method, uri, body, timestamp),
            "X-HubSpot-Request-Timestamp": timestamp,
        }
    signature = sign_v2(secret, method, uri, body) if version == "v2" else sign_v1(secret, body)
    return {"X-HubSpot-Signature": signature, "X-HubSpot-Signature-Version": version}


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how a sandbox sends its webhooks; ``url=None`` sends none.

    ``secret`` and ``signature_version`` sign HubSpot's; ``username``/``password`` are the Basic
    credentials of Insightly's workflow webhook. ``timeout`` bounds each POST; ``batch`` lets HubSpot
    put several events in one request (otherwise one event a request). ``webhooks_for_api_changes``:
    changes made through the CRM's API (by crmify itself) are sent too, as the real CRMs do.
    """

    url: str | None = None
    secret: str | None = None
    signature_version: SignatureVersion = "v3"
    username: str | None = None
    password: str | None = None
    max_attempts: int = 10
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
    timeout: float = 5.0
    batch: bool = True
    webhooks_for_api_changes: bool = True

    def __post_init__(self) -> None:
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must be an http(s) URL, not {self.url!r}")
        if self.signature_version not in SIGNATURE_VERSIONS:
            raise ValueError(
                f"signature_version must be one of {', '.join(SIGNATURE_VERSIONS)}, "
                f"not {self.signature_version!r}"
            )
        for name in ("secret", "username", "password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text or null")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError("max_attempts must be a whole number, 1 or more")
        if not self.retry_delays or not all(
            isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0
            for delay in self.retry_delays
        ):
            raise ValueError("retry_delays must be a non-empty list of seconds (0 or more)")
        if not isinstance(self.timeout, int | float) or self.timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        for name in ("batch", "webhooks_for_api_changes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")

    def updated(self, changes: Mapping[str, Any]) -> WebhookConfig:
        """A copy with ``changes`` applied (fields left out are kept); ValueError for unknown names
        or bad values. ``PUT /_sandbox/webhooks`` and ``configure_webhooks`` use it."""
        known = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown webhook setting(s): {', '.join(unknown)}")
        values = dict(changes)
        if isinstance(values.get("retry_delays"), list | tuple):
            values["retry_delays"] = tuple(values["retry_delays"])
        return dataclasses.replace(self, **values)

    def to_dict(self) -> JsonDict:
        """The public view (``GET /_sandbox/webhooks``): whether a secret or password is set, never
        their values."""
        public = dataclasses.asdict(self)
        public["retry_delays"] = list(self.retry_delays)
        public["secret"] = "set" if self.secret else None
        public["password"] = "set" if self.password else None
        return public

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(self.retry_delays[min(attempt, len(self.retry_delays)) - 1])


class WebhookFormat(Protocol):
    """How one CRM words its webhooks; the sandbox's server provides it (``webhook_format``)."""

    #: The CRM's name, for error messages.
    crm: str
    #: Whether it signs with a secret (HubSpot) ...
    signs: bool
    #: ... or sends Basic credentials (Insightly's workflow webhook).
    basic_auth: bool
    #: The most items one request carries when ``batch`` is on (1: never batched).
    max_batch: int

    def prepare(self, items: Sequence[JsonDict]) -> list[JsonDict]:
        """The items as they will be sent (ids stamped, dates rendered), once, when submitted."""
        ...

    def body(self, items: Sequence[JsonDict], attempt: int) -> bytes:
        """The request body for ``items`` on attempt number ``attempt`` (1-based)."""
        ...


# --- deliveries ------------------------------------------------------------------------------------

DeliveryState = Literal["queued", "sending", "retrying", "delivered", "failed", "cancelled"]


@dataclass
class Delivery:
    """One request's worth of items and what happened to each attempt to send it."""

    id: int
    items: list[JsonDict]
    state: DeliveryState = "queued"
    attempts: list[JsonDict] = field(default_factory=list)
    retry_at: float | None = None

    def to_dict(self) -> JsonDict:
        last = self.attempts[-1] if self.attempts else {}
        return {
            "id": self.id,
            "state": self.state,
            "items": self.items,
            "attempts": list(self.attempts),
            "last_status": last.get("status"),
            "last_error": last.get("error"),
            "next_attempt_at": _iso(self.retry_at) if self.retry_at else None,
        }


class WebhookSender:
    """Queues what a sandbox's stores report and sends it from one background thread.

    ``submit`` is called by the server under a store's lock: it only queues. The thread starts with
    the first delivery and ends with :meth:`stop`.
    """

    def __init__(self, fmt: WebhookFormat, config: WebhookConfig | None = None) -> None:
        self.format = fmt
        self.default_config = self._checked(config if config is not None else WebhookConfig())
        self._config = self.default_config
        self._cond = threading.Condition()
        self._fresh: deque[Delivery] = deque()
        self._retries: list[tuple[float, int, Delivery]] = []
        self._log: deque[Delivery] = deque()
        self._next_id = 1
        self._generation = 0
        self._in_flight: Delivery | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> WebhookConfig:
        return self._config

    def configure(self, config: WebhookConfig | None = None, **changes: Any) -> WebhookConfig:
        """Replace the configuration (``config``) and/or change some fields; ValueError when bad
        or when it asks for what this CRM does not do (a signature from Insightly, Basic auth
        from HubSpot). Deliveries already queued are sent with the new settings."""
        with self._cond:
            self._config = self._checked((config or self._config).updated(changes))
            return self._config

    def reset(self) -> None:
        """Back to the configuration the sender was built with; forget queued deliveries and the log
        (``POST /_sandbox/reset``, ``DELETE /_sandbox/webhooks``)."""
        with self._cond:
            self._config = self.default_config
            self._fresh.clear()
            self._retries.clear()
            self._log.clear()
            self._generation += 1
            self._cond.notify_all()

    def _checked(self, config: WebhookConfig) -> WebhookConfig:
        crm = self.format.crm
        if config.secret is not None and not self.format.signs:
            raise ValueError(
                f"{crm} does not sign its webhooks: give username and password (Basic auth) instead "
                "of a secret"
            )
        if (config.username, config.password) != (None, None) and not self.format.basic_auth:
            raise ValueError(
                f"{crm} signs its webhooks with a secret; it sends no username or password"
            )
        return config

    # --- queueing ------------------------------------------------------------------------------

    def submit(self, items: Sequence[JsonDict], *, by_api: bool) -> None:
        """Queue ``items`` (one write's events or record) unless no URL is set, the sender is
        stopped, or ``by_api`` and API changes are not sent. With ``batch``, items join the newest
        delivery still queued while it has room."""
        if not items:
            return
        with self._cond:
            config = self._config
            if config.url is None or self._stopping:
                return
            if by_api and not config.webhooks_for_api_changes:
                return
            room = self.format.max_batch if config.batch else 1
            for item in self.format.prepare(items):
                last = self._fresh[-1] if self._fresh else None
                if last is not None and len(last.items) < room:
                    last.items.append(item)
                    continue
                delivery = Delivery(self._next_id, [item])
                self._next_id += 1
                self._fresh.append(delivery)
                self._log.append(delivery)
            self._trim_log()
            self._ensure_thread()
            self._cond.notify_all()

    def deliveries(self) -> list[JsonDict]:
        """Every delivery in the log, oldest first."""
        with self._cond:
            return [delivery.to_dict() for delivery in self._log]

    def pending(self) -> int:
        """Deliveries queued, waiting for a retry or being sent."""
        with self._cond:
            return self._pending_locked()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, retrying or in flight; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending_locked():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _pending_locked(self) -> int:
        return len(self._fresh) + len(self._retries) + (self._in_flight is not None)

    def _trim_log(self) -> None:
        while len(self._log) > LOG_SIZE:
            oldest = self._log[0]
            if oldest.state not in ("delivered", "failed", "cancelled"):
                break
            self._log.popleft()

    # --- lifecycle -----------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, daemon=True, name="crmify-sandbox-webhooks"
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sending: queued deliveries are dropped and a request in flight is cut. Idempotent."""
        with self._cond:
            self._stopping = True
            connection = self._connection
            self._cond.notify_all()
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):  # already closed by the worker
                connection.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the sending thread is alive (it starts with the first delivery)."""
        return self._thread is not None and self._thread.is_alive()

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                delivery = self._next_due()
                if delivery is None:
                    return
                config, generation = self._config, self._generation
                delivery.state = "sending"
                self._in_flight = delivery
            attempt = len(delivery.attempts) + 1
            record = self._attempt(delivery, attempt, config)
            with self._cond:
                self._in_flight = None
                if generation == self._generation:
                    self._settle(delivery, attempt, record, config)
                self._cond.notify_all()

    def _next_due(self) -> Delivery | None:
        """The next delivery to send, waiting for one (lock held); None once stopping."""
        while not self._stopping:
            if self._fresh:
                return self._fresh.popleft()
            now = time.monotonic()
            if self._retries and self._retries[0][0] <= now:
                return heapq.heappop(self._retries)[2]
            self._cond.wait(self._retries[0][0] - now if self._retries else None)
        return None

    def _settle(
        self, delivery: Delivery, attempt: int, record: JsonDict, config: WebhookConfig
    ) -> None:
        delivery.attempts.append(record)
        status = record["status"]
        if record.get("cancelled"):
            delivery.state = "cancelled"
        elif status is not None and 200 <= status < 300:
            delivery.state = "delivered"
        elif status in FINAL_STATUSES or attempt >= config.max_attempts or self._stopping:
            delivery.state = "failed"
        else:
            delay = config.delay_after(attempt)
            delivery.state = "retrying"
            delivery.retry_at = time.time() + delay
            heapq.heappush(self._retries, (time.monotonic() + delay, delivery.id, delivery))
            return
        delivery.retry_at = None

    def _attempt(self, delivery: Delivery, attempt: int, config: WebhookConfig) -> JsonDict:
        """POST the delivery once; what happened, for the log."""
        started = time.time()
        record: JsonDict = {"attempt": attempt, "at": _iso(started), "status": None, "error": None}
        if config.url is None:
            record |= {"error": "webhooks were turned off", "cancelled": True}
            return record
        body = self.format.body(delivery.items, attempt)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self._auth_headers(config, body, started),
        }
        try:
            record["status"] = self._post(config.url, body, headers, config.timeout)
        except (OSError, http.client.HTTPException) as error:
            record["error"] = f"{type(error).__name__}: {error}".rstrip(": ")
        record["seconds"] = round(time.time() - started, 3)
        return record

    def _auth_headers(self, config: WebhookConfig, body: bytes, now: float) -> dict[str, str]:
        assert config.url is not None
        if self.format.signs and config.secret is not None:
            return signature_headers(
                config.signature_version, config.secret, "POST", config.url, body, int(now * 1000)
            )
        if self.format.basic_auth and config.username is not None:
            token = f"{config.username}:{config.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(token).decode()}
        return {}

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        parts = urlsplit(url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
        with self._cond:
            if self._stopping:
                raise ConnectionAbortedError("the sandbox is stopping")
            self._connection = connection
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("POST", target, body, dict(headers))
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            with self._cond:
                self._connection = None
            connection.close()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
