"""Runs one lead's CRM work: claim it, call the backend, write the ledger, set the next state.

Called by the task ``crmify.tasks.process_lead_task`` on any Tasks backend, and by ``crmify.api.sync_now``
inside a request when staff ask. A claim is one conditional UPDATE, so two workers never work on one lead at
once (SQLite and PostgreSQL alike). Each finishing write is conditional on the claim too: a claim given back
by the sweeper (a worker that died) is never overwritten by a late finisher.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from crmify import crm_state
from crmify.backends import build_backend
from crmify.backends.base import BaseBackend, BatchItem, recording
from crmify.conf import crmify_settings
from crmify.exceptions import PermanentBackendError
from crmify.ledger import MAX_ERROR_LENGTH, classify, write_batch_ledger, write_ledger
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.queue import crmify_task, enqueue_on_commit, enqueue_task, higher_priority_waiting
from crmify.ratelimit import QuotaShare, spending
from crmify.secrets import redact

if TYPE_CHECKING:
    from django.tasks import Task

logger = logging.getLogger("crmify")

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _PerThread(threading.local):
    #: The backend built for the settings keyed by the first item.
    backend: tuple[tuple[str, str, str], BaseBackend] | None = None


_local = _PerThread()


class SyncOutcome(enum.StrEnum):
    """What :func:`process_lead` (and ``crmify.api.sync_now``) did with a lead. Each member is its
    value as a string too (``SyncOutcome.SYNCED == "synced"``), as these outcomes were before."""

    #: Sent; the CRM has the lead's values.
    SYNCED = "synced"
    #: Nothing to send: the CRM already has what the lead holds.
    UNCHANGED = "unchanged"
    #: Deleted from the CRM (or it had no record of the lead).
    DELETED = "deleted"
    #: The CRM call failed and will be tried again (``next_attempt_at``).
    RETRYING = "retrying"
    #: Failed for good (or mapping failed); ``last_error`` says why.
    FAILED = "failed"
    #: Nothing done: a worker holds the lead, or it is not waiting for this work (or not due yet).
    SKIPPED = "skipped"
    #: No such lead.
    MISSING = "missing"
    #: Not sent: the CRM does not answer; the lead waits and is sent when it does (not an attempt).
    WAITING = "waiting"


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number ``attempt``: the CRM's ``Retry-After`` when it gave one, else
    exponential from ``RETRY_BACKOFF_BASE`` up to ``RETRY_BACKOFF_MAX`` with jitter (so a crowd of
    failed leads does not come back at the same instant)."""
    if retry_after is not None:
        return max(float(retry_after), 0.0)
    ceiling = min(
        crmify_settings.RETRY_BACKOFF_MAX,
        crmify_settings.RETRY_BACKOFF_BASE * 2 ** max(attempt - 1, 0),
    )
    return random.uniform(ceiling / 2, ceiling)


def current_backend() -> BaseBackend:
    """The configured backend as the engine holds it (``crmify.backends.build_backend``: a plain class
    is wrapped), built once per thread for the current settings.

    Reusing it across leads keeps an HTTP backend's pooled session (and its connections) alive; a
    change of ``BACKEND``, ``BACKEND_OPTIONS`` or ``BACKEND_AUTH`` builds a new one.
    """
    key = (
        crmify_settings.BACKEND,
        repr(crmify_settings.BACKEND_OPTIONS),
        repr(sorted(crmify_settings.BACKEND_AUTH.items())),
    )
    cached = _local.backend
    if cached is None or cached[0] != key:
        cached = (key, build_backend())
        _local.backend = cached
    return cached[1]


