"""Settings for the benchmarks: SQLite in a file the bench names (``CRMIFY_BENCH_DB``), the database task
queue, the database cache (shared by worker processes), and the CRM the bench names."""

from __future__ import annotations

import json
import os
from importlib.util import find_spec

SECRET_KEY = "crmify-bench"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",
    "crmify",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CRMIFY_BENCH_DB", "bench.sqlite3"),
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
if os.environ.get("CRMIFY_BENCH_PG_NAME"):  # bench/latency.py on PostgreSQL
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["CRMIFY_BENCH_PG_NAME"],
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
        }
    }
# The README's worker settings keep the worker's connection open between polls (bench/latency.py).
DATABASES["default"]["CONN_MAX_AGE"] = float(os.environ.get("CRMIFY_BENCH_CONN_MAX_AGE", "0"))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "crmify_cache",
    }
}
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
CRMIFY = {
    "BACKEND": os.environ.get("CRMIFY_BENCH_BACKEND", "crmify.backends.locmem.LocmemBackend"),
    "BACKEND_AUTH": {"API_KEY": os.environ.get("CRMIFY_BENCH_API_KEY", "sandbox-key")},
    "BACKEND_OPTIONS": {"API_URL": os.environ.get("CRMIFY_BENCH_API_URL", ""), "TIMEOUT": 10},
    "AUTO_SYNC": os.environ.get("CRMIFY_BENCH_AUTO_SYNC", "1") == "1",
    # The worker benches count the calls pushes make (calls per lead, the quota's windows, the probes
    # of an outage): no polls of the CRM beside them. bench/pull_cost.py measures the polls.
    "PULL_INTERVAL": None,
}
# A bench's own keys (bench/million.py: the quota's share and window), as JSON; BACKEND_OPTIONS merge.
_extra = json.loads(os.environ.get("CRMIFY_BENCH_CRMIFY", "{}"))
CRMIFY["BACKEND_OPTIONS"] |= _extra.pop("BACKEND_OPTIONS", {})
CRMIFY |= _extra
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
