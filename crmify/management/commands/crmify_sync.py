"""``manage.py crmify_sync``: run the sweeper once (schedule it with cron, or queue ``sweep_task``).

Each run also prunes the ledger (``LEDGER_RETENTION_DAYS``); see ``crmify.sweeper``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from crmify.sweeper import sweep


class Command(BaseCommand):
    help = (
        "Queue due retries and pending leads whose enqueue was lost, release claims of dead workers, "
        "prune ledger entries older than LEDGER_RETENTION_DAYS; with --drift, re-map every lead-model "
        "row and queue the ones changed behind the signals' back."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--drift",
            action="store_true",
            help="Also scan every LEAD_MODEL row for changes made by queryset.update() or bulk_create().",
        )

    def handle(self, *args: Any, drift: bool = False, **options: Any) -> None:
        report = sweep(drift=drift)
        self.stdout.write(self.style.SUCCESS(f"crmify sweep: {report}."))
