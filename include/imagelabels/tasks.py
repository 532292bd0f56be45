"""Task bodies shared by the ingestion DAGs: Params and connections in, XCom-sized dicts out.

DAG files stay a table of contents; this module turns a run's Params into settings, builds the
clients from Airflow connections (:mod:`imagelabels.clients`) and calls the plain-Python core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imagelabels import clients, settings
from imagelabels.params import labeler_name, labeling_settings
from imagelabels.pipeline import RunContext


def _s3() -> Any:
    return clients.aws_client("s3", settings.aws_conn_id())


def _es() -> Any:
    return clients.elasticsearch_client(settings.es_conn_id())


def _labeler(params: Mapping[str, Any]) -> Any:
    from imagelabels.labelers import make_labeler

    conn_id = settings.aws_conn_id()
    return make_labeler(
        labeler_name(params), lambda service: clients.aws_client(service, conn_id), labeling_settings(params)
    )


def queue_settings(params: Mapping[str, Any]) -> Any:
    """The run's :class:`~imagelabels.sqs.QueueSettings` (Param, else ``IMAGELABELS_QUEUE_URL``)."""
    from imagelabels.sqs import QueueSettings

    return QueueSettings(
        queue_url=str(params.get("queue_url") or "").strip() or settings.env("QUEUE_URL").strip(),
        wait_seconds=int(params.get("wait_seconds", 5)),
        visibility_timeout=int(params.get("visibility_timeout", 900)),
        max_messages=int(params.get("max_messages", 5000)),
    )


def plan_listing(
    params: Mapping[str, Any], prefix: str, dag_id: str, run_id: str, start: Any, end: Any
) -> list[dict[str, Any]]:
    """List ``[start, end)`` (or the recorded failures) into batch manifests."""
    from imagelabels.ingest import plan_batches

    labeling_settings(params), labeler_name(params)  # fail fast on bad Params, before any call
    bucket = settings.source_bucket(params.get("bucket"))
    plan = plan_batches(
        s3_client=_s3(),
        es=_es(),
        bucket=bucket,
        prefix=prefix,
        staging_uri=settings.staging_uri(bucket),
        start=start,
        end=end,
        run=RunContext(dag_id, run_id),
        batch_size=int(params["batch_size"]),
        retry_failed=bool(params.get("retry_failed")),
    )
    return [{**manifest.as_xcom(), "kind": "objects"} for manifest in plan.manifests]


def drain_or_plan_retries(params: Mapping[str, Any], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Drain the queue into event manifests, or (``retry_failed``) list the recorded failures."""
    from datetime import UTC, datetime

    from imagelabels.event_ingest import plan_event_batches

    if params.get("retry_failed"):
        now = datetime.now(UTC)
        return plan_listing(params, str(params.get("prefix") or ""), dag_id, run_id, now, now)
    labeling_settings(params), labeler_name(params)  # fail fast on bad Params, before any call
    config = queue_settings(params)
    staging = settings.env("STAGING_URI") or settings.staging_uri(
        settings.source_bucket(params.get("bucket"))
    )
    manifests, _ = plan_event_batches(
        sqs_client=clients.aws_client("sqs", settings.aws_conn_id()),
        s3_client=_s3(),
        es=_es(),
        settings=config,
        staging_uri=staging,
        run=RunContext(dag_id, run_id),
        batch_size=int(params["batch_size"]),
    )
    return [{**m.as_xcom(), "kind": "events"} for m in manifests]


def label_event_or_retry_batch(
    batch: Mapping[str, Any], params: Mapping[str, Any], dag_id: str, run_id: str
) -> dict[str, Any]:
    """Process one manifest of either kind; return its counts."""
    from imagelabels.event_ingest import process_event_batch
    from imagelabels.ingest import label_batch

    run = RunContext(dag_id, run_id)
    if batch.get("kind", "objects") == "objects":
        report = label_batch(
            s3_client=_s3(),
            es=_es(),
            labeler=_labeler(params),
            manifest=dict(batch),
            run=run,
            reprocess=bool(params.get("reprocess")),
            refresh=settings.es_refresh(),
        )
        return report.as_xcom()
    config = queue_settings(params)
    return process_event_batch(
        sqs_client=clients.aws_client("sqs", settings.aws_conn_id()),
        s3_client=_s3(),
        es=_es(),
        labeler=_labeler(params),
        manifest_uri=str(batch["uri"]),
        queue_url=config.queue_url,
        visibility_timeout=config.visibility_timeout,
        run=run,
        refresh=settings.es_refresh(),
    )


def summarize_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up a run's batch reports and log the totals (the ``summarize`` task)."""
    import logging

    from imagelabels.pipeline import summarize

    totals = summarize(reports)
    logging.getLogger(__name__).info("run totals: %s", totals)
    return totals
