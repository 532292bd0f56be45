"""Visual similarity (issue 14 item 5): recall@5 of "more like this" on transformed copies, its
latency over 100,000 documents on a real OpenSearch 2.19 node, and the labeling-time overhead.

1. **Signals** of the 43 photos of ``benchmarks/eval_set/`` and of five copies of each (mirrored,
   5 % cropped a side, half size, quarter size, JPEG quality 40), computed as the pipeline does:
   preflight (pHash pair) and the local labeler's pooled features (embedding).
2. **Distractors**: ``--documents`` synthetic documents (default 100,000; :class:`_common.ZipfCorpus`
   labels) with visual signals: a random 64-bit pHash (and mirror) and an embedding drawn around one
   of the 43 real originals (``0.6 x original + noise``, centred, normalised: cosine ~0.5 to it, so
   the corpus is full of hard look-alikes, not random vectors), then the 43 originals themselves.
3. **Recall@5**: for each copy, :func:`imagelabels.search.similarity.similar_images` over the whole index;
   a hit when its original is among the top 5 (per kind of copy, and pHash only, i.e. as for a
   Rekognition-labeled corpus without embeddings).
4. **Latency**: the same calls timed client-side (200 candidates, JSON, re-rank), p50/p95, after
   a warm-up, and the index-time near-duplicate check (20 candidates) per copy.

Steps 3 and 4 run twice when the node searches vectors (it carries the k-NN plugin): candidates
from the HNSW graph of ``visual.vector`` (with pHash bands), then from hash bands alone (what an
engine without vector search does), over the same index.
5. **Overhead per image**: preflight + local labeling of the 43 photos, with the median time of the
   new work (pHash pair in preflight; centring, int8 packing and LSH bands of the embedding).

    .venv/bin/python benchmarks/visual_similarity.py                  # 100,000 on OpenSearch
    .venv/bin/python benchmarks/visual_similarity.py --documents 20000 --heap 1g

Prints figures, asserts nothing (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ZipfCorpus, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "benchmarks" / "eval_set"
KINDS = ("mirrored", "cropped 5%", "half size", "quarter size", "JPEG q40")


def _jpeg(image: Any, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _scaled(image: Any, factor: float) -> Any:
    """``image`` scaled by ``factor``, but never under preflight's 80 px a side."""
    factor = max(factor, 80 / min(image.size))
    return image.resize((math.ceil(image.width * factor), math.ceil(image.height * factor)))


def copies(data: bytes) -> dict[str, bytes]:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    dx, dy = width // 20, height // 20
    return {
        "mirrored": _jpeg(ImageOps.mirror(image)),
        "cropped 5%": _jpeg(image.crop((dx, dy, width - dx, height - dy))),
        "half size": _jpeg(_scaled(image, 0.5)),
        "quarter size": _jpeg(_scaled(image, 0.25)),
        "JPEG q40": _jpeg(image, 40),
    }


def labeled(data: bytes, name: str) -> tuple[Any, float, float]:
    """(signals, seconds of preflight + labeling, seconds of the new work) of one image."""
    from imagelabels.documents import ObjectInfo
    from imagelabels.fingerprints import Signals, expand_embedding, phash_pair, visual_fields
    from imagelabels.labelers import LabelingSettings
    from imagelabels.labelers.local import LocalLabeler, _decode
    from imagelabels.preflight.checks import prepare

    obj = ObjectInfo("b", name, len(data), "e", datetime.now(UTC))
    began = time.perf_counter()
    prepared = prepare(obj, data, keep_pixels=True)
    result = LocalLabeler(LabelingSettings(70, 10, features=("labels",))).label(prepared)
    total = time.perf_counter() - began
    assert prepared.phash is not None
    assert result.embedding is not None
    pixels = _decode(prepared)
    began = time.perf_counter()
    phash_pair(pixels)
    visual_fields(prepared.phash[0], prepared.phash[1], result.embedding)
    extra = time.perf_counter() - began
    signals = Signals(prepared.phash[0], prepared.phash[1], expand_embedding(result.embedding))
    return signals, total, extra


def synthetic(corpus: ZipfCorpus, number: int, centres: list[Any], rng: Any) -> tuple[str, dict[str, Any]]:
    import numpy as np

    from imagelabels.fingerprints import compact_embedding, normalized, visual_fields

    doc_id, document = corpus.document(number)
    centre = centres[number % len(centres)]
    noise = rng.standard_normal(centre.size) / np.sqrt(centre.size)
    vector = normalized(0.6 * centre + noise)
    bits = rng.integers(0, 2**63, size=2, dtype=np.int64)
    document["visual"] = visual_fields(f"{bits[0]:016x}", f"{bits[1]:016x}", compact_embedding(vector))
    return doc_id, document


