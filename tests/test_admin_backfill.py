"""The backfill's admin pages with the Django test client: the permission on every page, the dry run's
figures against the sandbox over real HTTP (writing nothing), confirm, the self-refreshing progress page,
cancel and resume.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crmify import backfill
from crmify.admin import LeadAdmin
from crmify.admin.backfill import backfill_changelist_context, sign_plan
from crmify.backfill import BackfillOptions
from crmify.models import BackfillRun, Lead, LedgerEntry
from crmify.ratelimit import QuotaShare, QuotaTracker
from crmify.sandbox import SandboxServer
from crmify.worker import process_lead
from tests.admin_fixtures import login, make_staff, people, texts
from tests.factories import make_user

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db

Login = Callable[[str], Client]
OLD = datetime(2020, 6, 1, tzinfo=UTC)


@pytest.fixture
def backfiller(people: dict[str, User], login: Login) -> Client:
    """Staff holding ``crmify.run_backfill`` and nothing else, logged in."""
    people["backfiller"] = make_staff("backfiller", "run_backfill")
    return login("backfiller")


def options_url() -> str:
    return reverse("admin:crmify_lead_backfill")


def run_url(run: BackfillRun, page: str = "run") -> str:
    """The run's progress page, or its ``cancel`` or ``resume`` endpoint."""
    return reverse(f"admin:crmify_lead_backfill_{page}", args=[run.pk])


def figures(response: Any) -> dict[str, str]:
    """The ``label: value`` rows of a page's figure tables, as text."""
    rows = re.findall(
        r'<tr><th scope="row">(.*?)</th><td>(.*?)</td></tr>', response.content.decode(), re.S
    )
    return {
        html.unescape(label): html.unescape(re.sub(r"<.*?>", "", value)) for label, value in rows
    }


def confirm_data(response: Any) -> dict[str, str]:
    """The hidden fields of the dry run's "Start backfill" form: what pressing it posts."""
    form = re.search(
        r'<form[^>]*class="crmify-backfill-confirm">(.*?)</form>', response.content.decode(), re.S
    )
    assert form is not None
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1))
    return {name: html.unescape(value) for name, value in fields if name != "csrfmiddlewaretoken"}


def start_run(user: User, **options: Any) -> BackfillRun:
    """A run as the confirm starts it, its first chunk not yet done (no commit in a test)."""
    return backfill.start(BackfillOptions(**options), user=user)


def refreshes(response: Any) -> bool:
    return '<meta http-equiv="refresh"' in response.content.decode()


# -- permission and protection -----------------------------------------------------------------------


def test_cancel_and_resume_refuse_a_get(login: Login, people: dict[str, User], quiet: None) -> None:
    run = start_run(people["root"])
    client = login("root")
    assert client.get(run_url(run, "cancel")).status_code == 405
    assert client.get(run_url(run, "resume")).status_code == 405
    run.refresh_from_db()
    assert run.state == BackfillRun.State.PENDING


def test_changelist_link_is_named_after_the_lead_model_and_needs_the_permission(
    people: dict[str, User], backfiller: Client
) -> None:
    model_admin = admin.site._registry[Lead]
    assert isinstance(model_admin, LeadAdmin)
    request = RequestFactory().get("/")
    request.user = people["backfiller"]
    assert backfill_changelist_context(model_admin, request) == {
        "crmify_backfill_url": options_url(),
        "crmify_backfill_label": "Backfill from users",
    }
    request.user = people["syncer"]
    assert backfill_changelist_context(model_admin, request)["crmify_backfill_url"] is None
    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "boss@example.com", "x"))
    changelist = boss.get(reverse("admin:crmify_lead_changelist"))
    assert f'href="{options_url()}">Backfill from users</a>' in changelist.content.decode()


# -- options and dry run -----------------------------------------------------------------------------


def test_options_page_offers_the_options_and_links_recent_runs(
    backfiller: Client, people: dict[str, User], quiet: None
) -> None:
    runs = [start_run(people["root"]) for _ in range(2)]
    response = backfiller.get(options_url())
    content = response.content.decode()
    assert response.status_code == 200
    assert "<title>Backfill from users" in content
    assert 'name="batch_size" value="1000"' in content
    assert 'name="joined_after"' in content and 'type="date"' in content
    assert 'name="only_missing"' in content
    for run in runs:
        assert f'href="{run_url(run)}"' in content
    assert "/admin/crmify/lead/" in content  # the breadcrumb back to the changelist


