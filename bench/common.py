"""What the in-process benchmarks share: Django configured on a throw-away SQLite file, crmify on the
database Tasks backend with the locmem CRM (a bench overrides ``CRMIFY`` where it needs the sandbox)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import django
from django.conf import settings


def configure(db_path: Path, *, extra_apps: Sequence[str] = ()) -> None:
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            *([] if find_spec("django.tasks") else ["django_tasks"]),
            "django_tasks_db",
            *extra_apps,
            "crmify",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path)}},
        TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
        CRMIFY={"BACKEND": "crmify.backends.locmem.LocmemBackend", "TASK_BACKEND": "default"},
        LOGGING_CONFIG=None,
    )
    django.setup()
