"""What the four operations answer, from canned data or from the local model.

Request parameters (MinConfidence, MaxLabels, Features, Settings.GeneralLabels filters,
Filters.WordFilter, Attributes) are applied here, the same way for both sources, so a test that
checks a filter works whichever source produced the labels. The stand-in implements Rekognition's
documented semantics itself rather than reusing the pipeline's helpers: it is the oracle the
pipeline is tested against.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from imagelabels.devstack.standin import canned
from imagelabels.devstack.standin.config import StandInConfig
from imagelabels.devstack.standin.errors import ServiceError

LABEL_FILTER_KEYS = (
    "LabelInclusionFilters",
    "LabelExclusionFilters",
    "LabelCategoryInclusionFilters",
    "LabelCategoryExclusionFilters",
)
LABEL_FEATURES = ("GENERAL_LABELS", "IMAGE_PROPERTIES")
LOCAL_MODULE = "imagelabels.labelers.local"
_MAX_LABELS_DEFAULT = 1000  # Rekognition's default and upper bound

Json = dict[str, Any]


class Source(Protocol):
    """Where raw answers come from; filtering and truncation are done by the callers."""

    def labels(self, data: bytes, *, min_confidence: float, max_labels: int) -> tuple[list[Json], str]: ...

    def image_properties(self, data: bytes) -> Json: ...

    def moderation(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]: ...

    def text(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]: ...

    def faces(self, data: bytes) -> list[Json]: ...


class CannedSource:
    """Fixed answers (:mod:`imagelabels.devstack.standin.canned`), overridable by ``StandInConfig.canned``."""

    def __init__(self, overrides: Mapping[str, Any]) -> None:
        self._overrides = overrides

    def _get(self, key: str, default: Any) -> Any:
        return copy.deepcopy(self._overrides.get(key, default))

    def labels(self, data: bytes, *, min_confidence: float, max_labels: int) -> tuple[list[Json], str]:
        return self._get("Labels", canned.LABELS), str(
            self._get("LabelModelVersion", canned.LABEL_MODEL_VERSION)
        )

    def image_properties(self, data: bytes) -> Json:
        return dict(self._get("ImageProperties", canned.IMAGE_PROPERTIES))

    def moderation(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]:
        version = self._get("ModerationModelVersion", canned.MODERATION_MODEL_VERSION)
        return self._get("ModerationLabels", canned.MODERATION_LABELS), str(version)

    def text(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]:
        version = self._get("TextModelVersion", canned.TEXT_MODEL_VERSION)
        return self._get("TextDetections", canned.TEXT_DETECTIONS), str(version)

    def faces(self, data: bytes) -> list[Json]:
        return list(self._get("FaceDetails", [canned.FACE_DETAIL]))


def local_module() -> Any:
    """The local labeler module, imported on first use (it loads ONNX models)."""
    return importlib.import_module(LOCAL_MODULE)


class LocalSource:
    """The local model (:mod:`imagelabels.labelers.local`) on the decoded image."""

    def __init__(self) -> None:
        self._local = local_module()

    def labels(self, data: bytes, *, min_confidence: float, max_labels: int) -> tuple[list[Json], str]:
        answer = self._local.detect_labels(decode(data), min_confidence=min_confidence, max_labels=max_labels)
        return list(answer["Labels"]), str(answer["LabelModelVersion"])

    def image_properties(self, data: bytes) -> Json:
        return measured_image_properties(decode(data))

    def moderation(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]:
        answer = self._local.detect_moderation_labels(decode(data), min_confidence=min_confidence)
        return list(answer["ModerationLabels"]), str(answer["ModerationModelVersion"])

    def text(self, data: bytes, *, min_confidence: float) -> tuple[list[Json], str]:
        answer = self._local.detect_text(decode(data), min_confidence=min_confidence)
        return list(answer["TextDetections"]), str(answer["TextModelVersion"])

    def faces(self, data: bytes) -> list[Json]:
        return list(self._local.detect_faces(decode(data))["FaceDetails"])


def make_source(config: StandInConfig) -> Source:
    """The source chosen by ``config.labels``; local mode fails here, at start, if unavailable."""
    if config.labels == "local":
        return LocalSource()
    return CannedSource(config.canned)


def decode(data: bytes) -> Any:
    """A fully decoded RGB Pillow image; undecodable content is ``InvalidImageFormatException``."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ServiceError("InvalidImageFormatException") from None


def measured_image_properties(image: Any) -> Json:
    """``ImageProperties.Quality`` (brightness, contrast, sharpness on 0..100) and the dominant
    colours, measured on the image: enough for code that reads the shape and sorts by quality."""
    from PIL import ImageFilter, ImageStat

    gray = image.convert("L")
    stat = ImageStat.Stat(gray)
    edges = ImageStat.Stat(gray.filter(ImageFilter.FIND_EDGES))
    quality = {
        "Brightness": round(stat.mean[0] / 255 * 100, 2),
        "Contrast": round(min(100.0, stat.stddev[0] / 127.5 * 100), 2),
        "Sharpness": round(min(100.0, edges.mean[0] / 32 * 100), 2),
    }
    small = image.copy()
    small.thumbnail((64, 64))
    colors = small.quantize(colors=3).convert("RGB").getcolors(64 * 64) or []
    pixels = sum(count for count, _ in colors) or 1
    dominant = [
        {
            "Red": r,
            "Green": g,
            "Blue": b,
            "HexCode": f"#{r:02X}{g:02X}{b:02X}",
            "PixelPercent": round(count / pixels * 100, 2),
        }
        for count, (r, g, b) in sorted(colors, reverse=True)
    ]
    return {"Quality": quality, "DominantColors": dominant}


