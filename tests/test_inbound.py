"""Changes made in the CRM flow back to the leads (issue 14): the fields the CRM may change reach the lead
and are never pushed back, conflicts follow the rule and are recorded, the funnel still holds, deletes and
merges are followed, a lead a worker holds waits, and the site hears of it through its signals.

The CRM is the in-memory one (``crmify.backends.locmem``), read back as the poller and the webhook task
read a real CRM: ``iter_changes`` and ``read_changes``. Transactional tests with the immediate Tasks
backend, so a commit really runs the sync (and would run any push a pulled change caused).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import transaction

from crmify import api, backfill, inbound
from crmify.backends import locmem
from crmify.backends.base import CrmChange
from crmify.backfill import BackfillOptions
from crmify.exceptions import PermanentBackendError
from crmify.inbound import InboundReport, apply_changes
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.signals import lead_changed_in_crm, lead_deleted_in_crm
from crmify.tracking import fingerprint
from crmify.worker import current_backend
from tests.doubles import DuringSyncBackend, Enqueued
from tests.engine_helpers import Configure, operations
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)

IN = LedgerEntry.Direction.IN


def pull() -> InboundReport:
    """One poll of the whole CRM, as the poller reads it (its own pushes included)."""
    changes = [change for page in current_backend().iter_changes(None) for change in page]
    return apply_changes(changes, via="poll")


def webhook(*external_ids: str) -> InboundReport:
    """The webhook task: re-read the records a webhook named, and apply them."""
    return apply_changes(current_backend().read_changes(external_ids), via="webhook")


def synced_user(**fields: Any) -> tuple[User, Lead]:
    user = make_user(**fields)
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    return user, lead


def sent_user(enqueued: Enqueued, **fields: Any) -> tuple[User, Lead]:
    """A user whose lead was sent, on the dummy Tasks backend: the app's later changes stay pending."""
    user = make_user(**fields)
    enqueued.run_all()
    return user, lead_of(user)


def first_name_changed_on_both_sides(enqueued: Enqueued) -> tuple[User, Lead]:
    """The app changed the first name (not sent yet), and a salesperson changed it in the CRM."""
    user, lead = sent_user(enqueued, first_name="Ada")
    user.first_name = "Augusta"
    user.save()
    locmem.change_in_crm(lead.external_id, first_name="Adelaide")
    return user, lead


def sends() -> list[str]:
    """The calls that changed the CRM (reads of changes aside)."""
    return [op for op in operations() if op not in ("changes", "read")]


def inbound_rows(lead: Lead, outcome: str | None = None) -> list[LedgerEntry]:
    rows = LedgerEntry.objects.filter(lead=lead, direction=IN).order_by("id")
    return list(rows if outcome is None else rows.filter(outcome=outcome))


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    """What receivers of the two signals got, in order."""
    got: list[dict[str, Any]] = []

    def changed(sender: Any, **kwargs: Any) -> None:
        got.append({**kwargs, "which": "changed", "sender": sender})

    def deleted(sender: Any, **kwargs: Any) -> None:
        got.append({**kwargs, "which": "deleted", "sender": sender})

    lead_changed_in_crm.connect(changed, weak=False, dispatch_uid="test:changed")
    lead_deleted_in_crm.connect(deleted, weak=False, dispatch_uid="test:deleted")
    yield got
    lead_changed_in_crm.disconnect(dispatch_uid="test:changed")
    lead_deleted_in_crm.disconnect(dispatch_uid="test:deleted")


# -- what flows back, and is not pushed back ------------------------------------------------------------


def test_a_status_changed_in_the_crm_reaches_the_lead_without_a_push() -> None:
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    sent_before = sends()
    report = pull()
    assert (report.applied, report.unchanged) == (1, 0)
    lead = lead_of(user)
    assert lead.status == "Disqualified"
    assert lead.sync_state == SyncState.SYNCED
    assert lead.synced_values["status"] == "Disqualified"
    assert lead.fingerprint == lead.synced_fingerprint == fingerprint(lead.crm_values())
    assert lead.crm_modified_at == locmem.modified[lead.external_id]
    assert sends() == sent_before  # nothing pushed back


