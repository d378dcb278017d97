"""The HubSpot backend against the HubSpot sandbox, over real HTTP: every operation and every rule of
``crmify.backends.hubspot``, with their failure paths."""

from __future__ import annotations

import datetime
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from crmify import backfill
from crmify.backends import build_backend, get_backend
from crmify.backends.hubspot import HubSpotBackend, seconds_to_midnight
from crmify.backends.hubspot_errors import describe_error, existing_id, property_problems
from crmify.backfill import BackfillOptions
from crmify.conf import crmify_settings
from crmify.exceptions import PermanentBackendError
from crmify.models import BackfillRun, Lead, LedgerEntry, SyncState
from crmify.sandbox.hubspot import HubSpotDialect, HubSpotSandbox, PropertyDef
from crmify.worker import process_lead
from tests.conftest import FAST_SANDBOX, calls, hubspot_crmify_for
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db

CREATE = "POST /objects/contacts"
PATCH = "PATCH /objects/contacts/{id}"


def sign_up(capture: Any, **fields: Any) -> Lead:
    fields.setdefault("username", fields.get("email", "someone"))
    with capture(execute=True):
        user = User.objects.create(**fields)
    return Lead.objects.get(source_id=str(user.pk))


def save_user(capture: Any, lead: Lead, **changes: Any) -> Lead:
    with capture(execute=True):
        user = User.objects.get(pk=lead.source_id)
        for name, value in changes.items():
            setattr(user, name, value)
        user.save()
    lead.refresh_from_db()
    return lead


def contact(crm: HubSpotSandbox, lead: Lead) -> dict[str, Any]:
    (row,) = [row for row in crm.leads() if row["id"] == lead.external_id]
    return dict(row["properties"])


@pytest.fixture
def own_crm() -> Iterator[Any]:
    """Builds a HubSpot sandbox of its own (custom properties, a dialect) configured as the CRM."""
    servers: list[HubSpotSandbox] = []
    overrides: list[Any] = []

    def build(options: dict[str, Any] | None = None, **kwargs: Any) -> HubSpotSandbox:
        kwargs.setdefault("faults", HubSpotSandbox().default_faults)
        server = HubSpotSandbox(**kwargs).start()
        server.set_faults(requests_per_second=None)
        servers.append(server)
        cache.clear()
        override = override_settings(
            CRMIFY=hubspot_crmify_for(server, **FAST_SANDBOX, **(options or {}))
        )
        override.enable()
        overrides.append(override)
        return server

    yield build
    for override in reversed(overrides):
        override.disable()
    for server in servers:
        server.stop()
    cache.clear()


# -- create, update, delete, fetch ---------------------------------------------------------------------


def test_create_sends_contact_properties_and_the_new_status(
    hubspot, django_capture_on_commit_callbacks
):
    lead = sign_up(
        django_capture_on_commit_callbacks,
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
    )
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    held = contact(hubspot, lead)
    assert (held["email"], held["firstname"], held["lastname"]) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
    )
    assert held["hs_lead_status"] == "NEW"  # the configured new status, on a standard account
    assert calls(hubspot, CREATE) == 1
    assert calls(hubspot, "GET /properties/contacts") == 1  # read once...
    sign_up(django_capture_on_commit_callbacks, email="b@example.com", last_name="B")
    assert calls(hubspot, "GET /properties/contacts") == 1  # ...and cached


def test_every_lead_field_has_its_contact_property(hubspot):
    values = {
        "email": "all@example.com",
        "first_name": "F",
        "last_name": "L",
        "phone": "1",
        "mobile_phone": "2",
        "title": "T",
        "company": "C",
        "website": "https://w.example",
        "street_address": "S",
        "city": "Ci",
        "state": "St",
        "postcode": "Z",
        "country": "Co",
    }
    lead = Lead.objects.create(source_id="x", **values)
    lead.external_id = get_backend().sync_lead(lead)
    held = contact(hubspot, lead)
    expected = {
        "email": "all@example.com",
        "firstname": "F",
        "lastname": "L",
        "phone": "1",
        "mobilephone": "2",
        "jobtitle": "T",
        "company": "C",
        "website": "https://w.example",
        "address": "S",
        "city": "Ci",
        "state": "St",
        "zip": "Z",
        "country": "Co",
    }
    assert {name: held.get(name) for name in expected} == expected


