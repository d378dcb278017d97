"""Mappers: how a ``LEAD_MODEL`` row becomes lead values.

``field_mapping`` maps a source path (``"email"``, ``"user__first_name"`` across relations, or a callable
taking the row) to a lead field; ``fallbacks`` gives a second source for a lead field whose primary value is
``None`` or blank. A target named ``"custom_fields__Name"`` lands in the lead's custom fields. Mapping does
no I/O but database reads.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from django.db import models
from django.utils import timezone

from crmify.exceptions import MappingError
from crmify.models import CUSTOM_FIELD_PREFIX, MAPPABLE_FIELDS, Lead

SourcePath = str | Callable[[Any], Any]

#: Types a mapped value may have; each becomes text (custom fields keep numbers and booleans).
_SCALARS = (str, int, float, decimal.Decimal, bool, datetime.date, datetime.time, uuid.UUID)

#: The largest whole number a custom field keeps as a number: CRMs (Insightly is .NET) hold 64 bits.
MAX_CUSTOM_INT = 2**63 - 1


@dataclass
class MappedLead:
    """The result of mapping one row: lead values, custom fields, and which values came from a fallback."""

    values: dict[str, str] = field(default_factory=dict)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    from_fallback: set[str] = field(default_factory=set)
    #: The custom fields mapped from a date or datetime (datetimes in UTC), which
    #: :func:`fit_to_crm` writes as the CRM wants; ``custom_fields`` holds them in ISO 8601 until then.
    dates: dict[str, datetime.date] = field(default_factory=dict)
    #: Where each lead value came from, as messages name it: ``"title (from get_full_name)"``.
    origins: dict[str, str] = field(default_factory=dict)


class CrmRules(Protocol):
    """What mapping needs to know of the CRM: every ``crmify.backends.base.BaseBackend`` has it."""

    def max_length(self, field: str) -> int | None: ...

    def encode_date(self, value: datetime.date) -> Any: ...


def fit_to_crm(mapped: MappedLead, crm: CrmRules) -> MappedLead:
    """``mapped`` as the CRM takes it: dates written in its form, each lead value within its length.

    Called by the engine (``crmify.tracking``) after the mapper, with the configured backend; raises
    :class:`MappingError` for a value the CRM would refuse, so the lead fails before anything is sent.
    """
    for name, text in mapped.values.items():
        limit = crm.max_length(name)
        if limit is not None and len(text) > limit:
            where = mapped.origins.get(name, name)
            raise MappingError(f"{where} is {len(text)} characters long; the CRM accepts {limit}.")
    for key, value in mapped.dates.items():
        mapped.custom_fields[key] = crm.encode_date(value)
    return mapped


def source_label(source: SourcePath) -> str:
    """How a source path reads in messages and in the admin's preview."""
    return source if isinstance(source, str) else getattr(source, "__name__", repr(source))


def resolve_path(instance: Any, path: SourcePath) -> Any:
    """The value at ``path`` on ``instance``; ``None`` if a relation on the way is empty.

    A callable path is called with the row; a callable found at the end of a string path (a method, a
    property's function) is called with no arguments.
    """
    if not isinstance(path, str):
        return path(instance)
    value: Any = instance
    for part in path.split("__"):
        if value is None:
            return None
        try:
            value = getattr(value, part)
        except models.ObjectDoesNotExist:
            return None
    return value() if callable(value) and not isinstance(value, type) else value


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _preview(value: Any) -> str:
    preview = repr(value)
    return preview if len(preview) <= 60 else preview[:57] + "..."


