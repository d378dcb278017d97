"""Reads what changed in the CRM since the last poll and hands it to ``crmify.inbound`` to apply to the leads.

Called by ``manage.py crmify_pull`` and the task ``crmify.tasks.pull_task``, which schedules itself every
``PULL_INTERVAL`` seconds on a Tasks backend that can defer (:data:`POLLS`, ``crmify.schedule``): no cron.

One poll at a time across every process (a lock in the shared cache, as the sweep's). A poll does nothing,
and its report says why, when the backend cannot read changes back (``supports_pull``), when the CRM is down
(``crmify.crm_state``) or when its daily quota is used up (the backend's ``health()``). Otherwise:

- it reads ``backend.iter_changes(watermark - 1 s)`` page by page: a record changed in the second the last
  poll stopped at is read again (the CRM's clock has seconds; a record written in that second may not have
  been visible yet), and ``crmify.inbound`` does not apply a change it already applied (the lead's
  ``crm_modified_at``). Each page, without the records already read newer in this poll, goes to
  ``apply_changes(page, via="poll")``;
- the watermark (``PullCursor``, one row per CRM: ``backend.crm_name``) moves to the newest modification
  time read, but never past the oldest change ``crmify.inbound`` had to defer (a lead a worker holds): that
  change is read again by the next poll;
- a CRM error is kept on the cursor (``last_error``) with the watermark where it was: the next poll reads
  the same changes again;
- **the first poll** of a site (no watermark yet) reads only the last ``PULL_INTERVAL`` seconds: the CRM's
  older history is not applied to the leads as if it had just changed (every status a salesperson ever set
  would fire ``lead_changed_in_crm`` at once). ``full=True`` (``crmify_pull --full``) reads every record;
- every ``PULL_DELETES_INTERVAL`` seconds it also looks for records deleted in the CRM, which neither CRM
  lists as changes (Insightly has no delete query; HubSpot tells only by webhook): it lists the CRM's ids
  (``iter_leads``), takes the leads synced before the listing started whose id it lacks, reads at most
  :data:`MAX_DELETE_CONFIRMATIONS` of them again by id (``read_changes``: deleted only when the CRM says it
  has no such record) and hands the deleted and merged ones to ``apply_changes``.

Every CRM call goes in the ledger (no lead; the operation the backend names, ``poll``, ``list`` or
``read`` when it names none) and is counted on the cursor.
:func:`daily_cost` says what polling costs a day beside the daily quota (``crmify_check``, the sync health
page).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from crmify.backends.base import BaseBackend, CrmChange, recording
from crmify.conf import DEFAULTS, crmify_settings
from crmify.crm_state import crm_state, shared_cache
from crmify.inbound import InboundReport, apply_changes
from crmify.ledger import MAX_ERROR_LENGTH, classify, write_ledger
from crmify.models import Lead, LedgerEntry, PullCursor, SyncState
from crmify.queue import crmify_task
from crmify.ratelimit import quota_message
from crmify.schedule import Schedule
from crmify.secrets import redact
from crmify.transitions import LeadQuerySet
from crmify.worker import current_backend

#: How far back a poll reads from the watermark: a record changed in the same second is read again.
OVERLAP = timedelta(seconds=1)
#: Leads read again by id per delete scan at most (``read_changes``): a listing that lacks many leads
#: (a CRM that hides some records from it) costs a bounded share of the quota; the rest wait for the
#: next scans, picked at random so every one of them gets its turn.
MAX_DELETE_CONFIRMATIONS = 25
#: Calls a poll that finds no change makes: one page, empty.
IDLE_POLL_CALLS = 1
#: Polling that takes more than this share of the daily quota is too heavy: ``crmify.W116``, and
#: ``crmify_check`` warns.
HEAVY_SHARE = 0.5
#: The shared cache's key of the running poll's lock.
_RUNNING = "crmify:poll:running"


@dataclass
class PollReport:
    """What one poll did, for the command's output and the task's result."""

    #: Why the poll did nothing ("another poll is running", "the CRM is down ..."); empty if it polled.
    skipped: str = ""
    #: The site's first poll: it read from :attr:`read_from` on, not the CRM's older history.
    first: bool = False
    full: bool = False
    #: The ``since`` given to ``iter_changes`` (None: every record).
    read_from: datetime | None = None
    #: CRM calls made (the changes' pages, the delete scan's listing and confirmations).
    calls: int = 0
    #: Distinct records read (a record read twice in one poll counts once).
    changes: int = 0
    #: What ``crmify.inbound`` did with them, summed over the pages.
    inbound: InboundReport = field(default_factory=InboundReport)
    #: The watermark after the poll.
    watermark: datetime | None = None
    #: The CRM's error that ended the poll, as the cursor keeps it.
    error: str = ""
    deletes_scanned: bool = False
    #: Records the delete scan listed, leads it found missing from the listing, and leads the CRM
    #: confirmed deleted (or merged into another record).
    listed: int = 0
    missing: int = 0
    deleted: int = 0

    def __str__(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        start = "every record" if self.read_from is None else f"from {in_utc(self.read_from)}"
        text = f"{'first poll, ' if self.first else ''}read {start}: "
        if self.changes:
            text += f"{counted(self.changes, 'change')} ({self.inbound})"
        else:
            text += "no change"
        text += f", read up to {in_utc(self.watermark) if self.watermark else 'nothing yet'}"
        if self.deletes_scanned:
            text += (
                f"; delete scan: {counted(self.listed, 'record')} listed, "
                f"{counted(self.missing, 'lead')} missing from the listing, "
                f"{self.deleted} deleted in the CRM"
            )
        text += f"; {counted(self.calls, 'call')}"
        if self.error:
            text += f"; error: {self.error}"
        return text

    def as_result(self) -> dict[str, Any]:
        """The report as a task's result: JSON, times in ISO 8601."""
        result: dict[str, Any] = json.loads(json.dumps(asdict(self), cls=DjangoJSONEncoder))
        return result


