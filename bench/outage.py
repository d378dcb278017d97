"""The CRM goes down while people sign up: how fast is the backlog sent once it answers again?

Each case: ``db_worker`` processes on the default settings (the bench site: SQLite, the database cache,
the database Tasks backend) and the sandbox CRM at 10 requests per second. One lead is synced first; then
the sandbox stops (connection refused), ``SIGNUPS`` people sign up during the outage, and after the
outage the sandbox starts again on the same port with the same leads. Measured: the seconds from the
CRM's return until every lead is in the sandbox, against the floor (the API calls made after the
return / the rate limit; target <= 1.2 x floor + 10 s), the calls made during the outage (every CRM call
leaves a ledger row; target: the calls that found the outage plus the probes, not a call per lead),
lost and duplicated leads and leads failed by the outage (target 0 each).

``python bench/outage.py`` (``make bench``) runs the four cases of issue 16 (outages of 2 and 10 minutes,
one and two workers, 300 sign-ups), two at a time, each in a process of its own with its own database
and sandbox port (about 16 minutes), and judges them. ``python bench/outage.py --case OUTAGE SIGNUPS WORKERS`` runs one case
and prints its figures as JSON (what the parallel run reads, and the short CI version in
``tests/reliability/test_outage.py`` runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RATE = 10.0
SIGNUPS = int(os.environ.get("CRMIFY_BENCH_OUTAGE_SIGNUPS", "300"))
#: (outage seconds, workers) of the full run.
CASES = ((120, 1), (120, 2), (600, 1), (600, 2))


def expected_probes(outage: float) -> int:
    """Probes the schedule of ``crmify.crm_state`` makes during an outage of ``outage`` seconds."""
    from crmify.crm_state import FIRST_PROBE_AFTER, MAX_PROBE_INTERVAL

    at, interval, probes = FIRST_PROBE_AFTER, FIRST_PROBE_AFTER, 0
    while at < outage:
        probes += 1
        interval = min(interval * 2, MAX_PROBE_INTERVAL)
        at += interval
    return probes


def run_case(outage: float, signups: int, workers: int) -> dict[str, Any]:
    """One case, in this process (it configures Django on a database of its own)."""
    sys.path.insert(0, str(ROOT))
    from bench.common import sandbox_site, start_worker, stop_workers
    from crmify.sandbox import Faults, SandboxServer

    workdir = Path(tempfile.mkdtemp(prefix="crmify-bench-outage-"))
    faults = Faults(requests_per_second=RATE, daily_quota=None)
    sandbox_file = workdir / "sandbox.json"
    server = SandboxServer(faults=faults, state_file=sandbox_file).start()
    env = sandbox_site(server, workdir)
    from django.contrib.auth.models import User
    from django.utils import timezone

    from crmify.models import Lead, LedgerEntry, SyncState

    processes = [start_worker(env, "0.1") for _ in range(workers)]

    def wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"outage bench: {what} did not happen within {timeout:g} s")
            time.sleep(0.1)

    try:
        User.objects.create(username="first", email="first@example.com", last_name="First")
        wait(lambda: len(server.leads()) == 1, 60, "the first lead's sync")
        # The outage: nothing listens on the CRM's port.
        server.stop()
        down_at, down = timezone.now(), time.monotonic()
        window = min(outage / 2, 60.0)
        for i in range(signups):
            time.sleep(max(0.0, down + window * i / signups - time.monotonic()))
            User.objects.create(
                username=f"user{i}", email=f"user{i}@example.com", last_name=f"No{i}"
            )
        time.sleep(max(0.0, down + outage - time.monotonic()))
        server = SandboxServer(
            port=server.port, api_key=server.api_key, faults=faults, state_file=sandbox_file
        ).start()
        up_at, up = timezone.now(), time.monotonic()
        wait(lambda: len(server.leads()) >= signups + 1, outage + 900, "every lead's arrival")
        recovery = time.monotonic() - up
        time.sleep(3)  # a late duplicate would show now
        calls_after = server.stats()["total"]
        leads = server.leads()
    finally:
        stop_workers(*processes)
        server.stop()
    emails = [lead["EMAIL"] for lead in leads]
    floor = calls_after / RATE
    return {
        "outage": outage,
        "signups": signups,
        "workers": workers,
        "recovery": recovery,
        "calls_after": calls_after,
        "floor": floor,
        "calls_during": LedgerEntry.objects.filter(
            started_at__gte=down_at, started_at__lt=up_at - timedelta(seconds=0.05)
        ).count(),
        "expected_probes": expected_probes(outage),
        "lost": signups + 1 - len(set(emails)),
        "duplicates": len(emails) - len(set(emails)),
        "failed": Lead.objects.filter(sync_state=SyncState.FAILED).count(),
    }


def _case_in_a_process(outage: float, workers: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--case", str(outage), str(SIGNUPS), str(workers)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def target(result: dict[str, Any]) -> float:
    """The most seconds from the CRM's return to the last lead that the issue allows."""
    return 1.2 * float(result["floor"]) + 10


def main() -> int:
    if sys.argv[1:2] == ["--case"]:
        outage, signups, workers = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(run_case(outage, signups, workers)))
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.common import Scorecard
    from crmify.crm_state import DOWN_AFTER_FAILURES

    # Two at a time (the one- and two-worker cases of one outage length side by side): each case waits
    # on its outage and on the sandbox's rate limit, and the machine's two cores stay theirs.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: _case_in_a_process(*case), CASES))
    print(f"outage: {SIGNUPS} sign-ups during each outage, sandbox limited to {RATE:g} requests/s")
    card = Scorecard("outage")
    for result in results:
        name = f"{result['outage'] / 60:g}-minute outage, {result['workers']} worker(s)"
        card.check(
            f"{name}: CRM's return to the last lead",
            f"{result['recovery']:.1f} s; floor {result['floor']:.1f} s "
            f"({result['calls_after']} calls / {RATE:g} per s)",
            f"<= {target(result):.1f} s (1.2 x floor + 10 s)",
            result["recovery"] <= target(result),
        )
        most = DOWN_AFTER_FAILURES + result["workers"] + result["expected_probes"]
        card.check(
            f"{name}: calls during the outage",
            f"{result['calls_during']} ({result['expected_probes']} probes on the schedule)",
            f"<= {most} (the calls that found it + probes)",
            result["calls_during"] <= most,
        )
        card.check(
            f"{name}: lost; duplicates; failed",
            f"{result['lost']}; {result['duplicates']}; {result['failed']}",
            "0; 0; 0",
            result["lost"] == result["duplicates"] == result["failed"] == 0,
        )
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