def test_update_patches_only_what_changed_and_empty_clears(
    hubspot, django_capture_on_commit_callbacks
):
    lead = sign_up(
        django_capture_on_commit_callbacks, email="u@example.com", first_name="U", last_name="One"
    )
    lead = save_user(django_capture_on_commit_callbacks, lead, last_name="Two", first_name="")
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    patch = LedgerEntry.objects.filter(operation="update").latest("pk")
    assert patch.request_summary.startswith(f"PATCH /crm/v3/objects/contacts/{lead.external_id}")
    assert '"lastname": "Two"' in patch.request_summary
    assert '"firstname": ""' in patch.request_summary
    assert "email" not in patch.request_summary.split(" ", 2)[2]  # unchanged: not sent
    held = contact(hubspot, lead)
    assert held["lastname"] == "Two" and held.get("firstname") is None
    assert calls(hubspot, CREATE) == 1


def test_delete_archives_and_a_missing_contact_counts_as_gone(
    hubspot, django_capture_on_commit_callbacks
):
    lead = sign_up(django_capture_on_commit_callbacks, email="d@example.com", last_name="D")
    backend = get_backend()
    with django_capture_on_commit_callbacks(execute=True):
        User.objects.get(pk=lead.source_id).delete()
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.DELETED and lead.tombstone
    assert hubspot.leads() == []
    assert backend.delete_lead(lead.external_id) is True  # 404: already gone
    assert calls(hubspot, "DELETE /objects/contacts/{id}") == 2


def test_update_of_a_contact_deleted_in_hubspot_marks_it_deleted_in_the_crm(
    hubspot, django_capture_on_commit_callbacks
):
    lead = sign_up(django_capture_on_commit_callbacks, email="x@example.com", last_name="X")
    hubspot.contacts.archive(lead.external_id)
    lead = save_user(django_capture_on_commit_callbacks, lead, first_name="Changed")
    # Issue 14: a 404 to the update marks the lead deleted in the CRM (it failed permanently before).
    assert lead.sync_state == SyncState.DELETED and lead.deleted_in_crm_at is not None
    assert "no longer exists in HubSpot" in lead.last_error


def test_fetch_returns_the_contact_flat_or_none(hubspot, django_capture_on_commit_callbacks):
    lead = sign_up(
        django_capture_on_commit_callbacks, email="f@example.com", first_name="F", last_name="F"
    )
    record = get_backend().fetch_lead(lead.external_id)
    assert record is not None
    assert record["email"] == "f@example.com" and record["hs_lead_status"] == "NEW"
    assert record["id"] == lead.external_id
    assert get_backend().fetch_lead("999999") is None


def test_compare_reads_the_contact_by_lead_field_and_status_name(hubspot):
    backend = build_backend()
    record = {
        "id": "7",
        "firstname": "Ada",
        "zip": "E1 6AN",
        "jobtitle": "Engineer",
        "hs_lead_status": "NEW",
        "lifecyclestage": "customer",
        "plan": "gold",
        "createdate": "2026-12-01T10:00:00Z",
    }
    values = backend.read_record(record)
    assert (values["first_name"], values["postcode"], values["title"]) == (
        "Ada",
        "E1 6AN",
        "Engineer",
    )
    # A customer whose lead status still says NEW is converted, as the app names it.
    assert values["status"] == crmify_settings.LEAD_CONVERTED_STATUS
    assert values["custom_fields"] == {"plan": "gold"}
    assert backend.read_record({"hs_lead_status": "UNQUALIFIED"})["status"] == (
        crmify_settings.LEAD_DEAD_STATUS
    )


