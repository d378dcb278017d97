"""A separate process that paces calls through crmify's shared limiter (``test_rate_limit.py`` starts two).

Usage: ``python -m tests.pace_worker CACHE_DB URL KEY CALLS``. The cache is a database cache in a SQLite
file both processes share, as a site's workers would share their cache.
"""

from __future__ import annotations

import sys

import django
import requests
from django.conf import settings


def main(cache_db: str, url: str, key: str, calls: int) -> None:
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": cache_db,
                "OPTIONS": {"timeout": 20},
            }
        },
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": "crmify_cache",
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from django.core.cache import cache

    from crmify.ratelimit import SharedRateLimiter

    limiter = SharedRateLimiter("insightly", 10, cache)
    session = requests.Session()
    session.auth = (key, "")
    statuses = []
    for _ in range(calls):
        limiter.acquire()
        statuses.append(session.get(url + "LeadStatuses", timeout=5).status_code)
    print(" ".join(map(str, statuses)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
