"""The daily quota's two shares: a backfill chunk that cannot be sent waits as one deferred task (no claim,
no ledger row, no task per lead), and the share kept for live changes stops the backfill, never a sign-up.

Over real HTTP against the sandbox; the dummy Tasks backend records what would run later.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from crmify.compat import task_backends
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.ratelimit import QuotaShare, QuotaTracker
from crmify.sandbox import SandboxServer
from crmify.worker import (
    BACKFILL_PRIORITY,
    QUOTA_WAKE_SPREAD,
    process_lead_task,
    process_leads_task,
)
from tests.conftest import FAST_SANDBOX, crmify_for
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def recorded(sandbox: SandboxServer, configure: Callable[..., None]) -> Iterator[Any]:
    """The sandbox as the CRM, tasks recorded by the dummy backend, an empty shared cache."""
    sandbox.set_faults(requests_per_second=None)
    cache.clear()
    configure(**crmify_for(sandbox, task_backend="dummy", **FAST_SANDBOX))
    backend = task_backends["dummy"]
    backend.clear()
    yield backend
    backend.clear()
    cache.clear()


def _pending_leads(count: int, backend: Any) -> list[int]:
    ids = [lead_of(make_user()).pk for _ in range(count)]
    backend.clear()  # the save path's own tasks: this test runs the chunk itself
    return ids


def test_a_chunk_that_meets_a_used_up_quota_waits_as_one_task_without_a_claim_or_ledger_row(
    recorded: Any, sandbox: SandboxServer
) -> None:
    ids = _pending_leads(5, recorded)
    until = QuotaTracker("insightly", cache).exhaust(60)

    counts = process_leads_task.call(ids)

    assert counts == {"waiting for the quota": 5}
    assert sandbox.stats()["total"] == 0 and not LedgerEntry.objects.exists()
    for lead in Lead.objects.filter(pk__in=ids):
        # Visible on the changelist: retrying, due at the reset, why in its last error; not an attempt.
        assert (lead.sync_state, lead.next_attempt_at, lead.attempts, lead.claim_token) == (
            SyncState.RETRYING,
            until,
            0,
            "",
        )
        assert "daily API quota is used up; calls resume at" in lead.last_error
    # One task for the five, after the reset, spread over a few seconds, behind live work.
    (task,) = recorded.results
    assert (task.task.name, task.args) == ("process_leads_task", [ids])
    assert until <= task.task.run_after <= until + datetime.timedelta(seconds=QUOTA_WAKE_SPREAD)
    assert task.task.priority == BACKFILL_PRIORITY


def test_the_share_kept_for_live_changes_stops_the_backfill_but_not_a_sign_up(
    recorded: Any, sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(LIVE_QUOTA_SHARE=0.25)
    chunk = _pending_leads(3, recorded)
    live = lead_of(make_user())
    recorded.clear()
    tracker = QuotaTracker("insightly", cache, window_seconds=600)
    # The backfill made 75 of the window's 100 calls: what is left is the live changes' share.
    tracker.observe(limit=100, remaining=99)
    for _ in range(75):
        tracker.count(QuotaShare.BACKFILL)
    tracker.observe(limit=100, remaining=25)
    resets_at = tracker.state().resets_at
    assert resets_at is not None

    assert process_leads_task.call(chunk) == {"waiting for the quota": 3}
    assert process_lead_task.call(live.pk) == "synced"

    assert sandbox.stats()["total"] == 3  # the status table, then the sign-up's lookup and create
    assert Lead.objects.get(pk=live.pk).sync_state == SyncState.SYNCED
    waiting = Lead.objects.filter(pk__in=chunk)
    assert {lead.sync_state for lead in waiting} == {SyncState.RETRYING}
    assert {lead.next_attempt_at for lead in waiting} == {resets_at}
    assert "25 calls are kept for live changes" in waiting[0].last_error
    # The sandbox's own quota (no limit: a fresh window of 1,000,000) counts the sign-up's 3 calls.
    assert tracker.state().used_by(QuotaShare.LIVE) == 3
    (task,) = recorded.results
    assert task.args == [chunk] and task.task.run_after >= resets_at


def test_a_chunk_sends_while_its_share_lasts_and_counts_its_calls(
    recorded: Any, sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    chunk = _pending_leads(4, recorded)
    QuotaTracker("insightly", cache, window_seconds=600).observe(limit=1000, remaining=999)

    assert process_leads_task.call(chunk) == {"synced": 4}

    assert not recorded.results  # nothing deferred, nothing handed back
    state = QuotaTracker("insightly", cache).state()
    assert state.used_by(QuotaShare.BACKFILL) == sandbox.stats()["total"] == 1 + 4 * 2


def test_a_live_change_waiting_for_the_quota_costs_no_claim_and_no_ledger_row(
    recorded: Any, sandbox: SandboxServer
) -> None:
    (lead_id,) = _pending_leads(1, recorded)
    until = QuotaTracker("insightly", cache).exhaust(60)

    assert process_lead_task.call(lead_id) == "retrying"

    assert sandbox.stats()["total"] == 0 and not LedgerEntry.objects.exists()
    lead = Lead.objects.get(pk=lead_id)
    assert (lead.sync_state, lead.next_attempt_at, lead.attempts) == (SyncState.RETRYING, until, 0)
    (task,) = recorded.results
    assert (task.task.name, task.args) == ("process_lead_task", [lead_id])
    assert task.task.run_after >= until
