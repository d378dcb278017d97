"""A private copy of ``make demo`` (sandbox CRM, ``db_worker``, ``runserver``) and a headless Chromium.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "demo" / "run.py"
#: ``make demo`` must be up within a minute; the first migrate of a fresh database is most of it.
START_SECONDS = 60
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


@dataclass
class DemoStack:
    """Where the running demo answers; ``log`` holds everything its three processes printed."""

    url: str
    sandbox_url: str
    var_dir: Path
    log: Path

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.sandbox_url}{path}", timeout=5) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        """The sandbox's request counters (as ``SandboxServer.stats()``, so ``tests.conftest.calls`` reads
        them)."""
        stats: dict[str, Any] = self._get("/_sandbox/stats")
        return stats

    def crm_lead(self, email: str) -> dict[str, Any] | None:
        """The lead the sandbox CRM holds for ``email`` (its control API), with ``LEAD_STATUS`` by name."""
        for lead in self._get("/_sandbox/leads"):
            if lead.get("EMAIL") == email:
                return dict(lead)
        return None

    def crm_emails(self) -> set[str]:
        return {str(lead.get("EMAIL")) for lead in self._get("/_sandbox/leads")}

    def set_faults(self, **changes: Any) -> None:
        """Change the sandbox's fault injection (``PUT /_sandbox/faults``): ``drop_rate=1.0`` drops every
        connection, which crmify sees as the CRM unreachable."""
        request = urllib.request.Request(
            f"{self.sandbox_url}/_sandbox/faults",
            data=json.dumps(changes).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()

    def reset_faults(self) -> None:
        """Back to the faults the sandbox started with (``DELETE /_sandbox/faults``)."""
        request = urllib.request.Request(f"{self.sandbox_url}/_sandbox/faults", method="DELETE")
        urllib.request.urlopen(request, timeout=5).close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def demo_stack(var_dir: Path, *, crm_rate: float = 200) -> Iterator[DemoStack]:
    """Run ``demo/run.py`` in ``var_dir`` until the block ends, then stop it as Ctrl-C would.

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
        "CRMIFY_BACKEND_AUTH_API_KEY": API_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the test run's settings are not the demo's
    stack = DemoStack(
        url=f"http://127.0.0.1:{web_port}",
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        var_dir=var_dir,
        log=var_dir / "demo.log",
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
