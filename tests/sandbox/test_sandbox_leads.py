"""Lead CRUD, validation, listing and search of the sandbox, over real HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import requests

from crmify.sandbox import CustomFieldDef, Dialect, SandboxServer

if TYPE_CHECKING:
    from tests.sandbox.conftest import Api

DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def with_custom(name: str, value: object) -> dict[str, object]:
    """A minimal lead body setting one custom field."""
    return {"LAST_NAME": "X", "CUSTOMFIELDS": [{"FIELD_NAME": name, "FIELD_VALUE": value}]}


def test_create_answers_full_lead_with_id_dates_and_default_status(api: Api) -> None:
    statuses = api.get("LeadStatuses").json()
    default_id = next(s["LEAD_STATUS_ID"] for s in statuses if s["DEFAULT_STATUS"])

    response = api.post("Leads", json={"FIRST_NAME": "Ada", "LAST_NAME": "Lovelace"})

    assert response.status_code == 200
    lead = response.json()
    assert isinstance(lead["LEAD_ID"], int)
    assert lead["LEAD_STATUS_ID"] == default_id
    assert DATE.match(lead["DATE_CREATED_UTC"]) and DATE.match(lead["DATE_UPDATED_UTC"])
    assert lead["EMAIL"] is None and lead["CUSTOMFIELDS"] == [] and lead["TAGS"] == []
    assert api.get(f"Leads/{lead['LEAD_ID']}").json() == lead


def test_get_unknown_lead_is_404_with_message(api: Api) -> None:
    response = api.get("Leads/999")
    assert response.status_code == 404
    assert "999" in response.json()["Message"]


def test_put_is_partial_update_and_null_clears(api: Api) -> None:
    lead = api.post(
        "Leads", json={"LAST_NAME": "Hopper", "EMAIL": "grace@example.com", "PHONE": "123"}
    ).json()

    response = api.put("Leads", json={"LEAD_ID": lead["LEAD_ID"], "PHONE": None, "TITLE": "RAdm"})

    assert response.status_code == 200
    updated = response.json()
    assert updated["EMAIL"] == "grace@example.com"  # left out: kept
    assert updated["PHONE"] is None  # null: cleared
    assert updated["TITLE"] == "RAdm"
    assert api.get(f"Leads/{lead['LEAD_ID']}").json() == updated


def test_put_without_lead_id_is_rejected_and_unknown_id_is_404(api: Api) -> None:
    missing = api.put("Leads", json={"LAST_NAME": "X"})
    assert missing.status_code == 400 and "LEAD_ID" in missing.json()["Message"]
    unknown = api.put("Leads", json={"LEAD_ID": 42, "LAST_NAME": "X"})
    assert unknown.status_code == 404


def test_put_to_an_id_path_is_405(api: Api) -> None:
    lead = api.post("Leads", json={"LAST_NAME": "X"}).json()
    assert api.put(f"Leads/{lead['LEAD_ID']}", json={"LAST_NAME": "Y"}).status_code == 405


def test_delete_answers_202_with_empty_body_then_404(api: Api) -> None:
    lead = api.post("Leads", json={"LAST_NAME": "Gone"}).json()
    response = api.delete(f"Leads/{lead['LEAD_ID']}")
    assert response.status_code == 202 and response.content == b""
    assert api.delete(f"Leads/{lead['LEAD_ID']}").status_code == 404
    assert api.server.leads() == []


@pytest.mark.parametrize("body", [{"FIRST_NAME": "Only"}, {"LAST_NAME": ""}, {"LAST_NAME": "  "}])
def test_create_without_last_name_is_rejected_with_message(api: Api, body: dict[str, str]) -> None:
    response = api.post("Leads", json=body)
    assert response.status_code == 400
    assert "LAST_NAME" in response.json()["Message"]
    assert api.server.leads() == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [("EMAIL_ADDRESS", "EMAIL"), ("first_name", "FIRST_NAME"), ("ORGANIZATION_NAME", None)],
)
def test_v2_field_name_is_rejected(api: Api, name: str, hint: str | None) -> None:
    response = api.post("Leads", json={"LAST_NAME": "X", name: "value"})
    assert response.status_code == 400
    text = response.json()["Message"]
    assert name in text
    assert hint is None or hint in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("EMAIL_OPTED_OUT", "yes"),
        ("EMPLOYEE_COUNT", "12"),
        ("LEAD_RATING", True),
        ("EMAIL", 5),
        ("CUSTOMFIELDS", {"Plan__c": "Plus"}),
        ("TAGS", ["vip"]),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(api: Api, field: str, value: object) -> None:
    response = api.post("Leads", json={"LAST_NAME": "X", field: value})
    assert response.status_code == 400
    assert field in response.json()["Message"]


def test_int_fields_accept_null_and_numbers(api: Api) -> None:
    body = {"LAST_NAME": "X", "EMPLOYEE_COUNT": 12, "LEAD_RATING": None, "EMAIL_OPTED_OUT": True}
    lead = api.post("Leads", json=body).json()
    assert (lead["EMPLOYEE_COUNT"], lead["LEAD_RATING"], lead["EMAIL_OPTED_OUT"]) == (
        12,
        None,
        True,
    )


def test_unknown_status_or_source_id_is_rejected(api: Api) -> None:
    for field in ("LEAD_STATUS_ID", "LEAD_SOURCE_ID"):
        response = api.post("Leads", json={"LAST_NAME": "X", field: 1})
        assert response.status_code == 400
        assert field in response.json()["Message"]
    source_id = api.get("LeadSources").json()[0]["LEAD_SOURCE_ID"]
    assert api.post("Leads", json={"LAST_NAME": "X", "LEAD_SOURCE_ID": source_id}).ok


def test_custom_fields_are_checked_against_definitions_and_merged(api: Api) -> None:
    unknown = api.post(
        "Leads",
        json={"LAST_NAME": "X", "CUSTOMFIELDS": [{"FIELD_NAME": "Nope__c", "FIELD_VALUE": 1}]},
    )
    assert unknown.status_code == 400 and "Nope__c" in unknown.json()["Message"]
    bad_option = api.post(
        "Leads",
        json={"LAST_NAME": "X", "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Gold"}]},
    )
    assert bad_option.status_code == 400

    lead = api.post(
        "Leads",
        json={
            "LAST_NAME": "X",
            "CUSTOMFIELDS": [
                {"FIELD_NAME": "Signup_Source__c", "FIELD_VALUE": "newsletter"},
                {"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Free"},
            ],
            "TAGS": [{"TAG_NAME": "vip"}],
        },
    ).json()
    updated = api.put(
        "Leads",
        json={
            "LEAD_ID": lead["LEAD_ID"],
            "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Pro"}],
        },
    ).json()
    values = {item["FIELD_NAME"]: item["FIELD_VALUE"] for item in updated["CUSTOMFIELDS"]}
    assert values == {"Signup_Source__c": "newsletter", "Plan__c": "Pro"}
    assert updated["TAGS"] == [{"TAG_NAME": "vip"}]


def test_invalid_json_and_non_json_bodies_are_rejected(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    broken = api.post("Leads", data=b"{not json", headers=headers)
    assert broken.status_code == 400 and "JSON" in broken.json()["Message"]
    not_object = api.post("Leads", json=["LAST_NAME"])
    assert not_object.status_code == 400
    form = api.post("Leads", data={"LAST_NAME": "X"})
    assert form.status_code == 415


def test_read_only_fields_are_ignored_so_a_fetched_lead_can_be_put_back(api: Api) -> None:
    lead = api.post("Leads", json={"LAST_NAME": "Roundtrip"}).json()
    echoed = {**lead, "DATE_CREATED_UTC": "2000-01-01 00:00:00", "CONVERTED": True}
    response = api.put("Leads", json=echoed)
    assert response.status_code == 200
    assert response.json()["DATE_CREATED_UTC"] == lead["DATE_CREATED_UTC"]
    assert response.json()["CONVERTED"] is False


def test_create_with_a_lead_id_is_rejected(api: Api) -> None:
    response = api.post("Leads", json={"LEAD_ID": 7, "LAST_NAME": "X"})
    assert response.status_code == 400 and "PUT" in response.json()["Message"]


def test_list_pages_in_lead_id_order_with_x_total_count(api: Api) -> None:
    ids = [api.server.add_lead({"LAST_NAME": f"L{n}"})["LEAD_ID"] for n in range(12)]

    first = api.get("Leads", params={"top": 5, "count_total": "true"})
    second = api.get("Leads", params={"skip": 5, "top": 5})
    rest = api.get("Leads", params={"skip": 10})

    assert first.headers["X-Total-Count"] == "12"
    assert "X-Total-Count" not in second.headers
    got = [lead["LEAD_ID"] for page in (first, second, rest) for lead in page.json()]
    assert got == sorted(ids)


def test_top_above_500_or_bad_paging_is_rejected(api: Api) -> None:
    assert api.get("Leads", params={"top": 500}).status_code == 200
    for params in ({"top": 501}, {"skip": -1}, {"top": "ten"}, {"count_total": "maybe"}):
        response = api.get("Leads", params=params)
        assert response.status_code == 400, params
        assert response.json()["Message"]


def test_brief_listing_leaves_out_child_lists(api: Api) -> None:
    api.server.add_lead({"LAST_NAME": "X", "TAGS": [{"TAG_NAME": "t"}]})
    lead = api.get("Leads", params={"brief": "true"}).json()[0]
    assert "TAGS" not in lead and "CUSTOMFIELDS" not in lead and lead["LAST_NAME"] == "X"


class FakeClock:
    """Stands in for the sandbox's UTC clock so "updated after" can be tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_search_by_email_and_updated_after(client_for: type[Api]) -> None:
    clock = FakeClock()
    with SandboxServer(clock=clock) as server:
        api = client_for(server)
        old = api.post("Leads", json={"LAST_NAME": "Old", "EMAIL": "Old@Example.com"}).json()
        clock.now += timedelta(hours=1)
        new = api.post("Leads", json={"LAST_NAME": "New", "EMAIL": "new@example.com"}).json()

        def search(**params: str) -> list[int]:
            response = api.get("Leads/Search", params=params)
            assert response.status_code == 200, response.text
            return [lead["LEAD_ID"] for lead in response.json()]

        # EMAIL matches exactly but case-insensitively.
        assert search(field_name="EMAIL", field_value="old@example.com") == [old["LEAD_ID"]]
        assert search(field_name="EMAIL", field_value="old@example") == []
        assert search(updated_after_utc="2024-05-01T12:30:00Z") == [new["LEAD_ID"]]
        assert search(updated_after_utc="2024-05-01T14:30:00+02:00") == [new["LEAD_ID"]]
        assert search(updated_after_utc="2024-05-01T11:00:00") == [old["LEAD_ID"], new["LEAD_ID"]]
        assert (
            search(
                field_name="EMAIL",
                field_value="old@example.com",
                updated_after_utc="2024-05-01T12:30:00",
            )
            == []
        )
        clock.now += timedelta(hours=1)
        api.put("Leads", json={"LEAD_ID": old["LEAD_ID"], "TITLE": "Dr"})
        assert search(updated_after_utc="2024-05-01T13:30:00Z") == [old["LEAD_ID"]]


