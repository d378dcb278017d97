"""How a demo ``UserProfile`` becomes a CRM lead: named by ``LEAD_MODEL_FIELDMAPPER`` in the settings."""

from __future__ import annotations

from crmify.mappers import LeadModelFieldMapper


class UserProfileFieldMapper(LeadModelFieldMapper):
    """Our fields on the left, crmify's lead fields on the right; ``__`` follows a relation.

    A fallback fills a lead field the mapping left empty (``None`` or blank): a user who gave no first
    name is sent with their user name.

    An import of leads may change the company and the phone: they are written to the profile (crmify's
    default ``import_to_source`` follows the mapping's path), which sends them to the CRM. The other
    columns this mapper fills are refused for a lead with a profile: the profile's page is the place.
    """

    import_to_source_fields = frozenset({"company", "phone"})

    field_mapping = {
        "user__first_name": "first_name",
        "user__last_name": "last_name",
        "user__email": "email",
        "company": "company",
        "phone": "phone",
        "plan": "custom_fields__Plan__c",
        "signup_source": "custom_fields__Signup_Source__c",
    }
    fallbacks = {
        "user__username": "first_name",
    }
