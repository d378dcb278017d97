"""The mapper preview page: what the configured mapper and backend make of source rows, before any sync.

``LeadAdmin.get_urls`` serves :func:`mapper_preview_view` at ``preview/`` through ``admin_site.admin_view``
(staff login, CSRF). The logic lives in :mod:`crmify.preview`; this view only chooses rows from the request
and renders. A GET writes nothing and calls no CRM; the POST of "Compare with CRM" makes one read call
(recorded in the ledger, as every CRM call is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from crmify.preview import (
    SAMPLE_SIZE,
    Configuration,
    RowPreview,
    check_mappings,
    compare_with_crm,
    find_rows,
    load_configuration,
    preview_rows,
    sample_rows,
)

if TYPE_CHECKING:
    from crmify.admin.lead import LeadAdmin

TEMPLATE = "admin/crmify/lead/mapper_preview.html"


class RowChooserForm(forms.Form):
    """The GET form choosing rows: an id or e-mail to search, or the "sample" button."""

    q = forms.CharField(label=_("Id or e-mail"), required=False, max_length=254)
    sample = forms.BooleanField(required=False)


def _chosen_rows(
    configuration: Configuration, query: str, sample: bool
) -> tuple[list[RowPreview], bool]:
    """Previews of the rows the request chose, and whether it chose any way at all."""
    model, mapper = configuration.lead_model, configuration.mapper
    if model is None or mapper is None:
        return [], False
    if sample:
        return preview_rows(sample_rows(model, SAMPLE_SIZE), configuration), True
    if query:
        return preview_rows(find_rows(model, mapper, query), configuration), True
    return [], False


def mapper_preview_view(model_admin: LeadAdmin, request: HttpRequest) -> HttpResponse:
    """Render the mapper preview; on POST (``compare=<row pk>``) add the CRM's record of that row's lead.

    Raises ``PermissionDenied`` (403) for staff without ``crmify.preview_mapping``. Staff never choose what
    is fetched from the CRM: the CRM id comes from the row's lead in the database.
    """
    if not model_admin.has_preview_mapping_permission(request):
        raise PermissionDenied
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    configuration = load_configuration()
    compare = request.POST.get("compare", "") if request.method == "POST" else ""
    # "Compare with CRM" shows that one row again, found by its primary key, with the CRM's record.
    form = RowChooserForm({"q": compare} if compare else request.GET)
    query, sample = "", False
    if form.is_valid():
        query, sample = form.cleaned_data["q"].strip(), form.cleaned_data["sample"]
    rows, chosen = _chosen_rows(configuration, query, sample)
    if compare:
        rows = [compare_with_crm(row) if str(row.pk) == compare else row for row in rows]
    checks = (
        check_mappings(configuration.mapper, configuration.lead_model)
        if configuration.mapper is not None and configuration.lead_model is not None
        else []
    )
    opts = model_admin.model._meta
    request.current_app = model_admin.admin_site.name
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Mapper preview"),
        "opts": opts,
        "app_label": opts.app_label,
        "configuration": configuration,
        "checks": checks,
        "form": form,
        "rows": rows,
        "chosen": chosen,
        "sample_size": SAMPLE_SIZE,
    }
    return TemplateResponse(request, TEMPLATE, context)
