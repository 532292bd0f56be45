"""P3: bulk indexing vs one request per document.

The same ``--documents`` realistic documents (:func:`imagelabels.documents.build_document`
output: five labels with parents and categories, object metadata, the Airflow run) are written
into a fresh ``images-vN`` index (recreated by :func:`imagelabels.engine.indexing.ensure_indices`) twice
per round, in one run on one machine:

* **bulk**: the project's :func:`imagelabels.engine.indexing.bulk_write` (``streaming_bulk``, chunks of
  500, every item checked, :data:`~imagelabels.engine.indexing.BULK_REQUESTS_IN_FLIGHT` requests
  open at once), ``create`` actions as the pipeline sends them; and the same with one request at
  a time (``bulk, 1 in flight``), to show what the requests in flight add;
* **one request per document**: ``es.create(index=..., id=..., document=...)`` per document, the
  way the first seed indexed (one HTTP round trip each).

Rounds alternate the order (bulk first, then one-per-document first) so that neither side always
meets a warmer or fuller server. The server's per-request overhead is printed too (the median
of ``--probes`` empty ``GET /`` round trips), because the ratio depends on it.

The server is ``--engine``:

* ``noida-db`` (default): the embedded stack's Elasticsearch API (a Python reimplementation, not
  Elasticsearch);
* ``opensearch``: a real OpenSearch 2.19 node (:func:`imagelabels.devstack.opensearch_node.start`, one JVM,
  ``--heap``, default index settings: 1 s refresh, ``translog.durability: request``) through the
  engine layer. ``--warm`` documents are written both ways first, outside the timings, so the
  JVM's JIT has compiled the indexing path before either side is timed.

``--corpus zipf`` writes the documents of ``benchmarks/opensearch_scale.py`` (5-10 Zipf labels each,
:class:`_common.ZipfCorpus`) instead of the fixed five labels; ``--bulk-documents`` lets the bulk
side write more documents than the one-per-document side (the rates, docs/s, are compared);
``--single-api index`` sends ``es.index(...)`` per document instead of ``es.create(...)`` (the
same one HTTP request per document; ``create`` only adds the "must not exist" check that bulk's
``create`` actions make too).

    .venv/bin/python benchmarks/p3_bulk_indexing.py                       # 2,000 documents, 2 rounds
    .venv/bin/python benchmarks/p3_bulk_indexing.py --documents 5000 --rounds 1
    .venv/bin/python benchmarks/p3_bulk_indexing.py --engine opensearch --corpus zipf \\
        --documents 3000 --bulk-documents 20000 --single-api index --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Stopwatch, ZipfCorpus, embedded_stack, load_average, machine, table

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


def zipf_documents(count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (id, document) pairs of :class:`_common.ZipfCorpus` (opensearch_scale's documents)."""
    corpus = ZipfCorpus()
    return [corpus.document(number) for number in range(count)]


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
    from imagelabels.engine.indexing import ensure_indices

    for name in (versioned_index_name(), FAILURES_INDEX):
        if es.indices.exists(index=name):
            es.indices.delete(index=name)
    ensure_indices(es)


def count_documents(es: Any) -> int:
    """Documents visible in the alias after a refresh (checks that every write landed)."""
    from imagelabels.documents import INDEX_ALIAS

    es.indices.refresh(index=INDEX_ALIAS)
    return int(es.count(index=INDEX_ALIAS)["count"])


