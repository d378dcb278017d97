"""Settings for crmify's own test suite. ``CRMIFY_TEST_DB=postgres`` runs it on PostgreSQL."""

from __future__ import annotations

import json
import os
from importlib.util import find_spec

SECRET_KEY = "crmify-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",
    *(["django_rq"] if find_spec("django_tasks_rq") else []),
    "import_export",
    "crmify",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"

if os.environ.get("CRMIFY_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "NAME": os.environ.get("PGDATABASE", "test"),
            "TEST": {"NAME": os.environ.get("CRMIFY_TEST_DB_NAME", "test_crmify")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("CRMIFY_TEST_SQLITE", "test.sqlite3"),
            # A worker process shares the file with the tests: wait for locks, take them up front.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            "TEST": {"NAME": os.environ.get("CRMIFY_TEST_SQLITE", "test.sqlite3")},
        }
    }

# A worker process a test starts (tests/test_db_worker.py) must open the test's database, which is not
# NAME on PostgreSQL (Django creates TEST NAME): the test passes its database's name here.
if os.environ.get("CRMIFY_WORKER_DB"):
    DATABASES["default"]["NAME"] = os.environ["CRMIFY_WORKER_DB"]

TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    "dummy": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"},
}
# The scale-out set-up (tests/reliability/): RQ workers on Redis, and a Redis cache the workers share for
# crmify's rate limiter. A dedicated Redis database, which the tests flush; CRMIFY_TEST_REDIS_URL moves it.
REDIS_URL = os.environ.get("CRMIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
if find_spec("django_tasks_rq"):
    TASKS["rq"] = {"BACKEND": "django_tasks_rq.RQBackend"}
    RQ_QUEUES = {"default": {"URL": REDIS_URL}}
    RQ_SHOW_ADMIN_LINK = False
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
}
if not find_spec("django.tasks"):
    for alias in ("immediate", "dummy"):
        TASKS[alias]["BACKEND"] = TASKS[alias]["BACKEND"].replace("django.tasks", "django_tasks")

CRMIFY = {
    "BACKEND": "crmify.backends.locmem.LocmemBackend",
    "TASK_BACKEND": "immediate",
    # Tests sweep (and poll) when they mean to; the sweeps and polls the workers schedule themselves are
    # tested on their own (tests/test_sweep_schedule.py, tests/test_poller.py), so no other test finds
    # a sweep or poll task in its queue.
    "SWEEP_INTERVAL": None,
    "PULL_INTERVAL": None,
}

# A worker process a test starts may need other CRMIFY keys than the tests' defaults (a sandbox URL, a
# Tasks backend that queues): the test passes them as JSON (tests/test_backfill.py).
if os.environ.get("CRMIFY_WORKER_CRMIFY"):
    CRMIFY.update(json.loads(os.environ["CRMIFY_WORKER_CRMIFY"]))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"crmify": {"handlers": ["null"], "propagate": True}},
}
