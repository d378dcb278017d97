from crmify.mappers import LeadModelFieldMapper


class UserProfileFieldMapper(LeadModelFieldMapper):
    """A site's own mapper in the style of the seed README: paths across relations, fallbacks."""

    field_mapping = {
        "user__first_name": "first_name",
        "user__last_name": "last_name",
        "user__email": "email",
        "company": "company",
        "phone": "phone",
        "display_name": "custom_fields__Nickname__c",
    }
    fallbacks = {
        "user__username": "email",
        "nickname": "last_name",
    }
