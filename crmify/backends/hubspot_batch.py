"""HubSpot's batch calls for :class:`crmify.backends.hubspot.HubSpotBackend` (``sync_leads``).

Called by ``HubSpotBackend.sync_leads``, which the worker calls with up to ``max_batch_size`` leads
(``BACKEND_OPTIONS['MAX_BATCH_SIZE']``, 100 by default: the figure third parties use, unconfirmed by
HubSpot's docs). One call's leads are sent in at most three batch calls, each input carrying the lead's
id as ``objectWriteTraceId`` so HubSpot's answer maps back to the leads:

- a lead without a HubSpot id (or with one the backfill's listing found by its e-mail, never synced)
  goes in ``batch/upsert`` by e-mail (``idProperty=email``): the contact with that e-mail is updated,
  or created, so each e-mail is once in HubSpot however often it is sent (a retry after a timeout,
  two workers, a contact made in HubSpot meanwhile);
- a lead with its HubSpot id goes in ``batch/update`` with the properties changed since its last sync;
- a second lead with an e-mail already in this call's upsert goes in a second upsert after it (HubSpot
  takes one input per id), updating the same contact.

A lead whose properties cannot be sent (an unknown status: the single path's permanent error), a lead
with neither e-mail nor HubSpot id, and an update that moves a stage property (``lifecyclestage``, which
HubSpot does not move backwards in one step) go through ``sync_lead`` alone. A 207 fails only the inputs
its ``errors`` name, each with HubSpot's own message; an input HubSpot's answer does not mention is
retried. A whole call refused with a 400 (an account that refuses the whole batch for one bad input)
sends its leads one by one, so one bad lead never fails the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core import checks

from crmify.exceptions import PermanentBackendError, TransientBackendError

from .base import BatchItem, normalise_email
from .hubspot_errors import describe_error, objects_in

if TYPE_CHECKING:
    from crmify.models import Lead

    from .hubspot import HubSpotBackend

#: ``BACKEND_OPTIONS['MAX_BATCH_SIZE']`` by default: inputs per batch call.
DEFAULT_MAX_BATCH_SIZE = 100
#: Error categories of one input that sending it again would not fix.
PERMANENT_CATEGORIES = frozenset(
    {"VALIDATION_ERROR", "CONFLICT", "OBJECT_ALREADY_EXISTS", "OBJECT_NOT_FOUND", "INVALID_INPUT"}
)
#: The HTTP status a refused input is recorded with, by category (a 207 gives none per input).
CATEGORY_STATUS = {"VALIDATION_ERROR": 400, "CONFLICT": 409, "OBJECT_ALREADY_EXISTS": 409}
CATEGORY_STATUS["OBJECT_NOT_FOUND"] = 404

#: A lead's position in the call and its input.
Input = tuple[int, dict[str, Any]]


def max_batch_size(options: Mapping[str, Any]) -> int:
    """``MAX_BATCH_SIZE`` (100 unless set; 1 while it is wrong, which :func:`batch_checks` reports)."""
    return _positive(options.get("MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE)) or 1


def batch_checks(options: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """System-check messages about the batch options (``HubSpotBackend.check``)."""
    value = options.get("MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE)
    if _positive(value):
        return []
    return [
        checks.Error(
            f"BACKEND_OPTIONS['MAX_BATCH_SIZE'] must be a positive whole number, not {value!r}.",
            hint="HubSpot takes up to 100 inputs per batch call; 1 sends every lead alone.",
            id="crmify.E080",
        )
    ]


def _positive(value: Any) -> int | None:
    """``value`` if it is a positive whole number (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def sync_contacts(backend: HubSpotBackend, leads: Sequence[Lead]) -> list[BatchItem]:
    """Create or update each of ``leads`` in HubSpot in batch calls; one item per lead, in order."""
    items: list[BatchItem | None] = [None] * len(leads)
    upserts: list[Input] = []
    again: list[Input] = []  # a second lead of one e-mail: after the first
    updates: list[Input] = []
    alone: list[int] = []
    emails: set[str] = set()
    for index, lead in enumerate(leads):
        trace = {"objectWriteTraceId": str(lead.pk)}
        try:
            if lead.external_id and not _adopted(lead):
                changed = backend.changed_properties(lead)
                if any(name in changed for name in backend.stage_properties):
                    alone.append(index)
                else:
                    updates.append(
                        (index, {"id": lead.external_id, "properties": changed, **trace})
                    )
            elif lead.email.strip():
                email = lead.email.strip()
                target = again if normalise_email(email) in emails else upserts
                emails.add(normalise_email(email))
                properties = backend.lead_properties(lead)
                target.append(
                    (index, {"id": email, "idProperty": "email", "properties": properties, **trace})
                )
            else:
                alone.append(index)
        except PermanentBackendError as exc:  # this lead's own: the others still go
            items[index] = BatchItem(error=exc)
    for action, inputs in (("upsert", upserts), ("update", updates), ("upsert", again)):
        if inputs:
            _send(backend, action, inputs, leads, items)
    for index in alone:
        items[index] = _alone(backend, leads[index])
    return [item if item is not None else BatchItem(error=_unanswered()) for item in items]


def _adopted(lead: Lead) -> bool:
    """Whether ``lead``'s HubSpot id came from the backfill's listing by its e-mail and it was never
    synced: an upsert by that e-mail reaches the same contact, in the same call as new leads."""
    return bool(lead.email.strip()) and lead.last_synced_at is None and not lead.synced_values


def _send(
    backend: HubSpotBackend,
    action: str,
    inputs: list[Input],
    leads: Sequence[Lead],
    items: list[BatchItem | None],
) -> None:
    """One ``batch/<action>`` call; fills the items of its leads."""
    try:
        response = backend.request(
            f"batch {action}",
            "POST",
            f"{backend.objects_path}/batch/{action}",
            body={"inputs": [body for _index, body in inputs]},
        )
        answer = backend.json_of(response, f"the batch {action}")
    except PermanentBackendError as exc:
        if exc.status_code == 400 and len(inputs) > 1:
            for index, _body in inputs:  # refused as a whole: find the bad one by sending each
                items[index] = _alone(backend, leads[index])
            return
        _fail_all(inputs, items, exc)
        return
    except Exception as exc:  # the call failed: each of its leads gets the error
        _fail_all(inputs, items, exc)
        return
    by_trace = {str(body["objectWriteTraceId"]): index for index, body in inputs}
    by_key = {_key(str(body["id"])): index for index, body in inputs}
    answered = _mapping(answer)
    for result in objects_in(answered.get("results")):
        position = _match(result, by_trace, by_key)
        contact = str(result.get("id") or "")
        if position is not None and contact.isdigit():
            items[position] = BatchItem(result=contact)
    for error in objects_in(answered.get("errors")):
        position = _match(error, by_trace, by_key)
        if position is not None:
            items[position] = BatchItem(error=_input_error(error))


def _fail_all(inputs: list[Input], items: list[BatchItem | None], exc: Exception) -> None:
    for index, _body in inputs:
        items[index] = BatchItem(error=exc)


def _alone(backend: HubSpotBackend, lead: Lead) -> BatchItem:
    try:
        return BatchItem(result=backend.sync_lead(lead))
    except Exception as exc:  # this lead's error, read as the worker reads one of sync_lead
        return BatchItem(error=exc)


def _match(
    entry: Mapping[str, Any], by_trace: dict[str, int], by_key: dict[str, int]
) -> int | None:
    """The position of the lead a result or an error is about: by its ``objectWriteTraceId``, else by
    the input's id (an e-mail for an upsert, the contact id for an update)."""
    context = _mapping(entry.get("context"))
    traces = [entry.get("objectWriteTraceId"), *_listed(context.get("objectWriteTraceId"))]
    for trace in traces:
        if trace is not None and str(trace) in by_trace:
            return by_trace[str(trace)]
    properties = _mapping(entry.get("properties"))
    keys = [entry.get("id"), properties.get("email"), *_listed(context.get("ids"))]
    for key in keys:
        if key is not None and _key(str(key)) in by_key:
            return by_key[_key(str(key))]
    return None


def _input_error(error: Mapping[str, Any]) -> PermanentBackendError | TransientBackendError:
    """One input's error entry as the engine reads an error: HubSpot's message, permanent unless
    sending it again could help."""
    category = str(error.get("category") or "")
    message = describe_error(error)
    if category in PERMANENT_CATEGORIES:
        return PermanentBackendError(message, status_code=CATEGORY_STATUS.get(category))
    return TransientBackendError(message)


def _unanswered() -> TransientBackendError:
    return TransientBackendError(
        "HubSpot's batch answer named neither a result nor an error for this lead; it is sent again."
    )


def _key(value: str) -> str:
    return normalise_email(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
