"""Reading HubSpot contacts back (``supports_pull``) for :class:`crmify.backends.hubspot.HubSpotBackend`.

Called by ``HubSpotBackend.iter_changes`` (the poller) and ``HubSpotBackend.read_changes`` (the webhook
task, the deletes scan). Facts in ``shared/hubspot-api.md``:

- :func:`search_changes` asks ``POST …/contacts/search`` for contacts with ``lastmodifieddate`` at or after
  a moment, oldest first, 100 a page. Each page is a new search from the newest ``lastmodifieddate`` the
  last one held, never ``after``: paging by offset through a set that salespeople change meanwhile skips
  a contact each time one moves to the end, and a search pages through 10,000 results at most (then
  400). The contacts of that last millisecond come again (the poller de-duplicates); when a whole page
  shares one millisecond, that millisecond is read by id (``hs_object_id`` above the last) before going on.
  Search has its own limit (4 calls a second per token): every search call waits for the backend's
  ``search_limiter`` first, shared by every worker like the backend's own pace.
- :func:`read_contacts` reads contacts by id in ``batch/read`` calls of up to ``max_batch_size``; the
  ids HubSpot names as not found (a 207's ``OBJECT_NOT_FOUND`` entry, ``context.ids``) are deleted, an id
  merged into another contact (listed in the survivor's ``hs_merged_object_ids``) names the survivor,
  and an id the answer says nothing of is read alone (``GET`` answers a merged id with the survivor).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crmify.exceptions import TransientBackendError

from .base import CrmChange
from .hubspot_errors import objects_in

if TYPE_CHECKING:
    from .hubspot import HubSpotBackend

#: Contacts per search call (HubSpot takes up to 200, unconfirmed; 100 is safe).
PULL_PAGE = 100
#: The property a contact's last change is searched and sorted by.
MODIFIED = "lastmodifieddate"
#: Where HubSpot lists the contacts merged into a survivor, separated by ``;``.
MERGED_IDS = "hs_merged_object_ids"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)


def instant(value: Any) -> datetime.datetime | None:
    """A HubSpot instant (``2026-12-02T13:45:00.123Z``, or milliseconds since the epoch) as an aware
    datetime; None for anything else."""
    text = str(value).strip() if isinstance(value, str | int) else ""
    if text.isdigit():
        return _EPOCH + int(text) * _MS
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment


def milliseconds(moment: datetime.datetime) -> int:
    """``moment`` in whole milliseconds since the epoch (rounded down), as search filters take it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _EPOCH) // _MS


def search_changes(
    backend: HubSpotBackend, since: datetime.datetime | None
) -> Iterator[list[CrmChange]]:
    """The contacts modified at or after ``since`` (all when None), one search call per page."""
    # A status is read by its option's label from the property table: loaded first (one call per
    # cache period), so a status never reads as the bare value on one poll and the label on the next.
    backend.property_table(fetch=True)
    bound = None if since is None else milliseconds(since)
    while True:
        filters = [] if bound is None else [_filter(MODIFIED, "GTE", bound)]
        rows = _search(backend, filters, MODIFIED)
        changes = [contact_change(backend, row) for row in rows]
        yield changes
        if len(rows) < PULL_PAGE:
            return
        newest = max((milliseconds(c.modified_at) for c in changes if c.modified_at), default=None)
        if newest is None:
            raise TransientBackendError(
                f"HubSpot's search answer has no {MODIFIED}: the pull cannot page on."
            )
        if newest == bound:  # a whole page of one millisecond: read it by id, then go past it
            yield from _same_millisecond(backend, newest)
            newest += 1
        bound = newest


def _same_millisecond(backend: HubSpotBackend, moment: int) -> Iterator[list[CrmChange]]:
    """Every contact whose ``lastmodifieddate`` is ``moment``, by ``hs_object_id``, a page a call."""
    last = 0
    while True:
        rows = _search(
            backend,
            [_filter(MODIFIED, "EQ", moment), _filter("hs_object_id", "GT", last)],
            "hs_object_id",
        )
        yield [contact_change(backend, row) for row in rows]
        if len(rows) < PULL_PAGE:
            return
        last = max(int(str(row["id"])) for row in rows)


