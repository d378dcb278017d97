"""A lead's state moves only through the named operations of ``Lead.objects`` (``crmify.transitions``): what
each moves, what it returns, and what it refuses."""

from __future__ import annotations

import ast
import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone

from crmify.models import Lead, LedgerEntry, SyncState
from crmify.tracking import save_if_changed

pytestmark = pytest.mark.django_db

NOW = timezone.now()
PAST = NOW - datetime.timedelta(hours=1)
LATER = NOW + datetime.timedelta(hours=1)


def make_lead(**fields: Any) -> Lead:
    """A lead without a source row, in whatever state a test needs (set up directly, not by transition)."""
    fields = {"email": "ada@example.com", "fingerprint": "f1", **fields}
    return Lead.objects.create(**fields)


def one(lead: Lead) -> Any:
    return Lead.objects.filter(pk=lead.pk)


def reloaded(lead: Lead) -> Lead:
    return Lead.objects.get(pk=lead.pk)


def held(**fields: Any) -> tuple[Lead, str]:
    """A lead a worker claimed for sending."""
    lead = make_lead(**fields)
    token = one(lead).claim_for_sync()
    assert token is not None
    return lead, token


# -- the site changed a lead -------------------------------------------------------------------------


@pytest.mark.parametrize("state", [SyncState.SYNCED, SyncState.FAILED, SyncState.RETRYING])
def test_mark_changed_makes_a_lead_pending_with_fresh_attempts(state: SyncState) -> None:
    lead = make_lead(sync_state=state, attempts=3, next_attempt_at=LATER)
    assert one(lead).mark_changed(NOW, first_name="Ada") == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.next_attempt_at) == (SyncState.PENDING, 0, None)
    assert lead.queued_at == NOW
    assert lead.first_name == "Ada"


def test_mark_changed_leaves_a_lead_being_synced_with_its_worker() -> None:
    lead, token = held()
    assert one(lead).mark_changed(NOW, first_name="Ada") == 1
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.SYNCING
    assert lead.claim_token == token


def test_mark_changed_refuses_a_tombstone() -> None:
    lead = make_lead(sync_state=SyncState.DELETED, tombstone=True)
    assert one(lead).mark_changed(NOW, first_name="Ada") == 0
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.DELETED
    assert lead.first_name == ""


def test_a_save_from_a_copy_loaded_before_the_tombstone_keeps_the_values_and_queues_nothing() -> (
    None
):
    lead = make_lead(sync_state=SyncState.SYNCED)
    stale = reloaded(lead)
    assert one(lead).request_delete() == (1, 0)
    stale.first_name = "Ada"
    save_if_changed(stale)
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.DELETED
    assert lead.first_name == "Ada"


def test_mark_changed_in_bulk_moves_each_lead_as_mark_changed_does() -> None:
    synced = make_lead(sync_state=SyncState.SYNCED, attempts=2)
    syncing, _ = held(email="b@example.com")
    tombstone = make_lead(sync_state=SyncState.DELETED, tombstone=True, email="c@example.com")
    leads = [reloaded(synced), reloaded(syncing), reloaded(tombstone)]
    for lead in leads:
        lead.first_name = "Ada"
    assert Lead.objects.mark_changed_in_bulk(leads, ["first_name"], NOW) == 2
    states = {
        lead.pk: (lead.sync_state, lead.attempts, lead.first_name) for lead in Lead.objects.all()
    }
    assert states == {
        synced.pk: (SyncState.PENDING, 0, "Ada"),
        syncing.pk: (SyncState.SYNCING, 0, "Ada"),
        tombstone.pk: (SyncState.DELETED, 0, ""),
    }


def test_fail_mapping_fails_a_live_lead_and_forgets_its_fingerprints() -> None:
    lead = make_lead(sync_state=SyncState.SYNCED, source_fingerprint="s1")
    assert one(lead).fail_mapping("Mapping failed: no e-mail", NOW) == 1
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Mapping failed: no e-mail"
    assert (lead.fingerprint, lead.source_fingerprint) == ("", "")


def test_fail_mapping_leaves_a_tombstone_in_its_state() -> None:
    lead = make_lead(sync_state=SyncState.DELETED, tombstone=True)
    one(lead).fail_mapping("Mapping failed: no e-mail", NOW)
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.DELETED
    assert lead.last_error == "Mapping failed: no e-mail"


# -- a worker ----------------------------------------------------------------------------------------


