"""CRM backends. :mod:`crmify.backends.base` documents the contract; ``get_backend`` builds the configured one."""

from __future__ import annotations

import inspect
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from crmify.conf import AUTH_ENV_VARS, crmify_settings

from .base import BaseBackend, PlainBackend


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


def takes_auth_keywords(backend_class: type[Any]) -> bool:
    """Whether a plain backend class's constructor takes ``**kwargs`` (1.3.0's ``**auth_params``)."""
    try:
        parameters = inspect.signature(backend_class).parameters.values()
    except (
        TypeError,
        ValueError,
    ):  # a constructor Python cannot describe: build it without arguments
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def auth_keywords() -> dict[str, str | None]:
    """``BACKEND_AUTH`` as 1.3.0 passed it to a backend: with no ``BACKEND_AUTH`` setting, every key the
    environment variables fill is present (None when its variable is unset); the resolved values win."""
    base: dict[str, str | None] = (
        {} if crmify_settings.get("BACKEND_AUTH") else dict.fromkeys(AUTH_ENV_VARS)
    )
    return {**base, **crmify_settings.BACKEND_AUTH}


def get_backend(path: str | None = None) -> Any:
    """A new instance of the configured backend, the site's own object; the one place that decides how a
    backend is built. The engine holds it as :func:`build_backend` gives it.

    Called through :func:`build_backend` by the worker (:func:`crmify.worker.current_backend`),
    ``crmify_check`` and the system check ``crmify.E012``, so a backend that check passes is one the
    worker can build. Subclasses of
    :class:`BaseBackend` get ``options`` (``BACKEND_OPTIONS``) and ``auth`` (``BACKEND_AUTH``). A plain
    class whose constructor takes ``**kwargs`` (1.3.0's ``CRMBackend`` and its subclasses) gets
    :func:`auth_keywords` as keyword arguments; any other plain class is built with no arguments, as the
    original README promises. Raises whatever the constructor raises.
    """
    backend_class = load_backend_class(path)
    if issubclass(backend_class, BaseBackend):
        return backend_class(
            options=crmify_settings.BACKEND_OPTIONS, auth=crmify_settings.BACKEND_AUTH
        )
    if takes_auth_keywords(backend_class):
        return backend_class(**auth_keywords())
    return backend_class()


def as_base_backend(backend: Any) -> BaseBackend:
    """``backend`` as the engine holds it: itself if it is a :class:`BaseBackend`, else wrapped in a
    :class:`~crmify.backends.base.PlainBackend` (a plain class, a 1.3.0 ``CRMBackend`` subclass)."""
    return backend if isinstance(backend, BaseBackend) else PlainBackend(backend)


def build_backend(path: str | None = None) -> BaseBackend:
    """A new instance of the configured backend as the engine holds it (:func:`get_backend`, then
    :func:`as_base_backend`). Raises whatever the constructor raises."""
    return as_base_backend(get_backend(path))
