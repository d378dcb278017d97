"""``manage.py crmify_check``: does the CRM answer as every worker sees it (``crmify.crm_state``), what do
the polls of the CRM cost and how did the last one go (``crmify.health.pull_state``), is it reachable with
our key, and does it know our statuses?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from crmify.api import waiting_for_crm_count
from crmify.backends import build_backend
from crmify.conf import crmify_settings
from crmify.crm_state import crm_state
from crmify.health import pull_state
from crmify.poller import counted, in_utc


class Command(BaseCommand):
    help = (
        "Check the CRM connection: whether the workers see the CRM answering, what polling it costs a "
        "day and how the last poll went, auth, base URL, the three configured status names, remaining "
        "quota."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.report_state()
        self.report_polling()
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

    def report_polling(self) -> None:
        """What polling costs a day beside the daily quota, and how the last poll and delete scan went."""
        state = pull_state()
        if state is None:
            return  # the backend cannot be built: the connection check below says why
        cost = state.cost
        mark = self.style.WARNING("WARN") if cost.heavy else self.style.SUCCESS("ok  ")
        self.stdout.write(f"{mark} polling the CRM: {cost}")
        cursor = state.cursor
        if cost.off or cursor is None or cursor.last_started_at is None:
            return
        line = (
            f"last poll {in_utc(cursor.last_started_at)}: {counted(cursor.last_calls, 'call')}, "
            f"{counted(cursor.last_changes, 'change')}, read up to "
            f"{in_utc(cursor.watermark) if cursor.watermark else 'nothing yet'}; last delete scan "
            f"{in_utc(cursor.deletes_scanned_at) if cursor.deletes_scanned_at else 'none yet'}"
        )
        if cursor.last_error:
            self.stdout.write(f"{self.style.ERROR('FAIL')} {line}; error: {cursor.last_error}")
        else:
            self.stdout.write(f"{self.style.SUCCESS('ok  ')} {line}")
