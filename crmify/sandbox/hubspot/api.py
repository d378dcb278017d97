"""The HubSpot CRM endpoints of the sandbox: routing and the contact and property handlers.

``server.HubSpotSandbox.route`` calls :func:`resolve` for every call below ``/crm/``; the answer's
``handle`` runs once authentication, limits and faults let the request through. Paths are served
both as ``/crm/v3/objects/contacts...`` (the legacy v3 paths) and as the dated
``/crm/objects/2026-03/contacts...`` form. Errors are :class:`HubSpotError` s rendered in
HubSpot's shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from crmify.sandbox.core import ApiRoute
from crmify.sandbox.messages import Request, Response, empty, json_response

from .batch import answer_batch
from .contacts import ContactStore
from .errors import HubSpotError, bad_request, error_response, not_found, rate_limited

LIST_DEFAULT_LIMIT: Final = 10
LIST_MAX_LIMIT: Final = 100
_DATED: Final = re.compile(r"^\d{4}-\d{2}$")

Handler = Callable[["Account", Request, str], Response]


@dataclass(frozen=True)
class Account:
    """What a handler needs: the contacts, the properties' JSON, search's own limit, and the most
    inputs a batch call takes."""

    contacts: ContactStore
    search_allowed: Callable[[], bool]
    batch_max_inputs: int


def resolve(account: Account, method: str, subpath: str) -> ApiRoute:
    """Match a path below ``/crm/`` to its handler (``subpath`` without that prefix)."""
    parts = [part for part in subpath.split("/") if part]
    if parts[:1] == ["v3"]:
        parts = parts[1:]
    elif len(parts) >= 2 and _DATED.match(parts[1]):
        parts = [parts[0], *parts[2:]]  # /crm/objects/2026-03/contacts -> objects/contacts
    key = "/".join(parts[:3])
    template, tail = "/{unknown}", ""
    handlers: Mapping[str, Handler] = {}
    if parts[:2] == ["objects", "contacts"]:
        if len(parts) == 2:
            template, handlers = "/objects/contacts", {"GET": _list, "POST": _create}
        elif key == "objects/contacts/search" and len(parts) == 3:
            template, handlers = "/objects/contacts/search", {"POST": _search}
        elif key == "objects/contacts/batch" and len(parts) == 4:
            template, tail = f"/objects/contacts/batch/{parts[3]}", parts[3]
            handlers = {"POST": _batch}
        elif len(parts) == 3:
            template, tail = "/objects/contacts/{id}", parts[2]
            handlers = {"GET": _get, "PATCH": _update, "DELETE": _archive}
    elif parts[:2] == ["properties", "contacts"] and len(parts) <= 3:
        template = "/properties/contacts" + ("/{name}" if len(parts) == 3 else "")
        handlers = {"GET": _properties}
        tail = parts[2] if len(parts) == 3 else ""
    handler = handlers.get(method)
    missing = 404 if template == "/{unknown}" else 405
    return ApiRoute(
        f"{method} {template}",
        lambda request: _answer(handler, missing, account, request, tail),
        # A batch create or upsert makes contacts too: the create-timeout fault traps them alike.
        is_create=method == "POST"
        and template
        in (
            "/objects/contacts",
            "/objects/contacts/batch/create",
            "/objects/contacts/batch/upsert",
        ),
    )


def _answer(
    handler: Handler | None, missing: int, account: Account, request: Request, tail: str
) -> Response:
    if handler is None:
        return error_response(
            HubSpotError(
                missing, "OBJECT_NOT_FOUND", f"No endpoint {request.method} {request.path}."
            )
        )
    try:
        return handler(account, request, tail)
    except HubSpotError as error:
        return error_response(error)


# --- handlers ------------------------------------------------------------------------------------


def _list(account: Account, request: Request, _tail: str) -> Response:
    limit = _int_param(request, "limit", LIST_DEFAULT_LIMIT)
    if not 0 < limit <= LIST_MAX_LIMIT:
        raise bad_request(f"limit must be between 1 and {LIST_MAX_LIMIT}, not {limit}.")
    return json_response(
        200, account.contacts.page(request.query.get("after"), limit, _properties_param(request))
    )


def _create(account: Account, request: Request, _tail: str) -> Response:
    return json_response(201, account.contacts.create(_json_body(request)))


def _get(account: Account, request: Request, tail: str) -> Response:
    return json_response(
        200,
        account.contacts.get(tail, request.query.get("idproperty"), _properties_param(request)),
    )


def _update(account: Account, request: Request, tail: str) -> Response:
    return json_response(
        200, account.contacts.update(tail, request.query.get("idproperty"), _json_body(request))
    )


def _archive(account: Account, _request: Request, tail: str) -> Response:
    account.contacts.archive(tail)
    return empty(204)


def _search(account: Account, request: Request, _tail: str) -> Response:
    if not account.search_allowed():
        return rate_limited("SECONDLY", "You have reached your secondly limit.")
    return json_response(200, account.contacts.search(_json_body(request)))


def _batch(account: Account, request: Request, action: str) -> Response:
    return answer_batch(account.contacts, action, _json_body(request), account.batch_max_inputs)


def _properties(account: Account, _request: Request, tail: str) -> Response:
    if tail:
        prop = account.contacts.index.by_name.get(tail)
        if prop is None:
            raise not_found(f"Unable to find property {tail}.")
        return json_response(200, prop.to_json())
    return json_response(
        200, {"results": [prop.to_json() for prop in account.contacts.index.properties]}
    )


# --- parameters and bodies -----------------------------------------------------------------------


def _properties_param(request: Request) -> list[str]:
    return [name for name in request.query.get("properties", "").split(",") if name]


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError:
        raise bad_request(f"{name} must be an integer, not {raw!r}.") from None


def _json_body(request: Request) -> object:
    try:
        body: object = json.loads(request.body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"Invalid input JSON: {error}.") from None
    if not isinstance(body, Mapping):
        raise bad_request("The body must be a JSON object.")
    return body
