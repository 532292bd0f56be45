"""The stand-in's HTTP server: Rekognition's JSON 1.1 wire protocol on loopback.

The pipeline talks to it with the real boto3 ``rekognition`` client and ``endpoint_url``, so
request serialization, error parsing and botocore's retry modes are all the real ones. Each
connection gets its own thread; a request holds a lock only to count or take a quota token,
never while it waits out its latency, so a hundred concurrent callers with 150 ms of latency are
answered in about 150 ms each.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from imagelabels.devstack.standin.answers import ANSWERS, make_source
from imagelabels.devstack.standin.config import OPERATIONS, StandInConfig
from imagelabels.devstack.standin.errors import ERRORS, ServiceError
from imagelabels.devstack.standin.images import S3Reader, read_image
from imagelabels.devstack.standin.quota import Quotas
from imagelabels.devstack.standin.stats import Stats

log = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."
CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class Reply:
    """One answer: HTTP status, JSON body, and the error code when it is an error."""

    status: int
    body: dict[str, Any]
    error_code: str | None = None

    @classmethod
    def error(cls, error: ServiceError) -> Reply:
        return cls(error.status, error.body(), error.code)


class StandInService:
    """The protocol-independent part: quota, injected errors, image input, answers, latency, stats.

    :meth:`handle` is called concurrently from the connection threads.
    """

    def __init__(self, config: StandInConfig) -> None:
        self.config = config
        self.stats = Stats()
        self._quotas = Quotas(config)
        self._source = make_source(config)
        self._s3 = S3Reader(config)
        self._random = random.Random(config.seed)
        self._random_lock = threading.Lock()
        self._throttle_count = 0

    def reset(self) -> None:
        """Zero the counters and refill the quota buckets (a clean start for the next run)."""
        self.stats.reset()
        self._quotas.refill()

    def _draw(self) -> float:
        with self._random_lock:
            return self._random.random()

    def _throttle_error(self) -> ServiceError:
        choice = self.config.throttle_error
        if choice == "alternate":
            with self._random_lock:
                self._throttle_count += 1
                odd = self._throttle_count % 2 == 1
            choice = "ThrottlingException" if odd else "ProvisionedThroughputExceededException"
        return ServiceError(choice)

    def _injected_error(self, operation: str) -> ServiceError | None:
        rates = self.config.error_rates_for(operation)
        if not rates:
            return None
        draw, cumulative = self._draw(), 0.0
        for code, rate in rates.items():
            cumulative += rate
            if draw < cumulative:
                return ServiceError(code, f"{ERRORS[code][1]} (injected by the stand-in)")
        return None

    def _service_time(self) -> float:
        """Seconds a successful answer takes, from arrival."""
        jitter = self.config.jitter_ms * self._draw() if self.config.jitter_ms else 0.0
        return (self.config.latency_ms + jitter) / 1000

    def handle(self, target: str, body: bytes) -> Reply:
        """Answer one request for ``X-Amz-Target: target``."""
        arrived = time.monotonic()
        operation = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else ""
        if operation not in OPERATIONS:
            self.stats.unknown_operation()
            return Reply.error(ServiceError("UnknownOperationException", f"unknown operation {target!r}"))
        self.stats.arrived(operation)
        outcome = "other_errors"
        try:
            if not self._quotas.admit(operation):
                outcome = "throttled"
                return Reply.error(self._throttle_error())
            injected = self._injected_error(operation)
            if injected is not None:
                outcome = "injected_errors"
                return Reply.error(injected)
            answer = self._answer(operation, body)
            time.sleep(max(0.0, self._service_time() - (time.monotonic() - arrived)))
            outcome = "served"
            return Reply(200, answer)
        except ServiceError as error:
            return Reply.error(error)
        except Exception as error:  # a bug or a local model failure: answer like the service would
            log.exception("%s failed", operation)
            return Reply.error(ServiceError("InternalServerError", f"{type(error).__name__}: {error}"))
        finally:
            self.stats.finished(operation, outcome)

    def _answer(self, operation: str, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            raise ServiceError("SerializationException") from None
        if not isinstance(request, dict):
            raise ServiceError("SerializationException", "the request body must be a JSON object")
        data = read_image(request, self._s3, self.config)
        return ANSWERS[operation](self._source, request, data)


class _HTTPServer(ThreadingHTTPServer):
    """Threads per connection, a deep listen backlog for bursts, and a registry of open
    connections so :meth:`close_connections` can end idle keep-alive threads on stop."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], service: StandInService) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is normal under load tests and on stop.
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore pools its connections
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes: without NODELAY, Nagle's algorithm and the client's
        # delayed ACK add ~40 ms to answers on a reused connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict[str, Any], error_code: str | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_code:
            self.send_header("x-amzn-ErrorType", error_code)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/_reset"):
            self.server.service.reset()
            self._send(200, {"reset": True})
            return
        reply = self.server.service.handle(self.headers.get("X-Amz-Target", ""), body)
        self._send(reply.status, reply.body, reply.error_code)

    def do_GET(self) -> None:
        if self.path.startswith("/_stats"):
            self._send(200, self.server.service.stats.snapshot())
        elif self.path.startswith("/_health"):
            self._send(200, {"ok": True, "labels": self.server.service.config.labels, "pid": os.getpid()})
        else:
            self._send(404, {"__type": "UnknownOperationException", "Message": f"GET {self.path}"})


class StandInServer:
    """The stand-in in a background thread of this process (tests); use as a context manager.

    It binds its port on construction, so :attr:`url` is known before :meth:`start`. For
    benchmarks, run it in its own process instead (:func:`~imagelabels.devstack.standin.process.start_standin_process`)
    so it does not share the GIL with the client being measured.
    """

    def __init__(self, config: StandInConfig | None = None) -> None:
        self.config = config or StandInConfig()
        self.service = StandInService(self.config)
        self._http = _HTTPServer((self.config.host, self.config.port), self.service)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` to pass as the rekognition client's ``endpoint_url``."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandInServer:
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._http.serve_forever, name="standin", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (from another thread) or an interrupt."""
        try:
            self._http.serve_forever()
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, close every connection and the listening socket."""
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._close()

    def _close(self) -> None:
        self._http.close_connections()
        self._http.server_close()

    def stats(self) -> dict[str, Any]:
        """What ``GET /_stats`` answers."""
        return self.service.stats.snapshot()

    def reset_stats(self) -> None:
        """What ``POST /_reset`` does: zero the counters and refill the quota buckets."""
        self.service.reset()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