def process_lead(lead_id: int, *, burst: bool = False, probe: bool = False) -> SyncOutcome:
    """Do whatever ``lead_id`` is waiting for (a sync or a delete) and say what happened.

    With ``burst`` (the queued task) and a backend with batch calls, other leads waiting to be sent go
    with this one in one batch call (see :func:`batch_size`); staff's "Sync now" sends the lead alone.
    While the CRM is down (``crmify.crm_state``) the lead waits for it without a call, unless it is the
    ``probe`` (:func:`probe_crm`).
    """
    state = Lead.objects.filter(pk=lead_id).values_list("sync_state", flat=True).first()
    if state is None:
        return SyncOutcome.MISSING
    if state == SyncState.DELETING:
        return _run_delete(lead_id, probe)
    token = Lead.objects.filter(pk=lead_id).claim_for_sync()
    if token is None:
        return SyncOutcome.SKIPPED
    if not probe and crm_state.crm_state().down:
        return _wait_for_crm(lead_id, token, SyncState.PENDING)
    size = batch_size(current_backend()) if burst else 1
    # A burst of saves queues a task per lead: the first task to run takes the others waiting with it
    # (their own tasks find them claimed or sent and skip them), so a burst costs one call per batch.
    if size > 1 and Lead.objects.exclude(pk=lead_id).claim_batch_for_sync(size - 1, token):
        return _send_batch(token)[lead_id]
    return _send_one(lead_id, token)


def batch_size(backend: BaseBackend) -> int:
    """How many leads the worker sends in one call: ``max_batch_size`` for a backend with batch calls
    (``supports_batch``), else 1 (one ``sync_lead`` per lead, as always)."""
    return max(backend.max_batch_size, 1) if backend.supports_batch else 1


def process_leads(lead_ids: list[int]) -> Counter[str]:
    """Sync or delete each of ``lead_ids``, in groups of :func:`batch_size` (one batch call each when the
    backend has batch calls, else one call per lead as if queued alone); how many leads ended in each
    outcome. The backfill's chunk task runs this.

    Between groups it checks the backfill's share of the quota: when that is spent the rest waits as one
    deferred task (:func:`wait_for_quota`); when live work waits in the queue the rest goes back to the
    queue behind it (:func:`yield_to_live_work`).
    """
    size = batch_size(current_backend())
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for start in range(0, len(lead_ids), size):
        rest = lead_ids[start:]
        if (pause := quota_pause(QuotaShare.BACKFILL)) is not None:
            outcomes["waiting for the quota"] += wait_for_quota(rest, *pause)
            break
        if start and yield_to_live_work(rest, started):
            outcomes["handed back to the queue"] += len(rest)
            break
        outcomes.update(_process_group(lead_ids[start : start + size], size))
    return outcomes


def _process_group(group: list[int], size: int) -> Counter[SyncOutcome]:
    """Send ``group`` (at most ``size`` leads): claimed at once and sent in one batch call when ``size``
    > 1; a lead that could not be claimed with it (a delete, a lead held or not due) goes alone."""
    if size == 1:
        return Counter(process_lead(lead_id) for lead_id in group)
    token = Lead.objects.filter(pk__in=group).claim_batch_for_sync(size)
    sent = _send_batch(token) if token else {}
    outcomes = Counter(sent.values())
    outcomes.update(process_lead(lead_id) for lead_id in group if lead_id not in sent)
    return outcomes


@crmify_task
def process_lead_task(lead_id: int) -> str:
    """Sync or delete one lead, whichever it is waiting for (queued by :func:`enqueue_lead`), with a
    burst of other waiting leads when the backend has batch calls.

    A live change: it spends the live share of the quota, and waits only when the quota is used up.
    """
    if (pause := quota_pause(QuotaShare.LIVE)) is not None:
        wait_for_quota([lead_id], *pause)
        return SyncOutcome.RETRYING
    return process_lead(lead_id, burst=True)


#: Below every other crmify task (priority 0): a free worker takes a live sign-up before a backfill chunk.
BACKFILL_PRIORITY = -10
#: The longest a backfill send task holds its worker when the Tasks backend cannot say whether live work
#: waits (any backend but the database one): then a sign-up waits at most this long for a worker.
BACKFILL_SLICE_SECONDS = 30.0
#: The chunks waiting for the quota wake up spread over this many seconds after its reset, so the workers
#: do not all reach for the CRM (and the database) at the same instant.
QUOTA_WAKE_SPREAD = 5.0


