"""
### Re-label backfill

Triggered by hand. Finds the documents of a bucket/prefix (and `timestamp` range: the images'
S3 LastModified) whose `labeler`, `LabelModelVersion`, `labeling.min_confidence`,
`labeling.max_labels` or `features` differ from what labeling would write now (this run's
Params, else the deployment's defaults), labels them again and updates them in place under
the same document id (`include/imagelabels/pipeline/relabel.py`).

1. **plan** counts the scope, streams the stale documents (`search_after`) into batch manifests
   in S3; XCom carries their references only. `dry_run` stops here, with the counts.
2. **cost_guard** prices the batches and stops the run before any paid call above `max_cost`.
3. **relabel** (mapped per batch) checks each document is still stale and its object version
   still exists (a deleted or overwritten object is reported, not re-labeled), then labels and
   overwrites it with the hourly DAG's batch code.
4. **report** returns the counts: stale found, re-labeled, skipped as current, gone/changed,
   failed by reason. A second run right after finds nothing stale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import reject_unknown_params, relabel_params
from imagelabels.tasks.taskflow import FROM_CONTEXT, DagRun, TaskInstance, Upstream


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=relabel_params(),
    doc_md=__doc__,
    tags=["imagelabels", "relabel", "backfill"],
    on_failure_callback=notify_failures,
    default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
)
def image_relabel() -> None:
    @task
    def plan(
        params: dict[str, Any] = FROM_CONTEXT,
        dag_run: DagRun = FROM_CONTEXT,
        ti: TaskInstance = FROM_CONTEXT,
    ) -> list[dict[str, Any]]:
        from imagelabels.tasks.taskflow import plan_relabel_task

        return plan_relabel_task(params, dag_run, ti)

    @task
    def cost_guard(batches: Upstream, params: dict[str, Any] = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.ingestion import cost_guard

        return cost_guard(params, batches, what="this re-label run")

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def relabel(
        batch: dict[str, Any], params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import relabel_batch_task

        return relabel_batch_task(batch, params, dag_run)

    @task(trigger_rule="none_failed", outlets=[IMAGES_INDEXED])  # wakes the alert DAG
    def report(reports: Upstream, ti: TaskInstance = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import relabel_report_task

        return relabel_report_task(reports, ti)

    batches = plan()
    relabeled = relabel.expand(batch=batches)
    cost_guard(batches) >> relabeled
    report(relabeled)


image_relabel()
