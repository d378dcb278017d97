"""The backfill in the admin: options, a dry run, confirm; then a progress page with cancel and resume.

``LeadAdmin.get_urls`` serves :func:`backfill_urls` through ``admin_site.admin_view`` (staff login, CSRF, no
caching); ``LeadAdmin.changelist_view`` adds :func:`backfill_changelist_context` for the changelist's
"Backfill from <users>" link. Every view checks ``crmify.run_backfill`` first and answers 403 without it.

The views only call the engine's public functions (:func:`crmify.backfill.plan`, ``start``, ``cancel``,
``resume``). The dry run is a POST (it calls the CRM, listing its leads) that writes nothing; its figures
travel to the confirm step signed, so the run keeps the report staff saw without listing the CRM again.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core import signing
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crmify import api, backfill
from crmify.admin.display import admin_path, admin_url
from crmify.backfill import (
    DEFAULT_BATCH_SIZE,
    BackfillOptions,
    BackfillOptionsError,
    BackfillPlan,
)
from crmify.backfill_report import quota_share_rows, run_counts, run_progress
from crmify.conf import crmify_settings
from crmify.exceptions import BackendError
from crmify.loading import get_lead_model
from crmify.models import BackfillRun
from crmify.secrets import redact

#: The permission every page needs (``BackfillRun.Meta.permissions``); superusers have it.
BACKFILL_PERMISSION = "crmify.run_backfill"
#: Refresh period of the progress page while the run is pending or running, in seconds.
REFRESH_SECONDS = 2
#: Runs listed on the options page.
RECENT_RUNS = 10
#: Largest chunk the form accepts: a chunk is one transaction, and a huge one holds its locks for long.
MAX_BATCH_SIZE = 10_000
#: A run that looks active but has not moved for this long has probably lost its worker: offer Resume.
STALE_AFTER = timedelta(minutes=5)
#: How long a dry run's figures stay good enough to be kept on the run its confirm starts.
PLAN_MAX_AGE = timedelta(hours=1)
_PLAN_SALT = "crmify.admin.backfill.plan"

TEMPLATE_OPTIONS = "admin/crmify/lead/backfill_options.html"
TEMPLATE_DRY_RUN = "admin/crmify/lead/backfill_dry_run.html"
TEMPLATE_PROGRESS = "admin/crmify/lead/backfill_progress.html"


class BackfillOptionsForm(forms.Form):
    """The options of a run: posted by the options page (dry run) and again, hidden, by the confirm."""

    batch_size = forms.IntegerField(
        label=gettext_lazy("Batch size"),
        min_value=1,
        max_value=MAX_BATCH_SIZE,
        initial=DEFAULT_BATCH_SIZE,
        help_text=gettext_lazy("Rows read, mapped and written per chunk (one transaction each)."),
    )
    only_missing = forms.BooleanField(
        label=gettext_lazy("Only rows without a lead"), required=False
    )
    # Native date inputs: the page works without the admin's calendar JavaScript.
    joined_after = forms.DateField(
        label=gettext_lazy("Joined on or after"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    joined_before = forms.DateField(
        label=gettext_lazy("Joined before"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        after, before = cleaned.get("joined_after"), cleaned.get("joined_before")
        if after and before and after >= before:
            self.add_error("joined_before", _("Choose a day after “joined on or after”."))
        if not self.errors:
            try:
                # Builds the queryset without running it: the engine refuses what cannot select rows.
                self.options().queryset()
            except BackfillOptionsError as exc:
                self.add_error(None, str(exc))
        return cleaned

    def options(self) -> BackfillOptions:
        """The engine's options from the cleaned data; only after ``is_valid()``."""
        data = self.cleaned_data
        return BackfillOptions(
            batch_size=data["batch_size"],
            only_missing=data["only_missing"],
            joined_after=data.get("joined_after"),
            joined_before=data.get("joined_before"),
        )


# -- the signed dry run ------------------------------------------------------------------------------


def sign_plan(report: BackfillPlan) -> str:
    """The dry run's figures for the confirm form's hidden field, signed so staff cannot forge them."""
    return signing.dumps(report.to_json(), salt=_PLAN_SALT, compress=True)


