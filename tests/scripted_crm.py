"""A tiny real HTTP server that answers every request with what the test scripted: the CRM answers the
sandbox never gives (an HTML page, broken JSON, a body that echoes the credentials, a dropped connection).

Used by ``tests/test_bad_input.py`` (malformed answers) and ``tests/test_security.py`` (a CRM that quotes
the key back), through the ``scripted_crm`` fixture in ``tests/conftest.py``. Real sockets, so
``requests`` and ``urllib3`` take the same path as against Insightly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    """One scripted answer. ``drop`` closes the connection without a word; ``echo_auth`` appends the
    request's ``Authorization`` header to the body (a CRM that quotes the credentials back)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    echo_auth: bool = False


class ScriptedCrm:
    """The server: :meth:`script` its answers before a call; :attr:`requests` lists ``"METHOD /path"``."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[str] = []
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def _respond(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                crm.requests.append(f"{self.command} {self.path}")
                answer = crm.answers.get(self.command) or crm.answers.get("*") or Answer()
                if answer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                body = answer.body
                if answer.echo_auth:
                    body += f" (you sent {self.headers.get('Authorization')})".encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _respond

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the tests read what they need from crm.requests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v3.1/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, default: Answer, **by_method: Answer) -> None:
        """Answer ``default`` to every request, or ``by_method[method]`` (``GET=Answer(...)``)."""
        self.answers = {"*": default, **by_method}
        self.requests.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
