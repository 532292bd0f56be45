from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from imagelabels.documents import (
    IMAGE_MAPPINGS,
    LabelResult,
    ObjectInfo,
    build_document,
    document_id,
    failure_id,
    key_prefixes,
    normalize_label,
    versioned_index_name,
)

MODIFIED = datetime(2026, 11, 22, 10, 15, 7, tzinfo=UTC)
INGESTED = datetime(2026, 11, 22, 11, 0, 3, tzinfo=UTC)

# Rekognition's own answer for one label, including a field our mapping does not know.
REKOGNITION_LABEL = {
    "Name": "Mobile Phone",
    "Confidence": 99.9364013671875,
    "Parents": [{"Name": "Phone"}],
    "Aliases": [{"Name": "Cell Phone"}],
    "Categories": [{"Name": "Technology and Computing"}],
    "Instances": [
        {
            "BoundingBox": {"Width": 0.25, "Height": 0.5, "Left": 0.1, "Top": 0.2},
            "Confidence": 99.5,
            "DominantColors": [{"Red": 1}],
        }
    ],
}


def test_document_id_is_deterministic_and_depends_on_the_version() -> None:
    a = document_id("bucket", "k.jpg", None, '"abc"')
    assert a == document_id("bucket", "k.jpg", None, "abc")  # quotes around ETags do not matter
    assert a == document_id("bucket", "k.jpg", "null", "abc")  # unversioned buckets say "null"
    assert a != document_id("bucket", "k.jpg", None, "abd")  # new bytes, new document
    assert a != document_id("other", "k.jpg", None, "abc")
    assert a != document_id("bucket", "k.jpeg", None, "abc")
    versioned = document_id("bucket", "k.jpg", "v1", "abc")
    assert versioned != a
    assert versioned == document_id("bucket", "k.jpg", "v1", "zzz")  # the version id wins
    assert len(a) == 64


def test_document_id_has_no_separator_ambiguity() -> None:
    assert document_id("a", "b/c", None, "e") != document_id("a/b", "c", None, "e")


def test_failure_id_is_per_key() -> None:
    assert failure_id("b", "k") == failure_id("b", "k")
    assert failure_id("b", "k") != failure_id("b", "k2")


def test_normalize_label_keeps_only_mapped_fields() -> None:
    assert normalize_label(REKOGNITION_LABEL) == {
        "Name": "Mobile Phone",
        "Confidence": 99.9364013671875,
        "Parents": [{"Name": "Phone"}],
        "Aliases": [{"Name": "Cell Phone"}],
        "Categories": [{"Name": "Technology and Computing"}],
        "Instances": [
            {"BoundingBox": {"Width": 0.25, "Height": 0.5, "Left": 0.1, "Top": 0.2}, "Confidence": 99.5}
        ],
    }


def test_normalize_label_fills_missing_lists() -> None:
    assert normalize_label({"Name": "Cat", "Confidence": 91}) == {
        "Name": "Cat",
        "Confidence": 91.0,
        "Parents": [],
        "Aliases": [],
        "Categories": [],
        "Instances": [],
    }


