"""Backfill: bring a site's existing ``LEAD_MODEL`` rows into the CRM, with a dry run first.

Called by ``manage.py crmify_backfill``, by the task ``crmify.tasks.backfill_chunk_task`` and by the admin's
backfill pages (which call :func:`plan`, :func:`start`, :func:`cancel` and :func:`resume`, nothing else).

A run reads the source rows in primary-key chunks after its checkpoint, maps them, and upserts their leads
in bulk: one query loads a chunk's existing leads, one ``bulk_create`` and one ``bulk_update`` write them.
Each chunk's writes, its sync tasks, its counts and its new checkpoint commit in one transaction, so a
worker killed mid-chunk leaves the previous checkpoint and the chunk is simply done again.

The CRM is listed once per run (500 leads a call) and every new or changed lead whose e-mail the CRM
already has adopts that CRM id, so nothing is created twice and no lead needs its own search; a lead
the listing did not find is marked so the backend skips its lookup by e-mail (``listing_says_absent``).

The changed leads are not sent from the chunk: they are marked pending and queued, one task per chunk
(``process_leads_task``), for the normal worker path (``process_leads``: one batch call per
``max_batch_size`` leads when the backend has batch calls, else ``process_lead`` each). That path claims each
lead (exactly once, even if a site save queues the same lead meanwhile), writes the ledger, classifies
errors, retries with backoff and paces every call through the shared rate limiter; several workers
share the sending of several chunks, while a chunk task holds its transaction only for database work.
Sending inline would hold each chunk (and its checkpoint) hostage to the CRM for ``batch_size /
REQUESTS_PER_SECOND`` seconds and copy the worker's error handling.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from operator import attrgetter
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import F
from django.db.models.base import ModelState
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from crmify.backends.base import BaseBackend, normalise_email, recording
from crmify.compat import task_backends
from crmify.conf import crmify_settings
from crmify.exceptions import MappingError, QuotaExhausted
from crmify.ledger import MAX_ERROR_LENGTH, write_ledger
from crmify.loading import get_lead_model, get_mapper
from crmify.mappers import LeadModelFieldMapper
from crmify.models import MAPPABLE_FIELDS, BackfillRun, Lead
from crmify.queue import crmify_task, enqueue_on_commit, enqueue_task
from crmify.secrets import redact
from crmify.sources import iterate_source_rows
from crmify.tracking import RowChange, decide, map_for_crm, new_lead, track
from crmify.transitions import prepare_insert
from crmify.worker import batch_size, current_backend, process_leads_task

logger = logging.getLogger("crmify")

DEFAULT_BATCH_SIZE = 1000
#: Insightly's largest page; one listing call per this many CRM leads.
LISTING_PAGE_SIZE = 500
#: A chunk whose first new lead collides with one a site save just created is read again this often.
CHUNK_ATTEMPTS = 3

#: What a changed lead's bulk update writes besides its queue state: its values, its fingerprints, its CRM
#: match.
_UPDATE_FIELDS: tuple[str, ...] = (
    *MAPPABLE_FIELDS,
    "custom_fields",
    "fingerprint",
    "source_fingerprint",
    "external_id",
    "synced_values",
    "absent_from_crm_at",
    "backfill_run",
)


class BackfillOptionsError(ValueError):
    """Options that cannot select rows (a date filter on a model without ``date_joined``, a bad size)."""


@dataclass(frozen=True)
class BackfillOptions:
    """Which rows a backfill reads and how many per chunk; stored on the run as JSON."""

    batch_size: int = DEFAULT_BATCH_SIZE
    #: Only rows that have no lead yet.
    only_missing: bool = False
    #: ``date_joined`` on or after this day (the current time zone's midnight).
    joined_after: date | None = None
    #: ``date_joined`` before this day.
    joined_before: date | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise BackfillOptionsError(f"The batch size must be at least 1, not {self.batch_size}.")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("joined_after", "joined_before"):
            data[name] = data[name].isoformat() if data[name] else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackfillOptions:
        def day(value: Any) -> date | None:
            return date.fromisoformat(value) if value else None

        return cls(
            batch_size=int(data.get("batch_size") or DEFAULT_BATCH_SIZE),
            only_missing=bool(data.get("only_missing")),
            joined_after=day(data.get("joined_after")),
            joined_before=day(data.get("joined_before")),
        )

    def queryset(self) -> models.QuerySet[Any]:
        """The ``LEAD_MODEL`` rows these options select; raises :class:`BackfillOptionsError`."""
        model = get_lead_model()
        queryset = model._default_manager.all()
        if self.joined_after or self.joined_before:
            try:
                model._meta.get_field("date_joined")
            except FieldDoesNotExist:
                raise BackfillOptionsError(
                    f"{model._meta.label} has no date_joined field: the joined after/before filters "
                    "cannot be applied to it."
                ) from None
            if self.joined_after:
                queryset = queryset.filter(date_joined__gte=_midnight(self.joined_after))
            if self.joined_before:
                queryset = queryset.filter(date_joined__lt=_midnight(self.joined_before))
        if self.only_missing:
            # One indexed probe of the (source_type, source_id) constraint per row, in the database.
            leads = Lead.objects.filter(
                source_type=ContentType.objects.get_for_model(model),
                source_id=Cast(models.OuterRef("pk"), models.CharField()),
            )
            queryset = queryset.exclude(models.Exists(leads))
        return queryset


def _midnight(day: date) -> datetime:
    value = datetime.combine(day, dt_time.min)
    return timezone.make_aware(value) if timezone.is_naive(value) else value


@dataclass
class BackfillPlan:
    """What a run with these options would do and cost; :func:`plan` builds it without writing anything."""

    scanned: int = 0
    to_create: int = 0
    to_update: int = 0
    unchanged: int = 0
    skipped_tombstones: int = 0
    #: Rows whose mapping fails: they become failed leads with the mapper's message.
    failed: int = 0
    #: Rows whose e-mail the CRM already has (None when the backend cannot list its leads).
    in_crm: int | None = None
    crm_leads: int | None = None
    listing_calls: int = 0
    #: Leads sharing an e-mail with another lead: each costs a lookup before it is sent.
    lookups: int = 0
    api_calls: int = 0
    quota_remaining: int | None = None
    daily_limit: int | None = None
    quota_days: float | None = None
    #: The share of each day's quota kept for live changes (``LIVE_QUOTA_SHARE``) and the calls a day it
    #: leaves to the run.
    live_share: float | None = None
    backfill_calls_per_day: int | None = None
    #: Quota windows (days) the run spans, today's included: it finishes on the last.
    quota_windows: int | None = None
    requests_per_second: float | None = None
    estimated_seconds: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the command's report and the admin's dry-run page."""
        in_crm = (
            "unknown (this backend cannot list its leads; it looks each new lead up instead)"
            if self.in_crm is None
            else f"{self.in_crm:,} (listed {self.crm_leads or 0:,} CRM leads in "
            f"{self.listing_calls:,} {'call' if self.listing_calls == 1 else 'calls'})"
        )
        if self.quota_remaining is None:
            quota = "unknown until the CRM answers a call"
        else:
            quota = f"{self.quota_remaining:,}" + (
                f" of {self.daily_limit:,}" if self.daily_limit else ""
            )
        if self.backfill_calls_per_day is not None and self.backfill_calls_per_day <= 0:
            days = "never: LIVE_QUOTA_SHARE keeps the whole daily quota for live changes"
        elif self.quota_days is None:
            days = "unknown (no daily limit known)"
        else:
            days = f"{self.quota_days:.2f}" if self.quota_days >= 0.01 else "under 0.01"
            if (self.quota_windows or 1) > 1:
                days += (
                    " (the run pauses while the quota resets; it finishes on day "
                    f"{self.quota_windows} counting today)"
                )
        if self.backfill_calls_per_day is not None and self.live_share:
            days += (
                f"; {self.backfill_calls_per_day:,} calls a day, {self.live_share:.0%} of the quota "
                "kept for live sign-ups and changes"
            )
        duration = (
            "no rate limit"
            if self.estimated_seconds is None
            else f"{format_duration(self.estimated_seconds)} at {self.requests_per_second:g} requests/s"
        )
        return [
            ("Rows scanned", f"{self.scanned:,}"),
            ("Leads to create", f"{self.to_create:,}"),
            ("Leads to update", f"{self.to_update:,}"),
            ("Unchanged", f"{self.unchanged:,}"),
            ("Skipped (deleted from the CRM)", f"{self.skipped_tombstones:,}"),
            ("Mapping errors", f"{self.failed:,}"),
            ("Already in the CRM by e-mail", in_crm),
            ("API calls the run will make", f"{self.api_calls:,}"),
            ("CRM quota remaining today", quota),
            ("Days of quota needed", days),
            ("Estimated duration", duration),
        ]


