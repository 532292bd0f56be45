"""Loopback servers that fail the ways that make a retry send twice, for the delivery tests.

* :class:`FlakySmtpSink` - :class:`tests.servers.SmtpSink` that can refuse some recipients
  (the others get the message), answer ``451`` to the next ``DATA`` commands (nothing stored), or
  store a message and hang up before answering (its ``250`` is lost);
* :class:`HangUpHttpServer` - reads a whole request, keeps it, and closes the connection without
  an answer (a proxy or server that died after the request arrived).

Both count exactly what they stored, so a test can assert "delivered once".
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.servers import SmtpSink


class FlakySmtpSink(SmtpSink):
    """An SMTP sink with failures: ``refuse`` (addresses answered ``550`` at RCPT),
    ``tempfail_data`` (next DATA commands answered ``451``, nothing stored) and
    ``hang_up_after_data`` (next messages stored, then the connection closed unanswered)."""

    def __init__(
        self, *, refuse: tuple[str, ...] = (), tempfail_data: int = 0, hang_up_after_data: int = 0
    ) -> None:
        super().__init__()
        self.refuse = refuse
        self.tempfail_data = tempfail_data
        self.hang_up_after_data = hang_up_after_data

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.tempfail_data > 0:
            self.tempfail_data -= 1
            return "451 4.3.0 try again later"
        answer = await super().handle_DATA(server, session, envelope)
        if self.hang_up_after_data > 0:
            self.hang_up_after_data -= 1
            server.transport.abort()  # stored, but the client never hears "250"
        return answer


@contextmanager
def smtp_connection(monkeypatch: pytest.MonkeyPatch, sink: SmtpSink) -> Iterator[SmtpSink]:
    """``sink`` running, with ``AIRFLOW_CONN_SMTP_DEFAULT`` pointing at it (as ``smtp_sink``)."""
    with sink:
        conn = {
            "conn_type": "smtp",
            "host": sink.host,
            "port": sink.port,
            "extra": {
                "from_email": "imagelabels@example.com",
                "disable_tls": True,
                "disable_ssl": True,
                "timeout": 10,
                "retry_limit": 0,
            },
        }
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))
        yield sink


class HangUpHttpServer:
    """Reads each request whole (headers and ``Content-Length`` body), keeps its path and body,
    and hangs up without answering."""

    def __init__(self) -> None:
        received: list[tuple[str, bytes]] = []
        self.received = received

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request_line = self.rfile.readline().decode("latin-1").split()
                length = 0
                while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                received.append((request_line[1] if len(request_line) > 1 else "", self.rfile.read(length)))

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HangUpHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
