"""Security: "nobody let in" and no secret let out.

* The API key (and its HTTP Basic form), and HubSpot's private-app token, are nowhere after a run with faults: not in any log record (crmify,
  urllib3, requests, the task framework; formatted with tracebacks), the ledger, a lead, a task result
  (django-tasks-db rows with their tracebacks), an exception raised to a caller, or an admin page.
* Every custom admin URL, found from the admin's own ``get_urls`` so a new page cannot be missed, sends
  anonymous visitors to the login, answers 403 to staff without its permission, and refuses a POST
  without a CSRF token.
* The sandbox listens on loopback unless told otherwise.

Import size limits and formula escaping on export are tested in ``tests/test_import_export.py``
(``test_a_file_over_the_size_limit_is_refused_with_the_limit``,
``test_cells_a_spreadsheet_would_run_are_escaped_and_import_back_unchanged``).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin import ModelAdmin
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import load_command_class
from django.db.models import Model
from django.test import Client
from django.urls import URLPattern, reverse
from django_tasks_db.models import DBTaskResult

from crmify import backfill
from crmify.backends import locmem
from crmify.backends.base import BaseBackend
from crmify.backends.hubspot import HubSpotBackend
from crmify.backends.insightly import InsightlyBackend
from crmify.backfill import BackfillOptions
from crmify.exceptions import BackendError
from crmify.models import BackfillRun, Lead, LedgerEntry, SyncState
from crmify.sandbox import SandboxServer
from crmify.sandbox.cli import add_arguments, build_server
from crmify.sandbox.faults import Faults
from crmify.sandbox.hubspot import HubSpotSandbox
from tests.admin_fixtures import export
from tests.conftest import FAST_SANDBOX, calls, crmify_for, hubspot_crmify_for
from tests.factories import make_user
from tests.reliability.processes import run_db_worker_here
from tests.scripted_crm import Answer, ScriptedCrm

# -- the secrets scan ----------------------------------------------------------------------------------

#: Distinctive, so a hit is never a coincidence.
API_KEY = "crmify-Sec-Key-7f3a9c2e51"
WRONG_KEY = "crmify-Wrong-Key-b84d16e0"


def secret_forms(key: str) -> list[str]:
    """The key as written and as HTTP Basic sends it (the key as user name, no password)."""
    return [key, base64.b64encode(f"{key}:".encode()).decode().rstrip("=")]


#: HubSpot's private-app tokens, sent as ``Authorization: Bearer <token>``: the token as written.
HUBSPOT_TOKEN = "pat-na1-crmify-Sec-Tok-5e81d2a7"
WRONG_HUBSPOT_TOKEN = "pat-na1-crmify-Wrong-Tok-90c4"

SECRETS = [
    *secret_forms(API_KEY),
    *secret_forms(WRONG_KEY),
    HUBSPOT_TOKEN,
    WRONG_HUBSPOT_TOKEN,
]


def leaks(places: dict[str, str]) -> list[str]:
    """The places whose text holds a secret, each with the secret found."""
    return [
        f"{place}: {secret}"
        for place, text in places.items()
        for secret in SECRETS
        if secret in text
    ]


def row_text(row: Model) -> str:
    """Every column of ``row`` as text (JSON columns as their Python repr, tracebacks as written)."""
    return "\n".join(
        f"{field.attname}={getattr(row, field.attname)!s}" for field in row._meta.concrete_fields
    )


class KeyQuotingBackend(BaseBackend):
    """A site's own backend whose library quotes the key in its exceptions, as some do: a configuration
    error (which the engine lets fail the task) for ``config`` leads, any other exception otherwise."""

    def sync_lead(self, lead: Lead) -> str:
        key = self.auth["API_KEY"]
        if lead.last_name == "config":
            raise ImproperlyConfigured(f"the CRM refused key {key!r} for this account")
        raise RuntimeError(f"connection reset while sending key={key}")

    def delete_lead(self, lead_id: str) -> bool:
        return True


#: What the CRM does wrong during a scan: 5xx, 429 bursts, dropped connections.
SCAN_FAULTS = Faults(
    error_rate=0.2, burst_429_rate=0.1, drop_rate=0.05, requests_per_second=None, seed=7
)


@pytest.fixture(scope="module")
def keyed_sandbox() -> Iterator[SandboxServer]:
    """A sandbox that takes only :data:`API_KEY` and misbehaves: 5xx, 429 bursts, dropped connections."""
    with SandboxServer(api_key=API_KEY, faults=SCAN_FAULTS) as server:
        yield server


def drain(timeout: float = 60) -> int:
    """Run django-tasks-db's worker in this process until no task is waiting (retries included); the
    number of rounds. In-process so that its log records reach the test's capture."""
    deadline = time.monotonic() + timeout
    for rounds in itertools.count(1):
        run_db_worker_here("security-scan")
        waiting = Lead.objects.filter(
            sync_state__in=[SyncState.PENDING, SyncState.RETRYING, SyncState.SYNCING]
        )
        if not waiting.exists():
            return rounds
        assert time.monotonic() < deadline, list(waiting.values_list("pk", "sync_state"))
        time.sleep(0.1)  # a retry's run_after (the sandbox's Retry-After is 1 s)
    raise AssertionError("unreachable")


