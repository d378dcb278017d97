"""The Lead changelist's actions: thin wrappers that call ``crmify.api`` and report counts.

Each is gated by a custom permission (``LeadAdmin.has_<name>_permission``) and ends with one message:
leads queued, leads skipped (nothing to do) and leads refused (the engine would not act on them), each
with its reasons. No action calls the CRM: the engine queues the work for the worker.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crmify import api
from crmify.conf import crmify_settings
from crmify.models import Lead
from crmify.transitions import funnel_statuses

if TYPE_CHECKING:
    from crmify.admin.lead import LeadAdmin

#: Reasons in a ``BulkResult`` that mean the engine would not act (staff must fix something first),
#: as opposed to there being nothing to do.
REFUSALS = frozenset(
    {"source row gone", "mapping still fails", "mapping failed", "deleted from the CRM"}
)


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))


def report(model_admin: LeadAdmin, request: HttpRequest, what: str, result: api.BulkResult) -> None:
    """One message for a bulk call: "<what>: 3 queued; 1 skipped (1 not failed); 0 refused."."""
    refused = Counter({r: n for r, n in result.skipped.items() if r in REFUSALS})
    skipped = Counter({r: n for r, n in result.skipped.items() if r not in REFUSALS})
    parts = [_("%(count)d queued") % {"count": result.queued}]
    for label, counts in ((_("skipped"), skipped), (_("refused"), refused)):
        total = sum(counts.values())
        parts.append(f"{total} {label} ({_reasons(counts)})" if total else f"{total} {label}")
    level = messages.WARNING if refused else messages.SUCCESS
    model_admin.message_user(request, f"{what}: {'; '.join(parts)}.", level)


@admin.action(permissions=["sync"], description=gettext_lazy("Re-sync selected leads"))
def resync(model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
    """Send everything again, changed or not; a tombstone comes back to life."""
    report(model_admin, request, _("Re-sync"), api.resync(queryset))


@admin.action(permissions=["sync"], description=gettext_lazy("Retry failed leads"))
def retry_failed(model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
    report(model_admin, request, _("Retry failed"), api.retry_failed(queryset))


@admin.action(permissions=["change_lead_status"], description=gettext_lazy("Mark converted"))
def mark_converted(model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
    status = crmify_settings.LEAD_CONVERTED_STATUS
    report(
        model_admin,
        request,
        _("Mark converted (%s)") % status,
        api.set_status_of(queryset, status),
    )


@admin.action(permissions=["change_lead_status"], description=gettext_lazy("Mark dead"))
def mark_dead(model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]) -> None:
    status = crmify_settings.LEAD_DEAD_STATUS
    report(model_admin, request, _("Mark dead (%s)") % status, api.set_status_of(queryset, status))


@admin.action(permissions=["delete_from_crm"], description=gettext_lazy("Delete from CRM"))
def delete_from_crm(
    model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]
) -> TemplateResponse | None:
    """First a confirmation page listing the leads (like Django's delete); its POST queues the deletes.

    The confirmation posts back to the changelist with ``post=yes``, the way ``delete_selected`` does.
    """
    if request.POST.get("post") == "yes":
        report(model_admin, request, _("Delete from CRM"), api.delete_from_crm(queryset))
        return None
    return confirmation_page(
        model_admin,
        request,
        queryset,
        "delete_from_crm",
        _("Delete the selected leads from the CRM?"),
    )


def confirmation_page(
    model_admin: LeadAdmin,
    request: HttpRequest,
    queryset: QuerySet[Lead],
    action_name: str,
    title: str,
    **extra: Any,
) -> TemplateResponse:
    """The page an action shows before it acts (``admin/crmify/lead/<action>_confirmation.html``): the
    leads, posted back to the changelist with ``post=yes`` the way ``delete_selected`` does."""
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "opts": model_admin.opts,
        "leads": list(queryset),
        "action_name": action_name,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": model_admin.media,
        **extra,
    }
    request.current_app = model_admin.admin_site.name
    template = f"admin/crmify/lead/{action_name}_confirmation.html"
    return TemplateResponse(request, template, context)


@admin.action(permissions=["force_lead_status"], description=gettext_lazy("Force a status…"))
def force_status(
    model_admin: LeadAdmin, request: HttpRequest, queryset: QuerySet[Lead]
) -> TemplateResponse | None:
    """Move the leads to a status staff choose, back in the funnel if need be (``api.set_status_of`` with
    ``force``). First a page listing the leads with their status and a choice of status; its POST (with
    ``post=yes``) moves them. An automatic change never goes back; this is how staff do it on purpose."""
    statuses = funnel_statuses()
    chosen = request.POST.get("status", "")
    if request.POST.get("post") == "yes" and chosen in statuses:
        result = api.set_status_of(queryset, chosen, force=True)
        report(model_admin, request, _("Force the status %s") % chosen, result)
        return None
    return confirmation_page(
        model_admin,
        request,
        queryset,
        "force_status",
        _("Force a status on the selected leads?"),
        statuses=statuses,
        chosen=chosen,
    )


ACTIONS = (resync, retry_failed, mark_converted, mark_dead, force_status, delete_from_crm)
