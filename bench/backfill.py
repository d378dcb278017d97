"""The backfill against the ways a site would do it without crmify's bulk path, side by side in one run.

Run from the repository root: ``python bench/backfill.py`` (``make bench``). SQLite file database in a
temporary directory, the database Tasks backend (each chunk's sync task is written, as in production;
no worker runs during the timed phases) and the locmem CRM backend.

1. Backfill: ``USERS`` users without leads (inserted with ``bulk_create``, so no signal fired), then one
   run processed chunk by chunk in this process (``run_chunk``, as ``crmify_backfill --wait`` does): the
   scan/map/upsert phase in rows per second, and the growth of the process's peak memory over it (the
   users are inserted by a child process, so the peak before the run is only Django's and the schema's).
2. Naive: ``NAIVE_USERS`` more such users, each saved with ``user.save()`` so crmify's receivers track it
   (a subset: the per-row cost is flat, and each save commits on its own, so 100,000 would take an
   hour on a slow disk). Ratio to the backfill.
3. django-import-export: ``IMPORT_USERS`` new users imported through a plain ``ModelResource`` for
   ``User`` (its receivers track each row). Ratio to the backfill.
4. Sandbox: ``SANDBOX_USERS`` new users (a tenth of them already in the CRM by e-mail) backfilled into
   the sandbox over HTTP with the Insightly backend (``only_missing``), every queued lead then sent
   through the worker path (``process_lead``): API calls per backfilled lead, the listing and the status
   table included.

Targets (issue 5): >= 5,000 rows/s; peak memory growth < 150 MB; backfill >= 10x the naive way;
<= 1.01 API calls per lead. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Scorecard, configure, fresh_database, sandbox_crmify

USERS = int(os.environ.get("CRMIFY_BENCH_USERS", "100000"))
NAIVE_USERS = 2_000
IMPORT_USERS = 2_000
SANDBOX_USERS = 2_000
BATCH_SIZE = 1000

ROWS_TARGET = 5_000
MEMORY_TARGET_MB = 150
NAIVE_RATIO_TARGET = 10
CALLS_TARGET = 1.01


def seed_in_child(db_path: Path, count: int) -> None:
    """Insert the backfill's users from another process, so this one's peak memory is not the seeding's."""
    subprocess.run([sys.executable, __file__, "--seed", str(db_path), str(count)], check=True)


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def insert_users(prefix: str, count: int) -> list[int]:
    """``count`` users inserted in bulk (no signal fires: they have no lead), their primary keys back."""
    from django.contrib.auth.models import User

    pks: list[int] = []
    for start in range(0, count, 5000):
        rows = [
            User(
                username=f"{prefix}{n}",
                email=f"{prefix}{n}@example.com",
                first_name="Bench",
                last_name=f"No{n}",
                password="!",
            )
            for n in range(start, min(start + 5000, count))
        ]
        pks += [user.pk for user in User.objects.bulk_create(rows)]
    return pks


def main() -> int:
    if sys.argv[1:2] == ["--seed"]:  # the child of seed_in_child()
        configure(Path(sys.argv[2]), extra_apps=["import_export"])
        insert_users("user", int(sys.argv[3]))
        return 0
    return run(fresh_database("crmify-bench-backfill-", extra_apps=["import_export"]))


def backfill_here(options: Any) -> Any:
    """Start a run and do its chunks in this process, as ``crmify_backfill --wait``."""
    from crmify import backfill

    run = backfill.start(options, enqueue=False)
    while backfill.run_chunk(run.pk, chain=False).more:
        pass
    run.refresh_from_db()
    return run


