"""A private copy of ``make demo`` (sandbox CRM, ``db_worker``, ``runserver``) and a headless Chromium.

``demo_stack(crm="hubspot")`` runs ``CRMIFY_DEMO_CRM=hubspot make demo`` instead: the same shop on the
HubSpot sandbox. :class:`DemoStack` reads either sandbox's records in one shape, so a browser test
checks the CRM the same way on both.

Used by the browser tests' fixtures (``tests/e2e/conftest.py``) and by ``python -m tests.e2e.screenshots``.
The stack is ``demo/run.py`` itself, started with its environment variables on free ports and a temporary
data directory, so the tests prove what ``make demo`` runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "demo" / "run.py"
#: ``make demo`` must be up within a minute; the first migrate of a fresh database is most of it.
START_SECONDS = 60
#: Seconds between the demo's polls of the CRM in the tests (``make demo`` polls every 60).
PULL_INTERVAL = 5
#: The demo's sandbox key (``demo/run.py``'s default).
API_KEY = "demo-sandbox-key"
#: Chromium as Debian ships it, in a container without a display or a user namespace.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_CHROMIUM = (
    "apt-get install -y chromium (Debian's package; Playwright's download is not used)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


#: A HubSpot contact's status properties -> the shop's status they stand for (``demo_site.settings``).
HUBSPOT_STATUSES = {
    ("hs_lead_status", "NEW"): "Not Contacted",
    ("hs_lead_status", "CONNECTED"): "Contacted",
    ("lifecyclestage", "customer"): "Converted",
}


def insightly_view(lead: dict[str, Any]) -> dict[str, Any]:
    """An Insightly lead in the tests' shape."""
    return {
        "id": lead.get("LEAD_ID"),
        "email": lead.get("EMAIL"),
        "first_name": lead.get("FIRST_NAME"),
        "last_name": lead.get("LAST_NAME"),
        "company": lead.get("ORGANISATION_NAME"),
        "status": lead.get("LEAD_STATUS"),
    }


def hubspot_view(contact: dict[str, Any]) -> dict[str, Any]:
    """A HubSpot contact in the tests' shape: its status read back from its status properties."""
    held = contact.get("properties") or {}
    statuses = [
        status for (name, value), status in HUBSPOT_STATUSES.items() if held.get(name) == value
    ]
    return {
        "id": contact.get("id"),
        "email": held.get("email"),
        "first_name": held.get("firstname"),
        "last_name": held.get("lastname"),
        "company": held.get("company"),
        "status": statuses[0] if len(statuses) == 1 else statuses or None,
    }


#: Per CRM: how a record reads, and the route of an update in the sandbox's counters.
VIEWS = {"insightly": insightly_view, "hubspot": hubspot_view}
UPDATE_ROUTES = {"insightly": "PUT /Leads", "hubspot": "PATCH /objects/contacts/{id}"}


