"""List the objects of a bucket/prefix that arrived in one data interval.

Why not ``S3Hook.list_keys(from_datetime=..., to_datetime=...)``: it filters ``(from, to]``, so an
object written exactly on the hour would belong to the run that *ends* there and, with a
half-open interval elsewhere, be processed twice or never. Airflow data intervals are
``[start, end)``; we filter exactly that, on S3's second-resolution ``LastModified``, and stream
page by page so memory stays flat whatever the size of the prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ListedObject:
    """One key as the listing saw it (enough to label it; no version id in ListObjectsV2)."""

    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass
class ListingStats:
    """Counters that tell what a listing cost: S3 bills per page, not per selected key."""

    pages: int = 0
    scanned: int = 0
    selected: int = 0
    excluded: int = 0
    skipped_folders: int = 0
    outside_window: int = 0


def in_window(last_modified: datetime, start: datetime, end: datetime) -> bool:
    """True when ``start <= last_modified < end`` (Airflow's half-open data interval)."""
    if last_modified.tzinfo is None or start.tzinfo is None or end.tzinfo is None:
        raise ValueError("listing windows need timezone-aware datetimes")
    return start <= last_modified < end


def list_objects_in_window(
    s3_client: Any,
    bucket: str,
    prefix: str,
    start: datetime,
    end: datetime,
    *,
    exclude_prefixes: Iterable[str] = (),
    page_size: int = 1000,
    stats: ListingStats | None = None,
) -> Iterator[ListedObject]:
    """Yield the objects under ``prefix`` whose LastModified is in ``[start, end)``.

    :param s3_client: a boto3 S3 client.
    :param exclude_prefixes: keys to leave out (our own staging files when they share the bucket).
    :param page_size: keys per ListObjectsV2 call (S3's maximum is 1,000).
    :param stats: optional counters, filled while iterating.
    """
    if end <= start:
        raise ValueError(f"empty listing window: start {start} is not before end {end}")
    stats = stats if stats is not None else ListingStats()
    excluded = tuple(p for p in exclude_prefixes if p)
    paginator = s3_client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
    for page in pages:
        stats.pages += 1
        for item in page.get("Contents", ()):
            stats.scanned += 1
            key: str = item["Key"]
            if excluded and key.startswith(excluded):
                stats.excluded += 1
                continue
            if key.endswith("/") and item.get("Size", 0) == 0:
                stats.skipped_folders += 1  # console "folder" placeholder, not an image
                continue
            if not in_window(item["LastModified"], start, end):
                stats.outside_window += 1
                continue
            stats.selected += 1
            yield ListedObject(
                key=key,
                size=int(item.get("Size", 0)),
                etag=str(item.get("ETag", "")).strip('"'),
                last_modified=item["LastModified"],
            )


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Split a stream into lists of at most ``size`` items without materialising it."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