def format_duration(seconds: float) -> str:
    """``"2h05m"``, ``"1m20s"``, ``"7s"``: for reports, progress bars and ETAs."""
    whole = max(math.ceil(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# -- the CRM listing ---------------------------------------------------------------------------------


def list_crm(backend: BaseBackend, *, ledger: bool) -> tuple[dict[str, str], int, int]:
    """``(normalised e-mail -> CRM id, CRM leads seen, calls made)`` from listing the whole CRM.

    The first lead listed for an e-mail wins (the CRM's oldest). ``ledger`` writes a ledger row per
    call (the run); the dry run writes nothing.
    """
    matches: dict[str, str] = {}
    seen = calls = 0
    started_at, started = timezone.now(), time.monotonic()
    with recording() as records:
        try:
            for page in backend.iter_leads(page_size=LISTING_PAGE_SIZE):
                calls += 1
                seen += len(page)
                for crm_lead in page:
                    if crm_lead.email:
                        matches.setdefault(normalise_email(crm_lead.email), crm_lead.external_id)
        except Exception as exc:
            if ledger:
                write_ledger(None, records, "list", started_at, started, exc)
            raise
        if ledger:
            write_ledger(None, records, "list", started_at, started, None)
    return matches, seen, calls


# -- one chunk: what to do with each row -------------------------------------------------------------


@dataclass
class _Chunk:
    """The decisions for one chunk of source rows; :func:`plan` counts them, :func:`run_chunk` writes them."""

    creates: list[Lead] = field(default_factory=list)
    updates: list[Lead] = field(default_factory=list)
    #: Leads whose mapper output moved but whose CRM values did not: only the source fingerprint is written.
    refingerprint: list[Lead] = field(default_factory=list)
    unchanged: int = 0
    tombstones: int = 0
    failures: list[tuple[models.Model, Lead | None, MappingError]] = field(default_factory=list)
    in_crm: int = 0
    #: Leads the backend will look up by e-mail before sending (their e-mail is another lead's too).
    lookups: int = 0


def _decide(
    rows: list[Any],
    mapper: LeadModelFieldMapper,
    matches: Mapping[str, str] | None,
    *,
    using: str,
    lock: bool,
    seen: set[str] | None = None,
) -> _Chunk:
    """Map ``rows`` and decide each one against its lead, loaded for the whole chunk in one query.

    ``lock`` (a run, inside its transaction) locks the chunk's leads, so a worker finishing a sync of one
    of them waits for the chunk to commit instead of having its CRM id overwritten by a stale copy.
    """
    source_type = ContentType.objects.db_manager(using).get_for_model(rows[0])
    leads_query = Lead.objects.using(using).of_rows(rows)
    if lock:
        leads_query = leads_query.select_for_update()
    leads = {lead.source_id: lead for lead in leads_query}
    blank = new_lead(rows[0], source_type=source_type)
    chunk = _Chunk()
    absent: list[Lead] = []  # leads the listing did not find
    now = timezone.now()
    for row in rows:
        lead = leads.get(str(row.pk))
        if lead is not None and lead.tombstone:
            # Deleted from the CRM: only staff bring it back. Unlike a save (which keeps a tombstone's new
            # values), the backfill and the import leave it as it is, unmapped.
            chunk.tombstones += 1
            continue
        mapped = map_for_crm(row, mapper)
        adding = lead is None
        if lead is None:
            lead = _copy_of(blank, source_id=str(row.pk))
        change = decide(lead, mapped, quick=True)
        if isinstance(mapped, MappingError):  # change is MAPPING_FAILED
            chunk.failures.append((row, None if adding else lead, mapped))
            continue
        email = normalise_email(mapped.values.get("email", ""))
        crm_id = matches.get(email) if matches is not None and email else None
        chunk.in_crm += crm_id is not None
        if change in (RowChange.UNCHANGED, RowChange.SOURCE_MOVED):
            if change is RowChange.SOURCE_MOVED:
                chunk.refingerprint.append(lead)
            chunk.unchanged += 1
            continue
        if not lead.external_id and matches is not None:
            if crm_id is not None:
                lead.external_id = crm_id
                lead.synced_values = {}  # nothing of ours is in that record yet: send every value
            else:
                lead.absent_from_crm_at = now
                absent.append(lead)
        (chunk.creates if adding else chunk.updates).append(lead)
    _look_up_shared_emails(absent, chunk, using=using, seen=seen)
    return chunk


def _look_up_shared_emails(
    absent: list[Lead], chunk: _Chunk, *, using: str, seen: set[str] | None
) -> None:
    """Let the backend look up by e-mail the ``absent`` leads whose e-mail another lead of the site
    already has.

    The listing said the CRM lacks these e-mails, but once the first of two users sharing one is sent,
    the CRM has it: the second must find and adopt that record (the worker's path for a lead not marked
    absent), or the run would create a duplicate. One indexed query covers earlier chunks and live
    sign-ups (it asks for each e-mail as written and lower-cased, which covers the usual spellings);
    the dry run, which writes no lead, passes the e-mails of its earlier chunks in ``seen``.
    """
    absent = [lead for lead in absent if lead.email]
    if not absent:
        return
    elsewhere = {
        normalise_email(email)
        for email in Lead.objects.using(using)
        .filter(email__in={e for lead in absent for e in (lead.email, lead.email.lower())})
        .exclude(pk__in=[lead.pk for lead in absent if lead.pk is not None])
        .values_list("email", flat=True)
    }
    if seen is not None:
        elsewhere |= seen
    for lead in absent:
        email = normalise_email(lead.email)
        if email in elsewhere:
            lead.absent_from_crm_at = None
            chunk.lookups += 1
        elsewhere.add(email)  # a later lead of this chunk with the same e-mail looks it up too
    if seen is not None:
        seen |= elsewhere


def _copy_of(blank: Lead, *, source_id: str) -> Lead:
    """A new unsaved lead like ``blank`` for another source row.

    Why not ``new_lead`` per row: ``Lead(**fields)`` looks up every field's default per instance, and
    ``copy.copy`` pickles the instance's state; either cost a fifth of a backfill's time. The copy gets
    its own model state and its own JSON dicts.
    """
    lead = Lead.__new__(Lead)
    lead.__dict__.update(blank.__dict__)
    lead._state = ModelState()
    lead._state.fields_cache = dict(blank._state.fields_cache)  # the source type, already loaded
    lead.source_id = source_id
    lead.custom_fields, lead.synced_values, lead.legacy_values = {}, {}, {}
    return lead


# -- the dry run -------------------------------------------------------------------------------------


def plan(options: BackfillOptions) -> BackfillPlan:
    """What a run with ``options`` would do and cost. Writes nothing; sends only the CRM listing.

    Called by the command's ``--dry-run`` and the admin's dry-run step. Raises
    :class:`BackfillOptionsError` for options that cannot select rows, and the backend's errors if the
    listing fails.
    """
    queryset = options.queryset()
    backend = current_backend()
    result = BackfillPlan(options=options.to_json())
    matches: dict[str, str] | None = None
    if backend.supports_listing:
        matches, result.crm_leads, result.listing_calls = list_crm(backend, ledger=False)
        result.in_crm = 0
    mapper = get_mapper()
    using = router.db_for_write(Lead)
    seen: set[str] = set()
    per_call = batch_size(backend)
    send_calls = 0
    for rows in iterate_source_rows(mapper, queryset, options.batch_size):
        chunk = _decide(rows, mapper, matches, using=using, lock=False, seen=seen)
        # A chunk's leads go to the worker together: one call per lead, or per batch of them.
        send_calls += math.ceil((len(chunk.creates) + len(chunk.updates)) / per_call)
        result.scanned += len(rows)
        result.to_create += len(chunk.creates)
        result.to_update += len(chunk.updates)
        result.unchanged += chunk.unchanged
        result.skipped_tombstones += chunk.tombstones
        result.failed += len(chunk.failures)
        result.lookups += chunk.lookups
        if result.in_crm is not None:
            result.in_crm += chunk.in_crm
    # One call per lead sent (or per batch of them): a match from the listing is an update, no match a
    # create without a lookup, except for a lead sharing its e-mail with another, looked up first.
    result.api_calls = result.listing_calls + send_calls + result.lookups
    _add_costs(result, backend)
    return result


def _add_costs(result: BackfillPlan, backend: BaseBackend) -> None:
    """Fill in the quota and duration figures of ``result`` from the backend's last known quota."""
    state = backend.health()
    if state is not None:
        result.quota_remaining = state.remaining
    daily = backend.daily_quota() or (state.limit if state is not None else None)
    result.daily_limit = int(daily) if daily else None
    if result.daily_limit:
        _forecast_days(result, result.daily_limit, crmify_settings.LIVE_QUOTA_SHARE)
    rate = backend.requests_per_second()
    if rate:
        result.requests_per_second = rate
        result.estimated_seconds = result.api_calls / rate


def _forecast_days(result: BackfillPlan, daily: int, live_share: float) -> None:
    """Days (quota windows) the run needs when each day it may spend ``daily`` less the share kept for
    live changes, as the worker's pause enforces (``QuotaState.paused_until``), starting with what that
    share leaves of today's remaining quota."""
    per_day = daily - math.ceil(daily * live_share)
    result.live_share = live_share
    result.backfill_calls_per_day = per_day
    if per_day <= 0:
        return  # the share kept for live changes leaves the backfill nothing: rows() says so
    result.quota_days = result.api_calls / per_day
    today = per_day
    if result.quota_remaining is not None:
        today = min(per_day, max(result.quota_remaining - (daily - per_day), 0))
    left = result.api_calls - today
    result.quota_windows = 1 if left <= 0 else 1 + math.ceil(left / per_day)


# -- runs --------------------------------------------------------------------------------------------


def start(
    options: BackfillOptions,
    user: Any = None,
    *,
    report: BackfillPlan | None = None,
    enqueue: bool = True,
) -> BackfillRun:
    """Record a new run and queue its first chunk (unless ``enqueue`` is False: the command's ``--wait``
    processes the chunks itself). ``report`` is the dry run staff confirmed, kept on the run."""
    queryset = options.queryset()
    with transaction.atomic():
        run = BackfillRun.objects.create(
            options=options.to_json(),
            total_estimate=queryset.count(),
            report=report.to_json() if report is not None else None,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        if enqueue:
            _enqueue_chunk(run)
    return run


def cancel(run: BackfillRun) -> bool:
    """Stop ``run`` after its current chunk; False if it was not pending or running.

    A chunk in progress rolls back rather than commit past the cancel (see :func:`run_chunk`); the leads
    queued by earlier chunks are still sent: they are ordinary pending leads now.
    """
    cancelled = BackfillRun.objects.filter(
        pk=run.pk, state__in=[BackfillRun.State.PENDING, BackfillRun.State.RUNNING]
    ).update(state=BackfillRun.State.CANCELLED, updated_at=timezone.now())
    run.refresh_from_db()
    return bool(cancelled)


def resume(run: BackfillRun) -> bool:
    """Go on from ``run``'s last checkpoint: after a cancel, a failure, or a worker that died.

    Also safe on a run that still looks running (its worker was killed): the queued chunk names the
    checkpoint it starts from, so if the old chain is alive after all only one of the two goes on.
    False for a finished run.
    """
    with transaction.atomic():
        resumed = (
            BackfillRun.objects.filter(pk=run.pk)
            .exclude(state=BackfillRun.State.FINISHED)
            .update(
                state=BackfillRun.State.RUNNING,
                last_error="",
                finished_at=None,
                updated_at=timezone.now(),
            )
        )
        run.refresh_from_db()
        if resumed:
            _enqueue_chunk(run)
    return bool(resumed)


def _enqueue_chunk(run: BackfillRun) -> None:
    enqueue_on_commit(
        backfill_chunk_task,
        run.pk,
        run.checkpoint,
        what=f"backfill run {run.pk}'s next chunk; resume the run to go on",
    )


@dataclass(frozen=True)
class ChunkResult:
    """What :func:`run_chunk` did: rows read, whether another chunk follows, the run's state after it,
    and when the CRM's quota lets it go on if it is waiting for one."""

    scanned: int
    more: bool
    state: str
    checkpoint: str
    waiting_until: datetime | None = None


class _Superseded(Exception):
    """The run moved on (cancelled, finished, or another task did this chunk): roll this one back."""


class _Collision(Exception):
    """A site save created a lead for a row of this chunk while it was being read: read it again."""


def run_chunks(run_id: int, checkpoint: str | None = None) -> ChunkResult:
    """Do the chunk that starts at ``checkpoint`` and queue the next one. The chunk task's body.

    On the immediate Tasks backend a queued chunk would run inside this one's ``on_commit``, one stack
    level deeper per chunk: there the chunks run here in a loop instead.
    """
    inline = type(task_backends[crmify_settings.TASK_BACKEND]).__name__ == "ImmediateBackend"
    result = run_chunk(run_id, checkpoint, chain=not inline)
    while inline and result.more:
        if result.waiting_until is not None:
            # Nothing would wake this run up: stop it where staff can see why and resume it.
            _fail(run_id, "The CRM's daily quota is used up: resume the run after it resets.")
            return ChunkResult(0, False, BackfillRun.State.FAILED, result.checkpoint)
        result = run_chunk(run_id, result.checkpoint, chain=False)
    return result


@crmify_task
def backfill_chunk_task(run_id: int, checkpoint: str | None = None) -> dict[str, Any]:
    """One chunk of a backfill run, starting at ``checkpoint``; queues the next (see :func:`run_chunks`)."""
    return asdict(run_chunks(run_id, checkpoint))


def _fail(run_id: int, message: str) -> None:
    """Mark an active run failed with ``message`` (secrets removed) for staff to read and resume."""
    BackfillRun.objects.filter(
        pk=run_id, state__in=[BackfillRun.State.PENDING, BackfillRun.State.RUNNING]
    ).update(
        state=BackfillRun.State.FAILED,
        last_error=redact(message)[:MAX_ERROR_LENGTH],
        updated_at=timezone.now(),
    )


def run_chunk(run_id: int, checkpoint: str | None = None, *, chain: bool = True) -> ChunkResult:
    """Process the next chunk of run ``run_id``: map, upsert, queue syncs, move the checkpoint.

    Called by :func:`run_chunks` (the task) and by the command's ``--wait`` loop (``chain=False``: the
    caller runs the next chunk itself). ``checkpoint`` is where the caller believes the run stands; a
    task queued before a resume or twice by a broker finds the run elsewhere and does nothing. An error
    fails the run (with the message kept for staff) and is raised; :func:`resume` goes on.
    """
    run = BackfillRun.objects.get(pk=run_id)
    if not run.is_active or (checkpoint is not None and checkpoint != run.checkpoint):
        return ChunkResult(0, False, run.state, run.checkpoint)
    try:
        backend = current_backend()
        if run.crm_matches is None and backend.supports_listing:
            # Outside the chunk's transaction: listing a big CRM takes minutes at the rate limit, and
            # the database must not stay locked for them.
            try:
                matches, _, calls = list_crm(backend, ledger=True)
            except QuotaExhausted as exc:
                return _wait_for_quota(run, exc.resets_at, chain=chain)
            BackfillRun.objects.filter(pk=run.pk).update(crm_matches=matches, listing_calls=calls)
            run.crm_matches = matches
        for attempt in range(CHUNK_ATTEMPTS):
            try:
                return _write_chunk(run, chain=chain)
            except _Collision:
                if attempt == CHUNK_ATTEMPTS - 1:
                    raise IntegrityError(
                        "New leads kept colliding with leads created by site saves."
                    ) from None
    except _Superseded:
        run.refresh_from_db()
        return ChunkResult(0, False, run.state, run.checkpoint)
    except Exception as exc:
        logger.exception("crmify: backfill run %s failed", run_id)
        _fail(run_id, f"{type(exc).__name__}: {exc}")
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_for_quota(run: BackfillRun, resets_at: datetime, *, chain: bool) -> ChunkResult:
    """Park ``run`` until the CRM's daily quota resets, instead of failing it.

    The run stays running with the reason on it (the admin's progress page shows it); its chunk task is
    queued again for ``resets_at``. A caller doing the chunks itself (``chain=False``: the command's
    ``--wait``) gets ``waiting_until`` and waits. A Tasks backend that cannot defer fails the run, which
    staff resume after the reset.
    """
    when = timezone.localtime(resets_at).strftime("%Y-%m-%d %H:%M %Z")
    note = f"Waiting for the CRM's daily quota: the run goes on at {when}."
    if chain and not enqueue_task(
        backfill_chunk_task,
        run.pk,
        run.checkpoint,
        run_after=resets_at,
        what=f"backfill run {run.pk} after the quota reset",
    ):
        raise QuotaExhausted(
            f"The CRM's daily quota is used up until {when}, and the Tasks backend cannot run the "
            "next chunk later: resume the run then.",
            resets_at=resets_at,
        )
    BackfillRun.objects.filter(pk=run.pk).update(
        state=BackfillRun.State.RUNNING, last_error=note, updated_at=timezone.now()
    )
    return ChunkResult(0, True, BackfillRun.State.RUNNING, run.checkpoint, waiting_until=resets_at)


def _write_chunk(run: BackfillRun, *, chain: bool) -> ChunkResult:
    """One chunk in one transaction; raises :class:`_Superseded` or :class:`_Collision` to roll back."""
    options = BackfillOptions.from_json(run.options)
    mapper = get_mapper()
    using = router.db_for_write(Lead)
    model = get_lead_model()
    after = model._meta.pk.to_python(run.checkpoint) if run.checkpoint else None
    with transaction.atomic(using=using):
        now = timezone.now()
        # The first statement writes the run's row: it takes SQLite's write lock up front (no deadlock
        # upgrading later) and PostgreSQL's row lock, so two tasks of one run never overlap.
        if not BackfillRun.objects.filter(
            pk=run.pk,
            checkpoint=run.checkpoint,
            state__in=[BackfillRun.State.PENDING, BackfillRun.State.RUNNING],
        ).update(
            state=BackfillRun.State.RUNNING,
            started_at=Coalesce(F("started_at"), now),
            last_error="",
            updated_at=now,
        ):
            raise _Superseded
        rows = next(
            iterate_source_rows(mapper, options.queryset(), options.batch_size, after=after), []
        )
        counts = dict.fromkeys(BackfillRun.COUNTS, 0)
        if rows:
            chunk = _decide(rows, mapper, run.crm_matches, using=using, lock=True)
            _save(chunk, now, using, run.pk)
            for row, lead, error in chunk.failures:
                # Rare, so row by row: the lead records the mapper's message as a save would.
                track(row, mapper=mapper, lead=lead or new_lead(row, using), mapped=error)
            counts.update(
                scanned=len(rows),
                created=len(chunk.creates),
                updated=len(chunk.updates),
                unchanged=chunk.unchanged,
                skipped_tombstones=chunk.tombstones,
                failed=len(chunk.failures),
            )
        more = len(rows) == options.batch_size
        checkpoint = str(rows[-1].pk) if rows else run.checkpoint
        finished = {} if more else {"state": BackfillRun.State.FINISHED, "finished_at": now}
        BackfillRun.objects.filter(pk=run.pk).update(
            checkpoint=checkpoint,
            **{name: F(name) + value for name, value in counts.items()},
            **finished,
        )
        run.checkpoint = checkpoint
        if more and chain:
            _enqueue_chunk(run)
    return ChunkResult(
        len(rows),
        more,
        BackfillRun.State.RUNNING if more else BackfillRun.State.FINISHED,
        checkpoint,
    )


def insert_leads(leads: list[Lead], using: str, now: datetime) -> None:
    """INSERT new ``leads`` with one ``executemany``; their primary keys are not read back.

    Why not ``bulk_create``: it runs every cell through the field's preparation chain, 36 columns a lead,
    which was over half of a backfill's time (``bench/backfill.py``). The cells of new leads hold few
    distinct values (defaults, the status, the chunk's time), so each distinct value of a column is
    prepared once here; only non-empty JSON values (dicts) are prepared per lead.
    """
    connection = connections[using]
    fields = [
        model_field for model_field in Lead._meta.concrete_fields if not model_field.primary_key
    ]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(Lead._meta.db_table)} "
        f"({', '.join(quote(str(model_field.column)) for model_field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    for lead in leads:
        lead.created_at = lead.updated_at = now  # what auto_now(_add) would set
    columns = []
    for model_field in fields:
        values = list(map(attrgetter(model_field.attname), leads))
        if isinstance(model_field, models.JSONField):  # dicts: not hashable; most are empty
            empty = model_field.get_db_prep_save({}, connection)
            prepare = model_field.get_db_prep_save
            columns.append(
                [empty if value == {} else prepare(value, connection) for value in values]
            )
        else:
            prepared = {
                value: model_field.get_db_prep_save(value, connection) for value in set(values)
            }
            columns.append([prepared[value] for value in values])
    with connection.cursor() as cursor:
        cursor.executemany(sql, list(zip(*columns, strict=True)))


def _save(chunk: _Chunk, now: datetime, using: str, run_id: int) -> None:
    """Write a chunk's leads in bulk and queue each new or changed one for the worker, each marked as
    queued by run ``run_id`` (its progress page counts them until they are delivered)."""
    for lead in (*chunk.creates, *chunk.updates):
        lead.backfill_run_id = run_id
    prepare_insert(chunk.creates, now)
    if chunk.creates:
        try:
            with transaction.atomic(using=using):
                insert_leads(chunk.creates, using, now)
        except IntegrityError:
            raise _Collision from None
    if chunk.updates:
        # As save_if_changed: a lead a worker is sending stays with it (the worker sees the new
        # fingerprint and queues it again); any other becomes pending with a fresh count of attempts.
        Lead.objects.using(using).mark_changed_in_bulk(chunk.updates, _UPDATE_FIELDS, now)
    if chunk.refingerprint:
        Lead.objects.using(using).bulk_update(chunk.refingerprint, ["source_fingerprint"])
    lead_ids = [lead.pk for lead in chunk.updates]
    if chunk.creates:
        lead_ids += (
            Lead.objects.using(using)
            .filter(
                source_type=chunk.creates[0].source_type_id,
                source_id__in=[lead.source_id for lead in chunk.creates],
            )
            .values_list("pk", flat=True)
        )
    # In the order the rows were read: of two leads sharing an e-mail, the first is sent first and the
    # second adopts its CRM record (see _look_up_shared_emails).
    lead_ids.sort()
    if lead_ids:
        # One task for the chunk's leads, not one each: writing a thousand task rows would cost more
        # than the whole chunk's upsert. The leads are pending, so one the task never reaches is
        # queued again by the sweeper.
        enqueue_on_commit(
            process_leads_task,
            lead_ids,
            using=using,
            what=f"{len(lead_ids)} backfilled leads; the sweeper will retry",
        )
