"""Re-label backfills: find documents labeled with other settings than today's, label them again
and update them in place.

A document records what produced its labels: ``labeler``, ``LabelModelVersion``,
``labeling.min_confidence``/``labeling.max_labels`` and ``features``. The *target* is what a run
would write now (the run's Params, else the deployment's defaults, and the labeler's current
model version); a document is **stale** when any of those differ. Features are compared as a
set: a document with fewer features than asked for is stale (a user adding ``text`` expects the
text), and so is one with more (the run's ``features`` Param says what documents should hold).
Settings documents do not store (moderation/text thresholds, label filters, image properties)
cannot be compared and never make a document stale.

**Which model version is current.** The local labeler knows its own (a digest of the shipped
model and taxonomy, :mod:`imagelabels.labelers.local_models`). Rekognition reports
``LabelModelVersion`` only in its answers, and asking would be a paid call; the current version is
therefore the newest one already in the index (hourly runs keep writing documents with whatever
Rekognition answers now), unless the ``label_model_version`` Param names it.

**Flow.** :func:`plan_relabel` counts the bucket/prefix/date scope, streams the stale documents
in key order (``search_after``, never a list in memory) and writes one JSON-lines manifest per
batch; XCom carries only manifest references. :func:`relabel_batch` re-checks that each document
is still stale (a retried batch does not pay twice), HEADs its object (a document whose object
is gone or was overwritten is reported, not re-labeled: its version cannot be labeled again, and
the daily reconciliation removes such documents) and runs the ingestion batch code with
``reprocess``, which overwrites the document under its deterministic id: updated in place, never
duplicated.

**Date range** is on ``timestamp`` (the object's ``LastModified``), not ``ingested_at``: it says
which *images* to re-label ("uploads of March"), it never changes when a document is re-labeled,
whereas ``ingested_at`` moves to the re-label time and would make a range shift under the run.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagelabels.documents import INDEX_ALIAS, document_id
from imagelabels.engine.indexing import ensure_indices, sorted_hits
from imagelabels.errors import LabelingError
from imagelabels.labelers.base import FEATURES, Labeler, LabelingSettings
from imagelabels.pipeline.batch import RunContext, process_batch
from imagelabels.sources.listing import ListedObject, batched
from imagelabels.sources.manifests import Manifest, S3Uri, manifest_prefix
from imagelabels.sources.objects import ObjectChanged, describe_object

log = logging.getLogger(__name__)

PAGE_SIZE = 500
SAMPLE_KEYS = 10  # keys named per outcome in a batch report (the log has them all)
_SOURCE = ["s3key", "object.etag", "object.version_id", "object.size", "object.last_modified", "timestamp"]


@dataclass(frozen=True)
class Target:
    """What a document labeled now would record; anything else is stale.

    :param model_version: ``None`` when unknown (no Rekognition document yet and no Param): the
        model version is then not compared.
    """

    labeler: str
    model_version: str | None
    min_confidence: float
    max_labels: int | None
    features: tuple[str, ...]

    @classmethod
    def of(cls, labeler: str, settings: LabelingSettings, model_version: str | None) -> Target:
        return cls(labeler, model_version, settings.min_confidence, settings.max_labels, settings.features)

    def as_xcom(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler,
            "model_version": self.model_version,
            "min_confidence": self.min_confidence,
            "max_labels": self.max_labels,
            "features": list(self.features),
        }

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Target:
        max_labels = data.get("max_labels")
        return cls(
            labeler=str(data["labeler"]),
            model_version=data.get("model_version"),
            min_confidence=float(data["min_confidence"]),
            max_labels=None if max_labels is None else int(max_labels),
            features=tuple(data["features"]),
        )


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    """Order "2.0" < "3.0" < "10.0" numerically; anything else falls back to the text."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version))
    return numbers, version


def newest_model_version(es: Any, labeler: str, index: str = INDEX_ALIAS) -> str | None:
    """The newest ``LabelModelVersion`` in the index for ``labeler`` (``None``: no document yet)."""
    response = es.search(
        index=index,
        size=0,
        query={"term": {"labeler": labeler}},
        aggs={"versions": {"terms": {"field": "LabelModelVersion", "size": 100}}},
    )
    versions = [
        str(b["key"]) for b in response.get("aggregations", {}).get("versions", {}).get("buckets", [])
    ]
    return max(versions, key=_version_key) if versions else None


