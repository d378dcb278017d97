"""The webhook task (``crmify.webhook_worker.apply_webhook_task``): what it reads back from the CRM, what
it hands to ``crmify.inbound.apply_changes``, and when it waits and tries again.

The CRM is the locmem one with a ``read_changes``; ``apply_changes`` is recorded here (what it does to
leads is ``crmify.inbound``'s, tested there). The dummy Tasks backend records what is queued again.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from crmify.models import LedgerEntry
from crmify.webhook_worker import apply_webhook_task

pytestmark = pytest.mark.django_db

AT = "2026-01-01T00:00:00+00:00"


class ReadingCrm(LocmemBackend):
    """The locmem CRM, read back by id: one recorded ``read`` call per ``read_changes``."""

    supports_pull = True

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        self._call("read", ",".join(external_ids), {})
        return [
            CrmChange(record, values=dict(locmem.leads[record]))
            if record in locmem.leads
            else CrmChange(record, deleted=True)
            for record in external_ids
        ]


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
    configure(BACKEND="tests.test_webhook_worker.ReadingCrm", TASK_BACKEND="dummy")
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


def reads() -> list[str]:
    return [call.lead_id for call in locmem.calls if call.operation == "read"]


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

    assert reads() == ["1,2"]
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

    assert reads() == ["7"]
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
