"""The wire layer: turns socket bytes into a ``Request`` and a ``Response`` back into bytes.

``SandboxHTTPServer`` (a ``ThreadingHTTPServer``, one thread per connection) is built by
``SandboxServer``; it hands each parsed request to ``SandboxServer.dispatch`` through the
``Dispatcher`` protocol. Two faults live here because only the wire can do them: dropping a
connection without answering, and holding a finished answer back (create timeout).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from .messages import Request, Response


class Dispatcher(Protocol):
    """What the wire layer needs from ``SandboxServer``."""

    log_requests: bool

    @property
    def stopping(self) -> bool: ...

    def dispatch(self, request: Request) -> Response: ...

    def pause(self, seconds: float) -> bool: ...


class SandboxHTTPServer(ThreadingHTTPServer):
    """Threaded server that remembers its open connections, so ``stop`` can cut them.

    Without that, a client's pooled keep-alive connection would keep being served by a
    stopped sandbox's handler thread, even after a new sandbox took over the port.
    """

    daemon_threads = True
    allow_reuse_address = True
    # The stdlib default backlog of 5 makes a burst of parallel connects wait a full second
    # for SYN retransmission; a concurrent sync worker pool would see that as latency.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: Dispatcher) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)


class RequestHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive like the real API, so pooled clients behave."""

    protocol_version = "HTTP/1.1"
    server_version = "crmify-sandbox/1.0"
    # Idle keep-alive connections are closed after this long (their thread ends with them).
    timeout = 60
    # Buffer writes so status line, headers and body leave in one segment: written apart, a
    # keep-alive client waits ~40 ms per call on Nagle + delayed ACK.
    wbufsize = 64 * 1024

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        # Quiet by default so test output stays readable; the CLI turns logging on.
        if self._app.log_requests:
            super().log_message(format, *args)

    @property
    def _app(self) -> Dispatcher:
        server = self.server
        assert isinstance(server, SandboxHTTPServer)
        return server.app

    def _serve(self) -> None:
        response = self._app.dispatch(self._read_request())
        if response.drop or self._app.stopping:
            # No status line, no headers: the client sees the connection closed on it.
            self.close_connection = True
            return
        if response.delay > 0 and self._app.pause(response.delay):
            self.close_connection = True  # the sandbox is stopping: give up silently
            return
        try:
            self._write(response)
        except (BrokenPipeError, ConnectionResetError):
            # Normal after a create timeout: the client gave up before the answer came.
            self.close_connection = True

    def _read_request(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        query: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(key.lower(), value)  # the first occurrence wins
        headers = {key.lower(): value for key, value in self.headers.items()}
        return Request(self.command, unquote(parts.path), query, headers, body)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()
