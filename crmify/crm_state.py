"""Whether the CRM as a whole answers: up, or down since when and why, shared by every worker process.

The state lives in the cache the rate limiter already shares (``BACKEND_OPTIONS['RATE_LIMIT_CACHE']``,
default ``"default"``; see ``crmify.ratelimit`` for why a Django cache): a Redis, Memcached or database
cache is seen by every worker, and ``cache.add`` (atomic on all three) decides the one worker that marks
the CRM down, the one that brings it back, and the one that probes.

Who calls what:

- ``crmify.worker`` reports every CRM call: :func:`note_answer` when the CRM answered (a success, or an
  error that only concerns one lead, such as a 400), :func:`note_failure` when the error says the CRM
  itself is unreachable or failing (``crmify.ledger.Failure.outage``: a connection error, a timeout, a
  5xx). Before it calls the CRM for a lead it reads :func:`crm_state`: while the CRM is down the lead
  waits (``LeadQuerySet.wait_for_crm``), without a call and without using an attempt.
- The probe (``crmify.worker.probe_crm``) takes the single probe with :func:`claim_probe` and hands it
  back with :func:`end_probe`, which plans the next one.
- The admin's banner, ``manage.py crmify_check`` and any health page read :func:`crm_state`: the one
  public read, never a CRM call.

The thresholds (documented in the README, "When the CRM is down"):

- the CRM is down after :data:`DOWN_AFTER_FAILURES` such failures of different leads in a row, across all
  workers, with no answer in between: one lead's 5xx among answers for other leads, or one lead's 5xx
  again and again, is that lead's problem (it keeps its backoff); three leads in a row that get no
  answer are the CRM's;
- while it is down one worker probes it, :data:`FIRST_PROBE_AFTER` seconds after it went down, then at
  an interval that doubles up to :data:`MAX_PROBE_INTERVAL` (so a CRM that comes back is noticed within
  that many seconds, at the cost of one call per interval);
- the first answer marks it up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import BaseCache, caches
from django.utils import timezone

from crmify.conf import crmify_settings

#: Failures that say the CRM is unreachable, in a row across all workers, before it counts as down.
DOWN_AFTER_FAILURES = 3
#: Seconds from the CRM going down to the first probe; each probe that fails doubles the interval ...
FIRST_PROBE_AFTER = 2.0
#: ... up to this many seconds (also how late, at most, a CRM that is back is noticed).
MAX_PROBE_INTERVAL = 10.0
#: How long a run of failures counts without a new one: failures hours apart are not one outage.
FAILURE_MEMORY = 600

_FAILURES = "crmify:crm:failures"
_FIRST_FAILURE = "crmify:crm:first-failure"
_LAST_ERROR = "crmify:crm:last-error"
_DOWN = "crmify:crm:down"
_PROBE = "crmify:crm:probe"


@dataclass(frozen=True, slots=True)
class CrmState:
    """The CRM as every worker sees it. ``up`` is True unless calls stopped getting answers."""

    up: bool = True
    #: When the first call of the failing run got no answer (the banner's "since").
    down_since: datetime | None = None
    #: The last such call's error, as the CRM (or the network) put it, secrets masked.
    last_error: str = ""
    #: Probes made since the CRM went down.
    probes: int = 0
    #: When the next probe is due, and the interval after it if that one fails too.
    next_probe_at: datetime | None = None
    probe_interval: float = 0.0

    @property
    def down(self) -> bool:
        return not self.up


def shared_cache() -> BaseCache:
    """The cache every worker shares: the rate limiter's (``RATE_LIMIT_CACHE``)."""
    return caches[str(crmify_settings.BACKEND_OPTIONS.get("RATE_LIMIT_CACHE", "default"))]


def crm_state() -> CrmState:
    """The CRM's state as every worker sees it now (one cache read, no CRM call)."""
    cache = shared_cache()
    found: dict[str, Any] = cache.get_many([_DOWN, _LAST_ERROR])
    down: dict[str, Any] | None = found.get(_DOWN)
    if not down:
        return CrmState()
    return CrmState(up=False, last_error=str(found.get(_LAST_ERROR) or ""), **down)


