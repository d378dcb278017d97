"""``make bench``: every benchmark in turn, then one Markdown table of their verdicts and the machine.

Each benchmark runs in its own process (they configure Django differently) and appends its checks to a
JSON-lines file (``bench.common.Scorecard``). The table is printed and written to ``bench/RESULTS.md``,
which the README's benchmark section quotes. The exit status is 1 when any target was missed.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = (
    "save_overhead.py",
    "rate_limit.py",
    "backfill.py",
    "backfill_hubspot.py",
    "pull_cost.py",
    "million.py",
    "latency.py",
    "outage.py",
)


def machine() -> str:
    """CPU model and count, memory, OS, and the versions that matter to the figures."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {memory_kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        memory = ""
    # The machine may be shared: its load says how far the absolute figures (rates, latencies) are
    # from an idle one's; the side-by-side ratios move much less.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, load average {load} at the end; "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, Django {version('django')}, SQLite {sqlite3.sqlite_version}"
    )


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| Benchmark | Measure | Result | Target | Verdict |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row["bench"], row["measure"], row["result"], row["target"], row["verdict"])
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    results = Path(tempfile.mkdtemp(prefix="crmify-bench-")) / "results.jsonl"
    env = {**os.environ, "CRMIFY_BENCH_RESULTS": str(results)}
    statuses = []
    for bench in BENCHES:
        print(f"== {bench}", flush=True)
        statuses.append(subprocess.run([sys.executable, str(HERE / bench)], env=env).returncode)
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    report = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `make bench` on: {machine()}.\n\n{table(rows)}\n"
    )
    (HERE / "RESULTS.md").write_text(report)
    print(f"\n{report}\nWritten to {HERE / 'RESULTS.md'}.")
    return 1 if any(statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
