"""P1: does the pipeline reach the Rekognition quota, and how does it compare with the seed's
one-at-a-time consumer?

Setup (all on loopback): moto server (S3, SQS), noida-db, and the Rekognition stand-in in its own
process with a DetectLabels quota (default 50 TPS, answering ThrottlingException above it) and a
fixed latency (default 150 ms); labels are canned so the stand-in costs no CPU.

* **Pipeline**: the listed keys are cut into batches of 100 and processed by ``--workers``
  processes at once (what Airflow's mapped tasks are), each batch on a thread pool, through the
  production code (:func:`imagelabels.pipeline.batch.process_batch`: HEAD, existence check, preflight,
  DetectLabels, bulk index). All processes share one rate limiter (file token bucket at the
  quota), and the boto3 client uses adaptive retries, as in production.
* **Sequential consumer, like the first seed's**: S3 events in an SQS queue; receive one
  message, call DetectLabels, index one document, delete the message; repeat.

Prints images/s, the fraction of the quota reached, throttling answers seen (absorbed by
retries) and throttling errors surfaced (images that failed), and the ratio between the two.

    .venv/bin/python benchmarks/p1_rekognition_quota.py                  # 5,000 images
    .venv/bin/python benchmarks/p1_rekognition_quota.py --images 1000 --sequential-images 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, embedded_stack, machine, small_jpeg, table, upload

BUCKET = "p1-images"
_WORKER: dict[str, Any] = {}


def _init_worker(moto_url: str, es_url: str, standin_url: str, env: dict[str, str]) -> None:
    """Per-process clients, built once (as a Celery/Local worker process would)."""
    import boto3
    from botocore.config import Config

    from imagelabels.clients import AWS_RETRIES, MAX_POOL_CONNECTIONS
    from imagelabels.engine import from_url
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.ratelimit import limiter_from_settings
    from imagelabels.labelers.rekognition import RekognitionLabeler

    os.environ.update(env)
    config = Config(retries=AWS_RETRIES, max_pool_connections=MAX_POOL_CONNECTIONS)
    creds = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    rekognition = boto3.client("rekognition", endpoint_url=standin_url, config=config, **creds)
    _WORKER["s3"] = boto3.client("s3", endpoint_url=moto_url, config=config, **creds)
    _WORKER["es"] = from_url(es_url, timeout=60)
    _WORKER["labeler"] = RekognitionLabeler(
        rekognition, LabelingSettings(features=("labels",)), limiter_from_settings("us-east-1")
    )


def _label_batch(objects: list[dict[str, Any]]) -> dict[str, Any]:
    from imagelabels.pipeline.batch import RunContext, process_batch
    from imagelabels.sources.listing import ListedObject

    listed = [
        ListedObject(o["key"], o["size"], o["etag"], datetime.fromisoformat(o["last_modified"]))
        for o in objects
    ]
    report = process_batch(
        s3_client=_WORKER["s3"],
        es=_WORKER["es"],
        labeler=_WORKER["labeler"],
        bucket=BUCKET,
        objects=listed,
        run=RunContext("p1_benchmark", "p1"),
        concurrency=int(os.environ.get("P1_THREADS", "16")),
    )
    return report.as_xcom()


def run_pipeline(stack: Any, standin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    from imagelabels.engine.indexing import ensure_indices
    from imagelabels.sources.listing import list_objects_in_window

    s3, es = stack.boto3_client("s3"), stack.elasticsearch()
    ensure_indices(es)
    now = datetime.now(UTC)
    listed = list(list_objects_in_window(s3, BUCKET, "", now - timedelta(hours=1), now + timedelta(hours=1)))
    batches = [
        [
            {"key": o.key, "size": o.size, "etag": o.etag, "last_modified": o.last_modified.isoformat()}
            for o in listed[i : i + args.batch_size]
        ]
        for i in range(0, len(listed), args.batch_size)
    ]
    limiter_file = Path(tempfile.mkdtemp(prefix="p1-limiter-")) / "bucket.json"
    env = {
        "IMAGELABELS_REKOGNITION_TPS": str(args.tps),
        "IMAGELABELS_RATE_LIMIT_URL": f"file://{limiter_file}",
        "P1_THREADS": str(args.threads),
    }
    context = get_context("spawn")
    with ProcessPoolExecutor(
        args.workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(stack.moto_url, stack.es_url, standin_url, env),
    ) as pool:
        list(pool.map(_label_batch, [batches[0][:1]] * args.workers))  # start and warm every worker
        es.delete_by_query(index="images", query={"match_all": {}}, refresh=True)
        from imagelabels.devstack.standin import reset_stats

        time.sleep(1.5)  # let the limiter's and the stand-in's buckets refill after the warm-up
        reset_stats(standin_url)
        with Stopwatch() as watch:
            reports = list(pool.map(_label_batch, batches))
    es.indices.refresh(index="images")
    return {
        "images": len(listed),
        "seconds": watch.seconds,
        "labeled": sum(r["labeled"] for r in reports),
        "failed": {k: v for r in reports for k, v in r["failed"].items()},
        "documents": es.count(index="images")["count"],
    }


def run_sequential(stack: Any, standin_url: str, count: int) -> dict[str, Any]:
    """The first seed's consumer: one SQS message, one DetectLabels, one indexed document."""
    import boto3
    from botocore.config import Config

    sqs = stack.boto3_client("sqs")
    queue = sqs.create_queue(QueueName="p1-seed-consumer")["QueueUrl"]
    s3 = stack.boto3_client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [o["Key"] for page in pages for o in page["Contents"]][:count]
    bodies = [
        json.dumps({"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": k}}}]}) for k in keys
    ]

    def refill(start: int) -> int:
        """Keep ~100 events waiting, as a live bucket would (moto's SQS slows down with thousands
        of queued messages, which would make the baseline look worse than it is)."""
        chunk = bodies[start : start + 100]
        for i in range(0, len(chunk), 10):
            entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(chunk[i : i + 10])]
            sqs.send_message_batch(QueueUrl=queue, Entries=entries)
        return start + len(chunk)

    rekognition = boto3.client(
        "rekognition",
        endpoint_url=standin_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
    )
    es = stack.elasticsearch()
    done = 0
    queued = refill(0)
    with Stopwatch() as watch:
        while done < len(keys):
            if queued - done < 10 and queued < len(keys):
                queued = refill(queued)
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", [])
            for message in messages:
                record = json.loads(message["Body"])["Records"][0]["s3"]
                bucket, key = record["bucket"]["name"], record["object"]["key"]
                response = rekognition.detect_labels(
                    Image={"S3Object": {"Bucket": bucket, "Name": key}}, MaxLabels=10, MinConfidence=70
                )
                es.index(
                    index="seed-images",
                    document={
                        "title": key,
                        "s3_location": f"s3://{bucket}/{key}",
                        "Labels": response["Labels"],
                    },
                )
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                done += 1
    return {"images": done, "seconds": watch.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--sequential-images", type=int, default=None, help="default: --images")
    parser.add_argument("--tps", type=float, default=50.0, help="DetectLabels quota of the stand-in")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=4, help="batches processed at once (mapped tasks)")
    parser.add_argument("--threads", type=int, default=16, help="threads per batch")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    sequential_count = args.sequential_images or args.images

    from imagelabels.devstack.standin import StandInConfig, fetch_stats, start_standin_process

    print(f"P1 · {machine()}")
    with embedded_stack() as stack:
        with Stopwatch() as uploading:
            upload(
                stack.boto3_client("s3"),
                BUCKET,
                {f"img/{i:06d}.jpg": small_jpeg(i) for i in range(args.images)},
            )
        print(f"uploaded {args.images} images in {uploading.seconds:.1f}s")
        config = StandInConfig(
            tps={"DetectLabels": args.tps},
            latency_ms=args.latency_ms,
            labels="canned",
            s3_endpoint_url=stack.moto_url,
        )
        url, stop = start_standin_process(config)
        try:
            pipeline = run_pipeline(stack, url, args)
            stats = fetch_stats(url)["operations"]["DetectLabels"]
            surfaced = pipeline["failed"].get("rekognition_throttled", 0)
            rate = pipeline["images"] / pipeline["seconds"]
            print("\nPipeline (production code, shared limiter, adaptive retries)")
            print(
                table(
                    [
                        ("images", str(pipeline["images"])),
                        (
                            "workers x threads",
                            f"{args.workers} x {args.threads}, batches of {args.batch_size}",
                        ),
                        ("wall time", f"{pipeline['seconds']:.1f} s"),
                        ("images/s", f"{rate:.2f}"),
                        ("fraction of quota", f"{rate / args.tps:.1%} of {args.tps:g} TPS"),
                        ("throttling answers seen", f"{stats['throttled']} (retried)"),
                        ("throttling errors surfaced", str(surfaced)),
                        ("failed (all reasons)", json.dumps(pipeline["failed"])),
                        ("documents indexed", str(pipeline["documents"])),
                    ]
                )
            )
            sequential = run_sequential(stack, url, sequential_count)
            seq_rate = sequential["images"] / sequential["seconds"]
            print("\nSequential consumer (first seed: receive, detect, index one document)")
            print(
                table(
                    [
                        ("images", str(sequential["images"])),
                        ("wall time", f"{sequential['seconds']:.1f} s"),
                        ("images/s", f"{seq_rate:.2f}"),
                    ]
                )
            )
            print(f"\nRatio pipeline / sequential: {rate / seq_rate:.1f}x")
            print(
                f"P1 result: {rate / args.tps:.1%} of quota (target >= 95%), {surfaced} throttling errors "
                f"surfaced (target 0), {rate / seq_rate:.1f}x the sequential consumer (target >= 7x)"
            )
        finally:
            stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
