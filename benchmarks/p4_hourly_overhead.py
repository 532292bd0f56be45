"""P4: what the hourly DAG costs around the work: (a) an hour with nothing new, (b) per image.

Setup (all on loopback, one run, one machine): a fresh ``AIRFLOW_HOME`` with SQLite
(``airflow db migrate`` first), the moto server (S3) and noida-db, and the Rekognition stand-in in
its own process with **0 ms latency**, canned labels and no quota (``IMAGELABELS_REKOGNITION_TPS
=none``), so labeling costs next to nothing. ``--images`` small JPEGs are uploaded under
``uploads/``. The DAG runs through **``dag.test()``** (one process, tasks one after another, the
metadata DB written as a scheduler would); a real scheduler with an executor is not measured here.

* **(b) per-image orchestration overhead**: the same hour(s) are processed twice, on a fresh
  index each time: once by calling the core functions directly in this process
  (:func:`~imagelabels.pipeline.ingest.plan_batches`, then :func:`~imagelabels.pipeline.ingest.label_batch` per
  manifest, clients built once, no Airflow), once by the hourly DAG (``list_batches`` →
  ``label_and_index`` mapped over the manifests → ``summarize``). Overhead per image =
  (DAG time - direct time) / images.
* **(a) runs with nothing new**: after (b) everything is indexed; then the DAG runs for an hour
  without uploads (the listing selects nothing; ``label_and_index`` is skipped), and reruns the
  processed hour(s) (every key selected, then skipped by the ``existing_ids`` check: no labeling
  call). The very first ``dag.test`` of the process (an empty hour, before anything else: imports,
  DAG serialization) is printed as "cold".

Prints wall time per run and per task (task instance durations from the metadata DB).

    .venv/bin/python benchmarks/p4_hourly_overhead.py                    # 1,000 images, batches of 100
    .venv/bin/python benchmarks/p4_hourly_overhead.py --images 200 --batch-size 50
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Stopwatch, embedded_stack, machine, small_jpeg, table, upload

BUCKET = "p4-photos"
PREFIX = "uploads/"
DAG_ID = "image_ingest_s3_hourly"


def prepare_airflow(home: Path) -> None:
    """Point Airflow at a throw-away home with SQLite and migrate it (before importing Airflow)."""
    from imagelabels.devstack.embedded import airflow_home_env

    os.environ.update(airflow_home_env(home, ROOT / "dags"))
    for leaked in ("IMAGELABELS_BUCKET", "IMAGELABELS_PREFIX", "IMAGELABELS_STAGING_URI"):
        os.environ.pop(leaked, None)
    os.environ["IMAGELABELS_REKOGNITION_TPS"] = "none"  # the stand-in has no quota either
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


def load_dag() -> Any:
    """The hourly DAG object, loaded from its file like the integration tests do."""
    spec = importlib.util.spec_from_file_location(DAG_ID, ROOT / "dags" / f"{DAG_ID}.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load the hourly DAG")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.image_ingest_s3_hourly()


def run_conf(batch_size: int) -> dict[str, Any]:
    """The run's Params: our bucket and prefix, Rekognition (the stand-in), labels only."""
    return {
        "bucket": BUCKET,
        "prefix": PREFIX,
        "labeler": "rekognition",
        "features": ["labels"],
        "batch_size": batch_size,
    }


def reset_index(es: Any) -> None:
    """Delete the images and failures indices (``plan_batches`` recreates them)."""
    from imagelabels.documents import FAILURES_INDEX, versioned_index_name

    for name in (versioned_index_name(), FAILURES_INDEX):
        if es.indices.exists(index=name):
            es.indices.delete(index=name)


def dag_run(dag: Any, hour: datetime, batch_size: int) -> dict[str, Any]:
    """Run the DAG for ``[hour, hour + 1h)`` with ``dag.test()``; wall time and per-task times."""
    with Stopwatch() as watch:
        run = dag.test(logical_date=hour + timedelta(hours=1), run_conf=run_conf(batch_size))
    if str(run.state) != "success":
        raise RuntimeError(f"DAG run for {hour} ended {run.state}")
    tasks: dict[str, list[float]] = {}
    for ti in run.get_task_instances():
        if ti.start_date and ti.end_date:
            tasks.setdefault(ti.task_id, []).append((ti.end_date - ti.start_date).total_seconds())
        else:
            tasks.setdefault(ti.task_id, [])  # skipped: never started
    totals = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    return {"seconds": watch.seconds, "tasks": tasks, "totals": totals}