def test_build_document_is_the_full_schema() -> None:
    obj = ObjectInfo(
        bucket="photos",
        key="uploads/2026-11-22/cat.png",
        size=1234,
        etag='"e1"',
        last_modified=MODIFIED,
        version_id="v7",
        content_type="image/png",
        width=451,
        height=300,
    )
    result = LabelResult(
        labels=[REKOGNITION_LABEL, {"Name": "Phone", "Confidence": 99.9, "Parents": []}],
        labeler="rekognition",
        label_model_version="3.0",
        min_confidence=70.0,
        max_labels=50,
    )
    doc = build_document(
        obj, result, dag_id="image_ingest_s3_hourly", run_id="scheduled__x", ingested_at=INGESTED
    )
    assert doc == {
        "title": "cat.png",
        "s3_location": "s3://photos/uploads/2026-11-22/cat.png",
        "s3bucket": "photos",
        "s3key": "uploads/2026-11-22/cat.png",
        "prefixes": ["uploads/", "uploads/2026-11-22/"],
        "timestamp": "2026-11-22T10:15:07+00:00",
        "imported-by": "imagelabels/airflow:image_ingest_s3_hourly",
        "Labels": [
            normalize_label(REKOGNITION_LABEL),
            normalize_label({"Name": "Phone", "Confidence": 99.9}),
        ],
        "label_names": ["Mobile Phone", "Phone"],
        "label_categories": ["Technology and Computing"],
        "label_confidence": {
            "mobile phone": pytest.approx(math.exp(0.8 * REKOGNITION_LABEL["Confidence"])),
            "cell phone": pytest.approx(math.exp(0.8 * REKOGNITION_LABEL["Confidence"])),  # its alias
            "phone": pytest.approx(math.exp(0.8 * 99.9)),
        },
        "labeler": "rekognition",
        "LabelModelVersion": "3.0",
        "labeling": {"min_confidence": 70.0, "max_labels": 50},
        "object": {
            "size": 1234,
            "content_type": "image/png",
            "etag": "e1",
            "version_id": "v7",
            "last_modified": "2026-11-22T10:15:07+00:00",
            "width": 451,
            "height": 300,
        },
        "airflow": {"dag_id": "image_ingest_s3_hourly", "run_id": "scheduled__x"},
        "ingested_at": "2026-11-22T11:00:03+00:00",
        "features": ["labels"],
        "preflight": {"source_format": None, "transformations": []},
    }


def test_build_document_prefers_a_title_from_metadata() -> None:
    obj = ObjectInfo("b", "x/IMG_0001.JPG", 1, "e", MODIFIED, title="Sunset over Milan")
    result = LabelResult([], "rekognition", "3.0", 55.0, None)
    doc = build_document(obj, result, dag_id="d", run_id="r", ingested_at=INGESTED)
    assert doc["title"] == "Sunset over Milan"
    assert doc["Labels"] == []
    assert doc["label_names"] == []


def _mapped_paths(mapping: dict, prefix: str = "") -> set[str]:
    paths = set()
    for name, spec in mapping.get("properties", {}).items():
        paths.add(prefix + name)
        paths |= _mapped_paths(spec, prefix + name + ".")
    return paths


