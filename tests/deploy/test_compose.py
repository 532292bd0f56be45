"""docker-compose.yaml: validated by the Compose CLI, and checked for the shape users rely on (no
Docker engine runs in CI, so nothing here starts a container).

The Compose CLI is required, not optional: install it with ``bash tests/deploy/install_compose_cli.sh``
(Docker Compose v5.6.0 built from the Go module proxy; Compose v2+ is needed because the Debian 12
``docker-compose`` 1.29 ignores profiles in ``config``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
INSTALL = "bash tests/deploy/install_compose_cli.sh"
JWT_SECRET = "0" * 64
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
)
OPENSEARCH_SERVICES = {"opensearch", "opensearch-dashboards", "opensearch-dashboards-setup"}
# The default stack (no profile), exactly as before the `opensearch` profile existed.
DEFAULT_SERVICES = {
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
    "kibana-setup",
    "aws",
    "aws-setup",
}


def _version(cli: list[str]) -> str | None:
    try:
        result = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _compose_cli() -> list[str]:
    """`docker compose` or `docker-compose`, version 2 or newer; a failure (not a skip) without."""
    candidates = []
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    legacy = shutil.which("docker-compose")
    if legacy:
        candidates.append([legacy])
    seen = []
    for cli in candidates:
        version = _version(cli)
        if version is None:
            continue
        match = re.match(r"v?(\d+)\.", version)
        if match and int(match.group(1)) >= 2:
            return cli
        seen.append(f"{' '.join(cli)} {version}")
    found = f" (found only {', '.join(seen)}: Compose 1.x ignores profiles)" if seen else ""
    pytest.fail(f"no Compose CLI v2+ is installed{found}; install it with `{INSTALL}`", pytrace=False)


def _config(
    *args: str, env: dict[str, str] | None = None, env_file: str = os.devnull
) -> subprocess.CompletedProcess[str]:
    """Compose on our file with only ``env`` (and PATH, HOME) as the environment, reading
    ``env_file`` instead of a .env (a developer's .env must not decide)."""
    cli = _compose_cli()
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "AIRFLOW_JWT_SECRET": JWT_SECRET,  # required by the file; tests that check that unset it
    }
    return subprocess.run(
        [*cli, "--env-file", env_file, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, **(env or {})},
        timeout=120,
    )


def _services(*args: str, env: dict[str, str] | None = None, env_file: str = os.devnull) -> dict:
    result = _config(*args, "config", env=env, env_file=env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_cli_accepts_the_file() -> None:
    for profile in ([], ["--profile", "opensearch"]):
        result = _config(*profile, "config", "-q")
        assert result.returncode == 0, result.stderr


def test_compose_resolves_connections_from_the_environment() -> None:
    env = {
        "IMAGELABELS_BUCKET": "from-env",
        "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": "elasticsearch://es.example:9243/https",
    }
    worker = _services(env=env)["airflow-worker"]["environment"]
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


# --- the `opensearch` profile ------------------------------------------------------------------

OPENSEARCH_CONN = (
    '{"conn_type": "opensearch", "host": "opensearch", "port": 9200, "extra": {"use_ssl": false}}'
)


def test_default_stack_is_unchanged_without_the_profile() -> None:
    services = _services()
    assert set(services) == DEFAULT_SERVICES, "no profile: Elasticsearch + Kibana stack only"
    assert not set(services) & OPENSEARCH_SERVICES
    worker = services["airflow-worker"]["environment"]
    assert worker["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"] == "elasticsearch://elasticsearch:9200/http"


@pytest.mark.parametrize("select", ["flag", "environment"])
def test_opensearch_profile_adds_the_three_services(select: str) -> None:
    if select == "flag":
        services = _services("--profile", "opensearch")
    else:
        services = _services(env={"COMPOSE_PROFILES": "opensearch"})
    assert set(services) == DEFAULT_SERVICES | OPENSEARCH_SERVICES

    engine = services["opensearch"]
    assert engine["image"] == "opensearchproject/opensearch:2.19.1"
    assert engine["environment"]["discovery.type"] == "single-node"
    assert engine["environment"]["DISABLE_SECURITY_PLUGIN"] == "true"
    assert engine["environment"]["DISABLE_INSTALL_DEMO_CONFIG"] == "true"
    assert re.fullmatch(r"-Xms\d+[mg] -Xmx\d+[mg]", engine["environment"]["OPENSEARCH_JAVA_OPTS"])
    assert "localhost:9200/_cluster/health" in " ".join(engine["healthcheck"]["test"])

    dashboards = services["opensearch-dashboards"]
    assert dashboards["image"] == "opensearchproject/opensearch-dashboards:2.19.1"
    assert dashboards["environment"]["DISABLE_SECURITY_DASHBOARDS_PLUGIN"] == "true"
    assert dashboards["environment"]["OPENSEARCH_HOSTS"] == '["http://opensearch:9200"]'
    assert dashboards["depends_on"]["opensearch"]["condition"] == "service_healthy"

    setup = services["opensearch-dashboards-setup"]
    assert setup["depends_on"]["opensearch-dashboards"]["condition"] == "service_started"
    assert setup["restart"] == "no"


def test_opensearch_ports_are_local_only_and_free() -> None:
    services = _services("--profile", "opensearch")
    published: dict[str, str] = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host = str(port["published"])
            assert host not in published, f"{name} and {published[host]} both publish {host}"
            published[host] = name
    for name in ("opensearch", "opensearch-dashboards"):
        (port,) = services[name]["ports"]
        assert port["host_ip"] == "127.0.0.1", f"{name} must not listen on every interface"
    targets = {
        name: str(services[name]["ports"][0]["target"]) for name in ("opensearch", "opensearch-dashboards")
    }
    assert targets == {"opensearch": "9200", "opensearch-dashboards": "5601"}


def test_airflow_uses_opensearch_when_the_connection_says_so() -> None:
    env = {"COMPOSE_PROFILES": "opensearch", "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": OPENSEARCH_CONN}
    services = _services(env=env)
    for name in ("airflow-worker", "airflow-scheduler", "airflow-triggerer", "airflow-apiserver"):
        assert services[name]["environment"]["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"] == OPENSEARCH_CONN, name


def test_header_and_env_example_say_how_to_select_opensearch() -> None:
    header = "".join(line for line in COMPOSE.read_text().splitlines(True) if line.startswith("#"))
    example = (ROOT / ".env.example").read_text()
    for text, where in ((header, "docker-compose.yaml header"), (example, ".env.example")):
        assert "COMPOSE_PROFILES=opensearch" in text, where
        assert '"conn_type": "opensearch"' in text, where
    # what .env.example offers must be exactly the connection the test above resolved
    assert f"AIRFLOW_CONN_ELASTICSEARCH_DEFAULT={OPENSEARCH_CONN}" in example


def test_compose_cli_failure_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=re.escape(INSTALL)):
        _compose_cli()


