"""Concurrency on PostgreSQL: real row locks, one connection per thread.

Runs in the PostgreSQL pass (``CRMIFY_TEST_DB=postgres``); elsewhere it skips. With
``CRMIFY_TEST_DB=postgres`` and no server it skips on a developer's machine and fails in CI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from django.db import connection, transaction

from crmify import api
from crmify.models import Lead, SyncState
from crmify.worker import process_lead
from tests.conftest import postgres_pass_only
from tests.factories import lead_of, make_user


@pytest.fixture(scope="module", autouse=True)
def _postgres() -> None:
    """Module-scoped so it decides before pytest-django sets up a database."""
    postgres_pass_only()


pytestmark = pytest.mark.django_db(transaction=True)


class SlowCountingCRM:
    """A plain backend that holds each call long enough for a second worker to try the same lead."""

    calls: ClassVar[list[str]] = []
    lock = threading.Lock()

    def sync_lead(self, lead: Lead) -> str:
        with SlowCountingCRM.lock:
            SlowCountingCRM.calls.append(lead.email)
        time.sleep(0.3)
        return f"pg-{lead.pk}"

    def delete_lead(self, lead_id: str) -> bool:
        return True


@pytest.fixture
def slow_crm(configure: Callable[..., None]) -> Iterator[type[SlowCountingCRM]]:
    configure(BACKEND="tests.test_postgres.SlowCountingCRM", TASK_BACKEND="dummy")
    SlowCountingCRM.calls.clear()
    yield SlowCountingCRM
    SlowCountingCRM.calls.clear()


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released at the same instant, each on its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except BaseException as exc:  # reported by the assertion on results
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_runs_on_postgresql() -> None:
    assert connection.vendor == "postgresql"


def test_two_concurrent_claims_on_one_lead_make_exactly_one_backend_call(
    slow_crm: type[SlowCountingCRM],
) -> None:
    lead = lead_of(make_user(email="race@example.com"))
    assert lead.sync_state == SyncState.PENDING
    results = run_together(2, lambda _: process_lead(lead.pk))
    assert sorted(results) == ["skipped", "synced"]
    assert slow_crm.calls == ["race@example.com"]
    lead.refresh_from_db()
    assert (lead.sync_state, lead.external_id) == (SyncState.SYNCED, f"pg-{lead.pk}")


def test_concurrent_first_saves_of_one_row_create_one_lead(
    slow_crm: type[SlowCountingCRM],
) -> None:
    user = make_user()
    Lead.objects.all().delete()

    def first_save(index: int) -> int:
        with transaction.atomic():
            lead = api.sync(type(user).objects.get(pk=user.pk))
            if index == 0:
                time.sleep(0.2)  # hold the new row uncommitted while the other save inserts
            return lead.pk

    results = run_together(2, first_save)
    assert all(isinstance(pk, int) for pk in results), results
    assert len(set(results)) == 1
    assert Lead.objects.count() == 1
