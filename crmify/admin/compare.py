"""Lines up a lead as the app holds it, as it was last sent, and as the CRM holds it now.

Called by the admin's "Compare with CRM" page (``crmify.admin.views.compare_view``) with the CRM's raw
record, already fetched through ``crmify.api.fetch_from_crm``; nothing here does I/O. A backend's own key
for each lead field is learnt from its ``build_payload`` (fed marker values), so the rows line up for any
backend that can preview; the record's other keys are listed as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crmify.backends.base import BaseBackend
from crmify.models import MAPPABLE_FIELDS, Lead

_MARKER = "\x00crmify-compare:"
#: Fields whose CRM value is not the lead's text (Insightly sends a status id, not its name).
_NOT_PROBED = frozenset({"status", "lead_source"})
_ALL_FIELDS = (*MAPPABLE_FIELDS, "custom_fields")


def crm_keys(backend: BaseBackend | None) -> dict[str, str]:
    """Lead field -> the key the backend sends it under; a field's own name where that cannot be learnt."""
    keys = {name: name for name in _ALL_FIELDS}
    if backend is None or not backend.supports_payload_preview:
        return keys
    probe = Lead(**{name: _MARKER + name for name in MAPPABLE_FIELDS if name not in _NOT_PROBED})
    try:
        payload = backend.build_payload(probe)
    except Exception:
        # A site's backend whose preview wants more than text (a lookup it cannot do from the cache):
        # the page still shows every value, only unaligned.
        return keys
    for key, value in backend.payload_fields(payload).items():
        if isinstance(value, str) and value.startswith(_MARKER):
            keys[value.removeprefix(_MARKER)] = key
    return keys


def shown(value: Any) -> str:
    """A value as the page shows and compares it: text as it is, structures as JSON, nothing as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class ComparedField:
    """One row of the comparison."""

    name: str
    label: str
    app_now: str
    last_sent: str
    crm_key: str
    crm_now: str
    #: The CRM's record has this field's key, so ``crm_now`` can be compared.
    in_crm: bool
    #: The app's value is not what was last sent (the next sync sends it).
    unsent: bool
    #: The CRM holds something else than the app (changed in the CRM, or not sent yet).
    differs: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    fields: list[ComparedField]
    #: The CRM record's keys that no lead field maps to, with their values.
    crm_only: list[tuple[str, str]]


def compare(
    lead: Lead, crm_record: Mapping[str, Any] | None, backend: BaseBackend | None
) -> Comparison:
    """The rows of the comparison; ``crm_record`` None means the CRM was not asked (or has no such lead)."""
    keys = crm_keys(backend)
    record = crm_record or {}
    app_values = lead.crm_values()
    sent_values = lead.synced_values or {}
    rows: list[ComparedField] = []
    for name in _ALL_FIELDS:
        app_now, last_sent = shown(app_values.get(name)), shown(sent_values.get(name))
        key = keys[name]
        in_crm = key in record
        crm_now = shown(record.get(key))
        rows.append(
            ComparedField(
                name=name,
                label=str(getattr(Lead._meta.get_field(name), "verbose_name", name)),
                app_now=app_now,
                last_sent=last_sent,
                crm_key=key,
                crm_now=crm_now,
                in_crm=in_crm,
                unsent=bool(sent_values) and app_now != last_sent,
                differs=in_crm and app_now != crm_now,
            )
        )
    mapped = {row.crm_key for row in rows}
    crm_only = [(key, shown(value)) for key, value in record.items() if key not in mapped]
    return Comparison(rows, crm_only)
