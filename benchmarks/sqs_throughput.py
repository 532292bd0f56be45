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
    from imagelabels.devstack.embedded import EmbeddedStack
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
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.pipeline.event_ingest import process_event_batch

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
    parser.add_argument(
        "--wave",
        type=int,
        default=500,
        help="uploads between two drains (a live bucket's queue is drained as it fills; moto's SQS "
        "slows down badly with thousands of queued messages)",
    )
    parser.add_argument("--features", default="labels", help="comma-separated local features")
    args = parser.parse_args()
    features = tuple(f for f in args.features.split(",") if f)

    from imagelabels.pipeline.batch import RunContext
    from imagelabels.pipeline.event_ingest import plan_event_batches
    from imagelabels.sources.sqs import QueueSettings

    print(f"SQS path · {machine()} · local labeler ({','.join(features)}) · {args.workers} workers")
    with embedded_stack() as stack:
        queue, dlq = setup_queue(stack)
        s3, sqs, es = stack.boto3_client("s3"), stack.boto3_client("sqs"), stack.elasticsearch()
        context = get_context("spawn")
        env = dict(os.environ)
        reports: list[dict[str, Any]] = []
        drain_seconds = process_seconds = upload_seconds = 0.0
        messages = batches = 0
        with ProcessPoolExecutor(
            args.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(env, stack.moto_url, stack.es_url, features),
        ) as pool:
            list(pool.map(abs, range(args.workers)))  # start the workers before the clock
            for start in range(0, args.images, args.wave):
                count = min(args.wave, args.images - start)
                with Stopwatch() as uploading:  # the users' uploads: not the pipeline's time
                    bodies = {f"up/{i:06d}.jpg": small_jpeg(i, side=256) for i in range(start, start + count)}
                    upload(s3, BUCKET, bodies, create=False)
                upload_seconds += uploading.seconds
                settings = QueueSettings(
                    queue, wait_seconds=1, visibility_timeout=900, max_messages=count + 10
                )
                with Stopwatch() as draining:
                    manifests, drained = plan_event_batches(
                        sqs_client=sqs,
                        s3_client=s3,
                        es=es,
                        settings=settings,
                        staging_uri=STAGING,
                        run=RunContext("image_ingest_sqs", f"bench-{start}"),
                        batch_size=args.batch_size,
                    )
                with Stopwatch() as processing:
                    reports += pool.map(_process, [m.uri for m in manifests], [queue] * len(manifests))
                drain_seconds += draining.seconds
                process_seconds += processing.seconds
                messages += drained.messages
                batches += len(manifests)
                print(
                    f"  wave {start // args.wave + 1}: {drained.messages} messages, drain {draining.seconds:.1f}s, "
                    f"label+index+ack {processing.seconds:.1f}s",
                    flush=True,
                )
        es.indices.refresh(index="images")
        documents = es.count(index="images")["count"]
        left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        dead = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
    labeled = sum(r["labeled"] for r in reports)
    total = drain_seconds + process_seconds
    print(
        table(
            [
                ("uploads", f"{args.images} in waves of {args.wave} ({upload_seconds:.1f} s, not counted)"),
                ("messages drained", f"{messages} into {batches} batches"),
                ("drain time", f"{drain_seconds:.1f} s"),
                ("label + index + delete time", f"{process_seconds:.1f} s"),
                ("images/s", f"{labeled / total:.1f} (drain, label, index, acknowledge)"),
                ("documents indexed", f"{documents} of {args.images} uploads"),
                (
                    "left on queue / in flight / DLQ",
                    f"{left['ApproximateNumberOfMessages']} / {left['ApproximateNumberOfMessagesNotVisible']} / "
                    f"{dead['ApproximateNumberOfMessages']}",
                ),
            ]
        )
    )
    print(f"SQS path result: {labeled / total:.1f} images/s for {args.images} uploads, {documents} indexed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
