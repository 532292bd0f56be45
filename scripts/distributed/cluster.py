"""Airflow's components as separate processes: api-server, scheduler, dag-processor, triggerer and
N Celery workers, each in its own process group with its own log file under the run directory.

Everything started is recorded in a :class:`ProcessSet`, which stops exactly those process groups
(SIGTERM, then SIGKILL past a timeout) - never anything by name, since other people's Airflow
processes may run on the same machine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from imagelabels.devstack.embedded import stop_process_group
from imagelabels.devstack.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
USER, PASSWORD = "admin", "admin"  # loopback-only login of the throw-away api-server


@dataclass
class ProcessSet:
    """The processes this run started, stopped in reverse order by process group."""

    started: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def spawn(
        self, name: str, command: list[str], env: dict[str, str], log_dir: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new session (so its children can be stopped with it)."""
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started.append((name, process, log_path))
        return process

    def check_alive(self) -> None:
        """Fail fast, naming the log, when a component died (a hung wait would hide why)."""
        for name, process, log_path in self.started:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log_path}")

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every started group, newest first (workers finish before the scheduler goes)."""
        while self.started:
            _name, process, _log = self.started.pop()
            stop_process_group(process, timeout=timeout)


@dataclass(frozen=True)
class ClusterConfig:
    """How the Airflow cluster is laid out."""

    workers: int = 2
    concurrency: int = 4  # task slots per worker: 2 shared cores, each task is a process
    api_workers: int = 2

    @property
    def parallelism(self) -> int:
        """All slots the workers have, not Airflow's default 32 (which would only queue up)."""
        return self.workers * self.concurrency


@dataclass
class Cluster:
    """A running Airflow: where it answers and what its workers are called."""

    url: str
    env: dict[str, str]
    worker_names: list[str]
    log_dir: Path


def airflow_env(
    home: Path,
    db_url: str,
    broker_url: str,
    queue: str,
    config: ClusterConfig,
    extra: dict[str, str],
) -> tuple[dict[str, str], str]:
    """The environment every component shares; returns it and the api-server's URL.

    JWT and API secrets are set once for all processes: a component that generated its own would
    reject the tokens of the others (workers could not talk to the execution API).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(f'{{"{USER}": "{PASSWORD}"}}')
    env = {
        **os.environ,
        **extra,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(config.parallelism),
        # only the DAG under test runs: the SQS DAG is @continuous and the alert DAG asset-driven
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # no scheduled (catch-up) run of the hourly DAG next to the triggered one
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "imagelabels.tasks.worker_name.worker_hostname",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(config.concurrency),
        # a queue of our own: another Celery user of this Redis never takes our tasks
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,  # not on 8080: links and the execution API must say so
        "AIRFLOW__API__WORKERS": str(config.api_workers),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        # other people's Airflow may hold the default 8793/8794 on this machine
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("AIRFLOW_CONFIG", None)
    return env, url


def migrate(env: dict[str, str], log_dir: Path) -> None:
    """Create the schema in the fresh database."""
    with open(log_dir / "db-migrate.log", "ab") as log:
        subprocess.run(
            [AIRFLOW, "db", "migrate"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True
        )


def start_cluster(
    processes: ProcessSet, env: dict[str, str], url: str, config: ClusterConfig, queue: str, log_dir: Path
) -> Cluster:
    """Start the components; return once the api-server answers (workers register meanwhile)."""
    processes.spawn("api-server", [AIRFLOW, "api-server"], env, log_dir)
    processes.spawn("scheduler", [AIRFLOW, "scheduler"], env, log_dir)
    processes.spawn("dag-processor", [AIRFLOW, "dag-processor"], env, log_dir)
    processes.spawn("triggerer", [AIRFLOW, "triggerer"], env, log_dir)
    names = []
    for index in range(1, config.workers + 1):
        name = f"worker{index}"
        names.append(name)
        worker_env = {
            **env,
            "IMAGELABELS_WORKER_NAME": name,  # TaskInstance.hostname (see imagelabels.tasks.worker_name)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        command = [
            AIRFLOW,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(config.concurrency),
            "--queues",
            queue,
            # the default pid file is shared by every worker of one AIRFLOW_HOME: the second refuses to start
            "--pid",
            str(log_dir / f"{name}.pid"),
        ]
        processes.spawn(name, command, worker_env, log_dir)
    wait_for_api(url, processes)
    return Cluster(url, env, names, log_dir)


def wait_for_api(url: str, processes: ProcessSet, timeout: float = 300.0) -> None:
    """Until ``/api/v2/version`` answers; a component that dies meanwhile fails the wait at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            with urllib.request.urlopen(f"{url}/api/v2/version", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"the api-server did not answer on {url} within {timeout:.0f}s")
