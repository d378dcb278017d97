"""The Lead and ledger in the Django admin (the sync-state changelist; actions and pages build on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from crmify.models import Lead, LedgerEntry

if TYPE_CHECKING:
    LeadModelAdmin = admin.ModelAdmin[Lead]
    LedgerInlineAdmin = admin.TabularInline[LedgerEntry, Lead]
else:
    LeadModelAdmin = admin.ModelAdmin
    LedgerInlineAdmin = admin.TabularInline


class LedgerInline(LedgerInlineAdmin):
    model = LedgerEntry
    extra = 0
    can_delete = False
    fields = ("started_at", "operation", "outcome", "http_status", "duration_ms", "error")
    readonly_fields = fields
    ordering = ("-started_at", "-id")

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Lead)
class LeadAdmin(LeadModelAdmin):
    list_display = (
        "__str__",
        "email",
        "status",
        "sync_state",
        "external_id",
        "last_synced_at",
        "attempts",
        "last_error",
    )
    list_filter = ("sync_state", "status", "tombstone")
    search_fields = ("email", "first_name", "last_name", "external_id")
    readonly_fields = (
        "external_id",
        "sync_state",
        "tombstone",
        "attempts",
        "next_attempt_at",
        "last_error",
        "last_synced_at",
        "queued_at",
        "fingerprint",
        "synced_fingerprint",
        "synced_values",
    )
    exclude = ("claim_token", "claimed_at", "source_type", "source_id")
    inlines = (LedgerInline,)
