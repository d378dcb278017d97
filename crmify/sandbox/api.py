"""The ``/v3.1/`` endpoints: routing and the lead, status, source and custom field handlers.

``SandboxServer`` calls ``resolve`` first (it needs the route template for stats and the
``POST /Leads`` check of the create-timeout fault even when the request is refused), then
``Route.handle`` once authentication, limits and faults let the request through. Handlers are
plain functions of ``(state, request, tail)``; errors are raised as ``ApiError`` and rendered
as ``{"Message": ...}`` by ``Route.handle``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from .dates import parse_query_date
from .messages import Request, Response, empty, json_response, message
from .schema import BRIEF_OMITS, JsonDict
from .state import LeadNotFound, SandboxState
from .validation import ValidationError

DEFAULT_TOP: Final = 100
MAX_TOP: Final = 500

Handler = Callable[[SandboxState, Request, str], Response]


class ApiError(Exception):
    """An error answer: ``status`` and the text of its ``Message``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Route:
    """A resolved request: the stats template, and the handler (None answers 405)."""

    template: str
    handler: Handler | None
    tail: str = ""

    @property
    def is_create(self) -> bool:
        return self.template == "POST /Leads"

    def handle(self, state: SandboxState, request: Request) -> Response:
        if self.handler is None:
            # ASP.NET's wording; Insightly answers 405 for a wrong collection name too.
            return message(
                405,
                f"The requested resource does not support http method '{request.method}' "
                f"(path {request.path}).",
            )
        try:
            return self.handler(state, request, self.tail)
        except ApiError as error:
            return message(error.status, error.text)
        except ValidationError as error:
            return message(400, str(error))
        except LeadNotFound as error:
            return message(404, str(error))


def resolve(method: str, subpath: str) -> Route:
    """Match a path below ``/v3.1/`` (case-insensitively, as ASP.NET routing does)."""
    parts = [part for part in subpath.split("/") if part]
    key = "/".join(part.lower() for part in parts)
    if key in _FIXED_ROUTES:
        template, handlers = _FIXED_ROUTES[key]
        return Route(f"{method} {template}", handlers.get(method))
    if len(parts) == 2 and parts[0].lower() == "leads":
        return Route(f"{method} /Leads/{{id}}", _LEAD_HANDLERS.get(method), parts[1])
    # Unknown paths are grouped under one template so stats cannot grow without bound.
    return Route(f"{method} /{{unknown}}", None)


# --- handlers ------------------------------------------------------------------------------


def _list_leads(state: SandboxState, request: Request, _tail: str) -> Response:
    skip, top, brief, count_total = _check_paging(request)
    page, total = state.leads_page(skip, top, include_converted=_include_converted(state, request))
    return _render_page(page, total, brief, count_total)


def _get_lead(state: SandboxState, _request: Request, tail: str) -> Response:
    return json_response(200, state.get_lead(_lead_id(tail)))


def _create_lead(state: SandboxState, request: Request, _tail: str) -> Response:
    # 200 by default: the facts allow 200 or 201 (Dialect.create_status); clients must accept both.
    return json_response(state.dialect.create_status, state.create_lead(_json_body(request)))


def _update_lead(state: SandboxState, request: Request, _tail: str) -> Response:
    return json_response(200, state.update_lead(_json_body(request)))


def _delete_lead(state: SandboxState, _request: Request, tail: str) -> Response:
    state.delete_lead(_lead_id(tail))
    return empty(202)


def _search_leads(state: SandboxState, request: Request, _tail: str) -> Response:
    field_name = request.query.get("field_name")
    field_value = request.query.get("field_value")
    if (field_name is None) != (field_value is None):
        raise ApiError(400, "field_name and field_value must be given together.")
    updated_after = None
    raw_after = request.query.get("updated_after_utc")
    if raw_after is not None:
        updated_after = _query_date("updated_after_utc", raw_after)
    if field_name is None and updated_after is None:
        # Unknown what Insightly does with no criteria; refusing catches a client that lost
        # its filter and would otherwise page through the whole account.
        raise ApiError(400, "Search needs field_name/field_value and/or updated_after_utc.")
    skip, top, brief, count_total = _check_paging(request)
    page, total = state.search(
        field_name,
        field_value,
        updated_after,
        skip,
        top,
        include_converted=_include_converted(state, request),
    )
    return _render_page(page, total, brief, count_total)


