"""The "Copy for support" text on a failed lead's page: what a developer or the CRM's support needs to
understand a failure, in one block of plain text staff can paste into a ticket.

Called by ``LeadAdmin.render_change_form`` with the ledger entries the page already shows (no query of its
own). Every line goes through :func:`crmify.secrets.redact`: a request or response summary, or an error a
site's backend raised, may quote a credential.
"""

from __future__ import annotations

from collections.abc import Iterable

from crmify.models import Lead, LedgerEntry
from crmify.secrets import redact

#: How many of the latest CRM calls the block lists (the ledger below it has them all).
SUPPORT_CALLS = 5


def _call_lines(entry: LedgerEntry) -> list[str]:
    status = f"HTTP {entry.http_status}" if entry.http_status is not None else "no HTTP status"
    lines = [
        f"- {entry.started_at.isoformat()} {entry.operation}: {entry.outcome}, {status}, "
        f"{entry.duration_ms} ms"
    ]
    if entry.error:
        lines.append(f"  error: {entry.error}")
    if entry.request_summary:
        lines.append(f"  request: {entry.request_summary}")
    if entry.response_summary:
        lines.append(f"  response: {entry.response_summary}")
    return lines


def support_summary(lead: Lead, entries: Iterable[LedgerEntry], backend_name: str) -> str:
    """Plain text about ``lead``'s sync and its latest CRM calls (``entries``, latest first), secrets
    masked."""
    lines = [
        f"django-crmify lead #{lead.pk}: {lead.email or '(no e-mail)'}",
        f"Backend: {backend_name or '(not configured)'}; CRM id: {lead.external_id or '(none)'}",
        f"State: {lead.sync_state}; attempts: {lead.attempts}; status: {lead.status or '(none)'}",
        f"Last synced: {lead.last_synced_at.isoformat() if lead.last_synced_at else 'never'}",
        f"Last error: {lead.last_error or '(none)'}",
    ]
    calls = list(entries)[:SUPPORT_CALLS]
    if calls:
        lines.append(f"Latest CRM calls ({len(calls)}, latest first):")
        for entry in calls:
            lines += _call_lines(entry)
    else:
        lines.append("No CRM call recorded.")
    return redact("\n".join(lines))
