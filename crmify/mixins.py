"""``LeadStatusMixin``: lets a site's model move a lead's status when it is saved."""

from __future__ import annotations

from typing import Any


class LeadStatusMixin:
    """Mix into the model named by ``LEAD_STATUS_MODEL``.

    After each save crmify calls :meth:`lead_status`; when it returns ``(lead_instance, status_name)`` the
    lead of that ``LEAD_MODEL`` row moves to ``status_name`` and the change is synced.
    """

    def lead_status(self) -> tuple[Any, str] | None:
        """Return ``(LEAD_MODEL instance, status name)`` or ``None`` to leave the lead as it is."""
        raise NotImplementedError("A LEAD_STATUS_MODEL must implement lead_status().")