def scan_setup(caplog: pytest.LogCaptureFixture) -> User:
    """Every logger captured at DEBUG; the superuser who reads the admin pages."""
    caplog.set_level(logging.DEBUG)
    for name in ("crmify", "urllib3", "requests", "django", "django_tasks", "django_tasks_db"):
        caplog.set_level(logging.DEBUG, logger=name)
    return User.objects.create_superuser("root", "root@example.com", None)


def sync_through_faults(
    configure: Callable[..., None],
    crmify: dict[str, Any],
    echoing: ScriptedCrm,
    key: str,
    wrong_key: str,
    count: int,
) -> list[User]:
    """``count`` users synced by the database worker through the CRM's faults (``crmify``), then five
    of them with ``wrong_key`` (401s), then three against ``echoing``, a CRM that quotes ``key`` and the
    Authorization header back in its error answers. Returns the users."""
    configure(**crmify, MAX_ATTEMPTS=4, RETRY_BACKOFF_BASE=0.01, RETRY_BACKOFF_MAX=0.05)
    users = [make_user() for _ in range(count)]
    drain()
    configure(BACKEND_AUTH={"API_KEY": wrong_key})
    change(users[:5], "Rekeyed")
    drain()
    configure(
        BACKEND_AUTH={"API_KEY": key},
        BACKEND_OPTIONS={"API_URL": echoing.url, **FAST_SANDBOX},
    )
    echoing.script(
        Answer(400, f'{{"Message": "Bad request for key {key}"}}'.encode(), echo_auth=True)
    )
    change(users[5:8], "Echoed")
    drain()
    return users


def change(users: list[User], last_name: str) -> None:
    for user in users:
        user.last_name = last_name
        user.save()


def admin_pages(client: Client, crm: ScriptedCrm, key: str) -> dict[str, str]:
    """Every admin page that shows a lead, its ledger, an error or a CRM answer, as staff see it
    (the CRM quoting ``key``, the configured one, back in its answers)."""
    base = reverse("admin:crmify_lead_changelist")
    pages: dict[str, str] = {}

    def keep(name: str, response: Any) -> None:
        assert response.status_code == 200, (name, response.status_code)
        pages[f"admin {name}"] = response.content.decode()

    keep("changelist", client.get(base))
    keep("failed filter", client.get(base, {"sync_state__exact": "failed"}))
    keep("preview", client.get(reverse("admin:crmify_lead_mapper_preview")))
    keep("export csv", export(client, "csv"))
    # Every lead that holds an error, and one that synced: a lead page costs a third of a second.
    shown = [*Lead.objects.exclude(last_error=""), *Lead.objects.filter(sync_state="synced")[:1]]
    for lead in shown:
        keep(f"lead {lead.pk}", client.get(reverse("admin:crmify_lead_change", args=[lead.pk])))
        compare = reverse("admin:crmify_lead_compare", args=[lead.pk])
        keep(f"compare {lead.pk}", client.get(compare))
    # The CRM quotes the key back: the fetch error, the sync error and the backfill's listing error.
    crm.script(Answer(401, f'{{"Message": "Unknown key {key}"}}'.encode(), echo_auth=True))
    lead = Lead.objects.exclude(external_id="").first() or Lead.objects.first()
    assert lead is not None
    keep("compare fetched", client.post(reverse("admin:crmify_lead_compare", args=[lead.pk])))
    keep(
        "sync now",
        client.post(reverse("admin:crmify_lead_sync_now", args=[lead.pk]), follow=True),
    )
    keep(
        "backfill dry run",
        client.post(reverse("admin:crmify_lead_backfill"), {"batch_size": "50"}),
    )
    return pages


