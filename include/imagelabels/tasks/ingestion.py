"""Task bodies shared by the ingestion DAGs: Params and connections in, XCom-sized dicts out.

DAG files stay a table of contents; this module turns a run's Params into settings, builds the
clients from Airflow connections (:mod:`imagelabels.clients`) and calls the plain-Python core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from imagelabels import clients, settings
from imagelabels.pipeline.batch import RunContext
from imagelabels.settings import ConfigurationError
from imagelabels.tasks.params import labeler_name, labeling_settings, render_prefix, text_param

HOURLY = timedelta(hours=1)
DAILY = timedelta(days=1)


@contextmanager
def fail_at_once() -> Iterator[None]:
    """Errors no retry can fix fail the task at once, without its retries.

    Wrap only checks of Params and settings (and the cost guard): every ``ValueError`` raised
    there (:class:`~imagelabels.settings.ConfigurationError`, a bad labeling setting, a bad price
    table) and a cost stop would fail every try the same way - a missing bucket used to take two
    5-minute retries to fail. Transient errors (engine unavailable, throttling, network) are not
    ``ValueError`` and keep their retries.
    """
    from imagelabels.labelers import costs

    try:
        yield
    except (ValueError, costs.CostLimitExceeded) as error:
        raise _fail(error) from error


def _s3() -> Any:
    return clients.aws_client("s3", settings.aws_conn_id())


def _es() -> Any:
    """The search engine of the connection; a connection that is missing or of a type we cannot
    use is a configuration error (no retry), a server that does not answer is not (raised later)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        with fail_at_once():
            return clients.search_engine(settings.es_conn_id())
    except AirflowNotFoundException as error:
        raise _fail(
            ConfigurationError(f"{error} (IMAGELABELS_ES_CONN_ID={settings.es_conn_id()!r})")
        ) from error


def _labeler(params: Mapping[str, Any]) -> Any:
    from imagelabels.labelers import make_labeler

    conn_id = settings.aws_conn_id()
    return make_labeler(
        labeler_name(params), lambda service: clients.aws_client(service, conn_id), labeling_settings(params)
    )


def queue_settings(params: Mapping[str, Any]) -> Any:
    """The run's :class:`~imagelabels.sources.sqs.QueueSettings` (Param, else ``IMAGELABELS_QUEUE_URL``)."""
    from imagelabels.sources.sqs import QueueSettings

    return QueueSettings(
        queue_url=text_param(params, "queue_url") or settings.env("QUEUE_URL").strip(),
        wait_seconds=int(params.get("wait_seconds", 5)),
        visibility_timeout=int(params.get("visibility_timeout", 900)),
        max_messages=int(params.get("max_messages", 5000)),
    )


