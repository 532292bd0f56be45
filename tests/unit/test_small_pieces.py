"""Table-driven tests of the small pure pieces: URIs, settings, labeler registry, reports."""

from __future__ import annotations

from collections import Counter

import pytest

from imagelabels import settings
from imagelabels.engine.indexing import ItemFailure
from imagelabels.labelers import LabelingSettings, make_labeler
from imagelabels.labelers.rekognition import RekognitionLabeler
from imagelabels.pipeline.batch import BatchIncomplete, BatchReport, summarize
from imagelabels.settings import default_staging_uri
from imagelabels.sources.manifests import S3Uri, manifest_prefix
from imagelabels.tasks.params import labeler_name, labeling_settings


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://b/k/x.json", "b", "k/x.json"),
        ("s3://b", "b", ""),
        ("s3://b/", "b", ""),
        (" s3://b/p/ ", "b", "p/"),
    ],
)
def test_s3_uri_parse(uri: str, bucket: str, key: str) -> None:
    parsed = S3Uri.parse(uri)
    assert (parsed.bucket, parsed.key) == (bucket, key)


@pytest.mark.parametrize("bad", ["b/k", "http://b/k", "s3:///k", ""])
def test_s3_uri_rejects_non_s3(bad: str) -> None:
    with pytest.raises(ValueError, match="not an s3:// URI"):
        S3Uri.parse(bad)


@pytest.mark.parametrize(
    ("staging", "expected"),
    [
        ("s3://stage", "s3://stage/manifests/my_dag/manual__2026-11-22T10_00_00_00_00/"),
        ("s3://stage/tmp", "s3://stage/tmp/manifests/my_dag/manual__2026-11-22T10_00_00_00_00/"),
        ("s3://stage/tmp/", "s3://stage/tmp/manifests/my_dag/manual__2026-11-22T10_00_00_00_00/"),
    ],
)
def test_manifest_prefix_is_deterministic_and_safe(staging: str, expected: str) -> None:
    assert str(manifest_prefix(staging, "my_dag", "manual__2026-11-22T10:00:00+00:00")) == expected


def test_default_staging_is_a_reserved_prefix() -> None:
    assert default_staging_uri("photos") == "s3://photos/_imagelabels/"


def test_bucket_comes_from_param_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGELABELS_BUCKET", raising=False)
    with pytest.raises(ValueError, match="IMAGELABELS_BUCKET"):
        settings.source_bucket("")
    monkeypatch.setenv("IMAGELABELS_BUCKET", "from-env")
    assert settings.source_bucket("  ") == "from-env"
    assert settings.source_bucket("from-param") == "from-param"


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("true", True), ("wait_for", "wait_for")])
def test_refresh_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: object) -> None:
    monkeypatch.setenv("IMAGELABELS_ES_REFRESH", value)
    assert settings.es_refresh() == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_confidence": -1}, "min_confidence"),
        ({"min_confidence": 100.5}, "min_confidence"),
        ({"max_labels": 0}, "max_labels"),
        ({"moderation_min_confidence": 101}, "moderation_min_confidence"),
        ({"features": ("labels", "colour")}, "features must be"),
        ({"features": ("moderation",)}, "must include 'labels'"),
        ({"label_filters": {"LabelInclusion": ["Cat"]}}, "unknown label filter"),
        ({"label_filters": {"LabelInclusionFilters": "Cat"}}, "list of non-empty strings"),
    ],
)
def test_labeling_settings_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelingSettings(**kwargs)


def test_registry_builds_rekognition_and_names_the_known_labelers() -> None:
    import boto3

    asked: list[str] = []

    def client_for(service: str) -> object:
        asked.append(service)
        return boto3.client(
            service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
        )

    labeler = make_labeler("rekognition", client_for, LabelingSettings())
    assert isinstance(labeler, RekognitionLabeler)
    assert asked == ["rekognition"]
    with pytest.raises(ValueError, match="choose one of: local, rekognition"):
        make_labeler("tensorflow", client_for, LabelingSettings())


@pytest.mark.parametrize(
    ("env", "expected"),
    [("", "local"), ("rekognition", "rekognition"), ("local", "local")],
)
def test_default_labeler_setting(monkeypatch: pytest.MonkeyPatch, env: str, expected: str) -> None:
    monkeypatch.setenv("IMAGELABELS_LABELER", env)
    assert labeler_name({"labeler": ""}) == expected
    assert labeler_name({"labeler": "rekognition"}) == "rekognition"  # the Param wins


def test_unknown_default_labeler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGELABELS_LABELER", "clip")
    with pytest.raises(ValueError, match="IMAGELABELS_LABELER='clip'"):
        labeler_name({})


def test_params_become_validated_labeling_settings() -> None:
    settings = labeling_settings(
        {
            "min_confidence": 80,
            "max_labels": 5,
            "features": ["moderation", "text"],
            "moderation_min_confidence": 60,
            "label_filters": {"LabelExclusionFilters": ["Text"]},
        }
    )
    assert settings.features == ("labels", "moderation", "text")  # labels always run
    assert (settings.min_confidence, settings.max_labels, settings.moderation_min_confidence) == (80, 5, 60)
    assert dict(settings.label_filters) == {"LabelExclusionFilters": ["Text"]}
    with pytest.raises(ValueError, match="unknown label filter"):
        labeling_settings({"label_filters": {"Nope": ["x"]}})


def test_report_raises_only_when_a_retry_is_needed() -> None:
    fine = BatchReport(listed=3, labeled=2, indexed=2, failed=Counter({"invalid_image_format": 1}))
    fine.raise_if_incomplete()  # a bad image is recorded, not retried
    refused = BatchReport(listed=1, index_errors=[ItemFailure("id1", 400, "mapper_parsing_exception: x")])
    with pytest.raises(
        BatchIncomplete, match="1 document\\(s\\) refused by Elasticsearch \\(id1: 400 mapper"
    ):
        refused.raise_if_incomplete()
    throttled = BatchReport(listed=1, retryable_failures=1)
    with pytest.raises(BatchIncomplete, match="must be retried"):
        throttled.raise_if_incomplete()


def test_summarize_adds_up_batches() -> None:
    reports = [
        BatchReport(listed=2, labeled=2, indexed=2, without_labels=1).as_xcom(),
        BatchReport(
            listed=3, already_indexed=1, labeled=1, indexed=1, failed=Counter({"object_gone": 1})
        ).as_xcom(),
    ]
    assert summarize(reports) == {
        "batches": 2,
        "listed": 5,
        "already_indexed": 1,
        "superseded": 0,
        "labeled": 3,
        "indexed": 3,
        "without_labels": 1,
        "failed": {"object_gone": 1},
        "index_errors": 0,
        "failed_total": 1,
    }
    assert summarize([])["batches"] == 0
