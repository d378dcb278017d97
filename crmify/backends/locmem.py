"""An in-memory CRM for tests, like Django's locmem e-mail backend.

Everything the engine sends lands in module-level state that a test reads back::

    from crmify.backends import locmem
    locmem.reset()
    ...
    assert locmem.leads[lead.external_id]["email"] == "ada@example.com"
    assert [call.operation for call in locmem.calls] == ["create"]

``locmem.fail_next(error, times=1)`` makes the next calls raise ``error`` (a transient or permanent
``BackendError``, or anything else) to exercise retries. State is per process.

It reads changes back too (``supports_pull``): every record keeps its modification time, and a test acts
as a salesperson would in the CRM with ``locmem.change_in_crm(lead_id, status="Disqualified")``,
``locmem.delete_in_crm(lead_id)`` and ``locmem.merge_in_crm(lead_id, into=survivor_id)``. ``iter_changes``
is one recorded ``changes`` call per page (``BACKEND_OPTIONS['PULL_PAGE_SIZE']``, default 100), and
``read_changes`` one ``read`` call.

:class:`LocmemBatchBackend` is the same CRM with batch calls (``supports_batch``): each ``sync_leads``
is one recorded ``batch`` call, whose payload lists the leads' e-mails; ``locmem.reject(email, error)``
makes the CRM refuse that one input of the next batch carrying it (a 207 partial failure) while the
others go through.
"""

from __future__ import annotations

import datetime
import itertools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from crmify.exceptions import PermanentBackendError

from .base import BaseBackend, BatchItem, CallRecord, CrmChange, CrmLead, record_call

if TYPE_CHECKING:
    from crmify.models import Lead


@dataclass(frozen=True, slots=True)
class LocmemCall:
    """One call the backend received: ``create``, ``update``, ``delete`` or ``list``, with what it carried."""

    operation: str
    lead_id: str
    payload: dict[str, Any]


_lock = threading.Lock()
_ids = itertools.count(1)
#: The CRM's leads by id.
leads: dict[str, dict[str, Any]] = {}
#: Every call in order, failed ones included.
calls: list[LocmemCall] = []
_failures: list[BaseException] = []
#: Inputs the next batch call refuses, by e-mail.
_rejections: dict[str, Exception] = {}
#: When each record (a live one, or one deleted or merged away) last changed in the CRM, by id.
modified: dict[str, datetime.datetime] = {}
#: Records merged away in the CRM: the survivor's id, by the merged record's id.
merged: dict[str, str] = {}


def reset() -> None:
    """Forget every lead, call and planned failure."""
    global _ids
    with _lock:
        leads.clear()
        calls.clear()
        _failures.clear()
        _rejections.clear()
        modified.clear()
        merged.clear()
        _ids = itertools.count(1)


def reject(email: str, error: Exception) -> None:
    """Make the next batch call that carries ``email`` refuse that input with ``error`` (once)."""
    with _lock:
        _rejections[email] = error


def fail_next(error: BaseException, times: int = 1) -> None:
    """Make the next ``times`` calls raise ``error`` instead of succeeding."""
    with _lock:
        _failures.extend([error] * times)


def _touch(lead_id: str, at: datetime.datetime | None) -> datetime.datetime:
    """Record that ``lead_id`` changed ``at`` (now by default); call with the lock held."""
    modified[lead_id] = at or timezone.now()
    return modified[lead_id]


def change_in_crm(lead_id: str, at: datetime.datetime | None = None, **values: Any) -> None:
    """Change record ``lead_id`` as a salesperson would in the CRM (no call is recorded): lead field
    ``values`` (``custom_fields`` merged into the record's), modified ``at`` (now by default)."""
    with _lock:
        record = leads[lead_id]
        custom = values.pop("custom_fields", None)
        record.update(values)
        if custom:
            record["custom_fields"] = {**(record.get("custom_fields") or {}), **custom}
        _touch(lead_id, at)


def delete_in_crm(lead_id: str, at: datetime.datetime | None = None) -> None:
    """Delete record ``lead_id`` in the CRM (no call is recorded); changes read back say so."""
    with _lock:
        leads.pop(lead_id)
        _touch(lead_id, at)


def merge_in_crm(lead_id: str, *, into: str, at: datetime.datetime | None = None) -> None:
    """Merge record ``lead_id`` into record ``into`` in the CRM, as HubSpot merges contacts (no call
    is recorded): ``lead_id`` is gone, changes read back name ``into`` as the survivor."""
    with _lock:
        leads.pop(lead_id)
        merged[lead_id] = into
        _touch(into, _touch(lead_id, at))


def _change(lead_id: str) -> CrmChange:
    """Record ``lead_id`` as a change read back; call with the lock held."""
    at = modified.get(lead_id)
    if lead_id in leads:
        return CrmChange(lead_id, at, dict(leads[lead_id]))
    if lead_id in merged:
        return CrmChange(lead_id, at, merged_into=merged[lead_id])
    return CrmChange(lead_id, at, deleted=True)


