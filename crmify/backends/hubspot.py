"""HubSpot CRM contacts (see ``shared/hubspot-api.md`` for what is known of the API).

A lead is a HubSpot contact. Options (``CRMIFY['BACKEND_OPTIONS']``):

========================  ===========================================================================
``API_URL``               base URL (``https://api.hubapi.com``; the sandbox's ``url`` in tests)
``API_PREFIX``            path prefix of the API version (``"/crm/v3"``)
``OBJECTS_PATH``          contacts path (``"{prefix}/objects/contacts"``); e.g.
                          ``"/crm/objects/2026-03/contacts"`` for HubSpot's dated paths
``PROPERTIES_PATH``       contact properties path (``"{prefix}/properties/contacts"``)
``TIMEOUT``               seconds per call (15)
``TEN_SECOND_LIMIT``      calls the plan allows per 10 seconds (100: a Free/Starter private app; 190 on
                          Professional and Enterprise); the shared limiter keeps 90 % of it
``REQUESTS_PER_SECOND``   the shared pace itself, instead of one derived from ``TEN_SECOND_LIMIT``
``DAILY_QUOTA``           the plan's daily limit before the headers tell it (250,000 on Free/Starter)
``DAILY_RESET_TIME_ZONE`` the account's time zone, whose midnight resets the daily limit (the site's
                          ``TIME_ZONE``)
``DAILY_RECHECK_SECONDS`` after a reset that did not come (a wrong time zone), look again this often (3600)
``RATE_LIMIT_CACHE``      the Django cache alias of the shared pace, quota and property table (``"default"``)
``PROPERTIES``            lead field -> contact property, merged over :data:`FIELD_PROPERTIES`; None drops one
``STATUSES``              status name -> ``{property: value}``, merged over the defaults of
                          :meth:`HubSpotBackend.status_map`
``STATUS_PROPERTY``       where a status not in ``STATUSES`` goes, by an option's value or label
                          (``"hs_lead_status"``)
``PROPERTY_CACHE_SECONDS`` how long the account's property table is cached (600)
``RECORD_URL``            staff link (``"https://app.hubspot.com/contacts/{portal}/record/0-1/{id}"``)
``PORTAL_ID``             the account's id, for ``RECORD_URL``; without it no link is shown
``SEARCH_REQUESTS_PER_SECOND`` the pace of search calls (the pull's), shared by every worker: 90 % of
                          search's own limit of 4 a second per token (3.6)
========================  ===========================================================================

Auth: ``CRMIFY_BACKEND_AUTH_API_KEY`` (or ``BACKEND_AUTH['API_KEY']``) is the private-app access token,
sent as ``Authorization: Bearer``.

What is sent: ``POST`` to create, ``PATCH`` with only the properties that changed since the last sync
(``""`` clears one), ``DELETE`` to archive. Every property is checked against the account's property
table (read once, cached like Insightly's statuses) before a call: an unknown property, a read-only one,
or a value that is no option of an enumeration is a permanent error naming it, never a 400 loop. A value
equal to an option's *label* is sent as that option's value. A 409 "Contact already exists. Existing
ID: N" adopts N and updates it. lifecyclestage cannot move backwards directly: it is cleared first.

What is read back (``crmify.backends.hubspot_pull``): the contacts changed since a moment by search,
oldest first, 100 a call at search's own pace; contacts by id in ``batch/read`` calls.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import requests
from django.conf import settings
from django.core import checks
from django.utils import timezone

from crmify.conf import crmify_settings
from crmify.exceptions import PermanentBackendError, TransientBackendError
from crmify.ratelimit import SharedRateLimiter
from crmify.transitions import funnel_statuses

from .base import BatchItem, ConnectionCheck, CrmChange, CrmLead, normalise_name
from .http import (
    SUMMARY_LENGTH,
    HttpBackend,
    error_message,
    int_header,
    quota_exhausted,
    retry_after_header,
)
from .hubspot_batch import batch_checks, max_batch_size, sync_contacts
from .hubspot_errors import (
    POLICY_WAIT_SECONDS,
    body_of,
    describe_error,
    existing_id,
    policy,
    property_problems,
)
from .hubspot_pull import PULL_PAGE, read_contacts, search_changes

if TYPE_CHECKING:
    from crmify.models import Lead

#: Lead fields and the standard contact properties they are sent as.
FIELD_PROPERTIES: dict[str, str] = {
    "email": "email",
    "first_name": "firstname",
    "last_name": "lastname",
    "phone": "phone",
    "mobile_phone": "mobilephone",
    "title": "jobtitle",
    "company": "company",
    "website": "website",
    "street_address": "address",
    "city": "city",
    "state": "state",
    "postcode": "zip",
    "country": "country",
}
#: Properties whose options are stages in order: a move to an earlier one clears the property first.
STAGE_PROPERTIES = ("lifecyclestage",)
#: Properties HubSpot keeps on every contact itself: never a lead's custom field in Compare.
HUBSPOT_OWN_PROPERTIES = ("id", "createdate", "lastmodifieddate")
#: The largest page of ``GET /contacts``.
MAX_PAGE = 100
#: The share of the plan's 10-second limit the shared limiter uses (other apps share the token).
PACE_SHARE = 0.9
#: Search's own limit, calls a second per token (``shared/hubspot-api.md``).
SEARCH_LIMIT = 4

_Part = TypeVar("_Part")

#: A property table: name -> (type, read only, ((value, label), ...)).
PropertyTable = dict[str, tuple[str, bool, tuple[tuple[str, str], ...]]]


def seconds_to_midnight(zone: str, now: datetime.datetime) -> float:
    """Seconds from ``now`` to the next midnight in ``zone`` (HubSpot's daily limit resets then)."""
    local = now.astimezone(zoneinfo.ZoneInfo(zone))
    midnight = datetime.datetime.combine(
        local.date() + datetime.timedelta(days=1), datetime.time(), tzinfo=local.tzinfo
    )
    return max((midnight - local).total_seconds(), 1.0)


class HubSpotBackend(HttpBackend):
    """Creates, updates (PATCH of the changes) and archives HubSpot contacts; options above."""

    name = "hubspot"
    default_timeout = 15.0
    supports_payload_preview = True
    supports_fetch = True
    supports_partial_update = True
    supports_listing = True
    supports_lookup = True
    supports_connection_check = True
    supports_batch = True
    supports_pull = True
    pull_page_size = PULL_PAGE
    #: Properties whose updates go alone, never in a batch (``hubspot_batch``): see STAGE_PROPERTIES.
    stage_properties = STAGE_PROPERTIES

    def __init__(
        self, options: Mapping[str, Any] | None = None, auth: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(options, auth)
        self.session.headers["Authorization"] = f"Bearer {self.auth.get('API_KEY', '')}"
        prefix = str(self.options.get("API_PREFIX", "/crm/v3")).rstrip("/")
        self.objects_path = str(self.options.get("OBJECTS_PATH", "{prefix}/objects/contacts"))
        self.objects_path = self.objects_path.format(prefix=prefix)
        self.properties_path = str(
            self.options.get("PROPERTIES_PATH", "{prefix}/properties/contacts")
        ).format(prefix=prefix)
        self.table_seconds = float(self.options.get("PROPERTY_CACHE_SECONDS", 600))
        self.max_batch_size = max_batch_size(self.options)
        #: Paces search calls (the pull's) below search's own limit, shared like the backend's pace.
        self.search_limiter = SharedRateLimiter(
            f"{self.name}-search", self.search_requests_per_second(), self.cache
        )
        self.reported_interval_max: int | None = None
        self.field_properties = {
            field: prop
            for field, prop in {
                **FIELD_PROPERTIES,
                **(self.options.get("PROPERTIES") or {}),
            }.items()
            if prop
        }

    @property
    def base_url(self) -> str:
        return str(self.options.get("API_URL") or "https://api.hubapi.com")

    # -- pace and quota -----------------------------------------------------------------------------

    def ten_second_limit(self) -> int:
        """``TEN_SECOND_LIMIT``: the calls the plan allows in any 10 seconds (100 by default)."""
        value = self.options.get("TEN_SECOND_LIMIT")
        # A wrong value is the system check crmify.E071; until it is fixed, the Free/Starter figure.
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return 100

    def requests_per_second(self) -> float:
        """``REQUESTS_PER_SECOND`` if set, else 90 % of ``TEN_SECOND_LIMIT`` / 10 (9 a second)."""
        explicit = self.options.get("REQUESTS_PER_SECOND")
        if explicit:
            return float(explicit)
        return self.ten_second_limit() / 10 * PACE_SHARE

    def search_requests_per_second(self) -> float:
        """``SEARCH_REQUESTS_PER_SECOND`` if set, else 90 % of search's limit of 4 (3.6 a second)."""
        return float(self.options.get("SEARCH_REQUESTS_PER_SECOND") or SEARCH_LIMIT * PACE_SHARE)

    def quota_headers(self, response: requests.Response) -> tuple[int | None, int | None]:
        # The 10-second limit HubSpot reports, for crmify_check to compare with TEN_SECOND_LIMIT.
        self.reported_interval_max = int_header(response, "X-HubSpot-RateLimit-Max")
        return int_header(response, "X-HubSpot-RateLimit-Daily"), int_header(
            response, "X-HubSpot-RateLimit-Daily-Remaining"
        )

    def daily_wait(self) -> float:
        """Seconds until the daily limit is expected back: the next midnight in the account's time
        zone, or ``DAILY_RECHECK_SECONDS`` when a reset we waited for did not come (the zone is wrong)."""
        now = timezone.now()
        previous = self.quota.state().exhausted_until
        if previous is not None and now - datetime.timedelta(days=1) < previous <= now:
            return float(self.options.get("DAILY_RECHECK_SECONDS", 3600))
        zone = str(self.options.get("DAILY_RESET_TIME_ZONE") or settings.TIME_ZONE or "UTC")
        return seconds_to_midnight(zone, now)

    # -- errors -------------------------------------------------------------------------------------

    def error_for(
        self, response: requests.Response
    ) -> PermanentBackendError | TransientBackendError:
        body = body_of(response.text or "")
        status = response.status_code
        text = self.scrub((response.text or "")[:SUMMARY_LENGTH])
        if status == 429:
            name = policy(body)
            if name == "DAILY":
                return quota_exhausted(self.quota.exhaust(self.daily_wait()), status)
            interval = int_header(response, "X-HubSpot-RateLimit-Interval-Milliseconds")
            wait = retry_after_header(response) or POLICY_WAIT_SECONDS.get(
                name, (interval or 10_000) / 1000
            )
            return TransientBackendError(
                f"Rate limited by HubSpot ({name or 'no policy named'}): "
                f"{self.scrub(error_message(response))}",
                status_code=status,
                response_text=text,
                retry_after=wait,
            )
        error = super().error_for(response)
        if body and status != 401:
            error.message = self.scrub(describe_error(body))
        if status == 404 and response.request.method == "PATCH":
            error.message = (
                f"The contact no longer exists in HubSpot ({error.message}). "
                "Re-sync it to create it again."
            )
        if status == 400 and property_problems(body):
            # The account changed under our cached table: read it afresh before the next attempt.
            self.cache.delete(self.table_key())
        return error

    # -- the account's properties -------------------------------------------------------------------

    def table_key(self) -> str:
        """The shared-cache key of the property table: per base URL and path, so accounts never mix."""
        return f"crmify:hubspot:properties:{self.base_url}{self.properties_path}"

    def property_table(self, *, fetch: bool) -> PropertyTable | None:
        """The account's contact properties, cached; with ``fetch=False`` (the preview) no I/O."""
        key = self.table_key()
        table: PropertyTable | None = self.cache.get(key)
        if table is None and fetch:
            response = self.request("properties", "GET", self.properties_path)
            rows = self.part_of(response, "the property list", "results", list)
            table = {
                str(row["name"]): (
                    str(row.get("type") or "string"),
                    bool((row.get("modificationMetadata") or {}).get("readOnlyValue")),
                    tuple(
                        (str(option.get("value")), str(option.get("label") or ""))
                        for option in row.get("options") or []
                        if isinstance(option, Mapping)
                    ),
                )
                for row in rows
                if isinstance(row, Mapping) and row.get("name")
            }
            self.cache.set(key, table, timeout=self.table_seconds)
        return table

    def status_map(self) -> dict[str, dict[str, str]]:
        """Status name (normalised) -> the properties it sets. Defaults for the three configured
        statuses: new -> ``hs_lead_status`` NEW, converted -> ``lifecyclestage`` customer, dead ->
        ``hs_lead_status`` UNQUALIFIED; ``STATUSES`` adds or replaces entries."""
        defaults: dict[str, dict[str, str]] = {
            crmify_settings.LEAD_NEW_STATUS: {"hs_lead_status": "NEW"},
            crmify_settings.LEAD_CONVERTED_STATUS: {"lifecyclestage": "customer"},
            crmify_settings.LEAD_DEAD_STATUS: {"hs_lead_status": "UNQUALIFIED"},
        }
        configured: Mapping[str, Mapping[str, str]] = self.options.get("STATUSES") or {}
        return {
            normalise_name(name): dict(values)
            for name, values in {**defaults, **configured}.items()
        }

    @property
    def status_property(self) -> str:
        """``STATUS_PROPERTY``: where a status not in ``STATUSES`` goes (``hs_lead_status``)."""
        return str(self.options.get("STATUS_PROPERTY", "hs_lead_status"))

    def status_properties(self, status: str, table: PropertyTable | None) -> dict[str, str]:
        """The properties ``status`` sets; a permanent error for a status HubSpot cannot hold."""
        mapped = self.status_map().get(normalise_name(status))
        if mapped is not None:
            return dict(mapped)
        target = self.status_property
        options = table[target][2] if table is not None and target in table else ()
        for value, label in options:
            if normalise_name(status) in (normalise_name(value), normalise_name(label)):
                return {target: value}
        if table is None:
            return {target: status}  # the preview without the table: as sent if it is an option
        known = ", ".join(label or value for value, label in options) or "none"
        raise PermanentBackendError(
            f"Lead status {status!r} has no HubSpot value: map it in BACKEND_OPTIONS['STATUSES'] "
            f"(e.g. {{{status!r}: {{{target!r}: 'OPEN'}}}}). {target}'s options are: {known}."
        )

    def checked(self, properties: Mapping[str, str], table: PropertyTable) -> dict[str, str]:
        """``properties`` as HubSpot takes them: each one exists and is writable, an enumeration's
        value is an option's value (one given by its label is translated). A permanent error names
        every property that is wrong, before any call."""
        result: dict[str, str] = {}
        problems: list[str] = []
        for name, value in properties.items():
            if name not in table:
                problems.append(f"HubSpot has no contact property {name!r}")
                continue
            kind, read_only, options = table[name]
            if read_only:
                problems.append(f"contact property {name!r} is read-only")
                continue
            if value and kind == "enumeration":
                match = [v for v, label in options if value in (v, label)] or [
                    v
                    for v, label in options
                    if normalise_name(value) in (normalise_name(v), normalise_name(label))
                ]
                if not match:
                    allowed = ", ".join(v for v, _label in options)
                    problems.append(f"{value!r} is no option of {name!r} (options: {allowed})")
                    continue
                value = match[0]
            result[name] = value
        if problems:
            raise PermanentBackendError(
                "Not sent: " + "; ".join(problems) + ". Create the property in HubSpot or fix "
                "the mapper / BACKEND_OPTIONS['STATUSES']."
            )
        return result

    # -- payloads -----------------------------------------------------------------------------------

    def properties_for(
        self, values: Mapping[str, Any], table: PropertyTable | None
    ) -> dict[str, str]:
        """Contact properties for lead values (``Lead.crm_values()``), empty ones left out."""
        properties = {
            prop: _text(values[field])
            for field, prop in self.field_properties.items()
            if values.get(field) not in ("", None)
        }
        if values.get("status"):
            properties.update(self.status_properties(str(values["status"]), table))
        for key, value in sorted((values.get("custom_fields") or {}).items()):
            if value not in ("", None):
                properties[str(key)] = _text(value)
        return properties

    def lead_properties(self, lead: Lead, *, fetch: bool = True) -> dict[str, str]:
        """Every property ``lead`` has, checked against the account (with ``fetch``): the body of a
        create, and the properties one input of a batch call carries."""
        table = self.property_table(fetch=fetch)
        current = self.properties_for(lead.crm_values(), table)
        return self.checked(current, table) if table is not None else current

    def changed_properties(self, lead: Lead, *, fetch: bool = True) -> dict[str, str]:
        """What a PATCH of ``lead`` sends: the properties that changed since the last sync, ``""``
        for each one the app cleared; everything when the last sync is unknown."""
        current = self.lead_properties(lead, fetch=fetch)
        previous = self.sent_properties(lead, self.property_table(fetch=False))
        if previous is None:
            return current
        changed = {name: value for name, value in current.items() if previous.get(name) != value}
        changed.update(dict.fromkeys(previous.keys() - current.keys(), ""))
        return changed

    def sent_properties(self, lead: Lead, table: PropertyTable | None) -> dict[str, str] | None:
        """The properties the last sync of ``lead`` sent, or None when that is unknown (never synced,
        a forced re-sync, an adopted contact, or a last status that no longer maps)."""
        if not lead.synced_values:
            return None
        try:
            return self.properties_for(lead.synced_values, table)
        except PermanentBackendError:
            return None

    def build_payload(self, lead: Lead) -> dict[str, Any]:
        """The exact body the next sync would send; no I/O (the property table only if cached)."""
        if lead.external_id:
            return {"properties": self.changed_properties(lead, fetch=False)}
        return {"properties": self.lead_properties(lead, fetch=False)}

    def payload_fields(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return payload.get("properties") or {}

    # -- the contract -------------------------------------------------------------------------------

    def sync_lead(self, lead: Lead) -> str:
        if lead.external_id:
            return self.update_contact(lead.external_id, lead, self.changed_properties(lead))
        properties = self.lead_properties(lead)
        try:
            response = self.request(
                "create", "POST", self.objects_path, body={"properties": properties}
            )
        except PermanentBackendError as exc:
            if exc.status_code != 409:
                raise
            # The e-mail is taken (a retry after a timed-out create, a contact made in HubSpot):
            # that contact is this lead's; bring it up to date.
            found = existing_id(body_of(exc.response_text)) or self.find_lead_id(lead)
            if found is None:
                raise
            lead.external_id = found
            lead.synced_values = {}
            return self.update_contact(found, lead, properties)
        return self.contact_id(response, "the contact's create")

    def update_contact(self, contact_id: str, lead: Lead, properties: dict[str, str]) -> str:
        """PATCH ``properties`` onto contact ``contact_id``; a stage moved backwards is cleared first,
        and cleared and set again if HubSpot's answer shows it kept the old one."""
        table = self.property_table(fetch=True) or {}
        previous = self.sent_properties(lead, table) or {}
        path = f"{self.objects_path}/{_contact_key(contact_id)}"
        for name in STAGE_PROPERTIES:
            if _moves_back(table, name, previous.get(name, ""), properties.get(name, "")):
                self.request("update", "PATCH", path, body={"properties": {name: ""}})
        try:
            response = self.request("update", "PATCH", path, body={"properties": properties})
        except PermanentBackendError as exc:
            stage = _refused_stage(exc, properties)
            if exc.status_code != 400 or stage is None:
                raise
            # A stage HubSpot would not move back (the CRM's stage was unknown here): clear, set again.
            self.request("update", "PATCH", path, body={"properties": {stage: ""}})
            response = self.request("update", "PATCH", path, body={"properties": properties})
        answer = self.json_of(response, "the contact's update")
        held = answer.get("properties") if isinstance(answer, Mapping) else None
        for name in STAGE_PROPERTIES:
            wanted = properties.get(name)
            if wanted and isinstance(held, Mapping) and name in held and held[name] != wanted:
                self.request("update", "PATCH", path, body={"properties": {name: ""}})
                self.request("update", "PATCH", path, body={"properties": {name: wanted}})
        return self.contact_id(response, "the contact's update")

    def part_of(self, response: requests.Response, what: str, key: str, kind: type[_Part]) -> _Part:
        """``key`` of a 2xx answer's JSON object, of type ``kind`` (a ``list`` of results, a
        ``dict`` of properties); a readable transient error for any other answer."""
        body = self.json_of(response, what)
        part = body.get(key) if isinstance(body, Mapping) else None
        if not isinstance(part, kind):
            raise TransientBackendError(
                f"HubSpot's answer to {what} has no {key}.", status_code=response.status_code
            )
        return part

    def contact_id(self, response: requests.Response, what: str) -> str:
        """The contact id in an answer; a readable transient error if it has none."""
        body = self.json_of(response, what)
        found = body.get("id") if isinstance(body, Mapping) else None
        if not (isinstance(found, str | int) and str(found).isdigit()):
            raise TransientBackendError(
                f"HubSpot's answer to {what} has no contact id (found {str(found)[:60]!r}).",
                status_code=response.status_code,
            )
        return str(found)

    def sync_leads(self, leads: Sequence[Lead]) -> list[BatchItem]:
        """Batch upsert by e-mail and batch update, up to ``MAX_BATCH_SIZE`` (100) inputs a call; a
        207 fails only the inputs HubSpot names (``crmify.backends.hubspot_batch``)."""
        return sync_contacts(self, leads)

    def delete_lead(self, lead_id: str) -> bool:
        self.request_unless_gone("delete", "DELETE", f"{self.objects_path}/{_contact_key(lead_id)}")
        return True  # archived, or already gone

    def find_lead_id(self, lead: Lead) -> str | None:
        """The contact with ``lead``'s e-mail (``GET …/{email}?idProperty=email``), if any."""
        if not lead.email:
            return None
        response = self.request_unless_gone(
            "lookup",
            "GET",
            f"{self.objects_path}/{quote(lead.email.strip(), safe='@')}",
            params={"idProperty": "email", "properties": "email"},
        )
        if response is None:
            return None
        return self.contact_id(response, "the e-mail lookup")

    def read_properties(self) -> list[str]:
        """The properties a contact is read with (:meth:`fetch_lead`, the pull): those crmify sends
        and HubSpot's own dates."""
        return sorted(
            {
                *self.field_properties.values(),
                *(name for values in self.status_map().values() for name in values),
                self.status_property,
                "createdate",
                "lastmodifieddate",
            }
        )

    def fetch_lead(self, lead_id: str) -> dict[str, Any] | None:
        """The contact's properties (:meth:`read_properties`), flat, or None if gone."""
        response = self.request_unless_gone(
            "fetch",
            "GET",
            f"{self.objects_path}/{_contact_key(lead_id)}",
            params={"properties": ",".join(self.read_properties())},
        )
        if response is None:
            return None
        properties = self.part_of(response, "the contact fetch", "properties", dict)
        return {"id": str(response.json().get("id")), **properties}

    def read_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A fetched contact by lead field names: each standard property under its field, the status
        as the name whose properties the contact holds (converted and dead win over the others: a
        customer's ``hs_lead_status`` may still say NEW), or
        the ``STATUS_PROPERTY`` option's label; other non-HubSpot properties as custom fields."""
        values: dict[str, Any] = {
            field: record[prop] for field, prop in self.field_properties.items() if prop in record
        }
        status_map = self.status_map()
        matching = [
            name
            for name, wanted in status_map.items()
            if wanted and all(record.get(prop) == value for prop, value in wanted.items())
        ]
        configured: Mapping[str, Any] = self.options.get("STATUSES") or {}
        spelled = {normalise_name(n): n for n in (*funnel_statuses(), *configured)}
        final = {
            normalise_name(crmify_settings.LEAD_CONVERTED_STATUS),
            normalise_name(crmify_settings.LEAD_DEAD_STATUS),
        }
        if matching:
            # A converted contact may still say NEW in hs_lead_status: the final stages win.
            best = max(matching, key=lambda name: name in final)
            values["status"] = spelled.get(best, best)
        else:
            target = self.status_property
            table = self.property_table(fetch=False)
            options = dict(table[target][2]) if table is not None and target in table else {}
            raw = record.get(target)
            values["status"] = (options.get(raw) or raw) if raw else ""
        known = {
            *self.field_properties.values(),
            *(prop for wanted in status_map.values() for prop in wanted),
            self.status_property,
            *HUBSPOT_OWN_PROPERTIES,
        }
        values["custom_fields"] = {
            key: value
            for key, value in record.items()
            if key not in known and not key.startswith("hs_") and value not in ("", None)
        }
        return values

    def iter_changes(self, since: datetime.datetime | None) -> Iterator[list[CrmChange]]:
        """Contacts by ``lastmodifieddate`` at or after ``since``, oldest first, 100 a search call
        (``crmify.backends.hubspot_pull``)."""
        return search_changes(self, since)

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        """Contacts read again by id in ``batch/read`` calls: missing ones deleted, merged ones
        naming the survivor (``crmify.backends.hubspot_pull``)."""
        return read_contacts(self, external_ids)

    def iter_leads(self, page_size: int = MAX_PAGE) -> Iterator[list[CrmLead]]:
        """``GET /contacts?limit=&after=&properties=email`` page by page (100 is HubSpot's largest)."""
        after: str | None = None
        limit = max(1, min(page_size, MAX_PAGE))
        while True:
            params: dict[str, Any] = {"limit": limit, "properties": "email"}
            if after:
                params["after"] = after
            response = self.request("list", "GET", self.objects_path, params=params)
            rows = self.part_of(response, "the contact listing", "results", list)
            yield [
                CrmLead(str(row["id"]), str((row.get("properties") or {}).get("email") or ""))
                for row in rows
                if isinstance(row, Mapping) and row.get("id")
            ]
            paging = response.json().get("paging") or {}
            after = ((paging.get("next") or {}) if isinstance(paging, Mapping) else {}).get("after")
            if not after:
                return

    def record_url(self, lead_id: str) -> str | None:
        portal = self.options.get("PORTAL_ID")
        template = self.options.get("RECORD_URL")
        if not portal and not template:
            return None
        template = str(template or "https://app.hubspot.com/contacts/{portal}/record/0-1/{id}")
        return template.format(portal=portal or "", id=lead_id)

    # -- checks and the connection check ------------------------------------------------------------

    def check(self) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = []
        if not self.auth.get("API_KEY"):
            messages.append(
                checks.Warning(
                    "HubSpot backend has no private-app token: every sync will fail with HTTP 401.",
                    hint="Set the environment variable CRMIFY_BACKEND_AUTH_API_KEY to the token.",
                    id="crmify.W040",
                )
            )
        zone = self.options.get("DAILY_RESET_TIME_ZONE")
        if zone and not _is_zone(str(zone)):
            messages.append(
                _option_error(
                    "DAILY_RESET_TIME_ZONE",
                    f"{zone!r} is not a time zone.",
                    "Use the HubSpot account's zone name, e.g. 'Europe/Berlin'.",
                    "crmify.E070",
                )
            )
        limit = self.options.get("TEN_SECOND_LIMIT")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            messages.append(
                _option_error(
                    "TEN_SECOND_LIMIT",
                    f"must be a positive whole number, not {limit!r}.",
                    "Your HubSpot plan's calls per 10 seconds: 100 (Free/Starter) or 190.",
                    "crmify.E071",
                )
            )
        messages += batch_checks(self.options)
        statuses = self.options.get("STATUSES")
        if statuses is not None and not _is_status_map(statuses):
            messages.append(
                _option_error(
                    "STATUSES",
                    "must map each status name to {property: value}.",
                    "e.g. {'Contacted': {'hs_lead_status': 'CONNECTED'}}",
                    "crmify.E072",
                )
            )
        return messages + super().check()

    def check_connection(self, status_names: Sequence[str]) -> list[ConnectionCheck]:
        """The property table read afresh (the token, the URL and the scope), one contact read (the
        contacts' scope), each status checked against it, the 10-second limit HubSpot reports, and the daily quota left."""
        self.cache.delete(self.table_key())
        try:
            table = self.property_table(fetch=True) or {}
        except PermanentBackendError as exc:
            return [ConnectionCheck("private-app token and base URL", False, str(exc))]
        except TransientBackendError as exc:
            return [ConnectionCheck("base URL answers", False, f"{self.base_url}: {exc}")]
        results = [
            ConnectionCheck(
                "private-app token and base URL", True, f"{self.base_url} ({len(table)} properties)"
            )
        ]
        try:  # the properties read above needs a scope of its own: check the contacts' too
            self.request("check", "GET", self.objects_path, params={"limit": 1})
            results.append(ConnectionCheck("contacts readable", True, self.objects_path))
        except (PermanentBackendError, TransientBackendError) as exc:
            results.append(ConnectionCheck("contacts readable", False, str(exc)))
        for name in status_names:
            try:
                sent = self.checked(self.status_properties(name, table), table)
                results.append(
                    ConnectionCheck(
                        f"status {name!r}", True, ", ".join(f"{k} = {v}" for k, v in sent.items())
                    )
                )
            except PermanentBackendError as exc:
                results.append(ConnectionCheck(f"status {name!r}", False, str(exc)))
        missing = sorted(set(self.field_properties.values()) - table.keys())
        results.append(
            ConnectionCheck(
                "contact properties",
                not missing,
                f"missing: {', '.join(missing)}" if missing else "every mapped property exists",
            )
        )
        reported, configured = self.reported_interval_max, self.ten_second_limit()
        results.append(
            ConnectionCheck(
                "10-second limit",
                reported is None or configured <= reported,
                f"TEN_SECOND_LIMIT {configured}; HubSpot reports "
                + ("nothing" if reported is None else str(reported))
                + ("" if reported is None or configured <= reported else ": lower the option"),
            )
        )
        state = self.quota.state()
        remaining = "unknown" if state.remaining is None else f"{state.remaining} of {state.limit}"
        results.append(ConnectionCheck("daily quota remaining", not state.exhausted, remaining))
        return results


def _option_error(option: str, problem: str, hint: str, check_id: str) -> checks.Error:
    """A system-check error about ``BACKEND_OPTIONS[option]``."""
    return checks.Error(f"BACKEND_OPTIONS[{option!r}] {problem}", hint=hint, id=check_id)


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _is_status_map(statuses: Any) -> bool:
    return isinstance(statuses, Mapping) and all(
        isinstance(values, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
        for values in statuses.values()
    )


def _text(value: Any) -> str:
    """A value as a HubSpot property takes it: text, booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _moves_back(table: PropertyTable, name: str, old: str, new: str) -> bool:
    order = [value for value, _label in table.get(name, ("", False, ()))[2]]
    return (
        bool(old and new) and old in order and new in order and order.index(new) < order.index(old)
    )


def _refused_stage(error: PermanentBackendError, properties: Mapping[str, str]) -> str | None:
    """The stage property a refused PATCH set and HubSpot's error names, if any."""
    return next(
        (
            name
            for name in STAGE_PROPERTIES
            if properties.get(name) and name in (error.message + error.response_text)
        ),
        None,
    )


def _contact_key(lead_id: str) -> str:
    """A stored contact id as a path segment: only digits reach the URL."""
    if not lead_id.strip().isdigit():
        raise PermanentBackendError(f"{lead_id!r} is not a HubSpot contact id.")
    return lead_id.strip()
