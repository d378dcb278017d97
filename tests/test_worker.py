"""The worker: one lead's CRM call with its claim, and the state it leaves: synced, retried with backoff,
failed with a readable message, waiting for the quota, deleted; a change made during the call is not lost.

Tests run with the immediate Tasks backend in transactional tests, so a commit really runs the sync.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from crmify import api
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError, QuotaExhausted, TransientBackendError
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.worker import backoff_seconds, process_lead
from tests.doubles import DuringSyncBackend, Enqueued, PlainCRM
from tests.engine_helpers import Configure, make_due, operations
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plain_crm(configure: Configure) -> Iterator[type[PlainCRM]]:
    configure(BACKEND="tests.doubles.PlainCRM")
    PlainCRM.reset()
    yield PlainCRM
    PlainCRM.reset()


# -- errors: transient, permanent, anything else, quota --------------------------------------------------


def test_a_transient_error_schedules_a_retry_with_backoff(configure: Configure) -> None:
    configure(RETRY_BACKOFF_BASE=60)
    locmem.fail_next(TransientBackendError("Service Unavailable", status_code=503))
    before = timezone.now()
    user = make_user()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.RETRYING
    assert lead.attempts == 1
    assert lead.last_error == "HTTP 503: Service Unavailable"
    assert lead.next_attempt_at is not None
    # first retry: between half and all of RETRY_BACKOFF_BASE, jittered
    delay = (lead.next_attempt_at - before).total_seconds()
    assert 30 <= delay <= 61
    make_due(lead)
    assert process_lead(lead.pk) == "synced"
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED
    assert (lead.attempts, lead.last_error, lead.next_attempt_at) == (0, "", None)
    assert operations() == ["create", "create"]


def test_a_retry_is_queued_to_run_later_on_a_backend_that_can_defer(enqueued: Enqueued) -> None:
    locmem.fail_next(TransientBackendError("timeout"))
    user = make_user()
    assert enqueued.run_all() == ["retrying"]
    lead = lead_of(user)
    [retry] = enqueued.results
    assert retry.args == [lead.pk]
    assert retry.task.run_after == lead.next_attempt_at


def test_a_retry_that_is_not_due_yet_is_not_run_early() -> None:
    locmem.fail_next(TransientBackendError("timeout"))
    lead = lead_of(make_user())
    assert process_lead(lead.pk) == "skipped"
    assert operations() == ["create"]


def test_retry_after_from_the_crm_is_honoured_exactly() -> None:
    locmem.fail_next(TransientBackendError("Too Many Requests", status_code=429, retry_after=120))
    before = timezone.now()
    lead = lead_of(make_user())
    assert lead.next_attempt_at is not None
    assert 119 <= (lead.next_attempt_at - before).total_seconds() <= 121


def test_backoff_grows_exponentially_and_stops_at_the_maximum(configure: Configure) -> None:
    configure(RETRY_BACKOFF_BASE=10, RETRY_BACKOFF_MAX=100)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)]:
        delays = [backoff_seconds(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert backoff_seconds(3, retry_after=7) == 7


def test_transient_errors_give_up_after_max_attempts(configure: Configure) -> None:
    configure(MAX_ATTEMPTS=3)
    locmem.fail_next(TransientBackendError("Bad Gateway", status_code=502), times=3)
    lead = lead_of(make_user())
    for expected_attempts in (1, 2):
        assert (lead.sync_state, lead.attempts) == (SyncState.RETRYING, expected_attempts)
        make_due(lead)
        process_lead(lead.pk)
        lead.refresh_from_db()
    assert lead.sync_state == SyncState.FAILED
    assert lead.attempts == 3
    assert lead.next_attempt_at is None
    assert lead.last_error == "Gave up after 3 attempts: HTTP 502: Bad Gateway"
    assert operations() == ["create"] * 3


def test_a_permanent_error_fails_at_once_with_the_message() -> None:
    locmem.fail_next(PermanentBackendError("EMAIL is not a valid e-mail address", status_code=400))
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.FAILED
    assert lead.attempts == 1
    assert lead.next_attempt_at is None
    assert lead.last_error == "HTTP 400: EMAIL is not a valid e-mail address"
    make_due(lead)
    assert process_lead(lead.pk) == "skipped"
    assert operations() == ["create"]


def test_any_other_exception_from_a_backend_is_transient_with_its_text_kept() -> None:
    locmem.fail_next(ValueError("crm library said no"))
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.RETRYING
    assert lead.last_error == "ValueError: crm library said no"
    assert lead.ledger.get().outcome == LedgerEntry.Outcome.TRANSIENT


def test_quota_exhausted_waits_for_the_reset_without_counting_an_attempt() -> None:
    resets_at = timezone.now() + datetime.timedelta(hours=5)
    locmem.fail_next(
        QuotaExhausted("Daily API quota used up", resets_at=resets_at, status_code=429)
    )
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.RETRYING
    assert lead.attempts == 0
    assert lead.next_attempt_at == resets_at
    assert "quota" in lead.last_error


def test_a_new_change_after_a_permanent_error_is_sent(configure: Configure) -> None:
    locmem.fail_next(PermanentBackendError("EMAIL is not valid", status_code=400))
    user = make_user(email="not-an-email")
    assert lead_of(user).sync_state == SyncState.FAILED
    user.email = "fixed@example.com"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.last_error == ""
    assert locmem.leads[lead.external_id]["email"] == "fixed@example.com"


def test_a_backend_that_returns_no_id_fails_readably(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.NoIdCRM")
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "The backend's sync_lead returned no CRM id."


# -- a backend as the seed README describes it -----------------------------------------------------------


def test_a_plain_class_with_only_sync_lead_and_delete_lead_works_as_backend(
    plain_crm: type[PlainCRM],
) -> None:
    user = make_user(email="plain@example.com")
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.external_id == f"plain-{lead.pk}"
    assert plain_crm.synced == [{"email": "plain@example.com", "status": "NotContacted"}]
    user.delete()
    assert plain_crm.deleted == [f"plain-{lead.pk}"]
    ledger = list(LedgerEntry.objects.filter(lead=lead).order_by("started_at", "id"))
    assert [(e.operation, e.outcome) for e in ledger] == [("sync", "ok"), ("delete", "ok")]


# -- deletes ---------------------------------------------------------------------------------------------


def test_a_lead_deleted_before_it_was_ever_sent_makes_no_call(enqueued: Enqueued) -> None:
    user = make_user()
    lead = lead_of(user)
    user.delete()
    assert enqueued.run_all() == ["skipped"]
    lead.refresh_from_db()
    assert (lead.tombstone, lead.sync_state) == (True, SyncState.DELETED)
    assert locmem.calls == []


def test_a_source_row_deleted_before_its_sync_runs_still_ends_readable(
    configure: Configure, enqueued: Enqueued
) -> None:
    configure(ON_DELETE="keep")
    user = make_user(first_name="Gone", last_name="Before")
    lead = lead_of(user)
    user.delete()
    assert enqueued.run_all() == ["synced"]
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED
    assert str(lead) == "Gone Before"
    assert locmem.leads[lead.external_id]["last_name"] == "Before"


def test_a_failed_crm_delete_is_retried() -> None:
    user = make_user()
    lead = lead_of(user)
    locmem.fail_next(TransientBackendError("timeout"))
    user.delete()
    lead.refresh_from_db()
    assert (lead.sync_state, lead.attempts, lead.tombstone) == (SyncState.DELETING, 1, True)
    make_due(lead)
    assert process_lead(lead.pk) == "deleted"
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.DELETED
    assert operations() == ["create", "delete", "delete"]


# -- claims and concurrent changes -----------------------------------------------------------------------


def test_a_lead_being_synced_is_skipped_by_a_second_worker(enqueued: Enqueued) -> None:
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(
        sync_state=SyncState.SYNCING, claim_token="other-worker", claimed_at=timezone.now()
    )
    assert process_lead(lead.pk) == "skipped"
    assert locmem.calls == []


def test_a_change_made_while_a_worker_is_syncing_is_sent_afterwards(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.DuringSyncBackend")
    user = make_user()

    def change_mid_call() -> None:
        assert lead_of(user).sync_state == SyncState.SYNCING
        user.first_name = "Changed mid-call"
        user.save()

    DuringSyncBackend.during_sync = change_mid_call
    user.last_name = "Second"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert operations() == ["create", "update", "update"]
    assert locmem.leads[lead.external_id]["first_name"] == "Changed mid-call"
    assert lead.synced_fingerprint == lead.fingerprint


def test_a_delete_requested_while_a_worker_is_syncing_runs_afterwards(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.DuringSyncBackend")
    user = make_user()
    DuringSyncBackend.during_sync = lambda: api.delete_from_crm([lead_of(user)])
    user.first_name = "Changed"
    user.save()
    lead = lead_of(user)
    assert operations() == ["create", "update", "delete"]
    assert (lead.sync_state, lead.tombstone) == (SyncState.DELETED, True)


def test_a_permanent_error_does_not_lose_a_change_made_during_the_call(
    configure: Configure,
) -> None:
    configure(BACKEND="tests.doubles.DuringSyncBackend")
    user = make_user()

    def fix_and_fail() -> None:
        user.email = "fixed@example.com"
        user.save()
        locmem.fail_next(PermanentBackendError("EMAIL is not valid", status_code=400))

    DuringSyncBackend.during_sync = fix_and_fail
    user.email = "broken"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert locmem.leads[lead.external_id]["email"] == "fixed@example.com"


# -- bad input -------------------------------------------------------------------------------------------


def test_a_configuration_error_in_the_worker_fails_the_lead_loudly(
    configure: Configure, enqueued: Enqueued
) -> None:
    lead = lead_of(make_user())
    configure(BACKEND="crmify.backends.nowhere.Backend")
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        process_lead(lead.pk)
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error.startswith("Configuration error: CRMIFY['BACKEND']")


def test_a_missing_lead_is_reported_not_raised() -> None:
    assert process_lead(999_999) == "missing"
