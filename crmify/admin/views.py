"""The Lead admin's own pages: "Sync now" and "Compare with CRM" for one lead, "Send waiting leads now".

Wired by ``LeadAdmin.get_urls`` through ``admin_site.admin_view`` (login, CSRF, no caching); each view
checks its permission first and answers 403 without it. These are the only admin pages that call the CRM,
and only on a POST staff made by pressing the button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from crmify import api
from crmify.admin.compare import compare
from crmify.admin.display import admin_url, configured_backend, crm_record_url, exact_time
from crmify.exceptions import BackendError
from crmify.models import Lead
from crmify.preview import to_json
from crmify.worker import SyncOutcome

if TYPE_CHECKING:
    from crmify.admin.lead import LeadAdmin


def _lead_or_404(model_admin: LeadAdmin, request: HttpRequest, object_id: str) -> Lead:
    lead = model_admin.get_object(request, unquote(object_id))
    if lead is None:
        raise Http404(_("No lead with id %s.") % object_id)
    return lead


def sync_outcome_message(outcome: SyncOutcome, lead: Lead) -> tuple[int, str]:
    """The message level and text for what ``api.sync_now`` answered, with the lead as it is after."""
    if outcome in (SyncOutcome.SYNCED, SyncOutcome.UNCHANGED):
        return messages.SUCCESS, _("Synced with the CRM (CRM id %s).") % lead.external_id
    if outcome == SyncOutcome.DELETED:
        return messages.SUCCESS, _("Deleted from the CRM.")
    if outcome == SyncOutcome.RETRYING:
        when = exact_time(lead.next_attempt_at) if lead.next_attempt_at else _("soon")
        return messages.WARNING, _("Not synced; it will be retried at %(when)s: %(error)s") % {
            "when": when,
            "error": lead.last_error,
        }
    if outcome == SyncOutcome.WAITING:
        return messages.WARNING, _(
            "Not sent: the CRM does not answer (%s). The lead waits and is sent when it answers."
        ) % lead.last_error
    if outcome == SyncOutcome.SKIPPED:
        return messages.WARNING, _("A worker is syncing this lead right now; look again shortly.")
    if outcome == SyncOutcome.MISSING:
        return messages.ERROR, _("The lead no longer exists.")
    return messages.ERROR, _("The sync failed: %s") % lead.last_error


def sync_now_view(model_admin: LeadAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """POST: send the lead to the CRM inside this request, then back to its page with the outcome."""
    if not model_admin.has_sync_permission(request):
        raise PermissionDenied
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    lead = _lead_or_404(model_admin, request, object_id)
    try:
        outcome = api.sync_now(lead)
    except ImproperlyConfigured:
        outcome = SyncOutcome.FAILED  # the engine failed the lead and kept the reason in last_error
    lead.refresh_from_db()
    level, text = sync_outcome_message(outcome, lead)
    model_admin.message_user(request, text, level)
    return redirect(admin_url(model_admin, "change", lead.pk))


def send_waiting_view(model_admin: LeadAdmin, request: HttpRequest) -> HttpResponse:
    """POST: queue every lead waiting for the CRM now (the outage banner's button), then back to where
    staff pressed it."""
    if not model_admin.has_sync_permission(request):
        raise PermissionDenied
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    queued = api.send_waiting_leads()
    model_admin.message_user(
        request,
        ngettext(
            "%d lead waiting for the CRM was queued to be sent now.",
            "%d leads waiting for the CRM were queued to be sent now.",
            queued,
        )
        % queued,
        messages.SUCCESS,
    )
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = admin_url(model_admin, "changelist")
    return redirect(back)


def compare_view(model_admin: LeadAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """GET: the app's values and what was last sent (no CRM call). POST: the CRM's record beside them."""
    if not model_admin.has_sync_permission(request):
        raise PermissionDenied
    lead = _lead_or_404(model_admin, request, object_id)
    record: api.CrmRecord | None = None
    fetched, error = False, ""
    if request.method == "POST":
        try:
            record = api.read_from_crm(lead)
            fetched = True
        except (BackendError, ImproperlyConfigured) as exc:
            error = str(exc)
    backend = configured_backend()
    opts = model_admin.opts
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": _("Compare %s with the CRM") % lead,
        "subtitle": None,
        "opts": opts,
        "original": lead,
        "comparison": compare(lead, record.values if record is not None else None),
        "crm_record_json": to_json(record.raw) if record is not None else "",
        "fetched": fetched,
        "found": record is not None,
        "error": error,
        "record_url": crm_record_url(backend, lead.external_id),
        "change_url": admin_url(model_admin, "change", lead.pk),
        "can_fetch": backend is not None and backend.supports_fetch,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/crmify/lead/compare.html", context)
