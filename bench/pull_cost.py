"""What polling the CRM for changes costs, in API calls, on Insightly and HubSpot, beside each plan's quota.

Run from the repository root: ``python bench/pull_cost.py`` (``make bench``); ``--short`` runs a small
version (200 leads and changes) in seconds, as ``tests/test_poller.py`` does. SQLite file database in a
temporary directory, the database Tasks backend (so a change pushed back would be a queued task), the
poller of ``crmify.poller`` called in this process against each CRM's sandbox over real HTTP (no
per-second limit on the sandbox; HubSpot's search keeps its own pace of 3.6 calls a second).

For each CRM: ``LEADS`` leads that the CRM holds; the site's first poll (it reads the last minute), then
(each measure after a salesperson's edit of one record of its own, a second after the other changes, so
the records the poll reads again, those of the watermark's second, are that one):

- a poll with no change (after one salesperson's edit was read): its calls;
- ``LEADS`` records changed by a salesperson (the dead status), then one poll: its calls (one a page:
  Insightly 500 records, HubSpot 100), the changes applied, and what it pushed back (sandbox writes and
  queued sync tasks);
- a scan for deletes (``crmify_pull --deletes``) with no record deleted, then with ``DELETED`` records
  deleted in the CRM: the listing's calls, the re-reads that confirm the deletes, the leads marked;
- the daily cost at the default 60 s interval with a delete scan an hour, from the calls measured, beside
  the plan's daily quota (Insightly Plus: 40,000; HubSpot private app, Free/Starter: 250,000) and the
  estimate ``crmify_check`` prints (``crmify.poller.daily_cost``).

Counted: every request the sandbox answered. Targets: a poll with no change makes 1 call; a poll of N
changes makes one call a page and at most half as many again (HubSpot's keyset paging reads the
contacts of a page's last millisecond again); nothing is pushed back; every change and delete is
applied; the estimate of ``crmify_check`` is within a call a scan of the measured figure; polling
takes under half the plan's quota. The exit status is 1 when a target is missed; the last line is the
figures as JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Scorecard, fresh_database, sandbox_crmify

SHORT = "--short" in sys.argv[1:]
LEADS = 200 if SHORT else int(os.environ.get("CRMIFY_BENCH_PULL_LEADS", "1000"))
DELETED = 5
#: The plans' daily quotas the cost is set beside (``shared/insightly-api.md``, ``hubspot-api.md``).
QUOTAS = {"Insightly": ("Plus", 40_000), "HubSpot": ("private app, Free/Starter", 250_000)}
INTERVAL = 60
DELETES_INTERVAL = 3600


@dataclass
class Figures:
    """What polling one CRM cost."""

    page: int
    listing_page: int
    idle_calls: int
    changed_calls: int
    applied: int
    pushed_back: int
    scan_calls: int
    scan_with_deletes_calls: int
    deleted: int
    estimate_per_day: int
    quota: int

    @property
    def measured_per_day(self) -> int:
        polls, scans = 86400 / INTERVAL, 86400 / DELETES_INTERVAL
        # A scan rides on a poll: its calls are the listing's, beside the poll's own.
        return math.ceil(polls * self.idle_calls + scans * (self.scan_calls - self.idle_calls))


@dataclass
class Crm:
    """One CRM's sandbox, as the bench drives it: a salesperson's edits through its control API."""

    crmify: dict[str, Any]
    server: Any
    #: Seed a record the CRM holds (its e-mail); its CRM id.
    seed: Callable[[str], str]
    #: The dead status as the CRM names it, and a field it does not own (for an edit of no consequence).
    dead: str
    other_field: str

    def disqualify(self, external_id: str) -> None:
        self.server.salesperson_edit(external_id, {}, self.dead)

    def touch(self, external_id: str) -> None:
        self.server.salesperson_edit(external_id, {self.other_field: f"Edited {time.time()}"}, None)

    def delete(self, external_id: str) -> None:
        self.server.salesperson_delete(external_id)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.server.stats()
        return result


def requests(crm: Crm) -> int:
    return int(crm.stats()["total"])


def writes(crm: Crm) -> int:
    """Requests that changed the CRM (reads, searches and batch reads aside)."""
    return sum(
        sum(statuses.values())
        for route, statuses in crm.stats()["requests"].items()
        if not route.startswith("GET ") and not route.endswith(("/search", "/batch/read"))
    )


def measure(name: str, crm: Crm) -> Figures:
    """Seed ``LEADS`` leads the CRM holds, then poll as the bench's docstring says."""
    from django.db.models import Q
    from django.test import override_settings
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from crmify.models import Lead
    from crmify.poller import daily_cost, poll
    from crmify.tracking import fingerprint
    from crmify.worker import current_backend

    with override_settings(CRMIFY=crmify_for(crm)):
        backend = current_backend()
        Lead.objects.all().delete()  # the other CRM's: a scan of this one would take them for deleted
        # One record more than LEADS: a salesperson edits it alone, a second after the others'
        # changes, so the watermark's second (read again by each poll) holds one record.
        extra, *ids = [crm.seed(f"{name.lower()}{n}@example.com") for n in range(LEADS + 1)]
        leads = []
        for n, external_id in enumerate([extra, *ids]):
            lead = Lead(
                email=f"{name.lower()}{n}@example.com",
                first_name="Ada",
                last_name=f"L{n}",
                status="NotContacted",
                external_id=external_id,
                sync_state="synced",
                last_synced_at=timezone.now() - timedelta(hours=1),
            )
            lead.synced_values = lead.crm_values()
            lead.fingerprint = lead.synced_fingerprint = fingerprint(lead.crm_values())
            leads.append(lead)
        Lead.objects.bulk_create(leads)
        poll()  # the site's first poll: it reads the last minute (the seeds), and the CRM's tables
        edit_alone(crm, extra)

        before = requests(crm)
        assert not poll().error
        idle = requests(crm) - before

        for external_id in ids:
            crm.disqualify(external_id)
        before, wrote = requests(crm), writes(crm)
        tasks = DBTaskResult.objects.count()
        report = poll()
        changed = requests(crm) - before
        pushed = writes(crm) - wrote + DBTaskResult.objects.count() - tasks
        applied = report.inbound.applied
        edit_alone(crm, extra)

        before = requests(crm)
        assert poll(deletes=True).deletes_scanned
        scan = requests(crm) - before
        estimate = daily_cost(backend, QUOTAS[name][1]).calls_per_day
        for external_id in ids[:DELETED]:
            crm.delete(external_id)
        before = requests(crm)
        deleted = poll(deletes=True).deleted
        scan_with_deletes = requests(crm) - before
        marked = Lead.objects.filter(Q(external_id__in=ids) & Q(deleted_in_crm_at__isnull=False))
        assert marked.count() == deleted, (marked.count(), deleted)
        return Figures(
            page=backend.pull_page_size,
            listing_page=backend.listing_page_size,
            idle_calls=idle,
            changed_calls=changed,
            applied=applied,
            pushed_back=pushed,
            scan_calls=scan,
            scan_with_deletes_calls=scan_with_deletes,
            deleted=deleted,
            estimate_per_day=estimate,
            quota=QUOTAS[name][1],
        )


