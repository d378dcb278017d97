"""Commit-to-CRM time of a sign-up with the README's recommended worker settings, and what the idle
worker costs.

One ``db_worker`` at ``--interval 0.1`` with ``CONN_MAX_AGE = 60`` (README, "Running workers in
production") drains ``SIGNUPS`` sign-ups, each ``User.objects.create`` in autocommit a few tenths of a
second after the last, into the sandbox paced at Insightly's 10 requests a second (a lookup and a create
per sign-up). The time runs from the create's return (its commit) to the lead's ``last_synced_at`` (set
after the CRM answered the create). Side by side: the same sign-ups with the strict pace of one call per
slot (``BURST = 1``, the limiter before issue 17). Then the idle worker for ``IDLE_SECONDS``: its CPU, and
the database sessions it opens each second with ``CONN_MAX_AGE`` 60 and 0 (PostgreSQL only).

PostgreSQL when ``CRMIFY_BENCH_POSTGRES=1`` (a throw-away database on ``PGHOST``, default 127.0.0.1, as
in production), else SQLite. Run from the repository root: ``python bench/latency.py`` (``make bench``).
Targets (issue 17): p50 <= 0.15 s, p99 <= 0.5 s, 0 429s.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import Scorecard, sandbox_env, start_worker, stop_workers  # noqa: E402

SIGNUPS = int(os.environ.get("CRMIFY_BENCH_SIGNUPS", "200"))
INTERVAL = "0.1"
CONN_MAX_AGE = "60"
IDLE_SECONDS = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from crmify.sandbox import Faults, SandboxServer

    workdir = Path(tempfile.mkdtemp(prefix="crmify-bench-"))
    server = SandboxServer(faults=Faults(requests_per_second=10.0, daily_quota=None)).start()
    pg_name = (
        f"crmify_bench_latency_{os.getpid()}" if os.environ.get("CRMIFY_BENCH_POSTGRES") else ""
    )
    env = sandbox_env(
        server, workdir, CRMIFY_BENCH_PG_NAME=pg_name, CRMIFY_BENCH_CONN_MAX_AGE=CONN_MAX_AGE
    )
    os.environ.update(env)
    if pg_name:
        _postgres(f"CREATE DATABASE {pg_name}")
    try:
        return _run(env, server, Scorecard("latency"), pg_name)
    finally:
        server.stop()
        if pg_name:
            from django.db import connections

            connections.close_all()
            _postgres(f"DROP DATABASE IF EXISTS {pg_name}")


def _run(env: dict[str, str], server: Any, card: Any, pg_name: str) -> int:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    database = "PostgreSQL" if pg_name else "SQLite"
    print(
        f"latency: {SIGNUPS} sign-ups, one db_worker --interval {INTERVAL} with CONN_MAX_AGE "
        f"{CONN_MAX_AGE} on {database}, sandbox paced at 10 requests/s"
    )
    bursting, pickup, work = _signups(env, SIGNUPS, "bursting", burst=2)
    strict, _, _ = _signups(env, SIGNUPS // 2, "strict", burst=1)
    p50, p99 = _percentile(bursting, 50), _percentile(bursting, 99)
    card.check(
        "commit to CRM, p50 / p99 / max (README worker settings)",
        f"{p50:.3f} s / {p99:.3f} s / {max(bursting):.3f} s over {len(bursting)} sign-ups",
        "p50 <= 0.15 s, p99 <= 0.5 s",
        p50 <= 0.15 and p99 <= 0.5,
    )
    card.check(
        "of which: waiting for the worker's poll; the task (claim, 2 calls, ledger), p50 / p99",
        f"{_percentile(pickup, 50):.3f} s / {_percentile(pickup, 99):.3f} s; "
        f"{_percentile(work, 50):.3f} s / {_percentile(work, 99):.3f} s "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
    )
    card.check(
        "the same with the strict pace (BURST 1, before issue 17)",
        f"{_percentile(strict, 50):.3f} s / {_percentile(strict, 99):.3f} s over {len(strict)} "
        f"sign-ups: p50 {_percentile(strict, 50) / p50:.1f}x the bucket's",
    )
    throttled = server.stats()["throttled"]
    card.check("429 answers", f"{sum(throttled.values())}", "0", not sum(throttled.values()))
    cpu, sessions = _idle(env, CONN_MAX_AGE, pg_name)
    card.check(
        f"idle worker at --interval {INTERVAL}: CPU; new database sessions/s",
        f"{cpu:.1%} of a core; "
        + (f"{sessions:.1f}" if pg_name else "n/a on SQLite (CRMIFY_BENCH_POSTGRES=1)"),
    )
    if pg_name:
        cpu_0, sessions_0 = _idle(env, "0", pg_name)
        card.check(
            "the same with CONN_MAX_AGE 0 (Django's default)",
            f"{cpu_0:.1%} of a core; {sessions_0:.1f} new sessions/s",
        )
    return int(card.exit_status)


def _signups(
    env: dict[str, str], count: int, prefix: str, *, burst: int
) -> tuple[list[float], list[float], list[float]]:
    """Create ``count`` users a few tenths of a second apart while one worker runs with ``burst``: the
    commit-to-CRM time of each, and of their tasks the time waiting for the worker and the time run."""
    import json

    from django.contrib.auth.models import User
    from django.core.cache import cache

    from crmify.models import Lead, SyncState

    cache.clear()  # a fresh bucket
    worker_env = {**env, "CRMIFY_BENCH_CRMIFY": json.dumps({"BACKEND_OPTIONS": {"BURST": burst}})}
    worker = start_worker(worker_env, INTERVAL)
    try:
        time.sleep(3.0)  # the worker is up and polling
        committed: dict[int, float] = {}
        rng = random.Random(17)
        for n in range(count):
            user = User.objects.create(username=f"{prefix}{n}", email=f"{prefix}{n}@example.com")
            committed[user.pk] = time.time()
            time.sleep(rng.uniform(0.2, 0.4))
        deadline = time.monotonic() + 120
        leads = Lead.objects.filter(source_id__in=[str(pk) for pk in committed])
        while leads.exclude(sync_state=SyncState.SYNCED).exists():
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not sync the sign-ups within 2 minutes")
            time.sleep(0.2)
        from django_tasks_db.models import DBTaskResult

        ids = set(leads.values_list("pk", flat=True))
        tasks = [
            task
            for task in DBTaskResult.objects.filter(task_path="crmify.tasks.process_lead_task")
            if task.args_kwargs["args"][0] in ids
        ]
        return (
            [lead.last_synced_at.timestamp() - committed[int(lead.source_id)] for lead in leads],
            [(task.started_at - task.enqueued_at).total_seconds() for task in tasks],
            [(task.finished_at - task.started_at).total_seconds() for task in tasks],
        )
    finally:
        stop_workers(worker)


def _idle(env: dict[str, str], conn_max_age: str, pg_name: str) -> tuple[float, float]:
    """The idle worker's CPU share and new database sessions a second over ``IDLE_SECONDS``."""
    worker = start_worker({**env, "CRMIFY_BENCH_CONN_MAX_AGE": conn_max_age}, INTERVAL)
    try:
        time.sleep(3.0)
        cpu_before, sessions_before = _cpu(worker.pid), _sessions(pg_name)
        time.sleep(IDLE_SECONDS)
        cpu = (_cpu(worker.pid) - cpu_before) / IDLE_SECONDS
        sessions = (_sessions(pg_name) - sessions_before) / IDLE_SECONDS
    finally:
        stop_workers(worker)
    return cpu, sessions


def _cpu(pid: int) -> float:
    """Seconds of CPU (user and system) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _sessions(pg_name: str) -> float:
    """Sessions opened on the bench's PostgreSQL database so far (0 on SQLite)."""
    if not pg_name:
        return 0.0
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", [pg_name])
        return float(cursor.fetchone()[0])


def _postgres(sql: str) -> None:
    """Run ``sql`` on the server's maintenance database (create and drop the bench's own)."""
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def _percentile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


if __name__ == "__main__":
    sys.exit(main())
