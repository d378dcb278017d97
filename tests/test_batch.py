"""Batch calls: a backend with ``supports_batch`` gets the backfill's leads and any burst of queued leads
in calls of up to ``max_batch_size`` leads, each lead finished by its own result (synced, retried, failed
with the CRM's message), with one ledger row per lead per call, linked by the batch's id.

The locmem CRM with batch calls (``LocmemBatchBackend``) stands in for the CRM; HubSpot's batch calls
over real HTTP are in ``tests/test_hubspot_batch.py``. A backend without batch calls keeps one call per
lead (the rest of the suite runs on one).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from crmify import backfill
from crmify.backends import locmem
from crmify.backfill import BackfillOptions
from crmify.exceptions import PermanentBackendError, TransientBackendError
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.worker import process_lead, process_leads
from tests.conftest import postgres_pass_only
from tests.doubles import Enqueued
from tests.engine_helpers import Configure, make_due, operations
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)

BATCH_BACKEND = "crmify.backends.locmem.LocmemBatchBackend"


@pytest.fixture
def batch_crm(configure: Configure) -> Callable[[int], None]:
    """Switch to the locmem CRM with batch calls of at most ``size`` leads."""

    def apply(size: int = 100) -> None:
        configure(BACKEND=BATCH_BACKEND, BACKEND_OPTIONS={"MAX_BATCH_SIZE": size})

    apply()
    return apply


def waiting_users(enqueued: Enqueued, count: int) -> list[User]:
    """``count`` users saved (their leads pending, one task queued each), nothing sent yet."""
    users = [make_user(email=f"user{n}@example.com") for n in range(count)]
    assert len(enqueued.lead_ids) == count
    return users


def batch_calls() -> list[list[str]]:
    """The e-mails each batch call carried, in order."""
    return [call.payload["emails"] for call in locmem.calls if call.operation == "batch"]


def states() -> Counter[str]:
    return Counter(Lead.objects.values_list("sync_state", flat=True))


# -- the backfill ---------------------------------------------------------------------------------------


def test_the_backfill_sends_its_leads_in_batch_calls_of_max_batch_size(
    batch_crm: Callable[[int], None], configure: Configure, django_capture_on_commit_callbacks: Any
) -> None:
    configure(AUTO_SYNC=False)
    for n in range(7):
        make_user(email=f"old{n}@example.com")
    batch_crm(3)

    report = backfill.plan(BackfillOptions())
    assert report.to_create == 7
    assert report.api_calls == 1 + 3  # the listing, then ceil(7 / 3) batch calls
    with django_capture_on_commit_callbacks(execute=True):
        backfill.start(BackfillOptions())

    assert operations() == ["list", "list", "batch", "batch", "batch"]  # the dry run's, the run's
    assert [len(emails) for emails in batch_calls()] == [3, 3, 1]
    assert states() == {SyncState.SYNCED: 7}
    # Each e-mail once in the CRM, each lead holding its own record's id.
    assert sorted(payload["email"] for payload in locmem.leads.values()) == sorted(
        f"old{n}@example.com" for n in range(7)
    )
    for lead in Lead.objects.all():
        assert locmem.leads[lead.external_id]["email"] == lead.email


def test_a_backend_without_batch_calls_keeps_one_call_per_lead(
    configure: Configure, django_capture_on_commit_callbacks: Any
) -> None:
    configure(AUTO_SYNC=False)
    for n in range(4):
        make_user(email=f"old{n}@example.com")
    assert backfill.plan(BackfillOptions()).api_calls == 1 + 4
    with django_capture_on_commit_callbacks(execute=True):
        backfill.start(BackfillOptions())
    assert operations() == ["list", "list", "create", "create", "create", "create"]


# -- a burst of queued leads ----------------------------------------------------------------------------


def test_a_burst_of_queued_leads_goes_in_one_batch_call_and_each_task_finds_its_lead_done(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    waiting_users(enqueued, 5)
    outcomes = [process_lead(lead_id, burst=True) for lead_id in enqueued.lead_ids]

    assert outcomes == ["synced", "skipped", "skipped", "skipped", "skipped"]
    assert batch_calls() == [[f"user{n}@example.com" for n in range(5)]]
    assert operations() == ["batch"]
    assert states() == {SyncState.SYNCED: 5}


def test_a_burst_takes_at_most_max_batch_size_leads_and_the_next_task_takes_the_rest(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    batch_crm(2)
    waiting_users(enqueued, 5)
    outcomes = [process_lead(lead_id, burst=True) for lead_id in enqueued.lead_ids]

    assert outcomes == ["synced", "skipped", "synced", "skipped", "synced"]
    assert [len(emails) for emails in batch_calls()] == [2, 2]
    assert operations() == ["batch", "batch", "create"]  # the last lead found none to go with
    assert states() == {SyncState.SYNCED: 5}


def test_a_lead_alone_is_sent_by_sync_lead_and_staff_sync_now_sends_only_its_lead(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    first, second = waiting_users(enqueued, 2)
    # "Sync now" (no burst) sends its lead alone, with the single-lead call.
    assert process_lead(lead_of(first).pk) == "synced"
    assert operations() == ["create"]
    # A burst that finds no other lead waiting sends its lead alone too: a batch of one costs the same.
    assert process_lead(lead_of(second).pk, burst=True) == "synced"
    assert operations() == ["create", "create"]


def test_a_burst_leaves_out_leads_held_by_another_worker_and_retries_not_due(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    users = waiting_users(enqueued, 4)
    held = lead_of(users[1])
    token = Lead.objects.filter(pk=held.pk).claim_for_sync()
    assert token is not None
    locmem.fail_next(TransientBackendError("timeout"))
    assert process_lead(lead_of(users[2]).pk) == "retrying"  # its retry is not due yet
    locmem.reset()

    assert process_lead(lead_of(users[0]).pk, burst=True) == "synced"
    assert batch_calls() == [["user0@example.com", "user3@example.com"]]
    assert Lead.objects.get(pk=held.pk).sync_state == SyncState.SYNCING  # still its worker's
    assert lead_of(users[2]).sync_state == SyncState.RETRYING


@pytest.fixture
def _slow_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch call takes long enough for the other workers' claims to meet it."""
    import time

    original = locmem.LocmemBatchBackend.sync_leads

    def slow(self: locmem.LocmemBatchBackend, leads: Any) -> Any:
        time.sleep(0.2)
        return original(self, leads)

    monkeypatch.setattr(locmem.LocmemBatchBackend, "sync_leads", slow)


