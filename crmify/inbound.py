"""TEMPORARY stand-in for the inbound helper's module (branch ``inbound``), the contract only, so the
webhook code imports; replaced whole when ``inbound`` is merged."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from crmify.backends.base import CrmChange


@dataclass
class InboundReport:
    applied: int = 0
    unchanged: int = 0
    conflicts: int = 0
    refused: int = 0
    deleted: int = 0
    merged: int = 0
    deferred: int = 0
    unknown: int = 0
    deferred_since: datetime.datetime | None = None


def apply_changes(changes: Sequence[CrmChange], *, via: str) -> InboundReport:
    raise NotImplementedError("crmify.inbound comes with the inbound branch")
