"""The figures of the sync health page: the CRM's current state and the series its charts draw.

Read by the admin's health page (:mod:`crmify.admin.health`); no function here calls the CRM. Every series
is one query, bounded by a time window (the ledger's and the leads' ``started_at``/``last_synced_at``
indexes) and aggregated in SQL with ``Trunc*`` and filtered ``Count``, so the page costs the same number of
queries and rows back whatever the size of the ledger: at most one row per minute, hour or day drawn.

:func:`crm_state` is the one home of "what state is the CRM in": the shared quota state kept by the HTTP
backends (``crmify.ratelimit``, through ``api.crm_health``) and the ledger's most recent calls.
:func:`pull_state` is the one home of "how the polls of the CRM go" (the page's "Changes from the CRM"
panel and ``manage.py crmify_check``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Count, F, Q
from django.db.models.functions import TruncDate, TruncHour, TruncMinute
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from crmify import api
from crmify import crm_state as shared_crm_state
from crmify.models import Lead, LedgerEntry, PullCursor
from crmify.poller import PullCost, cursor_name, daily_cost
from crmify.queue import backend_supports_defer

#: How far back the calls-per-minute chart looks, in minutes.
CALL_MINUTES = 60
#: How far back the leads-per-hour and latency charts look, in hours.
LEAD_HOURS = 24
#: How far back the quota chart looks, in days (today included).
QUOTA_DAYS = 7
#: The ledger's last calls within this window say whether the CRM answers.
RECENT = timedelta(minutes=5)
#: Operations that send a lead (a synced lead's last call is one of them).
SEND_OPERATIONS = ("create", "update", "sync")
#: Upper bounds, in seconds, of the commit-to-CRM latency buckets counted in SQL; a percentile is read
#: as the bound of the bucket it falls in (beyond the last: "more than an hour").
LATENCY_BOUNDS = (1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
PERCENTILES = (50, 90, 99)
#: CRM calls only: a refused status change is in the ledger but made no call.
CALLS = ~Q(outcome=LedgerEntry.Outcome.REFUSED)


class CrmStateCode(models.TextChoices):
    REACHABLE = "reachable", gettext_lazy("Reachable")
    UNREACHABLE = "unreachable", gettext_lazy("Unreachable")
    RATE_LIMITED = "rate_limited", gettext_lazy("Rate-limited")
    QUOTA_EXHAUSTED = "quota_exhausted", gettext_lazy("Daily quota used up")
    KEY_REJECTED = "key_rejected", gettext_lazy("API key rejected")
    UNKNOWN = "unknown", gettext_lazy("No recent calls")


@dataclass(frozen=True)
class CrmState:
    """What the health page says about the CRM right now, and why."""

    code: CrmStateCode
    detail: str
    since: datetime | None = None

    @property
    def label(self) -> str:
        return str(self.code.label)

    @property
    def ok(self) -> bool:
        return self.code in (CrmStateCode.REACHABLE, CrmStateCode.UNKNOWN)


def _is_unreachable(entry: Mapping[str, Any]) -> bool:
    """A call that did not reach the CRM or that the CRM could not answer: a connection error or a
    timeout (transient, no HTTP status) or a 5xx."""
    status = entry["http_status"]
    return entry["outcome"] == LedgerEntry.Outcome.TRANSIENT and (status is None or status >= 500)


def crm_state(now: datetime | None = None) -> CrmState:
    """The CRM's state now, from shared state and the ledger; no CRM call, two bounded reads at most.

    In order: the key rejected or the quota used up (the shared state every HTTP call updates), the CRM
    marked down by the workers (``crmify.crm_state``, the outage banner's state), then the ledger's last
    call of the last five minutes: a 429 is rate-limited; a connection error, a timeout or a
    5xx is unreachable (since the first of the failing calls in a row, as far as the window shows).
    """
    now = now or timezone.now()
    try:
        quota = api.crm_health()
    except ImproperlyConfigured:
        quota = None  # the system checks say why the backend cannot be built
    if quota is not None and quota.auth_failed:
        return CrmState(
            CrmStateCode.KEY_REJECTED,
            _("The CRM refused the API key on the last call: check BACKEND_AUTH."),
            quota.updated_at,
        )
    if quota is not None and quota.exhausted:
        until = timezone.localtime(quota.exhausted_until).strftime("%H:%M %Z")
        return CrmState(
            CrmStateCode.QUOTA_EXHAUSTED,
            _("No call is made before %(until)s; leads wait without spending attempts.")
            % {"until": until},
            quota.updated_at,
        )
    outage = shared_crm_state.crm_state()
    if outage.down:
        # What every worker acts on (leads wait, one probe): the banner's state, said the same way here.
        return CrmState(
            CrmStateCode.UNREACHABLE,
            _(
                "The CRM does not answer; leads wait and are sent when it does. Last error: %(error)s"
            )
            % {"error": outage.last_error or _("none recorded")},
            outage.down_since,
        )
    recent = list(
        LedgerEntry.objects.filter(CALLS, started_at__gte=now - RECENT)
        .order_by("-started_at", "-id")
        .values("started_at", "outcome", "http_status", "error")[:20]
    )
    if not recent:
        return CrmState(CrmStateCode.UNKNOWN, _("No call to the CRM in the last five minutes."))
    last = recent[0]
    if last["http_status"] == 429:
        return CrmState(
            CrmStateCode.RATE_LIMITED,
            _("The CRM answered 429 Too Many Requests; calls wait and are retried."),
            last["started_at"],
        )
    if _is_unreachable(last):
        failing = []
        for entry in recent:
            if not _is_unreachable(entry):
                break
            failing.append(entry)
        return CrmState(
            CrmStateCode.UNREACHABLE,
            ngettext(
                "The last call did not get an answer: %(error)s",
                "The last %(count)d calls did not get an answer: %(error)s",
                len(failing),
            )
            % {"count": len(failing), "error": last["error"] or last["http_status"]},
            failing[-1]["started_at"],
        )
    return CrmState(
        CrmStateCode.REACHABLE,
        _("The last call was answered %(status)s.") % {"status": last["http_status"] or "OK"},
        last["started_at"],
    )


# -- series ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Points of a chart, oldest first: ``(label, {key: value})`` with every key present."""

    keys: tuple[str, ...]
    points: list[tuple[str, dict[str, float]]]


def _axis(start: datetime | date, step: Callable[[Any], Any], count: int) -> list[datetime | date]:
    axis = [start]
    for _i in range(count - 1):
        axis.append(step(axis[-1]))
    return axis


def _fill(
    axis: Iterable[datetime | date],
    rows: Iterable[Mapping[str, Any]],
    field: str,
    keys: tuple[str, ...],
    label: Callable[[Any], str],
) -> Series:
    """A point for every slot of ``axis`` (zeros where the query returned no row)."""
    by_slot = {row[field]: row for row in rows}
    return Series(
        keys,
        [
            (label(slot), {key: float(by_slot.get(slot, {}).get(key) or 0) for key in keys})
            for slot in axis
        ],
    )


def _local_minute(now: datetime) -> datetime:
    return timezone.localtime(now).replace(second=0, microsecond=0)


def calls_per_minute(now: datetime | None = None) -> Series:
    """CRM calls per minute over the last hour, by outcome (one query, at most 60 x 3 rows)."""
    last = _local_minute(now or timezone.now())
    first = last - timedelta(minutes=CALL_MINUTES - 1)
    rows = (
        LedgerEntry.objects.filter(CALLS, started_at__gte=first)
        .annotate(minute=TruncMinute("started_at"))
        .values("minute")
        .annotate(
            ok=Count("pk", filter=Q(outcome=LedgerEntry.Outcome.OK)),
            transient=Count("pk", filter=Q(outcome=LedgerEntry.Outcome.TRANSIENT)),
            permanent=Count("pk", filter=Q(outcome=LedgerEntry.Outcome.PERMANENT)),
        )
        .order_by()
    )
    axis = _axis(first, lambda m: m + timedelta(minutes=1), CALL_MINUTES)
    return _fill(axis, rows, "minute", ("ok", "transient", "permanent"), _hh_mm)


def _hh_mm(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _hours(now: datetime | None) -> tuple[datetime, list[datetime | date]]:
    last = _local_minute(now or timezone.now()).replace(minute=0)
    first = last - timedelta(hours=LEAD_HOURS - 1)
    return first, _axis(first, lambda h: h + timedelta(hours=1), LEAD_HOURS)


def leads_per_hour(now: datetime | None = None) -> Series:
    """Leads synced (a send answered OK) and failed (a permanent error) per hour over the last day, each
    lead counted once an hour (one query, at most 24 rows)."""
    first, axis = _hours(now)
    rows = (
        LedgerEntry.objects.filter(started_at__gte=first, lead__isnull=False)
        .annotate(hour=TruncHour("started_at"))
        .values("hour")
        .annotate(
            synced=Count(
                "lead",
                distinct=True,
                filter=Q(outcome=LedgerEntry.Outcome.OK, operation__in=SEND_OPERATIONS),
            ),
            failed=Count("lead", distinct=True, filter=Q(outcome=LedgerEntry.Outcome.PERMANENT)),
        )
        .order_by()
    )
    return _fill(axis, rows, "hour", ("synced", "failed"), _hh_mm)


def latency_per_hour(now: datetime | None = None) -> Series:
    """Commit-to-CRM latency percentiles (p50, p90, p99, in seconds) of the leads synced each hour of the
    last day: from ``queued_at`` (the commit that queued the lead's last change, or its last retry) to
    ``last_synced_at``. Counted in SQL in ``LATENCY_BOUNDS`` buckets (one query, at most 24 rows); a
    percentile is the upper bound of its bucket."""
    first, axis = _hours(now)
    buckets = {
        f"le_{bound}": Count(
            "pk", filter=Q(last_synced_at__lte=F("queued_at") + timedelta(seconds=bound))
        )
        for bound in LATENCY_BOUNDS
    }
    rows = (
        Lead.objects.filter(last_synced_at__gte=first, queued_at__isnull=False)
        .annotate(hour=TruncHour("last_synced_at"))
        .values("hour")
        .annotate(total=Count("pk"), **buckets)
        .order_by()
    )
    keys = tuple(f"p{p}" for p in PERCENTILES)
    percentiles = [{"hour": row["hour"], **_percentiles(row)} for row in rows]
    return _fill(axis, percentiles, "hour", keys, _hh_mm)


def _percentiles(row: Mapping[str, Any]) -> dict[str, float]:
    """Each percentile as the upper bound of the first bucket holding it (beyond the last: 2 hours)."""
    total = row["total"]
    found: dict[str, float] = {}
    for p in PERCENTILES:
        needed = total * p / 100
        bound = next(
            (b for b in LATENCY_BOUNDS if row[f"le_{b}"] >= needed), 2 * LATENCY_BOUNDS[-1]
        )
        found[f"p{p}"] = float(bound)
    return found


def quota_per_day(now: datetime | None = None) -> Series:
    """CRM calls per day over the last week, today included: what each day took of the daily quota
    (one query, at most 7 rows)."""
    today = timezone.localdate(now or timezone.now())
    first = today - timedelta(days=QUOTA_DAYS - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    rows = (
        LedgerEntry.objects.filter(CALLS, started_at__gte=start)
        .annotate(day=TruncDate("started_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(calls=Count("pk"))
        .order_by()
    )
    axis = _axis(first, lambda d: d + timedelta(days=1), QUOTA_DAYS)
    return _fill(axis, rows, "day", ("calls",), lambda d: d.strftime("%a %d"))


def daily_quota() -> int | None:
    """The daily quota: what the CRM last reported, else what the site configured; None if neither."""
    try:
        quota = api.crm_health()
        return (quota.limit if quota else None) or api.crm_backend().daily_quota()
    except ImproperlyConfigured:
        return None


# -- changes from the CRM (crmify.poller) -----------------------------------------------------------------


@dataclass(frozen=True)
class PullState:
    """How the polls of the CRM go: the last poll (its cursor), the next one, and what polling costs."""

    #: The CRM's cursor; None before its first poll.
    cursor: PullCursor | None
    cost: PullCost
    #: When the next poll is due, as far as the schedule says (None: not scheduled, or with the next
    #: task a worker runs).
    next_poll_at: datetime | None
    #: How the polls are scheduled, in one sentence.
    schedule: str


def pull_state() -> PullState | None:
    """The polls' state: the cursor's figures, the schedule and :func:`crmify.poller.daily_cost` beside
    :func:`daily_quota`. No CRM call, two queries at most; None when the backend cannot be built."""
    try:
        backend = api.crm_backend()
    except ImproperlyConfigured:
        return None  # the system checks say why
    cursor = (
        PullCursor.objects.filter(name=cursor_name(backend)).first()
        if backend.supports_pull
        else None
    )
    cost = daily_cost(backend, daily_quota())
    next_poll_at = None
    if cost.off:
        schedule = str(cost)
    elif not backend_supports_defer():
        schedule = _(
            "The Tasks backend cannot run a task later: the CRM is polled only by manage.py "
            "crmify_pull (cron)."
        )
    else:
        schedule = _("Every %(seconds)s s, scheduled by the workers.") % {
            "seconds": f"{cost.interval:g}"
        }
        if cursor is not None and cursor.last_started_at is not None and cost.interval:
            next_poll_at = cursor.last_started_at + timedelta(seconds=cost.interval)
    return PullState(cursor, cost, next_poll_at, schedule)
