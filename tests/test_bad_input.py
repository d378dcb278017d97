"""Bad input: whatever a site's rows hold and whatever a CRM answers, a lead ends synced or failed with a
readable reason, and no worker or site save crashes.

Property-based (hypothesis) over the mapper and ``InsightlyBackend.build_payload``: unicode, emoji,
right-to-left text, strings around and far over the limits, ``None``, blanks and wrong types. Then the
same values through real saves, synced over HTTP to the sandbox. Then malformed CRM answers from a tiny
real HTTP server (``tests/scripted_crm.py``), each classified transient or permanent with a readable
message. Runs are bounded and deterministic (``derandomize``, no example database); each property counts
the inputs it tried, the figure the README quotes (run with ``-s`` to see them printed).
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmify import api
from crmify.backends.insightly import FIELD_NAMES, MAX_LENGTHS, InsightlyBackend, normalise_name
from crmify.exceptions import MappingError, PermanentBackendError, TransientBackendError
from crmify.mappers import MAX_CUSTOM_INT, LeadModelFieldMapper, fit_to_crm
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead, SyncState
from crmify.sandbox import SandboxServer
from crmify.tracking import fingerprint
from crmify.worker import MAX_ERROR_LENGTH, process_lead
from tests.conftest import FAST_SANDBOX
from tests.doubles import Enqueued
from tests.factories import lead_of, make_user
from tests.scripted_crm import Answer, ScriptedCrm

#: Bounded and the same on every run: CI must not find a new example on its own one day.
BOUNDED = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- what a site's rows may hold -----------------------------------------------------------------------

RIGHT_TO_LEFT = ["שלום עולם", "مرحبا بالعالم", "\u202eexe.doc\u202c", "\u200fאבג\u200e", "کیمیا"]
EMOJI = ["👩\u200d💻", "🏳️\u200d🌈", "🇬🇧", "👨\u200d👩\u200d👧\u200d👦", "😀", "🧪"]
ODD_TEXT = [
    "",
    " ",
    "\t\n\r ",
    "\u00a0",
    "\ufeff",
    "\x00",
    "a\x00b",
    "None",
    "null",
    '=HYPERLINK("http://x")',
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "Zoë Ångström-Øre",
    "ǅ",
    "e\u0301",
    "\u0000\u0001\u001f",
]

texts = st.one_of(
    st.text(),
    st.sampled_from(RIGHT_TO_LEFT + EMOJI + ODD_TEXT),
    st.lists(st.sampled_from(RIGHT_TO_LEFT + EMOJI + ["a", " "]), max_size=300).map("".join),
    st.text(min_size=240, max_size=300),  # around the 255-character limits
    st.integers(0, 5000).map(lambda n: "x" * n),
    # A lone surrogate: valid in a Python str, not in UTF-8, PostgreSQL or JSON sent to a CRM.
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.just(10**5000),  # more digits than Python will write out
    st.floats(),
    st.decimals(),
    st.dates(),
    st.datetimes(
        timezones=st.sampled_from(
            [None, datetime.UTC, datetime.timezone(datetime.timedelta(hours=5, minutes=30))]
        )
    ),
    st.times(),
    st.uuids(),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(object),
)
any_value = st.one_of(texts, wrong_types)

#: A custom field the sandbox's account has (a text field).
CUSTOM = f"{CUSTOM_FIELD_PREFIX}Signup_Source__c"
#: Every lead field a mapper may fill, and one custom field.
TARGETS = (*MAPPABLE_FIELDS, CUSTOM)

#: A row any site could have; each example overwrites a few of its values with bad ones.
GOOD_ROW: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "status": "NotContacted",
    "lead_source": "Web",
    CUSTOM: "newsletter",
}
bad_rows = st.dictionaries(st.sampled_from(TARGETS), any_value, min_size=1, max_size=3)


def _reader(target: str) -> Callable[[Any], Any]:
    def read(row: Any) -> Any:
        return _row_of(row).get(target)

    read.__name__ = f"row[{target!r}]"
    return read


def _row_of(instance: Any) -> dict[str, Any]:
    return instance if isinstance(instance, dict) else getattr(instance, "bad_row", {})


class AnyValueMapper(LeadModelFieldMapper):
    """Maps every lead field from whatever the row (a dict, or a user carrying ``bad_row``) holds."""

    field_mapping: ClassVar[dict[Any, str]] = {_reader(target): target for target in TARGETS}


# -- what a valid payload is --------------------------------------------------------------------------

LEAD_FIELD_OF = {crm_name: field for field, crm_name in FIELD_NAMES.items()}
PAYLOAD_NAMES = {
    *FIELD_NAMES.values(),
    "LEAD_ID",
    "LEAD_STATUS_ID",
    "LEAD_SOURCE_ID",
    "CUSTOMFIELDS",
}


def assert_valid_payload(payload: dict[str, Any], *, update: bool = False) -> None:
    """What Insightly v3.1 takes: JSON (no NaN), UTF-8, its field names, text within the limits; an
    update may clear a field with ``null`` but never ``LAST_NAME``."""
    json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert set(payload) <= PAYLOAD_NAMES, set(payload) - PAYLOAD_NAMES
    assert payload.get("LAST_NAME") or (update and "LAST_NAME" not in payload), payload
    for name, value in payload.items():
        if update and value is None and name != "LAST_NAME":
            continue
        if name in LEAD_FIELD_OF:
            assert isinstance(value, str) and value.strip(), (name, value)
            limit = Lead._meta.get_field(LEAD_FIELD_OF[name]).max_length
            assert len(value) <= min(limit or len(value), MAX_LENGTHS.get(name, len(value)))
    for name in ("LEAD_STATUS_ID", "LEAD_SOURCE_ID"):
        assert name not in payload or type(payload[name]) is int
    for custom in payload.get("CUSTOMFIELDS", []):
        assert set(custom) == {"FIELD_NAME", "FIELD_VALUE"}
        assert type(custom["FIELD_VALUE"]) in (str, int, float, bool)
        if type(custom["FIELD_VALUE"]) is int:
            assert abs(custom["FIELD_VALUE"]) <= MAX_CUSTOM_INT


def assert_readable(message: str, *, mentions: Iterable[str] = ()) -> None:
    """A message staff can act on: some words, not a traceback, a page or a megabyte; naming the field."""
    assert message.strip(), "an empty message"
    assert len(message) <= MAX_ERROR_LENGTH
    assert "Traceback" not in message and "<html" not in message.lower()
    names = list(mentions)
    assert not names or any(name in message for name in names), (message, names)


# -- the mapper and the payload, without I/O ----------------------------------------------------------

API_URL = "http://127.0.0.1:9/v3.1/"  # never called: build_payload does no I/O


@pytest.fixture
def offline_insightly() -> InsightlyBackend:
    """An Insightly backend whose status and source tables are in the cache, as after the first sync."""
    cache.clear()
    backend = InsightlyBackend({"API_URL": API_URL}, {"API_KEY": "not-used"})
    for collection, names in (
        ("LeadStatuses", ["Not Contacted", "Converted"]),
        ("LeadSources", ["Web"]),
    ):
        table = {normalise_name(name): (number, name) for number, name in enumerate(names, 1)}
        cache.set(backend.table_key(collection), table)
    return backend


def mapped_outcome(row: dict[str, Any], backend: InsightlyBackend) -> str:
    """Map ``row`` and build its create and update payloads; say which way it went, assert it went well."""
    try:
        # As the engine maps: the mapper, then the backend's limits and date format.
        mapped = fit_to_crm(AnyValueMapper().map(row), backend)
    except MappingError as exc:
        assert_readable(str(exc), mentions=row)
        return "mapping error"
    # The save path hashes what it stores: that must work for anything the mapper let through.
    fingerprint({"values": mapped.values, "custom_fields": mapped.custom_fields})
    lead = Lead(**mapped.values, custom_fields=mapped.custom_fields)
    try:
        created = backend.build_payload(lead)
    except PermanentBackendError as exc:  # a status or source the CRM does not have
        assert_readable(str(exc))
        return "permanent error"
    assert_valid_payload(created)
    lead.external_id, lead.synced_values = "42", {"first_name": "Old", "email": "old@example.com"}
    updated = backend.build_payload(lead)
    assert_valid_payload(updated, update=True)
    assert updated["LEAD_ID"] == 42
    return "payload"


def test_any_row_maps_to_a_valid_payload_or_a_clear_mapping_error(
    offline_insightly: InsightlyBackend,
) -> None:
    seen: dict[str, int] = {}

    @BOUNDED
    @given(row=bad_rows)
    def check(row: dict[str, Any]) -> None:
        outcome = mapped_outcome({**GOOD_ROW, **row}, offline_insightly)
        seen[outcome] = seen.get(outcome, 0) + 1

    check()
    print(f"\nbad inputs tried (mapper and payload): {sum(seen.values())} {seen}")
    assert sum(seen.values()) >= 100
    # Both ways are exercised: the strategies are not so wild that nothing ever maps.
    assert seen.get("payload", 0) >= 10 and seen.get("mapping error", 0) >= 10


@pytest.mark.parametrize(
    ("target", "value", "fragment"),
    [
        (CUSTOM, float("nan"), "not a number"),
        ("title", float("-inf"), "not a number"),
        ("description", "\ud800", "not valid Unicode"),
        ("first_name", "Ada\x00", "NUL"),
        (CUSTOM, 2**64, "too large"),
        ("description", 10**5000, "too long"),
        ("company", b"bytes", "got a bytes"),
        (CUSTOM, {"a": 1}, "got a dict"),
    ],
    ids=["nan", "-inf", "surrogate", "nul", "2**64", "10**5000", "bytes", "dict"],
)
def test_values_no_database_or_crm_can_keep_are_mapping_errors_naming_the_field(
    target: str, value: Any, fragment: str
) -> None:
    with pytest.raises(MappingError) as raised:
        AnyValueMapper().map({**GOOD_ROW, target: value})
    assert fragment in str(raised.value) and target in str(raised.value)


def test_text_is_kept_as_written_right_to_left_emoji_and_all(
    offline_insightly: InsightlyBackend,
) -> None:
    row = {
        **GOOD_ROW,
        "first_name": RIGHT_TO_LEFT[0],
        "last_name": EMOJI[3],
        "company": "Zoë 🧪 Ltd",
    }
    payload = offline_insightly.build_payload(
        Lead(**AnyValueMapper().map(row).values, custom_fields={"Signup_Source__c": 7})
    )
    assert payload["FIRST_NAME"] == "שלום עולם" and payload["LAST_NAME"] == EMOJI[3]
    assert payload["ORGANISATION_NAME"] == "Zoë 🧪 Ltd"
    assert payload["CUSTOMFIELDS"] == [{"FIELD_NAME": "Signup_Source__c", "FIELD_VALUE": 7}]


# -- the same values through real saves, synced over HTTP ---------------------------------------------


@pytest.mark.django_db(transaction=True)  # the immediate backend runs each sync on commit
def test_saves_with_any_values_end_synced_or_failed_for_good_and_the_site_save_survives(
    crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(
        AUTO_SYNC=True,
        TASK_BACKEND="immediate",
        LEAD_MODEL_FIELDMAPPER="tests.test_bad_input.AnyValueMapper",
    )
    seen: dict[str, int] = {}
    numbers = itertools.count()

    @settings(BOUNDED, max_examples=100)
    @given(row=bad_rows)
    def check(row: dict[str, Any]) -> None:
        number = next(numbers)
        user = User(username=f"bad{number}")
        user.bad_row = {**GOOD_ROW, "email": f"bad{number}@example.com", **row}  # type: ignore[attr-defined]
        user.save()  # the site's save: never broken by what crmify cannot send
        lead = lead_of(user)
        assert lead.sync_state in (SyncState.SYNCED, SyncState.FAILED), (row, lead.last_error)
        if lead.sync_state == SyncState.FAILED:
            assert_readable(lead.last_error)
            assert lead.attempts <= 1, "failed on a transient error: retrying would not help"
            outcome = "failed"
        else:
            assert crm.leads()  # it is there
            outcome = "synced"
        seen[outcome] = seen.get(outcome, 0) + 1

    check()
    print(f"\nbad inputs tried (saves synced to the sandbox): {sum(seen.values())} {seen}")
    assert sum(seen.values()) >= 100 and seen.get("synced", 0) >= 10 and seen.get("failed", 0) >= 10


# -- the worker with code that raises what nobody expected --------------------------------------------


class RaisingInsightly(InsightlyBackend):
    """Insightly, with payload building that raises a type crmify does not know (a site's subclass bug)."""

    def payload_for(self, lead: Lead, *, fetch: bool) -> dict[str, Any]:
        raise KeyError("ORGANISATION_NAME")


@pytest.mark.django_db
def test_a_backend_raising_an_unknown_exception_is_retried_then_failed_never_crashing_the_worker(
    crm: SandboxServer, configure: Callable[..., None], enqueued: Enqueued
) -> None:
    configure(BACKEND="tests.test_bad_input.RaisingInsightly", MAX_ATTEMPTS=2, RETRY_BACKOFF_BASE=0)
    lead = api.sync(make_user())
    outcomes = [process_lead(lead.pk) for _ in range(2)]
    lead.refresh_from_db()
    assert outcomes == ["retrying", "failed"]
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Gave up after 2 attempts: KeyError: 'ORGANISATION_NAME'"
    ledger = list(lead.ledger.order_by("pk").values_list("operation", "outcome"))
    assert ledger == [("lookup", "ok"), ("sync", "transient")] * 2


@pytest.mark.django_db
def test_a_mapper_raising_an_unknown_exception_fails_the_lead_and_a_retry_maps_again(
    configure: Callable[..., None], enqueued: Enqueued
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.BuggyMapper")
    user = make_user()  # the site's save goes through
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Mapping failed: ZeroDivisionError: division by zero"
    assert process_lead(lead.pk) == "skipped"  # a worker handed it anyway leaves it alone
    result = api.retry_failed([lead])  # mapped again: still broken, still failed, nothing sent
    lead.refresh_from_db()
    assert result.queued == 0 and lead.sync_state == SyncState.FAILED
    assert enqueued.lead_ids == []


# -- malformed CRM answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Malformed:
    """A CRM answer and how crmify must read it: ``outcome`` of the ledger row, words in the message."""

    answer: Answer
    outcome: str
    says: str
    only_on: str | None = None  # a valid answer to the other call


HTML_PAGE = (
    b"<html><head><title>Sign in - Corporate Proxy</title></head><body><p>x</p></body></html>"
)
MALFORMED: dict[str, Malformed] = {
    "html page": Malformed(
        Answer(body=HTML_PAGE, content_type="text/html"), "transient", "Corporate Proxy"
    ),
    "invalid json": Malformed(Answer(body=b'{"LEAD_ID": 1'), "transient", "not JSON"),
    "json without LEAD_ID": Malformed(
        Answer(body=b'{"FIRST_NAME": "Ada"}'), "transient", "LEAD_ID"
    ),
    "LEAD_ID not a number": Malformed(Answer(body=b'{"LEAD_ID": "abc"}'), "transient", "LEAD_ID"),
    "LEAD_ID an object": Malformed(Answer(body=b'{"LEAD_ID": {"id": 5}}'), "transient", "LEAD_ID"),
    "LEAD_ID true": Malformed(Answer(body=b'{"LEAD_ID": true}'), "transient", "LEAD_ID"),
    "empty body": Malformed(Answer(body=b""), "transient", "empty"),
    "json null": Malformed(Answer(body=b"null"), "transient", "LEAD_ID"),
    "a list not an object": Malformed(
        Answer(body=b'[{"LEAD_ID": 5}]'), "transient", "no LEAD_ID", only_on="create"
    ),
    "not utf-8": Malformed(Answer(body=b"\xff\xfe\x00\xc3("), "transient", "not JSON"),
    "nested too deep": Malformed(
        Answer(body=b"[" * 100_000 + b"]" * 100_000), "transient", "not JSON"
    ),
    "huge html": Malformed(
        Answer(body=b"<html><body>" + b"<p>overloaded</p>" * 300_000 + b"</body></html>"),
        "transient",
        "overloaded",
    ),
    "500 html": Malformed(Answer(500, HTML_PAGE, "text/html"), "transient", "Corporate Proxy"),
    "502 empty": Malformed(Answer(502, b""), "transient", "Bad Gateway"),
    "429 odd retry-after": Malformed(
        Answer(429, b"slow down", headers={"Retry-After": "soon"}), "transient", "slow down"
    ),
    "400 invalid json": Malformed(Answer(400, b'{"Message": "LAST_NAME'), "permanent", "LAST_NAME"),
    "400 json message": Malformed(
        Answer(400, b'{"Message": "EMAIL is not valid"}'), "permanent", "EMAIL is not valid"
    ),
    "401 html": Malformed(Answer(401, HTML_PAGE, "text/html"), "permanent", "API key"),
    "403 empty": Malformed(Answer(403, b""), "permanent", "Forbidden"),
    "dropped connection": Malformed(Answer(drop=True), "transient", "Could not reach the CRM"),
}
#: Which call gets the malformed answer: the e-mail lookup before a create, or the create itself.
CALLS = {"lookup": "GET", "create": "POST"}


@pytest.fixture
def scripted(
    scripted_crm: ScriptedCrm, configure: Callable[..., None], enqueued: Enqueued
) -> ScriptedCrm:
    cache.clear()
    configure(
        BACKEND="crmify.backends.insightly.InsightlyBackend",
        BACKEND_AUTH={"API_KEY": "scripted-key"},
        BACKEND_OPTIONS={"API_URL": scripted_crm.url, **FAST_SANDBOX, "STATUS_CACHE_SECONDS": 0},
    )
    # Statuses are looked up before the create: answer them well unless a test says otherwise.
    backend = InsightlyBackend({"API_URL": scripted_crm.url}, {"API_KEY": "scripted-key"})
    cache.set(backend.table_key("LeadStatuses"), {"notcontacted": (1, "Not Contacted")})
    return scripted_crm


#: Each malformed answer on each call it is malformed for: the README's "malformed answers" figure.
MALFORMED_CALLS = [
    (case, call)
    for case, malformed in MALFORMED.items()
    for call in CALLS
    if malformed.only_on in (None, call)
]


@pytest.mark.django_db
@pytest.mark.parametrize(("case", "call"), MALFORMED_CALLS)
def test_a_malformed_crm_answer_is_classified_and_readable(
    scripted: ScriptedCrm, case: str, call: str
) -> None:
    malformed = MALFORMED[case]
    good = {"GET": Answer(body=b"[]"), "POST": Answer(body=b'{"LEAD_ID": 77}')}
    scripted.script(Answer(), **{**good, CALLS[call]: malformed.answer})
    lead = api.sync(make_user())

    outcome = process_lead(lead.pk)  # never raises

    lead.refresh_from_db()
    assert lead.ledger.filter(operation=call).exists()
    entry = lead.ledger.order_by("pk").last()  # the ledger's last word is why the lead failed
    assert entry is not None and entry.outcome == malformed.outcome
    if malformed.outcome == "permanent":
        assert (outcome, lead.sync_state) == ("failed", SyncState.FAILED)
    else:
        assert (outcome, lead.sync_state) == ("retrying", SyncState.RETRYING)
    assert malformed.says in lead.last_error, lead.last_error
    assert_readable(lead.last_error)
    assert len(entry.response_summary) <= 1000 and len(entry.error) <= MAX_ERROR_LENGTH
    assert not lead.external_id


@pytest.mark.django_db
def test_a_well_formed_answer_with_the_wrong_content_type_is_still_read(
    scripted: ScriptedCrm,
) -> None:
    scripted.script(
        Answer(body=b"[]"), POST=Answer(body=b'{"LEAD_ID": 77}', content_type="text/html")
    )
    lead = api.sync(make_user())
    assert process_lead(lead.pk) == "synced"
    lead.refresh_from_db()
    assert lead.external_id == "77"


#: The calls that read a list of records, by the words their errors use.
READERS: dict[str, Callable[[InsightlyBackend], Any]] = {
    "the e-mail lookup": lambda backend: backend.find_by_email("a@example.com"),
    "the lead listing": lambda backend: next(backend.iter_leads()),
    "LeadStatuses": lambda backend: backend._table(
        "LeadStatuses", "LEAD_STATUS_ID", "LEAD_STATUS", fetch=True
    ),
}
LISTINGS: dict[str, tuple[Answer, str]] = {
    "html page": (Answer(body=HTML_PAGE, content_type="text/html"), "Corporate Proxy"),
    "an object": (Answer(body=b'{"LEAD_ID": 5}'), "not a list of records"),
    "numbers": (Answer(body=b"[1, 2]"), "not a list of records"),
    "rows without ids": (Answer(body=b'[{"EMAIL": "a@example.com"}]'), "not a list of records"),
}


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("reader", READERS)
def test_a_malformed_listing_is_a_readable_transient_error_naming_the_call(
    scripted: ScriptedCrm, reader: str, listing: str
) -> None:
    answer, says = LISTINGS[listing]
    scripted.script(answer)
    cache.clear()
    backend = InsightlyBackend({"API_URL": scripted.url, **FAST_SANDBOX}, {"API_KEY": "k" * 8})
    with pytest.raises(TransientBackendError) as raised:
        READERS[reader](backend)
    assert says in str(raised.value) and reader in str(raised.value)
    assert_readable(str(raised.value))


def test_a_fetch_answer_that_is_no_record_is_not_taken_for_a_deleted_lead(
    scripted: ScriptedCrm,
) -> None:
    scripted.script(Answer(body=b'[{"LEAD_ID": 5}]'))
    backend = InsightlyBackend({"API_URL": scripted.url, **FAST_SANDBOX}, {"API_KEY": "k" * 8})
    with pytest.raises(TransientBackendError, match="not a lead record"):
        backend.fetch_lead("5")