def add_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure for several hours' runs (an upload that straddled an hour needs two)."""
    tasks: dict[str, list[float]] = {}
    totals: dict[str, int] = {}
    for run in runs:
        for task_id, seconds in run["tasks"].items():
            tasks.setdefault(task_id, []).extend(seconds)
        for name in ("listed", "already_indexed", "labeled", "indexed"):
            totals[name] = totals.get(name, 0) + int(run["totals"].get(name, 0))
    return {"seconds": sum(r["seconds"] for r in runs), "tasks": tasks, "totals": totals, "runs": len(runs)}


def describe_tasks(tasks: dict[str, list[float]]) -> str:
    """``list_batches 0.31 s · label_and_index 10 x 0.52 s (5.2 s) · summarize 0.05 s``."""
    parts = []
    for task_id in ("list_batches", "label_and_index", "summarize"):
        seconds = tasks.get(task_id, [])
        if not seconds:
            parts.append(f"{task_id} skipped")
        elif len(seconds) == 1:
            parts.append(f"{task_id} {seconds[0]:.2f} s")
        else:
            parts.append(
                f"{task_id} {len(seconds)} x {sum(seconds) / len(seconds):.2f} s ({sum(seconds):.1f} s)"
            )
    return " · ".join(parts)


def direct_run(stack: Any, standin_url: str, hours: list[datetime], batch_size: int) -> dict[str, Any]:
    """The same work without Airflow: plan_batches + label_batch per manifest, in this process."""
    import boto3
    from botocore.config import Config

    from imagelabels.clients import AWS_RETRIES, MAX_POOL_CONNECTIONS
    from imagelabels.labelers.registry import make_labeler
    from imagelabels.pipeline.batch import RunContext
    from imagelabels.pipeline.ingest import label_batch, plan_batches
    from imagelabels.settings import default_staging_uri
    from imagelabels.tasks.params import labeling_settings

    config = Config(retries=AWS_RETRIES, max_pool_connections=MAX_POOL_CONNECTIONS)
    creds = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    endpoints = {"s3": stack.moto_url, "rekognition": standin_url}
    totals = {"listed": 0, "already_indexed": 0, "labeled": 0, "indexed": 0}
    with Stopwatch() as watch:
        s3 = boto3.client("s3", endpoint_url=stack.moto_url, config=config, **creds)
        es = stack.elasticsearch()
        labeler = make_labeler(
            "rekognition",
            lambda service: boto3.client(service, endpoint_url=endpoints[service], config=config, **creds),
            labeling_settings(run_conf(batch_size)),
        )
        for hour in hours:
            run = RunContext(DAG_ID, f"direct__{hour.isoformat()}")
            plan = plan_batches(
                s3_client=s3,
                es=es,
                bucket=BUCKET,
                prefix=PREFIX,
                start=hour,
                end=hour + timedelta(hours=1),
                staging_uri=default_staging_uri(BUCKET),
                run=run,
                batch_size=batch_size,
            )
            for manifest in plan.manifests:
                report = label_batch(
                    s3_client=s3, es=es, labeler=labeler, manifest=manifest.as_xcom(), run=run
                )
                for name in totals:
                    totals[name] += int(getattr(report, name))
    return {"seconds": watch.seconds, "totals": totals}


def client_setup_seconds(batch_size: int, repeats: int = 5) -> float:
    """Median seconds a ``label_and_index`` task spends building its clients from the Airflow
    connections (S3, Elasticsearch, the labeler's Rekognition client) before any work."""
    import statistics

    from imagelabels.tasks import ingestion as tasks

    samples = []
    for _ in range(repeats):
        with Stopwatch() as watch:
            tasks._s3(), tasks._es(), tasks._labeler(run_conf(batch_size))
        samples.append(watch.seconds)
    return statistics.median(samples)


