"""The contract between crmify's engine and a CRM backend.

The engine always holds a :class:`BaseBackend` (``crmify.worker.current_backend``). Required of every
backend (the original README's promise)::

    def sync_lead(self, lead) -> str      # create or update; return the CRM's id of the lead
    def delete_lead(self, lead_id) -> bool  # True if deleted (or already gone), False otherwise

A plain class with only these two (built with no arguments, or with ``BACKEND_AUTH`` as keyword arguments
if its constructor takes ``**kwargs``, as 1.3.0's :class:`CRMBackend` does) works as ``BACKEND``: the
engine wraps it in a :class:`PlainBackend`, which calls those two methods and nothing else of it.

Everything else is optional: a method of :class:`BaseBackend` with a safe default, announced by a
capability flag where the default cannot do the work (``supports_*``, as ``django.tasks`` does). Generic
code reads the flags and calls the hooks; it never probes a backend for attributes nor reads its options.

- ``supports_payload_preview``: :meth:`BaseBackend.build_payload`, the exact body without I/O.
- ``supports_fetch``: :meth:`BaseBackend.fetch_lead`, the CRM's current record, and
  :meth:`BaseBackend.read_record`, that record by lead field names (the default reads it as it is).
- ``supports_listing``: :meth:`BaseBackend.iter_leads`, every CRM lead in pages of up to
  ``listing_page_size`` (the backfill finds CRM matches by e-mail with it instead of one search per lead;
  the poller finds the records deleted in the CRM with it).
- ``supports_lookup``: :meth:`BaseBackend.find_lead_id`, a lead's record without its CRM id (a deleted
  lead whose create timed out).
- ``supports_connection_check``: :meth:`BaseBackend.check_connection` (``manage.py crmify_check``).
- ``supports_pull``: :meth:`BaseBackend.iter_changes`, the records changed in the CRM since a time, and
  :meth:`BaseBackend.read_changes`, records read again by id (after a webhook named them): how changes
  made in the CRM come back (``crmify.poller``, ``crmify.webhooks``, applied by ``crmify.inbound``).
- ``supports_batch``: :meth:`BaseBackend.sync_leads` / :meth:`BaseBackend.delete_leads` send many leads in
  one call (the defaults call :meth:`BaseBackend.sync_lead` / :meth:`BaseBackend.delete_lead` in turn).
  The worker sends a backfill chunk's leads, and any burst of waiting leads, through ``sync_leads``, up
  to ``max_batch_size`` a call (``crmify.worker.process_leads``); ``delete_leads`` is not called yet.

Hooks without a flag, with defaults that do no harm: ``max_lengths`` and :meth:`BaseBackend.max_length`
(what the CRM accepts), :meth:`BaseBackend.payload_fields`, :meth:`BaseBackend.encode_date`,
:meth:`BaseBackend.missing_last_name`, :meth:`BaseBackend.refusals`, :meth:`BaseBackend.record_url`,
:meth:`BaseBackend.health`, :meth:`BaseBackend.daily_quota`, :attr:`BaseBackend.crm_name`,
:meth:`BaseBackend.requests_per_second` and :meth:`BaseBackend.check`. A backend reports each HTTP call for
the ledger through :func:`record_call`.

A backend that looks a lead up by e-mail before creating it should skip that lookup when
:func:`listing_says_absent` is true for the lead: the backfill has just listed the CRM and found no match.

Errors: raise :class:`crmify.exceptions.TransientBackendError` for what is worth retrying and
:class:`crmify.exceptions.PermanentBackendError` for what is not. Anything else raised is treated as
transient, with its text kept on the lead.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from django.core import checks

if TYPE_CHECKING:
    from crmify.models import Lead
    from crmify.ratelimit import QuotaState


@dataclass(frozen=True, slots=True)
class CrmChange:
    """One CRM record as it is now, read back from the CRM (a poll, or a re-read after a webhook).

    ``values`` are the record by lead field names, as :meth:`BaseBackend.read_record` gives them;
    ``modified_at`` the CRM's own modification time (aware, UTC), None if the CRM gave none. A record the
    CRM deleted is ``deleted`` (no values); one merged into another names the survivor in
    ``merged_into`` (HubSpot's merge: the site's lead adopts the surviving record).
    """

    external_id: str
    modified_at: datetime.datetime | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    merged_into: str = ""


@dataclass(frozen=True, slots=True)
class CrmLead:
    """One lead as a CRM listing gives it: enough to match it by e-mail."""

    external_id: str
    email: str


def normalise_email(email: str) -> str:
    """How an e-mail is matched against the CRM's (the backfill's listing, a backend's lookup before a
    create): trimmed and case-folded."""
    return email.strip().casefold()


def normalise_name(name: str) -> str:
    """How a status (or an option) is matched against the CRM's names: ``"NotContacted"``,
    ``"not contacted"`` and ``"Not-Contacted"`` all read ``"notcontacted"``."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


