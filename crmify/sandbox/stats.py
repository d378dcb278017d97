"""Counters behind ``GET /_sandbox/stats``, for tests that assert how a client behaved.

A sandbox server records every API call once it knows the outcome: the route template
(``"POST /Leads"``, ``"GET /Leads/{id}"``), the status (or ``"dropped"``), and for 429s
whether the per-second rate, the daily quota or an injected burst caused it. Injected faults are
also counted by kind, so a soak can report what it survived (``crmify.sandbox.faults``).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any, Literal, get_args

ThrottleKind = Literal["rate", "quota", "fault"]
THROTTLE_KINDS: tuple[ThrottleKind, ...] = get_args(ThrottleKind)
FaultKind = Literal["error", "burst_429", "drop", "create_timeout", "latency"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


class Stats:
    """Thread-safe request counters; ``snapshot()`` is their JSON form."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_route: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._throttled: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()

    def record(self, route: str, outcome: int | str, throttle: ThrottleKind | None = None) -> None:
        with self._lock:
            self._by_route[route][str(outcome)] += 1
            if throttle is not None:
                self._throttled[throttle] += 1

    def inject(self, kind: FaultKind) -> None:
        """Count one injected fault (a delayed request counts as ``latency``)."""
        with self._lock:
            self._injected[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self._by_route.clear()
            self._throttled.clear()
            self._injected.clear()

    def snapshot(self) -> dict[str, Any]:
        """``{"requests": {"POST /Leads": {"200": 12}}, "throttled": {"rate": 1, ...},
        "injected": {"error": 2, ...}, "total": 13}``."""
        with self._lock:
            return {
                "requests": {
                    route: dict(counts) for route, counts in sorted(self._by_route.items())
                },
                "throttled": {kind: self._throttled[kind] for kind in THROTTLE_KINDS},
                "injected": {kind: self._injected[kind] for kind in FAULT_KINDS},
                "total": sum(sum(counts.values()) for counts in self._by_route.values()),
            }
