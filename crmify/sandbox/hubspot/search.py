"""``POST /crm/v3/objects/contacts/search``: checking a search body and matching contacts to it.

Called by ``contacts.ContactStore.search`` under its lock. Limits from ``shared/hubspot-api.md``:
at most 5 filter groups, 10 filters in a group and 25 in all; filters in a group AND, groups OR;
no more than 10,000 results can be paged through (``HubSpotDialect.search_max_results``).

A datetime property (``lastmodifieddate``) compares and sorts as an instant: a filter's value may be
milliseconds since the epoch (what clients send) or an ISO-8601 text, and the stored value is
HubSpot's ``2026-12-02T13:45:00.000Z``. A number property (``hs_object_id``) compares and sorts by value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import HubSpotError, bad_request
from .schema import JsonDict, PropertyDef

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: What a free-text ``query`` looks in (the default searchable properties of a contact).
QUERY_PROPERTIES = ("firstname", "lastname", "email", "phone", "company", "website")

Filter = Callable[[Mapping[str, str]], bool]


def check_search(
    body: Any, known: Mapping[str, PropertyDef], page_max: int, max_results: int
) -> tuple[list[list[Filter]], JsonDict]:
    """The compiled filter groups of ``body`` and its paging/sorting; 400 for anything out of bounds
    (a ``limit`` above ``page_max``, a page reaching past ``max_results``)."""
    if not isinstance(body, Mapping):
        raise bad_request("The search body must be a JSON object.")
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or not all(isinstance(group, Mapping) for group in groups):
        raise bad_request("filterGroups must be a list of objects.")
    if len(groups) > MAX_GROUPS:
        raise bad_request(f"Too many filter groups: {len(groups)} (at most {MAX_GROUPS}).")
    compiled: list[list[Filter]] = []
    total = 0
    for group in groups:
        filters = group.get("filters") or []
        if not isinstance(filters, list):
            raise bad_request("filters must be a list.")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise bad_request(
                f"Too many filters in a group: {len(filters)} (at most {MAX_FILTERS_PER_GROUP})."
            )
        total += len(filters)
        compiled.append([_compile(item, known) for item in filters])
    if total > MAX_FILTERS:
        raise bad_request(f"Too many filters: {total} (at most {MAX_FILTERS} in all groups).")
    limit = _int(body.get("limit", 10), "limit")
    after = _int(body.get("after", 0), "after")
    if not 0 < limit <= page_max:
        raise bad_request(f"limit must be between 1 and {page_max}, not {limit}.")
    if after < 0 or after + limit > max_results:
        raise bad_request(
            f"Search can page through at most {max_results} results (after {after}, limit {limit})."
        )
    sorts = body.get("sorts") or []
    query = body.get("query")
    properties = body.get("properties") or []
    if not isinstance(sorts, list) or not isinstance(properties, list):
        raise bad_request("sorts and properties must be lists.")
    if query is not None and not isinstance(query, str):
        raise bad_request("query must be text.")
    return compiled, {
        "limit": limit,
        "after": after,
        "sorts": sorts,
        "query": query,
        "properties": [str(name) for name in properties],
    }


def matches(groups: list[list[Filter]], query: str | None, properties: Mapping[str, str]) -> bool:
    """Whether a contact's ``properties`` pass: any group whose filters all pass (no groups: all)."""
    if groups and not any(all(test(properties) for test in group) for group in groups):
        return False
    if query:
        wanted = query.casefold()
        return any(
            wanted in str(properties.get(name) or "").casefold() for name in QUERY_PROPERTIES
        )
    return True


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"{name} must be an integer, not {value!r}.") from None


def sort_key(prop: PropertyDef | None, stored: Any) -> tuple[int, float, str]:
    """How a stored value orders under ``prop``'s type: instants and numbers by value, text ignoring
    case; an empty value first (HubSpot's place for them is unknown)."""
    text = str(stored or "")
    number = _number(prop, text) if text else None
    if number is not None:
        return (1, number, "")
    return (1 if text else 0, 0.0, text.casefold())


