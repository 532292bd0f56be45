"""A loopback stand-in for the AWS front end of Amazon OpenSearch Service / OpenSearch Serverless.

:class:`SigV4Proxy` sits in front of a real OpenSearch node (or any HTTP server) and does what
the AWS endpoint does before a request reaches OpenSearch:

* it verifies the SigV4 ``Authorization`` header by recomputing the signature with botocore's
  own code (``SigV4Auth.canonical_request`` / ``string_to_sign`` / ``signature``) from exactly
  what was received: method, raw path, raw query, the headers named in ``SignedHeaders`` with
  their received values, the body and the ``X-Amz-Date`` of the request;
* it checks the credential scope (access key, region, service, date), the session token, the
  5-minute clock-skew window and, when present, that ``x-amz-content-sha256`` is the body's hash;
* in ``serverless`` mode it also requires a signed ``x-amz-content-sha256``, refuses signed
  hop-by-hop headers, and answers the APIs OpenSearch Serverless lacks the way Serverless does
  (404 with no body; 400 ``status_exception`` for ``refresh=true|wait_for``; 400
  ``illegal_argument_exception`` for custom document ids in TIMESERIES/VECTORSEARCH
  collections, per bulk item inside ``_bulk``). Sources: ``docs/opensearch-serverless.md``.

Everything else is forwarded to the upstream with the same method, path, query and body and the
end-to-end headers (not ``Authorization``, ``X-Amz-*`` or hop-by-hop ones); the upstream's
status, headers and body come back. ``accepted`` counts forwarded requests, ``forwarded`` lists
their ``(method, path)``, ``refused`` lists ``(reason, path)`` for every refusal (one per
refused bulk item too). Reasons: ``missing-authorization``, ``malformed-authorization``,
``access-key``, ``date``, ``expired``, ``not-yet-valid``, ``region``, ``service``,
``session-token``, ``signature``, ``content-sha256``, ``unsupported-api``, ``refresh-policy``,
``document-id``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from tests.helpers import ProxyHandler

CollectionType = Literal["SEARCH", "TIMESERIES", "VECTORSEARCH"]

MAX_SKEW = timedelta(minutes=5)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"

# RFC 7230 section 6.1: consumed by the first hop, never forwarded (nor verifiable behind one).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade"}
)  # fmt: skip

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/\s,]+)/"
    r"(?P<service>[^/\s,]+)/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;._-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)

_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

# Serverless: endpoints absent from "Supported operations and plugins in Amazon OpenSearch
# Serverless" and observed to answer 404 (see docs/opensearch-serverless.md).
_UNSUPPORTED_ROOT = frozenset(
    {"_cluster", "_nodes", "_tasks", "_snapshot", "_reindex", "_refresh", "_flush", "_forcemerge",
     "_stats", "_segments", "_recovery", "_cache", "_scripts", "_template", "_update_by_query",
     "_delete_by_query", "_shard_stores", "_render", "_upgrade", "_rethrottle"}
)  # fmt: skip
_UNSUPPORTED_INDEX_OPS = frozenset(
    {"_refresh", "_flush", "_forcemerge", "_stats", "_segments", "_recovery", "_cache",
     "_delete_by_query", "_update_by_query", "_open", "_close", "_shrink", "_split", "_clone",
     "_rollover", "_termvectors", "_mtermvectors", "_upgrade", "_shard_stores"}
)  # fmt: skip
_CAT_SUPPORTED = frozenset({"indices"})
_WRITE_OPS = frozenset({"_doc", "_create", "_update", "_bulk"})
_ID_INDEX_REASON = "Document ID is not supported in create/index operation request"
_ID_UPDATE_REASON = "Document ID is not supported in update operation request"


@dataclass(frozen=True)
class Refusal:
    """What the proxy answers instead of forwarding: status, body, headers and a reason code."""

    reason: str
    status: int
    body: bytes
    headers: dict[str, str]


def _json(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}


def opensearch_error(status: int, error_type: str, reason: str) -> dict[str, Any]:
    """An OpenSearch-shaped error body."""
    cause = {"type": error_type, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class _ReceivedSigV4Auth(SigV4Auth):
    """botocore's signer, made to sign exactly the headers the client listed in SignedHeaders
    (botocore would otherwise drop some, such as ``user-agent``, and add ``host``)."""

    def __init__(self, credentials: Credentials, service: str, region: str, signed: list[str]) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or ():
                header_map[name] = value
        return header_map


class SigV4Proxy:
    """A threaded HTTP server on 127.0.0.1 that verifies SigV4 and forwards to ``upstream_url``.

    ``serverless=True`` behaves like an OpenSearch Serverless collection of type ``collection``
    (``SEARCH`` by default; ``TIMESERIES`` and ``VECTORSEARCH`` refuse custom document ids).
    Use it as a context manager; ``url`` is where clients connect (and what they sign as host).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        access_key: str,
        secret_key: str,
        region: str,
        service: str,
        serverless: bool = False,
        session_token: str | None = None,
        collection: CollectionType = "SEARCH",
    ) -> None:
        self.upstream = urlsplit(upstream_url)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.service = service
        self.serverless = serverless
        self.session_token = session_token
        self.collection = collection
        self.accepted = 0
        self.forwarded: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(ProxyHandler):
            def _handle(self) -> None:
                body = self._body()
                refusal = proxy.verify(self.command, self.path, self.headers, body)
                if refusal is None and proxy.serverless:
                    refusal = proxy.serverless_refusal(self.command, self.path)
                    if (
                        refusal is None
                        and proxy.collection != "SEARCH"
                        and _operation(self.path)[1] == "_bulk"
                    ):
                        return self._reply(*proxy._bulk_without_ids(self, body))
                if refusal is not None:
                    proxy._count_refused(refusal.reason, self.path)
                    return self._reply(refusal.status, refusal.body, refusal.headers)
                proxy._count_accepted(self.command, self.path)
                self._reply(*proxy._forward(self, body))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="sigv4-proxy", daemon=True
        )

    def __enter__(self) -> SigV4Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    # -- bookkeeping -------------------------------------------------------------------------

    def _count_refused(self, reason: str, path: str) -> None:
        with self._lock:
            self.refused.append((reason, path))

    def _count_accepted(self, method: str, path: str) -> None:
        with self._lock:
            self.accepted += 1
            self.forwarded.append((method, path))

    def reasons(self) -> list[str]:
        """The reason codes of every refusal so far, in order."""
        with self._lock:
            return [reason for reason, _ in self.refused]

    # -- authentication ----------------------------------------------------------------------

    def _forbidden(self, reason: str, message: str) -> Refusal:
        if self.serverless:
            # Serverless answers 403 {"status","request-id","error":{"reason":"403 Forbidden",...}}
            # with x-aoss-response-hint; "message" is added so a test can tell the causes apart.
            payload: dict[str, Any] = {
                "status": 403,
                "request-id": str(uuid.uuid4()),
                "error": {"reason": "403 Forbidden", "type": "Forbidden"},
                "message": message,
            }
            status, body, headers = _json(403, payload, {"x-aoss-response-hint": "X01:gw-helper-deny"})
        else:
            status, body, headers = _json(403, {"message": message})
        return Refusal(reason, status, body, headers)

    def verify(
        self, method: str, raw_path: str, headers: Any, body: bytes, now: datetime | None = None
    ) -> Refusal | None:
        """The refusal for a request whose signature does not hold, or ``None`` when it does."""
        authorization = headers.get("Authorization")
        if not authorization:
            return self._forbidden(
                "missing-authorization",
                "Missing Authentication Token: the request has no Authorization header (it is not signed).",
            )
        match = _AUTHORIZATION.match(authorization.strip())
        if match is None:
            return self._forbidden(
                "malformed-authorization",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters of an AWS4-HMAC-SHA256 signature; got {authorization[:60]!r}.",
            )
        scope = match.groupdict()
        if scope["key"] != self.access_key:
            return self._forbidden(
                "access-key",
                f"The security token included in the request is invalid (unknown access key {scope['key']!r}).",
            )
        if scope["region"] != self.region:
            return self._forbidden(
                "region",
                f"Credential should be scoped to a valid region: credential scope region "
                f"{scope['region']!r}, expected {self.region!r}.",
            )
        if scope["service"] != self.service:
            return self._forbidden(
                "service",
                f"Credential should be scoped to correct service: {self.service!r} "
                f"(credential scope service {scope['service']!r}).",
            )
        amz_date = headers.get("X-Amz-Date")
        if not amz_date:
            return self._forbidden(
                "date", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        try:
            signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            return self._forbidden("date", f"X-Amz-Date {amz_date!r} is not an ISO 8601 basic timestamp.")
        if scope["date"] != amz_date[:8]:
            return self._forbidden(
                "date",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"{scope['date']!r} != {amz_date[:8]!r}.",
            )
        now = now or datetime.now(UTC)
        if signed_at < now - MAX_SKEW:
            return self._forbidden(
                "expired",
                f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)} "
                f"({now.strftime(SIGV4_TIMESTAMP)} - 5 min.)",
            )
        if signed_at > now + MAX_SKEW:
            return self._forbidden(
                "not-yet-valid",
                f"Signature not yet current: {amz_date} is still later than "
                f"{(now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)} ({now.strftime(SIGV4_TIMESTAMP)} + 5 min.)",
            )
        signed = scope["signed"].split(";")
        token = headers.get("X-Amz-Security-Token")
        if token != self.session_token:
            what = "is missing" if token is None else "does not match the credentials"
            return self._forbidden(
                "session-token",
                f"The security token included in the request is invalid: X-Amz-Security-Token {what}.",
            )
        content_sha256 = headers.get("X-Amz-Content-SHA256")
        if self.serverless:
            if content_sha256 is None or "x-amz-content-sha256" not in signed:
                return self._forbidden(
                    "content-sha256",
                    "OpenSearch Serverless requires a signed x-amz-content-sha256 header "
                    f"(present: {content_sha256 is not None}, signed: {'x-amz-content-sha256' in signed}).",
                )
            if content_sha256 == "UNSIGNED-PAYLOAD":
                return self._forbidden(
                    "content-sha256",
                    "x-amz-content-sha256 must be the SHA-256 of the payload, not UNSIGNED-PAYLOAD.",
                )
            hop = sorted(HOP_BY_HOP.intersection(signed))
            if hop:
                # the front end consumes hop-by-hop headers before verifying: they cannot be signed
                return self._forbidden(
                    "signature", f"{_SIGNATURE_MISMATCH} (signed hop-by-hop headers: {hop})"
                )
        if content_sha256 not in (None, "UNSIGNED-PAYLOAD", hashlib.sha256(body).hexdigest()):
            return self._forbidden(
                "content-sha256",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        if "host" not in signed:
            return self._forbidden("signature", f"{_SIGNATURE_MISMATCH} ('host' must be a signed header)")
        missing = [name for name in signed if headers.get(name) is None]
        if missing:
            return self._forbidden(
                "signature", f"{_SIGNATURE_MISMATCH} (signed headers not in the request: {missing})"
            )
        expected = self._signature(method, raw_path, headers, body, signed, amz_date, token)
        if expected != scope["signature"]:
            return self._forbidden("signature", _SIGNATURE_MISMATCH)
        return None

    def _signature(
        self,
        method: str,
        raw_path: str,
        headers: Any,
        body: bytes,
        signed: list[str],
        amz_date: str,
        token: str | None,
    ) -> str:
        request = AWSRequest(method=method, url=f"http://{headers.get('Host', '')}{raw_path}", data=body)
        for name in signed:
            for value in headers.get_all(name) or ():
                request.headers[name] = value
        request.context["timestamp"] = amz_date
        auth = _ReceivedSigV4Auth(
            Credentials(self.access_key, self.secret_key, token), self.service, self.region, signed
        )
        canonical = auth.canonical_request(request)
        return str(auth.signature(auth.string_to_sign(request, canonical), request))

    # -- what Serverless refuses -------------------------------------------------------------

    def serverless_refusal(self, method: str, raw_path: str) -> Refusal | None:
        """How OpenSearch Serverless answers an API it lacks (``None`` when it supports it)."""
        split = urlsplit(raw_path)
        segments = [unquote(s) for s in split.path.split("/") if s]
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        not_found = Refusal("unsupported-api", 404, b"", {})
        if not segments:
            return not_found  # GET / (info) and HEAD / (ping)
        first = segments[0]
        if first.startswith("_"):
            if first in _UNSUPPORTED_ROOT:
                return not_found
            if first == "_cat" and (len(segments) < 2 or segments[1] not in _CAT_SUPPORTED):
                return not_found
            if first == "_search" and len(segments) > 1 and segments[1] == "scroll":
                return not_found
            index_op = first
        else:
            index_op = segments[1] if len(segments) > 1 else ""
            if index_op in _UNSUPPORTED_INDEX_OPS:
                return not_found
            if index_op == "_search" and len(segments) > 2 and segments[2] == "scroll":
                return not_found
            if index_op == "_doc" and len(segments) > 2 and method == "POST":
                return not_found  # POST <index>/_doc/<id> is not in the supported list
        if index_op in _WRITE_OPS and method in ("PUT", "POST", "DELETE") and "refresh" in params:
            policy = params["refresh"] or "true"
            if policy in ("true", "wait_for"):
                status, payload, headers = _json(
                    400,
                    opensearch_error(400, "status_exception", f"{policy} refresh policy is not supported."),
                )
                return Refusal("refresh-policy", status, payload, headers)
        if self.collection != "SEARCH" and not first.startswith("_") and len(segments) > 2:
            reason = None
            if (index_op == "_doc" and method == "PUT") or index_op == "_create":
                reason = _ID_INDEX_REASON
            elif index_op == "_update":
                reason = _ID_UPDATE_REASON
            if reason is not None:
                status, payload, headers = _json(
                    400, opensearch_error(400, "illegal_argument_exception", reason)
                )
                return Refusal("document-id", status, payload, headers)
        return None

    def _bulk_without_ids(self, handler: ProxyHandler, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """TIMESERIES/VECTORSEARCH ``_bulk``: index/create items with an ``_id`` and update items
        fail alone (400 illegal_argument_exception); the rest go to the upstream in one bulk."""
        lines = [line for line in body.split(b"\n") if line.strip()]
        kept: list[bytes] = []
        slots: list[dict[str, Any] | None] = []  # None: answered by the upstream, in order
        position = 0
        while position < len(lines):
            action = json.loads(lines[position])
            op_type, meta = next(iter(action.items()))
            has_source = op_type != "delete"
            item_lines = lines[position : position + (2 if has_source else 1)]
            position += len(item_lines)
            reason = None
            if op_type in ("index", "create") and meta.get("_id") is not None:
                reason = _ID_INDEX_REASON
            elif op_type == "update":
                reason = _ID_UPDATE_REASON
            if reason is None:
                kept.extend(item_lines)
                slots.append(None)
                continue
            self._count_refused("document-id", handler.path)
            error = {"type": "illegal_argument_exception", "reason": reason}
            slots.append(
                {
                    op_type: {
                        "_index": meta.get("_index"),
                        "_id": meta.get("_id"),
                        "status": 400,
                        "error": error,
                    }
                }
            )
        self._count_accepted(handler.command, handler.path)
        answered: list[dict[str, Any]] = []
        took = 0
        if kept:
            status, upstream_body, headers = self._forward(handler, b"\n".join(kept) + b"\n")
            if status != 200:
                return status, upstream_body, headers
            result = json.loads(upstream_body)
            answered = list(result.get("items", []))
            took = int(result.get("took", 0))
        items = [slot if slot is not None else answered.pop(0) for slot in slots]
        errors = any(next(iter(item.values())).get("error") for item in items)
        return _json(200, {"took": took, "errors": errors, "items": items})

    # -- forwarding --------------------------------------------------------------------------

    def _forward(self, handler: ProxyHandler, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=60
        )
        connection_named = {v.strip().lower() for v in (handler.headers.get("Connection") or "").split(",")}
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in {"host", "authorization", "content-length"}
            and not name.lower().startswith("x-amz-")
            and name.lower() not in HOP_BY_HOP
            and name.lower() not in connection_named
        }
        try:
            connection.request(handler.command, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except OSError as error:
            return _json(502, {"message": f"upstream {self.upstream.geturl()} did not answer: {error}"})
        finally:
            connection.close()
        kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
        return response.status, answer, kept


def _operation(raw_path: str) -> tuple[str, str]:
    """``(index or '', operation)`` of a request path: ``/i/_bulk`` -> ``('i', '_bulk')``."""
    segments = [unquote(s) for s in urlsplit(raw_path).path.split("/") if s]
    if not segments:
        return "", ""
    if segments[0].startswith("_"):
        return "", segments[0]
    return segments[0], segments[1] if len(segments) > 1 else ""
