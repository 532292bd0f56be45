"""OpenSearch 2.19 at scale: search latency, bulk load rate, heap and disk per document.

Everything runs against **one real OpenSearch 2.19 node** (:func:`imagelabels.devstack.opensearch_node.start`,
one JVM, ``--heap`` for ``-Xms``/``-Xmx``, data under the git-ignored ``.local/opensearch-node/homes/``,
deleted at the end) through the project's engine layer (``from_url(url, flavor="opensearch")``).

**The documents** (:class:`_common.ZipfCorpus`): :func:`imagelabels.documents.build_document`
output, so the mapping is exactly the ``images-v2`` template's (nested ``Labels`` with
``include_in_root``, ``label_names``...). 5-10 distinct labels each, names from ``--vocabulary``
made-up names drawn with a Zipf frequency (weight 1/rank: rank 1 is on ~60 % of the images, rank
2,000 on ~0.05 %), confidence uniform in [50, 100], each name's fixed 1-3 parents and one category.
Ids are :func:`document_id` of the object (deterministic); document ``n`` depends only on ``n``, so
they are generated one at a time while sending (never all in memory).

**Per size** in ``--sizes`` (cumulative on the same index: loading 1,000,000 after 100,000 sends
the 900,000 more), in this order:

1. *load*: :func:`imagelabels.engine.indexing.bulk_write` (``create`` actions, chunks of ``--chunk``,
   default 500, every item checked), docs/s. With ``--refresh-off`` the index's
   ``refresh_interval`` is ``-1`` during the load and restored (reset to the default 1 s) after;
   the printout says which was used.
2. *force-merge* to one segment (timed), then *heap and disk*: a full GC (``jcmd <pid> GC.run``)
   then ``_nodes/stats`` (heap used, old generation, segments memory, fielddata) and ``_stats``
   / ``_cat/indices`` (store size, Lucene documents: the root plus one per nested label), each
   divided by the number of images. The empty node's heap (after a GC, before any index) is
   printed for reference and subtracted in "heap per document".
3. *latency*: the five questions through :mod:`imagelabels.search.queries`, asked in rounds (one of each
   per round) after ``--warmup`` uncounted rounds; ``--queries`` timed calls each; client-side
   wall time of the call (``time.perf_counter``), JSON parsing and ``Hit`` building included:

   * ``label X``           ``images_with_label(es, X)`` (first page, 20 hits)
   * ``label X >= N``      ``images_with_label(es, X, min_confidence=N)``, N in {70, 80, 90}
   * ``describe T``        ``describe_image(es, T)``, T a random image's title or S3 key (alternating)
   * ``like this``         ``images_like(es, example, exclude_location=...)``, the example being a
                           random indexed image's 5 most confident labels
   * ``top labels``        ``top_labels(es, size=10)`` (terms aggregation on ``label_names``) with
                           the shard request cache **off** (``index.requests.cache.enable: false``),
                           i.e. the cost after any refresh that changed the index; the cached
                           figure (the same request again, cache on) is printed on its own line.

   X alternates between a frequent name (rank 1-20) and a rare one (rank 1,001-3,000); p95 is
   also printed per tier. Goals (at 1,000,000): p95 <= 50 ms for the two label questions,
   <= 150 ms for the others.
4. with ``--shapes``: the label questions' request as :mod:`imagelabels.search.queries` sends it
   (captured, not copied) replayed directly with ``es.search`` next to variants of it
   (``track_total_hits``, ``inner_hits``...), p50/p95 per tier, and one ``profile: true`` run's
   breakdown; this is how a proposed change to the query shape is measured.
5. with ``--proposals``: changes that keep today's mapping, timed against the captured requests
   on the same rounds, with how often the answer stays the same (a confidence floor with a
   separate count for the label questions; ``minimum_should_match`` for "like this"; time
   windows for top labels).
6. with ``--rank-features``: the proposed ``rank_features`` field (one feature per label name),
   built into a side index with ``_reindex``, and the ``rank_feature`` queries that would answer
   the label and "like this" questions, against today's requests, answers compared.

With ``--side-by-side`` each size is loaded into **noida-db** (the embedded stack) too, and every
question is asked of both engines in the same rounds (order alternating), both printed.

The load average is printed at the start and end of every phase. ``--quiet-below 1.5`` waits
(polling every 30 s, at most ``--quiet-max`` s the first time and ``--settle-max`` s later)
before each size's load and before its queries.

    .venv/bin/python benchmarks/opensearch_scale.py --sizes 100000 1000000 --heap 3g --refresh-off \\
        --shapes --quiet-below 1.5 --home .local/bench-opensearch-1m
    .venv/bin/python benchmarks/opensearch_scale.py --sizes 1000000 --home .local/bench-opensearch-1m \\
        --no-merge --no-latency --proposals --rank-features   # again on the index kept by --home
    .venv/bin/python benchmarks/opensearch_scale.py --side-by-side --sizes 20000 --noida-queries 20
    .venv/bin/python benchmarks/opensearch_scale.py --sizes 10000 --queries 50   # a quick check
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Stopwatch,
    ZipfCorpus,
    embedded_stack,
    load_average,
    machine,
    percentile,
    process_rss_mb,
    rest,
    table,
    wait_for_quiet,
)

INDEX_ALIAS_FOR_PROPOSALS = "images"  # imagelabels.documents.INDEX_ALIAS (checked in main)
FREQUENT = range(0, 20)
RARE = range(1000, 3000)
CONFIDENCES = (70, 80, 90)
GOALS_MS = {
    "label X": 50.0,
    "label X >= N": 50.0,
    "describe T": 150.0,
    "like this": 150.0,
    "top labels": 150.0,
}


# --- the questions -----------------------------------------------------------------------------


@dataclass
class Round:
    """What one round asks (the same of every engine)."""

    label: str
    tier: str
    confidence: int
    describe: str
    example: list[tuple[str, float]]
    exclude: str


def plan_rounds(corpus: ZipfCorpus, count: int, rounds: int, seed: int) -> list[Round]:
    rng = random.Random(seed)
    planned = []
    for number in range(rounds):
        tier = "frequent" if number % 2 == 0 else "rare"
        rank = rng.choice(FREQUENT if tier == "frequent" else RARE)
        target = rng.randrange(count)
        model = rng.randrange(count)
        example = [(label["Name"], label["Confidence"]) for label in corpus.labels(model)[:5]]
        planned.append(
            Round(
                label=corpus.names[rank],
                tier=tier,
                confidence=rng.choice(CONFIDENCES),
                describe=corpus.title(target) if number % 2 == 0 else corpus.key(target),
                example=example,
                exclude=corpus.location(model),
            )
        )
    return planned


def questions(es: Any) -> dict[str, Callable[[Round], int]]:
    """Each question as :mod:`imagelabels.search.queries` asks it; returns the number of hits."""
    from imagelabels.search.queries import describe_image, images_like, images_with_label, top_labels

    return {
        "label X": lambda r: len(images_with_label(es, r.label)),
        "label X >= N": lambda r: len(images_with_label(es, r.label, min_confidence=r.confidence)),
        "describe T": lambda r: len(describe_image(es, r.describe)),
        "like this": lambda r: len(images_like(es, r.example, exclude_location=r.exclude).hits),
        "top labels": lambda r: len(top_labels(es, size=10)),
    }


@dataclass
class Timings:
    seconds: list[float] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    took: list[float] = field(default_factory=list)
    empty: int = 0

    def ms(self, tier: str | None = None) -> list[float]:
        return [s * 1000 for s, t in zip(self.seconds, self.tiers, strict=True) if tier in (None, t)]


def ask_rounds(
    engines: dict[str, Any],
    planned: list[Round],
    warmup: int,
    label: str,
    windows: dict[str, range] | None = None,
) -> dict[tuple[str, str], Timings]:
    """Ask every question of every engine, round after round; the first ``warmup`` rounds are not
    counted. Engine order alternates per round (noise hits both alike). An engine with a window in
    ``windows`` is asked only in those rounds (noida-db takes seconds a call)."""
    windows = windows or {}
    recorders = {engine: Capture(es) for engine, es in engines.items()}
    asked = {engine: questions(recorder) for engine, recorder in recorders.items()}
    timings: dict[tuple[str, str], Timings] = {
        (engine, name): Timings() for engine in engines for name in asked[engine]
    }
    order = list(engines)
    counted = len(planned) - warmup
    with Stopwatch() as watch:
        for number, planned_round in enumerate(planned):
            for name in asked[order[0]]:
                for engine in order if number % 2 == 0 else reversed(order):
                    if number not in windows.get(engine, range(len(planned))):
                        continue
                    started = time.perf_counter()
                    found = asked[engine][name](planned_round)
                    seconds = time.perf_counter() - started
                    if number >= warmup:
                        timing = timings[(engine, name)]
                        timing.seconds.append(seconds)
                        timing.tiers.append(planned_round.tier)
                        timing.empty += found == 0
                        timing.took.append(recorders[engine].took)
            done = number + 1 - warmup
            if done > 0 and done % max(1, counted // 4) == 0:
                print(
                    f"    {label}: {done}/{counted} rounds, {time.perf_counter() - watch._started:.0f}s",
                    flush=True,
                )
    return timings


def latency_table(timings: dict[tuple[str, str], Timings], goals: bool) -> str:
    rows = [
        (
            "engine · question",
            "  p50 ms   p95 ms   max ms  calls  empty   p95 freq   p95 rare  took p50  took p95  goal p95",
        )
    ]
    for (engine, name), timing in timings.items():
        ms = timing.ms()
        frequent, rare = timing.ms("frequent"), timing.ms("rare")
        tiered = name.startswith("label")
        goal = GOALS_MS[name]
        verdict = ("met" if percentile(ms, 0.95) <= goal else "MISSED") if goals else ""
        rows.append(
            (
                f"{engine} · {name}",
                f"{statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f} {max(ms):8.1f} {len(ms):6d} "
                f"{timing.empty:6d} "
                + (
                    f"{percentile(frequent, 0.95):10.1f} {percentile(rare, 0.95):10.1f}"
                    if tiered
                    else " " * 21
                )
                + f" {statistics.median(timing.took):9.1f} {percentile(timing.took, 0.95):9.1f}"
                + f"  <= {goal:.0f} {verdict}",
            )
        )
    return table(rows)


# --- the node: load, merge, stats ----------------------------------------------------------------


def load(es: Any, corpus: ZipfCorpus, start: int, stop: int, chunk: int, refresh_off: bool) -> float:
    """Send documents ``start`` .. ``stop - 1`` with ``bulk_write``; seconds taken (refresh included)."""
    from imagelabels.documents import INDEX_ALIAS
    from imagelabels.engine.indexing import bulk_write

    if refresh_off:
        es.indices.put_settings(index=INDEX_ALIAS, settings={"index": {"refresh_interval": "-1"}})
    progress = max(chunk, (stop - start) // 10)
    with Stopwatch() as watch:
        outcome = bulk_write(es, corpus.actions(start, stop, progress_every=progress), chunk_size=chunk)
        if refresh_off:
            es.indices.put_settings(index=INDEX_ALIAS, settings={"index": {"refresh_interval": None}})
        es.indices.refresh(index=INDEX_ALIAS)
    if not outcome.ok or outcome.created != stop - start:
        raise RuntimeError(f"bulk_write: {outcome.created} created, failures {outcome.failures[:3]}")
    return watch.seconds


def full_gc(pid: int) -> bool:
    """Ask the JVM for a full GC (so "heap used" is what is retained, not garbage)."""
    jcmd = shutil.which("jcmd")
    if not jcmd:
        return False
    done = subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True, timeout=120, check=False)
    return done.returncode == 0


def heap_figures(url: str) -> dict[str, float]:
    stats = rest(url, "_nodes/stats/jvm,indices")
    node = next(iter(stats["nodes"].values()))
    jvm, indices = node["jvm"]["mem"], node["indices"]
    old = jvm.get("pools", {}).get("old", {})
    return {
        "heap_used": jvm["heap_used_in_bytes"],
        "heap_max": jvm["heap_max_in_bytes"],
        "old_used": old.get("used_in_bytes", 0),
        "segments": indices["segments"]["count"],
        "segments_memory": indices["segments"].get("memory_in_bytes", 0),
        "fielddata": indices["fielddata"]["memory_size_in_bytes"],
        "query_cache": indices["query_cache"]["memory_size_in_bytes"],
        "request_cache": indices["request_cache"]["memory_size_in_bytes"],
    }


def disk_figures(url: str, index: str, data: Path) -> dict[str, float]:
    """Store size from ``_stats`` and ``_cat/indices`` (OpenSearch caches store stats for
    ``index.store.stats_refresh_interval``, 10 s: the caller waits that long after the merge) and
    what ``du`` says of the node's whole data folder (translog and cluster state included)."""
    du = subprocess.run(["du", "-sb", str(data)], capture_output=True, text=True, check=False)
    stats = rest(url, f"{index}/_stats/store,docs,segments")
    primaries = stats["_all"]["primaries"]
    cat = rest(url, f"_cat/indices/{index}?format=json&bytes=b")[0]
    return {
        "store": primaries["store"]["size_in_bytes"],
        "lucene_docs": primaries["docs"]["count"],
        "cat_store": int(cat["store.size"]),
        "cat_docs": int(cat["docs.count"]),
        "segments": primaries["segments"]["count"],
        "data_dir": int(du.stdout.split()[0]) if du.returncode == 0 else 0,
    }


