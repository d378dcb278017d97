"""CRM backends. :mod:`crmify.backends.base` documents the contract; ``get_backend`` builds the configured one."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from crmify.conf import crmify_settings

from .base import BaseBackend


def load_backend_class(path: str | None = None) -> type[Any]:
    """Import the class named by ``BACKEND`` (or ``path``); ``ImproperlyConfigured`` if it cannot be."""
    path = path or crmify_settings.BACKEND
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"CRMIFY['BACKEND'] {path!r} cannot be imported: {exc}") from exc
    if not isinstance(backend_class, type):
        raise ImproperlyConfigured(f"CRMIFY['BACKEND'] {path!r} is not a class.")
    return backend_class


def get_backend(path: str | None = None) -> Any:
    """A new instance of the configured backend.

    Subclasses of :class:`BaseBackend` get ``BACKEND_OPTIONS`` and ``BACKEND_AUTH``; a plain class with only
    ``sync_lead`` and ``delete_lead`` is built with no arguments, as the original README promises.
    """
    backend_class = load_backend_class(path)
    if issubclass(backend_class, BaseBackend):
        return backend_class(
            options=crmify_settings.BACKEND_OPTIONS, auth=crmify_settings.BACKEND_AUTH
        )
    return backend_class()