def test_a_later_save_of_the_source_row_does_not_push_the_pulled_value_back() -> None:
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    pull()
    user.save()  # maps to the same values as before
    assert sends() == ["create"]
    user.first_name = "Augusta"
    user.save()  # a change of the app's own goes out, with the CRM's status kept
    assert sends() == ["create", "update"]
    assert locmem.leads[lead.external_id]["status"] == "Disqualified"
    assert locmem.leads[lead.external_id]["first_name"] == "Augusta"


def test_a_field_the_crm_does_not_own_is_drift_and_not_applied() -> None:
    user, lead = synced_user(first_name="Ada")
    locmem.change_in_crm(lead.external_id, first_name="Adelaide")
    report = pull()
    assert (report.applied, report.unchanged) == (0, 1)
    assert lead_of(user).first_name == "Ada"
    assert inbound_rows(lead) == []
    assert sends() == ["create"]


def test_a_status_the_crm_leaves_empty_is_not_applied() -> None:
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="")
    assert pull().applied == 0
    assert lead_of(user).status == "NotContacted"


def test_a_custom_field_the_crm_owns_is_applied(configure: Configure) -> None:
    configure(CRM_OWNED_FIELDS=["status", "custom_fields__plan"])
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, custom_fields={"plan": "gold", "other": "x"})
    assert pull().applied == 1
    lead = lead_of(user)
    assert lead.custom_fields == {"plan": "gold"}  # "other" is not the CRM's to change
    assert lead.synced_values["custom_fields"] == {"plan": "gold"}
    assert lead.fingerprint == lead.synced_fingerprint
    [row] = inbound_rows(lead)
    assert row.request_summary == "custom_fields__plan: None → 'gold'"


def test_the_ledger_shows_the_change_as_inbound_with_how_it_came() -> None:
    _, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    pull()
    locmem.change_in_crm(lead.external_id, status="Converted")
    webhook(lead.external_id)
    rows = inbound_rows(lead)
    assert [(r.operation, r.outcome, r.request_summary) for r in rows] == [
        ("pull", LedgerEntry.Outcome.OK, "status: 'NotContacted' → 'Disqualified'"),
        ("webhook", LedgerEntry.Outcome.OK, "status: 'Disqualified' → 'Converted'"),
    ]
    # The pushes stay outbound.
    assert list(
        LedgerEntry.objects.filter(lead=lead)
        .exclude(direction=IN)
        .values_list("operation", flat=True)
    ) == ["create"]


def test_a_change_read_again_changes_nothing() -> None:
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    assert webhook(lead.external_id).applied == 1
    again = webhook(lead.external_id)  # a repeated webhook
    overlap = pull()  # and the poll reading it once more
    assert (again.applied, again.unchanged) == (0, 1)
    assert (overlap.applied, overlap.unchanged) == (0, 1)
    assert len(inbound_rows(lead)) == 1
    assert lead_of(user).status == "Disqualified"


def two_reads(lead: Lead) -> tuple[CrmChange, CrmChange]:
    """A newer and an older read of ``lead``'s record, saying different statuses."""
    now = locmem.modified[lead.external_id]
    minutes = datetime.timedelta(minutes=1)
    newer = CrmChange(lead.external_id, now + 2 * minutes, {"status": "Converted"})
    older = CrmChange(lead.external_id, now + minutes, {"status": "Contacted"})
    return newer, older


def test_an_older_read_of_a_record_is_not_applied_over_a_newer_one() -> None:
    user, lead = synced_user()
    newer, older = two_reads(lead)
    assert apply_changes([newer], via="webhook").applied == 1
    report = apply_changes([older], via="webhook")
    assert (report.applied, report.unchanged) == (0, 1)
    assert lead_of(user).status == "Converted"


