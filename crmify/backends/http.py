"""HTTP plumbing shared by crmify's HTTP backends: one pooled session, a timeout on every call, pacing by
the shared rate limiter, the quota stop, the ledger record, and readable, classified errors.

Provider backends (``insightly.py``) subclass :class:`HttpBackend` and call :meth:`HttpBackend.request`;
they never touch ``requests`` themselves.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from django.core import checks
from django.core.cache import caches

from crmify import __version__
from crmify.exceptions import (
    PermanentBackendError,
    QuotaExhausted,
    TransientBackendError,
)
from crmify.ratelimit import (
    DEFAULT_QUOTA_WINDOW,
    QuotaState,
    QuotaTracker,
    SharedRateLimiter,
    current_share,
    quota_message,
)
from crmify.secrets import redact

from .base import BaseBackend, CallRecord, record_call

#: How much of a body the ledger keeps.
SUMMARY_LENGTH = 1000
#: When the CRM says the quota is used up but not for how long, look again after this many seconds.
DEFAULT_QUOTA_WAIT = 3600

PERMANENT_STATUSES = {400, 401, 403, 404, 405, 409, 410, 413, 422}


def int_header(response: requests.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def retry_after_header(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from APIs; fall back to our own backoff


def quota_exhausted(until: datetime, status_code: int | None = None) -> QuotaExhausted:
    """The error of a used-up quota, raised before a call (no status) or made from a 429 answer."""
    return QuotaExhausted(
        quota_message(until),
        resets_at=until,
        status_code=status_code,
    )


def network_reason(exc: requests.RequestException) -> str:
    """Why a request got no answer, in the network's words ("connection refused", "name or service not
    known"), else the exception's class: what the admin's outage banner quotes."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found[-1].strip().rstrip(".").lower() if found else type(exc).__name__


def error_message(response: requests.Response) -> str:
    """The CRM's own words from an error answer: a JSON ``Message``, an HTML page's title, or the text."""
    text = response.text or ""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, Mapping):
        for key in ("Message", "message", "error_description", "error", "detail"):
            if body.get(key):
                return str(body[key])[:300]
    if "<html" in text[:500].lower():
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        words = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        return "The CRM answered with an HTML page: " + " ".join(html.unescape(words).split())[:200]
    return " ".join(text.split())[:300] or (response.reason or "no message")


