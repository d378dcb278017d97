"""Authentication, unknown collections, rate-limit headers, the per-second limit and the quota."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import requests

from crmify.sandbox import SandboxServer

if TYPE_CHECKING:
    from tests.sandbox.conftest import Api


def test_missing_or_wrong_key_answers_401_without_using_quota(
    sandbox: SandboxServer, client_for: type[Api]
) -> None:
    no_key = requests.get(sandbox.url + "Leads", timeout=5)
    wrong_key = client_for(sandbox, key="not-the-key").get("Leads")
    key_as_password = requests.get(sandbox.url + "Leads", auth=("", sandbox.api_key), timeout=5)

    for response in (no_key, wrong_key, key_as_password):
        assert response.status_code == 401
        assert response.json()["Message"]
    assert wrong_key.headers["X-RateLimit-Remaining"] == str(sandbox.faults.daily_quota)
    assert client_for(sandbox).get("Leads").status_code == 200


def test_unknown_collection_answers_405_with_message(api: Api) -> None:
    response = api.get("Contactz")
    assert response.status_code == 405
    assert "GET" in response.json()["Message"]
    assert api.request("PATCH", "Leads").status_code == 405


def test_every_api_response_reports_rate_limit_headers(api: Api) -> None:
    api.server.set_faults(daily_quota=100)
    responses = [api.get("Leads"), api.get("Leads/1"), api.get("Nope"), api.post("Leads", json={})]
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in responses]
    assert all(r.headers["X-RateLimit-Limit"] == "100" for r in responses)
    assert remaining == [99, 98, 97, 96]


def test_unlimited_quota_still_reports_a_number(api: Api) -> None:
    api.server.set_faults(daily_quota=None)
    response = api.get("Leads")
    assert int(response.headers["X-RateLimit-Limit"]) > 0
    assert int(response.headers["X-RateLimit-Remaining"]) > 0


def test_over_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    api.server.set_faults(requests_per_second=3)
    statuses = [api.get("LeadStatuses") for _ in range(8)]

    # The bucket starts full (capacity = rate), so a burst of three always gets through;
    # looser checks after that keep the test steady on a slow machine.
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled
    assert throttled[0].headers["Retry-After"] == "1"
    assert throttled[0].json()["Message"]
    stats = api.control("GET", "stats").json()
    assert stats["throttled"]["rate"] == len(throttled) and stats["throttled"]["quota"] == 0
    # Refused calls cost no quota: only the calls that got through were counted.
    quota = api.server.faults.daily_quota
    assert quota is not None
    passed = len(statuses) - len(throttled)
    assert statuses[-1].headers["X-RateLimit-Remaining"] == str(quota - passed)


def test_rate_limit_bucket_refills_continuously(api: Api) -> None:
    api.server.set_faults(requests_per_second=20)
    for _ in range(200):
        if api.get("LeadStatuses").status_code == 429:
            break
    else:
        raise AssertionError("the per-second limit never answered 429")
    time.sleep(0.06)  # a bit more than one token's worth at 20/s
    assert api.get("LeadStatuses").status_code == 200


def test_daily_quota_exhausts_and_resets_after_window(api: Api) -> None:
    api.server.set_faults(daily_quota=3, quota_window_seconds=1.0)
    remaining = [api.get("Leads").headers["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]

    exhausted = api.get("Leads")
    assert exhausted.status_code == 429
    assert exhausted.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(exhausted.headers["Retry-After"]) <= 1
    assert "quota" in exhausted.json()["Message"].lower()
    assert api.control("GET", "stats").json()["throttled"]["quota"] == 1

    time.sleep(1.05)
    again = api.get("Leads")
    assert again.status_code == 200
    assert again.headers["X-RateLimit-Remaining"] == "2"


def test_quota_retry_after_counts_down_to_the_window_reset(api: Api) -> None:
    api.server.set_faults(daily_quota=1, quota_window_seconds=3600)
    api.get("Leads")
    retry_after = int(api.get("Leads").headers["Retry-After"])
    assert 3590 <= retry_after <= 3600
