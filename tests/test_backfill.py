"""The backfill: its dry run against the sandbox over real HTTP, runs through a real ``db_worker`` process,
a worker killed mid-chunk and resumed, running twice, the row filters and the command."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from crmify import backfill
from crmify.backends import locmem
from crmify.backfill import BackfillOptions, BackfillOptionsError
from crmify.backfill_report import run_progress
from crmify.models import BackfillRun, Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.tracking import track
from crmify.worker import process_lead
from tests.conftest import FAST_SANDBOX, calls, crmify_for
from tests.factories import lead_of, make_user
from tests.reliability.processes import finish, start_db_worker

pytestmark = pytest.mark.django_db


def seed_crm(sandbox: SandboxServer, *emails: str) -> None:
    for email in emails:
        sandbox.add_lead({"FIRST_NAME": "Already", "LAST_NAME": "There", "EMAIL": email})


def run_here(options: BackfillOptions, capture: Any) -> BackfillRun:
    """Start a run and do every chunk and every sync in this process (the immediate Tasks backend)."""
    with capture(execute=True):
        run = backfill.start(options)
    run.refresh_from_db()
    return run


# -- the dry run -------------------------------------------------------------------------------------


def test_dry_run_reports_every_figure_and_only_lists_the_crm(crm: SandboxServer) -> None:
    new = [make_user() for _ in range(3)]
    unchanged = [make_user() for _ in range(2)]
    changed, deleted = make_user(), make_user()
    for user in (*unchanged, changed, deleted):
        track(user)  # leads recorded before; their syncs never ran (no commit in this test)
    User.objects.filter(pk=changed.pk).update(first_name="Changed")  # behind the signals' back
    Lead.objects.filter(pk=lead_of(deleted).pk).update(tombstone=True)
    # Two of the new users' e-mails are in the CRM already, one of the changed one's too, among
    # 1,000 others: 1,003 CRM leads, three listing calls of 500.
    seed_crm(crm, new[0].email, new[1].email.upper(), changed.email)
    seed_crm(crm, *(f"other{n}@example.org" for n in range(1000)))
    leads_before = list(Lead.objects.values_list("pk", "fingerprint", "sync_state", "external_id"))

    report = backfill.plan(BackfillOptions(batch_size=3))

    assert (report.scanned, report.to_create, report.to_update) == (7, 3, 1)
    assert (report.unchanged, report.skipped_tombstones, report.failed) == (2, 1, 0)
    assert (report.in_crm, report.crm_leads, report.listing_calls) == (3, 1003, 3)
    assert report.api_calls == 3 + 3 + 1  # listing, then one call per lead to send
    assert (report.daily_limit, report.quota_remaining) == (40_000, 40_000 - 3)
    # The backfill's share of each day: LIVE_QUOTA_SHARE (10%) is kept for live sign-ups and changes.
    assert (report.live_share, report.backfill_calls_per_day) == (0.1, 36_000)
    assert report.quota_days == pytest.approx(7 / 36_000)
    assert report.quota_windows == 1
    assert report.requests_per_second == 1000
    assert report.estimated_seconds == pytest.approx(7 / 1000)
    # Nothing written, nothing queued, only the listing sent.
    assert list(Lead.objects.values_list("pk", "fingerprint", "sync_state", "external_id")) == (
        leads_before
    )
    assert not BackfillRun.objects.exists()
    assert not LedgerEntry.objects.exists()
    assert crm.stats()["requests"] == {"GET /Leads": {"200": 3}}


def test_days_of_quota_come_from_the_daily_quota_option(crm: SandboxServer, settings: Any) -> None:
    for _ in range(5):
        make_user()
    options = settings.CRMIFY["BACKEND_OPTIONS"]
    settings.CRMIFY = {**settings.CRMIFY, "BACKEND_OPTIONS": {**options, "DAILY_QUOTA": 4}}
    report = backfill.plan(BackfillOptions())
    assert report.api_calls == 6
    # 4 calls a day, one of them (10%, rounded up) kept for live changes: 3 a day for the run.
    assert report.quota_days == pytest.approx(2.0)
    assert report.quota_windows == 2
    assert dict(report.rows())["Days of quota needed"] == (
        "2.00 (the run pauses while the quota resets; it finishes on day 2 counting today); "
        "3 calls a day, 10% of the quota kept for live sign-ups and changes"
    )


def test_the_dry_run_forecasts_days_with_the_share_kept_for_live_changes(
    crm: SandboxServer, settings: Any
) -> None:
    for _ in range(9):
        make_user()
    options = settings.CRMIFY["BACKEND_OPTIONS"]
    settings.CRMIFY = {
        **settings.CRMIFY,
        "LIVE_QUOTA_SHARE": 0.5,
        "BACKEND_OPTIONS": {**options, "DAILY_QUOTA": 4},
    }
    report = backfill.plan(BackfillOptions())
    assert report.api_calls == 10  # the listing and nine leads
    assert (report.backfill_calls_per_day, report.quota_days, report.quota_windows) == (2, 5.0, 5)
    settings.CRMIFY = {**settings.CRMIFY, "LIVE_QUOTA_SHARE": 0}
    report = backfill.plan(BackfillOptions())
    assert (report.backfill_calls_per_day, report.quota_days, report.quota_windows) == (4, 2.5, 3)
    assert dict(report.rows())["Days of quota needed"].startswith("2.50 (the run pauses")


# -- runs --------------------------------------------------------------------------------------------


def test_a_run_adopts_crm_matches_and_makes_one_call_per_lead(
    crm: SandboxServer, django_capture_on_commit_callbacks: Any
) -> None:
    users = [make_user() for _ in range(7)]
    seed_crm(crm, users[0].email, users[1].email)

    run = run_here(BackfillOptions(batch_size=3), django_capture_on_commit_callbacks)

    assert run.state == BackfillRun.State.FINISHED, run.last_error
    assert (run.scanned, run.created, run.updated, run.unchanged, run.failed) == (7, 7, 0, 0, 0)
    assert run.checkpoint == str(users[-1].pk)
    assert run.started_at and run.finished_at and run.listing_calls == 1
    for user in users:
        lead = lead_of(user)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
    # One CRM lead per e-mail: the two already there were updated in place, not created again.
    assert Counter(lead["EMAIL"] for lead in crm.leads()) == {u.email: 1 for u in users}
    assert calls(crm, "POST /Leads") == 5
    assert calls(crm, "PUT /Leads") == 2
    assert calls(crm, "GET /Leads/Search") == 0  # the listing replaced every lookup
    lead_calls = calls(crm, "POST /Leads") + calls(crm, "PUT /Leads") + calls(crm, "GET /Leads")
    assert lead_calls == 7 + 1
    # The listing is in the ledger like every other CRM call.
    assert LedgerEntry.objects.filter(lead=None, operation="list").count() == 1


def test_running_twice_creates_nothing_the_second_time(
    crm: SandboxServer, django_capture_on_commit_callbacks: Any
) -> None:
    users = [make_user() for _ in range(5)]
    run_here(BackfillOptions(batch_size=2), django_capture_on_commit_callbacks)
    posts = calls(crm, "POST /Leads")
    leads = Lead.objects.count()

    second = run_here(BackfillOptions(batch_size=2), django_capture_on_commit_callbacks)

    assert (second.scanned, second.unchanged, second.created, second.updated) == (5, 5, 0, 0)
    assert calls(crm, "POST /Leads") == posts == 5
    assert calls(crm, "PUT /Leads") == 0
    assert Lead.objects.count() == leads == len(users)
    assert len(crm.leads()) == 5


def test_a_changed_row_is_updated_and_a_tombstone_left_alone(
    quiet: None, django_capture_on_commit_callbacks: Any
) -> None:
    changed, deleted, same = make_user(), make_user(), make_user()
    run_here(BackfillOptions(), django_capture_on_commit_callbacks)
    User.objects.filter(pk=changed.pk).update(last_name="Byron")
    User.objects.filter(pk=deleted.pk).update(last_name="Gone")
    Lead.objects.filter(pk=lead_of(deleted).pk).update(tombstone=True)
    locmem.calls.clear()

    run = run_here(BackfillOptions(), django_capture_on_commit_callbacks)

    assert (run.updated, run.skipped_tombstones, run.unchanged) == (1, 1, 1)
    assert [call.operation for call in locmem.calls] == ["list", "update"]
    assert lead_of(changed).last_name == "Byron"
    assert lead_of(changed).sync_state == SyncState.SYNCED
    assert lead_of(deleted).last_name == "Lovelace"
    assert lead_of(same).sync_state == SyncState.SYNCED


def test_a_row_whose_mapping_fails_becomes_a_failed_lead(
    quiet: None, configure: Callable[..., None], django_capture_on_commit_callbacks: Any
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.testapp.mappers.PickyUserMapper")
    make_user()
    bad = make_user(email="broken@example.com")
    assert backfill.plan(BackfillOptions()).failed == 1
    run = run_here(BackfillOptions(), django_capture_on_commit_callbacks)
    assert (run.created, run.failed, run.state) == (1, 1, BackfillRun.State.FINISHED)
    lead = lead_of(bad)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Mapping failed: this user cannot be mapped"


def test_only_missing_leaves_rows_with_a_lead_alone(
    quiet: None, django_capture_on_commit_callbacks: Any
) -> None:
    tracked, missing = make_user(), make_user()
    track(tracked)
    User.objects.filter(pk=tracked.pk).update(first_name="Changed")

    assert backfill.plan(BackfillOptions(only_missing=True)).scanned == 1
    run = run_here(BackfillOptions(only_missing=True), django_capture_on_commit_callbacks)

    assert (run.total_estimate, run.scanned, run.created, run.updated) == (1, 1, 1, 0)
    assert lead_of(tracked).first_name == "Ada"
    assert lead_of(missing).sync_state == SyncState.SYNCED


def test_joined_filters_select_by_date_joined(quiet: None) -> None:
    for year in (2019, 2020, 2021, 2022):
        make_user(date_joined=datetime(year, 6, 1, tzinfo=UTC))
    after = BackfillOptions(joined_after=date(2020, 6, 1))
    before = BackfillOptions(joined_before=date(2021, 6, 1))
    between = BackfillOptions(joined_after=date(2020, 1, 1), joined_before=date(2022, 1, 1))
    assert [backfill.plan(o).scanned for o in (after, before, between)] == [3, 2, 2]


def test_joined_filters_need_a_date_joined_field(profile_leads: None) -> None:
    with pytest.raises(BackfillOptionsError, match="no date_joined"):
        backfill.plan(BackfillOptions(joined_after=date(2020, 1, 1)))
    with pytest.raises(CommandError, match="UserProfile has no date_joined"):
        call_command("crmify_backfill", "--dry-run", "--joined-before=2020-01-01")


def test_cancel_stops_after_the_chunk_and_resume_goes_on(
    quiet: None, django_capture_on_commit_callbacks: Any
) -> None:
    users = [make_user() for _ in range(5)]
    run = backfill.start(BackfillOptions(batch_size=2), enqueue=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert backfill.run_chunk(run.pk, chain=False).more
    assert backfill.cancel(run)
    assert not backfill.run_chunk(run.pk, chain=False).more
    run.refresh_from_db()
    assert (run.state, run.scanned, run.checkpoint) == ("cancelled", 2, str(users[1].pk))
    assert Lead.objects.count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        assert backfill.resume(run)
    run.refresh_from_db()
    assert (run.state, run.scanned, run.created) == ("finished", 5, 5)
    assert not backfill.resume(run)  # a finished run stays finished


def test_a_chunk_task_queued_before_a_resume_does_nothing(quiet: None) -> None:
    for _ in range(3):
        make_user()
    run = backfill.start(BackfillOptions(batch_size=2), enqueue=False)
    backfill.run_chunk(run.pk, chain=False)
    stale = backfill.run_chunks(run.pk, checkpoint="")
    run.refresh_from_db()
    assert (stale.scanned, run.scanned) == (0, 2)


# -- the db_worker process ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_through_db_worker_syncs_every_lead_once(
    crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="default")
    users = [make_user() for _ in range(23)]
    seed_crm(crm, users[3].email, users[17].email)

    run = backfill.start(BackfillOptions(batch_size=10))
    finish(start_db_worker(crmify_for(crm, task_backend="default", **FAST_SANDBOX)))

    run.refresh_from_db()
    assert run.state == BackfillRun.State.FINISHED, run.last_error
    assert (run.scanned, run.created, run.failed) == (23, 23, 0)
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.SYNCED}
    assert Counter(lead["EMAIL"] for lead in crm.leads()) == {u.email: 1 for u in users}
    assert (calls(crm, "POST /Leads"), calls(crm, "PUT /Leads")) == (21, 2)
    assert calls(crm, "GET /Leads/Search") == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_chunk_resumes_from_its_checkpoint(
    crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="default")
    users = [make_user() for _ in range(14)]
    users.append(make_user(email="crash@example.com"))  # the 15th row: in the second chunk
    users += [make_user() for _ in range(10)]
    worker_settings = crmify_for(crm, task_backend="default", **FAST_SANDBOX)

    run = backfill.start(BackfillOptions(batch_size=10))
    doomed = start_db_worker(
        {**worker_settings, "LEAD_MODEL_FIELDMAPPER": "tests.testapp.mappers.CrashingUserMapper"}
    )
    doomed.communicate(timeout=120)
    assert doomed.returncode == -9  # SIGKILL, inside the second chunk's transaction

    run.refresh_from_db()
    assert (run.state, run.scanned, run.checkpoint) == ("running", 10, str(users[9].pk))
    assert Lead.objects.count() == 10  # nothing of the second chunk was committed

    assert backfill.resume(run)
    finish(start_db_worker(worker_settings))

    run.refresh_from_db()
    assert run.state == BackfillRun.State.FINISHED, run.last_error
    assert (run.scanned, run.created, run.updated, run.unchanged) == (25, 25, 0, 0)
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.SYNCED}
    assert Counter(lead["EMAIL"] for lead in crm.leads()) == {u.email: 1 for u in users}
    assert calls(crm, "POST /Leads") == 25


# -- the command -------------------------------------------------------------------------------------


def test_command_dry_run_prints_the_report(crm: SandboxServer) -> None:
    for _ in range(4):
        make_user()
    out = StringIO()
    call_command("crmify_backfill", "--dry-run", stdout=out)
    text = out.getvalue()
    assert re.search(r"\n  Leads to create: +4\n", text)
    assert re.search(r"\n  API calls the run will make: +5\n", text)
    assert re.search(r"\n  CRM quota remaining today: +39,999 of 40,000\n", text)
    assert re.search(
        r"\n  Days of quota needed: +under 0.01; 36,000 calls a day, 10% of the quota kept", text
    )
    assert re.search(r"\n  Estimated duration: +1s at 1000 requests/s\n", text)
    assert not BackfillRun.objects.exists()


@pytest.mark.django_db(
    transaction=True
)  # each chunk's commit hands its leads to the (immediate) worker
def test_command_wait_shows_a_progress_bar_and_the_counts(quiet: None) -> None:
    for _ in range(5):
        make_user()
    out = StringIO()
    call_command("crmify_backfill", "--wait", "--batch-size=2", stdout=out)
    text = out.getvalue()
    assert re.search(r"Rows mapped +━+ 5/5 Finished", text)
    assert re.search(r"Leads delivered +━+ 5/5 synced 5, failed 0, waiting 0", text)
    assert "finished: 5 scanned, 5 created, 0 updated, 0 unchanged" in text
    assert "delivered to the CRM: 5 synced, 0 failed, 0 waiting." in text
    assert BackfillRun.objects.get().state == BackfillRun.State.FINISHED


def test_command_resume_of_an_unknown_run_is_an_error(quiet: None) -> None:
    with pytest.raises(CommandError, match="no backfill run 404"):
        call_command("crmify_backfill", "--resume=404")


# -- shared e-mails and the daily quota -----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 100], ids=["across chunks", "in one chunk"])
def test_users_sharing_an_email_make_one_crm_lead(
    crm: SandboxServer, django_capture_on_commit_callbacks: Any, batch_size: int
) -> None:
    twins = [make_user(email="twin@example.com"), make_user(email="Twin@Example.com")]
    make_user(email="single@example.com")
    report = backfill.plan(BackfillOptions(batch_size=batch_size))
    assert report.lookups == 1  # the second twin is looked up before it is sent
    assert report.api_calls == 1 + 3 + 1  # listing, three sends, one lookup

    run = run_here(BackfillOptions(batch_size=batch_size), django_capture_on_commit_callbacks)

    assert run.created == 3
    crm_emails = Counter(lead["EMAIL"].casefold() for lead in crm.leads())
    assert crm_emails == {"twin@example.com": 1, "single@example.com": 1}
    first, second = (lead_of(user) for user in twins)
    assert first.sync_state == second.sync_state == SyncState.SYNCED
    assert first.external_id == second.external_id != ""
    assert calls(crm, "POST /Leads") == 2


def test_a_listing_stopped_by_the_quota_waits_for_the_reset(
    crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="default")  # the database Tasks backend: it can run a chunk later
    from django_tasks_db.models import DBTaskResult

    for _ in range(3):
        make_user()
    crm.set_faults(daily_quota=0, quota_window_seconds=600)
    run = backfill.start(BackfillOptions())

    result = backfill.run_chunk(run.pk, run.checkpoint)

    run.refresh_from_db()
    assert result.waiting_until is not None and result.more
    assert run.state == BackfillRun.State.RUNNING and run.scanned == 0
    assert run.last_error.startswith("Waiting for the CRM's daily quota: the run goes on at ")
    later = DBTaskResult.objects.order_by("enqueued_at").last()
    assert later is not None and later.run_after is not None
    assert later.args_kwargs["args"] == [run.pk, ""]
    assert abs((later.run_after - result.waiting_until).total_seconds()) < 1
    calls_before = crm.stats()["total"]

    crm.set_faults(daily_quota=100)  # the quota resets...
    from django.core.cache import cache

    cache.clear()  # ...and the time crmify stopped calls until has passed
    backfill.run_chunk(run.pk, run.checkpoint)

    run.refresh_from_db()
    assert run.state == BackfillRun.State.FINISHED and run.created == 3 and run.last_error == ""
    assert crm.stats()["total"] > calls_before


def test_a_quota_stop_fails_an_inline_run_with_the_reason(
    crm: SandboxServer, django_capture_on_commit_callbacks: Any
) -> None:
    make_user()
    crm.set_faults(daily_quota=0, quota_window_seconds=600)
    run = run_here(BackfillOptions(), django_capture_on_commit_callbacks)
    assert run.state == BackfillRun.State.FAILED
    assert "daily quota is used up: resume the run after it resets" in run.last_error


@pytest.mark.django_db(
    transaction=True
)  # each chunk's commit hands its leads to the (immediate) worker
def test_command_wait_sleeps_through_a_quota_stop(
    crm: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache

    for _ in range(2):
        make_user()
    crm.set_faults(daily_quota=0, quota_window_seconds=600)
    naps: list[float] = []

    def nap(seconds: float) -> None:  # the quota resets while the command sleeps
        naps.append(seconds)
        crm.set_faults(daily_quota=100)
        cache.clear()

    monkeypatch.setattr("crmify.management.commands.crmify_backfill.sleep", nap)
    out = StringIO()
    call_command("crmify_backfill", "--wait", stdout=out)
    assert "daily quota is used up: waiting until" in out.getvalue()
    assert len(naps) == 1 and 500 < naps[0] < 700
    assert BackfillRun.objects.get().state == BackfillRun.State.FINISHED


def test_command_follow_shows_the_workers_progress(
    quiet: None, configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(TASK_BACKEND="default")
    for _ in range(4):
        make_user()

    seen: list[tuple[str, int, int]] = []

    def worker_does_a_chunk(seconds: float) -> None:
        run = BackfillRun.objects.get()
        progress = run_progress(run)
        seen.append((progress.stage, run.scanned, progress.delivery.waiting))
        if run.is_active:
            backfill.run_chunk(run.pk, run.checkpoint, chain=False)
        else:  # every row mapped: the worker sends the leads
            for lead_id in Lead.objects.filter(backfill_run=run).values_list("pk", flat=True):
                process_lead(lead_id)

    monkeypatch.setattr("crmify.management.commands.crmify_backfill.sleep", worker_does_a_chunk)
    out = StringIO()
    call_command("crmify_backfill", "--follow", "--batch-size=2", stdout=out)
    text = out.getvalue()
    # It kept following after the rows were mapped, until the leads were delivered.
    # (The third chunk finds no row left: only then is the mapping done.)
    assert seen == [("waiting", 0, 0), ("mapping", 2, 2), ("mapping", 4, 4), ("delivering", 4, 4)]
    assert re.search(r"Rows mapped +━+ 4/4 Finished", text)
    assert re.search(r"Leads delivered +━+ 4/4 synced 4, failed 0, waiting 0", text)
    assert "finished: 4 scanned, 4 created" in text


def test_listing_calls_are_counted_in_words(crm: SandboxServer) -> None:
    make_user()
    rows = dict(backfill.plan(BackfillOptions()).rows())
    assert rows["Already in the CRM by e-mail"] == "0 (listed 0 CRM leads in 1 call)"