def _lead_statuses(state: SandboxState, request: Request, _tail: str) -> Response:
    # Insightly's v3.1 spec: the converted status is left out unless include_converted=true.
    skip, top, _brief, count_total = _check_paging(request)
    rows = state.lead_statuses(include_converted=_bool_param(request, "include_converted"))
    headers = {"X-Total-Count": str(len(rows))} if count_total else {}
    return json_response(200, [row.to_json() for row in rows[skip : skip + top]], headers)


def _lead_sources(state: SandboxState, _request: Request, _tail: str) -> Response:
    return json_response(200, [source.to_json() for source in state.sources])


def _custom_fields(state: SandboxState, _request: Request, _tail: str) -> Response:
    return json_response(
        200, [definition.to_json(index + 1) for index, definition in enumerate(state.custom_fields)]
    )


# Lower-cased path -> (stats template, handlers by method), and the handlers of /Leads/{id}; below the
# handlers they name, looked up by ``resolve``.
_FIXED_ROUTES: Final[Mapping[str, tuple[str, Mapping[str, Handler]]]] = {
    "leads": ("/Leads", {"GET": _list_leads, "POST": _create_lead, "PUT": _update_lead}),
    "leads/search": ("/Leads/Search", {"GET": _search_leads}),
    "leadstatuses": ("/LeadStatuses", {"GET": _lead_statuses}),
    "leadsources": ("/LeadSources", {"GET": _lead_sources}),
    "customfields/leads": ("/CustomFields/Leads", {"GET": _custom_fields}),
}
_LEAD_HANDLERS: Final[Mapping[str, Handler]] = {"GET": _get_lead, "DELETE": _delete_lead}


# --- parameters and bodies ------------------------------------------------------------------


def _render_page(page: list[JsonDict], total: int, brief: bool, count_total: bool) -> Response:
    """One page of a listing or search; ``total`` is the match count ``count_total`` reports."""
    if brief:
        page = [{k: v for k, v in lead.items() if k not in BRIEF_OMITS} for lead in page]
    headers = {"X-Total-Count": str(total)} if count_total else {}
    return json_response(200, page, headers)


def _check_paging(request: Request) -> tuple[int, int, bool, bool]:
    skip = _int_param(request, "skip", 0)
    top = _int_param(request, "top", DEFAULT_TOP)
    if skip < 0:
        raise ApiError(400, "skip cannot be negative.")
    if not 0 <= top <= MAX_TOP:
        raise ApiError(400, f"top must be between 0 and {MAX_TOP}, not {top}.")
    return skip, top, _bool_param(request, "brief"), _bool_param(request, "count_total")


def _include_converted(state: SandboxState, request: Request) -> bool:
    """Whether a lead listing asked for converted leads (``include_converted=true``); a 400 naming
    the parameter when the dialect does not know it (``Dialect.include_converted="refused"``)."""
    if "include_converted" in request.query and state.dialect.include_converted == "refused":
        raise ApiError(
            400, "The request is invalid: include_converted is not a parameter of this resource."
        )
    return _bool_param(request, "include_converted")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, not {raw!r}.") from None


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query.get(name, "false").strip().lower()
    if raw not in ("true", "false"):
        raise ApiError(400, f"{name} must be true or false.")
    return raw == "true"


def _query_date(name: str, raw: str) -> datetime:
    try:
        return parse_query_date(raw)
    except ValueError:
        # A "+01:00" offset sent unencoded arrives as " 01:00": say so, it is the usual cause.
        hint = " (encode '+' in an offset as %2B)" if " " in raw.strip() else ""
        raise ApiError(400, f"{name} must be an ISO-8601 date-time, not {raw!r}{hint}.") from None


def _lead_id(tail: str) -> int:
    try:
        return int(tail)
    except ValueError:
        raise ApiError(400, f"{tail!r} is not a Lead id.") from None


def _json_body(request: Request) -> object:
    content_type = request.headers.get("content-type", "")
    # ASP.NET answers 415 for a body it has no formatter for; a client posting form data or
    # forgetting the header fails here as it would there (behaviour likely, not confirmed).
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            f"The request entity's media type '{content_type or 'none'}' is not supported; "
            "send application/json.",
        )
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"The request body is not valid JSON: {error}.") from None
