"""A site set up as django-crmify 1.3.0's example site runs on crmify with only the changes the README's
"Upgrading from 1.3" lists, against the sandbox over real HTTP.

The site is ``tests/site_1_3``: its own settings (``shopsite``), a ``members`` app with a ``UserProfile``
(``LEAD_MODEL``, a one-to-one ``auth`` to ``User``), a ``Subscription`` (``LEAD_STATUS_MODEL``) whose
``lead_status()`` answers with ``LeadStatusMixin``'s constants, and a mapper reading ``auth__first_name``.
Every step runs in its own process on the site's settings, as the site and its ``db_worker`` would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crmify.sandbox import SandboxServer
from tests.conftest import calls

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tests" / "site_1_3"


class Site:
    """The example site on a database file of its own, pointed at ``sandbox``."""

    def __init__(self, sandbox: SandboxServer, database: Path) -> None:
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "shopsite.settings",
            "PYTHONPATH": os.pathsep.join([str(SITE), str(ROOT)]),
            "SITE_DB": str(database),
            "SITE_CRM_URL": sandbox.url,
            # As 1.3.0 read it: the API key from the environment.
            "CRMIFY_BACKEND_AUTH_API_KEY": sandbox.api_key,
        }

    def run(self, *arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, *arguments],
            cwd=SITE,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    def manage(self, *arguments: str) -> str:
        return self.run("-m", "django", *arguments)

    def step(self, name: str) -> Any:
        """One step of ``story.py``; its JSON output, if any."""
        output = self.run("story.py", name).strip()
        return json.loads(output) if output else None

    def work(self) -> None:
        """The site's ``db_worker``, until its queue is empty."""
        self.manage("db_worker", "--batch", "--no-startup-delay", "--interval=0.1", "-v", "0")

    def leads(self) -> dict[str, dict[str, Any]]:
        """crmify's leads in the site's database, by e-mail."""
        return {lead["email"]: lead for lead in self.step("report")}


def crm_leads(sandbox: SandboxServer) -> dict[str, dict[str, Any]]:
    """The sandbox's leads by e-mail, with ``STATUS`` the name of their ``LEAD_STATUS_ID``."""
    return {lead["EMAIL"]: {**lead, "STATUS": lead["LEAD_STATUS"]} for lead in sandbox.leads()}


@pytest.mark.slow
def test_the_1_3_example_site_syncs_sign_ups_statuses_and_deletions(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.set_faults(requests_per_second=None)
    site = Site(sandbox, tmp_path / "site.sqlite3")
    site.manage("migrate", "-v", "0")
    # No error; the one warning the README's upgrade section says to expect with no shared cache.
    check = site.manage("check")
    assert re.findall(r"\((\w+\.[EW]\d+)\)", check) == ["crmify.W051"], check

    site.step("sign_up")
    site.work()
    crm = crm_leads(sandbox)
    assert sorted(crm) == ["ada@example.com", "edsger@example.com", "grace@example.com"]
    assert {email: lead["STATUS"] for email, lead in crm.items()} == dict.fromkeys(
        crm, "Not Contacted"
    )
    assert (crm["ada@example.com"]["FIRST_NAME"], crm["ada@example.com"]["LAST_NAME"]) == (
        "Ada",
        "Lovelace",
    )
    assert crm["grace@example.com"]["ADDRESS_CITY"] == "Arlington"
    local = site.leads()
    assert {lead["sync_state"] for lead in local.values()} == {"synced"}, local
    crm_ids = {email: str(lead["LEAD_ID"]) for email, lead in crm.items()}
    assert {email: lead["external_id"] for email, lead in local.items()} == crm_ids

    site.step("change")
    site.work()
    crm = crm_leads(sandbox)
    assert {email: lead["STATUS"] for email, lead in crm.items()} == {
        "ada@example.com": "Converted",
        "edsger@example.com": "Not Contacted",
        "grace@example.com": "Disqualified",
    }
    assert crm["edsger@example.com"]["FIRST_NAME"] == "Edsger W."
    # Every change was an update of the lead made at sign-up: still three creates, the same ids.
    assert calls(sandbox, "POST /Leads") == 3
    assert {email: str(lead["LEAD_ID"]) for email, lead in crm.items()} == crm_ids

    site.step("leave")
    site.work()
    crm = crm_leads(sandbox)
    assert list(crm) == ["ada@example.com"]
    assert crm["ada@example.com"]["STATUS"] == "Converted"
    deleted = [route for route in sandbox.stats()["requests"] if route.startswith("DELETE ")]
    assert sum(calls(sandbox, route) for route in deleted) == 2
    local = site.leads()
    assert {email: lead["sync_state"] for email, lead in local.items()} == {
        "ada@example.com": "synced",
        "edsger@example.com": "deleted",
        "grace@example.com": "deleted",
    }

    # crmify's admin works in the site as it stands.
    assert site.step("admin") == {"changelist": 200, "change": 200}
