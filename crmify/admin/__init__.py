"""crmify in the Django admin: the Lead changelist and its pages (``lead.py``), the mapper preview
(``preview.py``)."""

from .lead import LeadAdmin

__all__ = ["LeadAdmin"]
