"""`make airflow` for real: scripts/airflow_local.py starts the api-server, scheduler,
dag-processor and triggerer (LocalExecutor, SQLite) on the embedded stack. Started once for the
module; each test looks at one promise of it, through the REST API as the UI does:

* the first run (the one it starts for the sample photographs) indexes them;
* a run triggered from the UI is executed, and its ``summarize`` task log shows the totals;
* nothing it started listens on a non-loopback address, and the UI answers on 127.0.0.1;
* ``make backfill`` creates a backfill through the running api-server (and says that
  ``make airflow`` must run when it does not).
"""

from __future__ import annotations

import ipaddress
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
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from imagelabels.embedded import covering_hours, free_port
from imagelabels.engine.elastic import connect as elasticsearch_engine

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "image_ingest_s3_hourly"


def _api(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
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


@dataclass
class LocalAirflow:
    process: subprocess.Popen[str]
    state: Path
    api: str
    banner: str
    token: str
    moto_url: str
    es_url: str
    finished: dict[str, dict] = field(default_factory=dict)

    @property
    def dag(self) -> str:
        return f"{self.api}/api/v2/dags/{DAG_ID}"

    def run_url(self, run_id: str) -> str:
        return f"{self.dag}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict:
        if run_id not in self.finished:
            run, deadline = {"state": "queued"}, time.monotonic() + timeout
            while run["state"] not in ("success", "failed") and time.monotonic() < deadline:
                time.sleep(2)
                run = _api(self.run_url(run_id), self.token)
            self.finished[run_id] = run
        return self.finished[run_id]

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    state = tmp_path_factory.mktemp("make-airflow")
    port = free_port()
    env = {**os.environ, "IMAGELABELS_DEMO_STATE": str(state)}
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
    urls = [api]
    try:
        banner = _read_until_ready(process, timeout=300)
        moto_url = re.search(r"moto server \(S3, Rekognition\): (\S+)", banner).group(1)  # type: ignore[union-attr]
        es_url = re.search(r"noida-db \(Elasticsearch\):\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        urls += [moto_url, es_url]
        token = _api(f"{api}/auth/token", method="POST", body={"username": "admin", "password": "admin"})[
            "access_token"
        ]
        yield LocalAirflow(process, state, api, banner, token, moto_url, es_url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    for url in urls:  # Ctrl-C (SIGTERM) stops Airflow and both servers
        host, port_text = url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port_text))) != 0, f"{url} still answers after Ctrl-C"
    assert not (state / "airflow-local.json").exists(), "the address file outlived make airflow"


def test_first_run_indexes_the_sample_photos(local_airflow: LocalAirflow) -> None:
    """A new user's first look: the run make airflow starts for the uploads (its URL printed)
    indexes the five sample photographs; the hourly DAG's own trigger would list the previous
    complete hour, where nothing was uploaded."""
    found = re.search(rf"{re.escape(local_airflow.api)}/dags/{DAG_ID}/runs/(\S+)", local_airflow.banner)
    assert found, f"no sample run URL in the banner:\n{local_airflow.banner}"
    run_id = found.group(1)
    run = local_airflow.wait_for_run(run_id)
    assert run["state"] == "success", run
    uploads = local_airflow.s3().list_objects_v2(Bucket="demo-images", Prefix="uploads/")["Contents"]
    hours = covering_hours([item["LastModified"] for item in uploads])
    assert datetime.fromisoformat(run["data_interval_start"]) <= hours[0]
    assert datetime.fromisoformat(run["data_interval_end"]) >= hours[-1] + timedelta(hours=1)

    tasks = _api(f"{local_airflow.run_url(run_id)}/taskInstances", local_airflow.token)["task_instances"]
    mapped = [t for t in tasks if t["task_id"] == "label_and_index"]
    assert [t["rendered_map_index"] for t in mapped] == ["batch-00001.jsonl (5 keys)"]
    es = elasticsearch_engine(local_airflow.es_url)
    assert es.count(index="images")["count"] == 5
    run_ids = {hit["_source"]["airflow"]["run_id"] for hit in es.search(index="images")["hits"]["hits"]}
    assert run_ids == {run_id}


