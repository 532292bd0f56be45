"""P3: bulk indexing vs one request per document.

The same ``--documents`` realistic documents (:func:`imagelabels.documents.build_document`
output: five labels with parents and categories, object metadata, the Airflow run) are written
into a fresh ``images-vN`` index (recreated by :func:`imagelabels.indexing.ensure_indices`) twice
per round, in one run on one machine:

* **bulk**: the project's :func:`imagelabels.indexing.bulk_write` (``streaming_bulk``, chunks of
  500, every item checked), ``create`` actions as the pipeline sends them;
* **one request per document**: ``es.create(index=..., id=..., document=...)`` per document, the
  way the first seed indexed (one HTTP round trip each).

Rounds alternate the order (bulk first, then one-per-document first) so that neither side always
meets a warmer or fuller server. The only Elasticsearch-API server here is **noida-db** (a
Python reimplementation), not Elasticsearch: its per-request overhead is printed too (the median
of ``--probes`` empty ``GET /`` round trips), because the ratio depends on it.

    .venv/bin/python benchmarks/p3_bulk_indexing.py                       # 2,000 documents, 2 rounds
    .venv/bin/python benchmarks/p3_bulk_indexing.py --documents 5000 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, embedded_stack, machine, table

BUCKET = "p3-photos"
LONG_AGO = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LABELS = [
    {
        "Name": "Tabby Cat",
        "Confidence": 92.5,
        "Parents": [{"Name": "Cat"}, {"Name": "Mammal"}, {"Name": "Animal"}],
        "Categories": [{"Name": "Animals and Pets"}],
        "Aliases": [{"Name": "Tabby"}],
    },
    {
        "Name": "Cat",
        "Confidence": 97.1,
        "Parents": [{"Name": "Mammal"}, {"Name": "Animal"}],
        "Categories": [{"Name": "Animals and Pets"}],
    },
    {"Name": "Mammal", "Confidence": 97.1, "Parents": [{"Name": "Animal"}]},
    {"Name": "Animal", "Confidence": 97.1, "Parents": []},
    {"Name": "Pet", "Confidence": 81.0, "Parents": [{"Name": "Animal"}]},
]


def documents(count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (id, document) pairs as the pipeline builds them, one per distinct object."""
    from imagelabels.documents import LabelResult, ObjectInfo, build_document, document_id

    result = LabelResult(
        labels=LABELS, labeler="local", label_model_version="bench", min_confidence=70, max_labels=50
    )
    built = []
    for n in range(count):
        key = f"uploads/2026/01/05/img-{n:07d}.jpg"
        etag = f"{n:032x}"
        obj = ObjectInfo(
            BUCKET, key, 48_000 + n, etag, LONG_AGO, content_type="image/jpeg", width=640, height=480
        )
        document = build_document(
            obj, result, dag_id="image_ingest_s3_hourly", run_id="p3", ingested_at=LONG_AGO
        )
        built.append((document_id(BUCKET, key, None, etag), document))
    return built


def fresh_index(es: Any) -> None:
    """Delete the versioned index and the failures index; recreate them (alias included)."""
    from imagelabels.documents import FAILURES_INDEX, versioned_index_name
    from imagelabels.indexing import ensure_indices

    for name in (versioned_index_name(), FAILURES_INDEX):
        if es.indices.exists(index=name):
            es.indices.delete(index=name)
    ensure_indices(es)


def count_documents(es: Any) -> int:
    """Documents visible in the alias after a refresh (checks that every write landed)."""
    from imagelabels.documents import INDEX_ALIAS

    es.indices.refresh(index=INDEX_ALIAS)
    return int(es.count(index=INDEX_ALIAS)["count"])


