"""The CRM goes down while people sign up, for seconds instead of minutes: ``bench/outage.py``'s case,
compressed, with real ``db_worker`` processes, the sandbox over real HTTP (stopped: connection refused;
started again on the same port with the same leads) and the bench site's own SQLite database.

What a site relies on: once the CRM answers again the backlog goes out at the rate limit (within 1.2 x
the floor of calls / rate, plus 10 s for noticing the return), nothing is lost, sent twice or failed by
the outage, and during the outage only the calls that found it and the probes were made.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.outage import expected_probes, target
from crmify.crm_state import DOWN_AFTER_FAILURES
from tests.reliability.processes import ROOT

pytestmark = pytest.mark.slow

OUTAGE = 8.0
SIGNUPS = 40


@pytest.mark.parametrize("workers", [1, 2])
def test_the_backlog_of_an_outage_is_sent_at_the_rate_limit_when_the_crm_answers(
    workers: int,
) -> None:
    run = subprocess.run(
        [sys.executable, "bench/outage.py", "--case", str(OUTAGE), str(SIGNUPS), str(workers)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert (result["lost"], result["duplicates"], result["failed"]) == (0, 0, 0)
    assert result["calls_after"] >= 2 * SIGNUPS  # a lookup and a create per lead
    assert result["recovery"] <= target(result), result
    # During the outage: the calls that found it (one per worker in flight at most beside them), then
    # one probe per interval of the schedule; not a call per lead.
    probes = result["calls_during"] - DOWN_AFTER_FAILURES
    assert expected_probes(OUTAGE) - 1 <= probes <= expected_probes(OUTAGE) + workers, result