def _number(request: Json, key: str, default: float, low: float, high: float) -> float:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ServiceError("InvalidParameterException", f"{key} must be a number within {low:g}..{high:g}")
    return float(value)


def _string_list(value: Any, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ServiceError("InvalidParameterException", f"{what} must be a list of strings")
    if allowed is not None and (unknown := [v for v in value if v not in allowed]):
        raise ServiceError("InvalidParameterException", f"{what}: unknown values {unknown}")
    return list(value)


def label_filters(request: Json) -> dict[str, list[str]]:
    """``Settings.GeneralLabels``, validated."""
    settings = request.get("Settings") or {}
    if not isinstance(settings, dict):
        raise ServiceError("InvalidParameterException", "Settings must be an object")
    general = settings.get("GeneralLabels") or {}
    if not isinstance(general, dict):
        raise ServiceError("InvalidParameterException", "Settings.GeneralLabels must be an object")
    unknown = sorted(set(general) - set(LABEL_FILTER_KEYS))
    if unknown:
        raise ServiceError("InvalidParameterException", f"unknown GeneralLabels filters {unknown}")
    return {key: _string_list(value, key) for key, value in general.items()}


def filter_labels(labels: list[Json], filters: Mapping[str, list[str]]) -> list[Json]:
    """Keep a label when its name passes the name filters and its categories the category filters
    (an inclusion list, when given, must match; an exclusion match always removes it)."""
    include = set(filters.get("LabelInclusionFilters", []))
    exclude = set(filters.get("LabelExclusionFilters", []))
    include_categories = set(filters.get("LabelCategoryInclusionFilters", []))
    exclude_categories = set(filters.get("LabelCategoryExclusionFilters", []))

    def keep(label: Json) -> bool:
        name = label.get("Name")
        categories = {c.get("Name") for c in label.get("Categories", [])}
        if (include and name not in include) or name in exclude:
            return False
        return not (include_categories and not categories & include_categories) and not (
            categories & exclude_categories
        )

    return [label for label in labels if keep(label)]


def _confident(items: list[Json], min_confidence: float) -> list[Json]:
    return [item for item in items if float(item.get("Confidence", 0)) >= min_confidence]


def detect_labels(source: Source, request: Json, data: bytes) -> Json:
    """DetectLabels: labels above MinConfidence, filtered, at most MaxLabels, highest first."""
    min_confidence = _number(request, "MinConfidence", 55.0, 0, 100)
    max_labels = int(_number(request, "MaxLabels", _MAX_LABELS_DEFAULT, 0, _MAX_LABELS_DEFAULT))
    features = _string_list(request.get("Features", ["GENERAL_LABELS"]), "Features", LABEL_FEATURES)
    filters = label_filters(request)
    # Ask the source for more than MaxLabels when filters may remove some of them.
    wanted = _MAX_LABELS_DEFAULT if filters else max_labels
    labels, version = source.labels(data, min_confidence=min_confidence, max_labels=max(wanted, 1))
    answer: Json = {"LabelModelVersion": version, "Labels": []}
    if "GENERAL_LABELS" in features or not features:
        kept = filter_labels(_confident(labels, min_confidence), filters)
        kept.sort(key=lambda label: -float(label.get("Confidence", 0)))
        answer["Labels"] = kept[:max_labels]
    if "IMAGE_PROPERTIES" in features:
        answer["ImageProperties"] = source.image_properties(data)
    return answer


def detect_moderation_labels(source: Source, request: Json, data: bytes) -> Json:
    """DetectModerationLabels: moderation labels above MinConfidence (default 50)."""
    min_confidence = _number(request, "MinConfidence", 50.0, 0, 100)
    labels, version = source.moderation(data, min_confidence=min_confidence)
    return {"ModerationLabels": _confident(labels, min_confidence), "ModerationModelVersion": version}


def detect_text(source: Source, request: Json, data: bytes) -> Json:
    """DetectText: lines and words above ``Filters.WordFilter.MinConfidence`` (default: all)."""
    filters = request.get("Filters") or {}
    if not isinstance(filters, dict):
        raise ServiceError("InvalidParameterException", "Filters must be an object")
    word_filter = filters.get("WordFilter") or {}
    if not isinstance(word_filter, dict):
        raise ServiceError("InvalidParameterException", "Filters.WordFilter must be an object")
    min_confidence = _number(word_filter, "MinConfidence", 0.0, 0, 100)
    detections, version = source.text(data, min_confidence=min_confidence)
    return {"TextDetections": _confident(detections, min_confidence), "TextModelVersion": version}


def detect_faces(source: Source, request: Json, data: bytes) -> Json:
    """DetectFaces: the default attributes, plus the ones named in Attributes (or all)."""
    attributes = set(_string_list(request.get("Attributes", ["DEFAULT"]), "Attributes"))
    faces = source.faces(data)
    if isinstance(source, CannedSource):
        wanted = set(canned.FACE_ATTRIBUTES) if "ALL" in attributes else attributes
        for face in faces:
            for attribute in sorted(wanted & set(canned.FACE_ATTRIBUTES)):
                field, value = canned.FACE_ATTRIBUTES[attribute]
                face.setdefault(field, copy.deepcopy(value))
    return {"FaceDetails": faces}


ANSWERS: dict[str, Callable[[Source, Json, bytes], Json]] = {
    "DetectLabels": detect_labels,
    "DetectModerationLabels": detect_moderation_labels,
    "DetectText": detect_text,
    "DetectFaces": detect_faces,
}
