"""Reusable fault tools for the fault-matrix tests: an Elasticsearch that goes away mid-run, a
labeler that deletes objects behind the pipeline's back, and the shared "nothing lost, nothing
duplicated" check.

:class:`ThrottlingProxy` (tests/helpers.py) answers 429s; :class:`OutageProxy` here takes the
service away altogether: connections refused (the listening socket is closed) or every request
answered ``503``, switched by the test or armed to trip on a chosen request, and back again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS, document_id, failure_id
from imagelabels.settings import INTERNAL_PREFIX
from tests.helpers import ProxyHandler

OutageMode = Literal["refused", "unavailable", "reply_lost"]
RequestMatcher = Callable[[str, str], bool]  # (method, path) -> trip the outage?

_ES_HEADERS = {"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch"}
_UNAVAILABLE = {
    "error": {"type": "unavailable_shards_exception", "reason": "the cluster is down (fault injected)"},
    "status": 503,
}


class OutageProxy:
    """An HTTP proxy in front of a real server that can be taken down and brought back mid-run.

    * ``refused``: the listening socket is closed, so new connections are refused by the kernel
      (the request that tripped the outage gets its connection dropped without an answer);
    * ``unavailable``: the proxy keeps listening and answers every request ``503``;
    * ``reply_lost`` (a blip, not an outage): the tripping request is forwarded - the server acts
      on it - but its answer is dropped with the connection; later requests pass again.

    :meth:`trip_on` arms the outage to start on the first request matching ``(method, path)``
    (that request is already refused), so a test can take the service away at an exact point of
    a run. Counters prove the fault happened: ``dropped`` (connections cut), ``unavailable``
    (503 answers), ``replies_lost``, ``outages`` (times it went down or blipped) and ``log``
    ((method, path, outcome) per request that reached the proxy).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.mode: OutageMode | None = None
        self.outages = 0
        self.dropped = 0
        self.unavailable = 0
        self.replies_lost = 0
        self.forwarded = 0
        self.log: list[tuple[str, str, str]] = []
        self._trip: tuple[RequestMatcher, OutageMode] | None = None
        self._lock = threading.Lock()
        self._server = self._listen(0)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._serve()

    # --- switching ----------------------------------------------------------------------------

    def go_down(self, mode: OutageMode = "refused") -> None:
        """Take the service away now."""
        with self._lock:
            self._go_down_locked(mode)

    def come_back(self) -> None:
        """Serve again (on the same port)."""
        with self._lock:
            if self.mode == "refused":
                self._server = self._listen(self.port)
                self._serve()
            self.mode = None
            self._trip = None

    def trip_on(self, matcher: RequestMatcher, mode: OutageMode = "refused") -> None:
        """Go down on the first request for which ``matcher(method, path)`` is true."""
        with self._lock:
            self._trip = (matcher, mode)

    @property
    def is_down(self) -> bool:
        return self.mode is not None

    def close(self) -> None:
        with self._lock:
            if self.mode != "refused":
                self._server.shutdown()
                self._server.server_close()
            self.mode = "refused"

    def __enter__(self) -> OutageProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _go_down_locked(self, mode: OutageMode) -> None:
        if self.mode is not None:
            return
        self.outages += 1
        self.mode = mode
        self._trip = None
        if mode == "refused":
            server = self._server

            def stop() -> None:
                server.shutdown()
                server.server_close()

            # shutdown() waits for serve_forever to return: never from a handler thread's stack
            stopper = threading.Thread(target=stop)
            stopper.start()
            stopper.join(timeout=10)

    def _decide(self, method: str, path: str) -> OutageMode | None:
        """What happens to one request: ``None`` to forward it, else the outage it meets."""
        with self._lock:
            if self.mode is None and self._trip is not None and self._trip[0](method, path):
                if self._trip[1] == "reply_lost":
                    self._trip = None
                    self.outages += 1
                    return "reply_lost"
                self._go_down_locked(self._trip[1])
            return self.mode

    def _listen(self, port: int) -> ThreadingHTTPServer:
        proxy = self

        class Handler(ProxyHandler):
            def _handle(self) -> None:
                body = self._body()
                outage = proxy._decide(self.command, self.path)
                if outage == "refused":  # cut without an answer; the listener is gone already
                    proxy._count("dropped", self.command, self.path)
                    self.close_connection = True
                    return
                if outage == "unavailable":
                    proxy._count("unavailable", self.command, self.path)
                    return self._reply(503, json.dumps(_UNAVAILABLE).encode(), _ES_HEADERS)
                response = self._forward(proxy.upstream, body)
                if outage == "reply_lost":  # the server did the work; the client never hears of it
                    response.read()
                    proxy._count("replies_lost", self.command, self.path)
                    self.close_connection = True
                    return
                proxy._count("forwarded", self.command, self.path)
                self._reply(response.status, response.read(), dict(response.getheaders()))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        return server

    def _serve(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _count(self, outcome: str, method: str, path: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)
            self.log.append((method, path, outcome))


def on_path(fragment: str, method: str | None = None) -> RequestMatcher:
    """A :meth:`OutageProxy.trip_on` matcher: requests whose path contains ``fragment``."""
    return lambda m, path: fragment in path and (method is None or m == method)


class DeletingLabeler:
    """A labeler wrapper that deletes S3 objects while the batch is being labeled.

    ``before_call`` maps the n-th ``label`` call (1-based) to keys deleted *before* that call
    runs: with one thread, deleting a later key during an earlier image's call removes it
    between its HEAD (all HEADs happen first) and its read. ``delete_own`` keys are deleted just
    before their own call, i.e. after preflight read them and before the labeler's service reads
    the ``S3Object``.
    """

    def __init__(
        self,
        inner: Any,
        s3: Any,
        bucket: str,
        *,
        before_call: dict[int, list[str]] | None = None,
        delete_own: Iterable[str] = (),
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.s3 = s3
        self.bucket = bucket
        self.before_call = before_call or {}
        self.delete_own = set(delete_own)
        self.calls: list[str] = []
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # wants_pixels, preferred_concurrency...
        return getattr(self.inner, name)

    def label(self, image: Any) -> Any:
        with self._lock:
            self.calls.append(image.obj.key)
            doomed = list(self.before_call.get(len(self.calls), []))
            if image.obj.key in self.delete_own:
                doomed.append(image.obj.key)
            for key in doomed:
                self.s3.delete_object(Bucket=self.bucket, Key=key)
                self.deleted.append(key)
        return self.inner.label(image)


# --- the shared assertion -------------------------------------------------------------------------


@dataclass
class Accounting:
    """Where every key ended: indexed (document id), failed (reason), or both/neither (bugs)."""

    indexed: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def _all_hits(es: Any, index: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    if not es.indices.exists(index=index):
        return []
    es.indices.refresh(index=index)
    response = es.search(index=index, query=query, size=1000)
    assert response["hits"]["total"]["value"] < 1000, "keep fault tests small"
    return list(response["hits"]["hits"])


def current_objects(s3: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every object under ``bucket``/``prefix`` now (our staging prefix excluded), HEADed."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(INTERNAL_PREFIX)]
    return {key: s3.head_object(Bucket=bucket, Key=key) for key in keys}


def assert_nothing_lost(
    es: Any, s3: Any, bucket: str, prefix: str, *, gone: Iterable[str] = ()
) -> Accounting:
    """Nothing lost, nothing duplicated, for every object under ``bucket``/``prefix``.

    * every object is indexed exactly once, under the deterministic id of its current version
      (bucket + key + version id, else ETag), **or** has a failure record with a stage and a
      reason in ``images-failures`` - never neither;
    * never both: a success clears the key's record (``clear_failures``), and a key that failed
      has no document (documents are written only for labeled images), so a key with both is a
      stale record;
    * no ``s3_location`` carries more than one document (0 duplicates);
    * every key in ``gone`` (uploaded, then deleted during the run) has a failure record and no
      document: a vanished object is reported, not silently dropped.

    :returns: the accounting, for test-specific checks (which reason, which keys).
    """
    objects = current_objects(s3, bucket, prefix)
    gone = set(gone)
    by_location: dict[str, list[str]] = {}
    for hit in _all_hits(es, INDEX_ALIAS, {"term": {"s3bucket": bucket}}):
        if hit["_source"]["s3key"].startswith(prefix):
            by_location.setdefault(hit["_source"]["s3_location"], []).append(hit["_id"])
    duplicates = {loc: ids for loc, ids in by_location.items() if len(ids) > 1}
    assert not duplicates, f"duplicated documents: {duplicates}"

    records = {
        hit["_source"]["s3key"]: hit["_source"]
        for hit in _all_hits(es, FAILURES_INDEX, {"term": {"s3bucket": bucket}})
        if hit["_source"]["s3key"].startswith(prefix)
    }
    accounting = Accounting()
    lost, both = [], []
    for key, head in objects.items():
        expected = document_id(bucket, key, head.get("VersionId"), str(head["ETag"]).strip('"'))
        ids = by_location.get(f"s3://{bucket}/{key}", [])
        record = records.get(key)
        if ids:
            assert ids == [expected], f"{key}: document {ids} is not the current version's {expected}"
            accounting.indexed[key] = expected
        if record is not None:
            assert record["reason"], f"{key}: failure record without a reason"
            assert record["stage"], f"{key}: failure record without a stage"
            accounting.failed[key] = record["reason"]
            accounting.records[key] = record
        if not ids and record is None:
            lost.append(key)
        if ids and record is not None:
            both.append(key)
    assert not lost, f"lost (neither indexed nor recorded as failed): {lost}"
    assert not both, f"indexed but still recorded as failed (stale record): {both}"
    for key in gone:
        assert key not in objects, f"{key} still exists"
        assert f"s3://{bucket}/{key}" not in by_location, f"{key}: deleted, yet indexed"
        assert key in records, f"{key}: deleted during the run and silently dropped (no record)"
        assert records[key]["reason"], key
        accounting.failed[key] = records[key]["reason"]
        accounting.records[key] = records[key]
    _assert_records_are_addressable(es, bucket, accounting.records)
    return accounting


def _assert_records_are_addressable(es: Any, bucket: str, records: dict[str, dict[str, Any]]) -> None:
    """Failure records live under the deterministic id the pipeline clears them by."""
    for key in records:
        assert es.exists(index=FAILURES_INDEX, id=failure_id(bucket, key)), key
