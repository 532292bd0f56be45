"""The one document schema and index definition of the project.

Every image is one Elasticsearch document. Field names keep the shape the two seed designs used,
so their queries run on our index unchanged:

* first seed (blog post): ``title``, ``s3_location``;
* second seed (Lambda): ``Labels`` (nested, Rekognition's own shape), ``s3bucket``, ``s3key``,
  ``timestamp``, ``imported-by``.

Ours on top: ``label_names`` (flat keywords, because Kibana cannot aggregate nested fields),
``object`` (S3 metadata), ``labeler``/``LabelModelVersion``/``labeling`` (what produced the labels
and with which settings, so a later re-label can find stale documents), ``airflow`` (which run
wrote it) and ``ingested_at``.

Documents live in a versioned index (``images-v4``) behind the alias ``images``; the template
matches ``images-v*`` so a copy into ``images-v5`` gets the same mapping and the alias can be
swapped atomically.

One field's mapping depends on the engine: ``visual.vector`` (:func:`vector_mapping`) is a
``dense_vector`` on Elasticsearch, a k-NN ``knn_vector`` on OpenSearch with the k-NN plugin, and
kept in ``_source`` only elsewhere (:attr:`imagelabels.engine.SearchEngine.vector_kind`).

Why this module is long: the mapping, the index template and the document builder are one
schema; splitting them would let a field be added to one without the others.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagelabels.fingerprints import VECTOR_DIMS
from imagelabels.settings import DEFAULT_INDEX_SHARDS

INDEX_ALIAS = "images"
# v2: Labels is nested with include_in_root, so the second seed's plain `match` on Labels.Name
# (not nested) finds images on a real engine too, as it did in the seed's own index.
# v3: label_confidence (rank_features): label questions answered without a nested join.
# v4: visual.vector, indexed for vector search where the engine has it (index.knn is a setting
# OpenSearch only takes when an index is created, hence a new index rather than a new field).
INDEX_VERSION = 4
INDEX_TEMPLATE_NAME = "imagelabels-images"
LABEL_FEATURES = "label_confidence"
# rank_features keeps 9 significant bits of a value: stored as exp(k x confidence), the query's
# log function gives the confidence back with an absolute error under 0.005 (stored as is, the
# top 20 of a frequent label would all tie at 99.75)
FEATURE_EXPONENT = 0.8
FAILURES_INDEX = "images-failures"


def versioned_index_name(version: int = INDEX_VERSION) -> str:
    """Name of the concrete index behind the alias (``images-v1``)."""
    return f"{INDEX_ALIAS}-v{version}"


_KEYWORD: dict[str, Any] = {"type": "keyword"}
_TEXT_WITH_KEYWORD: dict[str, Any] = {
    "type": "text",
    "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
}
_NAMED: dict[str, Any] = {"properties": {"Name": _KEYWORD}}
_BOUNDING_BOX: dict[str, Any] = {
    "properties": {name: {"type": "float"} for name in ("Width", "Height", "Left", "Top")}
}
_POINT: dict[str, Any] = {"properties": {"X": {"type": "float"}, "Y": {"type": "float"}}}
# visual.vector on an engine without vector search: kept in _source, costs no index
_VECTOR_STORED: dict[str, Any] = {"type": "byte", "index": False, "doc_values": False}

IMAGE_MAPPINGS: dict[str, Any] = {
    # strict: a typo in build_document fails loudly instead of creating a stray field.
    "dynamic": "strict",
    "properties": {
        "title": _TEXT_WITH_KEYWORD,
        "s3_location": _KEYWORD,
        "s3bucket": _KEYWORD,
        "s3key": _TEXT_WITH_KEYWORD,
        # every folder the key is in ("a/", "a/b/"): per-prefix breakdowns with a plain terms
        # aggregation (no scripts, which noida-db lacks).
        "prefixes": _KEYWORD,
        "timestamp": {"type": "date"},
        "imported-by": _KEYWORD,
        "Labels": {
            "type": "nested",
            # also indexed as plain root fields: nested queries keep per-label pairing
            # (Pizza >= 90 on the same label), plain ones (seed 2, dashboards) still match
            "include_in_root": True,
            "properties": {
                # text so `match`/`fuzzy` behave as in the seed; .keyword for exact terms.
                "Name": _TEXT_WITH_KEYWORD,
                "Confidence": {"type": "float"},
                "Parents": _NAMED,
                "Aliases": _NAMED,
                "Categories": _NAMED,
                "Instances": {
                    "properties": {
                        "BoundingBox": _BOUNDING_BOX,
                        "Confidence": {"type": "float"},
                    }
                },
            },
        },
        "label_names": _KEYWORD,
        "label_categories": _KEYWORD,
        # one rank feature per label (label_key(Name) -> confidence_feature(Confidence)): top-k
        # by a label's confidence with block-max WAND instead of scoring every nested label
        # (benchmarks/RESULTS.md, "OpenSearch 2.19": p95 83 -> 18 ms at 1M images)
        LABEL_FEATURES: {"type": "rank_features"},
        # DetectModerationLabels, in Rekognition's shape, plus flat fields for filters/Kibana.
        "ModerationLabels": {
            "type": "nested",
            "properties": {
                "Name": _TEXT_WITH_KEYWORD,
                "Confidence": {"type": "float"},
                "ParentName": _KEYWORD,
                "TaxonomyLevel": {"type": "integer"},
            },
        },
        "ModerationModelVersion": _KEYWORD,
        "moderation_names": _KEYWORD,
        "moderated": {"type": "boolean"},
        # DetectText: LINE detections (boxes for the UI) and their text, searchable.
        "TextDetections": {
            "properties": {
                "DetectedText": {"type": "text"},
                "Type": _KEYWORD,
                "Id": {"type": "integer"},
                "Confidence": {"type": "float"},
                "Geometry": {"properties": {"BoundingBox": _BOUNDING_BOX, "Polygon": _POINT}},
            }
        },
        "text": {"type": "text"},
        # DetectFaces (DEFAULT attributes): where the faces are, not who they are.
        "FaceDetails": {
            "properties": {
                "BoundingBox": _BOUNDING_BOX,
                "Confidence": {"type": "float"},
                "Landmarks": {
                    "properties": {"Type": _KEYWORD, "X": {"type": "float"}, "Y": {"type": "float"}}
                },
                "Pose": {"properties": {k: {"type": "float"} for k in ("Roll", "Yaw", "Pitch")}},
                "Quality": {"properties": {k: {"type": "float"} for k in ("Brightness", "Sharpness")}},
            }
        },
        "face_count": {"type": "integer"},
        # DetectLabels IMAGE_PROPERTIES, when asked for.
        "image_properties": {
            "properties": {
                "quality": {
                    "properties": {k: {"type": "float"} for k in ("brightness", "sharpness", "contrast")}
                },
                "dominant_colors": {
                    "properties": {
                        "simplified_color": _KEYWORD,
                        "hex_code": _KEYWORD,
                        "pixel_percent": {"type": "float"},
                    }
                },
            }
        },
        "features": _KEYWORD,
        "labeler": _KEYWORD,
        "LabelModelVersion": _KEYWORD,
        "labeling": {
            "properties": {
                "min_confidence": {"type": "float"},
                "max_labels": {"type": "integer"},
            }
        },
        "preflight": {"properties": {"source_format": _KEYWORD, "transformations": _KEYWORD}},
        "object": {
            "properties": {
                "size": {"type": "long"},
                "content_type": _KEYWORD,
                "etag": _KEYWORD,
                "version_id": _KEYWORD,
                "last_modified": {"type": "date"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
            }
        },
        "airflow": {"properties": {"dag_id": _KEYWORD, "run_id": _KEYWORD}},
        "ingested_at": {"type": "date"},
        # visual fingerprints (imagelabels.fingerprints): pHash (and its mirror's) as hex, LSH bands
        # for engine-independent candidate lookup, the int8 embedding (stored, never indexed) and
        # the near-duplicate flag set at index time
        "visual": {
            "properties": {
                "phash": _KEYWORD,
                "phash_mirror": _KEYWORD,
                "bands": _KEYWORD,
                "embedding": {"type": "binary"},
                "vector": _VECTOR_STORED,  # vector_mapping(): indexed where the engine can
                "near_duplicate_of": _KEYWORD,
            }
        },
    },
}


def vector_mapping(kind: str | None) -> dict[str, Any]:
    """The mapping of ``visual.vector`` (:func:`imagelabels.fingerprints.search_vector`: 128
    int8 values) for an engine whose :attr:`~imagelabels.engine.SearchEngine.vector_kind` is ``kind``.

    Both indexed kinds are HNSW graphs over byte vectors compared by cosine; OpenSearch's is the
    k-NN plugin's Lucene engine (pure Java, so no native library has to match the server's), which
    also filters during the graph search rather than after it.
    """
    if kind == "dense_vector":
        return {
            "type": "dense_vector",
            "dims": VECTOR_DIMS,
            "element_type": "byte",
            "index": True,
            "similarity": "cosine",
        }
    if kind == "knn_vector":
        return {
            "type": "knn_vector",
            "dimension": VECTOR_DIMS,
            "data_type": "byte",
            "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"},
        }
    if kind is None:
        return _VECTOR_STORED
    raise ValueError(f"unknown vector kind {kind!r} (dense_vector, knn_vector or None)")


def _with_vector(vector: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`IMAGE_MAPPINGS` (a copy) with ``visual.vector`` mapped as ``vector``, or without it."""
    properties = dict(IMAGE_MAPPINGS["properties"])
    visual = {name: value for name, value in properties["visual"]["properties"].items() if name != "vector"}
    properties["visual"] = {"properties": visual if vector is None else {**visual, "vector": vector}}
    return {**IMAGE_MAPPINGS, "properties": properties}


