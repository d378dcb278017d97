"""Code written against django-crmify 1.3.0 runs on crmify: the mixin's status constants, backends built
with ``BACKEND_AUTH`` as keyword arguments, ``CRMBackend``, and a warning for mapper methods no longer
called. Also: crmify's admin imports without ``django_tasks_db`` installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.apps import apps
from django.test import override_settings

from crmify.backends import get_backend
from crmify.backends.base import CRMBackend
from crmify.mappers import DjangoUserFieldMapper
from crmify.mixins import LeadStatusMixin
from crmify.models import Lead, SyncState
from crmify.worker import current_backend
from tests.factories import lead_of, make_profile, make_subscription, make_user
from tests.test_checks import crmify_messages, ids, only
from tests.testapp.models import Subscription

ROOT = Path(__file__).resolve().parent.parent


# -- doubles a test points CRMIFY at by dotted path ---------------------------------------------------


class LegacyCRM(CRMBackend):
    """A backend as a 1.3.0 site wrote it: ``CRMBackend``'s constructor, its ``_auth_params``."""

    synced: ClassVar[list[tuple[str, str, str | None]]] = []
    deleted: ClassVar[list[str]] = []

    def sync_lead(self, lead: Lead) -> str:
        # 1.3.0 backends read the status as ``external_status``.
        LegacyCRM.synced.append((lead.email, lead.external_status, self._auth_params["API_KEY"]))
        return lead.external_id or f"legacy-{len(LegacyCRM.synced)}"

    def delete_lead(self, lead_id: str) -> bool:
        LegacyCRM.deleted.append(lead_id)
        return True


class KeywordCRM:
    """A plain class (no crmify base) whose constructor takes the auth as keyword arguments."""

    def __init__(self, **auth: Any) -> None:
        self.auth = auth

    def sync_lead(self, lead: Lead) -> str:
        return "1"

    def delete_lead(self, lead_id: str) -> bool:
        return True


class ReshapingMapper(DjangoUserFieldMapper):
    """A 1.3.0 mapper that reshaped values in ``apply_field_mapping`` and looked values up itself."""

    def apply_field_mapping(self, instance: Any) -> dict[str, Any]:
        return {"first_name": "never used"}

    def lookup_value(self, field: str, instance: Any) -> Any:
        return None


class CreatingMapper(DjangoUserFieldMapper):
    """A 1.3.0 mapper that wrote the lead itself."""

    def create_lead(self, instance: Any) -> None:
        pass


class ModernMapper(DjangoUserFieldMapper):
    """Overrides today's hook: no warning."""

    def map(self, instance: Any) -> Any:
        return super().map(instance)


@pytest.fixture
def legacy_crm() -> Any:
    LegacyCRM.synced.clear()
    LegacyCRM.deleted.clear()
    yield LegacyCRM
    LegacyCRM.synced.clear()
    LegacyCRM.deleted.clear()


# -- LeadStatusMixin's constants -----------------------------------------------------------------------


def test_status_constants_are_the_configured_status_names_on_class_and_instance() -> None:
    subscription = Subscription()
    assert LeadStatusMixin.NEW_LEAD == subscription.NEW_LEAD == "NotContacted"
    assert Subscription.CONVERTED_LEAD == subscription.CONVERTED_LEAD == "Converted"
    assert Subscription.DEAD_LEAD == subscription.DEAD_LEAD == "Disqualified"


def test_status_constants_follow_the_settings_when_they_change() -> None:
    statuses = {
        "LEAD_NEW_STATUS": "Open",
        "LEAD_CONVERTED_STATUS": "Won",
        "LEAD_DEAD_STATUS": "Lost",
    }
    with override_settings(CRMIFY=statuses):
        assert (Subscription.NEW_LEAD, Subscription.CONVERTED_LEAD, Subscription.DEAD_LEAD) == (
            "Open",
            "Won",
            "Lost",
        )
    assert Subscription.NEW_LEAD == "NotContacted"


@pytest.mark.django_db(transaction=True)
def test_a_status_model_returning_a_constant_moves_the_lead_to_that_status(
    profile_leads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Subscription, "lead_status", lambda self: (self.profile, self.DEAD_LEAD))
    profile = make_profile()
    make_subscription(profile)
    assert lead_of(profile).status == "Disqualified"


# -- backends built the 1.3.0 way ------------------------------------------------------------------------


