"""The Insightly backend against a sandbox as strict as Insightly's v3.1 documentation, over real HTTP:
the converted status, body dates, field lengths, clearing custom fields, the e-mail lookup, and each
reading of what the documentation leaves open (``crmify.sandbox.Dialect``)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
import requests
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings

from crmify import api
from crmify.mappers import DjangoUserFieldMapper
from crmify.models import Lead, SyncState
from crmify.sandbox import CustomFieldDef, Dialect, Faults, SandboxServer
from crmify.worker import process_lead
from tests.conftest import calls, crmify_for

pytestmark = pytest.mark.django_db

#: The account of these tests: the sandbox's default custom fields and two date fields.
CUSTOM_FIELDS = (
    CustomFieldDef("Signup_Source__c", "Signup source", "TEXT"),
    CustomFieldDef("Plan__c", "Plan", "DROPDOWN", ("Free", "Plus", "Pro")),
    CustomFieldDef("Joined__c", "Joined", "DATETIME"),
    CustomFieldDef("Renews__c", "Renews", "DATE"),
)

#: What the next mapping of a user gives beyond the default mapper's values, by e-mail.
EXTRA: dict[str, dict[str, Any]] = {}


def extra(name: str) -> Any:
    def read(user: User) -> Any:
        return EXTRA.get(user.email, {}).get(name)

    read.__name__ = f"extra[{name!r}]"
    return read


class ExtraMapper(DjangoUserFieldMapper):
    """The default user mapper, plus custom fields and a description from :data:`EXTRA`."""

    field_mapping: ClassVar[dict[Any, str]] = {
        **DjangoUserFieldMapper.field_mapping,
        extra("source"): "custom_fields__Signup_Source__c",
        extra("plan"): "custom_fields__Plan__c",
        extra("joined"): "custom_fields__Joined__c",
        extra("renews"): "custom_fields__Renews__c",
        extra("about"): "description",
    }


@pytest.fixture(autouse=True)
def _forget_extra() -> Iterator[None]:
    EXTRA.clear()
    yield
    EXTRA.clear()


@contextmanager
def account(dialect: Dialect | None = None, **options: Any) -> Iterator[SandboxServer]:
    """A sandbox account of its own (``CUSTOM_FIELDS``, ``dialect``) as the configured CRM, with
    :class:`ExtraMapper`; keyword ``options`` go to ``BACKEND_OPTIONS``."""
    with SandboxServer(
        faults=Faults(requests_per_second=None), custom_fields=CUSTOM_FIELDS, dialect=dialect
    ) as server:
        cache.clear()
        settings = {
            **crmify_for(server, **options),
            "LEAD_MODEL_FIELDMAPPER": "tests.test_insightly_documented.ExtraMapper",
        }
        with override_settings(CRMIFY=settings):
            yield server
    cache.clear()


def sign_up(capture: Any, email: str, **extra_values: Any) -> Lead:
    """A user signs up (synced on commit, immediately); ``extra_values`` are what :class:`ExtraMapper`
    adds."""
    EXTRA[email] = extra_values
    with capture(execute=True):
        user = User.objects.create(username=email, email=email, first_name="Ada", last_name="L")
    return Lead.objects.get(source_id=str(user.pk))


def resave(capture: Any, lead: Lead, **extra_values: Any) -> Lead:
    """The user is saved again with new extra values; the change is synced at once."""
    user = User.objects.get(pk=lead.source_id)
    EXTRA[user.email] = extra_values
    with capture(execute=True):
        user.save()
    lead.refresh_from_db()
    return lead


def custom_values(crm_lead: dict[str, Any]) -> dict[str, Any]:
    return {item["FIELD_NAME"]: item["FIELD_VALUE"] for item in crm_lead["CUSTOMFIELDS"]}


# -- 1. the converted status ----------------------------------------------------------------------------


def test_the_converted_status_is_listed_only_on_request_and_still_resolved(
    insightly, django_capture_on_commit_callbacks
):
    def status_names(**params: str) -> list[str]:
        answer = requests.get(
            insightly.url + "LeadStatuses", params=params, auth=(insightly.api_key, ""), timeout=5
        )
        return [row["LEAD_STATUS"] for row in answer.json()]

    assert "Converted" not in status_names()
    assert "Converted" in status_names(include_converted="true")

    lead = sign_up(django_capture_on_commit_callbacks, "conv@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        api.mark_converted(User.objects.get(pk=lead.source_id))
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    assert insightly.leads()[0]["LEAD_STATUS"] == "Converted"


def test_crmify_check_finds_the_converted_status(insightly, capsys):
    call_command("crmify_check")
    out = capsys.readouterr().out
    assert "status 'Converted'" in out and "The CRM connection works" in out


# -- 2. dates in request bodies -------------------------------------------------------------------------


@override_settings(TIME_ZONE="Europe/Paris")
def test_date_custom_fields_are_sent_in_the_body_format_in_utc(
    django_capture_on_commit_callbacks,
):
    joined = datetime.datetime(2026, 7, 1, 12, 30, 15)  # naive: Paris time, as TIME_ZONE says
    with account() as crm:
        lead = sign_up(
            django_capture_on_commit_callbacks,
            "dates@example.com",
            joined=joined,
            renews=datetime.date(2027, 1, 31),
        )
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert custom_values(crm.leads()[0]) == {
            "Joined__c": "2026-07-01 10:30:15",
            "Renews__c": "2027-01-31 00:00:00",
        }
        # An aware datetime in another zone arrives in UTC as well.
        tokyo = datetime.timezone(datetime.timedelta(hours=9))
        resave(
            django_capture_on_commit_callbacks,
            lead,
            joined=datetime.datetime(2026, 7, 2, 8, 0, tzinfo=tokyo),
        )
        assert custom_values(crm.leads()[0])["Joined__c"] == "2026-07-01 23:00:00"


def test_the_sandbox_refuses_an_iso_8601_date_in_a_body():
    with account() as crm:
        answer = requests.post(
            crm.url + "Leads",
            json={
                "LAST_NAME": "X",
                "CUSTOMFIELDS": [
                    {"FIELD_NAME": "Joined__c", "FIELD_VALUE": "2026-07-01T10:30:15Z"}
                ],
            },
            auth=(crm.api_key, ""),
            timeout=5,
        )
    assert answer.status_code == 400
    assert "yyyy-MM-dd HH:mm:ss" in answer.json()["Message"]


# -- 3. field lengths -----------------------------------------------------------------------------------


def test_a_value_longer_than_insightly_takes_fails_the_mapping_and_sends_nothing(
    django_capture_on_commit_callbacks,
):
    with account() as crm:
        lead = sign_up(django_capture_on_commit_callbacks, "long@example.com", about="x" * 4001)
        assert lead.sync_state == SyncState.FAILED
        assert api.mapping_failed(lead)
        assert lead.last_error == (
            "Mapping failed: description (from extra['about']) is 4001 characters long; "
            "the CRM accepts 4000."
        )
        assert calls(crm, "POST /Leads") == 0 and calls(crm, "GET /Leads/Search") == 0
        # At the cap it goes through.
        lead = resave(django_capture_on_commit_callbacks, lead, about="x" * 4000)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error


def test_a_too_long_value_edited_on_the_lead_is_refused_before_any_call(
    django_capture_on_commit_callbacks,
):
    with account() as crm:
        lead = sign_up(django_capture_on_commit_callbacks, "edited@example.com")
        lead.description = "y" * 4001
        api.save_lead(lead)
        process_lead(lead.pk)
        lead.refresh_from_db()
        assert lead.sync_state == SyncState.FAILED
        assert "LEAD_DESCRIPTION is 4001 characters long; the CRM accepts 4000" in lead.last_error
        assert calls(crm, "PUT /Leads") == 0


def test_the_sandbox_refuses_text_over_the_documented_length():
    with account() as crm:
        answer = requests.post(
            crm.url + "Leads",
            json={"LAST_NAME": "X", "SALUTATION": "s" * 51},
            auth=(crm.api_key, ""),
            timeout=5,
        )
    assert answer.status_code == 400
    assert answer.json()["Message"] == (
        "The field SALUTATION must be a string with a maximum length of 50."
    )


# -- 4. clearing custom fields --------------------------------------------------------------------------


@pytest.mark.parametrize("on_put", ["merge", "replace"])
def test_a_cleared_custom_field_is_cleared_in_the_crm_and_the_others_kept(
    on_put, django_capture_on_commit_callbacks
):
    with account(Dialect(custom_fields_on_put=on_put)) as crm:
        lead = sign_up(
            django_capture_on_commit_callbacks, "cf@example.com", source="newsletter", plan="Pro"
        )
        assert custom_values(crm.leads()[0]) == {"Signup_Source__c": "newsletter", "Plan__c": "Pro"}

        lead = resave(django_capture_on_commit_callbacks, lead, source="newsletter", plan=None)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert custom_values(crm.leads()[0]) == {"Signup_Source__c": "newsletter"}

        lead = resave(django_capture_on_commit_callbacks, lead)  # every custom field cleared
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert custom_values(crm.leads()[0]) == {}


def test_an_update_clears_custom_fields_by_name_never_all_at_once(
    django_capture_on_commit_callbacks,
):
    with account() as crm:
        lead = sign_up(
            django_capture_on_commit_callbacks, "nulls@example.com", source="ads", plan="Free"
        )
        user = User.objects.get(pk=lead.source_id)
        EXTRA[user.email] = {}
        user.save()  # recorded, not yet sent
        lead.refresh_from_db()
        payload = api.crm_backend().build_payload(lead)
        assert payload["CUSTOMFIELDS"] == [
            {"FIELD_NAME": "Plan__c", "FIELD_VALUE": None},
            {"FIELD_NAME": "Signup_Source__c", "FIELD_VALUE": None},
        ]
        answer = requests.put(
            crm.url + "Leads",
            json={"LEAD_ID": int(lead.external_id), "CUSTOMFIELDS": None},
            auth=(crm.api_key, ""),
            timeout=5,
        )
        assert answer.status_code == 400 and "FIELD_VALUE" in answer.json()["Message"]


# -- 5. the lookup by e-mail before a create ------------------------------------------------------------


def test_only_a_crm_lead_with_the_same_email_is_adopted(django_capture_on_commit_callbacks):
    # A search looser than documented: "ada@example.com" also finds "mada@example.com".
    with account(Dialect(search_match="contains")) as crm:
        other = crm.add_lead({"EMAIL": "mada@example.com", "LAST_NAME": "Other"})
        same = crm.add_lead({"EMAIL": "  Ada@Example.COM ", "LAST_NAME": "Same"})
        lead = sign_up(django_capture_on_commit_callbacks, "ada@example.com")
        assert lead.external_id == str(same["LEAD_ID"])
        lead = sign_up(django_capture_on_commit_callbacks, "da@example.com")
        assert lead.external_id not in (str(other["LEAD_ID"]), str(same["LEAD_ID"]))
        assert calls(crm, "POST /Leads") == 1
        assert {row["EMAIL"] for row in crm.leads()} == {
            "mada@example.com",
            "ada@example.com",
            "da@example.com",
        }


# -- 6. the rest of what is documented ------------------------------------------------------------------


def test_a_create_answered_with_201_is_synced(django_capture_on_commit_callbacks):
    with account(Dialect(create_status=201)) as crm:
        lead = sign_up(django_capture_on_commit_callbacks, "created@example.com")
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        assert lead.external_id == str(crm.leads()[0]["LEAD_ID"])


def test_a_lead_has_the_full_v31_field_set_and_read_only_fields_put_back_are_ignored():
    with account() as crm:
        auth = (crm.api_key, "")
        created = requests.post(crm.url + "Leads", json={"LAST_NAME": "X"}, auth=auth, timeout=5)
        lead = created.json()
        for name in (
            "CREATED_USER_ID",
            "DATE_UPDATED_UTC",
            "LAST_ACTIVITY_DATE_UTC",
            "NEXT_ACTIVITY_DATE_UTC",
            "IMAGE_URL",
            "LINKS",
            "CONVERTED_OPPORTUNITY_ID",
        ):
            assert name in lead, name
        echoed = {**lead, "CREATED_USER_ID": 1, "LINKS": [{"LINK_ID": 1}], "LAST_NAME": "Y"}
        answer = requests.put(crm.url + "Leads", json=echoed, auth=auth, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["LAST_NAME"] == "Y"
        assert answer.json()["CREATED_USER_ID"] == lead["CREATED_USER_ID"]
        assert answer.json()["LINKS"] == []


def test_the_sandbox_lists_each_lead_with_its_status_and_source_by_name():
    with account() as crm:
        source_id = requests.get(crm.url + "LeadSources", auth=(crm.api_key, ""), timeout=5).json()[
            0
        ]["LEAD_SOURCE_ID"]
        crm.add_lead({"LAST_NAME": "X", "LEAD_SOURCE_ID": source_id})
        (row,) = requests.get(crm.control_url + "leads", timeout=5).json()
    assert (row["LEAD_STATUS"], row["LEAD_SOURCE"]) == ("Not Contacted", "Web")
    keys = list(row)
    assert keys.index("LEAD_STATUS") == keys.index("LEAD_STATUS_ID") + 1
    assert keys.index("LEAD_SOURCE") == keys.index("LEAD_SOURCE_ID") + 1
