"""The ingestion steps the DAGs call, with explicit arguments and no Airflow imports.

``plan_batches`` lists one data interval and writes batch manifests; ``label_batch`` processes
one manifest. Both are plain functions so tests and benchmarks drive them without Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imagelabels.engine.indexing import ensure_indices, iter_failures
from imagelabels.labelers.base import Labeler
from imagelabels.pipeline.batch import BatchReport, RunContext, process_batch
from imagelabels.settings import MAX_BATCH_SIZE
from imagelabels.sources.listing import ListedObject, ListingStats, list_objects_in_window
from imagelabels.sources.manifests import (
    Manifest,
    listing_failed,
    manifests_root,
    read_manifest,
    write_manifests,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """The batches of one run and what listing them cost."""

    manifests: list[Manifest]
    stats: ListingStats


def plan_batches(
    *,
    s3_client: Any,
    es: Any,
    bucket: str,
    prefix: str,
    start: datetime,
    end: datetime,
    staging_uri: str,
    run: RunContext,
    batch_size: int,
    retry_failed: bool = False,
) -> Plan:
    """Make sure the indices exist, list ``[start, end)`` and write one manifest per batch.

    :param retry_failed: instead of listing the interval, take the keys that have a failure
        record (the "retry failed only" Param).
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be within 1..{MAX_BATCH_SIZE}, got {batch_size}")
    ensure_indices(es)
    staging = manifests_root(staging_uri)
    exclude = [staging.key] if staging.bucket == bucket else []
    stats = ListingStats()
    objects: Iterable[ListedObject]
    if retry_failed:
        objects = failed_objects(es, bucket, prefix, stats=stats)
    else:
        objects = list_objects_in_window(
            s3_client, bucket, prefix, start, end, exclude_prefixes=exclude, stats=stats
        )
    from botocore.exceptions import ClientError

    try:
        manifests = list(
            write_manifests(
                s3_client,
                bucket,
                objects,
                staging_uri=staging_uri,
                dag_id=run.dag_id,
                run_id=run.run_id,
                batch_size=batch_size,
            )
        )
    except ClientError as error:
        raise listing_failed(error, bucket, prefix, staging_uri) from error
    log.info(
        "listed s3://%s/%s for [%s, %s): %d keys scanned on %d pages, %d selected in %d batches "
        "(%d outside the interval, %d excluded, %d folder markers)",
        bucket,
        prefix,
        start.isoformat(),
        end.isoformat(),
        stats.scanned,
        stats.pages,
        stats.selected,
        len(manifests),
        stats.outside_window,
        stats.excluded,
        stats.skipped_folders,
    )
    return Plan(manifests=manifests, stats=stats)


def failed_objects(
    es: Any, bucket: str, prefix: str = "", *, stats: ListingStats | None = None, page_size: int = 1000
) -> Iterator[ListedObject]:
    """Stream the keys of ``bucket``/``prefix`` that have a failure record, page by page.

    They come without size or ETag (the record does not know which version failed), so the
    batch HEADs the current object and labels what is there now.
    """
    counted = stats if stats is not None else ListingStats()

    def count_page() -> None:
        counted.pages += 1

    for failure in iter_failures(es, bucket, prefix, page_size=page_size, on_page=count_page):
        counted.scanned += 1
        counted.selected += 1
        yield ListedObject(failure.key, 0, "", failure.failed_at or datetime.now(UTC))


def label_batch(
    *,
    s3_client: Any,
    es: Any,
    labeler: Labeler,
    manifest: dict[str, Any],
    run: RunContext,
    reprocess: bool = False,
    refresh: bool | str = False,
) -> BatchReport:
    """Label and index the keys of one manifest; raise after writing if a retry is needed."""
    objects = read_manifest(s3_client, manifest["uri"])
    if len(objects) != int(manifest["count"]):
        raise RuntimeError(
            f"manifest {manifest['uri']} holds {len(objects)} keys, expected {manifest['count']}"
        )
    report = process_batch(
        s3_client=s3_client,
        es=es,
        labeler=labeler,
        bucket=manifest["bucket"],
        objects=objects,
        run=run,
        reprocess=reprocess,
        refresh=refresh,
    )
    rate = report.listed / report.seconds if report.seconds else 0.0
    log.info(
        "batch %s: %d keys, %d already indexed, %d labeled, %d indexed, %d failed %s, "
        "%d superseded, %d older versions' documents deleted in %.1fs (%.1f keys/s)",
        manifest["uri"],
        report.listed,
        report.already_indexed,
        report.labeled,
        report.indexed,
        sum(report.failed.values()),
        dict(report.failed),
        report.superseded,
        report.replaced,
        report.seconds,
        rate,
    )
    report.raise_if_incomplete()
    return report
