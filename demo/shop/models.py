"""The demo site's own models, in the seed README's style: a profile is the CRM lead (``LEAD_MODEL``) and
a subscription moves its status (``LEAD_STATUS_MODEL``, a ``LeadStatusMixin``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from crmify.mixins import LeadStatusMixin


class UserProfile(models.Model):
    """One per customer account; crmify maps it (with its user) to a lead and syncs it on save."""

    class Plan(models.TextChoices):
        FREE = "Free"
        PLUS = "Plus"
        PRO = "Pro"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    company = models.CharField(max_length=100, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    # A free-text column on purpose: the seed puts a plan here that the CRM's dropdown does not offer,
    # so the admin's "failed" filter shows the CRM's own refusal.
    plan = models.CharField(max_length=40, blank=True, default=Plan.FREE)
    signup_source = models.CharField(max_length=40, blank=True)
    # Not sent to the CRM: the CRM decides it. A salesperson who disqualifies the lead in the CRM turns it
    # off (``shop.receivers``), one who moves the lead on turns it back on.
    sales_contact = models.BooleanField(
        default=True,
        help_text="Set from the CRM: off while the lead is disqualified there. Change the lead's status "
        "in the CRM to change it.",
    )

    def __str__(self) -> str:
        return self.user.get_full_name() or self.user.username


class Subscription(LeadStatusMixin, models.Model):
    """A purchase: saving a paid one converts the buyer's lead ("Basic Sales Funnel")."""

    profile = models.ForeignKey(UserProfile, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.CharField(max_length=40, choices=UserProfile.Plan.choices)
    paid = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.plan} for {self.profile}"

    def lead_status(self) -> tuple[Any, str] | None:
        """Called by crmify after each save: a paid subscription converts the lead, an unpaid one
        leaves it alone."""
        return (self.profile, "Converted") if self.paid else None