def mb(value: float) -> str:
    return f"{value / 2**20:,.1f} MB"


# --- query shapes -------------------------------------------------------------------------------


class Capture:
    """Wraps an engine's ``search``: remembers the last request's keyword arguments (``keep``)
    and the server's ``took`` (ms) of the last answer. :mod:`imagelabels.search.queries` only calls
    ``search``."""

    def __init__(self, es: Any, keep: bool = False) -> None:
        self._es = es
        self._keep = keep
        self.last: dict[str, Any] = {}
        self.took = float("nan")

    def search(self, **kwargs: Any) -> dict[str, Any]:
        if self._keep:
            self.last = copy.deepcopy(kwargs)
        answer: dict[str, Any] = self._es.search(**kwargs)
        self.took = float(answer.get("took", float("nan")))
        return answer


def _nested(request: dict[str, Any]) -> dict[str, Any]:
    query = request["query"]
    return query["bool"]["must"][0]["nested"] if "bool" in query else query["nested"]


def _without_inner_hits(request: dict[str, Any]) -> dict[str, Any]:
    _nested(request).pop("inner_hits", None)
    return request


def _flat_filter(request: dict[str, Any]) -> dict[str, Any]:
    """A non-scoring pre-filter on the root copy of the label names (``include_in_root``):
    ``Labels.Name`` on the root is the same analyzed text, so this restricts the nested query to
    the images that have the label at all. Same hits, same scores."""
    nested = request["query"]
    name = _nested(request)["query"]["function_score"]["query"]["bool"]["must"][0]
    request["query"] = {"bool": {"must": [nested], "filter": [name]}}
    return request


