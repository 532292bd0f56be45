"""Elasticsearch over TLS with basic auth or an API key, through the Airflow connection.

noida-db speaks plain HTTP and does not check credentials, so a small TLS reverse proxy on
loopback stands in front of it: it presents a server certificate signed by a throw-away CA and
answers 401 unless the request carries the expected ``Authorization: Basic ...`` or
``Authorization: ApiKey ...``. The client under test is always the one
``clients.search_engine`` builds from an ``AIRFLOW_CONN_*`` variable, exactly as tasks do.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from imagelabels import clients

ES_USER = "imagelabels-ingest"
ES_PASSWORD = "tls-Pa55:w/rd@example"  # characters that must be URL-encoded in a connection URI
ES_API_KEY = base64.b64encode(b"key-id:tls-api-key-secret").decode()
INDEX = "tls-check"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization"}


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it, as PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_pki(folder: Path, name: str) -> Pki:
    """A fresh CA and a server certificate it signed (SAN: IP 127.0.0.1 and DNS localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"imagelabels test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


class TlsAuthProxy:
    """HTTPS on a free loopback port; forwards authorized requests to ``upstream`` (plain HTTP).

    Accepted: ``Basic base64(user:password)`` for ``basic`` and ``ApiKey <key>`` for ``api_key``;
    anything else gets a 401 with an Elasticsearch-shaped error body, like a secured cluster.
    """

    def __init__(self, upstream: str, pki: Pki, *, basic: tuple[str, str], api_key: str) -> None:
        target = urlsplit(upstream)
        accepted = {
            "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode(),
            f"ApiKey {api_key}",
        }
        self.seen: list[str] = []  # the scheme of every authorized request ("Basic", "ApiKey")
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorization = self.headers.get("Authorization", "")
                if authorization not in accepted:
                    error = {
                        "error": {"type": "security_exception", "reason": "unable to authenticate"},
                        "status": 401,
                    }
                    self._reply(
                        401,
                        [
                            ("Content-Type", "application/json"),
                            ("WWW-Authenticate", 'Basic realm="security"'),
                        ],
                        json.dumps(error).encode(),
                    )
                    return
                seen.append(authorization.split(" ", 1)[0])
                forward = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                connection = http.client.HTTPConnection(target.netloc, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=forward)
                    response = connection.getresponse()
                    answer = response.read()
                    headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
                finally:
                    connection.close()
                self._reply(response.status, headers, answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="tls-proxy", daemon=True)

    def __enter__(self) -> TlsAuthProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _write_pki(tmp_path_factory.mktemp("pki"), "trusted")


@pytest.fixture
def proxy(stack, pki: Pki) -> Iterator[TlsAuthProxy]:  # type: ignore[no-untyped-def]
    with TlsAuthProxy(stack.es_url, pki, basic=(ES_USER, ES_PASSWORD), api_key=ES_API_KEY) as running:
        yield running


def _use(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: str) -> Any:
    """Set ``AIRFLOW_CONN_<CONN_ID>`` and build the client the tasks would build from it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
    return clients.search_engine(conn_id)


def _json_conn(proxy: TlsAuthProxy, ca: Path, **auth: Any) -> str:
    extra: dict[str, Any] = {"verify_certs": True, "ca_certs": str(ca)}
    login = auth.pop("login", None)
    password = auth.pop("password", None)
    extra.update(auth)
    conn = {
        "conn_type": "elasticsearch",
        "host": "127.0.0.1",
        "port": proxy.port,
        "schema": "https",
        "login": login,
        "password": password,
        "extra": extra,
    }
    return json.dumps(conn)


def _index_and_search(es: Any, key: str) -> list[str]:
    """Index one document and search for it: both a write and a read through the proxy."""
    es.index(index=INDEX, id=key, document={"s3key": key, "label_names": ["Cat"]}, refresh="wait_for")
    hits = es.search(index=INDEX, query={"ids": {"values": [key]}})["hits"]["hits"]
    return [hit["_source"]["s3key"] for hit in hits]


def test_basic_auth_over_tls_from_a_json_connection(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = _use(
        monkeypatch, "es_tls_basic", _json_conn(proxy, pki.ca_cert, login=ES_USER, password=ES_PASSWORD)
    )
    assert _index_and_search(client, "basic/cat.jpg") == ["basic/cat.jpg"]
    assert set(proxy.seen) == {"Basic"}


def test_api_key_over_tls_from_a_json_connection(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = _use(monkeypatch, "es_tls_key", _json_conn(proxy, pki.ca_cert, api_key=ES_API_KEY))
    assert _index_and_search(client, "apikey/cat.jpg") == ["apikey/cat.jpg"]
    assert set(proxy.seen) == {"ApiKey"}


def test_basic_auth_over_tls_from_a_uri_connection(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The URI form: the scheme is the path (``/https``), extras are query parameters (strings),
    and the password is URL-encoded."""
    uri = (
        f"elasticsearch://{quote(ES_USER, safe='')}:{quote(ES_PASSWORD, safe='')}@127.0.0.1:{proxy.port}/https"
        f"?verify_certs=true&ca_certs={quote(str(pki.ca_cert), safe='')}"
    )
    client = _use(monkeypatch, "es_tls_uri", uri)
    assert _index_and_search(client, "uri/cat.jpg") == ["uri/cat.jpg"]
    assert proxy.seen == ["Basic"] * len(proxy.seen)
    assert proxy.seen


def test_api_key_over_tls_from_a_uri_connection(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    uri = (
        f"elasticsearch://127.0.0.1:{proxy.port}/https"
        f"?api_key={quote(ES_API_KEY, safe='')}&ca_certs={quote(str(pki.ca_cert), safe='')}"
    )
    client = _use(monkeypatch, "es_tls_key_uri", uri)
    assert _index_and_search(client, "uri-key/cat.jpg") == ["uri-key/cat.jpg"]
    assert set(proxy.seen) == {"ApiKey"}


def test_a_wrong_password_is_a_clear_401(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from imagelabels.engine import AuthorizationError

    client = _use(
        monkeypatch, "es_tls_wrong", _json_conn(proxy, pki.ca_cert, login=ES_USER, password="not-it")
    )
    with pytest.raises(AuthorizationError) as refused:
        client.search(index=INDEX)
    assert refused.value.status == 401
    assert refused.value.error_type == "security_exception"
    assert str(refused.value).endswith("401 security_exception: unable to authenticate")
    assert refused.value.body["error"]["reason"] == "unable to authenticate"
    assert "not-it" not in str(refused.value)
    assert proxy.seen == []


def test_without_credentials_the_cluster_answers_401(es, proxy, pki, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from imagelabels.engine import AuthorizationError

    client = _use(monkeypatch, "es_tls_anonymous", _json_conn(proxy, pki.ca_cert))
    with pytest.raises(AuthorizationError):
        client.info()


def test_a_certificate_from_an_untrusted_ca_is_refused(  # type: ignore[no-untyped-def]
    es, proxy, pki, tmp_path, monkeypatch
) -> None:
    from imagelabels.engine import EngineUnavailableError

    other = _write_pki(tmp_path / "other", "untrusted")
    client = _use(
        monkeypatch,
        "es_tls_untrusted",
        _json_conn(proxy, other.ca_cert, login=ES_USER, password=ES_PASSWORD, max_retries=0),
    )
    with pytest.raises(EngineUnavailableError) as refused:
        client.info()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert proxy.seen == []  # the handshake failed before any request was sent
