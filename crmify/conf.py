"""One settings object for crmify, read on access.

Every property reads ``settings.CRMIFY`` when it is used, never at import, so ``override_settings`` works in
tests and a site can change a value without restarting anything that imported this module. Defaults of the
keys the original README documents are kept exactly as it gave them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings

#: The seed README's keys and defaults (our public contract), then the keys added since.
DEFAULTS: dict[str, Any] = {
    "BACKEND": "crmify.backends.insightly.InsightlyBackend",
    "BACKEND_AUTH": {},
    "LEAD_MODEL": "django.contrib.auth.models.User",
    "LEAD_MODEL_FIELDMAPPER": "crmify.mappers.DjangoUserFieldMapper",
    "LEAD_STATUS_MODEL": None,
    "LEAD_NEW_STATUS": "NotContacted",
    "LEAD_CONVERTED_STATUS": "Converted",
    "LEAD_DEAD_STATUS": "Disqualified",
    # The stages between LEAD_NEW_STATUS and the converted/dead statuses, in order (the funnel rule).
    "LEAD_STATUS_ORDER": ["AttemptedContact", "Contacted"],
    "BACKEND_OPTIONS": {},
    "AUTO_SYNC": True,
    "TASK_BACKEND": "default",
    "TASK_QUEUE": "default",
    "MAX_ATTEMPTS": 8,
    "RETRY_BACKOFF_BASE": 30,
    "RETRY_BACKOFF_MAX": 3600,
    "ON_DELETE": "delete",
    "SWEEP_PENDING_AFTER": 300,
    "SWEEP_INTERVAL": 60,
    "CLAIM_TIMEOUT": 600,
    "LEDGER_RETENTION_DAYS": 90,
    "LIVE_QUOTA_SHARE": 0.1,
    # Changes from the CRM (crmify.inbound, crmify.poller, crmify.webhooks).
    "CRM_OWNED_FIELDS": ["status"],
    "CONFLICT_WINNER": "crm",
    "PULL_INTERVAL": 60,
    "PULL_DELETES_INTERVAL": 3600,
    "WEBHOOK_AUTH": {},
    "WEBHOOK_SIGNATURE_VERSIONS": ["v3"],
}

#: The environment variables the seed README names for ``BACKEND_AUTH``, by the key they fill.
AUTH_ENV_VARS = {
    "API_KEY": "CRMIFY_BACKEND_AUTH_API_KEY",
    "USERNAME": "CRMIFY_BACKEND_AUTH_USERNAME",
    "PASSWORD": "CRMIFY_BACKEND_AUTH_PASSWORD",
}

#: The environment variables that fill ``WEBHOOK_AUTH`` (secrets stay out of settings files).
WEBHOOK_AUTH_ENV_VARS = {
    "SECRET": "CRMIFY_WEBHOOK_SECRET",
    "USERNAME": "CRMIFY_WEBHOOK_USERNAME",
    "PASSWORD": "CRMIFY_WEBHOOK_PASSWORD",
}

ON_DELETE_CHOICES = ("delete", "keep")
CONFLICT_WINNER_CHOICES = ("crm", "app")


class CrmifySettings:
    """Typed access to ``settings.CRMIFY`` with the defaults above filled in."""

    def raw(self) -> Mapping[str, Any]:
        """The site's ``CRMIFY`` dict as given (the system checks validate it)."""
        value = getattr(settings, "CRMIFY", {})
        return value if isinstance(value, Mapping) else {}

    def get(self, key: str) -> Any:
        return self.raw().get(key, DEFAULTS[key])

    @property
    def BACKEND(self) -> str:
        return str(self.get("BACKEND"))

    @property
    def BACKEND_AUTH(self) -> dict[str, str]:
        """Auth values: the environment first fills each key, an explicit setting wins."""
        return _from_env(AUTH_ENV_VARS, self.get("BACKEND_AUTH"))

    @property
    def WEBHOOK_AUTH(self) -> dict[str, str]:
        """What inbound webhooks are checked with: ``SECRET`` (HubSpot's app secret), ``USERNAME`` and
        ``PASSWORD`` (Insightly's Basic auth). The environment fills each key, an explicit setting wins."""
        return _from_env(WEBHOOK_AUTH_ENV_VARS, self.get("WEBHOOK_AUTH"))

    @property
    def BACKEND_OPTIONS(self) -> dict[str, Any]:
        return dict(self.get("BACKEND_OPTIONS") or {})

    @property
    def LEAD_MODEL(self) -> str:
        return str(self.get("LEAD_MODEL"))

    @property
    def LEAD_MODEL_FIELDMAPPER(self) -> str:
        return str(self.get("LEAD_MODEL_FIELDMAPPER"))

    @property
    def LEAD_STATUS_MODEL(self) -> str | None:
        value = self.get("LEAD_STATUS_MODEL")
        return str(value) if value else None

    @property
    def LEAD_NEW_STATUS(self) -> str:
        return str(self.get("LEAD_NEW_STATUS"))

    @property
    def LEAD_CONVERTED_STATUS(self) -> str:
        return str(self.get("LEAD_CONVERTED_STATUS"))

    @property
    def LEAD_DEAD_STATUS(self) -> str:
        return str(self.get("LEAD_DEAD_STATUS"))

    @property
    def LEAD_STATUS_ORDER(self) -> list[str]:
        """The funnel's stages between ``LEAD_NEW_STATUS`` and the converted/dead statuses, first to last.

        An automatic status change never moves a lead to an earlier stage (``crmify.transitions.moves_back``);
        statuses compare with case and spaces ignored. A wrong value is ``crmify.E090``/``E091``.
        """
        value = self.get("LEAD_STATUS_ORDER")
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return []
        return [str(name) for name in value]

    @property
    def AUTO_SYNC(self) -> bool:
        return bool(self.get("AUTO_SYNC"))

    @property
    def TASK_BACKEND(self) -> str:
        return str(self.get("TASK_BACKEND"))

    @property
    def TASK_QUEUE(self) -> str:
        return str(self.get("TASK_QUEUE"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        return int(self.get("MAX_ATTEMPTS"))

    @property
    def RETRY_BACKOFF_BASE(self) -> float:
        return float(self.get("RETRY_BACKOFF_BASE"))

    @property
    def RETRY_BACKOFF_MAX(self) -> float:
        return float(self.get("RETRY_BACKOFF_MAX"))

    @property
    def ON_DELETE(self) -> str:
        return str(self.get("ON_DELETE"))

    @property
    def SWEEP_PENDING_AFTER(self) -> float:
        """Seconds a lead may stay pending before the sweeper assumes its enqueue was lost."""
        return float(self.get("SWEEP_PENDING_AFTER"))

    @property
    def SWEEP_INTERVAL(self) -> float | None:
        """Seconds between the sweeps the workers schedule themselves (``crmify.sweeper.SWEEPS``);
        None leaves sweeping to cron (``manage.py crmify_sync``)."""
        value = self.get("SWEEP_INTERVAL")
        return None if value is None else float(value)

    @property
    def CLAIM_TIMEOUT(self) -> float:
        """Seconds after which a claim held by a worker that died is given back."""
        return float(self.get("CLAIM_TIMEOUT"))

    @property
    def LEDGER_RETENTION_DAYS(self) -> int | None:
        """Days the sweeper keeps ledger entries; None keeps them for ever."""
        value = self.get("LEDGER_RETENTION_DAYS")
        return None if value is None else int(value)

    @property
    def LIVE_QUOTA_SHARE(self) -> float:
        """The share of each day's CRM quota a backfill leaves to live sign-ups and changes (0.1: on a
        40,000-call plan, 4,000 calls, about 2,000 new leads a day); 0 lets a backfill spend it all."""
        return float(self.get("LIVE_QUOTA_SHARE"))

    @property
    def CRM_OWNED_FIELDS(self) -> list[str]:
        """Lead fields the CRM may change (``status`` by default; any of ``MAPPABLE_FIELDS`` or
        ``custom_fields__<key>``): changes to them in the CRM are applied to the lead. Changes to other
        fields stay in the CRM and show as drift in "Compare with CRM". A wrong value is a system check
        error."""
        value = self.get("CRM_OWNED_FIELDS")
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return []
        return [str(name) for name in value]

    @property
    def CONFLICT_WINNER(self) -> str:
        """Who wins a field both sides changed since the last sync: ``"crm"`` (the default: the CRM for
        ``CRM_OWNED_FIELDS``, the app for the rest) or ``"app"`` (the app for every field)."""
        return str(self.get("CONFLICT_WINNER"))

    @property
    def PULL_INTERVAL(self) -> float | None:
        """Seconds between polls of the CRM for changes, scheduled by the workers themselves; None
        turns polling off (webhooks alone, or ``manage.py crmify_pull`` from cron)."""
        value = self.get("PULL_INTERVAL")
        return None if value is None else float(value)

    @property
    def PULL_DELETES_INTERVAL(self) -> float | None:
        """Seconds between listings of the whole CRM that find records deleted there, for a CRM that
        announces no deletes; None turns them off."""
        value = self.get("PULL_DELETES_INTERVAL")
        return None if value is None else float(value)

    @property
    def WEBHOOK_SIGNATURE_VERSIONS(self) -> list[str]:
        """HubSpot signature versions accepted on inbound webhooks: ``["v3"]`` by default; ``v1`` and
        ``v2`` (no timestamp, so replayable) only if listed."""
        value = self.get("WEBHOOK_SIGNATURE_VERSIONS")
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return []
        return [str(name) for name in value]


def _from_env(env_vars: Mapping[str, str], configured: Any) -> dict[str, str]:
    """A credentials dict: each key from its environment variable, overridden by a non-empty setting."""
    values = {key: os.environ[env] for key, env in env_vars.items() if os.environ.get(env)}
    values.update({str(k): str(v) for k, v in dict(configured or {}).items() if v})
    return values


crmify_settings = CrmifySettings()
