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
}

#: The environment variables the seed README names for ``BACKEND_AUTH``, by the key they fill.
AUTH_ENV_VARS = {
    "API_KEY": "CRMIFY_BACKEND_AUTH_API_KEY",
    "USERNAME": "CRMIFY_BACKEND_AUTH_USERNAME",
    "PASSWORD": "CRMIFY_BACKEND_AUTH_PASSWORD",
}

ON_DELETE_CHOICES = ("delete", "keep")


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
        auth = {key: os.environ[env] for key, env in AUTH_ENV_VARS.items() if os.environ.get(env)}
        configured = self.get("BACKEND_AUTH") or {}
        auth.update({str(k): str(v) for k, v in dict(configured).items() if v})
        return auth

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
        """Seconds between the sweeps the workers schedule themselves (``crmify.sweeper.start_sweeping``);
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


crmify_settings = CrmifySettings()
