"""Strict checks of a lead body, so client mistakes fail here as they would on Insightly.

Called by ``state.SandboxState`` on create and update. Raises ``ValidationError`` whose text
becomes the ``{"Message": ...}`` of a 400, naming the offending field. Insightly's real
leniency is partly unknown; where it is, the sandbox errs on the strict side (a client that
passes here sends only documented v3.1 names and types) and says so next to the rule.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from .dates import parse_body_date
from .schema import (
    ALL_FIELDS,
    BOOL_FIELDS,
    INT_FIELDS,
    READ_ONLY_FIELDS,
    STRING_FIELDS,
    CustomFieldDef,
    JsonDict,
)

# Names a v2-era or careless client sends, with the v3.1 name to point it at.
_HINTS: Final = {
    "EMAIL_ADDRESS": "EMAIL",
    "ORGANIZATION_NAME": "ORGANISATION_NAME",
    "LEAD_STATUS": "LEAD_STATUS_ID",
    "LEAD_SOURCE": "LEAD_SOURCE_ID",
    "CUSTOMFIELD": "CUSTOMFIELDS",
    "CUSTOM_FIELDS": "CUSTOMFIELDS",
    "TAG": "TAGS",
    "DATE_UPDATED": "DATE_UPDATED_UTC",
}


class ValidationError(ValueError):
    """A lead body Insightly would answer with 400; ``str(error)`` is the message."""


def check_lead_body(
    body: object,
    *,
    creating: bool,
    status_ids: Collection[int],
    default_status_id: int,
    source_ids: Collection[int],
    custom_fields: Mapping[str, CustomFieldDef],
    max_lengths: Mapping[str, int],
) -> JsonDict:
    """Validate a POST/PUT lead body and return the writable fields it sets, cleaned.

    ``LEAD_ID`` is returned too when present (the caller decides what it means). Read-only
    fields are dropped: Insightly is believed to ignore them and clients often echo a fetched
    lead back, so rejecting them would only punish a legitimate pattern (chosen; unknown).
    Text longer than ``max_lengths`` allows is refused.
    """
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object describing a Lead.")
    _reject_unknown_names(body)
    cleaned: JsonDict = {}
    for name, value in body.items():
        if name in READ_ONLY_FIELDS:
            continue
        if name == "LEAD_ID":
            cleaned[name] = _check_lead_id(value, creating=creating)
        elif name in STRING_FIELDS:
            cleaned[name] = _check_string(name, value, max_lengths.get(name))
        elif name in INT_FIELDS:
            cleaned[name] = _check_int(name, value)
        elif name in BOOL_FIELDS:
            # A .NET bool is not nullable: null "clears" it to false (chosen; unknown).
            cleaned[name] = False if value is None else _check_bool(name, value)
        elif name == "CUSTOMFIELDS":
            cleaned[name] = _check_custom_fields(value, custom_fields)
        elif name == "TAGS":
            cleaned[name] = _check_tags(value)
    _check_references(cleaned, status_ids, default_status_id, source_ids)
    last_name = cleaned.get("LAST_NAME")
    if (creating or "LAST_NAME" in cleaned) and not (last_name and last_name.strip()):
        raise ValidationError("LAST_NAME is required and cannot be empty.")
    return cleaned


def _reject_unknown_names(body: Mapping[str, object]) -> None:
    # Field names are matched exactly. The real API (Newtonsoft.Json) may accept other casings;
    # the sandbox refuses them so a client only ever relies on the documented upper-case names.
    problems = []
    for name in body:
        if name in ALL_FIELDS:
            continue
        hint = _HINTS.get(name.upper())
        if hint is None and name.upper() in ALL_FIELDS:
            hint = name.upper()
        problems.append(f"{name!r} (did you mean {hint}?)" if hint else repr(name))
    if problems:
        raise ValidationError(f"Unknown Lead field(s) for API v3.1: {', '.join(problems)}.")


def _check_lead_id(value: object, *, creating: bool) -> int | None:
    if value is None:
        return None
    lead_id = _check_int("LEAD_ID", value)
    # A create carrying a real id is almost always a PUT sent as POST: refuse it (chosen).
    if creating and lead_id not in (None, 0):
        raise ValidationError(
            "LEAD_ID must be 0 or absent when creating a Lead; use PUT to update."
        )
    return lead_id


def _check_string(name: str, value: object, max_length: int | None) -> str | None:
    # No coercion of numbers to text: a client sending 42 for PHONE has a bug worth seeing.
    if value is None:
        return value
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string or null, not {_json_type(value)}.")
    if max_length is not None and len(value) > max_length:
        # ASP.NET's StringLength wording (a .NET string counts UTF-16 units; characters here).
        raise ValidationError(
            f"The field {name} must be a string with a maximum length of {max_length}."
        )
    return value


def _check_int(name: str, value: object) -> int | None:
    # bool is an int subclass in Python; JSON true is not a number, so exclude it.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValidationError(f"{name} must be an integer or null, not {_json_type(value)}.")


def _check_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValidationError(f"{name} must be true or false, not {_json_type(value)}.")


def _check_references(
    cleaned: JsonDict,
    status_ids: Collection[int],
    default_status_id: int,
    source_ids: Collection[int],
) -> None:
    if "LEAD_STATUS_ID" in cleaned:
        status_id = cleaned["LEAD_STATUS_ID"]
        if status_id is None:
            # A lead always has a status: clearing it falls back to the default (chosen).
            cleaned["LEAD_STATUS_ID"] = default_status_id
        elif status_id not in status_ids:
            raise ValidationError(f"LEAD_STATUS_ID {status_id} does not exist in this account.")
    source_id = cleaned.get("LEAD_SOURCE_ID")
    if source_id is not None and source_id not in source_ids:
        raise ValidationError(f"LEAD_SOURCE_ID {source_id} does not exist in this account.")


def _check_custom_fields(
    value: object, definitions: Mapping[str, CustomFieldDef]
) -> list[JsonDict]:
    if value is None:
        # Custom fields merge by FIELD_NAME: one is cleared by a null FIELD_VALUE, never all at once.
        raise ValidationError(
            "CUSTOMFIELDS cannot be null: clear a custom field with "
            '{"FIELD_NAME": ..., "FIELD_VALUE": null}.'
        )
    if not isinstance(value, list):
        raise ValidationError("CUSTOMFIELDS must be a list of {FIELD_NAME, FIELD_VALUE} objects.")
    cleaned: list[JsonDict] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or set(item) - {"FIELD_NAME", "FIELD_VALUE"}:
            raise ValidationError(
                "Each CUSTOMFIELDS item must be an object with FIELD_NAME and FIELD_VALUE only."
            )
        name = item.get("FIELD_NAME")
        if not isinstance(name, str) or name not in definitions:
            known = ", ".join(sorted(definitions)) or "none"
            raise ValidationError(f"Unknown custom field {name!r} (this account has: {known}).")
        if name in seen:
            raise ValidationError(f"Custom field {name} is given more than once.")
        seen.add(name)
        field_value = item.get("FIELD_VALUE")
        _check_custom_value(definitions[name], field_value)
        cleaned.append({"FIELD_NAME": name, "FIELD_VALUE": field_value})
    return cleaned


def _check_custom_value(definition: CustomFieldDef, value: object) -> None:
    if value is None:
        return
    kind = definition.field_type
    if kind in ("TEXT", "MULTILINETEXT"):
        ok = isinstance(value, str)
    elif kind == "NUMERIC":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "BIT":
        ok = isinstance(value, bool)
    elif kind in ("DATE", "DATETIME"):
        if not (isinstance(value, str) and _is_body_date(value)):
            # The usual 400 of a live account: an ISO 8601 date (a "T", an offset) in a body.
            raise ValidationError(
                f"Custom field {definition.name} ({kind}) cannot take the value {value!r}: "
                "dates in a request body are yyyy-MM-dd HH:mm:ss (UTC)."
            )
        ok = True
    else:  # DROPDOWN
        ok = isinstance(value, str) and (not definition.options or value in definition.options)
    if not ok:
        raise ValidationError(
            f"Custom field {definition.name} ({kind}) cannot take the value {value!r}."
        )


def _is_body_date(text: str) -> bool:
    try:
        parse_body_date(text)
    except ValueError:
        return False
    return True


def _check_tags(value: object) -> list[JsonDict] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValidationError("TAGS must be a list of {TAG_NAME} objects.")
    tags: list[JsonDict] = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"TAG_NAME"}:
            raise ValidationError("Each TAGS item must be an object with TAG_NAME only.")
        tag_name = item["TAG_NAME"]
        if not isinstance(tag_name, str) or not tag_name.strip():
            raise ValidationError("TAG_NAME must be a non-empty string.")
        tags.append({"TAG_NAME": tag_name})
    return tags


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