def counted(count: int, noun: str) -> str:
    """``"1 call"``, ``"2 calls"``: a count as the report and ``crmify_check`` print it."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def in_utc(moment: datetime) -> str:
    """``moment`` as the poll's report and ``crmify_check`` print it."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def poll(*, full: bool = False, deletes: bool = False) -> PollReport:
    """Read the CRM's changes once and apply them, unless another poll is running anywhere; see the module
    docstring. ``full`` reads every record; ``deletes`` scans for records deleted in the CRM now,
    whenever the last scan was."""
    backend = current_backend()
    if not backend.supports_pull:
        return PollReport(skipped=f"{backend.display_name} cannot read changes back from the CRM")
    cache = shared_cache()
    # Held at most CLAIM_TIMEOUT: a poller killed mid-poll does not stop polling for good.
    if not cache.add(_RUNNING, 1, timeout=crmify_settings.CLAIM_TIMEOUT):
        return PollReport(skipped="another poll is running")
    try:
        reason = why_not_now(backend)
        if reason:
            return PollReport(skipped=reason)
        return _poll(backend, full=full, deletes=deletes)
    finally:
        cache.delete(_RUNNING)


def why_not_now(backend: BaseBackend) -> str:
    """Why no CRM call should be made now (the CRM is down, its daily quota is used up), or ""."""
    outage = crm_state()
    if outage.down:
        return f"the CRM is down ({outage.last_error or 'no answer'}); leads wait for it"
    quota = backend.health()
    if quota is not None and quota.exhausted and quota.exhausted_until is not None:
        return quota_message(quota.exhausted_until)
    return ""


def cursor_name(backend: BaseBackend) -> str:
    """The name of the cursor of the CRM ``backend`` talks to (``PullCursor.name``)."""
    return backend.crm_name[: PullCursor._meta.get_field("name").max_length]


def cursor_of(backend: BaseBackend) -> PullCursor:
    """The cursor of the CRM ``backend`` talks to, made on first use."""
    return PullCursor.objects.get_or_create(name=cursor_name(backend))[0]


def _poll(backend: BaseBackend, *, full: bool, deletes: bool) -> PollReport:
    cursor = cursor_of(backend)
    now = timezone.now()
    report = PollReport(full=full)
    report.watermark = _read_changes(backend, cursor.watermark, report, now) or cursor.watermark
    scanned_at = cursor.deletes_scanned_at
    if not report.error and _deletes_due(backend, scanned_at, now, forced=deletes):
        scanned_at = _scan_deletes(backend, report) or scanned_at
    PullCursor.objects.filter(pk=cursor.pk).update(
        watermark=report.watermark,
        deletes_scanned_at=scanned_at,
        last_started_at=now,
        last_finished_at=timezone.now(),
        last_calls=report.calls,
        last_changes=report.changes,
        last_error=report.error,
        updated_at=timezone.now(),
    )
    return report


def first_poll_start(now: datetime) -> datetime:
    """Where the first poll of a site reads from: the last ``PULL_INTERVAL`` seconds (the default
    interval when polling is left to cron), not the CRM's history."""
    interval = crmify_settings.PULL_INTERVAL or float(DEFAULTS["PULL_INTERVAL"])
    return now - timedelta(seconds=interval)


