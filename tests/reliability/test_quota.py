"""Quota exhaustion: the sandbox's daily quota runs out in the middle of a run, over real HTTP.

The run goes through the database queue and a ``db_worker`` in this process (``--batch``: every task due
now, then return), so the worker, the admin's banner and the test share one cache, as a site's processes
share theirs. The sandbox's "day" is a few seconds long, so its ``Retry-After`` (when calls resume) comes
within the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from crmify import backfill
from crmify.admin.display import exact_time
from crmify.backfill import BackfillOptions
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.ratelimit import QuotaTracker
from crmify.sandbox import SandboxServer
from crmify.sweeper import sweep
from tests.conftest import FAST_SANDBOX, crmify_for
from tests.factories import make_user
from tests.reliability.processes import run_db_worker_here, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

#: Calls the sandbox allows per "day": the status table, then a lookup and a create per new lead, so the
#: sixth lead's create is refused.
QUOTA = 12
#: The sandbox's "day", in seconds: long enough for the test's checks while the quota is used up, even on
#: a loaded machine.
WINDOW = 20.0
USERS = 10
CHANGELIST = reverse("admin:crmify_lead_changelist")


def control(sandbox: SandboxServer, method: str, path: str, **body: Any) -> Any:
    """The sandbox's control API over HTTP, as an operator (or a CI script) would steer it."""
    response = requests.request(method, sandbox.control_url + path, json=body or None, timeout=5)
    response.raise_for_status()
    return response.json()


def work() -> None:
    """The in-process worker: runs every task that is due, then returns."""
    run_db_worker_here()


@pytest.fixture
def staff(client: Client) -> Iterator[Client]:
    """The test client, logged in as a superuser made before crmify points at the sandbox; an empty
    cache (status tables and quota state of earlier tests are kept per sandbox URL)."""
    cache.clear()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    Lead.objects.all().delete()
    yield client
    cache.clear()


