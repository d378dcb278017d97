"""What the worker says it did with a lead: members of ``SyncOutcome``, equal to the text they replaced."""

from __future__ import annotations

import pytest
from django.contrib import messages

from crmify import api
from crmify.admin.views import sync_outcome_message
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError, TransientBackendError
from crmify.models import Lead, SyncState
from crmify.worker import SyncOutcome, process_lead
from tests.doubles import Enqueued
from tests.factories import lead_of, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_outcome_is_the_text_it_was_before() -> None:
    assert [str(outcome) for outcome in SyncOutcome] == [
        "synced",
        "unchanged",
        "deleted",
        "retrying",
        "failed",
        "skipped",
        "missing",
        "waiting",  # added with the CRM-wide outage state; the earlier texts are unchanged
    ]
    assert SyncOutcome.SYNCED == "synced"
    assert {SyncOutcome.FAILED: 1} == {"failed": 1}  # task results count them by text


def test_process_lead_answers_an_outcome_member_for_each_path(enqueued: Enqueued) -> None:
    user = make_user()
    lead = lead_of(user)
    assert process_lead(lead.pk) is SyncOutcome.SYNCED
    assert process_lead(lead.pk) is SyncOutcome.SKIPPED  # synced: nothing waits
    Lead.objects.filter(pk=lead.pk).update(sync_state=SyncState.PENDING)  # queued twice, say
    assert process_lead(lead.pk) is SyncOutcome.UNCHANGED
    assert api.sync_now(lead_of(user)) is SyncOutcome.SYNCED
    locmem.fail_next(TransientBackendError("busy"))
    assert api.sync_now(lead_of(user)) is SyncOutcome.RETRYING
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    Lead.objects.filter(pk=lead.pk).update(next_attempt_at=None)
    assert process_lead(lead.pk) is SyncOutcome.FAILED
    user.delete()
    assert process_lead(lead.pk) is SyncOutcome.DELETED
    assert process_lead(-1) is SyncOutcome.MISSING


def test_the_admin_reads_each_outcome_member() -> None:
    lead = Lead(external_id="7", last_error="Forbidden")
    levels = {outcome: sync_outcome_message(outcome, lead)[0] for outcome in SyncOutcome}
    assert levels == {
        SyncOutcome.SYNCED: messages.SUCCESS,
        SyncOutcome.UNCHANGED: messages.SUCCESS,
        SyncOutcome.DELETED: messages.SUCCESS,
        SyncOutcome.RETRYING: messages.WARNING,
        SyncOutcome.FAILED: messages.ERROR,
        SyncOutcome.SKIPPED: messages.WARNING,
        SyncOutcome.MISSING: messages.ERROR,
        SyncOutcome.WAITING: messages.WARNING,
    }
