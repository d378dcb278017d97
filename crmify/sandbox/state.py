"""The in-memory Insightly account behind the sandbox: leads plus the account's lookups.

``api`` calls it for every lead operation, ``control`` for ``/_sandbox/leads`` and reset, and
``SandboxServer`` builds it. Every public method takes the one lock, so request threads see a
consistent account. With ``state_file`` the leads are loaded at construction and written after
each change (temp file + ``os.replace``, so a crash never leaves half a file), which lets the
demo keep its CRM across restarts. Statuses, sources and custom fields are configuration, not
state: they come from the constructor every time.

Besides the API's writes, the control API's salesperson works here (:meth:`SandboxState.edit_lead`,
:meth:`SandboxState.convert_lead`). Every create and edit, by the API or a salesperson, hands the
lead to ``on_change`` (Insightly's workflow webhook fires "on create and every edit") with whether
the API made it; a delete reports nothing (Insightly has no delete event).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from .dates import format_body_date, parse_body_date, utc_now
from .persist import write_json_file
from .schema import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_SOURCE_NAMES,
    DEFAULT_STATUS_NAMES,
    FIRST_LEAD_ID,
    LIST_FIELDS,
    RENDER_ORDER,
    SANDBOX_USER_ID,
    SEARCHABLE_FIELDS,
    CustomFieldDef,
    Dialect,
    JsonDict,
    LeadSource,
    LeadStatus,
    build_sources,
    build_statuses,
)
from .validation import ValidationError, check_lead_body

_FILE_VERSION = 1
#: Called after a create or edit with the lead (a copy) and whether the API (not a salesperson) made it.
ChangeListener = Callable[[list[JsonDict], bool], None]
#: The records a conversion creates get ids derived from the lead's, so each conversion has its own.
_CONVERTED_ID_OFFSETS: Final = {
    "CONVERTED_CONTACT_ID": 100_000_000,
    "CONVERTED_ORGANISATION_ID": 200_000_000,
    "CONVERTED_OPPORTUNITY_ID": 300_000_000,
}


class LeadNotFound(LookupError):
    """No lead has this id (the API answers 404)."""


class SandboxState:
    """Leads of one sandbox account, thread-safe, optionally persisted to a JSON file."""

    def __init__(
        self,
        *,
        lead_statuses: Sequence[str] = DEFAULT_STATUS_NAMES,
        lead_sources: Sequence[str] = DEFAULT_SOURCE_NAMES,
        custom_fields: Sequence[CustomFieldDef] = DEFAULT_CUSTOM_FIELDS,
        state_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        dialect: Dialect | None = None,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.dialect = dialect if dialect is not None else Dialect()
        self._on_change = on_change
        self.statuses: tuple[LeadStatus, ...] = build_statuses(lead_statuses)
        self.sources: tuple[LeadSource, ...] = build_sources(lead_sources)
        self.custom_fields: tuple[CustomFieldDef, ...] = tuple(custom_fields)
        # Looked up by every write: built once, as the configuration never changes after construction.
        self._status_ids = frozenset(status.id for status in self.statuses)
        self._source_ids = frozenset(source.id for source in self.sources)
        self._custom_fields_by_name = {
            definition.name: definition for definition in self.custom_fields
        }
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._leads: dict[int, JsonDict] = {}
        self._next_id = FIRST_LEAD_ID
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)

    @property
    def default_status_id(self) -> int:
        return next(status.id for status in self.statuses if status.is_default)

    # --- reads -------------------------------------------------------------------------------

    def lead_statuses(self, *, include_converted: bool) -> list[LeadStatus]:
        """The rows of ``GET /LeadStatuses``: the converted status only when asked for (v3.1 spec)."""
        return [s for s in self.statuses if include_converted or not s.is_converted]

    def readable_leads(self) -> list[JsonDict]:
        """Every lead as :meth:`all_leads`, with ``LEAD_STATUS`` and ``LEAD_SOURCE`` by name beside their
        ids, for a person reading ``GET /_sandbox/leads``."""
        return [self.readable(lead) for lead in self.all_leads()]

    def readable(self, lead: JsonDict) -> JsonDict:
        """``lead`` with ``LEAD_STATUS`` and ``LEAD_SOURCE`` by name beside their ids."""
        statuses = {status.id: status.name for status in self.statuses}
        sources = {source.id: source.name for source in self.sources}
        row: JsonDict = {}
        for name, value in lead.items():
            row[name] = value
            if name == "LEAD_STATUS_ID":
                row["LEAD_STATUS"] = statuses.get(value)
            elif name == "LEAD_SOURCE_ID":
                row["LEAD_SOURCE"] = sources.get(value)
        return row

    def status_id(self, name: str) -> int:
        """The id of the lead status called ``name`` (case and spaces ignored); ValidationError if
        the account has none."""
        wanted = "".join(name.split()).casefold()
        for status in self.statuses:
            if "".join(status.name.split()).casefold() == wanted:
                return status.id
        known = ", ".join(status.name for status in self.statuses)
        raise ValidationError(f"No lead status {name!r}; this account has {known}.")

    def get_lead(self, lead_id: int) -> JsonDict:
        with self._lock:
            return copy.deepcopy(self._existing(lead_id))

    def all_leads(self) -> list[JsonDict]:
        """Every lead ordered by LEAD_ID (the order Insightly lists in), as copies.

        ``SandboxServer.leads`` calls it for ``GET /_sandbox/leads``; ``GET /Leads`` pages with
        ``leads_page`` instead.
        """
        with self._lock:
            return [copy.deepcopy(self._leads[key]) for key in sorted(self._leads)]

    def leads_page(
        self, skip: int, top: int, *, include_converted: bool = True
    ) -> tuple[list[JsonDict], int]:
        """Copies of the leads ``skip:skip + top`` in LEAD_ID order, and how many leads there are
        (converted ones left out unless ``include_converted``).

        ``GET /Leads`` calls it per page; only the page is copied, so listing every lead a page
        at a time costs O(leads), not O(leads²) as copying them all for each page did.
        """
        with self._lock:
            return self._page(self._visible(include_converted), skip, top)

    def search(
        self,
        field_name: str | None,
        field_value: str | None,
        updated_after: datetime | None,
        skip: int = 0,
        top: int | None = None,
        *,
        include_converted: bool = True,
    ) -> tuple[list[JsonDict], int]:
        """Copies of the page ``skip:skip + top`` (all when ``top`` is None) of the leads matching an
        exact field value and/or updated at or after a moment, in LEAD_ID order, and how many match.

        String fields match case-insensitively: Insightly sits on SQL Server, whose default
        collation ignores case, so ``EMAIL`` lookups do too (unknown for certain; chosen). With
        ``Dialect.search_match="contains"`` a text field matches any value containing the text.
        ``updated_after`` is inclusive to the second so a poller never misses a change made
        in the same second as its last sync (unknown; clients must tolerate repeats). Converted
        leads are left out unless ``include_converted``.
        """
        if field_name is not None and field_name not in SEARCHABLE_FIELDS:
            raise ValidationError(f"field_name {field_name!r} is not a searchable Lead field.")
        cutoff = updated_after.replace(microsecond=0) if updated_after is not None else None
        contains = self.dialect.search_match == "contains"
        # Only the page is copied: copying every match made each e-mail lookup cost O(leads), which
        # held a 2,000-lead run (tests/reliability/test_scale_out.py) to a few leads a second.
        with self._lock:
            found = [
                lead
                for lead in self._visible(include_converted)
                if (
                    field_name is None
                    or _matches(lead.get(field_name), field_value or "", contains=contains)
                )
                and (cutoff is None or parse_body_date(lead["DATE_UPDATED_UTC"]) >= cutoff)
            ]
            return self._page(found, skip, top)

    # --- writes ------------------------------------------------------------------------------

    def create_lead(self, body: object) -> JsonDict:
        """Validate and store a new lead; returns it in full, as ``POST /Leads`` answers."""
        with self._lock:
            changes = self._check(body, creating=True)
            changes.pop("LEAD_ID", None)
            now = format_body_date(self._clock())
            lead: JsonDict = dict.fromkeys(RENDER_ORDER)
            lead.update(
                LEAD_ID=self._next_id,
                LEAD_STATUS_ID=self.default_status_id,
                OWNER_USER_ID=SANDBOX_USER_ID,
                CREATED_USER_ID=SANDBOX_USER_ID,
                EMAIL_OPTED_OUT=False,
                CONVERTED=False,
                DATE_CREATED_UTC=now,
                DATE_UPDATED_UTC=now,
                CUSTOMFIELDS=[],
                TAGS=[],
                LINKS=[],
            )
            self._apply(lead, changes)
            self._leads[self._next_id] = lead
            self._next_id += 1
            self._save()
            return self._notify(lead, by_api=True)

    def update_lead(self, body: object) -> JsonDict:
        """Partial update by ``LEAD_ID`` in the body: absent fields kept, ``null`` clears."""
        with self._lock:
            changes = self._check(body, creating=False)
            lead_id = changes.pop("LEAD_ID", None)
            if lead_id is None:
                raise ValidationError("LEAD_ID is required in the body of PUT /Leads.")
            return self._edit(lead_id, changes, by_api=True)

    def edit_lead(self, lead_id: int, fields: JsonDict) -> JsonDict:
        """A salesperson edits a lead in Insightly's pages (``POST /_sandbox/leads/<id>/edit``):
        ``fields`` in the API's names, checked as a PUT's are; DATE_UPDATED_UTC moves as on any edit."""
        with self._lock:
            self._existing(lead_id)
            changes = self._check({**fields, "LEAD_ID": lead_id}, creating=False)
            changes.pop("LEAD_ID", None)
            return self._edit(lead_id, changes, by_api=False)

    def convert_lead(self, lead_id: int) -> JsonDict:
        """A salesperson converts a lead (Actions -> Convert Lead): CONVERTED, CONVERTED_DATE_UTC, the
        new contact, organisation and opportunity ids, and the Converted status (CLOSED).

        DATE_UPDATED_UTC moves too unless ``Dialect.conversion_bumps_updated`` is off (whether
        Insightly moves it is unconfirmed). ValidationError when already converted or when the account
        has no Converted status.
        """
        with self._lock:
            lead = self._existing(lead_id)
            if lead["CONVERTED"]:
                raise ValidationError(f"Lead {lead_id} is already converted.")
            converted = next((status for status in self.statuses if status.is_converted), None)
            if converted is None:
                raise ValidationError("This account has no Converted lead status to convert to.")
            now = format_body_date(self._clock())
            lead.update(CONVERTED=True, CONVERTED_DATE_UTC=now, LEAD_STATUS_ID=converted.id)
            for name, offset in _CONVERTED_ID_OFFSETS.items():
                lead[name] = offset + lead_id
            if self.dialect.conversion_bumps_updated:
                lead["DATE_UPDATED_UTC"] = now
            self._save()
            return self._notify(lead, by_api=False)

    def delete_lead(self, lead_id: int) -> None:
        with self._lock:
            self._existing(lead_id)
            del self._leads[lead_id]
            self._save()

    def clear(self) -> None:
        """Forget every lead (ids restart too), and persist the empty account."""
        with self._lock:
            self._leads.clear()
            self._next_id = FIRST_LEAD_ID
            self._save()

    # --- internals (lock held) ----------------------------------------------------------------

    def _edit(self, lead_id: int, changes: JsonDict, *, by_api: bool) -> JsonDict:
        lead = self._existing(lead_id)
        self._apply(lead, changes)
        lead["DATE_UPDATED_UTC"] = format_body_date(self._clock())
        self._save()
        return self._notify(lead, by_api=by_api)

    def _notify(self, lead: JsonDict, *, by_api: bool) -> JsonDict:
        """Report ``lead`` to ``on_change`` and answer a copy of it."""
        if self._on_change is not None:
            self._on_change([copy.deepcopy(lead)], by_api)
        return copy.deepcopy(lead)

    def _visible(self, include_converted: bool) -> list[JsonDict]:
        """The leads a listing sees, in LEAD_ID order: converted ones only when asked for or when the
        dialect lists them anyway (``Dialect.converted_leads``)."""
        shown = include_converted or self.dialect.converted_leads == "listed"
        return [
            lead for _, lead in sorted(self._leads.items()) if shown or not lead.get("CONVERTED")
        ]

    @staticmethod
    def _page(leads: list[JsonDict], skip: int, top: int | None) -> tuple[list[JsonDict], int]:
        end = None if top is None else skip + top
        return [copy.deepcopy(lead) for lead in leads[skip:end]], len(leads)

    def _existing(self, lead_id: int) -> JsonDict:
        try:
            return self._leads[lead_id]
        except KeyError:
            raise LeadNotFound(f"Lead {lead_id} was not found.") from None

    def _check(self, body: object, *, creating: bool) -> JsonDict:
        return check_lead_body(
            body,
            creating=creating,
            status_ids=self._status_ids,
            default_status_id=self.default_status_id,
            source_ids=self._source_ids,
            custom_fields=self._custom_fields_by_name,
            max_lengths=self.dialect.max_lengths,
        )

    def _apply(self, lead: JsonDict, changes: JsonDict) -> None:
        for name, value in changes.items():
            if name == "CUSTOMFIELDS":
                # Documented: listed custom fields are set, a null FIELD_VALUE removes one, others are
                # kept. Dialect "replace": the listed ones (nulls dropped) are the whole list.
                keep = self.dialect.custom_fields_on_put == "merge"
                merged = {item["FIELD_NAME"]: item for item in lead["CUSTOMFIELDS"] if keep}
                for item in value:
                    merged.pop(item["FIELD_NAME"], None)
                    if item["FIELD_VALUE"] is not None:
                        merged[item["FIELD_NAME"]] = item
                lead[name] = list(merged.values())
            elif name in LIST_FIELDS:
                # TAGS given replace the lead's tags; null clears either list (chosen).
                lead[name] = value if value is not None else []
            else:
                lead[name] = value

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
            raise ValueError(
                f"{path} is not a crmify sandbox state file (version {_FILE_VERSION})."
            )
        leads: list[JsonDict] = data["leads"]
        # A file written before the sandbox rendered a field has no key for it: the field is empty.
        self._leads = {
            int(lead["LEAD_ID"]): {**dict.fromkeys(RENDER_ORDER), "LINKS": [], **lead}
            for lead in leads
        }
        self._next_id = max(int(data["next_lead_id"]), max(self._leads, default=0) + 1)

    def _save(self) -> None:
        if self.state_file is None:
            return
        payload: dict[str, Any] = {
            "version": _FILE_VERSION,
            "next_lead_id": self._next_id,
            "leads": [self._leads[key] for key in sorted(self._leads)],
        }
        write_json_file(self.state_file, payload)


def _matches(stored: object, wanted: str, *, contains: bool = False) -> bool:
    if stored is None:
        return False
    if isinstance(stored, bool):
        return str(stored).lower() == wanted.strip().lower()
    if isinstance(stored, int):
        return str(stored) == wanted.strip()
    if contains:
        return wanted.casefold() in str(stored).casefold()
    return str(stored).casefold() == wanted.casefold()
