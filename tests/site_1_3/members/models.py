"""The site's people (``LEAD_MODEL``) and what they pay for (``LEAD_STATUS_MODEL``), written against 1.3.0."""

from django.contrib.auth.models import User
from django.db import models

from crmify.mixins import LeadStatusMixin


class UserProfile(models.Model):
    auth = models.OneToOneField(User, related_name="profile", on_delete=models.CASCADE)
    street = models.CharField(max_length=200, blank=True, default="")
    city = models.CharField(max_length=100, blank=True, default="")
    region = models.CharField(max_length=50, blank=True, default="")

    def __str__(self) -> str:
        return self.auth.get_username()


class Subscription(LeadStatusMixin, models.Model):
    TRIAL = "trial"
    PAID = "paid"
    GIFT = "gift"
    PLANS = [(TRIAL, "Trial"), (PAID, "Paid"), (GIFT, "Gift")]

    profile = models.ForeignKey(UserProfile, related_name="subscriptions", on_delete=models.CASCADE)
    plan = models.CharField(max_length=20, choices=PLANS, default=TRIAL)

    def __str__(self) -> str:
        return f"{self.plan} for {self.profile}"

    def lead_status(self):
        # 1.3.0 style: the mixin's constants, a (profile, status) pair, or None to leave the lead alone.
        if not self.profile.auth.is_active:
            return self.profile, self.DEAD_LEAD
        if self.plan == self.PAID:
            return self.profile, self.CONVERTED_LEAD
        if self.plan == self.TRIAL:
            return self.profile, self.NEW_LEAD
        return None
