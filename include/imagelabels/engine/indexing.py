"""Writing to the search engine: index setup, bulk writes with every item checked, failure records.

Bulk writes go through :meth:`SearchEngine.streaming_bulk` with per-item results: 429 and
5xx answers are retried with exponential backoff, a ``409`` on ``create`` means the document is
already there (a rerun), and any other per-item error is returned with its reason so the caller
can fail the task *after* the rest of the batch is indexed. Nothing is dropped silently.

:func:`other_versions` finds, in one search per batch, the documents of older versions of the
keys a batch writes, so the same bulk request can delete them (one document per current object).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagelabels.documents import (
    FAILURE_MAPPINGS,
    FAILURES_INDEX,
    INDEX_ALIAS,
    INDEX_TEMPLATE_NAME,
    INDEX_VERSION,
    failure_id,
    index_template,
    upgrade_mappings,
    versioned_index_name,
    with_derived_fields,
)
from imagelabels.engine import BadRequestError, EngineUnavailableError, SearchEngine
from imagelabels.settings import index_shards


def ensure_indices(es: SearchEngine) -> None:
    """Create (idempotently) the index template, the versioned index with its alias, and the
    failures index. Safe to call from every run; concurrent callers are tolerated.
    """
    # first, so that refused credentials fail on a plain index call (the vector probe below
    # degrades to bands on a refusal, which is right for a role without cluster rights only)
    ensure_index(es, FAILURES_INDEX, FAILURE_MAPPINGS, upgrade=False)  # upgraded just below
    template = index_template(index_shards(), es.vector_kind)
    es.indices.put_index_template(
        name=INDEX_TEMPLATE_NAME,
        index_patterns=template["index_patterns"],
        template=template["template"],
        priority=template["priority"],
        meta=template["_meta"],
    )
    concrete = versioned_index_name()
    try:
        if not es.indices.exists_alias(name=INDEX_ALIAS):
            if es.indices.exists(index=concrete):
                es.indices.put_alias(index=concrete, name=INDEX_ALIAS, is_write_index=True)
            else:
                es.indices.create(index=concrete, aliases={INDEX_ALIAS: {"is_write_index": True}})
        else:
            _migrate_older_index(es, concrete)
    except BadRequestError as error:
        if error.error_type != "resource_already_exists_exception":
            raise
    es.require_custom_ids(FAILURES_INDEX, {"stage": "probe", "reason": "id probe"})
    _upgrade_mappings(es)


def _migrate_older_index(es: SearchEngine, concrete: str) -> None:
    """Move the alias from an older ``images-vN`` to this version's index: create it (the
    template gives the new mapping), copy every document in this version's schema (same ids, so
    nothing is duplicated), then swap the alias in one atomic ``_aliases`` call."""
    current = sorted(es.indices.get_alias(name=INDEX_ALIAS))
    if current == [concrete] or concrete in current:
        return
    if not es.indices.exists(index=concrete):
        es.indices.create(index=concrete)
    for old in current:
        copy_documents(es, old, concrete)
    es.indices.update_aliases(
        actions=[{"remove": {"index": old, "alias": INDEX_ALIAS}} for old in current]
        + [{"add": {"index": concrete, "alias": INDEX_ALIAS, "is_write_index": True}}]
    )


def copy_documents(es: SearchEngine, source: str, dest: str, *, page_size: int = 500) -> int:
    """Copy every document of ``source`` into ``dest`` under the same id, adding the fields this
    version derives from a document's own content (``label_confidence`` from ``Labels``).

    Client-side (``search_after`` pages + bulk) rather than ``_reindex``: the derived fields need
    code that only Python has here, and OpenSearch Serverless has no ``_reindex``. A document
    that cannot be written fails the migration, naming it; the alias is then left where it was."""
    actions = (
        {
            "_op_type": "index",
            "_index": dest,
            "_id": hit["_id"],
            "_source": with_derived_fields(hit["_source"]),
        }
        for hit in sorted_hits(
            es, index=source, field="s3_location", query={"match_all": {}}, source=["*"], page_size=page_size
        )
    )
    outcome = bulk_write(es, actions, refresh=es.capabilities.refresh)
    if outcome.failures:
        first = outcome.failures[0]
        raise RuntimeError(
            f"copying {source} into {dest}: {len(outcome.failures)} document(s) failed, e.g. "
            f"{first.doc_id} ({first.status}: {first.reason}); the alias still points at {source}"
        )
    return outcome.created + outcome.updated


def ensure_index(es: SearchEngine, index: str, mappings: dict[str, Any], *, upgrade: bool = True) -> None:
    """Create a single-shard bookkeeping index (failures, alert state, delivery records) with its
    strict mapping if it is missing; concurrent creators are tolerated. With ``upgrade`` an
    existing index gets the fields added since it was created (additive mapping change)."""
    if es.indices.exists(index=index):
        if upgrade:
            es.indices.put_mapping(index=index, properties=mappings["properties"])
        return
    try:
        es.indices.create(
            index=index, settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"}, mappings=mappings
        )
    except BadRequestError as error:
        if error.error_type != "resource_already_exists_exception":
            raise


def _upgrade_mappings(es: SearchEngine) -> None:
    """Add fields introduced since an index was created (additive mapping changes are allowed on
    a live index); a conflicting change needs a reindex into the next ``images-vN``.

    ``visual.vector`` keeps the kind an index was created with (a stored vector cannot become a
    k-NN one in place); an index without it gets it stored only."""
    upgrades = [
        (INDEX_ALIAS, index, upgrade_mappings(mapping.get("mappings", {})))
        for index, mapping in es.indices.get_mapping(index=INDEX_ALIAS).items()
    ]
    for name, index, mappings in [*upgrades, (FAILURES_INDEX, FAILURES_INDEX, FAILURE_MAPPINGS)]:
        try:
            es.indices.put_mapping(index=index, properties=mappings["properties"])
        except BadRequestError as error:
            raise RuntimeError(
                f"the mapping of {name!r} conflicts with this version's schema ({error.message}); "
                f"reindex into {versioned_index_name(INDEX_VERSION + 1)!r} and move the alias"
            ) from error


def require_writable(es: SearchEngine, index: str = INDEX_ALIAS) -> None:
    """Fail at once, before any paid labeling call, when ``index`` has a primary shard that no
    node holds (cluster health red): its writes could only time out item by item. Yellow (a
    replica missing, e.g. one node of three down) still takes every write. Engines without a
    health API (OpenSearch Serverless, managed by AWS) are not asked."""
    health = es.cluster_health(index=index)
    if health is None or health.get("status") != "red":
        return
    raise EngineUnavailableError(
        f"{es.description}: cluster health is red for {index!r} "
        f"({health.get('unassigned_shards', '?')} unassigned shard(s), "
        f"{health.get('active_primary_shards', '?')} active primary shard(s), "
        f"{health.get('number_of_nodes', '?')} node(s)): a primary shard has no node, so writes would "
        "fail. Nothing was labeled; bring the node back (or restore the shard) and rerun this task.",
        status=503,
        error_type="cluster_red",
    )


def existing_ids(es: SearchEngine, ids: Sequence[str], index: str = INDEX_ALIAS) -> set[str]:
    """Which of ``ids`` are already indexed (an ``ids`` query works across an alias that spans
    two indices during a reindex, unlike ``mget``)."""
    if not ids:
        return set()
    response = es.search(
        index=index,
        query={"ids": {"values": list(ids)}},
        source=False,
        size=len(ids),
    )
    return {hit["_id"] for hit in response["hits"]["hits"]}


def sorted_hits(
    es: Any,
    *,
    index: str,
    field: str,
    query: dict[str, Any],
    source: list[str],
    page_size: int,
    on_page: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query`` in ascending order of the keyword ``field``, one page at a time.

    Paged with ``search_after`` on ``field`` alone: Elasticsearch 8 refuses to sort on ``_id``
    and a point in time would need cleaning up. Several documents may share a value (versions of
    one key), so a full page holds back its last value's hits and the next page starts *after*
    the value before it: a group is never split across pages. A page that is one group only
    (more versions of one key than a page holds) is asked for again, twice as large.
    ``on_page`` is called after every request (for page counts in logs).
    """
    after: list[Any] | None = None
    size = page_size
    while True:
        extra = {"search_after": after} if after is not None else {}
        response = es.search(
            index=index,
            query=query,
            # an index without the field (a drifted mapping) has no hits rather than an error
            sort=[{field: {"order": "asc", "unmapped_type": "keyword"}}],
            size=size,
            source=source,
            track_total_hits=False,
            **extra,
        )
        if on_page is not None:
            on_page()
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        if len(hits) < size:
            yield from hits
            return
        last = hits[-1]["sort"][0]
        complete = [hit for hit in hits if hit["sort"][0] != last]
        if not complete:
            size *= 2
            continue
        yield from complete
        after = [complete[-1]["sort"][0]]
        size = page_size


