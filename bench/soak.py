"""The full fault soak (``make soak``): 2,000 users created, renamed, converted and deleted by four writer
threads while two ``db_worker`` processes sync them into a sandbox that fails a third of the calls; then
the sweeper, then the CRM is compared with the app. Prints the figures for the README's table and exits
non-zero if any check failed (a duplicate, a lost lead or update, a lead failed by a transient error).

The scenario and its checks are ``tests/reliability/soak.py``, shared with the CI version
(``tests/reliability/test_soak.py``). Needs PostgreSQL (``PGHOST``/``PGPORT``/``PGUSER``, default
127.0.0.1:5432 as ``postgres``): it creates the database ``test_crmify_soak_bench``
(``CRMIFY_SOAK_DB_NAME``) and drops it at the end. ``SOAK_USERS`` changes the load; ``SOAK_CRM=hubspot``
runs it against the HubSpot sandbox (batch calls, 207s, 409s) instead of Insightly's. Run from the
repository root: ``python bench/soak.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERS = int(os.environ.get("SOAK_USERS", "2000"))
CRM = os.environ.get("SOAK_CRM", "insightly")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        CRMIFY_TEST_DB="postgres",
        CRMIFY_TEST_DB_NAME=os.environ.get("CRMIFY_SOAK_DB_NAME", "test_crmify_soak_bench"),
    )
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import override_settings

    from crmify.sandbox import SandboxServer
    from crmify.sandbox.hubspot import HubSpotSandbox
    from tests.reliability.soak import run_soak, soak_crmify

    sandbox = (HubSpotSandbox() if CRM == "hubspot" else SandboxServer()).start()
    settings = soak_crmify(sandbox)
    started = time.monotonic()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        with override_settings(CRMIFY=settings):
            soak = run_soak(
                sandbox,
                settings,
                users=USERS,
                timeout=3600,
                progress=lambda text: print(f"  [{time.monotonic() - started:6.1f} s] {text}"),
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        sandbox.stop()
    print(f"soak: {USERS:,} users on {CRM}, sandbox faults {soak.sandbox.get('injected')}")
    width = max(len(name) for name, _ in soak.figures())
    for name, value in soak.figures():
        print(f"  {name:<{width}}  {value}")
    for problem in soak.problems[:50]:
        print(f"  PROBLEM {problem}")
    verdict = "PASS" if not soak.problems else f"FAIL ({len(soak.problems)} problems)"
    print(f"  duplicates 0, lost 0, failures only permanent: {verdict}")
    return 0 if not soak.problems else 1


if __name__ == "__main__":
    sys.exit(main())
