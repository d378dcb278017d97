"""The demo's own models in the admin, next to crmify's Leads."""

from __future__ import annotations

from django.contrib import admin

from shop.models import Subscription, UserProfile


@admin.register(UserProfile)
class UserProfileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "user", "company", "plan", "signup_source", "sales_contact")
    list_select_related = ("user",)
    # The CRM decides it (shop.receivers): its help text says so, and says where to change it.
    readonly_fields = ("sales_contact",)
    search_fields = ("user__username", "user__email", "company")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "plan", "paid", "created_at")
    list_select_related = ("profile__user",)
