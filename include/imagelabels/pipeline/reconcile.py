"""Reconciliation: bring the index and the bucket back into agreement, streaming.

The hourly DAG only sees what arrived in its hour, so drift accumulates: an object deleted from
S3 leaves an *orphan* document, an overwritten object leaves a *stale* document for bytes that
no longer exist, and a key whose run failed past its retries (or whose hour was never run) stays
*missing*. Once a day we walk the bucket/prefix and the index side by side and fix all three.

**A merge-join of sorted streams**, never a set difference in memory: the S3 listing (ListObjectsV2
returns keys in UTF-8 binary order), the documents of the bucket/prefix sorted by their keyword
``s3_location`` (Elasticsearch sorts keywords by their UTF-8 bytes) and the failure records sorted
by ``s3key``. Each stream is read one page at a time, missing keys go to batch manifests as they
are found, deletes are spooled to a temporary file and go out in bulk chunks once the walk is
complete (and the mass-deletion guard below agrees): memory holds one page per stream, one
manifest batch and one delete chunk, whatever the number of keys.

**Ordering.** Python compares ``str`` by code point, and UTF-8 preserves code-point order, so
comparing keys as ``str`` *is* comparing their UTF-8 bytes (no encoding per comparison). It is
UTF-16 that orders differently (``"\\uff5e"`` vs an emoji), which is why the tests check unicode
keys against both servers. A stream that goes backwards raises :class:`StreamOutOfOrder` instead
of mistaking live documents for orphans.

**What "current" means.** ListObjectsV2 has no version ids, so a document is current when its
``object.etag`` equals the listed ETag; on a versioned bucket two versions with the same bytes
share an ETag (and labels), and one document is kept. Since the hourly and SQS paths delete an
older version's document when they index the new one, stale documents are what those paths
could not see (a failed delete that ran out of retries, two runs writing the same key within a
second; see :mod:`imagelabels.pipeline.batch`).

**The 2-minute guard: objects changed in the last 2 minutes are spared.** The listing is not a
snapshot: it reaches each key at some moment during the walk, so an object uploaded (and indexed
by the hourly or SQS path) after the listing passed its key is missing from the listing although
it exists. Judged, its document would look like an orphan and be deleted. So a document whose
``object.last_modified`` is at or after *walk start minus* ``CLOCK_SKEW`` (2 minutes), and a
failure record whose ``failed_at`` is, is never judged: it is *spared* (counted ``spared``) and
the next day's run judges it. The 2 minutes allow for the worker's clock (which dates the walk)
running ahead of S3's (which dates ``LastModified``); anything dated before that predates the walk,
so the listing must have seen its object if it still exists. The guard only ever keeps documents:
a spared document of a deleted object lives one more day.

**Mass-deletion guard.** An S3 that answers "empty" for a bucket that is not (the compose stack's
moto restarted with S3 in memory while Elasticsearch persisted; a wrong bucket, endpoint, account
or credentials that still can list) makes every document an orphan. A run therefore refuses to
delete more than ``IMAGELABELS_RECONCILE_MAX_DELETE_SHARE`` (default 0.2) of the documents it
walked, unless the deletes are at most ``IMAGELABELS_RECONCILE_DELETE_FLOOR`` (default 100) so a
small index can still be cleaned; and it always refuses to delete *every* document of the
bucket/prefix, however few, since that is exactly what a wiped or wrong S3 looks like. The
deletes are counted over the whole walk before the first one is sent, so a refusal deletes
nothing: the task fails without retries (the same walk would refuse again) with the counts and
how to confirm, and logs an ERROR line starting ``MASS DELETION REFUSED``. Missing keys are
still written to manifests, but no labeling runs. The ``confirm_mass_delete`` Param (or
``confirm_mass_delete=True``) lets one run through; a dry run only warns.

Why this module is long: reconciliation is one streaming merge of the bucket listing against the
index (plan, mass-deletion guard, verdicts, spill files for bounded memory); the parts share the
merge's ordering invariants.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any, TypeVar

from imagelabels.documents import FAILURES_INDEX, INDEX_ALIAS
from imagelabels.engine.indexing import (
    BulkOutcome,
    FailureRef,
    ItemFailure,
    bulk_write,
    ensure_indices,
    iter_failures,
    parse_time,
    sorted_hits,
)
from imagelabels.pipeline.batch import RunContext
from imagelabels.settings import (
    DEFAULT_DELETE_FLOOR,
    DEFAULT_MAX_DELETE_SHARE,
    DELETE_FLOOR_ENV,
    MAX_BATCH_SIZE,
    MAX_DELETE_SHARE_ENV,
    environment_value,
)
from imagelabels.sources.listing import ListedObject, ListingStats, list_objects_in_window
from imagelabels.sources.manifests import Manifest, listing_failed, manifests_root, write_manifests

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_PAGE_SIZE = 2000
DELETE_CHUNK = 500
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
            last_modified=parse_time(described.get("last_modified")),
        )


# --- the mass-deletion guard ---------------------------------------------------------------------


class MassDeletionRefused(RuntimeError):
    """A run would delete more of the index than it may without ``confirm_mass_delete``."""

    def __init__(self, message: str, *, deletes: int, indexed: int) -> None:
        super().__init__(message)
        self.deletes = deletes
        self.indexed = indexed


@dataclass(frozen=True)
class DeletionLimit:
    """How many documents one reconciliation may delete without confirmation.

    Up to ``max_share`` of the documents it walked, or up to ``floor`` documents if that is more
    (a small index: 30 of 100 documents deleted in one day is no sign of a wiped bucket); never
    every document of the bucket/prefix.
    """

    max_share: float = DEFAULT_MAX_DELETE_SHARE
    floor: int = DEFAULT_DELETE_FLOOR

    def __post_init__(self) -> None:
        if not 0 <= self.max_share <= 1:
            raise ValueError(f"{MAX_DELETE_SHARE_ENV} must be within 0..1, got {self.max_share}")
        if self.floor < 0:
            raise ValueError(f"{DELETE_FLOOR_ENV} must be at least 0, got {self.floor}")

    @classmethod
    def from_env(cls) -> DeletionLimit:
        """``IMAGELABELS_RECONCILE_MAX_DELETE_SHARE`` and ``..._DELETE_FLOOR``, else the defaults.

        :raises ValueError: a value that is not a number in range (a configuration error).
        """
        share = environment_value(MAX_DELETE_SHARE_ENV).strip()
        floor = environment_value(DELETE_FLOOR_ENV).strip()
        try:
            max_share = float(share) if share else DEFAULT_MAX_DELETE_SHARE
        except ValueError:
            raise ValueError(f"{MAX_DELETE_SHARE_ENV} must be a number within 0..1, got {share!r}") from None
        try:
            min_floor = int(floor) if floor else DEFAULT_DELETE_FLOOR
        except ValueError:
            raise ValueError(f"{DELETE_FLOOR_ENV} must be a whole number >= 0, got {floor!r}") from None
        return cls(max_share=max_share, floor=min_floor)

    def allowed(self, indexed: int) -> int:
        """The most documents a run over ``indexed`` documents may delete unconfirmed."""
        return max(self.floor, math.floor(self.max_share * indexed))

    def refusal(self, deletes: int, indexed: int) -> str | None:
        """Why deleting ``deletes`` of ``indexed`` documents needs confirming (``None``: it does not)."""
        if deletes <= 0:
            return None
        if deletes >= indexed:
            return "that is every document of the bucket/prefix"
        if deletes > self.allowed(indexed):
            return (
                f"more than {self.max_share:.0%} of them ({MAX_DELETE_SHARE_ENV}) and more than "
                f"{self.floor} ({DELETE_FLOOR_ENV})"
            )
        return None


def _refusal_message(bucket: str, prefix: str, deletes: int, indexed: int, why: str) -> str:
    share = deletes / indexed if indexed else 1.0
    return (
        f"refused to delete {deletes} of the {indexed} documents of s3://{bucket}/{prefix} "
        f"({share:.0%}) as orphan or stale: {why}. Nothing was deleted. Check that the bucket, "
        "prefix and AWS connection reach the S3 that holds the images (an S3 stand-in that "
        "restarted empty, a wrong bucket, endpoint or account look exactly like this); if the "
        "objects really are gone, run again with the Param confirm_mass_delete=true"
    )


def _without_retries(error: MassDeletionRefused) -> Exception:
    """Airflow's "fail, do not retry" exception caused by ``error`` (a retry would refuse again);
    ``error`` itself where Airflow is not installed."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - the pipeline always runs with Airflow installed
        return error
    failure = AirflowFailException(str(error))
    failure.__cause__ = error
    return failure


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
    """Collects deletes in a temporary file during the walk (a million orphans never sit in
    memory) and sends them in bulk chunks afterwards, once the mass-deletion guard agreed."""

    es: Any
    chunk: int
    refresh: bool | str
    spool: IO[str] = field(  # closed by close(): after sending, or when the walk fails or is refused
        default_factory=lambda: tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
    )
    deleted: int = 0
    failures: list[ItemFailure] = field(default_factory=list)
    failed: int = 0

    def add(self, index: str, doc_id: str) -> None:
        self.spool.write(f"{index}\t{doc_id}\n")  # neither an index name nor our ids hold a tab

    def send(self) -> None:
        """Send every collected delete, a chunk at a time."""
        self.spool.seek(0)
        pending: list[dict[str, Any]] = []
        for line in self.spool:
            index, doc_id = line.rstrip("\n").split("\t", 1)
            pending.append({"_op_type": "delete", "_index": index, "_id": doc_id})
            if len(pending) >= self.chunk:
                self._flush(pending)
                pending = []
        self._flush(pending)
        self.close()

    def close(self) -> None:
        self.spool.close()

    def _flush(self, pending: list[dict[str, Any]]) -> None:
        if not pending:
            return
        outcome: BulkOutcome = bulk_write(self.es, pending, chunk_size=self.chunk, refresh=self.refresh)
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
    confirm_mass_delete: bool = False,
    deletion_limit: DeletionLimit | None = None,
) -> Reconciliation:
    """Walk ``s3://bucket/prefix`` and the index together; delete orphan and stale documents and
    obsolete failure records, and write manifests of the keys to label.

    :param dry_run: count only: nothing is deleted and no manifest is written.
    :param min_age_hours: objects modified more recently than this, without a document, are left to
        the hourly DAG (whose run for that hour may not have happened yet), so they are not
        labeled twice.
    :param refresh: Elasticsearch refresh policy for the deletes (``"wait_for"`` in tests).
    :param confirm_mass_delete: delete even beyond ``deletion_limit`` (the ``confirm_mass_delete``
        Param, after checking that the objects really are gone).
    :param deletion_limit: default: :meth:`DeletionLimit.from_env`.
    :raises AirflowFailException: caused by :class:`MassDeletionRefused`, when the run would delete
        more than ``deletion_limit`` allows without confirmation; nothing was deleted.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be within 1..{MAX_BATCH_SIZE}, got {batch_size}")
    limit = deletion_limit or DeletionLimit.from_env()  # a bad setting fails before the walk
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
    try:
        to_label = _act(decisions, counts, deleter)
        manifests = _write(s3_client, bucket, prefix, to_label, staging_uri, run, batch_size, dry_run)
        _guard(limit, counts, bucket, prefix, confirmed=confirm_mass_delete)
        if deleter is not None:
            deleter.send()
            counts.deleted = deleter.deleted
    finally:
        if deleter is not None:
            deleter.close()
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


def _guard(
    limit: DeletionLimit, counts: ReconcileCounts, bucket: str, prefix: str, *, confirmed: bool
) -> None:
    """The mass-deletion guard, once the walk has counted every delete and before the first is sent.

    :raises AirflowFailException: caused by :class:`MassDeletionRefused`; logged as an ERROR first.
    """
    deletes, indexed = counts.orphans + counts.stale, counts.scanned_index
    why = limit.refusal(deletes, indexed)
    if why is None:
        return
    if confirmed:
        log.warning(
            "mass deletion confirmed by confirm_mass_delete: deleting %d of the %d documents of s3://%s/%s (%s)",
            deletes,
            indexed,
            bucket,
            prefix,
            why,
        )
        return
    message = _refusal_message(bucket, prefix, deletes, indexed, why)
    if counts.dry_run:
        log.warning("dry run: a real run would be refused: %s", message)
        return
    log.error("MASS DELETION REFUSED: %s (counts: %s)", message, counts.as_xcom())
    raise _without_retries(MassDeletionRefused(message, deletes=deletes, indexed=indexed))


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
