"""Applies changes read back from the CRM to leads: what a salesperson changed there reaches the site, and
is never pushed back.

Called by the poller (``crmify.poller``, ``via="poll"``) and the webhook task (``crmify.webhooks``,
``via="webhook"``) with the records their backend read (``iter_changes``, ``read_changes``); both call
:func:`apply_changes` and nothing else here. The rules, once each:

- Changes are matched to leads by CRM id (``Lead.external_id``); the newest read of a record wins.
- The base is what crmify believes the CRM holds (``Lead.synced_values``; for a lead in sync, its values).
  A field only the CRM changed is applied when it is one of ``CRM_OWNED_FIELDS``, to the lead and to the
  base (so it is never pushed back), and is drift otherwise ("Compare with CRM" shows it). A field both
  sides changed is a conflict: ``CONFLICT_WINNER`` decides and the ledger says so.
- A status the funnel would move back (``crmify.transitions.moves_back``) is refused and recorded.
- A pulled change never makes a lead pending nor causes a CRM call. A lead a worker holds is left for
  the next poll or webhook retry (:attr:`InboundReport.deferred_since`).
- A record read again (a poll's overlap, a repeated webhook) changes nothing: a read older than the last
  one applied is ignored, and one as old records no conflict or refusal again.
- A record deleted in the CRM makes its lead a tombstone marked deleted in the CRM; a record merged into
  another (HubSpot) hands its lead the survivor's id (merges are taken first, so the survivor's own
  change read with them reaches that lead too). A status the CRM leaves empty is not applied.

Every lead is written by one conditional UPDATE (``crmify.transitions``), its ledger rows in the same
transaction, and the site's signals (``crmify.signals``) sent after it commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from crmify.backends.base import CrmChange
from crmify.conf import crmify_settings
from crmify.ledger import InboundNote, write_inbound
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead, LedgerEntry, SyncState
from crmify.signals import lead_changed_in_crm, lead_deleted_in_crm
from crmify.tracking import fingerprint
from crmify.transitions import moves_back, status_key

logger = logging.getLogger("crmify")

#: The ledger's operation for each way a change comes in (``apply_changes``'s ``via``).
OPERATIONS: dict[str, str] = {"poll": "pull", "webhook": "webhook"}

#: How many CRM ids one read of the leads asks for (SQLite's limit on query parameters).
_IDS_PER_QUERY = 500
#: How much of a value a ledger row quotes.
_VALUE_LENGTH = 200


@dataclass
class InboundReport:
    """What :func:`apply_changes` did, counted per lead a change was for (``unknown`` per change).

    ``conflicts`` counts fields both sides changed, ``refused`` statuses the funnel refused, beside the
    lead's own count (applied or unchanged). ``deferred_since`` is the oldest CRM modification time of a
    change not applied because a worker held its lead: the poller keeps its watermark at or before it.
    """

    applied: int = 0
    unchanged: int = 0
    conflicts: int = 0
    refused: int = 0
    deleted: int = 0
    merged: int = 0
    deferred: int = 0
    unknown: int = 0
    deferred_since: datetime | None = None

    def __str__(self) -> str:
        counts = [
            f"{getattr(self, name)} {name}" for name in self.count_names() if getattr(self, name)
        ]
        text = ", ".join(counts) or "no changes"
        if self.deferred_since is not None:
            text += f" (deferred since {self.deferred_since.isoformat()})"
        return text

    @classmethod
    def count_names(cls) -> list[str]:
        """The counts, in the order they are shown."""
        return [f.name for f in fields(cls) if f.name != "deferred_since"]

    def add(self, other: InboundReport) -> None:
        """Add ``other``'s counts to these (a poll's pages, one report each)."""
        for name in self.count_names():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._defer_since(other.deferred_since)

    def _defer_since(self, when: datetime | None) -> None:
        if when is not None and (self.deferred_since is None or when < self.deferred_since):
            self.deferred_since = when


class _Taken(StrEnum):
    """What became of one change for one lead."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    MERGED = "merged"
    DEFERRED = "deferred"
    #: The lead moved between its read and the write (a save, a claim): read it again.
    RACED = "raced"


