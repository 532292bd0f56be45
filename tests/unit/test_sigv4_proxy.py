"""SigV4Proxy: real SigV4 verification (botocore's code) and OpenSearch Serverless refusals.

The upstream is a loopback server that echoes every request as JSON (and answers ``_bulk`` the
way OpenSearch does), so a test can tell whether the proxy forwarded a request and what arrived.
Requests are signed with botocore's ``SigV4Auth`` and with opensearch-py's ``AWSV4SignerAuth``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from tests.servers import ReceivedRequest
from tests.sigv4_proxy import SigV4Proxy

ACCESS = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-1"
TOKEN = "session-token-example"


class JsonEcho:
    """An upstream that records each request and echoes it back as JSON."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        lock = threading.Lock()
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    echo.requests.append(
                        ReceivedRequest(self.command, self.path, dict(self.headers.items()), body, 200)
                    )
                if self.path.split("?")[0].endswith("_bulk"):
                    answer = json.dumps(_bulk_answer(body)).encode()
                else:
                    answer = json.dumps(
                        {
                            "method": self.command,
                            "path": self.path,
                            "body": body.decode(),
                            "acknowledged": True,
                        }
                    ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> JsonEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _bulk_answer(ndjson: bytes) -> dict[str, Any]:
    lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
    items, position = [], 0
    while position < len(lines):
        op_type, meta = next(iter(lines[position].items()))
        position += 1 if op_type == "delete" else 2
        status = 200 if op_type == "delete" else 201
        items.append(
            {
                op_type: {
                    "_index": meta.get("_index"),
                    "_id": meta.get("_id") or uuid.uuid4().hex,
                    "status": status,
                }
            }
        )
    return {"took": 3, "errors": False, "items": items}


@pytest.fixture
def upstream() -> Iterator[JsonEcho]:
    with JsonEcho() as echo:
        yield echo


def _proxy(upstream: JsonEcho, **options: Any) -> SigV4Proxy:
    settings: dict[str, Any] = {"access_key": ACCESS, "secret_key": SECRET, "region": REGION, "service": "es"}
    settings.update(options)
    return SigV4Proxy(upstream.url, **settings)


@pytest.fixture
def managed(upstream: JsonEcho) -> Iterator[SigV4Proxy]:
    with _proxy(upstream) as proxy:
        yield proxy


@pytest.fixture
def serverless(upstream: JsonEcho) -> Iterator[SigV4Proxy]:
    with _proxy(upstream, service="aoss", serverless=True) as proxy:
        yield proxy


def send(
    proxy: SigV4Proxy,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    secret: str = SECRET,
    access: str = ACCESS,
    region: str = REGION,
    service: str | None = None,
    token: str | None = None,
    content_sha256: bool | None = None,
    sign: bool = True,
    sent_body: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
) -> requests.Response:
    """Sign ``method path body`` with botocore's SigV4Auth and send it (``sent_body`` tampers)."""
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    request = AWSRequest(method=method, url=proxy.url + path, data=body, headers=headers)
    service = service or proxy.service
    if content_sha256 if content_sha256 is not None else service == "aoss":
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    if sign:
        SigV4Auth(Credentials(access, secret, token), service, region).add_auth(request)
    payload = body if sent_body is None else sent_body
    return requests.request(
        method, proxy.url + path, data=payload, headers=dict(request.headers.items()), timeout=30
    )


def forbidden(response: requests.Response, proxy: SigV4Proxy, reason: str, upstream: JsonEcho) -> str:
    """Assert a 403 for ``reason`` that never reached the upstream; return the message."""
    assert response.status_code == 403, response.text
    assert proxy.reasons()[-1] == reason
    assert upstream.requests == []
    assert proxy.accepted == 0
    return str(response.json()["message"])


# -- managed domain (service "es") -----------------------------------------------------------


def test_a_signed_get_is_forwarded(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    response = send(managed, "GET", "/images/_doc/abc?_source_includes=labels&realtime=true")
    assert response.status_code == 200
    assert response.json()["path"] == "/images/_doc/abc?_source_includes=labels&realtime=true"
    assert response.headers["Content-Type"].startswith("application/json")
    assert managed.accepted == 1
    assert managed.refused == []
    assert [(r.method, r.path) for r in upstream.requests] == [
        ("GET", "/images/_doc/abc?_source_includes=labels&realtime=true")
    ]


def test_a_signed_post_arrives_with_its_body_and_without_aws_headers(
    managed: SigV4Proxy, upstream: JsonEcho
) -> None:
    body = json.dumps(
        {"query": {"term": {"labels.name": "Cat"}}, "aggs": {"n": {"cardinality": {"field": "bucket"}}}}
    )
    response = send(managed, "POST", "/images/_search?size=0", body.encode())
    assert response.status_code == 200
    assert response.json()["body"] == body
    (received,) = upstream.requests
    assert received.body == body.encode()
    assert received.header("Content-Type") == "application/json"
    assert received.header("Authorization") is None
    assert received.header("X-Amz-Date") is None
    assert managed.forwarded == [("POST", "/images/_search?size=0")]


def test_a_head_request_is_forwarded(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    response = send(managed, "HEAD", "/images")
    assert response.status_code == 200
    assert upstream.requests[0].method == "HEAD"


def test_a_wrong_secret_key_does_not_match(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    message = forbidden(
        send(managed, "GET", "/images/_search", secret="not-the-secret"), managed, "signature", upstream
    )
    assert "signature we calculated does not match" in message


def test_an_unknown_access_key_is_refused(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    message = forbidden(send(managed, "GET", "/images", access="AKIDOTHER"), managed, "access-key", upstream)
    assert "AKIDOTHER" in message


def test_a_wrong_region_is_named(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    message = forbidden(send(managed, "GET", "/images", region="us-east-1"), managed, "region", upstream)
    assert "us-east-1" in message


def test_a_wrong_service_is_named(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    message = forbidden(send(managed, "GET", "/images", service="aoss"), managed, "service", upstream)
    assert "service: 'es'" in message


def test_a_signature_ten_minutes_old_has_expired(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    ten_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=ten_minutes_ago):
        response = send(managed, "GET", "/images")
    assert "Signature expired" in forbidden(response, managed, "expired", upstream)


def test_a_signature_from_the_future_is_not_yet_current(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=later):
        response = send(managed, "GET", "/images")
    assert "not yet current" in forbidden(response, managed, "not-yet-valid", upstream)


def test_a_signature_four_minutes_old_is_still_valid(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    four_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=4)
    with mock.patch("botocore.auth.get_current_datetime", return_value=four_minutes_ago):
        response = send(managed, "GET", "/images")
    assert response.status_code == 200


def test_an_unsigned_request_is_refused(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    message = forbidden(
        send(managed, "GET", "/images", sign=False), managed, "missing-authorization", upstream
    )
    assert "Authorization" in message


def test_a_garbled_authorization_header_is_refused(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    response = requests.get(
        managed.url + "/images", headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=30
    )
    forbidden(response, managed, "malformed-authorization", upstream)


def test_a_tampered_body_does_not_match(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    response = send(managed, "POST", "/images/_doc", b'{"bucket": "a"}', sent_body=b'{"bucket": "b"}')
    forbidden(response, managed, "signature", upstream)


def test_a_tampered_body_under_a_content_hash_is_caught(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    response = send(
        managed, "POST", "/images/_doc", b'{"bucket": "a"}', sent_body=b'{"bucket": "b"}', content_sha256=True
    )
    assert "x-amz-content-sha256" in forbidden(response, managed, "content-sha256", upstream)


def test_a_tampered_query_does_not_match(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    request = AWSRequest(method="GET", url=managed.url + "/images/_search?size=1", data=b"")
    SigV4Auth(Credentials(ACCESS, SECRET), "es", REGION).add_auth(request)
    response = requests.get(
        managed.url + "/images/_search?size=1000", headers=dict(request.headers.items()), timeout=30
    )
    forbidden(response, managed, "signature", upstream)


def test_a_session_token_is_required_and_checked(upstream: JsonEcho) -> None:
    with _proxy(upstream, session_token=TOKEN) as proxy:
        assert send(proxy, "GET", "/images").status_code == 403
        assert send(proxy, "GET", "/images", token="another-token").status_code == 403
        assert proxy.reasons() == ["session-token", "session-token"]
        assert upstream.requests == []
        assert send(proxy, "GET", "/images", token=TOKEN).status_code == 200
        assert proxy.accepted == 1


def test_a_token_is_refused_where_none_is_configured(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    forbidden(send(managed, "GET", "/images", token=TOKEN), managed, "session-token", upstream)


def test_an_unreachable_upstream_is_a_502(upstream: JsonEcho) -> None:
    with SigV4Proxy(
        "http://127.0.0.1:9", access_key=ACCESS, secret_key=SECRET, region=REGION, service="es"
    ) as proxy:
        response = send(proxy, "GET", "/images")
    assert response.status_code == 502


# -- OpenSearch Serverless (service "aoss") --------------------------------------------------


def test_serverless_forwards_a_request_with_a_signed_content_hash(
    serverless: SigV4Proxy, upstream: JsonEcho
) -> None:
    response = send(serverless, "POST", "/images/_search", b'{"query": {"match_all": {}}}')
    assert response.status_code == 200
    assert upstream.requests[0].body == b'{"query": {"match_all": {}}}'


def test_serverless_requires_x_amz_content_sha256(serverless: SigV4Proxy, upstream: JsonEcho) -> None:
    response = send(serverless, "POST", "/images/_search", b"{}", content_sha256=False)
    assert "x-amz-content-sha256" in forbidden(response, serverless, "content-sha256", upstream)
    assert response.json()["error"] == {"reason": "403 Forbidden", "type": "Forbidden"}
    assert response.headers["x-aoss-response-hint"] == "X01:gw-helper-deny"


def test_serverless_requires_the_content_hash_to_be_signed(
    serverless: SigV4Proxy, upstream: JsonEcho
) -> None:
    request = AWSRequest(method="POST", url=serverless.url + "/images/_search", data=b"{}")
    SigV4Auth(Credentials(ACCESS, SECRET), "aoss", REGION).add_auth(request)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"{}").hexdigest()  # added after signing
    response = requests.post(
        serverless.url + "/images/_search", data=b"{}", headers=dict(request.headers.items()), timeout=30
    )
    forbidden(response, serverless, "content-sha256", upstream)


class _SignEveryHeader(SigV4Auth):
    """A signer that, unlike botocore's, also signs hop-by-hop headers such as ``Connection``."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name, value in request.headers.items():
            header_map[name.lower()] = value
        return header_map


def test_serverless_refuses_a_signed_hop_by_hop_header(serverless: SigV4Proxy, upstream: JsonEcho) -> None:
    headers = {"Host": serverless.url.removeprefix("http://"), "Connection": "keep-alive"}
    request = AWSRequest(method="GET", url=serverless.url + "/images", data=b"", headers=headers)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"").hexdigest()
    _SignEveryHeader(Credentials(ACCESS, SECRET), "aoss", REGION).add_auth(request)
    assert "connection;" in request.headers["Authorization"]
    response = requests.get(serverless.url + "/images", headers=dict(request.headers.items()), timeout=30)
    assert "hop-by-hop" in forbidden(response, serverless, "signature", upstream)


def test_a_managed_domain_verifies_whatever_headers_were_signed(
    managed: SigV4Proxy, upstream: JsonEcho
) -> None:
    headers = {"Host": managed.url.removeprefix("http://"), "User-Agent": "signed-agent", "Accept": "*/*"}
    request = AWSRequest(method="GET", url=managed.url + "/images", data=b"", headers=headers)
    _SignEveryHeader(Credentials(ACCESS, SECRET), "es", REGION).add_auth(request)
    assert "user-agent" in request.headers["Authorization"]
    assert (
        requests.get(managed.url + "/images", headers=dict(request.headers.items()), timeout=30).status_code
        == 200
    )
    changed = {**dict(request.headers.items()), "User-Agent": "another-agent"}
    assert requests.get(managed.url + "/images", headers=changed, timeout=30).status_code == 403
    assert managed.reasons() == ["signature"]
    assert len(upstream.requests) == 1


def test_serverless_checks_the_signature_too(serverless: SigV4Proxy, upstream: JsonEcho) -> None:
    forbidden(send(serverless, "GET", "/images", secret="wrong"), serverless, "signature", upstream)
    assert send(serverless, "GET", "/images", service="es").status_code == 403
    assert serverless.reasons()[-1] == "service"


UNSUPPORTED = [
    ("GET", "/"),
    ("HEAD", "/"),
    ("POST", "/images/_refresh"),
    ("POST", "/_refresh"),
    ("GET", "/_cluster/health"),
    ("GET", "/_cluster/health/images"),
    ("GET", "/_cat/health"),
    ("GET", "/_cat/shards"),
    ("GET", "/_nodes"),
    ("POST", "/images/_delete_by_query"),
    ("POST", "/images/_update_by_query"),
    ("POST", "/_reindex"),
    ("POST", "/_search/scroll"),
    ("POST", "/images/_doc/abc"),
    ("GET", "/images/_stats"),
    ("POST", "/images/_forcemerge"),
    ("POST", "/images/_close"),
    ("GET", "/_template"),
    ("GET", "/_tasks"),
]


@pytest.mark.parametrize(("method", "path"), UNSUPPORTED)
def test_serverless_answers_404_for_an_api_it_lacks(
    serverless: SigV4Proxy, upstream: JsonEcho, method: str, path: str
) -> None:
    body = b'{"query": {"match_all": {}}}' if method == "POST" else b""
    response = send(serverless, method, path, body)
    assert response.status_code == 404
    assert response.content == b""
    assert serverless.refused == [("unsupported-api", path)]
    assert upstream.requests == []


SUPPORTED = [
    ("PUT", "/images", b'{"mappings": {"properties": {"labels": {"type": "nested"}}}}'),
    ("HEAD", "/images", b""),
    ("GET", "/images/_mapping", b""),
    ("PUT", "/images/_mapping", b'{"properties": {"bucket": {"type": "keyword"}}}'),
    ("PUT", "/_index_template/images", b'{"index_patterns": ["images-*"], "template": {}}'),
    ("POST", "/_aliases", b'{"actions": [{"add": {"index": "images-1", "alias": "images"}}]}'),
    ("PUT", "/images/_doc/abc", b'{"bucket": "a"}'),
    ("PUT", "/images/_doc/abc?refresh=false", b'{"bucket": "a"}'),
    ("PUT", "/images/_create/abc", b'{"bucket": "a"}'),
    ("POST", "/images/_doc", b'{"bucket": "a"}'),
    ("POST", "/images/_update/abc", b'{"doc": {"bucket": "b"}}'),
    ("GET", "/images/_doc/abc", b""),
    ("DELETE", "/images/_doc/abc", b""),
    (
        "POST",
        "/images/_search",
        b'{"aggs": {"d": {"date_histogram": {"field": "t", "calendar_interval": "day"}}}}',
    ),
    ("POST", "/images/_count", b'{"query": {"match_all": {}}}'),
    ("POST", "/images/_mget", b'{"ids": ["abc"]}'),
    ("POST", "/_bulk", b'{"index": {"_index": "images", "_id": "abc"}}\n{"bucket": "a"}\n'),
    ("GET", "/_cat/indices?format=json", b""),
    ("POST", "/images/_search/point_in_time?keep_alive=1m", b""),
    ("DELETE", "/images", b""),
]


@pytest.mark.parametrize(("method", "path", "body"), SUPPORTED)
def test_serverless_forwards_an_api_it_has(
    serverless: SigV4Proxy, upstream: JsonEcho, method: str, path: str, body: bytes
) -> None:
    response = send(serverless, method, path, body)
    assert response.status_code == 200, response.text
    assert serverless.refused == []
    assert [(r.method, r.path, r.body) for r in upstream.requests] == [(method, path, body)]


@pytest.mark.parametrize(
    ("method", "path", "policy"),
    [
        ("PUT", "/images/_doc/abc?refresh=true", "true"),
        ("PUT", "/images/_doc/abc?refresh", "true"),
        ("POST", "/_bulk?refresh=wait_for", "wait_for"),
        ("DELETE", "/images/_doc/abc?refresh=true", "true"),
        ("POST", "/images/_update/abc?refresh=wait_for", "wait_for"),
    ],
)
def test_serverless_refuses_a_refresh_policy(
    serverless: SigV4Proxy, upstream: JsonEcho, method: str, path: str, policy: str
) -> None:
    body = b"" if method == "DELETE" else b'{"index": {"_index": "images"}}\n{"a": 1}\n'
    response = send(serverless, method, path, body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "status_exception"
    assert response.json()["error"]["reason"] == f"{policy} refresh policy is not supported."
    assert serverless.refused == [("refresh-policy", path)]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        ("PUT", "/images/_doc/abc", "Document ID is not supported in create/index operation request"),
        (
            "PUT",
            "/images/_doc/abc?op_type=create",
            "Document ID is not supported in create/index operation request",
        ),
        ("PUT", "/images/_create/abc", "Document ID is not supported in create/index operation request"),
        ("POST", "/images/_create/abc", "Document ID is not supported in create/index operation request"),
        ("POST", "/images/_update/abc", "Document ID is not supported in update operation request"),
    ],
)
def test_a_timeseries_collection_refuses_custom_ids(
    upstream: JsonEcho, method: str, path: str, reason: str
) -> None:
    with _proxy(upstream, service="aoss", serverless=True, collection="TIMESERIES") as proxy:
        response = send(proxy, method, path, b'{"bucket": "a"}')
        assert response.status_code == 400
        assert response.json()["error"] == {
            "root_cause": [{"type": "illegal_argument_exception", "reason": reason}],
            "type": "illegal_argument_exception",
            "reason": reason,
        }
        assert proxy.refused == [("document-id", path)]
        assert upstream.requests == []
        assert send(proxy, "POST", "/images/_doc", b'{"bucket": "a"}').status_code == 200
        assert send(proxy, "DELETE", "/images/_doc/generated-id").status_code == 200


def test_a_timeseries_bulk_refuses_only_the_items_with_ids(upstream: JsonEcho) -> None:
    lines = [
        {"index": {"_index": "images", "_id": "abc"}},
        {"bucket": "a"},
        {"create": {"_index": "images"}},
        {"bucket": "b"},
        {"update": {"_index": "images", "_id": "abc"}},
        {"doc": {"bucket": "c"}},
        {"delete": {"_index": "images", "_id": "xyz"}},
        {"index": {"_index": "images"}},
        {"bucket": "d"},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with _proxy(upstream, service="aoss", serverless=True, collection="TIMESERIES") as proxy:
        response = send(proxy, "POST", "/_bulk", body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["errors"] is True
    statuses = [(op, item["status"]) for entry in answer["items"] for op, item in entry.items()]
    assert statuses == [("index", 400), ("create", 201), ("update", 400), ("delete", 200), ("index", 201)]
    assert (
        answer["items"][0]["index"]["error"]["reason"]
        == "Document ID is not supported in create/index operation request"
    )
    (received,) = upstream.requests
    forwarded = [json.loads(line) for line in received.body.splitlines()]
    assert forwarded == [lines[2], lines[3], lines[6], lines[7], lines[8]]
    assert proxy.refused == [("document-id", "/_bulk"), ("document-id", "/_bulk")]
    assert proxy.accepted == 1


def test_a_search_collection_bulk_keeps_custom_ids(serverless: SigV4Proxy, upstream: JsonEcho) -> None:
    body = b'{"index": {"_index": "images", "_id": "abc"}}\n{"bucket": "a"}\n'
    response = send(serverless, "POST", "/_bulk", body)
    assert response.json()["items"][0]["index"]["_id"] == "abc"
    assert upstream.requests[0].body == body


# -- opensearch-py's own signer --------------------------------------------------------------


def _client(
    proxy: SigV4Proxy, *, region: str = REGION, service: str | None = None, token: str | None = None
) -> Any:
    opensearchpy = pytest.importorskip("opensearchpy")
    auth = opensearchpy.AWSV4SignerAuth(Credentials(ACCESS, SECRET, token), region, service or proxy.service)
    host, port = proxy.url.removeprefix("http://").split(":")
    return opensearchpy.OpenSearch(
        hosts=[{"host": host, "port": int(port)}],
        http_auth=auth,
        connection_class=opensearchpy.RequestsHttpConnection,
        max_retries=0,
    )


def test_opensearch_py_requests_reach_a_managed_domain(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    client = _client(managed)
    assert client.info()["path"] == "/"
    assert client.indices.exists(index="images") is True
    client.index(index="images", id="abc", body={"bucket": "a"}, refresh=True)
    client.search(index=["images", "images-old"], body={"query": {"match_all": {}}}, params={"size": 3})
    client.indices.refresh(index="images")
    assert managed.refused == []
    assert [r.path for r in upstream.requests] == [
        "/",
        "/images",
        "/images/_doc/abc?refresh=true",
        "/images,images-old/_search?size=3",
        "/images/_refresh",
    ]
    assert json.loads(upstream.requests[2].body) == {"bucket": "a"}


def test_opensearch_py_with_a_session_token(upstream: JsonEcho) -> None:
    with _proxy(upstream, session_token=TOKEN) as proxy:
        assert _client(proxy, token=TOKEN).indices.exists(index="images") is True
        opensearchpy = pytest.importorskip("opensearchpy")
        with pytest.raises(opensearchpy.AuthorizationException):
            _client(proxy, token="stale").search(index="images", body={})
        assert proxy.reasons() == ["session-token"]


def test_opensearch_py_with_the_wrong_region_is_refused(managed: SigV4Proxy, upstream: JsonEcho) -> None:
    opensearchpy = pytest.importorskip("opensearchpy")
    with pytest.raises(opensearchpy.AuthorizationException):
        _client(managed, region="us-east-1").search(index="images", body={})
    assert managed.reasons() == ["region"]
    assert upstream.requests == []


def test_opensearch_py_against_serverless(serverless: SigV4Proxy, upstream: JsonEcho) -> None:
    opensearchpy = pytest.importorskip("opensearchpy")
    client = _client(serverless)
    client.indices.create(index="images", body={"mappings": {"properties": {"bucket": {"type": "keyword"}}}})
    client.index(index="images", id="abc", body={"bucket": "a"})
    client.bulk(body=[{"index": {"_index": "images", "_id": "def"}}, {"bucket": "b"}])
    client.count(index="images", body={"query": {"match_all": {}}})
    assert client.indices.exists(index="images") is True
    assert serverless.refused == []
    with pytest.raises(opensearchpy.NotFoundError):
        client.info()
    with pytest.raises(opensearchpy.NotFoundError):
        client.indices.refresh(index="images")
    with pytest.raises(opensearchpy.NotFoundError):
        client.cluster.health()
    with pytest.raises(opensearchpy.NotFoundError):
        client.delete_by_query(index="images", body={"query": {"match_all": {}}})
    with pytest.raises(opensearchpy.RequestError, match="refresh policy is not supported"):
        client.index(index="images", id="abc", body={"bucket": "a"}, refresh=True)
    assert client.ping() is False
    assert serverless.reasons() == ["unsupported-api"] * 4 + ["refresh-policy", "unsupported-api"]
    assert len(upstream.requests) == 5


def test_opensearch_py_signing_for_es_is_refused_by_serverless(
    serverless: SigV4Proxy, upstream: JsonEcho
) -> None:
    opensearchpy = pytest.importorskip("opensearchpy")
    with pytest.raises(opensearchpy.AuthorizationException):
        _client(serverless, service="es").search(index="images", body={})
    assert serverless.reasons() == ["service"]
