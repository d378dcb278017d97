"""``make demo``: migrate, seed, then run the sandbox CRM, the task worker and the web server together.

Ctrl-C (or SIGTERM) stops all three. Running it again reuses the database and the sandbox's saved leads.

The CRM may go away while the site runs, as a real one can: stop the sandbox (``kill -INT $(cat
demo/var/sandbox.pid)``) and the site and the worker keep running while the admin shows the outage;
``python demo/run.py --sandbox`` starts the sandbox again (same port, same leads) and the waiting leads
go out. crmify's sweeper needs no cron here: the sweeps schedule themselves (``SWEEP_INTERVAL``).

The end-to-end tests start a private copy through these environment variables:

``CRMIFY_DEMO_PORT``          the web server's port (8000)
``CRMIFY_DEMO_SANDBOX_PORT``  the sandbox CRM's port (8765)
``CRMIFY_DEMO_VAR``           where the SQLite database and the sandbox's leads live (``demo/var``)
``CRMIFY_DEMO_CRM_RATE``      requests per second the sandbox allows and crmify paces itself to (10)
``CRMIFY_DEMO_CRM``           which CRM the shop talks to: ``insightly`` (default) or ``hubspot``
``CRMIFY_DEMO_PULL_INTERVAL`` seconds between polls of the CRM for a salesperson's changes (60)

Changes made in the CRM come back two ways, as on a real site: the sandbox sends its CRM's webhooks to the
site (``/crm/webhooks/<crm>/``, signed with the demo's secret or sent with its Basic credentials), and the
worker polls every ``CRMIFY_DEMO_PULL_INTERVAL`` seconds. Play the salesperson with the sandbox's control
API: ``curl -X POST -d '{"status": "Disqualified"}' http://127.0.0.1:8765/_sandbox/leads/<id>/edit``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent
WEB_PORT = int(os.environ.get("CRMIFY_DEMO_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("CRMIFY_DEMO_SANDBOX_PORT", "8765"))
VAR_DIR = Path(os.environ.get("CRMIFY_DEMO_VAR") or DEMO / "var").resolve()
CRM_RATE = os.environ.get("CRMIFY_DEMO_CRM_RATE", "10")
API_KEY = os.environ.setdefault("CRMIFY_BACKEND_AUTH_API_KEY", "demo-sandbox-key")
CRM = os.environ.get("CRMIFY_DEMO_CRM", "insightly")
#: The sandbox's account as the shop needs it: its custom fields (``shop.mappers``), per CRM. The Plan
#: has no "Enterprise", so the seed's failing leads fail on either CRM.
SANDBOX_ACCOUNT = {
    "insightly": ["--state-file", str(VAR_DIR / "sandbox.json")],
    "hubspot": [
        "--crm",
        "hubspot",
        *("--property", "Plan__c:enumeration:Free|Plus|Pro"),
        *("--property", "Signup_Source__c"),
        *("--state-file", str(VAR_DIR / "hubspot.json")),
    ],
}
#: Where each CRM's API lives on the sandbox, for the banner.
SANDBOX_API = {"insightly": "/v3.1/", "hubspot": "/crm/v3/"}
#: The running sandbox's process id: stop it to show an outage.
SANDBOX_PID = VAR_DIR / "sandbox.pid"
#: The webhook credentials the site checks (``demo_site.settings``) and the sandbox signs or sends with.
WEBHOOK_SECRET = os.environ.setdefault("CRMIFY_WEBHOOK_SECRET", "demo-webhook-secret")
WEBHOOK_USERNAME = os.environ.setdefault("CRMIFY_WEBHOOK_USERNAME", "insightly")
WEBHOOK_PASSWORD = os.environ.setdefault("CRMIFY_WEBHOOK_PASSWORD", "demo-webhook-password")
#: How each CRM's webhooks reach the site: where, and with what credentials.
WEBHOOKS = {
    "insightly": [
        *("--webhook-url", f"http://127.0.0.1:{WEB_PORT}/crm/webhooks/insightly/"),
        *("--webhook-username", WEBHOOK_USERNAME, "--webhook-password", WEBHOOK_PASSWORD),
    ],
    "hubspot": [
        *("--webhook-url", f"http://127.0.0.1:{WEB_PORT}/crm/webhooks/hubspot/"),
        *("--webhook-secret", WEBHOOK_SECRET),
    ],
}


def manage(*args: str) -> list[str]:
    return [sys.executable, str(DEMO / "manage.py"), *args]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_for_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while port_free(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"Nothing answered on port {port} within {seconds:g} s.")
        time.sleep(0.1)


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def start_sandbox() -> subprocess.Popen[bytes]:
    """The sandbox CRM needs no database: it starts while the database is being prepared. Its process
    id goes to ``SANDBOX_PID``."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    sandbox = subprocess.Popen(
        manage(
            "crmify_sandbox",
            *("--port", str(SANDBOX_PORT), "--api-key", API_KEY, "--rate", CRM_RATE),
            *SANDBOX_ACCOUNT[CRM],
            *WEBHOOKS[CRM],
            "--quiet",
        ),
        cwd=DEMO,
        stdout=subprocess.DEVNULL,
    )
    SANDBOX_PID.write_text(str(sandbox.pid))
    return sandbox


