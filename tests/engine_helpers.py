"""What the engine's tests read back: the SQL crmify ran, the calls the locmem CRM received, a retry made
due. Shared by the per-module engine tests (``test_tracking``, ``test_signals``, ``test_queue``,
``test_worker``, ``test_ledger``, ``test_api``, ``test_sweeper``)."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crmify.backends import locmem
from crmify.models import Lead

#: The ``configure`` fixture's type (``tests/conftest.py``).
Configure = Callable[..., None]

#: For a test in a module of plain database tests that needs real commits: the sync runs on commit, with
#: the immediate Tasks backend of the test settings.
after_commit = pytest.mark.django_db(transaction=True)


def crmify_queries(queries: CaptureQueriesContext) -> list[str]:
    """The SQL crmify ran: statements on its own table."""
    return [q["sql"] for q in queries.captured_queries if "crmify_lead" in q["sql"]]


def writes(sql: list[str]) -> list[str]:
    return [s for s in sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def make_due(lead: Lead) -> None:
    """Pretend the retry time has come."""
    Lead.objects.filter(pk=lead.pk).update(
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=1)
    )


def operations() -> list[str]:
    return [call.operation for call in locmem.calls]
