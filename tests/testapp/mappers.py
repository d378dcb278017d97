import os
import signal
from typing import Any

from crmify.exceptions import MappingError
from crmify.mappers import DjangoUserFieldMapper, LeadModelFieldMapper


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


class CrashingUserMapper(DjangoUserFieldMapper):
    """The default user mapper, except that mapping a user whose e-mail starts with ``crash`` kills the
    process outright (SIGKILL: no cleanup, no rollback by Python), as a worker lost mid-chunk would be."""

    def map(self, instance: Any) -> Any:
        if str(instance.email).startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().map(instance)


class PickyUserMapper(DjangoUserFieldMapper):
    """The default user mapper, except that a user whose e-mail starts with ``broken`` cannot be mapped."""

    def map(self, instance: Any) -> Any:
        if str(instance.email).startswith("broken"):
            raise MappingError("this user cannot be mapped")
        return super().map(instance)
