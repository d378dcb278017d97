"""The demo's password hasher (``PASSWORD_HASHERS`` in ``demo_site/settings.py``)."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class DemoPasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2 with few iterations: the demo's passwords are printed on the console anyway, and Django's
    default (a second or more per hash) would be most of ``make demo``'s start and of each log-in in
    the browser tests. Never use this on a real site."""

    algorithm = "pbkdf2_sha256_demo"
    iterations = 1_000
