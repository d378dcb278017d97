"""The shared rate limiter holds the CRM's pace across worker processes, measured at the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone

from crmify.ratelimit import QuotaShare, QuotaTracker, SharedRateLimiter, current_share, spending
from crmify.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_share_the_pace_and_get_no_429(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    cache_db = str(tmp_path / "cache.sqlite3")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": ""}
    setup = (
        "import django; from django.conf import settings; "
        f"settings.configure(DATABASES={{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {cache_db!r}}}}}, "
        "CACHES={'default': {'BACKEND': 'django.core.cache.backends.db.DatabaseCache', 'LOCATION': 'crmify_cache'}}); "
        "django.setup(); from django.core.management import call_command; call_command('createcachetable')"
    )
    subprocess.run([sys.executable, "-c", setup], check=True, env=env, cwd=ROOT)
    sandbox.set_faults(requests_per_second=10.0)
    sandbox.reset()
    calls_each = 15
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.pace_worker",
                cache_db,
                sandbox.url,
                sandbox.api_key,
                str(calls_each),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=60)[0].split() for worker in workers]
    elapsed = time.monotonic() - started
    assert all(worker.returncode == 0 for worker in workers)
    assert sorted({status for output in outputs for status in output}) == ["200"]
    assert sandbox.stats()["throttled"]["rate"] == 0
    # 30 calls at 10 per second cannot take less than 2.9 s, whoever made them.
    assert elapsed >= 2.9


def test_one_process_is_paced_to_the_configured_rate() -> None:
    limiter = SharedRateLimiter("pace-test", 20, LocMemCache("pace-test", {}))
    started = time.monotonic()
    for _ in range(11):
        limiter.acquire()
    assert time.monotonic() - started >= 0.45  # 11 slots of 50 ms: 10 intervals


class FakeClock:
    """``time`` for crmify.ratelimit: sleeping moves the clock; an endless wait fails instead of hanging."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps = 0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < 100, "the limiter never found a free slot"
        self.now += seconds


@pytest.mark.parametrize("rate", [0.4, 0.1])
def test_a_rate_below_one_call_every_two_seconds_still_paces(
    rate: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("crmify.ratelimit.time", clock)
    limiter = SharedRateLimiter(f"slow-{rate}", rate, LocMemCache(f"slow-{rate}", {}))
    sent_at = []
    for _ in range(3):
        limiter.acquire()
        sent_at.append(clock.now)
    gaps = [later - earlier for earlier, later in pairwise(sent_at)]
    assert all(gap >= 1 / rate - 1e-6 for gap in gaps), gaps


def test_quota_tracker_remembers_exhaustion_and_headers() -> None:
    tracker = QuotaTracker("quota-test", caches["default"])
    tracker.observe(limit=1000, remaining=12)
    assert (tracker.state().limit, tracker.state().remaining, tracker.state().exhausted) == (
        1000,
        12,
        False,
    )
    tracker.exhaust(60)
    state = tracker.state()
    assert state.exhausted and state.remaining == 0 and state.limit == 1000
    tracker.observe(limit=1000, remaining=999)
    assert not tracker.state().exhausted


def test_a_burst_lets_a_lookup_and_its_create_go_out_together_after_a_quiet_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("crmify.ratelimit.time", clock)
    limiter = SharedRateLimiter("burst", 10, LocMemCache("burst", {}), burst=2)
    clock.now += 5  # quiet
    started = clock.now
    limiter.acquire()
    limiter.acquire()
    assert clock.now == started  # both at once: no slot waited for
    limiter.acquire()
    assert clock.now - started == pytest.approx(0.1, abs=0.1)  # the bucket is empty: the pace again


@pytest.mark.parametrize("burst", [1, 2, 5])
def test_the_shared_bucket_never_sends_more_than_rate_times_span_plus_burst(
    burst: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("crmify.ratelimit.time", clock)
    cache = LocMemCache(f"bucket-{burst}", {})
    # Three callers sharing the cache, each acquiring in turn after quiet moments of different length.
    callers = [SharedRateLimiter("bucket", 10, cache, burst=burst) for _ in range(3)]
    sent_at: list[float] = []
    for n in range(120):
        if n % 17 == 0:
            clock.now += 0.7
        callers[n % 3].acquire()
        sent_at.append(clock.now)
        clock.sleeps = 0
    for span in (0.0, 0.25, 1.0, 3.0):
        busiest = max(
            sum(1 for t in sent_at if start <= t <= start + span + 1e-9) for start in sent_at
        )
        assert busiest <= 10 * span + burst, (span, busiest)
    # And it does not throttle below the rate: 120 calls, quiet moments included, in about 12 s + 5 s.
    assert sent_at[-1] - sent_at[0] <= 120 / 10 + 8 * 0.7 + 0.2


def test_the_quota_tracker_counts_each_share_and_starts_over_with_a_new_window() -> None:
    tracker = QuotaTracker("share-test", caches["default"], window_seconds=60)
    caches["default"].clear()
    tracker.observe(limit=100, remaining=99)  # the window's first call
    tracker.count(QuotaShare.BACKFILL)
    with spending(QuotaShare.BACKFILL):
        tracker.observe(limit=100, remaining=98)
        tracker.count(current_share())
    tracker.observe(limit=100, remaining=97)
    tracker.count(current_share())
    state = tracker.state()
    assert (state.used_by(QuotaShare.BACKFILL), state.used_by(QuotaShare.LIVE)) == (2, 1)
    assert (
        state.resets_at is not None
        and 58 < (state.resets_at - timezone.now()).total_seconds() <= 60
    )
    # The backfill stops once it made its share of the window's calls (90 of 100), whatever is left;
    # live calls never stop for that.
    tracker.observe(limit=100, remaining=9)
    assert tracker.state().paused_until(0.1) is None
    for _ in range(87):
        tracker.count(QuotaShare.BACKFILL)
    assert tracker.state().paused_until(0.1) is None
    tracker.count(QuotaShare.BACKFILL)
    paused = tracker.state().paused_until(0.1)
    assert paused is not None and paused[0] == state.resets_at
    assert "10 calls are kept for live changes" in paused[1]
    assert tracker.state().paused_until(0) is None
    # A new window (the CRM's count starts over) forgets the counts.
    tracker.observe(limit=100, remaining=99)
    assert tracker.state().backfill_used == 0
    assert tracker.state().paused_until(0.1) is None
