"""crmify's public API (``crmify.api``): statuses set from site code, and the staff actions (retry, re-sync,
delete from the CRM, sync now), each reporting what it queued and what it skipped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from crmify import api
from crmify.backends import locmem
from crmify.exceptions import PermanentBackendError
from crmify.models import Lead, SyncState
from crmify.sandbox import SandboxServer
from tests.doubles import Enqueued
from tests.engine_helpers import Configure, operations
from tests.factories import lead_of, make_profile, make_user, user_values

pytestmark = pytest.mark.django_db(transaction=True)


# -- statuses --------------------------------------------------------------------------------------------


def test_mark_converted_sets_the_converted_status_and_syncs() -> None:
    user = make_user()
    api.mark_converted(user)
    lead = lead_of(user)
    assert lead.status == "Converted"
    assert locmem.leads[lead.external_id]["status"] == "Converted"
    assert operations() == ["create", "update"]


def test_mark_converted_uses_the_configured_status(configure: Configure) -> None:
    configure(LEAD_CONVERTED_STATUS="Won")
    user = make_user()
    api.mark_converted(user)
    assert lead_of(user).status == "Won"


def test_mark_dead_sets_the_dead_status_and_syncs() -> None:
    user = make_user()
    api.mark_dead(lead_of(user))
    assert locmem.leads["1"]["status"] == "Disqualified"


def test_mark_converted_on_a_user_without_a_lead_creates_it_converted() -> None:
    with transaction.atomic():
        user = User.objects.create(**user_values())
        Lead.objects.all().delete()
        api.mark_converted(user)
    assert operations() == ["create"]
    assert locmem.leads["1"]["status"] == "Converted"


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (api.mark_converted, "Converted"),
        (api.mark_dead, "Disqualified"),
        (lambda obj: api.set_status(obj, "Contacted"), "Contacted"),
    ],
)
@pytest.mark.parametrize("target", [lambda user: user, lead_of], ids=["row", "lead"])
def test_a_status_set_on_a_lead_whose_mapping_failed_is_kept_and_sent_once_it_maps(
    configure: Configure,
    call: Callable[[Any], Lead],
    status: str,
    target: Callable[[User], Any],
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    call(target(user))
    lead = lead_of(user)
    assert (lead.sync_state, lead.status) == (SyncState.FAILED, status)
    assert lead.last_error.startswith("Mapping failed:")
    assert locmem.calls == []  # nothing blank reached the CRM
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.retry_failed([lead]).queued == 1
    assert operations() == ["create"]
    assert (locmem.leads["1"]["first_name"], locmem.leads["1"]["status"]) == ("Mapped", status)


@pytest.mark.usefixtures("profile_leads")
@pytest.mark.parametrize(
    "call",
    [
        api.mark_converted,
        api.mark_dead,
        lambda row: api.set_status(row, "Contacted"),
        api.sync,
        api.lead_for,
    ],
)
def test_the_api_refuses_a_row_that_is_not_the_lead_model(call: Callable[[Any], Lead]) -> None:
    profile = make_profile()
    with pytest.raises(TypeError, match=r"testapp\.UserProfile .*CRMIFY\['LEAD_MODEL'\].*User"):
        call(profile.user)  # request.user, when the lead is the profile
    assert Lead.objects.get() == lead_of(profile)  # no stray lead for the user
    assert operations() == ["create"]


def test_the_api_refuses_an_unsaved_row() -> None:
    with pytest.raises(ValueError, match="not saved yet"):
        api.mark_converted(User(**user_values()))
    assert Lead.objects.count() == 0


def test_the_status_survives_later_saves() -> None:
    user = make_user()
    api.mark_converted(user)
    user.first_name = "Later"
    user.save()
    assert locmem.leads["1"]["status"] == "Converted"
    assert locmem.leads["1"]["first_name"] == "Later"


# -- staff actions ---------------------------------------------------------------------------------------


def test_retry_failed_queues_failed_leads_with_fresh_attempts(configure: Configure) -> None:
    locmem.fail_next(PermanentBackendError("Unauthorized", status_code=401))
    failed = lead_of(make_user())
    synced = lead_of(make_user())
    assert failed.sync_state == SyncState.FAILED
    result = api.retry_failed([failed, synced])
    assert (result.queued, dict(result.skipped)) == (1, {"not failed": 1})
    assert str(result) == "1 queued; skipped: 1 not failed"
    failed.refresh_from_db()
    assert (failed.sync_state, failed.attempts, failed.last_error) == (SyncState.SYNCED, 0, "")


def test_delete_from_crm_deletes_once_and_reports_the_rest() -> None:
    leads = [lead_of(make_user()), lead_of(make_user())]
    result = api.delete_from_crm(leads)
    assert result.queued == 2
    assert operations() == ["create", "create", "delete", "delete"]
    again = api.delete_from_crm(list(Lead.objects.all()))
    assert (again.queued, dict(again.skipped)) == (0, {"already deleted": 2})


def test_resync_sends_an_unchanged_lead_again() -> None:
    lead = lead_of(make_user())
    assert api.resync([lead]).queued == 1
    assert operations() == ["create", "update"]


def test_resync_and_sync_now_of_a_lead_whose_mapping_failed_map_it_again_first(
    configure: Configure,
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    result = api.resync([lead_of(user)])
    assert (result.queued, dict(result.skipped)) == (0, {"mapping still fails": 1})
    assert api.sync_now(lead_of(user)) == "failed"
    assert lead_of(user).last_error.startswith("Mapping failed:")
    assert locmem.calls == []  # nothing blank reached the CRM
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.resync([lead_of(user)]).queued == 1
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert locmem.leads["1"]["first_name"] == "Mapped"


def test_resync_of_a_lead_deleted_in_the_crm_creates_it_again(insightly: SandboxServer) -> None:
    user = make_user(first_name="Ada")
    old_id = lead_of(user).external_id
    insightly.state.delete_lead(int(old_id))  # someone deleted it in Insightly
    user.first_name = "Augusta"
    user.save()
    lead = lead_of(user)
    # Issue 14: marked deleted in the CRM (a tombstone saves do not re-create), no longer failed.
    assert lead.sync_state == SyncState.DELETED and lead.tombstone
    assert lead.deleted_in_crm_at is not None
    assert "no longer exists in Insightly" in lead.last_error
    assert "Re-sync it to create it again" in lead.last_error  # what staff are told to do: it works
    assert api.resync([lead]).queued == 1
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    (crm,) = insightly.leads()
    assert str(crm["LEAD_ID"]) == lead.external_id != old_id
    assert crm["FIRST_NAME"] == "Augusta"


def test_resync_after_another_permanent_error_keeps_the_crm_id() -> None:
    user = make_user()
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    user.first_name = "Changed"
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    api.resync([lead])
    lead = lead_of(user)
    assert (lead.sync_state, lead.external_id) == (SyncState.SYNCED, "1")
    assert operations() == ["create", "update", "update"]
    assert list(locmem.leads) == ["1"]


def test_sync_now_sends_inside_the_request_and_says_what_happened(enqueued: Enqueued) -> None:
    user = make_user()
    enqueued.clear()
    assert api.sync_now(lead_of(user)) == "synced"
    assert operations() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


def test_sync_now_reports_a_failure() -> None:
    lead = lead_of(make_user())
    locmem.fail_next(PermanentBackendError("Forbidden", status_code=403))
    assert api.sync_now(lead) == "failed"
    lead.refresh_from_db()
    assert lead.last_error == "HTTP 403: Forbidden"


def test_sync_maps_a_row_now_and_queues_it_if_changed(enqueued: Enqueued) -> None:
    user = make_user()
    enqueued.clear()
    User.objects.filter(pk=user.pk).update(last_name="Byron")
    user.refresh_from_db()
    api.sync(user)
    assert len(enqueued.results) == 1
    api.sync(user)
    assert len(enqueued.results) == 1


def test_retry_failed_after_a_mapping_error_remaps_instead_of_sending_blanks(
    configure: Configure,
) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user(first_name="Mapped")
    lead = lead_of(user)
    result = api.retry_failed([lead])  # still broken: nothing blank goes out
    assert (result.queued, dict(result.skipped)) == (0, {"mapping still fails": 1})
    assert locmem.calls == []
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    assert api.retry_failed([lead_of(user)]).queued == 1
    assert locmem.leads["1"]["first_name"] == "Mapped"


# -- stale copies ----------------------------------------------------------------------------------------


def test_delete_from_crm_with_a_stale_copy_still_deletes_the_crm_record(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    stale = lead_of(user)  # loaded by an admin page while the lead was still pending
    enqueued.run_all()
    assert lead_of(user).external_id == "1"
    assert api.delete_from_crm([stale]).queued == 1
    enqueued.run_all()
    assert operations() == ["create", "delete"]
    assert lead_of(user).sync_state == SyncState.DELETED


def test_resync_with_a_stale_copy_of_a_deleted_lead_creates_a_new_crm_record() -> None:
    user = make_user()
    stale = lead_of(user)
    api.delete_from_crm([lead_of(user)])
    api.resync([stale])
    assert operations() == ["create", "delete", "create"]
    assert lead_of(user).external_id == "2"