def _at_backfill_priority(task: Task[_P, _R]) -> Task[_P, _R]:
    """``task`` queued at :data:`BACKFILL_PRIORITY` wherever it is enqueued."""
    return task.using(priority=BACKFILL_PRIORITY)


@_at_backfill_priority
@crmify_task
def process_leads_task(lead_ids: list[int]) -> dict[str, int]:
    """Sync or delete the leads: one task for a backfill chunk's leads (``crmify.backfill``), sent by
    :func:`process_leads` (one batch call per ``max_batch_size`` leads, or one call each).

    Each lead is claimed, recorded in the ledger and retried (queued one by one) as if queued alone; a
    lead this task never reaches (its worker died) stays pending and the sweeper queues it. The calls
    count against the backfill's share of the quota.
    """
    with spending(QuotaShare.BACKFILL):
        return dict(process_leads(lead_ids))


def quota_pause(share: QuotaShare) -> tuple[datetime, str] | None:
    """``(until, why)`` when calls counted against ``share`` must wait for the CRM's quota, else None.

    Read from the backend's shared quota state (no I/O but the cache): the live share stops only when
    the quota is used up, the backfill's when no more than ``LIVE_QUOTA_SHARE`` of the daily limit is left.
    """
    state = current_backend().health()
    if state is None:
        return None
    reserve = crmify_settings.LIVE_QUOTA_SHARE if share is QuotaShare.BACKFILL else 0.0
    return state.paused_until(reserve)


def wait_for_quota(lead_ids: list[int], until: datetime, why: str) -> int:
    """Park ``lead_ids`` until ``until`` without claiming them or writing a ledger row, and queue them again
    as one task for then, a few seconds of jitter later; how many leads were parked.

    One lead (a live change) goes back as ``process_lead_task``, several (a chunk) as one
    ``process_leads_task``. The leads say why and when on the changelist (``last_error``, retrying). A
    Tasks backend that cannot defer queues nothing: the sweeper queues the leads once they are due.
    """
    now = timezone.now()
    moved = Lead.objects.filter(pk__in=lead_ids).wait_for_quota_in_bulk(
        until=until, error=redact(why)[:MAX_ERROR_LENGTH], now=now
    )
    if not moved:
        return 0  # nothing of these leads waits to be sent (synced or claimed meanwhile)
    run_after = until + timedelta(seconds=random.uniform(0, QUOTA_WAKE_SPREAD))
    if len(lead_ids) == 1:
        enqueue_lead(lead_ids[0], run_after=run_after)
    else:
        enqueue_task(
            process_leads_task,
            lead_ids,
            run_after=run_after,
            what=f"{len(lead_ids)} leads after the quota reset; the sweeper will retry",
        )
    return moved


def yield_to_live_work(lead_ids: list[int], started: float) -> bool:
    """Hand ``lead_ids`` (the rest of a backfill chunk) back to the queue, behind the live work waiting
    there, or after :data:`BACKFILL_SLICE_SECONDS`; True when they were. One task row per hand-back; the
    leads stay pending (the sweeper queues them if that enqueue fails)."""
    if not (
        higher_priority_waiting(BACKFILL_PRIORITY)
        or time.monotonic() - started > BACKFILL_SLICE_SECONDS
    ):
        return False
    return enqueue_task(
        process_leads_task,
        lead_ids,
        what=f"{len(lead_ids)} backfilled leads; the sweeper will retry",
    )


#: The tasks that carry leads to the worker: a lead id, or a list of them, is each one's first argument.
LEAD_TASKS = (process_lead_task, process_leads_task)