def shape_variants() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    def total(value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def change(request: dict[str, Any]) -> dict[str, Any]:
            request["track_total_hits"] = value
            return request

        return change

    return {
        "as search.py sends it": lambda request: request,
        "track_total_hits: 1000": total(1000),
        "no inner_hits": _without_inner_hits,
        "track_total_hits: 1000, no inner_hits": lambda request: _without_inner_hits(total(1000)(request)),
        "+ root filter on Labels.Name": _flat_filter,
    }


def _floor(request: dict[str, Any], floor: float) -> dict[str, Any]:
    """The label request restricted to labels at or above ``floor`` confidence (in the same nested
    label), total hits not counted."""
    must = _nested(request)["query"]["function_score"]["query"]["bool"]["must"]
    ranges = [clause for clause in must if "range" in clause]
    if ranges:
        bounds = ranges[0]["range"]["Labels.Confidence"]
        bounds["gte"] = max(float(bounds["gte"]), floor)
    else:
        must.append({"range": {"Labels.Confidence": {"gte": floor}}})
    request["track_total_hits"] = False
    return request


def _ids(answer: dict[str, Any], size: int = 20) -> list[str]:
    return [hit["_id"] for hit in answer["hits"]["hits"][:size]]


def label_floor_then_count(
    es: Any, request: dict[str, Any], label: str, floor: float = 95.0
) -> tuple[dict[str, Any], int]:
    """The proposal for the label questions' first page: ask for the page among labels at or
    above ``floor`` confidence (the hits are sorted by that confidence, so if the page is full
    it is exactly the page of the full query), without counting; fall back to the full request
    when the page is not full. The total comes from a separate count: for "label X" a ``term``
    on the root copy of ``Labels.Name.keyword`` (``include_in_root``; Lucene counts a term query
    from its document frequency), for "label X >= N" the nested query in filter context
    (no scoring)."""
    size = int(request["size"])
    answer = es.search(**_floor(copy.deepcopy(request), floor))
    if len(answer["hits"]["hits"]) < size:
        answer = es.search(**request)
        total = answer["hits"]["total"]
        return answer, int(total["value"]) if isinstance(total, dict) else int(total)
    nested = copy.deepcopy(_nested(request))
    inner = nested["query"]["function_score"]["query"]
    ranged = any("range" in clause for clause in inner["bool"]["must"])
    if ranged:
        count_query = {"nested": {"path": "Labels", "query": {"bool": {"filter": inner["bool"]["must"]}}}}
    else:
        count_query = {"term": {"Labels.Name.keyword": label}}
    return answer, int(es.count(index=request["index"], query=count_query)["count"])


def compare_proposals(es: Any, planned: list[Round], warmup: int) -> None:
    """Time the proposed query changes against the requests :mod:`imagelabels.search.queries` sends
    (captured), on the same rounds; check that the answers stay the same (top-20 ids, totals)."""
    from imagelabels.search.queries import Filters, images_like, images_with_label, top_labels

    capture = Capture(es, keep=True)
    results: dict[tuple[str, str], Timings] = {}
    agreement: dict[tuple[str, str], list[float]] = {}

    def timed(question: str, variant: str, tier: str, number: int, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = call()
        seconds = time.perf_counter() - started
        if number >= warmup:
            timing = results.setdefault((question, variant), Timings())
            timing.seconds.append(seconds)
            timing.tiers.append(tier)
            timing.took.append(float("nan"))
        return value

    def agree(question: str, variant: str, number: int, same: float) -> None:
        if number >= warmup:
            agreement.setdefault((question, variant), []).append(same)

    for number, r in enumerate(planned):
        for question, min_confidence in (("label X", None), ("label X >= N", r.confidence)):
            images_with_label(capture, r.label, min_confidence=min_confidence)
            request = capture.last
            base = timed(
                question,
                "as search.py sends it",
                r.tier,
                number,
                lambda request=request: es.search(**request),
            )
            answer, total = timed(
                question,
                "floor 95 + separate count",
                r.tier,
                number,
                lambda request=request, label=r.label: label_floor_then_count(es, request, label),
            )
            base_total = int(base["hits"]["total"]["value"])
            agree(
                question,
                "floor 95 + separate count",
                number,
                float(_ids(base) == _ids(answer) and base_total == total),
            )
        # like this: minimum_should_match 2 of the 5 example labels
        images_like(capture, r.example, exclude_location=r.exclude)
        request = capture.last
        base = timed(
            "like this", "as search.py sends it", r.tier, number, lambda request=request: es.search(**request)
        )
        for need in (2, 3):
            variant = copy.deepcopy(request)
            query = variant["query"]
            query["bool"]["minimum_should_match"] = need
            variant["track_total_hits"] = False
            answer = timed(
                "like this",
                f"minimum_should_match {need}, no total",
                r.tier,
                number,
                lambda v=variant: es.search(**v),
            )
            overlap = len(set(_ids(base)) & set(_ids(answer))) / max(1, len(_ids(base)))
            agree("like this", f"minimum_should_match {need}, no total", number, overlap)
    # top labels (request cache off, as in the latency table)
    es.indices.put_settings(
        index=INDEX_ALIAS_FOR_PROPOSALS, settings={"index": {"requests.cache.enable": False}}
    )
    try:
        newest = rest_newest_timestamp(es)
        base_top = top_labels(es, size=10)
        for number, r in enumerate(planned):
            timed("top labels", "as search.py sends it", r.tier, number, lambda: top_labels(es, size=10))
            for days in (1, 7):
                since = newest - timedelta(days=days)
                timed(
                    "top labels",
                    f"Filters(since=newest - {days} d)",
                    r.tier,
                    number,
                    lambda s=since: top_labels(es, size=10, filters=Filters(since=s)),
                )
            answer = timed(
                "top labels",
                "terms on Labels.Name.keyword (root copy)",
                r.tier,
                number,
                lambda: es.search(
                    index=INDEX_ALIAS_FOR_PROPOSALS,
                    size=0,
                    query={"match_all": {}},
                    aggs={"labels": {"terms": {"field": "Labels.Name.keyword", "size": 10}}},
                ),
            )
            names = [bucket["key"] for bucket in answer["aggregations"]["labels"]["buckets"]]
            same = len(set(names) & {name for name, _ in base_top}) / 10
            agree("top labels", "terms on Labels.Name.keyword (root copy)", number, same)
    finally:
        es.indices.put_settings(
            index=INDEX_ALIAS_FOR_PROPOSALS, settings={"index": {"requests.cache.enable": None}}
        )
    rows = [("question · variant", "  p50 ms   p95 ms  p95 freq  p95 rare  same answer")]
    for (question, variant), timing in results.items():
        ms, frequent, rare = timing.ms(), timing.ms("frequent"), timing.ms("rare")
        same = agreement.get((question, variant))
        rows.append(
            (
                f"{question} · {variant}",
                f"{statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f} "
                + (
                    f"{percentile(frequent, 0.95):9.1f} {percentile(rare, 0.95):9.1f}"
                    if question.startswith("label")
                    else " " * 19
                )
                + (f"  {statistics.mean(same) * 100:5.1f} %" if same else ""),
            )
        )
    print(table(rows))
    print(
        "  same answer: label questions, share of rounds with the same top-20 ids and the same total; "
        "like this, mean share of the top 20 kept; top labels (root copy), share of the top 10 names kept"
    )


RF_INDEX = "bench-label-features"
# search.py sorts by score then s3_location (stable search_after pages); a sort on anything but the
# score alone keeps Lucene from skipping non-competitive blocks, so the tie-breaks are timed too
TIE_BREAKS: dict[str, list[dict[str, Any]]] = {
    "[_score, s3_location] (today's)": [{"_score": {"order": "desc"}}, {"s3_location": {"order": "asc"}}],
    "[_score, _doc]": [{"_score": {"order": "desc"}}, {"_doc": {"order": "asc"}}],
}
_RF_SCRIPT = """
Map features = new HashMap();
for (def label : ctx._source.Labels) { features.put(label.Name, Math.exp(0.8 * label.Confidence)); }
def location = ctx._source.s3_location;
ctx._source.clear();
ctx._source.s3_location = location;
ctx._source.label_confidence = features;
"""


def build_rank_features(url: str, index: str) -> None:
    """A side index with what the proposed mapping adds: ``label_confidence``, a ``rank_features``
    field (one feature per label name), next to ``s3_location``; filled by ``_reindex`` (painless)
    from the images index, force-merged to one segment like it.

    rank_features keeps 9 significant bits of a value (0.25 steps near a confidence of 100, so
    the top 20 of a frequent label would all tie), so the value stored is ``exp(0.8 x confidence)``
    and queried with the ``log`` function (x 1.25): the score is the confidence again, to within
    0.005 (relative precision becomes absolute precision)."""
    if _exists(url, RF_INDEX):
        if rest(url, f"{RF_INDEX}/_count")["count"] == rest(url, f"{index}/_count")["count"]:
            print(f"  {RF_INDEX}: already built (kept in --home), not copied again", flush=True)
            return
        rest(url, RF_INDEX, method="DELETE")
    rest(
        url,
        RF_INDEX,
        method="PUT",
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "s3_location": {"type": "keyword"},
                    "label_confidence": {"type": "rank_features"},
                },
            },
        },
    )
    with Stopwatch() as copying:
        task = rest(
            url,
            "_reindex?refresh=true&wait_for_completion=false",
            method="POST",
            body={
                "source": {
                    "index": index,
                    "size": 2000,
                    "_source": ["s3_location", "Labels.Name", "Labels.Confidence"],
                },
                "dest": {"index": RF_INDEX},
                "script": {"lang": "painless", "source": _RF_SCRIPT},
            },
        )
        while not (status := rest(url, f"_tasks/{task['task']}"))["completed"]:
            time.sleep(5)
        done = status.get("response", {})
        rest(url, f"{RF_INDEX}/_forcemerge?max_num_segments=1", method="POST")
        rest(url, f"{RF_INDEX}/_settings", method="PUT", body={"index": {"refresh_interval": None}})
        rest(url, f"{RF_INDEX}/_refresh", method="POST")
    print(f"  {RF_INDEX}: {done.get('created', 0):,} documents copied in {copying.seconds:.0f}s", flush=True)


