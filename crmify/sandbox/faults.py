"""Fault injection settings and the dice that apply them.

``Faults`` is a frozen value: ``SandboxServer`` holds one and swaps it whole when a test calls
``set_faults`` in-process or ``PUT /_sandbox/faults`` from another process, so a request thread
always sees one consistent setting. ``FaultDice`` is the random part, seeded when
``Faults.seed`` is set so a failing run can be replayed. The server consults both only for
API calls, never for ``/_sandbox/`` control calls.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_RATES = ("error_rate", "burst_429_rate", "drop_rate", "create_timeout_rate")
_SECONDS = ("latency", "latency_jitter", "create_timeout_delay")


@dataclass(frozen=True)
class Faults:
    """How badly the sandbox behaves. The defaults are a healthy Insightly on a Plus plan (the HubSpot
    sandbox's are ``crmify.sandbox.hubspot.DEFAULT_FAULTS``, a Free/Starter private app).

    Rates are shares of API requests in [0, 1]; durations are seconds. ``daily_quota=None``
    means unlimited (the headers still report a number) and ``requests_per_second=None``
    turns the per-second limit off.
    """

    error_rate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    burst_429_rate: float = 0.0
    drop_rate: float = 0.0
    create_timeout_rate: float = 0.0
    create_timeout_delay: float = 30.0
    daily_quota: int | None = 40_000
    quota_window_seconds: float = 86_400.0
    requests_per_second: float | None = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in _RATES:
            value = _number(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        for name in _SECONDS:
            if _number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} cannot be negative")
        if _number("quota_window_seconds", self.quota_window_seconds) <= 0:
            raise ValueError("quota_window_seconds must be positive")
        if self.requests_per_second is not None and (
            _number("requests_per_second", self.requests_per_second) <= 0
        ):
            raise ValueError("requests_per_second must be positive or null (no limit)")
        for name in ("daily_quota", "seed"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer or null")
        if self.daily_quota is not None and self.daily_quota < 0:
            raise ValueError("daily_quota cannot be negative")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /_sandbox/faults``."""
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ValueError for unknown names or bad values.

        Used by ``set_faults`` and ``PUT /_sandbox/faults``: fields left out are kept, like a
        v3.1 PUT.
        """
        known = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


def _number(name: str, value: object) -> float:
    # JSON gives ints for whole numbers; both are fine, booleans are not numbers here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


class FaultDice:
    """Thread-safe random draws for the fault decisions of one server."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the sequence (on fault changes and resets) so seeded runs replay exactly."""
        with self._lock:
            self._rng = random.Random(seed)

    def happens(self, rate: float) -> bool:
        """True for a share ``rate`` of calls. A zero rate draws nothing, so turning one fault
        on does not shift the sequence of the others."""
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def delay(self, faults: Faults) -> float:
        """Seconds to hold an API request: fixed latency plus a uniform share of the jitter."""
        if faults.latency_jitter <= 0:
            return faults.latency
        with self._lock:
            return faults.latency + self._rng.uniform(0.0, faults.latency_jitter)

    def error_status(self, faults: Faults) -> int | None:
        """500 or 503 (evenly) for a share ``error_rate`` of requests, else None."""
        if not self.happens(faults.error_rate):
            return None
        with self._lock:
            return self._rng.choice((500, 503))
