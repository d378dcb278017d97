"""pytest fixtures for testing code against the sandbox instead of a real Insightly account.

Enable with ``pytest -p crmify.sandbox.pytest_plugin`` or ``pytest_plugins = [...]`` in a root
``conftest.py``. ``insightly_sandbox`` is one server for the whole session (starting one per
test would cost a thread and a port each time); ``sandbox`` hands the same server to a test
after ``reset()`` and with its default faults restored, so every test starts clean. The HubSpot
sandbox comes the same way: ``hubspot_sandbox_session`` for the session, ``hubspot_sandbox`` clean
for each test (``BACKEND_OPTIONS['API_URL']`` is its ``url``, the token its ``token``)::

    def test_sync(sandbox, settings):
        settings.CRMIFY = {
            "BACKEND": "crmify.backends.insightly.InsightlyBackend",
            "BACKEND_OPTIONS": {"API_URL": sandbox.url},
            "BACKEND_AUTH": {"API_KEY": sandbox.api_key},
        }
        sandbox.set_faults(error_rate=0.5, seed=1)
        ...
        assert len(sandbox.leads()) == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from .core import BaseSandboxServer
from .hubspot import HubSpotSandbox
from .server import SandboxServer


@pytest.fixture(scope="session")
def insightly_sandbox() -> Iterator[SandboxServer]:
    """A running sandbox on a free local port, shared by the session; stopped at the end."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(insightly_sandbox: SandboxServer) -> SandboxServer:
    """The session sandbox, emptied, with fresh counters and quota and default faults."""
    return _cleaned(insightly_sandbox)


@pytest.fixture(scope="session")
def hubspot_sandbox_session() -> Iterator[HubSpotSandbox]:
    """A running HubSpot sandbox on a free local port, shared by the session; stopped at the end."""
    with HubSpotSandbox() as server:
        yield server


@pytest.fixture
def hubspot_sandbox(hubspot_sandbox_session: HubSpotSandbox) -> HubSpotSandbox:
    """The session's HubSpot sandbox, emptied, with fresh counters and limits and default faults."""
    return _cleaned(hubspot_sandbox_session)


_Server = TypeVar("_Server", bound=BaseSandboxServer)


def _cleaned(server: _Server) -> _Server:
    server.set_faults(server.default_faults)
    server.reset()
    return server
