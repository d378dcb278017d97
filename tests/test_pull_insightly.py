"""Reading changes back from Insightly over real HTTP against the sandbox: ``iter_changes`` pages through
``/Leads/Search?updated_after_utc=`` with each lead's values and ``DATE_UPDATED_UTC``, converted leads are
asked for (and the sandbox hides them otherwise, as v2.2 did), an account that refuses the parameter is
asked without it once and then never again, and ``read_changes`` reads leads again by id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from django.core.cache import cache

from crmify.backends import insightly
from crmify.backends.base import CrmChange, recording
from crmify.backends.insightly import InsightlyBackend, query_date, updated_at
from crmify.exceptions import PermanentBackendError
from crmify.sandbox import SandboxServer
from crmify.sandbox.dates import format_body_date
from crmify.sandbox.schema import Dialect
from tests.conftest import FAST_SANDBOX, calls
from tests.sandbox.test_sandbox_leads import FakeClock

SEARCH = "GET /Leads/Search"
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_process_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a fresh process: no status table cached, no account known to refuse
    ``include_converted``."""
    monkeypatch.setattr(insightly, "REFUSES_INCLUDE_CONVERTED", set())
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def account() -> Iterator[Any]:
    """Builds a sandbox of its own on a clock the test moves (``clock.now``), and its backend."""
    servers: list[SandboxServer] = []

    def build(
        dialect: Dialect | None = None, **options: Any
    ) -> tuple[SandboxServer, FakeClock, InsightlyBackend]:
        clock = FakeClock()
        clock.now = T0
        server = SandboxServer(clock=clock, dialect=dialect, faults=None).start()
        server.set_faults(requests_per_second=None)
        servers.append(server)
        backend = InsightlyBackend(
            {"API_URL": server.url, **FAST_SANDBOX, **options}, {"API_KEY": server.api_key}
        )
        return server, clock, backend

    yield build
    for server in servers:
        server.stop()


def pulled(backend: InsightlyBackend, since: datetime | None) -> list[list[CrmChange]]:
    return list(backend.iter_changes(since))


def status_id(server: SandboxServer, name: str) -> int:
    return next(status.id for status in server.state.statuses if status.name == name)


def convert(server: SandboxServer, lead_id: int, when: datetime) -> None:
    """Convert a lead as a salesperson does in Insightly's UI (Actions → Convert Lead): in-process,
    until the sandbox's control API offers it."""
    state = server.state
    with state._lock:
        lead = state._leads[lead_id]
        lead.update(
            CONVERTED=True,
            CONVERTED_DATE_UTC=format_body_date(when),
            LEAD_STATUS_ID=status_id(server, "Converted"),
            DATE_UPDATED_UTC=format_body_date(when),
        )


def search_raw(server: SandboxServer, **params: Any) -> requests.Response:
    return requests.get(
        server.url + "Leads/Search", params=params, auth=(server.api_key, ""), timeout=5
    )


# -- iter_changes -----------------------------------------------------------------------------------------


def test_the_pull_reads_leads_changed_since_a_moment_with_their_values_and_time(
    account: Any,
) -> None:
    server, clock, backend = account(CUSTOM_FIELDS={"plan": "Plan__c"})
    first = server.add_lead({"LAST_NAME": "Lovelace", "EMAIL": "ada@example.com"})
    second = server.add_lead({"LAST_NAME": "Hopper", "FIRST_NAME": "Grace"})
    clock.now = T0 + timedelta(hours=1)
    server.state.update_lead(
        {
            "LEAD_ID": second["LEAD_ID"],
            "LEAD_STATUS_ID": status_id(server, "Contacted"),
            "TITLE": "Rear Admiral",
            "CUSTOMFIELDS": [{"FIELD_NAME": "Plan__c", "FIELD_VALUE": "Pro"}],
        }
    )

    with recording() as records:
        (page,) = pulled(backend, T0 + timedelta(minutes=30, microseconds=900))
    (change,) = page
    assert change.external_id == str(second["LEAD_ID"]) and not change.deleted
    assert change.modified_at == T0 + timedelta(hours=1)
    assert change.values["status"] == "Contacted"
    assert (change.values["last_name"], change.values["first_name"]) == ("Hopper", "Grace")
    assert (change.values["title"], change.values["custom_fields"]) == (
        "Rear Admiral",
        {"plan": "Pro"},
    )
    # ISO 8601 to the second in the query (a fraction dropped, never rounded up past a change).
    (search,) = [r for r in records if r.operation == "pull"]
    assert "updated_after_utc=2026-03-02T09:30:00Z" in search.request_summary
    assert "include_converted=true" in search.request_summary

    everything = [c.external_id for page in pulled(backend, None) for c in page]
    assert sorted(everything) == sorted([str(first["LEAD_ID"]), str(second["LEAD_ID"])])
    assert calls(server, "GET /Leads") == 1  # every lead: the listing, not a search


