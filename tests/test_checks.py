"""System checks: every mistake in ``CRMIFY`` is a ``crmify.E0xx``/``W0xx`` with a hint, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from crmify.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent

#: A working configuration the tests below break one key at a time.
GOOD: dict[str, Any] = {
    "BACKEND": "crmify.backends.locmem.LocmemBackend",
    "TASK_BACKEND": "dummy",
}


def crmify_messages(**config: Any) -> list[checks.CheckMessage]:
    """Every crmify message ``manage.py check`` would print for ``CRMIFY = {**GOOD, **config}``."""
    with override_settings(CRMIFY={**GOOD, **config}):
        return check_settings()


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


def only(messages: list[checks.CheckMessage], check_id: str) -> checks.CheckMessage:
    """The single message with ``check_id``; it must carry a hint."""
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, f"expected one {check_id}, got {ids(messages)}"
    assert found[0].hint, f"{check_id} has no hint"
    return found[0]


def test_a_good_configuration_passes_every_check() -> None:
    assert crmify_messages() == []


def test_seed_readme_example_configuration_passes_with_the_key_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The seed README's Quick Start, verbatim but for the app it points at (ours is tests.testapp).
    seed_config = {
        "BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "LEAD_MODEL": "tests.testapp.models.UserProfile",
        "LEAD_MODEL_FIELDMAPPER": "tests.testapp.mappers.UserProfileFieldMapper",
    }
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "seed-example-key")
    with override_settings(CRMIFY=seed_config):
        messages = check_settings()
        from crmify.backends import get_backend
        from crmify.loading import get_lead_model

        backend = get_backend()
        assert type(backend).__name__ == "InsightlyBackend"
        assert backend.auth["API_KEY"] == "seed-example-key"
        assert get_lead_model()._meta.label == "testapp.UserProfile"
    assert [m for m in messages if m.is_serious()] == []
    # The key came from the environment, as the seed README says, so no "no API key" warning.
    assert "crmify.W050" not in ids(messages)


def test_lead_model_as_app_label_dot_model_name_is_accepted() -> None:
    messages = crmify_messages(
        LEAD_MODEL="testapp.UserProfile",
        LEAD_MODEL_FIELDMAPPER="tests.testapp.mappers.UserProfileFieldMapper",
        LEAD_STATUS_MODEL="testapp.Subscription",
    )
    assert messages == []


def test_crmify_that_is_not_a_dict_is_e001() -> None:
    with override_settings(CRMIFY=["BACKEND"]):
        messages = check_settings()
    assert "must be a dict" in only(messages, "crmify.E001").msg


def test_unknown_key_is_w001_naming_the_known_keys() -> None:
    warning = only(crmify_messages(LEAD_MODLE="auth.User"), "crmify.W001")
    assert "'LEAD_MODLE'" in warning.msg
    assert "LEAD_MODEL" in (warning.hint or "")


@pytest.mark.parametrize("value", [0, -1, "3", None, True])
def test_max_attempts_that_is_not_a_positive_number_is_e002(value: object) -> None:
    error = only(crmify_messages(MAX_ATTEMPTS=value), "crmify.E002")
    assert "MAX_ATTEMPTS" in error.msg
    assert "8" in (error.hint or "")


@pytest.mark.parametrize("key", ["MAX_ATTEMPTS", "LEDGER_RETENTION_DAYS"])
@pytest.mark.parametrize("value", [0.5, 2.0, 7.9])
def test_a_count_with_a_fraction_is_e002(key: str, value: float) -> None:
    # int() would cut it short: 0.5 attempts would be 0 and every lead would fail on its first error.
    error = only(crmify_messages(**{key: value}), "crmify.E002")
    assert f"CRMIFY[{key!r}] must be a positive whole number (an int), not {value!r}." == error.msg
    assert "without a fraction" in (error.hint or "")


@pytest.mark.parametrize("key", ["RETRY_BACKOFF_BASE", "SWEEP_PENDING_AFTER", "CLAIM_TIMEOUT"])
def test_seconds_may_have_a_fraction(key: str) -> None:
    assert crmify_messages(**{key: 0.5}) == []


@pytest.mark.parametrize("value", [None, 1, 365])
def test_ledger_retention_of_whole_days_or_none_passes(value: object) -> None:
    assert crmify_messages(LEDGER_RETENTION_DAYS=value) == []


@pytest.mark.parametrize("value", [0, -7, "90", True])
def test_ledger_retention_that_is_not_a_positive_int_is_e002(value: object) -> None:
    error = only(crmify_messages(LEDGER_RETENTION_DAYS=value), "crmify.E002")
    assert "LEDGER_RETENTION_DAYS" in error.msg
    assert "90" in (error.hint or "") and "None keeps everything" in (error.hint or "")


def test_unknown_on_delete_is_e003() -> None:
    error = only(crmify_messages(ON_DELETE="purge"), "crmify.E003")
    assert "'purge'" in error.msg
    assert '"keep"' in (error.hint or "")


def test_blank_status_name_is_e004() -> None:
    error = only(crmify_messages(LEAD_NEW_STATUS=""), "crmify.E004")
    assert "LEAD_NEW_STATUS" in error.msg


@pytest.mark.parametrize("value", [0, 0.5, 0.95])
def test_a_live_quota_share_from_0_up_to_1_passes(value: float) -> None:
    assert "crmify.E105" not in ids(crmify_messages(LIVE_QUOTA_SHARE=value))


@pytest.mark.parametrize("value", [1, 1.5, -0.1, "0.1", None, True])
def test_a_live_quota_share_outside_0_to_1_is_e105(value: object) -> None:
    error = only(crmify_messages(LIVE_QUOTA_SHARE=value), "crmify.E105")
    assert "LIVE_QUOTA_SHARE" in error.msg and repr(value) in error.msg
    assert "0.1" in (error.hint or "")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BURST", 0),
        ("BURST", 2.5),
        ("BURST", "2"),
        ("QUOTA_WINDOW_SECONDS", 0),
        ("QUOTA_WINDOW_SECONDS", "1d"),
    ],
)
def test_a_burst_or_quota_window_that_cannot_pace_is_e106_not_a_traceback(
    key: str, value: object
) -> None:
    messages = crmify_messages(
        BACKEND="crmify.backends.insightly.InsightlyBackend",
        BACKEND_AUTH={"API_KEY": "k"},
        BACKEND_OPTIONS={key: value},
    )
    error = only(messages, "crmify.E106")
    assert key in error.msg and repr(value) in error.msg


def test_a_burst_and_quota_window_that_can_pace_pass() -> None:
    messages = crmify_messages(
        BACKEND="crmify.backends.insightly.InsightlyBackend",
        BACKEND_AUTH={"API_KEY": "k"},
        BACKEND_OPTIONS={"BURST": 5, "QUOTA_WINDOW_SECONDS": 60.5},
    )
    assert "crmify.E106" not in ids(messages)


def test_backend_options_that_is_not_a_dict_is_e005_without_a_traceback() -> None:
    messages = crmify_messages(BACKEND_OPTIONS=["POD", "na1"])
    assert "BACKEND_OPTIONS" in only(messages, "crmify.E005").msg


def test_backend_that_cannot_be_imported_is_e010() -> None:
    error = only(crmify_messages(BACKEND="crmify.backends.nowhere.Backend"), "crmify.E010")
    assert "crmify.backends.nowhere.Backend" in error.msg
    assert "sync_lead() and delete_lead()" in (error.hint or "")


def test_backend_without_delete_lead_is_e011() -> None:
    error = only(crmify_messages(BACKEND="tests.doubles.SyncOnlyCRM"), "crmify.E011")
    assert "delete_lead" in error.msg


def test_backend_that_cannot_be_built_is_e012() -> None:
    error = only(crmify_messages(BACKEND="tests.doubles.NeedsArgumentsCRM"), "crmify.E012")
    assert "NeedsArgumentsCRM" in error.msg


def test_a_plain_class_with_the_two_seed_methods_passes() -> None:
    assert crmify_messages(BACKEND="tests.doubles.PlainCRM") == []


def test_lead_model_that_is_not_a_model_is_e020() -> None:
    error = only(
        crmify_messages(LEAD_MODEL="tests.testapp.mappers.UserProfileFieldMapper"), "crmify.E020"
    )
    assert "is not a Django model" in error.msg
    assert "app_label.ModelName" in (error.hint or "")


def test_lead_model_that_does_not_exist_is_e020() -> None:
    error = only(crmify_messages(LEAD_MODEL="myapp.models.UserProfile"), "crmify.E020")
    assert "'myapp.models.UserProfile'" in error.msg


def test_status_model_that_is_not_a_model_is_e021() -> None:
    error = only(crmify_messages(LEAD_STATUS_MODEL="testapp.Nope"), "crmify.E021")
    assert "LeadStatusMixin" in (error.hint or "")


def test_status_model_without_lead_status_is_e022() -> None:
    error = only(crmify_messages(LEAD_STATUS_MODEL="auth.Group"), "crmify.E022")
    assert "auth.Group" in error.msg


def test_status_model_that_does_not_implement_lead_status_is_e022(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crmify.mixins import LeadStatusMixin
    from tests.testapp.models import Subscription

    monkeypatch.setattr(Subscription, "lead_status", LeadStatusMixin.lead_status)
    error = only(crmify_messages(LEAD_STATUS_MODEL="testapp.Subscription"), "crmify.E022")
    assert "testapp.Subscription" in error.msg


def test_mapper_that_is_not_a_lead_model_field_mapper_is_e030() -> None:
    error = only(crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.doubles.PlainCRM"), "crmify.E030")
    assert "LeadModelFieldMapper" in error.msg


def test_mapper_targeting_a_field_the_lead_does_not_have_is_e031() -> None:
    error = only(
        crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.doubles.TypoTargetMapper"), "crmify.E031"
    )
    assert "'emial'" in error.msg
    assert "custom_fields__<name>" in (error.hint or "")


def test_mapper_reading_a_path_the_model_does_not_have_is_e032() -> None:
    messages = crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.doubles.TypoSourceMapper")
    errors = [m for m in messages if m.id == "crmify.E032"]
    assert sorted(e.msg.split(":")[0] for e in errors) == [
        "TypoSourceMapper reads 'emial'",
        "TypoSourceMapper reads 'first_name__x'",
        "TypoSourceMapper reads 'groups__nope'",
    ]
    assert all(e.hint for e in errors)


def test_user_profile_mapper_on_the_default_user_model_is_e032() -> None:
    # The seed's mapper for a profile, with LEAD_MODEL left at auth.User: user__* does not exist there.
    messages = crmify_messages(
        LEAD_MODEL_FIELDMAPPER="tests.testapp.mappers.UserProfileFieldMapper"
    )
    assert "crmify.E032" in ids(messages)


def test_task_backend_alias_not_in_tasks_is_e040() -> None:
    error = only(crmify_messages(TASK_BACKEND="nope"), "crmify.E040")
    assert "'nope'" in error.msg
    assert "TASKS" in (error.hint or "")


def test_task_queue_the_backend_does_not_serve_is_e041() -> None:
    error = only(crmify_messages(TASK_QUEUE="crm"), "crmify.E041")
    assert "'crm'" in error.msg


def test_immediate_task_backend_is_w002() -> None:
    warning = only(crmify_messages(TASK_BACKEND="immediate"), "crmify.W002")
    assert "inside the request" in warning.msg


#: A backend that reads changes back and takes DAILY_QUOTA (tests/test_poller.py's CRM).
PULLING = "tests.test_poller.QuirkyCrm"


@pytest.mark.parametrize(
    ("key", "code"), [("PULL_INTERVAL", "crmify.E115"), ("PULL_DELETES_INTERVAL", "crmify.E116")]
)
@pytest.mark.parametrize("value", [0, -60, "60", True])
def test_a_poll_interval_that_is_not_seconds_or_none_is_e115_or_e116(
    key: str, code: str, value: object
) -> None:
    error = only(crmify_messages(**{key: value}), code)
    assert (
        f"CRMIFY[{key!r}] must be a positive number of seconds or None, not {value!r}." == error.msg
    )
    assert "None turns" in (error.hint or "")


@pytest.mark.parametrize("value", [None, 0.5, 60, 3600])
def test_poll_intervals_in_seconds_or_none_pass(value: object) -> None:
    assert crmify_messages(PULL_INTERVAL=value, PULL_DELETES_INTERVAL=value) == []


def test_polls_a_tasks_backend_cannot_schedule_are_w115(monkeypatch: pytest.MonkeyPatch) -> None:
    from crmify.compat import task_backends

    monkeypatch.setattr(task_backends["dummy"], "supports_defer", False)
    warning = only(crmify_messages(BACKEND=PULLING, PULL_INTERVAL=60), "crmify.W115")
    assert "never run" in warning.msg and "crmify_pull from cron" in (warning.hint or "")
    # Not for a site that polls from cron already, nor for a backend that cannot read changes back.
    assert "crmify.W115" not in ids(crmify_messages(BACKEND=PULLING, PULL_INTERVAL=None))
    assert "crmify.W115" not in ids(crmify_messages(BACKEND="tests.doubles.PlainCRM"))


def test_polling_that_takes_most_of_the_daily_quota_is_w116() -> None:
    # Insightly's free plan: 1,000 calls a day; a poll a minute alone makes 1,440.
    warning = only(
        crmify_messages(BACKEND=PULLING, BACKEND_OPTIONS={"DAILY_QUOTA": 1000}), "crmify.W116"
    )
    assert "costs 1,440 calls a day, 144% of the daily quota of 1,000" in warning.msg
    assert "Raise PULL_INTERVAL to 173 s or more" in (warning.hint or "")
    assert (
        crmify_messages(BACKEND=PULLING, BACKEND_OPTIONS={"DAILY_QUOTA": 1000}, PULL_INTERVAL=180)
        == []
    )


@pytest.mark.django_db
def test_checks_are_registered_with_manage_py_check() -> None:
    with override_settings(CRMIFY={**GOOD, "ON_DELETE": "purge"}):
        assert "crmify.E003" in ids(checks.run_checks())


def test_a_wrong_setting_stops_check_with_an_error_id_and_no_traceback(tmp_path: Path) -> None:
    settings_module = tmp_path / "broken_settings.py"
    settings_module.write_text(
        "from tests.settings import *  # noqa\n"
        "CRMIFY = {'LEAD_MODEL': 'myapp.models.UserProfile', 'BACKEND': 'nowhere.Backend',\n"
        "          'LEAD_MODEL_FIELDMAPPER': 'myapp.mappers.Missing', 'BACKEND_AUTH': 'oops'}\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "broken_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    for check_id in ("crmify.E005", "crmify.E010", "crmify.E020", "crmify.E030"):
        assert check_id in output
    assert "HINT:" in output