def test_search_rejects_bad_criteria(api: Api) -> None:
    for params in (
        {},
        {"field_name": "EMAIL"},
        {"field_name": "EMAIL_ADDRESS", "field_value": "x"},
        {"updated_after_utc": "yesterday"},
        {"updated_after_utc": "2024-05-01T12:00:00 02:00"},  # an unencoded "+"
    ):
        response = api.get("Leads/Search", params=params)
        assert response.status_code == 400, params
        assert response.json()["Message"]


def test_search_pages_like_the_list(api: Api) -> None:
    for n in range(3):
        api.server.add_lead({"LAST_NAME": f"L{n}", "EMAIL": "same@example.com"})
    response = api.get(
        "Leads/Search",
        params={
            "field_name": "EMAIL",
            "field_value": "same@example.com",
            "skip": 1,
            "top": 1,
            "count_total": "true",
        },
    )
    assert len(response.json()) == 1 and response.headers["X-Total-Count"] == "3"


def test_lookups_list_statuses_sources_and_custom_fields(api: Api) -> None:
    statuses = api.get("LeadStatuses").json()
    assert [s["LEAD_STATUS"] for s in statuses][:2] == ["Not Contacted", "Attempted Contact"]
    assert {"LEAD_STATUS_ID", "LEAD_STATUS", "DEFAULT_STATUS", "STATUS_TYPE", "FIELD_ORDER"} <= set(
        statuses[0]
    )
    assert statuses[0]["LEAD_STATUS_ID"] > 1000  # ids are not 1..5
    sources = api.get("LeadSources").json()
    assert {"LEAD_SOURCE_ID", "LEAD_SOURCE", "DEFAULT_VALUE", "FIELD_ORDER"} <= set(sources[0])
    fields = api.get("CustomFields/Leads").json()
    assert "Signup_Source__c" in {f["FIELD_NAME"] for f in fields}
    assert {"FIELD_NAME", "FIELD_LABEL", "FIELD_TYPE"} <= set(fields[0])