class HttpBackend(BaseBackend):
    """A backend that talks HTTP/JSON. Subclasses set :attr:`name` and build URLs from :attr:`base_url`."""

    name = "http"
    default_timeout = 15.0
    default_rate = 10.0
    #: Calls that may go out at once after a quiet moment: a new lead's lookup and its create.
    default_burst = 2

    def __init__(
        self, options: Mapping[str, Any] | None = None, auth: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(options, auth)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"django-crmify/{__version__}"
        self.session.headers["Accept"] = "application/json"
        self.timeout = float(self.options.get("TIMEOUT", self.default_timeout))
        #: The cache shared by every worker (``RATE_LIMIT_CACHE``): pace, quota, and subclasses' own state.
        self.cache = caches[str(self.options.get("RATE_LIMIT_CACHE", "default"))]
        burst = int(self.options.get("BURST", self.default_burst))
        self.limiter = SharedRateLimiter(
            self.name, self.requests_per_second(), self.cache, burst=burst
        )
        window = float(self.options.get("QUOTA_WINDOW_SECONDS") or DEFAULT_QUOTA_WINDOW)
        self.quota = QuotaTracker(self.name, self.cache, window)

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    @property
    def crm_name(self) -> str:
        """:attr:`name` (what the shared pace and quota are kept under) and :attr:`base_url`: two
        accounts, or a sandbox beside the real CRM, are two CRMs."""
        return f"{self.name}:{self.base_url}"

    def health(self) -> QuotaState:
        return self.quota.state()

    def daily_quota(self) -> int | None:
        """``BACKEND_OPTIONS['DAILY_QUOTA']``: the plan's limit, before the CRM reports it."""
        value = self.options.get("DAILY_QUOTA")
        return int(value) if value else None

    def requests_per_second(self) -> float:
        """``BACKEND_OPTIONS['REQUESTS_PER_SECOND']``, else :attr:`default_rate`: the shared pace."""
        return float(self.options.get("REQUESTS_PER_SECOND") or self.default_rate)

    def check(self) -> list[checks.CheckMessage]:
        """The shared cache's check: a per-process cache cannot pace workers in other processes."""
        backend = self.cache.__class__.__name__
        if backend in {"LocMemCache", "DummyCache", "FileBasedCache"}:
            return [
                checks.Warning(
                    f"The rate-limit cache is a {backend}: workers in different processes do not share the pace.",
                    hint="Point BACKEND_OPTIONS['RATE_LIMIT_CACHE'] at a Redis, Memcached or database cache.",
                    id="crmify.W051",
                )
            ]
        return []

    def scrub(self, text: str) -> str:
        """``text`` without the credentials: for everything recorded or raised."""
        return redact(text, self.auth.values())

    def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> requests.Response:
        """Send one request and return a 2xx answer; raise a classified ``BackendError`` otherwise.

        Waits for a rate-limit slot first and refuses to call at all while the daily quota is used up.
        """
        state = self.quota.state()
        if state.exhausted and state.exhausted_until is not None:
            raise quota_exhausted(state.exhausted_until)
        self.limiter.acquire()
        url = self.base_url.rstrip("/") + "/" + path.lstrip("/")
        request_summary = self.scrub(
            f"{method} /{path.lstrip('/')}"
            + (f"?{'&'.join(f'{k}={v}' for k, v in params.items())}" if params else "")
            + (
                f" {json.dumps(body, ensure_ascii=False, default=str)}"[:SUMMARY_LENGTH]
                if body is not None
                else ""
            )
        )
        started = time.monotonic()
        try:
            response = self.session.request(
                method, url, params=params, json=body, timeout=self.timeout
            )
        except requests.Timeout as exc:
            self._record(
                operation,
                started,
                request_summary,
                error=exc,
                message=f"No answer within {self.timeout:g} s.",
            )
            raise TransientBackendError(
                f"The CRM did not answer within {self.timeout:g} s."
            ) from None
        except requests.RequestException as exc:
            message = f"Could not reach the CRM: {network_reason(exc)}."
            self._record(operation, started, request_summary, error=exc, message=message)
            raise TransientBackendError(message) from None
        self.quota.observe(*self.quota_headers(response), before=state)
        if response.status_code != 429:  # a refused call spends no quota
            self.quota.count(current_share())
        error = None if response.ok else self.error_for(response)
        self._record(operation, started, request_summary, response=response, error=error)
        if error is not None:
            raise error
        return response

    def request_unless_gone(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> requests.Response | None:
        """:meth:`request`, with None instead of the error when the CRM answers 404: a record that is
        not there (a delete of a deleted record, a fetch or lookup that finds nothing)."""
        try:
            return self.request(operation, method, path, params=params)
        except PermanentBackendError as exc:
            if exc.status_code == 404:
                return None
            raise

    def quota_headers(self, response: requests.Response) -> tuple[int | None, int | None]:
        """The daily quota's limit and what is left of it, as ``response``'s headers tell them (each
        None when absent): ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` unless a CRM names
        them otherwise. Read after every answer, into the quota the admin's banner shows."""
        return int_header(response, "X-RateLimit-Limit"), int_header(
            response, "X-RateLimit-Remaining"
        )

    def error_for(
        self, response: requests.Response
    ) -> PermanentBackendError | TransientBackendError:
        """Classify an error answer; subclasses refine the wording."""
        status = response.status_code
        message = self.scrub(error_message(response))
        text = self.scrub(response.text[:SUMMARY_LENGTH])
        if status == 401:
            self.quota.mark_auth_failed()
            return PermanentBackendError(
                f"The CRM rejected the API key: {message} Check CRMIFY_BACKEND_AUTH_API_KEY.",
                status_code=status,
                response_text=text,
            )
        if status == 429:
            retry_after = retry_after_header(response)
            if int_header(response, "X-RateLimit-Remaining") == 0:
                until = self.quota.exhaust(retry_after or DEFAULT_QUOTA_WAIT)
                return quota_exhausted(until, status)
            return TransientBackendError(
                f"Rate limited by the CRM: {message}",
                status_code=status,
                response_text=text,
                retry_after=retry_after,
            )
        if status in PERMANENT_STATUSES:
            return PermanentBackendError(message, status_code=status, response_text=text)
        return TransientBackendError(
            message,
            status_code=status,
            response_text=text,
            retry_after=retry_after_header(response),
        )

    def _record(
        self,
        operation: str,
        started: float,
        request_summary: str,
        *,
        response: requests.Response | None = None,
        error: BaseException | None = None,
        message: str = "",
    ) -> None:
        outcome = "ok"
        if error is not None:
            outcome = "permanent" if isinstance(error, PermanentBackendError) else "transient"
        record_call(
            CallRecord(
                operation,
                outcome=outcome,
                http_status=response.status_code if response is not None else None,
                duration_ms=int((time.monotonic() - started) * 1000),
                error=self.scrub(message or (str(error) if error else "")),
                request_summary=request_summary,
                response_summary=self.scrub((response.text or "")[:SUMMARY_LENGTH])
                if response is not None
                else "",
            )
        )

    @staticmethod
    def json_of(response: requests.Response, what: str) -> Any:
        """The JSON body of a 2xx answer; a readable transient error if it is not JSON."""
        if not response.content.strip():
            raise TransientBackendError(
                f"The CRM's answer to {what} was empty.",
                status_code=response.status_code,
            )
        try:
            return response.json()
        # RecursionError: JSON nested deeper than Python's parser goes (a hostile or broken answer).
        except (ValueError, RecursionError):
            raise TransientBackendError(
                f"The CRM's answer to {what} was not JSON: {error_message(response)}",
                status_code=response.status_code,
                response_text=response.text[:SUMMARY_LENGTH],
            ) from None
