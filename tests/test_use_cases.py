"""The seed README's two use cases against the strict sandbox, over real HTTP, with ``crmify_check`` passing.

*Basic Lead Management*: a sign-up becomes a lead "Not Contacted"; the user's click on the link in the
CRM's e-mail moves it to "Contacted". *Basic Sales Funnel*: a sign-up, then a purchase moves the lead to
"Converted". The site is the seed's: ``UserProfile`` as ``LEAD_MODEL``, ``Subscription`` (a
``LeadStatusMixin``) as ``LEAD_STATUS_MODEL``; the account lists "Converted" only with
``include_converted=true``, as Insightly does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings

from crmify import api
from crmify.models import SyncState
from crmify.sandbox import DEFAULT_CUSTOM_FIELDS, CustomFieldDef, Faults, SandboxServer
from tests.conftest import crmify_for
from tests.factories import PROFILE_SETTINGS, lead_of, make_profile, make_subscription, make_user
from tests.testapp.models import UserProfile

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(capsys: Any) -> Iterator[SandboxServer]:
    """The seed's site on a sandbox account that has the site's custom field (the test app's mapper
    sends ``Nickname__c``); ``crmify_check`` passes before anyone signs up."""
    nickname = CustomFieldDef("Nickname__c", "Nickname", "TEXT")
    with SandboxServer(
        faults=Faults(requests_per_second=None), custom_fields=(*DEFAULT_CUSTOM_FIELDS, nickname)
    ) as crm:
        cache.clear()
        with override_settings(CRMIFY={**crmify_for(crm), **PROFILE_SETTINGS}):
            call_command("crmify_check")
            assert "The CRM connection works" in capsys.readouterr().out
            yield crm
    cache.clear()


def crm_status(crm: SandboxServer, profile: UserProfile) -> str:
    """The status the CRM shows for ``profile``'s lead, by name."""
    lead = lead_of(profile)
    assert lead.sync_state == SyncState.SYNCED, lead.last_error
    (row,) = [row for row in crm.leads() if str(row["LEAD_ID"]) == lead.external_id]
    return str(row["LEAD_STATUS"])


def sign_up(capture: Any, email: str) -> UserProfile:
    with capture(execute=True):
        return make_profile(make_user(email=email))


def test_basic_lead_management_sign_up_then_the_email_link(
    site, django_capture_on_commit_callbacks
):
    profile = sign_up(django_capture_on_commit_callbacks, "lead@example.com")
    assert crm_status(site, profile) == "Not Contacted"

    with django_capture_on_commit_callbacks(execute=True):
        api.set_status(profile, "Contacted")  # the site's view behind the e-mail's link
    assert crm_status(site, profile) == "Contacted"


def test_basic_sales_funnel_sign_up_then_a_purchase(site, django_capture_on_commit_callbacks):
    profile = sign_up(django_capture_on_commit_callbacks, "buyer@example.com")
    assert crm_status(site, profile) == "Not Contacted"

    with django_capture_on_commit_callbacks(execute=True):
        make_subscription(profile, paid=True)  # the purchase: lead_status() says "Converted"
    assert crm_status(site, profile) == "Converted"


def test_mark_converted_reaches_the_crm(site, django_capture_on_commit_callbacks):
    profile = sign_up(django_capture_on_commit_callbacks, "staff-converted@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        api.mark_converted(profile)
    assert crm_status(site, profile) == "Converted"
    assert len(site.leads()) == 1
