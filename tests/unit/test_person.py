"""The Person detector (BlazePose's detector on onnxruntime): decoding and NMS on synthetic
tensors, then real photos: people give ``Person`` with a box around them, scenes without people
give nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagelabels.labelers import person
from imagelabels.labelers.person import (
    Detection,
    Letterbox,
    decode,
    detect,
    detect_people,
    face_labels,
    letterbox,
    merge_labels,
    person_box,
    ssd_anchors,
    weighted_nms,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"
NO_PEOPLE = ("chelsea.png", "coffee.png", "rocket.jpg")


def photo(name: str) -> Image.Image:
    with Image.open(SAMPLES / name) as opened:
        return opened.convert("RGB")


def contains(box: dict[str, float], left: float, top: float, right: float, bottom: float) -> bool:
    """Whether the Rekognition box covers the region (ratios)."""
    return (
        box["Left"] <= left
        and box["Top"] <= top
        and box["Left"] + box["Width"] >= right
        and box["Top"] + box["Height"] >= bottom
    )


# --- anchors, decoding, NMS ------------------------------------------------------------------


def test_anchors_follow_mediapipe_layout() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (person.NUM_ANCHORS, 2) == (2254, 2)
    # stride 8: 28x28 cells, 2 anchors each, row by row
    assert anchors[0] == pytest.approx([0.5 / 28, 0.5 / 28])
    assert anchors[1] == pytest.approx(anchors[0])
    assert anchors[2] == pytest.approx([1.5 / 28, 0.5 / 28])
    assert anchors[2 * 28] == pytest.approx([0.5 / 28, 1.5 / 28])
    # stride 16 starts after 28*28*2 anchors: 14x14 cells
    assert anchors[1568] == pytest.approx([0.5 / 14, 0.5 / 14])
    # the three stride-32 layers share one 7x7 map: 6 anchors per cell
    assert anchors[1960] == pytest.approx([0.5 / 7, 0.5 / 7])
    assert anchors[1965] == pytest.approx([0.5 / 7, 0.5 / 7])
    assert anchors[1966] == pytest.approx([1.5 / 7, 0.5 / 7])
    assert anchors[-1] == pytest.approx([6.5 / 7, 6.5 / 7])


def test_decode_centres_sizes_keypoints_and_sigmoid() -> None:
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    raw = np.zeros((2, 12), np.float32)
    # anchor 0: centre moved by (+22.4, -11.2) px, 44.8 x 22.4 px, keypoints at offsets
    raw[0, :4] = [22.4, -11.2, 44.8, 22.4]
    raw[0, 4:] = [0, 0, 22.4, 0, 0, 22.4, -22.4, -22.4]
    logits = np.array([[0.0], [np.log(3.0)]], np.float32)
    scores, boxes, keypoints = decode(raw, logits, anchors)
    assert scores == pytest.approx([0.5, 0.75])
    assert boxes[0] == pytest.approx([0.25, 0.4, 0.45, 0.5])  # centre (0.35, 0.45), 0.2 x 0.1
    np.testing.assert_allclose(keypoints[0], [[0.25, 0.5], [0.35, 0.5], [0.25, 0.6], [0.15, 0.4]], atol=1e-6)
    assert boxes[1] == pytest.approx([0.75, 0.75, 0.75, 0.75])  # zero-size box on its anchor


def test_decode_clips_huge_logits_without_overflow() -> None:
    anchors = np.zeros((3, 2), np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        scores, _, _ = decode(
            np.zeros((3, 12), np.float32), np.array([1e6, -1e6, 100.0], np.float32), anchors
        )
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.0, abs=1e-30)
    assert np.all(np.isfinite(scores))


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32)


def test_weighted_nms_merges_overlaps_and_keeps_separate_people() -> None:
    scores = np.array([0.9, 0.6, 0.8, 0.3], np.float32)
    boxes = _boxes(
        (0.10, 0.10, 0.30, 0.30),  # best
        (0.12, 0.10, 0.32, 0.30),  # overlaps the best (IoU 0.82): merged into it
        (0.60, 0.60, 0.80, 0.80),  # elsewhere: a second person
        (0.60, 0.10, 0.80, 0.30),  # under min_score: dropped
    )
    keypoints = np.zeros((4, 4, 2), np.float32)
    keypoints[1] += 0.15  # the merged keypoints move towards the weaker anchor by its weight
    found = weighted_nms(scores, boxes, keypoints)
    assert [d.score for d in found] == pytest.approx([0.9, 0.8])
    weight = 0.6 / (0.9 + 0.6)
    assert found[0].box == pytest.approx((0.10 + 0.02 * weight, 0.10, 0.30 + 0.02 * weight, 0.30))
    assert found[0].keypoints[0] == pytest.approx((0.15 * weight, 0.15 * weight))
    assert found[1].box == pytest.approx((0.60, 0.60, 0.80, 0.80))


def test_weighted_nms_iou_threshold_is_strict_and_empty_input() -> None:
    # IoU exactly 1/3 (two unit squares sharing half): above 0.3, merged; at 0.5 kept apart
    boxes = _boxes((0.0, 0.0, 0.2, 0.2), (0.1, 0.0, 0.3, 0.2))
    scores = np.array([0.9, 0.8], np.float32)
    keypoints = np.zeros((2, 4, 2), np.float32)
    assert len(weighted_nms(scores, boxes, keypoints, iou_threshold=0.3)) == 1
    assert len(weighted_nms(scores, boxes, keypoints, iou_threshold=0.5)) == 2
    assert weighted_nms(np.array([0.2, 0.4], np.float32), boxes, keypoints) == []
    zero = _boxes((0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5))
    assert len(weighted_nms(scores, zero, keypoints)) == 2  # degenerate boxes never loop forever


def test_letterbox_centres_the_image_on_black() -> None:
    wide = Image.new("RGB", (448, 224), (255, 255, 255))
    tensor, placement = letterbox(wide)
    assert tensor.shape == (1, 224, 224, 3)
    assert tensor.dtype == np.float32
    assert placement == Letterbox(left=0.0, top=56 / 224, width=1.0, height=112 / 224)
    assert tensor[0, 0, 0] == pytest.approx([-1.0, -1.0, -1.0])  # border: black
    assert tensor[0, 112, 112] == pytest.approx([1.0, 1.0, 1.0])  # image: white
    _, tall = letterbox(Image.new("L", (100, 400)))
    assert tall == Letterbox(left=84 / 224, top=0.0, width=56 / 224, height=1.0)


def test_person_box_from_body_circle_through_the_letterbox() -> None:
    # a 400 x 200 image letterboxed: top 0.25, height 0.5 of the input
    placement = Letterbox(left=0.0, top=0.25, width=1.0, height=0.5)
    # upright person: hips at (200, 120) px, body circle radius 80 px (top point at (200, 40))
    hip = (0.5, 0.25 + 0.5 * 120 / 200)
    top = (0.5, 0.25 + 0.5 * 40 / 200)
    face = (0.45, 0.25 + 0.5 * 40 / 200, 0.55, 0.25 + 0.5 * 70 / 200)  # inside the body box
    detection = Detection(score=0.9, box=face, keypoints=(hip, top, (0.5, 0.4), (0.5, 0.3)))
    box = person_box(detection, placement, 400, 200)
    assert box["Left"] == pytest.approx((200 - 0.35 * 80) / 400)
    assert box["Width"] == pytest.approx(2 * 0.35 * 80 / 400)
    assert box["Top"] == pytest.approx((120 - 1.05 * 80) / 200)
    assert box["Height"] == pytest.approx(1.0 - (120 - 1.05 * 80) / 200)  # feet below the frame: clipped


# --- real photos -------------------------------------------------------------------------------


def test_astronaut_is_a_person_with_a_box_around_her() -> None:
    labels = detect_people(photo("astronaut.png"))
    assert [label["Name"] for label in labels] == ["Person"]
    (label,) = labels
    assert label["Parents"] == []
    assert label["Aliases"] == [{"Name": "Human"}]
    assert label["Categories"] == [{"Name": "Person Description"}]
    assert label["Confidence"] == pytest.approx(81.8, abs=1.0)
    (instance,) = label["Instances"]
    assert instance["Confidence"] == label["Confidence"]
    box = instance["BoundingBox"]
    assert box == pytest.approx({"Width": 0.835, "Height": 1.0, "Left": 0.0, "Top": 0.0}, abs=0.02)
    assert contains(box, 0.30, 0.05, 0.58, 0.90)  # her head down to the suit's badge


def test_grace_hopper_is_a_person_with_a_box_around_her() -> None:
    image = photo("grace_hopper.jpg")
    (label,) = detect_people(image)
    assert label["Name"] == "Person"
    assert label["Confidence"] == pytest.approx(81.9, abs=1.0)
    (instance,) = label["Instances"]
    box = instance["BoundingBox"]
    assert box == pytest.approx({"Width": 1.0, "Height": 0.965, "Left": 0.0, "Top": 0.035}, abs=0.02)
    assert contains(box, 0.05, 0.1, 0.95, 1.0)  # cap to shoulders


@pytest.mark.parametrize("name", NO_PEOPLE)
def test_photos_without_people_give_nothing(name: str) -> None:
    image = photo(name)
    assert detect_people(image) == []
    best = detect(image, min_score=0.0)[0][0].score
    assert best < 0.25


def test_person_found_where_it_sits_in_a_larger_picture() -> None:
    # the astronaut pasted at (100, 500) in a 1024 x 1024 grey picture: box in that quarter
    canvas = Image.new("RGB", (1024, 1024), (120, 140, 160))
    canvas.paste(photo("astronaut.png"), (100, 500))
    (label,) = detect_people(canvas)
    (instance,) = label["Instances"]
    box = instance["BoundingBox"]
    assert box == pytest.approx({"Width": 0.324, "Height": 0.527, "Left": 0.136, "Top": 0.473}, abs=0.02)
    assert contains(box, 0.25, 0.52, 0.45, 0.9)
    assert box["Left"] >= 100 / 1024
    assert box["Left"] + box["Width"] <= 612 / 1024


def test_letterboxed_wide_and_tall_photos_map_back() -> None:
    # the same photo inside a wide and a tall frame: the box follows it, in ratios of each frame
    portrait = photo("grace_hopper.jpg")
    wide = Image.new("RGB", (1400, 600), (90, 90, 90))
    wide.paste(portrait, (800, 0))
    tall = Image.new("RGB", (512, 1300), (90, 90, 90))
    tall.paste(portrait, (0, 650))
    (wide_label,) = detect_people(wide)
    (tall_label,) = detect_people(tall)
    wide_box = wide_label["Instances"][0]["BoundingBox"]
    tall_box = tall_label["Instances"][0]["BoundingBox"]
    assert wide_box["Left"] >= 700 / 1400  # the portrait starts at 800 px
    assert contains(wide_box, 900 / 1400, 0.2, 1200 / 1400, 0.6)
    assert tall_box["Top"] >= 600 / 1300  # the portrait starts at 650 px
    assert contains(tall_box, 0.3, 800 / 1300, 0.7, 1000 / 1300)


def test_greyscale_and_mirrored_people_are_found() -> None:
    astronaut = photo("astronaut.png")
    for image in (astronaut.convert("L"), astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        (label,) = detect_people(image)
        assert label["Confidence"] > 75


def test_min_score_is_the_detector_cut() -> None:
    image = photo("grace_hopper.jpg")
    assert detect_people(image, min_score=0.9) == []
    assert detect_people(photo("rocket.jpg"), min_score=0.1)[0]["Name"] == "Person"  # a low cut finds ghosts


def test_threads_share_one_session_and_agree() -> None:
    images = [photo(name) for name in ("astronaut.png", "grace_hopper.jpg", "coffee.png")] * 4
    expected = [detect_people(image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(detect_people, images))
    assert got == expected
    assert person.DETECTOR.loaded()


def test_face_labels_follow_rekognition() -> None:
    faces = [{"Confidence": 99.1, "BoundingBox": {}}, {"Confidence": 97.0, "BoundingBox": {}}]
    face, head = face_labels(faces)
    assert face == {
        "Name": "Face",
        "Confidence": 99.1,
        "Instances": [],
        "Parents": [{"Name": "Head"}, {"Name": "Person"}],
        "Aliases": [],
        "Categories": [{"Name": "Person Description"}],
    }
    assert head["Name"] == "Head"
    assert head["Parents"] == [{"Name": "Person"}]
    assert face_labels([]) == []


def test_labels_do_not_share_mutable_lists() -> None:
    (first,) = detect_people(photo("astronaut.png"))
    first["Aliases"].append({"Name": "changed"})
    (second,) = detect_people(photo("astronaut.png"))
    assert second["Aliases"] == [{"Name": "Human"}]
    assert person.PERSON["Aliases"] == [{"Name": "Human"}]


def _label(name: str, confidence: float, parents: tuple[str, ...] = (), instances: int = 0) -> dict[str, Any]:
    return {
        "Name": name,
        "Confidence": confidence,
        "Instances": [{"BoundingBox": {}, "Confidence": confidence}] * instances,
        "Parents": [{"Name": p} for p in parents],
        "Aliases": [],
        "Categories": [{"Name": "Person Description"}],
    }


def test_merge_labels_sorts_merges_and_adds_missing_parents() -> None:
    classifier = [_label("Scuba Diver", 80.0, ("Person",)), _label("Person", 80.0), _label("Sea Life", 75.0)]
    people = [_label("Person", 91.0, instances=1)]
    merged = merge_labels(classifier, people)
    assert [(label["Name"], label["Confidence"]) for label in merged] == [
        ("Person", 91.0),
        ("Scuba Diver", 80.0),
        ("Sea Life", 75.0),
    ]
    assert len(merged[0]["Instances"]) == 1  # the detector's box joins the classifier's Person
    # a stronger classifier Person keeps its confidence and still gains the boxes
    (strong,) = merge_labels([_label("Person", 95.0)], people)
    assert strong["Confidence"] == 95.0
    assert len(strong["Instances"]) == 1
    # Face without Person: Head comes with it (face_labels), Person is added as their parent
    faces = face_labels([{"Confidence": 99.0}])
    names = [(label["Name"], label["Confidence"]) for label in merge_labels([_label("Cat", 99.5)], faces)]
    assert names == [("Cat", 99.5), ("Face", 99.0), ("Head", 99.0), ("Person", 99.0)]
    # a face at 99 % makes the detector's Person at 81.8 % as sure; its box stays
    raised = merge_labels([_label("Person", 81.8, instances=1)], faces)
    assert [(label["Name"], label["Confidence"]) for label in raised] == [
        ("Face", 99.0),
        ("Head", 99.0),
        ("Person", 99.0),
    ]
    assert len(raised[2]["Instances"]) == 1
    added = merge_labels([], faces)[-1]
    assert added["Aliases"] == [{"Name": "Human"}]
    assert added["Parents"] == []
    assert merge_labels([], []) == []


def test_person_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(person.ENABLED_ENV, raising=False)
    assert person.person_enabled()
    for value, expected in (("0", False), ("off", False), ("False", False), ("1", True), ("on", True)):
        monkeypatch.setenv(person.ENABLED_ENV, value)
        assert person.person_enabled() is expected
    monkeypatch.setenv(person.ENABLED_ENV, "maybe")
    with pytest.raises(ValueError, match="IMAGELABELS_LOCAL_PERSON"):
        person.person_enabled()