def sandbox_only() -> None:
    """``run.py --sandbox``: start the demo's sandbox again (after it was stopped) until Ctrl-C."""
    if not port_free(SANDBOX_PORT):
        raise SystemExit(f"Port {SANDBOX_PORT} is in use: is the sandbox running already?")
    sandbox = start_sandbox()
    wait_for_port(SANDBOX_PORT)
    print(f"Sandbox CRM back on http://127.0.0.1:{SANDBOX_PORT}/ (Ctrl-C stops it).", flush=True)
    try:
        sandbox.wait()
    except KeyboardInterrupt:
        stop_all([sandbox])


def prepare_database() -> None:
    """Migrate, create the cache table and seed, in this process (each ``manage.py`` would cost a
    Django start of its own)."""
    sys.path.insert(0, str(DEMO))
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("createcachetable")
    call_command("demo_seed")
    call_command("crmify_sync")  # what a previous run left behind (a worker stopped mid-task)
    # migrate queued the first of the sweeps that schedule themselves: no cron, no loop here.
    connections.close_all()


def start_site() -> list[subprocess.Popen[bytes]]:
    """The worker and the web server, once the database is ready."""
    worker = subprocess.Popen(
        # The README's production settings (its "Commit to CRM" figures): poll every 0.1 s on a
        # connection kept open (CONN_MAX_AGE in demo_site/settings.py).
        manage("db_worker", "--interval", "0.1", "--no-reload", "--no-startup-delay"),
        cwd=DEMO,
    )
    web = subprocess.Popen(manage("runserver", f"127.0.0.1:{WEB_PORT}", "--noreload"), cwd=DEMO)
    return [worker, web]


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # Started in the background by a script, SIGINT comes in ignored, and so would it be for the
    # children: take it back, so Ctrl-C (or a SIGINT from stop_all) always stops every process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    os.environ["CRMIFY_DEMO_SANDBOX_PORT"] = str(SANDBOX_PORT)
    os.environ["CRMIFY_DEMO_VAR"] = str(VAR_DIR)
    os.environ["CRMIFY_DEMO_CRM_RATE"] = CRM_RATE
    if CRM not in SANDBOX_ACCOUNT:
        raise SystemExit(
            f"CRMIFY_DEMO_CRM must be one of {', '.join(SANDBOX_ACCOUNT)}, not {CRM!r}."
        )
    if sys.argv[1:] == ["--sandbox"]:
        sandbox_only()
        return
    for port in (WEB_PORT, SANDBOX_PORT):
        if not port_free(port):
            raise SystemExit(
                f"Port {port} is in use (is the demo already running?). "
                "Set CRMIFY_DEMO_PORT / CRMIFY_DEMO_SANDBOX_PORT to use others."
            )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sandbox = start_sandbox()
        processes.append(sandbox)
        prepare_database()
        wait_for_port(SANDBOX_PORT)
        site = start_site()
        processes += site
        wait_for_port(WEB_PORT, 30)
        print(
            f"\n  Demo site:    http://127.0.0.1:{WEB_PORT}/  (customers ada, grace, ...: password demo)\n"
            f"  Admin:        http://127.0.0.1:{WEB_PORT}/admin/crmify/lead/\n"
            "                superuser admin / admin; viewer / viewer may only look\n"
            f"  Sandbox CRM:  http://127.0.0.1:{SANDBOX_PORT}/_sandbox/leads  ({CRM}: every lead it"
            f" holds; API http://127.0.0.1:{SANDBOX_PORT}{SANDBOX_API[CRM]}, key {API_KEY})\n"
            f"  Backfill:     http://127.0.0.1:{WEB_PORT}/admin/crmify/lead/backfill/"
            "  (brings in the 500 historic customers)\n"
            f'  Salesperson:  curl -X POST -d \'{{"status": "Disqualified"}}\' '
            f"http://127.0.0.1:{SANDBOX_PORT}/_sandbox/leads/<CRM id>/edit\n"
            "                changes the lead in the CRM; it comes back by webhook (and by the minute's poll)\n"
            f"  Outage:       kill -INT $(cat {SANDBOX_PID}) stops the CRM; the site keeps running;\n"
            "                python demo/run.py --sandbox starts it again\n"
            f"  Data in {VAR_DIR}. Ctrl-C stops everything.\n",
            flush=True,
        )
        # The site runs on without its CRM, as a real site would: crmify shows the outage.
        while all(process.poll() is None for process in site):
            time.sleep(0.5)
            if sandbox.returncode is None and sandbox.poll() is not None:
                print(
                    "The sandbox CRM stopped; the site keeps running and the admin shows the outage. "
                    "Start it again with: python demo/run.py --sandbox",
                    file=sys.stderr,
                    flush=True,
                )
        print("A demo process stopped; stopping the others.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stop_all(processes)


if __name__ == "__main__":
    main()
