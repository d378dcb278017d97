"""What a mapped source row means for its lead (``crmify.tracking.decide``): the one decision behind a save,
the drift scan, the public API, the import and the backfill."""

from __future__ import annotations

import pytest

from crmify.exceptions import MappingError
from crmify.mappers import MappedLead
from crmify.models import Lead, SyncState
from crmify.tracking import RowChange, decide, fingerprint

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
