"""`make test-distributed`: the hourly DAG on a real CeleryExecutor deployment, end to end.

PostgreSQL (a fresh database per run: metadata DB and Celery result backend) and Redis (a DB
number of its own: Celery broker and the shared Rekognition rate limiter); the moto server (S3),
noida-db (Elasticsearch) and the Rekognition stand-in; then Airflow's api-server, scheduler,
dag-processor, triggerer and two Celery workers, each its own process with its own log file under
``.local/distributed/<run>/``. It uploads small images within one hour, triggers
``image_ingest_s3_hourly`` for that hour through the REST API with the Rekognition labeler,
waits, and fails (exit 1) unless the run succeeded, every upload was indexed exactly once, and
the mapped ``label_and_index`` tasks ran on both workers. Whatever happens (Ctrl-C included) it
stops exactly the processes it started and drops its database.

    .venv/bin/python scripts/distributed_run.py                       # 1,000 images, 2 workers
    .venv/bin/python scripts/distributed_run.py --images 2000 --workers 3 --keep-logs
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as random_secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distributed.api import AirflowApi
from distributed.cluster import (
    PASSWORD,
    ROOT,
    USER,
    ClusterConfig,
    ProcessSet,
    airflow_env,
    migrate,
    start_cluster,
)
from distributed.services import claim_redis_db, create_database, drop_database, ensure_services
from distributed.workload import (
    Verdict,
    check_documents,
    check_workers,
    failure_reasons,
    generate_images,
    indexed_documents,
    upload_within_one_hour,
)

DAG_ID = "image_ingest_s3_hourly"
MAPPED_TASK = "label_and_index"
BUCKET = "distributed-images"
STATE = ROOT / ".local" / "distributed"


@dataclass(frozen=True)
class RunOptions:
    """One distributed run."""

    images: int = 1000
    workers: int = 2
    concurrency: int = 4
    batch_size: int = 50
    timeout: float = 1200.0  # seconds for the DAG run itself
    standin_tps: float = 1000.0  # generous: Airflow is measured, not the quota
    standin_latency_ms: float = 50.0
    limiter_tps: float = 500.0  # our shared (Redis) limiter, below the stand-in's quota
    keep_logs: bool = False


@dataclass
class RunResult:
    """What a run measured and found."""

    images: int
    workers: int
    slots: int  # per worker
    run_state: str
    run_seconds: float  # the DAG run's start_date -> end_date
    wall_seconds: float  # trigger -> seen finished
    per_worker: dict[str, int]
    problems: list[str] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.run_seconds if self.run_seconds > 0 else 0.0


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so the cleanup in ``finally`` runs (SIGINT
    explicitly too: a shell starts background jobs with SIGINT ignored, and Python keeps that)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        # once: a second Ctrl-C must not abort the cleanup half way (leaking processes)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def secrets_token() -> str:
    """A random, URL-unsafe-free token for this run's fake secrets."""
    return random_secrets.token_hex(8)