def _read_changes(
    backend: BaseBackend, watermark: datetime | None, report: PollReport, now: datetime
) -> datetime | None:
    """Read and apply the changes after ``watermark``; the new watermark, or None to keep it."""
    if report.full:
        since = None
    elif watermark is None:
        report.first = True
        since = first_poll_start(now)
    else:
        since = watermark - OVERLAP
    report.read_from = since
    read: dict[str, datetime | None] = {}
    error = _recorded(
        "poll",
        report,
        lambda: _apply_pages(backend.iter_changes(since), read, report),
    )
    if error is not None:
        return None  # the same changes are read again next time
    report.changes = len(read)
    deferred_since = report.inbound.deferred_since
    newest = max((moment for moment in read.values() if moment is not None), default=None)
    moved = max(filter(None, [watermark, newest, since]), default=None)
    if deferred_since is not None and moved is not None:
        # A lead a worker held: its change is read again from here next time.
        moved = min(moved, deferred_since)
    return moved


def _apply_pages(
    pages: Iterable[list[CrmChange]], read: dict[str, datetime | None], report: PollReport
) -> None:
    for page in pages:
        fresh = _newer(page, read)
        if not fresh:
            continue
        report.inbound.add(apply_changes(fresh, via="poll"))


def _newer(page: Iterable[CrmChange], read: dict[str, datetime | None]) -> list[CrmChange]:
    """The records of ``page`` not already read in this poll at the same or a later modification time
    (the newest of each when the page holds one twice); ``read`` learns them."""
    fresh: dict[str, CrmChange] = {}
    for change in page:
        if change.external_id in read and not _later(change.modified_at, read[change.external_id]):
            continue
        fresh[change.external_id] = change
        read[change.external_id] = change.modified_at
    return list(fresh.values())


def _later(moment: datetime | None, than: datetime | None) -> bool:
    return moment is not None and (than is None or moment > than)


def _recorded(operation: str, report: PollReport, read: Callable[[], Any]) -> Exception | None:
    """Run ``read`` (CRM calls), keep its calls in the ledger and the report; its error, if any, is the
    report's (secrets masked) and returned."""
    started_at, started = timezone.now(), time.monotonic()
    error: Exception | None = None
    with recording() as records:
        try:
            read()
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            error = exc
        report.calls += len(records)
        write_ledger(None, records, operation, started_at, started, error, LedgerEntry.Direction.IN)
    if error is not None:
        report.error = redact(classify(error).message)[:MAX_ERROR_LENGTH]
    return error


# -- records deleted in the CRM ------------------------------------------------------------------------


def _deletes_due(
    backend: BaseBackend, scanned_at: datetime | None, now: datetime, *, forced: bool
) -> bool:
    if not backend.supports_listing:
        return False
    interval = crmify_settings.PULL_DELETES_INTERVAL
    if forced:
        return True
    return interval is not None and (
        scanned_at is None or scanned_at <= now - timedelta(seconds=interval)
    )


def leads_in_crm() -> LeadQuerySet:
    """The leads the CRM should hold: a CRM id, not a tombstone, not being deleted by the site."""
    return (
        Lead.objects.exclude(external_id="")
        .filter(tombstone=False, deleted_in_crm_at__isnull=True)
        .exclude(sync_state__in=[SyncState.DELETING, SyncState.DELETED])
    )


def _scan_deletes(backend: BaseBackend, report: PollReport) -> datetime | None:
    """List the CRM's ids, confirm the leads it lacks and apply the deletes; when the listing started, or
    None if the CRM failed (the next poll scans again)."""
    started = timezone.now()
    listed: set[str] = set()

    def listing() -> None:
        for page in backend.iter_leads(page_size=backend.listing_page_size):
            listed.update(crm_lead.external_id for crm_lead in page)

    if _recorded("list", report, listing) is not None:
        return None
    report.deletes_scanned = True
    report.listed = len(listed)
    # A lead synced after the listing started may be missing from it only because it is new.
    candidates = leads_in_crm().filter(last_synced_at__lt=started)
    missing = [
        external_id
        for external_id in candidates.values_list("external_id", flat=True).iterator()
        if external_id not in listed
    ]
    report.missing = len(missing)
    if not missing:
        return started
    chosen = random.sample(missing, min(len(missing), MAX_DELETE_CONFIRMATIONS))
    confirmed: list[CrmChange] = []

    def confirm() -> None:
        confirmed.extend(backend.read_changes(chosen))

    if _recorded("read", report, confirm) is not None:
        return None
    gone = [change for change in confirmed if change.deleted or change.merged_into]
    if gone:
        report.inbound.add(apply_changes(gone, via="poll"))
    report.deleted = len(gone)
    return started


# -- the schedule ----------------------------------------------------------------------------------------


