"""The CRM as a whole does not answer (``crmify.crm_state``): leads wait without calls or attempts, one
probe watches for its return, and the first answer sends every waiting lead, in the order they changed.

The locmem CRM plays the outage (``fail_next`` with the error a refused connection gives); the dummy
Tasks backend records what is queued, and ``Enqueued.run_all`` runs it as a worker would. The sandbox
over real HTTP and real worker processes are in ``tests/reliability/test_outage.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from crmify import crm_state
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError, TransientBackendError
from crmify.models import Lead, SyncState
from crmify.sweeper import sweep
from crmify.worker import SyncOutcome, probe_crm, process_lead
from tests.admin_fixtures import login, people
from tests.doubles import Enqueued
from tests.engine_helpers import make_due, operations
from tests.factories import lead_of, make_user

__all__ = ["login", "people"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = TransientBackendError("Could not reach the CRM: connection refused.")
CHANGELIST = reverse("admin:crmify_lead_changelist")


def take_down(enqueued: Enqueued) -> list[Lead]:
    """Three new leads meet a CRM that refuses connections: it is down after the third."""
    locmem.fail_next(REFUSED, times=crm_state.DOWN_AFTER_FAILURES)
    leads = [lead_of(make_user(first_name=f"Early {n}")) for n in range(3)]
    enqueued.run_all()
    enqueued.clear()  # the first two leads' retries: they find their leads waiting for the CRM
    schedule_probe(timezone.now() + timedelta(hours=1))  # the test says when the probe comes
    return [Lead.objects.get(pk=lead.pk) for lead in leads]


def released(enqueued: Enqueued) -> list[int]:
    """The leads queued by the release (a few per ``process_leads_task``), in the order queued."""
    return [
        lead_id
        for result in enqueued.backend.results
        if result.task.name == "process_leads_task"
        for lead_id in result.args[0]
    ]


def send_released(enqueued: Enqueued) -> list[SyncOutcome]:
    """Run the release's tasks as a worker would, and forget them."""
    ids = released(enqueued)
    enqueued.clear()
    return [process_lead(lead_id) for lead_id in ids]


def schedule_probe(when: datetime) -> None:
    """Move the next probe of the CRM that is down to ``when``."""
    cache = crm_state.shared_cache()
    cache.set(
        "crmify:crm:down", {**cache.get("crmify:crm:down"), "next_probe_at": when}, timeout=None
    )


def probe_now() -> crm_state.CrmState | None:
    """The probe, as its task would run it once it is due."""
    schedule_probe(timezone.now())
    return probe_crm()


def test_leads_that_get_no_answer_mark_the_crm_down_and_wait_without_using_attempts(
    enqueued: Enqueued,
) -> None:
    first, second, third = take_down(enqueued)

    state = crm_state.crm_state()
    assert state.down
    assert state.last_error == "Could not reach the CRM: connection refused."
    assert state.down_since is not None and state.down_since <= timezone.now()
    # Every lead waits for the CRM: none on a backoff slot computed while it was down.
    for lead in (first, second, third):
        assert lead.waiting_for_crm
        assert (lead.sync_state, lead.next_attempt_at) == (SyncState.PENDING, None)
    assert third.attempts == 0  # the call that found the outage is not held against the lead

    # Later sign-ups make no call at all, and use no attempt.
    later = [lead_of(make_user(first_name=f"Later {n}")) for n in range(5)]
    assert enqueued.run_all() == [SyncOutcome.WAITING] * 5
    assert operations() == ["create"] * 3
    for lead in later:
        lead.refresh_from_db()
        assert (lead.waiting_for_crm, lead.attempts) == (True, 0)
        assert lead.last_error == "Could not reach the CRM: connection refused."
    assert Lead.objects.waiting_for_crm().count() == 8