def test_a_used_up_quota_stops_calls_until_its_reset_and_the_run_then_completes(
    staff: Client, sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(**crmify_for(sandbox, task_backend="default", **FAST_SANDBOX))
    control(sandbox, "PUT", "faults", requests_per_second=None)
    control(sandbox, "PUT", "faults", daily_quota=QUOTA, quota_window_seconds=WINDOW)
    users = [make_user(first_name=f"Quota {n}") for n in range(USERS)]
    work()

    # Five leads went through; the sixth lead's create met the 429 with the quota headers.
    stats = control(sandbox, "GET", "stats")
    assert (stats["total"], stats["throttled"]["quota"], stats["quota"]["remaining"]) == (
        QUOTA + 1,
        1,
        0,
    )
    synced = Lead.objects.filter(sync_state=SyncState.SYNCED)
    assert synced.count() == 5
    resumes_at = QuotaTracker("insightly", cache).state().exhausted_until
    assert resumes_at is not None and resumes_at > timezone.now()
    waiting = Lead.objects.exclude(sync_state=SyncState.SYNCED)
    assert waiting.count() == USERS - 5
    for lead in waiting:
        # Waiting for the quota is not a failed attempt; the reason says when calls resume.
        assert (lead.sync_state, lead.attempts, lead.next_attempt_at) == (
            SyncState.RETRYING,
            0,
            resumes_at,
        )
        assert "daily API quota is used up; calls resume at" in lead.last_error

    # The site keeps working meanwhile: changes queue, workers and the sweeper run, nothing is called.
    for user in users:
        user.last_name = f"Renamed {user.pk}"
        user.save()
    work()
    sweep()
    work()
    assert timezone.now() < resumes_at, (
        "the machine is too slow for WINDOW: checks ran after the reset"
    )
    assert control(sandbox, "GET", "stats")["total"] == QUOTA + 1

    # Staff see why and when calls resume.
    html = staff.get(CHANGELIST).content.decode()
    assert "daily API quota is used up: calls resume at" in html
    assert exact_time(resumes_at) in html
    assert html.count("quota is used up; calls resume at") >= USERS  # each lead says why it waits

    # The quota resets (a new day for the sandbox); at the time it said, crmify sends again.
    control(sandbox, "PUT", "faults", daily_quota=1000)
    wait_until(lambda: timezone.now() > resumes_at, timeout=WINDOW + 5, message="the reset")
    wait_until(lambda: _drained(), timeout=60, message="every lead synced")

    leads = control(sandbox, "GET", "leads")
    crm = {row["EMAIL"]: row for row in leads}
    assert len(crm) == len(leads) == USERS  # nothing lost, nothing twice
    for user in users:
        assert crm[user.email]["LAST_NAME"] == f"Renamed {user.pk}"
    stats = control(sandbox, "GET", "stats")
    assert stats["throttled"]["quota"] == 1
    assert "quota is used up" not in staff.get(CHANGELIST).content.decode()


def _drained() -> bool:
    """Run the worker and the sweeper once; True when every lead is synced."""
    work()
    sweep()
    return not Lead.objects.exclude(sync_state=SyncState.SYNCED).exists()


#: A backfill over several quota windows (the short version of ``bench/million.py``): calls per "day",
#: the day's length in seconds, and the share kept for live changes.
BACKFILL_QUOTA = 20
BACKFILL_WINDOW = 4.0
BACKFILL_LEADS = 40


def test_a_backfill_over_several_quota_windows_costs_about_one_row_of_each_kind_per_lead(
    staff: Client, sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(
        **crmify_for(
            sandbox,
            task_backend="default",
            QUOTA_WINDOW_SECONDS=BACKFILL_WINDOW,
            DAILY_QUOTA=BACKFILL_QUOTA,
            **FAST_SANDBOX,
        ),
        AUTO_SYNC=False,  # the site's people exist before crmify: the backfill brings them in
        LIVE_QUOTA_SHARE=0.2,
    )
    control(sandbox, "PUT", "faults", requests_per_second=None)
    control(
        sandbox,
        "PUT",
        "faults",
        daily_quota=BACKFILL_QUOTA,
        quota_window_seconds=BACKFILL_WINDOW,
    )
    for _ in range(BACKFILL_LEADS - 1):
        make_user()
    people = User.objects.count()  # the staff user is one of the site's people too
    assert people == BACKFILL_LEADS
    tasks_before = DBTaskResult.objects.count()
    report = backfill.plan(BackfillOptions(batch_size=10))
    backfill.start(BackfillOptions(batch_size=10), report=report)

    # The workers go round until every lead is synced; each quota window the backfill stops at its
    # share (16 of 20 calls) and its chunks wait, as one deferred task each, for the next window.
    windows = 1
    last_remaining = BACKFILL_QUOTA
    deadline = time.monotonic() + 20 * BACKFILL_WINDOW
    while Lead.objects.exclude(sync_state=SyncState.SYNCED).exists() or Lead.objects.count() < (
        BACKFILL_LEADS
    ):
        assert time.monotonic() < deadline, "the backfill did not finish"
        work()
        remaining = control(sandbox, "GET", "stats")["quota"]["remaining"]
        windows += remaining > last_remaining
        last_remaining = remaining
        time.sleep(0.1)

    stats = control(sandbox, "GET", "stats")
    assert stats["throttled"] == {"rate": 0, "quota": 0, "fault": 0}  # no 429 of any kind
    assert windows >= 3  # the quota made it wait twice at least
    assert (
        report.quota_windows == 3
    )  # the dry run said so: 41 calls (a listing, 40 creates) at 16 a day
    crm = control(sandbox, "GET", "leads")
    emails = sorted(row["EMAIL"] for row in crm)
    assert emails == sorted(User.objects.values_list("email", flat=True))  # none lost, none twice
    assert set(Lead.objects.values_list("attempts", flat=True)) == {0}  # waiting is no attempt
    ledger_per_lead = LedgerEntry.objects.count() / BACKFILL_LEADS
    tasks_per_lead = (DBTaskResult.objects.count() - tasks_before) / BACKFILL_LEADS
    assert ledger_per_lead <= 1.1, ledger_per_lead
    assert tasks_per_lead <= 1.1, tasks_per_lead
