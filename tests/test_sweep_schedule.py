"""The sweeps schedule themselves (``SWEEP_INTERVAL``): no cron on the embedded default.

``migrate`` (every deploy, a fresh demo) queues the first sweep; each sweep queues the next before it
works, so a worker that dies mid-sweep does not end the schedule; one schedule at a time, and one sweep at
a time across every process. The end-to-end test runs a real ``db_worker`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from crmify.compat import task_backends
from crmify.crm_state import shared_cache
from crmify.models import Lead, SyncState
from crmify.sweeper import start_sweeping, sweep, sweep_task
from tests.factories import lead_of, make_user
from tests.reliability.processes import start_db_worker, stop, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SWEEPS = {"TASK_BACKEND": "default", "SWEEP_INTERVAL": 1, "SWEEP_PENDING_AFTER": 1}


def lose_enqueue(lead: Lead) -> None:
    """The lead's task never reached the queue (a broker down, a process killed before its commit)."""
    DBTaskResult.objects.filter(args_kwargs__args=[lead.pk]).delete()
    Lead.objects.filter(pk=lead.pk).update(queued_at=timezone.now() - timedelta(hours=1))


def sweep_tasks() -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(task_path="crmify.tasks.sweep_task"))


@pytest.mark.slow
def test_a_lost_enqueue_is_sent_with_only_the_worker_running(
    configure: Callable[..., None],
) -> None:
    configure(**SWEEPS)
    call_command("migrate", verbosity=0)  # the deploy: it queues the first sweep
    assert len(sweep_tasks()) == 1
    lost = lead_of(make_user(first_name="Lost"))
    lose_enqueue(lost)

    worker = start_db_worker(SWEEPS, batch=False)
    try:
        wait_until(
            lambda: Lead.objects.get(pk=lost.pk).sync_state == SyncState.SYNCED,
            timeout=60,
            message="the lost lead's sync",
        )
        # The schedule goes on by itself: a lead lost later is found by a later sweep.
        later = lead_of(make_user(first_name="Later"))
        lose_enqueue(later)
        wait_until(
            lambda: Lead.objects.get(pk=later.pk).sync_state == SyncState.SYNCED,
            timeout=60,
            message="the later lost lead's sync",
        )
    finally:
        stop(worker)
    done = [task for task in sweep_tasks() if task.status == "SUCCESSFUL"]
    assert len(done) >= 2
    # One schedule: never more than the next sweep waiting.
    assert len([task for task in sweep_tasks() if task.status == "READY"]) <= 1


def test_one_schedule_at_a_time(configure: Callable[..., None]) -> None:
    configure(TASK_BACKEND="dummy", SWEEP_INTERVAL=60)
    backend = task_backends["dummy"]
    backend.clear()
    shared_cache().delete("crmify:sweep:schedule")  # an earlier test's schedule
    assert start_sweeping() is True
    assert start_sweeping() is False  # one is live
    first = backend.results[-1]
    token = first.args[1]
    result = sweep_task.using(backend="immediate").enqueue(False, token)
    assert result.return_value["skipped"] is False
    following = backend.results[-1]
    assert following.args[1] != token
    run_after = following.task.run_after
    assert run_after is not None
    assert 55 <= (run_after - timezone.now()).total_seconds() <= 61
    # The replaced token's schedule ends: it sweeps no more and queues nothing.
    count = len(backend.results)
    assert sweep_task.using(backend="immediate").enqueue(False, token).return_value["skipped"]
    assert len(backend.results) == count
    backend.clear()


def test_no_schedule_when_sweeping_is_left_to_cron(configure: Callable[..., None]) -> None:
    configure(TASK_BACKEND="dummy", SWEEP_INTERVAL=None)
    assert start_sweeping() is False
    configure(TASK_BACKEND="immediate", SWEEP_INTERVAL=60)  # cannot defer: crmify.W065 says so
    assert start_sweeping() is False


def test_one_sweep_at_a_time_across_processes() -> None:
    cache = shared_cache()
    cache.add("crmify:sweep:running", 1)  # another process is sweeping
    try:
        assert sweep().skipped
        assert str(sweep()) == "skipped: another sweep is running"
    finally:
        cache.delete("crmify:sweep:running")
    assert not sweep().skipped
