"""The Rekognition stand-in, driven by the real boto3 client (wire protocol, errors, retries)."""

from __future__ import annotations

import io
import json
import os
import sys
import time
import types
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from imagelabels.devstack.embedded import EmbeddedStack
from imagelabels.devstack.standin import (
    StandInConfig,
    StandInServer,
    fetch_stats,
    parse_args,
    rekognition_client,
    reset_stats,
    start_standin_process,
)
from imagelabels.devstack.standin.answers import LOCAL_MODULE

StartStandIn = Callable[..., StandInServer]
SAMPLES = Path(__file__).resolve().parents[2] / "sample_images"


def _image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 60)).save(buffer, format=fmt)
    return buffer.getvalue()


JPEG = _image_bytes()
PNG = _image_bytes("PNG")


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _upload(stack: EmbeddedStack, data: bytes, key: str = "photos/dog.jpg") -> str:
    bucket = f"standin-{uuid.uuid4().hex[:12]}"
    s3 = stack.boto3_client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return bucket


# --- the four operations ------------------------------------------------------------------------


def test_detect_labels_on_bytes(standin: StartStandIn) -> None:
    server = standin()
    response = rekognition_client(server.url).detect_labels(Image={"Bytes": JPEG})
    labels = response["Labels"]
    assert response["LabelModelVersion"] == "3.0"
    assert labels
    assert all(label["Confidence"] >= 55 for label in labels)  # Rekognition's default
    assert [label["Confidence"] for label in labels] == sorted(
        (la["Confidence"] for la in labels), reverse=True
    )
    dog = next(label for label in labels if label["Name"] == "Dog")
    assert {"Name": "Animal"} in dog["Parents"]
    assert dog["Categories"] == [{"Name": "Animals and Pets"}]
    assert set(dog["Instances"][0]["BoundingBox"]) == {"Width", "Height", "Left", "Top"}
    assert server.stats()["operations"]["DetectLabels"]["served"] == 1


def test_detect_labels_on_s3_object_read_from_moto(standin: StartStandIn, stack: EmbeddedStack) -> None:
    bucket = _upload(stack, PNG, "a/b.png")
    server = standin()
    client = rekognition_client(server.url)
    response = client.detect_labels(Image={"S3Object": {"Bucket": bucket, "Name": "a/b.png"}}, MaxLabels=3)
    assert len(response["Labels"]) == 3
    stats = server.stats()["operations"]["DetectLabels"]
    assert stats["served"] == 1
    assert stats["first_served_at"] is not None