def unsign_plan(token: str, options: BackfillOptions) -> BackfillPlan | None:
    """The dry run a confirm carries, or None if it is missing, forged, stale or for other options.

    A None only costs the run its kept report: the run itself does not depend on it.
    """
    try:
        data = signing.loads(token, salt=_PLAN_SALT, max_age=PLAN_MAX_AGE)
    except signing.BadSignature:
        return None
    known = {f.name for f in fields(BackfillPlan)}
    if not isinstance(data, dict) or set(data) != known or data["options"] != options.to_json():
        return None
    return BackfillPlan(**data)


# -- pages -------------------------------------------------------------------------------------------


def has_backfill_permission(request: HttpRequest) -> bool:
    return request.user.has_perm(BACKFILL_PERMISSION)


def _check(request: HttpRequest, *methods: str) -> HttpResponse | None:
    """Permission first (403), then the method (405); None when the view may go on."""
    if not has_backfill_permission(request):
        raise PermissionDenied
    if request.method not in methods:
        return HttpResponseNotAllowed(list(methods))
    return None


def backfill_title() -> str:
    """ "Backfill from users": named after ``LEAD_MODEL``, the rows a backfill reads."""
    try:
        name = get_lead_model()._meta.verbose_name_plural
    except ImproperlyConfigured:
        return _("Backfill")  # the system checks say what is wrong with LEAD_MODEL
    return _("Backfill from %(name)s") % {"name": name}


def _render(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    template: str,
    title: str,
    context: dict[str, Any],
) -> TemplateResponse:
    """A page inside the admin's frame, with the breadcrumbs of the Lead changelist."""
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(
        request,
        template,
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "opts": model_admin.opts,
            "backfill_title": backfill_title(),
            "backfill_url": admin_url(model_admin, "backfill"),
            **context,
        },
    )


def _options_page(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    form: BackfillOptionsForm,
    error: str = "",
) -> TemplateResponse:
    runs = [
        (run, admin_url(model_admin, "backfill_run", run.pk))
        for run in BackfillRun.objects.select_related("created_by")[:RECENT_RUNS]
    ]
    context = {"form": form, "error": error, "runs": runs}
    return _render(model_admin, request, TEMPLATE_OPTIONS, backfill_title(), context)


def backfill_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> HttpResponse:
    """GET: the options and the recent runs. POST: the dry run; POST with ``confirm``: start the run.

    The dry run lists the CRM's leads (the only calls it makes) and writes nothing; a listing that fails
    shows its (redacted) message on the options page. The confirm validates the options again and
    redirects to the new run's progress page.
    """
    if (refused := _check(request, "GET", "POST")) is not None:
        return refused
    if request.method == "GET":
        return _options_page(model_admin, request, BackfillOptionsForm())
    form = BackfillOptionsForm(request.POST)
    if not form.is_valid():
        return _options_page(model_admin, request, form)
    options = form.options()
    if request.POST.get("confirm") == "yes":
        report = unsign_plan(request.POST.get("plan", ""), options)
        run = backfill.start(options, user=request.user, report=report)
        model_admin.message_user(
            request,
            _("Backfill run %(id)s started: %(total)s rows to scan.")
            % {"id": run.pk, "total": f"{run.total_estimate:,}"},
            messages.SUCCESS,
        )
        return redirect(admin_url(model_admin, "backfill_run", run.pk))
    try:
        report = backfill.plan(options)
    except (BackendError, ImproperlyConfigured) as exc:
        error = _("The CRM could not be listed: %s") % redact(str(exc))
        return _options_page(model_admin, request, form, error)
    context = {
        "form": form,
        # The confirm's copy of the options, hidden: without ids, which the visible form owns.
        "hidden_form": BackfillOptionsForm(request.POST, auto_id=False),
        "rows": report.rows(),
        "plan": sign_plan(report),
    }
    return _render(model_admin, request, TEMPLATE_DRY_RUN, _("Dry run"), context)


def _may_resume(run: BackfillRun) -> bool:
    """Cancelled or failed; or active without a move for ``STALE_AFTER`` (its worker died)."""
    if run.state in (BackfillRun.State.CANCELLED, BackfillRun.State.FAILED):
        return True
    return run.is_active and run.updated_at < timezone.now() - STALE_AFTER


def backfill_quota_rows() -> list[tuple[str, str]]:
    """Today's use of the CRM's quota by each share, for the progress page (``quota_share_rows``)."""
    try:
        state = api.crm_health()
    except ImproperlyConfigured:  # the changelist's banner says why; the page still shows the run
        return []
    return quota_share_rows(state, crmify_settings.LIVE_QUOTA_SHARE)


