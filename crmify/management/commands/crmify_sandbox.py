"""``python manage.py crmify_sandbox [--port 8765] ...``: run the offline Insightly sandbox.

A thin wrapper for the demo: same options as ``python -m crmify.sandbox`` (see
``crmify.sandbox.cli``). Needs Django set up but no crmify settings, and imports only from
``crmify.sandbox``. Prints the base URL and API key to configure, serves until Ctrl-C.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crmify.sandbox.cli import add_arguments, build_server, run


class Command(BaseCommand):
    help = "Run an offline Insightly API v3.1 or HubSpot CRM (--crm hubspot), with optional fault injection, for demos and tests."
    # The sandbox stands apart from crmify's configuration: it must start even while the
    # site's crmify settings are incomplete (often the reason for running it), so skip checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = build_server(options)
        except (OSError, ValueError) as error:
            raise CommandError(str(error)) from error
        run(server, self.stdout.write)
