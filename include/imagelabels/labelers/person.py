"""``Person`` for the local labeler: BlazePose's person detector on onnxruntime.

ImageNet has no person class, so the classifier of :mod:`imagelabels.labelers.local` never says
"Person". This module runs MediaPipe's BlazePose person detector (``pose_detection.tflite`` from
the ``mediapipe==0.10.21`` wheel, Apache-2.0, converted to ``models/pose_detection.onnx`` by
``scripts/models/extract_pose_detection.py``) and answers with Rekognition's ``Person`` label:
no parents, alias ``Human``, category ``Person Description``, one ``Instance`` (box + confidence)
per person found.

The detector is an SSD: 2,254 anchors on a 224x224 letterboxed input, each with a person score
(a logit) and 12 regressed values: a box and four alignment keypoints (hip centre, a point on the
circle around the whole body, shoulder centre, a point on the circle around the upper body).
Decoding follows MediaPipe's ``pose_detection_cpu`` graph: SSD anchors (strides 8, 16, 32, 32,
32, fixed size), sigmoid scores kept from 0.5, weighted non-max suppression at IoU 0.3, then the
letterbox removed. The detector's own box is small (it sits on the head and neck, whatever the
body does), so the person's ``BoundingBox`` is built from the keypoints: along the body axis from
just above the head (``1.05 x`` the body circle's radius above the hip centre) to the feet (the
radius below it), across it ``0.35 x`` the radius each side, united with the detector's box,
clipped to the image. It is a body-shaped estimate, not a segmentation.

``Confidence`` is ``100 x`` the detector's score, which is not a calibrated probability: on the
photographs we have, people score 0.62-0.82 and photographs without people at most 0.19, while
two non-photographs (scikit-image's logo, a retina fundus image) reach 0.58 and 0.57 (see
``benchmarks/person_detector.py``); the caller applies ``MinConfidence`` as for every label.
BlazePose's detector is built for one prominent person: a second person scores lower (0.33 beside
0.86 in a two-portrait collage) and people under about a fifth of the picture's long side are
missed.

Like the other models (:mod:`imagelabels.labelers.local_models`) the session is a lazy,
lock-protected per-process singleton, ``IMAGELABELS_LOCAL_THREADS`` intra-op threads, safe to
call from several threads at once; nothing is downloaded or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from imagelabels.labelers.local_models import MODELS_DIR, Lazy, local_threads, session_options
from imagelabels.settings import environment_value

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image

__all__ = [
    "DETECTOR",
    "PERSON",
    "Detection",
    "decode",
    "detect_people",
    "face_labels",
    "letterbox",
    "merge_labels",
    "person_box",
    "person_enabled",
    "person_model_version",
    "ssd_anchors",
    "weighted_nms",
]

MODEL_PATH = MODELS_DIR / "pose_detection.onnx"
# "0", "false", "no" or "off" turn the Person detector off (default on).
ENABLED_ENV = "IMAGELABELS_LOCAL_PERSON"
INPUT_SIZE = 224
# MediaPipe pose_detection_cpu.pbtxt: SsdAnchorsCalculator and TensorsToDetectionsCalculator.
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated scale, fixed anchor size
NUM_ANCHORS = 2254
NUM_COORDS = 12
NUM_KEYPOINTS = 4
SCORE_CLIP = 100.0
# MediaPipe's thresholds: keep anchors scoring 0.5, merge those overlapping by IoU > 0.3.
MIN_SCORE = 0.5
NMS_IOU = 0.3
# Keypoints: hip centre, a point on the whole-body circle (towards the head), shoulder centre,
# a point on the upper-body circle.
HIP, BODY_TOP = 0, 1
# Person box from the body circle (radius r, centred on the hips): HEAD_REACH x r above the hip
# centre, FEET_REACH x r below it, HALF_WIDTH x r either side of the body axis.
HEAD_REACH = 1.05
FEET_REACH = 1.0
HALF_WIDTH = 0.35

# Rekognition's (label model 3.0) Face and Head: Face under Head and Person, Head under Person,
# both "Person Description", neither with Instances (face boxes are DetectFaces' business).
FACE_PARENTS = ("Head", "Person")
HEAD_PARENTS = ("Person",)

PERSON: dict[str, Any] = {
    "Name": "Person",
    "Parents": [],
    "Aliases": [{"Name": "Human"}],
    "Categories": [{"Name": "Person Description"}],
}


@dataclass(frozen=True)
class Detection:
    """One person after non-max suppression, in the detector's normalised input coordinates.

    :param score: the detector's score, 0..1 (sigmoid of the logit).
    :param box: ``xmin, ymin, xmax, ymax``.
    :param keypoints: ``[4, 2]`` (x, y) alignment keypoints.
    """

    score: float
    box: tuple[float, float, float, float]
    keypoints: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits in the square input: ``left``/``top`` padding and the scaled size,
    all as fractions of the input side."""

    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class PersonDetector:
    session: Any
    input_name: str
    version: str


