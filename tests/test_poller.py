"""Polling the CRM for changes (issue 14, part 4): the watermark, its one-second overlap, paging, errors
and deferred leads keeping it back, the first poll's rule, the scan for records deleted in the CRM, the
polls' own schedule, ``crmify_pull``, what polling costs a day and the health page's panel.

The CRM is the in-memory one (``crmify.backends.locmem``, which reads changes back) unless a test says
otherwise; the changes go through the real ``crmify.inbound.apply_changes``. The last tests poll each
sandbox over real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from io import StringIO
from typing import Any, ClassVar

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from crmify import api, crm_state, poller
from crmify.backends import locmem
from crmify.backends.base import CrmChange, CrmLead
from crmify.backends.locmem import LocmemBackend
from crmify.compat import task_backends
from crmify.crm_state import shared_cache
from crmify.exceptions import TransientBackendError
from crmify.models import Lead, LedgerEntry, PullCursor, SyncState
from crmify.poller import POLLS, PullCost, poll, pull_task
from crmify.ratelimit import QuotaState
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.signals import lead_changed_in_crm
from tests.admin_fixtures import login, make_lead, people
from tests.conftest import crm_writes
from tests.factories import lead_of, make_user
from tests.reliability.processes import ROOT, start_db_worker, stop, wait_until

__all__ = ["login", "people"]  # fixtures

pytestmark = pytest.mark.django_db

QUIRKY = "tests.test_poller.QuirkyCrm"
PLAIN = "tests.doubles.PlainCRM"


class QuirkyCrm(LocmemBackend):
    """The in-memory CRM with what a real one may do to a poll: leave records out of its listing
    (``hidden``), fail the page after the first (``fail_second_page``) or the listing (``fail_listing``),
    and let a lead be synced while it is listed (``during_listing``, after the first page)."""

    hidden: ClassVar[set[str]] = set()
    fail_second_page: ClassVar[bool] = False
    fail_listing: ClassVar[bool] = False
    during_listing: ClassVar[Callable[[], Any] | None] = None
    #: Each id list read again by id.
    reread: ClassVar[list[list[str]]] = []

    @classmethod
    def reset(cls) -> None:
        cls.hidden, cls.reread = set(), []
        cls.fail_second_page = cls.fail_listing = False
        cls.during_listing = None

    def daily_quota(self) -> int | None:
        return self.options.get("DAILY_QUOTA")

    def iter_changes(self, since: datetime | None) -> Iterator[list[CrmChange]]:
        for number, page in enumerate(super().iter_changes(since)):
            yield page
            if number == 0 and QuirkyCrm.fail_second_page:
                locmem.fail_next(TransientBackendError("HTTP 503: Service Unavailable"))

    def iter_leads(self, page_size: int = 500) -> Iterator[list[CrmLead]]:
        if QuirkyCrm.fail_listing:
            locmem.fail_next(TransientBackendError("HTTP 502: Bad Gateway", status_code=502))
        for number, page in enumerate(super().iter_leads(page_size)):
            yield [lead for lead in page if lead.external_id not in QuirkyCrm.hidden]
            if number == 0 and QuirkyCrm.during_listing is not None:
                QuirkyCrm.during_listing()

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        QuirkyCrm.reread.append(list(external_ids))
        return super().read_changes(external_ids)


@pytest.fixture
def crm(configure: Callable[..., None]) -> Iterator[None]:
    """The in-memory CRM, polled every minute, with no scan for deletes unless a test asks."""
    QuirkyCrm.reset()
    configure(BACKEND=QUIRKY, PULL_INTERVAL=60, PULL_DELETES_INTERVAL=None)
    cache.clear()
    yield
    QuirkyCrm.reset()
    cache.clear()


@pytest.fixture
def heard(django_capture_on_commit_callbacks: Any) -> Iterator[list[dict[str, Any]]]:
    """What ``lead_changed_in_crm`` receivers got (the signal waits for the commit: each test's polls
    run inside ``django_capture_on_commit_callbacks``)."""
    got: list[dict[str, Any]] = []

    def changed(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    lead_changed_in_crm.connect(changed, weak=False, dispatch_uid="test_poller:changed")
    yield got
    lead_changed_in_crm.disconnect(dispatch_uid="test_poller:changed")


def synced(**fields: Any) -> Lead:
    """A lead the CRM holds: sent now, and so modified in the CRM now."""
    lead = make_lead(**fields)
    api.sync_now(lead)
    lead.refresh_from_db()
    assert lead.sync_state == SyncState.SYNCED and lead.external_id
    return lead


def change_in_crm(lead: Lead, seconds_ago: float, status: str = "Contacted") -> datetime:
    """A salesperson changed ``lead``'s status in the CRM that long ago; the record's modification time."""
    moment = timezone.now() - timedelta(seconds=seconds_ago)
    locmem.change_in_crm(lead.external_id, at=moment, status=status)
    return moment


def status_of(lead: Lead) -> str:
    return Lead.objects.get(pk=lead.pk).status


def cursor() -> PullCursor:
    return PullCursor.objects.get()


def set_watermark(moment: datetime) -> None:
    name = poller.cursor_name(poller.current_backend())
    PullCursor.objects.update_or_create(name=name, defaults={"watermark": moment})


def sends() -> list[str]:
    """The calls that changed the CRM (the reads aside)."""
    return [
        call.operation for call in locmem.calls if call.operation not in ("changes", "read", "list")
    ]


# -- the watermark ---------------------------------------------------------------------------------------


def test_the_first_poll_reads_only_the_last_interval_not_the_crms_history(crm: None) -> None:
    old, recent = synced(), synced()
    change_in_crm(old, seconds_ago=7200)
    moment = change_in_crm(recent, seconds_ago=10)
    report = poll()
    assert report.first and "first poll" in str(report)
    assert report.read_from is not None
    assert 59 <= (timezone.now() - report.read_from).total_seconds() <= 65
    assert (status_of(old), status_of(recent)) == ("NotContacted", "Contacted")
    assert cursor().watermark == moment == report.watermark


def test_a_first_poll_with_no_change_starts_the_watermark_an_interval_back(crm: None) -> None:
    report = poll()
    watermark = cursor().watermark
    assert watermark is not None and 59 <= (timezone.now() - watermark).total_seconds() <= 65
    assert report.changes == 0 and "no change" in str(report)


def test_full_reads_every_record(crm: None) -> None:
    old, recent = synced(), synced()
    change_in_crm(old, seconds_ago=7200, status="Disqualified")
    change_in_crm(recent, seconds_ago=10)
    report = poll(full=True)
    assert report.read_from is None and "read every record" in str(report)
    assert (status_of(old), status_of(recent)) == ("Disqualified", "Contacted")


def test_the_watermark_moves_to_the_newest_change_and_the_next_poll_overlaps_one_second_without_applying_twice(
    crm: None, heard: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    first, second = synced(), synced()
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm(first, seconds_ago=100)
    newest = change_in_crm(second, seconds_ago=30, status="Disqualified")
    with django_capture_on_commit_callbacks(execute=True):
        poll()
    assert cursor().watermark == newest
    with django_capture_on_commit_callbacks(execute=True):
        report = poll()
    # The second poll reads from a second before the newest change: it reads that record again...
    assert report.read_from == newest - timedelta(seconds=1)
    assert report.changes == 1 and report.inbound.unchanged == 1
    # ... and does not apply it twice: one signal per lead, one inbound ledger row each.
    assert sorted(event["lead"].pk for event in heard) == sorted([first.pk, second.pk])
    assert LedgerEntry.objects.filter(lead=second, direction="in").count() == 1
    assert cursor().watermark == newest
    assert sends() == ["create", "create"]  # nothing pushed back


def test_pages_are_all_read_and_applied_one_call_each(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(BACKEND_OPTIONS={"PULL_PAGE_SIZE": 2})
    leads = [synced() for _ in range(5)]
    set_watermark(timezone.now() - timedelta(minutes=5))
    moments = [change_in_crm(lead, seconds_ago=100 - i) for i, lead in enumerate(leads)]
    report = poll()
    assert report.calls == 3 == cursor().last_calls  # pages of 2, 2 and 1
    assert report.changes == 5 == cursor().last_changes == report.inbound.applied
    assert {status_of(lead) for lead in leads} == {"Contacted"}
    assert cursor().watermark == moments[-1]
    # Every call is in the ledger, with no lead, as a read of changes from the CRM.
    calls = LedgerEntry.objects.filter(lead=None, operation="changes")
    assert calls.count() == 3 == calls.filter(direction=LedgerEntry.Direction.IN).count()


def test_a_record_read_twice_in_one_poll_is_handed_on_once_in_its_newest_version() -> None:
    moment = timezone.now()
    older = CrmChange("a", moment - timedelta(seconds=5), {"status": "Contacted"})
    newer = CrmChange("a", moment, {"status": "Disqualified"})
    assert poller._newer([older, newer], {}) == [newer]
    read: dict[str, datetime | None] = {"a": moment}
    assert poller._newer([older], read) == []  # a later page with an older read
    later = CrmChange("a", moment + timedelta(seconds=1), {"status": "Converted"})
    assert poller._newer([later], read) == [later] and read["a"] == later.modified_at


def test_a_crm_error_keeps_the_watermark_and_the_next_poll_reads_the_same_changes(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(BACKEND_OPTIONS={"PULL_PAGE_SIZE": 1})
    first, second = synced(), synced()
    before = timezone.now() - timedelta(minutes=5)
    set_watermark(before)
    change_in_crm(first, seconds_ago=50)
    change_in_crm(second, seconds_ago=40)
    QuirkyCrm.fail_second_page = True
    report = poll()
    assert "503" in report.error and "503" in cursor().last_error
    assert cursor().watermark == before  # the first page was applied, the watermark stays
    assert status_of(first) == "Contacted" and status_of(second) == "NotContacted"
    assert report.calls == 2
    assert LedgerEntry.objects.filter(lead=None, outcome="transient").count() == 1
    QuirkyCrm.fail_second_page = False
    report = poll()
    assert report.read_from == before - timedelta(seconds=1)
    assert not report.error and cursor().last_error == ""
    assert status_of(second) == "Contacted"


def test_a_deferred_change_keeps_the_watermark_so_the_next_poll_reads_it_again(crm: None) -> None:
    first, held, last = synced(), synced(), synced()
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm(first, seconds_ago=50)
    moment = change_in_crm(held, seconds_ago=40)
    change_in_crm(last, seconds_ago=30)
    # A worker holds the lead (it is sending it): the change waits.
    Lead.objects.filter(pk=held.pk).update(claim_token="worker", claimed_at=timezone.now())
    report = poll()
    assert (report.inbound.applied, report.inbound.deferred) == (2, 1)
    assert cursor().watermark == moment
    Lead.objects.filter(pk=held.pk).update(claim_token="", claimed_at=None)
    report = poll()
    assert report.read_from == moment - timedelta(seconds=1)
    assert status_of(held) == "Contacted"


# -- when a poll does nothing ------------------------------------------------------------------------------


def test_one_poll_at_a_time_across_processes(crm: None) -> None:
    shared_cache().add("crmify:poll:running", 1)  # another process is polling
    try:
        report = poll()
    finally:
        shared_cache().delete("crmify:poll:running")
    assert str(report) == "skipped: another poll is running"
    assert locmem.calls == [] and not PullCursor.objects.exists()
    assert not poll().skipped


def test_no_poll_while_the_crm_is_down(crm: None) -> None:
    for lead_id in (1, 2, 3):
        crm_state.note_failure("Could not reach the CRM: connection refused.", lead_id)
    report = poll()
    assert "the CRM is down" in report.skipped and "connection refused" in report.skipped
    assert locmem.calls == []


def test_no_poll_while_the_daily_quota_is_used_up(
    crm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    until = timezone.now() + timedelta(hours=3)
    used_up = QuotaState(limit=1000, remaining=0, exhausted_until=until)
    monkeypatch.setattr(QuirkyCrm, "health", lambda self: used_up)
    report = poll()
    assert "quota is used up" in report.skipped and locmem.calls == []


def test_a_backend_that_cannot_read_changes_back_is_said_so(
    configure: Callable[..., None],
) -> None:
    configure(BACKEND=PLAIN)
    report = poll()
    assert report.skipped == "PlainCRM cannot read changes back from the CRM"
    assert not PullCursor.objects.exists()


# -- records deleted in the CRM ----------------------------------------------------------------------------


def delete_in_crm(lead: Lead) -> None:
    """Deleted in the CRM long ago: no poll's read of changes shows it (as Insightly's search does not)."""
    locmem.delete_in_crm(lead.external_id, at=timezone.now() - timedelta(days=1))


def test_the_delete_scan_confirms_each_missing_lead_before_it_is_marked(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600)
    kept, hidden, gone = synced(), synced(), synced()
    tombstoned = synced()
    Lead.objects.filter(pk=tombstoned.pk).request_delete()
    delete_in_crm(gone)
    locmem.leads.pop(tombstoned.external_id)
    QuirkyCrm.hidden = {hidden.external_id}  # missing from the listing, yet the CRM has it
    set_watermark(timezone.now())
    report = poll()
    assert report.deletes_scanned and (report.listed, report.missing, report.deleted) == (1, 2, 1)
    assert sorted(QuirkyCrm.reread[0]) == sorted([hidden.external_id, gone.external_id])
    gone.refresh_from_db()
    assert gone.deleted_in_crm_at is not None and gone.tombstone
    assert Lead.objects.get(pk=hidden.pk).deleted_in_crm_at is None
    assert Lead.objects.get(pk=kept.pk).deleted_in_crm_at is None
    assert cursor().deletes_scanned_at is not None
    assert "delete scan: 1 record listed, 2 leads missing from the listing, 1 deleted" in str(
        report
    )
    # The next poll within PULL_DELETES_INTERVAL lists nothing; --deletes lists now.
    assert not poll().deletes_scanned
    assert poll(deletes=True).deletes_scanned


def test_a_lead_synced_after_the_listing_started_is_not_taken_for_deleted(
    crm: None, configure: Callable[..., None]
) -> None:
    synced(), synced()
    set_watermark(timezone.now())
    # A sign-up synced while the CRM is listed, one page at a time: the pages read cannot hold it.
    QuirkyCrm.during_listing = synced
    QuirkyCrm.listing_page_size = 1
    try:
        report = poll(deletes=True)
    finally:
        QuirkyCrm.listing_page_size = LocmemBackend.listing_page_size
    assert report.deletes_scanned and report.listed == 2 and report.missing == 0
    assert (
        QuirkyCrm.reread == [] and Lead.objects.filter(deleted_in_crm_at__isnull=False).count() == 0
    )


def test_the_delete_scan_confirms_a_bounded_number_per_scan(crm: None) -> None:
    leads = [synced() for _ in range(poller.MAX_DELETE_CONFIRMATIONS + 10)]
    for lead in leads:
        delete_in_crm(lead)
    set_watermark(timezone.now())
    report = poll(deletes=True)
    assert report.missing == poller.MAX_DELETE_CONFIRMATIONS + 10
    assert [len(ids) for ids in QuirkyCrm.reread] == [poller.MAX_DELETE_CONFIRMATIONS]
    assert report.deleted == poller.MAX_DELETE_CONFIRMATIONS
    # The others are found by the next scans.
    poll(deletes=True)
    assert Lead.objects.filter(deleted_in_crm_at__isnull=False).count() == len(leads)


def test_a_failed_listing_marks_nothing_and_scans_again_next_time(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600)
    delete_in_crm(synced())
    set_watermark(timezone.now())
    QuirkyCrm.fail_listing = True
    report = poll()
    assert "502" in report.error and not report.deletes_scanned
    assert cursor().deletes_scanned_at is None and QuirkyCrm.reread == []
    QuirkyCrm.fail_listing = False
    assert poll().deleted == 1


# -- the schedule --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_polls_schedule_themselves_with_only_the_worker_running(
    configure: Callable[..., None],
) -> None:
    polls = {"TASK_BACKEND": "default", "PULL_INTERVAL": 1}
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


def test_one_schedule_of_polls_at_a_time(crm: None, configure: Callable[..., None]) -> None:
    configure(TASK_BACKEND="dummy")
    backend = task_backends["dummy"]
    backend.clear()
    assert POLLS.start() is True
    assert POLLS.start() is False  # one is live
    token = backend.results[-1].args[1]
    result = pull_task.using(backend="immediate").enqueue(False, token)
    assert result.return_value["skipped"] == ""
    following = backend.results[-1]
    assert following.args[1] != token
    run_after = following.task.run_after
    assert run_after is not None and 55 <= (run_after - timezone.now()).total_seconds() <= 61
    # The replaced token's schedule ends: it polls no more and queues nothing.
    count = len(backend.results)
    assert pull_task.using(backend="immediate").enqueue(False, token).return_value["skipped"]
    assert len(backend.results) == count
    backend.clear()


def test_no_schedule_of_polls_when_polling_is_off_or_the_backend_cannot_pull(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(TASK_BACKEND="dummy", PULL_INTERVAL=None)
    assert POLLS.start() is False
    configure(PULL_INTERVAL=60, BACKEND=PLAIN)
    assert POLLS.start() is False
    configure(TASK_BACKEND="immediate", BACKEND=QUIRKY)  # cannot defer: crmify.W115 says so
    assert POLLS.start() is False


# -- the command ---------------------------------------------------------------------------------------------


def test_crmify_pull_prints_the_report(crm: None) -> None:
    lead = synced()
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm(lead, seconds_ago=30)
    out = StringIO()
    call_command("crmify_pull", stdout=out)
    text = out.getvalue()
    assert text.startswith("crmify poll: read from ") and "1 change (1 applied)" in text
    assert text.rstrip().endswith("; 1 call.")
    call_command("crmify_pull", "--full", "--deletes", stdout=(out := StringIO()))
    assert "read every record" in out.getvalue()
    assert "delete scan: 1 record listed, 0 leads missing" in out.getvalue()


def test_crmify_pull_fails_with_the_crms_error(crm: None) -> None:
    locmem.fail_next(TransientBackendError("Could not reach the CRM: connection refused."))
    with pytest.raises(CommandError, match="connection refused"):
        call_command("crmify_pull", stdout=StringIO())
    assert "connection refused" in cursor().last_error


# -- what polling costs --------------------------------------------------------------------------------------


def test_the_daily_cost_of_polling_beside_the_quota() -> None:
    cost = PullCost(
        interval=60, deletes_interval=3600, leads=1000, listing_page_size=500, quota=40000
    )
    assert (cost.polls_per_day, cost.scans_per_day, cost.calls_per_scan) == (1440, 24, 2)
    assert cost.calls_per_day == 1440 + 48
    assert cost.share == pytest.approx(1488 / 40000) and not cost.heavy
    assert str(cost).startswith(
        "1,488 calls a day: 1,440 polls (every 60 s) x 1 call with no change + 24 delete scans x 2 calls"
    )
    assert "3.7% of the daily quota of 40,000" in str(cost)
    # Insightly's free plan cannot afford a poll a minute.
    free = PullCost(interval=60, deletes_interval=None, leads=0, listing_page_size=500, quota=1000)
    assert (
        free.heavy
        and free.calls_per_day == 1440
        and "144.0% of the daily quota of 1,000" in str(free)
    )
    assert "unknown" in str(PullCost(60, None, 0, 500, None))
    off = PullCost(None, 3600, 0, 500, 40000, off="PULL_INTERVAL is None")
    assert (off.calls_per_day, str(off)) == (0, "no polling: PULL_INTERVAL is None")


def test_crmify_check_prints_the_cost_and_the_last_poll(
    crm: None, configure: Callable[..., None]
) -> None:
    configure(PULL_DELETES_INTERVAL=3600, BACKEND_OPTIONS={"DAILY_QUOTA": 40000})
    for _ in range(3):
        synced()
    poll()
    out = StringIO()
    with pytest.raises(CommandError):  # the in-memory CRM has no connection check
        call_command("crmify_check", stdout=out)
    text = out.getvalue()
    assert "ok   polling the CRM: 1,464 calls a day: 1,440 polls (every 60 s)" in text
    assert "24 delete scans x 1 call (3 leads, 500 a page" in text
    assert "3.7% of the daily quota of 40,000" in text
    assert "ok   last poll " in text and "read up to " in text and "last delete scan " in text


# -- the sync health page --------------------------------------------------------------------------------------


def test_the_health_page_shows_the_polls(crm: None, login: Callable[[str], Client]) -> None:
    lead = synced()
    set_watermark(timezone.now() - timedelta(minutes=5))
    change_in_crm(lead, seconds_ago=30)
    poll()
    PullCursor.objects.update(last_error="HTTP 503: Service Unavailable")
    content = login("viewer").get(reverse("admin:crmify_lead_health")).content.decode()
    panel = content[content.index('id="crmify-pull"') :]
    assert "Changes from the CRM" in panel
    assert "1 call, 1 change" in panel and "HTTP 503: Service Unavailable" in panel
    assert "Read up to" in panel and "1,440 polls (every 60 s)" in panel
    assert (
        "Every 60 s, scheduled by the workers." not in panel
    )  # the immediate backend cannot defer
    assert "polled only by manage.py crmify_pull" in panel
    assert "Last delete scan" in panel


# -- over real HTTP against each sandbox ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_cost_benchmark_in_short(tmp_path: Any) -> None:
    """``bench/pull_cost.py --short``: 200 leads on each sandbox, its targets met (exit status 0)."""
    run = subprocess.run(
        [sys.executable, "bench/pull_cost.py", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CRMIFY_BENCH_RESULTS": str(tmp_path / "results.jsonl")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    for crm in ("Insightly", "HubSpot"):
        assert figures[crm]["idle_calls"] == 1
        assert (figures[crm]["applied"], figures[crm]["pushed_back"]) == (200, 0)


def sign_up(django_capture_on_commit_callbacks: Any) -> Lead:
    with django_capture_on_commit_callbacks(execute=True):
        user = make_user()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    return lead


def disqualified_by_one_poll(
    server: SandboxServer | HubSpotSandbox, status: str, heard: list[dict[str, Any]], capture: Any
) -> None:
    """A sign-up synced to ``server``, the site's first poll, then a salesperson disqualifies the lead
    in the CRM (``status``, as the CRM names it): one poll brings it, the site hears it, nothing is sent
    back."""
    lead = sign_up(capture)
    poll()  # the site's first poll: the sign-up's own create, unchanged
    server.salesperson_edit(lead.external_id, {}, status)
    before = crm_writes(server)
    with capture(execute=True):
        report = poll()
    assert report.inbound.applied == 1 and not report.error
    assert status_of(lead) == "Disqualified"
    assert [(event["lead"].pk, event["changes"]) for event in heard] == [
        (lead.pk, {"status": ("NotContacted", "Disqualified")})
    ]
    assert crm_writes(server) == before  # 0 calls pushed back
    assert Lead.objects.get(pk=lead.pk).sync_state == SyncState.SYNCED


def test_a_status_changed_in_insightly_reaches_the_lead_by_one_poll_and_is_not_pushed_back(
    insightly: SandboxServer,
    heard: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    configure: Callable[..., None],
) -> None:
    configure(PULL_INTERVAL=60)
    disqualified_by_one_poll(insightly, "Disqualified", heard, django_capture_on_commit_callbacks)


def test_a_status_changed_in_hubspot_reaches_the_lead_by_one_poll_and_is_not_pushed_back(
    hubspot: HubSpotSandbox,
    heard: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
    configure: Callable[..., None],
) -> None:
    configure(PULL_INTERVAL=60)
    disqualified_by_one_poll(hubspot, "UNQUALIFIED", heard, django_capture_on_commit_callbacks)
