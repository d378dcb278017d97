"""``crmify.conf``: the seed README's settings, read on access, auth from the environment."""

from __future__ import annotations

import pytest
from django.test import override_settings

from crmify.conf import crmify_settings

#: The seed README's settings table, verbatim: our public contract.
SEED_DEFAULTS = {
    "BACKEND": "crmify.backends.insightly.InsightlyBackend",
    "BACKEND_AUTH": {},
    "LEAD_MODEL": "django.contrib.auth.models.User",
    "LEAD_MODEL_FIELDMAPPER": "crmify.mappers.DjangoUserFieldMapper",
    "LEAD_STATUS_MODEL": None,
    "LEAD_NEW_STATUS": "NotContacted",
    "LEAD_CONVERTED_STATUS": "Converted",
    "LEAD_DEAD_STATUS": "Disqualified",
}

AUTH_ENV = (
    "CRMIFY_BACKEND_AUTH_API_KEY",
    "CRMIFY_BACKEND_AUTH_USERNAME",
    "CRMIFY_BACKEND_AUTH_PASSWORD",
)


@pytest.fixture(autouse=True)
def _no_auth_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("key", "default"), SEED_DEFAULTS.items())
def test_unset_keys_take_the_seed_readme_defaults(key: str, default: object) -> None:
    with override_settings(CRMIFY={}):
        assert getattr(crmify_settings, key) == default


def test_a_site_without_a_crmify_setting_gets_every_default() -> None:
    with override_settings():
        from django.conf import settings

        del settings.CRMIFY
        assert crmify_settings.LEAD_MODEL == "django.contrib.auth.models.User"
        assert crmify_settings.AUTO_SYNC is True
        assert crmify_settings.ON_DELETE == "delete"


def test_added_keys_have_documented_defaults() -> None:
    with override_settings(CRMIFY={}):
        assert crmify_settings.BACKEND_OPTIONS == {}
        assert crmify_settings.AUTO_SYNC is True
        assert crmify_settings.TASK_BACKEND == "default"
        assert crmify_settings.TASK_QUEUE == "default"
        assert crmify_settings.MAX_ATTEMPTS == 8
        assert crmify_settings.RETRY_BACKOFF_BASE == 30
        assert crmify_settings.RETRY_BACKOFF_MAX == 3600
        assert crmify_settings.ON_DELETE == "delete"


def test_settings_are_read_when_used_so_override_settings_works() -> None:
    assert crmify_settings.LEAD_NEW_STATUS == "NotContacted"
    with override_settings(CRMIFY={"LEAD_NEW_STATUS": "Fresh", "MAX_ATTEMPTS": 2}):
        assert crmify_settings.LEAD_NEW_STATUS == "Fresh"
        assert crmify_settings.MAX_ATTEMPTS == 2
    assert crmify_settings.LEAD_NEW_STATUS == "NotContacted"


def test_backend_auth_comes_from_the_seed_readme_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "key-from-env")
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_USERNAME", "ada")
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_PASSWORD", "s3cret")
    with override_settings(CRMIFY={}):
        assert crmify_settings.BACKEND_AUTH == {
            "API_KEY": "key-from-env",
            "USERNAME": "ada",
            "PASSWORD": "s3cret",
        }


def test_environment_is_read_on_access_too(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "API_KEY" not in crmify_settings.BACKEND_AUTH
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "rotated")
    assert crmify_settings.BACKEND_AUTH["API_KEY"] == "rotated"


def test_explicit_backend_auth_setting_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "key-from-env")
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_USERNAME", "env-user")
    with override_settings(CRMIFY={"BACKEND_AUTH": {"API_KEY": "key-from-settings"}}):
        assert crmify_settings.BACKEND_AUTH == {
            "API_KEY": "key-from-settings",
            "USERNAME": "env-user",
        }


def test_empty_environment_variables_are_not_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "")
    with override_settings(CRMIFY={}):
        assert crmify_settings.BACKEND_AUTH == {}
