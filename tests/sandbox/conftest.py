"""Fixtures for the sandbox's own tests: the plugin's fixtures plus a small HTTP client.

The plugin is imported rather than listed in ``pytest_plugins`` (deprecated outside the root
conftest). Everything here talks to a real server over real HTTP with ``requests``.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from crmify.sandbox import SandboxServer
from crmify.sandbox.pytest_plugin import insightly_sandbox, sandbox  # noqa: F401


class Api:
    """``requests`` bound to one sandbox's base URL and key; paths are relative to /v3.1/."""

    def __init__(self, server: SandboxServer, key: str | None = None) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.auth = (key if key is not None else server.api_key, "")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.server.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return requests.request(method, self.server.control_url + path, **kwargs)


@pytest.fixture
def api(sandbox: SandboxServer) -> Api:  # noqa: F811 - the imported fixture, by design
    """A client for the clean session sandbox, with the per-second limit off so tests that
    make many calls are not slowed; the rate-limit tests turn it back on themselves."""
    sandbox.set_faults(requests_per_second=None)
    return Api(sandbox)


@pytest.fixture
def client_for() -> type[Api]:
    """The ``Api`` class, for tests that build their own server. Handed out as a fixture
    because importing from a conftest breaks under ``--import-mode=importlib``."""
    return Api