def check_bucket_reachable(bucket: str) -> None:
    """One quick ``HeadBucket`` through the AWS connection before a run lists or labels.

    A wrong endpoint, region or credentials then fails the first task within seconds, naming
    the connection and the bucket, instead of after a minute of adaptive retries per try. A
    bucket that does not exist or may not be read fails without retries (the next try would
    get the same answer); a server error, throttling or no answer at all keeps the retries.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    conn_id = settings.aws_conn_id()
    client = clients.aws_client("s3", conn_id, probe=True)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        what = {
            "404": "does not exist",
            "NoSuchBucket": "does not exist",
            "403": "is not readable (access denied)",
            "400": "is not a valid bucket name here (bad request)",
        }
        reason = what.get(code) or what.get(str(status))
        if reason is None:  # 5xx, SlowDown, throttling: worth another try
            raise ConnectionError(
                f"s3://{bucket}/ cannot be read ({code or status}) through aws connection {conn_id!r}"
            ) from error
        raise _fail(
            ConfigurationError(f"s3://{bucket}/ {reason} through aws connection {conn_id!r}")
        ) from error
    except BotoCoreError as error:
        endpoint = client.meta.endpoint_url
        raise ConnectionError(
            f"cannot reach S3 at {endpoint} (s3://{bucket}/) through aws connection {conn_id!r}: {error}"
        ) from error


def run_interval(
    start: datetime | None,
    end: datetime | None,
    run_after: datetime,
    period: timedelta,
    offset: timedelta = timedelta(0),
) -> tuple[datetime, datetime]:
    """The run's data interval; for a run without one, the last complete interval before
    ``run_after`` on the DAG's grid (``period`` long, starting ``offset`` after midnight UTC).

    The REST API may trigger a run without a logical date; its data interval is then ``None``
    and listing "the interval" crashed on ``None <= datetime``. The same rule a manual run with a
    logical date gets from the timetable (the hourly DAG: the last complete hour) keeps such a
    run idempotent: run twice, it lists the same window.
    """
    if start is not None and end is not None:
        return start, end
    grid = datetime(1970, 1, 1, tzinfo=run_after.tzinfo) + offset
    end = run_after - (run_after - grid) % period
    return end - period, end


def validate_params(params: Mapping[str, Any]) -> None:
    """The Params and settings every labeling run needs, checked in its first task before any
    change or paid call; a bad one fails the task at once (no retries), naming it."""
    from imagelabels.labelers import costs

    with fail_at_once():
        labeling_settings(params), labeler_name(params)
        costs.parse_max_cost(params.get("max_cost"))


def listing_prefix(params: Mapping[str, Any], when: datetime) -> str:
    """The ``prefix`` Param (else ``IMAGELABELS_PREFIX``) with its placeholders filled from
    ``when`` (the data interval start); a template or a stray brace fails the task at once."""
    with fail_at_once():
        if text_param(params, "prefix"):
            return render_prefix(text_param(params, "prefix"), when, "Param 'prefix'")
        return render_prefix(settings.env("PREFIX").strip(), when, "setting IMAGELABELS_PREFIX")


def plan_interval(
    params: Mapping[str, Any], dag_id: str, run_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The hourly ``list_batches`` task: list the interval under the rendered prefix."""
    return plan_listing(params, listing_prefix(params, start), dag_id, run_id, start, end)


def checked_source(params: Mapping[str, Any]) -> tuple[str, str]:
    """Params, the bucket setting and the bucket itself checked before any work: the source
    bucket and where its manifests go. Configuration mistakes fail at once, without retries."""
    validate_params(params)
    with fail_at_once():
        bucket = settings.source_bucket(params.get("bucket"))
        staging = settings.staging_uri(bucket)
    check_bucket_reachable(bucket)
    return bucket, staging


def plan_listing(
    params: Mapping[str, Any], prefix: str, dag_id: str, run_id: str, start: Any, end: Any
) -> list[dict[str, Any]]:
    """List ``[start, end)`` (or the recorded failures) into batch manifests."""
    from imagelabels.pipeline.ingest import plan_batches

    bucket, staging = checked_source(params)
    plan = plan_batches(
        s3_client=_s3(),
        es=_es(),
        bucket=bucket,
        prefix=prefix,
        staging_uri=staging,
        start=start,
        end=end,
        run=RunContext(dag_id, run_id),
        batch_size=int(params["batch_size"]),
        retry_failed=bool(params.get("retry_failed")),
    )
    return bound_map_length([{**manifest.as_xcom(), "kind": "objects"} for manifest in plan.manifests])