def _load_detector() -> PersonDetector:
    import hashlib

    import onnxruntime as ort

    session = ort.InferenceSession(
        str(MODEL_PATH), sess_options=session_options(local_threads()), providers=["CPUExecutionProvider"]
    )
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()[:12]
    return PersonDetector(
        session=session,
        input_name=session.get_inputs()[0].name,
        version=f"blazepose-detector-mediapipe-0.10.21/{digest}",
    )


DETECTOR: Lazy[PersonDetector] = Lazy(_load_detector)


def person_model_version() -> str:
    """Identifies the detector (file digest), for ``LabelModelVersion``-style bookkeeping."""
    return DETECTOR.get().version


@cache
def ssd_anchors(
    input_size: int = INPUT_SIZE,
    strides: tuple[int, ...] = ANCHOR_STRIDES,
    per_layer: int = ANCHORS_PER_LAYER,
) -> NDArray[np.float32]:
    """Anchor centres ``[N, 2]`` (x, y), normalised, in the detector's output order.

    MediaPipe's ``SsdAnchorsCalculator``: consecutive layers with the same stride share one
    feature map (``ceil(input / stride)`` cells a side), each cell holding ``per_layer`` anchors
    per layer, row by row; with ``fixed_anchor_size`` every anchor is 1x1, so only centres matter.
    """
    import numpy as np

    centres: list[NDArray[np.float32]] = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        repeats = per_layer * (last - layer)
        cells = -(-input_size // strides[layer])
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, repeats, axis=0))
        layer = last
    result = np.concatenate(centres).astype(np.float32)
    result.flags.writeable = False
    return result


def letterbox(image: Image) -> tuple[NDArray[np.float32], Letterbox]:
    """The detector's input ``[1, 224, 224, 3]``: the RGB image fitted into the square keeping
    its aspect ratio, centred on black, scaled to ``[-1, 1]`` (MediaPipe's ``ImageToTensor``
    with ``keep_aspect_ratio`` and ``BORDER_ZERO``)."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    scale = INPUT_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    left, top = (INPUT_SIZE - size[0]) // 2, (INPUT_SIZE - size[1]) // 2
    canvas = PILImage.new("RGB", (INPUT_SIZE, INPUT_SIZE))
    canvas.paste(image.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=3.0), (left, top))
    tensor = np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0
    placement = Letterbox(
        left=left / INPUT_SIZE, top=top / INPUT_SIZE, width=size[0] / INPUT_SIZE, height=size[1] / INPUT_SIZE
    )
    return tensor[np.newaxis], placement


def decode(
    raw_boxes: NDArray[np.float32], raw_scores: NDArray[np.float32], anchors: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Scores ``[N]``, boxes ``[N, 4]`` (xmin, ymin, xmax, ymax) and keypoints ``[N, 4, 2]`` from
    the raw outputs ``[N, 12]`` and ``[N]`` or ``[N, 1]``.

    MediaPipe's ``TensorsToDetectionsCalculator`` with ``reverse_output_order`` (x before y),
    every scale 224 and unit anchors: ``centre = raw / 224 + anchor``, ``size = raw / 224``;
    scores are ``sigmoid(clip(logit, -100, 100))``.
    """
    import numpy as np

    raw = np.asarray(raw_boxes, dtype=np.float32).reshape(-1, NUM_COORDS) / INPUT_SIZE
    logits = np.clip(np.asarray(raw_scores, dtype=np.float32).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    scores = np.exp(-np.logaddexp(0.0, -logits)).astype(np.float32)  # sigmoid, no overflow
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, np.newaxis, :]
    return scores, boxes.astype(np.float32), keypoints.astype(np.float32)


