"""Event-driven ingestion throughput on the embedded stack: N uploads -> S3 notifications -> SQS
-> drain -> label (local model) -> index -> messages deleted.

The moto server delivers real S3 event notifications to an SQS queue (with a dead-letter queue).
The production code drains the queue into batch manifests (:func:`plan_event_batches`) and
``--workers`` processes handle the batches (:func:`process_event_batch`, what the mapped
``label_and_index`` tasks run), as a LocalExecutor with that parallelism would.

Prints images/s from the first receive to the last message deleted, and checks nothing was lost
(documents indexed == uploads, queue and DLQ empty).

    .venv/bin/python benchmarks/sqs_throughput.py --images 5000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, embedded_stack, machine, small_jpeg, table, upload

BUCKET = "sqs-bench"
STAGING = "s3://sqs-bench-staging/_imagelabels/"
_WORKER: dict[str, Any] = {}


def _init_worker(env: dict[str, str], moto_url: str, es_url: str, features: tuple[str, ...]) -> None:
    os.environ.update(env)
    from imagelabels.embedded import EmbeddedStack
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.local import LocalLabeler

    stack = EmbeddedStack(moto_url, es_url, [])
    _WORKER.update(
        sqs=stack.boto3_client("sqs"),
        s3=stack.boto3_client("s3"),
        es=stack.elasticsearch(),
        labeler=LocalLabeler(LabelingSettings(features=features)),
    )


def _process(manifest_uri: str, queue_url: str) -> dict[str, Any]:
    from imagelabels.event_ingest import process_event_batch
    from imagelabels.pipeline import RunContext

    return process_event_batch(
        sqs_client=_WORKER["sqs"],
        s3_client=_WORKER["s3"],
        es=_WORKER["es"],
        labeler=_WORKER["labeler"],
        manifest_uri=manifest_uri,
        queue_url=queue_url,
        visibility_timeout=900,
        run=RunContext("image_ingest_sqs", "bench"),
    )


def setup_queue(stack: Any) -> tuple[str, str]:
    sqs, s3 = stack.boto3_client("sqs"), stack.boto3_client("s3")
    dlq = sqs.create_queue(QueueName="bench-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    queue = sqs.create_queue(QueueName="bench-events", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="sqs-bench-staging")
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return queue, dlq


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="batches processed at once")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--features", default="labels", help="comma-separated local features")
    args = parser.parse_args()
    features = tuple(f for f in args.features.split(",") if f)

    from imagelabels.event_ingest import plan_event_batches
    from imagelabels.pipeline import RunContext
    from imagelabels.sqs import QueueSettings

    print(f"SQS path · {machine()} · local labeler ({','.join(features)}) · {args.workers} workers")
    with embedded_stack() as stack:
        queue, dlq = setup_queue(stack)
        s3, sqs, es = stack.boto3_client("s3"), stack.boto3_client("sqs"), stack.elasticsearch()
        with Stopwatch() as uploading:
            upload(s3, BUCKET, {f"up/{i:06d}.jpg": small_jpeg(i, side=256) for i in range(args.images)})
        print(f"uploaded {args.images} images in {uploading.seconds:.1f}s")
        context = get_context("spawn")
        env = dict(os.environ)
        with ProcessPoolExecutor(
            args.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(env, stack.moto_url, stack.es_url, features),
        ) as pool:
            list(pool.map(abs, range(args.workers)))  # start the workers before the clock
            settings = QueueSettings(
                queue, wait_seconds=1, visibility_timeout=900, max_messages=args.images + 10
            )
            with Stopwatch() as total:
                drain_started = time.perf_counter()
                manifests, drained = plan_event_batches(
                    sqs_client=sqs,
                    s3_client=s3,
                    es=es,
                    settings=settings,
                    staging_uri=STAGING,
                    run=RunContext("image_ingest_sqs", "bench"),
                    batch_size=args.batch_size,
                )
                drain_seconds = time.perf_counter() - drain_started
                reports = list(pool.map(_process, [m.uri for m in manifests], [queue] * len(manifests)))
        es.indices.refresh(index="images")
        documents = es.count(index="images")["count"]
        left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        dead = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    labeled = sum(r["labeled"] for r in reports)
    print(
        table(
            [
                (
                    "messages drained",
                    f"{drained.messages} ({dict(drained.kinds)}) into {len(manifests)} batches",
                ),
                ("drain time", f"{drain_seconds:.1f} s"),
                ("total time", f"{total.seconds:.1f} s (drain + label + index + delete messages)"),
                ("images/s", f"{labeled / total.seconds:.1f}"),
                ("documents indexed", f"{documents} of {args.images} uploads"),
                (
                    "left on queue / in flight / DLQ",
                    f"{left['ApproximateNumberOfMessages']} / {left['ApproximateNumberOfMessagesNotVisible']} / "
                    f"{dead['ApproximateNumberOfMessages']}",
                ),
            ]
        )
    )
    print(
        f"SQS path result: {labeled / total.seconds:.1f} images/s for {args.images} uploads, {documents} indexed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
