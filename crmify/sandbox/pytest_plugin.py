"""pytest fixtures for testing code against the sandbox instead of a real Insightly account.

Enable with ``pytest -p crmify.sandbox.pytest_plugin`` or ``pytest_plugins = [...]`` in a root
``conftest.py``. ``insightly_sandbox`` is one server for the whole session (starting one per
test would cost a thread and a port each time); ``sandbox`` hands the same server to a test
after ``reset()`` and with its default faults restored, so every test starts clean::

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

import pytest

from .server import SandboxServer


@pytest.fixture(scope="session")
def insightly_sandbox() -> Iterator[SandboxServer]:
    """A running sandbox on a free local port, shared by the session; stopped at the end."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(insightly_sandbox: SandboxServer) -> SandboxServer:
    """The session sandbox, emptied, with fresh counters and quota and default faults."""
    insightly_sandbox.set_faults(insightly_sandbox.default_faults)
    insightly_sandbox.reset()
    return insightly_sandbox