def _compile(item: Any, known: Mapping[str, PropertyDef]) -> Filter:
    if not isinstance(item, Mapping):
        raise bad_request("A filter must be an object.")
    name = item.get("propertyName")
    operator = str(item.get("operator") or "EQ")
    if not isinstance(name, str) or name not in known:
        raise HubSpotError(
            400,
            "VALIDATION_ERROR",
            f"There was a problem with the request: unknown property {name!r}.",
        )
    value = item.get("value")
    values = item.get("values")
    high = item.get("highValue")
    prop = known[name]

    def get(props: Mapping[str, str]) -> str:
        return str(props.get(name) or "")

    comparisons: dict[str, Callable[[str], bool]] = {
        "EQ": lambda stored: _same(prop, stored, value),
        "NEQ": lambda stored: not _same(prop, stored, value),
        "LT": lambda stored: _compare(prop, stored, value) < 0,
        "LTE": lambda stored: _compare(prop, stored, value) <= 0,
        "GT": lambda stored: _compare(prop, stored, value) > 0,
        "GTE": lambda stored: _compare(prop, stored, value) >= 0,
        "BETWEEN": lambda stored: (
            _compare(prop, stored, value) >= 0 and _compare(prop, stored, high) <= 0
        ),
        "IN": lambda stored: any(_same(prop, stored, one) for one in values or []),
        "NOT_IN": lambda stored: not any(_same(prop, stored, one) for one in values or []),
        "HAS_PROPERTY": lambda stored: stored != "",
        "NOT_HAS_PROPERTY": lambda stored: stored == "",
        "CONTAINS_TOKEN": lambda stored: _token(stored, value),
        "NOT_CONTAINS_TOKEN": lambda stored: not _token(stored, value),
    }
    if operator not in comparisons:
        raise bad_request(f"Unknown operator {operator!r}; one of {', '.join(comparisons)}.")
    if operator in ("IN", "NOT_IN") and not isinstance(values, list):
        raise bad_request(f"{operator} needs values, a list.")
    if operator not in ("IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY") and value is None:
        raise bad_request(f"{operator} needs a value.")
    if operator == "BETWEEN" and high is None:
        raise bad_request("BETWEEN needs highValue.")
    test = comparisons[operator]
    return lambda props: test(get(props))


def _same(prop: PropertyDef, stored: str, wanted: Any) -> bool:
    # Text compares ignoring case (an e-mail typed in capitals still matches); numbers by value.
    if stored.casefold() == str(wanted).casefold():
        return True
    left, right = _number(prop, stored), _number(prop, wanted)
    return left is not None and left == right


def _compare(prop: PropertyDef, stored: str, wanted: Any) -> int:
    left, right = _number(prop, stored), _number(prop, wanted)
    if left is None or right is None:
        left_text, right_text = stored.casefold(), str(wanted).casefold()
        return (left_text > right_text) - (left_text < right_text)
    return (left > right) - (left < right)


def _number(prop: PropertyDef | None, text: Any) -> float | None:
    """A value as the number it compares and sorts by: the number it spells, or milliseconds since
    the epoch for an ISO-8601 value of a date or datetime property; None for anything else."""
    try:
        return float(text)
    except (TypeError, ValueError):
        pass
    if prop is None or prop.type not in ("date", "datetime"):
        return None
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Whole milliseconds by integer arithmetic: timestamp() * 1000 can land a hair off, and an EQ
    # on an instant would miss.
    return float((moment - _EPOCH) // timedelta(milliseconds=1))


def _token(stored: str, wanted: Any) -> bool:
    pattern = str(wanted).casefold()
    tokens = [*stored.casefold().replace("@", " ").replace(".", " ").split(), stored.casefold()]
    return any(fnmatch.fnmatchcase(token, pattern) for token in tokens)