def test_a_claimed_lead_cannot_be_claimed_twice() -> None:
    lead = make_lead()
    first = one(lead).claim_for_sync()
    second = one(lead).claim_for_sync()
    assert first is not None
    assert second is None
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.SYNCING
    assert lead.claim_token == first
    assert lead.claimed_at is not None


def test_claim_for_sync_refuses_a_retry_that_is_not_due_and_takes_one_that_is() -> None:
    waiting = make_lead(sync_state=SyncState.RETRYING, next_attempt_at=LATER)
    due = make_lead(sync_state=SyncState.RETRYING, next_attempt_at=PAST, email="b@example.com")
    assert one(waiting).claim_for_sync() is None
    assert one(due).claim_for_sync() is not None


@pytest.mark.parametrize("state", [SyncState.SYNCED, SyncState.FAILED, SyncState.DELETING])
def test_claim_for_sync_refuses_a_lead_with_nothing_to_send(state: SyncState) -> None:
    assert one(make_lead(sync_state=state)).claim_for_sync() is None


def test_claim_for_delete_takes_only_a_lead_waiting_for_its_deletion() -> None:
    pending = make_lead()
    deleting = make_lead(sync_state=SyncState.DELETING, tombstone=True, email="b@example.com")
    assert one(pending).claim_for_delete() is None
    token = one(deleting).claim_for_delete()
    assert token is not None
    assert one(deleting).claim_for_delete() is None
    assert reloaded(deleting).sync_state == SyncState.DELETING


def test_finish_synced_records_what_was_sent() -> None:
    lead, token = held(attempts=2, last_error="timeout")
    sent = {"fingerprint": "f1", "external_id": "42", "synced_values": {"email": "a"}, "now": NOW}
    assert one(lead).held(token).finish_synced(**sent) == 1
    lead = reloaded(lead)
    assert lead.sync_state == SyncState.SYNCED
    assert (lead.external_id, lead.synced_fingerprint, lead.synced_values) == (
        "42",
        "f1",
        {"email": "a"},
    )
    assert (lead.attempts, lead.last_error, lead.claim_token, lead.claimed_at) == (0, "", "", None)


def test_finish_synced_refuses_a_claim_given_back_meanwhile() -> None:
    lead, token = held()
    Lead.objects.release_stale_claims(LATER)
    sent = {"fingerprint": "f1", "external_id": "42", "synced_values": {}, "now": NOW}
    assert one(lead).held(token).finish_synced(**sent) == 0
    assert one(lead).held(token).send_again(**sent) == 0
    assert reloaded(lead).external_id == ""


def test_a_lead_changed_while_it_was_sent_is_sent_again() -> None:
    lead, token = held()
    one(lead).mark_changed(NOW, fingerprint="f2")
    sent = {"fingerprint": "f1", "external_id": "42", "synced_values": {}, "now": NOW}
    assert one(lead).held(token).finish_synced(**sent) == 0
    assert one(lead).held(token).send_again(**sent) == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.external_id, lead.synced_fingerprint) == (
        SyncState.PENDING,
        "42",
        "f1",
    )
    assert lead.claim_token == ""


def test_a_lead_deleted_while_it_was_sent_goes_on_to_its_deletion() -> None:
    lead, token = held()
    assert one(lead).request_delete(NOW) == (0, 1)
    assert reloaded(lead).sync_state == SyncState.SYNCING  # still its worker's
    sent = {"fingerprint": "f1", "external_id": "42", "synced_values": {}, "now": NOW}
    assert one(lead).held(token).finish_synced(**sent) == 0
    assert one(lead).held(token).send_again(**sent) == 1
    assert reloaded(lead).sync_state == SyncState.DELETING


def test_schedule_retry_counts_the_attempt_and_releases_the_claim() -> None:
    lead, token = held(attempts=1)
    moved = (
        one(lead)
        .held(token)
        .schedule_retry(state=SyncState.RETRYING, attempts=2, at=LATER, error="timeout", now=NOW)
    )
    assert moved == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.next_attempt_at) == (SyncState.RETRYING, 2, LATER)
    assert (lead.last_error, lead.claim_token, lead.queued_at) == ("timeout", "", NOW)


def test_a_retry_of_a_lead_deleted_meanwhile_becomes_its_deletion() -> None:
    lead, token = held()
    one(lead).request_delete(NOW)
    one(lead).held(token).schedule_retry(
        state=SyncState.RETRYING, attempts=1, at=LATER, error="timeout", now=NOW
    )
    assert reloaded(lead).sync_state == SyncState.DELETING


