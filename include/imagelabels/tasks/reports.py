"""Task bodies of the report DAG: config and connections in, references out.

``build_and_store`` computes, renders and stores one interval's report and returns the stored
URIs (XCom carries references, never the files); ``deliver_channel`` fetches them back on
whichever worker runs the channel and delivers once per interval; ``fail_on_config_problems``
is the task of the DAG that exists while the report config has mistakes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagelabels import clients, settings

# What the report DAG file builds its DAGs from at parse time, so that DAG files import tasks only.
from imagelabels.reports.config import ERRORS_DAG_ID as ERRORS_DAG_ID
from imagelabels.reports.config import ReportConfig as ReportConfig
from imagelabels.reports.config import get_report_config
from imagelabels.reports.config import problems_doc as problems_doc
from imagelabels.reports.config import read_report_configs as read_report_configs
from imagelabels.reports.schedule import data_interval_cron as data_interval_cron

if TYPE_CHECKING:
    from airflow.sdk.types import DagRunProtocol

# A link in a mail or a Slack message is opened hours or days later: presign for the longest
# time SigV4 allows (7 days) instead of the search page's 15 minutes.
LINK_SECONDS = 7 * 24 * 3600


def _s3() -> Any:
    return clients.aws_client("s3", settings.aws_conn_id())


def _es() -> Any:
    return clients.search_engine(settings.es_conn_id())


def build_and_store(
    name: str, start: datetime, end: datetime, *, config: ReportConfig | None = None
) -> dict[str, Any]:
    """Compute the report of ``[start, end)``, render every configured format and store the
    files under the interval's keys (a rerun overwrites them); return their URIs and totals."""
    from imagelabels.reports.aggregations import compute_report
    from imagelabels.reports.delivery import store_files
    from imagelabels.reports.render import render_report

    config = config or get_report_config(name)
    report = compute_report(
        _es(),
        name=config.name,
        period=config.period,
        start=start,
        end=end,
        top_n=config.top_n,
        prefix_depth=config.prefix_depth,
        bucket=config.bucket,
        prefix=config.prefix,
    )
    formats = tuple(dict.fromkeys((*config.formats, "json")))  # the JSON rebuilds the report later
    with tempfile.TemporaryDirectory(prefix="imagelabels-report-") as tmp:
        files = render_report(report, Path(tmp), formats)
        uris = store_files(_s3(), config, report, files)
    return {
        "report": config.name,
        "interval_key": report.interval_key,
        "uris": uris,
        "totals": report.to_dict()["totals"],
    }


def build_interval_report(name: str, dag_run: DagRunProtocol) -> dict[str, Any]:
    """The ``build_report`` task: :func:`build_and_store` on the run's data interval.

    A run without one (triggered through the REST API without a logical date) has no interval to
    report on; it fails naming the run instead of comparing ``None`` deep in the aggregations.
    """
    start, end = dag_run.data_interval_start, dag_run.data_interval_end
    if start is None or end is None:
        raise ValueError(
            f"report {name!r}: run {dag_run.run_id!r} has no data interval; "
            "trigger it with a logical date or backfill the interval"
        )
    return build_and_store(name, start, end)


def _fetch(s3: Any, uris: Sequence[str], directory: Path) -> list[Path]:
    """Download stored report files (S3 or a local directory) into ``directory``."""
    paths = []
    for uri in uris:
        target = directory / uri.rstrip("/").rsplit("/", 1)[-1]
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            s3.download_file(bucket, key, str(target))
        else:
            target.write_bytes(Path(uri).read_bytes())
        paths.append(target)
    return paths


def deliver_channel(
    name: str,
    built: Mapping[str, Any],
    channel: str,
    *,
    redeliver: bool = False,
    config: ReportConfig | None = None,
) -> dict[str, Any]:
    """Deliver the stored report on one channel, once per interval (unless ``redeliver``).

    Each try sends at most once (see :mod:`imagelabels.reports.delivery`). The outcome is
    recorded in ``images-report-deliveries``; a failure is recorded with its reason and raised,
    so Airflow retries this channel alone - unless the message may have arrived, which fails
    the task at once (a retry could only send it twice).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from imagelabels.channels import DeliveryError
    from imagelabels.reports.delivery import deliver_and_record, presigned_links
    from imagelabels.reports.links import report_page_links
    from imagelabels.reports.model import Report
    from imagelabels.search.queries import ui_base_url

    config = config or get_report_config(name)
    s3 = _s3()
    uris = list(built["uris"])
    with tempfile.TemporaryDirectory(prefix="imagelabels-deliver-") as tmp:
        files = _fetch(s3, uris, Path(tmp))
        json_files = [f for f in files if f.suffix == ".json"]
        if not json_files:
            raise ValueError(f"report {name!r}: no JSON among the stored files {uris}")
        report = Report.from_dict(json.loads(json_files[0].read_text(encoding="utf-8")))
        base_url = ui_base_url()
        if base_url:  # the page serves the files to signed-in users: links that never expire
            links = report_page_links(config, uris, base_url)
        else:
            links = presigned_links(
                clients.presigning_s3_client(settings.aws_conn_id()), uris, expires_in=LINK_SECONDS
            )
        others = [f for f in files if f.suffix != ".json"]
        try:
            status = deliver_and_record(_es(), channel, config, report, others, links=links, force=redeliver)
        except DeliveryError as error:
            if error.uncertain:
                raise AirflowFailException(str(error)) from error
            raise
    return {"report": name, "interval_key": report.interval_key, "channel": channel, "status": status}


def fail_on_config_problems() -> str:
    """Fail (without retries) listing every mistake of the report config, read afresh: the DAG
    that runs this exists only while the file has mistakes, and a failed run is what reaches
    people (failure notifications, the red run in the UI). A file fixed since the DAG was parsed
    passes."""
    from airflow.sdk.exceptions import AirflowFailException

    from imagelabels.reports.config import read_report_configs

    configs = read_report_configs()
    if configs.problems:
        refused = ", ".join(configs.invalid) or "none"
        raise AirflowFailException(
            f"the report config has {len(configs.problems)} mistake(s); refused entries (no DAG): "
            f"{refused}\n{configs.problems_text()}"
        )
    return f"{configs.source} has no mistakes any more; this DAG goes away at the next parse"