def _document_paths(value: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for name, inner in value.items():
            if prefix + name == "label_confidence":  # rank_features: its keys are feature names
                paths.add(name)
                continue
            paths.add(prefix + name)
            paths |= _document_paths(inner, prefix + name + ".")
    elif isinstance(value, list):
        for inner in value:
            paths |= _document_paths(inner, prefix)
    return paths


# Rekognition's own answers (abridged) for the other operations, with fields we do not map.
MODERATION = [
    {"Name": "Explicit Nudity", "Confidence": 97.5, "ParentName": "", "TaxonomyLevel": 1},
    {"Name": "Nudity", "Confidence": 97.5, "ParentName": "Explicit Nudity", "TaxonomyLevel": 2},
]
TEXT = [
    {
        "DetectedText": "OPEN 24H",
        "Type": "LINE",
        "Id": 0,
        "Confidence": 99.1,
        "Geometry": {
            "BoundingBox": {"Width": 0.5, "Height": 0.1, "Left": 0.2, "Top": 0.3},
            "Polygon": [
                {"X": 0.2, "Y": 0.3},
                {"X": 0.7, "Y": 0.3},
                {"X": 0.7, "Y": 0.4},
                {"X": 0.2, "Y": 0.4},
            ],
        },
    },
    {"DetectedText": "OPEN", "Type": "WORD", "Id": 1, "ParentId": 0, "Confidence": 99.0, "Geometry": {}},
]
FACES = [
    {
        "BoundingBox": {"Width": 0.2, "Height": 0.3, "Left": 0.4, "Top": 0.1},
        "Confidence": 99.9,
        "Landmarks": [{"Type": "eyeLeft", "X": 0.45, "Y": 0.2}],
        "Pose": {"Roll": 1.0, "Yaw": -2.0, "Pitch": 3.0},
        "Quality": {"Brightness": 80.0, "Sharpness": 90.0},
        "AgeRange": {"Low": 20, "High": 30},
    }
]
PROPERTIES = {
    "Quality": {"Brightness": 70.0, "Sharpness": 80.0, "Contrast": 60.0},
    "DominantColors": [{"Red": 1, "SimplifiedColor": "red", "HexCode": "#ff0000", "PixelPercent": 40.0}],
}
ALL_FEATURES = LabelResult(
    [REKOGNITION_LABEL],
    "rekognition",
    "3.0",
    55.0,
    10,
    features=("labels", "moderation", "text", "faces"),
    moderation_labels=MODERATION,
    moderation_model_version="7.0",
    text_detections=TEXT,
    face_details=FACES,
    image_properties=PROPERTIES,
)


def test_every_document_field_is_mapped() -> None:
    obj = ObjectInfo("b", "k.jpg", 1, "e", MODIFIED, "v", "image/jpeg", 1, 1)
    doc = build_document(
        obj,
        ALL_FEATURES,
        dag_id="d",
        run_id="r",
        ingested_at=INGESTED,
        source_format="WEBP",
        transformations=["converted:WEBP"],
    )
    assert _document_paths(doc) <= _mapped_paths(IMAGE_MAPPINGS)
    assert {"ModerationLabels.ParentName", "TextDetections.Geometry.Polygon.X", "FaceDetails.Pose.Yaw"} <= (
        _document_paths(doc)
    )


def test_feature_results_land_in_rekognition_shape_with_flat_fields() -> None:
    obj = ObjectInfo("b", "k.jpg", 1, "e", MODIFIED)
    doc = build_document(obj, ALL_FEATURES, dag_id="d", run_id="r", ingested_at=INGESTED)
    assert doc["ModerationLabels"] == MODERATION
    assert (doc["ModerationModelVersion"], doc["moderation_names"], doc["moderated"]) == (
        "7.0",
        ["Explicit Nudity", "Nudity"],
        True,
    )
    assert [t["DetectedText"] for t in doc["TextDetections"]] == ["OPEN 24H"]  # LINEs only
    assert doc["text"] == "OPEN 24H"
    assert doc["face_count"] == 1
    assert "AgeRange" not in doc["FaceDetails"][0]
    assert doc["image_properties"] == {
        "quality": {"brightness": 70.0, "sharpness": 80.0, "contrast": 60.0},
        "dominant_colors": [{"simplified_color": "red", "hex_code": "#ff0000", "pixel_percent": 40.0}],
    }
    assert doc["features"] == ["labels", "moderation", "text", "faces"]


def test_a_feature_that_ran_and_found_nothing_differs_from_one_that_did_not_run() -> None:
    obj = ObjectInfo("b", "k.jpg", 1, "e", MODIFIED)
    checked = LabelResult([], "local", "m", 70, 10, features=("labels", "moderation"))
    doc = build_document(obj, checked, dag_id="d", run_id="r", ingested_at=INGESTED)
    assert (doc["ModerationLabels"], doc["moderated"]) == ([], False)
    unchecked = LabelResult([], "local", "m", 70, 10, features=("labels",))
    doc = build_document(obj, unchecked, dag_id="d", run_id="r", ingested_at=INGESTED)
    assert not {"moderated", "text", "face_count"} & doc.keys()


@pytest.mark.parametrize(
    "field",
    [
        "Labels.Name",
        "Labels.Confidence",
        "s3bucket",
        "title",
        "s3_location",
        "s3key",
        "timestamp",
        "imported-by",
        "label_names",
    ],
)
def test_seed_fields_are_mapped(field: str) -> None:
    assert field in _mapped_paths(IMAGE_MAPPINGS)


def test_labels_are_nested_with_text_names() -> None:
    labels = IMAGE_MAPPINGS["properties"]["Labels"]
    assert labels["type"] == "nested"
    assert labels["properties"]["Name"]["type"] == "text"
    assert IMAGE_MAPPINGS["properties"]["label_names"]["type"] == "keyword"
    assert versioned_index_name() == "images-v4"
    assert IMAGE_MAPPINGS["properties"]["label_confidence"] == {"type": "rank_features"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("cat.jpg", []),
        ("a/cat.jpg", ["a/"]),
        ("a/b c/ünï/cat.jpg", ["a/", "a/b c/", "a/b c/ünï/"]),
        ("a//cat.jpg", ["a/", "a//"]),
    ],
)
def test_key_prefixes_lists_every_enclosing_folder(key: str, expected: list[str]) -> None:
    assert key_prefixes(key) == expected
