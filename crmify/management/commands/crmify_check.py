"""``manage.py crmify_check``: is the CRM reachable with our key, and does it know our statuses?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crmify.backends import get_backend
from crmify.conf import crmify_settings


class Command(BaseCommand):
    help = "Check the CRM connection: auth, base URL, the three configured status names, remaining quota."

    def handle(self, *args: Any, **options: Any) -> None:
        backend = get_backend()
        verify = getattr(backend, "verify", None)
        if not callable(verify):
            raise CommandError(f"{type(backend).__name__} has no connection check.")
        names = [
            crmify_settings.LEAD_NEW_STATUS,
            crmify_settings.LEAD_CONVERTED_STATUS,
            crmify_settings.LEAD_DEAD_STATUS,
        ]
        failed = 0
        for what, ok, detail in verify(names):
            mark = self.style.SUCCESS("ok  ") if ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {what}: {detail}")
            failed += not ok
        if failed:
            raise CommandError(f"{failed} check(s) failed.")
        self.stdout.write(self.style.SUCCESS("The CRM connection works."))