def test_build_payload_is_the_body_and_makes_no_call(hubspot, django_capture_on_commit_callbacks):
    lead = sign_up(django_capture_on_commit_callbacks, email="b@example.com", last_name="B")
    before = hubspot.stats()["total"]
    backend = get_backend()
    assert backend.build_payload(lead) == {"properties": {}}  # synced: nothing to send
    lead.last_name = "C"
    assert backend.build_payload(lead) == {"properties": {"lastname": "C"}}
    lead.external_id = ""
    payload = backend.build_payload(lead)
    assert payload["properties"]["email"] == "b@example.com"
    assert hubspot.stats()["total"] == before


def test_lookup_and_listing(hubspot):
    for number in range(205):
        hubspot.add_contact({"email": f"p{number}@example.com"})
    backend = get_backend()
    pages = list(backend.iter_leads(page_size=500))
    assert [len(page) for page in pages] == [100, 100, 5]  # 100 is HubSpot's largest page
    emails = {crm_lead.email for page in pages for crm_lead in page}
    assert len(emails) == 205 and "p204@example.com" in emails
    assert calls(hubspot, "GET /objects/contacts") == 3
    lead = Lead(email="P7@Example.com ")
    assert backend.find_lead_id(lead) == hubspot.contacts.get("p7@example.com", "email", [])["id"]
    assert backend.find_lead_id(Lead(email="nobody@example.com")) is None


def test_record_url_needs_the_portal_id(hubspot):
    assert get_backend().record_url("5") is None
    backend = HubSpotBackend(options={"PORTAL_ID": 123})
    assert backend.record_url("5") == "https://app.hubspot.com/contacts/123/record/0-1/5"


def test_dated_paths_are_an_option(hubspot, django_capture_on_commit_callbacks):
    options = {
        **FAST_SANDBOX,
        "OBJECTS_PATH": "/crm/objects/2026-03/contacts",
        "PROPERTIES_PATH": "/crm/properties/2026-03/contacts",
    }
    with override_settings(CRMIFY=hubspot_crmify_for(hubspot, **options)):
        lead = sign_up(django_capture_on_commit_callbacks, email="dated@example.com", last_name="D")
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    entry = LedgerEntry.objects.filter(operation="create").get()
    assert entry.request_summary.startswith("POST /crm/objects/2026-03/contacts")


# -- properties, custom fields and statuses --------------------------------------------------------


def test_custom_fields_go_to_the_property_of_their_name(own_crm):
    crm = own_crm(properties=[PropertyDef("favourite_colour")])
    lead = Lead.objects.create(
        source_id="c", email="c@example.com", custom_fields={"favourite_colour": "teal"}
    )
    lead.external_id = get_backend().sync_lead(lead)
    assert contact(crm, lead)["favourite_colour"] == "teal"


def test_an_unknown_property_is_a_readable_error_before_any_send(own_crm):
    crm = own_crm()
    lead = Lead.objects.create(source_id="u", email="u@example.com", custom_fields={"shoe_size": 9})
    with pytest.raises(PermanentBackendError, match="no contact property 'shoe_size'"):
        get_backend().sync_lead(lead)
    assert calls(crm, CREATE) == 0


def test_a_value_that_is_no_option_is_a_readable_error_before_any_send(own_crm):
    crm = own_crm({"STATUSES": {"NotContacted": {"hs_lead_status": "WARM"}}})
    lead = Lead.objects.create(source_id="w", email="w@example.com", status="NotContacted")
    with pytest.raises(PermanentBackendError, match="'WARM' is no option of 'hs_lead_status'"):
        get_backend().sync_lead(lead)
    assert calls(crm, CREATE) == 0


def test_a_read_only_property_is_refused_before_any_send(own_crm):
    crm = own_crm()
    lead = Lead.objects.create(
        source_id="r", email="r@example.com", custom_fields={"hs_object_id": "5"}
    )
    with pytest.raises(PermanentBackendError, match="'hs_object_id' is read-only"):
        get_backend().sync_lead(lead)
    assert calls(crm, CREATE) == 0


