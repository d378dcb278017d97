"""Applies what inbound webhooks said, on the task worker: the task :func:`apply_webhook_task`.

Queued by the views in :mod:`crmify.webhooks` (which make no CRM call and write no lead) with the events
of one delivery (:mod:`crmify.webhook_events`). A deleted record becomes ``CrmChange(id, deleted=True)``,
a merged one ``CrmChange(loser, merged_into=survivor)``; every record said to have changed (a merge's
survivor too) is read back from the CRM in one ``read_changes`` call, because a webhook body is a hint and
the record read back is the truth. ``crmify.inbound.apply_changes(..., via="webhook")`` applies the
deletes and merges, then the records read back; it decides what reaches each lead and fires the signals.

The read is a CRM call like the worker's: recorded in the ledger, counted against the live share of the
quota, and reported to ``crmify.crm_state``. When it cannot be made now, the records to read wait in a
task queued for later, as a lead waits: while the CRM is down, until its next probe is due (not an
attempt); while the quota is spent, until it resets (not an attempt); after a transient error, after the
worker's backoff, up to ``MAX_ATTEMPTS``. A permanent error is logged and dropped (the poller, when on,
catches the change up). A change ``apply_changes`` deferred (a worker held the lead) is tried again
:data:`DEFERRED_RETRY_SECONDS` later, then twice as late each time, up to ``MAX_ATTEMPTS``. A Tasks backend that cannot defer drops what waits (logged).
"""

from __future__ import annotations

import datetime
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from crmify import crm_state
from crmify.backends.base import CrmChange
from crmify.conf import crmify_settings
from crmify.inbound import InboundReport, apply_changes
from crmify.ledger import classify
from crmify.models import LedgerEntry
from crmify.queue import crmify_task, enqueue_task
from crmify.ratelimit import QuotaShare
from crmify.secrets import redact
from crmify.webhook_events import WebhookEvent, events_for, latest_by_id, read_back_ids
from crmify.worker import backoff_seconds, quota_pause, recorded_call

logger = logging.getLogger("crmify")

#: Seconds before changes ``apply_changes`` deferred (their lead held by a worker) are tried again.
DEFERRED_RETRY_SECONDS = 5.0
#: The ledger's operation for the read-back of the records a webhook named.
READ_OPERATION = "read"


def _moment(at: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(at) if at else None


def direct_changes(latest: Mapping[str, WebhookEvent]) -> list[CrmChange]:
    """The changes a webhook says outright, without reading the CRM: deletes and merges."""
    return [
        CrmChange(
            event["id"],
            modified_at=_moment(event["at"]),
            deleted=event["kind"] == "deleted",
            merged_into=event["survivor"],
        )
        for event in latest.values()
        if event["kind"] != "changed"
    ]


@crmify_task
def apply_webhook_task(events: list[dict[str, Any]], attempt: int = 0) -> dict[str, int]:
    """Apply the events of one webhook delivery (see the module docstring); ``attempt`` counts the
    times the task was queued again after a failed read or a deferral. Returns what was done, by count:
    ``read`` back from the CRM, left ``waiting`` in a task for later, and ``apply_changes``' counts.

    Deletes and merges are applied first, then the records read back: a merged lead holds the
    survivor's id by the time the survivor's record is applied, so it takes the survivor's values too.
    """
    latest = latest_by_id(events)
    done: Counter[str] = Counter()
    if direct := direct_changes(latest):
        _count(done, apply_changes(direct, via="webhook"))
    if ids := read_back_ids(latest):
        read = _read_back(ids, attempt)
        done["read" if read is not None else "waiting"] += len(ids)
        if read:
            _count(done, apply_changes(read, via="webhook"))
    if done["deferred"]:
        if attempt + 1 >= crmify_settings.MAX_ATTEMPTS:
            logger.warning(
                "crmify: webhook: %d changes deferred too often, given up", done["deferred"]
            )
        else:
            # Which changes waited is not reported: every record is tried again, which only repeats
            # what is already applied (the same values, the same deletes). The delay doubles, so the
            # tries outlast a claim held by a worker that died (CLAIM_TIMEOUT).
            delay = DEFERRED_RETRY_SECONDS * 2**attempt
            at = timezone.now() + datetime.timedelta(seconds=delay)
            _again(list(latest.values()), attempt + 1, at, "their leads were held by a worker")
    return dict(done)


def _count(done: Counter[str], report: InboundReport) -> None:
    done.update(
        applied=report.applied,
        unchanged=report.unchanged,
        conflicts=report.conflicts,
        refused=report.refused,
        deleted=report.deleted,
        merged=report.merged,
        deferred=report.deferred,
        unknown=report.unknown,
    )


def _read_back(ids: list[str], attempt: int) -> list[CrmChange] | None:
    """The records ``ids`` as the CRM has them now, or None when they could not be read now (queued
    again for later, or dropped after a permanent error)."""
    if (pause := quota_pause(QuotaShare.LIVE)) is not None:
        _again(events_for(ids), attempt, pause[0], pause[1])
        return None
    state = crm_state.crm_state()
    if state.down:
        _again(events_for(ids), attempt, _next_probe(state), "the CRM does not answer")
        return None
    read, error = recorded_call(
        None, READ_OPERATION, lambda backend: backend.read_changes(ids), LedgerEntry.Direction.IN
    )
    if error is None:
        return list(read)
    if isinstance(error, ImproperlyConfigured):
        # A configuration mistake is never retried: the task fails, with the key masked.
        raise ImproperlyConfigured(redact(str(error))) from None
    failure = classify(error)
    message = redact(failure.message)
    state = crm_state.crm_state()
    if failure.outage and state.down:
        _again(events_for(ids), attempt, _next_probe(state), message)
    elif failure.resets_at is not None:
        _again(events_for(ids), attempt, failure.resets_at, message)
    elif failure.permanent or attempt + 1 >= crmify_settings.MAX_ATTEMPTS:
        logger.error("crmify: webhook: %d records not read back, given up: %s", len(ids), message)
    else:
        delay = backoff_seconds(attempt + 1, failure.retry_after)
        at = timezone.now() + datetime.timedelta(seconds=delay)
        _again(events_for(ids), attempt + 1, at, message)
    return None


def _next_probe(state: crm_state.CrmState) -> datetime.datetime:
    """When the CRM may answer again: its next probe, or the longest probe interval from now."""
    return state.next_probe_at or timezone.now() + datetime.timedelta(
        seconds=crm_state.MAX_PROBE_INTERVAL
    )


def _again(events: Sequence[WebhookEvent], attempt: int, at: datetime.datetime, why: str) -> None:
    """Queue ``events`` again for ``at``; logged (and dropped) when the Tasks backend cannot defer."""
    queued = enqueue_task(
        apply_webhook_task,
        [dict(event) for event in events],
        attempt,
        run_after=at,
        what=f"a webhook's {len(events)} records for later",
    )
    if queued:
        logger.info("crmify: webhook: %d records wait until %s: %s", len(events), at, why)
    else:
        logger.warning("crmify: webhook: %d records dropped (%s)", len(events), why)
