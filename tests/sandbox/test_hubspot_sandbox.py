"""The HubSpot sandbox over real HTTP: contacts, properties, search, auth, limits, faults, control, CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from crmify.sandbox.cli import add_arguments, build_server
from crmify.sandbox.faults import Faults
from crmify.sandbox.hubspot import HubSpotDialect, HubSpotSandbox, PropertyDef
from crmify.sandbox.ratelimit import RollingWindow

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTACTS = "/crm/v3/objects/contacts"


class Hub:
    """``requests`` bound to one HubSpot sandbox and its token."""

    def __init__(self, server: HubSpotSandbox, token: str | None = None) -> None:
        self.server = server
        self.session = requests.Session()
        if token != "":
            self.session.headers["Authorization"] = f"Bearer {token or server.token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.server.url + path, **kwargs)

    def create(self, **properties: Any) -> requests.Response:
        return self.call("POST", CONTACTS, json={"properties": properties})

    def search(self, **body: Any) -> requests.Response:
        return self.call("POST", CONTACTS + "/search", json=body)


@pytest.fixture
def hub(hubspot_sandbox: HubSpotSandbox) -> Hub:
    hubspot_sandbox.set_faults(requests_per_second=None)
    return Hub(hubspot_sandbox)


def own(**kwargs: Any) -> HubSpotSandbox:
    kwargs.setdefault("faults", Faults(requests_per_second=None, daily_quota=None))
    return HubSpotSandbox(**kwargs).start()


# -- contacts ----------------------------------------------------------------------------------------


def test_create_answers_201_with_the_contact(hub):
    answer = hub.create(email="a@example.com", firstname="A")
    assert answer.status_code == 201
    body = answer.json()
    assert body["id"].isdigit() and body["archived"] is False
    assert body["properties"]["email"] == "a@example.com"
    assert body["createdAt"].endswith("Z")


def test_a_contact_needs_an_email_or_a_name(hub):
    answer = hub.create(company="Nobody Ltd")
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"
    assert hub.create(lastname="Only").status_code == 201


@pytest.mark.parametrize(
    ("properties", "code"),
    [
        ({"email": "x@example.com", "shoe_size": "9"}, "PROPERTY_DOESNT_EXIST"),
        ({"email": "x@example.com", "hs_lead_status": "WARM"}, "INVALID_OPTION"),
        ({"email": "x@example.com", "hs_lead_status": "New"}, "INVALID_OPTION"),  # a label
        ({"email": "not an email"}, "INVALID_EMAIL"),
        ({"email": "x@example.com", "hs_object_id": "5"}, "READ_ONLY_VALUE"),
    ],
)
def test_bad_properties_are_refused_in_hubspots_shape(hub, properties, code):
    answer = hub.create(**properties)
    assert answer.status_code == 400
    body = answer.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: [")
    assert f'"error": "{code}"' in body["message"]
    assert body["errors"][0]["code"] == code
    assert hub.server.leads() == []


@pytest.mark.parametrize(
    ("conflict", "category", "names_id"),
    [
        ("legacy", "CONFLICT", True),
        ("object_already_exists", "OBJECT_ALREADY_EXISTS", True),
        ("no_id", "OBJECT_ALREADY_EXISTS", False),
    ],
)
def test_a_duplicate_email_is_a_409(conflict, category, names_id):
    with own(dialect=HubSpotDialect(conflict=conflict)) as server:
        hub = Hub(server)
        first = hub.create(email="dup@example.com").json()["id"]
        answer = hub.create(email="DUP@example.com ".strip())
        assert answer.status_code == 409
        body = answer.json()
        assert body["category"] == category
        assert (f"Existing ID: {first}" in body["message"]) is names_id
        if conflict != "legacy":
            assert body["errors"][0]["in"] == "email"
        assert len(server.leads()) == 1


def test_get_by_id_or_email_reads_default_properties_unless_asked(hub):
    made = hub.create(email="g@example.com", firstname="G", city="Leeds").json()
    plain = hub.call("GET", f"{CONTACTS}/{made['id']}").json()["properties"]
    assert "city" not in plain and plain["email"] == "g@example.com"
    asked = hub.call("GET", f"{CONTACTS}/G@example.com?idProperty=email&properties=city").json()
    assert asked["id"] == made["id"] and asked["properties"]["city"] == "Leeds"
    missing = hub.call("GET", f"{CONTACTS}/nobody@example.com?idProperty=email")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


def test_patch_overwrites_clears_with_empty_and_refuses_unknown(hub):
    made = hub.create(email="p@example.com", firstname="P", city="Leeds").json()["id"]
    answer = hub.call("PATCH", f"{CONTACTS}/{made}", json={"properties": {"city": "", "zip": "1"}})
    assert answer.status_code == 200
    (row,) = hub.server.leads()
    assert "city" not in row["properties"] and row["properties"]["zip"] == "1"
    bad = hub.call("PATCH", f"{CONTACTS}/{made}", json={"properties": {"nope": "1"}})
    assert bad.status_code == 400 and "PROPERTY_DOESNT_EXIST" in bad.json()["message"]
    gone = hub.call("PATCH", f"{CONTACTS}/999", json={"properties": {"zip": "2"}})
    assert gone.status_code == 404


def test_delete_archives_then_404_and_frees_the_email(hub):
    made = hub.create(email="z@example.com").json()["id"]
    answer = hub.call("DELETE", f"{CONTACTS}/{made}")
    assert answer.status_code == 204 and answer.content == b""
    assert hub.call("DELETE", f"{CONTACTS}/{made}").status_code == 404
    assert hub.create(email="z@example.com").status_code == 201


@pytest.mark.parametrize(
    ("backwards", "status", "stage"),
    [("ignored", 200, "customer"), ("rejected", 400, "customer"), ("allowed", 200, "lead")],
)
def test_lifecycle_stage_backwards_per_dialect_and_clearing_first_always_works(
    backwards, status, stage
):
    with own(dialect=HubSpotDialect(lifecycle_backwards=backwards)) as server:
        hub = Hub(server)
        made = hub.create(email="l@example.com", lifecyclestage="customer").json()["id"]
        answer = hub.call(
            "PATCH", f"{CONTACTS}/{made}", json={"properties": {"lifecyclestage": "lead"}}
        )
        assert answer.status_code == status
        assert server.leads()[0]["properties"]["lifecyclestage"] == stage
        hub.call("PATCH", f"{CONTACTS}/{made}", json={"properties": {"lifecyclestage": ""}})
        hub.call("PATCH", f"{CONTACTS}/{made}", json={"properties": {"lifecyclestage": "lead"}})
        assert server.leads()[0]["properties"]["lifecyclestage"] == "lead"


def test_listing_pages_with_after_and_at_most_100(hub):
    for number in range(25):
        hub.server.add_contact({"email": f"l{number}@example.com"})
    first = hub.call("GET", CONTACTS, params={"limit": 10, "properties": "email"}).json()
    assert len(first["results"]) == 10 and first["results"][0]["properties"]["email"]
    seen = [row["id"] for row in first["results"]]
    after = first["paging"]["next"]["after"]
    while after:
        page = hub.call("GET", CONTACTS, params={"limit": 10, "after": after}).json()
        seen += [row["id"] for row in page["results"]]
        after = (page.get("paging") or {}).get("next", {}).get("after")
    assert len(seen) == len(set(seen)) == 25
    assert hub.call("GET", CONTACTS, params={"limit": 101}).status_code == 400


# -- search ----------------------------------------------------------------------------------------


def test_search_filters_and_groups(hub):
    for name, city in (("ann", "Leeds"), ("bob", "York"), ("cat", "Leeds"), ("dan", "")):
        hub.create(email=f"{name}@example.com", firstname=name, city=city)
    hub.server.set_faults(requests_per_second=None)

    def emails(*groups: list[dict[str, Any]], **extra: Any) -> list[str]:
        time.sleep(0.26)  # search's own 4 a second
        body = hub.search(
            filterGroups=[{"filters": group} for group in groups], properties=["email"], **extra
        )
        assert body.status_code == 200, body.text
        return sorted(row["properties"]["email"] for row in body.json()["results"])

    assert emails([{"propertyName": "email", "operator": "EQ", "value": "ANN@example.com"}]) == [
        "ann@example.com"
    ]
    assert emails(
        [{"propertyName": "city", "operator": "EQ", "value": "Leeds"}],
        [{"propertyName": "firstname", "operator": "EQ", "value": "bob"}],
    ) == ["ann@example.com", "bob@example.com", "cat@example.com"]  # groups OR
    assert emails(
        [
            {"propertyName": "city", "operator": "EQ", "value": "Leeds"},
            {"propertyName": "firstname", "operator": "NEQ", "value": "ann"},
        ]
    ) == ["cat@example.com"]  # filters AND
    assert emails([{"propertyName": "city", "operator": "NOT_HAS_PROPERTY"}]) == ["dan@example.com"]
    assert emails([{"propertyName": "firstname", "operator": "IN", "values": ["dan", "ann"]}]) == [
        "ann@example.com",
        "dan@example.com",
    ]
    assert len(emails(limit=2)) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"filterGroups": [{"filters": []}] * 6},
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 11}
            ]
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 9}
            ]
            * 3
        },
        {"filterGroups": [{"filters": [{"propertyName": "shoe", "operator": "EQ", "value": "1"}]}]},
        {"limit": 201},
        {"limit": 100, "after": 9950},
    ],
    ids=["6-groups", "11-filters", "27-filters", "unknown-property", "page-201", "past-10000"],
)
def test_search_limits_are_400s(hub, body):
    answer = hub.search(**body)
    assert answer.status_code == 400 and answer.json()["category"] == "VALIDATION_ERROR"


def test_search_has_its_own_per_second_limit(hub):
    statuses = [hub.search().status_code for _ in range(6)]
    assert statuses.count(429) >= 1
    throttled = next(r for r in (hub.search() for _ in range(3)) if r.status_code == 429)
    assert throttled.json()["policyName"] == "SECONDLY"


# -- properties ----------------------------------------------------------------------------------------


def test_properties_list_the_standard_account_with_options(hub):
    body = hub.call("GET", "/crm/v3/properties/contacts").json()
    by_name = {row["name"]: row for row in body["results"]}
    for name in (
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "jobtitle",
        "company",
        "website",
        "address",
        "city",
        "state",
        "zip",
        "country",
    ):
        assert by_name[name]["type"] == "string"
    stages = [option["value"] for option in by_name["lifecyclestage"]["options"]]
    assert stages[:2] == ["subscriber", "lead"] and "customer" in stages
    statuses = {option["label"]: option["value"] for option in by_name["hs_lead_status"]["options"]}
    assert statuses["New"] == "NEW" and statuses["Unqualified"] == "UNQUALIFIED"
    assert by_name["hs_object_id"]["modificationMetadata"]["readOnlyValue"] is True
    one = hub.call("GET", "/crm/v3/properties/contacts/hs_lead_status")
    assert one.json()["name"] == "hs_lead_status"
    assert hub.call("GET", "/crm/v3/properties/contacts/nope").status_code == 404


def test_lead_status_values_can_be_the_labels_and_custom_properties_added():
    with own(
        dialect=HubSpotDialect(lead_status_values="labels"),
        properties=[PropertyDef("tier", "Tier", "enumeration", (("gold", "Gold"),))],
    ) as server:
        hub = Hub(server)
        assert (
            hub.create(email="a@example.com", hs_lead_status="New", tier="gold").status_code == 201
        )
        assert hub.create(email="b@example.com", hs_lead_status="NEW").status_code == 400


def test_dated_paths_reach_the_same_endpoints(hub):
    assert (
        hub.call(
            "POST", "/crm/objects/2026-03/contacts", json={"properties": {"email": "d@example.com"}}
        ).status_code
        == 201
    )
    assert hub.call("GET", "/crm/properties/2026-03/contacts").status_code == 200


# -- auth, limits, faults ------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_a_401_that_costs_no_quota(hub):
    for token in ("", "pat-wrong"):
        answer = Hub(hub.server, token).call("GET", CONTACTS)
        assert answer.status_code == 401
        body = answer.json()
        assert body["category"] == "INVALID_AUTHENTICATION" and body["status"] == "error"
        assert "pat-wrong" not in answer.text
    assert hub.server.stats()["quota"]["remaining"] == hub.server.faults.daily_quota
    basic = requests.get(hub.server.url + CONTACTS, auth=(hub.server.token, ""), timeout=5)
    assert basic.status_code == 401  # Bearer only


def test_the_ten_second_window_and_its_headers(hub):
    hub.server.set_faults(requests_per_second=0.3)  # 3 in any 10 s
    answers = [hub.call("GET", CONTACTS) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "3"
    assert answers[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    body = answers[3].json()
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert "Retry-After" not in answers[3].headers  # not documented: off unless the dialect says
    assert hub.server.stats()["throttled"]["rate"] == 1


def test_the_daily_limit_429_names_the_daily_policy(hub):
    hub.server.set_faults(daily_quota=2)
    answers = [hub.call("GET", CONTACTS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-HubSpot-RateLimit-Daily"] == "2"
    assert answers[1].headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    assert answers[2].json()["policyName"] == "DAILY"


def test_retry_after_can_be_sent():
    with own(
        dialect=HubSpotDialect(retry_after=True), faults=Faults(requests_per_second=0.1)
    ) as server:
        hub = Hub(server)
        hub.call("GET", CONTACTS)
        assert hub.call("GET", CONTACTS).headers["Retry-After"] == "1"


def test_rolling_window_frees_a_slot_only_when_the_oldest_leaves():
    now = [0.0]
    window = RollingWindow(2, 10, clock=lambda: now[0])
    assert window.try_take()
    now[0] = 5.0
    assert window.try_take() and not window.try_take()
    now[0] = 9.9
    assert not window.try_take() and window.remaining() == 0
    now[0] = 10.0
    assert window.try_take() and window.remaining() == 0


def test_faults_errors_drops_and_create_timeouts(hub):
    hub.server.set_faults(error_rate=1.0, seed=1)
    answers = {hub.call("GET", CONTACTS).status_code for _ in range(8)}
    assert answers <= {500, 503} and answers
    hub.server.set_faults(error_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        hub.call("GET", CONTACTS)
    hub.server.set_faults(drop_rate=0.0, create_timeout_rate=1.0, create_timeout_delay=2.0)
    with pytest.raises(requests.Timeout):
        hub.call("POST", CONTACTS, json={"properties": {"email": "t@example.com"}}, timeout=0.5)
    assert len(hub.server.leads()) == 1  # made, though the client never heard
    injected = hub.server.stats()["injected"]
    assert injected["error"] == 8 and injected["drop"] == 1 and injected["create_timeout"] == 1


# -- control API, state file, CLI ----------------------------------------------------------------------


def test_the_control_api_steers_and_shows_the_account(hub):
    control = hub.server.control_url
    hub.create(email="c@example.com")
    (row,) = requests.get(control + "leads", timeout=5).json()
    assert row["properties"]["email"] == "c@example.com"
    assert (
        requests.put(control + "faults", json={"error_rate": 1.0}, timeout=5).json()["error_rate"]
        == 1.0
    )
    assert hub.call("GET", CONTACTS).status_code in (500, 503)
    requests.delete(control + "faults", timeout=5)
    stats = requests.get(control + "stats", timeout=5).json()
    assert stats["requests"]["POST /objects/contacts"] == {"201": 1}
    requests.post(control + "reset", timeout=5)
    assert requests.get(control + "leads", timeout=5).json() == []
    assert requests.get(control + "health", timeout=5).json()["url"] == hub.server.url


def test_contacts_survive_a_restart_with_a_state_file(tmp_path):
    state = tmp_path / "hubspot.json"
    with own(state_file=state) as server:
        made = Hub(server).create(email="keep@example.com").json()["id"]
    with own(state_file=state) as server:
        assert [row["id"] for row in server.leads()] == [made]
        assert Hub(server).create(email="next@example.com").json()["id"] != made
    state.write_text('{"leads": []}')
    with pytest.raises(ValueError, match="state file"):
        HubSpotSandbox(state_file=state)


def test_the_cli_builds_a_hubspot_sandbox_with_its_dialect():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = vars(
        parser.parse_args(
            ["--crm", "hubspot", "--port", "0", "--quiet", "--api-key", "T", "--property", "tier:enumeration:gold|silver",
             "--lifecycle-backwards", "rejected", "--conflict", "no_id", "--lead-status-values", "labels"]
        )
    )  # fmt: skip
    server = build_server(options)
    try:
        assert isinstance(server, HubSpotSandbox) and server.token == "T"
        assert server.faults.daily_quota == 250_000 and server.faults.requests_per_second == 10.0
        assert server.dialect == HubSpotDialect(
            lead_status_values="labels", lifecycle_backwards="rejected", conflict="no_id"
        )
        assert server.contacts.index.by_name["tier"].option_values == ("gold", "silver")
    finally:
        server.stop()
