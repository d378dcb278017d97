"""Reading changes back from HubSpot over real HTTP against the HubSpot sandbox: ``iter_changes`` searches
contacts by ``lastmodifieddate``, oldest first, each page a new search from the newest time seen (so
neither the 10,000-result cap nor contacts moving while it pages lose one), a millisecond shared by a
whole page read by id, at search's own pace; ``read_changes`` reads contacts by id in batches, deleted and
merged ones said so. Also the sandbox's search and batch read, as the pull relies on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.core.cache import cache

from crmify.backends.base import CrmChange, recording
from crmify.backends.hubspot import HubSpotBackend
from crmify.backends.hubspot_pull import instant, milliseconds
from crmify.exceptions import TransientBackendError
from crmify.sandbox.hubspot import HubSpotDialect, HubSpotSandbox
from tests.conftest import FAST_SANDBOX
from tests.sandbox.test_sandbox_leads import FakeClock
from tests.scripted_crm import Answer, ScriptedCrm

SEARCH = "POST /objects/contacts/search"
V3 = "/crm/v3/objects/contacts"
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@pytest.fixture
def account() -> Iterator[Any]:
    """Builds a HubSpot sandbox of its own on a clock the test moves (``clock.now``), and its backend;
    neither keeps search's own limit unless the test gives one."""
    servers: list[HubSpotSandbox] = []
    cache.clear()

    def build(
        dialect: HubSpotDialect | None = None, **options: Any
    ) -> tuple[HubSpotSandbox, FakeClock, HubSpotBackend]:
        clock = FakeClock()
        clock.now = T0
        dialect = dialect or HubSpotDialect(search_requests_per_second=None)
        server = HubSpotSandbox(clock=clock, dialect=dialect).start()
        server.set_faults(requests_per_second=None)
        servers.append(server)
        options = {
            "API_URL": server.url,
            **FAST_SANDBOX,
            "SEARCH_REQUESTS_PER_SECOND": 50,
            **options,
        }
        return server, clock, HubSpotBackend(options, {"API_KEY": server.token})

    yield build
    for server in servers:
        server.stop()
    cache.clear()


def add(server: HubSpotSandbox, clock: FakeClock, count: int, step: timedelta = MS) -> list[str]:
    """``count`` contacts, each ``step`` after the last; their ids."""
    ids = []
    for n in range(len(server.leads()), len(server.leads()) + count):
        clock.now += step
        ids.append(server.add_contact({"email": f"c{n}@example.com", "firstname": f"C{n}"})["id"])
    return ids


def pulled(backend: HubSpotBackend, since: datetime | None) -> list[list[CrmChange]]:
    return list(backend.iter_changes(since))


def seen(pages: list[list[CrmChange]]) -> set[str]:
    return {change.external_id for page in pages for change in page}


def searched(server: HubSpotSandbox) -> dict[str, int]:
    return dict(server.stats()["requests"].get(SEARCH, {}))


def post(server: HubSpotSandbox, path: str, body: Any) -> requests.Response:
    return requests.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {server.token}"}, timeout=5
    )


# -- iter_changes -----------------------------------------------------------------------------------------


def test_the_pull_reads_contacts_changed_since_a_moment_with_their_values_and_time(
    account: Any,
) -> None:
    server, clock, backend = account(STATUSES={"Contacted": {"hs_lead_status": "CONNECTED"}})
    first, second, third = add(server, clock, 3, timedelta(seconds=1))
    clock.now = T0 + timedelta(seconds=10, milliseconds=250)
    server.contacts.update(
        second, None, {"properties": {"hs_lead_status": "CONNECTED", "lastname": "L"}}
    )
    server.contacts.update(third, None, {"properties": {"hs_lead_status": "IN_PROGRESS"}})

    with recording() as records:
        (page,) = pulled(backend, T0 + timedelta(seconds=10, milliseconds=250, microseconds=999))
    assert [change.external_id for change in page] == [second, third]
    change = page[0]
    assert change.modified_at == T0 + timedelta(seconds=10, milliseconds=250)
    assert change.values["status"] == "Contacted"
    assert (change.values["first_name"], change.values["last_name"]) == ("C1", "L")
    assert page[1].values["status"] == "In Progress"  # an unmapped option: read by its label
    (search,) = [record for record in records if record.operation == "pull"]
    bound = milliseconds(T0 + timedelta(seconds=10, milliseconds=250))
    assert f'"operator": "GTE", "value": "{bound}"' in search.request_summary
    assert '"sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]' in (
        search.request_summary
    )

    (everything,) = pulled(backend, None)
    assert [change.external_id for change in everything] == [first, second, third]  # oldest first
    assert everything[0].modified_at == T0 + timedelta(seconds=1)