def test_one_lead_that_keeps_failing_is_that_leads_problem(
    enqueued: Enqueued, configure: Callable[..., None]
) -> None:
    configure(MAX_ATTEMPTS=4)
    lead = lead_of(make_user())
    locmem.fail_next(TransientBackendError("Bad Gateway", status_code=502), times=4)
    enqueued.run_all()
    for _ in range(3):
        make_due(lead)
        process_lead(lead.pk)
    lead.refresh_from_db()
    assert crm_state.crm_state().up
    assert (lead.sync_state, lead.attempts) == (SyncState.FAILED, 4)
    assert lead.last_error == "Gave up after 4 attempts: HTTP 502: Bad Gateway"


def test_a_5xx_on_one_lead_while_others_succeed_keeps_that_leads_backoff(
    enqueued: Enqueued,
) -> None:
    users = [make_user(first_name=f"Mixed {n}") for n in range(6)]
    enqueued.clear()
    for n, user in enumerate(users):
        if n % 2 == 0:
            locmem.fail_next(TransientBackendError("Internal Server Error", status_code=500))
        process_lead(lead_of(user).pk)
    assert crm_state.crm_state().up
    failed = Lead.objects.filter(sync_state=SyncState.RETRYING)
    assert failed.count() == 3
    for lead in failed:
        assert (lead.attempts, lead.waiting_for_crm) == (1, False)
        assert lead.next_attempt_at is not None and lead.next_attempt_at > timezone.now()


def test_one_probe_at_a_growing_interval_up_to_the_maximum(enqueued: Enqueued) -> None:
    take_down(enqueued)
    enqueued.clear()
    intervals = []
    for _ in range(5):
        claimed = crm_state.claim_probe(timezone.now() + timedelta(hours=2))
        assert claimed is not None
        # While one worker probes, no other does.
        assert crm_state.claim_probe(timezone.now() + timedelta(hours=2)) is None
        intervals.append(crm_state.end_probe().probe_interval)
    assert intervals == [4, 8, *[crm_state.MAX_PROBE_INTERVAL] * 3]
    state = crm_state.crm_state()
    assert state.probes == 5
    assert state.next_probe_at is not None and state.next_probe_at > timezone.now()
    # Not due yet: no probe.
    assert crm_state.claim_probe() is None


def test_a_worker_that_finds_the_probe_due_makes_it(enqueued: Enqueued) -> None:
    take_down(enqueued)
    schedule_probe(timezone.now())  # due: its task is late, lost, or cannot be deferred
    lead_of(make_user(first_name="Next"))
    enqueued.run_all()
    # The worker parked its lead, then probed with the lead that waited longest: the CRM answers.
    assert operations() == ["create"] * 4
    assert crm_state.crm_state().up
    assert len(released(enqueued)) == 3


def test_a_failed_probe_is_one_call_and_the_lead_waits_again(enqueued: Enqueued) -> None:
    take_down(enqueued)
    enqueued.clear()
    locmem.fail_next(REFUSED)
    after = probe_now()
    assert after is not None and after.down
    assert operations() == ["create"] * 4  # three that found the outage, one probe
    assert Lead.objects.waiting_for_crm().count() == 3
    assert not enqueued.lead_ids
    assert {lead.attempts for lead in Lead.objects.all()} <= {0, 1}


def test_the_first_answer_sends_every_waiting_lead_in_the_order_they_changed(
    enqueued: Enqueued,
) -> None:
    take_down(enqueued)
    later = [lead_of(make_user(first_name=f"Later {n}")) for n in range(4)]
    enqueued.run_all()
    waiting = list(Lead.objects.waiting_for_crm().values_list("pk", flat=True))
    # The probe sends the lead that waited longest; the CRM answers.
    after = probe_now()
    assert after is not None and after.up
    assert crm_state.crm_state().up
    assert Lead.objects.waiting_for_crm().count() == 0
    # Queued at once in the order they were queued before (a retry counts from its failure), the
    # probe's lead aside: every worker then takes them in that order.
    assert released(enqueued) == waiting[1:]
    assert waiting[-4:] == [lead.pk for lead in later]
    assert set(send_released(enqueued)) == {SyncOutcome.SYNCED}
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.SYNCED}
    assert not Lead.objects.exclude(attempts=0).exists()  # a synced lead's attempts start afresh


