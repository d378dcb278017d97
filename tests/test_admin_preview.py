"""The mapper preview page, through the admin with the Django test client: permissions, mapping checks, row
previews and their warnings, and that it writes nothing and calls the CRM only on "Compare with CRM"."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crmify.backends.insightly import MAX_LENGTHS, InsightlyBackend
from crmify.backends.locmem import LocmemBackend
from crmify.mappers import DjangoUserFieldMapper, LeadModelFieldMapper
from crmify.models import Lead, LedgerEntry
from crmify.preview import crm_max_lengths, to_json
from tests.admin_fixtures import make_staff
from tests.conftest import calls
from tests.factories import lead_of, make_profile, make_user

pytestmark = pytest.mark.django_db


class FullNameTitleMapper(DjangoUserFieldMapper):
    """The full name as the lead's title: two 150-character names make 301, over the lead's 255."""

    field_mapping = {**DjangoUserFieldMapper.field_mapping, "get_full_name": "title"}


def repeated_first_name(user: User) -> str:
    """The first name 600 times: a description longer than Insightly's 4,000 characters."""
    return user.first_name * 600


class LongDescriptionMapper(DjangoUserFieldMapper):
    """A description longer than Insightly accepts, though the lead (a text field) could keep it."""

    field_mapping = {**DjangoUserFieldMapper.field_mapping, repeated_first_name: "description"}


class BrokenMapper(LeadModelFieldMapper):
    """Mistakes a site can make: a missing path, a relation as a value, a target that is no lead field."""

    field_mapping = {"user__nickname": "first_name", "user": "last_name", "company": "colour"}


class ShortFieldsBackend(LocmemBackend):
    """A CRM that keeps five characters of a first name (announced the way the preview reads it)."""

    max_lengths = {"first_name": 5}


# -- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def url() -> str:
    return reverse("admin:crmify_lead_mapper_preview")


def staff_client(*permissions: str) -> Client:
    """A logged-in staff user holding only ``permissions`` (codenames of crmify's Lead permissions)."""
    client = Client()
    client.force_login(make_staff("staff", *permissions))
    return client


def text(response: Any) -> str:
    """The page as a reader sees it: HTML entities (quotes in warnings, JSON) turned back into characters."""
    return html.unescape(response.content.decode())


def signed_up(capture: Any, **fields: Any) -> User:
    """A user created with on-commit callbacks run: with the immediate Tasks backend it is synced at once."""
    with capture(execute=True):
        return make_user(**fields)


# -- permissions and the page itself --------------------------------------------------------------------


def test_staff_with_only_the_preview_permission_see_the_page(url):
    response = staff_client("preview_mapping").get(url)
    assert response.status_code == 200
    assert "Mapper preview" in text(response)


def test_page_extends_the_admin_with_breadcrumbs_and_its_stylesheet(admin_client, url):
    page = text(admin_client.get(url))
    breadcrumbs = page.split('<ol class="breadcrumbs">', 1)[1].split("</ol>", 1)[0]
    assert [part in breadcrumbs for part in ("Home", "CRM sync", "Leads", "Mapper preview")] == [
        True
    ] * 4
    assert reverse("admin:crmify_lead_changelist") in breadcrumbs
    assert "crmify/preview.css" in page
    assert "<script" not in page.split('<div id="content"', 1)[1]  # works without JavaScript