def test_each_operation_answers_its_documented_shape(standin: StartStandIn) -> None:
    unsafe = [{"Name": "Violence", "ParentName": "", "Confidence": 81.0, "TaxonomyLevel": 1}]
    server = standin(canned={"ModerationLabels": unsafe})
    client = rekognition_client(server.url)
    image = {"Bytes": JPEG}

    moderation = client.detect_moderation_labels(Image=image)
    assert moderation["ModerationLabels"] == unsafe
    assert moderation["ModerationModelVersion"]

    text = client.detect_text(Image=image)
    assert text["TextModelVersion"]
    line = next(d for d in text["TextDetections"] if d["Type"] == "LINE")
    assert line["DetectedText"] == "DOG PARK"
    assert {"BoundingBox", "Polygon"} <= set(line["Geometry"])
    assert {d["ParentId"] for d in text["TextDetections"] if d["Type"] == "WORD"} == {line["Id"]}

    faces = client.detect_faces(Image=image)["FaceDetails"]
    assert len(faces) == 1
    assert {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"} <= set(faces[0])
    assert "AgeRange" not in faces[0]
    everything = client.detect_faces(Image=image, Attributes=["ALL"])["FaceDetails"][0]
    assert {"AgeRange", "Emotions", "Smile", "EyeDirection"} <= set(everything)

    properties = client.detect_labels(Image=image, Features=["IMAGE_PROPERTIES"])
    assert properties["Labels"] == []
    assert {"Brightness", "Sharpness", "Contrast"} <= set(properties["ImageProperties"]["Quality"])

    counts = server.stats()["operations"]
    assert {op: counts[op]["served"] for op in counts} == {
        "DetectLabels": 1,
        "DetectModerationLabels": 1,
        "DetectText": 1,
        "DetectFaces": 2,
    }


def test_moderation_is_empty_unless_configured(standin: StartStandIn) -> None:
    client = rekognition_client(standin().url)
    assert client.detect_moderation_labels(Image={"Bytes": JPEG})["ModerationLabels"] == []


# --- request parameters -------------------------------------------------------------------------


def test_min_confidence_and_max_labels(standin: StartStandIn) -> None:
    client = rekognition_client(standin().url)
    confident = client.detect_labels(Image={"Bytes": JPEG}, MinConfidence=90)["Labels"]
    assert confident
    assert all(label["Confidence"] >= 90 for label in confident)
    assert len(client.detect_labels(Image={"Bytes": JPEG}, MaxLabels=2)["Labels"]) == 2


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"LabelInclusionFilters": ["Dog", "Tree"]}, {"Dog", "Tree"}),
        (
            {"LabelCategoryInclusionFilters": ["Animals and Pets"], "LabelExclusionFilters": ["Pet"]},
            {"Dog", "Animal", "Canine", "Mammal"},
        ),
        ({"LabelCategoryExclusionFilters": ["Animals and Pets", "Plants and Flowers", "Sports"]}, None),
    ],
)
def test_general_label_filters(
    standin: StartStandIn, filters: dict[str, list[str]], expected: set[str] | None
) -> None:
    client = rekognition_client(standin().url)
    labels = client.detect_labels(Image={"Bytes": JPEG}, Settings={"GeneralLabels": filters})["Labels"]
    names = {label["Name"] for label in labels}
    if expected is not None:
        assert names == expected
    else:
        assert names == {"Outdoors", "Nature", "Person", "Park"}


def test_filters_are_applied_before_max_labels(standin: StartStandIn) -> None:
    client = rekognition_client(standin().url)
    labels = client.detect_labels(
        Image={"Bytes": JPEG},
        MaxLabels=2,
        Settings={"GeneralLabels": {"LabelExclusionFilters": ["Dog", "Animal"]}},
    )["Labels"]
    assert [label["Name"] for label in labels] == ["Canine", "Mammal"]


def test_word_filter_min_confidence(standin: StartStandIn) -> None:
    client = rekognition_client(standin().url)
    text = client.detect_text(Image={"Bytes": JPEG}, Filters={"WordFilter": {"MinConfidence": 99.0}})
    assert [d["DetectedText"] for d in text["TextDetections"]] == ["DOG PARK", "DOG"]


# --- quotas and retries -------------------------------------------------------------------------


def test_quota_exceeded_is_throttled_and_counted(standin: StartStandIn) -> None:
    server = standin(tps={"DetectLabels": 0.1}, burst={"DetectLabels": 2})
    client = rekognition_client(server.url)
    for _ in range(2):
        client.detect_labels(Image={"Bytes": JPEG})
    with pytest.raises(ClientError) as error:
        client.detect_labels(Image={"Bytes": JPEG})
    assert _code(error) == "ThrottlingException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    client.detect_text(Image={"Bytes": JPEG})  # other operations have no quota
    stats = server.stats()["operations"]
    assert (stats["DetectLabels"]["requests"], stats["DetectLabels"]["served"]) == (3, 2)
    assert stats["DetectLabels"]["throttled"] == 1
    assert stats["DetectText"]["served"] == 1


def test_throttle_error_can_alternate_names(standin: StartStandIn) -> None:
    server = standin(tps={"*": 0.1}, burst={"*": 1}, throttle_error="alternate")
    client = rekognition_client(server.url)
    client.detect_faces(Image={"Bytes": JPEG})
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as error:
            client.detect_faces(Image={"Bytes": JPEG})
        codes.append(_code(error))
    assert codes == ["ThrottlingException", "ProvisionedThroughputExceededException"]