def test_waiting_for_the_quota_is_not_an_attempt() -> None:
    lead, token = held(attempts=2)
    one(lead).held(token).wait_for_quota(
        state=SyncState.RETRYING, until=LATER, error="quota", now=NOW
    )
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.next_attempt_at) == (SyncState.RETRYING, 2, LATER)
    assert lead.claim_token == ""


def test_fail_releases_a_lead_failed_for_good() -> None:
    lead, token = held(attempts=4)
    assert one(lead).held(token).fail(attempts=5, error="Gave up", now=NOW) == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.last_error) == (SyncState.FAILED, 5, "Gave up")
    assert (lead.next_attempt_at, lead.claim_token) == (None, "")


def test_requeue_if_moved_refuses_a_lead_that_did_not_change() -> None:
    lead, token = held()
    assert one(lead).held(token).requeue_if_moved(fingerprint="f1", error="400", now=NOW) == 0
    assert reloaded(lead).sync_state == SyncState.SYNCING


def test_requeue_if_moved_sends_a_lead_fixed_while_it_failed() -> None:
    lead, token = held(attempts=3)
    one(lead).mark_changed(NOW, fingerprint="f2")
    assert one(lead).held(token).requeue_if_moved(fingerprint="f1", error="400", now=NOW) == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.claim_token) == (SyncState.PENDING, 0, "")


def test_finish_deleted_leaves_a_clean_tombstone() -> None:
    lead = make_lead(sync_state=SyncState.DELETING, tombstone=True, attempts=2, last_error="x")
    token = one(lead).claim_for_delete()
    assert one(lead).held(token).finish_deleted(NOW) == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.attempts, lead.last_error, lead.claim_token) == (
        SyncState.DELETED,
        0,
        "",
        "",
    )


def test_fail_configuration_fails_the_lead_and_drops_its_claim() -> None:
    lead, _ = held()
    assert one(lead).fail_configuration("Configuration error: no key") == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.claim_token) == (SyncState.FAILED, "")


# -- the sweeper -------------------------------------------------------------------------------------


def test_release_stale_claims_gives_back_old_claims_only() -> None:
    old, _ = held()
    old_tombstone, _ = held(email="b@example.com")
    one(old_tombstone).request_delete(NOW)
    fresh, fresh_token = held(email="c@example.com")
    Lead.objects.filter(pk__in=[old.pk, old_tombstone.pk]).update(claimed_at=PAST)
    assert Lead.objects.release_stale_claims(NOW - datetime.timedelta(minutes=1), NOW) == 2
    old, old_tombstone, fresh = reloaded(old), reloaded(old_tombstone), reloaded(fresh)
    assert (old.sync_state, old.claim_token) == (SyncState.PENDING, "")
    assert (old_tombstone.sync_state, old_tombstone.claim_token) == (SyncState.DELETING, "")
    assert (fresh.sync_state, fresh.claim_token) == (SyncState.SYNCING, fresh_token)
    # Released leads look lost at once, so the same sweep queues them again.
    assert set(Lead.objects.lost(NOW).values_list("pk", flat=True)) == {old.pk, old_tombstone.pk}


def test_retry_due_lists_unclaimed_retries_whose_time_has_come() -> None:
    due = make_lead(sync_state=SyncState.RETRYING, next_attempt_at=PAST)
    make_lead(sync_state=SyncState.RETRYING, next_attempt_at=LATER, email="b@example.com")
    make_lead(sync_state=SyncState.PENDING, email="c@example.com")
    assert list(Lead.objects.retry_due(NOW).values_list("pk", flat=True)) == [due.pk]


def test_mark_queued_records_the_queue_time() -> None:
    lead = make_lead(queued_at=PAST)
    assert one(lead).mark_queued(NOW) == 1
    assert reloaded(lead).queued_at == NOW


# -- staff -------------------------------------------------------------------------------------------


def test_force_pending_brings_a_tombstone_back_and_sends_everything_again() -> None:
    lead = make_lead(
        sync_state=SyncState.DELETED,
        tombstone=True,
        external_id="42",
        synced_fingerprint="f1",
        attempts=2,
    )
    assert one(lead).force_pending(Q(pk__in=[])) == 1
    lead = reloaded(lead)
    assert (lead.sync_state, lead.tombstone, lead.attempts) == (SyncState.PENDING, False, 0)
    assert (lead.synced_fingerprint, lead.external_id) == ("", "42")


def test_force_pending_forgets_the_crm_id_of_a_record_that_is_gone() -> None:
    lead = make_lead(sync_state=SyncState.DELETED, tombstone=True, external_id="42")
    one(lead).force_pending(Q(sync_state=SyncState.DELETED))
    assert reloaded(lead).external_id == ""


