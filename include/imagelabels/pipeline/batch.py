"""Label and index one batch of listed objects: the body of each mapped task.

Phases, each over the whole batch:

1. HEAD every key (version id, content type), concurrently;
2. one ``ids`` query: keys whose document already exists are skipped (a rerun or overlapping
   backfill costs no labeling calls);
3. preflight + label each remaining image on a thread pool: the object is read and checked
   (:mod:`imagelabels.preflight.checks`), then labeled; the labeler's rate limiter keeps all tasks
   together at the account's quota;
4. one search finds the documents of *other* versions of the batch's keys
   (:func:`imagelabels.engine.indexing.other_versions`), then one bulk request writes the documents,
   deletes those older versions' documents, and writes the failure records of keys that could
   not be labeled (or whose old document could not be deleted), and clears the records of keys
   that now succeeded.

**One document per current object.** Indexing a new version of a key removes the documents of
its older versions in the same bulk request as the new document's create, so an overwritten key
has one document within the hour (the daily reconciliation is the safety net, not the mechanism).
Every delete is accounted per item like the creates: a refused delete becomes a retryable failure
record of its key and fails the task, so the retry deletes it.

**Two runs, two versions of one key** (an hourly run and the SQS path, or a backfill): the newer
version must win whichever run writes last. "Newer" is the object's ``LastModified``, stored in
every document (``object.last_modified``, also ``timestamp``); S3 version ids have no order.
Before writing, the batch compares its version of each key with the other versions indexed:

* an indexed version is strictly newer: this batch's version was overwritten since it was read;
  its document is not written (counted ``superseded``) and nothing of that key is deleted;
* otherwise every other version's document is deleted, *including one with the same
  LastModified* (S3 stores whole seconds: two writes within one second tie; the batch that read
  the object last is the better guess, and it read it moments ago).

What is left: two runs that both search before either writes (a window of one bulk request,
near-real-time search adds the engine's refresh interval, about a second) each keep their own
document; and on a tie the run that writes last wins even if it read the older bytes. Both leave
a document whose ETag differs from the listing, which the daily reconciliation deletes as stale
(and labels the current version if it has no document). Locking or a per-key "current version"
record would close the window at the cost of a write per key on every batch; a second of overlap
on the same key is rare enough that the nightly safety net is the better trade.

The batch always finishes; afterwards :meth:`BatchReport.raise_if_incomplete` fails the task when
something must be retried (a document Elasticsearch refused, a labeler error that was not about
the image), so Airflow's retry picks it up and, thanks to the existence check, only the missing
keys are labeled again.

Why this module is long: it is the one place that walks a batch through read, preflight, label and
index with per-image accounting (nothing lost, nothing twice); the steps share the batch's counters
and retry state, and the stage logic itself already lives in the stage packages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from imagelabels.documents import INDEX_ALIAS, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import (
    BulkOutcome,
    FailureRecord,
    ItemFailure,
    StoredVersion,
    bulk_write,
    clear_failures,
    existing_ids,
    other_versions,
    record_failures,
    require_writable,
)
from imagelabels.errors import LabelingError
from imagelabels.labelers.base import Labeler
from imagelabels.preflight.checks import fetch_and_prepare
from imagelabels.settings import environment_value
from imagelabels.sources.listing import ListedObject
from imagelabels.sources.objects import ObjectChanged, describe_object

log = logging.getLogger(__name__)

PROGRESS_EVERY = 25


class BatchIncomplete(Exception):
    """Raised after a batch was written when part of it must be retried."""


@dataclass
class BatchReport:
    """Counts for one batch (small: this is what XCom carries back to the summary)."""

    listed: int = 0
    already_indexed: int = 0
    superseded: int = 0
    labeled: int = 0
    indexed: int = 0
    # indexed with no label at all (no label search can find them): counted, never silent
    without_labels: int = 0
    replaced: int = 0  # documents of older versions of the batch's keys, deleted
    failed: Counter[str] = field(default_factory=Counter)
    retryable_failures: int = 0
    index_errors: list[ItemFailure] = field(default_factory=list)
    seconds: float = 0.0

    def as_xcom(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "already_indexed": self.already_indexed,
            "superseded": self.superseded,
            "labeled": self.labeled,
            "indexed": self.indexed,
            "without_labels": self.without_labels,
            "replaced": self.replaced,
            "failed": dict(self.failed),
            "retryable_failures": self.retryable_failures,
            "index_errors": len(self.index_errors),
            "seconds": round(self.seconds, 3),
        }

    def add(self, other: BatchReport) -> None:
        """Fold another batch's counts into these (one manifest may hold several buckets)."""
        self.listed += other.listed
        self.already_indexed += other.already_indexed
        self.superseded += other.superseded
        self.labeled += other.labeled
        self.indexed += other.indexed
        self.without_labels += other.without_labels
        self.replaced += other.replaced
        self.failed.update(other.failed)
        self.retryable_failures += other.retryable_failures
        self.index_errors += other.index_errors
        self.seconds += other.seconds

    def raise_if_incomplete(self) -> None:
        """Fail loudly, after everything else was written, when a retry is needed."""
        problems = []
        if self.index_errors:
            sample = "; ".join(f"{e.doc_id}: {e.status} {e.reason}" for e in self.index_errors[:5])
            problems.append(f"{len(self.index_errors)} document(s) refused by Elasticsearch ({sample})")
        if self.retryable_failures:
            problems.append(f"{self.retryable_failures} image(s) must be retried (see images-failures)")
        if problems:
            raise BatchIncomplete("; ".join(problems) + " - the rest of the batch is indexed")