def plan_reconcile_run(
    params: Mapping[str, Any], dag_id: str, run_id: str, start: datetime
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The reconciliation ``plan`` task: batch references for XCom, and the run's counts.

    Params, settings and the bucket are checked before the walk deletes anything."""
    from imagelabels.pipeline.reconcile import plan_reconciliation

    validate_params(params)
    prefix = listing_prefix(params, start)  # before any client: a refused prefix touches no AWS
    bucket, staging = checked_source(params)
    result = plan_reconciliation(
        s3_client=_s3(),
        es=_es(),
        bucket=bucket,
        prefix=prefix,
        staging_uri=staging,
        run=RunContext(dag_id, run_id),
        batch_size=int(params["batch_size"]),
        dry_run=bool(params.get("dry_run")),
        min_age_hours=float(params["min_age_hours"]),
        refresh=settings.es_refresh(),
        confirm_mass_delete=bool(params.get("confirm_mass_delete")),
    )
    batches = bound_map_length([manifest.as_xcom() for manifest in result.manifests])
    return batches, result.counts.as_xcom()


def drain_or_plan_retries(params: Mapping[str, Any], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Drain the queue into event manifests, or (``retry_failed``) list the recorded failures."""
    from datetime import UTC, datetime

    from imagelabels.pipeline.event_ingest import plan_event_batches

    if params.get("retry_failed"):
        now = datetime.now(UTC)
        return plan_listing(params, text_param(params, "prefix"), dag_id, run_id, now, now)
    validate_params(params)  # fail fast on bad Params, before any call
    config = precheck_queue_cost(params, queue_settings(params))
    with fail_at_once():
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
    return bound_map_length([{**m.as_xcom(), "kind": "events"} for m in manifests])


def max_map_length() -> int:
    """Airflow's ``[core] max_map_length`` (1024 by default): a task that returns a longer list
    to map over is failed by Airflow."""
    from airflow.configuration import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def bound_map_length(batches: list[dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    """``batches``, or, when there are more than Airflow can map over, at most ``limit`` groups
    of consecutive batches (``kind: group``) that one mapped task works through in order.

    An hour of 200,000 uploads in batches of 100 is 2,000 manifests: without this the listing
    task would fail; with it every mapped task takes two manifests.
    """
    limit = max_map_length() if limit is None else limit
    if len(batches) <= limit:
        return batches
    size = -(-len(batches) // limit)  # ceil: groups of equal size, at most `limit` of them
    groups = [batches[i : i + size] for i in range(0, len(batches), size)]
    return [
        {
            "kind": "group",
            "uri": group[0]["uri"],
            "count": sum(int(b["count"]) for b in group),
            "parts": group,
        }
        for group in groups
    ]


def _each_part(
    parts: list[dict[str, Any]], process: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``process`` every manifest of a group, in order; a part that fails does not keep the later
    parts from being processed in this try. The first failure is raised after all of them, so
    Airflow retries the group (finished images are skipped then) as it would a single batch."""
    reports, errors = [], []
    for part in parts:
        try:
            reports.append(process(part))
        except Exception as error:  # re-raised below, once every part had its turn
            errors.append(error)
    if errors:
        raise errors[0]
    return reports


def label_event_or_retry_batch(
    batch: Mapping[str, Any], params: Mapping[str, Any], dag_id: str, run_id: str
) -> dict[str, Any]:
    """Process one manifest of either kind (or a group of them, in order); return its counts."""
    from imagelabels.pipeline.event_ingest import process_event_batch
    from imagelabels.pipeline.ingest import label_batch

    if batch.get("kind") == "group":
        from imagelabels.pipeline.batch import summarize

        return summarize(
            _each_part(batch["parts"], lambda part: label_event_or_retry_batch(part, params, dag_id, run_id))
        )
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

    from imagelabels.pipeline.batch import summarize

    totals = summarize(reports)
    log = logging.getLogger(__name__)
    log.info("run totals: %s", totals)
    if totals.get("indexed"):
        try:
            from imagelabels.search.queries import warm_top_labels

            warm_top_labels(_es())
        except Exception as error:  # a cold cache is slower, never wrong: the run still succeeds
            log.warning("could not warm the top-labels cache: %s", error)
    return totals


def _fail(error: Exception) -> Exception:
    """An error retrying cannot fix (a cost limit, a bad price table, a bad Param or setting):
    fail without retries. ``AirflowFailException`` is what the task SDK of Airflow 3 offers."""
    from airflow.sdk.exceptions import AirflowFailException

    failure = AirflowFailException(str(error))
    failure.__cause__ = error
    return failure


def cost_guard(
    params: Mapping[str, Any], batches: list[dict[str, Any]], what: str = "this run"
) -> dict[str, Any]:
    """The ``cost_guard`` task: estimate the planned batches' cost, log it, and stop the run
    (no retries: the same plan would cost the same) when it is above ``max_cost``."""
    from imagelabels.labelers import costs

    with fail_at_once():
        estimate = costs.estimate_cost(
            costs.images_in(batches), labeler_name(params), labeling_settings(params)
        )
        costs.check_budget(estimate, costs.parse_max_cost(params.get("max_cost")), what=what)
    return estimate.as_xcom()


def precheck_queue_cost(params: Mapping[str, Any], config: Any) -> Any:
    """Check the limit *before* receiving anything, and cap the drain to what was estimated.

    Received messages stay hidden for the visibility timeout and every receive counts towards
    the dead-letter queue's ``maxReceiveCount``; a run the guard stops after draining would push
    its messages towards the DLQ. So, when a limit applies to a paid labeler, the estimate uses
    the queue depth (S3 sends one record per message), capped at ``max_messages``; above the
    limit the run stops with every message untouched, else the drain takes at most that many.
    """
    import dataclasses

    from imagelabels.labelers import costs
    from imagelabels.tasks.sensors import queue_depth

    try:
        limit = costs.parse_max_cost(params.get("max_cost"))
        if limit is None:
            return config
        per_image = costs.estimate_cost(1, labeler_name(params), labeling_settings(params))
        if not per_image.paid:
            return config
        images = max(1, min(queue_depth(settings.aws_conn_id(), config.queue_url), config.max_messages))
        estimate = costs.estimate_cost(images, per_image.labeler, labeling_settings(params))
        costs.check_budget(estimate, limit, what=f"draining {config.queue_url}")
    except (costs.CostLimitExceeded, costs.PriceTableError) as error:
        raise _fail(error) from error
    return dataclasses.replace(config, max_messages=images)


def relabel_target(params: Mapping[str, Any], es: Any) -> Any:
    """The settings a re-label run brings documents to (Params, deployment defaults, model version)."""
    from imagelabels.pipeline.relabel import Target, current_model_version

    with fail_at_once():
        name = labeler_name(params)
    version = current_model_version(es, name, text_param(params, "label_model_version"))
    return Target.of(name, labeling_settings(params), version)


def plan_relabel_run(
    params: Mapping[str, Any], dag_id: str, run_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The re-label ``plan`` task: batch references for XCom, and the run's counts so far."""
    from imagelabels.labelers import costs
    from imagelabels.pipeline.relabel import parse_bound, plan_relabel

    validate_params(params)
    with fail_at_once():  # bad Params fail the run at once: a retry would read the same Params
        since, until = parse_bound(params.get("since"), "since"), parse_bound(params.get("until"), "until")
        bucket = settings.source_bucket(params.get("bucket"))
    es = _es()
    target = relabel_target(params, es)
    plan = plan_relabel(
        s3_client=_s3(),
        es=es,
        bucket=bucket,
        prefix=text_param(params, "prefix"),
        since=since,
        until=until,
        target=target,
        staging_uri=settings.staging_uri(bucket),
        run=RunContext(dag_id, run_id),
        batch_size=int(params["batch_size"]),
        dry_run=bool(params.get("dry_run")),
    )
    try:  # what re-labeling the stale documents would cost (a dry run's answer too)
        estimate = costs.estimate_cost(plan.counts["stale_found"], target.labeler, labeling_settings(params))
        plan.counts["estimate"] = estimate.as_xcom()
    except costs.PriceTableError as error:
        raise _fail(error) from error
    target_xcom = target.as_xcom()
    batches = [{**m.as_xcom(), "target": target_xcom} for m in plan.manifests]
    return bound_map_length(batches), plan.counts


def relabel_one_batch(
    batch: Mapping[str, Any], params: Mapping[str, Any], dag_id: str, run_id: str
) -> dict[str, Any]:
    """The mapped ``relabel`` task: one manifest of stale documents (or a group of them, in
    order), updated in place."""
    from imagelabels.pipeline.relabel import Target, relabel_batch

    if batch.get("kind") == "group":
        from imagelabels.pipeline.relabel import report_totals

        return report_totals(  # the same keys as one batch's counts, added up
            {}, _each_part(batch["parts"], lambda part: relabel_one_batch(part, params, dag_id, run_id))
        )
    return relabel_batch(
        s3_client=_s3(),
        es=_es(),
        labeler=_labeler(params),
        manifest=batch,
        target=Target.from_xcom(batch["target"]),
        run=RunContext(dag_id, run_id),
        refresh=settings.es_refresh(),
    ).as_xcom()


def relabel_report(counts: Mapping[str, Any], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``report`` task: planning counts plus what the batches did, logged."""
    import logging

    from imagelabels.pipeline.relabel import report_totals

    totals = report_totals(counts, reports)
    logging.getLogger(__name__).info("re-label totals: %s", totals)
    return totals