def edit_alone(crm: Crm, external_id: str) -> None:
    """A salesperson's edit of one record, a second after any other change, read by a poll."""
    from crmify.poller import poll

    time.sleep(1.1)
    crm.touch(external_id)
    assert not poll().error


def crmify_for(crm: Crm) -> dict[str, Any]:
    return {
        **crm.crmify,
        "AUTO_SYNC": False,
        "PULL_INTERVAL": INTERVAL,
        "PULL_DELETES_INTERVAL": DELETES_INTERVAL,
    }


def insightly() -> Figures:
    from crmify.sandbox import Faults, SandboxServer

    server = SandboxServer(faults=Faults(requests_per_second=None, daily_quota=None)).start()
    new = server.state.status_id("Not Contacted")

    def seed(email: str) -> str:
        fields = {"FIRST_NAME": "Ada", "LAST_NAME": "L", "EMAIL": email, "LEAD_STATUS_ID": new}
        return str(server.add_lead(fields)["LEAD_ID"])

    backend = "crmify.backends.insightly.InsightlyBackend"
    crmify = sandbox_crmify(backend, server.api_key, server.url)
    try:
        return measure("Insightly", Crm(crmify, server, seed, "Disqualified", "TITLE"))
    finally:
        server.stop()


def hubspot() -> Figures:
    from crmify.sandbox.hubspot import HubSpotSandbox

    server = HubSpotSandbox().start()
    server.set_faults(requests_per_second=None, daily_quota=None)

    def seed(email: str) -> str:
        properties = {"email": email, "firstname": "Ada", "lastname": "L", "hs_lead_status": "NEW"}
        return str(server.add_contact(properties)["id"])

    crmify = sandbox_crmify("crmify.backends.hubspot.HubSpotBackend", server.token, server.url)
    try:
        return measure("HubSpot", Crm(crmify, server, seed, "UNQUALIFIED", "jobtitle"))
    finally:
        server.stop()