def test_a_plain_backend_taking_keywords_gets_backend_auth_as_1_3_0_gave_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "key-from-env")
    monkeypatch.delenv("CRMIFY_BACKEND_AUTH_USERNAME", raising=False)
    monkeypatch.delenv("CRMIFY_BACKEND_AUTH_PASSWORD", raising=False)
    with override_settings(CRMIFY={"BACKEND": "tests.test_upgrade_api.KeywordCRM"}):
        backend = get_backend()
    # Without a BACKEND_AUTH setting 1.3.0 passed every key the environment may fill, unset ones as None.
    assert backend.auth == {"API_KEY": "key-from-env", "USERNAME": None, "PASSWORD": None}
    with override_settings(
        CRMIFY={"BACKEND": "tests.test_upgrade_api.KeywordCRM", "BACKEND_AUTH": {"TOKEN": "t"}}
    ):
        assert get_backend().auth == {"API_KEY": "key-from-env", "TOKEN": "t"}


def test_a_plain_backend_taking_keywords_passes_the_checks() -> None:
    assert crmify_messages(BACKEND="tests.test_upgrade_api.KeywordCRM") == []
    assert crmify_messages(BACKEND="tests.test_upgrade_api.LegacyCRM") == []


def test_a_backend_needing_positional_arguments_is_e012_and_the_hint_says_what_works() -> None:
    error = only(crmify_messages(BACKEND="tests.doubles.NeedsArgumentsCRM"), "crmify.E012")
    assert "**kwargs" in (error.hint or "")


def test_crmbackend_strips_the_environment_prefix_from_auth_keys() -> None:
    backend = LegacyCRM(CRMIFY_BACKEND_AUTH_API_KEY="k", USERNAME="u")
    assert backend._auth_params == {"API_KEY": "k", "USERNAME": "u"}


@pytest.mark.django_db(transaction=True)
def test_a_crmbackend_subclass_syncs_and_deletes_through_the_engine(
    legacy_crm: type[LegacyCRM], configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "legacy-key")
    configure(BACKEND="tests.test_upgrade_api.LegacyCRM")
    assert isinstance(current_backend(), LegacyCRM)
    user = make_user(email="ada@example.com")
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    assert legacy_crm.synced == [("ada@example.com", "NotContacted", "legacy-key")]
    user.delete()
    assert legacy_crm.deleted == [lead.external_id]
    assert Lead.objects.get(pk=lead.pk).sync_state == SyncState.DELETED


# -- W030: mapper methods 1.3.0 called and crmify does not ---------------------------------------------


def test_a_mapper_overriding_retired_methods_gets_w030_naming_map() -> None:
    messages = crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.test_upgrade_api.ReshapingMapper")
    warnings = [m for m in messages if m.id == "crmify.W030"]
    assert sorted(w.msg.split(" overrides ")[1].split("(")[0] for w in warnings) == [
        "apply_field_mapping",
        "lookup_value",
    ]
    assert all("override map(" in (w.hint or "") for w in warnings), warnings
    assert not any(m.is_serious() for m in messages)


def test_a_mapper_that_wrote_the_lead_itself_gets_w030() -> None:
    warning = only(
        crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.test_upgrade_api.CreatingMapper"),
        "crmify.W030",
    )
    assert "create_lead()" in warning.msg
    assert "map(instance)" in (warning.hint or "")


def test_a_mapper_overriding_map_gets_no_w030() -> None:
    messages = crmify_messages(LEAD_MODEL_FIELDMAPPER="tests.test_upgrade_api.ModernMapper")
    assert "crmify.W030" not in ids(messages)


# -- an upgraded site's INSTALLED_APPS --------------------------------------------------------------------


def test_a_site_with_the_admin_but_without_import_export_is_e006(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    is_installed = apps.is_installed
    monkeypatch.setattr(
        apps, "is_installed", lambda name: name != "import_export" and is_installed(name)
    )
    error = only(crmify_messages(), "crmify.E006")
    assert "'import_export'" in (error.hint or "")


# -- no hidden start-up dependency on django_tasks_db ---------------------------------------------------

SETTINGS_WITHOUT_TASKS_DB = """
SECRET_KEY = "not-secret"
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "import_export",
    "crmify",
]
CRMIFY = {"BACKEND": "crmify.backends.locmem.LocmemBackend"}
"""

IMPORT_ADMIN = """
import sys
import django

django.setup()
import crmify.admin  # noqa: F401
import crmify.preview  # noqa: F401

# django_tasks_db patches Django's Field to be subscriptable when imported: it must not have been.
assert "django_tasks_db" not in sys.modules, "django_tasks_db was imported"
print("imported")
"""


def test_crmify_admin_imports_on_a_site_without_django_tasks_db(tmp_path: Path) -> None:
    (tmp_path / "site_without_tasks_db.py").write_text(SETTINGS_WITHOUT_TASKS_DB)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(IMPORT_ADMIN)],
        cwd=tmp_path,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "site_without_tasks_db",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
