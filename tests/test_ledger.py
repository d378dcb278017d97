"""The ledger: every CRM call the worker makes is recorded with its operation, outcome and duration, never
with a secret, and outlives its lead."""

from __future__ import annotations

import pytest

from crmify.backends import locmem
from crmify.exceptions import TransientBackendError
from crmify.models import LedgerEntry, SyncState
from tests.engine_helpers import Configure
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)


# -- the ledger ------------------------------------------------------------------------------------------


def test_the_ledger_records_each_call_with_operation_outcome_and_duration() -> None:
    user = make_user()
    locmem.fail_next(TransientBackendError("timeout"))
    user.first_name = "Two"
    user.save()
    lead = lead_of(user)
    entries = list(lead.ledger.order_by("started_at", "id"))
    assert [(e.operation, e.outcome) for e in entries] == [
        ("create", "ok"),
        ("update", "transient"),
    ]
    assert entries[1].error == "timeout"
    assert all(e.duration_ms >= 0 and e.started_at for e in entries)


def test_the_ledger_measures_calls_of_a_backend_that_reports_nothing(configure: Configure) -> None:
    configure(BACKEND="tests.doubles.SlowPlainCRM")
    lead = lead_of(make_user())
    entry = lead.ledger.get()
    assert (entry.operation, entry.outcome) == ("sync", "ok")
    assert entry.duration_ms >= 30


def test_the_ledger_and_the_lead_never_contain_the_api_key(
    configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", secret)
    configure(BACKEND="tests.doubles.ExplodingCRM")
    lead = lead_of(make_user())
    assert lead.sync_state == SyncState.RETRYING
    assert "ConnectionResetError: peer reset the connection" in lead.last_error
    assert secret not in lead.last_error
    for entry in LedgerEntry.objects.all():
        for text in (entry.error, entry.request_summary, entry.response_summary):
            assert secret not in text
    assert LedgerEntry.objects.filter(error__contains="peer reset").count() == 1


def test_the_ledger_outlives_its_lead() -> None:
    lead = lead_of(make_user())
    lead.delete()
    entry = LedgerEntry.objects.get()
    assert entry.lead is None
    assert entry.operation == "create"
