"""The outbox half of the engine (``crmify.tracking``): what a mapped source row means for its lead
(``decide``, the one decision behind a save, the drift scan, the public API, the import and the backfill),
and what a save or a delete of a source row records on its lead and sends after commit.

The tests of the save path need real commits (``after_commit``): the test settings' immediate Tasks backend
runs the sync when the transaction commits."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crmify import api
from crmify.backends import locmem
from crmify.exceptions import MappingError
from crmify.mappers import MappedLead
from crmify.models import Lead, SyncState
from crmify.tracking import RowChange, decide, fingerprint, track, track_saved
from tests.doubles import Enqueued
from tests.engine_helpers import Configure, after_commit, crmify_queries, operations, writes
from tests.factories import lead_of, make_user, user_values

pytestmark = pytest.mark.django_db


def mapped(**values: str) -> MappedLead:
    return MappedLead(values={"email": "ada@example.com", **values})


def recorded(row: MappedLead, **fields: object) -> Lead:
    """A saved lead holding what ``row`` maps to, as the engine records it."""
    lead = Lead()
    assert decide(lead, row) is RowChange.NEW
    for name, value in fields.items():
        setattr(lead, name, value)
    lead.save()
    return Lead.objects.get(pk=lead.pk)


def test_a_row_without_a_lead_is_new_and_its_values_are_set() -> None:
    lead = Lead()
    assert decide(lead, mapped(first_name="Ada")) is RowChange.NEW
    assert lead.first_name == "Ada"
    assert lead.fingerprint == fingerprint(lead.crm_values())


def test_the_same_values_again_are_unchanged() -> None:
    lead = recorded(mapped(first_name="Ada"))
    before = lead.fingerprint
    assert decide(lead, mapped(first_name="Ada")) is RowChange.UNCHANGED
    assert lead.fingerprint == before


def test_new_values_are_a_change_with_a_new_fingerprint() -> None:
    lead = recorded(mapped(first_name="Ada"))
    before = lead.fingerprint
    assert decide(lead, mapped(first_name="Augusta")) is RowChange.CHANGED
    assert lead.first_name == "Augusta"
    assert lead.fingerprint not in ("", before)


def test_a_status_is_a_change_too() -> None:
    lead = recorded(mapped(first_name="Ada"))
    assert decide(lead, mapped(first_name="Ada"), status="Converted") is RowChange.CHANGED
    assert lead.status == "Converted"


def test_values_the_site_set_on_the_lead_are_judged_as_they_are() -> None:
    lead = recorded(mapped(first_name="Ada"))
    assert decide(lead) is RowChange.UNCHANGED
    lead.company = "Analytical Engines"
    assert decide(lead) is RowChange.CHANGED


def test_a_tombstone_whose_values_moved_is_tombstoned_and_one_that_did_not_is_unchanged() -> None:
    lead = recorded(mapped(first_name="Ada"), tombstone=True, sync_state=SyncState.DELETED)
    assert decide(lead, mapped(first_name="Ada")) is RowChange.UNCHANGED
    assert decide(lead, mapped(first_name="Augusta")) is RowChange.TOMBSTONED


def test_a_new_mapper_output_with_the_same_crm_values_only_moves_the_source_fingerprint() -> None:
    lead = recorded(mapped(first_name="Ada"), source_fingerprint="from an older mapper")
    assert decide(lead, mapped(first_name="Ada")) is RowChange.SOURCE_MOVED
    assert lead.source_fingerprint != "from an older mapper"


def test_the_quick_check_calls_the_recorded_mapper_output_unchanged_without_reading_the_lead() -> (
    None
):
    lead = recorded(mapped(first_name="Ada"))
    lead.company = "not yet saved"
    assert decide(lead, mapped(first_name="Ada"), quick=True) is RowChange.UNCHANGED
    assert decide(lead, mapped(first_name="Ada")) is RowChange.CHANGED


def test_a_mapping_error_is_mapping_failed_and_leaves_the_lead_alone() -> None:
    lead = recorded(mapped(first_name="Ada"))
    before = (lead.first_name, lead.fingerprint)
    assert decide(lead, MappingError("no e-mail")) is RowChange.MAPPING_FAILED
    assert (lead.first_name, lead.fingerprint) == before


# -- a save reaches the CRM after commit -----------------------------------------------------------------


@after_commit
def test_saving_a_new_user_creates_a_lead_and_syncs_it_after_commit() -> None:
    user = make_user(first_name="Zoë", last_name="Brontë 🦄", email="zoe@example.com")
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.status == "NotContacted"
    assert lead.external_id == "1"
    assert lead.last_synced_at is not None
    assert lead.synced_fingerprint == lead.fingerprint
    assert operations() == ["create"]
    assert locmem.leads["1"]["first_name"] == "Zoë"
    assert locmem.leads["1"]["last_name"] == "Brontë 🦄"
    assert locmem.leads["1"]["status"] == "NotContacted"


@after_commit
def test_the_sync_waits_for_the_commit() -> None:
    with transaction.atomic():
        user = make_user()
        assert lead_of(user).sync_state == SyncState.PENDING
        assert locmem.calls == []
    assert operations() == ["create"]
    assert lead_of(user).sync_state == SyncState.SYNCED


@after_commit
def test_a_changed_save_updates_the_same_crm_lead() -> None:
    user = make_user()
    user.email = "new@example.com"
    user.save()
    assert operations() == ["create", "update"]
    assert locmem.leads["1"]["email"] == "new@example.com"
    assert lead_of(user).external_id == "1"


@after_commit
def test_unchanged_save_makes_no_api_call_and_no_write() -> None:
    user = make_user()
    with CaptureQueriesContext(connection) as queries:
        user.save()
    crmify_sql = crmify_queries(queries)
    assert len(crmify_sql) == 1  # one read of the lead
    assert writes(crmify_sql) == []
    assert operations() == ["create"]


@after_commit
def test_saving_a_field_the_mapper_does_not_read_sends_nothing() -> None:
    user = make_user()
    user.is_staff = True
    user.last_login = timezone.now()
    user.save()
    assert operations() == ["create"]


@after_commit
def test_a_rolled_back_transaction_sends_nothing_and_leaves_no_lead() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert Lead.objects.count() == 0
    assert locmem.calls == []


@after_commit
def test_a_rolled_back_change_sends_nothing() -> None:
    user = make_user()
    with pytest.raises(RuntimeError), transaction.atomic():
        user.first_name = "Rolled"
        user.save()
        raise RuntimeError("the view failed")
    assert operations() == ["create"]
    assert lead_of(user).first_name == "Ada"


# -- deleting the source row, and tombstones -------------------------------------------------------------


@after_commit
def test_deleting_the_source_deletes_the_crm_lead_and_keeps_a_tombstone() -> None:
    user = make_user()
    lead = lead_of(user)
    user.delete()
    lead.refresh_from_db()
    assert lead.tombstone is True
    assert lead.sync_state == SyncState.DELETED
    assert operations() == ["create", "delete"]
    assert locmem.leads == {}
    assert lead.first_name == "Ada"  # the tombstone still says who it was


@after_commit
def test_on_delete_keep_leaves_the_crm_lead_alone(configure: Configure) -> None:
    configure(ON_DELETE="keep")
    user = make_user()
    lead = lead_of(user)
    user.delete()
    lead.refresh_from_db()
    assert lead.tombstone is False
    assert lead.sync_state == SyncState.SYNCED
    assert operations() == ["create"]
    assert "1" in locmem.leads


@after_commit
def test_a_tombstone_is_not_recreated_by_a_later_save_until_resync() -> None:
    user = make_user()
    api.delete_from_crm([lead_of(user)])
    assert operations() == ["create", "delete"]
    user.first_name = "Back"
    user.save()
    lead = lead_of(user)
    assert operations() == ["create", "delete"]
    assert lead.sync_state == SyncState.DELETED
    assert lead.first_name == "Back"  # the values are kept up to date for when staff bring it back
    result = api.resync([lead])
    assert result.queued == 1
    lead.refresh_from_db()
    assert operations() == ["create", "delete", "create"]
    assert lead.tombstone is False
    assert lead.sync_state == SyncState.SYNCED
    assert lead.external_id == "2"
    assert locmem.leads["2"]["first_name"] == "Back"


@after_commit
def test_a_reused_primary_key_updates_the_old_tombstone_without_resurrecting_it() -> None:
    user = make_user(first_name="First")
    pk = user.pk
    user.delete()
    reborn = User.objects.create(pk=pk, **user_values(first_name="Second"))
    lead = lead_of(reborn)
    assert (lead.tombstone, lead.sync_state) == (True, SyncState.DELETED)
    assert lead.first_name == "Second"
    assert operations() == ["create", "delete"]
    assert Lead.objects.count() == 1


# -- a mapping that fails does not break the save --------------------------------------------------------


@after_commit
def test_a_mapping_error_leaves_last_error_and_the_save_succeeds(configure: Configure) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.WrongTypeMapper")
    user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error.startswith("Mapping failed: description (from as_dict) got a dict")
    assert locmem.calls == []
    configure(LEAD_MODEL_FIELDMAPPER="crmify.mappers.DjangoUserFieldMapper")
    user.save()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.SYNCED
    assert lead.last_error == ""


@after_commit
def test_a_mapper_that_raises_does_not_break_the_save(configure: Configure) -> None:
    configure(LEAD_MODEL_FIELDMAPPER="tests.doubles.BuggyMapper")
    user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    lead = lead_of(user)
    assert lead.sync_state == SyncState.FAILED
    assert lead.last_error == "Mapping failed: ZeroDivisionError: division by zero"
    assert locmem.calls == []


@after_commit
def test_a_too_long_value_is_a_mapping_error_not_a_database_error() -> None:
    user = make_user(first_name="x" * 150)  # fits auth_user (150), fits the lead (255)
    assert lead_of(user).sync_state == SyncState.SYNCED


# -- the lead's values -----------------------------------------------------------------------------------


@after_commit
def test_a_lead_reads_well_in_the_admin() -> None:
    assert str(lead_of(make_user(first_name="Ada", last_name="Lovelace"))) == "Ada Lovelace"
    assert (
        str(lead_of(make_user(first_name="", last_name="", email="x@example.com")))
        == "x@example.com"
    )


@pytest.mark.django_db(transaction=True)
def test_a_sign_up_whose_lead_a_backfill_chunk_made_first_is_queued_as_a_live_change(
    configure: Configure, enqueued: Enqueued
) -> None:
    configure(AUTO_SYNC=False)
    user = make_user()
    lead = track(user)  # a backfill chunk read the new row first and made its lead, pending
    enqueued.clear()

    track_saved(user, created=True)  # then the site's own save of the new row

    assert Lead.objects.count() == 1
    assert enqueued.lead_ids == [lead.pk]  # not left to the chunk's turn
    assert Lead.objects.get().sync_state == SyncState.PENDING