@dataclass(frozen=True, slots=True)
class FailureRef:
    """One failure record: whether the key's last attempt failed for good, and when."""

    key: str
    record_id: str
    retryable: bool
    reason: str = ""
    failed_at: datetime | None = None


def iter_failures(
    es: Any,
    bucket: str,
    prefix: str,
    *,
    page_size: int,
    on_page: Callable[[], None] | None = None,
) -> Iterator[FailureRef]:
    """The failure records of ``s3://bucket/prefix``, sorted by key (one record per key): what
    reconciliation judges and what a "retry failed only" run labels again."""
    filters: list[dict[str, Any]] = [{"term": {"s3bucket": bucket}}]
    if prefix:
        filters.append({"prefix": {"s3key": prefix}})
    hits = sorted_hits(
        es,
        index=FAILURES_INDEX,
        field="s3key",
        query={"bool": {"filter": filters}},
        source=["retryable", "reason", "failed_at"],
        page_size=page_size,
        on_page=on_page,
    )
    for hit in hits:
        source = hit.get("_source") or {}
        yield FailureRef(
            key=str(hit["sort"][0]),
            record_id=hit["_id"],
            retryable=bool(source.get("retryable", True)),
            reason=str(source.get("reason") or ""),
            failed_at=parse_time(source.get("failed_at")),
        )


