"""Small factories for the suite: plain functions that build the rows a test needs, nothing more."""

from __future__ import annotations

import itertools
from typing import Any

from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import models

from crmify.models import Lead
from tests.testapp.models import Subscription, UserProfile

_numbers = itertools.count(1)

#: ``CRMIFY`` for a site whose lead is a ``UserProfile`` (the seed README's example, on our test app).
PROFILE_SETTINGS: dict[str, Any] = {
    "LEAD_MODEL": "tests.testapp.models.UserProfile",
    "LEAD_MODEL_FIELDMAPPER": "tests.testapp.mappers.UserProfileFieldMapper",
    "LEAD_STATUS_MODEL": "tests.testapp.models.Subscription",
}


def user_values(**fields: Any) -> dict[str, Any]:
    """Field values for a new ``User``; every call gets a fresh username and e-mail."""
    number = next(_numbers)
    values: dict[str, Any] = {
        "username": f"user{number}",
        "email": f"user{number}@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    values.update(fields)
    return values


def make_user(**fields: Any) -> User:
    """Create and save a ``User`` (the default ``LEAD_MODEL``)."""
    return User.objects.create(**user_values(**fields))


def make_profile(user: User | None = None, **fields: Any) -> UserProfile:
    """Create and save a ``UserProfile`` (the ``LEAD_MODEL`` of ``PROFILE_SETTINGS``)."""
    values: dict[str, Any] = {"company": "Analytical Engines Ltd", "phone": "+44 20 7946 0000"}
    values.update(fields)
    return UserProfile.objects.create(user=user or make_user(), **values)


def make_subscription(
    profile: UserProfile, *, paid: bool = False, plan: str = "pro"
) -> Subscription:
    """Create and save a ``Subscription`` (the ``LEAD_STATUS_MODEL`` of ``PROFILE_SETTINGS``)."""
    return Subscription.objects.create(profile=profile, plan=plan, paid=paid)


def lead_of(instance: models.Model) -> Lead:
    """The lead that tracks ``instance``, read fresh from the database."""
    return Lead.objects.get(
        source_type=ContentType.objects.get_for_model(instance), source_id=str(instance.pk)
    )


def leads_of(*instances: models.Model) -> list[Lead]:
    return [lead_of(instance) for instance in instances]