def test_hubspots_400_names_the_property_and_forgets_the_stale_table(own_crm):
    crm = own_crm()
    backend = get_backend()
    table = backend.property_table(fetch=True)
    cache.set(backend.table_key(), {**table, "ghost": ("string", False, ())})  # deleted since
    lead = Lead.objects.create(source_id="g", email="g@example.com", custom_fields={"ghost": "boo"})
    with pytest.raises(PermanentBackendError) as caught:
        backend.sync_lead(lead)
    assert caught.value.status_code == 400
    assert "ghost" in caught.value.message and "PROPERTY_DOESNT_EXIST" in caught.value.message
    assert cache.get(backend.table_key()) is None  # the next attempt reads the account afresh
    with pytest.raises(PermanentBackendError, match="no contact property 'ghost'"):
        backend.sync_lead(lead)
    assert calls(crm, CREATE) == 1


def test_the_three_configured_statuses_work_on_a_standard_account(own_crm):
    crm = own_crm()
    backend = get_backend()
    held = {}
    for status in ("NotContacted", "Converted", "Disqualified"):
        lead = Lead.objects.create(source_id=status, email=f"{status}@example.com", status=status)
        lead.external_id = backend.sync_lead(lead)
        held[status] = contact(crm, lead)
    assert held["NotContacted"]["hs_lead_status"] == "NEW"
    assert held["Converted"]["lifecyclestage"] == "customer"
    assert held["Disqualified"]["hs_lead_status"] == "UNQUALIFIED"


def test_status_values_given_as_codes_work_where_options_are_labels(own_crm):
    # hs_lead_status's values are unconfirmed: an account whose values are its labels still works.
    crm = own_crm(dialect=HubSpotDialect(lead_status_values="labels"))
    lead = Lead.objects.create(source_id="l", email="l@example.com", status="Disqualified")
    lead.external_id = get_backend().sync_lead(lead)
    assert contact(crm, lead)["hs_lead_status"] == "Unqualified"


def test_a_status_matching_an_option_label_needs_no_mapping(own_crm):
    crm = own_crm()
    lead = Lead.objects.create(source_id="i", email="i@example.com", status="In Progress")
    lead.external_id = get_backend().sync_lead(lead)
    assert contact(crm, lead)["hs_lead_status"] == "IN_PROGRESS"


def test_an_unmapped_status_fails_with_the_options_and_the_setting_to_use(own_crm):
    crm = own_crm()
    lead = Lead.objects.create(source_id="s", email="s@example.com", status="Contacted")
    with pytest.raises(PermanentBackendError) as caught:
        get_backend().sync_lead(lead)
    assert "BACKEND_OPTIONS['STATUSES']" in caught.value.message
    assert "Attempted to contact" in caught.value.message
    assert calls(crm, CREATE) == 0


def test_a_status_change_moves_the_properties_and_clears_the_old_one(
    hubspot, django_capture_on_commit_callbacks
):
    lead = Lead.objects.create(source_id="m", email="m@example.com", status="NotContacted")
    backend = get_backend()
    lead.external_id = backend.sync_lead(lead)
    lead.synced_values = lead.crm_values()
    lead.status = "Converted"
    backend.sync_lead(lead)
    held = contact(hubspot, lead)
    assert held["lifecyclestage"] == "customer" and held.get("hs_lead_status") is None


@pytest.mark.parametrize("backwards", ["ignored", "rejected", "allowed"])
def test_lifecycle_stage_moves_backwards_by_clearing_it_first(own_crm, backwards):
    crm = own_crm(
        {"STATUSES": {"NotContacted": {"lifecyclestage": "lead"}}},
        dialect=HubSpotDialect(lifecycle_backwards=backwards),
    )
    backend = get_backend()
    lead = Lead.objects.create(source_id="b", email="b@example.com", status="Converted")
    lead.external_id = backend.sync_lead(lead)
    lead.synced_values = lead.crm_values()
    lead.status = "NotContacted"
    backend.sync_lead(lead)
    assert contact(crm, lead)["lifecyclestage"] == "lead"
    # Known to be a move back: cleared first, so HubSpot never refuses or ignores it (two PATCHes).
    assert crm.stats()["requests"][PATCH] == {"200": 2}