def test_the_pull_pages_through_1200_leads_500_at_a_time(account: Any) -> None:
    server, clock, backend = account()
    for n in range(1200):
        server.add_lead({"LAST_NAME": f"L{n}", "EMAIL": f"l{n}@example.com"})
    assert backend.pull_page_size == 500

    pages = pulled(backend, T0)
    assert [len(page) for page in pages] == [500, 500, 200]
    ids = [change.external_id for page in pages for change in page]
    assert len(set(ids)) == 1200
    assert all(change.modified_at == T0 for page in pages for change in page)
    assert calls(server, SEARCH) == 3
    # A multiple of the page size ends on an empty page: one more call, nothing lost.
    server.state.delete_lead(int(ids[0]))
    clock.now = T0 + timedelta(seconds=5)
    for n in range(301):
        server.add_lead({"LAST_NAME": f"M{n}"})
    assert [len(page) for page in pulled(backend, None)] == [500, 500, 500, 0]


def test_a_converted_lead_the_search_hides_by_default_is_pulled(account: Any) -> None:
    server, _clock, backend = account()
    lead = server.add_lead({"LAST_NAME": "Buyer", "EMAIL": "buyer@example.com"})
    convert(server, lead["LEAD_ID"], T0 + timedelta(hours=2))
    since = query_date(T0 + timedelta(hours=1))
    # The sandbox answers as v2.2 did: without include_converted, the conversion is invisible.
    assert search_raw(server, updated_after_utc=since).json() == []

    ((change,),) = pulled(backend, T0 + timedelta(hours=1))
    assert change.external_id == str(lead["LEAD_ID"])
    assert change.values["status"] == "Converted"
    assert change.modified_at == T0 + timedelta(hours=2)
    ((listed,),) = pulled(backend, None)  # the listing of every lead asks for them too
    assert listed.values["status"] == "Converted"


def test_the_lookup_by_email_and_the_backfill_listing_see_a_converted_lead(account: Any) -> None:
    # Hidden from them, a converted customer who saves their profile would be created again.
    server, _clock, backend = account()
    lead = server.add_lead({"LAST_NAME": "Buyer", "EMAIL": "buyer@example.com"})
    convert(server, lead["LEAD_ID"], T0 + timedelta(hours=2))
    assert backend.find_by_email(" Buyer@example.com") == str(lead["LEAD_ID"])
    listed = [crm_lead.external_id for page in backend.iter_leads() for crm_lead in page]
    assert listed == [str(lead["LEAD_ID"])]


def test_an_account_that_refuses_include_converted_is_asked_without_it_once_per_process(
    account: Any,
) -> None:
    server, _clock, backend = account(
        Dialect(include_converted="refused", converted_leads="listed")
    )
    lead = server.add_lead({"LAST_NAME": "Buyer"})
    convert(server, lead["LEAD_ID"], T0 + timedelta(hours=2))
    refused = search_raw(server, updated_after_utc=query_date(T0), include_converted="true")
    assert refused.status_code == 400 and "include_converted" in refused.json()["Message"]

    ((change,),) = pulled(backend, T0)
    assert change.values["status"] == "Converted"
    assert server.stats()["requests"][SEARCH] == {"400": 2, "200": 1}  # ours, then the pull's
    # Another backend of the same process (the next poll) does not ask again.
    other = InsightlyBackend(dict(backend.options), dict(backend.auth))
    ((again,),) = pulled(other, T0)
    assert again.external_id == change.external_id
    assert server.stats()["requests"][SEARCH] == {"400": 2, "200": 2}


