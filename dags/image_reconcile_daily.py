"""
### Daily reconciliation of the bucket and the index

Daily at 03:00 UTC or when triggered, walk the bucket/prefix and the index side by side in key
order, streaming (`include/imagelabels/pipeline/reconcile.py`). **plan** deletes documents whose object is
gone (orphans) or was overwritten (stale) and writes manifests of objects without a current
document (except bad images that already failed: `known_bad`); **label_and_index** labels them
as the hourly DAG does; **report** returns the counts. `dry_run` counts and changes nothing.

`prefix` placeholders (`{ds}`...) take the run's data interval start; a run triggered without a
logical date takes the last complete day (03:00 to 03:00 UTC) before it. Bad Params or settings
fail **plan** at once, before any change; a failed run is notified as `IMAGELABELS_FAILURE_*` says.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import reconcile_params, reject_unknown_params
from imagelabels.tasks.taskflow import FROM_CONTEXT, DagRun, TaskInstance, Upstream


@dag(
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=reconcile_params(),
    doc_md=__doc__,
    tags=["imagelabels", "reconciliation", "s3"],
    on_failure_callback=notify_failures,
    default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
)
def image_reconcile_daily() -> None:
    @task
    def plan(
        params: dict[str, Any] = FROM_CONTEXT,
        dag_run: DagRun = FROM_CONTEXT,
        ti: TaskInstance = FROM_CONTEXT,
    ) -> list[dict[str, Any]]:
        from imagelabels.tasks.taskflow import plan_reconcile_task

        return plan_reconcile_task(params, dag_run, ti)

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def label_and_index(
        batch: dict[str, Any], params: dict[str, Any] = FROM_CONTEXT, dag_run: DagRun = FROM_CONTEXT
    ) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import label_batch_task

        return label_batch_task(batch, params, dag_run, noun="keys")

    @task(trigger_rule="none_failed", outlets=[IMAGES_INDEXED])  # wakes the alert DAG
    def report(reports: Upstream, ti: TaskInstance = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.taskflow import reconcile_report_task

        return reconcile_report_task(reports, ti)

    report(label_and_index.expand(batch=plan()))


image_reconcile_daily()
