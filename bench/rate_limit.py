"""Two ``db_worker`` processes drain 300 pending leads into a sandbox limited to 10 requests per second.

Prints the achieved requests per second and the 429s (targets: >= 9.5 rps, zero 429), then API calls per
created lead (target <= 2: lookup plus create) and per unchanged save (target 0). Run from the repository
root: ``python bench/rate_limit.py`` (``make bench``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEADS = int(os.environ.get("CRMIFY_BENCH_LEADS", "300"))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from bench.common import Scorecard, sandbox_site, start_worker, stop_workers
    from crmify.sandbox import Faults, SandboxServer

    workdir = Path(tempfile.mkdtemp(prefix="crmify-bench-"))
    server = SandboxServer(faults=Faults(requests_per_second=10.0, daily_quota=None)).start()
    env = sandbox_site(server, workdir)
    from django.contrib.auth.models import User
    from django_tasks_db.models import DBTaskResult

    from crmify.models import Lead, SyncState

    for i in range(LEADS):
        User.objects.create(
            username=f"user{i}",
            email=f"user{i}@example.com",
            first_name="Bench",
            last_name=f"No{i}",
        )
    # Lead tasks only: the sweeps schedule themselves (SWEEP_INTERVAL) beside them.
    lead_tasks = DBTaskResult.objects.filter(task_path="crmify.tasks.process_lead_task")
    queued = lead_tasks.count()
    started = time.monotonic()
    workers = [start_worker(env, "0.1") for _ in range(2)]
    try:
        while Lead.objects.exclude(sync_state=SyncState.SYNCED).exists():
            if time.monotonic() - started > 600:
                raise SystemExit("the workers did not drain the leads within 10 minutes")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        stats = server.stats()
        created_calls = stats["total"]
        for user in User.objects.all():
            user.save()  # unchanged: no task, no call
        time.sleep(1.0)
        unchanged_calls = server.stats()["total"] - created_calls
        unchanged_tasks = lead_tasks.count() - queued
    finally:
        stop_workers(*workers)
        server.stop()
    throttled = stats["throttled"]
    rps = created_calls / elapsed
    leads = server.leads()
    # Every lead the CRM holds beyond one per e-mail address.
    duplicates = len(leads) - len({lead["EMAIL"] for lead in leads})
    print(f"rate_limit: {LEADS} leads, 2 db_worker processes, sandbox limited to 10 requests/s")
    card = Scorecard("rate_limit")
    card.check(
        "requests/s achieved by 2 workers, sandbox limit 10/s",
        f"{rps:.2f} over {elapsed:.1f} s",
        ">= 9.5",
        rps >= 9.5,
    )
    card.check(
        "429 answers",
        f"{sum(throttled.values())} (rate {throttled['rate']}, quota {throttled['quota']})",
        "0",
        not sum(throttled.values()),
    )
    lead_calls = sum(
        sum(counts.values()) for route, counts in stats["requests"].items() if "/Leads" in route
    )
    per_lead = lead_calls / LEADS
    card.check(
        "calls per created lead on /Leads (lookup + create)",
        f"{per_lead:.3f}",
        "<= 2",
        per_lead <= 2,
    )
    card.check(
        "status-table lookups", f"{created_calls - lead_calls} in all (cached per worker process)"
    )
    card.check(
        "calls and tasks per unchanged save",
        f"{unchanged_calls / LEADS:.3f} calls, {unchanged_tasks} tasks",
        "0",
        unchanged_calls == unchanged_tasks == 0,
    )
    card.check(
        "CRM leads; duplicates",
        f"{len(leads)}; {duplicates}",
        "0 duplicates",
        not duplicates,
    )
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