def test_statuses_and_custom_fields_are_configurable(client_for: type[Api]) -> None:
    with SandboxServer(
        lead_statuses=["Open", "Won"],
        custom_fields=[CustomFieldDef("Score__c", field_type="NUMERIC")],
    ) as server:
        api = client_for(server)
        assert [s["LEAD_STATUS"] for s in api.get("LeadStatuses").json()] == ["Open", "Won"]
        ok = api.post(
            "Leads",
            json={"LAST_NAME": "X", "CUSTOMFIELDS": [{"FIELD_NAME": "Score__c", "FIELD_VALUE": 3}]},
        )
        assert ok.status_code == 200
        text = api.post(
            "Leads",
            json={
                "LAST_NAME": "X",
                "CUSTOMFIELDS": [{"FIELD_NAME": "Score__c", "FIELD_VALUE": "3"}],
            },
        )
        assert text.status_code == 400


def test_paths_are_case_insensitive_like_aspnet(api: Api) -> None:
    assert api.get("leads").status_code == 200
    assert api.get("leadstatuses").status_code == 200


def test_non_api_path_is_404(api: Api) -> None:
    response = requests.get(f"http://{api.server.host}:{api.server.port}/v2.2/Leads", timeout=5)
    assert response.status_code == 404


def test_lead_statuses_leave_out_the_converted_status_unless_asked(api: Api) -> None:
    names = [s["LEAD_STATUS"] for s in api.get("LeadStatuses").json()]
    assert names == ["Not Contacted", "Attempted Contact", "Contacted", "Disqualified"]
    every = api.get("LeadStatuses", params={"include_converted": "true", "count_total": "true"})
    assert "Converted" in [s["LEAD_STATUS"] for s in every.json()]
    assert every.headers["X-Total-Count"] == "5"
    page = api.get("LeadStatuses", params={"include_converted": "true", "skip": 3, "top": 1})
    assert [s["LEAD_STATUS"] for s in page.json()] == ["Converted"]