def test_the_pull_pages_through_250_contacts_100_a_search(account: Any) -> None:
    server, clock, backend = account()
    ids = add(server, clock, 250)
    assert backend.pull_page_size == 100

    pages = pulled(backend, T0)
    # Each page starts again from the newest time of the last: its contact comes again.
    assert [len(page) for page in pages] == [100, 100, 52]
    assert seen(pages) == set(ids)
    assert searched(server) == {"200": 3}


def test_the_pull_never_reaches_searchs_cap_and_still_sees_every_contact(account: Any) -> None:
    server, clock, backend = account(
        HubSpotDialect(search_max_results=150, search_requests_per_second=None)
    )
    ids = add(server, clock, 450)
    # Paging by offset would reach the cap: HubSpot (and the sandbox) refuse the page past it.
    page = {"filterGroups": [], "limit": 100, "after": "100"}
    refused = post(server, f"{V3}/search", page)
    assert refused.status_code == 400 and "at most 150 results" in refused.json()["message"]

    with recording() as records:
        pages = pulled(backend, None)
    assert seen(pages) == set(ids)
    assert searched(server) == {"400": 1, "200": len(pages)}  # the pull's own calls all answered
    bounds = [r.request_summary for r in records if r.operation == "pull"]
    assert '"filterGroups": []' in bounds[0]  # every contact: no filter
    newest = max(c.modified_at for c in pages[0] if c.modified_at)
    assert f'"value": "{milliseconds(newest)}"' in bounds[1]  # then from the newest seen
    assert all('"after"' not in body for body in bounds)


def test_a_contact_changed_while_the_pull_pages_is_not_skipped(account: Any) -> None:
    server, clock, backend = account()
    ids = add(server, clock, 250)
    pages = backend.iter_changes(None)
    first = next(pages)
    # A salesperson edits a contact of the first page: it moves to the end of the order.
    clock.now += timedelta(seconds=5)
    server.contacts.update(ids[3], None, {"properties": {"lastname": "Moved"}})
    rest = list(pages)
    assert seen([first, *rest]) == set(ids)
    moved = [c for page in rest for c in page if c.external_id == ids[3]]
    assert moved and moved[-1].values["last_name"] == "Moved"


def test_a_whole_page_of_one_millisecond_is_read_by_id(account: Any) -> None:
    server, clock, backend = account()
    ids = add(server, clock, 250, step=timedelta(0))  # an import: every contact in one millisecond
    clock.now += MS
    later = add(server, clock, 1)

    with recording() as records:
        pages = pulled(backend, None)
    assert seen(pages) == {*ids, *later}
    bodies = [r.request_summary for r in records if r.operation == "pull"]
    by_id = [body for body in bodies if '"propertyName": "hs_object_id", "operator": "GT"' in body]
    assert len(by_id) == 3  # 100 + 100 + 50, each from the highest id before
    assert f'"value": "{ids[199]}"' in by_id[2]
    assert searched(server) == {"200": len(bodies)}


def test_the_pull_keeps_searchs_own_pace(account: Any) -> None:
    # Search allows 2 calls a second here (HubSpot: 4): 5 pages in a row would trip it unpaced.
    dialect = HubSpotDialect(search_requests_per_second=2)
    server, clock, backend = account(dialect, SEARCH_REQUESTS_PER_SECOND=1.8)
    ids = add(server, clock, 450)
    assert seen(pulled(backend, None)) == set(ids)
    assert searched(server) == {"200": 5}

    hasty = HubSpotBackend({**backend.options, "SEARCH_REQUESTS_PER_SECOND": 1000}, backend.auth)
    with pytest.raises(TransientBackendError, match="SECONDLY"):
        pulled(hasty, None)
    assert searched(server)["429"] >= 1


def test_the_pace_option_defaults_to_90_percent_of_searchs_limit() -> None:
    assert HubSpotBackend().search_requests_per_second() == pytest.approx(3.6)
    assert HubSpotBackend().search_limiter.interval == pytest.approx(1 / 3.6)
    assert (
        HubSpotBackend(options={"SEARCH_REQUESTS_PER_SECOND": 2}).search_requests_per_second() == 2
    )


# -- read_changes -----------------------------------------------------------------------------------------


def test_read_changes_reads_by_id_in_batches_with_deleted_and_merged_ones(account: Any) -> None:
    server, clock, backend = account()
    ids = add(server, clock, 150)
    gone, survivor, merged = ids[5], ids[6], ids[7]
    server.contacts.archive(gone)
    server.contacts.archive(merged)
    with (
        server.contacts._lock
    ):  # HubSpot's merge, in-process until the sandbox's control API has it
        server.contacts._contacts[int(survivor)]["properties"]["hs_merged_object_ids"] = merged

    wanted = [*ids, "999999"]
    changes = backend.read_changes(wanted)
    assert [change.external_id for change in changes] == wanted
    by_id = {change.external_id: change for change in changes}
    assert by_id[gone] == CrmChange(gone, deleted=True)
    assert by_id["999999"] == CrmChange("999999", deleted=True)
    assert by_id[merged].merged_into == survivor and not by_id[merged].deleted
    assert by_id[ids[0]].values["email"] == "c0@example.com"
    assert by_id[ids[0]].modified_at == T0 + MS
    assert calls_to(server, "POST /objects/contacts/batch/read") == 2  # 100, then 51


