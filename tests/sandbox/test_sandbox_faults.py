"""Injected faults and the /_sandbox/ control API that steers them from another process."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import requests

from crmify.sandbox import Faults

if TYPE_CHECKING:
    from tests.sandbox.conftest import Api


def test_error_rate_answers_500_json_or_503_html(api: Api) -> None:
    api.server.set_faults(error_rate=1.0, seed=3)
    responses = [api.get("Leads") for _ in range(20)]

    assert {r.status_code for r in responses} == {500, 503}
    for response in responses:
        if response.status_code == 500:
            assert response.json()["Message"]
        else:
            assert response.headers["Content-Type"].startswith("text/html")
            assert "<html>" in response.text
        assert "X-RateLimit-Remaining" in response.headers


def test_seeded_faults_replay_the_same_sequence(api: Api) -> None:
    def run() -> list[int]:
        api.server.set_faults(error_rate=0.5, seed=11)
        return [api.get("LeadStatuses").status_code for _ in range(16)]

    first, second = run(), run()
    assert first == second
    assert 200 in first and (500 in first or 503 in first)


def test_burst_429_answers_retry_after_and_counts_as_fault(api: Api) -> None:
    api.server.set_faults(burst_429_rate=1.0)
    response = api.get("Leads")
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    stats = api.control("GET", "stats").json()
    assert stats["throttled"] == {"rate": 0, "quota": 0, "fault": 1}


def test_dropped_connection_raises_connection_error(api: Api) -> None:
    api.server.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        api.get("Leads")
    api.server.set_faults(drop_rate=0.0)
    assert api.get("Leads").status_code == 200
    assert api.control("GET", "stats").json()["requests"]["GET /Leads"] == {"dropped": 1, "200": 1}


def test_latency_delays_answers(api: Api) -> None:
    api.server.set_faults(latency=0.15, latency_jitter=0.05)
    started = time.monotonic()
    assert api.get("Leads").status_code == 200
    assert 0.15 <= time.monotonic() - started < 1.0


def test_create_timeout_still_creates_the_lead(api: Api) -> None:
    api.server.set_faults(create_timeout_rate=1.0, create_timeout_delay=1.0)
    with pytest.raises(requests.Timeout):
        api.post("Leads", json={"LAST_NAME": "Duplicate"}, timeout=0.2)

    leads = api.control("GET", "leads").json()
    assert [lead["LAST_NAME"] for lead in leads] == ["Duplicate"]
    # Only creates are held back: reads answer at once.
    assert api.get("Leads", timeout=0.5).status_code == 200


def test_faults_can_be_changed_over_http_while_running(api: Api) -> None:
    changed = api.control("PUT", "faults", json={"error_rate": 1.0, "seed": 1})
    assert changed.status_code == 200 and changed.json()["error_rate"] == 1.0
    assert api.server.faults.error_rate == 1.0
    assert api.get("Leads").status_code in (500, 503)

    current = api.control("GET", "faults").json()
    assert current == {
        **Faults().to_dict(),
        "requests_per_second": None,
        "error_rate": 1.0,
        "seed": 1,
    }
    api.control("PUT", "faults", json={"error_rate": 0})
    assert api.get("Leads").status_code == 200
    assert api.control("DELETE", "faults").json() == Faults().to_dict()


@pytest.mark.parametrize(
    "body", [{"error_rate": 2}, {"drop_rate": "high"}, {"no_such_fault": 1}, [1], "nonsense"]
)
def test_bad_fault_settings_are_rejected_over_http(api: Api, body: object) -> None:
    response = api.control("PUT", "faults", json=body)
    assert response.status_code == 400 and response.json()["Message"]
    assert api.server.faults.error_rate == 0.0


def test_control_api_is_exempt_from_auth_limits_and_faults(api: Api) -> None:
    api.server.set_faults(drop_rate=1.0, error_rate=1.0, daily_quota=0, requests_per_second=0.01)
    for path in ("faults", "leads", "stats", "health"):
        assert api.control("GET", path).status_code == 200


def test_reset_clears_leads_counters_and_quota(api: Api) -> None:
    api.server.set_faults(daily_quota=2)
    api.post("Leads", json={"LAST_NAME": "X"})
    api.get("Leads")
    assert api.get("Leads").status_code == 429

    assert api.control("POST", "reset").status_code == 200

    assert api.control("GET", "leads").json() == []
    stats = api.control("GET", "stats").json()
    assert stats["total"] == 0 and stats["quota"]["remaining"] == 2
    assert api.get("Leads").status_code == 200


def test_stats_count_requests_by_route_and_status(api: Api) -> None:
    lead = api.post("Leads", json={"LAST_NAME": "X"}).json()
    api.post("Leads", json={})
    api.get(f"Leads/{lead['LEAD_ID']}")
    api.get("Leads/424242")
    requests_by_route = api.control("GET", "stats").json()["requests"]
    assert requests_by_route == {
        "POST /Leads": {"200": 1, "400": 1},
        "GET /Leads/{id}": {"200": 1, "404": 1},
    }


def test_faults_value_is_validated() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="unknown"):
        Faults().updated({"nope": 1})
    assert Faults().updated({"latency": 2}).latency == 2