@dataclass
class _Context:
    operation: str
    via: str
    report: InboundReport
    now: datetime = field(default_factory=timezone.now)


def apply_changes(changes: Sequence[CrmChange], *, via: str) -> InboundReport:
    """Apply ``changes`` read back from the CRM to their leads and say what was done.

    ``via`` is how they came: ``"poll"`` or ``"webhook"`` (anything else is a ``ValueError``). Makes no
    CRM call and queues nothing; may be called inside a transaction (the signals wait for its commit).
    """
    operation = OPERATIONS.get(via)
    if operation is None:
        raise ValueError(f"via must be one of {sorted(OPERATIONS)}, not {via!r}.")
    context = _Context(operation, via, InboundReport())
    report = context.report
    report.unknown += sum(1 for change in changes if not change.external_id)
    newest = _newest(changes)
    # Merges first: a lead that adopts the surviving record takes the survivor's changes read with it.
    merges = [change for change in newest.values() if change.merged_into and not change.deleted]
    _take_all(merges, context)
    _take_all([change for change in newest.values() if change not in merges], context)
    if report.deferred or report.conflicts or report.refused:
        logger.info("crmify: changes from the CRM by %s: %s", via, report)
    return report


def _take_all(changes: list[CrmChange], context: _Context) -> None:
    """Apply each of ``changes`` (one per CRM id) to the leads holding its id, and count what became
    of it."""
    report = context.report
    holders = _leads_by_crm_id([change.external_id for change in changes])
    for change in changes:
        leads = holders.get(change.external_id)
        if not leads:
            report.unknown += 1
            continue
        for lead in leads:
            taken = _take_with_retry(lead, change, context)
            if taken is _Taken.DEFERRED:
                report.deferred += 1
                report._defer_since(change.modified_at)
            else:
                setattr(report, taken.value, getattr(report, taken.value) + 1)


def _newest(changes: Sequence[CrmChange]) -> dict[str, CrmChange]:
    """One change per CRM id: the newest by modification time, the later read of equal ones."""
    newest: dict[str, CrmChange] = {}
    for change in changes:
        if not change.external_id:
            continue
        kept = newest.get(change.external_id)
        if (
            kept is None
            or kept.modified_at is None
            or (change.modified_at is not None and change.modified_at >= kept.modified_at)
        ):
            newest[change.external_id] = change
    return newest


def _leads_by_crm_id(external_ids: list[str]) -> dict[str, list[Lead]]:
    """The leads holding each of ``external_ids`` (two may, after a merge), a query per 500 ids."""
    holders: dict[str, list[Lead]] = defaultdict(list)
    for start in range(0, len(external_ids), _IDS_PER_QUERY):
        chunk = external_ids[start : start + _IDS_PER_QUERY]
        for lead in Lead.objects.filter(external_id__in=chunk).order_by("pk"):
            holders[lead.external_id].append(lead)
    return holders


def _take_with_retry(lead: Lead, change: CrmChange, context: _Context) -> _Taken:
    """Apply ``change`` to ``lead``, reading the lead again once if it moved meanwhile; deferred when a
    worker holds it, or it moved twice."""
    for attempt in range(2):
        if attempt:
            fresh = Lead.objects.filter(pk=lead.pk).first()
            if fresh is None or fresh.external_id != change.external_id:
                return _Taken.UNCHANGED  # gone, or given another CRM record meanwhile
            lead = fresh
        if lead.claim_token:
            return _Taken.DEFERRED
        taken = _take(lead, change, context)
        if taken is not _Taken.RACED:
            return taken
    return _Taken.DEFERRED


def _take(lead: Lead, change: CrmChange, context: _Context) -> _Taken:
    if change.deleted:
        return _take_delete(lead, context)
    if change.merged_into:
        return _take_merge(lead, change.merged_into, context)
    return _take_values(lead, change, context)


# -- deletes and merges ----------------------------------------------------------------------------------


