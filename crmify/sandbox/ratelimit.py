"""The sandboxes' limits: a per-second token bucket (Insightly), a rolling window (HubSpot's ten
seconds), and requests per day (quota).

A sandbox server (``core.BaseSandboxServer``) owns a rate gate and a quota, rebuilds them when the
faults change their settings, and asks them about every API call that passed authentication. All
take a monotonic clock so tests can drive time; all are thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
# What X-RateLimit-Limit says when the quota is off: the headers are always present on
# Insightly, so clients may parse them unconditionally.
UNLIMITED_REPORTED = 1_000_000


class TokenBucket:
    """Allows ``rate`` requests per second with bursts up to ``rate``, refilled continuously.

    Whether Insightly smooths or counts per clock second is unknown; a bucket is the common
    implementation and is what a client must cope with either way. ``rate=None`` is no limit.
    """

    def __init__(self, rate: float | None, clock: Clock = time.monotonic) -> None:
        self._rate = rate
        self._capacity = max(rate, 1.0) if rate is not None else 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._stamp = clock()

    def try_take(self) -> bool:
        """Spend a token if one is there; False means answer 429."""
        if self._rate is None:
            return True
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._stamp, 0.0)
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass(frozen=True)
class QuotaReading:
    """What the headers report after a quota decision."""

    limit: int
    remaining: int
    allowed: bool
    retry_after: int  # whole seconds until the window resets; meaningful when not allowed


class DailyQuota:
    """Counts API requests in a fixed window (default 24 h) that starts at the first counted
    request after construction, reset or expiry.

    Insightly says "left in the current 24 hours" without saying whether the window is rolling
    or fixed (unknown); a fixed window gives a definite reset time for ``Retry-After``. The
    length is configurable so tests can watch a reset happen within seconds.
    """

    def __init__(
        self, limit: int | None, window_seconds: float, clock: Clock = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._used = 0
        self._window_start: float | None = None

    def consume(self) -> QuotaReading:
        """Count one request if the quota allows it; report either way."""
        with self._lock:
            now = self._roll()
            if self._limit is not None and self._used >= self._limit:
                return self._reading(now, allowed=False)
            if self._window_start is None:
                self._window_start = now
            self._used += 1
            return self._reading(now, allowed=True)

    def peek(self) -> QuotaReading:
        """Report without counting (for responses that do not consume quota, and stats)."""
        with self._lock:
            return self._reading(self._roll(), allowed=True)

    def reset(self) -> None:
        with self._lock:
            self._used = 0
            self._window_start = None

    def _roll(self) -> float:
        now = self._clock()
        if self._window_start is not None and now - self._window_start >= self._window:
            self._used = 0
            self._window_start = None
        return now

    def _reading(self, now: float, *, allowed: bool) -> QuotaReading:
        limit = self._limit if self._limit is not None else UNLIMITED_REPORTED
        remaining = max(limit - self._used, 0)
        start = self._window_start if self._window_start is not None else now
        retry_after = max(1, math.ceil(start + self._window - now))
        return QuotaReading(
            limit=limit, remaining=remaining, allowed=allowed, retry_after=retry_after
        )


class RollingWindow:
    """Allows ``limit`` requests in any ``window`` seconds (HubSpot's ``TEN_SECONDLY_ROLLING``).

    Stricter than a token bucket of the same average: a burst of ``limit`` leaves nothing for the
    next ``window`` seconds. ``limit=None`` is no limit. ``remaining()`` is what the
    ``X-HubSpot-RateLimit-Remaining`` header reports.
    """

    def __init__(self, limit: int | None, window: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._stamps: deque[float] = deque()

    def try_take(self) -> bool:
        """Count this request if the window has room; False means answer 429."""
        if self.limit is None:
            return True
        with self._lock:
            now = self._expire()
            if len(self._stamps) >= self.limit:
                return False
            self._stamps.append(now)
            return True

    def remaining(self) -> int:
        """Requests the window still allows now (the limit itself when there is none)."""
        if self.limit is None:
            return UNLIMITED_REPORTED
        with self._lock:
            self._expire()
            return max(self.limit - len(self._stamps), 0)

    def _expire(self) -> float:
        now = self._clock()
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()
        return now