@pytest.mark.parametrize("backwards", ["ignored", "rejected"])
def test_an_adopted_contact_further_along_still_gets_the_stage(own_crm, backwards):
    # The contact's stage is unknown to the app (adopted by e-mail): the answer or the 400 tells.
    crm = own_crm(
        {"STATUSES": {"NotContacted": {"lifecyclestage": "lead"}}},
        dialect=HubSpotDialect(lifecycle_backwards=backwards),
    )
    crm.add_contact({"email": "a@example.com", "lifecyclestage": "customer"})
    lead = Lead.objects.create(source_id="a", email="a@example.com", status="NotContacted")
    lead.external_id = get_backend().sync_lead(lead)
    assert contact(crm, lead)["lifecyclestage"] == "lead"
    assert len(crm.leads()) == 1


# -- duplicates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("conflict", ["legacy", "object_already_exists", "no_id"])
def test_an_existing_contact_with_the_email_is_adopted_and_updated(own_crm, conflict):
    crm = own_crm(dialect=HubSpotDialect(conflict=conflict))
    existing = crm.add_contact({"email": "old@example.com", "lastname": "Old"})
    lead = Lead.objects.create(source_id="o", email="old@example.com", last_name="New")
    assert get_backend().sync_lead(lead) == existing["id"]
    (row,) = crm.leads()
    assert row["properties"]["lastname"] == "New"
    assert calls(crm, CREATE) == 1 and calls(crm, PATCH) == 1


def test_a_timed_out_create_is_adopted_on_retry_not_duplicated(
    hubspot, django_capture_on_commit_callbacks
):
    hubspot.set_faults(create_timeout_rate=1.0, create_timeout_delay=3.0)
    with override_settings(CRMIFY=hubspot_crmify_for(hubspot, TIMEOUT=0.5)):
        lead = sign_up(django_capture_on_commit_callbacks, email="t@example.com", last_name="T")
        assert lead.sync_state == SyncState.RETRYING
        assert "did not answer" in lead.last_error
        hubspot.set_faults(create_timeout_rate=0.0)
        Lead.objects.filter(pk=lead.pk).update(next_attempt_at=None)
        assert process_lead(lead.pk) == "synced"
    lead.refresh_from_db()
    (row,) = hubspot.leads()
    assert row["id"] == lead.external_id
    assert hubspot.stats()["requests"][CREATE] == {"201": 1, "409": 1}


# -- errors, limits and quota ------------------------------------------------------------------------


def test_a_bad_token_fails_readably_and_is_never_kept(hubspot, django_capture_on_commit_callbacks):
    secret = "pat-na1-wrong-0123456789"
    with override_settings(CRMIFY=hubspot_crmify_for(hubspot, token=secret)):
        lead = sign_up(django_capture_on_commit_callbacks, email="k@example.com", last_name="K")
        assert get_backend().health().auth_failed
    assert lead.sync_state == SyncState.FAILED
    assert "CRMIFY_BACKEND_AUTH_API_KEY" in lead.last_error
    assert "INVALID_AUTHENTICATION" in lead.last_error or "invalid" in lead.last_error
    entries = list(LedgerEntry.objects.values_list("error", "request_summary", "response_summary"))
    assert entries and secret not in str(entries) + lead.last_error
    assert LedgerEntry.objects.filter(http_status=401).exists()


