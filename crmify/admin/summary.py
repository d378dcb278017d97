"""The changelist's summary bar (leads per sync state) and the CRM health banner.

Called by ``LeadAdmin.changelist_view`` (both) and ``LeadAdmin.change_view`` (the banner). The counts are
one aggregate query; the banner reads the backend's ``health()`` and ``crmify.crm_state.crm_state()``,
both shared state, never a CRM call, and counts the leads waiting for the CRM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.http import urlencode
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from crmify import api
from crmify.admin.display import exact_time
from crmify.crm_state import crm_state
from crmify.models import Lead, SyncState

#: The changelist's query parameter for the sync-state filter (Django's ``ChoicesFieldListFilter``).
STATE_PARAMETER = "sync_state__exact"


@dataclass(frozen=True, slots=True)
class StateCount:
    """One entry of the summary bar: a sync state, how many leads are in it, and its filter link."""

    state: str
    label: str
    count: int
    url: str
    active: bool


def state_counts(active: str | None = None) -> list[StateCount]:
    """Leads per sync state, every state listed (zeros too), from one aggregate query."""
    counts = Lead.objects.aggregate(
        **{state.value: Count("pk", filter=Q(sync_state=state.value)) for state in SyncState}
    )
    return [
        StateCount(
            state=state.value,
            label=str(state.label),
            count=counts[state.value],
            url="?" + urlencode({STATE_PARAMETER: state.value}),
            active=state.value == active,
        )
        for state in SyncState
    ]


@dataclass(frozen=True, slots=True)
class Banner:
    """A problem with the CRM that stops every sync; shown above the leads."""

    level: str  # "error" or "warning", the admin's message classes
    text: str
    #: The banner of a CRM that does not answer: staff with ``sync_lead`` get "Send waiting leads now".
    outage: bool = False


def outage_banner() -> Banner | None:
    """The CRM does not answer: since when, its last error in its own words, and the leads waiting."""
    state = crm_state()
    if state.up or state.down_since is None:
        return None
    since = timezone.localtime(state.down_since)
    when = (
        date_format(since, "TIME_FORMAT")
        if since.date() == timezone.localdate()
        else exact_time(state.down_since)
    )
    waiting = api.waiting_for_crm_count()
    return Banner(
        "error",
        ngettext(
            "The CRM has not answered since %(when)s (%(error)s); %(count)d lead is waiting and will "
            "be sent when it answers.",
            "The CRM has not answered since %(when)s (%(error)s); %(count)d leads are waiting and will "
            "be sent when it answers.",
            waiting,
        )
        % {"when": when, "error": state.last_error.rstrip("."), "count": waiting},
        outage=True,
    )


def health_banners() -> list[Banner]:
    """What stops syncs right now: a CRM that does not answer, a misconfigured backend, a rejected API
    key, a used-up daily quota."""
    outage = outage_banner()
    banners: list[Banner] = [outage] if outage else []
    try:
        state = api.crm_health()
    except ImproperlyConfigured as exc:
        return [
            *banners,
            Banner("error", _("The CRM backend is not configured correctly: %s") % exc),
        ]
    if state is None:
        return banners
    if state.auth_failed:
        banners.append(
            Banner(
                "error",
                _(
                    "The CRM is rejecting the API key: every sync fails until it is fixed "
                    "(CRMIFY_BACKEND_AUTH_API_KEY)."
                ),
            )
        )
    if state.exhausted and state.exhausted_until is not None:
        banners.append(
            Banner(
                "warning",
                _(
                    "The CRM's daily API quota is used up: calls resume at %(when)s (in %(delta)s). "
                    "Leads wait and are sent then."
                )
                % {
                    "when": exact_time(state.exhausted_until),
                    "delta": timeuntil(state.exhausted_until),
                },
            )
        )
    return banners


def changelist_context(request_get: Any, send_waiting_url: str | None) -> dict[str, Any]:
    """The summary bar and banners for ``admin/crmify/lead/change_list.html``."""
    return {
        "crmify_state_counts": state_counts(request_get.get(STATE_PARAMETER)),
        **banner_context(send_waiting_url),
    }


def banner_context(send_waiting_url: str | None) -> dict[str, Any]:
    """The banners of the changelist and the lead's page (``includes/banners.html``), with the URL of
    "Send waiting leads now" for staff who may use it (None hides the button)."""
    return {"crmify_banners": health_banners(), "crmify_send_waiting_url": send_waiting_url}