def _filter(name: str, operator: str, value: int) -> dict[str, str]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


def _search(
    backend: HubSpotBackend, filters: list[dict[str, str]], sort: str
) -> list[Mapping[str, Any]]:
    """One search call, oldest (or lowest id) first, at search's own pace."""
    body = {
        "filterGroups": [{"filters": filters}] if filters else [],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": backend.read_properties(),
        "limit": PULL_PAGE,
    }
    backend.search_limiter.acquire()
    response = backend.request("pull", "POST", f"{backend.objects_path}/search", body=body)
    rows = backend.part_of(response, "the contact search", "results", list)
    return [row for row in rows if isinstance(row, Mapping) and str(row.get("id", "")).isdigit()]


def contact_change(backend: HubSpotBackend, row: Mapping[str, Any]) -> CrmChange:
    """A contact of a search or batch answer as a :class:`CrmChange`: its values by lead field name
    (``HubSpotBackend.read_record``), its ``lastmodifieddate`` (else ``updatedAt``) as ``modified_at``."""
    properties = row.get("properties")
    record = {"id": str(row["id"]), **(properties if isinstance(properties, Mapping) else {})}
    return CrmChange(
        str(row["id"]),
        modified_at=instant(record.get(MODIFIED)) or instant(row.get("updatedAt")),
        values=backend.read_record(record),
    )


def read_contacts(backend: HubSpotBackend, external_ids: Sequence[str]) -> list[CrmChange]:
    """The contacts ``external_ids`` as they are now, in ``batch/read`` calls; one change per id, in
    order (see the module docstring for deleted and merged ones)."""
    if not external_ids:
        return []
    backend.property_table(fetch=True)  # as search_changes does
    found: dict[str, CrmChange] = {}
    size = max(1, backend.max_batch_size)
    for start in range(0, len(external_ids), size):
        found |= _read_batch(backend, [str(key) for key in external_ids[start : start + size]])
    return [found.get(str(key)) or _read_alone(backend, str(key)) for key in external_ids]


def _read_batch(backend: HubSpotBackend, ids: list[str]) -> dict[str, CrmChange]:
    """One ``batch/read``: the changes of the ids its answer accounts for."""
    response = backend.request(
        "fetch",
        "POST",
        f"{backend.objects_path}/batch/read",
        body={
            "properties": [*backend.read_properties(), MERGED_IDS],
            "inputs": [{"id": key} for key in ids],
        },
    )
    answer = backend.json_of(response, "the contacts' batch read")
    answer = answer if isinstance(answer, Mapping) else {}
    wanted = set(ids)
    changes: dict[str, CrmChange] = {}
    for row in objects_in(answer.get("results")):
        if not str(row.get("id", "")).isdigit():
            continue
        change = contact_change(backend, row)
        if change.external_id in wanted:
            changes[change.external_id] = change
        merged = str((row.get("properties") or {}).get(MERGED_IDS) or "")
        for old in (key.strip() for key in merged.split(";")):
            if old in wanted and old != change.external_id:
                changes[old] = CrmChange(old, change.modified_at, merged_into=change.external_id)
    for error in objects_in(answer.get("errors")):
        context = error.get("context")
        named = context.get("ids") if isinstance(context, Mapping) else None
        if error.get("category") == "OBJECT_NOT_FOUND" and isinstance(named, list):
            for key in map(str, named):
                if key in wanted and key not in changes:
                    changes[key] = CrmChange(key, deleted=True)
    return changes


def _read_alone(backend: HubSpotBackend, key: str) -> CrmChange:
    """An id a batch answer said nothing of, read by ``GET``: gone, merged into the contact it
    answers with, or the contact itself."""
    record = backend.fetch_lead(key)
    if record is None:
        return CrmChange(key, deleted=True)
    survivor = str(record.get("id") or key)
    modified = instant(record.get(MODIFIED))
    if survivor != key:
        return CrmChange(key, modified, merged_into=survivor)
    return CrmChange(key, modified, values=backend.read_record(record))