def test_server_errors_are_retried_and_read_well(hubspot, django_capture_on_commit_callbacks):
    hubspot.set_faults(error_rate=1.0, seed=3)
    lead = sign_up(django_capture_on_commit_callbacks, email="e@example.com", last_name="E")
    assert lead.sync_state == SyncState.RETRYING and lead.attempts == 1
    assert "HTTP 50" in lead.last_error and "<" not in lead.last_error
    hubspot.set_faults(error_rate=0.0)
    Lead.objects.filter(pk=lead.pk).update(next_attempt_at=None)
    assert process_lead(lead.pk) == "synced"
    assert len(hubspot.leads()) == 1


def test_a_ten_second_429_is_transient_with_the_documented_wait(
    hubspot, django_capture_on_commit_callbacks
):
    hubspot.set_faults(requests_per_second=0.1)  # 1 call in any 10 s
    lead = sign_up(django_capture_on_commit_callbacks, email="r@example.com", last_name="R")
    assert lead.sync_state == SyncState.RETRYING, lead.last_error
    assert "TEN_SECONDLY_ROLLING" in lead.last_error and lead.attempts == 1
    wait = (lead.next_attempt_at - timezone.now()).total_seconds()
    assert 8 <= wait <= 11  # no Retry-After: the 10-second interval
    assert hubspot.stats()["throttled"]["rate"] == 1


def test_the_daily_429_waits_for_midnight_without_spending_attempts(
    hubspot, django_capture_on_commit_callbacks
):
    zone = "Pacific/Auckland"
    with override_settings(
        CRMIFY=hubspot_crmify_for(hubspot, **FAST_SANDBOX, DAILY_RESET_TIME_ZONE=zone)
    ):
        hubspot.set_faults(daily_quota=2)
        first = sign_up(django_capture_on_commit_callbacks, email="q1@example.com", last_name="Q")
        assert first.sync_state == SyncState.SYNCED, first.last_error  # properties + create
        state = get_backend().health()
        assert (state.limit, state.remaining) == (2, 0)  # from X-HubSpot-RateLimit-Daily-*
        second = sign_up(django_capture_on_commit_callbacks, email="q2@example.com", last_name="Q")
        assert second.sync_state == SyncState.RETRYING
        assert "quota is used up" in second.last_error and second.attempts == 0
        expected = timezone.now() + datetime.timedelta(
            seconds=seconds_to_midnight(zone, timezone.now())
        )
        assert abs((second.next_attempt_at - expected).total_seconds()) < 120
        made = hubspot.stats()["total"]
        third = sign_up(django_capture_on_commit_callbacks, email="q3@example.com", last_name="Q")
        assert third.sync_state == SyncState.RETRYING and third.attempts == 0
        assert hubspot.stats()["total"] == made  # no call while the quota is known to be used up
        assert hubspot.stats()["throttled"]["quota"] == 1


def test_a_reset_that_did_not_come_is_looked_at_again_hourly(hubspot):
    backend = get_backend()
    backend.quota.exhaust(-5)  # we waited for a midnight; it has passed
    assert backend.daily_wait() == 3600
    backend = HubSpotBackend(options={"DAILY_RECHECK_SECONDS": 600})
    backend.quota.exhaust(-5)
    assert backend.daily_wait() == 600
    cache.clear()  # no reset waited for yet: the next midnight of the site's zone
    zone = settings.TIME_ZONE
    assert backend.daily_wait() == pytest.approx(seconds_to_midnight(zone, timezone.now()), abs=5)


def test_midnight_is_the_accounts():
    now = datetime.datetime(2026, 12, 2, 22, 0, tzinfo=datetime.UTC)
    assert seconds_to_midnight("UTC", now) == 2 * 3600
    assert seconds_to_midnight("Europe/Berlin", now) == 3600  # 23:00 there
    tokyo = datetime.datetime(2026, 12, 2, 14, 30, tzinfo=zoneinfo.ZoneInfo("UTC"))
    assert seconds_to_midnight("Asia/Tokyo", tokyo) == 30 * 60


