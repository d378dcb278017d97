"""Turns the dotted paths in ``CRMIFY`` into the classes they name.

Called by the engine, the signal wiring and the system checks. Each function raises
``ImproperlyConfigured`` with a readable message; the checks turn those into ``crmify.E0xx`` errors.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.module_loading import import_string

from crmify.conf import crmify_settings
from crmify.mappers import LeadModelFieldMapper


def resolve_model(path: str, setting: str) -> type[models.Model]:
    """The model named by ``path``: a dotted class path (``myapp.models.UserProfile``) or ``app.Model``."""
    candidate: Any = None
    if path.count(".") == 1:
        try:
            candidate = apps.get_model(path)
        except (LookupError, ValueError) as exc:
            raise ImproperlyConfigured(f"CRMIFY[{setting!r}] {path!r}: {exc}") from exc
    else:
        module_path, _, name = path.rpartition(".")
        # A model's __module__ may be a submodule of the path given (``myapp.models.profile``).
        for model in apps.get_models(include_auto_created=False):
            if model.__name__ == name and (
                model.__module__ == module_path or model.__module__.startswith(module_path + ".")
            ):
                candidate = model
                break
        if candidate is None:
            try:
                candidate = import_string(path)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"CRMIFY[{setting!r}] {path!r} cannot be imported: {exc}"
                ) from exc
    if not (isinstance(candidate, type) and issubclass(candidate, models.Model)):
        raise ImproperlyConfigured(f"CRMIFY[{setting!r}] {path!r} is not a Django model.")
    if candidate._meta.abstract or not apps.is_installed(candidate._meta.app_config.name):
        raise ImproperlyConfigured(
            f"CRMIFY[{setting!r}] {path!r} is not an installed, concrete model."
        )
    return candidate


def get_lead_model() -> type[models.Model]:
    """The ``LEAD_MODEL`` class."""
    return resolve_model(crmify_settings.LEAD_MODEL, "LEAD_MODEL")


def get_status_model() -> type[models.Model] | None:
    """The ``LEAD_STATUS_MODEL`` class, or None when the site tracks no status."""
    path = crmify_settings.LEAD_STATUS_MODEL
    return resolve_model(path, "LEAD_STATUS_MODEL") if path else None


def get_mapper_class() -> type[LeadModelFieldMapper]:
    """The ``LEAD_MODEL_FIELDMAPPER`` class."""
    path = crmify_settings.LEAD_MODEL_FIELDMAPPER
    try:
        mapper_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"CRMIFY['LEAD_MODEL_FIELDMAPPER'] {path!r} cannot be imported: {exc}"
        ) from exc
    if not (isinstance(mapper_class, type) and issubclass(mapper_class, LeadModelFieldMapper)):
        raise ImproperlyConfigured(
            f"CRMIFY['LEAD_MODEL_FIELDMAPPER'] {path!r} is not a LeadModelFieldMapper subclass."
        )
    return mapper_class


def get_mapper() -> LeadModelFieldMapper:
    return get_mapper_class()()


def walk_path(model: type[models.Model], path: str) -> list[tuple[str, type[models.Model]]]:
    """The relations a ``__`` path crosses, as (lookup prefix, related model) pairs.

    ``walk_path(UserProfile, "user__first_name")`` is ``[("user", User)]``. The last part may be a field,
    a property or a method; a missing relation or field raises ``ImproperlyConfigured``.
    """
    hops: list[tuple[str, type[models.Model]]] = []
    parts = path.split("__")
    current = model
    for index, part in enumerate(parts):
        try:
            model_field = current._meta.get_field(part)
        except Exception:
            if index == len(parts) - 1 and hasattr(current, part):
                return hops  # a property or method on the last model
            raise ImproperlyConfigured(
                f"{current._meta.label} has no field {part!r} (in path {path!r})."
            ) from None
        if model_field.is_relation and model_field.related_model is not None:
            if index == len(parts) - 1:
                return hops
            related = model_field.related_model
            assert isinstance(related, type)
            current = related
            hops.append(("__".join(parts[: index + 1]), current))
        elif index != len(parts) - 1:
            raise ImproperlyConfigured(
                f"{current._meta.label}.{part} is not a relation (in path {path!r})."
            )
    return hops
