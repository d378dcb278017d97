"""The Lead in the Django admin: the sync-state changelist, its actions, the lead page with its ledger.

Columns and links come from ``display``, the summary bar and banner from ``summary``, the actions from
``actions``, the "Sync now" and "Compare with CRM" pages from ``views``, the mapper preview from
``preview`` and the Import and Export buttons and pages from ``import_export``. Everything that changes
a lead goes through ``crmify.api``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from crmify import api
from crmify.admin import actions, views
from crmify.admin.backfill import backfill_changelist_context, backfill_urls
from crmify.admin.display import (
    admin_path,
    admin_url,
    configured_backend,
    crm_id_link,
    deleted_in_crm_text,
    error_details,
    refusal_text,
    relative_time,
    source_link,
    state_badge,
    status_with_refusal,
)
from crmify.admin.filters import DeletedInCrmFilter, HasCrmIdFilter, HasErrorFilter
from crmify.admin.health import health_view
from crmify.admin.import_export import LeadImportExportMixin
from crmify.admin.preview import mapper_preview_view
from crmify.admin.summary import banner_context, changelist_context
from crmify.admin.support import support_summary
from crmify.loading import get_mapper
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead, LedgerEntry, SyncState
from crmify.tracking import source_model

if TYPE_CHECKING:
    LeadModelAdmin = admin.ModelAdmin[Lead]
else:
    LeadModelAdmin = admin.ModelAdmin

#: Ledger entries per page on the lead's page.
LEDGER_PAGE_SIZE = 20
#: The query parameter of the ledger's page (the change form keeps its own parameters beside it).
LEDGER_PAGE_PARAMETER = "ledger_page"

EDITABLE_FIELDS = (*MAPPABLE_FIELDS, "custom_fields")
SYNC_FIELDS = (
    "refused_status",
    "crm_id",
    "sync_state_badge",
    "tombstone",
    "deleted_in_crm",
    "crm_modified_at",
    "attempts",
    "next_attempt_at",
    "last_error",
    "last_synced_at",
    "queued_at",
    "updated_at",
)
INTERNAL_FIELDS = ("fingerprint", "synced_fingerprint", "synced_values")


def fields_from_source() -> set[str]:
    """The lead fields the mapper fills from the source row (custom fields count as one)."""
    try:
        mapper = get_mapper()
    except ImproperlyConfigured:
        return set(
            EDITABLE_FIELDS
        )  # the checks report it; staff must not edit what a fixed mapper fills
    return {
        "custom_fields" if target.startswith(CUSTOM_FIELD_PREFIX) else target
        for target in mapper.filled_fields()
        if target in EDITABLE_FIELDS or target.startswith(CUSTOM_FIELD_PREFIX)
    }


@admin.register(Lead)
class LeadAdmin(LeadImportExportMixin, LeadModelAdmin):
    """Staff's view of what is synced, waiting or failed, and the buttons to fix it.

    Import and export (files of leads, previewed then confirmed) come from ``LeadImportExportMixin``.
    """

    list_display = (
        "name",
        "email",
        "funnel_status",
        "sync_state_badge",
        # Beside the state it explains, so it is on screen at laptop widths; it wraps when opened.
        "error_start",
        "crm_id",
        "last_synced",
        "attempts",
        "source",
    )
    list_filter = (
        "sync_state",
        "status",
        HasCrmIdFilter,
        HasErrorFilter,
        DeletedInCrmFilter,
        ("last_synced_at", admin.DateFieldListFilter),
    )
    search_fields = ("email", "first_name", "last_name", "external_id")
    # No column follows a foreign key: the source's model comes from the content-type cache.
    list_select_related = False
    actions = actions.ACTIONS
    exclude = ("claim_token", "claimed_at", "source_type", "source_id", "source_fingerprint")
    readonly_fields = (*SYNC_FIELDS, *INTERNAL_FIELDS, "legacy_values")

    def has_delete_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        # Deleting the local row would orphan its CRM record: "Delete from CRM" (a tombstone) instead.
        return False

    # -- permissions (the custom ones of Lead.Meta; superusers have them all) -------------------------

    def _has_perm(self, request: HttpRequest, codename: str) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_sync_permission(self, request: HttpRequest) -> bool:
        """Re-sync, retry, "Sync now" and "Compare with CRM" (the last two call the CRM)."""
        return self._has_perm(request, "sync_lead")

    def send_waiting_url(self, request: HttpRequest) -> str | None:
        """Where "Send waiting leads now" posts, for staff with ``sync_lead``; None hides the button."""
        return admin_url(self, "send_waiting") if self.has_sync_permission(request) else None

    def has_delete_from_crm_permission(self, request: HttpRequest) -> bool:
        return self._has_perm(request, "delete_from_crm")

    def has_change_lead_status_permission(self, request: HttpRequest) -> bool:
        return self._has_perm(request, "change_lead_status")

    def has_preview_mapping_permission(self, request: HttpRequest) -> bool:
        return self._has_perm(request, "preview_mapping")

    def has_force_lead_status_permission(self, request: HttpRequest) -> bool:
        """ "Force a status…": may move leads back in the funnel, which no automatic change does."""
        return self._has_perm(request, "force_lead_status")

    # -- columns ----------------------------------------------------------------------------------------

    @admin.display(description=gettext_lazy("name"), ordering="last_name")
    def name(self, lead: Lead) -> str:
        return str(lead)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def funnel_status(self, lead: Lead) -> SafeString | str:
        return status_with_refusal(lead)

    @admin.display(description=gettext_lazy("status change refused"))
    def refused_status(self, lead: Lead) -> SafeString | str:
        return refusal_text(lead)

    @admin.display(description=gettext_lazy("sync state"), ordering="sync_state")
    def sync_state_badge(self, lead: Lead) -> SafeString:
        return state_badge(
            lead.sync_state,
            waiting_for_crm=lead.waiting_for_crm,
            deleted_in_crm=lead.deleted_in_crm_at is not None,
        )

    @admin.display(description=gettext_lazy("deleted in the CRM"))
    def deleted_in_crm(self, lead: Lead) -> str:
        return deleted_in_crm_text(lead)

    @admin.display(description=gettext_lazy("CRM id"), ordering="external_id")
    def crm_id(self, lead: Lead) -> SafeString | str:
        return crm_id_link(configured_backend(), lead.external_id)

    @admin.display(description=gettext_lazy("last synced"), ordering="last_synced_at")
    def last_synced(self, lead: Lead) -> SafeString | str:
        return relative_time(lead.last_synced_at)

    @admin.display(description=gettext_lazy("last error"))
    def error_start(self, lead: Lead) -> SafeString | str:
        return error_details(lead.last_error)

    @admin.display(description=gettext_lazy("source"))
    def source(self, lead: Lead) -> SafeString | str:
        return source_link(self.admin_site, lead)

    # -- URLs and pages ---------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        return [
            *backfill_urls(self),
            admin_path(self, "preview/", mapper_preview_view, "mapper_preview"),
            admin_path(self, "send-waiting/", views.send_waiting_view, "send_waiting"),
            admin_path(self, "health/", health_view, "health"),
            admin_path(self, "<path:object_id>/sync-now/", views.sync_now_view, "sync_now"),
            admin_path(self, "<path:object_id>/compare/", views.compare_view, "compare"),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The changelist with the summary bar, the CRM banner and the links to the preview and backfill."""
        context = {
            **changelist_context(request.GET, self.send_waiting_url(request)),
            "crmify_preview_url": admin_url(self, "mapper_preview")
            if self.has_preview_mapping_permission(request)
            else None,
            **backfill_changelist_context(self, request),
            "crmify_health_url": admin_url(self, "health"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    # -- the lead's page --------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Lead | None = None) -> Any:
        description = None
        if obj is not None and source_model(obj) is not None:
            description = format_html(
                "{} {}. {}",
                _("Values come from"),
                source_link(self.admin_site, obj),
                _("The fields it fills are read-only here: edit them there."),
            )
        # Only a lead carried over from django-crmify 1.3 with values 1.3 kept and crmify 2 has no field for.
        legacy = (
            ((_("Kept from django-crmify 1.3"), {"fields": ("legacy_values",)}),)
            if obj is not None and obj.legacy_values
            else ()
        )
        return (
            (_("Lead"), {"fields": EDITABLE_FIELDS, "description": description}),
            *legacy,
            (_("Sync"), {"fields": SYNC_FIELDS}),
            (_("Internals"), {"fields": INTERNAL_FIELDS, "classes": ("collapse",)}),
        )

    def _source_fields(self, obj: Lead | None) -> dict[str, str]:
        """Fields the lead's source row fills, with the note saying so (read-only on the lead's page)."""
        model = source_model(obj) if obj is not None else None
        if model is None:
            return {}
        note = _("Comes from %(model)s; edit it there.") % {"model": model._meta.verbose_name}
        return dict.fromkeys(sorted(fields_from_source()), note)

    def get_readonly_fields(self, request: HttpRequest, obj: Lead | None = None) -> Any:
        return (*self.readonly_fields, *self._source_fields(obj))

    def get_form(
        self, request: HttpRequest, obj: Lead | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm[Lead]]:
        kwargs.setdefault("help_texts", self._source_fields(obj))
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Lead, form: Any, change: bool) -> None:
        """Through the engine, so an edit that changes what the CRM should hold is queued."""
        api.save_lead(obj)

    def ledger_page(self, request: HttpRequest, lead: Lead) -> Page[LedgerEntry]:
        """One page of the lead's CRM calls, latest first."""
        # A row of a batch call says how many leads shared the call (their rows carry its id).
        batch_leads = (
            LedgerEntry.objects.filter(batch=OuterRef("batch"))
            .values("batch")
            .annotate(leads=Count("lead", distinct=True))
            .values("leads")
        )
        entries: QuerySet[LedgerEntry] = (
            LedgerEntry.objects.filter(lead=lead)
            .annotate(batch_leads=Subquery(batch_leads))
            .order_by("-started_at", "-id")
        )
        return Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get(LEDGER_PAGE_PARAMETER))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Lead | None = None,
    ) -> HttpResponse:
        """The lead's page, with its ledger, the CRM banner and the "Sync now"/"Compare" buttons.

        A failed lead's page opens with why: the whole last error, the ledger and a "Copy for support"
        block, above the form's fields.
        """
        if obj is not None and obj.pk is not None:
            can_sync = self.has_sync_permission(request)
            ledger = self.ledger_page(request, obj)
            failed = obj.sync_state == SyncState.FAILED
            backend = configured_backend()
            context.update(
                **banner_context(self.send_waiting_url(request)),
                crmify_failed=failed,
                crmify_support=support_summary(
                    obj, ledger.object_list, backend.display_name if backend else ""
                )
                if failed
                else "",
                ledger=ledger,
                ledger_page_parameter=LEDGER_PAGE_PARAMETER,
                crmify_sync_now_url=admin_url(self, "sync_now", obj.pk) if can_sync else None,
                crmify_compare_url=admin_url(self, "compare", obj.pk) if can_sync else None,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)