def current_model_version(es: Any, labeler: str, override: str = "") -> str | None:
    """The model version a document labeled now would get (see the module docstring)."""
    if override.strip():
        return override.strip()
    if labeler == "local":
        from imagelabels.labelers.local import label_model_version

        return label_model_version()
    return newest_model_version(es, labeler)


def parse_bound(value: str | None, name: str = "since/until") -> datetime | None:
    """An ISO date or date-time Param (empty: unbounded); naive values are UTC.

    :raises ValueError: naming the Param, for anything else.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not an ISO date or date-time (e.g. 2026-03-01)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def scope_query(bucket: str, prefix: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """Documents of ``s3://bucket/prefix`` whose ``timestamp`` is in ``[since, until)``."""
    filters: list[dict[str, Any]] = [{"prefix": {"s3_location": f"s3://{bucket}/{prefix}"}}]
    if since is not None or until is not None:
        window = {"gte": since.isoformat()} if since is not None else {}
        if until is not None:
            window["lt"] = until.isoformat()
        filters.append({"range": {"timestamp": window}})
    return {"bool": {"filter": filters}}


def current_query(target: Target) -> dict[str, Any]:
    """Documents that already hold what ``target`` would write."""
    filters: list[dict[str, Any]] = [
        {"term": {"labeler": target.labeler}},
        {"term": {"labeling.min_confidence": target.min_confidence}},
        *({"term": {"features": feature}} for feature in target.features),
    ]
    must_not: list[dict[str, Any]] = []
    if target.model_version is not None:
        filters.append({"term": {"LabelModelVersion": target.model_version}})
    if target.max_labels is None:
        must_not.append({"exists": {"field": "labeling.max_labels"}})
    else:
        filters.append({"term": {"labeling.max_labels": target.max_labels}})
    others = [feature for feature in FEATURES if feature not in target.features]
    if others:
        must_not.append({"terms": {"features": others}})
    return {"bool": {"filter": filters, "must_not": must_not}}


def stale_query(scope: dict[str, Any], target: Target) -> dict[str, Any]:
    """Documents in ``scope`` that differ from ``target``."""
    return {"bool": {"filter": [scope], "must_not": [current_query(target)]}}


def count(es: Any, query: dict[str, Any], index: str = INDEX_ALIAS) -> int:
    """Exact number of documents matching ``query``."""
    response = es.search(index=index, query=query, size=0, track_total_hits=True)
    return int(response["hits"]["total"]["value"])


def stale_reasons(es: Any, scope: dict[str, Any], target: Target) -> dict[str, int]:
    """How many stale documents differ in each respect (one document can count several times)."""
    settings_clause: dict[str, Any] = current_query(
        Target(target.labeler, None, target.min_confidence, target.max_labels, target.features)
    )
    differs = {
        "labeler": {"bool": {"must_not": [{"term": {"labeler": target.labeler}}]}},
        "settings": {
            "bool": {"filter": [{"term": {"labeler": target.labeler}}], "must_not": [settings_clause]}
        },
    }
    if target.model_version is not None:
        differs["model_version"] = {
            "bool": {"must_not": [{"term": {"LabelModelVersion": target.model_version}}]}
        }
    return {name: count(es, {"bool": {"filter": [scope, clause]}}) for name, clause in differs.items()}


@dataclass(frozen=True)
class StaleDocument:
    """One document to re-label: its id and the object version it describes."""

    doc_id: str
    key: str
    etag: str
    version_id: str | None
    size: int
    last_modified: datetime

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.doc_id,
                "key": self.key,
                "etag": self.etag,
                "version_id": self.version_id,
                "size": self.size,
                "last_modified": self.last_modified.isoformat(),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> StaleDocument:
        raw = json.loads(line)
        return cls(
            raw["id"],
            raw["key"],
            raw["etag"],
            raw.get("version_id"),
            int(raw["size"]),
            datetime.fromisoformat(raw["last_modified"]),
        )

    @classmethod
    def from_hit(cls, hit: Mapping[str, Any]) -> StaleDocument:
        source = hit.get("_source") or {}
        described = source.get("object") or {}
        modified = str(described.get("last_modified") or source.get("timestamp"))
        return cls(
            doc_id=str(hit["_id"]),
            key=str(source["s3key"]),
            etag=str(described.get("etag") or "").strip('"'),
            version_id=described.get("version_id"),
            size=int(described.get("size") or 0),
            last_modified=datetime.fromisoformat(modified),
        )


