from crmify.mappers import LeadModelFieldMapper


class ProfileMapper(LeadModelFieldMapper):
    field_mapping = {
        "auth__first_name": "first_name",
        "auth__last_name": "last_name",
        "auth__email": "email",
        "street": "street_address",
        "city": "city",
        "region": "state",
    }
