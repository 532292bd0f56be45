"""docker-compose.yaml: validated by the Compose CLI where one is installed, and checked for the
shape users rely on (no Docker engine runs in CI, so nothing here starts a container)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_cli_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_compose_resolves_connections_from_the_environment() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {
        "PATH": "/usr/bin:/bin",
        "IMAGELABELS_BUCKET": "from-env",
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": "elasticsearch://es.example:9243/https",
    }
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    worker = yaml.safe_load(result.stdout)["services"]["airflow-worker"]["environment"]
    assert worker["IMAGELABELS_BUCKET"] == "from-env"
    assert worker["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"] == "elasticsearch://es.example:9243/https"


def test_official_airflow_shape_plus_our_services(compose: dict) -> None:
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
        "elasticsearch",
        "kibana",
        "aws",
    } <= set(services)
    common = compose["x-airflow-common"]
    assert common["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert {
        "./dags:/opt/airflow/dags",
        "./include:/opt/airflow/include",
        "./plugins:/opt/airflow/plugins",
    } <= set(common["volumes"])
    for name in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"):
        assert common["environment"][name].startswith(f"${{{name}:-"), f"{name} must be overridable from .env"
    assert services["elasticsearch"]["image"].split(":")[-1].startswith("8.")


def test_dockerfile_uses_the_pinned_airflow() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = next(
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("apache-airflow==")
    )
    assert f"apache/airflow:{pinned.split('==')[1]}-python3.11" in dockerfile
