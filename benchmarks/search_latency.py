"""Search latency: p50/p95/max of the first seed's three questions on N documents in noida-db.

The three questions, asked exactly as users ask them (:mod:`imagelabels.search.queries`):

* "all images that represent label X"      ``images_with_label(es, X)`` (first page, 20 hits)
* "X with at least 90 % confidence"        ``images_with_label(es, X, min_confidence=90)``
* "what does image T represent" (title)    ``describe_image(es, T)``

**The documents.** Every document is :func:`imagelabels.documents.build_document` output (the
same fields the DAGs index: location fields, ``Labels`` nested, ``label_names``, ``object``,
``airflow``...), for a local-labeler result with 5 to 10 labels. Label names come from a
vocabulary of 500 made-up names (``Kalomi``, ``Rava Tesu``...: one or two words) drawn with a
Zipf-like frequency (weight 1/rank), so the first names are on a large share of the images and the
last ones on a few dozen. Each label has 1 to 3 parents drawn from the 40 most common names, and
a confidence uniform in [55, 99.9]. There are no bounding boxes, aliases, categories, moderation,
text or faces: a noida-db full document from the reconcile benchmark (about 80 KB of its memory)
would put 100,000 of them near 8 GB and the load near half an hour, so these are lighter but keep
what the three questions read. noida-db's resident set is sampled while loading and printed.

**The queries.** Questions are asked in rounds (one of each per round, so noise hits all three
alike) after a few warm-up rounds that are not counted. Labels alternate between a common name
(rank 1-20) and a rare one (rank 400-500); titles are drawn at random from the loaded documents.
Latency is client-side wall time of the call (``time.perf_counter``), JSON parsing included.

    .venv/bin/python benchmarks/search_latency.py                      # 100,000 documents, 200 queries
    .venv/bin/python benchmarks/search_latency.py --documents 20000 --queries 50
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, embedded_stack, machine, made_up_names, table

BUCKET = "bench-photos"
VOCABULARY = 500
PARENT_POOL = 40
COMMON = range(0, 20)
RARE = range(400, 500)
STARTED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def vocabulary(seed: int = 7) -> list[str]:
    """500 distinct made-up label names (no word shared between names)."""
    return made_up_names(VOCABULARY, seed)


def title_of(number: int) -> str:
    return f"img-{number:07d}.jpg"


def documents(size: int, names: list[str], seed: int = 11) -> Iterator[dict[str, Any]]:
    """Bulk actions for ``size`` documents (deterministic for a seed)."""
    from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id

    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(len(names))]
    for number in range(size):
        chosen: set[str] = set()
        count = rng.randint(5, 10)
        while len(chosen) < count:
            chosen.update(rng.choices(names, weights=weights, k=count - len(chosen)))
        labels = [
            {
                "Name": name,
                "Confidence": round(rng.uniform(55.0, 99.9), 3),
                "Parents": [
                    {"Name": parent} for parent in rng.sample(names[:PARENT_POOL], rng.randint(1, 3))
                ],
            }
            for name in sorted(chosen)
        ]
        key = f"uploads/{number // 1000:04d}/{title_of(number)}"
        etag = f"{number:032x}"
        modified = STARTED + timedelta(seconds=number)
        obj = ObjectInfo(
            BUCKET, key, 50_000, etag, modified, content_type="image/jpeg", width=640, height=480
        )
        result = LabelResult(
            labels=labels, labeler="local", label_model_version="bench", min_confidence=55, max_labels=10
        )
        yield {
            "_op_type": "index",
            "_index": INDEX_ALIAS,
            "_id": document_id(BUCKET, key, None, etag),
            "_source": build_document(
                obj, result, dag_id="image_ingest_s3_hourly", run_id="bench", ingested_at=modified
            ),
        }


def group_rss_mb(pgid: int) -> float:
    """Resident set of every process in noida-db's process group (the wrapper and its server)."""
    total_kb = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after "(comm)": state, ppid, pgrp, ...
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return total_kb / 1024


