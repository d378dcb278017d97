"""The sync health page: the CRM's current state, four charts and the polls of the CRM ("Changes from the
CRM"), linked from the Lead changelist.

``LeadAdmin.get_urls`` serves :func:`health_view` through ``admin_site.admin_view``; staff who may view
leads may see it. The figures come from :mod:`crmify.health` (shared state and bounded, aggregated
queries: no CRM call, the same queries whatever the size of the ledger); the charts are SVG drawn by the
template from :mod:`crmify.admin.charts`, with no JavaScript.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _

from crmify import health
from crmify.admin.charts import Chart, bar_chart

TEMPLATE = "admin/crmify/lead/health.html"
#: The page reloads itself (a meta refresh) this often, in seconds: the charts move by the minute.
REFRESH_SECONDS = 60


def health_charts() -> list[Chart]:
    """The page's four charts, each from one query of :mod:`crmify.health`."""
    calls = health.calls_per_minute()
    leads = health.leads_per_hour()
    latency = health.latency_per_hour()
    days = health.quota_per_day()
    quota = health.daily_quota()
    total_calls = sum(sum(point.values()) for _label, point in calls.points)
    synced = sum(point["synced"] for _label, point in leads.points)
    failed = sum(point["failed"] for _label, point in leads.points)
    today = days.points[-1][1]["calls"]
    return [
        bar_chart(
            "calls",
            _("CRM calls per minute, last hour, by outcome"),
            calls,
            {"ok": _("OK"), "transient": _("transient error"), "permanent": _("permanent error")},
            stacked=True,
            label_every=10,
            summary=_("%(count)d calls in the last hour.") % {"count": total_calls},
        ),
        bar_chart(
            "leads",
            _("Leads synced and failed per hour, last 24 hours"),
            leads,
            {"synced": _("synced"), "failed": _("failed")},
            stacked=False,
            label_every=3,
            summary=_("%(synced)d synced, %(failed)d failed in the last 24 hours.")
            % {"synced": synced, "failed": failed},
        ),
        bar_chart(
            "latency",
            _("Commit-to-CRM latency per hour (p50, p90, p99), last 24 hours"),
            latency,
            {"p50": "p50", "p90": "p90", "p99": "p99"},
            stacked=False,
            unit=" s",
            label_every=3,
            summary=_(
                "From the commit that queued a lead to its sync; each percentile is the upper "
                "bound of its bucket."
            ),
        ),
        bar_chart(
            "quota",
            _("Daily quota used, last %(days)d days") % {"days": health.QUOTA_DAYS},
            days,
            {"calls": _("calls")},
            stacked=True,
            limit=quota,
            limit_label=_("quota %(quota)s") % {"quota": f"{quota:,}"} if quota else "",
            summary=(
                _("Today: %(today)d of %(quota)s calls.") % {"today": today, "quota": f"{quota:,}"}
                if quota
                else _("Today: %(today)d calls (no daily quota known).") % {"today": today}
            ),
        ),
    ]


def health_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> HttpResponse:
    """GET: the CRM's state and the charts. Staff who may view leads may see it (403 otherwise; then 405
    for any other method)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    request.current_app = model_admin.admin_site.name
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Sync health"),
        "opts": model_admin.opts,
        "state": health.crm_state(),
        "charts": health_charts(),
        "pull": health.pull_state(),
        "refresh": REFRESH_SECONDS,
    }
    return TemplateResponse(request, TEMPLATE, context)
