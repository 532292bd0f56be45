"""The embedded stack: a moto server (S3, Rekognition) and a search engine on loopback: noida-db
(pip-only, through the Elasticsearch client; the default) or a real OpenSearch node
(``engine="opensearch"``: :mod:`imagelabels.devstack.opensearch_node`, Java and Maven).

It lets the whole pipeline run on a laptop with no AWS account and no Docker, and it is what the
integration tests run against. Servers listen on free loopback ports; each is started in its own
process group and stopped by group, because noida-db's Python wrapper spawns the real server
as a child that outlives a plain kill of the wrapper.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imagelabels.devstack.ports import free_port

if TYPE_CHECKING:
    from imagelabels.engine import SearchEngine

AWS_REGION = "us-east-1"
AWS_TEST_KEY = "testing"  # moto accepts any credentials; these are not secrets


class ServerExited(RuntimeError):
    """A server process ended before it answered; ``port_taken`` when its log says why."""

    def __init__(self, url: str, returncode: int, log_path: Path) -> None:
        tail = _log_tail(log_path)
        self.port_taken = any(marker in tail for marker in PORT_TAKEN_MARKERS)
        super().__init__(f"{url} server exited with {returncode}; see {log_path}; its log ends:\n{tail}")


PORT_TAKEN_MARKERS = ("Address already in use", "is in use by another program", "EADDRINUSE")
"""How moto (werkzeug) and noida-db say their port was taken between our check and their bind."""


def _log_tail(log_path: Path, lines: int = 20) -> str:
    """The last lines of a server log, so a failed start explains itself where the log is gone (CI)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"(log unreadable: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(url, process.returncode, log_path)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(
        f"{url} did not answer within {timeout:.0f}s; see {log_path}; its log ends:\n{_log_tail(log_path)}"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a server and everything it spawned: SIGTERM to the group, wait until every member
    has exited (noida-db's server saves its data on the way out), SIGKILL only past ``timeout``."""
    pgid = process.pid
    if process.poll() is None or _group_alive(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not linger as a zombie group member
        if process.returncode is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=timeout)


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def _noida_binary() -> str:
    beside_python = Path(sys.executable).with_name("noida-db")
    found = str(beside_python) if beside_python.exists() else shutil.which("noida-db")
    if not found:
        raise FileNotFoundError("noida-db is not installed (pip install noida-db)")
    return found


@dataclass
class EmbeddedStack:
    """Handles of the running servers and the settings that point Airflow at them."""

    moto_url: str
    es_url: str
    processes: list[subprocess.Popen[bytes]]
    engine_flavor: str = "elasticsearch"
    opensearch: Any = None  # the OpenSearchNode when engine_flavor is "opensearch"

    def airflow_env(self) -> dict[str, str]:
        """Environment for Airflow and boto3: connections as ``AIRFLOW_CONN_*`` JSON."""
        aws = {
            "conn_type": "aws",
            "login": AWS_TEST_KEY,
            "password": AWS_TEST_KEY,
            "extra": {"endpoint_url": self.moto_url, "region_name": AWS_REGION},
        }
        host, port = self.es_url.removeprefix("http://").split(":")
        es: dict[str, Any] = {
            "conn_type": self.engine_flavor,
            "host": host,
            "port": int(port),
            "schema": "http",
        }
        if self.engine_flavor == "opensearch":
            es["extra"] = {"use_ssl": False}
        return {
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
            "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": json.dumps(es),
            "AWS_ACCESS_KEY_ID": AWS_TEST_KEY,
            "AWS_SECRET_ACCESS_KEY": AWS_TEST_KEY,
            "AWS_DEFAULT_REGION": AWS_REGION,
        }

    def engine_label(self) -> str:
        """What serves the index, for banners (``noida-db (Elasticsearch):`` is parsed by tests)."""
        return "OpenSearch 2.19 node:" if self.engine_flavor == "opensearch" else "noida-db (Elasticsearch):"

    def boto3_client(self, service: str) -> Any:
        """A boto3 client talking to the moto server (for setup and assertions)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_TEST_KEY,
            aws_secret_access_key=AWS_TEST_KEY,
        )

    def elasticsearch(self) -> SearchEngine:
        """The search engine of the stack (noida-db through the Elasticsearch client)."""
        from imagelabels.engine import from_url

        return from_url(self.es_url, flavor=self.engine_flavor)

    def reset_moto(self) -> None:
        """Forget every bucket and object (moto's reset API), between tests."""
        request = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process_group(process)
        if self.opensearch is not None:
            self.opensearch.stop()


ENGINES = ("elasticsearch", "opensearch")


START_ATTEMPTS = 3
"""How many ports a server may try when its port is taken at bind time (see :mod:`.ports`)."""


@dataclass
class _Server:
    """One spawned server: how to (re)start it on a port, where it logs, which path says "ready"."""

    command_for: Callable[[int], list[str]]
    log_path: Path
    ready_path: str = "/"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        self.port = free_port()
        self.process = _spawn(self.command_for(self.port), self.log_path)
        return self.process

    def wait_ready(self, timeout: float) -> subprocess.Popen[bytes]:
        """Wait until it answers and return its process; a start that lost its port to another
        process starts again on a new one."""
        for attempt in range(1, START_ATTEMPTS + 1):
            assert self.process is not None, "spawn() first"
            try:
                _wait_http(self.url + self.ready_path, timeout, self.process, self.log_path)
                return self.process
            except ServerExited as exited:
                if not exited.port_taken or attempt == START_ATTEMPTS:
                    raise
                stop_process_group(self.process)
                self.spawn()
        raise AssertionError("unreachable: the last attempt returns or raises")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


def start_stack(state_dir: Path, *, timeout: float = 60.0, engine: str = "elasticsearch") -> EmbeddedStack:
    """Start moto and the search engine on free ports; data and logs go under ``state_dir``.

    ``engine="elasticsearch"`` is noida-db (pip-only); ``"opensearch"`` a real OpenSearch node
    (built with Maven once, cached under ``.local/opensearch-node``)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    state_dir.mkdir(parents=True, exist_ok=True)
    moto = _Server(
        lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        state_dir / "moto.log",
        ready_path="/moto-api/",
    )
    servers = [moto]
    try:
        moto.spawn()
        if engine == "opensearch":
            from imagelabels.devstack import opensearch_node

            node = opensearch_node.start(home=state_dir / "opensearch")
            try:
                moto_process = moto.wait_ready(timeout)
            except BaseException:
                node.stop()
                raise
            return EmbeddedStack(moto.url, node.url, [moto_process], "opensearch", opensearch=node)
        noida_binary, data_dir = _noida_binary(), str(state_dir / "noida-data")
        noida = _Server(
            lambda port: [
                noida_binary,
                "start",
                "--only",
                "elasticsearch",
                "--elasticsearch-port",
                str(port),
                "--data-dir",
                data_dir,
            ],
            state_dir / "noida-db.log",
        )
        servers.append(noida)
        noida.spawn()  # both start at once; each is then awaited
        processes = [moto.wait_ready(timeout), noida.wait_ready(timeout)]
        return EmbeddedStack(moto.url, noida.url, processes)
    except BaseException:
        for server in servers:
            server.stop()
        raise


@contextmanager
def running_stack(state_dir: Path, *, engine: str = "elasticsearch") -> Iterator[EmbeddedStack]:
    """``start_stack`` as a context manager that always stops what it started."""
    stack = start_stack(state_dir, engine=engine)
    try:
        yield stack
    finally:
        stack.stop()


def airflow_home_env(home: Path, dags_folder: Path) -> dict[str, str]:
    """A self-contained Airflow: SQLite metadata under ``home``, only our DAGs, no examples."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def covering_hours(timestamps: list[Any]) -> list[Any]:
    """The distinct UTC hour starts that contain ``timestamps`` (uploads can straddle an hour)."""
    return sorted({ts.replace(minute=0, second=0, microsecond=0) for ts in timestamps})


def load_dag(dags_folder: Path, file_stem: str, dag_id: str | None = None) -> Any:
    """A fresh DAG object from ``<dags_folder>/<file_stem>.py`` for ``dag.test()`` (the demo and
    the tests; ``dag.test()`` leaves a run's conf in ``dag.params``, so each run gets its own).

    ``dag_id`` defaults to ``file_stem``; a module attribute that is a ``@dag`` function is
    called, one that is a DAG object (the report DAGs, one per config entry) is returned."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(file_stem, dags_folder / f"{file_stem}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {dags_folder / f'{file_stem}.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = getattr(module, dag_id or file_stem)
    return found() if callable(found) else found
