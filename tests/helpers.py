"""Test servers that stand in for misbehaving services, on loopback."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import SplitResult, urlsplit


class ProxyHandler(BaseHTTPRequestHandler):
    """What the test proxies share: quiet logs, the request body, replies with a correct length,
    and forwarding a request to an upstream server (the response is returned, not yet sent)."""

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, upstream: SplitResult, body: bytes) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        connection.request(self.command, self.path, body=body or None, headers=headers)
        return connection.getresponse()


class ThrottlingProxy:
    """An HTTP proxy in front of a real Elasticsearch (noida-db) that rejects bulk requests.

    ``reject_items`` bulk requests are answered the way a busy cluster does: HTTP 200 with every
    item refused as ``429 es_rejected_execution_exception``. ``reject_requests`` bulk requests are
    answered with a whole-request 429. Everything else is forwarded unchanged. ``hold_bulk_s``
    holds every bulk request that long before answering, so that requests sent side by side are
    open at the same time; ``most_bulk_open`` is the most that were.
    """

    def __init__(
        self, upstream: str, *, reject_items: int = 0, reject_requests: int = 0, hold_bulk_s: float = 0.0
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.reject_items = reject_items
        self.reject_requests = reject_requests
        self.hold_bulk_s = hold_bulk_s
        self.bulk_requests = 0
        self.bulk_open = self.most_bulk_open = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(ProxyHandler):
            def _handle(self) -> None:
                body = self._body()
                if "_bulk" not in self.path:
                    response = self._forward(proxy.upstream, body)
                    return self._reply(response.status, response.read(), dict(response.getheaders()))
                with proxy._lock:
                    proxy.bulk_requests += 1
                    proxy.bulk_open += 1
                    proxy.most_bulk_open = max(proxy.most_bulk_open, proxy.bulk_open)
                try:
                    time.sleep(proxy.hold_bulk_s)
                    self._bulk(body)
                finally:
                    with proxy._lock:
                        proxy.bulk_open -= 1

            def _bulk(self, body: bytes) -> None:
                with proxy._lock:
                    reject_request = proxy.reject_requests > 0
                    reject_items = not reject_request and proxy.reject_items > 0
                    proxy.reject_requests -= reject_request
                    proxy.reject_items -= reject_items
                if reject_request:
                    error = {
                        "error": {"type": "es_rejected_execution_exception", "reason": "busy"},
                        "status": 429,
                    }
                    return self._reply(429, json.dumps(error).encode(), _ES_HEADERS)
                if reject_items:
                    return self._reply(200, json.dumps(_rejected_items(body)).encode(), _ES_HEADERS)
                response = self._forward(proxy.upstream, body)
                return self._reply(response.status, response.read(), dict(response.getheaders()))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


_ES_HEADERS = {"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch"}


def _rejected_items(ndjson: bytes) -> dict:
    items = []
    lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
    index = 0
    while index < len(lines):
        op_type, meta = next(iter(lines[index].items()))
        index += 1 if op_type == "delete" else 2
        items.append(
            {
                op_type: {
                    "_index": meta.get("_index"),
                    "_id": meta.get("_id"),
                    "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "queue full"},
                }
            }
        )
    return {"took": 1, "errors": True, "items": items}
