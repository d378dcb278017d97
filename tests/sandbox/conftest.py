"""Fixtures for the sandbox's own tests: the plugin's fixtures, a small HTTP client, and a webhook
receiver.

The plugin is imported rather than listed in ``pytest_plugins`` (deprecated outside the root
conftest). Everything here talks to a real server over real HTTP with ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@dataclass(frozen=True)
class Received:
    """One request the receiver got: headers with lower-cased names, the raw body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A site's webhook endpoint on a free local port (``http.server`` in a thread): records every
    request and answers each with the next of ``statuses`` (200 once they run out), after ``hold``
    seconds. ``port`` 0 picks a free one."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self.hold = 0.0
        self._cond = threading.Condition()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._cond:
                    receiver.received.append(Received("POST", self.path, headers, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._cond.notify_all()
                if receiver.hold:
                    receiver._released.wait(receiver.hold)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The endpoint, with a query string, as a site's full URL would have."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/crm/webhook/?site=demo"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(self.received)} of {count} webhook requests arrived"
                self._cond.wait(remaining)
            return list(self.received[:count])

    def close(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver for one test, closed after it."""
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture
def receiver_on() -> Iterator[Callable[[int], Receiver]]:
    """Starts a receiver on a given port when the test says (a site that comes up late)."""
    started: list[Receiver] = []

    def start(port: int) -> Receiver:
        started.append(Receiver(port))
        return started[-1]

    yield start
    for endpoint in started:
        endpoint.close()
