"""``manage.py crmify_pull``: poll the CRM for changes once (schedule it with cron when the Tasks backend
cannot run a task later, with ``PULL_INTERVAL`` set to None); see ``crmify.poller``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crmify.poller import poll


class Command(BaseCommand):
    help = (
        "Read the changes made in the CRM since the last poll and apply them to the leads (the fields "
        "CRM_OWNED_FIELDS names). The first poll of a site reads only the last PULL_INTERVAL seconds; "
        "--full reads every record. Every PULL_DELETES_INTERVAL seconds a poll also looks for records "
        "deleted in the CRM; --deletes looks now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--full",
            action="store_true",
            help="Read every record in the CRM, not only those changed since the last poll.",
        )
        parser.add_argument(
            "--deletes",
            action="store_true",
            help="Also list the CRM now to find the records deleted there.",
        )

    def handle(self, *args: Any, full: bool = False, deletes: bool = False, **options: Any) -> None:
        report = poll(full=full, deletes=deletes)
        if report.error:
            raise CommandError(f"crmify poll: {report}.")
        style = self.style.WARNING if report.skipped else self.style.SUCCESS
        self.stdout.write(style(f"crmify poll: {report}."))
