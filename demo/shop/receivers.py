"""The shop listening to crmify: what a salesperson does in the CRM comes back through
``crmify.signals.lead_changed_in_crm``, and the shop acts on it.

Connected by ``ShopConfig.ready()``. Saving the profile here sends nothing back to the CRM: ``sales_contact``
is not mapped, so the lead's values do not change (no echo).
"""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from crmify.conf import crmify_settings
from crmify.models import Lead
from crmify.signals import lead_changed_in_crm
from crmify.tracking import source_row
from crmify.transitions import status_key
from shop.models import UserProfile


@receiver(lead_changed_in_crm, sender=Lead, dispatch_uid="shop.follow_the_crm")
def follow_the_crm(sender: type[Lead], lead: Lead, changes: dict[str, Any], **kwargs: Any) -> None:
    """A lead disqualified in the CRM is no longer contacted by sales; moved on again, it is."""
    if "status" not in changes:
        return
    profile = source_row(lead)
    if not isinstance(profile, UserProfile):
        return
    _, status = changes["status"]
    wanted = status_key(str(status)) != status_key(crmify_settings.LEAD_DEAD_STATUS)
    if profile.sales_contact != wanted:
        profile.sales_contact = wanted
        profile.save(update_fields=["sales_contact"])
