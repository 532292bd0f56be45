"""
### Event-driven ingestion from SQS

S3 notifies an SQS queue of every upload and deletion (directly, through SNS, or through
EventBridge); this DAG runs back to back (`@continuous`, one run at a time):

1. **wait_for_messages** is deferred on the triggerer (no worker slot) until the queue has
   messages; it reads the queue depth and receives nothing.
2. **drain_queue** receives up to `max_messages` (10 per call, long polling), keeps the latest
   event per object, acknowledges test events and superseded events, leaves malformed messages
   for the dead-letter queue, and writes batch manifests (messages with their receipt handles).
   With a `max_cost` and Rekognition, the queue depth is priced *before* receiving: above the
   limit the run stops with every message untouched (no receive, so none drifts towards the
   dead-letter queue); otherwise it drains at most that many messages.
3. **cost_guard** prices the drained events; a stop here leaves the messages unacknowledged:
   they return after `visibility_timeout` and a later run takes them.
4. **label_and_index** (mapped per batch) indexes uploads and deletes documents of removed
   objects with the same code as the hourly DAG, keeps its messages invisible meanwhile, and
   deletes them from the queue only once everything is written.
5. **summarize** logs and returns the totals.

`retry_failed` skips the queue and reprocesses the keys recorded in `images-failures`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import queue_params, reject_unknown_params
from imagelabels.tasks.sensors import SqsMessagesAvailableSensor
from imagelabels.tasks.taskflow import FROM_CONTEXT, DagRun, Upstream


@dag(
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    max_active_runs=1,
    catchup=False,
    params=queue_params(),
    doc_md=__doc__,
    tags=["imagelabels", "ingestion", "sqs"],
    on_failure_callback=notify_failures,
    default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
)
def image_ingest_sqs() -> None:
    wait = SqsMessagesAvailableSensor(
        task_id="wait_for_messages",
        queue_url="{{ params.queue_url or '' }}",  # the value is inserted, never evaluated
        skip_when="{{ params.retry_failed }}",
    )

    @task
    def drain_queue(
        params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> list[dict[str, Any]]:
        from imagelabels.tasks.ingestion import drain_or_plan_retries

        return drain_or_plan_retries(params, dag_run.dag_id, dag_run.run_id)

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def label_and_index(
        batch: dict[str, Any], params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import label_batch_task

        return label_batch_task(batch, params, dag_run, noun="events")

    @task(trigger_rule="none_failed", outlets=[IMAGES_INDEXED])  # wakes the alert DAG
    def summarize(reports: Upstream) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import summarize_mapped

        return summarize_mapped(reports)

    @task
    def cost_guard(batches: Upstream, params: dict[str, Any] = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.ingestion import cost_guard

        return cost_guard(params, batches)

    batches = drain_queue()
    labeled = label_and_index.expand(batch=batches)
    wait >> batches
    cost_guard(batches) >> labeled
    summarize(labeled)


image_ingest_sqs()
