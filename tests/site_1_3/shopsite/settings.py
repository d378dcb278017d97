"""A site set up as django-crmify 1.3.0's example site is, upgraded to this crmify.

Everything is as a 1.3.0 site has it (its apps, ``CRMIFY`` with dotted class paths, the API key in
``CRMIFY_BACKEND_AUTH_API_KEY``) except the lines marked UPGRADE, which are exactly the site changes the
README's "Upgrading from 1.3" lists, and the lines marked HARNESS, which point the site at the test's
database and at the Insightly sandbox instead of insightly.com. Used by tests/test_example_site_1_3.py.
"""

import os
from importlib.util import find_spec

SECRET_KEY = "site-1-3-not-secret"
DEBUG = True
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
ROOT_URLCONF = "shopsite.urls"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # UPGRADE, Django 5.2 only: the django.tasks backport.
    *([] if find_spec("django.tasks") else ["django_tasks"]),
    "django_tasks_db",  # UPGRADE: the task queue crmify syncs through, and its db_worker command
    "import_export",  # UPGRADE: the Import and Export pages of crmify's admin
    "crmify",
    "members",
]

# UPGRADE: crmify's work goes through this queue; `python manage.py db_worker` runs it.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SITE_DB"],  # HARNESS: the test's own database file
        "OPTIONS": {"timeout": 20},
    }
}

CRMIFY = {
    "BACKEND": "crmify.backends.insightly.InsightlyBackend",
    "LEAD_MODEL": "members.models.UserProfile",
    "LEAD_STATUS_MODEL": "members.models.Subscription",
    "LEAD_MODEL_FIELDMAPPER": "members.mappers.ProfileMapper",
    # HARNESS: the sandbox stands in for insightly.com; a real site leaves BACKEND_OPTIONS out.
    "BACKEND_OPTIONS": {"API_URL": os.environ["SITE_CRM_URL"], "REQUESTS_PER_SECOND": 1000},
}
