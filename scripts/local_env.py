"""What `make demo` and `make airflow` share: a local Airflow home and the sample uploads."""

from __future__ import annotations

import mimetypes
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("IMAGELABELS_DEMO_STATE", ROOT / ".local"))
SAMPLES = ROOT / "sample_images"
BUCKET = "demo-images"

sys.path.insert(0, str(ROOT / "include"))


def prepare_airflow() -> None:
    """Point Airflow at .local/airflow (SQLite) and migrate it; call before importing Airflow."""
    from imagelabels.devstack.embedded import airflow_home_env

    os.environ.update(airflow_home_env(STATE / "airflow", ROOT / "dags"))
    os.environ.update({"IMAGELABELS_BUCKET": BUCKET, "IMAGELABELS_ES_REFRESH": "wait_for"})
    (STATE / "airflow").mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def upload_samples(s3: Any, prefix: str) -> list[datetime]:
    """Upload the sample photographs; return their LastModified stamps."""
    if BUCKET not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    stamps = []
    for path in sorted(SAMPLES.glob("*.*")):
        if path.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
            continue
        key = f"{prefix}{path.name}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType=content_type)
        stamps.append(s3.head_object(Bucket=BUCKET, Key=key)["LastModified"])
        print(f"  uploaded s3://{BUCKET}/{key}")
    return stamps
