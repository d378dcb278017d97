from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmifyConfig(AppConfig):
    name = "crmify"
    verbose_name = _("CRM sync")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from crmify import checks  # noqa: F401  (registers the system checks)
        from crmify.poller import POLLS
        from crmify.schedule import connect_schedules
        from crmify.signals import connect_receivers
        from crmify.sweeper import SWEEPS

        connect_receivers()
        # crmify's own schedules start with migrate and the workers: no cron on the embedded default.
        connect_schedules(self, SWEEPS, POLLS)
