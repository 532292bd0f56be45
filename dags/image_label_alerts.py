"""
### Label alerts (in place of Skedler Alerts)

Evaluates the rules of `config/alert_rules.yaml` (or `IMAGELABELS_ALERT_RULES`, or the
`rules_file` Param: a `.yaml` file in `config/` or a folder of `IMAGELABELS_RULES_DIRS`) right
after every ingestion run (the ingestion DAGs update the Asset `imagelabels_images_indexed`)
and every 15 minutes for the window rules (`label_count`,
`no_ingestion`):

* **label**: a label detected at or above a confidence (e.g. `Weapon` >= 85 %);
* **moderation**: a content-moderation category hit;
* **label_count**: the count of a label in a sliding window above a threshold;
* **no_ingestion**: no image ingested for N hours (pipeline health).

Every firing is recorded in the `images-alerts` index under a deterministic id, so an image never
triggers the same rule twice; each rule has a throttle (firings inside it are recorded and counted
in the next notification). Notifications go to email, Slack, a webhook or the task log, with the
image key, the matching labels with confidence and a presigned link.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from imagelabels.tasks.assets import IMAGES_INDEXED
from imagelabels.tasks.notify_failures import notify_failures
from imagelabels.tasks.params import reject_unknown_params
from imagelabels.tasks.taskflow import FROM_CONTEXT


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/15 * * * *", timezone="UTC"), assets=IMAGES_INDEXED
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two evaluations at once could send the same pending firing twice
    params={
        "rules_file": Param(
            None,
            type=["null", "string"],
            description=(
                "Rules file to evaluate (.yaml, in config/ or a folder of IMAGELABELS_RULES_DIRS; "
                "relative paths start at the project folder); empty: IMAGELABELS_ALERT_RULES, "
                "else config/alert_rules.yaml."
            ),
        )
    },
    doc_md=__doc__,
    tags=["imagelabels", "alerts"],
    on_failure_callback=notify_failures,
    default_args={"owner": "imagelabels", "retries": 2, "pre_execute": reject_unknown_params},
)
def image_label_alerts() -> None:
    @task
    def evaluate_and_notify(params: dict[str, Any] = FROM_CONTEXT) -> dict[str, Any]:
        from imagelabels.tasks.alerts import evaluate_and_notify_now

        return evaluate_and_notify_now(params)

    evaluate_and_notify()


image_label_alerts()
