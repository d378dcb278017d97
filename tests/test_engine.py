"""The engine end to end: saves reach the CRM after commit, exactly once, with failures retried and visible.

Most tests run with the immediate Tasks backend (the test settings' ``TASK_BACKEND``) in transactional
tests, so a commit really runs the sync; the ``enqueued`` fixture switches to the dummy backend to see what
was queued without running it.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crmify import api, sweeper
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError, QuotaExhausted, TransientBackendError
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.sweeper import sweep
from crmify.tasks import sweep_task
from crmify.worker import backoff_seconds, process_lead
from tests.doubles import DuringSyncBackend, Enqueued, PlainCRM
from tests.factories import lead_of, make_profile, make_subscription, make_user, user_values

pytestmark = pytest.mark.django_db(transaction=True)

Configure = Callable[..., None]


def crmify_queries(queries: CaptureQueriesContext) -> list[str]:
    """The SQL crmify ran: statements on its own table."""
    return [q["sql"] for q in queries.captured_queries if "crmify_lead" in q["sql"]]


def writes(sql: list[str]) -> list[str]:
    return [s for s in sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def make_due(lead: Lead) -> None:
    """Pretend the retry time has come."""
    Lead.objects.filter(pk=lead.pk).update(
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=1)
    )


def operations() -> list[str]:
    return [call.operation for call in locmem.calls]


@pytest.fixture
def plain_crm(configure: Configure) -> Iterator[type[PlainCRM]]:
    configure(BACKEND="tests.doubles.PlainCRM")
    PlainCRM.reset()
    yield PlainCRM
    PlainCRM.reset()


# -- a save reaches the CRM after commit -------------------------------------------------------------


def test_saving_a_new_user_creates_a_lead_and_syncs_it_after_commit() -> None:
    user = make_user(first_name="Zoë", last_name="Brontë 🦄", email="zoe@example.com")
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.status == "NotContacted"
    assert lead.external_id == "1"
    assert lead.last_synced_at is not None
    assert lead.synced_fingerprint == lead.fingerprint
    assert operations() == ["create"]
    assert locmem.leads["1"]["first_name"] == "Zoë"
    assert locmem.leads["1"]["last_name"] == "Brontë 🦄"
    assert locmem.leads["1"]["status"] == "NotContacted"


def test_the_sync_waits_for_the_commit() -> None:
    with transaction.atomic():
        user = make_user()
        assert lead_of(user).sync_state == SyncState.PENDING
        assert locmem.calls == []
    assert operations() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


def test_a_changed_save_updates_the_same_crm_lead() -> None:
    user = make_user()
    user.email = "new@example.com"
    user.save()
    assert operations() == ["create", "update"]
    assert locmem.leads["1"]["email"] == "new@example.com"
    assert lead_of(user).external_id == "1"


def test_unchanged_save_makes_no_api_call_and_no_write() -> None:
    user = make_user()
    with CaptureQueriesContext(connection) as queries:
        user.save()
    crmify_sql = crmify_queries(queries)
    assert len(crmify_sql) == 1  # one read of the lead
    assert writes(crmify_sql) == []
    assert operations() == ["create"]


def test_saving_a_field_the_mapper_does_not_read_sends_nothing() -> None:
    user = make_user()
    user.is_staff = True
    user.last_login = timezone.now()
    user.save()
    assert operations() == ["create"]


def test_a_rolled_back_transaction_sends_nothing_and_leaves_no_lead() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert Lead.objects.count() == 0
    assert locmem.calls == []


def test_a_rolled_back_change_sends_nothing() -> None:
    user = make_user()
    with pytest.raises(RuntimeError), transaction.atomic():
        user.first_name = "Rolled"
        user.save()
        raise RuntimeError("the view failed")
    assert operations() == ["create"]
    assert lead_of(user).first_name == "Ada"


def test_auto_sync_off_tracks_nothing(configure: Configure) -> None:
    configure(AUTO_SYNC=False)
    make_user()
    assert Lead.objects.count() == 0
    assert locmem.calls == []


# -- what is queued (dummy Tasks backend) --------------------------------------------------------------


def test_each_changed_save_queues_exactly_one_task_and_unchanged_saves_none(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    lead = lead_of(user)
    assert enqueued.lead_ids == [lead.pk]
    user.first_name = "Grace"
    user.save()
    assert enqueued.lead_ids == [lead.pk, lead.pk]
    user.save()
    user.save()
    assert enqueued.lead_ids == [lead.pk, lead.pk]
    assert locmem.calls == []  # the dummy backend runs nothing


def test_tasks_go_to_the_configured_queue(configure: Configure, enqueued: Enqueued) -> None:
    make_user()
    assert [r.task.queue_name for r in enqueued.results] == ["default"]


def test_a_rolled_back_transaction_enqueues_nothing(enqueued: Enqueued) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert enqueued.results == []


def test_a_queued_lead_syncs_when_the_worker_runs(enqueued: Enqueued) -> None:
    user = make_user()
    assert lead_of(user).sync_state == SyncState.PENDING
    assert enqueued.run_all() == ["synced"]
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert operations() == ["create"]


def test_two_changes_before_the_worker_runs_send_the_latest_values_once(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    user.first_name = "Grace"
    user.save()
    assert enqueued.run_all() == ["synced", "skipped"]
    assert operations() == ["create"]
    assert locmem.leads["1"]["first_name"] == "Grace"


# -- the database Tasks backend: the task row is part of the site's transaction -------------------------


@pytest.fixture
def database_tasks(configure: Configure) -> None:
    configure(TASK_BACKEND="default")


def queued_tasks() -> list[list[Any]]:
    from django_tasks_db.models import DBTaskResult

    return [row.args_kwargs["args"] for row in DBTaskResult.objects.order_by("enqueued_at")]


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_commits_the_lead_and_its_task_together() -> None:
    with CaptureQueriesContext(connection) as queries:
        user = make_user()
    lead = lead_of(user)
    assert queued_tasks() == [[lead.pk]]
    # One transaction after the user's own insert: the lead and the task share its commit.
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert statements.count("INSERT") == 3
    assert locmem.calls == []  # the worker has not run


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_rollback_leaves_neither_lead_nor_task() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert Lead.objects.count() == 0
    assert queued_tasks() == []


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_queues_one_task_per_changed_save_and_none_when_unchanged() -> None:
    user = make_user()
    user.first_name = "Grace"
    user.save()
    user.save()
    lead_id = lead_of(user).pk
    assert queued_tasks() == [[lead_id], [lead_id]]


@pytest.mark.usefixtures("database_tasks")
def test_a_failed_enqueue_leaves_the_lead_pending_for_the_sweeper_and_the_save_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_tasks_db.backend import DatabaseBackend

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("task table is gone")

    monkeypatch.setattr(DatabaseBackend, "enqueue", broken)
    with transaction.atomic():
        user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    assert lead_of(user).sync_state == SyncState.PENDING
    assert queued_tasks() == []


def test_the_seed_readme_configuration_verbatim_queues_profile_saves_without_network(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed README's Quick Start, pointed at our test app; TASK_BACKEND left at its default, the
    # database backend, as a site that pastes the README gets.
    settings.CRMIFY = {
        "BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "LEAD_MODEL": "tests.testapp.models.UserProfile",
        "LEAD_MODEL_FIELDMAPPER": "tests.testapp.mappers.UserProfileFieldMapper",
    }
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "seed-example-key")
    attempts: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no network on the save path")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    profile = make_profile(user=make_user(first_name="Seed"))
    profile.user.last_name = "Example"
    profile.user.save()
    profile.save()
    lead = lead_of(profile)
    assert (lead.first_name, lead.last_name, lead.status) == ("Seed", "Example", "NotContacted")
    assert lead.sync_state == SyncState.PENDING
    assert queued_tasks() == [[lead.pk], [lead.pk]]
    assert attempts == []


# -- errors: transient, permanent, anything else, quota ----------------------------------------------


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


# -- delete and tombstones ---------------------------------------------------------------------------


def test_deleting_the_source_deletes_the_crm_lead_and_keeps_a_tombstone() -> None:
    user = make_user()
    lead = lead_of(user)
    user.delete()
    lead.refresh_from_db()
    assert lead.tombstone is True
    assert lead.sync_state == SyncState.DELETED
    assert operations() == ["create", "delete"]
    assert locmem.leads == {}
    assert lead.first_name == "Ada"  # the tombstone still says who it was


def test_on_delete_keep_leaves_the_crm_lead_alone(configure: Configure) -> None:
    configure(ON_DELETE="keep")
    user = make_user()
    lead = lead_of(user)
    user.delete()
    lead.refresh_from_db()
    assert lead.tombstone is False
    assert lead.sync_state == SyncState.SYNCED
    assert operations() == ["create"]
    assert "1" in locmem.leads


def test_a_tombstone_is_not_recreated_by_a_later_save_until_resync() -> None:
    user = make_user()
    api.delete_from_crm([lead_of(user)])
    assert operations() == ["create", "delete"]
    user.first_name = "Back"
    user.save()
    lead = lead_of(user)
    assert operations() == ["create", "delete"]
    assert lead.sync_state == SyncState.DELETED
    assert lead.first_name == "Back"  # the values are kept up to date for when staff bring it back
    result = api.resync([lead])
    assert result.queued == 1
    lead.refresh_from_db()
    assert operations() == ["create", "delete", "create"]
    assert lead.tombstone is False
    assert lead.sync_state == SyncState.SYNCED
    assert lead.external_id == "2"
    assert locmem.leads["2"]["first_name"] == "Back"


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


def test_delete_from_crm_with_a_stale_copy_still_deletes_the_crm_record(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    stale = lead_of(user)  # loaded by an admin page while the lead was still pending
    enqueued.run_all()
    assert lead_of(user).external_id == "1"
    assert api.delete_from_crm([stale]).queued == 1
    enqueued.run_all()
    assert operations() == ["create", "delete"]
    assert lead_of(user).sync_state == SyncState.DELETED


def test_resync_with_a_stale_copy_of_a_deleted_lead_creates_a_new_crm_record() -> None:
    user = make_user()
    stale = lead_of(user)
    api.delete_from_crm([lead_of(user)])
    api.resync([stale])
    assert operations() == ["create", "delete", "create"]
    assert lead_of(user).external_id == "2"


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


def test_a_reused_primary_key_updates_the_old_tombstone_without_resurrecting_it() -> None:
    user = make_user(first_name="First")
    pk = user.pk
    user.delete()
    reborn = User.objects.create(pk=pk, **user_values(first_name="Second"))
    lead = lead_of(reborn)
    assert (lead.tombstone, lead.sync_state) == (True, SyncState.DELETED)
    assert lead.first_name == "Second"
    assert operations() == ["create", "delete"]
    assert Lead.objects.count() == 1


# -- status model and related models -----------------------------------------------------------------


@pytest.mark.usefixtures("profile_leads")
def test_a_status_model_save_moves_the_lead_status_and_syncs_it() -> None:
    profile = make_profile()
    lead = lead_of(profile)
    assert locmem.leads[lead.external_id]["status"] == "NotContacted"
    subscription = make_subscription(profile, paid=False)
    assert lead_of(profile).status == "Contacted"
    subscription.paid = True
    subscription.save()
    lead = lead_of(profile)
    assert lead.status == "Converted"
    assert lead.sync_state == SyncState.SYNCED
    assert locmem.leads[lead.external_id]["status"] == "Converted"
    assert operations() == ["create", "update", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_an_unchanged_status_save_sends_nothing() -> None:
    subscription = make_subscription(make_profile(), paid=True)
    subscription.plan = "enterprise"
    subscription.save()
    assert operations() == ["create", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_a_profile_lead_resyncs_when_its_user_changes() -> None:
    profile = make_profile(user=make_user(first_name="Ada"))
    profile.user.first_name = "Augusta"
    profile.user.save()
    lead = lead_of(profile)
    assert lead.first_name == "Augusta"
    assert locmem.leads[lead.external_id]["first_name"] == "Augusta"
    assert operations() == ["create", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_saving_a_user_without_a_profile_makes_no_lead() -> None:
    make_user()
    assert Lead.objects.count() == 0


@pytest.mark.usefixtures("profile_leads")
def test_saves_of_unrelated_models_do_nothing() -> None:
    make_profile()
    with CaptureQueriesContext(connection) as queries:
        Group.objects.create(name="staff")
    assert crmify_queries(queries) == []
    assert operations() == ["create"]


def test_a_user_profile_is_not_a_lead_when_the_lead_model_is_user() -> None:
    user = make_user()
    with CaptureQueriesContext(connection) as queries:
        make_profile(user=user, company="Elsewhere")
    assert crmify_queries(queries) == []
    assert Lead.objects.count() == 1


# -- the public API ----------------------------------------------------------------------------------


def test_mark_converted_sets_the_converted_status_and_syncs() -> None:
    user = make_user()
    api.mark_converted(user)
    lead = lead_of(user)
    assert lead.status == "Converted"
    assert locmem.leads[lead.external_id]["status"] == "Converted"
    assert operations() == ["create", "update"]


def test_mark_converted_uses_the_configured_status(configure: Configure) -> None:
    configure(LEAD_CONVERTED_STATUS="Won")
    user = make_user()
    api.mark_converted(user)
    assert lead_of(user).status == "Won"


def test_mark_dead_sets_the_dead_status_and_syncs() -> None:
    user = make_user()
    api.mark_dead(lead_of(user))
    assert locmem.leads["1"]["status"] == "Disqualified"


def test_mark_converted_on_a_user_without_a_lead_creates_it_converted() -> None:
    with transaction.atomic():
        user = User.objects.create(**user_values())
        Lead.objects.all().delete()
        api.mark_converted(user)
    assert operations() == ["create"]
    assert locmem.leads["1"]["status"] == "Converted"


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (api.mark_converted, "Converted"),
        (api.mark_dead, "Disqualified"),
        (lambda obj: api.set_status(obj, "Contacted"), "Contacted"),
    ],
)
@pytest.mark.parametrize("target", [lambda user: user, lead_of], ids=["row", "lead"])
def test_a_status_set_on_a_lead_whose_mapping_failed_is_kept_and_sent_once_it_maps(
    configure: Configure,
    call: Callable[[Any], Lead],
    status: str,
    target: Callable[[User], Any],
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    call(target(user))
    lead = lead_of(user)
    assert (lead.sync_state, lead.status) == (SyncState.FAILED, status)
    assert lead.last_error.startswith("Mapping failed:")
    assert locmem.calls == []  # nothing blank reached the CRM
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.retry_failed([lead]).queued == 1
    assert operations() == ["create"]
    assert (locmem.leads["1"]["first_name"], locmem.leads["1"]["status"]) == ("Mapped", status)


@pytest.mark.usefixtures("profile_leads")
@pytest.mark.parametrize(
    "call",
    [
        api.mark_converted,
        api.mark_dead,
        lambda row: api.set_status(row, "Contacted"),
        api.sync,
        api.lead_for,
    ],
)
def test_the_api_refuses_a_row_that_is_not_the_lead_model(call: Callable[[Any], Lead]) -> None:
    profile = make_profile()
    with pytest.raises(TypeError, match=r"testapp\.UserProfile .*CRMIFY\['LEAD_MODEL'\].*User"):
        call(profile.user)  # request.user, when the lead is the profile
    assert Lead.objects.get() == lead_of(profile)  # no stray lead for the user
    assert operations() == ["create"]


def test_the_api_refuses_an_unsaved_row() -> None:
    with pytest.raises(ValueError, match="not saved yet"):
        api.mark_converted(User(**user_values()))
    assert Lead.objects.count() == 0


def test_the_status_survives_later_saves() -> None:
    user = make_user()
    api.mark_converted(user)
    user.first_name = "Later"
    user.save()
    assert locmem.leads["1"]["status"] == "Converted"
    assert locmem.leads["1"]["first_name"] == "Later"


def test_retry_failed_queues_failed_leads_with_fresh_attempts(configure: Configure) -> None:
    locmem.fail_next(PermanentBackendError("Unauthorized", status_code=401))
    failed = lead_of(make_user())
    synced = lead_of(make_user())
    assert failed.sync_state == SyncState.FAILED
    result = api.retry_failed([failed, synced])
    assert (result.queued, dict(result.skipped)) == (1, {"not failed": 1})
    assert str(result) == "1 queued; skipped: 1 not failed"
    failed.refresh_from_db()
    assert (failed.sync_state, failed.attempts, failed.last_error) == (SyncState.SYNCED, 0, "")


def test_delete_from_crm_deletes_once_and_reports_the_rest() -> None:
    leads = [lead_of(make_user()), lead_of(make_user())]
    result = api.delete_from_crm(leads)
    assert result.queued == 2
    assert operations() == ["create", "create", "delete", "delete"]
    again = api.delete_from_crm(list(Lead.objects.all()))
    assert (again.queued, dict(again.skipped)) == (0, {"already deleted": 2})


def test_resync_sends_an_unchanged_lead_again() -> None:
    lead = lead_of(make_user())
    assert api.resync([lead]).queued == 1
    assert operations() == ["create", "update"]


def test_resync_and_sync_now_of_a_lead_whose_mapping_failed_map_it_again_first(
    configure: Configure,
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    result = api.resync([lead_of(user)])
    assert (result.queued, dict(result.skipped)) == (0, {"mapping still fails": 1})
    assert api.sync_now(lead_of(user)) == "failed"
    assert lead_of(user).last_error.startswith("Mapping failed:")
    assert locmem.calls == []  # nothing blank reached the CRM
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.resync([lead_of(user)]).queued == 1
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert locmem.leads["1"]["first_name"] == "Mapped"


def test_resync_of_a_lead_deleted_in_the_crm_creates_it_again(insightly: SandboxServer) -> None:
    user = make_user(first_name="Ada")
    old_id = lead_of(user).external_id
    insightly.state.delete_lead(int(old_id))  # someone deleted it in Insightly
    user.first_name = "Augusta"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert "no longer exists in Insightly" in lead.last_error
    assert "Re-sync it to create it again" in lead.last_error  # what staff are told to do: it works
    assert api.resync([lead]).queued == 1
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    (crm,) = insightly.leads()
    assert str(crm["LEAD_ID"]) == lead.external_id != old_id
    assert crm["FIRST_NAME"] == "Augusta"


def test_resync_after_another_permanent_error_keeps_the_crm_id() -> None:
    user = make_user()
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    user.first_name = "Changed"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    api.resync([lead])
    lead = lead_of(user)
    assert (lead.sync_state, lead.external_id) == (SyncState.SYNCED, "1")
    assert operations() == ["create", "update", "update"]
    assert list(locmem.leads) == ["1"]


def test_sync_now_sends_inside_the_request_and_says_what_happened(enqueued: Enqueued) -> None:
    user = make_user()
    enqueued.clear()
    assert api.sync_now(lead_of(user)) == "synced"
    assert operations() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


def test_sync_now_reports_a_failure() -> None:
    lead = lead_of(make_user())
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    assert api.sync_now(lead) == "failed"
    lead.refresh_from_db()
    assert lead.last_error == "HTTP 403: Forbidden"


def test_sync_maps_a_row_now_and_queues_it_if_changed(enqueued: Enqueued) -> None:
    user = make_user()
    enqueued.clear()
    User.objects.filter(pk=user.pk).update(last_name="Byron")
    user.refresh_from_db()
    api.sync(user)
    assert len(enqueued.results) == 1
    api.sync(user)
    assert len(enqueued.results) == 1


# -- claims and concurrent changes -------------------------------------------------------------------


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


# -- the sweeper -------------------------------------------------------------------------------------


def test_sweeper_requeues_pending_leads_whose_enqueue_was_lost(enqueued: Enqueued) -> None:
    lead = lead_of(make_user())
    enqueued.clear()  # the broker lost it
    report = sweep()
    assert report.queued_lost == 0  # too recent: its task may still be on its way
    Lead.objects.filter(pk=lead.pk).update(queued_at=timezone.now() - datetime.timedelta(hours=1))
    report = sweep()
    assert report.queued_lost == 1
    assert enqueued.lead_ids == [lead.pk]
    assert enqueued.run_all() == ["synced"]


def test_sweeper_releases_claims_of_dead_workers_and_syncs_them() -> None:
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(
        sync_state=SyncState.SYNCING,
        fingerprint="changed",
        claim_token="dead-worker",
        claimed_at=timezone.now() - datetime.timedelta(hours=2),
    )
    report = sweep()
    assert report.released_claims == 1
    lead.refresh_from_db()
    assert lead.claim_token == ""
    assert lead.sync_state == SyncState.SYNCED
    assert operations() == ["create", "update"]


def test_sweeper_leaves_fresh_claims_alone() -> None:
    lead = lead_of(make_user())
    Lead.objects.filter(pk=lead.pk).update(
        sync_state=SyncState.SYNCING, claim_token="busy-worker", claimed_at=timezone.now()
    )
    assert sweep().released_claims == 0
    assert Lead.objects.get(pk=lead.pk).claim_token == "busy-worker"


def test_sweeper_runs_due_retries() -> None:
    locmem.fail_next(TransientBackendError("timeout"))
    lead = lead_of(make_user())
    assert sweep().queued_retries == 0
    make_due(lead)
    assert sweep().queued_retries == 1
    assert lead_of(User.objects.get()).sync_state == SyncState.SYNCED


def test_drift_scan_finds_rows_changed_by_queryset_update() -> None:
    user = make_user()
    User.objects.filter(pk=user.pk).update(first_name="Behind")
    assert operations() == ["create"]
    report = sweep(drift=True)
    assert (report.drift_scanned, report.drift_queued) == (1, 1)
    assert locmem.leads["1"]["first_name"] == "Behind"
    assert sweep(drift=True).drift_queued == 0


def test_drift_scan_finds_rows_created_by_bulk_create() -> None:
    User.objects.bulk_create([User(**user_values()) for _ in range(3)])
    assert Lead.objects.count() == 0
    report = sweep(drift=True)
    assert (report.drift_scanned, report.drift_queued) == (3, 3)
    assert Lead.objects.filter(sync_state=SyncState.SYNCED).count() == 3
    assert operations() == ["create"] * 3


def test_drift_scan_does_not_resurrect_tombstones() -> None:
    user = make_user()
    api.delete_from_crm([lead_of(user)])
    User.objects.filter(pk=user.pk).update(first_name="Behind")
    assert sweep(drift=True).drift_queued == 0
    assert operations() == ["create", "delete"]


def test_crmify_sync_command_prints_what_it_did() -> None:
    User.objects.bulk_create([User(**user_values()) for _ in range(2)])
    out = StringIO()
    call_command("crmify_sync", "--drift", stdout=out)
    assert out.getvalue().strip() == (
        "crmify sweep: 0 stale claims released, 0 due retries queued, 0 lost enqueues queued, "
        "0 old ledger entries pruned, 2 rows scanned for drift, 2 changed."
    )
    assert operations() == ["create", "create"]


def test_crmify_sync_without_drift_reports_the_queue_work() -> None:
    out = StringIO()
    call_command("crmify_sync", stdout=out)
    assert out.getvalue().strip() == (
        "crmify sweep: 0 stale claims released, 0 due retries queued, 0 lost enqueues queued, "
        "0 old ledger entries pruned."
    )


def test_the_sweeper_prunes_ledger_entries_older_than_the_retention(configure: Configure) -> None:
    configure(LEDGER_RETENTION_DAYS=30)
    synced = lead_of(make_user())
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    failed = lead_of(make_user())
    now = timezone.now()
    LedgerEntry.objects.update(started_at=now - datetime.timedelta(days=31))
    LedgerEntry.objects.create(  # a call made for no one lead (the backfill's listing)
        lead=None, operation="list", outcome="ok", started_at=now - datetime.timedelta(days=400)
    )
    recent = LedgerEntry.objects.create(
        lead=synced, operation="update", outcome="ok", started_at=now - datetime.timedelta(days=29)
    )
    out = StringIO()
    call_command("crmify_sync", stdout=out)
    assert "2 old ledger entries pruned" in out.getvalue()
    # The recent call stays, and so does the old one that says why a lead is failed.
    assert set(LedgerEntry.objects.values_list("pk", flat=True)) == {
        recent.pk,
        *failed.ledger.values_list("pk", flat=True),
    }
    assert failed.ledger.get().outcome == LedgerEntry.Outcome.PERMANENT


def test_the_sweeper_prunes_in_bounded_batches_and_the_next_sweep_goes_on(
    configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeper, "PRUNE_BATCH", 2)
    monkeypatch.setattr(sweeper, "PRUNE_BATCHES_PER_SWEEP", 2)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            operation="list", outcome="ok", started_at=timezone.now() - datetime.timedelta(days=91)
        )
        for _ in range(5)
    )
    with CaptureQueriesContext(connection) as queries:
        assert sweep().pruned_ledger == 4  # two deletes of two rows: the default 90 days applies
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2
    assert sweep().pruned_ledger == 1
    assert LedgerEntry.objects.count() == 0


def test_ledger_retention_none_keeps_every_entry(configure: Configure) -> None:
    configure(LEDGER_RETENTION_DAYS=None)
    lead_of(make_user())
    LedgerEntry.objects.update(started_at=timezone.now() - datetime.timedelta(days=3650))
    assert sweep().pruned_ledger == 0
    assert LedgerEntry.objects.count() == 1


def test_sweep_task_returns_the_report() -> None:
    make_user()
    result = sweep_task.using(backend="immediate").enqueue(drift=True)
    assert result.return_value["drift_scanned"] == 1
    assert result.return_value["released_claims"] == 0


# -- bad input ---------------------------------------------------------------------------------------


def test_a_mapping_error_leaves_last_error_and_the_save_succeeds(configure: Configure) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error.startswith("Mapping failed: description (from as_dict) got a dict")
    assert locmem.calls == []
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.last_error == ""


def test_a_mapper_that_raises_does_not_break_the_save(configure: Configure) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.BuggyMapper")
    user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Mapping failed: ZeroDivisionError: division by zero"
    assert locmem.calls == []


def test_retry_failed_after_a_mapping_error_remaps_instead_of_sending_blanks(
    configure: Configure,
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    lead = lead_of(user)
    result = api.retry_failed([lead])  # still broken: nothing blank goes out
    assert (result.queued, dict(result.skipped)) == (0, {"mapping still fails": 1})
    assert locmem.calls == []
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.retry_failed([lead_of(user)]).queued == 1
    assert locmem.leads["1"]["first_name"] == "Mapped"


def test_a_too_long_value_is_a_mapping_error_not_a_database_error() -> None:
    user = make_user(first_name="x" * 150)  # fits auth_user (150), fits the lead (255)
    assert lead_of(user).sync_state == SyncState.SYNCED


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


def test_a_task_backend_alias_that_does_not_exist_does_not_break_the_save(
    configure: Configure,
) -> None:
    configure(TASK_BACKEND="nope")
    with transaction.atomic():
        user = make_user()
    assert (
        lead_of(user).sync_state == SyncState.PENDING
    )  # the sweeper queues it once TASKS is fixed
    assert locmem.calls == []


def test_a_missing_lead_is_reported_not_raised() -> None:
    assert process_lead(999_999) == "missing"


# -- the ledger --------------------------------------------------------------------------------------


def test_the_ledger_records_each_call_with_operation_outcome_and_duration() -> None:
    user = make_user()
    locmem.fail_next(TransientBackendError("timeout"))
    user.first_name = "Two"
    user.save()
    lead = lead_of(user)
    entries = list(lead.ledger.order_by("started_at", "id"))
    assert [(e.operation, e.outcome) for e in entries] == [
        ("create", "ok"),
        ("update", "transient"),
    ]
    assert entries[1].error == "timeout"
    assert all(e.duration_ms >= 0 and e.started_at for e in entries)


def test_the_ledger_measures_calls_of_a_backend_that_reports_nothing(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.SlowPlainCRM")
    lead = lead_of(make_user())
    entry = lead.ledger.get()
    assert (entry.operation, entry.outcome) == ("sync", "ok")
    assert entry.duration_ms >= 30


def test_the_ledger_and_the_lead_never_contain_the_api_key(
    configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", secret)
    configure(BACKEND="tests.doubles.ExplodingCRM")
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.RETRYING
    assert "ConnectionResetError: peer reset the connection" in lead.last_error
    assert secret not in lead.last_error
    for entry in LedgerEntry.objects.all():
        for text in (entry.error, entry.request_summary, entry.response_summary):
            assert secret not in text
    assert LedgerEntry.objects.filter(error__contains="peer reset").count() == 1


def test_the_ledger_outlives_its_lead() -> None:
    lead = lead_of(make_user())
    lead.delete()
    entry = LedgerEntry.objects.get()
    assert entry.lead is None
    assert entry.operation == "create"


def test_a_lead_reads_well_in_the_admin() -> None:
    assert str(lead_of(make_user(first_name="Ada", last_name="Lovelace"))) == "Ada Lovelace"
    assert (
        str(lead_of(make_user(first_name="", last_name="", email="x@example.com")))
        == "x@example.com"
    )