def uploaded_hours(s3: Any) -> list[datetime]:
    """The UTC hours that contain the uploads' LastModified."""
    from imagelabels.devstack.embedded import covering_hours

    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
    return covering_hours([o["LastModified"] for page in pages for o in page.get("Contents", [])])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="imagelabels-p4-airflow-"))
    with Stopwatch() as migrating:
        prepare_airflow(home)
    print(f"P4 · {machine()} · dag.test() on SQLite (airflow db migrate {migrating.seconds:.0f} s)")

    from imagelabels.devstack.standin import StandInConfig, start_standin_process

    with embedded_stack() as stack:
        s3, es = stack.boto3_client("s3"), stack.elasticsearch()
        with Stopwatch() as uploading:
            upload(s3, BUCKET, {f"{PREFIX}{i:06d}.jpg": small_jpeg(i) for i in range(args.images)})
        hours = uploaded_hours(s3)
        print(
            f"uploaded {args.images:,} images in {uploading.seconds:.0f} s; hours {[h.isoformat() for h in hours]}"
        )
        url, stop = start_standin_process(
            StandInConfig(latency_ms=0, labels="canned", s3_endpoint_url=stack.moto_url)
        )
        try:
            connection = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
            connection["extra"]["service_config"] = {"rekognition": {"endpoint_url": url}}
            os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(connection)
            dag = load_dag()
            empty_hour = hours[0] - timedelta(hours=3)

            cold = dag_run(dag, empty_hour, args.batch_size)
            print(
                f"cold first run, empty hour: {cold['seconds']:.2f} s ({describe_tasks(cold['tasks'])})",
                flush=True,
            )

            reset_index(es)
            direct = direct_run(stack, url, hours, args.batch_size)
            print(f"(b) direct: {direct['seconds']:.2f} s {direct['totals']}", flush=True)

            reset_index(es)
            dag_new = add_runs([dag_run(dag, hour, args.batch_size) for hour in hours])
            print(f"(b) DAG:    {dag_new['seconds']:.2f} s {dag_new['totals']}", flush=True)
            if dag_new["totals"]["labeled"] != args.images or direct["totals"]["labeled"] != args.images:
                raise RuntimeError(f"expected {args.images} labeled by both: {direct} / {dag_new}")

            es.indices.refresh(index="images")
            empty = dag_run(dag, empty_hour, args.batch_size)
            print(f"(a) empty hour: {empty['seconds']:.2f} s", flush=True)
            rerun = add_runs([dag_run(dag, hour, args.batch_size) for hour in hours])
            print(f"(a) rerun: {rerun['seconds']:.2f} s {rerun['totals']}", flush=True)
            direct_rerun = direct_run(stack, url, hours, args.batch_size)
            setup = client_setup_seconds(args.batch_size)
            if rerun["totals"]["already_indexed"] != args.images:
                raise RuntimeError(f"the rerun did not skip every image: {rerun['totals']}")
        finally:
            stop()

    overhead_ms = (dag_new["seconds"] - direct["seconds"]) / args.images * 1000
    print(
        "\n"
        + table(
            [
                ("images", f"{args.images:,} in batches of {args.batch_size}, {len(hours)} hour(s)"),
                ("cold first dag.test, empty hour", f"{cold['seconds']:.2f} s"),
                (
                    "(a) empty hour (nothing listed)",
                    f"{empty['seconds']:.2f} s  {describe_tasks(empty['tasks'])}",
                ),
                (
                    f"(a) rerun of processed hour(s), {args.images:,} already indexed",
                    f"{rerun['seconds']:.2f} s  {describe_tasks(rerun['tasks'])}",
                ),
                ("    same rerun, direct (no Airflow)", f"{direct_rerun['seconds']:.2f} s"),
                ("(b) direct: plan_batches + label_batch", f"{direct['seconds']:.2f} s"),
                ("(b) DAG (dag.test)", f"{dag_new['seconds']:.2f} s  {describe_tasks(dag_new['tasks'])}"),
                ("(b) orchestration overhead per image", f"{overhead_ms:.2f} ms"),
                (
                    "    clients built per mapped task",
                    f"{setup:.2f} s (median of 5, from the connections) = "
                    f"{setup * len(dag_new['tasks']['label_and_index']) / args.images * 1000:.2f} ms per image",
                ),
            ]
        )
    )
    print(
        f"P4 result: empty hour {empty['seconds']:.1f} s, rerun of {args.images:,} indexed keys "
        f"{rerun['seconds']:.1f} s (target <= 30 s); overhead {overhead_ms:.2f} ms per image (target <= 5 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
