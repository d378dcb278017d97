"""The site's inbound webhook endpoints, one per CRM (``crmify.urls``: ``crmify:webhook-hubspot`` and
``crmify:webhook-insightly``).

Each answers fast and does no CRM call and no lead write: it checks the request, turns the body into
events (:mod:`crmify.webhook_events`) and queues ``apply_webhook_task`` (:mod:`crmify.webhook_worker`) on
crmify's Tasks backend. In order:

- 404 when the endpoint's CRM is not the configured ``BACKEND`` (a subclass counts);
- 405 for anything but POST;
- 413 for a body over :data:`MAX_BODY_BYTES`, told by ``Content-Length`` before anything is read;
- 401 without credentials or a signature, 403 with wrong ones, a stale timestamp, or none configured
  (:mod:`crmify.webhook_auth`; HubSpot does not retry either);
- 400 for a body that is not JSON or not the CRM's documented shape: nothing is queued;
- 200 with nothing queued for a delivery seen before (the same signature, or for Insightly the same
  body, within twice the signature's window), kept in crmify's shared cache (``crm_state.shared_cache``);
- 200 once the events are queued; 503 when they cannot be (the CRM sends the delivery again).

Only the reason and the sender's address are logged: never a secret, a signature, a credential or the body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from crmify.backends import load_backend_class
from crmify.backends.hubspot import HubSpotBackend
from crmify.backends.insightly import InsightlyBackend
from crmify.crm_state import shared_cache
from crmify.queue import enqueue_task
from crmify.webhook_auth import MAX_AGE, Refusal, verify_hubspot, verify_insightly
from crmify.webhook_events import MalformedBody, WebhookEvent, hubspot_events, insightly_events
from crmify.webhook_worker import apply_webhook_task

logger = logging.getLogger("crmify")

#: The largest body an endpoint reads (1 MiB: thousands of HubSpot events); a larger one is a 413.
MAX_BODY_BYTES = 1024 * 1024
#: How long a delivery is remembered: a v3 timestamp is good for MAX_AGE either side of now.
REPLAY_MEMORY = 2 * MAX_AGE


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One CRM's endpoint: the backend class it serves, how its sender is verified (the delivery key,
    or :class:`~crmify.webhook_auth.Refusal`), how its body reads as events."""

    crm: str
    backend_class: type[Any]
    verify: Callable[[HttpRequest, bytes], str]
    read_events: Callable[[Any], list[WebhookEvent]]


HUBSPOT = Endpoint("hubspot", HubSpotBackend, verify_hubspot, hubspot_events)
INSIGHTLY = Endpoint("insightly", InsightlyBackend, verify_insightly, insightly_events)


def serves(endpoint: Endpoint) -> bool:
    """Whether ``endpoint``'s CRM is the configured backend (a subclass of its backend class)."""
    try:
        return issubclass(load_backend_class(), endpoint.backend_class)
    except ImproperlyConfigured:  # crmify.E010 says so
        return False


def receive(request: HttpRequest, endpoint: Endpoint) -> HttpResponse:
    """Check, read and queue one delivery to ``endpoint`` (see the module docstring)."""
    if not serves(endpoint):
        raise Http404(f"crmify's {endpoint.crm} webhook is off: the backend is another CRM's.")
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if _declared_length(request) > MAX_BODY_BYTES:
        return _refused(request, endpoint, 413, f"body over {MAX_BODY_BYTES} bytes")
    try:
        body = request.body
    except RequestDataTooBig:  # the site's DATA_UPLOAD_MAX_MEMORY_SIZE is lower still
        return _refused(request, endpoint, 413, "body over DATA_UPLOAD_MAX_MEMORY_SIZE")
    try:
        key = endpoint.verify(request, body)
    except Refusal as refusal:
        return _refused(request, endpoint, refusal.status, refusal.reason)
    try:
        events = endpoint.read_events(json.loads(body))
    except MalformedBody as exc:
        return _refused(request, endpoint, 400, str(exc))
    except (ValueError, RecursionError):  # not JSON (not UTF-8, or nested past Python's stack)
        return _refused(request, endpoint, 400, "the body is not JSON")
    memory = f"crmify:webhook:{endpoint.crm}:{key}"
    # add() is atomic: of two copies of one delivery arriving at once, exactly one is queued.
    if not shared_cache().add(memory, 1, timeout=REPLAY_MEMORY):
        logger.info("crmify: %s webhook: delivery seen before, nothing to do", endpoint.crm)
        return HttpResponse("already received", content_type="text/plain")
    if events and not enqueue_task(
        apply_webhook_task, [dict(event) for event in events], what=f"a {endpoint.crm} webhook"
    ):
        shared_cache().delete(memory)  # so the CRM's retry of this delivery is queued
        return HttpResponse("could not queue", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # Django reads no body then either


def _refused(request: HttpRequest, endpoint: Endpoint, status: int, reason: str) -> HttpResponse:
    """The answer to a delivery that is not taken; logged with the reason and the sender's address."""
    logger.warning(
        "crmify: %s webhook refused (%s): %s from %s",
        endpoint.crm,
        status,
        reason,
        request.META.get("REMOTE_ADDR", "?"),
    )
    # Why a request was not let in is for the site's log only; a shape problem helps the sender.
    text = reason if status in (400, 413) else "not authorised" if status == 401 else "forbidden"
    response = HttpResponse(text, status=status, content_type="text/plain")
    if status == 401 and endpoint is INSIGHTLY:
        response["WWW-Authenticate"] = 'Basic realm="crmify webhooks"'
    return response


@csrf_exempt
def hubspot_webhook(request: HttpRequest) -> HttpResponse:
    """HubSpot's webhook target (``crmify:webhook-hubspot``), signed with the app secret."""
    return receive(request, HUBSPOT)


@csrf_exempt
def insightly_webhook(request: HttpRequest) -> HttpResponse:
    """Insightly's workflow webhook target (``crmify:webhook-insightly``), with Basic credentials."""
    return receive(request, INSIGHTLY)
