"""An offline HubSpot CRM (contacts, their properties, search) with fault injection.

The HubSpot sibling of the Insightly sandbox in ``crmify.sandbox``, on the same server, fault,
control and rate-limit machinery (``crmify.sandbox.core``). Who uses it: the demo
(``python -m crmify.sandbox --crm hubspot``), crmify's tests, and users' tests through the pytest
plugin (fixtures ``hubspot_sandbox`` and ``hubspot``). Standard library only.

    with HubSpotSandbox() as crm:
        requests.get(crm.url + "/crm/v3/objects/contacts", headers={"Authorization": f"Bearer {crm.token}"})
"""

from .errors import HubSpotError
from .schema import HubSpotDialect, PropertyDef, custom_property, standard_properties
from .server import DEFAULT_FAULTS, DEFAULT_TOKEN, HubSpotSandbox

__all__ = [
    "DEFAULT_FAULTS",
    "DEFAULT_TOKEN",
    "HubSpotDialect",
    "HubSpotError",
    "HubSpotSandbox",
    "PropertyDef",
    "custom_property",
    "standard_properties",
]