def _iou(box: NDArray[np.float32], others: NDArray[np.float32]) -> NDArray[np.float32]:
    import numpy as np

    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[2], others[:, 2])
    bottom = np.minimum(box[3], others[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)


def weighted_nms(
    scores: NDArray[np.float32],
    boxes: NDArray[np.float32],
    keypoints: NDArray[np.float32],
    *,
    min_score: float = MIN_SCORE,
    iou_threshold: float = NMS_IOU,
) -> list[Detection]:
    """MediaPipe's ``WEIGHTED`` non-max suppression, best first.

    Anchors under ``min_score`` are dropped. The best remaining anchor and every remaining one
    overlapping it by IoU above ``iou_threshold`` form one detection whose box and keypoints are
    their score-weighted mean and whose score is the best one's; repeat with the rest.
    """
    import numpy as np

    candidates = np.flatnonzero(scores >= min_score)
    remaining = candidates[np.argsort(-scores[candidates], kind="stable")]
    detections: list[Detection] = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        cluster = remaining[overlap > iou_threshold]
        if cluster.size == 0:  # a degenerate (zero-area) best box overlaps nothing, not even itself
            cluster = remaining[:1]
        remaining = remaining[~np.isin(remaining, cluster)]
        weights = scores[cluster].astype(np.float64)
        total = weights.sum()
        weights = weights / total if total > 0 else np.full(cluster.size, 1.0 / cluster.size)
        box = (boxes[cluster] * weights[:, np.newaxis]).sum(axis=0)
        points = (keypoints[cluster] * weights[:, np.newaxis, np.newaxis]).sum(axis=0)
        detections.append(
            Detection(
                score=float(scores[best]),
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                keypoints=tuple((float(x), float(y)) for x, y in points),
            )
        )
    return detections


def _unletterbox(x: float, y: float, placement: Letterbox) -> tuple[float, float]:
    """A point of the square input -> the same point as fractions of the original image."""
    return (x - placement.left) / placement.width, (y - placement.top) / placement.height


def person_box(detection: Detection, placement: Letterbox, width: int, height: int) -> dict[str, float]:
    """The Rekognition ``BoundingBox`` (ratios of the image) around one detected person.

    Built in pixels (the body circle is round in pixels, not in ratios) from the hip centre
    ``c`` and the body circle's radius ``r = |top - c|``: a rectangle along the body axis from
    ``FEET_REACH r`` below ``c`` to ``HEAD_REACH r`` above it, ``HALF_WIDTH r`` either side, its
    axis-aligned hull united with the detector's own box, clipped to the image.
    """
    import numpy as np

    def pixels(point: tuple[float, float]) -> NDArray[np.float64]:
        x, y = _unletterbox(point[0], point[1], placement)
        return np.array([x * width, y * height], dtype=np.float64)

    hip = pixels(detection.keypoints[HIP])
    top = pixels(detection.keypoints[BODY_TOP])
    corners = [pixels((detection.box[0], detection.box[1])), pixels((detection.box[2], detection.box[3]))]
    radius = float(np.linalg.norm(top - hip))
    if radius > 0:
        up = (top - hip) / radius
        across = np.array([-up[1], up[0]])
        for along in (HEAD_REACH * radius, -FEET_REACH * radius):
            for side in (HALF_WIDTH * radius, -HALF_WIDTH * radius):
                corners.append(hip + along * up + side * across)
    points = np.stack(corners)
    left = min(max(float(points[:, 0].min()) / width, 0.0), 1.0)
    top_ratio = min(max(float(points[:, 1].min()) / height, 0.0), 1.0)
    right = min(max(float(points[:, 0].max()) / width, 0.0), 1.0)
    bottom = min(max(float(points[:, 1].max()) / height, 0.0), 1.0)
    return {"Width": right - left, "Height": bottom - top_ratio, "Left": left, "Top": top_ratio}


def detect(image: Image, *, min_score: float = MIN_SCORE) -> tuple[list[Detection], Letterbox]:
    """Run the detector on one image: detections (input coordinates) and the letterbox."""
    tensor, placement = letterbox(image)
    detector = DETECTOR.get()
    raw_boxes, raw_scores = detector.session.run(None, {detector.input_name: tensor})
    scores, boxes, keypoints = decode(raw_boxes[0], raw_scores[0], ssd_anchors())
    kept = []
    for detection in weighted_nms(scores, boxes, keypoints, min_score=min_score):
        # a centre outside the picture (in the black border) is no person of this image
        x = (detection.box[0] + detection.box[2]) / 2
        y = (detection.box[1] + detection.box[3]) / 2
        u, v = _unletterbox(x, y, placement)
        if 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0:
            kept.append(detection)
    return kept, placement


def detect_people(image: Image, *, min_score: float = MIN_SCORE) -> list[dict[str, Any]]:
    """Rekognition-shaped labels for the people in ``image``: ``[Person]`` or ``[]``.

    ``Person`` carries one ``Instance`` per person (best first), its ``Confidence`` being the best
    instance's. ``min_score`` (0..1) is the detector's own cut, MediaPipe's 0.5; the labeler's
    ``MinConfidence`` (0..100) is applied by the caller like for any label.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    detections, placement = detect(image, min_score=min_score)
    if not detections:
        return []
    width, height = image.size
    instances = [
        {
            "BoundingBox": person_box(detection, placement, width, height),
            "Confidence": 100.0 * detection.score,
        }
        for detection in detections
    ]
    return [
        {
            "Name": PERSON["Name"],
            "Confidence": instances[0]["Confidence"],
            "Instances": instances,
            "Parents": [dict(parent) for parent in PERSON["Parents"]],
            "Aliases": [dict(alias) for alias in PERSON["Aliases"]],
            "Categories": [dict(category) for category in PERSON["Categories"]],
        }
    ]


def face_labels(face_details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Face`` and ``Head`` labels, as DetectLabels gives them, from ``DetectFaces`` answers.

    The person detector finds bodies, not faces, so faces come from the ``faces`` feature (MTCNN
    in the local labeler) when the run asks for it. Like Rekognition's, both labels have no
    ``Instances`` and the best face's confidence; ``[]`` when no face was found. A caller adding
    them should also make sure ``Person`` (their parent) is among the labels.
    """
    if not face_details:
        return []
    confidence = max(float(face["Confidence"]) for face in face_details)
    return [
        {
            "Name": name,
            "Confidence": confidence,
            "Instances": [],
            "Parents": [{"Name": parent} for parent in parents],
            "Aliases": [],
            "Categories": [{"Name": "Person Description"}],
        }
        for name, parents in (("Face", FACE_PARENTS), ("Head", HEAD_PARENTS))
    ]


def person_enabled() -> bool:
    """Whether the local labeler runs the Person detector (``IMAGELABELS_LOCAL_PERSON``, default
    on; ``0``/``false``/``no``/``off`` turn it off)."""
    raw = environment_value(ENABLED_ENV).strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENABLED_ENV} must be on or off (1/0, true/false, yes/no), got {raw!r}")