def _aws_connection(stack: Any, standin_url: str, secret: str) -> str:
    """``aws_default`` for moto's S3, with Rekognition sent to the stand-in
    (``service_config.rekognition.endpoint_url``, as a real deployment would point at AWS), and
    a secret key nobody else uses (moto and the stand-in accept any), to look for in the logs."""
    connection = json.loads(stack.airflow_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    connection["extra"]["service_config"] = {"rekognition": {"endpoint_url": standin_url}}
    connection["password"] = secret
    return json.dumps(connection)


def _es_connection(stack: Any, secret: str) -> str:
    """``elasticsearch_default`` with basic auth (noida-db ignores it): a password to look for."""
    connection = json.loads(stack.airflow_env()["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"])
    connection.update({"login": "imagelabels", "password": secret})
    return json.dumps(connection)


def check_no_secrets_in_logs(verdict: Verdict, folders: list[Path], secrets: list[str]) -> None:
    """Every log the run wrote (each Celery worker's task logs, every process's output) must be
    free of the connections' secrets, as written and URL-encoded; and the task logs must exist
    and hold the tasks' output, or the search proves nothing."""
    from urllib.parse import quote, quote_plus

    forms = {form for secret in secrets for form in (secret, quote(secret, safe=""), quote_plus(secret))}
    files = [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]
    task_logs = [path for path in files if f"task_id={MAPPED_TASK}" in path.as_posix()]
    verdict.expect(bool(task_logs), f"no task log of {MAPPED_TASK} found under {folders}")
    verdict.expect(
        any("label" in path.read_text(errors="replace") for path in task_logs),
        f"the {MAPPED_TASK} task logs hold none of the tasks' output",
    )
    for path in files:
        text = path.read_text(errors="replace")
        leaked = sorted(form for form in forms if form in text)
        verdict.expect(not leaked, f"a connection secret appears in {path}")


def _wait_for_workers(
    broker_url: str, names: list[str], alive: Callable[[], None], timeout: float = 300
) -> None:
    """Until every worker answers a Celery ping: a run triggered earlier would let the first
    worker up take every task, and the test would measure start-up, not distribution."""
    from celery import Celery

    app = Celery(broker=broker_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            alive()
            replies = app.control.ping(timeout=2.0) or []
            answered = {name.split("@", 1)[0] for reply in replies for name in reply}
            if set(names) <= answered:
                return
            time.sleep(2)
    finally:
        app.close()
    raise TimeoutError(f"workers {names} did not all answer a ping within {timeout:.0f}s")


def _seconds(run: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


def run_distributed(options: RunOptions) -> RunResult:
    """Set up everything, run the DAG once, check it, tear everything down; never raises for a
    red verdict (``problems`` says why), only for set-up failures."""
    from imagelabels.devstack.embedded import start_stack
    from imagelabels.devstack.standin import StandInConfig, start_standin_process

    ensure_services()
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S") + f"_{os.getpid()}"
    run_dir = STATE / stamp
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True)
    (run_dir / "airflow").mkdir()
    dbname = f"imagelabels_dist_{stamp}"
    processes = ProcessSet()
    cleanups: list[Callable[[], None]] = []
    result: RunResult | None = None
    try:
        redis_db = claim_redis_db(stamp)
        cleanups.append(redis_db.release)
        database = create_database(dbname)
        cleanups.append(lambda: drop_database(dbname))
        stack = start_stack(run_dir / "stack")
        cleanups.append(stack.stop)
        standin_url, stop_standin = start_standin_process(
            StandInConfig(
                tps={"*": options.standin_tps},
                latency_ms=options.standin_latency_ms,
                labels="canned",
                s3_endpoint_url=stack.moto_url,
            ),
            log_path=log_dir / "standin.log",
        )
        cleanups.append(stop_standin)
        print(f"run {stamp}: database {dbname}, broker {redis_db.url}, logs {log_dir}", flush=True)

        images = generate_images(options.images, prefix=f"uploads/{stamp}/")
        hour = upload_within_one_hour(stack.boto3_client("s3"), BUCKET, images)
        print(f"uploaded {len(images)} images in the hour {hour:%Y-%m-%d %H:00} UTC", flush=True)

        secrets = [f"aws-secret-{secrets_token()}", f"es-pass/{secrets_token()}+=", database.password]
        config = ClusterConfig(workers=options.workers, concurrency=options.concurrency)
        queue = f"imagelabels-{stamp}"
        extra = {
            **stack.airflow_env(),
            "AIRFLOW_CONN_AWS_DEFAULT": _aws_connection(stack, standin_url, secrets[0]),
            "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": _es_connection(stack, secrets[1]),
            "IMAGELABELS_REKOGNITION_TPS": str(options.limiter_tps),
            "IMAGELABELS_RATE_LIMIT_URL": redis_db.url,  # shared by every worker, as across hosts
        }
        env, url = airflow_env(run_dir / "airflow", database.url, redis_db.url, queue, config, extra)
        migrate(env, log_dir)
        cluster = start_cluster(processes, env, url, config, queue, log_dir)
        api = AirflowApi(url, USER, PASSWORD)
        api.wait_for_dag(DAG_ID, processes.check_alive)
        _wait_for_workers(redis_db.url, cluster.worker_names, processes.check_alive)
        api.set_paused(DAG_ID, False)
        print(
            f"Airflow on {url}: {options.workers} Celery workers x {options.concurrency} slots; "
            f"triggering {DAG_ID}",
            flush=True,
        )

        run_id = f"distributed__{stamp}"
        conf = {
            "labeler": "rekognition",
            "features": ["labels"],
            "bucket": BUCKET,
            "batch_size": options.batch_size,
        }
        started = time.monotonic()
        api.trigger(DAG_ID, run_id, hour, hour + timedelta(hours=1), conf)
        run = api.wait_for_run(DAG_ID, run_id, processes.check_alive, options.timeout)
        wall = time.monotonic() - started

        verdict = Verdict()
        verdict.expect(run["state"] == "success", f"run state {run['state']} (see {log_dir})")
        es = stack.elasticsearch()
        documents = indexed_documents(es, BUCKET, len(images))
        check_documents(verdict, documents, set(images))
        if len(documents) != len(images):
            verdict.problems.append(f"failure records by reason: {dict(failure_reasons(es, BUCKET))}")
        check_workers(verdict, api.task_instances(DAG_ID, run_id), MAPPED_TASK, cluster.worker_names)
        check_no_secrets_in_logs(verdict, [run_dir / "airflow" / "logs", log_dir], secrets)
        result = RunResult(
            images=len(images),
            workers=options.workers,
            slots=options.concurrency,
            run_state=str(run["state"]),
            run_seconds=_seconds(run),
            wall_seconds=wall,
            per_worker=verdict.per_worker,
            problems=verdict.problems,
            run_dir=run_dir,
        )
        return result
    finally:
        processes.stop_all()
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as error:  # keep cleaning: one failure must not leak the rest
                print(f"cleanup failed: {error!r}", file=sys.stderr)
        green = result is not None and not result.problems
        if green and not options.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)


def report(result: RunResult) -> str:
    """Human-readable summary of one run."""
    split = ", ".join(f"{name}: {count}" for name, count in result.per_worker.items())
    lines = [
        f"run state         {result.run_state}",
        f"images            {result.images}",
        f"workers           {result.workers} x {result.slots} slots  ({MAPPED_TASK} per worker: {split})",
        f"DAG run duration  {result.run_seconds:.1f} s  (trigger to seen finished: {result.wall_seconds:.1f} s)",
        f"throughput        {result.images_per_second:.2f} images/s",
    ]
    return "\n".join(lines)


def parse_options(argv: list[str] | None = None) -> RunOptions:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = RunOptions()
    parser.add_argument("--images", type=int, default=defaults.images)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="Celery workers")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="task slots per worker")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds for the DAG run")
    parser.add_argument("--standin-tps", type=float, default=defaults.standin_tps)
    parser.add_argument("--standin-latency-ms", type=float, default=defaults.standin_latency_ms)
    parser.add_argument("--keep-logs", action="store_true", help="keep the run directory even when green")
    args = parser.parse_args(argv)
    return RunOptions(
        images=args.images,
        workers=args.workers,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        timeout=args.timeout,
        standin_tps=args.standin_tps,
        standin_latency_ms=args.standin_latency_ms,
        keep_logs=args.keep_logs,
    )


def main() -> int:
    interrupt_on_signals()
    options = parse_options()
    try:
        result = run_distributed(options)
    except KeyboardInterrupt:
        print("interrupted: everything this run started is stopped, its database dropped", file=sys.stderr)
        return 130
    print(report(result))
    if result.problems:
        print(f"\nFAILED (logs kept in {result.run_dir}):", file=sys.stderr)
        for problem in result.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("distributed run: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