def test_the_newest_read_of_a_record_wins_within_one_batch() -> None:
    user, lead = synced_user()
    newer, older = two_reads(lead)
    report = apply_changes([newer, older], via="poll")
    assert (report.applied, report.unchanged) == (1, 0)
    assert lead_of(user).status == "Converted"
    assert len(inbound_rows(lead)) == 1


def test_a_record_no_lead_holds_is_unknown_and_writes_nothing() -> None:
    report = apply_changes(
        [CrmChange("404", None, {"status": "Converted"}), CrmChange("", None, {})], via="poll"
    )
    assert report.unknown == 2
    assert LedgerEntry.objects.count() == 0


def test_via_must_be_poll_or_webhook() -> None:
    with pytest.raises(ValueError, match="via"):
        apply_changes([], via="cron")


def test_a_pending_change_of_the_apps_own_stays_pending_and_goes_with_the_crms_value(
    enqueued: Enqueued,
) -> None:
    user, lead = sent_user(enqueued, first_name="Ada")
    user.first_name = "Augusta"
    user.save()
    assert lead_of(user).sync_state == SyncState.PENDING
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    assert pull().applied == 1
    lead = lead_of(user)
    assert (lead.sync_state, lead.status, lead.first_name) == (
        SyncState.PENDING,
        "Disqualified",
        "Augusta",
    )
    assert lead.fingerprint == fingerprint(lead.crm_values()) != lead.synced_fingerprint
    assert lead.synced_values["first_name"] == "Ada"  # what the CRM still holds
    enqueued.run_all()
    assert sends() == ["create", "update"]
    record = locmem.leads[lead.external_id]
    assert (record["first_name"], record["status"]) == ("Augusta", "Disqualified")


# -- conflicts ----------------------------------------------------------------------------------------


def test_a_conflict_on_a_field_the_crm_owns_goes_to_the_crm_by_default(
    enqueued: Enqueued,
) -> None:
    user, lead = sent_user(enqueued)
    api.set_status(user, "Contacted")  # the app's change, not sent yet
    locmem.change_in_crm(lead.external_id, status="Disqualified")  # the salesperson's
    queued = enqueued.lead_ids
    report = pull()
    assert (report.applied, report.conflicts) == (1, 1)
    assert enqueued.lead_ids == queued  # the pull queued nothing
    lead = lead_of(user)
    assert lead.status == "Disqualified"
    [conflict] = inbound_rows(lead, LedgerEntry.Outcome.CONFLICT)
    assert conflict.operation == "pull"
    assert "status" in conflict.error and "'Contacted'" in conflict.error
    assert "'Disqualified'" in conflict.error
    assert "the CRM wins" in conflict.error and "CONFLICT_WINNER" in conflict.error
    # The app's change is moot: the worker finds nothing to send.
    enqueued.run_all()
    assert sends() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


def test_a_conflict_on_another_field_goes_to_the_app_by_default(enqueued: Enqueued) -> None:
    user, lead = first_name_changed_on_both_sides(enqueued)
    report = pull()
    assert (report.applied, report.unchanged, report.conflicts) == (0, 1, 1)
    [conflict] = inbound_rows(lead)
    assert conflict.outcome == LedgerEntry.Outcome.CONFLICT
    assert "the app wins" in conflict.error and "CRM_OWNED_FIELDS" in conflict.error
    assert lead_of(user).first_name == "Augusta"
    enqueued.run_all()  # the app's pending push overwrites the CRM
    assert locmem.leads[lead.external_id]["first_name"] == "Augusta"


def test_both_sides_making_the_same_change_is_no_conflict_and_sends_nothing(
    enqueued: Enqueued,
) -> None:
    user, lead = sent_user(enqueued)
    api.set_status(user, "Contacted")
    locmem.change_in_crm(lead.external_id, status="Contacted")
    report = pull()
    assert (report.applied, report.unchanged, report.conflicts) == (0, 1, 0)
    assert lead_of(user).synced_values["status"] == "Contacted"
    enqueued.run_all()
    assert sends() == ["create"]