def test_dry_run_shows_the_plan_figures_and_writes_nothing(
    backfiller: Client, crm: SandboxServer
) -> None:
    new = [make_user(date_joined=OLD) for _ in range(4)]
    make_user(date_joined=OLD.replace(year=2022))  # joined after the filter's day: not scanned
    crm.add_lead({"FIRST_NAME": "Already", "LAST_NAME": "There", "EMAIL": new[0].email.upper()})
    for n in range(600):
        crm.add_lead({"FIRST_NAME": "Other", "LAST_NAME": str(n), "EMAIL": f"o{n}@example.org"})

    response = backfiller.post(options_url(), {"batch_size": "3", "joined_before": "2021-01-01"})

    assert response.status_code == 200
    shown = figures(response)
    assert shown["Rows scanned"] == "4"
    assert (shown["Leads to create"], shown["Leads to update"], shown["Unchanged"]) == (
        "4",
        "0",
        "0",
    )
    assert shown["Skipped (deleted from the CRM)"] == "0"
    assert shown["Already in the CRM by e-mail"] == "1 (listed 601 CRM leads in 2 calls)"
    assert shown["API calls the run will make"] == "6"  # two listing calls, one per new lead
    assert shown["CRM quota remaining today"] == "39,998 of 40,000"
    assert shown["Days of quota needed"].startswith("under 0.01; ")
    assert shown["Estimated duration"] == "1s at 1000 requests/s"
    assert "Start backfill" in response.content.decode()
    assert crm.api_key not in response.content.decode()
    # Nothing written, only the listing sent.
    assert not BackfillRun.objects.exists()
    assert not Lead.objects.exists() and not LedgerEntry.objects.exists()
    assert crm.stats()["requests"] == {"GET /Leads": {"200": 2}}


def test_invalid_options_are_refused_before_any_crm_call(
    backfiller: Client, crm: SandboxServer
) -> None:
    response = backfiller.post(
        options_url(),
        {"batch_size": "0", "joined_after": "2021-01-01", "joined_before": "2020-01-01"},
    )
    content = response.content.decode()
    assert response.status_code == 200 and "Start backfill" not in content
    assert "Ensure this value is greater than or equal to 1." in content
    assert "Choose a day after" in content
    assert crm.stats()["requests"] == {}


def test_a_failed_listing_shows_the_crms_message_without_the_api_key(
    backfiller: Client, crm: SandboxServer, configure: Callable[..., None]
) -> None:
    configure(BACKEND_AUTH={"API_KEY": "not-the-sandbox-key-1234"})
    response = backfiller.post(options_url(), {"batch_size": "10"})
    content = response.content.decode()
    assert response.status_code == 200 and "Start backfill" not in content
    assert "The CRM could not be listed:" in content
    assert "not-the-sandbox-key-1234" not in content
    assert not BackfillRun.objects.exists()


# -- confirm -----------------------------------------------------------------------------------------


def test_confirm_starts_a_run_keeping_the_dry_run_and_redirects_to_its_progress(
    backfiller: Client, people: dict[str, User], crm: SandboxServer
) -> None:
    for _ in range(3):
        make_user(date_joined=OLD)
    dry_run = backfiller.post(
        options_url(), {"batch_size": "2", "only_missing": "on", "joined_before": "2021-01-01"}
    )
    listed = crm.stats()["requests"]

    response = backfiller.post(options_url(), confirm_data(dry_run))

    run = BackfillRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run_url(run)
    assert run.options == {
        "batch_size": 2,
        "only_missing": True,
        "joined_after": None,
        "joined_before": "2021-01-01",
    }
    assert (run.state, run.total_estimate, run.created_by) == (
        BackfillRun.State.PENDING,
        3,
        people["backfiller"],
    )
    assert run.report is not None and run.report["to_create"] == 3
    assert crm.stats()["requests"] == listed  # the confirm does not list the CRM again
    assert texts(response) == [f"Backfill run {run.pk} started: 3 rows to scan."]


def test_confirm_validates_the_options_again(backfiller: Client, quiet: None) -> None:
    response = backfiller.post(options_url(), {"batch_size": "-5", "confirm": "yes"})
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert not BackfillRun.objects.exists()