def measure(
    es: Any,
    queries: list[tuple[str, str, Any]],
    photos: list[Path],
    loaded: int,
    *,
    vectors: bool,
    rounds: int,
) -> None:
    """Recall@5 and latency of ``similar`` (and of the index-time near-duplicate check) by one path."""
    from imagelabels.fingerprints import Signals
    from imagelabels.search.similarity import find_near_duplicate, similar_images

    path = "nearest vectors (HNSW) + pHash bands" if vectors else "hash bands (no vector search)"

    def ask(signals: Any) -> list[str]:
        return [s.hit.s3key for s in similar_images(es, signals, size=5, vectors=vectors)]

    for _, _, signals in queries[:20]:  # warm-up
        ask(signals)
    found: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    found_phash: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    latencies: list[float] = []
    checks: list[float] = []
    for round_number in range(rounds):
        for name, kind, signals in queries:
            began = time.perf_counter()
            top = ask(signals)
            latencies.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            find_near_duplicate(es, signals, exclude_location="s3://none/none", vectors=vectors)
            checks.append((time.perf_counter() - began) * 1000)
            if round_number == 0:
                found[kind].append(f"originals/{name}" in top)
                hashed = Signals(signals.phash, signals.phash_mirror, None)
                found_phash[kind].append(f"originals/{name}" in ask(hashed))
    print(f"\n[{path}] recall@5 over {loaded:,} documents ({len(photos)} originals, {len(queries)} copies):")
    print(f"{'copy':<14} {'pHash + embedding':>18} {'pHash only':>11}")
    for kind in KINDS:
        print(
            f"{kind:<14} {sum(found[kind]):>10}/{len(found[kind])}      "
            f"{sum(found_phash[kind]):>4}/{len(found_phash[kind])}"
        )
    every = [hit for kind in KINDS for hit in found[kind]]
    every_phash = [hit for kind in KINDS for hit in found_phash[kind]]
    print(f"{'all':<14} {sum(every):>10}/{len(every)}      {sum(every_phash):>4}/{len(every_phash)}")
    print(
        f"[{path}] more-like-this latency ({len(latencies)} calls, client-side, 200 candidates re-ranked): "
        f"p50 {percentile(latencies, 0.5):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    print(
        f"[{path}] index-time near-duplicate check ({len(checks)} calls, 20 candidates): "
        f"p50 {percentile(checks, 0.5):.1f} ms, p95 {percentile(checks, 0.95):.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the copies")
    args = parser.parse_args()
    import numpy as np

    from imagelabels.devstack import opensearch_node
    from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
    from imagelabels.engine import from_url
    from imagelabels.engine.indexing import bulk_write, ensure_indices
    from imagelabels.errors import LabelingError
    from imagelabels.search.similarity import vector_search_available

    print(machine())
    photos = sorted(EVAL.glob("*.jpg"))
    originals: dict[str, Any] = {}
    queries: list[tuple[str, str, Any]] = []
    totals, extras = [], []
    for photo in photos:
        data = photo.read_bytes()
        signals, total, extra = labeled(data, photo.name)
        originals[photo.name] = signals
        totals.append(total)
        extras.append(extra)
        for kind, body in copies(data).items():
            try:
                queries.append((photo.name, kind, labeled(body, f"{kind}-{photo.name}")[0]))
            except LabelingError as error:  # a copy of a very thin photo may fall under 80 px
                print(f"skipped the {kind} copy of {photo.name}: {error.reason}")
    print(
        f"labeling (preflight + local labels, 1 thread), median {statistics.median(totals) * 1000:.1f} ms/image; "
        f"the new work (pHash pair + embedding packing + bands) median {statistics.median(extras) * 1000:.2f} ms/image"
    )

    rng = np.random.default_rng(7)
    centres = [s.embedding for s in originals.values()]
    corpus = ZipfCorpus()
    with ExitStack() as stack:
        started = time.perf_counter()
        node = stack.enter_context(opensearch_node.start(heap=args.heap, timeout=300))
        print(f"OpenSearch node at {node.url} in {time.perf_counter() - started:.0f}s")
        es = from_url(node.url, flavor="opensearch")
        ensure_indices(es)
        began = time.perf_counter()

        def actions() -> Any:
            for number in range(args.documents):
                doc_id, source = synthetic(corpus, number, centres, rng)
                yield {"_op_type": "create", "_index": INDEX_ALIAS, "_id": doc_id, "_source": source}
            for name, signals in originals.items():
                obj = ObjectInfo("eval", f"originals/{name}", 1, name, datetime.now(UTC), title=name)
                from imagelabels.fingerprints import compact_embedding

                result = LabelResult(
                    [], "local", "bench", 70, 10, embedding=compact_embedding(signals.embedding)
                )
                source = build_document(
                    obj,
                    result,
                    dag_id="d",
                    run_id="r",
                    ingested_at=obj.last_modified,
                    phash=(signals.phash, signals.phash_mirror),
                )
                yield {
                    "_op_type": "create",
                    "_index": INDEX_ALIAS,
                    "_id": document_id("eval", f"originals/{name}", None, name),
                    "_source": source,
                }

        outcome = bulk_write(es, actions(), refresh=False, chunk_size=args.chunk)
        es.indices.refresh(index=INDEX_ALIAS)
        loaded = outcome.created
        print(
            f"loaded {loaded:,} documents in {time.perf_counter() - began:.0f}s ({len(outcome.failures)} refused)"
        )

        print(f"engine vector search: {es.vector_kind} (index searchable: {vector_search_available(es)})")
        for vectors in (True, False) if vector_search_available(es) else (False,):
            measure(es, queries, photos, loaded, vectors=vectors, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
