"""What crmify adds to a site's saves: queries and time, crmify on vs off, side by side in one run.

Run from the repository root: ``python bench/save_overhead.py`` (``make bench``). SQLite file database in a
temporary directory with Django's default settings; crmify on = the database Tasks backend
(django-tasks-db) and the locmem CRM backend, the way a site runs it with ``db_worker`` (the worker is not
part of the save, so it is not started); crmify off = its receivers disconnected, plain Django. Creates
and unchanged saves are interleaved in small rounds so both sides see the same machine. Any network
connection attempted during the saves is recorded and fails the run.

"create" is ``User.objects.create()`` in autocommit mode: the user's row is committed before
``post_save`` runs, so crmify's lead and task need a transaction (and a commit) of their own. "create in
atomic" is the same inside ``transaction.atomic()`` (``ATOMIC_REQUESTS``, a form view's own atomic
block), where crmify's rows share the site's commit.

Targets (issue "Core"): unchanged save <= 1.3x and 0 writes added; create <= 2.5x; no network call.
The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import gc
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Scorecard, configure

SAVES = 2_000
ATOMIC_SAVES = 1_000
ROUND = 50
WARM_UP = 100

UNCHANGED_TARGET = 1.3
CREATE_TARGET = 2.5


@dataclass
class Side:
    """Totals for one side (crmify on or off) of one kind of save."""

    seconds: float = 0.0
    saves: int = 0
    queries: int = 0
    writes: int = 0
    #: Seconds per round, in order: round i of "on" ran right next to round i of "off".
    rounds: list[float] = field(default_factory=list)

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
    from django.db import connection, transaction

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

    def new_user_atomic() -> User:
        with (
            transaction.atomic()
        ):  # a view under ATOMIC_REQUESTS, a form saved in transaction.atomic()
            return new_user()

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
        elapsed = time.perf_counter() - started
        side.seconds += elapsed
        side.rounds.append(elapsed)
        side.saves += count
        side.queries += counter.queries - queries
        side.writes += counter.writes - writes
        return results

    def interleaved(
        kind: str, saves: int, action: Callable[[bool, int], Callable[[], Any]]
    ) -> None:
        """``saves`` of ``kind`` per side in rounds, alternating which side goes first."""
        for index in range(saves // ROUND):
            for on in (True, False) if index % 2 == 0 else (False, True):
                users[on] += timed(on, results[kind, on], action(on, index), ROUND)

    kinds = ("create", "create in atomic", "unchanged")
    results: dict[tuple[str, bool], Side] = {
        (kind, on): Side() for kind in kinds for on in (True, False)
    }
    users: dict[bool, list[User]] = {True: [], False: []}

    with connection.execute_wrapper(counter), no_network(counter):
        # Warm up both sides (caches, the content type, the query compiler), then forget the timings.
        for on in (True, False):
            timed(on, Side(), new_user, WARM_UP)
        gc.collect()
        gc.disable()
        try:
            interleaved("create", SAVES, lambda on, index: new_user)
            created = {on: list(users[on]) for on in (True, False)}

            def unchanged(on: bool, index: int) -> Callable[[], Any]:
                batch = iter(created[on][index * ROUND : (index + 1) * ROUND])
                return lambda: next(batch).save()

            interleaved("unchanged", SAVES, unchanged)
            interleaved("create in atomic", ATOMIC_SAVES, lambda on, index: new_user_atomic)
        finally:
            gc.enable()
            switch(True)

    leads = Lead.objects.count()
    expected_leads = WARM_UP + SAVES + ATOMIC_SAVES
    print(
        f"crmify save overhead: SQLite (Django's defaults), crmify on = database Tasks backend + locmem CRM, "
        f"off = receivers disconnected; {SAVES} creates and {SAVES} unchanged saves per side "
        f"({ATOMIC_SAVES} creates in transaction.atomic()), interleaved in rounds of {ROUND}; ratio = median of paired rounds"
    )
    print(
        f"{'':18}{'off ms/save':>12}{'on ms/save':>12}{'ratio':>8}{'queries +':>11}{'writes +':>10}"
    )
    ratios: dict[str, float] = {}
    added_writes: dict[str, float] = {}
    for kind in kinds:
        on, off = results[kind, True], results[kind, False]
        # The median of paired rounds: a burst of disk contention from another process spoils a few
        # rounds, not the verdict.
        ratios[kind] = statistics.median(a / b for a, b in zip(on.rounds, off.rounds, strict=True))
        added_queries = on.per_save(on.queries) - off.per_save(off.queries)
        added_writes[kind] = on.per_save(on.writes) - off.per_save(off.writes)
        print(
            f"{kind:18}{off.per_save(off.seconds) * 1000:>12.3f}{on.per_save(on.seconds) * 1000:>12.3f}"
            f"{ratios[kind]:>7.2f}x{added_queries:>+11.2f}{added_writes[kind]:>+10.2f}"
        )

    card = Scorecard("save_overhead")

    unchanged_ratio, create_ratio = ratios["unchanged"], ratios["create"]
    atomic_ratio = ratios["create in atomic"]
    card.check(
        "unchanged save, crmify on vs off",
        f"{unchanged_ratio:.2f}x",
        f"<= {UNCHANGED_TARGET}x",
        unchanged_ratio <= UNCHANGED_TARGET,
    )
    card.check(
        "writes added by an unchanged save",
        f"{added_writes['unchanged']:.0f}",
        "0",
        added_writes["unchanged"] == 0,
    )
    card.check(
        "create (autocommit), crmify on vs off",
        f"{create_ratio:.2f}x",
        f"<= {CREATE_TARGET}x",
        create_ratio <= CREATE_TARGET,
    )
    card.check(
        "create in transaction.atomic(), crmify on vs off",
        f"{atomic_ratio:.2f}x",
        f"<= {CREATE_TARGET}x",
        atomic_ratio <= CREATE_TARGET,
    )
    card.check(
        "network connections on the save path",
        str(len(counter.network)),
        "0",
        not counter.network,
    )
    card.check(
        "leads recorded by the crmify-on side",
        str(leads),
        str(expected_leads),
        leads == expected_leads,
    )
    return card.exit_status


if __name__ == "__main__":
    sys.exit(main())
