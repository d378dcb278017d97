"""What an Insightly v3.1 account looks like: lead fields, statuses, sources, custom fields.

Pure data, no behaviour beyond rendering. ``validation`` reads the field sets, ``state`` keeps
the configured statuses/sources/custom fields, ``api`` renders them for the list endpoints, and
``SandboxServer`` accepts them at construction so a test can mimic a particular account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

JsonDict = dict[str, Any]

# The v3.1 lead field set (insightly-api.md, insightly-pull.md, a v3.1 client), in the order the
# sandbox renders them.
STRING_FIELDS: Final = (
    "SALUTATION",
    "FIRST_NAME",
    "LAST_NAME",
    "TITLE",
    "EMAIL",
    "PHONE",
    "MOBILE",
    "FAX",
    "WEBSITE",
    "ORGANISATION_NAME",
    "INDUSTRY",
    "LEAD_DESCRIPTION",
    "ADDRESS_STREET",
    "ADDRESS_CITY",
    "ADDRESS_STATE",
    "ADDRESS_POSTCODE",
    "ADDRESS_COUNTRY",
    "IMAGE_URL",
)
INT_FIELDS: Final = (
    "EMPLOYEE_COUNT",
    "LEAD_RATING",
    "LEAD_SOURCE_ID",
    "LEAD_STATUS_ID",
    "OWNER_USER_ID",
    "RESPONSIBLE_USER_ID",
)
BOOL_FIELDS: Final = ("EMAIL_OPTED_OUT",)
LIST_FIELDS: Final = ("CUSTOMFIELDS", "TAGS")
# Set by the server only. A client may send them back (a GET body round-tripped into a PUT is
# common), so they are accepted and ignored rather than rejected: see validation.py.
READ_ONLY_FIELDS: Final = (
    "CREATED_USER_ID",
    "DATE_CREATED_UTC",
    "DATE_UPDATED_UTC",
    "LAST_ACTIVITY_DATE_UTC",
    "NEXT_ACTIVITY_DATE_UTC",
    "CONVERTED",
    "CONVERTED_DATE_UTC",
    "CONVERTED_CONTACT_ID",
    "CONVERTED_ORGANISATION_ID",
    "CONVERTED_OPPORTUNITY_ID",
    "LINKS",
)
WRITABLE_FIELDS: Final = frozenset(STRING_FIELDS + INT_FIELDS + BOOL_FIELDS + LIST_FIELDS)
ALL_FIELDS: Final = frozenset({"LEAD_ID", *WRITABLE_FIELDS, *READ_ONLY_FIELDS})
RENDER_ORDER: Final = (
    "LEAD_ID",
    *STRING_FIELDS,
    *INT_FIELDS,
    *BOOL_FIELDS,
    *READ_ONLY_FIELDS,
    *LIST_FIELDS,
)
# Fields ``GET /Leads/Search?field_name=`` accepts: any scalar field (lists cannot be matched).
SEARCHABLE_FIELDS: Final = frozenset(RENDER_ORDER) - frozenset({*LIST_FIELDS, "LINKS"})
# Fields left out of a ``brief=true`` listing. Which fields Insightly drops is unknown; child
# collections are the documented idea of "brief", so those go.
BRIEF_OMITS: Final = frozenset({*LIST_FIELDS, "LINKS"})
# Longest text per field (the v2.2 Lead model, matching the v3.1 Prospect and Organisation; "likely" for
# v3.1 Leads in the facts): a longer value is a 400, worded as ASP.NET's StringLength check words it.
# Written here from the facts, not imported from the backend: the sandbox checks the client's reading.
MAX_LENGTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "SALUTATION": 50,
        **dict.fromkeys(
            (
                "FIRST_NAME",
                "LAST_NAME",
                "TITLE",
                "ORGANISATION_NAME",
                "PHONE",
                "MOBILE",
                "FAX",
                "EMAIL",
                "WEBSITE",
                "ADDRESS_STREET",
                "ADDRESS_CITY",
                "ADDRESS_STATE",
                "ADDRESS_COUNTRY",
            ),
            255,
        ),
        "INDUSTRY": 128,
        "ADDRESS_POSTCODE": 128,
        "LEAD_DESCRIPTION": 4000,
    }
)

# The user every sandbox lead belongs to (Insightly makes the API key's user the owner).
SANDBOX_USER_ID: Final = 1_843_210
FIRST_LEAD_ID: Final = 71_300_001

DEFAULT_STATUS_NAMES: Final = (
    "Not Contacted",
    "Attempted Contact",
    "Contacted",
    "Converted",
    "Disqualified",
)
DEFAULT_SOURCE_NAMES: Final = ("Web", "Email", "Phone", "Partner")
# Non-trivial, non-consecutive ids so a client cannot get away with assuming 1..5.
FIRST_STATUS_ID: Final = 3_601_234
FIRST_SOURCE_ID: Final = 2_904_417
ID_STEP: Final = 7
# The custom field types the sandbox knows and checks values for; CustomFieldDef refuses any other.
CUSTOM_FIELD_TYPES: Final = frozenset(
    {"TEXT", "MULTILINETEXT", "NUMERIC", "BIT", "DATE", "DATETIME", "DROPDOWN"}
)
# STATUS_TYPE values are unknown in the facts doc; chosen here: 1 = open, 2 = closed.
OPEN_STATUS: Final = 1
CLOSED_STATUS: Final = 2
_CLOSED_NAMES: Final = frozenset({"converted", "disqualified"})
# The status conversion sets, which ``GET /LeadStatuses`` leaves out unless ``include_converted=true``
# (Insightly's v3.1 spec): matched by name, ignoring case and spaces.
_CONVERTED_NAME: Final = "converted"


@dataclass(frozen=True)
class Dialect:
    """How the sandbox answers where the facts leave Insightly's behaviour open; clients should work
    with every choice. The defaults are the documented or most likely reading.

    ``create_status``: ``POST /Leads`` answers 200 or 201 (both reported; clients must accept both).
    ``custom_fields_on_put``: ``"merge"`` (documented: custom fields merge by ``FIELD_NAME``, a null
    ``FIELD_VALUE`` clears one) or ``"replace"`` (the listed ones become the lead's whole list).
    ``search_match``: ``"exact"`` (documented; text ignores case as SQL Server does) or ``"contains"``
    (a looser search, so a client that adopts the first hit without checking it is caught).
    ``max_lengths``: longest text per field (:data:`MAX_LENGTHS`).
    ``converted_leads``: ``GET /Leads`` and ``/Leads/Search`` leave converted leads (``CONVERTED``)
    out unless ``include_converted=true`` (``"hidden"``: v2.2's documented default, unconfirmed for
    v3.1) or list them always (``"listed"``).
    ``include_converted``: those two take the parameter (``"accepted"``) or answer 400 naming it
    (``"refused"``: a v3.1 without it that checks its parameters); ``/LeadStatuses`` always takes it.
    ``conversion_bumps_updated``: converting a lead sets its ``DATE_UPDATED_UTC`` (unconfirmed; a
    poller reading by ``updated_after_utc`` only sees a conversion that does).
    """

    create_status: Literal[200, 201] = 200
    custom_fields_on_put: Literal["merge", "replace"] = "merge"
    search_match: Literal["exact", "contains"] = "exact"
    converted_leads: Literal["hidden", "listed"] = "hidden"
    include_converted: Literal["accepted", "refused"] = "accepted"
    conversion_bumps_updated: bool = True
    # A factory: Python 3.11's dataclasses refuse a mappingproxy default (unhashable there).
    max_lengths: Mapping[str, int] = field(default_factory=lambda: MAX_LENGTHS)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("create_status", (200, 201)),
            ("custom_fields_on_put", ("merge", "replace")),
            ("search_match", ("exact", "contains")),
            ("converted_leads", ("hidden", "listed")),
            ("include_converted", ("accepted", "refused")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")


@dataclass(frozen=True)
class LeadStatus:
    """One row of ``GET /LeadStatuses``."""

    id: int
    name: str
    is_default: bool
    status_type: int
    order: int

    @property
    def is_converted(self) -> bool:
        return "".join(self.name.split()).casefold() == _CONVERTED_NAME

    def to_json(self) -> JsonDict:
        return {
            "LEAD_STATUS_ID": self.id,
            "LEAD_STATUS": self.name,
            "DEFAULT_STATUS": self.is_default,
            "STATUS_TYPE": self.status_type,
            "FIELD_ORDER": self.order,
        }


@dataclass(frozen=True)
class LeadSource:
    """One row of ``GET /LeadSources``."""

    id: int
    name: str
    is_default: bool
    order: int

    def to_json(self) -> JsonDict:
        return {
            "LEAD_SOURCE_ID": self.id,
            "LEAD_SOURCE": self.name,
            "DEFAULT_VALUE": self.is_default,
            "FIELD_ORDER": self.order,
        }


@dataclass(frozen=True)
class CustomFieldDef:
    """A lead custom field definition, as configured by whoever builds the sandbox.

    ``field_type`` is one of ``CUSTOM_FIELD_TYPES``; ``options`` lists the allowed values of a
    DROPDOWN field.
    """

    name: str
    label: str = ""
    field_type: str = "TEXT"
    options: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a custom field needs a name")
        if self.field_type not in CUSTOM_FIELD_TYPES:
            raise ValueError(
                f"custom field type {self.field_type!r} is not one of {sorted(CUSTOM_FIELD_TYPES)}"
            )

    def to_json(self, order: int) -> JsonDict:
        return {
            "FIELD_NAME": self.name,
            "FIELD_ORDER": order,
            "FIELD_FOR": "LEAD",
            "FIELD_LABEL": self.label or self.name.removesuffix("__c").replace("_", " "),
            "FIELD_TYPE": self.field_type,
            "FIELD_HELP_TEXT": None,
            "DEFAULT_VALUE": None,
            "EDITABLE": True,
            "VISIBLE": True,
            "CUSTOM_FIELD_OPTIONS": [
                {"OPTION_ID": index + 1, "OPTION_VALUE": value, "OPTION_DEFAULT": False}
                for index, value in enumerate(self.options)
            ],
        }


DEFAULT_CUSTOM_FIELDS: Final = (
    CustomFieldDef("Signup_Source__c", "Signup source", "TEXT"),
    CustomFieldDef("Plan__c", "Plan", "DROPDOWN", ("Free", "Plus", "Pro")),
)


def build_statuses(names: Sequence[str]) -> tuple[LeadStatus, ...]:
    """Turn configured status names into rows; the first name is the account's default."""
    if not names:
        raise ValueError("an account needs at least one lead status")
    return tuple(
        LeadStatus(
            id=FIRST_STATUS_ID + index * ID_STEP,
            name=name,
            is_default=index == 0,
            status_type=CLOSED_STATUS if name.strip().lower() in _CLOSED_NAMES else OPEN_STATUS,
            order=index + 1,
        )
        for index, name in enumerate(names)
    )


def build_sources(names: Sequence[str]) -> tuple[LeadSource, ...]:
    """Turn configured source names into rows. None is a default: a new lead gets no source."""
    return tuple(
        LeadSource(
            id=FIRST_SOURCE_ID + index * ID_STEP, name=name, is_default=False, order=index + 1
        )
        for index, name in enumerate(names)
    )
