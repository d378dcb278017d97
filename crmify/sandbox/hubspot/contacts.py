"""The in-memory HubSpot account behind the HubSpot sandbox: contacts, validated on every write.

``api`` calls it for every contact operation, ``server.HubSpotSandbox`` builds it and reaches it
for the control API. Every public method takes the one lock. With ``state_file`` the contacts are
loaded at construction and written after each change (``persist.write_json_file``).

What a write checks (``shared/hubspot-api.md``): each property exists (PROPERTY_DOESNT_EXIST), is not
read-only (READ_ONLY_VALUE), an enumeration value equals an option's value (INVALID_OPTION), the
e-mail is an address (INVALID_EMAIL); a create needs an e-mail, a first or a last name; an e-mail
another contact has is a 409 naming it. ``""`` clears a property.

Besides the API's writes, the control API's salesperson works here (:meth:`ContactStore.edit`,
:meth:`ContactStore.archive` with ``source=events.SALESPERSON``, :meth:`ContactStore.merge`). Every write
hands its webhook events (``events``) to ``on_change`` with whether the API made it, under the lock,
so events leave in the order the writes happened.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crmify.sandbox.persist import write_json_file

from . import events
from .errors import HubSpotError, bad_request, invalid_properties, not_found
from .schema import (
    DEFAULT_READ_PROPERTIES,
    HubSpotDialect,
    JsonDict,
    PropertyDef,
    PropertyIndex,
)
from .search import check_search, matches, sort_key

_FILE_VERSION = 1
FIRST_CONTACT_ID = 101
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

#: Called after each write with its webhook events and whether the API (not a salesperson) made it.
ChangeListener = Callable[[list[JsonDict], bool], None]
#: Where a contact lists those merged into it, separated by ``;`` (HubSpot's property).
MERGED_IDS = "hs_merged_object_ids"
#: What a merge never copies from the merged contact to the primary.
_MERGE_KEEPS = frozenset({"hs_object_id", "createdate", "lastmodifieddate", MERGED_IDS})


def hubspot_now() -> datetime:
    """The HubSpot sandbox's default clock: aware UTC, to the millisecond (HubSpot keeps
    milliseconds, and a poller pages by them)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def hubspot_time(moment: datetime) -> str:
    """``2026-12-02T13:45:00.000Z``: how HubSpot writes instants."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class ContactStore:
    """Contacts of one sandbox account, thread-safe, optionally persisted to a JSON file."""

    def __init__(
        self,
        properties: Sequence[PropertyDef],
        dialect: HubSpotDialect,
        *,
        state_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], datetime] = hubspot_now,
        on_change: ChangeListener | None = None,
    ) -> None:
        self.dialect = dialect
        self.index = PropertyIndex(tuple(properties))
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._contacts: dict[int, JsonDict] = {}
        self._archived: dict[int, JsonDict] = {}
        # A merged contact's id -> the id it was merged into (reads may follow it: merged_reads).
        self._merged: dict[int, int] = {}
        self._next_id = FIRST_CONTACT_ID
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: str, id_property: str | None, wanted: Sequence[str]) -> JsonDict:
        """One contact by id, or by ``id_property`` (``email``, or a unique property); 404 if none."""
        with self._lock:
            return self._render(self._find(key, id_property, follow_merges=True), wanted)

    def page(self, after: str | None, limit: int, wanted: Sequence[str]) -> JsonDict:
        """``GET /contacts``: contacts by id from the cursor ``after``, ``paging.next.after`` if more."""
        start = _cursor(after)
        with self._lock:
            ids = sorted(number for number in self._contacts if number >= start)
            page = [self._render(self._contacts[number], wanted) for number in ids[:limit]]
            answer: JsonDict = {"results": page}
            if len(ids) > limit:
                answer["paging"] = {"next": {"after": str(ids[limit])}}
            return answer

    def search(self, body: object) -> JsonDict:
        groups, options = check_search(
            body,
            self.index.by_name,
            self.dialect.search_page_max,
            self.dialect.search_max_results,
        )
        with self._lock:
            found = [
                contact
                for _number, contact in sorted(self._contacts.items())
                if matches(groups, options["query"], contact["properties"])
            ]
            found = self._sorted(found, options["sorts"])
            after, limit = options["after"], options["limit"]
            answer: JsonDict = {
                "total": len(found),
                "results": [
                    self._render(contact, options["properties"])
                    for contact in found[after : after + limit]
                ],
            }
            if after + limit < len(found):
                answer["paging"] = {"next": {"after": str(after + limit)}}
            return answer

    def all_contacts(self) -> list[JsonDict]:
        """Every live contact with every property it has (``GET /_sandbox/leads``)."""
        with self._lock:
            return [
                self._render(contact, sorted(contact["properties"]))
                for _number, contact in sorted(self._contacts.items())
            ]

    # -- writes -----------------------------------------------------------------------------------

    def create(self, body: object) -> JsonDict:
        properties = self._checked(body)
        if not any(properties.get(name) for name in ("email", "firstname", "lastname")):
            raise bad_request("A contact needs an email, a firstname or a lastname.")
        with self._lock:
            self._refuse_twin(properties.get("email", ""), None)
            number = self._next_id
            self._next_id += 1
            moment = self._clock()
            now = hubspot_time(moment)
            values = {name: value for name, value in properties.items() if value != ""}
            values |= {"hs_object_id": str(number), "createdate": now, "lastmodifieddate": now}
            contact = {"id": str(number), "properties": values, "createdAt": now, "updatedAt": now}
            self._contacts[number] = contact
            self._save()
            self._notify([events.creation(str(number), events.API, moment)], by_api=True)
            return self._render(contact, list(properties))

    def update(self, key: str, id_property: str | None, body: object) -> JsonDict:
        changes = self._checked(body)
        with self._lock:
            contact = self._find(key, id_property)
            values = contact["properties"]
            if "email" in changes:
                self._refuse_twin(changes["email"], int(contact["id"]))
            stage = changes.get("lifecyclestage")
            if stage and self._moves_back(values.get("lifecyclestage", ""), stage):
                if self.dialect.lifecycle_backwards == "rejected":
                    raise bad_request(
                        f"lifecyclestage cannot move backwards from {values['lifecyclestage']!r} "
                        f"to {stage!r}; clear it first."
                    )
                if self.dialect.lifecycle_backwards == "ignored":
                    del changes["lifecyclestage"]
            self._change(contact, changes, events.API)
            return self._render(contact, [*changes, "lifecyclestage"] if stage else list(changes))

    def edit(self, key: str, properties: Mapping[str, Any]) -> JsonDict:
        """A salesperson edits a contact in HubSpot's pages (``POST /_sandbox/leads/<id>/edit``):
        validated like a PATCH, but any lifecycle stage may be chosen, as the UI allows. Answers the
        contact with every property it has."""
        changes = self._checked({"properties": properties})
        with self._lock:
            contact = self._find(key, None)
            if "email" in changes:
                self._refuse_twin(changes["email"], int(contact["id"]))
            self._change(contact, changes, events.SALESPERSON)
            return self._render(contact, sorted(contact["properties"]))

    def archive(self, key: str, *, source: str = events.API) -> None:
        """Archive (delete) a contact: gone from reads, listings and search; a ``contact.deletion``."""
        with self._lock:
            contact = self._find(key, None)
            number = int(contact["id"])
            self._archived[number] = self._contacts.pop(number)
            self._save()
            self._notify(
                [events.deletion(str(number), source, self._clock())], by_api=source == events.API
            )

    def merge(self, key: str, into: str) -> JsonDict:
        """A salesperson merges contact ``key`` into ``into`` (``POST /_sandbox/leads/<id>/merge``).

        The primary keeps its values and takes the merged one's where it has none (HubSpot's exact
        rule is not documented) and lists the merged ids in ``hs_merged_object_ids``; the merged
        contact leaves listings and search, and a read of its id (``GET``, batch read) answers the
        primary or 404 (``HubSpotDialect.merged_reads``). Answers the primary.
        """
        with self._lock:
            loser, primary = self._find(key, None), self._find(into, None)
            if loser is primary:
                raise bad_request("A contact cannot be merged into itself.")
            values = primary["properties"]
            for name, value in loser["properties"].items():
                if name not in _MERGE_KEEPS and not values.get(name):
                    values[name] = value
            merged_ids = [*_merged_ids(values), loser["id"], *_merged_ids(loser["properties"])]
            values[MERGED_IDS] = ";".join(merged_ids)
            moment = self._touch(primary)
            number = int(loser["id"])
            del self._contacts[number]
            self._merged[number] = int(primary["id"])
            for merged, target in self._merged.items():  # earlier merges into the loser move on
                if target == number:
                    self._merged[merged] = int(primary["id"])
            self._save()
            self._notify(
                [events.merge(primary["id"], [loser["id"]], events.SALESPERSON, moment)],
                by_api=False,
            )
            return self._render(primary, sorted(values))

    def clear(self) -> None:
        with self._lock:
            self._contacts.clear()
            self._archived.clear()
            self._merged.clear()
            self._next_id = FIRST_CONTACT_ID
            self._save()

    # -- helpers (the lock held) ------------------------------------------------------------------

    def _touch(self, contact: JsonDict) -> datetime:
        """Stamp a change of ``contact``: every write of one goes through here, so its
        ``lastmodifieddate`` and ``updatedAt`` (what a poller searches by) always move. Answers the
        moment stamped."""
        moment = self._clock()
        contact["properties"]["lastmodifieddate"] = contact["updatedAt"] = hubspot_time(moment)
        return moment

    def _change(self, contact: JsonDict, changes: Mapping[str, str], source: str) -> None:
        """Write checked ``changes`` to ``contact``, stamp its modification time, save, and report
        one ``contact.propertyChange`` per property whose value changed."""
        values = contact["properties"]
        changed: dict[str, str] = {}
        for name, value in changes.items():
            if values.get(name, "") != value:
                changed[name] = value
            if value == "":
                values.pop(name, None)
            else:
                values[name] = value
        moment = self._touch(contact)
        self._save()
        self._notify(
            [
                events.property_change(contact["id"], name, value, source, moment)
                for name, value in changed.items()
            ],
            by_api=source == events.API,
        )

    def _notify(self, items: list[JsonDict], *, by_api: bool) -> None:
        if self._on_change is not None and items:
            self._on_change(items, by_api)

    def _find(self, key: str, id_property: str | None, *, follow_merges: bool = False) -> JsonDict:
        if id_property in (None, "", "hs_object_id"):
            number = _number(key)
            if follow_merges and self.dialect.merged_reads == "primary":
                number = self._merged.get(number, number)
            contact = self._contacts.get(number)
        else:
            prop = self.index.by_name.get(str(id_property))
            if prop is None or not prop.unique:
                raise bad_request(
                    f"{id_property} is not a unique property and cannot be an idProperty."
                )
            wanted = key.strip().casefold()
            contact = next(
                (
                    one
                    for one in self._contacts.values()
                    if str(one["properties"].get(prop.name, "")).casefold() == wanted
                ),
                None,
            )
        if contact is None:
            raise not_found()
        return contact

    def _refuse_twin(self, email: str, own: int | None) -> None:
        wanted = email.strip().casefold()
        if not wanted:
            return
        for number, contact in self._contacts.items():
            if number != own and str(contact["properties"].get("email", "")).casefold() == wanted:
                raise self._conflict(number, email)

    def _conflict(self, number: int, email: str) -> HubSpotError:
        style = self.dialect.conflict
        if style == "legacy":
            return HubSpotError(409, "CONFLICT", f"Contact already exists. Existing ID: {number}")
        text = (
            f"Contact already exists. Existing ID: {number}"
            if style == "object_already_exists"
            else f"A contact with the email {email!r} already exists."
        )
        return HubSpotError(
            409,
            "OBJECT_ALREADY_EXISTS",
            text,
            errors=[{"message": text, "in": "email", "code": "OBJECT_ALREADY_EXISTS"}],
        )

    def _moves_back(self, old: str, new: str) -> bool:
        order = self.index.by_name["lifecyclestage"].option_values
        return old in order and new in order and order.index(new) < order.index(old)

    def _checked(self, body: object) -> dict[str, str]:
        """The ``properties`` of a create/update body as text; 400 naming every bad property."""
        if not isinstance(body, Mapping) or not isinstance(body.get("properties"), Mapping):
            raise bad_request('The body must be a JSON object with "properties", an object.')
        properties: dict[str, str] = {}
        problems: list[JsonDict] = []
        for name, raw in body["properties"].items():
            value = "" if raw is None else (str(raw).lower() if isinstance(raw, bool) else str(raw))
            problem = self._problem(str(name), value)
            if problem:
                problems.append({"name": name, **problem})
            properties[str(name)] = value
        if problems:
            raise invalid_properties(problems)
        return properties

    def _problem(self, name: str, value: str) -> dict[str, str] | None:
        prop = self.index.by_name.get(name)
        if prop is None:
            return {
                "error": "PROPERTY_DOESNT_EXIST",
                "message": f'Property "{name}" does not exist',
            }
        if prop.read_only:
            return {"error": "READ_ONLY_VALUE", "message": f'Property "{name}" is read-only'}
        if value and prop.type == "enumeration" and value not in prop.option_values:
            return {
                "error": "INVALID_OPTION",
                "message": f"{value} was not one of the allowed options: "
                + ", ".join(prop.option_values),
            }
        if value and name == "email" and not _EMAIL.match(value):
            return {"error": "INVALID_EMAIL", "message": f"Email address {value} is invalid"}
        return None

    def _sorted(self, found: list[JsonDict], sorts: list[Any]) -> list[JsonDict]:
        """``found`` (in id order) by the search's ``sorts``, each by its property's type."""
        for sort in reversed(sorts):
            if isinstance(sort, Mapping) and sort.get("propertyName"):
                name = str(sort["propertyName"])
                prop = self.index.by_name.get(name)
                found = sorted(
                    found,
                    key=lambda contact: sort_key(prop, contact["properties"].get(name)),
                    reverse=str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING",
                )
        return found

    def _render(self, contact: JsonDict, wanted: Sequence[str]) -> JsonDict:
        names = list(wanted) or list(DEFAULT_READ_PROPERTIES)
        values = contact["properties"]
        return {
            "id": contact["id"],
            "properties": {
                name: values.get(name)
                for name in dict.fromkeys([*names, "hs_object_id"])
                if name in self.index.by_name
            },
            "createdAt": contact["createdAt"],
            "updatedAt": contact["updatedAt"],
            "archived": False,
        }

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (
            not isinstance(data, dict)
            or data.get("version") != _FILE_VERSION
            or "contacts" not in data
        ):
            raise ValueError(f"{path} is not a crmify HubSpot sandbox state file.")
        self._contacts = {int(one["id"]): one for one in data["contacts"]}
        self._merged = {int(key): int(value) for key, value in data.get("merged", {}).items()}
        self._next_id = max(int(data["next_id"]), max(self._contacts, default=0) + 1)

    def _save(self) -> None:
        if self.state_file is not None:
            write_json_file(
                self.state_file,
                {
                    "version": _FILE_VERSION,
                    "next_id": self._next_id,
                    "contacts": [self._contacts[key] for key in sorted(self._contacts)],
                    "merged": {str(key): value for key, value in sorted(self._merged.items())},
                },
            )


def _number(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise not_found(f"No contact with id {key!r}.") from None


def _cursor(after: str | None) -> int:
    if after in (None, ""):
        return 0
    try:
        return int(str(after))
    except ValueError:
        raise bad_request(
            f"after must be a cursor from paging.next.after, not {after!r}."
        ) from None


def _merged_ids(values: Mapping[str, str]) -> list[str]:
    return [key for key in str(values.get(MERGED_IDS) or "").split(";") if key]
