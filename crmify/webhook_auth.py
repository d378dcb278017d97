"""Who sent an inbound webhook: HubSpot's request signatures and Insightly's Basic credentials.

Called by the views in :mod:`crmify.webhooks` before they parse anything: :func:`verify_hubspot` and
:func:`verify_insightly` return the delivery's key (what a replay of the same delivery repeats) or raise
:class:`Refusal`, whose ``reason`` is safe to log (it never quotes the secret, a signature, a credential or
the body). Every comparison is constant-time (``hmac.compare_digest``).

HubSpot (``WEBHOOK_AUTH['SECRET']``, the app's client secret; env ``CRMIFY_WEBHOOK_SECRET``):

- v3, the default: ``X-HubSpot-Signature-v3`` is base64(HMAC-SHA256(secret, method + URI + body +
  ``X-HubSpot-Request-Timestamp``)), the timestamp in milliseconds; a timestamp more than
  :data:`MAX_AGE` seconds from now, either way, is refused.
- v2 (hex SHA-256 of secret + method + URI + body) and v1 (hex SHA-256 of secret + body), named by
  ``X-HubSpot-Signature-Version`` and carried in ``X-HubSpot-Signature``: only when listed in
  ``WEBHOOK_SIGNATURE_VERSIONS``. They carry no timestamp, so a captured request can be replayed later
  than the replay memory (``crmify.W121`` says so).

The URI is the one HubSpot called, as Django rebuilds it (``request.build_absolute_uri()``): behind a
proxy that terminates TLS or rewrites the host, Django must be told (``SECURE_PROXY_SSL_HEADER``,
``USE_X_FORWARDED_HOST``), or every signature is wrong.

Insightly's workflow webhook carries no signature: HTTP Basic with ``WEBHOOK_AUTH['USERNAME']`` and
``['PASSWORD']`` (env ``CRMIFY_WEBHOOK_USERNAME`` / ``CRMIFY_WEBHOOK_PASSWORD``). With no credentials
configured, an endpoint refuses every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from django.http import HttpRequest

from crmify.conf import crmify_settings

#: How far (seconds) a v3 timestamp may be from now, in the past or the future: HubSpot's five minutes.
MAX_AGE = 300

SIGNATURE_VERSIONS = ("v1", "v2", "v3")
#: The versions with no timestamp: a delivery signed so can be replayed at any later time.
UNTIMED_VERSIONS = ("v1", "v2")


class Refusal(Exception):
    """A webhook request that is not let in: ``status`` 401 (no credentials or signature) or 403 (wrong
    ones, a stale timestamp, nothing configured to check them with); ``reason`` may be logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _same(expected: str, given: str) -> bool:
    """Constant-time equality of two header-borne strings (bytes, so a non-ASCII header cannot raise)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def delivery_key(proof: str | bytes) -> str:
    """What the replay memory keeps of a delivery: a hash of its signature (or body), never the thing
    itself, so the cache holds nothing that could be sent again."""
    data = proof.encode("utf-8", "replace") if isinstance(proof, str) else proof
    return hashlib.sha256(data).hexdigest()


# -- HubSpot ---------------------------------------------------------------------------------------------


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, method + uri + body + timestamp)): HubSpot's v3 signature."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def hubspot_untimed_signature(version: str, secret: str, method: str, uri: str, body: bytes) -> str:
    """Hex SHA-256 of secret + body (v1) or of secret + method + uri + body (v2)."""
    signed = b"" if version == "v1" else method.encode() + uri.encode()
    return hashlib.sha256(secret.encode() + signed + body).hexdigest()


def verify_hubspot(request: HttpRequest, body: bytes, *, now: float | None = None) -> str:
    """The delivery key of a request HubSpot signed with the app secret; :class:`Refusal` otherwise.

    v3 is checked whenever it is accepted and its header is present (a request carries the older
    signature too, for backwards compatibility: it is never a way around a v3 that fails).
    """
    secret = crmify_settings.WEBHOOK_AUTH.get("SECRET", "")
    if not secret:
        raise Refusal(403, "no HubSpot app secret configured (CRMIFY_WEBHOOK_SECRET)")
    accepted = crmify_settings.WEBHOOK_SIGNATURE_VERSIONS
    method, uri = request.method or "POST", request.build_absolute_uri()
    v3 = request.headers.get("X-HubSpot-Signature-v3", "")
    if v3 and "v3" in accepted:
        timestamp = request.headers.get("X-HubSpot-Request-Timestamp", "")
        if not timestamp:
            raise Refusal(401, "v3 signature without X-HubSpot-Request-Timestamp")
        _check_timestamp(timestamp, time.time() if now is None else now)
        if not _same(hubspot_v3_signature(secret, method, uri, body, timestamp), v3):
            raise Refusal(403, "wrong v3 signature")
        return delivery_key(v3)
    version = request.headers.get("X-HubSpot-Signature-Version", "")
    signature = request.headers.get("X-HubSpot-Signature", "")
    if signature and version in UNTIMED_VERSIONS and version in accepted:
        expected = hubspot_untimed_signature(version, secret, method, uri, body)
        if not _same(expected, signature):
            raise Refusal(403, f"wrong {version} signature")
        return delivery_key(signature)
    raise Refusal(401, f"no signature of an accepted version ({', '.join(accepted) or 'none'})")


def _check_timestamp(timestamp: str, now: float) -> None:
    try:
        sent = int(timestamp) / 1000
    except ValueError:
        raise Refusal(403, "X-HubSpot-Request-Timestamp is not a time in milliseconds") from None
    if abs(now - sent) > MAX_AGE:
        when = "old" if sent < now else "in the future"
        raise Refusal(403, f"timestamp {round(abs(now - sent))} s {when} (at most {MAX_AGE} s)")


# -- Insightly -------------------------------------------------------------------------------------------


def verify_insightly(request: HttpRequest, body: bytes) -> str:
    """The delivery key (a hash of the body: Insightly names no delivery) of a request carrying the
    configured Basic credentials; :class:`Refusal` otherwise."""
    username = crmify_settings.WEBHOOK_AUTH.get("USERNAME", "")
    password = crmify_settings.WEBHOOK_AUTH.get("PASSWORD", "")
    if not (username and password):
        raise Refusal(
            403,
            "no Insightly webhook credentials configured "
            "(CRMIFY_WEBHOOK_USERNAME and CRMIFY_WEBHOOK_PASSWORD)",
        )
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Refusal(401, "no Basic credentials")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(403, "unreadable Basic credentials") from None
    # Both halves compared, whatever the first says: the time taken tells nothing.
    given_user, _, given_password = given.partition(b":")
    user_ok = hmac.compare_digest(given_user, username.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    if not (user_ok and password_ok):
        raise Refusal(403, "wrong Basic credentials")
    return delivery_key(body)
