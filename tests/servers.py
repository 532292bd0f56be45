"""Real servers on loopback that record what they receive, for delivery and alert tests.

* :class:`SmtpSink` - an aiosmtpd SMTP server that keeps every message, parsed;
* :class:`HttpSink` - a threaded ``http.server`` that keeps every request and can be told to
  fail the next few requests (to test retries).

Both are context managers on a free 127.0.0.1 port and stop cleanly; ``wait_for`` polls because
delivery happens on the server's thread, not the test's.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from imagelabels.devstack.ports import free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server got it: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    def attachments(self) -> dict[str, bytes]:
        """File name -> decoded bytes of every attachment."""
        found: dict[str, bytes] = {}
        for part in self.message.iter_attachments():
            name = part.get_filename()
            payload = part.get_payload(decode=True)
            if name is not None and isinstance(payload, bytes):
                found[name] = payload
        return found

    def html(self) -> str:
        """The text/html body (decoded), or '' when there is none."""
        body = self.message.get_body(preferencelist=("html",))
        return "" if body is None else str(body.get_content())  # type: ignore[attr-defined]

    def text(self) -> str:
        """The text/plain body (decoded), or '' when there is none."""
        body = self.message.get_body(preferencelist=("plain",))
        return "" if body is None else str(body.get_content())  # type: ignore[attr-defined]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")


class SmtpSink:
    """An SMTP server (no TLS, no auth) that accepts every message and keeps it."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self._received: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self._received.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=self.host, port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._received)

    def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``n`` messages arrived; return them all."""
        _wait(lambda: len(self.messages) >= n, timeout, f"{n} message(s) at {self.host}:{self.port}")
        return self.messages


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the server got it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class _HttpState:
    requests: list[ReceivedRequest] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses to answer next, in order
    lock: threading.Lock = field(default_factory=threading.Lock)


class HttpSink:
    """An HTTP server that answers 200 ``ok`` to every request and records it.

    ``fail_next(k, status)`` makes the next ``k`` requests (any path) answer ``status`` instead.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self._state = _HttpState()
        state = self._state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with state.lock:
                    status = state.failures.pop(0) if state.failures else 200
                    state.requests.append(
                        ReceivedRequest(self.command, self.path, dict(self.headers.items()), body, status)
                    )
                # Like many servers, the error page echoes the request line (which may hold a token).
                answer = (
                    b"ok"
                    if status < 400
                    else f"failing on purpose: {status} {self.command} {self.path}".encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port or 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpSink:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HttpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, k: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``k`` requests, then 200 again."""
        with self._state.lock:
            self._state.failures.extend([status] * k)

    def fail_always(self, status: int = 500) -> None:
        """Answer ``status`` to every request from now on (a generous finite stand-in)."""
        self.fail_next(10_000, status)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def requests_to(self, prefix: str) -> list[ReceivedRequest]:
        """Requests whose path starts with ``prefix``."""
        return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests arrived; return them all."""
        _wait(lambda: len(self.requests) >= n, timeout, f"{n} request(s) at {self.url}")
        return self.requests
