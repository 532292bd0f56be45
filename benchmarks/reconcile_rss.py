"""Reconciliation memory: does the planning step stay flat however many keys there are?

For each size N, a bucket of N keys is reconciled with an index that drifted from it:

* 90 % of the keys are in S3 *and* indexed (current ETag): ``ok``;
* 5 % are in S3 only: ``missing`` (one in ten of those has a non-retryable failure record:
  ``known_bad``), written to batch manifests;
* 5 % are indexed only: ``orphans``, deleted in bulk chunks.

**What is real and what is stubbed.** The index side is real: noida-db (Elasticsearch API) holds
the documents and the failure records, read with ``search_after`` pages and cleaned with bulk
deletes over HTTP by the production code and client. The S3 side is a stub of ``ListObjectsV2``
that makes each page of 1,000 keys on request (as boto3's paginator hands them over) and discards
the manifests it is given: uploading 200,000 objects to the moto server would take most of an
hour and measure moto, not us.

**Lean documents by default.** noida-db answers every search by scanning every document (about
0.6 s per page at 20,000 lean documents, 2.5 s with full ones) and holds a full document
(``build_document``: labels, parents, metadata) in about 80 KB of its memory, so 200,000 full
documents need about 16 GB and most of an hour. The walk asks only for ``object.etag`` and
``object.last_modified`` (``_source`` filtering), so what a document holds besides them never
reaches our process: ``--documents lean`` (default) indexes the location fields and ``object``
only; ``--documents full`` indexes ``build_document`` output, for small N. Seconds are therefore
noida-db's (each page costs O(N) there; Elasticsearch seeks ``search_after`` in sorted doc
values), RSS is ours.

The planning step (:func:`imagelabels.pipeline.reconcile.plan_reconciliation`, not a dry run) runs in a
fresh process per N; that process reports its peak RSS (``ru_maxrss``) after imports and clients
(the floor) and after the walk. Growth = peak - floor.

    .venv/bin/python benchmarks/reconcile_rss.py                       # 50k, 100k, 200k keys
    .venv/bin/python benchmarks/reconcile_rss.py --sizes 20000 400000
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RssSampler, Stopwatch, current_rss_kb, embedded_stack, machine, table

from imagelabels.pipeline.reconcile import DELETE_CHUNK, INDEX_PAGE_SIZE

BUCKET = "bench-photos"
PREFIX = "uploads/"
LONG_AGO = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LABELS = [
    {
        "Name": "Tabby Cat",
        "Confidence": 92.5,
        "Parents": [{"Name": "Cat"}, {"Name": "Mammal"}, {"Name": "Animal"}],
    },
    {"Name": "Cat", "Confidence": 97.1, "Parents": [{"Name": "Mammal"}, {"Name": "Animal"}]},
    {"Name": "Mammal", "Confidence": 97.1, "Parents": [{"Name": "Animal"}]},
    {"Name": "Animal", "Confidence": 97.1, "Parents": []},
    {"Name": "Pet", "Confidence": 81.0, "Parents": [{"Name": "Animal"}]},
]


def key_of(number: int) -> str:
    """Keys in UTF-8 order of ``number`` (fixed width), with a non-ASCII part like real uploads."""
    return f"{PREFIX}{number // 1000:04d}/bild-ä-{number:08d}.jpg"


def etag_of(number: int) -> str:
    return hashlib.md5(str(number).encode(), usedforsecurity=False).hexdigest()


def role(number: int) -> str:
    """``both`` (90 %), ``s3`` (5 %, missing) or ``index`` (5 %, orphan)."""
    slot = number % 20
    return "s3" if slot == 0 else "index" if slot == 1 else "both"


def known_bad(number: int) -> bool:
    return number % 200 == 0  # one missing key in ten failed for good


class ListingStub:
    """``ListObjectsV2`` pages made on request (nothing held between pages); ``put_object``
    (the manifests) counted and dropped."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.manifests = 0
        self.manifest_bytes = 0

    def get_paginator(self, name: str) -> ListingStub:
        if name != "list_objects_v2":
            raise NotImplementedError(name)
        return self

    def paginate(
        self, *, Bucket: str, Prefix: str, PaginationConfig: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        page = int(PaginationConfig.get("PageSize", 1000))
        for start in range(0, self.size, page):
            contents = [
                {"Key": key_of(n), "Size": 50_000, "ETag": f'"{etag_of(n)}"', "LastModified": LONG_AGO}
                for n in range(start, min(start + page, self.size))
                if role(n) != "index"
            ]
            yield {"Contents": contents, "KeyCount": len(contents)}

    def put_object(self, *, Body: bytes, **_: Any) -> dict[str, Any]:
        self.manifests += 1
        self.manifest_bytes += len(Body)
        return {}


def lean_document(key: str, etag: str) -> dict[str, Any]:
    """The fields the walk reads (plus the location fields every document has)."""
    return {
        "title": key.rsplit("/", 1)[-1],
        "s3_location": f"s3://{BUCKET}/{key}",
        "s3bucket": BUCKET,
        "s3key": key,
        "timestamp": LONG_AGO.isoformat(),
        "object": {"size": 50_000, "etag": etag, "last_modified": LONG_AGO.isoformat()},
    }


def load_index(es: Any, size: int, full: bool) -> tuple[int, int]:
    """Empty the indices and bulk-load the documents and failure records of one size."""
    from imagelabels.documents import (
        FAILURES_INDEX,
        INDEX_ALIAS,
        LabelResult,
        ObjectInfo,
        build_document,
        document_id,
        failure_id,
        versioned_index_name,
    )
    from imagelabels.engine.indexing import bulk_write, ensure_indices

    for name in (versioned_index_name(), FAILURES_INDEX):
        if es.indices.exists(index=name):
            es.indices.delete(index=name)
    ensure_indices(es)
    result = LabelResult(
        labels=LABELS, labeler="local", label_model_version="bench", min_confidence=70, max_labels=50
    )

    def documents() -> Iterator[dict[str, Any]]:
        for n in range(size):
            if role(n) == "s3":
                continue
            obj = ObjectInfo(BUCKET, key_of(n), 50_000, etag_of(n), LONG_AGO, content_type="image/jpeg")
            source = (
                build_document(obj, result, dag_id="image_ingest_s3_hourly", run_id="r", ingested_at=LONG_AGO)
                if full
                else lean_document(obj.key, obj.etag)
            )
            yield {
                "_op_type": "create",
                "_index": INDEX_ALIAS,
                "_id": document_id(BUCKET, obj.key, None, obj.etag),
                "_source": source,
            }

    def failures() -> Iterator[dict[str, Any]]:
        for n in range(0, size, 200):
            yield {
                "_op_type": "index",
                "_index": FAILURES_INDEX,
                "_id": failure_id(BUCKET, key_of(n)),
                "_source": {
                    "s3bucket": BUCKET,
                    "s3key": key_of(n),
                    "stage": "preflight",
                    "reason": "corrupt_image",
                    "message": "truncated",
                    "retryable": False,
                    "attempts": 1,
                    "failed_at": LONG_AGO.isoformat(),
                },
            }

    docs = bulk_write(es, documents(), chunk_size=2000)
    records = bulk_write(es, failures(), chunk_size=2000)
    if not (docs.ok and records.ok):
        raise RuntimeError(f"loading failed: {docs.failures[:3]} {records.failures[:3]}")
    es.indices.refresh(index=[INDEX_ALIAS, FAILURES_INDEX])
    return docs.created, records.created


def expected_counts(size: int) -> dict[str, int]:
    roles = [role(n) for n in range(size)]
    bad = sum(1 for n in range(size) if role(n) == "s3" and known_bad(n))
    return {
        "ok": roles.count("both"),
        "missing": roles.count("s3") - bad,
        "known_bad": bad,
        "orphans": roles.count("index"),
    }


_ALL = {"Bucket": BUCKET, "Prefix": PREFIX, "PaginationConfig": {"PageSize": 1000}}


def child(size: int, es_url: str, batch_size: int) -> None:
    """One planning step in this (fresh) process; print JSON with its RSS before and during it."""
    import botocore.exceptions  # noqa: F401 - loaded by any worker; not part of the walk's growth

    from imagelabels.engine import from_url
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.pipeline.reconcile import plan_reconciliation

    es = from_url(es_url, timeout=120)
    es.info()
    stub = ListingStub(size)
    gc.collect()
    before = current_rss_kb()
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    result = plan_reconciliation(
        s3_client=stub,
        es=es,
        bucket=BUCKET,
        prefix=PREFIX,
        staging_uri="s3://bench-staging/",
        run=RunContext("image_reconcile_daily", f"bench-{size}"),
        batch_size=batch_size,
        min_age_hours=0,
    )
    seconds = time.perf_counter() - started
    walk_peak = sampler.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "before_kb": before,
                "walk_peak_kb": walk_peak,
                "maxrss_kb": usage.ru_maxrss,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "seconds": seconds,
                "counts": result.counts.as_xcom(),
                "manifests": stub.manifests,
                "manifest_bytes": stub.manifest_bytes,
                "xcom_bytes": len(json.dumps(result.as_xcom())),
            }
        )
    )