def load(es: Any, size: int, names: list[str], pgid: int, chunk: int, max_rss_mb: float) -> tuple[int, float]:
    """Stream the documents in; stop early if noida-db's RSS passes ``max_rss_mb``."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.engine.indexing import ensure_indices

    ensure_indices(es)
    loaded, peak, started = 0, group_rss_mb(pgid), time.perf_counter()
    for ok, info in es.streaming_bulk(documents(size, names), chunk_size=chunk, max_retries=3):
        if not ok:
            raise RuntimeError(f"bulk failure: {info}")
        loaded += 1
        if loaded % (chunk * 10) == 0:
            peak = max(peak, group_rss_mb(pgid))
            rate = loaded / (time.perf_counter() - started)
            print(
                f"  loaded {loaded:>7,} documents, noida-db RSS {peak:7.0f} MB, {rate:5.0f} docs/s",
                flush=True,
            )
            if peak > max_rss_mb:
                print(f"  stopping: noida-db RSS above --max-rss-mb {max_rss_mb:.0f}", flush=True)
                break
    es.indices.refresh(index=INDEX_ALIAS)
    return loaded, max(peak, group_rss_mb(pgid))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100_000, help="documents to load (default 100,000)")
    parser.add_argument("--queries", type=int, default=200, help="timed calls per question (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--chunk", type=int, default=1000, help="streaming_bulk chunk size (default 1000)")
    parser.add_argument(
        "--max-rss-mb", type=float, default=12_000, help="stop loading past this noida-db RSS"
    )
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.engine import from_url
    from imagelabels.search.queries import describe_image, images_with_label

    names = vocabulary()
    print(f"Search latency, the first seed's three questions - {machine()}")
    print(
        f"load average at start {os.getloadavg()[0]:.2f} (other work on this machine counts in the figures)\n"
    )
    with embedded_stack() as stack:
        es = from_url(stack.es_url, flavor=stack.engine_flavor, timeout=600)
        pgid = stack.processes[-1].pid
        idle = group_rss_mb(pgid)
        with Stopwatch() as loading:
            _, rss = load(es, args.documents, names, pgid, args.chunk, args.max_rss_mb)
        count = int(es.count(index=INDEX_ALIAS)["count"])
        rss_after = group_rss_mb(pgid)
        print(f"  {count:,} documents searchable after {loading.seconds:.0f}s\n", flush=True)

        rng = random.Random(args.seed)
        common, rare = [names[i] for i in COMMON], [names[i] for i in RARE]

        def label_for(round_: int) -> str:
            """A common label on even rounds, a rare one on odd rounds."""
            return rng.choice(common if round_ % 2 == 0 else rare)

        questions: dict[str, Callable[[int], int]] = {}
        questions["images with label X"] = lambda r: len(images_with_label(es, label_for(r)))
        questions["X at >= 90 % confidence"] = lambda r: len(
            images_with_label(es, label_for(r), min_confidence=90)
        )
        questions["what does image T represent"] = lambda r: len(
            describe_image(es, title_of(rng.randrange(count)))
        )

        latencies: dict[str, list[float]] = {name: [] for name in questions}
        empty: dict[str, int] = dict.fromkeys(questions, 0)
        with Stopwatch() as querying:
            for round_ in range(args.warmup + args.queries):
                for name, ask in questions.items():
                    started = time.perf_counter()
                    found = ask(round_)
                    seconds = time.perf_counter() - started
                    if round_ >= args.warmup:
                        latencies[name].append(seconds)
                        empty[name] += found == 0
                if round_ >= args.warmup and (round_ - args.warmup + 1) % max(1, args.queries // 10) == 0:
                    done = round_ - args.warmup + 1
                    print(f"  {done}/{args.queries} rounds, {querying_elapsed(querying):.0f}s", flush=True)

    print(
        f"\n{count:,} documents (build_document, 5-10 labels each with 1-3 parents, "
        f"{VOCABULARY} names, Zipf-like), loaded in {loading.seconds:.0f}s "
        f"({count / loading.seconds:.0f} docs/s, streaming_bulk chunks of {args.chunk:,})"
    )
    print(
        f"noida-db RSS: {idle:.0f} MB idle, {rss:.0f} MB peak while loading, {rss_after:.0f} MB loaded "
        f"(~{(rss_after - idle) * 1024 / max(count, 1):.1f} KB per document)"
    )
    print(
        f"{args.queries} timed calls per question after {args.warmup} warm-up rounds; labels alternate "
        f"common (rank 1-20) / rare (rank 401-500); queries took {querying.seconds:.0f}s; "
        f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n"
    )
    rows = [("question", "    p50 ms     p95 ms     max ms   calls  empty answers")]
    for name, values in latencies.items():
        ms = [v * 1000 for v in values]
        rows.append(
            (
                name,
                f"{statistics.median(ms):10.1f} {percentile(ms, 0.95):10.1f} {max(ms):10.1f} "
                f"{len(ms):7d} {empty[name]:14d}",
            )
        )
    print(table(rows))


def querying_elapsed(watch: Stopwatch) -> float:
    return time.perf_counter() - watch._started


if __name__ == "__main__":
    main()
