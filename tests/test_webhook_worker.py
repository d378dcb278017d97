"""The webhook task (``crmify.webhook_worker.apply_webhook_task``): what it reads back from the CRM, what
it hands to ``crmify.inbound.apply_changes``, and when it waits and tries again.

The CRM is the locmem one (its ``read_changes``); ``apply_changes`` is recorded here (what it does to
leads is ``crmify.inbound``'s, tested there). The dummy Tasks backend records what is queued again.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from django.core.cache import cache
from django.utils import timezone

from crmify import crm_state, webhook_worker
from crmify.backends import locmem
from crmify.backends.base import CrmChange
from crmify.backends.locmem import LocmemBackend
from crmify.compat import task_backends
from crmify.exceptions import PermanentBackendError, QuotaExhausted, TransientBackendError
from crmify.inbound import InboundReport
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.signals import lead_changed_in_crm, lead_deleted_in_crm
from crmify.webhook_events import hubspot_events
from crmify.webhook_worker import apply_webhook_task
from crmify.worker import current_backend
from tests.doubles import Enqueued
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db

AT = "2026-01-01T00:00:00+00:00"


@dataclass
class Applied:
    """What ``apply_changes`` was handed, call by call; ``deferred`` is what it reports next."""

    calls: list[tuple[list[CrmChange], str]] = field(default_factory=list)
    deferred: int = 0

    def __call__(self, changes: Sequence[CrmChange], *, via: str) -> InboundReport:
        self.calls.append((list(changes), via))
        return InboundReport(applied=len(changes) - self.deferred, deferred=self.deferred)

    @property
    def changes(self) -> list[CrmChange]:
        return [change for changes, _ in self.calls for change in changes]


@pytest.fixture
def applied(configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> Iterator[Applied]:
    configure(BACKEND="crmify.backends.locmem.LocmemBackend", TASK_BACKEND="dummy")
    cache.clear()
    task_backends["dummy"].clear()
    recorder = Applied()
    monkeypatch.setattr(webhook_worker, "apply_changes", recorder)
    yield recorder
    task_backends["dummy"].clear()


def event(
    record: str, kind: str = "changed", survivor: str = "", at: str | None = AT
) -> dict[str, Any]:
    return {"id": record, "kind": kind, "survivor": survivor, "at": at}


def reads() -> list[list[str]]:
    """The ids of each ``read_changes`` call the CRM got."""
    return [call.payload["ids"] for call in locmem.calls if call.operation == "read"]


def queued_again() -> list[tuple[list[dict[str, Any]], int, datetime.datetime | None]]:
    """Every ``apply_webhook_task`` queued again: its events, its attempt, when it runs."""
    return [
        (result.args[0], result.args[1], result.task.run_after)
        for result in task_backends["dummy"].results
        if result.task.name == "apply_webhook_task"
    ]


def test_changed_records_are_read_back_in_one_call_and_applied_as_the_crm_has_them(
    applied: Applied,
) -> None:
    locmem.leads.update({"1": {"status": "Contacted"}, "2": {"status": "Converted"}})

    apply_webhook_task.call([event("1"), event("2"), event("1")])

    assert reads() == [["1", "2"]]
    assert applied.calls == [
        (
            [
                CrmChange("1", values={"status": "Contacted"}),
                CrmChange("2", values={"status": "Converted"}),
            ],
            "webhook",
        )
    ]


def test_a_deleted_record_is_applied_as_deleted_without_a_crm_call(applied: Applied) -> None:
    apply_webhook_task.call([event("3", "deleted")])

    assert locmem.calls == []
    assert applied.changes == [
        CrmChange("3", modified_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), deleted=True)
    ]


def test_a_merge_moves_the_loser_to_the_survivor_then_reads_the_survivor_back(
    applied: Applied,
) -> None:
    locmem.leads["7"] = {"status": "Contacted"}

    apply_webhook_task.call([event("5", "merged", survivor="7"), event("7")])

    assert reads() == [["7"]]
    # Two calls: the lead holds the survivor's id before the survivor's record is applied.
    assert [len(changes) for changes, _ in applied.calls] == [1, 1]
    merged, survivor = applied.changes
    assert (merged.external_id, merged.merged_into, merged.deleted) == ("5", "7", False)
    assert survivor == CrmChange("7", values={"status": "Contacted"})


def test_a_record_deleted_then_restored_in_one_delivery_is_read_back_not_deleted(
    applied: Applied,
) -> None:
    locmem.leads["4"] = {"status": "Contacted"}

    apply_webhook_task.call(
        [
            event("4", "deleted", at="2026-01-01T00:00:00+00:00"),
            event("4", at="2026-01-01T00:01:00+00:00"),
        ]
    )

    assert applied.changes == [CrmChange("4", values={"status": "Contacted"})]


def test_the_read_is_in_the_ledger(applied: Applied) -> None:
    locmem.leads["1"] = {"status": "Contacted"}

    apply_webhook_task.call([event("1")])

    [entry] = LedgerEntry.objects.all()
    assert (entry.operation, entry.lead_id, entry.outcome) == ("read", None, "ok")
    assert entry.direction == LedgerEntry.Direction.IN  # a read of changes from the CRM


def test_after_a_transient_error_the_reads_wait_for_a_backoff_and_deletes_go_ahead(
    applied: Applied,
) -> None:
    locmem.fail_next(TransientBackendError("Bad Gateway", status_code=502))
    before = timezone.now()

    done = apply_webhook_task.call([event("1"), event("3", "deleted")])

    assert [change.external_id for change in applied.changes] == ["3"]
    [(events, attempt, run_after)] = queued_again()
    assert [(e["id"], e["kind"]) for e in events] == [("1", "changed")]
    assert attempt == 1
    assert run_after is not None and run_after > before
    assert done["waiting"] == 1


def test_the_reads_are_given_up_after_max_attempts(
    applied: Applied, configure: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    configure(MAX_ATTEMPTS=3)
    locmem.fail_next(TransientBackendError("Bad Gateway", status_code=502))

    with caplog.at_level(logging.ERROR, logger="crmify"):
        apply_webhook_task.call([event("1")], 2)

    assert queued_again() == []
    assert applied.calls == []
    assert "given up" in caplog.text


def test_a_permanent_error_is_logged_and_not_tried_again(
    applied: Applied, caplog: pytest.LogCaptureFixture
) -> None:
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))

    with caplog.at_level(logging.ERROR, logger="crmify"):
        apply_webhook_task.call([event("1")])

    assert queued_again() == []
    assert "Forbidden" in caplog.text


def test_while_the_crm_is_down_no_call_is_made_and_the_reads_wait_for_its_next_probe(
    applied: Applied,
) -> None:
    for _ in range(crm_state.DOWN_AFTER_FAILURES):
        crm_state.note_failure("connection refused")
    state = crm_state.crm_state()
    assert state.down

    apply_webhook_task.call([event("1")], 1)

    assert locmem.calls == []
    [(events, attempt, run_after)] = queued_again()
    assert ([e["id"] for e in events], attempt, run_after) == (["1"], 1, state.next_probe_at)


def test_while_the_quota_is_spent_the_reads_wait_for_its_reset(applied: Applied) -> None:
    resets = timezone.now() + datetime.timedelta(hours=3)
    locmem.fail_next(QuotaExhausted("Daily quota used up", resets_at=resets, status_code=429))

    apply_webhook_task.call([event("1")])

    [(_, attempt, run_after)] = queued_again()
    assert (attempt, run_after) == (0, resets)


def test_changes_deferred_by_a_held_lead_are_tried_again_a_few_seconds_later(
    applied: Applied,
) -> None:
    locmem.leads["1"] = {"status": "Contacted"}
    applied.deferred = 1
    before = timezone.now()

    apply_webhook_task.call([event("1"), event("3", "deleted")])

    [(events, attempt, run_after)] = queued_again()
    assert sorted(e["id"] for e in events) == ["1", "3"]
    assert attempt == 1
    assert run_after is not None
    assert (
        before + datetime.timedelta(seconds=4) < run_after < before + datetime.timedelta(seconds=60)
    )


# -- through crmify.inbound, to the leads ----------------------------------------------------------------
# The real apply_changes and the locmem CRM as a salesperson leaves it; the immediate Tasks backend syncs
# what the site saves, so a change pushed back would show as a call.


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    """What receivers of ``lead_changed_in_crm`` and ``lead_deleted_in_crm`` got, in order."""
    got: list[dict[str, Any]] = []

    def heard(sender: Any, signal: Any, **kwargs: Any) -> None:
        got.append({**kwargs, "signal": signal})

    lead_changed_in_crm.connect(heard, weak=False, dispatch_uid="test:webhook")
    lead_deleted_in_crm.connect(heard, weak=False, dispatch_uid="test:webhook:deleted")
    yield got
    lead_changed_in_crm.disconnect(dispatch_uid="test:webhook")
    lead_deleted_in_crm.disconnect(dispatch_uid="test:webhook:deleted")


def sends() -> list[str]:
    """The calls that changed the CRM (reads aside)."""
    return [call.operation for call in locmem.calls if call.operation not in ("read", "changes")]


def synced_lead(**fields: Any) -> Lead:
    lead = lead_of(make_user(**fields))
    assert lead.sync_state == SyncState.SYNCED
    return lead


@pytest.mark.django_db(transaction=True)
def test_a_status_changed_in_the_crm_reaches_the_lead_and_is_not_pushed_back(
    received: list[dict[str, Any]],
) -> None:
    lead = synced_lead()
    locmem.change_in_crm(lead.external_id, status="Disqualified")

    done = apply_webhook_task.call([event(lead.external_id)])

    lead.refresh_from_db()
    assert lead.status == "Disqualified"
    assert done["applied"] == 1
    assert sends() == ["create"]
    [heard] = received
    assert (heard["signal"], heard["lead"].pk, heard["via"]) == (
        lead_changed_in_crm,
        lead.pk,
        "webhook",
    )
    assert heard["changes"]["status"][1] == "Disqualified"
    assert LedgerEntry.objects.filter(
        lead=lead, direction=LedgerEntry.Direction.IN, operation="webhook"
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_a_repeated_delivery_changes_nothing_more(received: list[dict[str, Any]]) -> None:
    lead = synced_lead()
    locmem.change_in_crm(lead.external_id, status="Disqualified")
    apply_webhook_task.call([event(lead.external_id)])
    rows = LedgerEntry.objects.filter(lead=lead, direction=LedgerEntry.Direction.IN).count()

    done = apply_webhook_task.call([event(lead.external_id)])

    assert done.get("applied", 0) == 0
    assert len(received) == 1
    assert LedgerEntry.objects.filter(lead=lead, direction=LedgerEntry.Direction.IN).count() == rows
    assert sends() == ["create"]


@pytest.mark.django_db(transaction=True)
def test_a_deletion_event_marks_the_lead_deleted_in_the_crm(received: list[dict[str, Any]]) -> None:
    lead = synced_lead()
    locmem.delete_in_crm(lead.external_id)

    apply_webhook_task.call([event(lead.external_id, "deleted")])

    lead.refresh_from_db()
    assert lead.deleted_in_crm_at is not None and lead.tombstone
    assert [(h["signal"], h["via"]) for h in received] == [(lead_deleted_in_crm, "webhook")]
    assert locmem.calls[-1].operation == "create"  # no read: a deletion needs none


@pytest.mark.django_db(transaction=True)
def test_a_merged_lead_adopts_the_survivor_and_takes_its_values() -> None:
    lead = synced_lead()
    survivor = current_backend().sync_lead(Lead(email="other@example.com", status="Contacted"))
    locmem.merge_in_crm(lead.external_id, into=survivor)
    body = [
        {
            "subscriptionType": "contact.merge",
            "objectId": int(survivor),
            "primaryObjectId": int(survivor),
            "mergedObjectIds": [int(lead.external_id)],
            "occurredAt": 1767225600000,
        }
    ]

    apply_webhook_task.call([dict(e) for e in hubspot_events(body)])

    lead.refresh_from_db()
    assert (lead.external_id, lead.status) == (survivor, "Contacted")
    assert sends() == ["create", "create"]  # the lead's and the other record's: nothing pushed back


class HeldWhilePushing(LocmemBackend):
    """The locmem CRM that runs ``after_push`` once, right after its next ``sync_lead`` has stored the
    lead and before the worker gets the answer: the worker still holds the lead."""

    after_push: ClassVar[Callable[[], None] | None] = None

    def sync_lead(self, lead: Lead) -> str:
        external_id = super().sync_lead(lead)
        hook, HeldWhilePushing.after_push = HeldWhilePushing.after_push, None
        if hook is not None:
            hook()
        return external_id


@pytest.mark.django_db(transaction=True)
def test_a_change_for_a_lead_a_worker_holds_is_applied_by_the_task_queued_again(
    configure: Callable[..., None], enqueued: Enqueued
) -> None:
    configure(BACKEND="tests.test_webhook_worker.HeldWhilePushing")
    user = make_user()
    enqueued.run_all()  # the create
    lead = lead_of(user)
    outcomes: list[dict[str, int]] = []

    def salesperson_and_webhook() -> None:
        locmem.change_in_crm(lead.external_id, status="Disqualified")
        outcomes.append(apply_webhook_task.call([event(lead.external_id)]))

    HeldWhilePushing.after_push = salesperson_and_webhook
    user.first_name = "Augusta"
    user.save()
    enqueued.run_all()  # the worker sends the update; the webhook's task runs while it holds the lead

    assert outcomes[0]["deferred"] == 1
    assert lead_of(user).status == "NotContacted"
    [(events, attempt, run_after)] = queued_again()
    assert attempt == 1 and run_after is not None
    apply_webhook_task.call(events, attempt)
    assert lead_of(user).status == "Disqualified"
    assert sends() == ["create", "update"]