@dataclass(frozen=True)
class RunContext:
    """Who is writing: stored in documents and failure records."""

    dag_id: str
    run_id: str


T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 8


def batch_concurrency(labeler: Labeler) -> int:
    """Threads per batch: ``IMAGELABELS_CONCURRENCY``, else what the labeler prefers.

    Rekognition calls mostly wait on the network, so many threads pay off (the rate limiter,
    not the thread count, bounds the request rate); a local model is CPU-bound and prefers as
    many threads as it has cores to share.
    """
    configured = environment_value("IMAGELABELS_CONCURRENCY").strip()
    if configured:
        value = int(configured)
        if value < 1:
            raise ValueError(f"IMAGELABELS_CONCURRENCY must be at least 1, got {configured!r}")
        return value
    return int(getattr(labeler, "preferred_concurrency", DEFAULT_CONCURRENCY))


def _map_concurrently(function: Callable[[T], R], items: Sequence[T], threads: int) -> Iterator[R]:
    """``map`` on a thread pool, in order; inline when one thread is enough (simpler tracebacks)."""
    if threads <= 1 or len(items) <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="label") as pool:
        yield from pool.map(function, items)


@dataclass(frozen=True)
class _Described:
    obj: ObjectInfo | None = None
    superseded: str | None = None
    failure: FailureRecord | None = None


def _describe_all(
    s3_client: Any,
    bucket: str,
    objects: Sequence[ListedObject],
    report: BatchReport,
    failures: list[FailureRecord],
    threads: int,
) -> list[ObjectInfo]:
    def describe(listed: ListedObject) -> _Described:
        try:
            return _Described(obj=describe_object(s3_client, bucket, listed))
        except ObjectChanged as change:
            return _Described(superseded=str(change))
        except LabelingError as error:
            record = FailureRecord(bucket, listed.key, "read", error.reason, error.message, error.retryable)
            return _Described(failure=record)

    described: list[ObjectInfo] = []
    for outcome in _map_concurrently(describe, objects, threads):
        if outcome.obj is not None:
            described.append(outcome.obj)
        elif outcome.failure is not None:
            failures.append(outcome.failure)
        else:
            report.superseded += 1
            log.info("skipping, superseded by a newer version: %s", outcome.superseded)
    return described