def main() -> int:
    fresh_database("crmify-bench-pull-")
    from crmify.poller import HEAVY_SHARE

    card = Scorecard("pull_cost")
    results = {"Insightly": insightly(), "HubSpot": hubspot()}
    print(
        f"pull_cost: {LEADS:,} leads per CRM, over HTTP against each sandbox, SQLite, database "
        f"Tasks backend; a poll every {INTERVAL} s, a delete scan every {DELETES_INTERVAL} s"
    )
    for name, f in results.items():
        plan, quota = QUOTAS[name]
        card.check(
            f"{name}: calls per poll with no change",
            f"{f.idle_calls}",
            "1",
            f.idle_calls == 1,
        )
        # A call a page, and half as many again: HubSpot's next page starts again at the last one's
        # millisecond (keyset paging), so changes made in the same milliseconds come twice.
        pages = math.ceil(1.5 * math.ceil(LEADS / f.page)) + 1
        card.check(
            f"{name}: calls per poll of {LEADS:,} changed records ({f.page} a page); applied; "
            "pushed back",
            f"{f.changed_calls}; {f.applied:,}; {f.pushed_back}",
            f"<= {pages}; {LEADS:,}; 0",
            f.changed_calls <= pages and f.applied == LEADS and f.pushed_back == 0,
        )
        # The poll's own call, and the listing's pages of the leads (the last one short or empty).
        scan = 1 + (LEADS + 1) // f.listing_page + 1
        card.check(
            f"{name}: calls of a poll with the delete scan of {LEADS:,} leads ({f.listing_page} a "
            f"page): none deleted; {DELETED} deleted; leads marked",
            f"{f.scan_calls}; {f.scan_with_deletes_calls}; {f.deleted}",
            f"<= {scan}; <= {scan + DELETED}; {DELETED}",
            f.scan_calls <= scan
            and f.scan_with_deletes_calls <= scan + DELETED
            and f.deleted == DELETED,
        )
        scans = 86400 // DELETES_INTERVAL
        card.check(
            f"{name}: calls a day at {INTERVAL} s (polls and hourly delete scans) vs the "
            f"{plan} plan's {quota:,}; crmify_check's estimate",
            f"{f.measured_per_day:,} ({f.measured_per_day / quota:.1%}); {f.estimate_per_day:,}",
            f"< {HEAVY_SHARE:.0%}; within a call a scan ({scans})",
            f.measured_per_day / quota < HEAVY_SHARE
            and abs(f.estimate_per_day - f.measured_per_day) <= scans,
        )
    print(json.dumps({name: asdict(f) for name, f in results.items()}))
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