def index_bulk(es: Any, docs: list[tuple[str, dict[str, Any]]]) -> float:
    """Seconds to write ``docs`` with the project's ``bulk_write``."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.indexing import bulk_write

    actions = (
        {"_op_type": "create", "_index": INDEX_ALIAS, "_id": doc_id, "_source": source}
        for doc_id, source in docs
    )
    with Stopwatch() as watch:
        outcome = bulk_write(es, actions)
    if not outcome.ok or outcome.created != len(docs):
        raise RuntimeError(f"bulk write: {outcome.created} created, failures {outcome.failures[:3]}")
    return watch.seconds


def index_one_by_one(es: Any, docs: list[tuple[str, dict[str, Any]]]) -> float:
    """Seconds to write ``docs`` with one ``create`` request each."""
    from imagelabels.documents import INDEX_ALIAS

    with Stopwatch() as watch:
        for doc_id, source in docs:
            es.create(index=INDEX_ALIAS, id=doc_id, document=source)
    return watch.seconds


def round_trip_ms(es: Any, probes: int) -> float:
    """Median milliseconds of an empty request (``GET /``): the server's per-request floor."""
    samples = []
    for _ in range(probes):
        started = time.perf_counter()
        es.info()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="each round runs both, order alternating")
    parser.add_argument("--probes", type=int, default=200, help="empty requests for the round-trip floor")
    parser.add_argument(
        "--project-ms",
        type=float,
        nargs="*",
        default=[1.0, 5.0],
        help="print the ratio with this much added per request (arithmetic on the measured times)",
    )
    args = parser.parse_args()

    import json

    docs = documents(args.documents)
    size = statistics.mean(len(json.dumps(source)) for _, source in docs[:200])
    print(f"P3 · {machine()}")
    print(
        f"{args.documents:,} documents from build_document, {size:,.0f} bytes of JSON each; server: noida-db"
    )
    bulk_seconds: list[float] = []
    single_seconds: list[float] = []
    with embedded_stack() as stack:
        es = stack.elasticsearch()
        fresh_index(es)
        index_bulk(es, documents(50))  # warm the client and the server once, outside the timings
        floor_ms = round_trip_ms(es, args.probes)
        for number in range(args.rounds):
            order = [("bulk", index_bulk), ("single", index_one_by_one)]
            for name, write in order if number % 2 == 0 else reversed(order):
                fresh_index(es)
                seconds = write(es, docs)
                if count_documents(es) != len(docs):
                    raise RuntimeError(f"{name}: expected {len(docs)} documents in the index")
                (bulk_seconds if name == "bulk" else single_seconds).append(seconds)
                print(
                    f"round {number + 1}: {name:<6} {seconds:7.2f} s  {len(docs) / seconds:8.1f} docs/s",
                    flush=True,
                )
    bulk, single = statistics.median(bulk_seconds), statistics.median(single_seconds)
    bulk_rate, single_rate = len(docs) / bulk, len(docs) / single
    print(
        "\n"
        + table(
            [
                ("documents", f"{len(docs):,} per write, fresh index each time, {args.rounds} round(s)"),
                ("bulk_write (chunks of 500)", f"{bulk:.2f} s median, {bulk_rate:,.1f} docs/s"),
                ("one create per document", f"{single:.2f} s median, {single_rate:,.1f} docs/s"),
                ("per-document request", f"{single / len(docs) * 1000:.2f} ms each"),
                ("empty request (GET /)", f"{floor_ms:.2f} ms median round trip (noida-db)"),
                ("ratio bulk / one-per-document", f"{bulk_rate / single_rate:.1f}x"),
            ]
        )
    )
    requests = -(-len(docs) // 500)
    for added in args.project_ms:
        projected = (single + len(docs) * added / 1000) / (bulk + requests * added / 1000)
        print(
            f"projection, not measured: with {added:g} ms more per request (network round trip, "
            f"translog fsync) the ratio would be {projected:.1f}x ({len(docs):,} vs {requests} requests)"
        )
    print(
        f"P3 result: bulk indexes {bulk_rate / single_rate:.1f}x faster than one request per document (target >= 20x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
