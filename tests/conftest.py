"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from django.core.cache import cache
from django.test import override_settings

from crmify.backends import locmem
from crmify.crm_state import forget_outage
from crmify.sandbox import SandboxServer
from crmify.sandbox.hubspot import HubSpotSandbox
from tests.doubles import Enqueued
from tests.factories import PROFILE_SETTINGS
from tests.scripted_crm import ScriptedCrm


def service_required(name: str, reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI, where ``CI`` is set) when a service is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


def postgres_pass_only() -> None:
    """Skip outside the PostgreSQL pass (``CRMIFY_TEST_DB=postgres``); in it, skip (or fail in CI) when
    no server answers. Called before pytest-django sets up a database, so it asks the socket."""
    if os.environ.get("CRMIFY_TEST_DB") != "postgres":
        pytest.skip("runs in the PostgreSQL pass (CRMIFY_TEST_DB=postgres)")
    host, port = os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432"))
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        service_required("PostgreSQL", f"nothing answers on {host}:{port} ({exc})")


@pytest.fixture(autouse=True)
def _clean_locmem() -> Iterator[None]:
    locmem.reset()
    forget_outage()  # the CRM's shared state (crmify.crm_state) does not leak from one test to the next
    yield
    locmem.reset()
    forget_outage()


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    """Merge keys into ``settings.CRMIFY`` for one test; crmify re-wires its receivers at once."""

    def apply(**overrides: Any) -> None:
        settings.CRMIFY = {**settings.CRMIFY, **overrides}

    return apply


@pytest.fixture
def profile_leads(configure: Callable[..., None]) -> None:
    """Leads are ``UserProfile`` rows mapped by the test app's mapper; ``Subscription`` moves status."""
    configure(**PROFILE_SETTINGS)


@pytest.fixture
def enqueued(configure: Callable[..., None]) -> Iterator[Enqueued]:
    """Switch crmify to the dummy Tasks backend and hand back what it recorded."""
    configure(TASK_BACKEND="dummy")
    recorder = Enqueued()
    recorder.clear()
    yield recorder
    recorder.clear()


# -- the sandbox as the CRM (real HTTP) ----------------------------------------------------------------

#: Backend options for tests that make many calls: no waiting on the real API's pace.
FAST_SANDBOX: dict[str, Any] = {"TIMEOUT": 5, "REQUESTS_PER_SECOND": 1000}


def crmify_for(
    sandbox: SandboxServer,
    *,
    api_key: str | None = None,
    task_backend: str = "immediate",
    **options: Any,
) -> dict[str, Any]:
    """``CRMIFY`` pointing at the sandbox over real HTTP, as a site points at Insightly; keyword
    ``options`` go to ``BACKEND_OPTIONS``. ``task_backend`` is the Tasks alias: ``"default"`` (the
    database queue a ``db_worker`` serves) or ``"rq"`` for tests with worker processes."""
    return {
        "BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "BACKEND_AUTH": {"API_KEY": sandbox.api_key if api_key is None else api_key},
        "BACKEND_OPTIONS": {"API_URL": sandbox.url, "TIMEOUT": 2, **options},
        "TASK_BACKEND": task_backend,
    }


def hubspot_crmify_for(
    crm: HubSpotSandbox,
    *,
    token: str | None = None,
    task_backend: str = "immediate",
    **options: Any,
) -> dict[str, Any]:
    """``CRMIFY`` pointing at the HubSpot sandbox over real HTTP, as a site points at HubSpot; keyword
    ``options`` go to ``BACKEND_OPTIONS``."""
    return {
        "BACKEND": "crmify.backends.hubspot.HubSpotBackend",
        "BACKEND_AUTH": {"API_KEY": crm.token if token is None else token},
        "BACKEND_OPTIONS": {"API_URL": crm.url, "TIMEOUT": 2, **options},
        "TASK_BACKEND": task_backend,
    }


class Counted(Protocol):
    """What has the sandbox's request counters: a ``SandboxServer``, or the e2e demo's sandbox read over
    its control API (``tests/e2e/stack.py``)."""

    def stats(self) -> dict[str, Any]: ...


def calls(sandbox: Counted, route: str) -> int:
    """How many requests the sandbox answered on ``route`` (``"POST /Leads"``), whatever their status."""
    return sum(sandbox.stats()["requests"].get(route, {}).values())


def crm_writes(sandbox: Counted) -> int:
    """How many requests asked the sandbox to change its records (creates, updates, deletes, batch
    writes), whatever their answer: the reads, searches and batch reads aside. A change read back from the
    CRM must not add to it (no echo)."""
    return sum(
        sum(answers.values())
        for route, answers in sandbox.stats()["requests"].items()
        if not route.startswith("GET ") and not route.endswith(("/search", "/batch/read"))
    )


@pytest.fixture
def insightly(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The sandbox as the configured CRM, without its per-second limit unless a test turns it on."""
    sandbox.set_faults(requests_per_second=None)
    cache.clear()
    with override_settings(CRMIFY=crmify_for(sandbox)):
        yield sandbox
    cache.clear()


@pytest.fixture
def hubspot(hubspot_sandbox: HubSpotSandbox) -> Iterator[HubSpotSandbox]:
    """The HubSpot sandbox as the configured CRM, without its 10-second limit unless a test turns it
    on, and with the backend's own pace out of the way."""
    hubspot_sandbox.set_faults(requests_per_second=None)
    cache.clear()
    with override_settings(CRMIFY=hubspot_crmify_for(hubspot_sandbox, **FAST_SANDBOX)):
        yield hubspot_sandbox
    cache.clear()


@pytest.fixture
def quiet(configure: Callable[..., None]) -> None:
    """The locmem CRM; saved users get no lead by themselves (a site before its backfill)."""
    configure(AUTO_SYNC=False)


@pytest.fixture
def crm(sandbox: SandboxServer, configure: Callable[..., None]) -> Iterator[SandboxServer]:
    """The sandbox as the CRM, without its per-second limit; users saved here get no lead by themselves."""
    sandbox.set_faults(requests_per_second=None)
    cache.clear()
    configure(**crmify_for(sandbox, **FAST_SANDBOX), AUTO_SYNC=False)
    yield sandbox
    cache.clear()


@pytest.fixture(scope="module")
def scripted_crm() -> Iterator[ScriptedCrm]:
    """One scripted CRM (``tests/scripted_crm.py``) for a test module; each test sets the answer it
    needs."""
    crm = ScriptedCrm()
    yield crm
    crm.stop()
