"""Insightly API v3.1 (see ``shared/insightly-api.md`` for what is known of it).

Options (``CRMIFY['BACKEND_OPTIONS']``):

=====================  ==========================================================================
``POD``                ``"na1"`` (also ``eu1``, ``au1``...): builds ``https://api.{pod}.insightly.com/v3.1/``
``API_URL``            the whole base URL instead (the sandbox, a test server)
``TIMEOUT``            seconds per call (15)
``REQUESTS_PER_SECOND`` the pace shared by every worker (10, Insightly's reported limit)
``BURST``              calls that may go out at once after a quiet moment (2: a lookup and its create);
                       keep it within what the CRM lets through at once (10 a second for Insightly)
``DAILY_QUOTA``        the plan's daily limit when known before the first answer tells it
``QUOTA_WINDOW_SECONDS`` the length of the quota's window (86400), to estimate its reset when the CRM
                       has not said it (only a used-up quota's 429 does)
``RATE_LIMIT_CACHE``   the Django cache alias that holds the shared pace and quota (``"default"``)
``RECORD_URL``         staff link (``"https://crm.{pod}.insightly.com/details/Lead/{id}"``)
``CUSTOM_FIELDS``      lead custom-field key -> Insightly ``FIELD_NAME`` (empty: keys are sent as they are)
``MISSING_LAST_NAME``  ``LAST_NAME`` for a lead without one: ``"derive"`` (default; from the e-mail's
                       local part or the first name) or a fixed text such as ``"Unknown"``
``LOOKUP_BY_EMAIL``    before creating, adopt an existing CRM lead whose ``EMAIL`` equals the lead's,
                       ignoring case and surrounding spaces (True)
``STATUS_CACHE_SECONDS`` how long status and source tables are cached (600)
``INCLUDE_CONVERTED``  ask the pull's listings for converted leads too (True); see below
=====================  ==========================================================================

Auth: ``CRMIFY_BACKEND_AUTH_API_KEY``, sent as HTTP Basic with the key as user name and no password.

What is sent (``shared/insightly-api.md``): statuses are resolved from ``GET /LeadStatuses?include_converted=true``
(without it the converted status is left out); a date mapped to a custom field is written
``yyyy-MM-dd HH:mm:ss`` in UTC, the body format (ISO 8601 is for query strings only); a value longer than
:data:`MAX_LENGTHS` is a mapping error and never sent; an update sends custom fields by ``FIELD_NAME``, each
one the app cleared with ``"FIELD_VALUE": null``, never ``"CUSTOMFIELDS": null``.

What is read back (``shared/insightly-pull.md``): :meth:`InsightlyBackend.iter_changes` pages through
``GET /Leads/Search?updated_after_utc=`` (``GET /Leads`` for every lead), 500 a page, in whatever order
Insightly gives (none is documented). v2.2 left converted leads out of both unless
``include_converted=true``, and v3.1 may too, so the pull asks for them; an account that answers 400
naming the parameter is asked again without it, and this process remembers not to send it there.
``DATE_UPDATED_UTC`` (``yyyy-MM-dd HH:mm:ss``, UTC) is the record's ``modified_at``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.core import checks

from crmify.exceptions import PermanentBackendError, TransientBackendError

from .base import (
    ConnectionCheck,
    CrmChange,
    CrmLead,
    length_problems,
    listing_says_absent,
    normalise_email,
    normalise_name,
)
from .http import HttpBackend

if TYPE_CHECKING:
    from crmify.models import Lead

#: Lead fields and the v3.1 names they are sent as (upper case; v2 names such as EMAIL_ADDRESS are gone).
FIELD_NAMES: dict[str, str] = {
    "first_name": "FIRST_NAME",
    "last_name": "LAST_NAME",
    "email": "EMAIL",
    "phone": "PHONE",
    "mobile_phone": "MOBILE",
    "title": "TITLE",
    "company": "ORGANISATION_NAME",
    "website": "WEBSITE",
    "street_address": "ADDRESS_STREET",
    "city": "ADDRESS_CITY",
    "state": "ADDRESS_STATE",
    "postcode": "ADDRESS_POSTCODE",
    "country": "ADDRESS_COUNTRY",
    "description": "LEAD_DESCRIPTION",
}

#: Longest values of the v3.1 Lead (the v2.2 Lead model's, which the v3.1 Prospect and Organisation share).
#: A longer mapped value is a mapping error; a longer value on the lead is refused before it is sent.
MAX_LENGTHS: dict[str, int] = {
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

#: How many search results the lookup by e-mail reads: it adopts only an exact match among them.
LOOKUP_PAGE = 20
#: Insightly's largest page (``top``): one call of the pull reads this many leads.
MAX_PAGE = 500
#: Base URLs whose lead listings answered 400 to ``include_converted`` in this process (see
#: :meth:`InsightlyBackend.lead_listing`): every backend instance of the process asks them without it.
REFUSES_INCLUDE_CONVERTED: set[str] = set()


def crm_id(value: Any) -> int | None:
    """An Insightly record id from an answer (``5`` or ``"5"``), or None when it is anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) or None
    return None