def image_mappings(vectors: str | None = None) -> dict[str, Any]:
    """:data:`IMAGE_MAPPINGS` with ``visual.vector`` mapped for an engine of vector kind ``vectors``."""
    return _with_vector(vector_mapping(vectors))


def upgrade_mappings(existing: Mapping[str, Any]) -> dict[str, Any]:
    """What to put on an index mapped as ``existing`` so it has this version's fields: all of
    :data:`IMAGE_MAPPINGS`, but ``visual.vector`` only where the index has none yet (then stored
    only: a field cannot become a vector index in place) -- never a change of its kind."""
    visual = existing.get("properties", {}).get("visual", {}).get("properties", {})
    return _with_vector(None if "vector" in visual else vector_mapping(None))


def index_template(shards: int = DEFAULT_INDEX_SHARDS, vectors: str | None = None) -> dict[str, Any]:
    """The ``images-v*`` index template with ``shards`` primary shards (the deployment's
    :func:`imagelabels.settings.index_shards` when :func:`imagelabels.engine.indexing.ensure_indices` puts it)
    and ``visual.vector`` mapped for an engine of vector kind ``vectors``."""
    # one replica as soon as a second node exists (a node lost loses no document), none on a
    # single node (which would stay yellow forever); Serverless manages both itself
    settings: dict[str, Any] = {"number_of_shards": shards, "auto_expand_replicas": "0-1"}
    if vectors == "knn_vector":
        settings["index.knn"] = True  # OpenSearch builds k-NN graphs only in indices created so
    return {
        "index_patterns": [f"{INDEX_ALIAS}-v*"],
        "priority": 100,
        "template": {"settings": settings, "mappings": image_mappings(vectors)},
        "_meta": {"description": "Image labels indexed by the imagelabels Airflow DAGs"},
    }