def test_the_pace_follows_the_plans_ten_second_limit():
    assert HubSpotBackend().requests_per_second() == pytest.approx(9.0)  # 100 per 10 s, 90 %
    assert HubSpotBackend(options={"TEN_SECOND_LIMIT": 190}).requests_per_second() == (
        pytest.approx(17.1)
    )
    assert HubSpotBackend(options={"REQUESTS_PER_SECOND": 3}).requests_per_second() == 3
    assert HubSpotBackend(options={"TEN_SECOND_LIMIT": 40}).limiter.interval == pytest.approx(
        1 / 3.6
    )


def test_the_shared_limiter_keeps_under_the_rolling_window(hubspot):
    hubspot.set_faults(requests_per_second=2.0)  # 20 in any 10 s
    backend = HubSpotBackend(
        options={"API_URL": hubspot.url, "TEN_SECOND_LIMIT": 20, "TIMEOUT": 5},
        auth={"API_KEY": hubspot.token},
    )
    for number in range(24):
        backend.sync_lead(Lead(source_id=str(number), email=f"w{number}@example.com"))
    assert hubspot.stats()["throttled"]["rate"] == 0
    assert len(hubspot.leads()) == 24


# -- crmify_check and system checks ----------------------------------------------------------------


def test_crmify_check_passes_against_the_sandbox(hubspot, capsys):
    hubspot.set_faults(requests_per_second=10.0)
    call_command("crmify_check")
    out = capsys.readouterr().out
    assert "The CRM connection works" in out
    assert "hs_lead_status = NEW" in out and "lifecyclestage = customer" in out
    assert "TEN_SECOND_LIMIT 100; HubSpot reports 100" in out


def test_crmify_check_fails_when_the_plan_allows_less_than_configured(hubspot, capsys):
    hubspot.set_faults(requests_per_second=10.0)
    with (
        override_settings(CRMIFY=hubspot_crmify_for(hubspot, TEN_SECOND_LIMIT=190)),
        pytest.raises(CommandError),
    ):
        call_command("crmify_check")
    assert "HubSpot reports 100: lower the option" in capsys.readouterr().out


def test_crmify_check_fails_on_a_bad_token_and_an_unmapped_status(hubspot):
    with (
        override_settings(CRMIFY=hubspot_crmify_for(hubspot, token="nope")),
        pytest.raises(CommandError),
    ):
        call_command("crmify_check")
    with (
        override_settings(
            CRMIFY=hubspot_crmify_for(
                hubspot, STATUSES={"Disqualified": {"hs_lead_status": "WARM"}}
            )
        ),
        pytest.raises(CommandError),
    ):
        call_command("crmify_check")


@pytest.mark.parametrize(
    ("options", "check_id"),
    [
        ({"DAILY_RESET_TIME_ZONE": "Mars/Olympus"}, "crmify.E070"),
        ({"TEN_SECOND_LIMIT": "lots"}, "crmify.E071"),
        ({"TEN_SECOND_LIMIT": 0}, "crmify.E071"),
        ({"STATUSES": {"NotContacted": "NEW"}}, "crmify.E072"),
    ],
)
def test_wrong_options_are_system_check_errors(options, check_id):
    backend = HubSpotBackend(options=options, auth={"API_KEY": "t"})
    found = [message.id for message in backend.check() if message.id != "crmify.W051"]
    assert found == [check_id]


def test_no_token_is_a_warning():
    messages = HubSpotBackend(options={"RATE_LIMIT_CACHE": "default"}).check()
    assert [m.id for m in messages if m.id != "crmify.W051"] == ["crmify.W040"]


def test_a_per_process_cache_is_the_shared_warning(settings):
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    backend = HubSpotBackend(options={"RATE_LIMIT_CACHE": "local"}, auth={"API_KEY": "t"})
    assert [m.id for m in backend.check()] == ["crmify.W051"]


# -- reading HubSpot's errors (also what a 207's errors[] entries hold) ------------------------------


