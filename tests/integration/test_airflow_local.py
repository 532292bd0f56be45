"""`make airflow` for real: `airflow standalone` (scheduler, dag-processor, api-server, triggerer,
LocalExecutor) on the embedded stack; a run triggered through the REST API, as the UI does it."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import boto3

from imagelabels.embedded import covering_hours, free_port
from imagelabels.engine.elastic import connect as elasticsearch_engine

ROOT = Path(__file__).resolve().parents[2]


def _api(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _read_until_ready(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen += lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, f"make airflow exited early:\n{seen}"
            continue
        if "Airflow is ready" in seen:
            return seen
    raise AssertionError(f"Airflow was not ready in {timeout}s:\n{seen}")


def test_ui_triggered_run_is_executed_by_the_scheduler(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "IMAGELABELS_DEMO_STATE": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "scripts/airflow_local.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    moto_url = es_url = api
    try:
        banner = _read_until_ready(process, timeout=240)
        moto_url = re.search(r"moto server \(S3, Rekognition\): (\S+)", banner).group(1)  # type: ignore[union-attr]
        es_url = re.search(r"noida-db \(Elasticsearch\):\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        s3 = boto3.client(
            "s3",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        uploads = s3.list_objects_v2(Bucket="demo-images", Prefix="uploads/")["Contents"]
        hours = covering_hours([item["LastModified"] for item in uploads])
        start, end = hours[0], hours[-1] + timedelta(hours=1)

        token = _api(f"{api}/auth/token", method="POST", body={"username": "admin", "password": "admin"})[
            "access_token"
        ]
        dag = f"{api}/api/v2/dags/image_ingest_s3_hourly"
        _api(dag, token, "PATCH", {"is_paused": False})
        _api(
            f"{dag}/dagRuns",
            token,
            "POST",
            {
                "dag_run_id": "from_the_ui",
                "logical_date": start.isoformat(),
                "data_interval_start": start.isoformat(),
                "data_interval_end": end.isoformat(),
                "conf": {},
            },
        )
        state, deadline = "queued", time.monotonic() + 240
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(2)
            state = _api(f"{dag}/dagRuns/from_the_ui", token)["state"]
        assert state == "success"

        tasks = _api(f"{dag}/dagRuns/from_the_ui/taskInstances", token)["task_instances"]
        mapped = [t for t in tasks if t["task_id"] == "label_and_index"]
        assert [t["rendered_map_index"] for t in mapped] == ["batch-00001.jsonl (5 keys)"]
        es = elasticsearch_engine(es_url)
        assert es.count(index="images")["count"] == 5
        run_ids = {hit["_source"]["airflow"]["run_id"] for hit in es.search(index="images")["hits"]["hits"]}
        assert run_ids == {"from_the_ui"}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=90)
    for url in (api, moto_url, es_url):
        host, port_text = url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port_text))) != 0, f"{url} still answers after Ctrl-C"