def test_custom_fields_null_is_refused_and_a_null_value_clears_one(api: Api) -> None:
    lead = api.post(
        "Leads",
        json={
            "LAST_NAME": "X",
            "CUSTOMFIELDS": [
                {"FIELD_NAME": "Signup_Source__c", "FIELD_VALUE": "ads"},
                {"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Free"},
            ],
        },
    ).json()
    refused = api.put("Leads", json={"LEAD_ID": lead["LEAD_ID"], "CUSTOMFIELDS": None})
    assert refused.status_code == 400 and "FIELD_VALUE" in refused.json()["Message"]
    cleared = api.put(
        "Leads",
        json={
            "LEAD_ID": lead["LEAD_ID"],
            "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": None}],
        },
    ).json()
    assert cleared["CUSTOMFIELDS"] == [{"FIELD_NAME": "Signup_Source__c", "FIELD_VALUE": "ads"}]


def test_the_dialect_replaces_custom_fields_or_searches_loosely(client_for: type[Api]) -> None:
    dialect = Dialect(custom_fields_on_put="replace", search_match="contains")
    with SandboxServer(dialect=dialect) as server:
        api = client_for(server)
        lead = api.post(
            "Leads",
            json={"EMAIL": "mada@example.com", **with_custom("Signup_Source__c", "ads")},
        ).json()
        replaced = api.put(
            "Leads", json={"LEAD_ID": lead["LEAD_ID"], **with_custom("Plan__c", "Pro")}
        ).json()
        assert replaced["CUSTOMFIELDS"] == [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Pro"}]
        found = api.get(
            "Leads/Search", params={"field_name": "EMAIL", "field_value": "ada@example.com"}
        ).json()
        assert [row["EMAIL"] for row in found] == ["mada@example.com"]


def test_a_dialect_outside_the_known_readings_is_refused() -> None:
    with pytest.raises(ValueError, match="search_match"):
        Dialect(search_match="fuzzy")  # type: ignore[arg-type]
