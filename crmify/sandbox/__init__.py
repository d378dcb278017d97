"""An offline Insightly API v3.1 with fault injection (``crmify.sandbox``); its HubSpot sibling is
``crmify.sandbox.hubspot``, on the same machinery (``crmify.sandbox.core``).

Who uses it: the demo (``python manage.py crmify_sandbox`` or ``python -m crmify.sandbox``),
crmify's own tests, and users' tests through the pytest plugin
(``-p crmify.sandbox.pytest_plugin``: fixtures ``insightly_sandbox`` and ``sandbox``).
Standard library only, so importing it never needs Django or crmify settings.

    with SandboxServer(faults=Faults(error_rate=0.1, seed=7)) as server:
        requests.get(server.url + "Leads", auth=(server.api_key, ""))
"""

from .faults import Faults
from .schema import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_SOURCE_NAMES,
    DEFAULT_STATUS_NAMES,
    CustomFieldDef,
    Dialect,
)
from .server import DEFAULT_API_KEY, SandboxServer
from .state import LeadNotFound, SandboxState
from .validation import ValidationError

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_CUSTOM_FIELDS",
    "DEFAULT_SOURCE_NAMES",
    "DEFAULT_STATUS_NAMES",
    "CustomFieldDef",
    "Dialect",
    "Faults",
    "LeadNotFound",
    "SandboxServer",
    "SandboxState",
    "ValidationError",
]
