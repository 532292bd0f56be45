"""`make airflow`: the Airflow UI on the embedded stack, to trigger runs and backfills by hand.

Starts the moto server and noida-db (or a real OpenSearch node), uploads the sample photographs,
then starts Airflow's components one by one (SQLite, LocalExecutor) with the connections
pointing at them: ``api-server`` on 127.0.0.1 only, ``scheduler`` and ``triggerer`` without
their log servers (``--skip-serve-logs``: Airflow binds those to every address; on one machine
the api-server reads the task logs from the local files), and ``dag-processor``. It then starts
one run of ``image_ingest_s3_hourly`` over the hour(s) of the uploads and prints its URL: a
plain *Trigger* of the hourly Dag lists the previous complete hour, where nothing was uploaded.

Log in as admin/admin on http://127.0.0.1:8080. ``make backfill FROM=... TO=...`` creates
backfills through this api-server. Ctrl-C (or SIGTERM) stops Airflow and the servers.

``--host 0.0.0.0`` (or ``IMAGELABELS_UI_HOST``) deliberately exposes the UI to other machines;
the admin password is then random (printed) unless ``IMAGELABELS_UI_PASSWORD`` sets it. The
embedded servers stay on loopback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from local_env import ROOT, STATE, prepare_airflow, upload_samples

LOCAL_USER, LOCAL_PASSWORD = "admin", "admin"  # the loopback-only development login
HOURLY_DAG = "image_ingest_s3_hourly"
ADDRESS_FILE = STATE / "airflow-local.json"  # where `make backfill` finds the running api-server
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _components(host: str, port: int) -> dict[str, list[str]]:
    """What `airflow standalone` starts, minus the log servers it would bind to every address."""
    return {
        "api-server": ["api-server", "--host", host, "--port", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }


WILDCARDS = ("0.0.0.0", "::", "")


def _http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _request(
    url: str, token: str | None = None, method: str = "GET", body: dict[str, Any] | None = None
) -> Any:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Components:
    """The Airflow processes, each in its own process group (stopped with all it spawned)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, commands: dict[str, list[str]]) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        for name, arguments in commands.items():
            with open(self.log(name), "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [airflow, *arguments],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    def log(self, name: str) -> Path:
        return self.logs / f"airflow-{name}.log"

    def exited(self) -> str | None:
        """A message naming the first component that has exited, else None."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return f"airflow {name} exited with {process.returncode}; see {self.log(name)}"
        return None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to every group at once, then wait for each (SIGKILL past ``timeout``)."""
        from imagelabels.devstack.embedded import stop_process_group

        for process in self.processes.values():
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            stop_process_group(process, timeout=timeout)


def _wait_for_api(url: str, components: Components, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = components.exited()
        if exited:
            raise RuntimeError(exited)
        try:
            with urllib.request.urlopen(f"{url}/api/v2/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(
        f"Airflow did not answer on {url} within {timeout:.0f}s; see {components.log('api-server')}"
    )


def start_sample_run(
    url: str, token: str, stamps: list[datetime], components: Components, timeout: float = 180
) -> str:
    """Unpause the hourly Dag and start one manual run whose data interval covers the uploads;
    return the run's URL in the UI. The Dag must have been parsed first (dag-processor)."""
    from imagelabels.devstack.embedded import covering_hours

    dag_url = f"{url}/api/v2/dags/{HOURLY_DAG}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            _request(dag_url, token)
            break
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
        exited = components.exited()
        if exited:
            raise RuntimeError(exited)
        time.sleep(1)
    hours = covering_hours(stamps)
    start, end = hours[0], hours[-1] + timedelta(hours=1)
    now = datetime.now(UTC).replace(microsecond=0)
    run_id = f"sample_photos__{now:%Y%m%dT%H%M%SZ}"
    _request(dag_url, token, "PATCH", {"is_paused": False})  # runs of a paused Dag never start
    _request(
        f"{dag_url}/dagRuns",
        token,
        "POST",
        {
            "dag_run_id": run_id,
            # now, as the UI's trigger form does: the scheduler's own run for this hour later
            # takes the hour's start as its logical date
            "logical_date": now.isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": {},
            "note": "Started by make airflow: the hour(s) the sample photographs were uploaded in.",
        },
    )
    return f"{url}/dags/{HOURLY_DAG}/runs/{run_id}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("IMAGELABELS_UI_PORT", "8080")))
    parser.add_argument(
        "--host",
        default=os.environ.get("IMAGELABELS_UI_HOST") or "127.0.0.1",
        help=(
            "address the UI listens on (default 127.0.0.1: this machine only). 0.0.0.0 exposes it "
            "to other machines, with a random admin password unless IMAGELABELS_UI_PASSWORD is set"
        ),
    )
    parser.add_argument("--no-upload", action="store_true", help="do not upload the sample photographs")
    parser.add_argument(
        "--engine",
        choices=["elasticsearch", "opensearch"],
        default=os.environ.get("IMAGELABELS_DEMO_ENGINE") or "elasticsearch",
        help="noida-db (pip-only, default) or a real OpenSearch 2.19 node (Java 17 + Maven)",
    )
    args = parser.parse_args()
    prepare_airflow()
    from imagelabels.devstack.embedded import running_stack

    exposed = not _is_loopback(args.host)
    password = os.environ.get("IMAGELABELS_UI_PASSWORD") or (
        secrets.token_urlsafe(12) if exposed else LOCAL_PASSWORD
    )
    home = STATE / "airflow"
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({LOCAL_USER: password}))
    passwords.chmod(0o600)
    # how this machine (tasks, make backfill, the banner) reaches the api-server
    url = _http_url("127.0.0.1" if args.host in WILDCARDS else args.host, args.port)
    os.environ.update(
        {
            "AIRFLOW__API__HOST": args.host,
            "AIRFLOW__API__PORT": str(args.port),
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOCAL_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # task logs show our INFO lines (summarize's totals); the test suite keeps WARNING
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # the Image search page (plugins/image_search_plugin.py)
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        }
    )
    os.environ.setdefault("AIRFLOW__API__BASE_URL", url)  # links in alerts and reports
    stopping = serving = False

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return  # a second Ctrl-C: the first one is being handled
        stopping = True
        if not serving:  # still starting: abort, the finally blocks stop what has started
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    components = Components(STATE)
    with running_stack(STATE / "stack", engine=args.engine) as stack:
        os.environ.update(stack.airflow_env())
        print(f"moto server (S3, Rekognition): {stack.moto_url}\n{stack.engine_label():<31}{stack.es_url}")
        stamps = []
        if not args.no_upload:
            stamps = upload_samples(stack.boto3_client("s3"), prefix=f"uploads/{time.strftime('%Y-%m-%d')}/")
        try:
            components.start(_components(args.host, args.port))
            _wait_for_api(url, components)
            token = _request(
                f"{url}/auth/token", method="POST", body={"username": LOCAL_USER, "password": password}
            )["access_token"]
            if stamps:
                try:
                    run = start_sample_run(url, token, stamps, components)
                    print(f"\nThe sample photographs are indexed by this run of {HOURLY_DAG}: {run}")
                    print(
                        f"{HOURLY_DAG} is unpaused: each hour, once it has ended, the scheduler lists "
                        "what was uploaded in it. Trigger (and its logical date) lists the complete hour "
                        "before the logical date."
                    )
                except (OSError, TimeoutError) as error:
                    print(f"\nCould not start the run over the sample photographs: {error}")
            ADDRESS_FILE.write_text(
                json.dumps({"url": url, "pid": os.getpid(), "user": LOCAL_USER, "password": password})
            )
            ADDRESS_FILE.chmod(0o600)
            shown = _http_url(socket.gethostname(), args.port) if args.host in WILDCARDS else url
            print(
                f"\nAirflow is ready: {shown}  (login {LOCAL_USER} / {password}; logs: {STATE}/airflow-*.log)"
            )
            if exposed:
                print(f"The UI listens on {args.host}, not only on loopback: other machines can reach it.")
            print(
                f"Trigger {HOURLY_DAG} or `make backfill FROM=... TO=...`; Ctrl-C stops everything.",
                flush=True,
            )
            serving = True
            while not stopping:
                exited = components.exited()
                if exited:
                    raise RuntimeError(exited)
                time.sleep(0.5)
        finally:
            ADDRESS_FILE.unlink(missing_ok=True)
            components.stop()
    print("Airflow and the embedded servers are stopped.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("Stopped while starting.")
        sys.exit(130)