def run(db_path: Path) -> int:
    from django.contrib.auth.models import User
    from django.test import override_settings
    from django_tasks_db.models import DBTaskResult
    from import_export import resources
    from tablib import Dataset

    from crmify.backfill import BackfillOptions
    from crmify.models import BackfillRun, Lead

    card = Scorecard("backfill")

    # 1. The backfill.
    seed_in_child(db_path, USERS)
    rss_before = peak_rss_mb()  # this process has only migrated so far: its peak is its baseline
    started = time.perf_counter()
    run = backfill_here(BackfillOptions(batch_size=BATCH_SIZE))
    seconds = time.perf_counter() - started
    growth = peak_rss_mb() - rss_before
    assert run.state == BackfillRun.State.FINISHED and run.created == USERS, run.last_error
    # One sync task per chunk of new leads, written with the chunk.
    assert DBTaskResult.objects.count() == -(-USERS // BATCH_SIZE)
    rate = USERS / seconds
    print(
        f"backfill: {USERS:,} users, SQLite, locmem CRM, database Tasks backend, chunks of {BATCH_SIZE}"
    )
    card.check(
        f"scan/map/upsert, {USERS:,} users",
        f"{rate:,.0f} rows/s ({seconds:.1f} s)",
        f">= {ROWS_TARGET:,} rows/s",
        rate >= ROWS_TARGET,
    )
    card.check(
        "peak memory growth",
        f"{growth:.1f} MB",
        f"< {MEMORY_TARGET_MB} MB",
        growth < MEMORY_TARGET_MB,
    )

    # 2. The naive way: every user saved, crmify's receivers tracking each one.
    naive = User.objects.filter(pk__in=insert_users("naive", NAIVE_USERS)).order_by("pk")
    started = time.perf_counter()
    for user in naive.iterator(chunk_size=1000):
        user.save()
    naive_rate = NAIVE_USERS / (time.perf_counter() - started)
    ratio = rate / naive_rate
    card.check(
        f"vs saving each user ({NAIVE_USERS:,} users, {naive_rate:,.0f} rows/s)",
        f"backfill {ratio:.1f}x faster",
        f">= {NAIVE_RATIO_TARGET}x",
        ratio >= NAIVE_RATIO_TARGET,
    )

    # 3. A django-import-export import of new users (crmify's receivers track each row).
    class UserResource(resources.ModelResource):
        class Meta:
            model = User
            fields = ("id", "username", "email", "first_name", "last_name")

    dataset = Dataset(headers=["id", "username", "email", "first_name", "last_name"])
    for n in range(IMPORT_USERS):
        dataset.append(["", f"imported{n}", f"imported{n}@example.com", "Bench", f"Imported{n}"])
    started = time.perf_counter()
    outcome = UserResource().import_data(dataset, dry_run=False, raise_errors=True)
    import_rate = IMPORT_USERS / (time.perf_counter() - started)
    assert outcome.totals["new"] == IMPORT_USERS
    card.check(
        f"vs a django-import-export import ({IMPORT_USERS:,} users, {import_rate:,.0f} rows/s)",
        f"backfill {rate / import_rate:.1f}x faster",
    )

    # 4. The sandbox over HTTP: API calls per backfilled lead.
    from crmify.sandbox import Faults, SandboxServer
    from crmify.worker import process_lead

    server = SandboxServer(faults=Faults(requests_per_second=None, daily_quota=None)).start()
    try:
        pks = insert_users("sandbox", SANDBOX_USERS)
        for n in range(0, SANDBOX_USERS, 10):  # a tenth of them are in the CRM already
            server.add_lead(
                {"FIRST_NAME": "Old", "LAST_NAME": "Lead", "EMAIL": f"sandbox{n}@example.com"}
            )
        crmify = sandbox_crmify(
            "crmify.backends.insightly.InsightlyBackend", server.api_key, server.url
        )
        with override_settings(CRMIFY=crmify):
            run = backfill_here(BackfillOptions(only_missing=True, batch_size=BATCH_SIZE))
            assert run.created == SANDBOX_USERS, run.last_error
            leads = Lead.objects.filter(source_id__in=[str(pk) for pk in pks])
            for lead_id in leads.values_list("pk", flat=True):
                process_lead(lead_id)
        stats = server.stats()
        crm_emails = Counter(lead["EMAIL"] for lead in server.leads())
    finally:
        server.stop()
    total = stats["total"]
    per_lead = total / SANDBOX_USERS
    synced = leads.filter(sync_state="synced").count()
    print(
        f"sandbox: {SANDBOX_USERS:,} users ({SANDBOX_USERS // 10} already in the CRM), Insightly backend over HTTP"
    )
    routes = dict(sorted((k, sum(v.values())) for k, v in stats["requests"].items()))
    print(f"  {total} calls: {routes}")
    card.check(
        f"API calls per backfilled lead ({SANDBOX_USERS:,} users, sandbox)",
        f"{per_lead:.4f}",
        f"<= {CALLS_TARGET}",
        per_lead <= CALLS_TARGET,
    )
    duplicates = sum(1 for c in crm_emails.values() if c > 1)
    card.check(
        "synced; CRM e-mails with more than one lead",
        f"{synced:,} of {SANDBOX_USERS:,}; {duplicates}",
        "all; 0",
        synced == SANDBOX_USERS and not duplicates,
    )
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