def length_problems(payload: Mapping[str, Any], max_lengths: Mapping[str, int]) -> list[str]:
    """What in ``payload`` is longer than the CRM accepts, one sentence per value: the mapper preview
    warns with them, and a backend refuses to send such a payload."""
    return [
        f"{key} is {len(value)} characters long; the CRM accepts {max_lengths[key]}."
        for key, value in payload.items()
        if isinstance(value, str) and key in max_lengths and len(value) > max_lengths[key]
    ]


def listing_says_absent(lead: Lead) -> bool:
    """Whether the backfill's listing of the CRM showed no lead with ``lead``'s e-mail, and nothing since
    makes that doubtful: the lead was never synced and no attempt of it has been made (a failed or
    interrupted create may have reached the CRM, so every later attempt looks again)."""
    return (
        lead.absent_from_crm_at is not None
        and lead.attempts == 0
        and lead.last_synced_at is None
        and not lead.external_id
    )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One CRM call as the ledger keeps it. Summaries must already be free of secrets."""

    operation: str
    outcome: str = "ok"
    http_status: int | None = None
    duration_ms: int = 0
    error: str = ""
    request_summary: str = ""
    response_summary: str = ""


@dataclass
class _CallLog:
    records: list[CallRecord] = field(default_factory=list)


_current_log: contextvars.ContextVar[_CallLog | None] = contextvars.ContextVar(
    "crmify_call_log", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[list[CallRecord]]:
    """Collect the :class:`CallRecord` s that backends report inside the block (the engine's wrapper)."""
    log = _CallLog()
    token = _current_log.set(log)
    try:
        yield log.records
    finally:
        _current_log.reset(token)


def record_call(record: CallRecord) -> None:
    """Report one CRM call for the ledger. Called by backends; a no-op outside :func:`recording`."""
    log = _current_log.get()
    if log is not None:
        log.records.append(record)


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """One line of a connection check (:meth:`BaseBackend.check_connection`), as ``manage.py
    crmify_check`` prints it: what was checked, whether it is fine, and what was found."""

    what: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class BatchItem:
    """What a batch call (:meth:`BaseBackend.sync_leads`, :meth:`BaseBackend.delete_leads`) did for one
    lead: its CRM id (a sync), True (a delete), or the error that lead got, read as the worker reads an
    error of :meth:`BaseBackend.sync_lead`."""

    result: str | bool | None = None
    error: Exception | None = None


class BaseBackend:
    """Base class for crmify backends: the hooks the engine calls, optional ones with safe defaults.

    :func:`crmify.backends.get_backend` builds a subclass with ``options`` (``CRMIFY['BACKEND_OPTIONS']``)
    and ``auth`` (the resolved ``BACKEND_AUTH``). Subclasses implement :meth:`sync_lead` and
    :meth:`delete_lead`, set the flags of what else they do, and override the matching hooks. See the
    module docstring for who calls what.
    """

    #: ``build_payload(lead)`` returns the exact body the CRM would get, without any I/O.
    supports_payload_preview: bool = False
    #: ``fetch_lead(lead_id)`` returns the CRM's current record.
    supports_fetch: bool = False
    #: The backend reads ``lead.synced_values`` and sends only what changed since the last sync.
    supports_partial_update: bool = False
    #: ``iter_leads(page_size)`` pages through every lead in the CRM, one call per page.
    supports_listing: bool = False
    #: ``find_lead_id(lead)`` finds the CRM's lead for a lead without a CRM id (by e-mail, say).
    supports_lookup: bool = False
    #: ``check_connection(status_names)`` calls the CRM to check the key, the URL and the statuses.
    #: Set for you on a subclass that defines ``verify()``, the hook's name before it.
    supports_connection_check: bool = False
    #: ``sync_leads(leads)`` and ``delete_leads(lead_ids)`` send up to ``max_batch_size`` leads per call.
    supports_batch: bool = False
    #: The most leads one batch call takes (read only when ``supports_batch`` is set); the worker sends
    #: up to this many per ``sync_leads`` call.
    max_batch_size: int = 1
    #: ``iter_changes(since)`` and ``read_changes(ids)`` read changes made in the CRM back.
    supports_pull: bool = False
    #: The most records one page of ``iter_changes`` holds (one call): the poller's cost estimate reads it.
    pull_page_size: int = 100
    #: The most leads one page of ``iter_leads`` holds (one call), read only when ``supports_listing`` is
    #: set: the poller lists the CRM in pages of this size to find deletes, and estimates their cost.
    listing_page_size: int = 500
    #: Longest value the CRM accepts, by payload key; the mapper preview warns above it. Empty: no limits known.
    max_lengths: Mapping[str, int] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "verify" in vars(cls) and "supports_connection_check" not in vars(cls):
            # A backend written when the connection check was called verify() keeps its check.
            cls.supports_connection_check = True

    def __init__(
        self, options: Mapping[str, Any] | None = None, auth: Mapping[str, str] | None = None
    ) -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.auth: dict[str, str] = dict(auth or {})

    @property
    def configured_class(self) -> type[Any]:
        """The class ``BACKEND`` names (for a :class:`PlainBackend`, the wrapped object's)."""
        return type(self)

    @property
    def display_name(self) -> str:
        """The backend's name in messages to staff: the configured class's name."""
        return self.configured_class.__name__

    @property
    def crm_name(self) -> str:
        """Which CRM this backend talks to, in one line: what crmify keeps per CRM is keyed by it (the
        poller's ``PullCursor``). The configured class's path by default; an HTTP backend adds its URL."""
        return f"{self.configured_class.__module__}.{self.configured_class.__qualname__}"

    # -- required ---------------------------------------------------------------------------------

    def sync_lead(self, lead: Lead) -> str:
        """Create or update ``lead`` in the CRM and return its CRM id. Called by the engine's worker."""
        raise NotImplementedError

    def delete_lead(self, lead_id: str) -> bool:
        """Delete the CRM's lead ``lead_id``; True when it is gone. Called by the engine's worker."""
        raise NotImplementedError

    # -- batches (supports_batch) -------------------------------------------------------------------

    def sync_leads(self, leads: Sequence[Lead]) -> list[BatchItem]:
        """Create or update each of ``leads`` (at most ``max_batch_size``); one :class:`BatchItem` per
        lead, in order, its ``result`` the CRM id. An error that fails the whole call may be raised instead.

        The default calls :meth:`sync_lead` for each lead, so every backend answers it; a CRM with batch
        calls overrides it and sets ``supports_batch``. Called by the worker (``crmify.worker``) for a
        backfill chunk's leads and for a burst of waiting leads, only when ``supports_batch`` is set;
        each item is read as :meth:`sync_lead`'s result or error for that lead (a permanent error fails
        only that lead, a transient one retries only it), a raised error as every lead's.
        """
        return [_batch_item(self.sync_lead, lead) for lead in leads]

    def delete_leads(self, lead_ids: Sequence[str]) -> list[BatchItem]:
        """Delete each of ``lead_ids``; one :class:`BatchItem` per id, in order, its ``result`` what
        :meth:`delete_lead` returns. The default calls :meth:`delete_lead` for each. Not called yet."""
        return [_batch_item(self.delete_lead, lead_id) for lead_id in lead_ids]

    # -- what mapping needs -------------------------------------------------------------------------

    def max_length(self, field: str) -> int | None:
        """The longest text the CRM keeps in lead field ``field`` (``"description"``), or None if unknown.

        Called by the engine when it maps a row (:func:`crmify.mappers.fit_to_crm`): a longer value is a
        mapping error on the lead, shown in the admin and the mapper preview, and nothing is sent.
        """
        return None

    def encode_date(self, value: datetime.date) -> Any:
        """A date mapped to a custom field as the CRM takes it in a request body: ``value`` is a ``date``,
        or a ``datetime`` in UTC (the engine reads a naive one in ``TIME_ZONE``). ISO 8601 by default.

        Called by the engine when it maps a row; the result is kept in ``Lead.custom_fields`` and sent.
        """
        return value.isoformat()

    def missing_last_name(self, lead: Lead) -> str | None:
        """What is sent as the last name of ``lead``, which has none (a CRM that requires one), or None
        when the backend sends none. Called by the mapper preview to warn; pure. None by default."""
        return None

    def refusals(self, lead: Lead) -> list[str]:
        """What the CRM is known to refuse in ``lead``'s values (a dropdown value it does not offer),
        one sentence each, from what the backend already knows: no I/O. Called by the mapper preview to
        warn before anything is sent. None known by default."""
        return []

    # -- optional features (their flags above) ------------------------------------------------------

    def build_payload(self, lead: Lead) -> dict[str, Any]:
        """The exact JSON body :meth:`sync_lead` would send for ``lead``; pure (the mapper preview calls it)."""
        raise NotImplementedError

    def payload_fields(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """The CRM's fields in a body of :meth:`build_payload`, by the CRM's names: the body itself by
        default, a part of it for a CRM that nests them (HubSpot's ``{"properties": {...}}``). Called
        by the admin's Compare page and the mapper preview's length warnings to line fields up; pure."""
        return payload

    def fetch_lead(self, lead_id: str) -> dict[str, Any] | None:
        """The CRM's current record for ``lead_id`` or None if it has none (the admin's "Compare with CRM")."""
        raise NotImplementedError

    def read_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` (what :meth:`fetch_lead` returned) in the app's terms: lead values by field name,
        as ``Lead.crm_values()`` holds them (``status`` and ``lead_source`` by name, ``custom_fields`` a
        ``{key: value}`` dict, a field the record leaves out left out), so "Compare with CRM" lines each
        value up with the app's by name.

        Called by :func:`crmify.api.read_from_crm` right after :meth:`fetch_lead`, inside the same
        recorded call: it may look names up (status ids) and raise the usual ``BackendError`` s. The
        default takes the record as it is, right for a CRM whose records use the lead's field names.
        """
        return dict(record)

    def iter_changes(self, since: datetime.datetime | None) -> Iterator[list[CrmChange]]:
        """The records changed in the CRM at or after ``since`` (every record when None), oldest first
        where the CRM can sort, one page (one CRM call) at a time of at most ``pull_page_size``; the
        last page short or empty. ``since`` already includes the poller's overlap.

        Called by :mod:`crmify.poller`; raises the usual ``BackendError`` s. A CRM that may hide some
        records from such a query (Insightly's converted leads) asks for them explicitly.
        """
        raise NotImplementedError

    def read_changes(self, external_ids: Sequence[str]) -> list[CrmChange]:
        """The current records of ``external_ids``, one :class:`CrmChange` each (``deleted`` for an id the
        CRM no longer has). Called by the webhook task (``crmify.webhooks``) after a webhook named the
        ids: a webhook body is a hint, the record read back is the truth."""
        raise NotImplementedError

    def iter_leads(self, page_size: int = 500) -> Iterator[list[CrmLead]]:
        """Every lead in the CRM, one page (one CRM call) at a time, the last page short or empty.

        Called by :mod:`crmify.backfill` (its dry run and the first chunk of a run). Raises the usual
        ``BackendError`` s; a page in progress when one is raised is lost, and the caller starts again.
        """
        raise NotImplementedError

    def find_lead_id(self, lead: Lead) -> str | None:
        """The CRM id of ``lead``'s record, found without its id, or None if the CRM has none.

        Called by the engine before it calls a deleted lead gone: a create that failed (a timeout) may
        have made the record all the same.
        """
        raise NotImplementedError

    def check_connection(self, status_names: Sequence[str]) -> list[ConnectionCheck]:
        """Call the CRM to check the credentials, the URL and that it knows ``status_names`` (the three
        configured statuses); one :class:`ConnectionCheck` per thing checked. Called by ``manage.py
        crmify_check`` when ``supports_connection_check`` is set. Default: the rows of ``verify()``."""
        return [ConnectionCheck(*row) for row in self.verify(list(status_names))]

    def verify(self, status_names: list[str]) -> list[tuple[str, bool, str]]:
        """The connection check's name before :meth:`check_connection`, as ``(what, ok, detail)`` rows:
        still called for a backend that defines it. None by default."""
        return []

    # -- what staff see and the estimates (no I/O) --------------------------------------------------

    def health(self) -> QuotaState | None:
        """What the CRM last said about quota and auth, from shared state (no I/O; the admin's banner)."""
        return None

    def daily_quota(self) -> int | None:
        """The daily call limit the site configured, known before the CRM reports one in :meth:`health`;
        None if not configured. The backfill's dry run divides its calls by it."""
        return None

    def requests_per_second(self) -> float | None:
        """The pace the backend keeps (calls per second, shared by every worker), or None if it keeps
        none. The backfill's dry run estimates a run's duration with it."""
        return None

    def record_url(self, lead_id: str) -> str | None:
        """A link for staff to the lead in the CRM's own UI, or None."""
        return None

    def check(self) -> list[checks.CheckMessage]:
        """System-check messages about this backend's own options (called by ``crmify.checks``)."""
        return []


def _batch_item(call: Callable[[_T], str | bool], argument: _T) -> BatchItem:
    """One lead of a batch sent one at a time: the call's result, or the error it raised."""
    try:
        return BatchItem(result=call(argument))
    except Exception as exc:  # one lead's error is that lead's, as the worker reads it
        return BatchItem(error=exc)


class SeedBackend(Protocol):
    """A backend class as the original README describes it: the two methods, and nothing else."""

    def sync_lead(self, lead: Lead) -> str: ...

    def delete_lead(self, lead_id: str) -> bool: ...


class PlainBackend(BaseBackend):
    """The engine's :class:`BaseBackend` for a site backend that is not one: a plain class with
    ``sync_lead`` and ``delete_lead`` only (the original README), or a 1.3.0 :class:`CRMBackend` subclass.

    Built by :func:`crmify.backends.as_base_backend`. Calls the wrapped object's two methods and nothing
    else of it (its other attributes, whatever they are, are never read), so every optional hook has
    its default. ``wrapped`` is the site's object; ``isinstance(backend, SiteCRM)`` stays true, as it
    is for the object itself, because ``__class__`` answers the wrapped object's class (the way Django's
    ``SimpleLazyObject`` does).
    """

    def __init__(self, wrapped: SeedBackend) -> None:
        super().__init__()
        self.wrapped = wrapped

    # isinstance() falls back to __class__ when the real type does not match: site code (and tests)
    # that check the backend's class see their own class, and BaseBackend checks still see this one.
    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:
        return type(self.wrapped)

    @property
    def configured_class(self) -> type[Any]:
        return type(self.wrapped)

    def sync_lead(self, lead: Lead) -> str:
        return self.wrapped.sync_lead(lead)

    def delete_lead(self, lead_id: str) -> bool:
        return self.wrapped.delete_lead(lead_id)


#: The prefix 1.3.0 stripped from auth keys given under their environment variable's name.
AUTH_ENV_PREFIX = "CRMIFY_BACKEND_AUTH_"


class CRMBackend:
    """The base class of 1.3.0, kept so that backends written against it run unchanged.

    :func:`crmify.backends.get_backend` builds a subclass with ``BACKEND_AUTH`` as keyword arguments
    (``API_KEY=...``), which land in ``self._auth_params`` (a key given as ``CRMIFY_BACKEND_AUTH_API_KEY``
    reads ``API_KEY``). Subclasses implement :meth:`sync_lead` and :meth:`delete_lead`, called by the
    engine's worker through a :class:`PlainBackend`; they get none of :class:`BaseBackend`'s options or
    optional hooks. New backends subclass :class:`BaseBackend` instead.
    """

    def __init__(self, **auth_params: Any) -> None:
        self._auth_params: dict[str, Any] = {
            key.removeprefix(AUTH_ENV_PREFIX): value for key, value in auth_params.items()
        }

    def sync_lead(self, lead: Lead) -> str:
        """Create or update ``lead`` in the CRM and return its CRM id."""
        raise NotImplementedError

    def delete_lead(self, lead_id: str) -> bool:
        """Delete the CRM's lead ``lead_id``; True when it is gone."""
        raise NotImplementedError
