"""`make demo`: the whole pipeline on the embedded stack, from nothing to search answers.

Starts a moto server (S3) and noida-db (Elasticsearch) on free loopback ports, uploads real
photographs, runs the hourly ingestion DAG with ``dag.test()`` for the hour(s) that contain the
uploads, prints the run's totals and the answers to the first seed's three questions, runs today's daily
label report (CSV, XLSX, PNG charts, PDF; stored in S3 and copied to ``.local/reports/``) and the
alert DAG with a sample rule that the cat photo fires (posted to a webhook receiver on loopback),
and stops the servers it started.

Labels come from the local offline model (EfficientNet-Lite0 + open_nsfw on onnxruntime) unless
``--labeler rekognition`` or ``IMAGELABELS_LABELER=rekognition`` says otherwise (on the embedded
stack that is moto's canned Rekognition answer; point the ``aws_default`` connection at AWS for
the real service).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from demo_services import WebhookReceiver
from local_env import ROOT, STATE, prepare_airflow, upload_samples

DEMO_RULES = ROOT / "scripts" / "demo_alert_rules.yaml"


def load_dag(file_stem: str, dag_id: str | None = None):  # type: ignore[no-untyped-def]
    from imagelabels.devstack.embedded import load_dag as load

    return load(ROOT / "dags", file_stem, dag_id)


def run_report(s3: Any) -> bool:
    """Run today's daily label report and copy its files next to the demo's state."""
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    dag = load_dag("image_label_report", "image_label_report_daily")
    print(f"\nRunning {dag.dag_id} for [{day:%Y-%m-%d}, {day + timedelta(days=1):%Y-%m-%d}) UTC ...")
    run = dag.test(logical_date=day + timedelta(days=1))
    print(f"  run {run.run_id}: {run.state}")
    if str(run.state) != "success":
        return False
    built = run.get_task_instance("build_report").xcom_pull(task_ids="build_report")
    folder = STATE / "reports" / built["interval_key"]
    folder.mkdir(parents=True, exist_ok=True)
    totals = built["totals"]
    print(
        f"  {totals['processed']} image(s) processed, {totals['indexed']} indexed, "
        f"{totals['distinct_labels']} distinct labels, {totals['moderation_hits']} moderation hit(s)"
    )
    print(f"  stored under {built['uris'][0].rsplit('/', 1)[0]}/ and copied to:")
    for uri in built["uris"]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        local = folder / key.rsplit("/", 1)[-1]
        s3.download_file(bucket, key, str(local))
        print(f"    {local}")
    return True


def shown_link(url: str | None) -> str:
    """A link as the demo prints it: a presigned URL's session token masked (stdout is not a task
    log, so Airflow's masker never sees it); links signed without a token (the embedded stack's
    keys) are printed whole and work."""
    from imagelabels.search.queries import mask_session_token

    return mask_session_token(url) if url else "(none)"


def run_alerts() -> bool:
    """Evaluate the demo's alert rules once, as after every ingestion run, and show what fired."""
    with WebhookReceiver() as receiver:
        os.environ.update(receiver.connection_env())
        # rules_file is read only from config/ and IMAGELABELS_RULES_DIRS: allow the demo's folder
        allowed = [os.environ.get("IMAGELABELS_RULES_DIRS", ""), str(DEMO_RULES.parent)]
        os.environ["IMAGELABELS_RULES_DIRS"] = os.pathsep.join(filter(None, allowed))
        dag = load_dag("image_label_alerts")
        print(f"\nRunning {dag.dag_id} with {DEMO_RULES.relative_to(ROOT)} ...")
        run = dag.test(run_conf={"rules_file": str(DEMO_RULES)})
        print(f"  run {run.run_id}: {run.state}")
        if not receiver.received:
            print("  no new alert (every matching image has already alerted once)")
        for post in receiver.received:
            alert = post["json"]
            print(f"  ALERT {alert['subject']} (rule {alert['rule']}, via webhook)")
            for image in alert["images"]:
                matches = ", ".join(f"{m['label']} {m['confidence']:.1f}%" for m in image["matches"])
                print(f"    {image['s3_location']}  ({matches})")
                print(f"    link: {shown_link(image['url'])}")
        return str(run.state) == "success"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", help="label for the questions (default: the most frequent one)")
    parser.add_argument(
        "--labeler",
        choices=["local", "rekognition"],
        default=os.environ.get("IMAGELABELS_LABELER") or "local",
        help="who labels the images (default: IMAGELABELS_LABELER, else local)",
    )
    parser.add_argument(
        "--engine",
        choices=["elasticsearch", "opensearch"],
        default=os.environ.get("IMAGELABELS_DEMO_ENGINE") or "elasticsearch",
        help="search engine: noida-db through the Elasticsearch client (pip-only, the default) or a "
        "real OpenSearch 2.19 node (Java 17 + Maven; built once, cached in .local/)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    prepare_airflow()
    from imagelabels.devstack.embedded import covering_hours, running_stack
    from imagelabels.search import queries as search

    with running_stack(STATE / "stack", engine=args.engine) as stack:
        os.environ.update(stack.airflow_env())
        print(
            f"moto server (S3, Rekognition): {stack.moto_url}\n{stack.engine_label():<31}{stack.es_url}"
            f"\nlabeler:                       {args.labeler}"
        )
        conf = {"labeler": args.labeler}
        if args.labeler == "rekognition":
            conf["features"] = ["labels"]  # moto answers DetectLabels only
        stamps = upload_samples(stack.boto3_client("s3"), prefix=f"uploads/{time.strftime('%Y-%m-%d')}/")
        dag = load_dag("image_ingest_s3_hourly")
        for hour in covering_hours(stamps):
            print(
                f"\nRunning {dag.dag_id} for [{hour:%Y-%m-%d %H:%M}, {hour + timedelta(hours=1):%H:%M}) UTC ..."
            )
            run = dag.test(logical_date=hour + timedelta(hours=1), run_conf=conf)
            print(f"  run {run.run_id}: {run.state}")
            if str(run.state) != "success":
                print("  the run failed; task logs are under .local/airflow/logs", file=sys.stderr)
                return 1
            totals = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
            print(
                f"  listed {totals['listed']} image(s) in {totals['batches']} batch(es): "
                f"{totals['already_indexed']} already indexed, {totals['labeled']} labeled, "
                f"{totals['indexed']} indexed, {totals['failed_total']} failed {totals['failed'] or ''}"
            )
        es = stack.elasticsearch()
        print()
        print(f"Documents in index 'images': {es.count(index='images')['count']}")
        top = search.top_labels(es)
        print("Top labels:", ", ".join(f"{name} ({count})" for name, count in top) or "none")
        label = args.label or (top[0][0] if top else "Cat")
        print(f"\n1. Images that represent '{label}':")
        for hit in search.images_with_label(es, label):
            print(f"   {hit.title:<20} {hit.confidence:6.2f}%  {hit.s3_location}")
        title = "chelsea.png"
        print(f"\n2. What does '{title}' represent? (label, confidence, parents)")
        for hit in search.describe_image(es, title):
            for name, confidence in hit.labels[:8]:
                parents = ", ".join(hit.parents.get(name, []))
                print(f"   {name:<24} {confidence:6.2f}%  {parents}")
            moderation = ", ".join(f"{name} {c:.1f}%" for name, c in hit.moderation) or "none"
            print(f"   moderation: {moderation}")
        print(f"\n3. Images that represent '{label}' with at least 90% confidence:")
        for hit in search.images_with_label(es, label, min_confidence=90):
            print(f"   {hit.title:<20} {hit.confidence:6.2f}%")
        if not run_report(stack.boto3_client("s3")) or not run_alerts():
            print("  the run failed; task logs are under .local/airflow/logs", file=sys.stderr)
            return 1
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; servers stopped. State: {STATE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
