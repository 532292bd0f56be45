"""
### Hourly S3 image ingestion

Every hour, label the images that arrived in the S3 bucket/prefix during the run's data interval
`[data_interval_start, data_interval_end)` and bulk-index their labels into Elasticsearch
(alias `images`).

1. **list_batches** lists the interval (paginated, streaming), writes one manifest per batch to
   S3 and returns only their URIs.
2. **label_and_index** is mapped over the batches: label each image, index one document per
   object version (deterministic id), record failures with their reason.
3. **summarize** logs and returns the run's totals.

Backfills (UI "Trigger → Backfill" or `airflow backfill create`) process exactly their intervals;
rerunning an interval skips every image already indexed and changes nothing. `retry_failed`
reprocesses the keys recorded in `images-failures` instead of listing.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from imagelabels.params import ingestion_params


@dag(
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    params=ingestion_params(),
    doc_md=__doc__,
    tags=["imagelabels", "ingestion", "s3"],
    default_args={"owner": "imagelabels", "retries": 2},
)
def image_ingest_s3_hourly() -> None:
    @task
    def list_batches(params: dict, run_id: str, dag_run=None, task=None) -> list[dict]:  # type: ignore[no-untyped-def]
        from imagelabels import clients, settings
        from imagelabels.ingest import plan_batches
        from imagelabels.params import labeler_name, labeling_settings
        from imagelabels.pipeline import RunContext

        labeling_settings(params), labeler_name(params)  # fail fast on bad Params, before any call
        bucket = settings.source_bucket(params["bucket"])
        prefix = task.render_template(params["prefix"] or settings.env("PREFIX"), get_current_context())
        plan = plan_batches(
            s3_client=clients.aws_client("s3", settings.aws_conn_id()),
            es=clients.elasticsearch_client(settings.es_conn_id()),
            bucket=bucket,
            prefix=prefix,
            staging_uri=settings.staging_uri(bucket),
            start=dag_run.data_interval_start,
            end=dag_run.data_interval_end,
            run=RunContext(dag_run.dag_id, run_id),
            batch_size=params["batch_size"],
            retry_failed=params["retry_failed"],
        )
        return [manifest.as_xcom() for manifest in plan.manifests]

    @task(map_index_template="{{ batch_label }}", max_active_tis_per_dagrun=8)
    def label_and_index(batch: dict, params: dict, run_id: str, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from imagelabels import clients, settings
        from imagelabels.ingest import label_batch
        from imagelabels.labelers import make_labeler
        from imagelabels.params import labeler_name, labeling_settings
        from imagelabels.pipeline import RunContext

        get_current_context()["batch_label"] = f"{batch['uri'].rsplit('/', 1)[-1]} ({batch['count']} keys)"  # type: ignore[typeddict-unknown-key]
        conn_id = settings.aws_conn_id()
        report = label_batch(
            s3_client=clients.aws_client("s3", conn_id),
            es=clients.elasticsearch_client(settings.es_conn_id()),
            labeler=make_labeler(
                labeler_name(params),
                lambda service: clients.aws_client(service, conn_id),
                labeling_settings(params),
            ),
            manifest=batch,
            run=RunContext(dag_run.dag_id, run_id),
            reprocess=params["reprocess"],
            refresh=settings.es_refresh(),
        )
        return report.as_xcom()

    @task(trigger_rule="none_failed")
    def summarize(reports: list[dict]) -> dict:
        import logging

        from imagelabels.pipeline import summarize as add_up

        totals = add_up([reports[i] for i in range(len(reports))])  # len() first: no probe past the end
        logging.getLogger(__name__).info("run totals: %s", totals)
        return totals

    summarize(label_and_index.expand(batch=list_batches()))


image_ingest_s3_hourly()
