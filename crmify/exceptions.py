"""Errors crmify raises, each carrying what happened so the admin can show it readably.

The engine classifies by class: a :class:`TransientBackendError` is retried with backoff, a
:class:`PermanentBackendError` fails the lead at once. Any other exception from a custom backend counts as
transient with its text kept. Configuration mistakes are Django's ``ImproperlyConfigured`` and are never
retried.
"""

from __future__ import annotations

from datetime import datetime

#: How much of a CRM's answer an error message keeps; the ledger keeps its own truncated copy.
MAX_BODY_IN_MESSAGE = 300


class CrmifyError(Exception):
    """Base class of every crmify error."""


class MappingError(CrmifyError):
    """A source row could not be mapped to lead values (a wrong type, a value too long).

    Raised by the mapper; the engine records it on the lead as a permanent failure, and the site's own save
    goes on unharmed.
    """


class BackendError(CrmifyError):
    """A CRM call failed.

    ``status_code`` and ``response_text`` are the CRM's answer when there was one; ``retry_after`` is the
    number of seconds the CRM asked us to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response_text: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.response_text = response_text
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"HTTP {self.status_code}: " if self.status_code else ""
        return f"{prefix}{self.message}"


class TransientBackendError(BackendError):
    """Worth retrying later: timeouts, connection errors, 5xx, 429."""


class PermanentBackendError(BackendError):
    """Retrying will not help until someone changes something: 400, 401, 403, 404 on update."""


class QuotaExhausted(TransientBackendError):
    """The CRM's daily quota is used up; no call is made until ``resets_at``.

    Waiting for a quota does not count as a failed attempt.
    """

    def __init__(
        self, message: str, *, resets_at: datetime, status_code: int | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.resets_at = resets_at
