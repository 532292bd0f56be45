"""Shared pieces of the benchmarks: the embedded stack, uploads, timing and printing.

Benchmarks print figures; they never assert timings (machines are noisy). Each one measures
what it compares in one run on one machine, so ratios are meaningful even when absolute numbers
are not.
"""

from __future__ import annotations

import io
import os
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


def machine() -> str:
    """One line describing where the figures come from."""
    return f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()}"


@contextmanager
def embedded_stack() -> Iterator[Any]:
    """A moto server + noida-db on free loopback ports, in a throw-away directory."""
    from imagelabels.embedded import running_stack

    with (
        tempfile.TemporaryDirectory(prefix="imagelabels-bench-") as state,
        running_stack(Path(state)) as stack,
    ):
        os.environ.update(stack.airflow_env())
        yield stack


def small_jpeg(index: int, side: int = 128) -> bytes:
    """A distinct small JPEG (distinct bytes, so distinct ETags and documents)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (index % 251, (index // 251) % 251, 120)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def upload(s3: Any, bucket: str, bodies: dict[str, bytes], threads: int = 16, create: bool = True) -> None:
    """Create ``bucket`` (unless ``create`` is false) and upload ``bodies`` (key -> bytes) in parallel."""
    if create:
        s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), bodies.items()))


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started


def table(rows: list[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def current_rss_kb() -> int:
    """This process's resident set now (``ru_maxrss`` only knows the lifetime peak, which the
    imports may already have set)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


class RssSampler(threading.Thread):
    """Samples the resident set every 10 ms while the measured work runs; ``stop()`` returns the
    largest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = current_rss_kb()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.01):
            self.peak_kb = max(self.peak_kb, current_rss_kb())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak_kb, current_rss_kb())
