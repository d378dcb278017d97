"""The demo site: crmify on its embedded defaults (SQLite, the database task worker, a sandbox CRM: Insightly,
or HubSpot with ``CRMIFY_DEMO_CRM=hubspot``)."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
# The database and the sandbox's saved leads; the end-to-end tests point this at a temporary directory.
VAR_DIR = Path(os.environ.get("CRMIFY_DEMO_VAR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)
#: Which CRM the demo shop talks to: ``insightly`` (default) or ``hubspot`` (``CRMIFY_DEMO_CRM``).
DEMO_CRM = os.environ.get("CRMIFY_DEMO_CRM", "insightly")

SECRET_KEY = "crmify-demo-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "demo_site.urls"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
# Fast hashing for public demo passwords only (see the class): a real site keeps Django's default.
PASSWORD_HASHERS = ["shop.hashers.DemoPasswordHasher"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",
    "import_export",
    "crmify",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # One database per CRM: a lead's CRM id means nothing to the other CRM.
        "NAME": VAR_DIR
        / ("demo.sqlite3" if DEMO_CRM == "insightly" else f"demo-{DEMO_CRM}.sqlite3"),
        # The web server and the worker share the file: wait for locks and take them up front.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        # The worker polls every 0.1 s: keep its connection instead of opening one a poll (README,
        # "Running workers in production").
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }
}

# The database cache is shared by the web process and the worker: the CRM rate limit is paced across both.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "crmify_cache",
    }
}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

SANDBOX_PORT = int(os.environ.get("CRMIFY_DEMO_SANDBOX_PORT", "8765"))
# The CRM's own pace by default (Insightly: 10 a second; HubSpot: 100 in any 10 seconds); run.py gives
# the sandbox the same rate.
CRM_RATE = float(os.environ.get("CRMIFY_DEMO_CRM_RATE", "10"))
SANDBOX = f"http://127.0.0.1:{SANDBOX_PORT}"

if DEMO_CRM == "hubspot":
    CRM_BACKEND: dict[str, Any] = {
        "BACKEND": "crmify.backends.hubspot.HubSpotBackend",
        "BACKEND_OPTIONS": {
            "API_URL": SANDBOX,
            "RECORD_URL": f"{SANDBOX}/crm/v3/objects/contacts/{{id}}?properties=email,hs_lead_status",
            "TIMEOUT": 5,
            "TEN_SECOND_LIMIT": round(CRM_RATE * 10),
            # The shop's one status beyond the three configured ones (those work as they come).
            "STATUSES": {"Contacted": {"hs_lead_status": "CONNECTED"}},
        },
    }
else:
    CRM_BACKEND = {
        "BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "BACKEND_OPTIONS": {
            "API_URL": f"{SANDBOX}/v3.1/",
            "RECORD_URL": f"{SANDBOX}/v3.1/Leads/{{id}}",
            "TIMEOUT": 5,
            "REQUESTS_PER_SECOND": CRM_RATE,
        },
    }

CRMIFY = {
    **CRM_BACKEND,
    "BACKEND_AUTH": {"API_KEY": os.environ.get("CRMIFY_BACKEND_AUTH_API_KEY", "demo-sandbox-key")},
    "LEAD_MODEL": "shop.models.UserProfile",
    "LEAD_MODEL_FIELDMAPPER": "shop.mappers.UserProfileFieldMapper",
    "LEAD_STATUS_MODEL": "shop.models.Subscription",
    "RETRY_BACKOFF_BASE": 5,
    "SWEEP_PENDING_AFTER": 60,
    # A salesperson's changes come back by webhook at once, and by a poll every minute (demo/run.py).
    "PULL_INTERVAL": float(os.environ.get("CRMIFY_DEMO_PULL_INTERVAL", "60")),
    "PULL_DELETES_INTERVAL": float(os.environ.get("CRMIFY_DEMO_PULL_DELETES_INTERVAL", "3600")),
    # WEBHOOK_AUTH comes from CRMIFY_WEBHOOK_SECRET / _USERNAME / _PASSWORD (demo/run.py sets them).
}

STATIC_URL = "/static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"crmify": {"handlers": ["console"], "level": "INFO"}},
}
