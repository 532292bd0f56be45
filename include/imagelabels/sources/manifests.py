"""Batch manifests: the reference that travels through XCom instead of the key list.

An hourly run of a busy prefix can select hundreds of thousands of keys. Pushing them through
XCom would put megabytes into the metadata database for every run, so the listing task writes
one small JSON-lines manifest per batch to object storage and XCom carries only the manifest
URIs. Workers on other machines read their manifest from S3; nothing goes through local disk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imagelabels.sources.listing import ListedObject, batched


@dataclass(frozen=True)
class S3Uri:
    """A parsed ``s3://bucket/key-or-prefix``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri.strip())
        if not match:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        return cls(bucket=match.group(1), key=match.group(2))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)


def manifests_root(staging_uri: str) -> S3Uri:
    """The folder under the staging location that holds every manifest (what listings skip)."""
    base = S3Uri.parse(staging_uri)
    folder = base.key if not base.key or base.key.endswith("/") else base.key + "/"
    return S3Uri(base.bucket, f"{folder}manifests/")


def manifest_prefix(staging_uri: str, dag_id: str, run_id: str) -> S3Uri:
    """The folder holding one run's manifests; deterministic, so a rerun overwrites its own."""
    root = manifests_root(staging_uri)
    return S3Uri(root.bucket, f"{root.key}{_safe(dag_id)}/{_safe(run_id)}/")


def _encode(obj: ListedObject) -> str:
    return json.dumps(
        {
            "key": obj.key,
            "size": obj.size,
            "etag": obj.etag,
            "last_modified": obj.last_modified.isoformat(),
        },
        ensure_ascii=False,
    )


def _decode(line: str) -> ListedObject:
    raw = json.loads(line)
    return ListedObject(
        key=raw["key"],
        size=int(raw["size"]),
        etag=raw["etag"],
        last_modified=datetime.fromisoformat(raw["last_modified"]),
    )


@dataclass(frozen=True)
class Manifest:
    """What XCom carries for one batch: where its keys are, and how many."""

    uri: str
    count: int
    bucket: str

    def as_xcom(self) -> dict[str, Any]:
        return {"uri": self.uri, "count": self.count, "bucket": self.bucket}


def write_manifests(
    s3_client: Any,
    source_bucket: str,
    objects: Iterable[ListedObject],
    *,
    staging_uri: str,
    dag_id: str,
    run_id: str,
    batch_size: int,
) -> Iterator[Manifest]:
    """Write one manifest per batch while the listing streams; yield each as it is written."""
    folder = manifest_prefix(staging_uri, dag_id, run_id)
    for number, batch in enumerate(batched(objects, batch_size), start=1):
        key = f"{folder.key}batch-{number:05d}.jsonl"
        body = "\n".join(_encode(obj) for obj in batch) + "\n"
        s3_client.put_object(
            Bucket=folder.bucket,
            Key=key,
            Body=body.encode("utf-8"),
            ContentType="application/x-ndjson",
        )
        yield Manifest(uri=str(S3Uri(folder.bucket, key)), count=len(batch), bucket=source_bucket)


def read_manifest(s3_client: Any, uri: str) -> list[ListedObject]:
    """Load the keys of one batch."""
    location = S3Uri.parse(uri)
    body = s3_client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    return [_decode(line) for line in body.decode("utf-8").splitlines() if line.strip()]


def listing_failed(error: Any, bucket: str, prefix: str, staging_uri: str) -> RuntimeError:
    """A clear error for an S3 ``ClientError`` while listing a source or writing manifests."""
    code = error.response.get("Error", {}).get("Code", "error")
    return RuntimeError(
        f"cannot list s3://{bucket}/{prefix} or write manifests to {staging_uri}: {code}: {error}. "
        "Check the bucket name, the region of the aws connection and the role's s3:ListBucket / "
        "s3:PutObject permissions."
    )