def _take_delete(lead: Lead, context: _Context) -> _Taken:
    if lead.sync_state == SyncState.DELETED:
        return _Taken.UNCHANGED  # deleted by crmify (this is its own delete read back) or before
    with transaction.atomic():
        if not Lead.objects.filter(pk=lead.pk).unclaimed().mark_deleted_in_crm(context.now):
            return _Taken.RACED
        note = InboundNote(summary="deleted in the CRM")
        write_inbound(lead, context.operation, [note], context.now)
        announce_deleted_in_crm(lead.pk, via=context.via)
    return _Taken.DELETED


def _take_merge(lead: Lead, survivor: str, context: _Context) -> _Taken:
    if lead.tombstone:
        return _Taken.UNCHANGED  # its deletion must not reach the surviving record
    sharing = list(
        Lead.objects.filter(external_id=survivor).exclude(pk=lead.pk).values_list("pk", flat=True)
    )
    with transaction.atomic():
        held_as_read = Lead.objects.filter(pk=lead.pk, external_id=lead.external_id).unclaimed()
        if not held_as_read.adopt_crm_id(survivor, context.now):
            return _Taken.RACED
        notes = [InboundNote(summary=f"merged into {survivor} in the CRM (was {lead.external_id})")]
        if sharing:
            others = ", ".join(f"#{pk}" for pk in sharing)
            notes.append(
                InboundNote(
                    LedgerEntry.Outcome.CONFLICT,
                    summary=f"external_id: {survivor!r} (lead {others} too)",
                    note=(
                        f"Two leads now share one CRM record: this one and lead {others} hold "
                        f"{survivor} since the merge in the CRM. Staff decide which lead keeps it."
                    ),
                )
            )
            context.report.conflicts += 1
        write_inbound(lead, context.operation, notes, context.now)
    return _Taken.MERGED


# -- changed values ----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a change means for one lead's fields (by ``CRM_OWNED_FIELDS`` names)."""

    #: Applied to the lead and to the base: ``{name: (the lead's value, the CRM's)}``.
    applied: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: Both sides changed to the same value: the base follows, the lead has it already.
    agreed: dict[str, Any] = field(default_factory=dict)
    #: ``(name, the app's value, the CRM's value, whether the CRM won)``.
    conflicts: list[tuple[str, Any, Any, bool]] = field(default_factory=list)
    #: A status from the CRM the funnel refused.
    refused: str | None = None


def _take_values(lead: Lead, change: CrmChange, context: _Context) -> _Taken:
    if lead.tombstone:
        return _Taken.UNCHANGED  # deleted (here or in the CRM): staff re-sync it first
    last_read = lead.crm_modified_at
    if change.modified_at is not None and last_read is not None and change.modified_at < last_read:
        return _Taken.UNCHANGED  # an older read than the one applied already
    # Read as old as the last one applied (a poll's overlap, a repeated webhook).
    again = change.modified_at is not None and change.modified_at == last_read
    plan = _plan(lead, change.values)
    if again:
        # Its conflicts and refusal are in the ledger already; the CRM's wins are applied all the same.
        plan.conflicts, plan.refused = [], None
    if not (plan.applied or plan.agreed or plan.conflicts or plan.refused):
        return _Taken.UNCHANGED
    read_as = (lead.fingerprint, lead.synced_fingerprint)
    in_sync = _in_sync(lead)
    current = lead.crm_values()
    after = lead.crm_values()
    for name, (_, new) in plan.applied.items():
        _put(after, name, new)
    values = {key: after[key] for key in {_lead_key(name) for name in plan.applied}}
    for key, value in values.items():
        setattr(lead, key, value)
    new_fingerprint = fingerprint(after)
    if in_sync:
        synced, synced_fingerprint = after, new_fingerprint
    else:
        synced = dict(lead.synced_values or {})
        if synced:  # nothing known of the CRM's record stays nothing known
            for name, value in {
                **plan.agreed,
                **{n: v[1] for n, v in plan.applied.items()},
            }.items():
                _put(synced, name, value)
        # A pending change the CRM's values made moot: the worker finds nothing to send.
        same = bool(synced) and fingerprint(synced) == new_fingerprint
        synced_fingerprint = new_fingerprint if same else lead.synced_fingerprint
    status_refused: str | None = None
    if plan.refused is not None:
        status_refused = plan.refused
    elif "status" in plan.applied and lead.status_refused:
        status_refused = ""
    with transaction.atomic():
        moved = Lead.objects.filter(pk=lead.pk).take_from_crm(
            read_as=read_as,
            values=values,
            synced_values=synced,
            fingerprints=(new_fingerprint, synced_fingerprint),
            crm_modified_at=change.modified_at,
            status_refused=status_refused,
            now=context.now,
        )
        if not moved:
            return _Taken.RACED
        write_inbound(lead, context.operation, _notes(plan, current), context.now)
        if plan.applied:
            _send_on_commit(lead_changed_in_crm, lead.pk, changes=plan.applied, via=context.via)
    context.report.conflicts += len(plan.conflicts)
    context.report.refused += 1 if status_refused else 0
    return _Taken.APPLIED if plan.applied else _Taken.UNCHANGED