@dataclass(frozen=True)
class _Labeled:
    doc_id: str
    key: str
    document: dict[str, Any] | None = None
    failure: FailureRecord | None = None
    superseded: str | None = None


class _Progress:
    """Thread-safe progress log every ``PROGRESS_EVERY`` images."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def tick(self) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        if done % PROGRESS_EVERY == 0 and done < self._total:
            elapsed = time.monotonic() - self._started
            log.info("labeled %d/%d (%.1f images/s)", done, self._total, done / elapsed if elapsed else 0.0)


def label_one(
    s3_client: Any,
    labeler: Labeler,
    obj: ObjectInfo,
    run: RunContext,
    ingested_at: Callable[[], datetime],
) -> dict[str, Any]:
    """Preflight, label and build the document of one object version.

    :raises LabelingError: with the stage (``read``, ``preflight``, ``label``) that failed.
    """
    keep_pixels = bool(getattr(labeler, "wants_pixels", False))
    image = fetch_and_prepare(s3_client, obj, keep_pixels=keep_pixels)
    result = labeler.label(image)
    return build_document(
        image.obj,
        result,
        dag_id=run.dag_id,
        run_id=run.run_id,
        ingested_at=ingested_at(),
        source_format=image.source_format,
        transformations=image.transformations,
        phash=image.phash,
    )


def flag_near_duplicates(es: Any, labeled: Sequence[_Labeled]) -> int:
    """Set ``visual.near_duplicate_of`` on each new document that nearly duplicates an image of
    another key: the most alike one indexed already (band candidates,
    :func:`imagelabels.search.similarity.find_near_duplicate`), else one earlier in this batch (or the
    image that one duplicates, so a group points at its first image). Returns how many were
    flagged. The flag is a hint, never a
    reason to fail a batch: an engine error only leaves documents unflagged (logged).
    """
    from imagelabels.fingerprints import Signals, is_near_duplicate
    from imagelabels.search.similarity import find_near_duplicate, vector_search_available

    flagged = 0
    vectors: bool | None = None  # asked of the index once, at the first image with signals
    earlier: list[tuple[str, str, Signals]] = []
    for item in labeled:
        document = item.document or {}
        visual = document.get("visual")
        if not visual:
            continue
        signals = Signals.of_source(document)
        location = str(document["s3_location"])
        original: str | None = None
        try:
            if vectors is None:
                vectors = vector_search_available(es)
            original = find_near_duplicate(es, signals, exclude_location=location, vectors=vectors)
        except Exception as error:  # a missing flag must not fail the batch
            log.warning("near-duplicate check against the index skipped for %s: %s", location, error)
        if original is None:  # an image earlier in this batch, or the one that image duplicates
            original = next(
                (
                    root
                    for root, where, other in earlier
                    if where != location and is_near_duplicate(signals, other)
                ),
                None,
            )
        if original is not None:
            visual["near_duplicate_of"] = original
            flagged += 1
        earlier.append((original or item.doc_id, location, signals))
    return flagged


def newest_wins(
    held: Mapping[str, datetime], indexed: Mapping[str, Sequence[StoredVersion]]
) -> tuple[set[str], list[StoredVersion]]:
    """Decide, per key, between the version a batch holds and the other versions indexed.

    :param held: key -> ``LastModified`` of the version the batch holds (to write now, already
        indexed, or failed).
    :param indexed: key -> the documents of the key's *other* versions.
    :returns: the keys with a strictly newer version indexed (the batch writes and deletes
        nothing of them), and the documents to delete: every other version of the remaining
        keys, those with the same ``LastModified`` included (see the module docstring).
    """
    superseded: set[str] = set()
    stale: list[StoredVersion] = []
    for key, mine in held.items():
        others = indexed.get(key, ())
        if any(other.last_modified is not None and other.last_modified > mine for other in others):
            superseded.add(key)
        else:
            stale.extend(others)
    return superseded, stale


def process_batch(
    *,
    s3_client: Any,
    es: Any,
    labeler: Labeler,
    bucket: str,
    objects: Sequence[ListedObject],
    run: RunContext,
    reprocess: bool = False,
    concurrency: int | None = None,
    refresh: bool | str = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BatchReport:
    """Label and index ``objects`` of ``bucket``; return the batch's counts.

    :param reprocess: label again and overwrite documents that already exist (re-label).
    :param concurrency: threads for reading and labeling (default: :func:`batch_concurrency`).
    :param refresh: Elasticsearch refresh policy for the writes (``"wait_for"`` in tests).
    :param clock: wall clock for ``ingested_at``/``failed_at`` (when it happened, not which
        interval: the interval comes from the listing).
    """
    started = time.monotonic()
    require_writable(es)
    threads = concurrency or batch_concurrency(labeler)
    report = BatchReport(listed=len(objects))
    failures: list[FailureRecord] = []
    described = _describe_all(s3_client, bucket, objects, report, failures, threads)

    ids = {document_id(o.bucket, o.key, o.version_id, o.etag): o for o in described}
    present = set() if reprocess else existing_ids(es, list(ids))
    report.already_indexed = len(present)
    to_label = [(doc_id, obj) for doc_id, obj in ids.items() if doc_id not in present]
    progress = _Progress(len(to_label))

    def work(item: tuple[str, ObjectInfo]) -> _Labeled:
        doc_id, obj = item
        try:
            return _Labeled(doc_id, obj.key, document=label_one(s3_client, labeler, obj, run, clock))
        except LabelingError as error:
            if error.reason == "object_changed":  # overwritten since its HEAD: a later run's image
                return _Labeled(doc_id, obj.key, superseded=error.message)
            record = FailureRecord(bucket, obj.key, error.stage, error.reason, error.message, error.retryable)
            return _Labeled(doc_id, obj.key, failure=record)
        except Exception as error:
            log.exception("unexpected error labeling s3://%s/%s", bucket, obj.key)
            message = f"{type(error).__name__}: {error}"
            record = FailureRecord(bucket, obj.key, "label", "unexpected_error", message, True)
            return _Labeled(doc_id, obj.key, failure=record)
        finally:
            progress.tick()

    labeled_now: list[_Labeled] = []
    changed: set[str] = set()
    for labeled in _map_concurrently(work, to_label, threads):
        if labeled.failure is not None:
            failures.append(labeled.failure)
            continue
        if labeled.superseded is not None:
            report.superseded += 1
            changed.add(labeled.key)
            log.info("skipping, superseded by a newer version: %s", labeled.superseded)
            continue
        report.labeled += 1
        labeled_now.append(labeled)

    flag_near_duplicates(es, labeled_now)

    # the version of each key this batch holds (indexed now or before, or failed): its older
    # versions' documents go in the same bulk request (one document per current object)
    held = {obj.key: obj.last_modified for obj in ids.values() if obj.key not in changed}
    newer_indexed, stale = newest_wins(held, other_versions(es, bucket, list(held), list(ids)))
    stale_of: dict[str, list[StoredVersion]] = {}
    for old in stale:
        stale_of.setdefault(old.key, []).append(old)

    actions: list[dict[str, Any]] = []
    owner: dict[str, str] = {}  # the key of every action's document id
    for labeled in labeled_now:
        if labeled.key in newer_indexed:
            report.superseded += 1
            log.info(
                "not indexed: a newer version of s3://%s/%s is indexed already (written by another run)",
                bucket,
                labeled.key,
            )
            continue
        actions.append(
            {
                "_op_type": "index" if reprocess else "create",
                "_index": INDEX_ALIAS,
                "_id": labeled.doc_id,
                "_source": labeled.document,
            }
        )
        owner[labeled.doc_id] = labeled.key
        for old in stale_of.pop(labeled.key, []):
            actions.append({"_op_type": "delete", "_index": old.index, "_id": old.doc_id})
            owner[old.doc_id] = old.key
    for old in (old for versions in stale_of.values() for old in versions):  # indexed before, or failed
        actions.append({"_op_type": "delete", "_index": old.index, "_id": old.doc_id})
        owner[old.doc_id] = old.key

    outcome: BulkOutcome = bulk_write(es, actions, refresh=refresh)
    report.indexed = outcome.created + outcome.updated + outcome.already_present
    report.replaced = outcome.deleted + outcome.not_found  # not found: another run deleted it first
    report.index_errors = outcome.failures
    refused = {f.doc_id: f for f in outcome.failures}
    for action in actions:
        if (
            action["_op_type"] != "delete"
            and not action["_source"]["Labels"]
            and action["_id"] not in refused
        ):
            report.without_labels += 1
            log.info(
                "indexed without labels (no label search finds it): %s", action["_source"]["s3_location"]
            )
    already_failed = {failure.key for failure in failures}
    unfinished: set[str] = set()
    for action in actions:
        refusal = refused.get(action["_id"])
        if refusal is None:
            continue
        key = owner[action["_id"]]
        unfinished.add(key)
        if key in already_failed:  # one record per key: its first failure is recorded already
            continue
        already_failed.add(key)
        if action["_op_type"] != "delete":  # recorded like any other failure, never lost
            failures.append(
                FailureRecord(bucket, key, "index", f"index_{refusal.status}", refusal.reason, True)
            )
        else:  # the task fails (index_errors) and its retry deletes the document
            message = f"the document {refusal.doc_id} of an older version was not deleted: {refusal.reason}"
            failures.append(FailureRecord(bucket, key, "index", f"delete_{refusal.status}", message, True))
    succeeded = [ids[doc_id].key for doc_id in present]
    succeeded += [owner[a["_id"]] for a in actions if a["_op_type"] != "delete"]
    succeeded = [key for key in succeeded if key not in unfinished]

    for failure in failures:
        report.failed[failure.reason] += 1
        report.retryable_failures += int(failure.retryable)
        log.warning(
            "failed s3://%s/%s at %s: %s (%s)",
            failure.bucket,
            failure.key,
            failure.stage,
            failure.reason,
            failure.message,
        )
    failed_writes = record_failures(
        es, failures, dag_id=run.dag_id, run_id=run.run_id, failed_at=clock(), refresh=refresh
    )
    report.index_errors += failed_writes.failures
    report.index_errors += clear_failures(es, bucket, succeeded, refresh=refresh).failures
    report.seconds = time.monotonic() - started
    return report


def summarize(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up the batch reports of one run (what the summary task logs and returns)."""
    totals: dict[str, Any] = {
        "batches": len(reports),
        "listed": 0,
        "already_indexed": 0,
        "superseded": 0,
        "labeled": 0,
        "indexed": 0,
        "without_labels": 0,
        "failed": Counter(),
        "index_errors": 0,
    }
    optional = ("removed", "documents_deleted", "messages_acknowledged")  # event-driven batches
    for report in reports:
        if report.get("replaced"):  # only when older versions' documents were deleted
            totals["replaced"] = totals.get("replaced", 0) + int(report["replaced"])
        for name in (
            "listed",
            "already_indexed",
            "superseded",
            "labeled",
            "indexed",
            "without_labels",
            "index_errors",
        ):
            totals[name] += int(report.get(name, 0))
        for name in optional:
            if name in report:
                totals[name] = totals.get(name, 0) + int(report[name])
        totals["failed"].update(report.get("failed", {}))
    totals["failed"] = dict(totals["failed"])
    totals["failed_total"] = sum(totals["failed"].values())
    return totals
