"""``LeadStatusMixin``: lets a site's model move a lead's status when it is saved."""

from __future__ import annotations

from typing import Any

from crmify.conf import crmify_settings


class _StatusSetting:
    """A class attribute that reads one status-name setting each time it is read (class or instance), so
    ``override_settings`` and a site's own ``CRMIFY`` are seen without re-importing the model."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, instance: object, owner: type | None = None) -> str:
        value: str = getattr(crmify_settings, self.key)
        return value


class LeadStatusMixin:
    """Mix into the model named by ``LEAD_STATUS_MODEL``.

    After each save crmify calls :meth:`lead_status`; when it returns ``(lead_instance, status_name)`` the
    lead of that ``LEAD_MODEL`` row moves to ``status_name`` and the change is synced. ``NEW_LEAD``,
    ``CONVERTED_LEAD`` and ``DEAD_LEAD`` are the configured status names (``LEAD_NEW_STATUS``,
    ``LEAD_CONVERTED_STATUS``, ``LEAD_DEAD_STATUS``), as 1.3.0 offered them.
    """

    NEW_LEAD = _StatusSetting("LEAD_NEW_STATUS")
    CONVERTED_LEAD = _StatusSetting("LEAD_CONVERTED_STATUS")
    DEAD_LEAD = _StatusSetting("LEAD_DEAD_STATUS")

    def lead_status(self) -> tuple[Any, str] | None:
        """Return ``(LEAD_MODEL instance, status name)`` or ``None`` to leave the lead as it is."""
        raise NotImplementedError("A LEAD_STATUS_MODEL must implement lead_status().")
