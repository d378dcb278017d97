"""The HubSpot sandbox account's configuration: contact properties, their options, and the
``HubSpotDialect`` switches for what ``shared/hubspot-api.md`` leaves unconfirmed.

Read by ``contacts`` (validation), ``api`` (``GET /crm/v3/properties/contacts``) and built by
``server.HubSpotSandbox`` and the CLI. Configuration, not state: never written to the state file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

JsonDict = dict[str, Any]

PROPERTY_TYPES = ("string", "enumeration", "number", "date", "datetime", "bool")


@dataclass(frozen=True)
class PropertyDef:
    """One contact property as ``GET /crm/v3/properties/contacts`` lists it."""

    name: str
    label: str = ""
    type: str = "string"
    options: tuple[tuple[str, str], ...] = ()  # (value, label), in the account's order
    read_only: bool = False
    unique: bool = False
    group: str = "contactinformation"

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"a property needs a name without surrounding spaces: {self.name!r}")
        if self.type not in PROPERTY_TYPES:
            raise ValueError(f"property type must be one of {PROPERTY_TYPES}, not {self.type!r}")
        if self.options and self.type != "enumeration":
            raise ValueError(f"only an enumeration property has options ({self.name})")

    @property
    def option_values(self) -> tuple[str, ...]:
        return tuple(value for value, _label in self.options)

    def to_json(self) -> JsonDict:
        field_type = {"enumeration": "select", "bool": "booleancheckbox", "number": "number"}
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "fieldType": field_type.get(self.type, "text"),
            "groupName": self.group,
            "options": [
                {"label": label, "value": value, "hidden": False, "displayOrder": index}
                for index, (value, label) in enumerate(self.options)
            ],
            "hasUniqueValue": self.unique,
            "hidden": False,
            "formField": not self.read_only,
            "modificationMetadata": {
                "archivable": not self.read_only,
                "readOnlyDefinition": True,
                "readOnlyValue": self.read_only,
            },
        }


#: lifecyclestage's internal values in the standard order (labels from HubSpot's knowledge base).
LIFECYCLE_STAGES: tuple[tuple[str, str], ...] = (
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
)

#: hs_lead_status: labels are documented, the upper-case values are seen in public code only.
LEAD_STATUSES: tuple[tuple[str, str], ...] = (
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONTACT", "Attempted to contact"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
)

_TEXT_PROPERTIES = (
    ("email", "Email"),
    ("firstname", "First Name"),
    ("lastname", "Last Name"),
    ("phone", "Phone Number"),
    ("mobilephone", "Mobile Phone Number"),
    ("jobtitle", "Job Title"),
    ("company", "Company Name"),
    ("website", "Website URL"),
    ("address", "Street Address"),
    ("city", "City"),
    ("state", "State/Region"),
    ("zip", "Postal Code"),
    ("country", "Country/Region"),
)

#: Read-only properties every contact has (HubSpot sets them; ``hs_merged_object_ids`` only once
#: others were merged into it: their ids, separated by ``;``).
SYSTEM_PROPERTIES = ("hs_object_id", "createdate", "lastmodifieddate", "hs_merged_object_ids")
#: What a contact read without ``properties`` answers with.
DEFAULT_READ_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)


@dataclass(frozen=True)
class HubSpotDialect:
    """How the sandbox answers where the facts leave HubSpot open; clients should work with every
    choice. The defaults are the confirmed or most likely reading.

    ``lead_status_values``: hs_lead_status option values as public code has them (``"codes"``:
    ``NEW``...) or equal to their documented labels (``"labels"``: ``New``...).
    ``lifecycle_backwards``: a PATCH moving lifecyclestage to an earlier stage is ``"ignored"``
    (200, the stage kept: the v1-era report), ``"rejected"`` (400) or ``"allowed"``; clearing it
    with ``""`` first always works.
    ``conflict``: a duplicate e-mail answers 409 ``"legacy"`` (category CONFLICT, "Contact already
    exists. Existing ID: N"), ``"object_already_exists"`` (the newer category with
    ``errors[{in: "email"}]`` and the id in the message) or ``"no_id"`` (the newer shape naming no id).
    ``search_page_max``: the largest search ``limit`` (200, unconfirmed).
    ``search_max_results``: how far a search pages (10,000, documented): a page reaching past it
    (``after`` + ``limit``) is a 400. Lower it in a test to reach it with few contacts.
    ``search_requests_per_second``: search's own limit (4, documented); None turns it off.
    ``retry_after``: whether a 429 carries ``Retry-After`` (not documented either way).
    ``batch_max_inputs``: the most inputs one batch call takes (100, third parties' figure,
    unconfirmed); more is a 400 for the whole call.
    ``merged_reads``: a read of a contact merged into another answers the primary (``"primary"``)
    or 404 (``"not_found"``); HubSpot's behaviour is unconfirmed.
    """

    lead_status_values: Literal["codes", "labels"] = "codes"
    lifecycle_backwards: Literal["ignored", "rejected", "allowed"] = "ignored"
    conflict: Literal["legacy", "object_already_exists", "no_id"] = "legacy"
    search_page_max: int = 200
    search_max_results: int = 10_000
    search_requests_per_second: float | None = 4.0
    retry_after: bool = False
    batch_max_inputs: int = 100
    merged_reads: Literal["primary", "not_found"] = "primary"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("merged_reads", ("primary", "not_found")),
            ("lead_status_values", ("codes", "labels")),
            ("lifecycle_backwards", ("ignored", "rejected", "allowed")),
            ("conflict", ("legacy", "object_already_exists", "no_id")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")


def standard_properties(
    dialect: HubSpotDialect, extra: Sequence[PropertyDef] = ()
) -> tuple[PropertyDef, ...]:
    """The properties of a standard account (as the dialect reads it) plus ``extra`` custom ones."""
    lead_statuses = (
        LEAD_STATUSES
        if dialect.lead_status_values == "codes"
        else tuple((label, label) for _value, label in LEAD_STATUSES)
    )
    return (
        *(PropertyDef(name, label, unique=name == "email") for name, label in _TEXT_PROPERTIES),
        PropertyDef(
            "lifecyclestage", "Lifecycle Stage", "enumeration", LIFECYCLE_STAGES, group="contact"
        ),
        PropertyDef("hs_lead_status", "Lead Status", "enumeration", lead_statuses, group="sales"),
        PropertyDef("hs_object_id", "Record ID", "number", read_only=True, unique=True),
        PropertyDef("createdate", "Create Date", "datetime", read_only=True),
        PropertyDef("lastmodifieddate", "Last Modified Date", "datetime", read_only=True),
        PropertyDef("hs_merged_object_ids", "Merged Contact IDs", read_only=True),
        *extra,
    )


def custom_property(spec: str) -> PropertyDef:
    """``NAME[:TYPE[:OPTION|OPTION...]]`` (the CLI's ``--property``) as a :class:`PropertyDef`."""
    name, _, rest = spec.partition(":")
    kind, _, options = rest.partition(":")
    values = tuple((option, option) for option in options.split("|") if option)
    return PropertyDef(name, name, kind or ("enumeration" if values else "string"), values)


@dataclass(frozen=True)
class PropertyIndex:
    """The account's properties by name, built once (every write validates against it)."""

    properties: tuple[PropertyDef, ...]
    by_name: dict[str, PropertyDef] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {prop.name: prop for prop in self.properties})