def test_adaptive_retries_get_a_burst_above_the_quota_through(standin: StartStandIn) -> None:
    server = standin(tps={"DetectLabels": 20}, burst={"DetectLabels": 5})
    client = rekognition_client(server.url, retry_mode="adaptive", max_attempts=10, max_pool_connections=10)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: client.detect_labels(Image={"Bytes": JPEG}), range(20)))
    assert all(answer["Labels"] for answer in answers)
    stats = server.stats()["operations"]["DetectLabels"]
    assert stats["served"] == 20
    assert stats["throttled"] > 0
    assert stats["requests"] == 20 + stats["throttled"]


def test_latency_is_served_concurrently(standin: StartStandIn) -> None:
    server = standin(latency_ms=150)
    client = rekognition_client(server.url, max_pool_connections=64)
    client.detect_labels(Image={"Bytes": JPEG})  # warm the client

    def timed(_: int) -> float:
        start = time.monotonic()
        client.detect_labels(Image={"Bytes": JPEG})
        return time.monotonic() - start

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        durations = list(pool.map(timed, range(64)))
    elapsed = time.monotonic() - started
    assert min(durations) >= 0.15
    assert elapsed < 1.5, f"64 requests of 150 ms took {elapsed:.2f}s: the server serialises them"
    assert server.stats()["max_in_flight"] >= 16


# --- injected errors ----------------------------------------------------------------------------


def test_injected_internal_server_error(standin: StartStandIn) -> None:
    server = standin(error_rates={"DetectText": {"InternalServerError": 1.0}})
    client = rekognition_client(server.url)
    with pytest.raises(ClientError) as error:
        client.detect_text(Image={"Bytes": JPEG})
    assert _code(error) == "InternalServerError"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    client.detect_labels(Image={"Bytes": JPEG})
    stats = server.stats()["operations"]
    assert stats["DetectText"]["injected_errors"] == 1
    assert stats["DetectLabels"]["served"] == 1


def test_injected_error_rates_are_reproducible_with_a_seed(standin: StartStandIn) -> None:
    rates = {"*": {"InternalServerError": 0.3, "ThrottlingException": 0.2, "AccessDeniedException": 0.1}}

    def outcomes() -> list[str]:
        client = rekognition_client(standin(error_rates=rates, seed=7).url)
        seen = []
        for _ in range(40):
            try:
                client.detect_labels(Image={"Bytes": JPEG})
                seen.append("ok")
            except ClientError as error:
                seen.append(error.response["Error"]["Code"])
        return seen

    first = outcomes()
    assert first == outcomes()
    assert {"ok", "InternalServerError", "ThrottlingException", "AccessDeniedException"} == set(first)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ({"Bytes": b"GIF89a not a jpeg or png"}, "InvalidImageFormatException"),
        ({"Bytes": b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024)}, "ImageTooLargeException"),
        ({"S3Object": {"Bucket": "no-such-bucket-standin", "Name": "x.jpg"}}, "InvalidS3ObjectException"),
    ],
    ids=["bad-format", "too-large", "missing-s3-object"],
)
def test_bad_images_are_refused(standin: StartStandIn, image: dict[str, Any], code: str) -> None:
    server = standin()
    with pytest.raises(ClientError) as error:
        rekognition_client(server.url).detect_labels(Image=image)
    assert _code(error) == code
    assert server.stats()["operations"]["DetectLabels"]["other_errors"] == 1


def test_s3_object_limits(standin: StartStandIn, stack: EmbeddedStack) -> None:
    bucket = _upload(stack, _image_bytes(size=(256, 256)), "big.jpg")
    s3 = stack.boto3_client("s3")
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"hello")
    client = rekognition_client(standin(max_s3_bytes=500).url)
    for key, code in [
        ("big.jpg", "ImageTooLargeException"),
        ("notes.txt", "InvalidImageFormatException"),
        ("gone.jpg", "InvalidS3ObjectException"),
    ]:
        with pytest.raises(ClientError) as error:
            client.detect_labels(Image={"S3Object": {"Bucket": bucket, "Name": key}})
        assert _code(error) == code, key


def test_unknown_operation_and_bad_parameters(standin: StartStandIn) -> None:
    client = rekognition_client(standin().url)
    with pytest.raises(ClientError) as error:
        client.detect_custom_labels(Image={"Bytes": JPEG}, ProjectVersionArn="arn:aws:rekognition:x")
    assert _code(error) == "UnknownOperationException"
    with pytest.raises(ClientError) as error:
        client.detect_labels(Image={"Bytes": JPEG}, Features=["CELEBRITIES"])
    assert _code(error) == "InvalidParameterException"