def _exists(url: str, index: str) -> bool:
    import urllib.error

    try:
        rest(url, index)
        return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def compare_rank_features(es: Any, url: str, planned: list[Round], warmup: int) -> None:
    """The proposed shape on the proposed field: top-k by ``rank_feature`` (Lucene skips blocks
    that cannot enter the top 20: block-max WAND, so the cost no longer grows with the number of
    matching images), totals from a root ``term`` count; against what search.py sends today."""
    from imagelabels.search.queries import images_like, images_with_label

    capture = Capture(es, keep=True)
    results: dict[tuple[str, str], Timings] = {}
    agreement: dict[tuple[str, str], list[float]] = {}
    drifts: list[float] = []

    def timed(question: str, variant: str, tier: str, number: int, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = call()
        if number >= warmup:
            timing = results.setdefault((question, variant), Timings())
            timing.seconds.append(time.perf_counter() - started)
            timing.tiers.append(tier)
        return value

    def feature(name: str, weight: float = 1.0) -> dict[str, Any]:
        """Scores the label's confidence (x ``weight``): log(1 + exp(0.8 c)) x 1.25 = c."""
        return {
            "rank_feature": {
                "field": f"label_confidence.{name}",
                "log": {"scaling_factor": 1},
                "boost": 1.25 * weight,
            }
        }

    def drift(answer: dict[str, Any], base: dict[str, Any]) -> float:
        """Largest difference between the i-th confidences of today's answer and the proposal's
        (the same ranking to within the stored precision when small); inf if the lengths differ."""
        ours = [hit["_score"] for hit in answer["hits"]["hits"][:20]]
        theirs = [hit["_score"] for hit in base["hits"]["hits"][:20]]
        if len(ours) != len(theirs):
            return float("inf")
        return max((abs(a - b) for a, b in zip(ours, theirs, strict=True)), default=0.0)

    def overlap(answer: dict[str, Any], base: dict[str, Any]) -> float:
        """Share of today's top 20 (by S3 location) that the proposal returns too."""
        expected = {hit["_source"]["s3_location"] for hit in base["hits"]["hits"][:20]}
        found = {hit["_source"]["s3_location"] for hit in answer["hits"]["hits"][:20]}
        return len(expected & found) / len(expected) if expected else float(not found)

    def top_k(query: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return es.search(
            index=RF_INDEX, query=query, size=21, track_total_hits=False, source=["s3_location"], **extra
        )

    for number, r in enumerate(planned):
        # label X: top 20 by confidence + the exact total (root term count, from the postings)
        images_with_label(capture, r.label)
        request = capture.last
        base = timed(
            "label X", "as search.py sends it", r.tier, number, lambda request=request: es.search(**request)
        )

        def label_x(label: str = r.label) -> tuple[dict[str, Any], int]:
            answer = top_k(feature(label))
            total = es.count(index=INDEX_ALIAS_FOR_PROPOSALS, query={"term": {"Labels.Name.keyword": label}})
            return answer, int(total["count"])

        answer, total = timed("label X", "rank_feature top 20 + root term count", r.tier, number, label_x)
        if number >= warmup:
            same_total = total == base["hits"]["total"]["value"]
            agreement.setdefault(("label X", "rank_feature top 20 + root term count"), []).append(
                float(same_total)
            )
            drifts.append(drift(answer, base))
        for variant, sort in TIE_BREAKS.items():
            answer = timed(
                "label X",
                f"rank_feature top 20, sort {variant} (no count)",
                r.tier,
                number,
                lambda label=r.label, sort=sort: top_k(feature(label), sort=sort, track_scores=True),
            )
        # label X >= N: the same top 20 with min_score N (the score is the confidence), no total
        images_with_label(capture, r.label, min_confidence=r.confidence)
        request = capture.last
        base = timed(
            "label X >= N",
            "as search.py sends it",
            r.tier,
            number,
            lambda request=request: es.search(**request),
        )
        answer = timed(
            "label X >= N",
            "rank_feature top 20, min_score N",
            r.tier,
            number,
            lambda label=r.label, floor=r.confidence: top_k(feature(label), min_score=floor - 0.005),
        )
        if number >= warmup:
            agreement.setdefault(("label X >= N", "rank_feature top 20, min_score N"), []).append(
                overlap(answer, base)
            )
            drifts.append(drift(answer, base))
        # like this: the sum of (document confidence x example confidence / 100) over shared labels
        images_like(capture, r.example, exclude_location=r.exclude)
        request = capture.last
        base = timed(
            "like this", "as search.py sends it", r.tier, number, lambda request=request: es.search(**request)
        )
        query = {
            "bool": {
                "should": [feature(name, max(confidence, 0.0) / 100.0) for name, confidence in r.example],
                "minimum_should_match": 1,
                "must_not": [{"term": {"s3_location": r.exclude}}],
            }
        }
        variant = "rank_feature should (boost = example confidence)"
        answer = timed("like this", variant, r.tier, number, lambda query=query: top_k(query))
        if number >= warmup:
            agreement.setdefault(("like this", variant), []).append(overlap(answer, base))
        for variant, sort in TIE_BREAKS.items():
            timed(
                "like this",
                f"rank_feature should, sort {variant}",
                r.tier,
                number,
                lambda query=query, sort=sort: top_k(query, sort=sort, track_scores=True),
            )
    rows = [("question · variant", "  p50 ms   p95 ms  p95 freq  p95 rare  same answer")]
    for (question, variant), timing in results.items():
        ms, frequent, rare = timing.ms(), timing.ms("frequent"), timing.ms("rare")
        same = agreement.get((question, variant))
        rows.append(
            (
                f"{question} · {variant}",
                f"{statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f} "
                + (
                    f"{percentile(frequent, 0.95):9.1f} {percentile(rare, 0.95):9.1f}"
                    if question.startswith("label")
                    else " " * 19
                )
                + (f"  {statistics.mean(same) * 100:5.1f} %" if same else ""),
            )
        )
    print(table(rows))
    print(
        "  same answer: label X, share of rounds with the same total; label X >= N and like this, mean "
        "share of today's top 20 that the proposal returns too (near-ties at the 20th place can swap)"
    )
    finite = [value for value in drifts if value != float("inf")]
    print(
        f"  label questions: the i-th confidence of the proposal's top 20 differs from today's by at most "
        f"{max(finite, default=0.0):.4f} (median round {statistics.median(finite) if finite else 0.0:.4f}); "
        f"{len(drifts) - len(finite)} of {len(drifts)} rounds returned a different number of hits"
    )


def rest_newest_timestamp(es: Any) -> datetime:
    """The newest image's ``timestamp`` (the "last day" of the top-labels filters)."""
    answer = es.search(
        index=INDEX_ALIAS_FOR_PROPOSALS, size=0, aggs={"newest": {"max": {"field": "timestamp"}}}
    )
    return datetime.fromtimestamp(answer["aggregations"]["newest"]["value"] / 1000, tz=UTC)


def compare_shapes(es: Any, planned: list[Round], warmup: int) -> None:
    """Replay the label questions' captured request with each variant, same rounds."""
    from imagelabels.engine.opensearch import split_body
    from imagelabels.search.queries import images_with_label

    capture = Capture(es, keep=True)
    requests: list[tuple[str, str, dict[str, Any]]] = []
    for r in planned:
        images_with_label(capture, r.label)
        requests.append(("label X", r.tier, capture.last))
        images_with_label(capture, r.label, min_confidence=r.confidence)
        requests.append(("label X >= N", r.tier, capture.last))
    variants = shape_variants()
    timings: dict[tuple[str, str], Timings] = {
        (q, v): Timings() for q in ("label X", "label X >= N") for v in variants
    }
    totals: dict[tuple[str, str], list[int]] = {key: [] for key in timings}
    for number, (name, tier, request) in enumerate(requests):
        for variant, change in variants.items():
            body = change(copy.deepcopy(request))
            started = time.perf_counter()
            answer = es.search(**body)
            seconds = time.perf_counter() - started
            if number >= 2 * warmup:
                timings[(name, variant)].seconds.append(seconds)
                timings[(name, variant)].tiers.append(tier)
                timings[(name, variant)].took.append(float(answer.get("took", float("nan"))))
                total = answer["hits"]["total"]
                totals[(name, variant)].append(int(total["value"]) if isinstance(total, dict) else int(total))
    rows = [
        (
            "question · request shape",
            "  p50 ms   p95 ms  p50 freq  p95 freq  p50 rare  p95 rare  took p50  took p95",
        )
    ]
    for (name, variant), timing in timings.items():
        ms, frequent, rare = timing.ms(), timing.ms("frequent"), timing.ms("rare")
        rows.append(
            (
                f"{name} · {variant}",
                f"{statistics.median(ms):8.1f} {percentile(ms, 0.95):8.1f} "
                f"{statistics.median(frequent):9.1f} {percentile(frequent, 0.95):9.1f} "
                f"{statistics.median(rare):9.1f} {percentile(rare, 0.95):9.1f} "
                f"{statistics.median(timing.took):9.1f} {percentile(timing.took, 0.95):9.1f}",
            )
        )
    print(table(rows))
    # one profiled request per tier: where the time goes inside the shard
    for tier in ("frequent", "rare"):
        name, _, request = next(item for item in requests if item[1] == tier)
        for variant in ("as search.py sends it", "track_total_hits: 1000, no inner_hits"):
            args = split_body("search", variants[variant](copy.deepcopy(request)))
            args["body"]["profile"] = True  # not a keyword of the engine layer: the raw client
            started = time.perf_counter()
            answer = es.client.search(**args)
            wall = (time.perf_counter() - started) * 1000
            # OpenSearch 2.19 profiles the query phase only (no fetch section): the rest of
            # ``took`` is the fetch phase (``_source`` filtering, ``inner_hits``) and coordination
            search = answer["profile"]["shards"][0]["searches"][0]
            query_ns = sum(q["time_in_nanos"] for q in search["query"])
            collector_ns = sum(c["time_in_nanos"] for c in search["collector"])
            rewrite_ns = search.get("rewrite_time", 0)
            # collector time includes the scoring it triggers: the two overlap
            rest_ms = answer["took"] - (max(query_ns, collector_ns) + rewrite_ns) / 1e6
            print(
                f"  profile · {tier} · {name} · {variant}: took {answer['took']} ms (wall {wall:.1f}), "
                f"query {query_ns / 1e6:.1f} ms ({search['query'][0]['type']}), collectors "
                f"{collector_ns / 1e6:.1f} ms (overlapping), rewrite {rewrite_ns / 1e6:.1f} ms, the rest (fetch: "
                f"source, inner hits) ~{rest_ms:.1f} ms; total hits {answer['hits']['total']}"
            )


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="cumulative sizes")
    parser.add_argument("--queries", type=int, default=200, help="timed calls per question (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted rounds first (default 20)")
    parser.add_argument("--chunk", type=int, default=500, help="bulk_write chunk size (default 500)")
    parser.add_argument("--heap", default="3g", help="OpenSearch -Xms/-Xmx (default 3g)")
    parser.add_argument("--vocabulary", type=int, default=3000, help="label names (default 3,000)")
    parser.add_argument("--refresh-off", action="store_true", help="refresh_interval -1 while loading")
    parser.add_argument("--no-merge", action="store_true", help="skip the force-merge (and heap/disk)")
    parser.add_argument("--shapes", action="store_true", help="time variants of the label query shape")
    parser.add_argument(
        "--proposals", action="store_true", help="time the proposed changes to the query shapes"
    )
    parser.add_argument(
        "--rank-features", action="store_true", help="time the proposed rank_features field (side index)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the five questions' rounds")
    parser.add_argument("--side-by-side", action="store_true", help="noida-db too, same questions")
    parser.add_argument(
        "--noida-queries", type=int, default=30, help="timed calls per question on noida-db (default 30)"
    )
    parser.add_argument("--quiet-below", type=float, default=0.0, help="wait for this 1-min load first")
    parser.add_argument(
        "--quiet-max", type=float, default=2400.0, help="longest first wait, s (default 2400)"
    )
    parser.add_argument("--settle-max", type=float, default=300.0, help="longest later wait, s (default 300)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="keep the node's data here (reused by a later run: e.g. query shapes on the loaded 1M); "
        "default: a fresh folder, deleted at the end",
    )
    args = parser.parse_args()

    from imagelabels.devstack import opensearch_node
    from imagelabels.documents import INDEX_ALIAS, versioned_index_name
    from imagelabels.engine import from_url
    from imagelabels.engine.indexing import ensure_indices

    waits = 0

    def settle() -> None:
        """Wait for a quiet machine: up to --quiet-max the first time, --settle-max after."""
        nonlocal waits
        if args.quiet_below > 0:
            longest = args.quiet_max if waits == 0 else args.settle_max
            print("  " + wait_for_quiet(args.quiet_below, give_up_after=longest), flush=True)
            waits += 1

    if INDEX_ALIAS != INDEX_ALIAS_FOR_PROPOSALS:
        raise SystemExit(f"the alias is {INDEX_ALIAS!r} now: update INDEX_ALIAS_FOR_PROPOSALS")
    corpus = ZipfCorpus(args.vocabulary)
    index = versioned_index_name()
    print(f"OpenSearch at scale · {machine()}")
    print(
        f"start: {load_average()}; {shutil.disk_usage(opensearch_node.REPO_ROOT).free / 2**30:.0f} GiB free"
    )
    sample = corpus.document(0)[1]
    print(
        f"documents: build_document, {len(json.dumps(sample)):,} bytes of JSON (document 0), 5-10 labels "
        f"from {args.vocabulary:,} Zipf names; refresh_interval during loads: "
        f"{'-1 (restored to the default 1s after each load)' if args.refresh_off else 'default (1s)'}\n",
        flush=True,
    )
    summary: list[tuple[str, str]] = []
    with ExitStack() as stack:
        settle()
        with Stopwatch() as starting:
            node = stack.enter_context(opensearch_node.start(heap=args.heap, home=args.home, timeout=300))
        version = rest(node.url, "")["version"]["number"]
        print(
            f"OpenSearch {version} node at {node.url}, pid {node.pid}, heap {args.heap}, started in {starting.seconds:.1f}s"
        )
        es = from_url(node.url, flavor="opensearch", timeout=600)
        ensure_indices(es)
        full_gc(node.pid)
        empty_heap = heap_figures(node.url)
        print(
            f"empty node after a full GC: heap used {mb(empty_heap['heap_used'])}, JVM RSS {process_rss_mb(node.pid):,.0f} MB\n"
        )
        engines: dict[str, Any] = {"opensearch": es}
        if args.side_by_side:
            noida = stack.enter_context(embedded_stack())
            engines = {"noida-db": noida.elasticsearch(), "opensearch": es}
            ensure_indices(engines["noida-db"])
            print(f"noida-db (embedded stack) at {noida.es_url}\n")

        loaded, load_seconds, sent = int(es.count(index=INDEX_ALIAS)["count"]), 0.0, 0
        if loaded:
            print(
                f"{loaded:,} documents already in {args.home} (kept by an earlier --home run): not loaded again\n"
            )
            if args.side_by_side:
                raise SystemExit("--side-by-side needs an empty --home")
        for size in args.sizes:
            print(f"== {size:,} documents ==", flush=True)
            if size < loaded:
                raise SystemExit(f"--sizes must grow and start at or above the {loaded:,} already loaded")
            settle()
            for engine, target in engines.items() if size > loaded else ():
                print(f"  load {engine} {loaded:,} -> {size:,}: start {load_average()}", flush=True)
                seconds = load(
                    target, corpus, loaded, size, args.chunk, args.refresh_off and engine == "opensearch"
                )
                count = int(target.count(index=INDEX_ALIAS)["count"])
                rate = (size - loaded) / seconds
                print(
                    f"  load {engine}: {size - loaded:,} documents in {seconds:.1f}s = {rate:,.0f} docs/s; {count:,} searchable; end {load_average()}",
                    flush=True,
                )
                if count != size:
                    raise RuntimeError(f"{engine}: {count} documents, expected {size}")
                if engine == "opensearch":
                    load_seconds += seconds
                    sent += size - loaded
                    summary.append(
                        (
                            f"{size:,} · load {loaded:,}->{size:,}",
                            f"{rate:,.0f} docs/s ({seconds:.0f}s, chunks of {args.chunk})",
                        )
                    )
            if size > loaded and load_seconds:
                summary.append(
                    (
                        f"{size:,} · load total",
                        f"{sent / load_seconds:,.0f} docs/s: {sent:,} documents in {load_seconds:.0f}s of loading",
                    )
                )
            loaded = size

            if not args.no_merge:
                print(f"  force-merge to 1 segment: start {load_average()}", flush=True)
                with Stopwatch() as merging:
                    rest(node.url, f"{index}/_forcemerge?max_num_segments=1", method="POST")
                    es.indices.refresh(index=INDEX_ALIAS)
                print(f"  force-merge: {merging.seconds:.1f}s; end {load_average()}", flush=True)
                time.sleep(11)  # store stats are cached for 10 s
                gc = full_gc(node.pid)
                heap, disk = heap_figures(node.url), disk_figures(node.url, index, node.home / "data")
                rss = process_rss_mb(node.pid)
                per_heap = (heap["heap_used"] - empty_heap["heap_used"]) / size
                print(
                    "\n"
                    + table(
                        [
                            (
                                "heap used" + (" (after jcmd GC.run)" if gc else " (no GC forced)"),
                                f"{mb(heap['heap_used'])} of {mb(heap['heap_max'])}; old gen {mb(heap['old_used'])}; empty node {mb(empty_heap['heap_used'])}",
                            ),
                            (
                                "heap per document",
                                f"{per_heap:,.1f} bytes over the empty node ({heap['heap_used'] / size:,.1f} bytes total / documents)",
                            ),
                            (
                                "segments (node)",
                                f"{heap['segments']} segments, segments memory {heap['segments_memory']:,} bytes ({heap['segments_memory'] / size:.2f} per document)",
                            ),
                            (
                                "fielddata / query cache / request cache",
                                f"{heap['fielddata']:,} / {heap['query_cache']:,} / {heap['request_cache']:,} bytes",
                            ),
                            (
                                "store (_stats primaries)",
                                f"{mb(disk['store'])} = {disk['store'] / size:,.0f} bytes per document ({disk['lucene_docs']:,} Lucene docs: {disk['lucene_docs'] / size:.2f} per image)",
                            ),
                            (
                                "store (_cat/indices)",
                                f"{mb(disk['cat_store'])}, docs.count {disk['cat_docs']:,}, {disk['segments']} segment(s)",
                            ),
                            (
                                "node data folder (du)",
                                f"{mb(disk['data_dir'])} = {disk['data_dir'] / size:,.0f} bytes per document",
                            ),
                            ("JVM resident set", f"{rss:,.0f} MB"),
                        ]
                    ),
                    flush=True,
                )
                summary.append((f"{size:,} · force-merge", f"{merging.seconds:.0f}s"))
                summary.append(
                    (
                        f"{size:,} · heap",
                        f"{mb(heap['heap_used'])} after GC ({per_heap:,.0f} B/doc over empty {mb(empty_heap['heap_used'])}); segments memory {heap['segments_memory'] / size:.2f} B/doc",
                    )
                )
                summary.append(
                    (f"{size:,} · disk", f"{mb(disk['store'])} = {disk['store'] / size:,.0f} B/doc")
                )

            planned = plan_rounds(corpus, size, args.warmup + args.queries, args.seed + size)
            if args.no_latency:
                print("  latency: skipped (--no-latency)\n", flush=True)
            else:
                es.indices.put_settings(
                    index=INDEX_ALIAS, settings={"index": {"requests.cache.enable": False}}
                )
                settle()
                print(
                    f"\n  latency: {args.queries} timed rounds after {args.warmup} warm-up; start {load_average()}",
                    flush=True,
                )
                # noida-db: 2 warm-up rounds, then --noida-queries timed ones
                windows = {"noida-db": range(max(0, args.warmup - 2), args.warmup + args.noida_queries)}
                timings = ask_rounds(engines, planned, args.warmup, f"{size:,}", windows)
                print(f"  latency: end {load_average()}", flush=True)
                es.indices.put_settings(
                    index=INDEX_ALIAS, settings={"index": {"requests.cache.enable": None}}
                )
                from imagelabels.search.queries import top_labels

                cached = []
                for number in range(args.warmup + args.queries):
                    started = time.perf_counter()
                    top_labels(es, size=10)
                    if number >= args.warmup:
                        cached.append((time.perf_counter() - started) * 1000)
                print(
                    f"\n{size:,} documents · client-side ms, after {args.warmup} warm-up rounds"
                    + (
                        f" (noida-db: 2 warm-up rounds, then the first {args.noida_queries} only)"
                        if args.side_by_side
                        else ""
                    )
                )
                print(latency_table(timings, goals=size >= 1_000_000))
                print(
                    f"  opensearch · top labels, request cache on (as deployed, no refresh in between): p50 {statistics.median(cached):.1f} ms, p95 {percentile(cached, 0.95):.1f} ms\n",
                    flush=True,
                )
                for (engine, name), timing in timings.items():
                    ms = timing.ms()
                    summary.append(
                        (
                            f"{size:,} · {engine} · {name}",
                            f"p50 {statistics.median(ms):.1f} ms, p95 {percentile(ms, 0.95):.1f} ms",
                        )
                    )
                summary.append(
                    (
                        f"{size:,} · opensearch · top labels (request cache on)",
                        f"p50 {statistics.median(cached):.1f} ms, p95 {percentile(cached, 0.95):.1f} ms",
                    )
                )

            if args.shapes:
                print(
                    f"  query shapes of the label questions at {size:,}: start {load_average()}", flush=True
                )
                compare_shapes(es, planned, args.warmup)
                print(f"  query shapes: end {load_average()}\n", flush=True)
            if args.rank_features:
                print(f"  proposed field (rank_features) at {size:,}: start {load_average()}", flush=True)
                build_rank_features(node.url, index)
                compare_rank_features(es, node.url, planned, args.warmup)
                print(f"  proposed field: end {load_average()}\n", flush=True)
            if args.proposals:
                print(f"  proposed query changes at {size:,}: start {load_average()}", flush=True)
                compare_proposals(es, planned, args.warmup)
                print(f"  proposed query changes: end {load_average()}\n", flush=True)
    if summary:
        print("summary")
        print(table(summary))
    print(f"end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
