"""Reading HubSpot's error answers and rate-limit headers (``shared/hubspot-api.md``); pure functions.

Called by :class:`crmify.backends.hubspot.HubSpotBackend` for every error answer, and meant for its
batch calls too: :func:`describe_error` reads one error object, whether it is a whole answer's body
or one entry of a 207's ``errors[]``; :func:`existing_id` finds the contact a 409 names.

Shapes read, each field optional: ``{status, message, correlationId, category, subCategory,
errors: [{message, code, in, context}]}``; a 400 VALIDATION_ERROR whose message embeds
``Property values were not valid: [{... error: PROPERTY_DOESNT_EXIST|INVALID_OPTION|INVALID_EMAIL,
name}]``; a 409 "Contact already exists. Existing ID: N" (category CONFLICT) or the newer
OBJECT_ALREADY_EXISTS; a 429 ``{errorType: "RATE_LIMIT", policyName: TEN_SECONDLY_ROLLING|SECONDLY|DAILY}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)", re.IGNORECASE)
_PROPERTY_PROBLEMS = re.compile(r"Property values were not valid:\s*(\[.*\])", re.DOTALL)

#: Error codes that say a property is wrong (HubSpot's own words follow them in messages).
PROPERTY_ERRORS = frozenset(
    {"PROPERTY_DOESNT_EXIST", "INVALID_OPTION", "INVALID_EMAIL", "READ_ONLY_VALUE"}
)
#: How long the 10-second and the per-second (search) limits last, when nothing else says.
POLICY_WAIT_SECONDS = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}


def body_of(text: str) -> Mapping[str, Any]:
    """A JSON object from an answer's text, or an empty mapping."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, Mapping) else {}


def existing_id(error: Mapping[str, Any]) -> str | None:
    """The id of the contact a 409 (or a 207 entry) says already has the e-mail, if it names one."""
    texts = [str(error.get("message") or "")]
    texts += [str(item.get("message") or "") for item in objects_in(error.get("errors"))]
    for text in texts:
        found = _EXISTING_ID.search(text)
        if found:
            return found.group(1)
    context = error.get("context")
    if isinstance(context, Mapping):
        ids = context.get("id") or context.get("existingId")
        if isinstance(ids, list) and ids:
            return str(ids[0])
    return None


def property_problems(error: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(property, code, HubSpot's message)`` for each property a validation error names."""
    problems: list[tuple[str, str, str]] = []
    embedded = _PROPERTY_PROBLEMS.search(str(error.get("message") or ""))
    if embedded:
        try:
            listed = json.loads(embedded.group(1))
        except ValueError:
            listed = []
        for item in objects_in(listed):
            problems.append(
                (
                    str(item.get("name") or "?"),
                    str(item.get("error") or ""),
                    str(item.get("message") or ""),
                )
            )
    if not problems:
        for item in objects_in(error.get("errors")):
            context = item.get("context")
            names = context.get("propertyName") if isinstance(context, Mapping) else None
            name = str(names[0]) if isinstance(names, list) and names else "?"
            code = str(item.get("code") or "")
            if code in PROPERTY_ERRORS:
                problems.append((name, code, str(item.get("message") or "")))
    return problems


def describe_error(error: Mapping[str, Any]) -> str:
    """HubSpot's error as staff read it: the properties it names (with HubSpot's words), else its
    message, with the category in brackets."""
    category = str(error.get("category") or error.get("errorType") or "")
    problems = property_problems(error)
    if problems:
        text = "HubSpot refused these properties: " + "; ".join(
            f"{name}: {message or code} ({code})" for name, code, message in problems
        )
    else:
        text = str(error.get("message") or "no message")
    return f"{text[:400]} [{category}]" if category else text[:400]


def policy(error: Mapping[str, Any]) -> str:
    """The ``policyName`` of a 429 (``"DAILY"``, ``"TEN_SECONDLY_ROLLING"``...) or ``""``."""
    return str(error.get("policyName") or "").upper()


def objects_in(value: Any) -> list[Mapping[str, Any]]:
    """The JSON objects of a list in an answer (``results``, ``errors``); nothing for a non-list."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