def _plan(lead: Lead, crm_values: Mapping[str, Any]) -> _Plan:
    """Decide each field of ``crm_values`` against the base (see the module docstring)."""
    owned = set(crmify_settings.CRM_OWNED_FIELDS)
    crm_wins_owned = crmify_settings.CONFLICT_WINNER == "crm"
    current = lead.crm_values()
    in_sync = _in_sync(lead)
    # In sync, the CRM holds what the lead holds; else what was last sent, if crmify knows it.
    base: Mapping[str, Any] | None = current if in_sync else (lead.synced_values or None)
    plan = _Plan()
    for name, crm_value in _fields(crm_values):
        if name == "status" and not crm_value:
            continue  # a record without a status (a merged contact's) moves no lead out of the funnel
        app_value = _value(current, name)
        if base is None:
            # Nothing known of what the CRM held: a difference in a field the CRM may change is a
            # conflict (the rule decides), in any other it is drift.
            crm_changed = app_changed = name in owned and not _same(name, crm_value, app_value)
        else:
            crm_changed = not _same(name, crm_value, _value(base, name))
            app_changed = not _same(name, app_value, _value(base, name))
        if not crm_changed:
            continue
        if app_changed:
            if _same(name, crm_value, app_value):
                plan.agreed[name] = crm_value
                continue
            crm_wins = name in owned and crm_wins_owned
            plan.conflicts.append((name, app_value, crm_value, crm_wins))
            if not crm_wins:
                continue
        elif name not in owned:
            continue  # drift: "Compare with CRM" shows it
        plan.applied[name] = (app_value, crm_value)
    wanted = plan.applied.get("status")
    if wanted is not None and moves_back(lead.status, str(wanted[1] or "")):
        del plan.applied["status"]
        if status_key(lead.status_refused) != status_key(str(wanted[1])):
            plan.refused = str(wanted[1])  # not refused already: recorded once
    return plan


def _notes(plan: _Plan, current: Mapping[str, Any]) -> list[InboundNote]:
    """The ledger rows of a change: one for what was applied, one per conflict, one for a refusal."""
    notes: list[InboundNote] = []
    if plan.applied:
        summary = "; ".join(
            f"{name}: {_quote(old)} → {_quote(new)}" for name, (old, new) in plan.applied.items()
        )
        notes.append(InboundNote(summary=summary))
    winner = crmify_settings.CONFLICT_WINNER
    for name, app_value, crm_value, crm_wins in plan.conflicts:
        if crm_wins:
            why = f'the CRM wins (CONFLICT_WINNER "{winner}": the CRM wins for CRM_OWNED_FIELDS)'
        elif winner == "app":
            why = 'the app wins (CONFLICT_WINNER "app": the app wins for every field)'
        else:
            why = (
                f'the app wins (CONFLICT_WINNER "{winner}": {name} is not one of '
                "CRM_OWNED_FIELDS); the app's value goes to the CRM with its pending sync"
            )
        notes.append(
            InboundNote(
                LedgerEntry.Outcome.CONFLICT,
                summary=f"{name}: app {_quote(app_value)}, CRM {_quote(crm_value)}",
                note=(
                    f"Both the app and the CRM changed {name} since the last sync "
                    f"(app {_quote(app_value)}, CRM {_quote(crm_value)}): {why}."
                ),
            )
        )
    if plan.refused is not None:
        status = current.get("status", "")
        notes.append(
            InboundNote(
                LedgerEntry.Outcome.REFUSED,
                summary=f"status: {_quote(status)} → {_quote(plan.refused)}",
                note=(
                    f"Status change to {plan.refused!r} from the CRM refused: it would move the lead "
                    f"back from {status!r} (an automatic change never does; staff may force it)."
                ),
            )
        )
    return notes