FAILURE_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "s3bucket": _KEYWORD,
        "s3key": _KEYWORD,
        "stage": _KEYWORD,
        "reason": _KEYWORD,
        "message": {"type": "text"},
        "retryable": {"type": "boolean"},
        "attempts": {"type": "integer"},
        "airflow": {"properties": {"dag_id": _KEYWORD, "run_id": _KEYWORD}},
        "failed_at": {"type": "date"},
    },
}


@dataclass(frozen=True)
class ObjectInfo:
    """What we know about one S3 object version, gathered before labeling.

    ``width``/``height`` are ``None`` when the header could not be read (they are nice to have,
    never a reason to reject an image).
    """

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    title: str | None = None


@dataclass(frozen=True)
class LabelResult:
    """One normalized, Rekognition-shaped answer from any labeler.

    Each list holds items in the shape of the matching Rekognition response:
    ``labels`` = ``DetectLabels.Labels``, ``moderation_labels`` =
    ``DetectModerationLabels.ModerationLabels`` (``Name``, ``Confidence``, ``ParentName``,
    ``TaxonomyLevel``), ``text_detections`` = ``DetectText.TextDetections`` and ``face_details``
    = ``DetectFaces.FaceDetails``. ``features`` names what was asked for (``labels``,
    ``moderation``, ``text``, ``faces``), so an empty list means "nothing found", not "not run".
    """

    labels: list[dict[str, Any]]
    labeler: str
    label_model_version: str
    min_confidence: float
    max_labels: int | None
    features: tuple[str, ...] = ("labels",)
    moderation_labels: list[dict[str, Any]] = field(default_factory=list)
    moderation_model_version: str | None = None
    text_detections: list[dict[str, Any]] = field(default_factory=list)
    face_details: list[dict[str, Any]] = field(default_factory=list)
    image_properties: dict[str, Any] | None = None
    # visual fingerprints (imagelabels.fingerprints): the pooled features of the labeling pass,
    # centred, L2-normalised, int8, base64 (local labeler only)
    embedding: str | None = None


