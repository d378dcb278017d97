"""``python -m tests.e2e.screenshots``: regenerate the README's screenshots under ``docs/``.

The pictures are the browser tests' own artifacts (``tests/e2e/test_demo_browser.py`` and
``test_compare_import_failures.py``, ``test_demo_browser.py`` and ``test_staff_workflows.py`` on one fresh demo
stack), so every one shows a page a passing test has just checked. This runs those tests with the artifacts
in a temporary directory and copies the README's choice to ``docs/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.e2e.stack import ROOT

#: Test artifact -> file under docs/ (the README's admin tour names these).
DOCS = {
    "site-after-signup": "demo-site-home.png",
    "admin-changelist": "admin-changelist.png",
    "admin-lead-ledger": "admin-lead-ledger.png",
    "admin-lead-failed": "admin-lead-failed.png",
    "admin-mapper-preview": "admin-mapper-preview.png",
    "admin-backfill-dry-run": "admin-backfill-dry-run.png",
    "admin-backfill-progress": "admin-backfill-progress.png",
    "admin-import-preview": "admin-import-preview.png",
    "admin-compare-drift": "admin-compare.png",
    "admin-changelist-failure-open": "admin-changelist-failure.png",
    "admin-mapper-preview-failed": "admin-mapper-preview-failed.png",
    "admin-import-ownership": "admin-import-ownership.png",
    "admin-lead-refused": "admin-lead-refused.png",
    "admin-force-status": "admin-force-status.png",
    "admin-health": "admin-health.png",
    "admin-health-unreachable": "admin-health-unreachable.png",
}
#: The browser tests whose artifacts these are, in the order they run.
TESTS = (
    "test_compare_import_failures.py",
    "test_demo_browser.py",
    "test_staff_workflows.py",
)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="crmify-shots-") as artifacts:
        env = {**os.environ, "CRMIFY_E2E_ARTIFACTS": artifacts}
        tests = [str(ROOT / "tests" / "e2e" / name) for name in TESTS]
        status = subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], env=env, cwd=ROOT)
        if status.returncode != 0:
            print("The browser tests failed: docs/ left as it was.", file=sys.stderr)
            return status.returncode
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        for artifact, name in DOCS.items():
            shutil.copyfile(Path(artifacts) / f"{artifact}.png", docs / name)
            print(f"docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