def test_superuser_sees_the_configuration_and_every_mapping_checked(admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 200
    page = text(response)
    for shown in (
        "django.contrib.auth.models.User",
        "auth.User (user)",
        "crmify.mappers.DjangoUserFieldMapper",
        "crmify.backends.locmem.LocmemBackend",
    ):
        assert shown in page
    checks = {(c.source, c.target): c for c in response.context["checks"]}
    assert set(checks) == {
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("email", "email"),
        ("username", "email"),
    }
    assert checks["first_name", "first_name"].source_kind == "CharField (max 150)"
    assert checks["email", "email"].target_kind == "lead field (max 254)"
    assert checks["username", "email"].is_fallback
    assert all(check.ok for check in checks.values())
    assert "CharField (max 150)" in page and "lead field (max 255)" in page


def test_mapping_mistakes_are_shown_readably(admin_client, url, configure):
    configure(
        LEAD_MODEL="tests.testapp.models.UserProfile",
        LEAD_MODEL_FIELDMAPPER="tests.test_admin_preview.BrokenMapper",
    )
    response = admin_client.get(url)
    assert response.status_code == 200
    checks = {c.source: c for c in response.context["checks"]}
    assert checks["user__nickname"].errors == (
        "auth.User has no field 'nickname' (in path 'user__nickname').",
    )
    assert checks["user"].source_kind == "OneToOneField to auth.User"
    assert "is a relation" in checks["user"].errors[0]
    assert "'colour' is not a lead field" in checks["company"].errors[0]
    page = text(response)
    assert "auth.User has no field 'nickname'" in page and "'colour' is not a lead field" in page


def test_profile_mapper_paths_across_relations_are_checked(admin_client, url, profile_leads):
    response = admin_client.get(url)
    checks = {(c.source, c.target): c for c in response.context["checks"]}
    assert checks["user__first_name", "first_name"].source_kind == "CharField (max 150)"
    assert checks["user__email", "email"].source_kind == "EmailField (max 254)"
    assert checks["display_name", "custom_fields__Nickname__c"].source_kind == "method"
    assert checks["display_name", "custom_fields__Nickname__c"].target_kind == (
        "custom field Nickname__c"
    )
    assert checks["user__username", "email"].is_fallback
    assert checks["nickname", "last_name"].source_kind == "CharField (max 60)"
    assert all(check.ok for check in checks.values())
    page = text(response)
    assert "tests.testapp.models.UserProfile" in page and "user__first_name" in page


def test_profile_rows_are_found_by_the_mappers_email_path(admin_client, url, profile_leads):
    profile = make_profile(make_user(email="Ada@Example.com", last_name=""), nickname="countess")
    make_profile()
    response = admin_client.get(url, {"q": "ada@example.COM"})
    (row,) = response.context["rows"]
    assert row.pk == profile.pk
    values = {value.name: value for value in row.values}
    assert values["last_name"].value == "countess" and values["last_name"].from_fallback
    assert values["custom_fields__Nickname__c"].value == "countess"


# -- rows ---------------------------------------------------------------------------------------------


def test_a_row_shows_values_from_a_fallback_the_empty_ones_and_its_payload(admin_client, url):
    user = make_user(username="ada@example.com", email="", first_name="")
    response = admin_client.get(url, {"q": str(user.pk)})
    (row,) = response.context["rows"]
    values = {value.name: value for value in row.values}
    assert values["email"].value == "ada@example.com" and values["email"].from_fallback
    assert values["first_name"].empty and not values["first_name"].from_fallback
    assert values["status"].origin == "lead" and values["status"].value == "NotContacted"
    page = text(response)
    assert "from fallback" in page and "(empty)" in page
    assert row.payload == lead_of(user).crm_values()
    assert to_json(row.payload) in page


def test_search_by_id_and_by_email_ignoring_case(admin_client, url):
    ada, grace = make_user(email="ada@example.com"), make_user(email="grace@example.com")
    by_id = admin_client.get(url, {"q": f" {grace.pk} "}).context["rows"]
    by_email = admin_client.get(url, {"q": "ADA@example.com"}).context["rows"]
    nothing = admin_client.get(url, {"q": "nobody@example.com"})
    assert [row.pk for row in by_id] == [grace.pk]
    assert [row.pk for row in by_email] == [ada.pk]
    assert nothing.context["rows"] == [] and "No row matches." in text(nothing)


def test_sample_shows_the_first_ten_rows_by_primary_key(admin_client, url):
    users = [make_user() for _ in range(12)]
    response = admin_client.get(url, {"sample": "1"})
    shown = [row.pk for row in response.context["rows"]]
    everyone = sorted(User.objects.values_list("pk", flat=True))
    assert shown == everyone[:10]
    assert users[-1].pk not in shown


def test_warns_about_an_invalid_email(admin_client, url):
    user = make_user(email="ada-at-example")
    (row,) = admin_client.get(url, {"q": str(user.pk)}).context["rows"]
    assert row.warnings == (
        "'ada-at-example' is not a valid e-mail address: the CRM may refuse it.",
    )


def test_a_value_the_lead_cannot_keep_is_a_mapping_error_shown_not_raised(
    admin_client, url, configure
):
    configure(LEAD_MODEL_FIELDMAPPER="tests.test_admin_preview.FullNameTitleMapper")
    user = make_user(first_name="A" * 150, last_name="B" * 150)
    response = admin_client.get(url, {"q": str(user.pk)})
    assert response.status_code == 200
    (row,) = response.context["rows"]
    assert row.warnings == (
        "Mapping failed: title (from get_full_name) is 301 characters long; the lead keeps 255.",
    )
    assert row.payload is None
    assert "is 301 characters long; the lead keeps 255" in text(response)


def test_warns_about_a_value_longer_than_the_crm_accepts(admin_client, url, configure):
    configure(BACKEND="tests.test_admin_preview.ShortFieldsBackend")
    user = make_user(first_name="Augusta")
    (row,) = admin_client.get(url, {"q": str(user.pk)}).context["rows"]
    assert row.warnings == ("first_name is 7 characters long; the CRM accepts 5.",)


def test_a_value_longer_than_insightly_takes_is_a_mapping_error_in_the_preview(
    admin_client, url, configure
):
    configure(
        LEAD_MODEL_FIELDMAPPER="tests.test_admin_preview.LongDescriptionMapper",
        BACKEND="crmify.backends.insightly.InsightlyBackend",
        BACKEND_OPTIONS={"API_URL": "http://127.0.0.1:9/v3.1/"},  # never called
    )
    user = make_user(first_name="Augusta")
    (row,) = admin_client.get(url, {"q": str(user.pk)}).context["rows"]
    assert row.warnings == (
        "Mapping failed: description (from repeated_first_name) is 4200 characters long; "
        "the CRM accepts 4000.",
    )
    assert row.payload is None


def test_insightly_limits_are_read_from_its_module():
    assert crm_max_lengths(InsightlyBackend()) == MAX_LENGTHS
    assert crm_max_lengths(LocmemBackend()) == {}


def test_warns_when_a_backend_would_send_no_last_name(admin_client, url):
    user = make_user(last_name="")
    (row,) = admin_client.get(url, {"q": str(user.pk)}).context["rows"]
    assert row.warnings == (
        "No last name, and none will be sent: a CRM that requires one will refuse this lead.",
    )


# -- against the sandbox, over real HTTP ----------------------------------------------------------------


def test_the_page_calls_no_crm_and_writes_nothing(
    admin_client, url, insightly, django_capture_on_commit_callbacks
):
    synced = signed_up(django_capture_on_commit_callbacks, first_name="Ada", last_name="Lovelace")
    unsynced = make_user(first_name="Grace", last_name="Hopper")
    Lead.objects.filter(source_id=str(unsynced.pk)).delete()  # a row the engine has not seen yet
    assert lead_of(synced).external_id
    before = insightly.stats()["total"]
    leads_before = list(Lead.objects.order_by("pk").values())
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, {"sample": "1"})
    assert response.status_code == 200
    assert insightly.stats()["total"] == before
    writes = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []
    assert list(Lead.objects.order_by("pk").values()) == leads_before
    rows = {row.pk: row for row in response.context["rows"]}
    # A synced row previews the partial update the next sync would send (nothing changed: only its id) ...
    assert rows[synced.pk].payload == {"LEAD_ID": int(lead_of(synced).external_id)}
    assert rows[synced.pk].operation == "update"
    # ... a new row the whole create, its status id from the table the sync above cached.
    assert rows[unsynced.pk].operation == "create"
    assert rows[unsynced.pk].payload == {
        "EMAIL": unsynced.email,
        "FIRST_NAME": "Grace",
        "LAST_NAME": "Hopper",
        "LEAD_STATUS_ID": insightly.leads()[0]["LEAD_STATUS_ID"],
    }
    assert to_json(rows[unsynced.pk].payload) in text(response)