def body_date(value: datetime.date) -> str:
    """A date as Insightly takes it in a request body: ``yyyy-MM-dd HH:mm:ss`` (UTC; midnight for a date)."""
    moment = (
        value
        if isinstance(value, datetime.datetime)
        else datetime.datetime.combine(value, datetime.time())
    )
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"


def updated_at(value: Any) -> datetime.datetime | None:
    """A body date (``DATE_UPDATED_UTC``: ``yyyy-MM-dd HH:mm:ss``, UTC) as an aware datetime; ISO 8601
    is read too, in case an account answers so. None for anything else (a record without one)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def query_date(moment: datetime.datetime) -> str:
    """``moment`` as ``updated_after_utc`` takes it: ISO 8601 ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, the
    fraction of a second dropped (rounding down keeps "at or after" true); a naive one is UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}Z"


def derived_last_name(email: str | None, first_name: str | None) -> str:
    """A sensible ``LAST_NAME`` for a sign-up that gave none: the e-mail's local part, else the first name."""
    local = email.split("@", 1)[0].strip() if email else ""
    return local or first_name or "Unknown"


def custom_fields_update(
    previous: list[dict[str, Any]], current: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """``CUSTOMFIELDS`` of an update: None when nothing changed, else every custom field the lead has and
    each one the app cleared with ``"FIELD_VALUE": null``.

    Insightly merges custom fields by ``FIELD_NAME`` on a PUT, so one left out keeps its value and only a
    null clears it; sending the unchanged ones too keeps the lead right on an account that would replace
    the whole list instead (not documented either way). ``"CUSTOMFIELDS": null`` is never sent.
    """
    if previous == current:
        return None
    kept = {item["FIELD_NAME"] for item in current}
    cleared = sorted({item["FIELD_NAME"] for item in previous} - kept)
    return [*current, *({"FIELD_NAME": name, "FIELD_VALUE": None} for name in cleared)]


class InsightlyBackend(HttpBackend):
    """Creates, updates (partial PUT) and deletes Insightly leads; see the module docstring for options."""

    name = "insightly"
    supports_payload_preview = True
    supports_fetch = True
    supports_partial_update = True
    supports_listing = True
    supports_lookup = True
    supports_connection_check = True
    supports_pull = True
    pull_page_size = MAX_PAGE
    max_lengths: Mapping[str, int] = MAX_LENGTHS

    def __init__(
        self, options: Mapping[str, Any] | None = None, auth: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(options, auth)
        api_key = self.auth.get("API_KEY", "")
        self.session.auth = (api_key, "")
        self.pod = str(self.options.get("POD", "na1"))
        self.table_seconds = float(self.options.get("STATUS_CACHE_SECONDS", 600))

    @property
    def base_url(self) -> str:
        return str(self.options.get("API_URL") or f"https://api.{self.pod}.insightly.com/v3.1/")

    def max_length(self, field: str) -> int | None:
        return MAX_LENGTHS.get(FIELD_NAMES.get(field, ""))

    def encode_date(self, value: datetime.date) -> str:
        return body_date(value)

    def record_url(self, lead_id: str) -> str | None:
        template = str(
            self.options.get("RECORD_URL", "https://crm.{pod}.insightly.com/details/Lead/{id}")
        )
        return template.format(pod=self.pod, id=lead_id)

    # -- lookups ------------------------------------------------------------------------------------

    def _table(
        self, collection: str, id_key: str, name_key: str, *, fetch: bool
    ) -> dict[str, tuple[int, str]] | None:
        """``normalised name -> (id, name)`` for ``/LeadStatuses`` or ``/LeadSources``, cached with expiry.

        With ``fetch=False`` (the preview) only the cache is read: no I/O.
        """
        key = self.table_key(collection)
        table: dict[str, tuple[int, str]] | None = self.cache.get(key)
        if table is None and fetch:
            # Without include_converted, /LeadStatuses leaves the converted status out (v3.1 spec).
            params = {"include_converted": "true"} if collection == "LeadStatuses" else None
            response = self.request("lookup", "GET", collection, params=params)
            rows = self.records(response, collection, id_key)
            names = {int(row[id_key]): str(row.get(name_key) or "") for row in rows}
            table = {normalise_name(name): (number, name) for number, name in names.items()}
            self.cache.set(key, table, timeout=self.table_seconds)
        return table

    def _custom_field_table(self, *, fetch: bool) -> dict[str, tuple[str, tuple[str, ...]]] | None:
        """``FIELD_NAME -> (FIELD_TYPE, dropdown options)`` from ``/CustomFields/Leads``, cached as the
        status table is; with ``fetch=False`` (the preview) only the cache is read."""
        key = self.table_key("CustomFields")
        table: dict[str, tuple[str, tuple[str, ...]]] | None = self.cache.get(key)
        if table is None and fetch:
            response = self.request("lookup", "GET", "CustomFields/Leads")
            rows = self.json_of(response, "the custom field definitions")
            table = {
                str(row["FIELD_NAME"]): (
                    str(row.get("FIELD_TYPE") or ""),
                    tuple(
                        str(option.get("OPTION_VALUE"))
                        for option in row.get("CUSTOM_FIELD_OPTIONS") or ()
                        if isinstance(option, Mapping)
                    ),
                )
                for row in (rows if isinstance(rows, list) else ())
                if isinstance(row, Mapping) and row.get("FIELD_NAME")
            }
            self.cache.set(key, table, timeout=self.table_seconds)
        return table

    def refusals(self, lead: Lead) -> list[str]:
        """Custom field values the account's definitions refuse (a dropdown value it does not offer, a
        field it does not have), from the cached definitions: the sync loads them for a lead with
        custom fields. No I/O; nothing said before they are cached."""
        table = self._custom_field_table(fetch=False)
        if table is None:
            return []
        names: Mapping[str, str] = self.options.get("CUSTOM_FIELDS") or {}
        problems = []
        for key, value in sorted((lead.custom_fields or {}).items()):
            if value in ("", None) or (names and key not in names):
                continue  # not sent
            field_name = names.get(key, key)
            if field_name not in table:
                problems.append(
                    f"Custom field {field_name} does not exist in this Insightly account."
                )
                continue
            field_type, options = table[field_name]
            if field_type == "DROPDOWN" and str(value) not in options:
                problems.append(
                    f"Custom field {field_name} (DROPDOWN) cannot take {value!r}: "
                    f"its options are {', '.join(options)}."
                )
        return problems

    def table_key(self, collection: str) -> str:
        """The shared-cache key of ``collection``'s table: per base URL, so two accounts never mix."""
        return f"crmify:insightly:{collection}:{self.base_url}"

    def _resolve(
        self, collection: str, id_key: str, name_key: str, name: str, *, fetch: bool
    ) -> int | str:
        table = self._table(collection, id_key, name_key, fetch=fetch)
        if table is None:
            return f"<{id_key} of {name!r}, looked up when sent>"
        try:
            return table[normalise_name(name)][0]
        except KeyError:
            known = ", ".join(sorted(name for _, name in table.values()))
            what, plural = (
                ("status", "statuses") if collection == "LeadStatuses" else ("source", "sources")
            )
            raise PermanentBackendError(
                f"Lead {what} {name!r} does not exist in this Insightly account. Its {plural} are: {known}."
            ) from None

    def records(self, response: Any, what: str, id_key: str = "LEAD_ID") -> list[Mapping[str, Any]]:
        """The JSON list of records in a listing answer, each with an id under ``id_key``; a readable
        transient error for anything else (a proxy's page, an object, rows without ids)."""
        rows = self.json_of(response, what)
        if not isinstance(rows, list) or not all(
            isinstance(row, Mapping) and crm_id(row.get(id_key)) for row in rows
        ):
            raise TransientBackendError(
                f"The CRM's answer to {what} was not a list of records with {id_key}: "
                f"{' '.join(response.text[:120].split())}",
                status_code=response.status_code,
            )
        return rows

    # -- payloads -----------------------------------------------------------------------------------

    def fields_for(self, values: Mapping[str, Any], *, fetch: bool) -> dict[str, Any]:
        """Insightly fields for lead values (the output of ``Lead.crm_values()``), empty ones left out."""
        fields: dict[str, Any] = {
            FIELD_NAMES[name]: value
            for name, value in values.items()
            if name in FIELD_NAMES and value not in ("", None)
        }
        if values.get("status"):
            fields["LEAD_STATUS_ID"] = self._resolve(
                "LeadStatuses", "LEAD_STATUS_ID", "LEAD_STATUS", str(values["status"]), fetch=fetch
            )
        if values.get("lead_source"):
            fields["LEAD_SOURCE_ID"] = self._resolve(
                "LeadSources",
                "LEAD_SOURCE_ID",
                "LEAD_SOURCE",
                str(values["lead_source"]),
                fetch=fetch,
            )
        names: Mapping[str, str] = self.options.get("CUSTOM_FIELDS") or {}
        custom = [
            {"FIELD_NAME": names.get(key, key), "FIELD_VALUE": value}
            for key, value in sorted((values.get("custom_fields") or {}).items())
            if value not in ("", None) and (not names or key in names)
        ]
        if custom:
            fields["CUSTOMFIELDS"] = custom
        return fields

    def missing_last_name(self, lead: Lead) -> str:
        """The ``LAST_NAME`` sent for ``lead``, which has none (``MISSING_LAST_NAME``)."""
        return self._missing_last_name(lead.email, lead.first_name)

    def _missing_last_name(self, email: str | None, first_name: str | None) -> str:
        fallback = str(self.options.get("MISSING_LAST_NAME", "derive"))
        return derived_last_name(email, first_name) if fallback == "derive" else fallback

    def current_fields(self, lead: Lead, *, fetch: bool) -> dict[str, Any]:
        """Every field ``lead`` has, ``LAST_NAME`` filled in: the body of a create."""
        current = self.fields_for(lead.crm_values(), fetch=fetch)
        current.setdefault("LAST_NAME", self.missing_last_name(lead))
        return current

    def payload_for(self, lead: Lead, *, fetch: bool) -> dict[str, Any]:
        """The body of the next call for ``lead``: everything on create, only changes on update."""
        current = self.current_fields(lead, fetch=fetch)
        if not lead.external_id:
            return current
        payload: dict[str, Any] = {"LEAD_ID": int(lead.external_id)}
        if not lead.synced_values:
            return payload | current  # a forced re-sync: send all we have
        previous = self.fields_for(lead.synced_values, fetch=fetch)
        sent = lead.synced_values
        previous.setdefault(
            "LAST_NAME", self._missing_last_name(sent.get("email", ""), sent.get("first_name", ""))
        )
        custom = custom_fields_update(
            previous.pop("CUSTOMFIELDS", []), current.pop("CUSTOMFIELDS", [])
        )
        for name, value in current.items():
            if previous.get(name) != value:
                payload[name] = value
        for name in previous.keys() - current.keys():
            payload[name] = None  # the app cleared it: v3.1 clears a field sent as null
        if custom is not None:
            payload["CUSTOMFIELDS"] = custom
        return payload

    def build_payload(self, lead: Lead) -> dict[str, Any]:
        """The exact body the next sync would send; no I/O (status ids come from the cache if known)."""
        return self.payload_for(lead, fetch=False)

    # -- the contract -------------------------------------------------------------------------------

    def sync_lead(self, lead: Lead) -> str:
        too_long = length_problems(self.current_fields(lead, fetch=False), MAX_LENGTHS)
        if too_long:
            # Insightly would answer 400; saying so here costs no call and names the field.
            raise PermanentBackendError(
                f"Not sent: {' '.join(too_long)} Shorten it on the lead or in the mapper."
            )
        if lead.custom_fields:
            # Once per cache period: what the mapper preview checks dropdown values against.
            self._custom_field_table(fetch=True)
        if (
            not lead.external_id
            and lead.email
            and self.options.get("LOOKUP_BY_EMAIL", True)
            and not listing_says_absent(lead)
        ):
            # Adopting a lead with the same e-mail keeps a retry after a timed-out create from making a twin.
            existing = self.find_by_email(lead.email)
            if existing is not None:
                lead.external_id = existing
                lead.synced_values = {}
        payload = self.payload_for(lead, fetch=True)
        if lead.external_id:
            response = self.request("update", "PUT", "Leads", body=payload)
        else:
            response = self.request("create", "POST", "Leads", body=payload)
        body = self.json_of(response, "the lead's sync")
        # Kept as the lead's CRM id and sent back as an int on every update: only a real id will do.
        lead_id = crm_id(body.get("LEAD_ID")) if isinstance(body, Mapping) else None
        if lead_id is None:
            found = repr(body.get("LEAD_ID")) if isinstance(body, Mapping) else "no object"
            raise TransientBackendError(
                f"The CRM's answer has no LEAD_ID (found {found[:60]}).",
                status_code=response.status_code,
            )
        return str(lead_id)

    def delete_lead(self, lead_id: str) -> bool:
        self.request_unless_gone("delete", "DELETE", f"Leads/{int(lead_id)}")
        return True  # deleted, or already gone

    def find_by_email(self, email: str) -> str | None:
        """The CRM id of a lead whose ``EMAIL`` is ``email`` (ignoring case and surrounding spaces), if any.

        A search result with another e-mail (a looser match than documented) is never adopted.
        """
        rows = self.lead_listing(
            "Leads/Search",
            {
                "field_name": "EMAIL",
                "field_value": email.strip(),
                "top": LOOKUP_PAGE,
                "brief": "true",
            },
            operation="lookup",
            what="the e-mail lookup",
        )
        wanted = normalise_email(email)
        for row in rows:
            if normalise_email(str(row.get("EMAIL") or "")) == wanted:
                return str(crm_id(row["LEAD_ID"]))
        return None

    def find_lead_id(self, lead: Lead) -> str | None:
        return self.find_by_email(lead.email) if lead.email else None

    def iter_leads(self, page_size: int = 500) -> Iterator[list[CrmLead]]:
        """``GET /Leads?skip=&top=&brief=true`` page by page (500 is Insightly's largest page)."""
        skip = 0
        while True:
            rows = self.lead_listing(
                "Leads", {"skip": skip, "top": page_size, "brief": "true"}, operation="list"
            )
            yield [
                CrmLead(str(crm_id(row["LEAD_ID"])), str(row.get("EMAIL") or "")) for row in rows
            ]
            if len(rows) < page_size:
                return
            skip += page_size

    # -- reading changes back (supports_pull) --------------------------------------------------------

    def iter_changes(self, since: datetime.datetime | None) -> Iterator[list[CrmChange]]:
        """``GET /Leads/Search?updated_after_utc=&top=500&skip=`` page by page until a short one
        (``GET /Leads`` when ``since`` is None), converted leads asked for. Pages come in Insightly's
        order, which is documented nowhere: the poller keeps the newest ``modified_at`` it saw."""
        path, params = "Leads", {}
        if since is not None:
            path, params = "Leads/Search", {"updated_after_utc": query_date(since)}
        skip = 0
        while True:
            rows = self.lead_listing(path, {**params, "top": MAX_PAGE, "skip": skip})
            yield [self.change_of(row) for row in rows]
            if len(rows) < MAX_PAGE:
                return
            skip += MAX_PAGE

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        """Each lead read again (``GET /Leads/{id}``, one call each: Insightly has no batch read); a
        404 is a lead deleted in Insightly."""
        changes = []
        for lead_id in external_ids:
            record = self.fetch_lead(lead_id)
            changes.append(
                CrmChange(str(lead_id), deleted=True) if record is None else self.change_of(record)
            )
        return changes

    def change_of(self, record: Mapping[str, Any]) -> CrmChange:
        """A lead record as the pull hands it on: its values by lead field name (:meth:`read_record`)
        and ``DATE_UPDATED_UTC`` as ``modified_at``."""
        return CrmChange(
            str(crm_id(record.get("LEAD_ID"))),
            modified_at=updated_at(record.get("DATE_UPDATED_UTC")),
            values=self.read_record(record),
        )

    def lead_listing(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        operation: str = "pull",
        what: str = "the lead listing",
    ) -> list[Mapping[str, Any]]:
        """One page of ``path`` (``Leads`` or ``Leads/Search``) with converted leads asked for
        (``include_converted=true``) unless ``INCLUDE_CONVERTED`` is off or the account refused the
        parameter: a 400 naming it is asked again once without it, and remembered for the process.

        Every listing asks so (the pull, the backfill's listing, the lookup by e-mail before a create):
        a converted lead hidden from the lookup would be created again."""
        ask = (
            bool(self.options.get("INCLUDE_CONVERTED", True))
            and self.base_url not in REFUSES_INCLUDE_CONVERTED
        )
        try:
            response = self.request(
                operation,
                "GET",
                path,
                params={**params, **({"include_converted": "true"} if ask else {})},
            )
        except PermanentBackendError as exc:
            named = "include_converted" in f"{exc.message} {exc.response_text}".lower()
            if not (ask and exc.status_code == 400 and named):
                raise
            REFUSES_INCLUDE_CONVERTED.add(self.base_url)
            response = self.request(operation, "GET", path, params=params)
        return self.records(response, what)

    def fetch_lead(self, lead_id: str) -> dict[str, Any] | None:
        response = self.request_unless_gone("fetch", "GET", f"Leads/{int(lead_id)}")
        if response is None:
            return None
        body = self.json_of(response, "the lead fetch")
        if not isinstance(body, dict):
            # None would say "the CRM has no such lead": not what an unreadable answer means.
            raise TransientBackendError(
                "The CRM's answer to the lead fetch was not a lead record.",
                status_code=response.status_code,
            )
        return body

    def read_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A v3.1 Lead by lead field names: status and source ids resolved to their names through the
        cached tables (read afresh when not cached), custom fields by their key in ``CUSTOM_FIELDS``."""
        by_crm_name = {crm_name: name for name, crm_name in FIELD_NAMES.items()}
        values: dict[str, Any] = {
            by_crm_name[key]: value for key, value in record.items() if key in by_crm_name
        }
        values["status"] = self._name_of(
            "LeadStatuses", "LEAD_STATUS_ID", "LEAD_STATUS", record.get("LEAD_STATUS_ID")
        )
        values["lead_source"] = self._name_of(
            "LeadSources", "LEAD_SOURCE_ID", "LEAD_SOURCE", record.get("LEAD_SOURCE_ID")
        )
        names: Mapping[str, str] = self.options.get("CUSTOM_FIELDS") or {}
        key_of = {field_name: key for key, field_name in names.items()}
        values["custom_fields"] = {
            key_of.get(str(item["FIELD_NAME"]), str(item["FIELD_NAME"])): item.get("FIELD_VALUE")
            for item in record.get("CUSTOMFIELDS") or ()
            if isinstance(item, Mapping)
            and item.get("FIELD_NAME")
            and item.get("FIELD_VALUE") not in ("", None)
        }
        return values

    def _name_of(self, collection: str, id_key: str, name_key: str, value: Any) -> str:
        """The name of status or source id ``value`` ("" for none); an id the account does not list
        (deleted since) is said to be one rather than shown as a bare number."""
        number = crm_id(value)
        if number is None:
            return ""
        table = self._table(collection, id_key, name_key, fetch=True) or {}
        for known, name in table.values():
            if known == number:
                return name
        return f"#{number} (an id {collection} does not list)"

    def error_for(self, response: Any) -> PermanentBackendError | TransientBackendError:
        error = super().error_for(response)
        if response.status_code == 404 and response.request.method == "PUT":
            error.message = f"The lead no longer exists in Insightly ({error.message}). Re-sync it to create it again."
        return error

    # -- checks and the connection check ------------------------------------------------------------

    def check(self) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        if not self.auth.get("API_KEY"):
            messages.append(
                checks.Warning(
                    "Insightly backend has no API key: every sync will fail with HTTP 401.",
                    hint="Set the environment variable CRMIFY_BACKEND_AUTH_API_KEY.",
                    id="crmify.W050",
                )
            )
        return messages + super().check()

    def check_connection(self, status_names: Sequence[str]) -> list[ConnectionCheck]:
        """One ``GET /Leads`` for the key and the URL, the status table read afresh for each name, and
        the quota left (``manage.py crmify_check``)."""
        try:
            self.request("check", "GET", "Leads", params={"top": 1})
        except PermanentBackendError as exc:
            return [ConnectionCheck("API key and base URL", False, str(exc))]
        except TransientBackendError as exc:
            return [ConnectionCheck("base URL answers", False, f"{self.base_url}: {exc}")]
        results = [ConnectionCheck("API key and base URL", True, self.base_url)]
        self.cache.delete(self.table_key("LeadStatuses"))
        for name in status_names:
            try:
                status_id = self._resolve(
                    "LeadStatuses", "LEAD_STATUS_ID", "LEAD_STATUS", name, fetch=True
                )
                results.append(
                    ConnectionCheck(f"status {name!r}", True, f"LEAD_STATUS_ID {status_id}")
                )
            except PermanentBackendError as exc:
                results.append(ConnectionCheck(f"status {name!r}", False, str(exc)))
        state = self.quota.state()
        remaining = "unknown" if state.remaining is None else f"{state.remaining} of {state.limit}"
        results.append(ConnectionCheck("daily quota remaining", not state.exhausted, remaining))
        return results

    def verify(self, status_names: list[str]) -> list[tuple[str, bool, str]]:
        """:meth:`check_connection` as ``(what, ok, detail)`` rows, under the hook's earlier name."""
        return [(c.what, c.ok, c.detail) for c in self.check_connection(status_names)]