def _check_scalar(where: str, value: Any) -> None:
    """Raise a :class:`MappingError` naming the lead field and its source for a value no lead can keep:
    not a scalar, a NaN or infinity, or text that a database or JSON cannot carry."""
    if value is None:
        return
    if not isinstance(value, _SCALARS):
        raise MappingError(
            f"{where} got a {type(value).__name__}: {_preview(value)}. "
            "A mapper must give text, a number, a boolean or a date."
        )
    # NaN and infinity are not JSON (the CRM call refuses them; PostgreSQL's jsonb too).
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, decimal.Decimal) and not value.is_finite()
    ):
        raise MappingError(f"{where} is {value}, not a number a CRM can keep.")
    if isinstance(value, str):
        # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be written as UTF-8: either
        # would break the site's own save (the lead is written in its transaction).
        if "\x00" in value:
            raise MappingError(f"{where} contains a NUL character: {_preview(value)}.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MappingError(f"{where} is not valid Unicode text: {_preview(value)}.") from None


def _scalar_text(where: str, value: Any) -> str:
    """Text for a scalar: ISO 8601 for dates and times (what CRMs parse), ``str`` for the rest."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    try:
        return str(value)
    except ValueError:  # an int of more than 4,300 digits: Python refuses to write it out
        raise MappingError(f"{where} is a number too long to write as text.") from None


def _in_utc(where: str, value: datetime.date) -> datetime.date:
    """A datetime in UTC, a naive one read in ``TIME_ZONE`` (as Django stores it); a date as it is."""
    if not isinstance(value, datetime.datetime):
        return value
    try:
        if timezone.is_naive(value):
            value = timezone.make_aware(value, timezone.get_default_timezone())
        return value.astimezone(datetime.UTC)
    except (OverflowError, ValueError):  # a moment within hours of year 1 or 9999
        raise MappingError(f"{where} is {value}, outside the dates a CRM can keep.") from None


def _as_text(where: str, value: Any, max_length: int | None) -> str:
    if value is None:
        return ""
    _check_scalar(where, value)
    text = _scalar_text(where, value).strip()
    if max_length is not None and len(text) > max_length:
        raise MappingError(f"{where} is {len(text)} characters long; the lead keeps {max_length}.")
    return text


def _max_length(name: str) -> int | None:
    model_field = Lead._meta.get_field(name)
    if isinstance(model_field, models.TextField) or not isinstance(model_field, models.Field):
        return None
    return model_field.max_length


class LeadModelFieldMapper:
    """Maps a row of ``LEAD_MODEL`` to lead values; subclass it and set the two dictionaries.

    ``field_mapping``: source path -> lead field. ``fallbacks``: source path -> lead field, used when the
    primary mapping for that lead field gives ``None`` or a blank string.
    """

    field_mapping: ClassVar[dict[Any, str]] = {}
    fallbacks: ClassVar[dict[Any, str]] = {}
    #: Lead fields (``"company"``, ``"custom_fields__Plan__c"``) that an import may change on a lead with
    #: a source row: :meth:`import_to_source` writes the value to the row, and the row's save sends it.
    #: An imported column for any other field this mapper fills is refused for such leads (the import
    #: says where to change it): written to the lead only, the next save of the row would revert it.
    import_to_source_fields: ClassVar[frozenset[str]] = frozenset()

    def mappings(self) -> Iterator[tuple[SourcePath, str, bool]]:
        """Every (source path, lead field, is_fallback) this mapper declares (checks and preview read it)."""
        for source, target in self.field_mapping.items():
            yield source, target, False
        for source, target in self.fallbacks.items():
            yield source, target, True

    def filled_fields(self) -> set[str]:
        """The lead fields this mapper fills from the source row, custom fields as
        ``custom_fields__<key>``: what staff change on the source row, not on the lead."""
        return {target for _source, target, _fallback in self.mappings()}

    def import_to_source(self, instance: Any, target: str, value: Any) -> None:
        """Write an imported ``value`` of lead field ``target`` (one of :attr:`import_to_source_fields`)
        to ``instance``, the source row, and save what changed.

        Called by crmify's import (``crmify.resources.LeadResource``) inside the import's transaction (its
        preview is rolled back), only for rows that are imported, before the lead is saved; the row's
        save maps it again, so the CRM gets the value from where the mapper reads it. The default follows
        the primary mapping's path for ``target`` (``user__first_name`` sets ``instance.user.first_name``)
        and saves the row it lands on; override it for a callable mapping or other rules. Raise
        ``ValueError`` with a message for staff to refuse the value.
        """
        paths = [
            source
            for source, mapped_to in self.field_mapping.items()
            if mapped_to == target and isinstance(source, str)
        ]
        if not paths:
            raise ValueError(
                f"{target} is not mapped from a field path: it cannot be written back."
            )
        *hops, attribute = paths[0].split("__")
        row = instance
        for hop in hops:
            row = getattr(row, hop)
        setattr(row, attribute, value)
        row.save()

    def map(self, instance: Any) -> MappedLead:
        """Map ``instance``; raise :class:`MappingError` for a value of the wrong type or too long."""
        raw: dict[str, Any] = {}
        # Which source gave each value, so an error names the path the site wrote.
        sources: dict[str, SourcePath] = {}
        from_fallback: set[str] = set()
        for source, target in self.field_mapping.items():
            raw[target] = resolve_path(instance, source)
            sources[target] = source
        for source, target in self.fallbacks.items():
            if _is_blank(raw.get(target)):
                value = resolve_path(instance, source)
                if not _is_blank(value):
                    raw[target] = value
                    sources[target] = source
                    from_fallback.add(target)
        mapped = MappedLead(from_fallback=from_fallback)
        for target, value in raw.items():
            where = f"{target} (from {source_label(sources[target])})"
            if target.startswith(CUSTOM_FIELD_PREFIX):
                _check_scalar(where, value)
                if isinstance(value, int) and abs(value) > MAX_CUSTOM_INT:
                    raise MappingError(f"{where} is too large for a CRM's number field.")
                key = target.removeprefix(CUSTOM_FIELD_PREFIX)
                if isinstance(value, datetime.date):
                    value = mapped.dates[key] = _in_utc(where, value)
                # JSON keeps text, numbers and booleans as they are; the rest becomes text.
                keep = (
                    value
                    if value is None or isinstance(value, str | int | float | bool)
                    else _scalar_text(where, value)
                )
                mapped.custom_fields[key] = keep
            elif target in MAPPABLE_FIELDS:
                mapped.values[target] = _as_text(where, value, _max_length(target))
                mapped.origins[target] = where
            else:
                raise MappingError(f"{target!r} is not a lead field.")
        return mapped


class DjangoUserFieldMapper(LeadModelFieldMapper):
    """The default mapper for ``django.contrib.auth.models.User``, as the original README shows it."""

    field_mapping = {
        "first_name": "first_name",
        "last_name": "last_name",
        "email": "email",
    }
    fallbacks = {
        "username": "email",
    }