def test_error_bodies_are_json_1_1(standin: StartStandIn) -> None:
    server = standin()
    request = urllib.request.Request(
        server.url,
        data=json.dumps({"Image": {"Bytes": "R0lGODlh"}}).encode(),
        headers={
            "X-Amz-Target": "RekognitionService.DetectLabels",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 400
    assert error.value.headers["x-amzn-ErrorType"] == "InvalidImageFormatException"
    assert json.loads(error.value.read())["__type"] == "InvalidImageFormatException"


# --- stats, configuration, process mode ---------------------------------------------------------


def test_stats_and_reset_over_http(standin: StartStandIn) -> None:
    server = standin(tps={"DetectLabels": 0.1}, burst={"DetectLabels": 1})
    client = rekognition_client(server.url)
    client.detect_labels(Image={"Bytes": JPEG})
    with pytest.raises(ClientError):
        client.detect_labels(Image={"Bytes": JPEG})
    stats = fetch_stats(server.url)
    assert stats["totals"]["requests"] == 2
    assert stats["totals"]["throttled"] == 1
    assert stats["totals"]["first_served_at"] <= stats["totals"]["last_served_at"]
    reset_stats(server.url)
    assert fetch_stats(server.url)["totals"]["requests"] == 0
    client.detect_labels(Image={"Bytes": JPEG})  # the reset refilled the bucket
    assert server.stats()["operations"]["DetectLabels"]["served"] == 1


def test_config_round_trips_through_the_command_line() -> None:
    config = StandInConfig(
        port=1234,
        latency_ms=150,
        jitter_ms=20,
        tps={"DetectLabels": 50, "*": 5},
        burst={"DetectLabels": 75},
        throttle_error="alternate",
        error_rates={"DetectText": {"InternalServerError": 0.1, "ThrottlingException": 0.05}},
        seed=3,
        labels="canned",
        s3_endpoint_url="http://127.0.0.1:5000",
        canned={"ModerationLabels": [{"Name": "Violence", "Confidence": 90.0}]},
        max_bytes=1000,
    )
    assert parse_args(config.to_argv()) == config
    assert parse_args(["--tps", "DetectLabels=50", "--latency-ms", "150"]).tps_for("DetectLabels") == 50
    assert parse_args(["--tps", "7"]).tps_for("DetectFaces") == 7
    assert parse_args(["--error-rate", "InternalServerError=0.5"]).error_rates_for("DetectText") == {
        "InternalServerError": 0.5
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"tps": {"DetectCelebrities": 5}},
        {"tps": {"DetectLabels": 0}},
        {"error_rates": {"DetectLabels": {"InternalServerError": 0.8, "ThrottlingException": 0.5}}},
        {"error_rates": {"DetectLabels": {"NoSuchError": 0.1}}},
        {"throttle_error": "SlowDown"},
        {"labels": "magic"},
        {"canned": {"Lables": []}},
    ],
)
def test_invalid_configs_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        StandInConfig(**fields)


def test_burst_defaults_to_one_second_of_quota_and_at_least_one_token() -> None:
    assert StandInConfig(tps={"DetectLabels": 50}).burst_for("DetectLabels") == 50
    assert StandInConfig(tps={"DetectLabels": 0.2}).burst_for("DetectLabels") == 1


def test_process_mode_starts_answers_and_stops(stack: EmbeddedStack) -> None:
    bucket = _upload(stack, JPEG)
    config = StandInConfig(
        tps={"DetectLabels": 0.1}, burst={"DetectLabels": 1}, s3_endpoint_url=stack.moto_url
    )
    url, stop = start_standin_process(config)
    try:
        with urllib.request.urlopen(f"{url}/_health", timeout=10) as response:
            pid = json.load(response)["pid"]
        assert pid != os.getpid()
        client = rekognition_client(url)
        assert client.detect_labels(Image={"S3Object": {"Bucket": bucket, "Name": "photos/dog.jpg"}})[
            "Labels"
        ]
        with pytest.raises(ClientError) as error:
            client.detect_labels(Image={"Bytes": JPEG})
        assert _code(error) == "ThrottlingException"
        stats = fetch_stats(url)["operations"]["DetectLabels"]
        assert (stats["served"], stats["throttled"]) == (1, 1)
    finally:
        stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):  # noqa: PT011 - connection refused
        urllib.request.urlopen(f"{url}/_health", timeout=2)
    stop()  # idempotent