def backfill_run_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, run_id: int
) -> HttpResponse:
    """GET: one run's progress in two parts, the rows mapped and the leads delivered to the CRM. The page
    refreshes itself (a meta refresh, no JavaScript) until every lead the run queued reached a final
    state: only then does it say "Finished"."""
    if (refused := _check(request, "GET")) is not None:
        return refused
    run = get_object_or_404(BackfillRun.objects.select_related("created_by"), pk=run_id)
    progress = run_progress(run)
    context = {
        "run": run,
        "progress": progress,
        "counts": [(label, f"{count:,}") for label, count in run_counts(run)],
        "scanned": f"{run.scanned:,}",
        "total": f"{run.total_estimate:,}",
        "refresh": None if progress.settled else REFRESH_SECONDS,
        "report_rows": BackfillPlan(**run.report).rows() if run.report else None,
        "quota_rows": backfill_quota_rows(),
        "options": BackfillOptions.from_json(run.options),
        "cancel_url": admin_url(model_admin, "backfill_cancel", run.pk) if run.is_active else None,
        "resume_url": (
            admin_url(model_admin, "backfill_resume", run.pk) if _may_resume(run) else None
        ),
    }
    title = _("Backfill run %s") % run.pk
    return _render(model_admin, request, TEMPLATE_PROGRESS, title, context)


def backfill_cancel_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, run_id: int
) -> HttpResponse:
    """POST: stop the run after its current chunk, then back to its progress page."""
    if (refused := _check(request, "POST")) is not None:
        return refused
    run = get_object_or_404(BackfillRun, pk=run_id)
    if backfill.cancel(run):
        text = _("Backfill run %s is cancelled; it stops after the chunk in progress.") % run.pk
        model_admin.message_user(request, text, messages.SUCCESS)
    else:
        text = _("Backfill run %(id)s was not running (%(state)s).")
        state = run.get_state_display().lower()
        model_admin.message_user(request, text % {"id": run.pk, "state": state}, messages.WARNING)
    return redirect(admin_url(model_admin, "backfill_run", run.pk))


def backfill_resume_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, run_id: int
) -> HttpResponse:
    """POST: go on from the run's last checkpoint, then back to its progress page."""
    if (refused := _check(request, "POST")) is not None:
        return refused
    run = get_object_or_404(BackfillRun, pk=run_id)
    if backfill.resume(run):
        text = _("Backfill run %(id)s resumes after %(scanned)s of %(total)s rows.") % {
            "id": run.pk,
            "scanned": f"{run.scanned:,}",
            "total": f"{run.total_estimate:,}",
        }
        model_admin.message_user(request, text, messages.SUCCESS)
    else:
        text = _("Backfill run %s is finished: there is nothing to resume.") % run.pk
        model_admin.message_user(request, text, messages.WARNING)
    return redirect(admin_url(model_admin, "backfill_run", run.pk))


# -- wiring ------------------------------------------------------------------------------------------


def backfill_urls(model_admin: admin.ModelAdmin[Any]) -> list[URLPattern]:
    """The backfill pages for ``LeadAdmin.get_urls``, before ``super().get_urls()`` (whose catch-all
    ``<path:object_id>/`` would take them): ``<app>_<model>_backfill``, ``_backfill_run``,
    ``_backfill_cancel`` and ``_backfill_resume``."""
    return [
        admin_path(model_admin, "backfill/", backfill_view, "backfill"),
        admin_path(model_admin, "backfill/<int:run_id>/", backfill_run_view, "backfill_run"),
        admin_path(
            model_admin, "backfill/<int:run_id>/cancel/", backfill_cancel_view, "backfill_cancel"
        ),
        admin_path(
            model_admin, "backfill/<int:run_id>/resume/", backfill_resume_view, "backfill_resume"
        ),
    ]


def backfill_changelist_context(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest
) -> dict[str, Any]:
    """For ``LeadAdmin.changelist_view``: the link to the backfill (None without the permission)."""
    allowed = has_backfill_permission(request)
    return {
        "crmify_backfill_url": admin_url(model_admin, "backfill") if allowed else None,
        "crmify_backfill_label": backfill_title() if allowed else "",
    }