def test_force_pending_leaves_a_lead_being_synced_with_its_worker() -> None:
    lead, _ = held()
    one(lead).force_pending(Q(pk__in=[]))
    assert reloaded(lead).sync_state == SyncState.SYNCING


def test_retry_failed_refuses_a_lead_that_is_not_failed() -> None:
    lead = make_lead(sync_state=SyncState.RETRYING, attempts=2)
    assert one(lead).retry_failed() == 0
    assert reloaded(lead).attempts == 2


def test_retry_failed_queues_a_failed_lead_or_its_deletion() -> None:
    failed = make_lead(sync_state=SyncState.FAILED, attempts=5, next_attempt_at=LATER)
    failed_delete = make_lead(
        sync_state=SyncState.FAILED, tombstone=True, attempts=5, email="b@example.com"
    )
    assert Lead.objects.retry_failed(NOW) == 2
    failed, failed_delete = reloaded(failed), reloaded(failed_delete)
    assert (failed.sync_state, failed.attempts, failed.next_attempt_at) == (
        SyncState.PENDING,
        0,
        None,
    )
    assert (failed_delete.sync_state, failed_delete.attempts) == (SyncState.DELETING, 0)


def test_request_delete_of_a_lead_never_sent_deletes_it_at_once() -> None:
    lead = make_lead()
    assert one(lead).request_delete(NOW) == (1, 0)
    lead = reloaded(lead)
    assert (lead.sync_state, lead.tombstone) == (SyncState.DELETED, True)


def test_request_delete_of_a_lead_that_was_sent_queues_its_deletion() -> None:
    in_crm = make_lead(sync_state=SyncState.SYNCED, external_id="42")
    maybe_in_crm = make_lead(email="b@example.com")  # its create timed out: the worker looks for it
    LedgerEntry.objects.create(
        lead=maybe_in_crm, operation="create", started_at=NOW, outcome="transient"
    )
    assert one(in_crm).request_delete(NOW) == (0, 1)
    assert one(maybe_in_crm).request_delete(NOW) == (0, 1)
    assert {lead.sync_state for lead in Lead.objects.all()} == {SyncState.DELETING}


def test_request_delete_refuses_a_tombstone() -> None:
    lead = make_lead(sync_state=SyncState.DELETED, tombstone=True, queued_at=PAST)
    assert one(lead).request_delete(NOW) == (0, 0)
    assert reloaded(lead).queued_at == PAST


def test_delete_now_makes_a_waiting_deletion_due() -> None:
    waiting = make_lead(sync_state=SyncState.DELETING, tombstone=True, next_attempt_at=LATER)
    live = make_lead(sync_state=SyncState.SYNCED, email="b@example.com")
    assert Lead.objects.delete_now() == 1
    assert reloaded(waiting).next_attempt_at is None
    assert reloaded(live).sync_state == SyncState.SYNCED


# -- one home ----------------------------------------------------------------------------------------

#: The state fields, and the modules allowed to write them: the operations themselves and the upgrade
#: migration's helper, which builds leads from django-crmify 1.3's rows.
STATE_FIELDS = {
    "sync_state",
    "tombstone",
    "deleted_in_crm_at",
    "attempts",
    "next_attempt_at",
    "queued_at",
    "last_error",
    "claim_token",
    "claimed_at",
    "status_refused",
    "status_refused_at",
}
MAY_WRITE = {"transitions.py", "upgrade.py"}


def state_writes(path: Path) -> list[str]:
    """``lead.<state field> = ...`` and ``.update(<state field>=...)`` in ``path`` (a ``BackfillRun``'s
    own ``state`` and ``last_error``, and a ``PullCursor``'s ``last_error``, aside: those models are
    not leads)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in STATE_FIELDS:
                    found.append(f"{path.name}:{node.lineno} .{target.attr} =")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "bulk_update")
        ):
            names = {keyword.arg for keyword in node.keywords} & STATE_FIELDS
            if names and not any(
                model in ast.unparse(node.func) for model in ("BackfillRun", "PullCursor")
            ):
                found.append(f"{path.name}:{node.lineno} update({', '.join(sorted(names))})")
    return found


def test_only_the_transitions_module_writes_a_leads_state() -> None:
    package = Path(__file__).resolve().parent.parent / "crmify"
    writes = [
        write
        for path in sorted(package.rglob("*.py"))
        if path.name not in MAY_WRITE and "migrations" not in path.parts
        for write in state_writes(path)
    ]
    assert writes == []
