"""Reconciliation: bring the index and the bucket back into agreement, streaming.

The hourly DAG only sees what arrived in its hour, so drift accumulates: an object deleted from
S3 leaves an *orphan* document, an overwritten object leaves a *stale* document for bytes that
no longer exist, and a key whose run failed past its retries (or whose hour was never run) stays
*missing*. Once a day we walk the bucket/prefix and the index side by side and fix all three.

**A merge-join of sorted streams**, never a set difference in memory: the S3 listing (ListObjectsV2
returns keys in UTF-8 binary order), the documents of the bucket/prefix sorted by their keyword
``s3_location`` (Elasticsearch sorts keywords by their UTF-8 bytes) and the failure records sorted
by ``s3key``. Each stream is read one page at a time, missing keys go to batch manifests as they
are found, deletes go out in bulk chunks: memory holds one page per stream, one manifest batch
and one delete chunk, whatever the number of keys.

**Ordering.** Python compares ``str`` by code point, and UTF-8 preserves code-point order, so
comparing keys as ``str`` *is* comparing their UTF-8 bytes (no encoding per comparison). It is
UTF-16 that orders differently (``"\\uff5e"`` vs an emoji), which is why the tests check unicode
keys against both servers. A stream that goes backwards raises :class:`StreamOutOfOrder` instead
of mistaking live documents for orphans.

**What "current" means.** ListObjectsV2 has no version ids, so a document is current when its
``object.etag`` equals the listed ETag; on a versioned bucket two versions with the same bytes
share an ETag (and labels), and one document is kept. Documents and failure records written
after the walk began are never judged (the listing may have passed their key before the object
was uploaded): they are *spared*, and the next run looks at them again.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS
from imagelabels.indexing import BulkOutcome, ItemFailure, bulk_write, ensure_indices
from imagelabels.listing import ListedObject, ListingStats, list_objects_in_window
from imagelabels.manifests import Manifest, listing_failed, manifests_root, write_manifests
from imagelabels.pipeline import RunContext

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_PAGE_SIZE = 2000
DELETE_CHUNK = 500
MAX_BATCH_SIZE = 1000
# How far the worker's clock may be from S3's: documents of objects written this close to the start
# of the walk are spared (the listing may have missed their object).
CLOCK_SKEW = timedelta(minutes=2)
PROGRESS_EVERY = 100_000
# Non-retryable failures that are about the deployment, not the image: retried every day.
NOT_ABOUT_THE_IMAGE = frozenset({"feature_unavailable", "local_model_failed", "s3_object_unreadable"})

_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IndexedDoc:
    """One document as the index walk sees it: enough to judge it and to delete it."""

    key: str
    doc_id: str
    etag: str
    index: str = INDEX_ALIAS
    last_modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class FailureRef:
    """One failure record: whether the key's last attempt failed for good, and when."""

    key: str
    record_id: str
    retryable: bool
    reason: str = ""
    failed_at: datetime | None = None


