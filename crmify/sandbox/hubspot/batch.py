"""HubSpot's batch endpoints in the sandbox: ``POST …/objects/contacts/batch/{create,update,upsert,read,
archive}`` with ``{"inputs": [...]}`` (``shared/hubspot-api.md``).

``api.resolve`` routes ``objects/contacts/batch/<action>`` to :func:`answer_batch`. Each input is done
as its single counterpart on the :class:`~.contacts.ContactStore` (the same validation, the same 409s),
so a batch and one call per lead leave the same account. An input that fails becomes one entry of the
answer's ``errors`` and the answer a 207 with ``numErrors``; the others are done. More inputs than
``HubSpotDialect.batch_max_inputs`` (100, an unconfirmed figure) is a 400 for the whole call, and
``archive`` answers 204 whatever it finds.

Answer: ``{status: "COMPLETE", results, startedAt, completedAt}`` (+ ``numErrors``, ``errors[{status,
category, message, context, id}]`` on a 207; a read names every id it did not find in one entry's
``context.ids``, as HubSpot does). Results of ``upsert`` carry ``new``; every result and
error of an input that had an ``objectWriteTraceId`` carries it back (``context.objectWriteTraceId``
in an error), so a client can match them to its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from crmify.sandbox.dates import utc_now
from crmify.sandbox.messages import Response, empty, json_response

from .contacts import ContactStore, hubspot_time
from .errors import HubSpotError, bad_request, not_found
from .schema import JsonDict

#: The actions under ``…/contacts/batch/``.
ACTIONS: Final = ("create", "update", "upsert", "read", "archive")

InputHandler = Callable[[ContactStore, Mapping[str, Any], Mapping[str, Any]], JsonDict | None]


def answer_batch(contacts: ContactStore, action: str, body: object, max_inputs: int) -> Response:
    """Do ``action`` for each input of ``body``; 200 (201 for create), 207 when some failed, 204 for
    archive. Raises :class:`HubSpotError` for a call that is wrong as a whole (no inputs list, too many
    inputs, an unknown action)."""
    handler = _HANDLERS.get(action)
    if handler is None:
        raise not_found(f"No batch action {action!r}; HubSpot has {', '.join(ACTIONS)}.")
    if not isinstance(body, Mapping) or not isinstance(body.get("inputs"), list):
        raise bad_request('The body must be a JSON object with "inputs", a list.')
    inputs: list[Any] = body["inputs"]
    if len(inputs) > max_inputs:
        raise bad_request(
            f"Too many inputs: {len(inputs)}. A batch call takes at most {max_inputs}."
        )
    started = hubspot_time(utc_now())
    results: list[JsonDict] = []
    errors: list[JsonDict] = []
    for item in inputs:
        trace = item.get("objectWriteTraceId") if isinstance(item, Mapping) else None
        try:
            if not isinstance(item, Mapping):
                raise bad_request("Each input must be a JSON object.")
            result = handler(contacts, item, body)
        except HubSpotError as error:
            errors.append(_error_entry(error, item, trace))
            continue
        if result is not None:
            if trace is not None:
                result["objectWriteTraceId"] = trace
            results.append(result)
    if action == "archive":
        return empty(204)
    if action == "read":
        errors = _missing_together(errors)
    answer: JsonDict = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": hubspot_time(utc_now()),
    }
    if errors:
        answer |= {"numErrors": len(errors), "errors": errors}
        return json_response(207, answer)
    return json_response(201 if action == "create" else 200, answer)


def _error_entry(error: HubSpotError, item: object, trace: object) -> JsonDict:
    """One entry of a 207's ``errors``: HubSpot's own words for what went wrong with one input."""
    context: JsonDict = {}
    key = item.get("id") if isinstance(item, Mapping) else None
    if key is not None:
        context["ids"] = [str(key)]
    if trace is not None:
        context["objectWriteTraceId"] = [str(trace)]
    for detail in error.errors:  # the property a validation error names
        names = (detail.get("context") or {}).get("propertyName")
        if names:
            context.setdefault("propertyName", []).extend(names)
    entry: JsonDict = {
        "status": "error",
        "category": error.category,
        "message": error.message,
        "context": context,
    }
    if key is not None:
        entry["id"] = str(key)
    return entry


def _missing_together(errors: list[JsonDict]) -> list[JsonDict]:
    """A read's errors as HubSpot gives them: one OBJECT_NOT_FOUND entry naming every id not found
    (``context.ids``), after the other errors."""
    missing = [entry for entry in errors if entry["category"] == "OBJECT_NOT_FOUND"]
    if not missing:
        return errors
    ids = [key for entry in missing for key in entry["context"].get("ids", [])]
    return [
        *(entry for entry in errors if entry["category"] != "OBJECT_NOT_FOUND"),
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "context": {"ids": ids},
        },
    ]


def _properties_param(body: Mapping[str, Any]) -> list[str]:
    wanted = body.get("properties")
    return [str(name) for name in wanted] if isinstance(wanted, list) else []


def _create(contacts: ContactStore, item: Mapping[str, Any], _body: Mapping[str, Any]) -> JsonDict:
    return contacts.create({"properties": item.get("properties")})


def _update(contacts: ContactStore, item: Mapping[str, Any], _body: Mapping[str, Any]) -> JsonDict:
    return contacts.update(_key(item), _id_property(item), {"properties": item.get("properties")})


def _upsert(contacts: ContactStore, item: Mapping[str, Any], _body: Mapping[str, Any]) -> JsonDict:
    """Update the contact whose ``idProperty`` (the e-mail) is ``id``, or create it with that value."""
    key, id_property = _key(item), _id_property(item)
    if not id_property or id_property == "hs_object_id":
        raise bad_request("An upsert input needs an idProperty other than hs_object_id (email).")
    properties = item.get("properties")
    if not isinstance(properties, Mapping):
        raise bad_request('Each input needs "properties", an object.')
    for _attempt in range(2):
        try:
            found = contacts.get(key, id_property, [])
        except HubSpotError as error:
            if error.status != 404:
                raise
            try:
                created = contacts.create({"properties": {**properties, id_property: key}})
            except HubSpotError as conflict:
                if conflict.status == 409:
                    continue  # made meanwhile by another call: update it
                raise
            return {**created, "new": True}
        updated = contacts.update(found["id"], None, {"properties": properties})
        return {**updated, "new": False}
    raise HubSpotError(409, "CONFLICT", f"Contact {key} changed during the upsert; try again.")


def _read(contacts: ContactStore, item: Mapping[str, Any], body: Mapping[str, Any]) -> JsonDict:
    id_property = body.get("idProperty")
    return contacts.get(
        _key(item), str(id_property) if id_property else None, _properties_param(body)
    )


def _archive(contacts: ContactStore, item: Mapping[str, Any], _body: Mapping[str, Any]) -> None:
    try:
        contacts.archive(_key(item))
    except HubSpotError as error:
        if error.status != 404:
            raise
    return None


def _key(item: Mapping[str, Any]) -> str:
    key = item.get("id")
    if key in (None, ""):
        raise bad_request('Each input needs an "id".')
    return str(key)


def _id_property(item: Mapping[str, Any]) -> str | None:
    value = item.get("idProperty")
    return str(value) if value else None


_HANDLERS: Final[dict[str, InputHandler]] = {
    "create": _create,
    "update": _update,
    "upsert": _upsert,
    "read": _read,
    "archive": _archive,
}
