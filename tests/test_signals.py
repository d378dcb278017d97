"""Which saves reach crmify: the receivers are wired to exactly the models ``CRMIFY`` names (the lead model,
the status model and the models the mapper's ``__`` paths reach), and to none with ``AUTO_SYNC`` off."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crmify.backends import locmem
from crmify.models import Lead, SyncState
from tests.engine_helpers import Configure, crmify_queries, operations
from tests.factories import lead_of, make_profile, make_subscription, make_user

pytestmark = pytest.mark.django_db(transaction=True)


# -- AUTO_SYNC -------------------------------------------------------------------------------------------


def test_auto_sync_off_tracks_nothing(configure: Configure) -> None:
    configure(AUTO_SYNC=False)
    make_user()
    assert Lead.objects.count() == 0
    assert locmem.calls == []


# -- status model and related models ---------------------------------------------------------------------


@pytest.mark.usefixtures("profile_leads")
def test_a_status_model_save_moves_the_lead_status_and_syncs_it() -> None:
    profile = make_profile()
    lead = lead_of(profile)
    assert locmem.leads[lead.external_id]["status"] == "NotContacted"
    subscription = make_subscription(profile, paid=False)
    assert lead_of(profile).status == "Contacted"
    subscription.paid = True
    subscription.save()
    lead = lead_of(profile)
    assert lead.status == "Converted"
    assert lead.sync_state == SyncState.SYNCED
    assert locmem.leads[lead.external_id]["status"] == "Converted"
    assert operations() == ["create", "update", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_an_unchanged_status_save_sends_nothing() -> None:
    subscription = make_subscription(make_profile(), paid=True)
    subscription.plan = "enterprise"
    subscription.save()
    assert operations() == ["create", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_a_profile_lead_resyncs_when_its_user_changes() -> None:
    profile = make_profile(user=make_user(first_name="Ada"))
    profile.user.first_name = "Augusta"
    profile.user.save()
    lead = lead_of(profile)
    assert lead.first_name == "Augusta"
    assert locmem.leads[lead.external_id]["first_name"] == "Augusta"
    assert operations() == ["create", "update"]


@pytest.mark.usefixtures("profile_leads")
def test_saving_a_user_without_a_profile_makes_no_lead() -> None:
    make_user()
    assert Lead.objects.count() == 0


@pytest.mark.usefixtures("profile_leads")
def test_creating_a_user_does_not_look_for_profiles_pointing_at_it() -> None:
    # No profile can point at a user that did not exist: the create runs no crmify query. A later save
    # of the same user still looks, and finds the profile made meanwhile.
    with CaptureQueriesContext(connection) as queries:
        user = make_user(first_name="Ada")
    assert crmify_queries(queries) == []
    assert not any("testapp_userprofile" in query["sql"] for query in queries.captured_queries)
    profile = make_profile(user=user)
    user.first_name = "Augusta"
    user.save()
    assert lead_of(profile).first_name == "Augusta"


def test_reaches_new_rows_only_through_a_reverse_step() -> None:
    from django.contrib.auth.models import User

    from crmify.signals import reaches_new_rows
    from tests.testapp.models import UserProfile

    assert not reaches_new_rows(UserProfile, "user")  # a profile's own foreign key
    assert reaches_new_rows(User, "profile")  # a profile created for an existing user lead
    assert not reaches_new_rows(User, "groups")  # many-to-many rows come after the save


@pytest.mark.usefixtures("profile_leads")
def test_saves_of_unrelated_models_do_nothing() -> None:
    make_profile()
    with CaptureQueriesContext(connection) as queries:
        Group.objects.create(name="staff")
    assert crmify_queries(queries) == []
    assert operations() == ["create"]


def test_a_user_profile_is_not_a_lead_when_the_lead_model_is_user() -> None:
    user = make_user()
    with CaptureQueriesContext(connection) as queries:
        make_profile(user=user, company="Elsewhere")
    assert crmify_queries(queries) == []
    assert Lead.objects.count() == 1
