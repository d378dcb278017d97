"""Fixtures and helpers for the admin tests: users with and without crmify's permissions, leads in any
state, the admin's messages and the export form. Imported by ``tests/test_admin.py``,
``tests/test_admin_backfill.py``, ``tests/test_admin_preview.py``, ``tests/test_import_export.py`` and
``tests/test_security.py``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crmify.models import Lead, LedgerEntry

_numbers = itertools.count(1)

#: crmify's custom permissions, by the codename ``Lead.Meta`` gives them.
CUSTOM_PERMISSIONS = ("sync_lead", "delete_from_crm", "change_lead_status", "preview_mapping")

EXPORT = reverse("admin:crmify_lead_export")
#: The index of each format in the export form (LeadImportExportMixin.export_formats).
EXPORT_FORMAT = {"csv": "0", "xlsx": "1"}


def make_lead(**fields: Any) -> Lead:
    """A lead without a source row (as an import would make), in whatever state ``fields`` say."""
    number = next(_numbers)
    values: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": f"Lovelace{number}",
        "email": f"lead{number}@example.com",
        "status": "NotContacted",
        "fingerprint": f"fp{number}",
    }
    values.update(fields)
    return Lead.objects.create(**values)


def make_ledger(lead: Lead, count: int, **fields: Any) -> list[LedgerEntry]:
    """``count`` ledger entries for ``lead``, one a minute, the last one the newest."""
    start = timezone.now() - timedelta(minutes=count)
    return LedgerEntry.objects.bulk_create(
        LedgerEntry(
            lead=lead,
            operation=fields.get("operation", "update"),
            started_at=start + timedelta(minutes=i),
            outcome=fields.get("outcome", LedgerEntry.Outcome.OK),
            http_status=fields.get("http_status", 200),
            duration_ms=i,
            request_summary=f"PUT /Leads call {i}",
            response_summary=f"answer {i}",
        )
        for i in range(count)
    )


def crmify_permissions(*codenames: str) -> list[Permission]:
    """crmify's permissions (``Lead``'s and ``BackfillRun``'s) with these codenames."""
    return list(Permission.objects.filter(content_type__app_label="crmify", codename__in=codenames))


def make_staff(username: str, *codenames: str) -> User:
    """A staff user holding only crmify's ``codenames``; no password (the tests use ``force_login``)."""
    user = User.objects.create_user(username, f"{username}@example.com", None, is_staff=True)
    user.user_permissions.set(crmify_permissions(*codenames))
    return user


def texts(response: Any) -> list[str]:
    """The admin's messages shown with ``response``."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def export(client: Client, fmt: str, query: str = "") -> Any:
    """Open the export page (with the changelist's filters in the URL) and submit it, every column on."""
    page = client.get(EXPORT + query)
    assert page.status_code == 200
    form = page.context["form"]
    data = {
        name: "on"
        for name, field in form.fields.items()
        if getattr(field, "is_selectable_field", False)
    }
    return client.post(EXPORT + query, {**data, "resource": "0", "format": EXPORT_FORMAT[fmt]})


@pytest.fixture
def people(db: Any) -> dict[str, User]:
    """A superuser, staff who may only look at and edit leads, and staff who may also sync.

    No passwords (hashing one costs a second; the tests log in with ``force_login``).

    Users are the default ``LEAD_MODEL``: the leads their creation made are removed so each test starts
    with only its own.
    """
    users = {
        "root": User.objects.create_superuser("root", "root@example.com", None),
        "viewer": make_staff("viewer", "view_lead", "change_lead"),
        "syncer": make_staff("syncer", "view_lead", "change_lead", "sync_lead"),
    }
    Lead.objects.all().delete()
    return users


@pytest.fixture
def login(client: Client, people: dict[str, User]) -> Callable[[str], Client]:
    """``login("viewer")``: the test client, logged in as one of :func:`people`."""

    def as_user(name: str) -> Client:
        client.force_login(people[name])  # saves last_login: the user's lead comes back; remove it
        Lead.objects.filter(source_id__in=[str(user.pk) for user in people.values()]).delete()
        return client

    return as_user