def test_conflict_winner_app_keeps_the_apps_value_for_every_field(
    enqueued: Enqueued, configure: Configure
) -> None:
    configure(CONFLICT_WINNER="app")
    user, lead = sent_user(enqueued)
    api.set_status(user, "Contacted")
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    report = pull()
    assert (report.applied, report.conflicts) == (0, 1)
    assert lead_of(user).status == "Contacted"
    [conflict] = inbound_rows(lead, LedgerEntry.Outcome.CONFLICT)
    assert 'the app wins (CONFLICT_WINNER "app"' in conflict.error
    enqueued.run_all()
    assert locmem.leads[lead.external_id]["status"] == "Contacted"


def test_a_conflict_read_again_is_recorded_once(enqueued: Enqueued) -> None:
    _, lead = first_name_changed_on_both_sides(enqueued)
    assert pull().conflicts == 1
    assert pull().conflicts == 0
    assert len(inbound_rows(lead, LedgerEntry.Outcome.CONFLICT)) == 1


# -- the funnel ---------------------------------------------------------------------------------------


def test_a_status_from_the_crm_that_moves_the_lead_back_is_refused_and_recorded() -> None:
    user, lead = synced_user()
    api.mark_converted(user)
    locmem.change_in_crm(lead.external_id, status="Contacted")
    report = pull()
    assert (report.applied, report.refused) == (0, 1)
    lead = lead_of(user)
    assert (lead.status, lead.status_refused) == ("Converted", "Contacted")
    [refusal] = inbound_rows(lead, LedgerEntry.Outcome.REFUSED)
    assert refusal.operation == "pull"
    assert "'Contacted'" in refusal.error and "'Converted'" in refusal.error
    assert sends() == ["create", "update"]  # nothing pushed for the refusal
    assert pull().refused == 0  # recorded once


def test_a_status_applied_from_the_crm_forgets_an_earlier_refusal() -> None:
    user, lead = synced_user()
    api.mark_converted(user)
    locmem.change_in_crm(lead.external_id, status="Contacted")
    pull()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    assert pull().applied == 1
    lead = lead_of(user)
    assert (lead.status, lead.status_refused, lead.status_refused_at) == ("Disqualified", "", None)


# -- signals ------------------------------------------------------------------------------------------


def test_the_signal_carries_the_lead_the_changes_and_how_they_came(
    received: list[dict[str, Any]],
) -> None:
    _, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    webhook(lead.external_id)
    [got] = received
    assert got["which"] == "changed" and got["sender"] is Lead
    assert got["lead"].pk == lead.pk and got["lead"].status == "Disqualified"
    assert got["changes"] == {"status": ("NotContacted", "Disqualified")}
    assert got["via"] == "webhook"


def test_the_signal_waits_for_the_commit(received: list[dict[str, Any]]) -> None:
    _, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    with transaction.atomic():
        pull()
        assert received == []
    assert len(received) == 1


