"""Shared pieces of the benchmarks: the embedded stack, uploads, timing and printing.

Benchmarks print figures; they never assert timings (machines are noisy). Each one measures
what it compares in one run on one machine, so ratios are meaningful even when absolute numbers
are not.
"""

from __future__ import annotations

import io
import os
import platform
import random
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
def embedded_stack(engine: str = "elasticsearch") -> Iterator[Any]:
    """A moto server + noida-db (or, ``engine="opensearch"``, a real OpenSearch node) on free
    loopback ports, in a throw-away directory."""
    from imagelabels.devstack.embedded import running_stack

    with (
        tempfile.TemporaryDirectory(prefix="imagelabels-bench-") as state,
        running_stack(Path(state), engine=engine) as stack,
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


# --- load average, percentiles, raw REST calls (the OpenSearch benchmarks) ---------------------


def load_average() -> str:
    """The machine's load average now, as printed at the start and end of each measured phase."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def wait_for_quiet(below: float, *, every: float = 30.0, give_up_after: float = 2400.0) -> str:
    """Poll the 1-minute load average every ``every`` seconds until it is below ``below``; give up
    after ``give_up_after`` seconds. Returns a line saying how it ended (to print)."""
    started = time.monotonic()
    while True:
        one = os.getloadavg()[0]
        waited = time.monotonic() - started
        if one < below:
            return f"machine quiet after {waited:.0f}s of waiting: {load_average()}"
        if waited >= give_up_after:
            return f"gave up waiting after {waited:.0f}s, running anyway: {load_average()}"
        print(f"  waiting for a quiet machine: 1-min load {one:.2f} >= {below}", flush=True)
        time.sleep(every)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.95 is p95)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def rest(url: str, path: str, *, method: str = "GET", body: Any = None, timeout: float = 3600.0) -> Any:
    """One raw REST call (standard library only) for the APIs the engine layer does not wrap:
    ``_nodes/stats``, ``_cat/*``, ``_stats``, ``_forcemerge``."""
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url.rstrip('/')}/{path.lstrip('/')}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


def process_rss_mb(pid: int) -> float:
    """Resident set of one process (the OpenSearch JVM), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- documents shaped like ours, at any scale ---------------------------------------------------

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def made_up_names(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct made-up label names of one or two capitalised words, no word shared
    between two names (so an all-words ``match`` on a name finds exactly that name)."""
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = [
            "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
            for _ in range(1 if rng.random() < 0.7 else 2)
        ]
        name = " ".join(words)
        if name not in seen and not any(word.lower() in seen for word in words):
            seen.add(name)
            seen.update(word.lower() for word in words)
            names.append(name)
    return names


class ZipfCorpus:
    """Documents shaped like ours, built with :func:`imagelabels.documents.build_document`, any
    number of them, streamed: document ``n`` depends only on ``n`` and the seed (so a range can be
    generated again, e.g. to take an example image's labels, without keeping anything).

    Each document has 5-10 distinct labels drawn from ``vocabulary`` made-up names with a
    Zipf frequency (weight 1/rank), a confidence uniform in [50, 100], and each name's fixed
    1-3 parents (from the 40 most common names) and one category, as Rekognition's taxonomy
    gives them. Ids are :func:`document_id` of the object, keys ``uploads/NNNN/img-NNNNNNN.jpg``.
    """

    BUCKET = "bench-photos"
    PARENT_POOL = 40
    CATEGORIES = 30

    def __init__(self, vocabulary: int = 3000, seed: int = 11) -> None:
        from datetime import UTC, datetime
        from itertools import accumulate

        self.names = made_up_names(vocabulary)
        self.seed = seed
        self.cum_weights = list(accumulate(1.0 / (rank + 1) for rank in range(vocabulary)))
        taxonomy = random.Random(seed + 1)
        pool = self.names[: self.PARENT_POOL]
        self.parents = {
            name: [
                {"Name": parent}
                for parent in taxonomy.sample([p for p in pool if p != name], taxonomy.randint(1, 3))
            ]
            for name in self.names
        }
        self.category = {name: f"Category {taxonomy.randrange(self.CATEGORIES):02d}" for name in self.names}
        self.started = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def rank(self, name: str) -> int:
        return self.names.index(name)

    def labels(self, number: int) -> list[dict[str, Any]]:
        """Document ``number``'s labels (Rekognition's shape), most confident first."""
        rng = random.Random(self.seed * 1_000_003 + number)
        count = rng.randint(5, 10)
        chosen: list[str] = []
        while len(chosen) < count:
            for name in rng.choices(self.names, cum_weights=self.cum_weights, k=count - len(chosen)):
                if name not in chosen:
                    chosen.append(name)
        labels = [
            {
                "Name": name,
                "Confidence": round(rng.uniform(50.0, 100.0), 3),
                "Parents": self.parents[name],
                "Categories": [{"Name": self.category[name]}],
            }
            for name in chosen[:count]
        ]
        labels.sort(key=lambda label: -label["Confidence"])
        return labels

    @staticmethod
    def title(number: int) -> str:
        return f"img-{number:07d}.jpg"

    def key(self, number: int) -> str:
        return f"uploads/{number // 1000:04d}/{self.title(number)}"

    def location(self, number: int) -> str:
        return f"s3://{self.BUCKET}/{self.key(number)}"

    def document(self, number: int) -> tuple[str, dict[str, Any]]:
        """``(id, document)`` for document ``number``, as the pipeline builds it."""
        from datetime import timedelta

        from imagelabels.documents import LabelResult, ObjectInfo, build_document, document_id

        key, etag = self.key(number), f"{number:032x}"
        modified = self.started + timedelta(seconds=number)
        obj = ObjectInfo(
            self.BUCKET,
            key,
            40_000 + number % 60_000,
            etag,
            modified,
            content_type="image/jpeg",
            width=640,
            height=480,
        )
        result = LabelResult(
            labels=self.labels(number),
            labeler="local",
            label_model_version="bench",
            min_confidence=50,
            max_labels=10,
        )
        document = build_document(
            obj, result, dag_id="image_ingest_s3_hourly", run_id="bench", ingested_at=modified
        )
        return document_id(self.BUCKET, key, None, etag), document

    def actions(
        self, start: int, stop: int, *, op_type: str = "create", progress_every: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Bulk actions for documents ``start`` .. ``stop - 1``, generated one at a time."""
        from imagelabels.documents import INDEX_ALIAS

        began = time.perf_counter()
        for number in range(start, stop):
            doc_id, source = self.document(number)
            yield {"_op_type": op_type, "_index": INDEX_ALIAS, "_id": doc_id, "_source": source}
            done = number - start + 1
            if progress_every and done % progress_every == 0:
                rate = done / (time.perf_counter() - began)
                print(
                    f"    {number + 1:>9,} documents sent, {rate:6.0f} docs/s, {load_average()}", flush=True
                )
