"""Masking credentials in any text crmify records, stores or shows: one rule, one function.

Called by the HTTP plumbing (what it records of each call), the ledger, the worker (``last_error``), the
backfill, the mapper preview, the public API and the admin: a site's own backend may quote its key in an
exception, and a CRM or proxy may quote the request's ``Authorization`` header back.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from crmify.conf import crmify_settings

#: Shorter credential values are not masked: they are not secrets, and masking them would garble every
#: message they happen to occur in.
MIN_SECRET_LENGTH = 4


def secret_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as written and as an HTTP Basic header carries it when it is the user name with an
    empty password (Insightly's scheme): a CRM or proxy that quotes the header back quotes this form."""
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    return secret, basic, basic.rstrip("=")


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret masked: ``secrets``, or every ``BACKEND_AUTH`` value when None (the
    engine's case; a backend passes its own ``auth``). NUL characters (a CRM's binary or mis-encoded
    answer has them; PostgreSQL text refuses them) are replaced as well, so the text can be stored."""
    if secrets is None:
        secrets = crmify_settings.BACKEND_AUTH.values()
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            for form in secret_forms(secret):
                text = text.replace(form, "***")
    return text.replace("\x00", "\ufffd")
