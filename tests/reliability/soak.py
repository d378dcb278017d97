"""The fault soak: the scenario and its checks, shared by ``test_soak.py`` (CI, 200 users) and
``bench/soak.py`` (``make soak``, 2,000 users and a table of figures).

Four writer threads, each on its own database connection, create, rename, convert and delete users
through the ORM as a site's requests would (one transaction per change, so the sync task is written in
the site's transaction), while two ``db_worker`` processes sync them into the sandbox. The sandbox fails a
third of the calls: 5xx, 429 bursts, dropped connections, latency jitter, and creates that time out after
creating the lead (the duplicate trap). A few users get a status the CRM does not have: a permanent error,
the only kind allowed to fail a lead. Then the sweeper runs until quiet and :func:`check` holds the CRM up
against what the writers know they wrote.

The CRM is Insightly's sandbox by default, or HubSpot's (``run_soak(..., crm=HubSpotSoak(sandbox))``):
there the leads go in batch upserts and updates, a few users get an e-mail HubSpot refuses (a 207 that
names them among good inputs) instead of an unknown status, and a few users' e-mails are in HubSpot
before the run (a create answers 409 and adopts the contact; an upsert updates it). What differs is in
:class:`InsightlySoak` and :class:`HubSpotSoak`; the scenario and the checks are the same.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django_tasks_db.models import DBTaskResult

from crmify import api
from crmify.backends.base import normalise_name
from crmify.backends.hubspot import HubSpotBackend
from crmify.models import Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from crmify.sweeper import sweep
from tests.conftest import crmify_for, hubspot_crmify_for
from tests.reliability.processes import Worker, start_db_worker, stop

#: The issue's fault mix. Latency stays well under the client's timeout, so the only calls that time out
#: are the trapped creates (held back after the lead was made) and no late request lands after a retry.
SOAK_FAULTS: dict[str, Any] = {
    "error_rate": 0.20,
    "burst_429_rate": 0.10,
    "drop_rate": 0.05,
    "latency": 0.0,
    "latency_jitter": 0.05,
    "create_timeout_rate": 0.05,
    "create_timeout_delay": 1.5,
    "requests_per_second": None,
    "daily_quota": None,
}
CALL_TIMEOUT = 1.0
#: A status the sandbox's account does not have: the writers' permanent error.
UNKNOWN_STATUS = "Reticulating"
#: Lead states the soak must end in.
SETTLED = (SyncState.SYNCED, SyncState.FAILED, SyncState.DELETED)


#: The HubSpot soak's ``MAX_BATCH_SIZE``.
HUBSPOT_BATCH = 5
#: The engine's settings of a soak, whatever the CRM: the database queue and fast retries.
_SOAK_ENGINE: dict[str, Any] = {
    "MAX_ATTEMPTS": 60,
    "RETRY_BACKOFF_BASE": 0.2,
    "RETRY_BACKOFF_MAX": 2,
    "SWEEP_PENDING_AFTER": 30,
    "CLAIM_TIMEOUT": 60,
}


def soak_crmify(sandbox: SandboxServer | HubSpotSandbox) -> dict[str, Any]:
    """``CRMIFY`` of the site and of its workers: the sandbox over HTTP, the database queue, fast retries.

    About a third of the calls fail and a create takes two, so a lead may need many attempts: the soak
    proves that transient errors never fail a lead, so ``MAX_ATTEMPTS`` is set out of their reach.
    """
    options: dict[str, Any] = {"TIMEOUT": CALL_TIMEOUT, "REQUESTS_PER_SECOND": 1000}
    if isinstance(sandbox, HubSpotSandbox):
        # Small batches: enough calls for every fault to strike batch calls and single calls alike.
        hubspot = hubspot_crmify_for(
            sandbox, task_backend="default", MAX_BATCH_SIZE=HUBSPOT_BATCH, **options
        )
        return {**hubspot, **_SOAK_ENGINE}
    return {**crmify_for(sandbox, task_backend="default", **options), **_SOAK_ENGINE}


@dataclass
class Person:
    """One user as the writers know it: the changes still to make and what the app holds after them."""

    index: int
    email: str
    first_name: str
    last_name: str
    status: str = "NotContacted"
    todo: deque[str] = field(default_factory=deque)
    done: list[str] = field(default_factory=list)
    pk: int | None = None
    renames: int = 0
    deleted: bool = False
    rejected: bool = False
    #: Whether the CRM had the user's e-mail before the run (the HubSpot soak's 409s).
    in_crm_before: bool = False


def plan(users: int, seed: int) -> list[Person]:
    """Each user: created, renamed 1-3 times, converted (30%, at any point), and at the end deleted (20%)
    or given an unknown status (3%)."""
    rng = random.Random(seed)
    people = []
    for index in range(users):
        todo = ["create", *["rename"] * rng.randint(1, 3)]
        if rng.random() < 0.3:
            todo.insert(rng.randint(1, len(todo)), "convert")
        ending = rng.random()
        if ending < 0.2:
            todo.append("delete")
        elif ending < 0.23:
            todo.append("reject")
        people.append(
            Person(index, f"soak{index}@example.com", "Soak", f"User{index}", todo=deque(todo))
        )
    return people


class SoakCrm(Protocol):
    """What the soak needs to know of one CRM's sandbox (:class:`InsightlySoak`, :class:`HubSpotSandbox`)."""

    sandbox: Any
    #: Words the error of a rejected user's lead contains.
    rejection: str
    #: The sandbox's faults for this CRM.
    faults: dict[str, Any]

    def prepare(self, people: list[Person]) -> None:
        """Put in the CRM what should be there before the run (after the sandbox was reset)."""

    def reject(self, user: User, person: Person) -> None:
        """Make ``user`` something the CRM refuses, for good."""

    def contacts(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        """Every CRM record: (CRM id, e-mail, what the check compares with :meth:`wanted`)."""
        ...

    def wanted(self, person: Person) -> tuple[Any, ...]:
        """What the CRM should hold for ``person``."""
        ...

    def matches(self, held: tuple[Any, ...] | None, wanted: tuple[Any, ...]) -> bool:
        """Whether a record's compared values (None: no record) are what the CRM should hold."""
        ...

    def figures(self) -> list[tuple[str, str]]:
        """Rows of the figures only this CRM has."""
        ...

    def problems(self) -> list[str]:
        """What only this CRM's checks find wrong."""
        ...


class InsightlySoak:
    """The Insightly sandbox: a rejected user gets a lead status the account does not have."""

    rejection = "does not exist"
    faults = SOAK_FAULTS

    def __init__(self, sandbox: SandboxServer) -> None:
        self.sandbox = sandbox

    def prepare(self, people: list[Person]) -> None:
        pass

    def reject(self, user: User, person: Person) -> None:
        api.set_status(user, UNKNOWN_STATUS)
        person.status = UNKNOWN_STATUS

    def contacts(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        statuses = {
            status.id: normalise_name(status.name) for status in self.sandbox.state.statuses
        }
        return [
            (
                str(row["LEAD_ID"]),
                str(row.get("EMAIL")),
                (
                    row.get("FIRST_NAME"),
                    row.get("LAST_NAME"),
                    row.get("EMAIL"),
                    statuses.get(row.get("LEAD_STATUS_ID")),
                ),
            )
            for row in self.sandbox.leads()
        ]

    def wanted(self, person: Person) -> tuple[Any, ...]:
        return (person.first_name, person.last_name, person.email, normalise_name(person.status))

    def matches(self, held: tuple[Any, ...] | None, wanted: tuple[Any, ...]) -> bool:
        return held == wanted

    def figures(self) -> list[tuple[str, str]]:
        return []

    def problems(self) -> list[str]:
        return []


class HubSpotSoak:
    """The HubSpot sandbox: leads go in batch calls; a rejected user gets an e-mail HubSpot refuses (its
    batch answers 207, naming that input among good ones); one user in five not deleted at the end
    is in HubSpot before the run (a create answers 409 and adopts the contact, an upsert updates it)."""

    #: One user in this many not deleted at the end is in HubSpot before the run.
    seeded_every = 5

    rejection = "is invalid"
    #: Batches make about a tenth of the calls: each fault is set more often so that every kind
    #: strikes (the same 5xx rate; twice the drops; more 429 bursts and timed-out creates).
    faults = {**SOAK_FAULTS, "drop_rate": 0.10, "burst_429_rate": 0.15, "create_timeout_rate": 0.15}

    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sandbox = sandbox
        #: The contacts made before the run, by e-mail.
        self.seeded: dict[str, str] = {}

    def prepare(self, people: list[Person]) -> None:
        for person in people[:: self.seeded_every]:
            if "delete" not in person.todo:  # a lead deleted before its first sync makes no call
                contact = self.sandbox.add_contact({"email": person.email, "firstname": "Before"})
                self.seeded[person.email] = str(contact["id"])
                person.in_crm_before = True

    def _adoptions(self) -> tuple[int, list[str]]:
        """How many users whose e-mail was in HubSpot before the run hold that contact's id, and the
        e-mails of those that do not (a rejected user's e-mail changed: not counted)."""
        held = dict(Lead.objects.filter(email__in=self.seeded).values_list("email", "external_id"))
        wrong = [email for email, crm_id in held.items() if crm_id != self.seeded[email]]
        return len(held) - len(wrong), wrong

    def problems(self) -> list[str]:
        _adopted, wrong = self._adoptions()
        return [f"{email}: did not adopt the contact HubSpot had before" for email in wrong]

    def reject(self, user: User, person: Person) -> None:
        user.email = person.email.replace("@", "@@")
        user.save(update_fields=["email"])

    def contacts(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        return [
            (
                str(contact["id"]),
                str(contact["properties"].get("email")),
                (contact["properties"], contact["properties"].get("email")),
            )
            for contact in self.sandbox.leads()
        ]

    def wanted(self, person: Person) -> tuple[Any, ...]:
        return (
            {
                "firstname": person.first_name,
                "lastname": person.last_name,
                "email": person.email,
                **HubSpotBackend().status_map()[normalise_name(person.status)],
            },
        )

    def matches(self, held: tuple[Any, ...] | None, wanted: tuple[Any, ...]) -> bool:
        """The contact has the names, the e-mail and every property the user's status sets (a
        property only another status sets is not compared: a create whose answer was lost leaves
        the earlier status's, as a contact edited in HubSpot may)."""
        if held is None:
            return False
        properties, _email = held
        return all(
            str(properties.get(name) or "").casefold() == str(value).casefold()
            if name == "email"
            else properties.get(name) == value
            for name, value in wanted[0].items()
        )

    def figures(self) -> list[tuple[str, str]]:
        requests = self.sandbox.stats()["requests"]
        batch = {route: codes for route, codes in requests.items() if "/batch/" in route}
        return [
            ("batch calls", f"{sum(sum(codes.values()) for codes in batch.values()):,}"),
            (
                "batch answers 207 (some inputs refused)",
                str(sum(c.get("207", 0) for c in batch.values())),
            ),
            (
                "creates answered 409 (contact adopted)",
                str(requests.get("POST /objects/contacts", {}).get("409", 0)),
            ),
            (
                "contacts in HubSpot before the run, adopted by their user's lead",
                f"{self._adoptions()[0]} of {len(self.seeded)}",
            ),
        ]


def apply(person: Person, change: str, crm: SoakCrm) -> None:
    """Make one change in its own transaction, as a request would, and remember it once committed."""
    with transaction.atomic():
        if change == "create":
            user = User.objects.create(
                username=f"soak{person.index}",
                email=person.email,
                first_name=person.first_name,
                last_name=person.last_name,
            )
            person.pk = user.pk
            return
        user = User.objects.get(pk=person.pk)
        if change == "rename":
            person.renames += 1
            user.first_name = f"Renamed{person.renames}"
            user.last_name = f"User{person.index}v{person.renames}"
            user.save(update_fields=["first_name", "last_name"])
            person.first_name, person.last_name = user.first_name, user.last_name
        elif change == "convert":
            api.mark_converted(user)
            person.status = "Converted"
        elif change == "reject":
            crm.reject(user, person)
            person.rejected = True
        elif change == "delete":
            user.delete()
            person.deleted = True
        else:  # pragma: no cover - a typo in plan()
            raise ValueError(change)


def write(people: list[Person], seed: int, errors: list[BaseException], crm: SoakCrm) -> None:
    """One writer: the changes of its people in a random interleaving, each person's in order."""
    rng = random.Random(seed)
    busy = [person for person in people if person.todo]
    try:
        while busy:
            person = busy[rng.randrange(len(busy))]
            change = person.todo.popleft()
            apply(person, change, crm)
            person.done.append(change)
            if not person.todo:
                busy.remove(person)
    except BaseException as exc:  # reported by run_soak
        errors.append(exc)
    finally:
        connection.close()


@dataclass
class Soak:
    """What a soak did, what the sandbox injected and what the checks found."""

    users: int
    writers: int
    workers: int
    duration: float = 0.0
    changes: Counter[str] = field(default_factory=Counter)
    sandbox: dict[str, Any] = field(default_factory=dict)
    ledger: Counter[str] = field(default_factory=Counter)
    retried_leads: int = 0
    states: Counter[str] = field(default_factory=Counter)
    sweeps: int = 0
    crm_leads: int = 0
    duplicates: int = 0
    lost: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)
    #: Rows of the figures only the soak's CRM has (``SoakCrm.figures``).
    crm_figures: list[tuple[str, str]] = field(default_factory=list)

    def injected(self) -> dict[str, int]:
        return dict(self.sandbox.get("injected", {}))

    def figures(self) -> list[tuple[str, str]]:
        """The rows of the table ``bench/soak.py`` prints (and the README keeps)."""
        injected = self.injected()
        return [
            ("users", f"{self.users:,}"),
            ("writers (threads, own connection)", str(self.writers)),
            ("workers (db_worker processes)", str(self.workers)),
            (
                "changes made",
                ", ".join(f"{n:,} {kind}" for kind, n in sorted(self.changes.items())),
            ),
            ("API calls answered or dropped", f"{self.sandbox.get('total', 0):,}"),
            ("faults: 5xx", f"{injected.get('error', 0):,}"),
            ("faults: 429 bursts", f"{injected.get('burst_429', 0):,}"),
            ("faults: dropped connections", f"{injected.get('drop', 0):,}"),
            ("faults: create timed out (lead made)", f"{injected.get('create_timeout', 0):,}"),
            (
                f"faults: latency jitter 0-{SOAK_FAULTS['latency_jitter'] * 1000:.0f} ms",
                f"{injected.get('latency', 0):,} calls delayed",
            ),
            ("retried calls (transient, ledger)", f"{self.ledger['transient']:,}"),
            ("leads that needed a retry", f"{self.retried_leads:,}"),
            ("sweeper passes (one every 2 s)", str(self.sweeps)),
            ("leads by state", ", ".join(f"{n:,} {s}" for s, n in sorted(self.states.items()))),
            ("failed, all permanent (unknown status)", f"{self.states.get('failed', 0):,}"),
            ("CRM leads at the end", f"{self.crm_leads:,}"),
            ("duplicates in the CRM", str(self.duplicates)),
            ("lost leads or updates", str(self.lost)),
            ("CRM leads the app no longer has", str(self.orphans)),
            *self.crm_figures,
            ("duration", f"{self.duration:.1f} s"),
        ]


def run_soak(
    sandbox: SandboxServer | HubSpotSandbox,
    crmify: Mapping[str, Any],
    *,
    users: int,
    writers: int = 4,
    workers: int = 2,
    seed: int = 7,
    timeout: float = 600,
    progress: Callable[[str], None] | None = None,
) -> Soak:
    """Run the scenario against ``sandbox`` (faults set here) and check the outcome.

    ``crmify`` is the ``CRMIFY`` the caller's process already runs with (``soak_crmify``); the worker
    processes get the same. The caller provides the database (the test's, or the bench's own).
    """
    say = progress or (lambda text: None)
    crm: SoakCrm = (
        HubSpotSoak(sandbox) if isinstance(sandbox, HubSpotSandbox) else InsightlySoak(sandbox)
    )
    soak = Soak(users, writers, workers)
    people = plan(users, seed)
    sandbox.set_faults(**crm.faults, seed=seed)
    sandbox.reset()
    crm.prepare(people)
    started = time.monotonic()
    running: list[Worker] = [start_db_worker(crmify, batch=False) for _ in range(workers)]
    try:
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=write, args=(people[n::writers], seed + n, errors, crm))
            for n in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        say(f"writers done after {time.monotonic() - started:.1f} s")
        soak.sweeps = settle(started + timeout, say)
    finally:
        for worker in running:
            stop(worker)
    soak.duration = time.monotonic() - started
    soak.changes = Counter(change for person in people for change in person.done)
    check(soak, crm, people)
    return soak


def settle(deadline: float, say: Callable[[str], None]) -> int:
    """Wait for every lead to settle, sweeping every two seconds as a cron job would; then sweep until a
    pass finds nothing to queue. Returns the number of passes."""
    passes = 0
    while time.monotonic() < deadline:
        time.sleep(2)
        report = sweep()
        passes += 1
        unsettled = Lead.objects.exclude(sync_state__in=SETTLED).count()
        say(f"sweep {passes}: {report}; {unsettled} leads not settled")
        requeued = report.released_claims + report.queued_retries + report.queued_lost
        if not unsettled and not requeued:
            return passes
    return passes


def check(soak: Soak, crm: SoakCrm, people: list[Person]) -> None:
    """Compare the CRM with what the writers wrote and fill the figures; problems go to ``soak.problems``."""
    problems = soak.problems
    soak.sandbox = crm.sandbox.stats()
    soak.crm_figures = crm.figures()
    problems += crm.problems()
    contacts = crm.contacts()
    soak.crm_leads = len(contacts)
    by_email = Counter(email.casefold() for _crm_id, email, _values in contacts)
    soak.duplicates = sum(count - 1 for count in by_email.values())
    problems += [f"{email}: {n} leads in the CRM" for email, n in by_email.items() if n > 1]
    crm_by_id = {crm_id: values for crm_id, _email, values in contacts}
    user_type = ContentType.objects.get_for_model(User)
    leads = {
        lead.source_id: lead for lead in Lead.objects.filter(source_type=user_type).order_by("pk")
    }
    soak.states = Counter(lead.sync_state for lead in leads.values())
    lead_count = Lead.objects.count()
    if len(leads) != len(people) or lead_count != len(people):
        problems.append(f"{lead_count} leads for {len(people)} users")
    expected_emails = set()
    for person in people:
        lead = leads.get(str(person.pk))
        if lead is None:
            soak.lost += 1
            problems.append(f"{person.email}: no lead")
            continue
        if person.deleted:
            if (lead.sync_state, lead.tombstone) != (SyncState.DELETED, True):
                problems.append(f"{person.email}: deleted user's lead is {lead.sync_state}")
            continue
        expected_emails.add(person.email.casefold())
        if person.rejected:
            if lead.sync_state != SyncState.FAILED or crm.rejection not in lead.last_error:
                problems.append(
                    f"{person.email}: the rejection gave {lead.sync_state} {lead.last_error!r}"
                )
            continue
        crm_now = crm_by_id.get(lead.external_id)
        wanted = crm.wanted(person)
        if lead.sync_state != SyncState.SYNCED or not crm.matches(crm_now, wanted):
            soak.lost += 1
            problems.append(
                f"{person.email}: lead {lead.sync_state} ({lead.last_error[:120]!r}); "
                f"CRM {crm_now}, app {wanted}"
            )
    orphans = [
        (crm_id, email)
        for crm_id, email, _values in contacts
        if email.casefold() not in expected_emails
    ]
    soak.orphans = len(orphans)
    problems += [f"{email}: still in the CRM, CRM id {crm_id}" for crm_id, email in orphans]
    for lead in Lead.objects.filter(sync_state=SyncState.FAILED):
        last = lead.ledger.order_by("-started_at", "-id").first()
        if not lead.last_error or last is None or last.outcome != LedgerEntry.Outcome.PERMANENT:
            problems.append(f"{lead.email}: failed without a permanent error: {lead.last_error!r}")
    soak.ledger = Counter(LedgerEntry.objects.values_list("outcome", flat=True))
    soak.retried_leads = (
        LedgerEntry.objects.filter(outcome=LedgerEntry.Outcome.TRANSIENT)
        .values("lead")
        .distinct()
        .count()
    )
    crashed = DBTaskResult.objects.filter(status="FAILED").count()
    if crashed:
        problems.append(f"{crashed} tasks crashed in a worker")
