"""The one interface every part of the pipeline uses to read and write the search engine.

:class:`SearchEngine` speaks the Elasticsearch 8 client's keyword style (``search(index=...,
query=..., aggs=..., size=...)``), because that is how the queries of this project are written;
each implementation maps it onto its client (:mod:`.elastic`, :mod:`.opensearch`). Replies are
plain ``dict``\\ s and errors are :mod:`.errors` classes, so no caller knows which client it has.

Bulk writes are implemented here once (:meth:`SearchEngine.streaming_bulk`) on top of the raw
``_bulk`` call, so that chunking, per-item retries of 429/5xx and the per-item accounting are the
same on every engine (opensearch-py's helper cannot retry 5xx items, the Elasticsearch one can).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from imagelabels.engine.errors import EngineError, EngineUnavailableError, UnsupportedOperationError

RETRY_ON_STATUS = (429, 502, 503, 504)
MAX_CHUNK_BYTES = 10 * 1024 * 1024  # well under every engine's http.max_content_length


@dataclass(frozen=True)
class Capabilities:
    """What an engine offers beyond search and bulk; OpenSearch Serverless lacks several.

    Each missing one has a stated alternative in :class:`SearchEngine` (never a silent
    difference): see ``docs/opensearch-serverless.md``.
    """

    refresh: bool = True
    cluster_health: bool = True
    delete_by_query: bool = True
    shard_settings: bool = True
    aliases: bool = True
    reindex: bool = True
    #: OpenSearch Serverless: custom document ids exist only in SEARCH collections
    serverless: bool = False


class _Unknown:
    """Not asked yet (``None`` is an answer: no vector search)."""


_UNKNOWN = _Unknown()

FULL = Capabilities()
# docs/opensearch-serverless.md: no _refresh (nor ?refresh=true), _cluster/health,
# _delete_by_query/_reindex or shard settings; aliases and index templates are supported.
SERVERLESS = Capabilities(
    refresh=False,
    cluster_health=False,
    delete_by_query=False,
    shard_settings=False,
    reindex=False,
    serverless=True,
)


class _Indices:
    """``engine.indices.*``: the index-management calls, in the same keyword style."""

    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine

    def exists(self, *, index: str) -> bool:
        return self._engine._exists("indices.exists", index=index)

    def exists_alias(self, *, name: str, index: str | None = None) -> bool:
        if not self._engine.capabilities.aliases:
            return False
        args: dict[str, Any] = {"name": name}
        if index:
            args["index"] = index
        return self._engine._exists("indices.exists_alias", **args)

    def create(self, *, index: str, **body: Any) -> dict[str, Any]:
        if not self._engine.capabilities.shard_settings and "settings" in body:
            body["settings"] = {
                k: v
                for k, v in body["settings"].items()
                if k not in ("number_of_shards", "number_of_replicas", "auto_expand_replicas")
            }
            if not body["settings"]:
                del body["settings"]
        if not self._engine.capabilities.aliases and "aliases" in body:
            del body["aliases"]  # the index is named like the alias instead (see documents)
        return self._engine._call("indices.create", index=index, **body)

    def delete(self, *, index: str, **params: Any) -> dict[str, Any]:
        return self._engine._call("indices.delete", index=index, **params)

    def get(self, *, index: str, **params: Any) -> dict[str, Any]:
        return self._engine._call("indices.get", index=index, **params)

    def exists_index_template(self, *, name: str) -> bool:
        return self._engine._exists("indices.exists_index_template", name=name)

    def delete_index_template(self, *, name: str) -> dict[str, Any]:
        return self._engine._call("indices.delete_index_template", name=name)

    def put_mapping(self, *, index: str, **body: Any) -> dict[str, Any]:
        return self._engine._call("indices.put_mapping", index=index, **body)

    def get_mapping(self, *, index: str) -> dict[str, Any]:
        return self._engine._call("indices.get_mapping", index=index)

    def get_settings(self, *, index: str) -> dict[str, Any]:
        return self._engine._call("indices.get_settings", index=index)

    def put_settings(self, *, index: str, settings: dict[str, Any]) -> dict[str, Any]:
        return self._engine._call("indices.put_settings", index=index, settings=settings)

    def put_index_template(self, *, name: str, **body: Any) -> dict[str, Any]:
        return self._engine._call("indices.put_index_template", name=name, **body)

    def put_alias(self, *, index: str, name: str, **body: Any) -> dict[str, Any]:
        if not self._engine.capabilities.aliases:
            raise UnsupportedOperationError(f"{self._engine.description} has no index aliases")
        return self._engine._call("indices.put_alias", index=index, name=name, **body)

    def get_alias(self, *, name: str) -> dict[str, Any]:
        return self._engine._call("indices.get_alias", name=name)

    def update_aliases(self, *, actions: list[dict[str, Any]]) -> dict[str, Any]:
        """Several alias changes in one atomic request (a reader never sees no alias)."""
        return self._engine._call("indices.update_aliases", actions=actions)

    def refresh(self, *, index: str | None = None) -> dict[str, Any]:
        """Make recent writes searchable now; on an engine without ``_refresh`` (Serverless,
        which refreshes on its own schedule) wait for its refresh interval instead."""
        if not self._engine.capabilities.refresh:
            time.sleep(self._engine.refresh_wait_s)
            return {}
        args = {"index": index} if index else {}
        return self._engine._call("indices.refresh", **args)


class SearchEngine(ABC):
    """A search engine reached through one client; subclasses translate calls and errors."""

    #: ``elasticsearch`` or ``opensearch``: for messages and the few mapping differences.
    flavor: str = ""

    def __init__(
        self,
        client: Any,
        *,
        description: str,
        capabilities: Capabilities = FULL,
        refresh_wait_s: float = 10.0,
    ) -> None:
        self.client = client
        self.description = description
        self.capabilities = capabilities
        self.refresh_wait_s = refresh_wait_s
        self.indices = _Indices(self)
        self._vector_kind: str | _Unknown | None = _UNKNOWN

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # --- the translation each client needs ------------------------------------------------

    @abstractmethod
    def _invoke(self, api: str, kwargs: dict[str, Any]) -> Any:
        """Call ``api`` (``search``, ``indices.create``...) on the client; return its raw reply."""

    @abstractmethod
    def _translate(self, error: Exception) -> EngineError | None:
        """Our error for one of the client's exceptions (``None``: not a client exception)."""

    def _raw(self, api: str, **kwargs: Any) -> Any:
        if "refresh" in kwargs and not self.capabilities.refresh:
            # Serverless refuses the parameter; writes become searchable on their own schedule
            kwargs.pop("refresh")
        try:
            return self._invoke(api, kwargs)
        except Exception as error:
            ours = self._translate(error)
            if ours is None:
                raise
            raise ours from error

    def _call(self, api: str, **kwargs: Any) -> dict[str, Any]:
        """One API call; the reply as a plain ``dict`` (elasticsearch-py wraps it)."""
        reply = self._raw(api, **kwargs)
        body = getattr(reply, "body", reply)
        return dict(body) if isinstance(body, dict) else {"result": body}

    def _exists(self, api: str, **kwargs: Any) -> bool:
        """A HEAD call: elasticsearch-py answers an object that is truthy, opensearch-py a bool."""
        return bool(self._raw(api, **kwargs))

    # --- document and search calls --------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self._call("info")

    def search(self, *, index: str, **body: Any) -> dict[str, Any]:
        return self._call("search", index=index, **body)

    def count(self, *, index: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("count", index=index, **({"query": query} if query is not None else {}))

    def get(self, *, index: str, id: str, **params: Any) -> dict[str, Any]:
        return self._call("get", index=index, id=id, **params)

    def exists(self, *, index: str, id: str) -> bool:
        return self._exists("exists", index=index, id=id)

    def index(self, *, index: str, document: dict[str, Any], **params: Any) -> dict[str, Any]:
        return self._call("index", index=index, document=document, **params)

    def create(self, *, index: str, id: str, document: dict[str, Any], **params: Any) -> dict[str, Any]:
        return self._call("create", index=index, id=id, document=document, **params)

    def update(self, *, index: str, id: str, **body: Any) -> dict[str, Any]:
        return self._call("update", index=index, id=id, **body)

    def delete(self, *, index: str, id: str, **params: Any) -> dict[str, Any]:
        return self._call("delete", index=index, id=id, **params)

    def reindex(self, *, source_index: str, dest_index: str) -> dict[str, Any]:
        """Copy every document of ``source_index`` into ``dest_index`` (same ids), waiting."""
        if not self.capabilities.reindex:
            raise UnsupportedOperationError(
                f"{self.description} has no _reindex: copy {source_index} into {dest_index} with a "
                "client-side reindex (search_after + _bulk) and move the alias, then rerun"
            )
        reply = self._call(
            "reindex",
            source={"index": source_index},
            dest={"index": dest_index},
            wait_for_completion=True,
            refresh=True,
        )
        if reply.get("failures"):
            raise EngineError(f"reindex {source_index} -> {dest_index} failed: {reply['failures'][:3]}")
        return reply

    def bulk(self, *, operations: list[dict[str, Any]] | str, **params: Any) -> dict[str, Any]:
        """``_bulk`` with its lines as dicts, or already serialized as NDJSON text (both clients
        send a string body as it is)."""
        return self._call("bulk", operations=operations, **params)

    def require_custom_ids(self, index: str, document: dict[str, Any]) -> None:
        """Fail at start when the engine refuses documents with our own ids: a Serverless
        TIMESERIES or VECTORSEARCH collection. Deterministic ids are how reruns never duplicate,
        so the pipeline needs a SEARCH collection (checked by writing and deleting ``document``
        under a fixed id; it must fit ``index``'s mapping)."""
        if not self.capabilities.serverless:
            return
        probe = "imagelabels-id-probe"
        try:
            self.index(index=index, id=probe, document=document)
        except EngineError as error:
            if "Document ID is not supported" in str(error):
                raise UnsupportedOperationError(
                    f"{self.description} refuses custom document ids ({error.reason or error}): the "
                    "pipeline's deterministic ids need a SEARCH collection, not TIMESERIES or "
                    "VECTORSEARCH",
                    status=error.status,
                    error_type=error.error_type,
                ) from error
            raise
        self.delete(index=index, id=probe)

    def cluster_health(self, *, index: str | None = None, **params: Any) -> dict[str, Any] | None:
        """``_cluster/health`` (``None`` where the engine has none: Serverless is managed)."""
        if not self.capabilities.cluster_health:
            return None
        return self._call("cluster.health", **({"index": index} if index else {}), **params)

    def delete_by_query(
        self, *, index: str, query: dict[str, Any], refresh: bool = False, conflicts: str = "proceed"
    ) -> dict[str, Any]:
        """Delete every document matching ``query``; where the engine has no
        ``_delete_by_query`` (Serverless), page through the ids and delete them in bulk."""
        if self.capabilities.delete_by_query:
            return self._call(
                "delete_by_query", index=index, query=query, refresh=refresh, conflicts=conflicts
            )
        deleted = failures = 0
        while True:
            hits = self.search(index=index, query=query, source=False, size=1000)["hits"]["hits"]
            if not hits:
                break
            actions = [{"_op_type": "delete", "_index": h["_index"], "_id": h["_id"]} for h in hits]
            for ok, _item in self.streaming_bulk(actions):
                deleted += ok
                failures += not ok
            if failures:
                break
            self.indices.refresh(index=index)
        return {"deleted": deleted, "failures": [{"count": failures}] if failures else []}

    # --- vector search ---------------------------------------------------------------------

    @property
    def vector_kind(self) -> str | None:
        """How this engine indexes vectors for k-nearest-neighbour search: ``dense_vector``
        (Elasticsearch), ``knn_vector`` (OpenSearch with the k-NN plugin) or ``None`` (none:
        similarity questions then find candidates by hash bands). Asked of the engine once."""
        if isinstance(self._vector_kind, _Unknown):
            self._vector_kind = self._probe_vector_kind()
        return self._vector_kind

    def _probe_vector_kind(self) -> str | None:
        return None

    def indexed_vector_field(self, index: str, field: str) -> bool:
        """Whether ``field`` is a searchable vector in every index behind ``index``: an index
        created before the engine could search vectors (or on another engine) keeps it stored only,
        and a k-NN question to it would fail."""
        path = field.split(".")
        mappings = self.indices.get_mapping(index=index)
        if not mappings:
            return False
        for mapping in mappings.values():
            node: Any = mapping.get("mappings", {})
            for name in path:
                node = (node.get("properties") or {}).get(name) or {}
            if node.get("type") not in ("dense_vector", "knn_vector"):
                return False
        return True

    def vector_search(
        self,
        *,
        field: str,
        vector: list[int],
        k: int,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The :meth:`search` keywords of "the ``k`` documents whose ``field`` is nearest to
        ``vector``, among those matching ``filter``". Only for an engine with a :attr:`vector_kind`."""
        raise UnsupportedOperationError(f"{self.description} has no vector search")

    # --- bulk ------------------------------------------------------------------------------

    def streaming_bulk(
        self,
        actions: Iterable[dict[str, Any]],
        *,
        chunk_size: int = 500,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        max_retries: int = 5,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        refresh: bool | str = False,
        in_flight: int = 1,
    ) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Send ``actions`` (``_op_type``, ``_index``, ``_id``, ``_source``) in chunks and yield
        ``(ok, {op_type: item})`` for every one of them, chunk by chunk in the order sent.

        Items answered 429/502/503/504 -- and whole requests answered so -- are sent again
        with exponential backoff up to ``max_retries`` times; other failures are yielded with
        their reason. A request that gets no answer at all raises
        :class:`~.errors.EngineUnavailableError` (the caller's task retries).

        ``in_flight`` > 1 keeps that many chunk requests open at once (threads; the next chunk
        is built while they run). One request keeps one engine write thread busy per shard
        while the client waits; two kept a 2-core OpenSearch node busy (``bulk_write``'s
        default, see :data:`imagelabels.engine.indexing.BULK_REQUESTS_IN_FLIGHT`). Memory stays
        bounded: at most ``in_flight`` chunks sent and one being built.
        """
        chunks = _chunks(actions, chunk_size, max_chunk_bytes)
        if in_flight <= 1:
            for chunk in chunks:
                yield from self._send_chunk(chunk, max_retries, initial_backoff, max_backoff, refresh)
            return

        def send(chunk: list[_Action]) -> list[tuple[bool, dict[str, Any]]]:
            return list(self._send_chunk(chunk, max_retries, initial_backoff, max_backoff, refresh))

        sent: deque[Future[list[tuple[bool, dict[str, Any]]]]] = deque()
        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="bulk") as pool:
            for chunk in chunks:  # built while the chunks already sent are being answered
                while len(sent) >= in_flight:
                    yield from sent.popleft().result()
                sent.append(pool.submit(send, chunk))
            while sent:
                yield from sent.popleft().result()

    def _send_chunk(
        self,
        chunk: list[_Action],
        max_retries: int,
        initial_backoff: float,
        max_backoff: float,
        refresh: bool | str,
    ) -> Iterator[tuple[bool, dict[str, Any]]]:
        pending = chunk
        for attempt in range(max_retries + 1):
            if attempt:
                time.sleep(min(max_backoff, initial_backoff * 2 ** (attempt - 1)))
            last = attempt == max_retries
            params: dict[str, Any] = {"refresh": refresh} if refresh else {}
            try:
                reply = self.bulk(operations="".join(action.text for action in pending), **params)
            except EngineError as error:
                if isinstance(error, EngineUnavailableError) and error.status is None:
                    raise
                if error.status in RETRY_ON_STATUS and not last:
                    continue
                for action in pending:
                    yield False, {action.op: _failed_item(action.lines, error)}
                return
            retry: list[_Action] = []
            for action, item in zip(pending, reply["items"], strict=True):
                op_type, info = next(iter(item.items()))
                status = info.get("status", 500)
                if 200 <= status < 300:
                    yield True, {op_type: info}
                elif status in RETRY_ON_STATUS and not last:
                    retry.append(action)
                else:
                    yield False, {op_type: info}
            if not retry:
                return
            pending = retry


def _failed_item(lines: list[dict[str, Any]], error: EngineError) -> dict[str, Any]:
    meta = next(iter(lines[0].values()))
    return {
        "_index": meta.get("_index"),
        "_id": meta.get("_id"),
        "status": error.status if error.status is not None else "N/A",
        "error": {"type": error.error_type or type(error).__name__, "reason": error.reason or str(error)},
    }


def expand_action(action: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A helper-style action (``_op_type``, ``_index``, ``_id``, ``_source``...) as bulk lines."""
    action = dict(action)
    op = action.pop("_op_type", "index")
    meta: dict[str, Any] = {key: action.pop(key) for key in ("_index", "_id") if key in action}
    if "_routing" in action:
        meta["routing"] = action.pop("_routing")
    if op == "delete":
        return op, [{op: meta}]
    if op == "update":
        source = action.pop("_source", None) or {k: v for k, v in action.items() if not k.startswith("_")}
        return op, [{op: meta}, source]
    source = action.pop("_source", None)
    if source is None:
        source = {k: v for k, v in action.items() if not k.startswith("_")}
    return op, [{op: meta}, source]


@dataclass(frozen=True)
class _Action:
    """One bulk action: its operation, its lines and those lines as NDJSON text, serialized once
    (the text both weighs the chunk and is the request body; serializing twice cost the client
    about as much CPU as the engine spent indexing the document)."""

    op: str
    lines: list[dict[str, Any]]
    text: str


def _ndjson(lines: list[dict[str, Any]]) -> str:
    # what both clients' serializers write: compact, UTF-8 kept as is
    return "".join(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in lines)


def _chunks(
    actions: Iterable[dict[str, Any]], chunk_size: int, max_chunk_bytes: int
) -> Iterator[list[_Action]]:
    chunk: list[_Action] = []
    size = 0
    for action in actions:
        op, lines = expand_action(action)
        text = _ndjson(lines)
        weight = len(text.encode("utf-8"))
        if chunk and (len(chunk) >= chunk_size or size + weight > max_chunk_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(_Action(op, lines, text))
        size += weight
    if chunk:
        yield chunk