def parse_time(value: Any) -> datetime | None:
    """A stored ISO date-time (UTC when it names no zone), ``None`` when absent."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A document of one version of a key: what deciding which version is newest needs."""

    key: str
    doc_id: str
    index: str
    last_modified: datetime | None


def other_versions(
    es: SearchEngine,
    bucket: str,
    keys: Collection[str],
    exclude_ids: Collection[str],
    *,
    index: str = INDEX_ALIAS,
) -> dict[str, list[StoredVersion]]:
    """The documents of ``keys`` (of ``bucket``) other than ``exclude_ids``, per key.

    One ``terms`` search on ``s3_location`` for the whole batch, not a round trip per key; the
    page holds as many hits as there are keys (typically one older version per overwritten key
    at most), and more pages follow only when a batch finds more (:func:`sorted_hits`). Each hit
    names its concrete index, so a delete reaches it even while the alias spans two indices.
    """
    if not keys:
        return {}
    locations = sorted({f"s3://{bucket}/{key}" for key in keys})
    query: dict[str, Any] = {"bool": {"filter": [{"terms": {"s3_location": locations}}]}}
    if exclude_ids:
        query["bool"]["must_not"] = [{"ids": {"values": sorted(exclude_ids)}}]
    found: dict[str, list[StoredVersion]] = {}
    prefix = len(f"s3://{bucket}/")
    hits = sorted_hits(
        es,
        index=index,
        field="s3_location",
        query=query,
        source=["object.last_modified"],
        page_size=max(len(locations), 100),
    )
    for hit in hits:
        key = str(hit["sort"][0])[prefix:]
        described = (hit.get("_source") or {}).get("object") or {}
        found.setdefault(key, []).append(
            StoredVersion(
                key=key,
                doc_id=hit["_id"],
                index=hit.get("_index", index),
                last_modified=parse_time(described.get("last_modified")),
            )
        )
    return found


@dataclass(frozen=True)
class ItemFailure:
    """One document Elasticsearch refused, with its reason."""

    doc_id: str
    status: int | str
    reason: str


