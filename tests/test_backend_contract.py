"""The backend contract: the engine always holds a ``BaseBackend`` (a plain class wrapped, still seen as the
site's class), optional features are hooks with safe defaults behind flags, and generic code (the checks,
``crmify_check``, the preview, the backfill's dry run) asks the hooks instead of probing the backend."""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from typing import Any, ClassVar

import pytest
from django.core.management import CommandError, call_command

from crmify import api
from crmify.admin.display import crm_record_url
from crmify.backends import as_base_backend, get_backend, locmem
from crmify.backends.base import BaseBackend, ConnectionCheck, CRMBackend, PlainBackend
from crmify.backends.locmem import LocmemBackend
from crmify.backfill import BackfillOptions, plan
from crmify.exceptions import PermanentBackendError
from crmify.mappers import DjangoUserFieldMapper
from crmify.models import Lead
from crmify.preview import preview_row
from crmify.worker import current_backend
from tests.doubles import PlainCRM
from tests.factories import lead_of, make_user
from tests.test_checks import crmify_messages


class HookNamedCRM(CRMBackend):
    """A 1.3.0 backend whose own methods happen to carry names of today's optional hooks."""

    supports_fetch = True
    calls: ClassVar[list[str]] = []

    def sync_lead(self, lead: Lead) -> str:
        return "1"

    def delete_lead(self, lead_id: str) -> bool:
        return True

    def check(self, lead_id: str) -> bool:  # its own helper, not crmify's system-check hook
        HookNamedCRM.calls.append("check")
        return True

    def health(self) -> str:
        HookNamedCRM.calls.append("health")
        return "fine"

    def record_url(self, lead_id: str) -> str:
        HookNamedCRM.calls.append("record_url")
        return "https://crm.example/" + lead_id


class ConnectionCheckedCRM(LocmemBackend):
    """A site's backend offering the connection check under today's name."""

    supports_connection_check = True

    def check_connection(self, status_names: Sequence[str]) -> list[ConnectionCheck]:
        return [ConnectionCheck(f"status {name!r}", True, "known") for name in status_names]


class VerifiedCRM(LocmemBackend):
    """A site's backend written when the connection check was called ``verify()``."""

    def verify(self, status_names: list[str]) -> list[tuple[str, bool, str]]:
        return [("API key", True, "accepted"), ("status 'Converted'", False, "unknown")]


class PacedCRM(LocmemBackend):
    """A CRM whose pace and daily limit the backend knows itself, with no options."""

    def requests_per_second(self) -> float:
        return 4.0

    def daily_quota(self) -> int:
        return 10


class FillingCRM(LocmemBackend):
    """A CRM that requires a last name and fills a missing one."""

    def missing_last_name(self, lead: Lead) -> str:
        return "(none given)"


# -- the engine always holds a BaseBackend ---------------------------------------------------------------


def test_the_engine_holds_a_base_backend_that_is_still_the_plain_class_the_site_wrote(
    configure: Any,
) -> None:
    configure(BACKEND="tests.doubles.PlainCRM")
    backend = current_backend()
    assert isinstance(backend, BaseBackend) and isinstance(backend, PlainCRM)
    assert isinstance(backend, PlainBackend) and isinstance(backend.wrapped, PlainCRM)
    assert api.crm_backend() is backend
    assert (backend.display_name, backend.configured_class) == ("PlainCRM", PlainCRM)
    # get_backend() still builds the site's own object, as 1.3.0 and the checks read it.
    assert type(get_backend()) is PlainCRM
    native = LocmemBackend()
    assert as_base_backend(native) is native


@pytest.mark.django_db
def test_a_plain_backend_has_the_contracts_defaults_and_only_its_two_methods_are_called(
    configure: Any,
) -> None:
    HookNamedCRM.calls.clear()
    configure(BACKEND="tests.test_backend_contract.HookNamedCRM")
    backend = current_backend()
    assert isinstance(backend, PlainBackend) and isinstance(backend, HookNamedCRM)
    # Its own check(lead_id) is not the system-check hook: manage.py check neither calls nor crashes on it.
    assert crmify_messages(BACKEND="tests.test_backend_contract.HookNamedCRM") == []
    assert api.crm_health() is None
    assert crm_record_url(backend, "7") is None
    assert not backend.supports_fetch  # its own flag announces nothing the engine could call
    assert not backend.supports_pull  # it has no way to read changes back
    with pytest.raises(PermanentBackendError, match="supports_fetch is off"):
        api.fetch_from_crm(Lead(external_id="7"))
    assert HookNamedCRM.calls == []
    assert backend.sync_lead(Lead()) == "1" and backend.delete_lead("1") is True


# -- optional hooks: connection check, pace and quota, the missing last name, batches ----------------------


def test_crmify_check_prints_a_backends_connection_check(configure: Any) -> None:
    configure(BACKEND="tests.test_backend_contract.ConnectionCheckedCRM")
    out = StringIO()
    call_command("crmify_check", stdout=out)
    assert "status 'NotContacted': known" in out.getvalue()
    assert "The CRM connection works." in out.getvalue()
    # The hook's earlier name keeps working: its rows are the check.
    configure(BACKEND="tests.test_backend_contract.VerifiedCRM")
    assert VerifiedCRM.supports_connection_check
    out = StringIO()
    with pytest.raises(CommandError, match="1 check"):
        call_command("crmify_check", stdout=out)
    assert "API key: accepted" in out.getvalue()
    configure(BACKEND="tests.doubles.PlainCRM")
    with pytest.raises(CommandError, match="PlainCRM has no connection check"):
        call_command("crmify_check")


@pytest.mark.django_db
def test_the_dry_run_reads_pace_and_daily_limit_from_the_backend(configure: Any) -> None:
    configure(BACKEND="tests.test_backend_contract.PacedCRM")
    for _ in range(3):
        make_user()
    Lead.objects.all().delete()  # rows from before crmify: each is a lead to create
    report = plan(BackfillOptions())
    assert report.api_calls == 1 + 3  # the listing, then one call per lead
    assert (report.requests_per_second, report.estimated_seconds) == (4.0, 1.0)
    # 10 a day, one kept for live changes (LIVE_QUOTA_SHARE 10%): 9 for the run.
    assert (report.daily_limit, report.quota_days) == (10, pytest.approx(4 / 9))


@pytest.mark.django_db
def test_the_preview_names_the_last_name_a_backend_fills_in(configure: Any) -> None:
    configure(BACKEND="tests.test_backend_contract.FillingCRM")
    user = make_user(last_name="")
    row = preview_row(user, DjangoUserFieldMapper(), current_backend())
    assert row.warnings == ("No last name: '(none given)' will be sent as the last name instead.",)


@pytest.mark.django_db(transaction=True)
def test_a_batch_by_default_sends_one_lead_at_a_time_and_keeps_each_leads_error() -> None:
    first, second = lead_of(make_user()), lead_of(make_user())
    locmem.reset()
    backend = LocmemBackend()
    assert not backend.supports_batch
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    refused, sent = backend.sync_leads([first, second])
    assert refused.result is None and isinstance(refused.error, PermanentBackendError)
    assert sent.error is None and sent.result in locmem.leads
    assert [call.operation for call in locmem.calls] == ["create", "create"]
    (deleted,) = backend.delete_leads([str(sent.result)])
    assert (deleted.result, deleted.error) == (True, None)