@dataclass
class DemoStack:
    """Where the running demo answers; ``log`` holds everything its three processes printed; ``crm``
    is the CRM the shop talks to."""

    url: str
    sandbox_url: str
    var_dir: Path
    log: Path
    crm: str = "insightly"

    @property
    def update_route(self) -> str:
        """The sandbox route an update of a record is counted under."""
        return UPDATE_ROUTES[self.crm]

    env: dict[str, str] = field(default_factory=dict)
    #: Sandboxes a test started again after stopping the demo's own (stopped with the stack).
    restarted: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop_sandbox(self) -> None:
        """The CRM goes away, as ``demo/run.py`` tells a person to do it: Ctrl-C to the sandbox's process
        (its id in ``sandbox.pid``); the site and the worker keep running."""
        os.kill(int((self.var_dir / "sandbox.pid").read_text()), signal.SIGINT)
        deadline = time.monotonic() + 15
        while _answers(f"{self.sandbox_url}/_sandbox/stats"):
            if time.monotonic() > deadline:
                raise RuntimeError("The demo's sandbox did not stop.")
            time.sleep(0.1)

    def start_sandbox(self) -> None:
        """``python demo/run.py --sandbox``: the CRM is back, on the same port with the same leads."""
        with self.log.open("ab") as log:
            self.restarted.append(
                subprocess.Popen(
                    [sys.executable, str(RUN_PY), "--sandbox"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 30
        while not _answers(f"{self.sandbox_url}/_sandbox/stats"):
            if time.monotonic() > deadline:
                raise RuntimeError("The demo's sandbox did not start again.")
            time.sleep(0.1)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.sandbox_url}{path}", timeout=5) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        """The sandbox's request counters (as ``SandboxServer.stats()``, so ``tests.conftest.calls`` reads
        them)."""
        stats: dict[str, Any] = self._get("/_sandbox/stats")
        return stats

    def crm_records(self) -> list[dict[str, Any]]:
        """Every record the sandbox CRM holds (its control API), as :func:`insightly_view` shapes them."""
        view = VIEWS[self.crm]
        return [view(record) for record in self._get("/_sandbox/leads")]

    def crm_lead(self, email: str) -> dict[str, Any] | None:
        """The record the sandbox CRM holds for ``email``: ``email``, ``first_name``, ``last_name``,
        ``company`` and ``status`` (the shop's status name)."""
        return next((record for record in self.crm_records() if record["email"] == email), None)

    def crm_status(self, email: str) -> str | None:
        lead = self.crm_lead(email)
        return lead and lead["status"]

    def crm_emails(self) -> set[str]:
        return {str(record["email"]) for record in self.crm_records()}

    def set_faults(self, **changes: Any) -> None:
        """Change the sandbox's fault injection (``PUT /_sandbox/faults``): ``drop_rate=1.0`` drops every
        connection, which crmify sees as the CRM unreachable."""
        self._control("PUT", "faults", changes)

    def reset_faults(self) -> None:
        """Back to the faults the sandbox started with (``DELETE /_sandbox/faults``)."""
        self._control("DELETE", "faults")

    def salesperson(self, crm_id: str, action: str = "edit", **body: Any) -> None:
        """A salesperson's work in the CRM (the sandbox's control API): ``edit`` with ``status=...``,
        ``merge`` with ``into=...``, or ``delete``."""
        if action == "delete":
            self._control("DELETE", f"leads/{crm_id}")
        else:
            self._control("POST", f"leads/{crm_id}/{action}", body)

    def set_webhooks(self, **changes: Any) -> None:
        """Change how the sandbox sends its webhooks (``PUT /_sandbox/webhooks``): ``url=None`` stops
        them; :meth:`reset_webhooks` goes back to the demo's own settings."""
        self._control("PUT", "webhooks", changes)

    def webhook_statuses(self) -> list[int | None]:
        """The site's answer to each webhook the sandbox delivered, oldest first (``GET
        /_sandbox/webhooks``)."""
        return [
            delivery.get("last_status")
            for delivery in self._get("/_sandbox/webhooks")["deliveries"]
        ]

    def reset_webhooks(self) -> None:
        self._control("DELETE", "webhooks")

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        request = urllib.request.Request(
            f"{self.sandbox_url}/_sandbox/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def demo_stack(
    var_dir: Path, *, crm: str = "insightly", crm_rate: float = 200
) -> Iterator[DemoStack]:
    """Run ``demo/run.py`` in ``var_dir`` against the sandbox of ``crm`` until the block ends, then stop
    it as Ctrl-C would.

    ``crm_rate`` is the sandbox's (and crmify's) requests per second: above Insightly's 10, so a
    500-row backfill does not hold the one worker for a minute while other tests wait on it.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    web_port, sandbox_port = free_port(), free_port()
    env = {
        **os.environ,
        "CRMIFY_DEMO_PORT": str(web_port),
        "CRMIFY_DEMO_SANDBOX_PORT": str(sandbox_port),
        "CRMIFY_DEMO_VAR": str(var_dir),
        "CRMIFY_DEMO_CRM_RATE": str(crm_rate),
        "CRMIFY_DEMO_CRM": crm,
        "CRMIFY_DEMO_PULL_INTERVAL": str(PULL_INTERVAL),
        "CRMIFY_BACKEND_AUTH_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the test run's settings are not the demo's
    stack = DemoStack(
        url=f"http://127.0.0.1:{web_port}",
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        var_dir=var_dir,
        log=var_dir / "demo.log",
        crm=crm,
        env=env,
    )
    with stack.log.open("wb") as log:
        # Its own session: the test's Ctrl-C reaches run.py through the finally below, once.
        process = subprocess.Popen(
            [sys.executable, str(RUN_PY)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while not _answers(f"{stack.url}/"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"The demo did not come up within {START_SECONDS} s:\n"
                        + stack.log.read_text(errors="replace")[-4000:]
                    )
                time.sleep(0.2)
            yield stack
        finally:
            for sandbox in stack.restarted:
                sandbox.send_signal(signal.SIGINT)
                sandbox.wait(timeout=20)
            process.send_signal(signal.SIGTERM)  # run.py stops its three processes
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium through Playwright (``executable_path``): Playwright's own download is not used."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
    )


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    """Sign in on the admin's login page as a person would."""
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")