def contrast(size: int) -> None:
    """In a fresh process: what holding one side (the listing's key -> ETag) in a dict costs, the
    least a set-difference design needs."""
    gc.collect()
    before = current_rss_kb()
    listing = {o["Key"]: o["ETag"] for page in ListingStub(size).paginate(**_ALL) for o in page["Contents"]}
    print(json.dumps({"one_side_kb": current_rss_kb() - before, "keys": len(listing)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--documents", choices=["lean", "full"], default="lean")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--es-url", help=argparse.SUPPRESS)
    parser.add_argument("--contrast", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.es_url, args.batch_size)
        return
    if args.contrast is not None:
        contrast(args.contrast)
        return

    print(f"Reconciliation planning step, peak RSS by number of keys - {machine()}")
    print("S3 side: ListObjectsV2 stub (pages made on request); index side: noida-db over HTTP")
    print(f"{args.documents} documents; index page size {INDEX_PAGE_SIZE}, delete chunk {DELETE_CHUNK}\n")
    rows: list[tuple[str, str]] = []
    with embedded_stack() as stack:
        es = stack.elasticsearch()
        for size in args.sizes:
            with Stopwatch() as loading:
                documents, records = load_index(es, size, full=args.documents == "full")
            command = [sys.executable, __file__, "--child", str(size), "--es-url", stack.es_url]
            command += ["--batch-size", str(args.batch_size)]
            answer = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            counts = answer["counts"]
            found = {name: counts[name] for name in ("ok", "missing", "known_bad", "orphans")}
            if found != expected_counts(size) or counts["deleted"] != counts["orphans"]:
                raise RuntimeError(f"wrong counts: {counts}, expected {expected_counts(size)}")
            before, peak = answer["before_kb"] / 1024, answer["walk_peak_kb"] / 1024
            naive = subprocess.run(
                [sys.executable, __file__, "--contrast", str(size)],
                check=True,
                capture_output=True,
                text=True,
            )
            maxrss, one_side = answer["maxrss_kb"] / 1024, json.loads(naive.stdout)["one_side_kb"] / 1024
            print(
                f"N={size:,}: loaded {documents:,} documents + {records:,} failure records in "
                f"{loading.seconds:.0f}s; plan {answer['seconds']:.1f}s, {counts}; "
                f"{answer['manifests']} manifests ({answer['manifest_bytes'] / 1e6:.1f} MB), "
                f"XCom {answer['xcom_bytes'] / 1e3:.1f} kB",
                flush=True,
            )
            rows.append(
                (
                    f"{size:>9,} keys",
                    f"RSS {before:5.1f} MB before, {peak:5.1f} MB peak during the walk (+{peak - before:4.1f}), "
                    f"ru_maxrss {maxrss:5.1f} MB | {answer['seconds']:6.1f} s, our CPU "
                    f"{answer['cpu_seconds']:5.1f} s | "
                    f"the listing as a dict instead: +{one_side:5.1f} MB",
                )
            )
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