class Verdict(StrEnum):
    """What one key is, after comparing the bucket and the index."""

    OK = "ok"  # in S3, with a current document
    MISSING = "missing"  # in S3, no current document: to label and index
    KNOWN_BAD = "known_bad"  # in S3, its current version already failed for good: skipped
    RECENT = "recent"  # in S3, no document yet, modified too recently: the hourly DAG's job
    ORPHAN = "orphan"  # not in S3: its documents and failure record go


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one key and what to do about it."""

    key: str
    verdict: Verdict
    obj: ListedObject | None = None
    delete: tuple[IndexedDoc, ...] = ()
    spared: tuple[IndexedDoc, ...] = ()
    clear_failure: FailureRef | None = None


class StreamOutOfOrder(RuntimeError):
    """A stream was not sorted as the merge needs: stop before acting on a wrong verdict."""


def _sorted_groups(items: Iterable[T], key: Callable[[T], str], name: str) -> Iterator[tuple[str, list[T]]]:
    """Group consecutive items by key, checking that keys strictly increase."""
    previous: str | None = None
    for current, group in itertools.groupby(items, key):
        if previous is not None and current <= previous:
            raise StreamOutOfOrder(
                f"{name} is not in UTF-8 binary order: {current!r} came after {previous!r}"
            )
        previous = current
        yield current, list(group)


def _trusted(when: datetime | None, trust_before: datetime | None) -> bool:
    """True when something dated ``when`` predates the walk, so the listing must have seen its object."""
    return trust_before is None or when is None or when < trust_before


def _is_known_bad(obj: ListedObject, failure: FailureRef | None) -> bool:
    """The listed version already failed in a way a retry cannot fix (a bad image)."""
    if failure is None or failure.retryable or failure.reason in NOT_ABOUT_THE_IMAGE:
        return False
    return failure.failed_at is None or obj.last_modified <= failure.failed_at


def decide(
    key: str,
    obj: ListedObject | None,
    docs: list[IndexedDoc],
    failure: FailureRef | None,
    *,
    trust_before: datetime | None = None,
    recent_after: datetime | None = None,
) -> Decision:
    """Judge one key from what each side holds for it.

    :param trust_before: documents and failure records dated at or after this are spared.
    :param recent_after: listed objects modified at or after this, without a document, are left
        to the hourly DAG (``None``: none are).
    """
    judged = [d for d in docs if _trusted(d.last_modified, trust_before)]
    spared = tuple(d for d in docs if not _trusted(d.last_modified, trust_before))
    failure_judged = failure is not None and _trusted(failure.failed_at, trust_before)
    if obj is None:
        clear = failure if failure_judged else None
        return Decision(key, Verdict.ORPHAN, delete=tuple(judged), spared=spared, clear_failure=clear)
    current = [d for d in docs if d.etag == obj.etag]
    if current:
        keep = current[0]
        stale = tuple(d for d in judged if d is not keep)
        spared = tuple(d for d in spared if d is not keep)
        clear = failure if failure_judged else None
        return Decision(key, Verdict.OK, obj, delete=stale, spared=spared, clear_failure=clear)
    if _is_known_bad(obj, failure):
        verdict = Verdict.KNOWN_BAD
    elif recent_after is not None and obj.last_modified >= recent_after:
        verdict = Verdict.RECENT
    else:
        verdict = Verdict.MISSING
    return Decision(key, verdict, obj, delete=tuple(judged), spared=spared)


def merge(
    objects: Iterable[ListedObject],
    documents: Iterable[IndexedDoc],
    failures: Iterable[FailureRef] = (),
    *,
    trust_before: datetime | None = None,
    recent_after: datetime | None = None,
) -> Iterator[Decision]:
    """Merge-join the three key-sorted streams and yield one :class:`Decision` per key, in order.

    Pure: no I/O, so every case is a table-driven unit test.

    :raises StreamOutOfOrder: when a stream's keys do not strictly increase.
    """
    streams: tuple[Iterator[tuple[str, list[Any]]], ...] = (
        _sorted_groups(objects, lambda o: o.key, "the S3 listing"),
        _sorted_groups(documents, lambda d: d.key, "the index"),
        _sorted_groups(failures, lambda f: f.key, "the failure records"),
    )
    heads: list[tuple[str, list[Any]] | None] = [next(stream, None) for stream in streams]
    while any(head is not None for head in heads):
        key = min(head[0] for head in heads if head is not None)
        taken: list[list[Any]] = []
        for position, (stream, head) in enumerate(zip(streams, heads, strict=True)):
            if head is not None and head[0] == key:
                taken.append(head[1])
                heads[position] = next(stream, None)
            else:
                taken.append([])
        listed, docs, failed = taken
        yield decide(
            key,
            listed[0] if listed else None,
            docs,
            failed[0] if failed else None,
            trust_before=trust_before,
            recent_after=recent_after,
        )


# --- the streams ---------------------------------------------------------------------------------


def list_all_objects(
    s3_client: Any,
    bucket: str,
    prefix: str,
    *,
    exclude_prefixes: Iterable[str] = (),
    stats: ListingStats | None = None,
) -> Iterator[ListedObject]:
    """Every key under ``prefix`` (a window covering all time), skipping folder markers and
    ``exclude_prefixes``, in S3's UTF-8 binary order."""
    return list_objects_in_window(
        s3_client, bucket, prefix, _BEGINNING, _END_OF_TIME, exclude_prefixes=exclude_prefixes, stats=stats
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def sorted_hits(
    es: Any, *, index: str, field: str, query: dict[str, Any], source: list[str], page_size: int
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query`` in ascending order of the keyword ``field``, one page at a time.

    Paged with ``search_after`` on ``field`` alone: Elasticsearch 8 refuses to sort on ``_id``
    and a point in time would need cleaning up. Several documents may share a value (versions of
    one key), so a full page holds back its last value's hits and the next page starts *after*
    the value before it: a group is never split across pages. A page that is one group only
    (more versions of one key than a page holds) is asked for again, twice as large.
    """
    after: list[Any] | None = None
    size = page_size
    while True:
        extra = {"search_after": after} if after is not None else {}
        response = es.search(
            index=index,
            query=query,
            sort=[{field: "asc"}],
            size=size,
            source=source,
            track_total_hits=False,
            **extra,
        )
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


def iter_documents(
    es: Any, bucket: str, prefix: str, *, page_size: int = INDEX_PAGE_SIZE, index: str = INDEX_ALIAS
) -> Iterator[IndexedDoc]:
    """The documents of ``s3://bucket/prefix``, sorted by key (``s3_location`` is ``s3://bucket/`` +
    key, so its order is the key's)."""
    location = f"s3://{bucket}/"
    hits = sorted_hits(
        es,
        index=index,
        field="s3_location",
        query={"prefix": {"s3_location": location + prefix}},
        source=["object.etag", "object.last_modified"],
        page_size=page_size,
    )
    for hit in hits:
        described = (hit.get("_source") or {}).get("object") or {}
        yield IndexedDoc(
            key=str(hit["sort"][0])[len(location) :],
            doc_id=hit["_id"],
            etag=str(described.get("etag") or "").strip('"'),
            index=hit.get("_index", index),
            last_modified=_parse_time(described.get("last_modified")),
        )


def iter_failures(
    es: Any, bucket: str, prefix: str, *, page_size: int = INDEX_PAGE_SIZE
) -> Iterator[FailureRef]:
    """The failure records of ``s3://bucket/prefix``, sorted by key (one record per key)."""
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
    )
    for hit in hits:
        source = hit.get("_source") or {}
        yield FailureRef(
            key=str(hit["sort"][0]),
            record_id=hit["_id"],
            retryable=bool(source.get("retryable", True)),
            reason=str(source.get("reason") or ""),
            failed_at=_parse_time(source.get("failed_at")),
        )


# --- acting on the verdicts ----------------------------------------------------------------------


@dataclass
class ReconcileCounts:
    """What one reconciliation found and did (small: this is what XCom carries).

    ``orphans``, ``stale`` and ``obsolete_failures`` count what was *found*; ``deleted`` counts
    what was actually deleted (0 on a dry run).
    """

    dry_run: bool = False
    scanned_s3: int = 0
    scanned_index: int = 0
    scanned_failures: int = 0
    ok: int = 0
    missing: int = 0
    known_bad: int = 0
    recent: int = 0
    orphans: int = 0
    stale: int = 0
    obsolete_failures: int = 0
    spared: int = 0
    deleted: int = 0
    batches: int = 0
    listing_pages: int = 0
    seconds: float = 0.0

    def as_xcom(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reconciliation:
    """The manifests of the missing keys and the counts."""

    manifests: list[Manifest]
    counts: ReconcileCounts

    def as_xcom(self) -> dict[str, Any]:
        return {"manifests": [m.as_xcom() for m in self.manifests], "counts": self.counts.as_xcom()}


@dataclass
class _Deleter:
    """Buffers deletes and sends them in bulk chunks, so a million orphans never sit in memory."""

    es: Any
    chunk: int
    refresh: bool | str
    pending: list[dict[str, Any]] = field(default_factory=list)
    deleted: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    failed: int = 0

    def add(self, index: str, doc_id: str) -> None:
        self.pending.append({"_op_type": "delete", "_index": index, "_id": doc_id})
        if len(self.pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        outcome: BulkOutcome = bulk_write(self.es, self.pending, chunk_size=self.chunk, refresh=self.refresh)
        self.pending = []
        self.deleted += outcome.deleted + outcome.not_found  # not found: someone else deleted it first
        self.failed += len(outcome.failures)
        self.failures += outcome.failures[: max(0, 20 - len(self.failures))]


def _counted(items: Iterable[T], counts: ReconcileCounts, name: str) -> Iterator[T]:
    for item in items:
        setattr(counts, name, getattr(counts, name) + 1)
        yield item


def _act(
    decisions: Iterable[Decision], counts: ReconcileCounts, deleter: _Deleter | None
) -> Iterator[ListedObject]:
    """Count every decision, send its deletes, and yield the objects to label (for the manifests)."""
    for number, decision in enumerate(decisions, start=1):
        if decision.verdict is Verdict.ORPHAN:
            counts.orphans += len(decision.delete)
        else:
            setattr(counts, decision.verdict.value, getattr(counts, decision.verdict.value) + 1)
            counts.stale += len(decision.delete)
        counts.spared += len(decision.spared)
        counts.obsolete_failures += decision.clear_failure is not None
        if deleter is not None:
            for doc in decision.delete:
                deleter.add(doc.index, doc.doc_id)
            if decision.clear_failure is not None:
                deleter.add(FAILURES_INDEX, decision.clear_failure.record_id)
        if number % PROGRESS_EVERY == 0:
            log.info("reconciled %d keys so far (up to %r): %s", number, decision.key, counts.as_xcom())
        if decision.verdict is Verdict.MISSING and decision.obj is not None:
            yield decision.obj


def plan_reconciliation(
    *,
    s3_client: Any,
    es: Any,
    bucket: str,
    prefix: str,
    staging_uri: str,
    run: RunContext,
    batch_size: int,
    dry_run: bool = False,
    min_age_hours: float = 2.0,
    refresh: bool | str = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    index_page_size: int = INDEX_PAGE_SIZE,
    delete_chunk: int = DELETE_CHUNK,
) -> Reconciliation:
    """Walk ``s3://bucket/prefix`` and the index together; delete orphan and stale documents and
    obsolete failure records, and write manifests of the keys to label.

    :param dry_run: count only: nothing is deleted and no manifest is written.
    :param min_age_hours: objects modified more recently than this, without a document, are left to
        the hourly DAG (whose run for that hour may not have happened yet), so they are not
        labeled twice.
    :param refresh: Elasticsearch refresh policy for the deletes (``"wait_for"`` in tests).
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be within 1..{MAX_BATCH_SIZE}, got {batch_size}")
    ensure_indices(es)  # idempotent setup, also on a dry run: the walk needs the indices to exist
    started = clock()
    staging = manifests_root(staging_uri)
    listing = ListingStats()
    counts = ReconcileCounts(dry_run=dry_run)
    objects = list_all_objects(
        s3_client,
        bucket,
        prefix,
        exclude_prefixes=[staging.key] if staging.bucket == bucket else [],
        stats=listing,
    )
    decisions = merge(
        _counted(objects, counts, "scanned_s3"),
        _counted(iter_documents(es, bucket, prefix, page_size=index_page_size), counts, "scanned_index"),
        _counted(iter_failures(es, bucket, prefix, page_size=index_page_size), counts, "scanned_failures"),
        trust_before=started - CLOCK_SKEW,
        recent_after=started - timedelta(hours=min_age_hours),
    )
    deleter = None if dry_run else _Deleter(es, delete_chunk, refresh)
    to_label = _act(decisions, counts, deleter)
    manifests = _write(s3_client, bucket, prefix, to_label, staging_uri, run, batch_size, dry_run)
    if deleter is not None:
        deleter.flush()
        counts.deleted = deleter.deleted
    counts.batches = len(manifests)
    counts.listing_pages = listing.pages
    counts.seconds = round((clock() - started).total_seconds(), 3)
    log.info(
        "reconciled s3://%s/%s with the index%s: %s (%d staging keys excluded, %d folder markers)",
        bucket,
        prefix,
        " (dry run: nothing changed)" if dry_run else "",
        counts.as_xcom(),
        listing.excluded,
        listing.skipped_folders,
    )
    if deleter is not None and deleter.failed:
        sample = "; ".join(f"{f.doc_id}: {f.status} {f.reason}" for f in deleter.failures[:5])
        raise RuntimeError(
            f"{deleter.failed} delete(s) refused by Elasticsearch ({sample}); a retry redoes them"
        )
    return Reconciliation(manifests=manifests, counts=counts)


def _write(
    s3_client: Any,
    bucket: str,
    prefix: str,
    to_label: Iterator[ListedObject],
    staging_uri: str,
    run: RunContext,
    batch_size: int,
    dry_run: bool,
) -> list[Manifest]:
    """Drive the walk: into manifests as it streams, or (dry run) just to the end."""
    from botocore.exceptions import ClientError

    try:
        if dry_run:
            for _ in to_label:
                pass
            return []
        return list(
            write_manifests(
                s3_client,
                bucket,
                to_label,
                staging_uri=staging_uri,
                dag_id=run.dag_id,
                run_id=run.run_id,
                batch_size=batch_size,
            )
        )
    except ClientError as error:
        raise listing_failed(error, bucket, prefix, staging_uri) from error


def report_totals(counts: dict[str, Any], labeling: dict[str, Any]) -> dict[str, Any]:
    """The run's totals: what the walk found and did, and what labeling the missing keys gave."""
    totals = {**counts, "labeling": labeling}
    log.info(
        "reconciliation: %d keys in S3, %d documents; %d ok, %d missing (%d indexed now, %d failed), "
        "%d known bad, %d recent, %d orphan and %d stale documents, %d obsolete failure records; "
        "%d deleted%s",
        counts.get("scanned_s3", 0),
        counts.get("scanned_index", 0),
        counts.get("ok", 0),
        counts.get("missing", 0),
        labeling.get("indexed", 0),
        labeling.get("failed_total", 0),
        counts.get("known_bad", 0),
        counts.get("recent", 0),
        counts.get("orphans", 0),
        counts.get("stale", 0),
        counts.get("obsolete_failures", 0),
        counts.get("deleted", 0),
        " (dry run)" if counts.get("dry_run") else "",
    )
    return totals
