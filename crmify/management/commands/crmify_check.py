"""``manage.py crmify_check``: is the CRM reachable with our key, and does it know our statuses?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crmify.backends import build_backend
from crmify.conf import crmify_settings


class Command(BaseCommand):
    help = "Check the CRM connection: auth, base URL, the three configured status names, remaining quota."

    def handle(self, *args: Any, **options: Any) -> None:
        backend = build_backend()
        if not backend.supports_connection_check:
            raise CommandError(f"{backend.display_name} has no connection check.")
        names = [
            crmify_settings.LEAD_NEW_STATUS,
            crmify_settings.LEAD_CONVERTED_STATUS,
            crmify_settings.LEAD_DEAD_STATUS,
        ]
        failed = 0
        for result in backend.check_connection(names):
            mark = self.style.SUCCESS("ok  ") if result.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {result.what}: {result.detail}")
            failed += not result.ok
        if failed:
            raise CommandError(f"{failed} check(s) failed.")
        self.stdout.write(self.style.SUCCESS("The CRM connection works."))