def test_an_id_a_batch_read_says_nothing_of_is_read_alone(scripted_crm: ScriptedCrm) -> None:
    # A 200 naming neither a result nor an error for the id (HubSpot's answer for some merges), and a
    # GET of the id that answers with the contact it was merged into.
    backend = HubSpotBackend({"API_URL": scripted_crm.url, **FAST_SANDBOX}, {"API_KEY": "t"})
    cache.set(backend.table_key(), {})  # the property table, known already
    survivor = {"id": "777", "properties": {"lastmodifieddate": "2026-03-02T09:00:00.000Z"}}
    scripted_crm.script(
        Answer(),
        POST=Answer(body=json.dumps({"status": "COMPLETE", "results": []}).encode()),
        GET=Answer(body=json.dumps(survivor).encode()),
    )
    scripted_crm.requests.clear()
    (change,) = backend.read_changes(["555"])
    assert change == CrmChange("555", T0, merged_into="777")
    batch, alone = scripted_crm.requests
    assert batch.startswith("POST") and batch.endswith(f"{V3}/batch/read")
    assert alone.startswith("GET") and f"{V3}/555?properties=" in alone
    cache.clear()


def calls_to(server: HubSpotSandbox, route: str) -> int:
    return sum(server.stats()["requests"].get(route, {}).values())


# -- the sandbox --------------------------------------------------------------------------------------------


def test_the_sandbox_filters_and_sorts_lastmodifieddate_as_an_instant(account: Any) -> None:
    server, clock, _backend = account()
    ids = add(server, clock, 5, timedelta(seconds=1))  # T0 + 1 s ... T0 + 5 s
    at = [milliseconds(T0 + timedelta(seconds=n)) for n in range(1, 6)]

    def search(*filters: dict[str, Any], direction: str = "ASCENDING", **body: Any) -> Any:
        answer = post(
            server,
            f"{V3}/search",
            {
                "filterGroups": [{"filters": list(filters)}] if filters else [],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": direction}],
                **body,
            },
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def found(*filters: dict[str, Any], **body: Any) -> list[str]:
        return [row["id"] for row in search(*filters, **body)["results"]]

    def rule(operator: str, value: Any, **more: Any) -> dict[str, Any]:
        return {"propertyName": "lastmodifieddate", "operator": operator, "value": value, **more}

    assert found(rule("GTE", str(at[3]))) == ids[3:]
    assert found(rule("GT", str(at[3]))) == ids[4:]
    assert found(rule("LT", at[1])) == ids[:1]
    assert found(rule("LTE", "2026-03-02T09:00:02Z")) == ids[:2]  # ISO 8601 too
    assert found(rule("BETWEEN", str(at[1]), highValue=str(at[3]))) == ids[1:4]
    assert found(rule("EQ", str(at[2]))) == [ids[2]]
    assert found(direction="DESCENDING") == ids[::-1]
    answer = search(rule("GTE", at[0]), limit=2)
    assert (answer["total"], len(answer["results"]), answer["paging"]["next"]["after"]) == (
        5,
        2,
        "2",
    )
    too_big = post(server, f"{V3}/search", {"limit": 201})
    assert too_big.status_code == 400
    # An update stamps the contact afresh: it sorts last now.
    clock.now = T0 + timedelta(minutes=1, milliseconds=7)
    server.contacts.update(ids[0], None, {"properties": {"lastname": "Later"}})
    (row,) = search(rule("GT", at[4]))["results"]
    assert row["id"] == ids[0] and instant(row["updatedAt"]) == clock.now
    assert instant(row["properties"]["lastmodifieddate"]) == clock.now


def test_the_sandboxs_batch_read_names_every_missing_id_in_one_error(account: Any) -> None:
    server, clock, _backend = account()
    (one,) = add(server, clock, 1)
    answer = post(
        server, f"{V3}/batch/read", {"inputs": [{"id": "404"}, {"id": one}, {"id": "405"}]}
    )
    assert answer.status_code == 207
    body = answer.json()
    assert [row["id"] for row in body["results"]] == [one]
    (error,) = body["errors"]
    assert (error["category"], error["context"]["ids"], body["numErrors"]) == (
        "OBJECT_NOT_FOUND",
        ["404", "405"],
        1,
    )