def test_confirm_keeps_no_report_signed_for_other_options(backfiller: Client, quiet: None) -> None:
    other = backfill.plan(BackfillOptions(batch_size=7))
    data = {"batch_size": "8", "plan": sign_plan(other), "confirm": "yes"}
    assert backfiller.post(options_url(), data).status_code == 302
    forged = {**data, "plan": "not-signed", "batch_size": "7"}
    assert backfiller.post(options_url(), forged).status_code == 302
    assert list(BackfillRun.objects.values_list("report", flat=True)) == [None, None]


# -- progress, cancel, resume ------------------------------------------------------------------------


def test_progress_page_says_finished_only_once_every_queued_lead_is_delivered(
    backfiller: Client, people: dict[str, User], quiet: None
) -> None:
    for _ in range(2):
        make_user()
    total = User.objects.count()  # the staff users are rows of LEAD_MODEL too
    run = start_run(people["root"], batch_size=2)

    pending = backfiller.get(run_url(run))
    assert pending.status_code == 200 and refreshes(pending)
    assert "Waiting for the task worker" in pending.content.decode()
    assert f'action="{run_url(run, "cancel")}"' in pending.content.decode()

    backfill.run_chunk(run.pk, chain=False)
    running = backfiller.get(run_url(run))
    content = running.content.decode()
    percent = 100 * 2 // total
    assert refreshes(running) and "Mapping rows" in content
    assert f'<progress id="crmify-backfill-progress" max="100" value="{percent}">' in content
    assert f"{percent}% — 2 of about {total} rows" in content
    assert figures(running)["Scanned"] == "2" and figures(running)["Created"] == "2"
    assert figures(running)["Waiting to be sent"] == "2"

    while backfill.run_chunk(run.pk, chain=False).more:
        pass
    mapped = backfiller.get(run_url(run))
    content = mapped.content.decode()
    shown = figures(mapped)
    # Every row is mapped, but the CRM holds none of them yet: not "Finished", and still refreshing.
    assert refreshes(mapped) and "Delivering to the CRM" in content and ">Finished<" not in content
    assert 'id="crmify-backfill-progress" max="100" value="100">100%</progress>' in content
    assert (shown["Scanned"], shown["Created"], shown["Updated"]) == (str(total), str(total), "0")
    assert (shown["Synced"], shown["Waiting to be sent"]) == ("0", str(total))
    assert f"0% — 0 of {total} queued leads" in content

    for lead_id in Lead.objects.filter(backfill_run=run).values_list("pk", flat=True):
        process_lead(lead_id)  # what the worker does with the chunks' tasks
    finished = backfiller.get(run_url(run))
    content = finished.content.decode()
    shown = figures(finished)
    assert not refreshes(finished) and ">Finished<" in content
    assert (shown["Synced"], shown["Failed to sync"], shown["Waiting to be sent"]) == (
        str(total),
        "0",
        "0",
    )
    assert f"100% — {total} of {total} queued leads" in content
    assert "_cancel" not in content and "_resume" not in content


