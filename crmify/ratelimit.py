"""Pacing CRM calls across every worker process, and remembering the CRM's daily quota.

Both keep their state in a Django cache (``BACKEND_OPTIONS['RATE_LIMIT_CACHE']``, default ``"default"``)
because a site that runs several workers already has a shared cache (Redis, Memcached or the database
cache) and Django's cache API gives us the one atomic primitive we need: ``cache.add`` (set only if
absent) is atomic on Redis, Memcached and the database cache. A per-process limiter would let N workers
send N times the CRM's limit; a new dependency (a Redis-only limiter library) would tie the embedded
SQLite set-up to a server it does not have.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import BaseCache
from django.utils import timezone

#: How many slots ahead an acquirer looks before sleeping; enough for a handful of busy workers.
LOOKAHEAD_SECONDS = 2


class SharedRateLimiter:
    """At most ``rate`` calls per second in total, for every process sharing ``cache``.

    Time is cut into slots of ``1/rate`` seconds; a caller owns the first free slot it can ``add`` to the
    cache and sleeps until that slot starts. Called by the HTTP plumbing before every CRM request.
    """

    def __init__(self, name: str, rate: float, cache: BaseCache) -> None:
        self.name = name
        self.interval = 1.0 / rate
        self.cache = cache

    def acquire(self) -> float:
        """Block until this caller may send; return the seconds waited."""
        started = time.time()
        while True:
            first = math.ceil(time.time() / self.interval)
            # At least one slot: below 0.5 calls a second no slot starts within the lookahead.
            for slot in range(first, first + max(1, int(LOOKAHEAD_SECONDS / self.interval))):
                # Short-lived keys: a slot only matters until it has passed (it starts at most
                # LOOKAHEAD_SECONDS or one interval ahead), and a database cache culls at MAX_ENTRIES,
                # which must not evict the status tables kept beside them.
                if self.cache.add(
                    f"crmify:rl:{self.name}:{slot}",
                    1,
                    timeout=max(LOOKAHEAD_SECONDS, self.interval) + 2,
                ):
                    delay = slot * self.interval - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    return time.time() - started
            time.sleep(LOOKAHEAD_SECONDS / 2)


@dataclass(frozen=True)
class QuotaState:
    """What the CRM last said about its daily quota; the admin's banner reads it."""

    limit: int | None = None
    remaining: int | None = None
    exhausted_until: datetime | None = None
    auth_failed: bool = False
    updated_at: datetime | None = None

    @property
    def exhausted(self) -> bool:
        return self.exhausted_until is not None and self.exhausted_until > timezone.now()


class QuotaTracker:
    """Reads the quota headers of every answer and stops calls while the quota is used up."""

    def __init__(self, name: str, cache: BaseCache) -> None:
        self.key = f"crmify:quota:{name}"
        self.cache = cache

    def state(self) -> QuotaState:
        raw: dict[str, Any] | None = self.cache.get(self.key)
        return QuotaState(**raw) if raw else QuotaState()

    def _save(self, state: QuotaState) -> None:
        self.cache.set(self.key, asdict(state), timeout=3 * 24 * 3600)

    def observe(self, limit: int | None, remaining: int | None) -> None:
        """Remember the quota headers of an answer (called after every CRM call)."""
        if limit is None and remaining is None:
            return
        old = self.state()
        self._save(
            QuotaState(
                limit=limit if limit is not None else old.limit,
                remaining=remaining,
                exhausted_until=old.exhausted_until if remaining == 0 else None,
                auth_failed=False,
                updated_at=timezone.now(),
            )
        )

    def exhaust(self, seconds: float) -> datetime:
        """The quota is used up for ``seconds``: no call is made before the returned time."""
        until = timezone.now() + timedelta(seconds=seconds)
        old = self.state()
        self._save(
            QuotaState(
                old.limit, 0, exhausted_until=until, auth_failed=False, updated_at=timezone.now()
            )
        )
        return until

    def mark_auth_failed(self) -> None:
        old = self.state()
        self._save(QuotaState(old.limit, old.remaining, old.exhausted_until, True, timezone.now()))
