"""The funnel does not move backwards by itself (issue 15, point 2): statuses have an order, an automatic
change (the status model, ``api.set_status``, an import) never moves a lead to an earlier stage, the refusal
is recorded on the lead, in its ledger and in the admin, and staff or code can force the move."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse

from crmify import api
from crmify.backends import locmem
from crmify.models import Lead, LedgerEntry
from crmify.signals import on_status_model_saved
from crmify.transitions import funnel_rank, moves_back
from tests.admin_fixtures import login, make_lead, make_staff, people, texts
from tests.engine_helpers import Configure
from tests.factories import lead_of, make_profile, make_subscription, make_user
from tests.test_import_export import confirm, csv_bytes, preview_rows, upload
from tests.testapp.models import Subscription

__all__ = ["login", "people"]  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = reverse("admin:crmify_lead_changelist")


# -- the order ---------------------------------------------------------------------------------------


def test_the_default_order_runs_from_new_through_contact_to_converted_and_dead() -> None:
    ranks = [
        funnel_rank(s) for s in ("NotContacted", "Attempted Contact", "Contacted", "Converted")
    ]
    assert ranks == [0, 1, 2, 3]
    assert funnel_rank("Disqualified") == funnel_rank("Converted")
    assert funnel_rank("Some CRM status") is None


def test_only_a_move_to_an_earlier_known_stage_is_a_step_back() -> None:
    assert moves_back("Converted", "Contacted")
    assert moves_back("contacted", "Not Contacted")  # case and spaces ignored
    assert not moves_back("Contacted", "Converted")
    assert not moves_back("Converted", "Disqualified")  # both close the funnel
    assert not moves_back("Disqualified", "Converted")  # a dead lead that buys is converted
    assert not moves_back("Converted", "Some CRM status")  # nothing to compare it with


def test_the_order_in_between_is_a_setting(configure: Configure) -> None:
    configure(LEAD_STATUS_ORDER=["Contacted", "Demo booked"])
    assert moves_back("Demo booked", "Contacted")
    assert funnel_rank("Attempted Contact") is None


@pytest.mark.parametrize(
    ("value", "check_id"),
    [("Contacted", "crmify.E090"), ([""], "crmify.E090"), (["Converted"], "crmify.E091")],
)
def test_a_wrong_status_order_is_a_system_check_error(
    configure: Configure, value: object, check_id: str
) -> None:
    configure(LEAD_STATUS_ORDER=value)
    with pytest.raises(SystemCheckError, match=check_id):
        call_command("check")


# -- automatic changes -------------------------------------------------------------------------------


def test_set_status_refuses_to_move_a_converted_lead_back_and_records_why() -> None:
    user = make_user()
    api.mark_converted(user)
    lead = api.set_status(user, "Contacted")
    assert lead.status == "Converted"
    stored = lead_of(user)
    assert (stored.status, stored.status_refused) == ("Converted", "Contacted")
    assert stored.status_refused_at is not None
    assert locmem.leads[stored.external_id]["status"] == "Converted"
    refusal = LedgerEntry.objects.get(lead=stored, outcome=LedgerEntry.Outcome.REFUSED)
    assert "Contacted" in refusal.error and "Converted" in refusal.error


def test_set_status_moves_forward_and_forgets_an_earlier_refusal() -> None:
    user = make_user()
    api.set_status(user, "Contacted")
    api.set_status(user, "Attempted Contact")
    assert lead_of(user).status_refused == "Attempted Contact"
    api.mark_converted(user)
    stored = lead_of(user)
    assert (stored.status, stored.status_refused) == ("Converted", "")


def test_code_may_force_a_move_back() -> None:
    user = make_user()
    api.mark_converted(user)
    api.set_status(user, "Contacted", force=True)
    stored = lead_of(user)
    assert (stored.status, stored.status_refused) == ("Contacted", "")
    assert locmem.leads[stored.external_id]["status"] == "Contacted"


def test_the_status_model_never_moves_a_lead_back(
    profile_leads: None, configure: Configure
) -> None:
    profile = make_profile()
    make_subscription(profile, paid=True)
    assert lead_of(profile).status == "Converted"
    api.set_status(profile, "Contacted")  # the demo's e-mail link, followed after the purchase
    assert lead_of(profile).status == "Converted"
    assert lead_of(profile).status_refused == "Contacted"


def test_a_status_model_save_asking_for_an_earlier_stage_is_refused(profile_leads: None) -> None:
    profile = make_profile()
    make_subscription(profile, paid=True)
    on_status_model_saved(sender=Subscription, instance=FakeStatus(profile, "Contacted"))
    stored = lead_of(profile)
    assert (stored.status, stored.status_refused) == ("Converted", "Contacted")
    assert LedgerEntry.objects.filter(lead=stored, outcome=LedgerEntry.Outcome.REFUSED).exists()


class FakeStatus:
    """A status model row whose ``lead_status()`` asks for ``status`` (what a site's model returns)."""

    def __init__(self, profile: object, status: str) -> None:
        self.answer = (profile, status)

    def lead_status(self) -> tuple[object, str]:
        return self.answer


def test_an_import_refuses_a_status_back_in_the_funnel_with_a_row_error(
    login: Callable[[str], Client],
) -> None:
    client = login("root")
    make_lead(email="ada@example.com", status="Converted")
    preview = upload(
        client,
        csv_bytes(
            {
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "L",
                "company": "",
                "status": "Contacted",
            }
        ),
    )
    [(_number, kind, errors)] = preview_rows(preview)
    assert kind == "invalid"
    assert "would move this lead back from “Converted”" in " ".join(errors)
    assert Lead.objects.get(email="ada@example.com").status == "Converted"


def test_an_import_moves_a_status_forward(login: Callable[[str], Client]) -> None:
    client = login("root")
    make_lead(email="ada@example.com", status="Contacted")
    row = {"email": "ada@example.com", "first_name": "Ada", "last_name": "L", "company": ""}
    confirm(client, upload(client, csv_bytes({**row, "status": "Converted"})))
    assert Lead.objects.get(email="ada@example.com").status == "Converted"


# -- the admin ---------------------------------------------------------------------------------------


def test_the_changelist_and_the_lead_page_show_a_refused_change(
    login: Callable[[str], Client],
) -> None:
    client = login("root")
    user = make_user()
    api.mark_converted(user)
    api.set_status(user, "Contacted")
    lead = lead_of(user)
    changelist = client.get(CHANGELIST).content.decode()
    assert "kept; refused Contacted" in changelist
    page = client.get(reverse("admin:crmify_lead_change", args=[lead.pk])).content.decode()
    assert "Contacted refused: it would have moved the lead back from Converted." in page


def test_staff_force_a_status_back_through_a_confirmation_page(
    login: Callable[[str], Client],
) -> None:
    client = login("root")
    user = make_user()
    api.mark_converted(user)
    lead = lead_of(user)
    chosen = {"action": "force_status", "_selected_action": [lead.pk]}
    page = client.post(CHANGELIST, chosen)
    assert page.status_code == 200
    assert b"Force a status on the selected leads?" in page.content
    assert lead_of(user).status == "Converted"  # nothing moved before the confirmation
    done = client.post(CHANGELIST, {**chosen, "post": "yes", "status": "Contacted"}, follow=True)
    assert lead_of(user).status == "Contacted"
    assert any("1 queued" in text for text in texts(done))
    assert locmem.leads[lead.external_id]["status"] == "Contacted"


def test_forcing_a_status_needs_its_own_permission(client: Client) -> None:
    staff = make_staff("marker", "view_lead", "change_lead", "change_lead_status")
    client.force_login(staff)
    lead = make_lead(status="Converted")
    page = client.get(CHANGELIST).content.decode()
    assert "Mark converted" in page and "force_status" not in page
    client.post(
        CHANGELIST,
        {
            "action": "force_status",
            "_selected_action": [lead.pk],
            "post": "yes",
            "status": "NotContacted",
        },
    )
    assert Lead.objects.get(pk=lead.pk).status == "Converted"
