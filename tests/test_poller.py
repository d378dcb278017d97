"""Polling the CRM for changes (issue 14, part 4): the watermark, its one-second overlap, paging, errors
and deferred leads keeping it back, the first poll's rule, the scan for records deleted in the CRM, the
polls' own schedule, ``crmify_pull``, what polling costs a day and the health page's panel."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from crmify import crm_state, poller
from crmify.backends.base import CallRecord, CrmChange, CrmLead, record_call
from crmify.backends.locmem import LocmemBackend
from crmify.compat import task_backends
from crmify.crm_state import shared_cache
from crmify.exceptions import TransientBackendError
from crmify.inbound import InboundReport
from crmify.models import Lead, LedgerEntry, PullCursor, SyncState
from crmify.poller import POLLS, PullCost, poll, pull_task
from tests.admin_fixtures import login, make_lead, people
from tests.reliability.processes import start_db_worker, stop, wait_until

__all__ = ["login", "people"]  # fixtures

pytestmark = pytest.mark.django_db

FAKE = "tests.test_poller.FakeCrm"


# -- a small CRM that keeps modification times (until the locmem backend reads changes back) --------------


class FakeCrm(LocmemBackend):
    """A CRM whose records carry a modification time: ``iter_changes`` pages them oldest first, one
    recorded call a page; ``read_changes`` says which ids it no longer has."""

    supports_pull = True
    pull_page_size = 100
    listing_page_size = 500
    #: The CRM's records by id: (modified_at, values).
    records: dict[str, tuple[datetime, dict[str, Any]]] = {}
    #: Each ``since`` the poller asked for, and each id list it read again.
    asked: list[datetime | None] = []
    reread: list[list[str]] = []
    #: Ids the listing leaves out although the CRM has them (a CRM that hides some records).
    hidden: set[str] = set()
    #: Raise this on the page numbered ``fail_page`` (0 = the first), once.
    failure: tuple[int, Exception] | None = None
    #: Called after the listing's first page (a lead synced while the CRM is listed).
    during_listing: Callable[[], None] | None = None

    @classmethod
    def reset(cls) -> None:
        cls.records = {}
        cls.asked = []
        cls.reread = []
        cls.hidden = set()
        cls.failure = None
        cls.during_listing = None

    def daily_quota(self) -> int | None:
        return self.options.get("DAILY_QUOTA")

    def _page_call(self, operation: str, number: int) -> None:
        if FakeCrm.failure is not None and FakeCrm.failure[0] == number:
            error = FakeCrm.failure[1]
            FakeCrm.failure = None
            record_call(CallRecord(operation, outcome="transient", error=str(error)))
            raise error
        record_call(CallRecord(operation, http_status=200))

    def iter_changes(self, since: datetime | None) -> Iterator[list[CrmChange]]:
        FakeCrm.asked.append(since)
        changed = sorted(
            (
                CrmChange(external_id, modified_at, values)
                for external_id, (modified_at, values) in FakeCrm.records.items()
                if since is None or modified_at >= since
            ),
            key=lambda change: change.modified_at or timezone.now(),
        )
        size = self.pull_page_size
        for number in itertools.count():
            self._page_call("changes", number)
            page = changed[number * size : (number + 1) * size]
            yield page
            if len(page) < size:
                return

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        FakeCrm.reread.append(list(external_ids))
        record_call(CallRecord("read", http_status=200))
        return [
            CrmChange(external_id, *FakeCrm.records[external_id])
            if external_id in FakeCrm.records
            else CrmChange(external_id, deleted=True)
            for external_id in external_ids
        ]

    def iter_leads(self, page_size: int = 500) -> Iterator[list[CrmLead]]:
        listed = [
            CrmLead(external_id, "")
            for external_id in FakeCrm.records
            if external_id not in FakeCrm.hidden
        ]
        for number in itertools.count():
            record_call(CallRecord("list", http_status=200))
            page = listed[number * page_size : (number + 1) * page_size]
            yield page
            if number == 0 and FakeCrm.during_listing is not None:
                FakeCrm.during_listing()
            if len(page) < page_size:
                return


class Applied:
    """Stands in for ``crmify.inbound.apply_changes`` (until it lands): records each page it is given;
    ``defer`` names ids whose change a worker holds."""

    def __init__(self) -> None:
        self.pages: list[list[CrmChange]] = []
        self.defer: set[str] = set()

    def __call__(self, changes: Sequence[CrmChange], *, via: str) -> InboundReport:
        assert via == "poll"
        self.pages.append(list(changes))
        deferred = [change for change in changes if change.external_id in self.defer]
        return InboundReport(
            applied=len(changes) - len(deferred),
            deleted=sum(change.deleted for change in changes),
            deferred=len(deferred),
            deferred_since=min((c.modified_at for c in deferred if c.modified_at), default=None),
        )

    @property
    def ids(self) -> list[str]:
        return [change.external_id for page in self.pages for change in page]


@pytest.fixture
def crm(configure: Callable[..., None]) -> Iterator[type[FakeCrm]]:
    FakeCrm.reset()
    configure(BACKEND=FAKE, PULL_INTERVAL=60, PULL_DELETES_INTERVAL=None)
    cache.clear()
    yield FakeCrm
    FakeCrm.reset()
    cache.clear()


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> Applied:
    recorder = Applied()
    monkeypatch.setattr(poller, "apply_changes", recorder)
    return recorder


def change_in_crm(external_id: str, seconds_ago: float, status: str = "Contacted") -> datetime:
    """A salesperson changed record ``external_id`` that long ago; its modification time."""
    moment = (timezone.now() - timedelta(seconds=seconds_ago)).replace(microsecond=0)
    FakeCrm.records[external_id] = (moment, {"status": status})
    return moment


def cursor() -> PullCursor:
    return PullCursor.objects.get()


def set_watermark(moment: datetime) -> None:
    PullCursor.objects.update_or_create(
        name=poller.cursor_name(poller.current_backend()), defaults={"watermark": moment}
    )


# -- the watermark ---------------------------------------------------------------------------------------


def test_the_first_poll_reads_only_the_last_interval_not_the_crms_history(
    crm: type[FakeCrm], applied: Applied
) -> None:
    change_in_crm("old", seconds_ago=7200)
    recent = change_in_crm("recent", seconds_ago=10)
    report = poll()
    assert report.first and applied.ids == ["recent"]
    assert crm.asked[0] is not None
    assert 59 <= (timezone.now() - crm.asked[0]).total_seconds() <= 65
    assert cursor().watermark == recent == report.watermark
    assert "first poll" in str(report)


def test_a_first_poll_with_no_change_starts_the_watermark_an_interval_back(
    crm: type[FakeCrm], applied: Applied
) -> None:
    poll()
    watermark = cursor().watermark
    assert watermark is not None and 59 <= (timezone.now() - watermark).total_seconds() <= 65
    assert applied.pages == []


def test_full_reads_every_record(crm: type[FakeCrm], applied: Applied) -> None:
    change_in_crm("old", seconds_ago=7200)
    newest = change_in_crm("recent", seconds_ago=10)
    report = poll(full=True)
    assert crm.asked == [None] and sorted(applied.ids) == ["old", "recent"]
    assert report.changes == 2 and cursor().watermark == newest


def test_the_watermark_moves_to_the_newest_change_and_the_next_poll_overlaps_one_second(
    crm: type[FakeCrm], applied: Applied
) -> None:
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm("a", seconds_ago=100)
    newest = change_in_crm("b", seconds_ago=30)
    poll()
    assert cursor().watermark == newest
    poll()
    # The second poll reads from a second before the newest change: b is read again (same second).
    assert crm.asked[-1] == newest - timedelta(seconds=1)
    assert applied.ids == ["a", "b", "b"]
    assert cursor().watermark == newest


def test_a_record_read_twice_in_one_poll_is_handed_on_once_newest_first(
    crm: type[FakeCrm], applied: Applied
) -> None:
    set_watermark(timezone.now() - timedelta(minutes=5))
    moment = change_in_crm("a", seconds_ago=30)
    older = CrmChange("a", moment - timedelta(seconds=5), {"status": "Old"})
    newer = CrmChange("a", moment, {"status": "Contacted"})
    assert poller._newer([older, newer], {}) == [newer]
    seen: dict[str, datetime | None] = {"a": moment}
    assert poller._newer([older], seen) == []
    later = replace(newer, modified_at=moment + timedelta(seconds=1))
    assert poller._newer([later], seen) == [later]


def test_pages_are_all_read_and_applied_one_call_each(
    crm: type[FakeCrm], applied: Applied, configure: Callable[..., None]
) -> None:
    FakeCrm.pull_page_size = 2
    try:
        set_watermark(timezone.now() - timedelta(minutes=5))
        moments = [change_in_crm(f"r{i}", seconds_ago=100 - i) for i in range(5)]
        report = poll()
    finally:
        FakeCrm.pull_page_size = 100
    assert [len(page) for page in applied.pages] == [2, 2, 1]
    assert report.calls == 3 == cursor().last_calls
    assert report.changes == 5 == cursor().last_changes
    assert cursor().watermark == moments[-1]
    # Every call is in the ledger, with no lead.
    assert LedgerEntry.objects.filter(lead=None, operation="changes").count() == 3


def test_a_crm_error_keeps_the_watermark_and_the_next_poll_reads_the_same_changes(
    crm: type[FakeCrm], applied: Applied
) -> None:
    FakeCrm.pull_page_size = 1
    try:
        before = timezone.now() - timedelta(minutes=5)
        set_watermark(before)
        change_in_crm("a", seconds_ago=50)
        change_in_crm("b", seconds_ago=40)
        FakeCrm.failure = (1, TransientBackendError("HTTP 503: Service Unavailable"))
        report = poll()
        assert report.error and "503" in report.error and "503" in cursor().last_error
        assert cursor().watermark == before
        assert report.calls == 2
        assert LedgerEntry.objects.filter(lead=None, outcome="transient").exists()
        report = poll()
    finally:
        FakeCrm.pull_page_size = 100
    assert not report.error and cursor().last_error == ""
    assert crm.asked == [before - timedelta(seconds=1)] * 2
    assert applied.ids == ["a", "a", "b"]


def test_a_deferred_change_keeps_the_watermark_so_the_next_poll_reads_it_again(
    crm: type[FakeCrm], applied: Applied
) -> None:
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm("a", seconds_ago=50)
    held = change_in_crm("b", seconds_ago=40)
    change_in_crm("c", seconds_ago=30)
    applied.defer = {"b"}
    poll()
    assert cursor().watermark == held
    applied.defer = set()
    poll()
    assert crm.asked[-1] == held - timedelta(seconds=1)
    assert applied.ids[-2:] == ["b", "c"]


# -- when a poll does nothing ------------------------------------------------------------------------------


def test_one_poll_at_a_time_across_processes(crm: type[FakeCrm], applied: Applied) -> None:
    shared_cache().add("crmify:poll:running", 1)  # another process is polling
    try:
        report = poll()
    finally:
        shared_cache().delete("crmify:poll:running")
    assert str(report) == "skipped: another poll is running"
    assert crm.asked == [] and not PullCursor.objects.exists()
    assert not poll().skipped


def test_no_poll_while_the_crm_is_down(crm: type[FakeCrm], applied: Applied) -> None:
    for lead_id in (1, 2, 3):
        crm_state.note_failure("Could not reach the CRM: connection refused.", lead_id)
    report = poll()
    assert "the CRM is down" in report.skipped and "connection refused" in report.skipped
    assert crm.asked == []


def test_no_poll_while_the_daily_quota_is_used_up(
    crm: type[FakeCrm], applied: Applied, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmify.ratelimit import QuotaState

    until = timezone.now() + timedelta(hours=3)
    monkeypatch.setattr(
        FakeCrm, "health", lambda self: QuotaState(limit=1000, remaining=0, exhausted_until=until)
    )
    report = poll()
    assert "quota is used up" in report.skipped and crm.asked == []


def test_a_backend_that_cannot_read_changes_back_is_said_so(
    configure: Callable[..., None],
) -> None:
    configure(BACKEND="crmify.backends.locmem.LocmemBackend")
    report = poll()
    assert report.skipped == "LocmemBackend cannot read changes back from the CRM"
    assert not PullCursor.objects.exists()


# -- records deleted in the CRM ----------------------------------------------------------------------------


def synced_lead(external_id: str, **fields: Any) -> Lead:
    values: dict[str, Any] = {
        "external_id": external_id,
        "sync_state": SyncState.SYNCED,
        "last_synced_at": timezone.now() - timedelta(hours=1),
    }
    values.update(fields)
    return make_lead(**values)


def test_the_delete_scan_confirms_each_missing_lead_before_it_is_marked(
    crm: type[FakeCrm], applied: Applied, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600)
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm("kept", seconds_ago=7200)
    change_in_crm("hidden", seconds_ago=7200)
    FakeCrm.hidden = {"hidden"}  # missing from the listing, yet the CRM has it
    synced_lead("kept")
    synced_lead("hidden")
    synced_lead("gone")
    synced_lead("tombstoned", tombstone=True)
    report = poll()
    assert report.deletes_scanned and report.listed == 1 and report.missing == 2
    assert sorted(crm.reread[0]) == ["gone", "hidden"]
    # Only the lead the CRM says it no longer has is handed on, as deleted.
    assert [(c.external_id, c.deleted) for c in applied.pages[-1]] == [("gone", True)]
    assert report.deleted == 1
    scanned = cursor().deletes_scanned_at
    assert scanned is not None
    # The next poll within PULL_DELETES_INTERVAL lists nothing; --deletes lists now.
    assert not poll().deletes_scanned
    assert poll(deletes=True).deletes_scanned


def test_a_lead_synced_after_the_listing_started_is_not_taken_for_deleted(
    crm: type[FakeCrm], applied: Applied, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600)
    FakeCrm.listing_page_size = 1
    change_in_crm("first", seconds_ago=7200)
    change_in_crm("second", seconds_ago=7200)
    synced_lead("first")
    synced_lead("second")
    # A sign-up synced while the CRM is being listed: the pages already read cannot hold it.
    FakeCrm.during_listing = lambda: synced_lead("new", last_synced_at=timezone.now())
    try:
        report = poll(deletes=True)
    finally:
        FakeCrm.listing_page_size = 500
    assert report.deletes_scanned and report.missing == 0
    assert crm.reread == [] and applied.pages == []


def test_the_delete_scan_confirms_a_bounded_number_per_scan(
    crm: type[FakeCrm], applied: Applied
) -> None:
    for number in range(poller.MAX_DELETE_CONFIRMATIONS + 10):
        synced_lead(f"gone{number}")
    report = poll(deletes=True)
    assert report.missing == poller.MAX_DELETE_CONFIRMATIONS + 10
    assert len(crm.reread) == 1 and len(crm.reread[0]) == poller.MAX_DELETE_CONFIRMATIONS
    assert report.deleted == poller.MAX_DELETE_CONFIRMATIONS


def test_a_failed_listing_marks_nothing_and_scans_again_next_time(
    crm: type[FakeCrm],
    applied: Applied,
    configure: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(PULL_DELETES_INTERVAL=3600)
    synced_lead("gone")

    def refused(self: FakeCrm, page_size: int = 500) -> Iterator[list[CrmLead]]:
        record_call(CallRecord("list", outcome="transient", http_status=502))
        raise TransientBackendError("HTTP 502", status_code=502)
        yield []

    monkeypatch.setattr(FakeCrm, "iter_leads", refused)
    report = poll()
    assert "502" in report.error and not report.deletes_scanned
    assert cursor().deletes_scanned_at is None and crm.reread == []


# -- the schedule --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_polls_schedule_themselves_with_only_the_worker_running(
    crm: type[FakeCrm], configure: Callable[..., None]
) -> None:
    polls = {"BACKEND": FAKE, "TASK_BACKEND": "default", "PULL_INTERVAL": 1}
    configure(**polls)
    call_command("migrate", verbosity=0)  # the deploy: it queues the first poll
    assert DBTaskResult.objects.filter(task_path="crmify.tasks.pull_task").count() == 1
    worker = start_db_worker(polls, batch=False)
    try:
        wait_until(
            lambda: (
                DBTaskResult.objects.filter(
                    task_path="crmify.tasks.pull_task", status="SUCCESSFUL"
                ).count()
                >= 3
            ),
            timeout=60,
            message="three polls",
        )
    finally:
        stop(worker)
    assert PullCursor.objects.get().last_finished_at is not None
    # One schedule: never more than the next poll waiting.
    waiting = DBTaskResult.objects.filter(task_path="crmify.tasks.pull_task", status="READY")
    assert waiting.count() <= 1


def test_one_schedule_of_polls_at_a_time(
    crm: type[FakeCrm], configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="dummy", PULL_INTERVAL=60)
    backend = task_backends["dummy"]
    backend.clear()
    shared_cache().delete(POLLS.key)
    assert POLLS.start() is True
    assert POLLS.start() is False  # one is live
    token = backend.results[-1].args[1]
    result = pull_task.using(backend="immediate").enqueue(False, token)
    assert result.return_value["skipped"] == ""
    following = backend.results[-1]
    assert following.args[1] != token
    run_after = following.task.run_after
    assert run_after is not None and 55 <= (run_after - timezone.now()).total_seconds() <= 61
    count = len(backend.results)
    assert pull_task.using(backend="immediate").enqueue(False, token).return_value["skipped"]
    assert len(backend.results) == count
    backend.clear()
    shared_cache().delete(POLLS.key)


def test_no_schedule_of_polls_when_polling_is_off_or_the_backend_cannot_pull(
    crm: type[FakeCrm], configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="dummy", PULL_INTERVAL=None)
    assert POLLS.start() is False
    configure(
        TASK_BACKEND="dummy", PULL_INTERVAL=60, BACKEND="crmify.backends.locmem.LocmemBackend"
    )
    assert POLLS.start() is False
    configure(TASK_BACKEND="immediate", BACKEND=FAKE)  # cannot defer: crmify.W115 says so
    assert POLLS.start() is False


# -- the command ---------------------------------------------------------------------------------------------


def test_crmify_pull_prints_the_report(crm: type[FakeCrm], applied: Applied) -> None:
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm("a", seconds_ago=30)
    out = StringIO()
    call_command("crmify_pull", stdout=out)
    text = out.getvalue()
    assert text.startswith("crmify poll: read from ") and "1 change (1 applied)" in text
    assert "1 call" in text
    call_command("crmify_pull", "--full", "--deletes", stdout=(out := StringIO()))
    assert (
        "read every record" in out.getvalue() and "delete scan: 1 record listed" in out.getvalue()
    )


def test_crmify_pull_fails_with_the_crms_error(crm: type[FakeCrm], applied: Applied) -> None:
    FakeCrm.failure = (0, TransientBackendError("Could not reach the CRM: connection refused."))
    with pytest.raises(CommandError, match="connection refused"):
        call_command("crmify_pull", stdout=StringIO())


# -- what polling costs --------------------------------------------------------------------------------------


def test_the_daily_cost_of_polling_beside_the_quota() -> None:
    cost = PullCost(
        interval=60, deletes_interval=3600, leads=1000, listing_page_size=500, quota=40000
    )
    assert cost.polls_per_day == 1440 and cost.scans_per_day == 24 and cost.calls_per_scan == 2
    assert cost.calls_per_day == 1440 + 48
    assert cost.share == pytest.approx(1488 / 40000) and not cost.heavy
    assert str(cost).startswith(
        "1,488 calls a day: 1,440 polls (every 60 s) x 1 call with no change"
    )
    assert "3.7% of the daily quota of 40,000" in str(cost)
    # Insightly's free plan cannot afford a poll a minute.
    free = replace(cost, quota=1000)
    assert free.heavy and "148.8% of the daily quota of 1,000" in str(free)
    assert replace(cost, deletes_interval=None).calls_per_day == 1440
    assert "unknown" in str(replace(cost, quota=None))


def test_crmify_check_prints_the_cost_and_the_last_poll(
    crm: type[FakeCrm], applied: Applied, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600, BACKEND_OPTIONS={"DAILY_QUOTA": 40000})
    for number in range(3):
        synced_lead(f"x{number}")
    poll()
    out = StringIO()
    with pytest.raises(CommandError):  # the fake CRM has no connection check
        call_command("crmify_check", stdout=out)
    text = out.getvalue()
    assert "polling the CRM: 1,464 calls a day: 1,440 polls (every 60 s)" in text
    assert "3.7% of the daily quota of 40,000" in text
    assert "last poll " in text and "read up to " in text


# -- the sync health page --------------------------------------------------------------------------------------


def test_the_health_page_shows_the_polls(
    crm: type[FakeCrm], applied: Applied, login: Callable[[str], Client]
) -> None:
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm("a", seconds_ago=30)
    poll()
    PullCursor.objects.update(last_error="HTTP 503: Service Unavailable")
    content = login("viewer").get(reverse("admin:crmify_lead_health")).content.decode()
    panel = content[content.index('id="crmify-pull"') :]
    assert "Changes from the CRM" in panel
    assert "1 call, 1 change" in panel and "HTTP 503: Service Unavailable" in panel
    assert "Read up to" in panel and "1,440 polls (every 60 s)" in panel
    assert "Last delete scan" in panel
