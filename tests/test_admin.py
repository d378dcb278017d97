"""The Lead admin through the Django test client: changelist, actions, the lead's page, its custom pages,
with and without crmify's permissions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crmify.admin.summary import state_counts
from crmify.backends import locmem
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.ratelimit import QuotaTracker
from crmify.sandbox import SandboxServer
from tests.admin_fixtures import crmify_permissions, login, make_lead, make_ledger, people, texts
from tests.conftest import crmify_for
from tests.factories import lead_of, make_user

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]

CHANGELIST = reverse("admin:crmify_lead_changelist")
PREVIEW = reverse("admin:crmify_lead_mapper_preview")
ACTIONS = ("resync", "retry_failed", "mark_converted", "mark_dead", "delete_from_crm")


def change_url(lead: Lead) -> str:
    return reverse("admin:crmify_lead_change", args=[lead.pk])


def sync_now_url(lead: Lead) -> str:
    return reverse("admin:crmify_lead_sync_now", args=[lead.pk])


def compare_url(lead: Lead) -> str:
    return reverse("admin:crmify_lead_compare", args=[lead.pk])


def act(client: Client, action: str, leads: list[Lead], **extra: str) -> Any:
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [lead.pk for lead in leads], **extra},
        follow=True,
    )


def offered_actions(response: Any) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


# -- the changelist -----------------------------------------------------------------------------------


def test_changelist_shows_badge_crm_link_relative_time_error_and_source_link(
    login: Login, insightly: SandboxServer
) -> None:
    user = make_user(first_name="Grace", last_name="Hopper")
    lead = lead_of(user)
    Lead.objects.filter(pk=lead.pk).update(
        external_id="77",
        sync_state=SyncState.FAILED,
        last_error="HTTP 400: LAST_NAME is required\nand more detail below",
        last_synced_at=lead.created_at,
        attempts=3,
    )
    html = login("root").get(CHANGELIST).content.decode()
    assert '<span class="crmify-badge crmify-badge--failed">Failed</span>' in html
    assert (
        '<a href="https://crm.na1.insightly.com/details/Lead/77" target="_blank" rel="noopener">77</a>'
        in html
    )
    assert "<time datetime=" in html and " ago</time>" in html and 'title="' in html
    assert "HTTP 400: LAST_NAME is required" in html and "and more detail below" in html
    assert reverse("admin:auth_user_change", args=[user.pk]) in html
    assert insightly.stats()["total"] == 0  # rendering the list never calls the CRM


def test_a_page_of_100_leads_costs_the_same_queries_as_a_page_of_10(login: Login) -> None:
    client = login("root")

    def add_leads(count: int) -> None:
        for i in range(count):
            user = make_user()  # a source row registered in the admin: the link is built per row
            Lead.objects.filter(pk=lead_of(user).pk).update(
                external_id=str(i), last_error="boom", sync_state=SyncState.FAILED
            )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(CHANGELIST)
        assert response.status_code == 200
        return len(captured)

    add_leads(10)
    client.get(CHANGELIST)  # warm the content-type cache, as any earlier request would have
    ten = queries()
    add_leads(90)
    hundred = queries()
    assert Lead.objects.count() == 100
    assert hundred == ten


def test_summary_counts_every_state_in_one_query_and_links_to_its_filter(login: Login) -> None:
    for state, count in ((SyncState.SYNCED, 2), (SyncState.FAILED, 1), (SyncState.PENDING, 3)):
        for _ in range(count):
            make_lead(sync_state=state)
    with CaptureQueriesContext(connection) as captured:
        counts = {entry.state: entry.count for entry in state_counts()}
    assert len(captured) == 1
    assert counts == {state.value: 0 for state in SyncState} | {
        "synced": 2,
        "failed": 1,
        "pending": 3,
    }
    client = login("root")
    html = client.get(CHANGELIST).content.decode()
    assert 'href="?sync_state__exact=failed"' in html
    assert "Failed: <strong>1</strong>" in html and "Pending: <strong>3</strong>" in html
    filtered = client.get(CHANGELIST + "?sync_state__exact=failed")
    assert filtered.context["cl"].result_count == 1
    assert 'aria-current="true">Failed' in filtered.content.decode()


def test_filters_and_search_find_leads_by_error_crm_id_and_names(login: Login) -> None:
    broken = make_lead(last_error="HTTP 500", first_name="Broken")
    synced = make_lead(external_id="4242", sync_state=SyncState.SYNCED, last_name="Turing")
    client = login("root")

    def found(query: str) -> set[int]:
        return {lead.pk for lead in client.get(CHANGELIST + query).context["cl"].result_list}

    assert found("?has_error=yes") == {broken.pk}
    assert found("?has_error=no") == {synced.pk}
    assert found("?has_crm_id=yes") == {synced.pk}
    assert found("?q=4242") == {synced.pk}
    assert found("?q=Turing") == {synced.pk}
    assert found(f"?q={broken.email}") == {broken.pk}
    assert found("?status=NotContacted") == {broken.pk, synced.pk}


def test_banner_says_when_the_quota_is_exhausted_and_when_calls_resume(
    login: Login, insightly: SandboxServer
) -> None:
    QuotaTracker("insightly", cache).exhaust(2 * 3600)
    html = login("root").get(CHANGELIST).content.decode()
    assert "daily API quota is used up: calls resume at" in html
    assert "(in 1\xa0hour, 59\xa0minutes)" in html or "(in 2\xa0hours)" in html
    assert "rejecting the API key" not in html


def test_banner_says_when_the_crm_rejects_the_api_key(
    login: Login, insightly: SandboxServer
) -> None:
    QuotaTracker("insightly", cache).mark_auth_failed()
    html = login("root").get(CHANGELIST).content.decode()
    assert "The CRM is rejecting the API key" in html
    assert "quota is used up" not in html


def test_no_banner_while_the_crm_is_healthy(login: Login, insightly: SandboxServer) -> None:
    html = login("root").get(CHANGELIST).content.decode()
    assert "crmify-banners" not in html


def test_changelist_links_to_the_mapper_preview_only_with_its_permission(login: Login) -> None:
    assert PREVIEW in login("root").get(CHANGELIST).content.decode()
    assert PREVIEW not in login("viewer").get(CHANGELIST).content.decode()


# -- permissions ------------------------------------------------------------------------------------


def test_superuser_is_offered_every_action(login: Login) -> None:
    make_lead()
    assert offered_actions(login("root").get(CHANGELIST)) >= set(ACTIONS)


def test_staff_without_crmify_permissions_see_no_crmify_action(login: Login) -> None:
    make_lead()
    response = login("viewer").get(CHANGELIST)
    assert response.status_code == 200
    assert offered_actions(response).isdisjoint(ACTIONS)
    assert 'value="resync"' not in response.content.decode()


def test_each_action_is_offered_by_its_own_permission(login: Login) -> None:
    make_lead()
    offered = offered_actions(login("syncer").get(CHANGELIST))
    assert offered & set(ACTIONS) == {"resync", "retry_failed"}


def test_sync_now_refuses_a_get(login: Login) -> None:
    lead = make_lead()
    assert login("root").get(sync_now_url(lead)).status_code == 405
    assert locmem.calls == []


def test_lead_page_buttons_need_the_sync_permission(login: Login) -> None:
    lead = make_lead()
    with_perm = login("syncer").get(change_url(lead)).content.decode()
    assert f'action="{sync_now_url(lead)}"' in with_perm
    assert f'action="{compare_url(lead)}"' in with_perm
    without = login("viewer").get(change_url(lead)).content.decode()
    assert sync_now_url(lead) not in without and compare_url(lead) not in without


# -- actions ----------------------------------------------------------------------------------------


def test_resync_queues_every_lead_and_reports_skips(login: Login) -> None:
    synced = make_lead(sync_state=SyncState.SYNCED, external_id="1", synced_fingerprint="x")
    busy = make_lead(sync_state=SyncState.SYNCING)
    response = act(login("root"), "resync", [synced, busy])
    synced.refresh_from_db()
    assert synced.sync_state == SyncState.PENDING and synced.synced_fingerprint == ""
    assert texts(response) == ["Re-sync: 1 queued; 1 skipped (1 already syncing); 0 refused."]
    assert locmem.calls == []  # queued for the worker, not sent in the request


def test_retry_failed_reports_queued_skipped_and_refused(login: Login) -> None:
    failed = make_lead(sync_state=SyncState.FAILED, last_error="HTTP 500")
    fine = make_lead(sync_state=SyncState.SYNCED)
    # A mapping failure whose source row is gone cannot be retried: refused, with the reason.
    orphan = lead_of(make_user())
    Lead.objects.filter(pk=orphan.pk).update(
        source_id="999999", sync_state=SyncState.FAILED, fingerprint=""
    )
    response = act(login("syncer"), "retry_failed", [failed, fine, orphan])
    failed.refresh_from_db()
    assert failed.sync_state == SyncState.PENDING and failed.attempts == 0
    assert texts(response) == [
        "Retry failed: 1 queued; 1 skipped (1 not failed); 1 refused (1 source row gone)."
    ]


def test_mark_converted_and_dead_use_the_configured_statuses(
    login: Login, configure: Callable[..., None], people: dict[str, User]
) -> None:
    configure(LEAD_CONVERTED_STATUS="Won", LEAD_DEAD_STATUS="Lost")
    first, second = make_lead(), make_lead(status="Won")
    gone = make_lead(tombstone=True, sync_state=SyncState.DELETED)
    people["viewer"].user_permissions.add(*crmify_permissions("change_lead_status"))
    client = login("viewer")
    converted = act(client, "mark_converted", [first, second, gone])
    assert texts(converted) == [
        "Mark converted (Won): 1 queued; 1 skipped (1 already Won); "
        "1 refused (1 deleted from the CRM)."
    ]
    first.refresh_from_db()
    assert (first.status, first.sync_state) == ("Won", SyncState.PENDING)
    dead = act(client, "mark_dead", [first])
    assert texts(dead) == ["Mark dead (Lost): 1 queued; 0 skipped; 0 refused."]
    assert Lead.objects.get(pk=first.pk).status == "Lost"


def test_delete_from_crm_asks_first_listing_the_leads(login: Login) -> None:
    sent = make_lead(external_id="31", sync_state=SyncState.SYNCED, first_name="Sent")
    never = make_lead(first_name="Never")
    client = login("root")
    response = act(client, "delete_from_crm", [sent, never])
    html = response.content.decode()
    assert response.templates[0].name == "admin/crmify/lead/delete_from_crm_confirmation.html"
    assert str(sent) in html and str(never) in html and "CRM id 31" in html
    assert 'name="post" value="yes"' in html and "csrfmiddlewaretoken" in html
    assert f'<a href="{CHANGELIST}" class="button cancel-link">' in html  # no JavaScript needed
    assert not Lead.objects.filter(tombstone=True).exists()  # asking changed nothing

    confirmed = act(client, "delete_from_crm", [sent, never], post="yes")
    sent.refresh_from_db()
    never.refresh_from_db()
    assert (sent.tombstone, sent.sync_state) == (True, SyncState.DELETING)
    assert (never.tombstone, never.sync_state) == (True, SyncState.DELETED)  # nothing to delete
    assert texts(confirmed) == ["Delete from CRM: 2 queued; 0 skipped; 0 refused."]
    assert locmem.calls == []

    again = act(client, "delete_from_crm", [sent], post="yes")
    assert texts(again) == ["Delete from CRM: 0 queued; 1 skipped (1 already deleted); 0 refused."]


# -- the lead's page --------------------------------------------------------------------------------


def test_fields_from_the_source_are_read_only_and_say_where_to_edit_them(login: Login) -> None:
    user = make_user(first_name="Grace", last_name="Hopper", email="grace@example.com")
    lead = lead_of(user)
    client = login("root")
    response = client.get(change_url(lead))
    html = response.content.decode()
    assert "Comes from user; edit it there." in html
    assert reverse("admin:auth_user_change", args=[user.pk]) in html
    form_fields = response.context["adminform"].form.fields
    assert {"first_name", "last_name", "email"}.isdisjoint(form_fields)
    assert "phone" in form_fields

    data = {name: getattr(lead, name) for name in form_fields}
    data.update(custom_fields="{}", phone="+1 555 0100", email="forged@example.com")
    assert client.post(change_url(lead), data).status_code == 302
    lead.refresh_from_db()
    assert lead.phone == "+1 555 0100" and lead.email == "grace@example.com"
    assert lead.sync_state == SyncState.PENDING  # the edit is queued for the CRM


def test_ledger_is_latest_first_and_paged(login: Login) -> None:
    lead = make_lead()
    entries = make_ledger(lead, 25)
    client = login("root")
    first = client.get(change_url(lead))
    page = first.context["ledger"]
    assert page.paginator.count == 25 and len(page.object_list) == 20
    assert page.object_list[0].pk == entries[-1].pk  # the newest call on top
    html = first.content.decode()
    assert "PUT /Leads call 24" in html and "answer 24" in html
    assert "?ledger_page=2#ledger" in html
    second = client.get(change_url(lead) + "?ledger_page=2").context["ledger"]
    assert [e.pk for e in second.object_list] == [e.pk for e in reversed(entries[:5])]


def test_a_lead_deleted_in_the_crm_is_filtered_badged_and_says_how_to_bring_it_back(
    login: Login,
) -> None:
    live = make_lead(external_id="10", sync_state=SyncState.SYNCED)
    gone = make_lead(external_id="11", sync_state=SyncState.DELETED, tombstone=True)
    Lead.objects.filter(pk=gone.pk).update(deleted_in_crm_at=gone.created_at)
    client = login("root")

    def found(query: str) -> set[int]:
        return {lead.pk for lead in client.get(CHANGELIST + query).context["cl"].result_list}

    assert found("?deleted_in_crm=yes") == {gone.pk}
    assert found("?deleted_in_crm=no") == {live.pk}
    listing = client.get(CHANGELIST).content.decode()
    assert '<span class="crmify-badge crmify-badge--deleted">Deleted in the CRM</span>' in listing
    page = client.get(change_url(gone)).content.decode()
    assert "Deleted in the CRM on" in page
    assert "Saves and backfills do not create it again" in page


def test_the_ledger_shows_each_rows_direction(login: Login) -> None:
    lead = make_lead()
    (sent,) = make_ledger(lead, 1)
    LedgerEntry.objects.create(
        lead=lead,
        operation="pull",
        started_at=sent.started_at,
        outcome=LedgerEntry.Outcome.OK,
        direction=LedgerEntry.Direction.IN,
        request_summary="status: 'NotContacted' \u2192 'Disqualified'",
    )
    html = login("root").get(change_url(lead)).content.decode()
    assert 'crmify-direction--in">&larr; From the CRM</span>' in html
    assert 'crmify-direction--out">&rarr; To the CRM</span>' in html


def test_sync_now_reports_success_and_records_the_call(login: Login) -> None:
    lead = make_lead()
    response = login("syncer").post(sync_now_url(lead), follow=True)
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED
    assert texts(response) == [f"Synced with the CRM (CRM id {lead.external_id})."]
    assert [call.operation for call in locmem.calls] == ["create"]
    assert response.redirect_chain[-1][0] == change_url(lead)
    assert "CRM calls (1)" in response.content.decode()


def test_sync_now_shows_the_crms_own_message_and_never_the_api_key(
    login: Login, insightly: SandboxServer
) -> None:
    lead = make_lead(status="Hot Prospect", last_name="Hopper")
    client = login("root")
    response = client.post(sync_now_url(lead), follow=True)
    (message,) = texts(response)
    assert message.startswith("The sync failed: ")
    assert "'Hot Prospect' does not exist" in message and "Not Contacted" in message
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.FAILED
    pages = [
        response.content.decode(),
        client.get(CHANGELIST).content.decode(),
        client.post(compare_url(lead)).content.decode(),
    ]
    assert all(insightly.api_key not in page for page in pages)


def test_sync_now_says_when_it_will_retry(login: Login, insightly: SandboxServer) -> None:
    insightly.set_faults(error_rate=1.0, seed=1)
    lead = make_lead(last_name="Hopper")
    response = login("root").post(sync_now_url(lead), follow=True)
    (message,) = texts(response)
    assert message.startswith("Not synced; it will be retried at ") and "HTTP 50" in message


def test_compare_shows_three_columns_and_marks_a_change_made_in_the_crm(
    login: Login, insightly: SandboxServer
) -> None:
    lead = make_lead(first_name="Grace", last_name="Hopper", email="grace@example.com")
    client = login("root")
    client.post(sync_now_url(lead))
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    answer = requests.put(
        insightly.url + "Leads",
        json={"LEAD_ID": int(lead.external_id), "FIRST_NAME": "Amazing Grace"},
        auth=(insightly.api_key, ""),
        timeout=5,
    )
    assert answer.ok

    before = insightly.stats()["total"]
    asked = client.get(compare_url(lead))  # GET only offers the fetch
    assert insightly.stats()["total"] == before
    assert "Fetch the CRM’s record" in asked.content.decode()

    response = client.post(compare_url(lead))
    html = response.content.decode()
    assert ">App now<" in html and ">Last sent<" in html and ">CRM now<" in html
    rows = {row.name: row for row in response.context["comparison"].fields}
    assert (rows["first_name"].app_now, rows["first_name"].crm_now) == ("Grace", "Amazing Grace")
    assert rows["first_name"].differs
    assert rows["email"].crm_now == "grace@example.com" and not rows["email"].differs
    assert rows["last_name"].last_sent == "Hopper" and not rows["last_name"].unsent
    assert "≠ differs" in html and "Amazing Grace" in html
    assert f'"LEAD_ID": {lead.external_id}' in response.context["crm_record_json"]
    assert LedgerEntry.objects.filter(lead=lead, operation="fetch").exists()
    assert insightly.api_key not in html


def test_compare_says_when_the_crm_no_longer_has_the_lead(
    login: Login, insightly: SandboxServer
) -> None:
    lead = make_lead(last_name="Hopper")
    client = login("root")
    client.post(sync_now_url(lead))
    lead.refresh_from_db()
    insightly.state.delete_lead(int(lead.external_id))
    html = client.post(compare_url(lead)).content.decode()
    assert f"The CRM has no lead {lead.external_id}" in html


def test_compare_shows_why_the_fetch_failed(login: Login, sandbox: SandboxServer) -> None:
    from django.test import override_settings

    lead = make_lead(external_id="123", sync_state=SyncState.SYNCED)
    cache.clear()
    with override_settings(CRMIFY=crmify_for(sandbox, api_key="wrong-key-0123")):
        html = login("root").post(compare_url(lead)).content.decode()
    cache.clear()
    assert "record could not be fetched" in html and "rejected the API key" in html
    assert "wrong-key-0123" not in html


def test_compare_marks_unsent_changes_against_the_locmem_crm(login: Login) -> None:
    lead = make_lead(first_name="Ada")
    client = login("root")
    client.post(sync_now_url(lead))
    Lead.objects.filter(pk=lead.pk).update(first_name="Augusta")
    response = client.post(compare_url(lead))
    rows = {row.name: row for row in response.context["comparison"].fields}
    assert rows["first_name"].unsent and rows["first_name"].differs
    assert (rows["first_name"].last_sent, rows["first_name"].crm_now) == ("Ada", "Ada")
    assert not rows["email"].unsent and not rows["email"].differs


def test_a_lead_added_by_hand_is_queued_for_the_crm(login: Login) -> None:
    client = login("root")
    assert client.get(reverse("admin:crmify_lead_add")).status_code == 200
    data = {name: "" for name in ("first_name", "phone", "status")}
    data.update(last_name="Hand", email="hand@example.com", custom_fields="{}")
    assert client.post(reverse("admin:crmify_lead_add"), data).status_code == 302
    lead = Lead.objects.get(email="hand@example.com")
    assert lead.sync_state == SyncState.PENDING and lead.fingerprint