class LocmemBackend(BaseBackend):
    """Keeps the CRM in memory and records every call; see the module docstring."""

    supports_payload_preview = True
    supports_fetch = True
    supports_listing = True
    supports_pull = True

    def __init__(
        self, options: dict[str, Any] | None = None, auth: dict[str, str] | None = None
    ) -> None:
        super().__init__(options, auth)
        self.pull_page_size = int(self.options.get("PULL_PAGE_SIZE", 100))

    def build_payload(self, lead: Lead) -> dict[str, Any]:
        return lead.crm_values()

    def sync_lead(self, lead: Lead) -> str:
        payload = self.build_payload(lead)
        operation = "update" if lead.external_id in leads else "create"
        lead_id = lead.external_id if operation == "update" else str(next(_ids))
        self._call(operation, lead_id, payload)
        with _lock:
            leads[lead_id] = payload
            _touch(lead_id, None)
        return lead_id

    def _store(self, lead: Lead) -> str:
        """Create or update ``lead`` without a call of its own (one input of a batch)."""
        with _lock:
            lead_id = lead.external_id if lead.external_id in leads else str(next(_ids))
            leads[lead_id] = self.build_payload(lead)
            _touch(lead_id, None)
        return lead_id

    def delete_lead(self, lead_id: str) -> bool:
        self._call("delete", lead_id, {})
        with _lock:
            if leads.pop(lead_id, None) is not None:
                _touch(lead_id, None)
        return True

    def fetch_lead(self, lead_id: str) -> dict[str, Any] | None:
        return leads.get(lead_id)

    def iter_leads(self, page_size: int = 500) -> Iterator[list[CrmLead]]:
        with _lock:
            snapshot = [
                (lead_id, str(payload.get("email") or "")) for lead_id, payload in leads.items()
            ]
        skip = 0
        while True:
            # One recorded call per page, as an HTTP CRM would answer, so call counts compare.
            self._call("list", "", {"skip": skip, "top": page_size})
            page = [CrmLead(lead_id, email) for lead_id, email in snapshot[skip : skip + page_size]]
            yield page
            if len(page) < page_size:
                return
            skip += page_size

    def iter_changes(self, since: datetime.datetime | None) -> Iterator[list[CrmChange]]:
        with _lock:
            changed = sorted(
                (at, lead_id) for lead_id, at in modified.items() if since is None or at >= since
            )
        skip = 0
        while True:
            # One recorded call per page, as an HTTP CRM would answer, so call counts compare.
            self._call("changes", "", {"since": since, "skip": skip, "top": self.pull_page_size})
            with _lock:
                page = [
                    _change(lead_id) for _, lead_id in changed[skip : skip + self.pull_page_size]
                ]
            yield page
            if len(page) < self.pull_page_size:
                return
            skip += self.pull_page_size

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        self._call("read", "", {"ids": list(external_ids)}, summary=f"{len(external_ids)} ids")
        with _lock:
            return [_change(lead_id) for lead_id in external_ids]

    def _call(
        self, operation: str, lead_id: str, payload: dict[str, Any], summary: str = ""
    ) -> None:
        with _lock:
            calls.append(LocmemCall(operation, lead_id, payload))
            failure = _failures.pop(0) if _failures else None
        if failure is not None:
            outcome = "permanent" if isinstance(failure, PermanentBackendError) else "transient"
            record_call(CallRecord(operation, outcome=outcome, error=str(failure)))
            raise failure
        record_call(CallRecord(operation, request_summary=summary or f"{len(payload)} fields"))


class LocmemBatchBackend(LocmemBackend):
    """:class:`LocmemBackend` with batch calls: ``BACKEND_OPTIONS['MAX_BATCH_SIZE']`` leads (default
    100) per recorded ``batch`` call; see the module docstring."""

    supports_batch = True

    def __init__(
        self, options: dict[str, Any] | None = None, auth: dict[str, str] | None = None
    ) -> None:
        super().__init__(options, auth)
        self.max_batch_size = int(self.options.get("MAX_BATCH_SIZE", 100))

    def sync_leads(self, leads: Sequence[Lead]) -> list[BatchItem]:
        if len(leads) > self.max_batch_size:
            raise PermanentBackendError(
                f"{len(leads)} inputs in one batch; the CRM takes {self.max_batch_size}."
            )
        emails = [lead.email for lead in leads]
        self._call("batch", "", {"emails": emails}, summary=f"{len(emails)} inputs")
        with _lock:
            refused = {email: _rejections.pop(email) for email in emails if email in _rejections}
        return [
            BatchItem(error=refused[lead.email])
            if lead.email in refused
            else BatchItem(result=self._store(lead))
            for lead in leads
        ]
