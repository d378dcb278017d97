"""What the in-process benchmarks share: Django configured on a throw-away SQLite file, crmify on the
database Tasks backend with the locmem CRM (a bench overrides ``CRMIFY`` where it needs the sandbox). The
apps and constants come from ``bench/settings.py`` (the worker processes' settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
        # No worker runs here: the sweeps and polls a worker would schedule itself (SWEEP_INTERVAL,
        # PULL_INTERVAL) stay out of the queue the bench counts and the backfill's send task looks at.
        CRMIFY={
            "BACKEND": "crmify.backends.locmem.LocmemBackend",
            "TASK_BACKEND": "default",
            "SWEEP_INTERVAL": None,
            "PULL_INTERVAL": None,
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def fresh_database(prefix: str, *, extra_apps: Sequence[str] = ()) -> Path:
    """A new SQLite file in a temporary folder, configured (:func:`configure`) and migrated: where an
    in-process bench runs. Its path, for the processes the bench starts."""
    db_path = Path(tempfile.mkdtemp(prefix=prefix)) / "bench.sqlite3"
    configure(db_path, extra_apps=extra_apps)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return db_path


def sandbox_crmify(backend: str, api_key: str, url: str) -> dict[str, Any]:
    """``CRMIFY`` for a bench against a sandbox over HTTP: the backend ``backend`` (a dotted path) with
    no pace of its own in the way, and the database Tasks backend."""
    return {
        "BACKEND": backend,
        "BACKEND_AUTH": {"API_KEY": api_key},
        "BACKEND_OPTIONS": {"API_URL": url, "TIMEOUT": 10, "REQUESTS_PER_SECOND": 10_000},
        "TASK_BACKEND": "default",
        "SWEEP_INTERVAL": None,  # as in configure(): no worker here to run them
        "PULL_INTERVAL": None,
    }


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


def sandbox_env(server: Any, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench whose worker processes run ``bench/settings.py`` against the sandbox
    ``server`` over HTTP with the Insightly backend, on a SQLite file in ``workdir``; ``extra`` adds
    ``CRMIFY_BENCH_*`` variables. The bench puts it in its own ``os.environ`` too, before Django loads."""
    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "CRMIFY_BENCH_DB": str(workdir / "bench.sqlite3"),
        "CRMIFY_BENCH_BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "CRMIFY_BENCH_API_URL": server.url,
        "CRMIFY_BENCH_API_KEY": server.api_key,
        **extra,
    }


def sandbox_site(server: Any, workdir: Path, **extra: str) -> dict[str, str]:
    """The bench site of :func:`sandbox_env` set up in this process too: its environment exported,
    Django loaded, the database migrated and the cache table made. Returns the environment its worker
    processes need (:func:`start_worker`)."""
    env = sandbox_env(server, workdir, **extra)
    os.environ.update(env)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    return env


WORKER = [sys.executable, "-m", "django", "db_worker"]


def start_worker(env: dict[str, str], interval: str) -> subprocess.Popen[bytes]:
    """One ``manage.py db_worker`` polling every ``interval`` seconds, in the environment ``env``
    (:func:`sandbox_env`), its output discarded."""
    return subprocess.Popen(
        [*WORKER, "--interval", interval, "--no-startup-delay", "--no-reload"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_workers(*workers: subprocess.Popen[bytes]) -> None:
    """Ask ``workers`` to stop, and wait for them."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(10)
