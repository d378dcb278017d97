"""``manage.py crmify_check``: does the CRM answer as every worker sees it (``crmify.crm_state``), is it
reachable with our key, and does it know our statuses?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crmify.api import waiting_for_crm_count
from crmify.backends import build_backend
from crmify.conf import crmify_settings
from crmify.crm_state import crm_state


class Command(BaseCommand):
    help = (
        "Check the CRM connection: whether the workers see the CRM answering, auth, base URL, the three "
        "configured status names, remaining quota."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.report_state()
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

    def report_state(self) -> None:
        """The CRM as the workers see it: up, or down since when, why, and what waits for it."""
        state = crm_state()
        if state.up:
            self.stdout.write(f"{self.style.SUCCESS('ok  ')} the workers see the CRM answering")
            return
        since = f"{state.down_since:%Y-%m-%d %H:%M:%S} UTC" if state.down_since else "a while"
        probe = f"{state.next_probe_at:%H:%M:%S} UTC" if state.next_probe_at else "soon"
        self.stdout.write(
            f"{self.style.ERROR('FAIL')} the workers see the CRM down since {since} "
            f"({state.last_error}); {waiting_for_crm_count()} leads waiting; {state.probes} probes so "
            f"far, the next at {probe}"
        )
