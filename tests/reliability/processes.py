"""Worker processes a test starts against its own database, and the services they need.

``start_db_worker`` runs django-tasks-db's ``db_worker``; ``start_rq_worker`` runs django-rq's ``rqworker``
for the django-tasks-rq backend (Tasks alias ``"rq"`` in ``tests/settings.py``, on the Redis database
``settings.REDIS_URL``). Both are ``manage.py`` commands on ``tests.settings`` in a child process, so a test
can ``kill -9`` them like an operator's bad day. The child opens the test's database (``CRMIFY_WORKER_DB``)
and gets ``CRMIFY`` keys on top of the test settings' own (``CRMIFY_WORKER_CRMIFY``), see
``tests/settings.py``. Used by ``tests/reliability/``, ``tests/test_db_worker.py`` and
``tests/test_backfill.py``; ``run_db_worker_here`` runs the same worker in the test process instead.

A worker's output goes to a pipe read when it exits (``finish``, ``stop``, ``kill``): keep long-running
workers quiet (``--verbosity=0`` logs warnings only) or the pipe fills. Tests that start workers need
``@pytest.mark.slow`` and ``@pytest.mark.django_db(transaction=True)``: a worker only sees what the test
committed. Children die with the test process (``PR_SET_PDEATHSIG``), so an interrupted run leaves none.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django_tasks_db.management.commands.db_worker import Worker as DbWorker

from tests.conftest import service_required

ROOT = Path(__file__).resolve().parent.parent.parent

Worker = subprocess.Popen[str]


def worker_env(crmify: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of a ``manage.py`` child on the test settings and the test's own database.

    ``crmify`` holds ``CRMIFY`` keys the child gets on top of the test settings' (a sandbox URL, a Tasks
    backend). On PostgreSQL the test database is ``TEST['NAME']``, not ``NAME``; on SQLite it is a file the
    processes share.
    """
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        name = os.path.abspath(name)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CRMIFY_WORKER_DB": name,
        "CRMIFY_WORKER_CRMIFY": json.dumps(dict(crmify or {})),
    }


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, so an interrupted run leaves no worker behind."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _start(arguments: list[str], crmify: Mapping[str, Any] | None) -> Worker:
    return subprocess.Popen(
        [sys.executable, "-m", "django", *arguments],
        cwd=ROOT,
        env=worker_env(crmify),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent,
    )


def start_db_worker(crmify: Mapping[str, Any] | None = None, *, batch: bool = True) -> Worker:
    """``manage.py db_worker`` on the ``default`` queue; with ``batch`` it exits once the queue is empty.

    Pair it with ``CRMIFY["TASK_BACKEND"] = "default"`` (django-tasks-db) in the test and in ``crmify``.
    """
    arguments = ["db_worker", "--no-startup-delay", "--interval=0.1", "--queue-name=default"]
    return _start([*arguments, "--verbosity=0", *(["--batch"] if batch else [])], crmify)


def run_db_worker_here(worker_id: str = "in-process") -> None:
    """django-tasks-db's worker in this process, ``--batch``: every task due now on ``default``, then return.

    Its ``Worker`` class rather than ``call_command("db_worker")``: the command also sets its loggers'
    levels, adds log handlers and replaces SIGINT/SIGTERM handlers for the whole test process. In-process,
    the worker shares the test's cache and its log records reach the test's capture. Used by
    ``tests/reliability/test_quota.py`` and ``tests/test_security.py``.
    """
    DbWorker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=worker_id,
        excluded_queue_names=[],
    ).run()


def start_rq_worker(
    crmify: Mapping[str, Any] | None = None,
    *,
    burst: bool = True,
    name: str | None = None,
    worker_class: str = "rq.worker.SimpleWorker",
) -> Worker:
    """``manage.py rqworker default`` (django-rq) for the django-tasks-rq backend, Tasks alias ``"rq"``.

    With ``burst`` it exits once the queue is empty. It runs RQ's scheduler too (the deferred retries).
    ``SimpleWorker`` runs jobs in the worker process: RQ's default forks a process per job, which costs
    more than a lead's sync. Call ``require_redis()`` first; pair it with ``CRMIFY["TASK_BACKEND"] = "rq"``.
    """
    # django-tasks-rq's Job class runs a Task's function (RQ's own would call the Task object).
    arguments = ["rqworker", "default", "--job-class=django_tasks_rq.Job", "--with-scheduler"]
    arguments += [f"--worker-class={worker_class}", "--verbosity=0"]
    if name:
        arguments.append(f"--name={name}")
    return _start([*arguments, *(["--burst"] if burst else [])], crmify)


def finish(worker: Worker, timeout: float = 120) -> str:
    """Wait for a batch or burst worker to exit and return its output; fail the test if it failed."""
    output = worker.communicate(timeout=timeout)[0]
    assert worker.returncode == 0, output
    return output


def kill(worker: Worker) -> None:
    """``kill -9``: no cleanup in the worker, no goodbye to the queue or the database."""
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL


def stop(worker: Worker) -> str:
    """Stop a long-running worker cleanly (SIGTERM: it finishes its job first) and return its output."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    return worker.communicate(timeout=60)[0]


def wait_until(condition: Callable[[], bool], timeout: float = 60, message: str = "") -> None:
    """Poll ``condition`` every 20 ms until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(0.02)


# -- the services ------------------------------------------------------------------------------------


def require_postgres() -> None:
    """Skip unless the test database is PostgreSQL (the SQLite pass skips; no service lookup there)."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (CRMIFY_TEST_DB=postgres)")


def require_redis() -> Any:
    """The tests' Redis database (``settings.REDIS_URL``), emptied; ``service_required`` when it is down."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_required("Redis", f"nothing answers on {settings.REDIS_URL} ({exc})")
    client.flushdb()
    return client