def document_id(bucket: str, key: str, version_id: str | None, etag: str) -> str:
    """Deterministic ``_id``: the same object version always maps to the same document.

    The version id identifies the bytes on a versioned bucket; on an unversioned bucket (version
    id absent or ``"null"``) the ETag does. A rerun or a backfill therefore overwrites or skips,
    and never duplicates. The id is a hash so any key (unicode, 1,024 bytes) fits ES's 512-byte
    id limit.
    """
    revision = version_id if version_id and version_id != "null" else "etag:" + etag.strip('"')
    material = "\x1f".join((bucket, key, revision))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def failure_id(bucket: str, key: str) -> str:
    """One failure record per key: a later failure updates it, a success deletes it."""
    return hashlib.sha256(f"{bucket}\x1f{key}".encode()).hexdigest()


def _names(items: Sequence[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    return [{"Name": str(item["Name"])} for item in items or () if item.get("Name")]


def normalize_label(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keep exactly the fields our mapping knows, in Rekognition's shape.

    Rekognition adds response fields over time (e.g. ``DominantColors``); the strict mapping
    would reject them, so unknown fields are dropped here rather than failing the document.
    """
    instances = []
    for instance in raw.get("Instances") or ():
        box = instance.get("BoundingBox") or {}
        instances.append(
            {
                "BoundingBox": {k: float(box[k]) for k in ("Width", "Height", "Left", "Top") if k in box},
                "Confidence": float(instance.get("Confidence", 0.0)),
            }
        )
    return {
        "Name": str(raw["Name"]),
        "Confidence": float(raw["Confidence"]),
        "Parents": _names(raw.get("Parents")),
        "Aliases": _names(raw.get("Aliases")),
        "Categories": _names(raw.get("Categories")),
        "Instances": instances,
    }


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _box(raw: Mapping[str, Any] | None) -> dict[str, float]:
    box = raw or {}
    return {k: float(box[k]) for k in ("Width", "Height", "Left", "Top") if k in box}


def normalize_moderation_label(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A ``ModerationLabels`` item in the mapped fields (``ParentName`` is ``""`` at level 1)."""
    label: dict[str, Any] = {
        "Name": str(raw["Name"]),
        "Confidence": float(raw["Confidence"]),
        "ParentName": str(raw.get("ParentName") or ""),
    }
    if raw.get("TaxonomyLevel") is not None:
        label["TaxonomyLevel"] = int(raw["TaxonomyLevel"])
    return label


def normalize_text_detection(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A ``TextDetections`` item: text, type, confidence and where it is."""
    geometry = raw.get("Geometry") or {}
    return {
        "DetectedText": str(raw.get("DetectedText", "")),
        "Type": str(raw.get("Type", "LINE")),
        "Id": int(raw.get("Id", 0)),
        "Confidence": float(raw.get("Confidence", 0.0)),
        "Geometry": {
            "BoundingBox": _box(geometry.get("BoundingBox")),
            "Polygon": [{"X": float(p["X"]), "Y": float(p["Y"])} for p in geometry.get("Polygon") or ()],
        },
    }


def normalize_face(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A ``FaceDetails`` item with the DEFAULT attributes our mapping keeps."""
    face: dict[str, Any] = {
        "BoundingBox": _box(raw.get("BoundingBox")),
        "Confidence": float(raw.get("Confidence", 0.0)),
        "Landmarks": [
            {"Type": str(m["Type"]), "X": float(m["X"]), "Y": float(m["Y"])}
            for m in raw.get("Landmarks") or ()
            if "Type" in m and "X" in m and "Y" in m
        ],
    }
    for group, keys in (("Pose", ("Roll", "Yaw", "Pitch")), ("Quality", ("Brightness", "Sharpness"))):
        values = raw.get(group) or {}
        if values:
            face[group] = {k: float(values[k]) for k in keys if k in values}
    return face


def normalize_image_properties(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``DetectLabels.ImageProperties`` (quality and dominant colours), flattened to our names."""
    if not raw:
        return None
    quality = raw.get("Quality") or {}
    return {
        "quality": {
            k.lower(): float(v) for k, v in quality.items() if k in ("Brightness", "Sharpness", "Contrast")
        },
        "dominant_colors": [
            {
                "simplified_color": str(color.get("SimplifiedColor", "")),
                "hex_code": str(color.get("HexCode", "")),
                "pixel_percent": float(color.get("PixelPercent", 0.0)),
            }
            for color in raw.get("DominantColors") or ()
        ],
    }


def label_key(name: str) -> str:
    """The feature name of a label in ``label_confidence``: case and spacing folded (a search for
    "hot dog" finds "Hot Dog", as the alerts' case-insensitive names do), ``%`` and ``.``
    percent-escaped (engines refuse dots in feature names; escaping ``%`` keeps it one-to-one)."""
    folded = " ".join(name.split()).casefold()
    return folded.replace("%", "%25").replace(".", "%2E")


def confidence_feature(confidence: float) -> float:
    """The stored feature value of a confidence (0-100): ``exp(0.8 x confidence)``, always > 0."""
    return math.exp(FEATURE_EXPONENT * min(max(float(confidence), 0.0), 100.0))


def label_features(labels: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``label_confidence`` of a document: the key of each label, and of each of its ``Aliases``
    (Rekognition's, or the local taxonomy's: "Cell Phone" for Mobile Phone, "kitty" for Cat), ->
    the label's (highest) confidence feature, so a search by an alias finds the image too."""
    features: dict[str, float] = {}
    for label in labels:
        value = confidence_feature(label.get("Confidence", 0.0))
        for name in (label.get("Name", ""), *(alias.get("Name", "") for alias in label.get("Aliases") or [])):
            key = label_key(str(name))
            if key:
                features[key] = max(features.get(key, 0.0), value)
    return features


def with_derived_fields(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (e.g. one copied from an older index version) with the fields this version
    derives from its content: ``label_confidence`` from its ``Labels``, ``visual.vector`` from
    its stored embedding."""
    from imagelabels.fingerprints import expand_embedding, search_vector

    upgraded = {**document, LABEL_FEATURES: label_features(document.get("Labels") or [])}
    visual = document.get("visual")
    if visual and visual.get("embedding") and "vector" not in visual:
        vector = search_vector(expand_embedding(visual["embedding"]))
        if vector:
            upgraded["visual"] = {**visual, "vector": vector}
    return upgraded


def key_prefixes(key: str) -> list[str]:
    """Every folder ``key`` lies in, outermost first: ``a/b/c.jpg`` -> ``["a/", "a/b/"]``."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: depth + 1]) + "/" for depth in range(len(parts))]


def build_document(
    obj: ObjectInfo,
    result: LabelResult,
    *,
    dag_id: str,
    run_id: str,
    ingested_at: datetime,
    source_format: str | None = None,
    transformations: Sequence[str] = (),
    phash: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Build the one document for an object version and everything its labeler found.

    Fields of features that were not run are left out (absent, not empty), so a query for
    "images without moderation hits" does not match images that were never checked.
    ``phash`` (the image's pHash and its mirror's, from preflight) and ``result.embedding`` make
    the ``visual`` object (:func:`imagelabels.fingerprints.visual_fields`).
    """
    labels = [normalize_label(label) for label in result.labels]
    names = [label["Name"] for label in labels]
    names += [parent["Name"] for label in labels for parent in label["Parents"]]
    categories = [category["Name"] for label in labels for category in label["Categories"]]
    document: dict[str, Any] = {
        "title": obj.title or posixpath.basename(obj.key) or obj.key,
        "s3_location": f"s3://{obj.bucket}/{obj.key}",
        "s3bucket": obj.bucket,
        "s3key": obj.key,
        "prefixes": key_prefixes(obj.key),
        "timestamp": obj.last_modified.isoformat(),
        "imported-by": f"imagelabels/airflow:{dag_id}",
        "Labels": labels,
        "label_names": _unique(names),
        "label_categories": _unique(categories),
        LABEL_FEATURES: label_features(labels),
        "labeler": result.labeler,
        "LabelModelVersion": result.label_model_version,
        "labeling": {"min_confidence": result.min_confidence, "max_labels": result.max_labels},
        "object": {
            "size": obj.size,
            "content_type": obj.content_type,
            "etag": obj.etag.strip('"'),
            "version_id": obj.version_id,
            "last_modified": obj.last_modified.isoformat(),
            "width": obj.width,
            "height": obj.height,
        },
        "airflow": {"dag_id": dag_id, "run_id": run_id},
        "ingested_at": ingested_at.isoformat(),
        "features": list(result.features),
        "preflight": {"source_format": source_format, "transformations": list(transformations)},
    }
    if "moderation" in result.features:
        moderation = [normalize_moderation_label(label) for label in result.moderation_labels]
        document["ModerationLabels"] = moderation
        document["ModerationModelVersion"] = result.moderation_model_version
        document["moderation_names"] = _unique([label["Name"] for label in moderation])
        document["moderated"] = bool(moderation)
    if "text" in result.features:
        lines = [
            normalize_text_detection(t) for t in result.text_detections if t.get("Type", "LINE") == "LINE"
        ]
        document["TextDetections"] = lines
        document["text"] = "\n".join(line["DetectedText"] for line in lines)
    if "faces" in result.features:
        document["FaceDetails"] = [normalize_face(face) for face in result.face_details]
        document["face_count"] = len(result.face_details)
    properties = normalize_image_properties(result.image_properties)
    if properties is not None:
        document["image_properties"] = properties
    from imagelabels.fingerprints import visual_fields

    hashes = phash or (None, None)
    visual = visual_fields(hashes[0], hashes[1], result.embedding)
    if visual is not None:
        document["visual"] = visual
    return document
