"""Every move of a lead between sync states, as named operations: the only code that writes ``sync_state``
and the fields that go with it (the claim, attempts, the next attempt, the queue time, the last error, the
tombstone).

``Lead.objects`` is a :class:`LeadQuerySet`; the ``note_*`` functions mirror a move on a caller's copy.
Callers (``crmify.tracking``, ``crmify.worker``, ``crmify.api``, ``crmify.backfill``, ``crmify.sweeper``)
narrow the queryset to the leads they mean and ask for a transition; each operation is one conditional
UPDATE that says how many leads it moved (or the claim it took), and the caller decides what to enqueue.
A condition is decided on the row as it is in the database, never on a copy loaded earlier, so two
callers racing on one lead cannot undo each other's move. The rules, once each:

- a changed lead becomes pending, unless a worker holds it (the worker sees the new fingerprint and
  queues it again), and never after a tombstone (staff bring a tombstone back with "Re-sync");
- a worker's claim is one UPDATE of an unclaimed, due lead; every finishing write is conditional on it;
- a lead that became a tombstone while a worker held it goes on to its deletion.

States (the admin shows each)::

    (new) --prepare_insert--> pending (failed when its mapping failed)
    pending --claim_for_sync--> syncing --finish_synced--> synced --mark_changed--> pending
    syncing --schedule_retry / wait_for_quota--> retrying --claim_for_sync--> syncing
    pending / retrying --wait_for_quota_in_bulk--> retrying (deleting stays deleting), due at the reset
    syncing --fail / fail_configuration--> failed --retry_failed / force_pending--> pending
    any live lead --fail_mapping--> failed (values not sent; a tombstone keeps its state)
    any live lead --request_delete--> deleting (deleted when never sent) --claim_for_delete-->
        (claimed) --finish_deleted--> deleted --force_pending--> pending
    syncing --send_again / requeue_if_moved--> pending (changed while sent), deleting (deleted meanwhile)
    claimed --wait_for_crm--> pending / deleting, waiting for the CRM --release_waiting--> sent again
    retrying since the CRM went down --wait_for_crm_since--> waiting for the CRM
    deleting (waiting for a retry) --delete_now--> deleting, due at once
    claimed by a dead worker --release_stale_claims--> pending / deleting

Changes read back from the CRM (``crmify.inbound``) never make a lead pending; a lead a worker holds is
left alone (the change waits for the next poll or webhook retry)::

    unclaimed live lead --take_from_crm--> same state, the CRM's values (not pushed back)
    unclaimed lead not deleted --mark_deleted_in_crm--> deleted (a tombstone, nothing queued)
    syncing, the CRM answered 404 to the update --mark_deleted_in_crm--> deleted
    deleted in the CRM --force_pending--> pending, without its CRM id (a new record)
    unclaimed live lead --adopt_crm_id--> same state, the merged record's survivor as its CRM id
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from crmify.conf import crmify_settings

if TYPE_CHECKING:
    from crmify.models import Lead


class SyncState(models.TextChoices):
    """Where a lead stands with the CRM. Every transition is shown in the admin."""

    PENDING = "pending", _("Pending")
    SYNCING = "syncing", _("Syncing")
    SYNCED = "synced", _("Synced")
    RETRYING = "retrying", _("Retrying")
    FAILED = "failed", _("Failed")
    DELETING = "deleting", _("Deleting")
    DELETED = "deleted", _("Deleted")


#: The fields this module owns: no other module of crmify writes them (the upgrade migration aside).
STATE_FIELDS: tuple[str, ...] = (
    "sync_state",
    "tombstone",
    "deleted_in_crm_at",
    "attempts",
    "next_attempt_at",
    "waiting_for_crm",
    "last_error",
    "queued_at",
    "claim_token",
    "claimed_at",
    "status_refused",
    "status_refused_at",
)

#: What :meth:`LeadQuerySet.mark_changed_in_bulk` writes besides the caller's value fields.
_CHANGED_FIELDS: tuple[str, ...] = ("sync_state", "queued_at", "attempts", "next_attempt_at")

#: A finished or failed worker gives its claim back.
_RELEASED: dict[str, Any] = {"claim_token": "", "claimed_at": None}


def _pending_unless_syncing() -> Case:
    """Pending, unless a worker holds the lead: it re-queues itself when it sees the new fingerprint."""
    return Case(
        When(sync_state=SyncState.SYNCING, then=Value(SyncState.SYNCING)),
        default=Value(SyncState.PENDING),
    )


#: What a claim for sending takes: a pending lead, or a retrying one (when due).
_WAITING_TO_SYNC = Q(sync_state__in=[SyncState.PENDING, SyncState.RETRYING])


def _due(now: datetime) -> Q:
    """Leads whose next attempt is not in the future."""
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def _unless_tombstone(state: str) -> Case:
    """``state``, unless the lead became a tombstone meanwhile: then its deletion is next."""
    return Case(When(tombstone=True, then=Value(SyncState.DELETING)), default=Value(state))


# -- the funnel ----------------------------------------------------------------------------------------


def status_key(status: str) -> str:
    """How statuses are compared: case and spaces ignored ("Not Contacted" is ``NotContacted``)."""
    return "".join(status.split()).casefold()


def funnel_statuses() -> list[str]:
    """The funnel's statuses as configured, first to last: ``LEAD_NEW_STATUS``, ``LEAD_STATUS_ORDER``,
    then ``LEAD_CONVERTED_STATUS`` and ``LEAD_DEAD_STATUS``. What "Force a status" offers, what an import
    accepts beside the statuses leads already have, and how a backend spells a status it reads back."""
    return [
        crmify_settings.LEAD_NEW_STATUS,
        *crmify_settings.LEAD_STATUS_ORDER,
        crmify_settings.LEAD_CONVERTED_STATUS,
        crmify_settings.LEAD_DEAD_STATUS,
    ]


def funnel_rank(status: str) -> int | None:
    """Where ``status`` stands in the funnel: 0 for ``LEAD_NEW_STATUS``, then ``LEAD_STATUS_ORDER`` in its
    order, then ``LEAD_CONVERTED_STATUS`` and ``LEAD_DEAD_STATUS`` side by side at the end (both close the
    funnel: a dead lead that buys is converted, a converted one may be disqualified). None for a status
    outside the order (a CRM's own status): there is nothing to compare it with."""
    key = status_key(status)
    ranks: dict[str, int] = {status_key(crmify_settings.LEAD_NEW_STATUS): 0}
    for position, name in enumerate(crmify_settings.LEAD_STATUS_ORDER, start=1):
        ranks.setdefault(status_key(name), position)
    last = len(crmify_settings.LEAD_STATUS_ORDER) + 1
    for name in (crmify_settings.LEAD_CONVERTED_STATUS, crmify_settings.LEAD_DEAD_STATUS):
        ranks[status_key(name)] = last
    return ranks.get(key)


def moves_back(current: str, wanted: str) -> bool:
    """The funnel rule: whether moving a lead from ``current`` to ``wanted`` is a step back.

    The one rule every automatic change obeys (the status model's ``lead_status()``, ``api.set_status``
    and an import, through ``crmify.tracking.may_set_status``); staff and code pass ``force`` to go back.
    A status outside the order never counts as a step back, nor does a move to the same stage.
    """
    before, after = funnel_rank(current), funnel_rank(wanted)
    return before is not None and after is not None and after < before


class LeadQuerySet(models.QuerySet["Lead"]):
    """Leads, with the reads the engine selects work by and the transitions it moves them with.

    Narrow the queryset first (``Lead.objects.filter(pk=...)``), then call one operation. Each returns how
    many leads it moved, except :meth:`claim_for_sync` and :meth:`claim_for_delete` (the claim token).
    """

    # -- reads ----------------------------------------------------------------------------------------

    def of_rows(self, rows: Sequence[models.Model]) -> LeadQuerySet:
        """The leads of ``rows`` (source rows of one model), on this queryset's database: the save path
        (``tracking.find_lead``), the drift scan and the backfill all find a row's lead this way."""
        if not rows:
            return self.none()
        source_type = ContentType.objects.db_manager(self.db).get_for_model(rows[0])
        return self.filter(source_type=source_type, source_id__in=[str(row.pk) for row in rows])

    def unclaimed(self) -> LeadQuerySet:
        """Leads no worker holds."""
        return self.filter(claim_token="")

    def held(self, token: str | None = None) -> LeadQuerySet:
        """Leads a worker holds (the one holding ``token``, if given): its finishing writes go through this."""
        return self.exclude(claim_token="") if token is None else self.filter(claim_token=token)

    def retry_due(self, before: datetime) -> LeadQuerySet:
        """Unclaimed retries and deletes whose next attempt was due before ``before`` (the sweeper)."""
        return self.unclaimed().filter(
            waiting_for_crm=False,
            sync_state__in=[SyncState.RETRYING, SyncState.DELETING],
            next_attempt_at__lte=before,
        )

    def lost(self, queued_before: datetime) -> LeadQuerySet:
        """Unclaimed pending leads and deletes queued before ``queued_before`` and not waiting for a retry
        (their enqueue may have been lost; the sweeper checks the queue)."""
        return self.unclaimed().filter(
            sync_state__in=[SyncState.PENDING, SyncState.DELETING],
            next_attempt_at__isnull=True,
            waiting_for_crm=False,
            queued_at__lt=queued_before,
        )

    def waiting_for_crm(self) -> LeadQuerySet:
        """Leads waiting for the CRM to answer again, in the order they changed (the order they are sent
        in when it does): the worker's release and probe, the admin's banner."""
        return self.filter(
            waiting_for_crm=True, sync_state__in=[SyncState.PENDING, SyncState.DELETING]
        ).order_by("queued_at", "pk")

    # -- the site changed a lead ----------------------------------------------------------------------

    def mark_changed(self, now: datetime | None = None, **values: Any) -> int:
        """Write ``values`` and make the leads pending with a fresh count of attempts; how many moved.

        A lead a worker holds keeps its state (the worker queues it again). A tombstone is refused: it
        is not moved and ``values`` are not written to it (``crmify.tracking.save_if_changed`` writes a tombstone's
        values alone).
        """
        now = now or timezone.now()
        return self.filter(tombstone=False).update(
            **values,
            sync_state=_pending_unless_syncing(),
            queued_at=now,
            attempts=0,
            next_attempt_at=None,
            updated_at=now,
        )

    def mark_changed_in_bulk(
        self, leads: Iterable[Lead], fields: Iterable[str], now: datetime
    ) -> int:
        """:meth:`mark_changed` for many leads with values of their own (the backfill): ``fields`` of each
        lead and their pending state in one ``bulk_update``; how many rows it matched. Tombstones are
        refused as by :meth:`mark_changed`."""
        leads = list(leads)
        for lead in leads:
            lead.sync_state = _pending_unless_syncing()
            lead.queued_at = lead.updated_at = now
            lead.attempts = 0
            lead.next_attempt_at = None
        fields = [*fields, *_CHANGED_FIELDS, "updated_at"]
        return self.filter(tombstone=False).bulk_update(leads, fields)

    def fail_mapping(self, message: str, now: datetime | None = None) -> int:
        """Fail the leads because their mapper raised ``message``; how many rows were written.

        Empty fingerprints make the next successful mapping count as a change (and tell
        ``api.retry_failed`` to map the row again rather than send what the lead holds). A tombstone keeps
        its state (it has nothing to send); the message is still shown.
        """
        return self.update(
            sync_state=Case(
                When(tombstone=True, then=F("sync_state")), default=Value(SyncState.FAILED)
            ),
            last_error=message,
            fingerprint="",
            source_fingerprint="",
            updated_at=now or timezone.now(),
        )

    # -- a worker -------------------------------------------------------------------------------------

    def _claim(self, condition: Q, token: str | None = None, **changes: Any) -> str | None:
        now = timezone.now()
        token = token or uuid.uuid4().hex
        claimed = (
            self.unclaimed()
            .filter(condition, _due(now), waiting_for_crm=False)
            .update(claim_token=token, claimed_at=now, **changes)
        )
        return token if claimed else None

    def claim_for_sync(self) -> str | None:
        """Claim the (one) pending or due retrying lead for sending and make it syncing: the claim's
        token, or None when the lead is held, not due, or has nothing to send."""
        return self._claim(_WAITING_TO_SYNC, sync_state=SyncState.SYNCING)

    def claim_batch_for_sync(self, limit: int, token: str | None = None) -> str | None:
        """Claim up to ``limit`` of the leads that :meth:`claim_for_sync` would claim, longest queued
        first, and make them syncing under one token (``token``, to join a claim the caller holds): the
        token, or None when none could be claimed. The worker's batches (``crmify.worker``).

        The candidates are read first and claimed by the same conditional UPDATE as one lead, so a lead
        another worker claimed in between is simply left out: never two workers on one lead.
        """
        if limit < 1:
            return None
        candidates = list(
            self.unclaimed()
            .filter(_WAITING_TO_SYNC, _due(timezone.now()), waiting_for_crm=False)
            .order_by("queued_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not candidates:
            return None
        return self.filter(pk__in=candidates)._claim(
            _WAITING_TO_SYNC, token, sync_state=SyncState.SYNCING
        )

    def claim_for_delete(self) -> str | None:
        """Claim the (one) due deleting lead for its deletion from the CRM: the token, or None."""
        return self._claim(Q(sync_state=SyncState.DELETING))

    def finish_synced(
        self, *, fingerprint: str, external_id: str, synced_values: dict[str, Any], now: datetime
    ) -> int:
        """The claimed leads were sent with ``fingerprint`` and the CRM calls them ``external_id``: synced,
        with a fresh count of attempts. A lead no longer at ``fingerprint``, or a tombstone, is refused
        (:meth:`send_again` releases it). How many moved."""
        return self.filter(fingerprint=fingerprint, tombstone=False).update(
            sync_state=SyncState.SYNCED, **self._sent(fingerprint, external_id, synced_values, now)
        )

    def send_again(
        self, *, fingerprint: str, external_id: str, synced_values: dict[str, Any], now: datetime
    ) -> int:
        """As :meth:`finish_synced` for a sent lead the site changed (or deleted the source of) while it
        was sent: what was sent is recorded, and the lead is released to go again, pending (deleting for
        a tombstone). How many moved."""
        return self.update(
            sync_state=_unless_tombstone(SyncState.PENDING),
            queued_at=now,
            **self._sent(fingerprint, external_id, synced_values, now),
        )

    @staticmethod
    def _sent(
        fingerprint: str, external_id: str, synced_values: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        return {
            "external_id": external_id,
            "synced_fingerprint": fingerprint,
            "synced_values": synced_values,
            "last_synced_at": now,
            "attempts": 0,
            "last_error": "",
            "next_attempt_at": None,
            "updated_at": now,
            **_RELEASED,
        }

    def finish_deleted(self, now: datetime | None = None) -> int:
        """The claimed leads are gone from the CRM (or were never there): deleted."""
        return self.update(
            sync_state=SyncState.DELETED,
            attempts=0,
            last_error="",
            next_attempt_at=None,
            updated_at=now or timezone.now(),
            **_RELEASED,
        )

    def schedule_retry(
        self, *, state: SyncState, attempts: int, at: datetime | None, error: str, now: datetime
    ) -> int:
        """Release the claimed leads to try again at ``at`` after a transient error, in ``state``
        (retrying, or deleting for a delete), or deleting if they became tombstones meanwhile."""
        return self.update(
            sync_state=_unless_tombstone(state),
            attempts=attempts,
            next_attempt_at=at,
            **self._released(error, now),
        )

    def wait_for_quota(
        self, *, state: SyncState, until: datetime, error: str, now: datetime
    ) -> int:
        """As :meth:`schedule_retry` until the CRM's quota resets at ``until``; waiting is not an attempt,
        so the count of attempts is left as it is."""
        return self.update(
            sync_state=_unless_tombstone(state), next_attempt_at=until, **self._released(error, now)
        )

    def wait_for_quota_in_bulk(self, *, until: datetime, error: str, now: datetime) -> int:
        """Park the unclaimed leads waiting to be sent or deleted until the CRM's quota lets them go at
        ``until``, without claiming them: retrying (a deletion stays deleting), due at ``until``, not an
        attempt. The worker's quota pause for a whole chunk, one UPDATE whatever its size (no claim, no
        ledger row, no task each). How many moved."""
        return (
            self.unclaimed()
            .filter(sync_state__in=[SyncState.PENDING, SyncState.RETRYING, SyncState.DELETING])
            .update(
                sync_state=Case(
                    When(sync_state=SyncState.DELETING, then=Value(SyncState.DELETING)),
                    default=Value(SyncState.RETRYING),
                ),
                next_attempt_at=until,
                last_error=error,
                queued_at=now,
                updated_at=now,
            )
        )

    def wait_for_crm(self, *, state: SyncState, error: str, now: datetime) -> int:
        """Release the claimed leads to wait until the CRM answers again, in ``state`` (pending, or
        deleting for a delete) or deleting if they became tombstones meanwhile: not an attempt, no next
        attempt time (:meth:`release_waiting` sends them), and their queue time kept, so they go in the
        order they changed."""
        return self.update(
            sync_state=_unless_tombstone(state),
            waiting_for_crm=True,
            next_attempt_at=None,
            last_error=error,
            updated_at=now,
            **_RELEASED,
        )

    def wait_for_crm_since(self, since: datetime, now: datetime | None = None) -> int:
        """Make the unclaimed retries scheduled since ``since`` (when the CRM stopped answering) wait for
        the CRM instead of their backoff slot: a slot computed while it was down says nothing about when
        to send. Their attempts are kept. How many moved."""
        return (
            self.unclaimed()
            .filter(
                sync_state__in=[SyncState.RETRYING, SyncState.DELETING],
                next_attempt_at__isnull=False,
                updated_at__gte=since,
            )
            .update(
                sync_state=_unless_tombstone(SyncState.PENDING),
                waiting_for_crm=True,
                next_attempt_at=None,
                updated_at=now or timezone.now(),
            )
        )

    def release_waiting(self, now: datetime | None = None) -> int:
        """The CRM answers again (or staff said "Send waiting leads now"): the waiting leads may be
        claimed at once; the caller queues them. How many moved."""
        now = now or timezone.now()
        return self.filter(waiting_for_crm=True).update(
            waiting_for_crm=False, next_attempt_at=None, queued_at=now, updated_at=now
        )

    def fail(self, *, attempts: int, error: str, now: datetime) -> int:
        """Release the claimed leads as failed for good (a permanent error, or the last attempt)."""
        return self.update(
            sync_state=SyncState.FAILED,
            attempts=attempts,
            next_attempt_at=None,
            **self._released(error, now),
        )

    def requeue_if_moved(self, *, fingerprint: str, error: str, now: datetime) -> int:
        """Release the claimed leads that changed since they were read at ``fingerprint``, or became
        tombstones, to go again at once (pending, or deleting): a sync that failed for good while the
        site fixed the lead (an e-mail address after a 400) is not a dead end. How many moved."""
        return self.filter(Q(tombstone=True) | ~Q(fingerprint=fingerprint)).update(
            sync_state=_unless_tombstone(SyncState.PENDING),
            attempts=0,
            next_attempt_at=None,
            **self._released(error, now),
        )

    def fail_configuration(self, error: str) -> int:
        """Fail the leads (claimed or not) on a configuration error: never retried."""
        return self.update(sync_state=SyncState.FAILED, last_error=error, **_RELEASED)

    @staticmethod
    def _released(error: str, now: datetime) -> dict[str, Any]:
        return {"last_error": error, "queued_at": now, "updated_at": now, **_RELEASED}

    # -- the sweeper ----------------------------------------------------------------------------------

    def release_stale_claims(self, before: datetime, now: datetime | None = None) -> int:
        """Give back claims taken before ``before``: their worker died (``kill -9``, a lost machine).

        A syncing lead is pending again, a tombstone deleting; both look lost to the sweeper at once.
        """
        now = now or timezone.now()
        return (
            self.held()
            .filter(claimed_at__lt=before)
            .update(
                sync_state=Case(
                    When(tombstone=True, then=Value(SyncState.DELETING)),
                    When(sync_state=SyncState.SYNCING, then=Value(SyncState.PENDING)),
                    default=F("sync_state"),
                ),
                next_attempt_at=None,
                # The dead worker's create may have reached the CRM: the next attempt looks it up by e-mail.
                absent_from_crm_at=None,
                queued_at=now - timedelta(days=1),
                **_RELEASED,
            )
        )

    def mark_queued(self, now: datetime | None = None) -> int:
        """Record that the leads were queued again just now (the sweeper, before it enqueues them)."""
        return self.update(queued_at=now or timezone.now())

    # -- the funnel -----------------------------------------------------------------------------------

    def refuse_status(self, wanted: str, now: datetime | None = None) -> int:
        """Record that an automatic change to ``wanted`` was refused (it would move the leads back in the
        funnel, see :func:`moves_back`); the status itself is left alone. How many rows were written."""
        return self.update(status_refused=wanted, status_refused_at=now or timezone.now())

    def clear_refused_status(self) -> int:
        """Forget a refused change once a later status change went through (a forced one, or a step
        forward): the lead's status is what was decided since."""
        return self.exclude(status_refused="").update(status_refused="", status_refused_at=None)

    # -- changes read back from the CRM (crmify.inbound) -----------------------------------------------

    def take_from_crm(
        self,
        *,
        read_as: tuple[str, str],
        values: dict[str, Any],
        synced_values: dict[str, Any],
        fingerprints: tuple[str, str],
        crm_modified_at: datetime | None,
        status_refused: str | None,
        now: datetime,
    ) -> int:
        """Write what the CRM changed on the (one) lead: its ``values`` (lead fields), what crmify
        believes the CRM holds (``synced_values``) and the ``fingerprints`` (fingerprint, synced
        fingerprint) of both, so the change is never pushed back; its state is left as it was (pending
        stays pending, synced stays synced). ``status_refused``: a status from the CRM the funnel refused
        (recorded as :meth:`refuse_status` does), "" to forget an earlier refusal (a status went
        through), None to leave it. ``crm_modified_at`` (None: unknown, kept) is the CRM's modification
        time of the record read.

        Refused (0) unless the lead is as it was read: unclaimed, not a tombstone, at the fingerprints
        ``read_as``. A worker that claimed it meanwhile, or a save or a send that moved it, is never
        overwritten: the caller reads it again. How many moved (0 or 1).
        """
        if set(values) & set(STATE_FIELDS):
            raise ValueError(f"take_from_crm writes lead values, not {sorted(values)}.")
        fingerprint, synced_fingerprint = read_as
        changes: dict[str, Any] = {**values, "synced_values": synced_values, "updated_at": now}
        changes["fingerprint"], changes["synced_fingerprint"] = fingerprints
        if crm_modified_at is not None:
            changes["crm_modified_at"] = crm_modified_at
        if status_refused is not None:
            changes["status_refused"] = status_refused
            changes["status_refused_at"] = now if status_refused else None
        return (
            self.unclaimed()
            .filter(tombstone=False, fingerprint=fingerprint, synced_fingerprint=synced_fingerprint)
            .update(**changes)
        )

    def mark_deleted_in_crm(self, now: datetime, error: str = "") -> int:
        """The leads' CRM records were deleted in the CRM (a poll, a webhook, a 404 to an update):
        tombstones, deleted, marked deleted in the CRM at ``now``, with nothing queued (there is nothing
        left to delete) and their claim given back; ``error`` is what the CRM said, kept on the lead.
        Saves and backfills do not bring them back; staff's "Re-sync" (:meth:`force_pending`) does, as a
        new record. A lead already deleted (by crmify, or in the CRM before) is refused. How many moved.
        """
        return self.exclude(sync_state=SyncState.DELETED).update(
            tombstone=True,
            sync_state=SyncState.DELETED,
            deleted_in_crm_at=now,
            attempts=0,
            next_attempt_at=None,
            waiting_for_crm=False,
            last_error=error,
            updated_at=now,
            **_RELEASED,
        )

    def adopt_crm_id(self, external_id: str, now: datetime | None = None) -> int:
        """The leads' CRM records were merged into ``external_id`` in the CRM (HubSpot's merge): that is
        their CRM id from now on. Tombstones are refused (their deletion must not reach the survivor).
        How many moved."""
        return (
            self.filter(tombstone=False)
            .exclude(external_id=external_id)
            .update(external_id=external_id, updated_at=now or timezone.now())
        )

    # -- staff ----------------------------------------------------------------------------------------

    def force_pending(self, forget_crm_id: Q, now: datetime | None = None) -> int:
        """Make the leads send everything again, changed or not; a tombstone comes back to life (one
        deleted in the CRM too: it is no longer marked so). Leads a worker holds stay syncing. Those
        matching ``forget_crm_id`` (their CRM record is gone) drop their CRM id, so the send creates a
        new record. How many rows were written ("Re-sync", "Sync now")."""
        return self.update(
            synced_fingerprint="",
            synced_values={},
            tombstone=False,
            deleted_in_crm_at=None,
            attempts=0,
            next_attempt_at=None,
            waiting_for_crm=False,
            queued_at=now or timezone.now(),
            sync_state=_pending_unless_syncing(),
            # Decided on the row; evaluated before the sync_state above is written.
            external_id=Case(When(forget_crm_id, then=Value("")), default=F("external_id")),
        )

    def retry_failed(self, now: datetime | None = None) -> int:
        """Queue the failed leads again with a fresh count of attempts: pending, or deleting for a
        tombstone. Leads that are not failed are refused. How many moved."""
        return self.filter(sync_state=SyncState.FAILED).update(
            sync_state=_unless_tombstone(SyncState.PENDING),
            attempts=0,
            next_attempt_at=None,
            queued_at=now or timezone.now(),
        )

    def delete_now(self) -> int:
        """Make the tombstones among the leads due for their deletion at once ("Sync now")."""
        return (
            self.filter(tombstone=True)
            .exclude(sync_state=SyncState.DELETED)
            .update(sync_state=SyncState.DELETING, next_attempt_at=None, waiting_for_crm=False)
        )

    def request_delete(self, now: datetime | None = None) -> tuple[int, int]:
        """Make the (one) live lead a tombstone and queue their deletion from the CRM: (1 or 0 deleted at once,
        1 or 0 waiting for a worker). Tombstones are refused.

        A lead never sent and not being sent has nothing in the CRM: deleted at once. One without a CRM
        id that was sent (its create timed out, say) may be there all the same: the worker looks for it.
        A lead being synced stays with its worker, which hands it to the delete when it finishes.
        """
        now = now or timezone.now()
        tombstone = {
            "tombstone": True,
            "attempts": 0,
            "next_attempt_at": None,
            # A deletion waits for the CRM only once a worker finds it down.
            "waiting_for_crm": False,
            "queued_at": now,
            "updated_at": now,
        }
        live = self.filter(tombstone=False)
        ledger = self.model._meta.get_field("ledger").related_model
        deleted = (
            live.filter(external_id="")
            .exclude(sync_state=SyncState.SYNCING)
            .exclude(Exists(ledger._default_manager.using(self.db).filter(lead=OuterRef("pk"))))
            .update(sync_state=SyncState.DELETED, **tombstone)
        )
        if deleted:
            return deleted, 0  # one lead: it is a tombstone now
        queued = live.update(
            sync_state=Case(
                When(sync_state=SyncState.SYNCING, then=Value(SyncState.SYNCING)),
                default=Value(SyncState.DELETING),
            ),
            **tombstone,
        )
        return deleted, queued


def prepare_insert(leads: Iterable[Lead], now: datetime, *, failed: str = "") -> None:
    """Set the state of new, unsaved leads before their INSERT (``crmify.tracking``, the backfill's whole
    chunk at once): pending and queued at ``now``, or failed with the mapper's message ``failed``."""
    state = SyncState.FAILED if failed else SyncState.PENDING
    for lead in leads:
        lead.sync_state = state
        lead.queued_at = now
        if failed:
            lead.last_error = failed


def note_changed(lead: Lead) -> None:
    """Mirror on the caller's copy a :meth:`LeadQuerySet.mark_changed` that moved ``lead``."""
    lead.sync_state = SyncState.PENDING


def note_mapping_failed(lead: Lead, message: str) -> None:
    """Mirror on the caller's copy :meth:`LeadQuerySet.fail_mapping` (a tombstone keeps its state)."""
    if not lead.tombstone:
        lead.sync_state = SyncState.FAILED
    lead.last_error = message


def note_tombstone(lead: Lead) -> None:
    """Mirror on the caller's copy a :meth:`LeadQuerySet.request_delete` that moved ``lead``."""
    lead.tombstone = True
