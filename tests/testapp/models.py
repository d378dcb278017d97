"""Models a site would have: a profile as ``LEAD_MODEL`` and a subscription as ``LEAD_STATUS_MODEL``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from crmify.mixins import LeadStatusMixin


class UserProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    company = models.CharField(max_length=100, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    nickname = models.CharField(max_length=60, blank=True)
    extra = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.display_name()

    def display_name(self) -> str:
        return self.nickname or self.user.username


class Subscription(LeadStatusMixin, models.Model):
    profile = models.ForeignKey(UserProfile, on_delete=models.CASCADE)
    plan = models.CharField(max_length=40)
    paid = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.plan} for {self.profile}"

    def lead_status(self) -> tuple[Any, str] | None:
        return (self.profile, "Converted") if self.paid else (self.profile, "Contacted")