def test_validation_errors_read_as_the_properties_hubspot_names():
    body = {
        "status": "error",
        "message": 'Property values were not valid: [{"isValid":false,"message":"Property \\"x\\" '
        'does not exist","error":"PROPERTY_DOESNT_EXIST","name":"x"},{"isValid":false,'
        '"message":"nope was not one of the allowed options","error":"INVALID_OPTION",'
        '"name":"hs_lead_status"}]',
        "category": "VALIDATION_ERROR",
    }
    assert property_problems(body) == [
        ("x", "PROPERTY_DOESNT_EXIST", 'Property "x" does not exist'),
        ("hs_lead_status", "INVALID_OPTION", "nope was not one of the allowed options"),
    ]
    text = describe_error(body)
    assert text.startswith("HubSpot refused these properties: x:") and "[VALIDATION_ERROR]" in text


def test_a_batch_error_entry_reads_the_same_way():
    entry = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Email address bad is invalid",
        "context": {"propertyName": ["email"]},
        "errors": [],
    }
    assert describe_error(entry) == "Email address bad is invalid [VALIDATION_ERROR]"
    conflict = {"category": "OBJECT_ALREADY_EXISTS", "message": "x", "context": {"id": ["77"]}}
    assert existing_id(conflict) == "77"


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (
            {"message": "Contact already exists. Existing ID: 12345", "category": "CONFLICT"},
            "12345",
        ),
        ({"message": "Conflict", "errors": [{"message": "Existing ID: 9", "in": "email"}]}, "9"),
        ({"message": "A contact with the email 'a@b.c' already exists."}, None),
        ({}, None),
    ],
)
def test_the_existing_id_of_a_409(body, found):
    assert existing_id(body) == found


# -- the backfill ----------------------------------------------------------------------------------


def test_the_backfill_lists_contacts_adopts_matches_and_makes_one_call_per_lead(
    hubspot, configure, django_capture_on_commit_callbacks
):
    # One contact per call (MAX_BATCH_SIZE 1): the single-contact path's adoption of the listing's
    # matches. The batch backfill: tests/test_hubspot_batch.py.
    configure(**hubspot_crmify_for(hubspot, MAX_BATCH_SIZE=1, **FAST_SANDBOX), AUTO_SYNC=False)
    users = [make_user() for _ in range(7)]
    hubspot.add_contact({"email": users[0].email.upper(), "lastname": "Already"})
    hubspot.add_contact({"email": users[1].email, "lastname": "There"})
    report = backfill.plan(BackfillOptions(batch_size=3))
    assert (report.to_create, report.in_crm, report.listing_calls) == (7, 2, 1)
    with django_capture_on_commit_callbacks(execute=True):
        run = backfill.start(BackfillOptions(batch_size=3))
    run.refresh_from_db()
    assert run.state == BackfillRun.State.FINISHED, run.last_error
    for user in users:
        lead = lead_of(user)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
    emails = Counter(str(row["properties"]["email"]).casefold() for row in hubspot.leads())
    assert emails == {user.email.casefold(): 1 for user in users}  # each e-mail once
    requests_made = hubspot.stats()["requests"]
    assert requests_made[CREATE] == {"201": 5}  # the two matches were updated, not created again
    assert requests_made[PATCH] == {"200": 2}
    assert calls(hubspot, "GET /objects/contacts") == 2  # the dry run's listing and the run's


def test_a_last_status_that_no_longer_maps_sends_everything(hubspot):
    lead = Lead.objects.create(source_id="n", email="n@example.com", status="NotContacted")
    backend = get_backend()
    lead.external_id = backend.sync_lead(lead)
    lead.synced_values = {**lead.crm_values(), "status": "Retired status"}
    lead.last_name = "Now"
    assert backend.build_payload(lead)["properties"] == {
        "email": "n@example.com",
        "lastname": "Now",
        "hs_lead_status": "NEW",
    }
    assert backend.sync_lead(lead) == lead.external_id
    assert contact(hubspot, lead)["lastname"] == "Now"
