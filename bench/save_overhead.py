"""What crmify adds to a site's saves: queries and time, crmify on vs off, side by side in one run.

Run from the repository root: ``python bench/save_overhead.py`` (``make bench``). SQLite file database in a
temporary directory; crmify on = the database Tasks backend (django-tasks-db) and the locmem CRM backend,
the way a site runs it with ``db_worker`` (the worker is not part of the save, so it is not started);
crmify off = its receivers disconnected, plain Django. Creates and unchanged saves are interleaved in
small rounds so both sides see the same machine. Any network connection attempted during the saves is
recorded and fails the run.

Targets (issue "Core"): unchanged save <= 1.3x and 0 writes added; create <= 2.5x; no network call.
"""

from __future__ import annotations

import gc
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import django
from django.conf import settings

SAVES = 2_000
ROUND = 50
WARM_UP = 100

UNCHANGED_TARGET = 1.3
CREATE_TARGET = 2.5


def configure(db_path: Path) -> None:
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            *([] if find_spec("django.tasks") else ["django_tasks"]),
            "django_tasks_db",
            "crmify",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path)}},
        TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
        CRMIFY={"BACKEND": "crmify.backends.locmem.LocmemBackend", "TASK_BACKEND": "default"},
        LOGGING_CONFIG=None,
    )
    django.setup()


@dataclass
class Side:
    """Totals for one side (crmify on or off) of one kind of save."""

    seconds: float = 0.0
    saves: int = 0
    queries: int = 0
    writes: int = 0

    def per_save(self, value: float) -> float:
        return value / self.saves if self.saves else 0.0


@dataclass
class Counter:
    """Counts every SQL statement Django runs (an ``execute_wrapper``), writes apart."""

    queries: int = 0
    writes: int = 0
    network: list[str] = field(default_factory=list)

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.queries += 1
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
            self.writes += 1
        return execute(sql, params, many, context)


@contextmanager
def no_network(counter: Counter) -> Iterator[None]:
    """Make every outgoing connection fail, and remember it (crmify logs enqueue errors, so a raise
    alone could go unseen)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(self: socket.socket, address: Any) -> Any:
        counter.network.append(repr(address))
        raise OSError(f"benchmark: no network on the save path ({address!r})")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="crmify-bench-") as tmp:
        configure(Path(tmp) / "bench.sqlite3")
        return run()


def run() -> int:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from crmify.models import Lead
    from crmify.signals import connect_receivers, disconnect_receivers

    call_command("migrate", verbosity=0)
    counter = Counter()
    numbers = iter(range(10_000_000))

    def new_user() -> User:
        n = next(numbers)
        return User.objects.create(
            username=f"user{n}",
            email=f"user{n}@example.com",
            first_name="Ada",
            last_name="Lovelace",
        )

    def switch(on: bool) -> None:
        if on:
            connect_receivers()
        else:
            disconnect_receivers()

    def timed(on: bool, side: Side, action: Callable[[], Any], count: int) -> list[Any]:
        switch(on)
        queries, writes = counter.queries, counter.writes
        started = time.perf_counter()
        results = [action() for _ in range(count)]
        side.seconds += time.perf_counter() - started
        side.saves += count
        side.queries += counter.queries - queries
        side.writes += counter.writes - writes
        return results

    results: dict[tuple[str, bool], Side] = {
        (kind, on): Side() for kind in ("create", "unchanged") for on in (True, False)
    }
    users: dict[bool, list[User]] = {True: [], False: []}

    with connection.execute_wrapper(counter), no_network(counter):
        # Warm up both sides (caches, the content type, the query compiler), then forget the timings.
        for on in (True, False):
            timed(on, Side(), new_user, WARM_UP)
        gc.collect()
        gc.disable()
        try:
            for index in range(SAVES // ROUND):
                # Alternate which side goes first so neither always gets the warmer cache.
                for on in (True, False) if index % 2 == 0 else (False, True):
                    users[on] += timed(on, results["create", on], new_user, ROUND)
            for index in range(SAVES // ROUND):
                for on in (True, False) if index % 2 == 0 else (False, True):
                    batch = iter(users[on][index * ROUND : (index + 1) * ROUND])
                    timed(on, results["unchanged", on], lambda b=batch: next(b).save(), ROUND)
        finally:
            gc.enable()
            switch(True)

    leads = Lead.objects.count()
    print(
        f"crmify save overhead: SQLite, {SAVES} saves of each kind per side, interleaved in rounds of {ROUND}"
    )
    print(
        f"{'':12}{'off ms/save':>13}{'on ms/save':>13}{'ratio':>8}{'queries +':>11}{'writes +':>10}"
    )
    failures = 0
    ratios: dict[str, float] = {}
    added_writes: dict[str, float] = {}
    for kind in ("create", "unchanged"):
        on, off = results[kind, True], results[kind, False]
        ratio = on.seconds / off.seconds
        ratios[kind] = ratio
        added_queries = on.per_save(on.queries) - off.per_save(off.queries)
        added_writes[kind] = on.per_save(on.writes) - off.per_save(off.writes)
        print(
            f"{kind:12}{off.per_save(off.seconds) * 1000:>13.3f}{on.per_save(on.seconds) * 1000:>13.3f}"
            f"{ratio:>7.2f}x{added_queries:>+11.2f}{added_writes[kind]:>+10.2f}"
        )

    def verdict(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    verdict(
        ratios["unchanged"] <= UNCHANGED_TARGET,
        f"unchanged save {ratios['unchanged']:.2f}x (target <= {UNCHANGED_TARGET}x)",
    )
    verdict(
        added_writes["unchanged"] == 0,
        f"unchanged save adds {added_writes['unchanged']:.0f} writes (target 0)",
    )
    verdict(
        ratios["create"] <= CREATE_TARGET,
        f"create {ratios['create']:.2f}x (target <= {CREATE_TARGET}x)",
    )
    verdict(
        not counter.network,
        f"network connections on the save path: {len(counter.network)} (target 0)",
    )
    verdict(
        leads == SAVES + WARM_UP,
        f"leads recorded by the crmify-on side: {leads} (expected {SAVES + WARM_UP})",
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
