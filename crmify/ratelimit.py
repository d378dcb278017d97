"""Pacing CRM calls across every worker process, and remembering the CRM's daily quota and who spent it.

All three keep their state in a Django cache (``BACKEND_OPTIONS['RATE_LIMIT_CACHE']``, default ``"default"``)
because a site that runs several workers already has a shared cache (Redis, Memcached or the database
cache) and Django's cache API gives us the one atomic primitive we need: ``cache.add`` (set only if
absent) is atomic on Redis, Memcached and the database cache. A per-process limiter would let N workers
send N times the CRM's limit; a new dependency (a Redis-only limiter library) would tie the embedded
SQLite set-up to a server it does not have.
"""

from __future__ import annotations

import contextvars
import enum
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import BaseCache
from django.utils import timezone

#: How many slots ahead an acquirer looks before sleeping; enough for a handful of busy workers.
LOOKAHEAD_SECONDS = 2
#: Slots past the burst an acquirer reads in one go before taking one: more than a few busy workers hold.
READ_AHEAD_SLOTS = 16


class SharedRateLimiter:
    """A token bucket shared by every process using ``cache``: ``rate`` calls a second on average, and up
    to ``burst`` calls at once after a quiet moment (a new lead's lookup and create go out together).

    Time is cut into slots of ``1/rate`` seconds, each owned by whoever ``add``s its key first. A caller
    takes the first free slot from ``burst - 1`` slots in the past up to a few seconds ahead, and sleeps
    until that slot starts (a past one: it sends at once). A past slot still free is a token the bucket
    kept: in any span of ``T`` seconds at most ``rate * T + burst`` calls go out, the bucket's bound, so a
    ``burst`` within the CRM's own allowance never earns a 429. ``burst=1`` is the strict pace of one call
    per slot. Called by the HTTP plumbing before every CRM request.
    """

    def __init__(self, name: str, rate: float, cache: BaseCache, burst: int = 1) -> None:
        self.name = name
        self.interval = 1.0 / rate
        self.cache = cache
        self.burst = max(int(burst), 1)

    def _key(self, slot: int) -> str:
        return f"crmify:rl:{self.name}:{slot}"

    def acquire(self) -> float:
        """Block until this caller may send; return the seconds waited."""
        started = time.time()
        ahead = max(1, int(LOOKAHEAD_SECONDS / self.interval))
        # A slot's key must outlive the time it can still be taken: burst - 1 slots after it started.
        timeout = max(LOOKAHEAD_SECONDS, self.interval) + self.burst * self.interval + 2
        while True:
            first = math.ceil(time.time() / self.interval) - (self.burst - 1)
            # At least one slot ahead: below 0.5 calls a second no slot starts within the lookahead.
            slots = range(first, first + self.burst - 1 + ahead)
            # One read of the nearest slots finds those others took, so a busy bucket costs one read
            # and one add, not an add (a write, on the database cache) per taken slot; a slot taken
            # since the read is refused by the add, which alone decides. Only the nearest: at a high
            # rate the lookahead holds thousands of slots.
            nearest = [self._key(slot) for slot in slots[: self.burst + READ_AHEAD_SLOTS]]
            taken = self.cache.get_many(nearest)
            for slot in slots:
                key = self._key(slot)
                # Short-lived keys: a database cache culls at MAX_ENTRIES, which must not evict the
                # status tables kept beside them.
                if key not in taken and self.cache.add(key, 1, timeout=timeout):
                    delay = slot * self.interval - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    return time.time() - started
            time.sleep(LOOKAHEAD_SECONDS / 2)


class QuotaShare(enum.StrEnum):
    """Who spends the daily quota: live changes (saves, staff actions) or the backfill."""

    LIVE = "live"
    BACKFILL = "backfill"


_spender: contextvars.ContextVar[QuotaShare] = contextvars.ContextVar(
    "crmify_quota_share", default=QuotaShare.LIVE
)


@contextmanager
def spending(share: QuotaShare) -> Iterator[None]:
    """Count the CRM calls made inside the block against ``share`` (the worker's backfill task)."""
    token = _spender.set(share)
    try:
        yield
    finally:
        _spender.reset(token)


def quota_message(until: datetime) -> str:
    """What a lead and the banner say while the whole quota is used up."""
    return f"The CRM's daily API quota is used up; calls resume at {until:%Y-%m-%d %H:%M:%S} UTC."