@crmify_task
def pull_task(full: bool = False, schedule: str = "") -> dict[str, Any]:
    """One poll (see :func:`poll`), as a task. Queued by :data:`POLLS` with the token of the schedule
    (``schedule``), it first queues the next poll of that schedule, so a worker that dies mid-poll does
    not end it; a schedule that another replaced stops."""
    if schedule and not POLLS.go_on(schedule):
        return PollReport(skipped="another schedule of polls replaced this one").as_result()
    return poll(full=full).as_result()


def poll_interval() -> float | None:
    """Seconds between the polls the workers schedule: ``PULL_INTERVAL``, or None (no schedule) when it is
    None or the backend cannot read changes back."""
    interval = crmify_settings.PULL_INTERVAL
    try:
        return interval if interval is not None and current_backend().supports_pull else None
    except ImproperlyConfigured:
        return None  # the system checks say why the backend cannot be built


#: The polls' own schedule, every ``PULL_INTERVAL`` seconds (``crmify.schedule``).
POLLS = Schedule("poll", pull_task, poll_interval, "the poll", args=(False,))


# -- what polling costs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullCost:
    """What polling costs a day in CRM calls, beside the daily quota (``crmify_check``, the health page).

    A poll that finds no change makes :data:`IDLE_POLL_CALLS` call (changes cost one call more per
    ``pull_page_size`` records). A delete scan lists every lead, one call per ``listing_page_size``, and
    reads the missing ones again (none on a day without deletes, at most
    :data:`MAX_DELETE_CONFIRMATIONS`).
    """

    #: Seconds between polls and between delete scans; None: off.
    interval: float | None
    deletes_interval: float | None
    #: Leads in the CRM (what a delete scan lists) and the listing's page.
    leads: int
    listing_page_size: int
    #: The daily quota (reported by the CRM, else configured), None if unknown.
    quota: int | None
    #: Why there are no polls at all ("" when there are).
    off: str = ""

    @property
    def polls_per_day(self) -> float:
        return 86400 / self.interval if self.interval and not self.off else 0.0

    @property
    def scans_per_day(self) -> float:
        if not self.polls_per_day or not self.deletes_interval:
            return 0.0
        # A scan rides on a poll: never more often than the polls.
        return 86400 / max(self.deletes_interval, self.interval or 0)

    @property
    def calls_per_scan(self) -> int:
        """A scan's listing, one call per page, on a day without deletes."""
        return max(1, math.ceil(self.leads / max(self.listing_page_size, 1)))

    @property
    def calls_per_day(self) -> int:
        return math.ceil(
            self.polls_per_day * IDLE_POLL_CALLS + self.scans_per_day * self.calls_per_scan
        )

    @property
    def share(self) -> float | None:
        """The share of the daily quota polling takes (1.0: all of it), None if the quota is unknown."""
        return self.calls_per_day / self.quota if self.quota else None

    @property
    def heavy(self) -> bool:
        """Whether polling takes more than :data:`HEAVY_SHARE` of the daily quota."""
        return self.share is not None and self.share > HEAVY_SHARE

    def __str__(self) -> str:
        if self.off:
            return f"no polling: {self.off}"
        text = (
            f"{self.calls_per_day:,} calls a day: {self.polls_per_day:,.0f} polls "
            f"(every {self.interval:g} s) x {IDLE_POLL_CALLS} call with no change"
        )
        if self.scans_per_day:
            text += (
                f" + {self.scans_per_day:,.0f} delete scans x {counted(self.calls_per_scan, 'call')}"
                f" ({self.leads:,} leads, "
                f"{self.listing_page_size} a page; up to {MAX_DELETE_CONFIRMATIONS} more for deletes)"
            )
        if self.share is not None:
            text += f"; {self.share:.1%} of the daily quota of {self.quota:,}"
        else:
            text += "; the daily quota is unknown"
        return text


def daily_cost(backend: BaseBackend, quota: int | None) -> PullCost:
    """What polling costs a day with the current settings and leads: one count query, no CRM call. Called
    by ``crmify_check`` and the sync health page (``crmify.health``), which pass the daily quota."""
    off = ""
    if not backend.supports_pull:
        off = f"{backend.display_name} cannot read changes back from the CRM"
    elif crmify_settings.PULL_INTERVAL is None:
        off = "PULL_INTERVAL is None (each crmify_pull run with no change costs 1 call)"
    lists = backend.supports_listing and not off
    return PullCost(
        interval=crmify_settings.PULL_INTERVAL,
        deletes_interval=crmify_settings.PULL_DELETES_INTERVAL if lists else None,
        leads=leads_in_crm().count() if lists else 0,
        listing_page_size=backend.listing_page_size,
        quota=quota,
        off=off,
    )