@pytest.mark.django_db(transaction=True)  # the worker commits; the tasks are real rows
def test_the_api_key_is_nowhere_after_a_run_with_faults(
    keyed_sandbox: SandboxServer,
    scripted_crm: ScriptedCrm,
    configure: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = scan_setup(caplog)
    keyed_sandbox.reset()
    crmify = crmify_for(keyed_sandbox, api_key=API_KEY, task_backend="default", **FAST_SANDBOX)
    users = sync_through_faults(configure, crmify, scripted_crm, API_KEY, WRONG_KEY, 30)
    # A site's own backend that quotes its key in exceptions; one of them fails the task itself.
    configure(BACKEND="tests.test_security.KeyQuotingBackend")
    change(users[8:10], "Quoted")
    change(users[10:11], "config")
    drain()
    # Exceptions raised to callers of the backend.
    raised = {
        f"exception {name}": raised_by(
            InsightlyBackend({"API_URL": url, **FAST_SANDBOX}, {"API_KEY": key})
        )
        for name, url, key in (
            ("wrong key", keyed_sandbox.url, WRONG_KEY),
            ("echoing crm", scripted_crm.url, API_KEY),
        )
    }
    configure(
        BACKEND="crmify.backends.insightly.InsightlyBackend",
        BACKEND_OPTIONS={"API_URL": scripted_crm.url, **FAST_SANDBOX},
    )
    places = scanned_places(root, scripted_crm, caplog, raised)

    # The run met every fault it was meant to, and the secrets really were offered to crmify.
    statuses = {status for route in keyed_sandbox.stats()["requests"].values() for status in route}
    assert {"401", "429"} <= {str(status) for status in statuses}, statuses
    assert any(str(status).startswith("5") for status in statuses), statuses
    assert LedgerEntry.objects.filter(error__contains="Could not reach the CRM").exists()
    assert calls(keyed_sandbox, "POST /Leads") >= 30
    assert DBTaskResult.objects.filter(status="FAILED").exists()  # the configuration error
    assert scripted_crm.requests
    assert Lead.objects.filter(last_error__contains="***").exists()  # scrubbed, not absent
    assert leaks({"self-check": f"x{secret_forms(API_KEY)[1]}x"}), "the scan finds what it seeks"

    assert_no_leaks(places)


def scanned_places(
    root: User,
    crm: ScriptedCrm,
    caplog: pytest.LogCaptureFixture,
    raised: dict[str, str],
    key: str = API_KEY,
) -> dict[str, str]:
    """Every place a secret must not be, by name: admin pages (read with ``crm`` as the CRM), the
    exceptions ``raised`` to callers, log records, leads, the ledger and task results."""
    client = Client()
    client.force_login(root)
    return {
        **admin_pages(client, crm, key),
        **raised,
        **{
            f"log {n} {record.name}": logging.Formatter("%(name)s %(message)s").format(record)
            + repr(vars(record))
            for n, record in enumerate(caplog.records)
        },
        **{f"lead {lead.pk}": row_text(lead) for lead in Lead.objects.all()},
        **{f"ledger {entry.pk}": row_text(entry) for entry in LedgerEntry.objects.all()},
        **{f"task {task.pk}": row_text(task) for task in DBTaskResult.objects.all()},
    }


def assert_no_leaks(places: dict[str, str]) -> None:
    found = leaks(places)
    kinds = sorted({place.split(" ")[0] for place in places})
    print(f"\nsecrets scan: {len(places)} places ({', '.join(kinds)}), {len(found)} leaks")
    assert found == [], "\n".join(found)


def raised_by(backend: BaseBackend) -> str:
    """Everything an exception from ``backend.sync_lead`` says, traceback included."""
    with pytest.raises(BackendError) as error:
        backend.sync_lead(Lead.objects.first() or Lead())
    exc = error.value
    return " ".join(
        [str(exc), repr(exc), exc.message, exc.response_text, *traceback.format_exception(exc)]
    )


@pytest.mark.django_db(transaction=True)  # the worker commits; the tasks are real rows
def test_the_hubspot_token_is_nowhere_after_a_run_with_faults(
    scripted_crm: ScriptedCrm,
    configure: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = scan_setup(caplog)
    with HubSpotSandbox(token=HUBSPOT_TOKEN, faults=SCAN_FAULTS) as crm:
        # One contact per call (MAX_BATCH_SIZE 1): enough calls for the faults to strike each kind.
        crmify = hubspot_crmify_for(
            crm, token=HUBSPOT_TOKEN, task_backend="default", MAX_BATCH_SIZE=1, **FAST_SANDBOX
        )
        sync_through_faults(configure, crmify, scripted_crm, HUBSPOT_TOKEN, WRONG_HUBSPOT_TOKEN, 25)
        raised = {
            f"exception {name}": raised_by(
                HubSpotBackend({"API_URL": url, **FAST_SANDBOX}, {"API_KEY": token})
            )
            for name, url, token in (
                ("wrong token", crm.url, WRONG_HUBSPOT_TOKEN),
                ("echoing crm", scripted_crm.url, HUBSPOT_TOKEN),
            )
        }
        statuses = {status for route in crm.stats()["requests"].values() for status in route}
        assert {"401", "429"} <= set(statuses), statuses
        assert any(status.startswith("5") for status in statuses), statuses
        assert calls(crm, "POST /objects/contacts") >= 25
    places = scanned_places(root, scripted_crm, caplog, raised, HUBSPOT_TOKEN)
    assert scripted_crm.requests
    assert Lead.objects.filter(last_error__contains="***").exists()  # scrubbed, not absent
    assert LedgerEntry.objects.filter(request_summary__contains="/crm/v3/objects/contacts").exists()
    assert_no_leaks(places)


# -- every custom admin URL: login, permission, CSRF ---------------------------------------------------

#: Each custom admin URL and the permission sets it needs: staff lacking every permission of any one
#: set must be refused. Export needs view, which Django also grants with change.
REQUIRED: dict[str, list[set[str]]] = {
    "crmify_lead_backfill": [{"run_backfill"}],
    "crmify_lead_backfill_run": [{"run_backfill"}],
    "crmify_lead_backfill_cancel": [{"run_backfill"}],
    "crmify_lead_backfill_resume": [{"run_backfill"}],
    "crmify_lead_mapper_preview": [{"preview_mapping"}],
    "crmify_lead_sync_now": [{"sync_lead"}],
    "crmify_lead_compare": [{"sync_lead"}],
    "crmify_lead_import": [{"add_lead"}, {"change_lead"}],
    "crmify_lead_process_import": [{"add_lead"}, {"change_lead"}],
    "crmify_lead_export": [{"view_lead", "change_lead"}],
    "crmify_lead_health": [{"view_lead", "change_lead"}],
    "crmify_lead_send_waiting": [{"sync_lead"}],
}
#: Views that refuse a GET before anything else (django-import-export's ``require_POST``).
POST_ONLY = {"crmify_lead_process_import"}


def custom_admin_urls() -> dict[str, URLPattern]:
    """The URLs crmify's model admins add to Django's own (changelist, add, change, delete, history)."""
    found: dict[str, URLPattern] = {}
    for model, model_admin in admin.site._registry.items():
        if not type(model_admin).__module__.startswith("crmify."):
            continue
        standard = {pattern.name for pattern in ModelAdmin(model, admin.site).get_urls()}
        for pattern in model_admin.get_urls():
            if isinstance(pattern, URLPattern) and pattern.name not in standard:
                found[str(pattern.name)] = pattern
    return found


@pytest.fixture
def urls(db: None, quiet: None) -> dict[str, str]:
    """Each custom admin URL, filled in with a lead and a backfill run that exist."""
    lead = Lead.objects.create(
        email="ada@example.com", external_id="5", sync_state=SyncState.SYNCED
    )
    run = backfill.start(BackfillOptions(), enqueue=False)
    values = {"object_id": str(lead.pk), "run_id": run.pk}
    return {
        name: reverse(
            f"admin:{name}", kwargs={key: values[key] for key in pattern.pattern.converters}
        )
        for name, pattern in custom_admin_urls().items()
    }


def staff_without(*codenames: str) -> Client:
    """A client logged in as staff with every crmify and lead permission except ``codenames``."""
    user, _ = User.objects.get_or_create(
        username=f"staff-without-{'-'.join(sorted(codenames))}", defaults={"is_staff": True}
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crmify").exclude(codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def unchanged_state() -> tuple[Any, ...]:
    """What a refused request must not have touched: leads, runs, CRM calls."""
    return (
        list(Lead.objects.order_by("pk").values_list("pk", "sync_state", "tombstone", "status")),
        list(BackfillRun.objects.order_by("pk").values_list("pk", "state")),
        len(locmem.calls),
    )


def test_every_custom_admin_url_has_its_permissions_listed_here() -> None:
    """A new admin page fails this test until it is added to :data:`REQUIRED` (and so to the sweep)."""
    assert set(custom_admin_urls()) == set(REQUIRED)


def test_anonymous_visitors_are_sent_to_the_login_from_every_custom_url(
    urls: dict[str, str], client: Client
) -> None:
    before = unchanged_state()
    for name, url in urls.items():
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code == 302, (name, method.__name__)
            assert response["Location"].startswith(reverse("admin:login")), name
    assert unchanged_state() == before


def test_staff_without_the_permission_get_403_on_every_custom_url(urls: dict[str, str]) -> None:
    before = unchanged_state()
    for name, url in urls.items():
        for missing in REQUIRED[name]:
            client = staff_without(*missing)
            for method in (client.get, client.post):
                response = method(url, {"batch_size": "5", "confirm": "yes"})
                refused = 405 if method == client.get and name in POST_ONLY else 403
                assert response.status_code == refused, (name, sorted(missing), method.__name__)
    assert unchanged_state() == before


def csrf_checking_superuser() -> Client:
    """A client logged in as a superuser that checks CSRF tokens, as a browser's requests are checked."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


def test_a_post_without_a_csrf_token_is_refused_on_every_custom_url(
    urls: dict[str, str],
) -> None:
    client = csrf_checking_superuser()
    before = unchanged_state()
    for name, url in urls.items():
        response = client.post(url, {"batch_size": "5", "confirm": "yes"})
        assert response.status_code == 403, name
        assert b"CSRF" in response.content, name
    assert unchanged_state() == before


#: What an action's ``permissions=[...]`` name means: the ``Lead.Meta`` permission behind its
#: ``has_<name>_permission``.
ACTION_PERMISSIONS = {
    "sync": "sync_lead",
    "change_lead_status": "change_lead_status",
    "delete_from_crm": "delete_from_crm",
    "force_lead_status": "force_lead_status",
}


def lead_actions() -> dict[str, str]:
    """Each crmify action of the Lead admin and the permission it needs."""
    model_admin = admin.site._registry[Lead]
    found: dict[str, str] = {}
    for action in model_admin.actions:
        (permission,) = action.allowed_permissions
        found[action.__name__] = ACTION_PERMISSIONS[permission]
    return found


def test_every_action_is_refused_to_staff_without_its_permission_and_to_a_post_without_csrf(
    urls: dict[str, str],
) -> None:
    lead = Lead.objects.get()
    lead.sync_state, lead.last_error = SyncState.FAILED, "HTTP 400: bad e-mail"
    lead.save()
    changelist = reverse("admin:crmify_lead_changelist")
    before = unchanged_state()
    assert set(lead_actions()) >= {"resync", "retry_failed", "delete_from_crm"}
    for action, codename in lead_actions().items():
        data = {"action": action, "_selected_action": [lead.pk], "post": "yes"}
        response = staff_without(codename).post(changelist, data, follow=True)
        assert response.status_code == 200, action
        assert unchanged_state() == before, action
    client = csrf_checking_superuser()
    for action in lead_actions():
        data = {"action": action, "_selected_action": [lead.pk], "post": "yes"}
        assert client.post(changelist, data).status_code == 403, action
    assert unchanged_state() == before


# -- the sandbox stays on loopback ---------------------------------------------------------------------


def test_the_sandbox_listens_on_loopback_unless_told_otherwise() -> None:
    with SandboxServer() as server:
        assert server._httpd.server_address[0] == "127.0.0.1"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--port", "0", "--quiet"]))
    assert defaults["host"] == "127.0.0.1"
    built = build_server(defaults)
    try:
        assert built._httpd.server_address[0] == "127.0.0.1"
    finally:
        built.stop()
    command = load_command_class("crmify", "crmify_sandbox")
    assert command.create_parser("manage.py", "crmify_sandbox").parse_args([]).host == "127.0.0.1"
    told = build_server(vars(parser.parse_args(["--port", "0", "--quiet", "--host", "0.0.0.0"])))
    try:
        assert told._httpd.server_address[0] == "0.0.0.0"
    finally:
        told.stop()