# -- fields by CRM_OWNED_FIELDS names ---------------------------------------------------------------------


def _fields(values: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """A record's values by ``CRM_OWNED_FIELDS`` names: lead fields, then ``custom_fields__<key>``."""
    for key, value in values.items():
        if key == "custom_fields" and isinstance(value, Mapping):
            for custom_key, custom_value in value.items():
                yield f"{CUSTOM_FIELD_PREFIX}{custom_key}", custom_value
        elif key in MAPPABLE_FIELDS:
            yield key, value


def _value(values: Mapping[str, Any], name: str) -> Any:
    """The value of field ``name`` in ``values`` (``Lead.crm_values()``'s shape); None when absent."""
    if name.startswith(CUSTOM_FIELD_PREFIX):
        custom = values.get("custom_fields")
        return (
            custom.get(name.removeprefix(CUSTOM_FIELD_PREFIX))
            if isinstance(custom, Mapping)
            else None
        )
    return values.get(name)


def _put(target: dict[str, Any], name: str, value: Any) -> None:
    """Set field ``name`` to ``value`` in ``target`` (``Lead.crm_values()``'s shape; a custom field in a
    new ``custom_fields`` dict, nothing shared with where it came from)."""
    if name.startswith(CUSTOM_FIELD_PREFIX):
        custom = target.get("custom_fields")
        custom = dict(custom) if isinstance(custom, Mapping) else {}
        custom[name.removeprefix(CUSTOM_FIELD_PREFIX)] = value
        target["custom_fields"] = custom
    else:
        target[name] = "" if value is None else value  # the lead's text fields hold no NULL


def _lead_key(name: str) -> str:
    """The lead field that holds field ``name``."""
    return "custom_fields" if name.startswith(CUSTOM_FIELD_PREFIX) else name


def _in_sync(lead: Lead) -> bool:
    """Whether the CRM holds what ``lead`` holds, as crmify believes (nothing of the app's to send)."""
    return bool(lead.fingerprint) and lead.fingerprint == lead.synced_fingerprint


def _same(name: str, left: Any, right: Any) -> bool:
    """Whether two values of field ``name`` are the same to the CRM: nothing and "" alike, a status by
    its name whatever its case and spaces, a number and its text alike."""
    left = "" if left is None else left
    right = "" if right is None else right
    if name == "status":
        return status_key(str(left)) == status_key(str(right))
    return bool(left == right) or str(left) == str(right)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_LENGTH else text[: _VALUE_LENGTH - 1] + "…"


# -- the site's signals ------------------------------------------------------------------------------------


def announce_deleted_in_crm(lead_id: int, *, via: str) -> None:
    """Send :data:`crmify.signals.lead_deleted_in_crm` for the lead once the transaction commits. Called
    here and by the worker, which finds a delete when the CRM answers 404 to an update (``via="push"``)."""
    _send_on_commit(lead_deleted_in_crm, lead_id, via=via)


def _send_on_commit(signal: Signal, lead_id: int, **kwargs: Any) -> None:
    """Send ``signal`` for the lead once the transaction commits (the lead as committed); a receiver's
    exception is logged and does not stop the others."""

    def send() -> None:
        if not signal.has_listeners(Lead):
            return
        lead = Lead.objects.filter(pk=lead_id).first()
        if lead is None:
            return
        for receiver, result in signal.send_robust(sender=Lead, lead=lead, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "crmify: a receiver of a change from the CRM raised (lead %s, %s)",
                    lead_id,
                    receiver,
                    exc_info=result,
                )

    transaction.on_commit(send)
