"""The Insightly backend against the sandbox, over real HTTP: every operation and every error class."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from crmify import api
from crmify.backends import get_backend
from crmify.backends.http import error_message
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.signals import lead_deleted_in_crm
from crmify.worker import process_lead
from tests.conftest import calls, crmify_for

pytestmark = pytest.mark.django_db


def sign_up(django_capture_on_commit_callbacks: Any, **fields: Any) -> Lead:
    fields.setdefault("username", fields.get("email", "someone"))
    with django_capture_on_commit_callbacks(execute=True):
        user = User.objects.create(**fields)
    return Lead.objects.get(source_id=str(user.pk))


def test_create_sends_v31_fields_and_resolves_the_status_name(
    insightly, django_capture_on_commit_callbacks
):
    lead = sign_up(
        django_capture_on_commit_callbacks,
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
    )
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    (crm,) = insightly.leads()
    assert str(crm["LEAD_ID"]) == lead.external_id
    assert (crm["FIRST_NAME"], crm["LAST_NAME"], crm["EMAIL"]) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
    )
    answer = requests.get(
        insightly.url + "LeadStatuses", auth=(insightly.api_key, ""), timeout=5
    ).json()
    statuses = {row["LEAD_STATUS_ID"]: row["LEAD_STATUS"] for row in answer}
    assert statuses[crm["LEAD_STATUS_ID"]] == "Not Contacted"
    # One lookup by e-mail, one create, and the status table once.
    assert calls(insightly, "GET /Leads/Search") == 1
    assert calls(insightly, "POST /Leads") == 1


def test_a_sign_up_without_last_name_gets_a_derived_one(
    insightly, django_capture_on_commit_callbacks
):
    lead = sign_up(
        django_capture_on_commit_callbacks, email="zoë.ødegaard@example.com", first_name="Zoë"
    )
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    assert insightly.leads()[0]["LAST_NAME"] == "zoë.ødegaard"


def test_update_is_partial_and_null_clears_what_the_app_cleared(
    insightly, django_capture_on_commit_callbacks
):
    lead = sign_up(
        django_capture_on_commit_callbacks,
        email="g@example.com",
        first_name="Grace",
        last_name="Hopper",
    )
    user = User.objects.get(pk=lead.source_id)
    backend = get_backend()
    user.first_name = ""
    user.last_name = "Murray Hopper"
    user.save()  # recorded and queued; the queued task is not run (no on-commit capture)
    lead.refresh_from_db()
    assert backend.build_payload(lead) == {
        "LEAD_ID": int(lead.external_id),
        "FIRST_NAME": None,
        "LAST_NAME": "Murray Hopper",
    }
    process_lead(lead.pk)
    crm = insightly.leads()[0]
    assert crm["LAST_NAME"] == "Murray Hopper"
    assert crm.get("FIRST_NAME") in (None, "")
    assert crm["EMAIL"] == "g@example.com"  # left out of the PUT, kept by the CRM


def test_unknown_status_fails_with_the_accounts_status_names(
    insightly, django_capture_on_commit_callbacks
):
    with override_settings(CRMIFY={**crmify_for(insightly), "LEAD_NEW_STATUS": "Hot Prospect"}):
        lead = sign_up(django_capture_on_commit_callbacks, email="h@example.com", last_name="H")
    assert lead.sync_state == SyncState.FAILED
    assert "'Hot Prospect' does not exist" in lead.last_error
    assert "Not Contacted" in lead.last_error and "Disqualified" in lead.last_error
    assert insightly.leads() == []


def test_status_names_match_ignoring_case_and_spaces_and_are_cached(
    insightly, django_capture_on_commit_callbacks
):
    for i in range(3):
        sign_up(django_capture_on_commit_callbacks, email=f"p{i}@example.com", last_name="P")
    user = User.objects.get(email="p0@example.com")
    api.set_status(user, "attempted contact")
    lead = Lead.objects.get(email="p0@example.com")
    process_lead(lead.pk)
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    assert calls(insightly, "GET /LeadStatuses") == 1


def test_a_bad_api_key_fails_readably_and_the_key_is_never_kept(
    insightly, django_capture_on_commit_callbacks
):
    secret = "wrong-key-0123456789"
    with override_settings(CRMIFY=crmify_for(insightly, api_key=secret)):
        lead = sign_up(django_capture_on_commit_callbacks, email="k@example.com", last_name="K")
    assert lead.sync_state == SyncState.FAILED
    assert "CRMIFY_BACKEND_AUTH_API_KEY" in lead.last_error
    entries = list(LedgerEntry.objects.values_list("error", "request_summary", "response_summary"))
    assert entries and all(entry[0] or entry[1] for entry in entries)
    assert secret not in str(entries) + lead.last_error
    assert LedgerEntry.objects.filter(http_status=401).exists()


def test_server_errors_are_retried_and_html_pages_read_well(
    insightly, django_capture_on_commit_callbacks
):
    insightly.set_faults(error_rate=1.0, seed=3)
    lead = sign_up(django_capture_on_commit_callbacks, email="e@example.com", last_name="E")
    assert lead.sync_state == SyncState.RETRYING
    assert lead.attempts == 1 and lead.next_attempt_at is not None
    assert "HTTP 50" in lead.last_error
    assert "<" not in lead.last_error  # no raw HTML in the admin
    insightly.set_faults(error_rate=0.0)
    Lead.objects.filter(pk=lead.pk).update(next_attempt_at=None)
    assert process_lead(lead.pk) == "synced"
    assert len(insightly.leads()) == 1


def test_timed_out_create_is_adopted_on_retry_not_duplicated(
    insightly, django_capture_on_commit_callbacks
):
    insightly.set_faults(create_timeout_rate=1.0, create_timeout_delay=3.0)
    with override_settings(CRMIFY=crmify_for(insightly, TIMEOUT=0.5)):
        lead = sign_up(django_capture_on_commit_callbacks, email="t@example.com", last_name="T")
        assert lead.sync_state == SyncState.RETRYING
        assert "did not answer" in lead.last_error
        insightly.set_faults(create_timeout_rate=0.0)
        Lead.objects.filter(pk=lead.pk).update(next_attempt_at=None)
        assert process_lead(lead.pk) == "synced"
    lead.refresh_from_db()
    crm = insightly.leads()
    assert len(crm) == 1 and str(crm[0]["LEAD_ID"]) == lead.external_id
    assert calls(insightly, "POST /Leads") == 1  # the retry adopted instead of creating again


def test_an_existing_crm_lead_with_the_same_email_is_adopted(
    insightly, django_capture_on_commit_callbacks
):
    existing = insightly.add_lead({"EMAIL": "old@example.com", "LAST_NAME": "Old"})
    lead = sign_up(django_capture_on_commit_callbacks, email="old@example.com", last_name="New")
    assert lead.external_id == str(existing["LEAD_ID"])
    assert len(insightly.leads()) == 1 and insightly.leads()[0]["LAST_NAME"] == "New"


def test_lookup_by_email_can_be_turned_off(insightly, django_capture_on_commit_callbacks):
    with override_settings(CRMIFY=crmify_for(insightly, LOOKUP_BY_EMAIL=False)):
        sign_up(django_capture_on_commit_callbacks, email="n@example.com", last_name="N")
    assert calls(insightly, "GET /Leads/Search") == 0


def test_delete_removes_the_crm_lead_and_a_missing_one_counts_as_gone(
    insightly, django_capture_on_commit_callbacks
):
    lead = sign_up(django_capture_on_commit_callbacks, email="d@example.com", last_name="D")
    backend = get_backend()
    with django_capture_on_commit_callbacks(execute=True):
        User.objects.get(pk=lead.source_id).delete()
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.DELETED and lead.tombstone
    assert insightly.leads() == []
    assert backend.delete_lead(lead.external_id) is True  # 404: already gone


def test_update_of_a_lead_deleted_in_the_crm_marks_it_deleted_in_the_crm(
    insightly, django_capture_on_commit_callbacks
):
    lead = sign_up(django_capture_on_commit_callbacks, email="x@example.com", last_name="X")
    insightly.state.delete_lead(int(lead.external_id))
    heard: list[tuple[int, str]] = []

    def on_deleted(sender: Any, lead: Lead, via: str, **kwargs: Any) -> None:
        heard.append((lead.pk, via))

    lead_deleted_in_crm.connect(on_deleted, sender=Lead)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            user = User.objects.get(pk=lead.source_id)
            user.first_name = "Changed"
            user.save()
    finally:
        lead_deleted_in_crm.disconnect(on_deleted, sender=Lead)
    lead.refresh_from_db()
    # Issue 14: a 404 to the update marks the lead deleted in the CRM (it failed permanently before),
    # and the site hears of it.
    assert lead.sync_state == SyncState.DELETED and lead.deleted_in_crm_at is not None
    assert "no longer exists in Insightly" in lead.last_error
    assert heard == [(lead.pk, "push")]


def test_exhausted_quota_stops_calls_until_the_window_resets(
    insightly, django_capture_on_commit_callbacks
):
    insightly.set_faults(daily_quota=3, quota_window_seconds=2.0)
    insightly.reset()
    first = sign_up(
        django_capture_on_commit_callbacks, email="q1@example.com", last_name="Q"
    )  # 3 calls
    assert first.sync_state == SyncState.SYNCED, first.last_error
    second = sign_up(django_capture_on_commit_callbacks, email="q2@example.com", last_name="Q")
    assert second.sync_state == SyncState.RETRYING
    assert "quota is used up" in second.last_error and second.attempts == 0
    assert second.next_attempt_at is not None
    made = insightly.stats()["total"]
    third = sign_up(django_capture_on_commit_callbacks, email="q3@example.com", last_name="Q")
    assert third.sync_state == SyncState.RETRYING
    assert insightly.stats()["total"] == made  # no call while the quota is known to be used up
    time.sleep(max(0.0, (second.next_attempt_at - timezone.now()).total_seconds()) + 0.2)
    assert process_lead(second.pk) == "synced"


def test_build_payload_makes_no_call(insightly, django_capture_on_commit_callbacks):
    lead = sign_up(django_capture_on_commit_callbacks, email="b@example.com", last_name="B")
    before = insightly.stats()["total"]
    lead.external_id = ""
    payload = get_backend().build_payload(lead)
    assert payload["EMAIL"] == "b@example.com" and isinstance(payload["LEAD_STATUS_ID"], int)
    assert insightly.stats()["total"] == before


def test_fetch_lead_returns_the_crm_record_or_none(insightly, django_capture_on_commit_callbacks):
    lead = sign_up(django_capture_on_commit_callbacks, email="f@example.com", last_name="F")
    backend = get_backend()
    assert backend.fetch_lead(lead.external_id)["EMAIL"] == "f@example.com"
    assert backend.fetch_lead("999999999") is None


def test_crmify_check_passes_against_the_sandbox(insightly, capsys):
    call_command("crmify_check")
    out = capsys.readouterr().out
    assert "The CRM connection works" in out and "daily quota remaining" in out


def test_crmify_check_fails_on_a_bad_key_and_an_unknown_status(insightly):
    with (
        override_settings(CRMIFY=crmify_for(insightly, api_key="nope")),
        pytest.raises(CommandError),
    ):
        call_command("crmify_check")
    with (
        override_settings(CRMIFY={**crmify_for(insightly), "LEAD_DEAD_STATUS": "Gone"}),
        pytest.raises(CommandError),
    ):
        call_command("crmify_check")


class FakeResponse:
    def __init__(self, text: str, status: int = 500) -> None:
        self.text, self.status_code, self.reason = text, status, "Server Error"

    def json(self) -> Any:
        import json

        return json.loads(self.text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"Message": "LAST_NAME is required"}', "LAST_NAME is required"),
        (
            "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "HTML page: 502 Bad Gateway",
        ),
        ("not json at all", "not json at all"),
        ("", "Server Error"),
    ],
)
def test_error_messages_are_readable_whatever_the_body(body: str, expected: str) -> None:
    assert expected in error_message(FakeResponse(body))  # type: ignore[arg-type]