def test_env_example_switch_to_opensearch_resolves(tmp_path: Path) -> None:
    """Follow .env.example's instructions: uncomment the OpenSearch lines, comment out the
    Elasticsearch connection, and let Compose read the result as its .env file."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT="):
            line = f"# {line}"
        elif re.match(r"# (COMPOSE_PROFILES|AIRFLOW_CONN_ELASTICSEARCH_DEFAULT|OPENSEARCH_\w*PORT)=", line):
            line = line[2:]
        lines.append(line)
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    services = _services(env_file=str(env_file))
    assert set(services) >= OPENSEARCH_SERVICES
    assert services["airflow-worker"]["environment"]["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"] == OPENSEARCH_CONN
    assert [str(p["published"]) for p in services["opensearch"]["ports"]] == ["9201"]
    assert [str(p["published"]) for p in services["opensearch-dashboards"]["ports"]] == ["5602"]


def test_every_published_port_is_loopback_unless_exposed_deliberately() -> None:
    for env, expected in (({}, "127.0.0.1"), ({"IMAGELABELS_BIND_ADDRESS": "0.0.0.0"}, "0.0.0.0")):
        services = _services("--profile", "opensearch", env=env)
        published = {
            name: [port.get("host_ip") for port in service.get("ports", [])]
            for name, service in services.items()
        }
        exposed = {name: ips for name, ips in published.items() if ips}
        assert {"airflow-apiserver", "elasticsearch", "kibana", "aws", "opensearch"} <= set(exposed)
        assert all(ip == expected for ips in exposed.values() for ip in ips), exposed


def test_the_jwt_secret_is_required_and_shared_by_every_airflow_container() -> None:
    result = _config("config", env={"AIRFLOW_JWT_SECRET": ""})
    assert result.returncode != 0
    assert "set AIRFLOW_JWT_SECRET in .env" in result.stderr
    services = _services()
    secrets = {services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert secrets == {JWT_SECRET}
    assert JWT_SECRET not in COMPOSE.read_text()  # never a committed default


def test_env_settings_reach_the_airflow_containers(tmp_path: Path) -> None:
    """Every IMAGELABELS_* setting of .env reaches the tasks (env_file), not only the few named."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in AIRFLOW_SERVICES:
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
    (tmp_path / ".env").write_text("IMAGELABELS_MAX_COST=1.5\nAIRFLOW_JWT_SECRET=" + JWT_SECRET + "\n")
    cli = _compose_cli()
    result = subprocess.run(
        [*cli, "--project-directory", str(tmp_path), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    worker = yaml.safe_load(result.stdout)["services"]["airflow-worker"]["environment"]
    assert worker["IMAGELABELS_MAX_COST"] == "1.5"


def test_copying_env_example_keeps_the_local_aws_stand_in(tmp_path: Path) -> None:
    """`cp .env.example .env` must not point the stack at real AWS: the stand-in stays the default
    and the bucket is the one aws-setup creates."""
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    services = _services(env_file=str(env_file))
    worker = services["airflow-worker"]["environment"]
    assert "endpoint_url=http%3A%2F%2Faws%3A5000" in worker["AIRFLOW_CONN_AWS_DEFAULT"]
    assert worker["IMAGELABELS_BUCKET"] == "images"
    assert services["aws-setup"]["entrypoint"][-1] == "s3://images"


def test_bucket_setup_waits_for_a_healthy_stand_in(compose: dict) -> None:
    assert compose["services"]["aws-setup"]["depends_on"] == {"aws": {"condition": "service_healthy"}}
    assert "moto-api" in " ".join(compose["services"]["aws"]["healthcheck"]["test"])


def test_header_states_the_memory_the_stack_needs() -> None:
    header = "".join(line for line in COMPOSE.read_text().splitlines(True) if line.startswith("#"))
    assert re.search(r"about \d+ GB for the default stack", header)