@dataclass(frozen=True)
class QuotaState:
    """What the CRM last said about its daily quota, and what the backfill spent of it this window; the
    admin's banner, the backfill's progress page and the worker's pause read it."""

    limit: int | None = None
    remaining: int | None = None
    exhausted_until: datetime | None = None
    auth_failed: bool = False
    updated_at: datetime | None = None
    #: When the current quota window ends: said by the CRM (a 429's ``Retry-After``), else estimated
    #: from the first call seen in the window plus the window's length.
    resets_at: datetime | None = None
    #: Calls the backfill made this window (``QuotaTracker.count``).
    backfill_used: int = 0

    @property
    def exhausted(self) -> bool:
        return self.exhausted_until is not None and self.exhausted_until > timezone.now()

    def used_by(self, share: QuotaShare) -> int:
        """Calls ``share`` made this window. Live changes are not counted one by one (their calls stay
        as cheap as before): theirs is the CRM's own count of the window's calls less the backfill's,
        so it also holds any other client of the same API key."""
        if share is QuotaShare.BACKFILL:
            return self.backfill_used
        if self.limit is None or self.remaining is None:
            return 0
        return max(self.limit - self.remaining - self.backfill_used, 0)

    def paused_until(
        self, reserve: float, now: datetime | None = None
    ) -> tuple[datetime, str] | None:
        """``(until, why)`` when calls that must leave ``reserve`` (a share of the daily limit) to live
        changes may not be made now; None when they may.

        The live path passes 0: it stops only when the quota is used up. The backfill passes
        ``LIVE_QUOTA_SHARE``: it stops once it made ``limit - reserve`` calls this window, until the window
        resets (a window past its reset counts as a fresh one). The reserve is the live changes' however
        the window goes, assuming crmify is the only client of the API key.
        """
        now = now or timezone.now()
        if self.exhausted_until is not None and self.exhausted_until > now:
            return self.exhausted_until, quota_message(self.exhausted_until)
        if not reserve or self.limit is None or self.remaining is None:
            return None
        if self.resets_at is not None and self.resets_at <= now:
            return None
        kept = math.ceil(self.limit * reserve)
        if self.backfill_used < self.limit - kept:
            return None
        until = self.resets_at or now + timedelta(seconds=DEFAULT_QUOTA_WINDOW)
        return until, (
            f"The backfill's share of the CRM's daily quota is used up ({kept:,} calls are kept for "
            f"live changes); it goes on at {until:%Y-%m-%d %H:%M:%S} UTC."
        )


#: A CRM's quota window when its options do not say (Insightly: "the current 24 hours").
DEFAULT_QUOTA_WINDOW = 24 * 3600


class QuotaTracker:
    """Reads the quota headers of every answer, stops calls while the quota is used up, and counts the
    backfill's calls in the current window.

    The count is a Django cache counter: ``incr`` is atomic on Redis and Memcached; on the database
    cache two workers counting at the same instant may lose one (the backfill then spends a call of
    the live share; measured 1-2 a window in ``bench/million.py``).
    """

    def __init__(
        self, name: str, cache: BaseCache, window_seconds: float = DEFAULT_QUOTA_WINDOW
    ) -> None:
        self.key = f"crmify:quota:{name}"
        self.used_key = f"{self.key}:backfill"
        self.cache = cache
        self.window = timedelta(seconds=window_seconds)

    def state(self) -> QuotaState:
        found = self.cache.get_many([self.key, self.used_key])
        raw: dict[str, Any] = found.get(self.key) or {}
        known = {f.name for f in fields(QuotaState)} - {"backfill_used"}
        return QuotaState(
            **{k: v for k, v in raw.items() if k in known},
            backfill_used=int(found.get(self.used_key) or 0),
        )

    def _save(self, state: QuotaState) -> None:
        data = asdict(state)
        del data["backfill_used"]
        self.cache.set(self.key, data, timeout=3 * 24 * 3600)

    def observe(
        self, limit: int | None, remaining: int | None, before: QuotaState | None = None
    ) -> None:
        """Remember the quota headers of an answer (called after every CRM call that was answered);
        ``before`` is the state read before the call, when the caller has it (one cache read less)."""
        if limit is None and remaining is None:
            return
        old = before or self.state()
        now = timezone.now()
        limit = limit if limit is not None else old.limit
        resets_at = old.resets_at
        fresh_window = (
            resets_at is None
            or resets_at <= now
            or (limit is not None and remaining is not None and remaining >= limit - 1)
        )
        if fresh_window and not old.exhausted:
            resets_at = now + self.window
            self.cache.delete(self.used_key)
        self._save(
            QuotaState(
                limit=limit,
                remaining=remaining,
                exhausted_until=old.exhausted_until if remaining == 0 else None,
                auth_failed=False,
                updated_at=now,
                resets_at=resets_at,
            )
        )

    def count(self, share: QuotaShare) -> None:
        """Count one call of ``share`` (the HTTP plumbing, after each answered call): the backfill's."""
        if share is not QuotaShare.BACKFILL:
            return
        timeout = self.window.total_seconds() * 2
        if not self.cache.add(self.used_key, 1, timeout=timeout):
            try:
                self.cache.incr(self.used_key)
            except ValueError:  # expired between the add and the incr
                self.cache.add(self.used_key, 1, timeout=timeout)

    def exhaust(self, seconds: float) -> datetime:
        """The quota is used up for ``seconds``: no call is made before the returned time, when the
        next window starts."""
        until = timezone.now() + timedelta(seconds=seconds)
        old = self.state()
        self._save(
            QuotaState(
                old.limit,
                0,
                exhausted_until=until,
                auth_failed=False,
                updated_at=timezone.now(),
                resets_at=until,
            )
        )
        return until

    def mark_auth_failed(self) -> None:
        old = self.state()
        self._save(
            QuotaState(
                old.limit,
                old.remaining,
                old.exhausted_until,
                True,
                timezone.now(),
                resets_at=old.resets_at,
            )
        )


def current_share() -> QuotaShare:
    """The share the calls of this context count against (:func:`spending`)."""
    return _spender.get()
