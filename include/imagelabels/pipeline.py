"""Label and index one batch of listed objects: the body of each mapped task.

For every key: HEAD it (version id, content type), skip it when its document already exists
(a rerun or overlapping backfill costs no labeling calls), read its pixel size, label it, and
build its document. Then one bulk request writes the documents, the failure records of the keys
that could not be labeled, and clears the records of keys that now succeeded.

The batch always finishes; afterwards :meth:`BatchReport.raise_if_incomplete` fails the task when
something must be retried (a document Elasticsearch refused, a labeler error that was not about
the image), so Airflow's retry picks it up and, thanks to the existence check, only the missing
keys are labeled again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from imagelabels.documents import INDEX_ALIAS, ObjectInfo, build_document, document_id
from imagelabels.indexing import (
    BulkOutcome,
    FailureRecord,
    ItemFailure,
    bulk_write,
    clear_failures,
    existing_ids,
    record_failures,
)
from imagelabels.labelers.base import Labeler, LabelingError
from imagelabels.listing import ListedObject
from imagelabels.objects import ObjectChanged, describe_object, read_dimensions

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
            "failed": dict(self.failed),
            "retryable_failures": self.retryable_failures,
            "index_errors": len(self.index_errors),
            "seconds": round(self.seconds, 3),
        }

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


def _describe_all(
    s3_client: Any,
    bucket: str,
    objects: Sequence[ListedObject],
    report: BatchReport,
    failures: list[FailureRecord],
) -> list[ObjectInfo]:
    described: list[ObjectInfo] = []
    for listed in objects:
        try:
            described.append(describe_object(s3_client, bucket, listed))
        except ObjectChanged as change:
            report.superseded += 1
            log.info("skipping, superseded by a newer version: %s", change)
        except LabelingError as error:
            failures.append(
                FailureRecord(bucket, listed.key, "read", error.reason, error.message, error.retryable)
            )
    return described


def process_batch(
    *,
    s3_client: Any,
    es: Any,
    labeler: Labeler,
    bucket: str,
    objects: Sequence[ListedObject],
    run: RunContext,
    reprocess: bool = False,
    want_dimensions: bool = True,
    refresh: bool | str = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BatchReport:
    """Label and index ``objects`` of ``bucket``; return the batch's counts.

    :param reprocess: label again and overwrite documents that already exist (re-label).
    :param want_dimensions: read width/height from the first bytes of each image.
    :param refresh: Elasticsearch refresh policy for the writes (``"wait_for"`` in tests).
    :param clock: wall clock for ``ingested_at``/``failed_at`` (when it happened, not which
        interval: the interval comes from the listing).
    """
    started = time.monotonic()
    report = BatchReport(listed=len(objects))
    failures: list[FailureRecord] = []
    described = _describe_all(s3_client, bucket, objects, report, failures)

    ids = {document_id(o.bucket, o.key, o.version_id, o.etag): o for o in described}
    present = set() if reprocess else existing_ids(es, list(ids))
    report.already_indexed = len(present)

    actions: list[dict[str, Any]] = []
    indexed_keys: list[str] = []
    to_label = [(doc_id, obj) for doc_id, obj in ids.items() if doc_id not in present]
    for done, (doc_id, obj) in enumerate(to_label):
        if done and done % PROGRESS_EVERY == 0:
            elapsed = time.monotonic() - started
            log.info("labeled %d/%d (%.1f images/s)", done, len(to_label), done / elapsed if elapsed else 0.0)
        if want_dimensions:
            width, height = read_dimensions(s3_client, obj)
            obj = replace(obj, width=width, height=height)
        try:
            result = labeler.label(obj)
            document = build_document(obj, result, dag_id=run.dag_id, run_id=run.run_id, ingested_at=clock())
        except LabelingError as error:
            failures.append(
                FailureRecord(bucket, obj.key, "label", error.reason, error.message, error.retryable)
            )
            continue
        except Exception as error:
            log.exception("unexpected error labeling s3://%s/%s", bucket, obj.key)
            message = f"{type(error).__name__}: {error}"
            failures.append(FailureRecord(bucket, obj.key, "label", "unexpected_error", message, True))
            continue
        report.labeled += 1
        actions.append(
            {
                "_op_type": "index" if reprocess else "create",
                "_index": INDEX_ALIAS,
                "_id": doc_id,
                "_source": document,
            }
        )
        indexed_keys.append(obj.key)

    outcome: BulkOutcome = bulk_write(es, actions, refresh=refresh)
    report.indexed = outcome.created + outcome.updated + outcome.already_present
    report.index_errors = outcome.failures
    refused = {f.doc_id: f for f in outcome.failures}
    succeeded = [ids[doc_id].key for doc_id in present]
    for action, key in zip(actions, indexed_keys, strict=True):
        refusal = refused.get(action["_id"])
        if refusal is None:
            succeeded.append(key)
        else:  # recorded like any other failure, so the key is never lost once retries run out
            failures.append(
                FailureRecord(bucket, key, "index", f"index_{refusal.status}", refusal.reason, True)
            )

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
        "failed": Counter(),
        "index_errors": 0,
    }
    for report in reports:
        for name in ("listed", "already_indexed", "superseded", "labeled", "indexed", "index_errors"):
            totals[name] += int(report.get(name, 0))
        totals["failed"].update(report.get("failed", {}))
    totals["failed"] = dict(totals["failed"])
    totals["failed_total"] = sum(totals["failed"].values())
    return totals
