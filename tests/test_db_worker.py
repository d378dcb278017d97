"""A real ``db_worker`` process (django-tasks-db) drains the syncs the site queued, each lead exactly once.

The locmem CRM lives inside the worker processes, so the test reads the outcome where the site would: the
``Lead`` rows and the ledger. The worker opens the test's own database (``CRMIFY_WORKER_DB``, see
``tests/settings.py``); on SQLite that is a file both processes share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from crmify.models import Lead, LedgerEntry, SyncState
from tests.factories import lead_of, make_user

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_worker(crmify: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    """``manage.py db_worker --batch`` on the test database: runs every queued task, then exits.

    ``crmify`` holds ``CRMIFY`` keys the worker gets on top of the test settings' own.
    """
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        name = os.path.abspath(name)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CRMIFY_WORKER_DB": name,
        "CRMIFY_WORKER_CRMIFY": json.dumps(crmify or {}),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--batch",
            "--no-startup-delay",
            "--interval=0",
            "--queue-name=default",
            "--verbosity=0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_db_worker_processes_drain_queued_syncs_exactly_once(
    configure: Callable[..., None],
) -> None:
    configure(TASK_BACKEND="default")
    users = [make_user(first_name=f"Worker {n}") for n in range(12)]
    # Changed again before any worker ran: two tasks for these leads, still one create each.
    for user in users[:4]:
        user.last_name = "Changed"
        user.save()
    assert DBTaskResult.objects.count() == 16
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.PENDING}

    # Two workers race over the queue; the claim keeps them off each other's leads.
    workers = [start_worker(), start_worker()]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}
    for user in users:
        lead = lead_of(user)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert lead.external_id
        assert lead.synced_fingerprint == lead.fingerprint
        ledger = list(lead.ledger.values_list("operation", "outcome"))
        assert ledger == [("create", "ok")], f"{lead}: {ledger}"
    assert LedgerEntry.objects.count() == len(users)
    assert {lead.last_name for lead in Lead.objects.filter(last_name="Changed")} == {"Changed"}
    assert Lead.objects.filter(last_name="Changed").count() == 4
