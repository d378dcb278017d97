"""Lines up a lead as the app holds it, as it was last sent, and as the CRM holds it now, field by field.

Called by the admin's "Compare with CRM" page (``crmify.admin.views.compare_view``) with the CRM's record
already fetched and read by lead field names (``crmify.api.read_from_crm``, the backend's
``read_record``: status and source by name, custom fields by key); nothing here does I/O or knows a CRM.
"Last sent" is the whole of what the app held at its last successful sync (``Lead.synced_values``), not
the partial update that carried it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crmify.models import MAPPABLE_FIELDS, Lead
from crmify.transitions import status_key

#: Fields held by name whose spelling the CRM may change ("NotContacted" is "Not Contacted" there).
_NAMED = frozenset({"status", "lead_source"})


def shown(value: Any) -> str:
    """A value as the page shows and compares it: text as it is, structures as JSON, nothing as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def same(name: str, one: str, other: str) -> bool:
    """Whether two shown values of field ``name`` are the same value (names compared as statuses are)."""
    if name in _NAMED:
        return status_key(one) == status_key(other)
    return one == other


@dataclass(frozen=True, slots=True)
class ComparedField:
    """One row of the comparison; ``crm_now`` is None when the CRM was not asked."""

    name: str
    label: str
    app_now: str
    last_sent: str
    crm_now: str | None
    #: The app's value is not what was last sent (the next sync sends it).
    unsent: bool
    #: The CRM holds something else than the app (changed in the CRM, or not sent yet).
    differs: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    fields: list[ComparedField]

    @property
    def differences(self) -> int:
        return sum(row.differs for row in self.fields)


def _row(
    name: str, label: str, app: Any, sent: Any, crm: Any, fetched: bool, was_sent: bool
) -> ComparedField:
    app_now, last_sent = shown(app), shown(sent)
    crm_now = shown(crm) if fetched else None
    return ComparedField(
        name=name,
        label=label,
        app_now=app_now,
        last_sent=last_sent,
        crm_now=crm_now,
        unsent=was_sent and not same(name, app_now, last_sent),
        differs=crm_now is not None and not same(name, app_now, crm_now),
    )


def compare(lead: Lead, crm_values: Mapping[str, Any] | None) -> Comparison:
    """The rows of the comparison: every lead field, then each custom field by key (those the app, the
    last sync or the CRM has). ``crm_values`` None means the CRM was not asked (or has no such lead)."""
    fetched = crm_values is not None
    crm = dict(crm_values or {})
    app = lead.crm_values()
    sent = lead.synced_values or {}
    was_sent = bool(sent)
    rows = [
        _row(
            name,
            str(getattr(Lead._meta.get_field(name), "verbose_name", name)),
            app.get(name),
            sent.get(name),
            crm.get(name),
            fetched,
            was_sent,
        )
        for name in MAPPABLE_FIELDS
    ]
    app_custom = app.get("custom_fields") or {}
    sent_custom = sent.get("custom_fields") or {}
    crm_custom = crm.get("custom_fields") or {}
    for key in sorted({*app_custom, *sent_custom, *crm_custom}):
        rows.append(
            _row(
                f"custom_fields.{key}",
                f"{key} (custom field)",
                app_custom.get(key),
                sent_custom.get(key),
                crm_custom.get(key),
                fetched,
                was_sent,
            )
        )
    return Comparison(rows)
