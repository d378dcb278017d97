"""The seed README's two use cases against the strict sandbox, over real HTTP, with ``crmify_check`` passing.

*Basic Lead Management*: a sign-up becomes a lead "Not Contacted"; the user's click on the link in the
CRM's e-mail moves it to "Contacted". *Basic Sales Funnel*: a sign-up, then a purchase moves the lead to
"Converted". The site is the seed's: ``UserProfile`` as ``LEAD_MODEL``, ``Subscription`` (a
``LeadStatusMixin``) as ``LEAD_STATUS_MODEL``. Each runs on both CRMs: on Insightly the account lists
"Converted" only with ``include_converted=true``, as Insightly does; on HubSpot a standard account with
the site's ``Nickname__c`` property, the site mapping its one extra status ("Contacted") in
``BACKEND_OPTIONS['STATUSES']`` and the configured ones working as they come.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings

from crmify import api
from crmify.models import SyncState
from crmify.sandbox import DEFAULT_CUSTOM_FIELDS, CustomFieldDef, Faults, SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox, PropertyDef
from tests.conftest import crmify_for, hubspot_crmify_for
from tests.factories import PROFILE_SETTINGS, lead_of, make_profile, make_subscription, make_user
from tests.testapp.models import UserProfile

pytestmark = pytest.mark.django_db


@dataclass
class Site:
    """The seed's site on one CRM: the sandbox, and what the CRM shows of a lead's status."""

    crm: SandboxServer | HubSpotSandbox
    status_of: Callable[[str], str]

    def crm_status(self, profile: UserProfile) -> str:
        """The status the CRM shows for ``profile``'s lead (a name on Insightly, property values on
        HubSpot)."""
        lead = lead_of(profile)
        assert lead.sync_state == SyncState.SYNCED, lead.last_error
        return self.status_of(lead.external_id)

    def records(self) -> int:
        return len(self.crm.leads())


def insightly_site() -> Iterator[Site]:
    nickname = CustomFieldDef("Nickname__c", "Nickname", "TEXT")
    with SandboxServer(
        faults=Faults(requests_per_second=None), custom_fields=(*DEFAULT_CUSTOM_FIELDS, nickname)
    ) as crm:

        def status_of(lead_id: str) -> str:
            (row,) = [row for row in crm.leads() if str(row["LEAD_ID"]) == lead_id]
            return str(row["LEAD_STATUS"])

        with override_settings(CRMIFY={**crmify_for(crm), **PROFILE_SETTINGS}):
            yield Site(crm, status_of)


#: What a HubSpot account shows for each of the site's statuses.
HUBSPOT_SHOWS = {
    "hs_lead_status=NEW": "Not Contacted",
    "hs_lead_status=CONNECTED": "Contacted",
    "lifecyclestage=customer": "Converted",
}


def hubspot_site() -> Iterator[Site]:
    with HubSpotSandbox(
        faults=Faults(requests_per_second=None), properties=[PropertyDef("Nickname__c")]
    ) as crm:

        def status_of(lead_id: str) -> str:
            (row,) = [row for row in crm.leads() if row["id"] == lead_id]
            held = row["properties"]
            shown = [
                f"{name}={held[name]}"
                for name in ("hs_lead_status", "lifecyclestage")
                if held.get(name)
            ]
            assert len(shown) == 1, shown
            return HUBSPOT_SHOWS[shown[0]]

        statuses = {"Contacted": {"hs_lead_status": "CONNECTED"}}
        with override_settings(
            CRMIFY={**hubspot_crmify_for(crm, STATUSES=statuses), **PROFILE_SETTINGS}
        ):
            yield Site(crm, status_of)


@pytest.fixture(params=["insightly", "hubspot"])
def site(request: Any, capsys: Any) -> Iterator[Site]:
    """The seed's site on a sandbox account of each CRM; ``crmify_check`` passes before anyone signs
    up."""
    cache.clear()
    for built in (insightly_site if request.param == "insightly" else hubspot_site)():
        call_command("crmify_check")
        assert "The CRM connection works" in capsys.readouterr().out
        yield built
    cache.clear()


def sign_up(capture: Any, email: str) -> UserProfile:
    with capture(execute=True):
        return make_profile(make_user(email=email))


def test_basic_lead_management_sign_up_then_the_email_link(
    site, django_capture_on_commit_callbacks
):
    profile = sign_up(django_capture_on_commit_callbacks, "lead@example.com")
    assert site.crm_status(profile) == "Not Contacted"

    with django_capture_on_commit_callbacks(execute=True):
        api.set_status(profile, "Contacted")  # the site's view behind the e-mail's link
    assert site.crm_status(profile) == "Contacted"


def test_basic_sales_funnel_sign_up_then_a_purchase(site, django_capture_on_commit_callbacks):
    profile = sign_up(django_capture_on_commit_callbacks, "buyer@example.com")
    assert site.crm_status(profile) == "Not Contacted"

    with django_capture_on_commit_callbacks(execute=True):
        make_subscription(profile, paid=True)  # the purchase: lead_status() says "Converted"
    assert site.crm_status(profile) == "Converted"


def test_mark_converted_reaches_the_crm(site, django_capture_on_commit_callbacks):
    profile = sign_up(django_capture_on_commit_callbacks, "staff-converted@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        api.mark_converted(profile)
    assert site.crm_status(profile) == "Converted"
    assert site.records() == 1