def enqueue_lead(lead_id: int, run_after: datetime | None = None, *, reraise: bool = False) -> bool:
    """Queue the worker for ``lead_id`` now, or at ``run_after`` when the Tasks backend can defer.

    Called by the worker (follow-ups and retries) and the sweeper. Returns False when nothing was
    queued: the backend cannot defer (the sweeper will pick the lead up when it is due) or the enqueue
    failed (logged; the sweeper retries it).
    """
    return enqueue_task(
        process_lead_task,
        lead_id,
        run_after=run_after,
        reraise=reraise,
        what=f"lead {lead_id}; the sweeper will retry",
    )


def enqueue_lead_on_commit(lead_id: int, using: str | None = None) -> None:
    """Queue ``lead_id``'s sync or delete with the current transaction (see
    ``crmify.queue.enqueue_on_commit``); called by the tracking code and the public API. A lead whose
    enqueue fails stays pending for the sweeper."""
    enqueue_on_commit(
        process_lead_task, lead_id, using=using, what=f"lead {lead_id}; the sweeper will retry"
    )


def _send_one(lead_id: int, token: str) -> SyncOutcome:
    """Send the lead claimed with ``token`` by itself (``sync_lead``) and finish it."""
    lead = Lead.objects.get(pk=lead_id)
    if _unchanged(lead):
        _finish_sync(lead, token, lead.external_id)
        return SyncOutcome.UNCHANGED
    external_id, error = _call(lead, "sync", lambda backend: backend.sync_lead(lead))
    return _finish_sent(lead, token, external_id, error)


def _send_batch(token: str) -> dict[int, SyncOutcome]:
    """Send every lead claimed with ``token`` in one ``sync_leads`` call and finish each by its own
    result, as :func:`_send_one` finishes one lead: the outcome of each, by lead id."""
    leads = list(Lead.objects.held(token).order_by("queued_at", "pk"))
    if crm_state.crm_state().down:
        return {lead.pk: _wait_for_crm(lead.pk, token, SyncState.PENDING) for lead in leads}
    outcomes: dict[int, SyncOutcome] = {}
    to_send = []
    for lead in leads:
        if _unchanged(lead):
            _finish_sync(lead, token, lead.external_id)
            outcomes[lead.pk] = SyncOutcome.UNCHANGED
        else:
            to_send.append(lead)
    if to_send:
        items = _call_batch(to_send, "sync", lambda backend: backend.sync_leads(to_send))
        for lead, item in zip(to_send, items, strict=True):
            outcomes[lead.pk] = _finish_sent(lead, token, item.result, item.error)
    return outcomes


def _unchanged(lead: Lead) -> bool:
    """Whether the CRM already holds what ``lead`` would send (nothing to call)."""
    return bool(
        lead.external_id and lead.fingerprint and lead.fingerprint == lead.synced_fingerprint
    )


def _finish_sent(
    lead: Lead, token: str, external_id: Any, error: BaseException | None
) -> SyncOutcome:
    """Finish a claimed lead by what its send answered: the CRM id, or the error (one lead of a batch
    is finished exactly as a lead sent alone)."""
    if error is None and not external_id:
        error = PermanentBackendError("The backend's sync_lead returned no CRM id.")
    if error is not None:
        return _finish_failure(lead, token, error, retry_state=SyncState.RETRYING)
    _finish_sync(lead, token, str(external_id))
    return SyncOutcome.SYNCED


