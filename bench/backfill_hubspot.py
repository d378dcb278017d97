"""The backfill on HubSpot (batch upserts) beside the same backfill on Insightly (one call per lead).

Run from the repository root: ``python bench/backfill_hubspot.py`` (``make bench``). SQLite file database
in a temporary directory, the database Tasks backend. For each CRM: ``USERS`` users without leads (a
tenth of their e-mails already in the CRM, one of them in capitals), one backfill run processed chunk by
chunk in this process (``run_chunk``, as ``crmify_backfill --wait``), then each chunk's leads sent as the
chunk's task sends them (``crmify.worker.process_leads``), against the CRM's sandbox over real HTTP.
Counted: every request the sandbox answered (the listing, HubSpot's property table, the sends).

Targets (issue 13): HubSpot <= 0.02 API calls per lead; every lead synced and each e-mail once in the
CRM, on both. The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.backfill import backfill_here, insert_users
from bench.common import Scorecard, fresh_database, sandbox_crmify

USERS = int(os.environ.get("CRMIFY_BENCH_HUBSPOT_USERS", "1000"))
CHUNK = 1000
CALLS_TARGET = 0.02


@dataclass
class Figures:
    """What one CRM's backfill cost and left behind."""

    calls: int
    routes: dict[str, int]
    synced: int
    emails: Counter[str]
    seconds: float


def backfill_into(
    prefix: str,
    crmify: dict[str, Any],
    seed: Callable[[str], None],
    crm_emails: Callable[[], list[str]],
    stats: Callable[[], dict[str, Any]],
) -> Figures:
    """Backfill ``USERS`` new users (a tenth seeded in the CRM first) into the CRM ``crmify`` names."""
    from django.test import override_settings

    from crmify.backfill import BackfillOptions
    from crmify.models import Lead
    from crmify.worker import process_leads

    pks = insert_users(prefix, USERS)
    for n in range(0, USERS, 10):
        email = f"{prefix}{n}@example.com"
        seed(email.upper() if n == 0 else email)
    started = time.perf_counter()
    with override_settings(CRMIFY=crmify):
        run = backfill_here(BackfillOptions(only_missing=True, batch_size=CHUNK))
        assert run.created == USERS, run.last_error
        leads = Lead.objects.filter(source_id__in=[str(pk) for pk in pks])
        ids = list(leads.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), CHUNK):  # what each chunk's process_leads_task does
            process_leads(ids[start : start + CHUNK])
    seconds = time.perf_counter() - started
    counts = stats()
    return Figures(
        calls=counts["total"],
        routes=dict(sorted((k, sum(v.values())) for k, v in counts["requests"].items())),
        synced=leads.filter(sync_state="synced").count(),
        emails=Counter(email.casefold() for email in crm_emails()),
        seconds=seconds,
    )


def insightly() -> Figures:
    from crmify.sandbox import Faults, SandboxServer

    server = SandboxServer(faults=Faults(requests_per_second=None, daily_quota=None)).start()
    try:
        return backfill_into(
            "insightly",
            sandbox_crmify(
                "crmify.backends.insightly.InsightlyBackend", server.api_key, server.url
            ),
            lambda email: server.add_lead(
                {"FIRST_NAME": "Old", "LAST_NAME": "Lead", "EMAIL": email}
            ),
            lambda: [str(lead["EMAIL"]) for lead in server.leads()],
            server.stats,
        )
    finally:
        server.stop()


def hubspot() -> Figures:
    from crmify.sandbox.hubspot import HubSpotSandbox

    server = HubSpotSandbox().start()
    server.set_faults(requests_per_second=None, daily_quota=None)
    try:
        return backfill_into(
            "hubspot",
            sandbox_crmify("crmify.backends.hubspot.HubSpotBackend", server.token, server.url),
            lambda email: server.add_contact({"email": email, "firstname": "Old"}),
            lambda: [str(contact["properties"]["email"]) for contact in server.leads()],
            server.stats,
        )
    finally:
        server.stop()


def main() -> int:
    fresh_database("crmify-bench-hubspot-")
    card = Scorecard("backfill_hubspot")
    results = {"Insightly": insightly(), "HubSpot": hubspot()}
    print(
        f"backfill_hubspot: {USERS:,} users per CRM ({USERS // 10} already in it), over HTTP against "
        "each sandbox, SQLite, database Tasks backend"
    )
    for name, figures in results.items():
        print(f"  {name}: {figures.calls} calls in {figures.seconds:.1f} s: {figures.routes}")
    per_lead = {name: figures.calls / USERS for name, figures in results.items()}
    card.check(
        f"API calls per backfilled lead ({USERS:,} users): HubSpot (batch) vs Insightly",
        f"{per_lead['HubSpot']:.4f} vs {per_lead['Insightly']:.4f} "
        f"({per_lead['Insightly'] / per_lead['HubSpot']:.0f}x fewer)",
        f"HubSpot <= {CALLS_TARGET}",
        per_lead["HubSpot"] <= CALLS_TARGET,
    )
    for name, figures in results.items():
        duplicates = sum(1 for count in figures.emails.values() if count > 1)
        card.check(
            f"{name}: synced; CRM e-mails; e-mails held more than once",
            f"{figures.synced:,} of {USERS:,}; {len(figures.emails):,}; {duplicates}",
            f"all; {USERS:,}; 0",
            figures.synced == USERS and len(figures.emails) == USERS and not duplicates,
        )
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
