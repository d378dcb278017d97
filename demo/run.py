"""``make demo``: migrate, seed, then run the Insightly sandbox, the task worker and the web server together.

Ctrl-C stops all three. Running it again reuses the database and the sandbox's saved state.
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
API_KEY = os.environ.setdefault("CRMIFY_BACKEND_AUTH_API_KEY", "demo-sandbox-key")


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
        time.sleep(0.2)


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    os.environ["CRMIFY_DEMO_SANDBOX_PORT"] = str(SANDBOX_PORT)
    for port in (WEB_PORT, SANDBOX_PORT):
        if not port_free(port):
            raise SystemExit(
                f"Port {port} is in use (is the demo already running?). "
                "Set CRMIFY_DEMO_PORT / CRMIFY_DEMO_SANDBOX_PORT to use others."
            )
    subprocess.run(manage("migrate", "--noinput", "-v0"), check=True, cwd=DEMO)
    subprocess.run(manage("createcachetable"), check=True, cwd=DEMO)
    subprocess.run(manage("demo_seed"), check=True, cwd=DEMO)
    processes = [
        subprocess.Popen(
            manage(
                "crmify_sandbox",
                "--port",
                str(SANDBOX_PORT),
                "--api-key",
                API_KEY,
                "--state-file",
                str(DEMO / "var" / "sandbox.json"),
                "--quiet",
            ),
            cwd=DEMO,
        )
    ]
    wait_for_port(SANDBOX_PORT)
    processes.append(subprocess.Popen(manage("db_worker", "--interval", "0.5"), cwd=DEMO))
    processes.append(
        subprocess.Popen(manage("runserver", f"127.0.0.1:{WEB_PORT}", "--noreload"), cwd=DEMO)
    )
    wait_for_port(WEB_PORT, 30)
    print(
        f"\n  Demo site:      http://127.0.0.1:{WEB_PORT}/\n"
        f"  Admin:          http://127.0.0.1:{WEB_PORT}/admin/crmify/lead/  (user admin, password admin)\n"
        f"  Sandbox CRM:    http://127.0.0.1:{SANDBOX_PORT}/v3.1/  (API key {API_KEY})\n"
        "  300 historic users are not in the CRM yet: `manage.py crmify_sync --drift` brings them in.\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("A demo process stopped; stopping the others.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
