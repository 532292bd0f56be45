"""`make airflow`: the Airflow UI on the embedded stack, to trigger runs and backfills by hand.

Starts the moto server and noida-db, uploads the sample photographs, then runs
``airflow standalone`` (api-server, scheduler, dag-processor, triggerer; SQLite; LocalExecutor)
with the connections pointing at them. Log in as admin/admin on 127.0.0.1, trigger
``image_ingest_s3_hourly`` or backfill it. Ctrl-C stops Airflow and both servers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from local_env import ROOT, STATE, prepare_airflow, upload_samples

LOCAL_USER, LOCAL_PASSWORD = "admin", "admin"  # loopback-only development login


def _wait_for_api(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"airflow standalone exited with {process.returncode}; see {STATE / 'airflow-standalone.log'}"
            )
        try:
            with urllib.request.urlopen(f"{url}/api/v2/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"Airflow did not answer on {url} within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("IMAGELABELS_UI_PORT", "8080")))
    parser.add_argument("--no-upload", action="store_true", help="do not upload the sample photographs")
    parser.add_argument(
        "--engine",
        choices=["elasticsearch", "opensearch"],
        default=os.environ.get("IMAGELABELS_DEMO_ENGINE") or "elasticsearch",
        help="noida-db (pip-only, default) or a real OpenSearch 2.19 node (Java 17 + Maven)",
    )
    args = parser.parse_args()
    prepare_airflow()
    from imagelabels.embedded import running_stack, stop_process_group

    home = STATE / "airflow"
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({LOCAL_USER: LOCAL_PASSWORD}))
    url = f"http://127.0.0.1:{args.port}"
    os.environ.update(
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(args.port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOCAL_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__PARALLELISM": "4",
            # the Image search page (plugins/image_search_plugin.py)
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            # `airflow standalone` starts its components by name: the venv's bin must be on PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    with running_stack(STATE / "stack", engine=args.engine) as stack:
        os.environ.update(stack.airflow_env())
        print(f"moto server (S3, Rekognition): {stack.moto_url}\n{stack.engine_label():<31}{stack.es_url}")
        if not args.no_upload:
            upload_samples(stack.boto3_client("s3"), prefix=f"uploads/{time.strftime('%Y-%m-%d')}/")
        log_path = STATE / "airflow-standalone.log"
        with open(log_path, "ab") as log:
            airflow = subprocess.Popen(
                [str(Path(sys.executable).with_name("airflow")), "standalone"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            _wait_for_api(url, airflow)
            print(f"\nAirflow is ready: {url}  (login {LOCAL_USER} / {LOCAL_PASSWORD}; logs: {log_path})")
            print("Trigger image_ingest_s3_hourly or backfill it; Ctrl-C stops everything.", flush=True)
            while not stopping and airflow.poll() is None:
                time.sleep(0.5)
        finally:
            stop_process_group(airflow, timeout=30)
    print("Airflow and the embedded servers are stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