def test_insightly_shows_the_last_name_it_will_send_instead(admin_client, url, insightly):
    user = make_user(email="zoe.odegaard@example.com", first_name="Zoë", last_name="")
    response = admin_client.get(url, {"q": str(user.pk)})
    (row,) = response.context["rows"]
    assert row.warnings == ("No last name: 'zoe.odegaard' will be sent as the last name instead.",)
    # Nothing was synced, so the status table is not cached: its id is looked up when sent.
    assert row.payload == {
        "EMAIL": "zoe.odegaard@example.com",
        "FIRST_NAME": "Zoë",
        "LAST_NAME": "zoe.odegaard",
        "LEAD_STATUS_ID": "<LEAD_STATUS_ID of 'NotContacted', looked up when sent>",
    }
    assert "'zoe.odegaard' will be sent as the last name instead" in text(response)
    assert insightly.stats()["total"] == 0


def test_warns_about_a_status_the_crm_does_not_have(
    admin_client, url, insightly, configure, django_capture_on_commit_callbacks
):
    signed_up(django_capture_on_commit_callbacks)  # a real sync caches the CRM's status table
    configure(LEAD_NEW_STATUS="Hibernating")
    user = make_user()
    Lead.objects.filter(source_id=str(user.pk)).delete()
    before = insightly.stats()["total"]
    response = admin_client.get(url, {"q": str(user.pk)})
    (row,) = response.context["rows"]
    assert row.payload is None
    assert row.warnings == (
        "Lead status 'Hibernating' does not exist in this Insightly account. Its statuses are: "
        "Attempted Contact, Contacted, Converted, Disqualified, Not Contacted.",
    )
    assert "Lead status 'Hibernating' does not exist" in text(response)
    assert insightly.stats()["total"] == before