def test_a_receiver_that_raises_is_logged_and_the_others_still_hear(
    received: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("the site's receiver broke")

    lead_changed_in_crm.connect(broken, weak=False, dispatch_uid="test:broken")
    try:
        _, lead = synced_user()
        locmem.change_in_crm(lead.external_id, status="Disqualified")
        with caplog.at_level(logging.ERROR, logger="crmify"):
            assert pull().applied == 1
    finally:
        lead_changed_in_crm.disconnect(dispatch_uid="test:broken")
    assert len(received) == 1
    assert "the site's receiver broke" in caplog.text


def test_a_receiver_saving_the_source_row_pushes_nothing() -> None:
    def follow(sender: Any, lead: Lead, **kwargs: Any) -> None:
        # What a site does: record the CRM's verdict on its own row and save it.
        row = User.objects.get(pk=lead.source_id)
        row.is_active = lead.status != "Disqualified"
        row.save()

    lead_changed_in_crm.connect(follow, weak=False, dispatch_uid="test:follow")
    try:
        user, lead = synced_user()
        locmem.change_in_crm(lead.external_id, status="Disqualified")
        assert pull().applied == 1
    finally:
        lead_changed_in_crm.disconnect(dispatch_uid="test:follow")
    user.refresh_from_db()
    assert user.is_active is False
    assert sends() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


# -- a lead a worker holds ---------------------------------------------------------------------------------


def test_a_lead_a_worker_holds_is_deferred_and_applied_later(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.DuringSyncBackend")
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    [change] = current_backend().read_changes([lead.external_id])
    reports: list[InboundReport] = []
    DuringSyncBackend.during_sync = lambda: reports.append(apply_changes([change], via="poll"))
    user.first_name = "Augusta"
    user.save()  # the worker sends it, and the poll runs while it holds the lead
    [report] = reports
    assert (report.deferred, report.applied) == (1, 0)
    assert report.deferred_since == change.modified_at
    assert "1 deferred" in str(report)
    lead = lead_of(user)
    assert (lead.status, lead.sync_state) == ("NotContacted", SyncState.SYNCED)
    assert inbound_rows(lead) == []
    # Once the worker is done, the change (read again) is applied, and nothing is sent for it.
    assert apply_changes([change], via="poll").applied == 1
    assert lead_of(user).status == "Disqualified"
    assert sends() == ["create", "update"]


def test_a_save_made_between_the_read_and_the_write_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, lead = synced_user()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    plan = inbound._plan

    def site_saves_meanwhile(lead: Lead, values: Any) -> Any:
        if lead.first_name != "Augusta":  # the first read only
            user.first_name = "Augusta"
            user.save()  # committed and sent at once (the immediate Tasks backend)
        return plan(lead, values)

    monkeypatch.setattr(inbound, "_plan", site_saves_meanwhile)
    assert pull().applied == 1
    stored = lead_of(user)
    assert (stored.first_name, stored.status) == ("Augusta", "Disqualified")
    assert stored.fingerprint == stored.synced_fingerprint == fingerprint(stored.crm_values())
    assert sends() == ["create", "update"]


# -- deletes --------------------------------------------------------------------------------------------


def test_a_lead_deleted_in_the_crm_becomes_a_tombstone_saves_do_not_recreate(
    received: list[dict[str, Any]],
) -> None:
    user, lead = synced_user()
    locmem.delete_in_crm(lead.external_id)
    report = pull()
    assert report.deleted == 1
    lead = lead_of(user)
    assert lead.tombstone and lead.sync_state == SyncState.DELETED
    assert lead.deleted_in_crm_at is not None
    [row] = inbound_rows(lead)
    assert (row.operation, row.request_summary) == ("pull", "deleted in the CRM")
    [got] = received
    assert (got["which"], got["lead"].pk, got["via"]) == ("deleted", lead.pk, "poll")
    user.first_name = "Augusta"
    user.save()
    assert sends() == ["create"]  # not re-created, nothing to delete
    assert lead_of(user).sync_state == SyncState.DELETED
    assert pull().deleted == 0  # read again: nothing more


def test_a_backfill_leaves_a_lead_deleted_in_the_crm_alone() -> None:
    user, lead = synced_user()
    locmem.delete_in_crm(lead.external_id)
    pull()
    User.objects.filter(pk=user.pk).update(last_name="Byron")
    run = backfill.start(BackfillOptions())
    run.refresh_from_db()
    assert (run.scanned, run.skipped_tombstones) == (1, 1)
    assert [op for op in sends() if op != "list"] == ["create"]
    assert lead_of(user).sync_state == SyncState.DELETED


def test_resync_brings_a_lead_deleted_in_the_crm_back_as_a_new_record() -> None:
    user, lead = synced_user()
    old_id = lead.external_id
    locmem.delete_in_crm(old_id)
    pull()
    assert api.resync([lead_of(user)]).queued == 1
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED and not lead.tombstone
    assert lead.deleted_in_crm_at is None
    assert lead.external_id != old_id and lead.external_id in locmem.leads
    assert sends() == ["create", "create"]


def test_crmifys_own_delete_read_back_is_not_a_delete_in_the_crm() -> None:
    user, lead = synced_user()
    user.delete()
    lead = Lead.objects.get(pk=lead.pk)
    assert lead.sync_state == SyncState.DELETED
    report = pull()
    assert (report.deleted, report.unchanged) == (0, 1)
    assert Lead.objects.get(pk=lead.pk).deleted_in_crm_at is None


def test_an_update_answered_404_marks_the_lead_deleted_in_the_crm() -> None:
    user, lead = synced_user()
    message = "The lead no longer exists in the CRM (Not Found). Re-sync it to create it again."
    locmem.fail_next(PermanentBackendError(message, status_code=404))
    user.first_name = "Augusta"
    user.save()
    lead = lead_of(user)
    assert lead.tombstone and lead.sync_state == SyncState.DELETED
    assert lead.deleted_in_crm_at is not None
    assert lead.last_error == f"HTTP 404: {message}"  # the CRM's word, kept
    [failed] = LedgerEntry.objects.filter(lead=lead, outcome=LedgerEntry.Outcome.PERMANENT)
    assert (failed.operation, failed.error) == ("update", lead.last_error)
    api.resync([lead])
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert sends() == ["create", "update", "create"]


# -- merges ---------------------------------------------------------------------------------------------


def crm_record(**values: Any) -> str:
    """A record made in the CRM by someone else (no lead holds it)."""
    record_id = "900"
    locmem.leads[record_id] = Lead(email="other@example.com", **values).crm_values()
    locmem.change_in_crm(record_id)
    return record_id


def test_a_lead_merged_in_the_crm_adopts_the_surviving_record_and_its_status() -> None:
    user, lead = synced_user()
    survivor = crm_record(status="Contacted")
    locmem.merge_in_crm(lead.external_id, into=survivor)
    report = pull()
    assert (report.merged, report.applied, report.conflicts) == (1, 1, 0)
    lead = lead_of(user)
    assert lead.external_id == survivor
    assert lead.status == "Contacted"  # the survivor's, read with the merge
    assert lead.email != "other@example.com"  # not the CRM's to change
    assert lead.sync_state == SyncState.SYNCED
    merge, status = inbound_rows(lead)
    assert merge.request_summary.startswith(f"merged into {survivor} in the CRM")
    assert status.request_summary == "status: 'NotContacted' → 'Contacted'"
    assert sends() == ["create"]
    user.first_name = "Augusta"
    user.save()  # the next change updates the survivor
    assert locmem.calls[-1].operation == "update" and locmem.calls[-1].lead_id == survivor


def test_a_merge_into_another_leads_record_is_adopted_and_flagged_as_a_conflict() -> None:
    first, first_lead = synced_user()
    second, second_lead = synced_user()
    locmem.merge_in_crm(first_lead.external_id, into=second_lead.external_id)
    report = pull()
    assert (report.merged, report.conflicts, report.applied) == (1, 1, 0)
    assert lead_of(first).external_id == lead_of(second).external_id == second_lead.external_id
    [conflict] = inbound_rows(first_lead, LedgerEntry.Outcome.CONFLICT)
    assert "share one CRM record" in conflict.error and f"#{second_lead.pk}" in conflict.error


# -- settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"CRM_OWNED_FIELDS": ["status", "owner"]}, "crmify.E110"),
        ({"CRM_OWNED_FIELDS": "status"}, "crmify.E110"),
        ({"CRM_OWNED_FIELDS": ["custom_fields__"]}, "crmify.E110"),
        ({"CONFLICT_WINNER": "salesperson"}, "crmify.E111"),
    ],
)
def test_wrong_inbound_settings_are_system_check_errors(
    configure: Configure, overrides: dict[str, Any], check_id: str
) -> None:
    configure(**overrides)
    with pytest.raises(SystemCheckError, match=check_id):
        call_command("check")


def test_right_inbound_settings_pass_the_checks(configure: Configure) -> None:
    configure(CRM_OWNED_FIELDS=["status", "phone", "custom_fields__plan"], CONFLICT_WINNER="app")
    call_command("check")
