"""
### Hourly S3 image ingestion

Every hour, label the images that arrived in the S3 bucket/prefix during the run's data interval
`[data_interval_start, data_interval_end)` and bulk-index their labels into Elasticsearch
(alias `images`).

1. **list_batches** lists the interval (paginated, streaming), writes one manifest per batch to
   S3 and returns only their URIs.
2. **cost_guard** estimates the cost of the listed images (Rekognition: one paid call per image
   and feature) and stops the run before any paid call when it is above `max_cost`; a rerun
   with a higher `max_cost` processes the interval.
3. **label_and_index** is mapped over the batches: label each image, index one document per
   object version (deterministic id), record failures with their reason.
4. **summarize** logs and returns the run's totals.

Backfills (UI "Trigger → Backfill" or `airflow backfill create`) process exactly their intervals;
rerunning an interval skips every image already indexed and changes nothing. `retry_failed`
reprocesses the keys recorded in `images-failures` instead of listing. A run triggered without a
logical date processes the last complete hour before it was triggered.

Bad Params or settings (a misspelled Param, a missing bucket, Jinja in `prefix`) fail the first
task at once, without retries; a failed run is notified as `IMAGELABELS_FAILURE_*` says.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import ingestion_params, reject_unknown_params
from imagelabels.tasks.taskflow import FROM_CONTEXT, DagRun, Upstream


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    params=ingestion_params(),
    doc_md=__doc__,
    tags=["imagelabels", "ingestion", "s3"],
    on_failure_callback=notify_failures,
    default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
)
def image_ingest_s3_hourly() -> None:
    @task
    def list_batches(
        params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> list[dict[str, Any]]:
        from imagelabels.tasks.taskflow import list_interval_batches

        return list_interval_batches(params, dag_run)

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def label_and_index(
        batch: dict[str, Any], params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import label_batch_task

        return label_batch_task(batch, params, dag_run, noun="keys")

    @task(trigger_rule="none_failed", outlets=[IMAGES_INDEXED])  # wakes the alert DAG
    def summarize(reports: Upstream) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import summarize_mapped

        return summarize_mapped(reports)

    @task
    def cost_guard(batches: Upstream, params: dict[str, Any] = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.ingestion import cost_guard

        return cost_guard(params, batches)

    batches = list_batches()
    labeled = label_and_index.expand(batch=batches)
    cost_guard(batches) >> labeled
    summarize(labeled)


image_ingest_s3_hourly()