def _concurrent_bursts_send_each_lead_exactly_once(run_together: Callable[..., list[Any]]) -> None:
    leads = [lead.pk for lead in Lead.objects.order_by("pk")]

    def drain(index: int) -> Counter[str]:
        # Each worker runs every lead's task, in an order of its own, as workers sharing a queue would.
        start = index * len(leads) // 4
        order = leads[start:] + leads[:start]
        return Counter(process_lead(lead_id, burst=True) for lead_id in order)

    results = run_together(4, drain)
    assert all(isinstance(result, Counter) for result in results), results
    # A task that finds its lead sent by another's batch skips it: as many syncs as calls.
    assert sum(result["synced"] for result in results) == len(locmem.calls)
    alone = [call.payload["email"] for call in locmem.calls if call.operation == "create"]
    sent = [email for emails in batch_calls() for email in emails] + alone
    assert sorted(sent) == sorted(Lead.objects.values_list("email", flat=True))  # once each
    assert states() == {SyncState.SYNCED: len(leads)}
    assert len(locmem.leads) == len(leads)


@pytest.mark.usefixtures("_slow_batches")
def test_concurrent_bursts_on_postgresql_claim_no_lead_twice(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    postgres_pass_only()
    from tests.test_postgres import run_together

    batch_crm(10)
    waiting_users(enqueued, 40)
    assert connection.vendor == "postgresql"
    _concurrent_bursts_send_each_lead_exactly_once(run_together)
    # Four workers, ten leads each at most: the 40 leads took at least four calls, none of them twice.
    assert len(batch_calls()) >= 4


# -- each lead's own outcome ----------------------------------------------------------------------------


def test_a_partial_failure_fails_only_the_input_the_crm_names_with_its_own_message(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    users = waiting_users(enqueued, 3)
    message = 'Property values were not valid: [{"error":"INVALID_EMAIL","name":"email"}]'
    locmem.reject("user1@example.com", PermanentBackendError(message, status_code=400))

    assert process_lead(lead_of(users[0]).pk, burst=True) == "synced"

    good, bad, other = (lead_of(user) for user in users)
    assert (bad.sync_state, bad.external_id) == (SyncState.FAILED, "")
    assert bad.last_error == f"HTTP 400: {message}"
    assert (good.sync_state, other.sync_state) == (SyncState.SYNCED, SyncState.SYNCED)
    assert len(locmem.leads) == 2
    rows = {row.lead_id: row for row in LedgerEntry.objects.all()}
    assert (rows[bad.pk].outcome, rows[bad.pk].error, rows[bad.pk].http_status) == (
        LedgerEntry.Outcome.PERMANENT,
        f"HTTP 400: {message}",
        400,
    )
    assert rows[good.pk].outcome == rows[other.pk].outcome == LedgerEntry.Outcome.OK


def test_a_lead_refused_with_a_transient_error_retries_alone(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    users = waiting_users(enqueued, 3)
    locmem.reject("user2@example.com", TransientBackendError("Internal error", status_code=500))
    process_lead(lead_of(users[0]).pk, burst=True)
    retried = lead_of(users[2])
    assert (retried.sync_state, retried.attempts) == (SyncState.RETRYING, 1)
    assert retried.last_error == "HTTP 500: Internal error"
    assert states() == {SyncState.SYNCED: 2, SyncState.RETRYING: 1}

    make_due(retried)
    assert process_lead(retried.pk, burst=True) == "synced"
    assert len(locmem.leads) == 3


def test_a_failed_batch_call_retries_each_of_its_leads(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    users = waiting_users(enqueued, 4)
    enqueued.clear()
    locmem.fail_next(TransientBackendError("Service Unavailable", status_code=503))

    assert process_lead(lead_of(users[0]).pk, burst=True) == "retrying"

    leads = [lead_of(user) for user in users]
    assert {(lead.sync_state, lead.attempts) for lead in leads} == {(SyncState.RETRYING, 1)}
    assert {lead.last_error for lead in leads} == {"HTTP 503: Service Unavailable"}
    # Each lead's retry is queued for it; the first to run takes the others with it again.
    assert sorted(enqueued.lead_ids) == sorted(lead.pk for lead in leads)
    for lead in leads:
        make_due(lead)
    outcomes = [process_lead(lead_id, burst=True) for lead_id in sorted(enqueued.lead_ids)]
    assert outcomes == ["synced", "skipped", "skipped", "skipped"]
    assert [len(emails) for emails in batch_calls()] == [4, 4]
    assert states() == {SyncState.SYNCED: 4}
    assert len(locmem.leads) == 4


def test_a_lead_changed_while_its_batch_was_sent_goes_again(
    batch_crm: Callable[[int], None], enqueued: Enqueued, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = waiting_users(enqueued, 2)
    original = locmem.LocmemBatchBackend.sync_leads

    def change_during_call(self: locmem.LocmemBatchBackend, leads: Any) -> Any:
        monkeypatch.setattr(locmem.LocmemBatchBackend, "sync_leads", original)
        users[1].first_name = "Changed"
        users[1].save()
        return original(self, leads)

    monkeypatch.setattr(locmem.LocmemBatchBackend, "sync_leads", change_during_call)
    process_lead(lead_of(users[0]).pk, burst=True)
    assert lead_of(users[1]).sync_state == SyncState.PENDING
    assert process_lead(lead_of(users[1]).pk, burst=True) == "synced"
    assert locmem.leads[lead_of(users[1]).external_id]["first_name"] == "Changed"


def test_unchanged_leads_of_a_group_are_not_sent(
    batch_crm: Callable[[int], None], enqueued: Enqueued
) -> None:
    users = waiting_users(enqueued, 3)
    process_lead(lead_of(users[0]).pk, burst=True)
    # Pending again with nothing changed (a re-queue): the CRM already has what they hold.
    Lead.objects.all().mark_changed()
    outcomes = process_leads([lead_of(user).pk for user in users])
    assert outcomes == {"unchanged": 3}
    assert len(batch_calls()) == 1
    assert states() == {SyncState.SYNCED: 3}


# -- the ledger -----------------------------------------------------------------------------------------


def test_the_ledger_has_one_row_per_lead_per_batch_call_linked_by_the_batch(
    batch_crm: Callable[[int], None], enqueued: Enqueued, client: Client
) -> None:
    users = waiting_users(enqueued, 3)
    locmem.fail_next(TransientBackendError("timeout"))
    process_lead(lead_of(users[0]).pk, burst=True)
    for lead in Lead.objects.all():
        make_due(lead)
    process_lead(lead_of(users[0]).pk, burst=True)

    rows = LedgerEntry.objects.order_by("started_at", "lead_id")
    assert [(row.operation, row.outcome) for row in rows] == [
        ("batch", "transient"),
    ] * 3 + [("batch", "ok")] * 3
    batches = Counter(row.batch for row in rows)
    assert len(batches) == 2 and set(batches.values()) == {3}
    assert all(isinstance(batch, uuid.UUID) for batch in batches)
    lead = lead_of(users[1])
    assert {row.batch for row in lead.ledger.all()} == set(batches)

    # The lead's page shows which batch each call was and how many leads it carried.
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "pw"))
    page = client.get(reverse("admin:crmify_lead_change", args=[lead.pk]))
    html = page.content.decode()
    for batch in batches:
        assert str(batch)[:8] in html
    assert "batch of 3 leads" in html


def test_a_single_call_has_no_batch_in_the_ledger(enqueued: Enqueued) -> None:
    (user,) = waiting_users(enqueued, 1)
    process_lead(lead_of(user).pk, burst=True)
    assert list(LedgerEntry.objects.values_list("operation", "batch")) == [("create", None)]