def note_failure(error: str, lead_id: int | None = None) -> CrmState | None:
    """A call for ``lead_id`` got no answer (``error`` says why, secrets masked). Returns the new state
    when this call is the one that marked the CRM down (its caller starts the probe), else None.

    Only the first failure of each lead in a run counts: one lead that keeps getting a 5xx is that
    lead's problem, however often it is retried. A call for no lead (a probe's check) always counts.
    """
    cache = shared_cache()
    now = timezone.now()
    cache.set(_LAST_ERROR, error, timeout=None)
    cache.add(_FIRST_FAILURE, now, timeout=FAILURE_MEMORY)
    since: datetime = cache.get(_FIRST_FAILURE) or now
    if lead_id is not None and not cache.add(
        f"crmify:crm:failed:{since.timestamp()}:{lead_id}", 1, timeout=FAILURE_MEMORY
    ):
        return None
    cache.add(_FAILURES, 0, timeout=FAILURE_MEMORY)
    try:
        failures = cache.incr(_FAILURES)
    except ValueError:  # expired between add and incr
        cache.set(_FAILURES, failures := 1, timeout=FAILURE_MEMORY)
    if failures < DOWN_AFTER_FAILURES:
        return None
    down: dict[str, Any] = {
        "down_since": since,
        "probes": 0,
        "next_probe_at": now + timedelta(seconds=FIRST_PROBE_AFTER),
        "probe_interval": FIRST_PROBE_AFTER,
    }
    # Only one of the workers failing at once marks it down (and so starts one probe).
    if not cache.add(_DOWN, down, timeout=None):
        return None
    return CrmState(up=False, last_error=error, **down)


def note_answer() -> bool:
    """A call got an answer. True when this answer is the one that brought the CRM back up (its caller
    releases the waiting leads); one cache read when nothing was failing."""
    cache = shared_cache()
    found = cache.get_many([_FAILURES, _DOWN])
    if not found:
        return False
    cache.delete_many([_FAILURES, _FIRST_FAILURE])
    # delete() says whether the key was there: exactly one of several workers answering at once wins.
    return bool(found.get(_DOWN)) and bool(cache.delete(_DOWN))


def claim_probe(now: datetime | None = None) -> CrmState | None:
    """Take the one probe, if the CRM is down and a probe is due: the state, or None (not down, not
    due, or another worker is probing). Hand it back with :func:`end_probe`."""
    state = crm_state()
    now = now or timezone.now()
    if state.up or (state.next_probe_at is not None and state.next_probe_at > now):
        return None
    # Held at most as long as a probe can take (a call's timeout is seconds); end_probe drops it.
    if not shared_cache().add(_PROBE, 1, timeout=120):
        return None
    return state


def end_probe(now: datetime | None = None) -> CrmState:
    """The probe is over. If the CRM is still down, plan the next probe at twice the interval (at most
    :data:`MAX_PROBE_INTERVAL`) and return that state; an up state if the probe brought it back."""
    cache = shared_cache()
    now = now or timezone.now()
    state = crm_state()
    if state.down:
        interval = min(max(state.probe_interval, FIRST_PROBE_AFTER) * 2, MAX_PROBE_INTERVAL)
        down: dict[str, Any] = {
            "down_since": state.down_since,
            "probes": state.probes + 1,
            "next_probe_at": now + timedelta(seconds=interval),
            "probe_interval": interval,
        }
        # Written only while still down: set() could otherwise undo a recovery another worker just saw.
        if cache.get(_DOWN):
            cache.set(_DOWN, down, timeout=None)
        state = CrmState(up=False, last_error=state.last_error, **down)
    cache.delete(_PROBE)
    return state


def forget_outage() -> bool:
    """Mark the CRM up whatever the last calls said (staff pressed "Send waiting leads now"); True if it
    was down. The next calls mark it down again if it still does not answer."""
    cache = shared_cache()
    cache.delete_many([_FAILURES, _FIRST_FAILURE, _PROBE, _LAST_ERROR])
    return bool(cache.delete(_DOWN))