def _run_delete(lead_id: int, probe: bool) -> SyncOutcome:
    token = Lead.objects.filter(pk=lead_id).claim_for_delete()
    if token is None:
        return SyncOutcome.SKIPPED
    if not probe and crm_state.crm_state().down:
        return _wait_for_crm(lead_id, token, SyncState.DELETING)
    lead = Lead.objects.get(pk=lead_id)
    external_id = lead.external_id
    if not external_id and _may_be_in_crm(lead):
        external_id, error = _call(lead, "lookup", lambda backend: backend.find_lead_id(lead))
        if error is not None:
            return _finish_failure(lead, token, error, retry_state=SyncState.DELETING)
    if external_id:
        deleted, error = _call(lead, "delete", lambda backend: backend.delete_lead(external_id))
        if error is None and deleted is False:
            error = PermanentBackendError(f"The CRM did not delete lead {lead.external_id}.")
        if error is not None:
            return _finish_failure(lead, token, error, retry_state=SyncState.DELETING)
    Lead.objects.filter(pk=lead_id).held(token).finish_deleted()
    return SyncOutcome.DELETED


def _may_be_in_crm(lead: Lead) -> bool:
    """Whether a lead without a CRM id was ever sent (a create that timed out may have made it) and the
    backend can look for it."""
    return current_backend().supports_lookup and lead.ledger.exists()


def recorded_call(
    lead: Lead | None,
    operation: str,
    call: Callable[[BaseBackend], Any],
    direction: str = LedgerEntry.Direction.OUT,
) -> tuple[Any, Exception | None]:
    """Call the backend and keep a ledger of it; hand back (result, error). Also ``api.fetch_from_crm``,
    and ``crmify.webhook_worker`` for a read made for no one lead (``lead`` None, ``direction`` in)."""
    started_at = timezone.now()
    started = time.monotonic()
    result: Any = None
    error: Exception | None = None
    with recording() as records:
        try:
            result = call(current_backend())
        except Exception as exc:
            error = exc
        write_ledger(lead, records, operation, started_at, started, error, direction)
    _note_crm_answer(error, lead.pk if lead is not None else None)
    return result, error


def _call(
    lead: Lead, operation: str, call: Callable[[BaseBackend], Any]
) -> tuple[Any, BaseException | None]:
    """:func:`recorded_call`, failing the lead and the task on a configuration error."""
    result, error = recorded_call(lead, operation, call)
    _stop_on_configuration_error([lead], error)
    return result, error


def _call_batch(
    leads: list[Lead], operation: str, call: Callable[[BaseBackend], Sequence[BatchItem]]
) -> list[BatchItem]:
    """Make one batch call for ``leads`` and keep its ledger (a row per lead per CRM call, linked by a
    batch id); one :class:`BatchItem` per lead, in order. An error that failed the whole call is each
    lead's error; a configuration error fails them all and the task, as for one lead."""
    started_at = timezone.now()
    started = time.monotonic()
    error: Exception | None = None
    items: list[BatchItem] = []
    with recording() as records:
        try:
            items = list(call(current_backend()))[: len(leads)]
        except Exception as exc:
            error = exc
        if error is None:
            missing = BatchItem(error=PermanentBackendError(MISSING_BATCH_RESULT))
            items += [missing] * (len(leads) - len(items))
        else:
            items = [BatchItem(error=error)] * len(leads)
        write_batch_ledger(leads, records, operation, started_at, started, error, items)
    _note_crm_answer(error, None)
    _stop_on_configuration_error(leads, error)
    return items


#: A lead a backend's batch call gave no answer for (a backend that breaks the contract).
MISSING_BATCH_RESULT = "The backend's batch call returned no result for this lead."


def _stop_on_configuration_error(leads: list[Lead], error: BaseException | None) -> None:
    if isinstance(error, ImproperlyConfigured):
        # A configuration mistake is never retried: fail the leads loudly and let the task fail too.
        Lead.objects.filter(pk__in=[lead.pk for lead in leads]).fail_configuration(
            redact(f"Configuration error: {error}")[:MAX_ERROR_LENGTH]
        )
        # The task framework logs this and stores its traceback: the same error, minus the key.
        raise ImproperlyConfigured(redact(str(error))) from None