def merge_labels(labels: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``labels`` (DetectLabels order) with ``extra`` merged in, sorted like DetectLabels.

    A label already there (the classifier also says ``Person``, as the parent of "Scuba Diver")
    keeps the higher confidence and gains the instances it lacked. Every parent of an added
    label becomes a label too when missing (``Face`` brings ``Person``), with the child's
    confidence and no instances, as Rekognition lists ancestors; one already there is raised to
    the child's confidence when below it, as the classifier's aggregated parents never are. Sorted by confidence, then name;
    the caller applies its filters and ``MaxLabels`` afterwards.
    """
    merged = {label["Name"]: label for label in labels}
    for label in extra:
        current = merged.get(label["Name"])
        if current is None:
            merged[label["Name"]] = label
            continue
        merged[label["Name"]] = {
            **current,
            "Confidence": max(float(current["Confidence"]), float(label["Confidence"])),
            "Instances": current.get("Instances") or label.get("Instances") or [],
        }
    for label in extra:
        for parent in label.get("Parents", []):
            name = parent["Name"]
            if name in merged:  # a parent is at least as sure as its child (a face is a person)
                current = merged[name]
                if float(current["Confidence"]) < float(label["Confidence"]):
                    merged[name] = {**current, "Confidence": float(label["Confidence"])}
                continue
            known = PERSON if name == PERSON["Name"] else None
            merged[name] = {
                "Name": name,
                "Confidence": float(label["Confidence"]),
                "Instances": [],
                "Parents": [dict(p) for p in known["Parents"]] if known else [],
                "Aliases": [dict(a) for a in known["Aliases"]] if known else [],
                "Categories": [dict(c) for c in (known or label)["Categories"]],
            }
    return sorted(merged.values(), key=lambda label: (-float(label["Confidence"]), label["Name"]))
