"""The contract between crmify's engine and a CRM backend.

Required (the original README's promise; a plain class with only these two and a no-argument constructor
works as ``BACKEND``)::

    def sync_lead(self, lead) -> str      # create or update; return the CRM's id of the lead
    def delete_lead(self, lead_id) -> bool  # True if deleted (or already gone), False otherwise

Optional, announced by capability flags on :class:`BaseBackend`: building the exact payload without sending it
(``supports_payload_preview``), fetching the CRM's current record (``supports_fetch``), listing every lead
of the CRM in pages (``supports_listing``: the backfill finds CRM matches by e-mail with it instead of one
search per lead), finding a lead's record without its CRM id (``supports_lookup``: a deleted lead whose
create timed out), and reporting each HTTP call for the ledger through :func:`record_call`. A backend may
also announce the longest value the CRM accepts per payload key in ``max_lengths`` (the mapper preview
warns about longer values), and fill two hooks the engine calls when it maps a row: ``max_length(field)``
(a longer value of that lead field is a mapping error, before anything is sent) and ``encode_date(value)``
(how a date mapped to a custom field is written).

A backend that looks a lead up by e-mail before creating it should skip that lookup when
:func:`listing_says_absent` is true for the lead: the backfill has just listed the CRM and found no match.

Errors: raise :class:`crmify.exceptions.TransientBackendError` for what is worth retrying and
:class:`crmify.exceptions.PermanentBackendError` for what is not. Anything else raised is treated as
transient, with its text kept on the lead.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import datetime
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.core import checks

if TYPE_CHECKING:
    from crmify.models import Lead
    from crmify.ratelimit import QuotaState


#: Shorter credential values are not masked: they are not secrets, and masking them would garble every
#: message they happen to occur in.
MIN_SECRET_LENGTH = 4


def secret_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as written and as an HTTP Basic header carries it when it is the user name with an
    empty password (Insightly's scheme): a CRM or proxy that quotes the header back quotes this form."""
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    return secret, basic, basic.rstrip("=")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret masked. The HTTP plumbing scrubs what it records with it, and the
    engine scrubs everything it stores (a site's own backend may quote its key in an exception)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            for form in secret_forms(secret):
                text = text.replace(form, "***")
    return text


@dataclass(frozen=True, slots=True)
class CrmLead:
    """One lead as a CRM listing gives it: enough to match it by e-mail."""

    external_id: str
    email: str


def normalise_email(email: str) -> str:
    """How an e-mail is matched against the CRM's (the backfill's listing, a backend's lookup before a
    create): trimmed and case-folded."""
    return email.strip().casefold()


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


class BaseBackend:
    """Base class for crmify backends: optional hooks with safe defaults.

    The engine builds a backend with ``options`` (``CRMIFY['BACKEND_OPTIONS']``) and ``auth`` (the resolved
    ``BACKEND_AUTH``). Subclasses implement :meth:`sync_lead` and :meth:`delete_lead` and may set the flags.
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
    #: Longest value the CRM accepts, by payload key; the mapper preview warns above it. Empty: no limits known.
    max_lengths: Mapping[str, int] = MappingProxyType({})

    def __init__(
        self, options: Mapping[str, Any] | None = None, auth: Mapping[str, str] | None = None
    ) -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.auth: dict[str, str] = dict(auth or {})

    def sync_lead(self, lead: Lead) -> str:
        """Create or update ``lead`` in the CRM and return its CRM id. Called by the engine's worker."""
        raise NotImplementedError

    def delete_lead(self, lead_id: str) -> bool:
        """Delete the CRM's lead ``lead_id``; True when it is gone. Called by the engine's worker."""
        raise NotImplementedError

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

    def build_payload(self, lead: Lead) -> dict[str, Any]:
        """The exact JSON body :meth:`sync_lead` would send for ``lead``; pure (the mapper preview calls it)."""
        raise NotImplementedError

    def fetch_lead(self, lead_id: str) -> dict[str, Any] | None:
        """The CRM's current record for ``lead_id`` or None if it has none (the admin's "Compare with CRM")."""
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

    def health(self) -> QuotaState | None:
        """What the CRM last said about quota and auth, from shared state (no I/O; the admin's banner)."""
        return None

    def record_url(self, lead_id: str) -> str | None:
        """A link for staff to the lead in the CRM's own UI, or None."""
        return None

    def check(self) -> list[checks.CheckMessage]:
        """System-check messages about this backend's own options (called by ``crmify.checks``)."""
        return []


#: The prefix 1.3.0 stripped from auth keys given under their environment variable's name.
AUTH_ENV_PREFIX = "CRMIFY_BACKEND_AUTH_"


class CRMBackend:
    """The base class of 1.3.0, kept so that backends written against it run unchanged.

    :func:`crmify.backends.get_backend` builds a subclass with ``BACKEND_AUTH`` as keyword arguments
    (``API_KEY=...``), which land in ``self._auth_params`` (a key given as ``CRMIFY_BACKEND_AUTH_API_KEY``
    reads ``API_KEY``). Subclasses implement :meth:`sync_lead` and :meth:`delete_lead`, called by the
    engine's worker; they get none of :class:`BaseBackend`'s options or optional hooks. New backends
    subclass :class:`BaseBackend` instead.
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
