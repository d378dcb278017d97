"""Django's Tasks framework on every supported Django: ``django.tasks`` (6.0+) or the ``django-tasks``
backport (5.2)."""

from __future__ import annotations

try:
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task, task_backends
    from django.tasks.exceptions import InvalidTaskBackend
    from django.tasks.signals import task_started
except ImportError:  # pragma: no cover - Django 5.2
    from django_tasks import (  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
        DEFAULT_TASK_BACKEND_ALIAS,
        task,
        task_backends,
    )
    from django_tasks.exceptions import (  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
        InvalidTaskBackendError as InvalidTaskBackend,
    )
    from django_tasks.signals import (  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
        task_started,
    )

__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "InvalidTaskBackend",
    "task",
    "task_backends",
    "task_started",
]
