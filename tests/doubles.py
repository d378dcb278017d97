"""Backends, mappers and a task recorder a test points ``CRMIFY`` at (by dotted path) or reads back."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from crmify.backends.locmem import LocmemBackend
from crmify.compat import task_backends
from crmify.mappers import DjangoUserFieldMapper, LeadModelFieldMapper
from crmify.models import Lead


class PlainCRM:
    """Exactly what the seed README describes: two methods, a constructor without arguments."""

    synced: ClassVar[list[dict[str, Any]]] = []
    deleted: ClassVar[list[str]] = []

    def sync_lead(self, lead: Lead) -> str:
        PlainCRM.synced.append({"email": lead.email, "status": lead.status})
        return f"plain-{lead.pk}"

    def delete_lead(self, lead_id: str) -> bool:
        PlainCRM.deleted.append(lead_id)
        return True

    @classmethod
    def reset(cls) -> None:
        cls.synced.clear()
        cls.deleted.clear()


class SlowPlainCRM(PlainCRM):
    """Takes a measurable while per call and reports nothing to the ledger itself."""

    def sync_lead(self, lead: Lead) -> str:
        time.sleep(0.03)
        return super().sync_lead(lead)


class ExplodingCRM:
    """A custom backend whose library raises its own exception, quoting the API key as some do."""

    def sync_lead(self, lead: Lead) -> str:
        key = os.environ.get("CRMIFY_BACKEND_AUTH_API_KEY", "")
        raise ConnectionResetError(f"peer reset the connection (key={key})")

    def delete_lead(self, lead_id: str) -> bool:
        return True


class NeedsArgumentsCRM:
    """A plain class whose constructor wants arguments crmify cannot give."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def sync_lead(self, lead: Lead) -> str:
        return "1"

    def delete_lead(self, lead_id: str) -> bool:
        return True


class SyncOnlyCRM:
    """Forgot ``delete_lead``."""

    def sync_lead(self, lead: Lead) -> str:
        return "1"


class NoIdCRM:
    """Answers a sync without saying which CRM lead it was."""

    def sync_lead(self, lead: Lead) -> str:
        return ""

    def delete_lead(self, lead_id: str) -> bool:
        return True


class DuringSyncBackend(LocmemBackend):
    """The locmem CRM that runs ``during_sync`` once, in the middle of its next ``sync_lead`` call.

    Lets a test change the lead's source row while a worker holds the claim.
    """

    during_sync: ClassVar[Callable[[], None] | None] = None

    def sync_lead(self, lead: Lead) -> str:
        hook, DuringSyncBackend.during_sync = DuringSyncBackend.during_sync, None
        if hook is not None:
            hook()
        return super().sync_lead(lead)


def as_dict(user: Any) -> dict[str, str]:
    """A callable source a mapper may use; returns the wrong type on purpose."""
    return {"name": user.username}


class WrongTypeMapper(DjangoUserFieldMapper):
    """Maps a dict into ``description``: every save is a mapping error."""

    field_mapping = {**DjangoUserFieldMapper.field_mapping, as_dict: "description"}


def shout(user: Any) -> str:
    return f"{user.first_name}!".upper()


def buggy(user: Any) -> str:
    """A site's callable with a bug in it."""
    return str(len(user.username) / 0)


class BuggyMapper(DjangoUserFieldMapper):
    field_mapping = {**DjangoUserFieldMapper.field_mapping, buggy: "title"}


class CallableMapper(LeadModelFieldMapper):
    """A function as a source, a method name as a source, and a custom field target."""

    field_mapping = {
        shout: "first_name",
        "get_full_name": "description",
        "email": "email",
        "date_joined": "custom_fields__Joined",
        "is_staff": "custom_fields__Staff",
    }


class TypoTargetMapper(LeadModelFieldMapper):
    field_mapping = {"email": "emial"}


class TypoSourceMapper(LeadModelFieldMapper):
    field_mapping = {"emial": "email", "first_name__x": "first_name", "groups__nope": "title"}
    fallbacks = {"username": "email"}


class Enqueued:
    """What crmify handed to the dummy Tasks backend: nothing runs, everything is recorded."""

    def __init__(self) -> None:
        self.backend = task_backends["dummy"]

    @property
    def results(self) -> list[Any]:
        return [r for r in self.backend.results if r.task.name == "process_lead_task"]

    @property
    def lead_ids(self) -> list[int]:
        return [result.args[0] for result in self.results]

    def clear(self) -> None:
        self.backend.clear()

    def run_all(self) -> list[str]:
        """Run every recorded task in order, as a worker would, and forget them."""
        from crmify.worker import process_lead

        ids = self.lead_ids
        self.clear()
        return [process_lead(lead_id) for lead_id in ids]