def test_process_mode_reports_a_failed_start(standin: StartStandIn) -> None:
    taken = int(standin().url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="exited"):
        start_standin_process(StandInConfig(port=taken), timeout=30)


# --- local model --------------------------------------------------------------------------------


def test_local_mode_passes_decoded_images_and_parameters_to_the_local_labeler(
    standin: StartStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def record(name: str, answer: dict[str, Any]) -> Callable[..., dict[str, Any]]:
        def function(image: Any, **kwargs: Any) -> dict[str, Any]:
            calls.append((name, image, kwargs))
            return answer

        return function

    labels = [
        {"Name": "Cat", "Confidence": 91.0, "Categories": [{"Name": "Animals and Pets"}]},
        {"Name": "Sofa", "Confidence": 80.0, "Categories": [{"Name": "Home and Indoors"}]},
    ]
    fake = types.ModuleType(LOCAL_MODULE)
    fake.detect_labels = record("labels", {"Labels": labels, "LabelModelVersion": "local-1"})  # type: ignore[attr-defined]
    fake.detect_moderation_labels = record(
        "moderation", {"ModerationLabels": [], "ModerationModelVersion": "m"}
    )  # type: ignore[attr-defined]
    fake.detect_text = record("text", {"TextDetections": [], "TextModelVersion": "t"})  # type: ignore[attr-defined]
    fake.detect_faces = record("faces", {"FaceDetails": [{"Confidence": 99.0}]})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, LOCAL_MODULE, fake)
    client = rekognition_client(standin(labels="local").url)

    answer = client.detect_labels(
        Image={"Bytes": PNG},
        MinConfidence=60,
        MaxLabels=1,
        Settings={"GeneralLabels": {"LabelCategoryExclusionFilters": ["Animals and Pets"]}},
        Features=["GENERAL_LABELS", "IMAGE_PROPERTIES"],
    )
    assert [label["Name"] for label in answer["Labels"]] == ["Sofa"]
    assert answer["LabelModelVersion"] == "local-1"
    assert answer["ImageProperties"]["DominantColors"][0]["HexCode"]
    client.detect_moderation_labels(Image={"Bytes": JPEG}, MinConfidence=70)
    client.detect_text(Image={"Bytes": JPEG}, Filters={"WordFilter": {"MinConfidence": 85}})
    assert client.detect_faces(Image={"Bytes": JPEG})["FaceDetails"] == [{"Confidence": 99.0}]
    first, image, kwargs = calls[0]
    assert first == "labels"
    assert (image.mode, image.size) == ("RGB", (32, 24))
    assert kwargs["min_confidence"] == 60
    assert kwargs["max_labels"] >= 2  # filters may drop labels: ask for more than MaxLabels
    assert [(name, kwargs) for name, _, kwargs in calls[1:]] == [
        ("moderation", {"min_confidence": 70}),
        ("text", {"min_confidence": 85}),
        ("faces", {}),
    ]
    with pytest.raises(ClientError) as error:  # magic bytes right, content truncated
        client.detect_labels(Image={"Bytes": JPEG[:40]})
    assert _code(error) == "InvalidImageFormatException"


def test_local_mode_labels_a_real_photo(standin: StartStandIn) -> None:
    client = rekognition_client(standin(labels="local").url)
    photo = (SAMPLES / "grace_hopper.jpg").read_bytes()
    labels = client.detect_labels(Image={"Bytes": photo}, MinConfidence=1, MaxLabels=5)
    assert 0 < len(labels["Labels"]) <= 5
    assert labels["LabelModelVersion"]
    assert all(label["Confidence"] >= 1 for label in labels["Labels"])
    assert "ModerationLabels" in client.detect_moderation_labels(Image={"Bytes": photo})
