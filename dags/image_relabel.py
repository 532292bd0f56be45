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

from airflow.sdk import dag, get_current_context, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import reject_unknown_params, relabel_params


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
    def plan(params: dict, run_id: str, dag_run=None, ti=None) -> list[dict]:  # type: ignore[no-untyped-def]
        from imagelabels.tasks.ingestion import plan_relabel_run

        batches, counts = plan_relabel_run(params, dag_run.dag_id, run_id)
        ti.xcom_push("counts", counts)  # a mapped task can only expand return_value
        return batches

    @task
    def cost_guard(batches: list[dict], params: dict) -> dict:
        from imagelabels.tasks.ingestion import cost_guard

        return cost_guard(params, batches, what="this re-label run")

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def relabel(batch: dict, params: dict, run_id: str, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from imagelabels.tasks.ingestion import relabel_one_batch

        get_current_context()["batch_label"] = (
            f"{batch['uri'].rsplit('/', 1)[-1]} ({batch['count']} documents)"  # type: ignore[typeddict-unknown-key]
        )
        return relabel_one_batch(batch, params, dag_run.dag_id, run_id)

    @task(trigger_rule="none_failed", outlets=[IMAGES_INDEXED])  # wakes the alert DAG
    def report(reports: list[dict], ti=None) -> dict:  # type: ignore[no-untyped-def]
        from imagelabels.tasks.ingestion import relabel_report

        counts = ti.xcom_pull(task_ids="plan", key="counts")
        return relabel_report(counts, [reports[i] for i in range(len(reports))])

    batches = plan()
    relabeled = relabel.expand(batch=batches)
    cost_guard(batches) >> relabeled
    report(relabeled)


image_relabel()
