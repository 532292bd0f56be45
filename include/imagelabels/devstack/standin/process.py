"""The stand-in in its own process, for benchmarks: it must not share the GIL with the client.

The process is started in a new process group and stopped by group (SIGTERM, then SIGKILL past a
timeout), like the embedded servers, so nothing outlives the benchmark.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagelabels.devstack.embedded import stop_process_group
from imagelabels.devstack.standin.config import StandInConfig

READY_PREFIX = "imagelabels-standin ready "


def start_standin_process(
    config: StandInConfig, *, timeout: float = 60.0, log_path: Path | None = None
) -> tuple[str, Callable[[], None]]:
    """Start ``python -m imagelabels.devstack.standin`` with ``config``; wait for its ready line.

    :param log_path: where its stderr goes (default: a temporary file, quoted if it fails to start).
    :returns: its URL and a callable that stops it and its whole process group (idempotent).
    """
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="imagelabels-standin-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagelabels.devstack.standin", *config.to_argv()],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = _read_ready_line(process, timeout, log_path)
    except BaseException:
        stop_process_group(process)
        raise

    def stop() -> None:
        stop_process_group(process)

    return url, stop


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float, log_path: Path) -> str:
    assert process.stdout is not None
    deadline, buffer = time.monotonic() + timeout, b""
    try:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the stand-in was not ready within {timeout:.0f}s; see {log_path}")
            readable, _, _ = select.select([process.stdout], [], [], min(remaining, 0.2))
            chunk = os.read(process.stdout.fileno(), 4096) if readable else b""
            if readable and not chunk:
                process.wait(timeout=5)
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the stand-in exited with {process.returncode}:\n{tail}")
            buffer += chunk
    finally:
        process.stdout.close()  # it prints nothing after the ready line
    line = buffer.split(b"\n", 1)[0].decode()
    if not line.startswith(READY_PREFIX):
        raise RuntimeError(f"unexpected first line from the stand-in: {line!r}; see {log_path}")
    return line.removeprefix(READY_PREFIX).strip()


def fetch_stats(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /_stats`` of a stand-in (in this process or another)."""
    with urllib.request.urlopen(f"{url}/_stats", timeout=timeout) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def reset_stats(url: str, timeout: float = 10.0) -> None:
    """``POST /_reset``: zero the counters and refill the quota buckets."""
    request = urllib.request.Request(f"{url}/_reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout):
        pass