def iter_stale(
    es: Any, scope: dict[str, Any], target: Target, page_size: int = PAGE_SIZE
) -> Iterator[StaleDocument]:
    """Stream the stale documents of ``scope`` in key order, one page at a time."""
    hits = sorted_hits(
        es,
        index=INDEX_ALIAS,
        field="s3_location",
        query=stale_query(scope, target),
        source=_SOURCE,
        page_size=page_size,
    )
    for hit in hits:
        yield StaleDocument.from_hit(hit)


def write_relabel_manifests(
    s3_client: Any,
    bucket: str,
    documents: Iterable[StaleDocument],
    *,
    staging_uri: str,
    run: RunContext,
    batch_size: int,
) -> Iterator[Manifest]:
    """One JSON-lines manifest per batch, written while the stale documents stream."""
    folder = manifest_prefix(staging_uri, run.dag_id, run.run_id)
    for number, batch in enumerate(batched(documents, batch_size), start=1):
        key = f"{folder.key}relabel-{number:05d}.jsonl"
        body = "".join(document.as_json() + "\n" for document in batch)
        s3_client.put_object(
            Bucket=folder.bucket, Key=key, Body=body.encode("utf-8"), ContentType="application/x-ndjson"
        )
        yield Manifest(uri=str(S3Uri(folder.bucket, key)), count=len(batch), bucket=bucket)


def read_relabel_manifest(s3_client: Any, uri: str) -> list[StaleDocument]:
    location = S3Uri.parse(uri)
    body = s3_client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    return [StaleDocument.from_json(line) for line in body.decode("utf-8").splitlines() if line.strip()]


@dataclass
class RelabelPlan:
    """The batches of a re-label run and what the planning found."""

    manifests: list[Manifest]
    counts: dict[str, Any]


def plan_relabel(
    *,
    s3_client: Any,
    es: Any,
    bucket: str,
    prefix: str,
    since: datetime | None,
    until: datetime | None,
    target: Target,
    staging_uri: str,
    run: RunContext,
    batch_size: int,
    dry_run: bool = False,
    page_size: int = PAGE_SIZE,
) -> RelabelPlan:
    """Count the scope, find the stale documents and (unless ``dry_run``) write their manifests."""
    if since is not None and until is not None and until <= since:
        raise ValueError(
            f"empty date range: since {since.isoformat()} is not before until {until.isoformat()}"
        )
    ensure_indices(es)
    scope = scope_query(bucket, prefix, since, until)
    in_scope = count(es, scope)
    stale = count(es, stale_query(scope, target))
    counts: dict[str, Any] = {
        "bucket": bucket,
        "prefix": prefix,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "target": target.as_xcom(),
        "dry_run": dry_run,
        "in_scope": in_scope,
        "stale_found": stale,
        "skipped_current": in_scope - stale,
        "stale_by_reason": stale_reasons(es, scope, target) if stale else {},
        "batches": 0,
    }
    manifests: list[Manifest] = []
    if stale and not dry_run:
        manifests = list(
            write_relabel_manifests(
                s3_client,
                bucket,
                iter_stale(es, scope, target, page_size),
                staging_uri=staging_uri,
                run=run,
                batch_size=batch_size,
            )
        )
        counts["batches"] = len(manifests)
        counts["planned"] = sum(m.count for m in manifests)
    log.info("re-label plan for s3://%s/%s: %s", bucket, prefix, counts)
    return RelabelPlan(manifests, counts)


def still_stale(es: Any, doc_ids: list[str], target: Target) -> set[str]:
    """Which of ``doc_ids`` still differ from ``target`` (an earlier try may have done some)."""
    if not doc_ids:
        return set()
    response = es.search(
        index=INDEX_ALIAS,
        query={"bool": {"filter": [{"ids": {"values": doc_ids}}], "must_not": [current_query(target)]}},
        source=False,
        size=len(doc_ids),
    )
    return {hit["_id"] for hit in response["hits"]["hits"]}


