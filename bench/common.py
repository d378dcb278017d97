"""What the benchmarks share: Django configured on a throw-away SQLite file, crmify on the database Tasks
backend with the locmem CRM (a bench overrides ``CRMIFY`` where it needs the sandbox), or the bench site
on the sandbox CRM with ``db_worker`` processes (``sandbox_site``, ``start_db_workers``). The apps and
constants come from ``bench/settings.py`` (the worker processes' settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import django
from django.conf import settings


def configure(db_path: Path, *, extra_apps: Sequence[str] = ()) -> None:
    # Imported here, not at the top: bench/settings.py reads CRMIFY_BENCH_* when first imported, and
    # bench/rate_limit.py sets them after importing this module, before Django loads bench.settings.
    from bench import settings as shared

    settings.configure(
        SECRET_KEY=shared.SECRET_KEY,
        USE_TZ=shared.USE_TZ,
        DEFAULT_AUTO_FIELD=shared.DEFAULT_AUTO_FIELD,
        INSTALLED_APPS=[*shared.INSTALLED_APPS, *extra_apps],
        # Its own database options and cache (Django's default): the in-process figures stay comparable.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path)}},
        TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
        CRMIFY={"BACKEND": "crmify.backends.locmem.LocmemBackend", "TASK_BACKEND": "default"},
        LOGGING_CONFIG=None,
    )
    django.setup()


ROOT = Path(__file__).resolve().parent.parent


def sandbox_site(workdir: Path, sandbox: Any) -> dict[str, str]:
    """The bench site (``bench/settings.py``: SQLite in ``workdir``, the database cache and Tasks backend)
    with crmify's Insightly backend on ``sandbox`` (a started ``SandboxServer``): set up in this process,
    migrated, its cache table made. Returns the environment its worker processes need."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "CRMIFY_BENCH_DB": str(workdir / "bench.sqlite3"),
        "CRMIFY_BENCH_BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "CRMIFY_BENCH_API_URL": sandbox.url,
        "CRMIFY_BENCH_API_KEY": sandbox.api_key,
    }
    os.environ.update(env)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    return env


def start_db_workers(env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` quiet ``db_worker`` processes of the bench site (:func:`sandbox_site`'s environment)."""
    command = [sys.executable, "-m", "django", "db_worker", "--interval", "0.1"]
    return [
        subprocess.Popen(
            [*command, "--no-startup-delay", "--verbosity", "0"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_site(workers: list[subprocess.Popen[bytes]], sandbox: Any) -> None:
    """Stop the workers (SIGTERM: each finishes its task first), then the sandbox."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)
    sandbox.stop()


class Scorecard:
    """The verdicts of one benchmark: printed as they come, and appended as JSON lines to the file named
    by ``CRMIFY_BENCH_RESULTS`` (set by ``bench/run_all.py``, which turns them into the README's table).

    A check without a target (``ok=None``) is a figure reported for context, not judged.
    """

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.failures = 0

    def check(self, measure: str, result: str, target: str = "", ok: bool | None = None) -> None:
        self.failures += ok is False
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {verdict:4}  {measure}: {result}" + (f"   (target {target})" if target else ""))
        path = os.environ.get("CRMIFY_BENCH_RESULTS")
        if path:
            row = {"bench": self.bench, "measure": measure, "result": result}
            row |= {"target": target, "verdict": verdict}
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")

    @property
    def exit_status(self) -> int:
        return 1 if self.failures else 0
