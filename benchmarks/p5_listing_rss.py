"""P5: peak RSS of the hourly listing step at 100k / 300k / 1M keys (is it flat in N?).

For each N a **fresh process** runs the production planning step,
:func:`imagelabels.pipeline.ingest.plan_batches` (what ``list_batches`` calls: ``ensure_indices``, the
streaming :func:`~imagelabels.sources.listing.list_objects_in_window`, and
:func:`~imagelabels.sources.manifests.write_manifests`, one JSON-lines manifest per batch), with every key
inside the run's data interval, so all N keys are selected and written to manifests.

**What is real and what is stubbed.** ``ListObjectsV2`` is a stub paginator that makes each page
of 1,000 keys on request (as boto3's paginator hands them over) and holds nothing between pages:
uploading a million objects to the moto server would take hours and measure moto. Manifests go
to the **moto server** through a real boto3 client (``--manifests moto``, default) or to a stub
that counts and drops them (``--manifests stub``). ``ensure_indices`` talks to noida-db.

Each child reports its RSS at its very start (interpreter only), after imports and clients (the
floor), the peak sampled every 10 ms while the step runs, and ``ru_maxrss``; growth = peak -
floor. It also reports the size of the XCom the task returns (the list of manifest references,
``tasks.plan_listing``'s shape), which grows with N / batch size by design.

    .venv/bin/python benchmarks/p5_listing_rss.py                        # 100k, 300k, 1M keys
    .venv/bin/python benchmarks/p5_listing_rss.py --sizes 1000000 --manifests stub --batch-size 1000
"""

from __future__ import annotations

import resource

_START_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before any import of ours

import argparse  # noqa: E402 - the line above must run first
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RssSampler, current_rss_kb, embedded_stack, machine, table  # noqa: E402

BUCKET = "p5-photos"
PREFIX = "uploads/"
HOUR = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
UPLOADED = HOUR + timedelta(minutes=30)


def key_of(number: int) -> str:
    """Keys in UTF-8 order of ``number`` (fixed width), with a non-ASCII part like real uploads."""
    return f"{PREFIX}{number // 1000:04d}/bild-ä-{number:08d}.jpg"


def etag_of(number: int) -> str:
    return hashlib.md5(str(number).encode(), usedforsecurity=False).hexdigest()


class ListingStub:
    """``ListObjectsV2`` pages made on request; ``put_object`` goes to ``sink`` (a boto3 client)
    or, without one, is counted and dropped."""

    def __init__(self, size: int, sink: Any | None) -> None:
        self.size = size
        self.sink = sink
        self.manifests = 0
        self.manifest_bytes = 0

    def get_paginator(self, name: str) -> ListingStub:
        if name != "list_objects_v2":
            raise NotImplementedError(name)
        return self

    def paginate(
        self, *, Bucket: str, Prefix: str, PaginationConfig: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Yield pages of ``PageSize`` keys, each made when asked for."""
        page = int(PaginationConfig.get("PageSize", 1000))
        for start in range(0, self.size, page):
            contents = [
                {"Key": key_of(n), "Size": 50_000, "ETag": f'"{etag_of(n)}"', "LastModified": UPLOADED}
                for n in range(start, min(start + page, self.size))
            ]
            yield {"Contents": contents, "KeyCount": len(contents)}

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        """A manifest: to the moto server, or counted and dropped."""
        self.manifests += 1
        self.manifest_bytes += len(kwargs["Body"])
        return self.sink.put_object(**kwargs) if self.sink is not None else {}


def child(size: int, batch_size: int, es_url: str, moto_url: str | None) -> None:
    """One planning step in this fresh process; print JSON with its RSS figures."""
    import boto3

    from imagelabels.engine import from_url
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.pipeline.ingest import plan_batches

    es = from_url(es_url, timeout=120)
    es.info()
    sink = None
    if moto_url:
        sink = boto3.client(
            "s3",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        sink.head_bucket(Bucket=BUCKET)
    stub = ListingStub(size, sink)
    gc.collect()
    floor = current_rss_kb()
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    plan = plan_batches(
        s3_client=stub,
        es=es,
        bucket=BUCKET,
        prefix=PREFIX,
        start=HOUR,
        end=HOUR + timedelta(hours=1),
        staging_uri=f"s3://{BUCKET}/_imagelabels/",
        run=RunContext("image_ingest_s3_hourly", f"p5-{size}"),
        batch_size=batch_size,
    )
    xcom = [{**manifest.as_xcom(), "kind": "objects"} for manifest in plan.manifests]
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "start_kb": _START_KB,
                "floor_kb": floor,
                "peak_kb": peak,
                "maxrss_kb": usage.ru_maxrss,
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "selected": plan.stats.selected,
                "pages": plan.stats.pages,
                "manifests": stub.manifests,
                "manifest_bytes": stub.manifest_bytes,
                "xcom_entries": len(xcom),
                "xcom_bytes": len(json.dumps(xcom)),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=100, help="the DAG's default Param")
    parser.add_argument("--manifests", choices=["moto", "stub"], default="moto")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--es-url", help=argparse.SUPPRESS)
    parser.add_argument("--moto-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.batch_size, args.es_url, args.moto_url)
        return 0

    print(f"P5 · hourly listing step (plan_batches), RSS by number of keys · {machine()}")
    print(f"ListObjectsV2 stubbed (pages of 1,000 made on request); manifests to {args.manifests}")
    print(f"batch size {args.batch_size}; one fresh process per N\n")
    rows: list[tuple[str, str]] = []
    with embedded_stack() as stack:
        stack.boto3_client("s3").create_bucket(Bucket=BUCKET)
        for size in args.sizes:
            command = [sys.executable, __file__, "--child", str(size), "--es-url", stack.es_url]
            command += ["--batch-size", str(args.batch_size)]
            if args.manifests == "moto":
                command += ["--moto-url", stack.moto_url]
            answer = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            if answer["selected"] != size:
                raise RuntimeError(f"selected {answer['selected']} of {size} keys")
            start, floor = answer["start_kb"] / 1024, answer["floor_kb"] / 1024
            peak, maxrss = answer["peak_kb"] / 1024, answer["maxrss_kb"] / 1024
            print(
                f"N={size:,}: {answer['pages']:,} pages, {answer['manifests']:,} manifests "
                f"({answer['manifest_bytes'] / 1e6:.1f} MB written) in {answer['seconds']:.1f} s "
                f"(our CPU {answer['cpu_seconds']:.1f} s); XCom {answer['xcom_entries']:,} refs, "
                f"{answer['xcom_bytes'] / 1e3:,.1f} kB",
                flush=True,
            )
            rows.append(
                (
                    f"{size:>9,} keys",
                    f"RSS {start:5.1f} MB at start, {floor:5.1f} MB after imports, {peak:5.1f} MB peak "
                    f"(+{peak - floor:4.1f} over imports, +{peak - start:5.1f} over start), "
                    f"ru_maxrss {maxrss:5.1f} MB | XCom {answer['xcom_bytes'] / 1e3:7.1f} kB",
                )
            )
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