@dataclass
class BulkOutcome:
    """Per-item results of one bulk write."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    already_present: int = 0
    not_found: int = 0
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _reason(info: dict[str, Any]) -> str:
    error = info.get("error")
    if isinstance(error, dict):
        caused = error.get("caused_by", {}).get("reason")
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        return f"{text} (caused by: {caused})" if caused else text
    if "exception" in info:
        return f"{type(info['exception']).__name__}: {info['exception']}"
    return str(error or info)


BULK_REQUESTS_IN_FLIGHT = 2
"""Bulk requests ``bulk_write`` keeps open at once. With one, the client waits while one engine
write thread indexes the chunk, then the engine waits while the client builds the next: on one
2-core OpenSearch 2.19 node (20,000 documents, chunks of 500) two in flight wrote 6,226 docs/s
against 4,124 with one (``benchmarks/p3_bulk_indexing.py``); three gained nothing more there.
A pipeline batch is usually one chunk, so this matters for large writes (backfills, re-labeling,
the benchmarks); parallel mapped tasks already write side by side."""


def bulk_write(
    es: SearchEngine,
    actions: Iterable[dict[str, Any]],
    *,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    max_backoff: float = 60.0,
    chunk_size: int = 500,
    refresh: bool | str = False,
    in_flight: int = BULK_REQUESTS_IN_FLIGHT,
) -> BulkOutcome:
    """Send bulk actions and account for every item.

    :param actions: bulk actions (``_op_type``, ``_index``, ``_id``, ``_source``).
    :param refresh: passed to the bulk API (``"wait_for"`` in tests and the demo).
    :param in_flight: chunk requests open at once (1: one after the other, no thread).
    """
    outcome = BulkOutcome()
    results = es.streaming_bulk(
        actions,
        chunk_size=chunk_size,
        max_retries=max_retries,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        refresh=refresh,
        in_flight=in_flight,
    )
    for ok, item in results:
        op_type, info = next(iter(item.items()))
        status = info.get("status", "N/A")
        if ok:
            result = info.get("result")
            if result == "created":
                outcome.created += 1
            elif result == "deleted":
                outcome.deleted += 1
            elif result == "not_found":
                outcome.not_found += 1
            else:
                outcome.updated += 1
        elif op_type == "create" and status == 409:
            outcome.already_present += 1
        elif op_type == "delete" and status == 404:
            outcome.not_found += 1
        else:
            outcome.failures.append(ItemFailure(str(info.get("_id")), status, _reason(info)))
    return outcome


@dataclass(frozen=True)
class FailureRecord:
    """Why one key could not be indexed; kept in ``images-failures`` until a success clears it."""

    bucket: str
    key: str
    stage: str
    reason: str
    message: str
    retryable: bool


def record_failures(
    es: SearchEngine,
    failures: Sequence[FailureRecord],
    *,
    dag_id: str,
    run_id: str,
    failed_at: datetime,
    refresh: bool | str = False,
) -> BulkOutcome:
    """Upsert one record per failed key, counting attempts across runs."""
    if not failures:
        return BulkOutcome()
    ids = [failure_id(f.bucket, f.key) for f in failures]
    previous = es.search(
        index=FAILURES_INDEX,
        query={"ids": {"values": ids}},
        source=["attempts"],
        size=len(ids),
    )
    attempts = {hit["_id"]: int(hit["_source"].get("attempts", 0)) for hit in previous["hits"]["hits"]}
    actions = (
        {
            "_op_type": "index",
            "_index": FAILURES_INDEX,
            "_id": doc_id,
            "_source": {
                "s3bucket": f.bucket,
                "s3key": f.key,
                "stage": f.stage,
                "reason": f.reason,
                "message": f.message[:2000],
                "retryable": f.retryable,
                "attempts": attempts.get(doc_id, 0) + 1,
                "airflow": {"dag_id": dag_id, "run_id": run_id},
                "failed_at": failed_at.isoformat(),
            },
        }
        for doc_id, f in zip(ids, failures, strict=True)
    )
    return bulk_write(es, actions, refresh=refresh)


def clear_failures(
    es: SearchEngine, bucket: str, keys: Sequence[str], *, refresh: bool | str = False
) -> BulkOutcome:
    """Delete the failure records of keys that have now been indexed.

    One ``ids`` search finds which keys have a record at all, so a clean batch costs one query
    and no deletes.
    """
    wanted = [failure_id(bucket, key) for key in keys]
    present = existing_ids(es, wanted, index=FAILURES_INDEX)
    actions = (
        {"_op_type": "delete", "_index": FAILURES_INDEX, "_id": doc_id}
        for doc_id in wanted
        if doc_id in present
    )
    return bulk_write(es, actions, refresh=refresh)