def test_ui_triggered_run_is_executed_and_its_summarize_log_has_the_totals(
    local_airflow: LocalAirflow,
) -> None:
    """Trigger as the UI form does (an explicit data interval over the uploads); the scheduler
    executes it, and the ``summarize`` task log, read through the REST API as the UI reads it
    (without the log servers: the api-server reads the local files), shows the run's totals."""
    uploads = local_airflow.s3().list_objects_v2(Bucket="demo-images", Prefix="uploads/")["Contents"]
    hours = covering_hours([item["LastModified"] for item in uploads])
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    _api(local_airflow.dag, local_airflow.token, "PATCH", {"is_paused": False})
    _api(
        f"{local_airflow.dag}/dagRuns",
        local_airflow.token,
        "POST",
        {
            "dag_run_id": "from_the_ui",
            "logical_date": datetime.now(UTC).isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": {},
        },
    )
    assert local_airflow.wait_for_run("from_the_ui")["state"] == "success"
    totals = _api(
        f"{local_airflow.run_url('from_the_ui')}/taskInstances/summarize/xcomEntries/return_value",
        local_airflow.token,
    )["value"]
    assert totals["listed"] == 5, totals
    assert totals["labeled"] + totals["already_indexed"] == 5, totals  # the first run may be done

    log = _api(
        f"{local_airflow.run_url('from_the_ui')}/taskInstances/summarize/logs/1?full_content=true",
        local_airflow.token,
    )
    events = [entry.get("event", "") if isinstance(entry, dict) else str(entry) for entry in log["content"]]
    text = "\n".join(events)
    assert "run totals:" in text, f"no totals in the summarize log:\n{text}"
    assert "'listed': 5" in text, text
    assert "Could not read served logs" not in text, text  # a finished task: local files only


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(packed)), int(port, 16)


def _listening_sockets(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """(pid, command, address, port) of every TCP socket in LISTEN state that ``pids`` hold."""
    owners: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with_inode = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
                if with_inode:
                    owners[with_inode.group(1)] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owners:  # 0A: LISTEN
                pid = owners[fields[9]]
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    command = "?"
                found.append((pid, command.strip(), *_address(fields[1])))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_nothing_listens_beyond_loopback(local_airflow: LocalAirflow) -> None:
    """Every process make airflow started (api-server and its workers, scheduler, dag-processor,
    triggerer, task processes, moto, noida-db) listens on loopback only: no serve-logs on
    0.0.0.0:8793/8794. Checked for a while, after runs have executed, so late starters count."""
    with urllib.request.urlopen(f"{local_airflow.api}/api/v2/version", timeout=10) as response:
        assert response.status == 200  # the UI answers on 127.0.0.1
    api_port = int(local_airflow.api.rsplit(":", 1)[1])
    deadline, seen = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        seen = _listening_sockets(_descendants(local_airflow.process.pid))
        exposed = [entry for entry in seen if not _is_loopback(entry[2])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        time.sleep(1)
    assert ("127.0.0.1", api_port) in {(address, port) for _, _, address, port in seen}, seen


def test_make_backfill_creates_the_runs_through_the_running_api_server(local_airflow: LocalAirflow) -> None:
    """`make backfill FROM=... TO=...` with make airflow running: the backfill is created through
    the api-server (no second SQLite writer: no 'database is locked'), one run per hour."""
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = subprocess.run(
        ["make", "--no-print-directory", "backfill", f"FROM={day}T00:00", f"TO={day}T02:00", f"DAG={DAG_ID}"],
        cwd=ROOT,
        env={**os.environ, "IMAGELABELS_DEMO_STATE": str(local_airflow.state)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database is locked" not in result.stdout + result.stderr
    assert re.search(r"backfill \d+ of image_ingest_s3_hourly", result.stdout), result.stdout
    assert f"{local_airflow.api}/dags/{DAG_ID}" in result.stdout  # where to watch it

    runs = _api(f"{local_airflow.dag}/dagRuns?run_type=backfill&limit=100", local_airflow.token)["dag_runs"]
    mine = sorted(run["logical_date"] for run in runs)
    assert [datetime.fromisoformat(date).strftime("%H:%M") for date in mine] == ["00:00", "01:00", "02:00"]
    assert all(date.startswith(day) for date in mine), mine
    assert not [run for run in runs if run["state"] == "failed"], runs


def test_make_backfill_says_make_airflow_must_run_first(tmp_path: Path) -> None:
    """Without a running make airflow it fails with a clear message (never a SQLite lock)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "backfill", "FROM=2026-11-01T00:00", "TO=2026-11-01T03:00"],
        cwd=ROOT,
        env={**os.environ, "IMAGELABELS_DEMO_STATE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "make airflow" in result.stdout + result.stderr
    assert "is not running" in result.stdout + result.stderr