def _finish_sync(lead: Lead, token: str, external_id: str) -> None:
    claimed = Lead.objects.filter(pk=lead.pk).held(token)
    sent: dict[str, Any] = {
        "fingerprint": lead.fingerprint,
        "external_id": external_id,
        "synced_values": lead.crm_values(),
        "now": timezone.now(),
    }
    # The site changed the lead (or deleted its source) while we were sending: go again.
    if not claimed.finish_synced(**sent) and claimed.send_again(**sent):
        enqueue_lead(lead.pk)


def _finish_failure(
    lead: Lead, token: str, exc: BaseException, *, retry_state: SyncState
) -> SyncOutcome:
    failure = classify(exc)
    if failure.outage and crm_state.crm_state().down:
        waiting = SyncState.DELETING if retry_state == SyncState.DELETING else SyncState.PENDING
        return _wait_for_crm(lead.pk, token, waiting, redact(failure.message))
    # Waiting for the CRM's daily quota to reset is not a failed attempt.
    attempts = lead.attempts if failure.resets_at else lead.attempts + 1
    now = timezone.now()
    next_state: SyncState
    if failure.permanent or attempts >= crmify_settings.MAX_ATTEMPTS:
        next_state, next_attempt_at = SyncState.FAILED, None
        message = (
            failure.message
            if failure.permanent
            else f"Gave up after {attempts} attempts: {failure.message}"
        )
    else:
        next_state = retry_state
        next_attempt_at = failure.resets_at or now + timedelta(
            seconds=backoff_seconds(attempts, failure.retry_after)
        )
        message = failure.message
    message = redact(message)
    claimed = Lead.objects.filter(pk=lead.pk).held(token)
    error = message[:MAX_ERROR_LENGTH]
    if failure.not_found and lead.external_id and retry_state == SyncState.RETRYING:
        # The CRM has no record by this id to update: it was deleted there. The lead is marked so (a
        # tombstone that saves do not re-create), not failed; staff's "Re-sync" creates a new record.
        logger.info("crmify: lead %s deleted in the CRM: %s", lead.pk, message)
        if claimed.mark_deleted_in_crm(now, error):
            # Imported here: crmify.inbound reaches the signals, whose receivers reach this module.
            from crmify.inbound import announce_deleted_in_crm

            announce_deleted_in_crm(lead.pk, via="push")
        return SyncOutcome.DELETED
    logger.info("crmify: lead %s %s: %s", lead.pk, next_state, message)
    if next_state == SyncState.FAILED:
        # A sync that failed for good while the site changed or deleted the lead: the new values (an
        # e-mail address fixed after a 400) or the delete are what to send next, not a dead end.
        if retry_state == SyncState.RETRYING and claimed.requeue_if_moved(
            fingerprint=lead.fingerprint, error=error, now=now
        ):
            enqueue_lead(lead.pk)
            return SyncOutcome.FAILED
        claimed.fail(attempts=attempts, error=error, now=now)
        return SyncOutcome.FAILED
    if failure.resets_at:
        claimed.wait_for_quota(state=retry_state, until=failure.resets_at, error=error, now=now)
    else:
        claimed.schedule_retry(
            state=retry_state, attempts=attempts, at=next_attempt_at, error=error, now=now
        )
    enqueue_lead(lead.pk, run_after=next_attempt_at)
    return SyncOutcome.RETRYING


# -- the CRM as a whole (crmify.crm_state) ---------------------------------------------------------------


def _note_crm_answer(error: BaseException | None, lead_id: int | None) -> None:
    """Tell the shared CRM state what a call showed: the first answer after an outage releases every
    waiting lead; the failure that marks the CRM down starts the probe."""
    failure = classify(error) if error is not None else None
    if failure is None or failure.answered:
        if crm_state.note_answer():
            logger.warning("crmify: the CRM answers again; sending the leads that waited for it")
            release_waiting_leads()
    elif failure.outage:
        down = crm_state.note_failure(redact(failure.message)[:MAX_ERROR_LENGTH], lead_id)
        if down is not None and down.down_since is not None:
            logger.warning(
                "crmify: the CRM does not answer (%s); leads wait for it", failure.message
            )
            # Retries scheduled since the first failure wait too: their backoff slots mean nothing.
            Lead.objects.wait_for_crm_since(down.down_since)
            _enqueue_probe(down)


