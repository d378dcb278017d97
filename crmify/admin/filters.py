"""List filters of the Lead changelist that Django does not ship: yes/no questions about a lead.

Used by ``LeadAdmin.list_filter``; each narrows the queryset with one indexed-or-cheap condition, so the
changelist's query count stays the same whatever is chosen.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from crmify.models import Lead


class YesNoFilter(admin.SimpleListFilter):
    """A filter answering one question with Yes or No; subclasses give the question as a ``Q``."""

    #: The condition "Yes" stands for; "No" is its negation.
    condition: Q

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Lead]) -> QuerySet[Lead]:
        if self.value() == "yes":
            return queryset.filter(self.condition)
        if self.value() == "no":
            return queryset.exclude(self.condition)
        return queryset


class HasCrmIdFilter(YesNoFilter):
    title = _("has a CRM id")
    parameter_name = "has_crm_id"
    condition = ~Q(external_id="")


class HasErrorFilter(YesNoFilter):
    title = _("has an error")
    parameter_name = "has_error"
    condition = ~Q(last_error="")


class DeletedInCrmFilter(YesNoFilter):
    """Leads whose CRM record a salesperson deleted in the CRM (``crmify.inbound``): tombstones until
    staff re-sync them."""

    title = _("deleted in the CRM")
    parameter_name = "deleted_in_crm"
    condition = Q(deleted_in_crm_at__isnull=False)
