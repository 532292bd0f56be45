"""
### Scheduled label reports (one DAG per report in `config/reports.yaml`)

For the run's data interval `[data_interval_start, data_interval_end)` (a day for `daily`, a week
for `weekly`...), in place of Skedler:

1. **build_report** computes the figures with search-engine aggregations (images indexed /
   rejected / failed by reason, top and new labels, moderation hits, images per hour and prefix),
   renders CSV, XLSX, PNG charts and a PDF, and stores them under date-partitioned keys of the
   report's output location (S3); keyed by interval, so a rerun overwrites the same report.
2. **deliver** is mapped over the report's channels (email, Slack, webhook): each has its own
   `delivery.attempts` tries (Airflow retries; one send per try) and outcome record. A channel
   that delivered this interval is skipped, one whose last send may have arrived fails instead of
   sending twice - unless `redeliver` is set.

Backfilling the DAG over past days produces the past reports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, CronTriggerTimetable, Param, dag, task

from imagelabels.tasks import reports
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import reject_unknown_params
from imagelabels.tasks.taskflow import FROM_CONTEXT, DagRun, Upstream


def report_dag(config: reports.ReportConfig) -> DAG:
    cron, tries = reports.data_interval_cron(config.period, config.schedule), config.delivery.attempts

    @dag(
        dag_id=f"image_label_report_{config.name}",
        schedule=CronDataIntervalTimetable(cron, timezone="UTC"),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=2,
        params={
            "redeliver": Param(
                False, type="boolean", description="Send again on channels that already delivered."
            )
        },
        doc_md=__doc__,
        tags=["imagelabels", "reports", config.period],
        on_failure_callback=notify_failures,
        default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
    )
    def image_label_report() -> None:
        @task
        def build_report(dag_run: DagRun = FROM_CONTEXT) -> dict[str, Any]:
            from imagelabels.tasks.reports import build_interval_report

            return build_interval_report(config.name, dag_run)

        @task(map_index_template="{{ channel }}", retries=tries - 1, retry_exponential_backoff=2.0)
        def deliver(channel: str, built: Upstream, params: dict[str, Any] = FROM_CONTEXT) -> dict[str, Any]:
            from imagelabels.tasks.reports import deliver_channel

            return deliver_channel(config.name, built, channel, redeliver=params["redeliver"])

        deliver.partial(built=build_report()).expand(channel=config.delivery.enabled_channels())

    return image_label_report()


def config_errors_dag(doc: str) -> DAG:
    """While the config has mistakes: a DAG whose page lists them and whose runs fail."""

    @dag(
        dag_id=reports.ERRORS_DAG_ID,
        schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC", run_immediately=True),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=False,
        doc_md=doc,
        tags=["imagelabels", "reports", "config-error"],
        default_args={"owner": "imagelabels", "retries": 1},
        on_failure_callback=notify_failures,  # the daily failure reaches people
    )
    def image_label_report_config_errors() -> None:
        @task
        def report_config_errors() -> str:
            from imagelabels.tasks.reports import fail_on_config_problems

            return fail_on_config_problems()

        report_config_errors()

    return image_label_report_config_errors()


_configs = reports.read_report_configs()  # a mistake refuses its own entry, never the valid reports
for _config in _configs.reports:  # a module global per report, named like its DAG id
    globals()[f"image_label_report_{_config.name}"] = report_dag(_config)
if _configs.problems:
    globals()[reports.ERRORS_DAG_ID] = config_errors_dag(reports.problems_doc(_configs))