def index_bulk(es: Any, docs: list[tuple[str, dict[str, Any]]], in_flight: int | None = None) -> float:
    """Seconds to write ``docs`` with the project's ``bulk_write`` (``in_flight`` chunk requests
    open at once; its default when None)."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.engine.indexing import BULK_REQUESTS_IN_FLIGHT, bulk_write

    actions = (
        {"_op_type": "create", "_index": INDEX_ALIAS, "_id": doc_id, "_source": source}
        for doc_id, source in docs
    )
    with Stopwatch() as watch:
        outcome = bulk_write(es, actions, in_flight=in_flight or BULK_REQUESTS_IN_FLIGHT)
    if not outcome.ok or outcome.created != len(docs):
        raise RuntimeError(f"bulk write: {outcome.created} created, failures {outcome.failures[:3]}")
    return watch.seconds


def index_one_by_one(es: Any, docs: list[tuple[str, dict[str, Any]]], api: str = "create") -> float:
    """Seconds to write ``docs`` with one ``create`` (or ``index``) request each."""
    from imagelabels.documents import INDEX_ALIAS

    with Stopwatch() as watch:
        if api == "index":
            for doc_id, source in docs:
                es.index(index=INDEX_ALIAS, id=doc_id, document=source)
        else:
            for doc_id, source in docs:
                es.create(index=INDEX_ALIAS, id=doc_id, document=source)
    return watch.seconds


@contextmanager
def server(engine: str, heap: str) -> Iterator[Any]:
    """The engine to write to: noida-db in the embedded stack, or a real OpenSearch node."""
    if engine == "noida-db":
        with embedded_stack() as stack:
            yield stack.elasticsearch()
        return
    from imagelabels.devstack import opensearch_node
    from imagelabels.engine import from_url

    with opensearch_node.start(heap=heap, timeout=300) as node:
        print(f"OpenSearch node at {node.url}, pid {node.pid}, heap {heap}", flush=True)
        yield from_url(node.url, flavor="opensearch", timeout=300)


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
    parser.add_argument("--engine", choices=("noida-db", "opensearch"), default="noida-db")
    parser.add_argument("--heap", default="2g", help="OpenSearch -Xms/-Xmx (--engine opensearch)")
    parser.add_argument("--corpus", choices=("fixed", "zipf"), default="fixed", help="which documents")
    parser.add_argument(
        "--bulk-documents", type=int, default=None, help="documents for the bulk side (default --documents)"
    )
    parser.add_argument("--single-api", choices=("create", "index"), default="create")
    parser.add_argument(
        "--warm",
        type=int,
        default=None,
        help="documents written both ways before timing (default 50; 2,000 on OpenSearch)",
    )
    args = parser.parse_args()

    import json

    make = zipf_documents if args.corpus == "zipf" else documents
    bulk_docs = make(max(args.documents, args.bulk_documents or 0))[: args.bulk_documents or args.documents]
    docs = bulk_docs[: args.documents] if len(bulk_docs) >= args.documents else make(args.documents)
    warm = args.warm if args.warm is not None else (2000 if args.engine == "opensearch" else 50)
    size = statistics.mean(len(json.dumps(source)) for _, source in docs[:200])
    print(f"P3 · {machine()} · {load_average()}")
    print(
        f"{len(bulk_docs):,} (bulk) / {len(docs):,} (one per document) documents from build_document "
        f"({args.corpus} labels), {size:,.0f} bytes of JSON each; server: {args.engine}",
        flush=True,
    )
    from imagelabels.engine.indexing import BULK_REQUESTS_IN_FLIGHT

    bulk_seconds: list[float] = []
    serial_seconds: list[float] = []
    single_seconds: list[float] = []
    with server(args.engine, args.heap) as es:
        fresh_index(es)
        # warm the client and the server, outside the timings
        index_bulk(es, make(warm))
        fresh_index(es)
        index_one_by_one(es, make(min(warm, 500)), args.single_api)
        floor_ms = round_trip_ms(es, args.probes)
        for number in range(args.rounds):
            order = [
                ("bulk", lambda es: index_bulk(es, bulk_docs), len(bulk_docs), bulk_seconds),
                ("bulk-1", lambda es: index_bulk(es, bulk_docs, in_flight=1), len(bulk_docs), serial_seconds),
                ("single", lambda es: index_one_by_one(es, docs, args.single_api), len(docs), single_seconds),
            ]
            for name, write, count, seconds_of in order if number % 2 == 0 else reversed(order):
                fresh_index(es)
                seconds = write(es)
                if count_documents(es) != count:
                    raise RuntimeError(f"{name}: expected {count} documents in the index")
                seconds_of.append(seconds)
                print(
                    f"round {number + 1}: {name:<6} {seconds:7.2f} s  {count / seconds:8.1f} docs/s  "
                    f"({count:,} documents; {load_average()})",
                    flush=True,
                )
    bulk, single = statistics.median(bulk_seconds), statistics.median(single_seconds)
    serial = statistics.median(serial_seconds)
    bulk_rate, single_rate = len(bulk_docs) / bulk, len(docs) / single
    serial_rate = len(bulk_docs) / serial
    print(
        "\n"
        + table(
            [
                (
                    "documents",
                    f"{len(bulk_docs):,} (bulk) / {len(docs):,} (one per document) per write, "
                    f"fresh index each time, {args.rounds} round(s)",
                ),
                (
                    f"bulk_write (chunks of 500, {BULK_REQUESTS_IN_FLIGHT} in flight)",
                    f"{bulk:.2f} s median, {bulk_rate:,.1f} docs/s",
                ),
                (
                    "bulk_write, 1 request at a time",
                    f"{serial:.2f} s median, {serial_rate:,.1f} docs/s "
                    f"({serial_rate / single_rate:.1f}x one per document)",
                ),
                (f"one {args.single_api} per document", f"{single:.2f} s median, {single_rate:,.1f} docs/s"),
                ("per-document request", f"{single / len(docs) * 1000:.2f} ms each"),
                ("empty request (GET /)", f"{floor_ms:.2f} ms median round trip ({args.engine})"),
                ("ratio bulk / one-per-document", f"{bulk_rate / single_rate:.1f}x"),
            ]
        )
    )
    requests = -(-len(docs) // 500)
    bulk = len(docs) / bulk_rate  # the projections below are for --documents on both sides
    for added in args.project_ms:
        projected = (single + len(docs) * added / 1000) / (bulk + requests * added / 1000)
        print(
            f"projection, not measured: with {added:g} ms more per request (network round trip, "
            f"translog fsync) the ratio would be {projected:.1f}x ({len(docs):,} vs {requests} requests)"
        )
    print(
        f"P3 result ({args.engine}): bulk indexes {bulk_rate / single_rate:.1f}x faster than one request "
        f"per document (target >= 20x); {load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