def test_progress_page_queries_do_not_grow_with_the_leads_of_the_run(
    backfiller: Client,
    people: dict[str, User],
    quiet: None,
) -> None:
    counts = []
    for rows in (3, 60):
        for _ in range(rows):
            make_user()
        run = start_run(people["root"], batch_size=1000)
        backfill.run_chunk(run.pk, chain=False)
        with CaptureQueriesContext(connection) as queries:
            assert backfiller.get(run_url(run)).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_cancel_stops_a_run_and_resume_goes_on_from_its_checkpoint(
    backfiller: Client,
    people: dict[str, User],
    quiet: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    for _ in range(3):
        make_user()
    total = User.objects.count()
    run = start_run(people["root"], batch_size=2)
    backfill.run_chunk(run.pk, chain=False)

    cancelled = backfiller.post(run_url(run, "cancel"))
    run.refresh_from_db()
    assert cancelled.status_code == 302 and cancelled["Location"] == run_url(run)
    assert run.state == BackfillRun.State.CANCELLED and run.scanned == 2
    assert texts(cancelled) == [
        f"Backfill run {run.pk} is cancelled; it stops after the chunk in progress."
    ]
    page = backfiller.get(run_url(run)).content.decode()
    assert f'action="{run_url(run, "resume")}"' in page and "_cancel" not in page
    # The chunk it mapped queued two leads: the page follows them until they are delivered.
    assert '<meta http-equiv="refresh"' in page and "Cancelled" in page
    for lead_id in Lead.objects.filter(backfill_run=run).values_list("pk", flat=True):
        process_lead(lead_id)
    page = backfiller.get(run_url(run)).content.decode()
    assert '<meta http-equiv="refresh"' not in page

    # Resuming queues the next chunk; the immediate Tasks backend does every chunk on commit.
    with django_capture_on_commit_callbacks(execute=True):
        resumed = backfiller.post(run_url(run, "resume"))
    run.refresh_from_db()
    assert resumed.status_code == 302
    assert texts(resumed) == [f"Backfill run {run.pk} resumes after 2 of {total} rows."]
    assert run.state == BackfillRun.State.FINISHED, run.last_error
    assert (run.scanned, run.created) == (total, total)
    assert Lead.objects.count() == total  # the first chunk's leads were not made twice


def test_a_finished_run_can_be_neither_cancelled_nor_resumed(
    backfiller: Client, people: dict[str, User], quiet: None
) -> None:
    run = start_run(people["root"])
    backfill.run_chunk(run.pk, chain=False)
    cancel = backfiller.post(run_url(run, "cancel"))
    resume = backfiller.post(run_url(run, "resume"))
    run.refresh_from_db()
    assert run.state == BackfillRun.State.FINISHED
    assert texts(cancel) == [f"Backfill run {run.pk} was not running (finished)."]
    # The first message is still unread (the test follows no redirect): the resume's comes after it.
    assert texts(resume)[-1] == f"Backfill run {run.pk} is finished: there is nothing to resume."


def test_progress_page_shows_the_last_error_and_offers_resume_after_a_failure(
    backfiller: Client, people: dict[str, User], quiet: None
) -> None:
    run = start_run(people["root"])
    BackfillRun.objects.filter(pk=run.pk).update(
        state=BackfillRun.State.FAILED, last_error="OperationalError: database is locked"
    )
    page = backfiller.get(run_url(run)).content.decode()
    assert "Last error: OperationalError: database is locked" in page
    assert f'action="{run_url(run, "resume")}"' in page
    assert '<meta http-equiv="refresh"' not in page


def test_progress_page_says_why_a_running_run_waits(
    backfiller: Client, people: dict[str, User], quiet: None
) -> None:
    run = start_run(people["root"])
    note = "Waiting for the CRM's daily quota: the run goes on at 2026-11-25 00:00 UTC."
    BackfillRun.objects.filter(pk=run.pk).update(state=BackfillRun.State.RUNNING, last_error=note)
    page = backfiller.get(run_url(run)).content.decode()
    assert note.replace("'", "&#x27;") in page
    assert "Last error:" not in page and '<meta http-equiv="refresh"' in page


def test_unknown_run_is_404(backfiller: Client, quiet: None) -> None:
    assert backfiller.get(reverse("admin:crmify_lead_backfill_run", args=[404])).status_code == 404


def test_progress_page_shows_todays_use_of_each_share_of_the_quota(
    backfiller: Client, people: dict[str, User], crm: SandboxServer
) -> None:
    run = start_run(people["root"])
    tracker = QuotaTracker("insightly", cache, window_seconds=3600)
    tracker.observe(limit=100, remaining=99)
    tracker.observe(limit=100, remaining=60)
    for _ in range(30):
        tracker.count(QuotaShare.BACKFILL)

    shown = figures(backfiller.get(run_url(run)))
    assert shown["CRM quota used today"].startswith("40 of 100 (the window resets about ")
    assert shown["By the backfill"] == "30 of its 90"
    assert shown["By live sign-ups and changes"] == "10 of the 10 kept for them"
    assert shown["Backfill"] == "sending"

    for _ in range(60):  # the backfill's 90 calls of the window are made
        tracker.count(QuotaShare.BACKFILL)
    tracker.observe(limit=100, remaining=0)
    resets_at = tracker.state().resets_at
    assert resets_at is not None
    shown = figures(backfiller.get(run_url(run)))
    assert shown["Backfill"] == (
        f"paused until {timezone.localtime(resets_at):%Y-%m-%d %H:%M:%S %Z}"
    )