def test_an_answer_that_refuses_a_lead_still_says_the_crm_is_up(enqueued: Enqueued) -> None:
    take_down(enqueued)
    enqueued.clear()
    locmem.fail_next(PermanentBackendError("EMAIL is not valid", status_code=400))
    after = probe_now()
    assert after is not None and after.up
    assert Lead.objects.filter(sync_state=SyncState.FAILED).count() == 1
    assert len(released(enqueued)) == 2


def test_the_sweeper_sends_leads_still_waiting_for_a_crm_that_is_up(enqueued: Enqueued) -> None:
    take_down(enqueued)
    enqueued.clear()
    # The news of the CRM's return was lost (the cache was emptied, say).
    crm_state.forget_outage()
    report = sweep()
    assert report.released_waiting == 3
    assert len(released(enqueued)) == 3


def test_the_sweeper_probes_when_the_probe_task_was_lost(enqueued: Enqueued) -> None:
    take_down(enqueued)
    enqueued.clear()
    schedule_probe(timezone.now() - timedelta(seconds=1))
    sweep()
    assert operations() == ["create"] * 4
    assert crm_state.crm_state().up


def test_staff_see_the_outage_and_may_send_the_waiting_leads_now(
    enqueued: Enqueued, login: Callable[[str], Client]
) -> None:
    take_down(enqueued)
    down_since = crm_state.crm_state().down_since
    assert down_since is not None
    since = date_format(timezone.localtime(down_since), "TIME_FORMAT")  # "1:29 p.m.": today's time
    for name in ("viewer", "syncer"):
        html = login(name).get(CHANGELIST).content.decode()
        assert "The CRM has not answered since" in html
        assert (
            f"The CRM has not answered since {since} (Could not reach the CRM: connection refused); "
            "3 leads are waiting and will be sent when it answers."
        ) in html
        assert html.count("Pending, waiting for the CRM") == 3  # each waiting lead's row says so
        assert "(Could not reach the CRM: connection refused); 3 leads are waiting" in html
    assert "Send waiting leads now" not in login("viewer").get(CHANGELIST).content.decode()
    lead_page = login("syncer").get(
        reverse("admin:crmify_lead_change", args=[Lead.objects.first().pk])
    )
    assert "3 leads are waiting and will be sent when it answers" in lead_page.content.decode()
    assert "Send waiting leads now" in lead_page.content.decode()

    send = reverse("admin:crmify_lead_send_waiting")
    viewer = login("viewer")
    enqueued.clear()  # logging in saved the staff users (their own leads, removed by login)
    assert viewer.post(send).status_code == 403
    assert not released(enqueued)
    assert login("syncer").get(send).status_code == 405
    syncer = login("syncer")
    enqueued.clear()
    response = syncer.post(send, {"next": CHANGELIST}, follow=True)
    html = response.content.decode()
    assert "3 leads waiting for the CRM were queued to be sent now." in html
    assert "The CRM has not answered" not in html
    assert len(released(enqueued)) == 3
    send_released(enqueued)
    assert set(Lead.objects.values_list("sync_state", flat=True)) == {SyncState.SYNCED}


def test_crmify_check_reports_the_crm_as_the_workers_see_it(
    enqueued: Enqueued, capsys: pytest.CaptureFixture[str]
) -> None:
    take_down(enqueued)
    with pytest.raises(Exception, match="has no connection check"):
        call_command("crmify_check")
    out = capsys.readouterr().out
    assert "FAIL the workers see the CRM down since" in out
    assert "(Could not reach the CRM: connection refused.); 3 leads waiting" in out
    crm_state.forget_outage()
    with pytest.raises(Exception, match="has no connection check"):
        call_command("crmify_check")
    assert "ok   the workers see the CRM answering" in capsys.readouterr().out