@dataclass
class RelabelReport:
    """Counts of one re-label batch (what XCom carries to the report)."""

    planned: int = 0
    already_current: int = 0
    object_gone: int = 0
    object_changed: int = 0
    relabeled: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    index_errors: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, outcome: str, key: str) -> None:
        keys = self.samples.setdefault(outcome, [])
        if len(keys) < SAMPLE_KEYS:
            keys.append(key)

    def as_xcom(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "already_current": self.already_current,
            "object_gone": self.object_gone,
            "object_changed": self.object_changed,
            "relabeled": self.relabeled,
            "failed": dict(self.failed),
            "index_errors": self.index_errors,
            "samples": self.samples,
        }


def _check_object(s3_client: Any, bucket: str, document: StaleDocument) -> str | None:
    """``None`` when the document's object version is still the current object; else why not."""
    listed = ListedObject(document.key, document.size, document.etag, document.last_modified)
    try:
        obj = describe_object(s3_client, bucket, listed)
    except ObjectChanged:
        return "object_changed"
    except LabelingError as error:
        if error.reason == "object_gone":
            return "object_gone"
        return None  # not about this version (permissions, S3 errors): the batch records and retries it
    if document_id(obj.bucket, obj.key, obj.version_id, obj.etag) != document.doc_id:
        return "object_changed"  # same bytes, new version id: a new document, not this one
    return None


def relabel_batch(
    *,
    s3_client: Any,
    es: Any,
    labeler: Labeler,
    manifest: Mapping[str, Any],
    target: Target,
    run: RunContext,
    refresh: bool | str = False,
) -> RelabelReport:
    """Re-label the documents of one manifest in place; raise after writing if a retry is needed."""
    bucket = str(manifest["bucket"])
    documents = read_relabel_manifest(s3_client, str(manifest["uri"]))
    if len(documents) != int(manifest["count"]):
        raise RuntimeError(
            f"manifest {manifest['uri']} holds {len(documents)} documents, expected {manifest['count']}"
        )
    report = RelabelReport(planned=len(documents))
    stale = still_stale(es, [d.doc_id for d in documents], target)
    report.already_current = len(documents) - len(stale)
    to_label: list[ListedObject] = []
    for document in (d for d in documents if d.doc_id in stale):
        problem = _check_object(s3_client, bucket, document)
        if problem is None:
            to_label.append(ListedObject(document.key, document.size, document.etag, document.last_modified))
            continue
        setattr(report, problem, getattr(report, problem) + 1)
        report.note(problem, document.key)
        log.warning(
            "not re-labeled, %s: s3://%s/%s (document %s)", problem, bucket, document.key, document.doc_id
        )
    batch = process_batch(
        s3_client=s3_client,
        es=es,
        labeler=labeler,
        bucket=bucket,
        objects=to_label,
        run=run,
        reprocess=True,
        refresh=refresh,
    )
    report.relabeled = batch.indexed
    report.object_changed += batch.superseded
    report.failed = batch.failed
    report.index_errors = len(batch.index_errors)
    log.info("re-label batch %s: %s", manifest["uri"], report.as_xcom())
    batch.raise_if_incomplete()
    return report


def report_totals(plan_counts: Mapping[str, Any], reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's counts: what planning found plus what the batches did."""
    totals: dict[str, Any] = dict(plan_counts)
    failed: Counter[str] = Counter()
    for name in ("relabeled", "already_current", "object_gone", "object_changed", "index_errors"):
        totals[name] = 0
    samples: dict[str, list[str]] = {}
    for report in reports:
        for name in ("relabeled", "already_current", "object_gone", "object_changed", "index_errors"):
            totals[name] += int(report.get(name, 0))
        failed.update(report.get("failed", {}))
        for outcome, keys in (report.get("samples") or {}).items():
            samples.setdefault(outcome, []).extend(keys[: SAMPLE_KEYS - len(samples.get(outcome, []))])
    totals["failed"] = dict(failed)
    totals["failed_total"] = sum(failed.values())
    totals["samples"] = samples
    return totals