def _wait_for_crm(lead_id: int, token: str, state: SyncState, error: str = "") -> SyncOutcome:
    """Park a claimed lead until the CRM answers (no call, not an attempt)."""
    now = timezone.now()
    outage = crm_state.crm_state()
    Lead.objects.filter(pk=lead_id).held(token).wait_for_crm(
        state=state,
        error=(error or outage.last_error or "The CRM does not answer.")[:MAX_ERROR_LENGTH],
        now=now,
    )
    # The CRM came back between our read and our write: its release did not see this lead.
    if crm_state.crm_state().up and Lead.objects.filter(pk=lead_id).release_waiting(now):
        enqueue_lead(lead_id)
    # A due probe is made by whichever worker sees it due first: its task may wait behind others, be
    # lost, or never run on a backend that cannot defer (the probe's lock keeps it to one).
    elif outage.next_probe_at is None or outage.next_probe_at <= now:
        probe_crm()
    return SyncOutcome.WAITING


#: Waiting leads per task when the CRM is back: few enough that every worker gets a share at once,
#: enough that a backlog of thousands costs tens of task rows, not thousands, before the first send.
RELEASE_CHUNK = 10


def release_waiting_leads() -> int:
    """Queue every lead waiting for the CRM at once, in the order they changed, a few per task; every
    worker then sends them at the shared rate limit. Called when the CRM answers again, by staff ("Send
    waiting leads now", ``crmify.api.send_waiting_leads``) and by the sweeper. How many were queued."""
    ids = list(Lead.objects.waiting_for_crm().values_list("pk", flat=True))
    for start in range(0, len(ids), 500):
        Lead.objects.filter(pk__in=ids[start : start + 500]).release_waiting()
    for start in range(0, len(ids), RELEASE_CHUNK):
        chunk = ids[start : start + RELEASE_CHUNK]
        # A chunk that cannot be queued stays pending: the sweeper queues its leads (``lost``).
        enqueue_task(process_leads_task, chunk, what=f"leads {chunk}; the sweeper will retry")
    return len(ids)


def _enqueue_probe(state: crm_state.CrmState) -> None:
    """Queue the next probe for when it is due; a Tasks backend that cannot defer leaves it to the
    sweeper (``probe_crm`` from ``crmify.sweeper.sweep``)."""
    enqueue_task(probe_crm_task, run_after=state.next_probe_at, what="the CRM probe")


def probe_crm() -> crm_state.CrmState | None:
    """While the CRM is down, try it once, if a probe is due and no other worker is probing: the lead
    that waited longest is sent (a useful call; if it fails it waits again, without using an attempt);
    with no lead waiting, the backend's connection check, if it has one. Then plan the next probe.

    Called by :func:`probe_crm_task` and the sweeper; the state after, or None when no probe was made.
    """
    if crm_state.claim_probe() is None:
        return None
    try:
        lead_id = Lead.objects.waiting_for_crm().values_list("pk", flat=True).first()
        if lead_id is not None:
            Lead.objects.filter(pk=lead_id).release_waiting()
            process_lead(lead_id, probe=True)
        elif current_backend().supports_connection_check:
            checks = current_backend().check_connection([])
            if checks and checks[0].ok:
                _note_crm_answer(None, None)
            else:
                crm_state.note_failure(redact(checks[0].detail if checks else "no answer"))
    finally:
        after = crm_state.end_probe()
    if after.down:
        _enqueue_probe(after)
    return after


@crmify_task
def probe_crm_task() -> bool:
    """One probe of a CRM that is down (see :func:`probe_crm`); True when it answers again."""
    after = probe_crm()
    return after is not None and after.up
