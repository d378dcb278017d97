"""The sync health page (issue 15, point 7): the CRM's current state and four server-side SVG charts, from
the ledger and the shared quota state, with no CRM call on render and queries that do not grow with the
ledger or the leads."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crmify import api, crm_state, health
from crmify.backends import locmem
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from tests.admin_fixtures import login, make_lead, make_staff, people
from tests.conftest import crmify_for

__all__ = ["login", "people"]  # fixtures

pytestmark = pytest.mark.django_db

HEALTH = reverse("admin:crmify_lead_health")
CHANGELIST = reverse("admin:crmify_lead_changelist")
Outcome = LedgerEntry.Outcome


def call(
    minutes_ago: float, outcome: str = Outcome.OK, status: int | None = 200, **more: object
) -> None:
    LedgerEntry.objects.create(
        operation=str(more.pop("operation", "update")),
        started_at=timezone.now() - timedelta(minutes=minutes_ago),
        outcome=outcome,
        http_status=status,
        **more,  # type: ignore[arg-type]
    )


# -- the CRM's state ---------------------------------------------------------------------------------


def test_no_recent_call_is_said_as_such() -> None:
    call(30)
    assert health.crm_state().code == health.CrmStateCode.UNKNOWN


def test_an_answered_last_call_means_reachable() -> None:
    call(2, Outcome.TRANSIENT, None, error="ConnectionError")
    call(1)
    assert health.crm_state().code == health.CrmStateCode.REACHABLE


def test_connection_errors_timeouts_and_5xx_mean_unreachable_since_the_first_of_them() -> None:
    call(4)
    call(3, Outcome.TRANSIENT, 503, error="503 Service Unavailable")
    call(2, Outcome.TRANSIENT, None, error="ReadTimeout")
    call(1, Outcome.TRANSIENT, None, error="ConnectionError: refused")
    state = health.crm_state()
    assert state.code == health.CrmStateCode.UNREACHABLE
    assert "The last 3 calls did not get an answer: ConnectionError: refused" in state.detail
    assert state.since is not None
    assert timedelta(minutes=2.9) < timezone.now() - state.since < timedelta(minutes=3.1)


def test_the_crm_marked_down_by_the_workers_is_unreachable_whatever_the_ledger_says() -> None:
    call(1)  # an answered call, a minute ago
    for lead_id in (1, 2, 3):  # three leads in a row without an answer: the workers mark it down
        crm_state.note_failure("Could not reach the CRM: connection refused.", lead_id)
    try:
        state = health.crm_state()
        assert state.code == health.CrmStateCode.UNREACHABLE
        assert "connection refused" in state.detail
        assert state.since == crm_state.crm_state().down_since
    finally:
        crm_state.forget_outage()
    assert health.crm_state().code == health.CrmStateCode.REACHABLE


def test_a_429_means_rate_limited_and_a_refusal_is_not_a_call() -> None:
    call(1, Outcome.TRANSIENT, 429)
    call(0.5, Outcome.REFUSED, None, operation="status")
    assert health.crm_state().code == health.CrmStateCode.RATE_LIMITED


def test_the_shared_quota_state_says_key_rejected_or_quota_used_up(
    sandbox: SandboxServer, configure: Callable[..., None]
) -> None:
    cache.clear()
    configure(**crmify_for(sandbox))
    tracker = api.crm_backend().quota  # type: ignore[attr-defined]  # the HTTP backends' shared state
    tracker.exhaust(600)
    assert health.crm_state().code == health.CrmStateCode.QUOTA_EXHAUSTED
    tracker.mark_auth_failed()
    assert health.crm_state().code == health.CrmStateCode.KEY_REJECTED
    cache.clear()


# -- the series --------------------------------------------------------------------------------------


def test_calls_per_minute_counts_each_outcome_in_its_minute() -> None:
    for _ in range(3):
        call(0)
    call(0, Outcome.TRANSIENT, 503)
    call(90)  # outside the hour
    series = health.calls_per_minute()
    assert len(series.points) == health.CALL_MINUTES
    assert series.points[-1][1] == {"ok": 3.0, "transient": 1.0, "permanent": 0.0}
    assert sum(sum(point.values()) for _label, point in series.points) == 4


def test_leads_per_hour_counts_each_lead_once() -> None:
    lead = make_lead()
    for _ in range(3):
        call(0, lead=lead)
    call(0, Outcome.PERMANENT, 400, lead=make_lead())
    point = health.leads_per_hour().points[-1][1]
    assert point == {"synced": 1.0, "failed": 1.0}


def test_latency_percentiles_come_from_the_commit_and_the_sync_times() -> None:
    now = timezone.now()
    for seconds in [1] * 8 + [20, 200]:
        make_lead(
            sync_state=SyncState.SYNCED,
            queued_at=now - timedelta(seconds=seconds),
            last_synced_at=now,
        )
    point = health.latency_per_hour().points[-1][1]
    assert point == {"p50": 1.0, "p90": 30.0, "p99": 300.0}


def test_quota_per_day_counts_todays_calls() -> None:
    call(0)
    call(0, Outcome.PERMANENT, 400)
    call(0.1, Outcome.REFUSED, None, operation="status")
    call(60 * 24 * 10)  # ten days ago
    series = health.quota_per_day()
    assert len(series.points) == health.QUOTA_DAYS
    assert series.points[-1][1] == {"calls": 2.0}


# -- the page ----------------------------------------------------------------------------------------


def test_the_changelist_links_to_the_page_and_it_draws_four_svg_charts(
    login: Callable[[str], Client],
) -> None:
    client = login("viewer")
    assert f'href="{HEALTH}"' in client.get(CHANGELIST).content.decode()
    lead = make_lead()
    call(1, lead=lead)
    call(1, Outcome.TRANSIENT, None, error="ConnectionError", lead=lead)
    page = client.get(HEALTH)
    content = page.content.decode()
    assert page.status_code == 200
    assert content.count('<svg role="img"') == 4
    assert len(re.findall(r'<rect class="crmify-bar crmify-bar--ok"', content)) == 1
    assert len(re.findall(r'<rect class="crmify-bar crmify-bar--transient"', content)) == 1
    assert "Unreachable" in content
    assert not re.search(r"(src|href)=\"https?://", content)  # nothing from a CDN
    assert '<meta http-equiv="refresh"' in content


def test_the_page_needs_the_view_permission(client: Client) -> None:
    client.force_login(make_staff("nobody"))
    assert client.get(HEALTH).status_code == 403


def test_rendering_the_page_calls_no_crm(login: Callable[[str], Client]) -> None:
    client = login("root")
    before = LedgerEntry.objects.count()
    assert client.get(HEALTH).status_code == 200
    assert LedgerEntry.objects.count() == before and locmem.leads == {}


def _fill(leads: int) -> None:
    now = timezone.now()
    made = Lead.objects.bulk_create(
        Lead(
            email=f"p{i}@example.com",
            status="NotContacted",
            sync_state=SyncState.SYNCED if i % 3 else SyncState.FAILED,
            last_error="" if i % 3 else "400 Bad Request: " + "x" * 200,
            external_id=str(i),
            queued_at=now - timedelta(seconds=i % 50),
            last_synced_at=now,
        )
        for i in range(leads)
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            lead=lead,
            operation="update",
            started_at=now - timedelta(minutes=i % 2000),
            outcome=Outcome.OK if i % 4 else Outcome.TRANSIENT,
            http_status=200 if i % 4 else None,
        )
        for i, lead in enumerate(made)
    )


@pytest.mark.parametrize("url", [HEALTH, CHANGELIST], ids=["health page", "changelist"])
def test_queries_stay_the_same_with_10_or_1000_leads_and_ledger_rows(
    login: Callable[[str], Client], url: str
) -> None:
    client = login("root")
    counts = []
    for size in (10, 990):  # 10, then 1,000 in all
        _fill(size)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