def test_include_converted_can_be_turned_off_and_other_400s_are_not_taken_for_a_refusal(
    account: Any,
) -> None:
    server, _clock, backend = account(Dialect(include_converted="refused"), INCLUDE_CONVERTED=False)
    server.add_lead({"LAST_NAME": "Plain"})
    with recording() as records:
        ((change,),) = pulled(backend, T0)
    (search,) = [record for record in records if record.operation == "pull"]
    assert "include_converted" not in search.request_summary
    assert change.values["last_name"] == "Plain"

    _, _, strict = account()
    with pytest.raises(PermanentBackendError, match="top must be between"):
        # A page size the account refuses: the 400 does not name include_converted, so it stands.
        strict.lead_listing("Leads", {"top": 501, "skip": 0})
    assert not insightly.REFUSES_INCLUDE_CONVERTED


# -- read_changes -----------------------------------------------------------------------------------------


def test_read_changes_reads_each_lead_again_and_a_deleted_one_is_deleted(account: Any) -> None:
    server, _clock, backend = account()
    kept = server.add_lead({"LAST_NAME": "Kept", "EMAIL": "kept@example.com"})
    gone = server.add_lead({"LAST_NAME": "Gone"})
    server.state.delete_lead(gone["LEAD_ID"])

    first, second = backend.read_changes([str(kept["LEAD_ID"]), str(gone["LEAD_ID"])])
    assert (first.external_id, first.deleted, first.modified_at) == (
        str(kept["LEAD_ID"]),
        False,
        T0,
    )
    assert first.values["email"] == "kept@example.com" and first.values["status"] == "Not Contacted"
    assert second == CrmChange(str(gone["LEAD_ID"]), deleted=True)


def test_dates_are_read_as_utc_and_written_to_the_second() -> None:
    assert updated_at("2026-03-02 09:00:07") == T0 + timedelta(seconds=7)
    assert updated_at("2026-03-02T10:00:07+01:00") == T0 + timedelta(seconds=7)
    assert updated_at(None) is None and updated_at("soon") is None
    berlin = datetime(2026, 3, 2, 10, 0, 7, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert query_date(berlin) == "2026-03-02T09:00:07Z"


# -- the sandbox's listings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "hidden_without_parameter"),
    [(Dialect(), True), (Dialect(converted_leads="listed"), False)],
    ids=["hidden", "listed"],
)
def test_the_sandbox_hides_converted_leads_as_its_dialect_says(
    account: Any, dialect: Dialect, hidden_without_parameter: bool
) -> None:
    server, _clock, _backend = account(dialect)
    plain = server.add_lead({"LAST_NAME": "Plain"})
    bought = server.add_lead({"LAST_NAME": "Bought"})
    convert(server, bought["LEAD_ID"], T0)
    expected = (
        [plain["LEAD_ID"]] if hidden_without_parameter else [plain["LEAD_ID"], bought["LEAD_ID"]]
    )
    auth = (server.api_key, "")
    listing = requests.get(
        server.url + "Leads", params={"count_total": "true"}, auth=auth, timeout=5
    )
    assert [lead["LEAD_ID"] for lead in listing.json()] == expected
    assert listing.headers["X-Total-Count"] == str(len(expected))
    searched = search_raw(server, updated_after_utc=query_date(T0), count_total="true")
    assert [lead["LEAD_ID"] for lead in searched.json()] == expected
    everything = search_raw(
        server, updated_after_utc=query_date(T0), include_converted="true", top=1, skip=1
    )
    assert [lead["LEAD_ID"] for lead in everything.json()] == [bought["LEAD_ID"]]