def test_compare_with_crm_fetches_the_record_once_and_shows_it(
    admin_client, url, insightly, django_capture_on_commit_callbacks
):
    user = signed_up(django_capture_on_commit_callbacks, email="ada@example.com")
    external_id = lead_of(user).external_id
    page = text(admin_client.get(url, {"q": str(user.pk)}))
    assert "Compare with CRM" in page and 'name="csrfmiddlewaretoken"' in page
    before, lead_before = (
        insightly.stats()["total"],
        Lead.objects.values().get(source_id=str(user.pk)),
    )
    response = admin_client.post(url, {"compare": str(user.pk)})
    assert response.status_code == 200
    assert calls(insightly, "GET /Leads/{id}") == 1
    assert insightly.stats()["total"] == before + 1
    # Kept in the ledger like every CRM call; the lead itself is left as it was.
    fetch = LedgerEntry.objects.get(operation="fetch")
    assert (fetch.lead_id, fetch.outcome, fetch.http_status) == (lead_of(user).pk, "ok", 200)
    assert Lead.objects.values().get(source_id=str(user.pk)) == lead_before
    (row,) = response.context["rows"]
    assert row.comparison is not None and row.comparison.error == ""
    assert row.comparison.record is not None
    assert str(row.comparison.record["LEAD_ID"]) == external_id
    page = text(response)
    assert "The CRM now" in page and to_json(row.comparison.record) in page


def test_compare_explains_a_record_deleted_in_the_crm(
    admin_client, url, insightly, django_capture_on_commit_callbacks
):
    user = signed_up(django_capture_on_commit_callbacks)
    Lead.objects.filter(pk=lead_of(user).pk).update(external_id="71399999")
    (row,) = admin_client.post(url, {"compare": str(user.pk)}).context["rows"]
    assert row.comparison is not None
    assert row.comparison.error == "The CRM has no lead 71399999: it was deleted there."


def test_no_page_shows_the_api_key(
    admin_client, url, insightly, django_capture_on_commit_callbacks
):
    user = signed_up(django_capture_on_commit_callbacks)
    pages = [
        admin_client.get(url),
        admin_client.get(url, {"sample": "1"}),
        admin_client.post(url, {"compare": str(user.pk)}),
    ]
    assert [response.status_code for response in pages] == [200, 200, 200]
    assert all(insightly.api_key not in response.content.decode() for response in pages)
