"""The labeler interface every implementation (Rekognition, the local model, ...) follows.

A labeler gets a :class:`~imagelabels.preflight.prepared.PreparedImage` (an object that passed preflight)
and returns one :class:`~imagelabels.documents.LabelResult` in Rekognition's response shapes. The
features asked for (labels, moderation, text, faces) and their thresholds are the same for every
labeler, so switching labelers changes where the answer comes from, never the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagelabels.documents import LabelResult
from imagelabels.preflight.prepared import PreparedImage

FEATURES = ("labels", "moderation", "text", "faces")
DEFAULT_FEATURES = ("labels", "moderation")

# DetectLabels' Settings.GeneralLabels filters (all lists of strings).
LABEL_FILTER_KEYS = (
    "LabelInclusionFilters",
    "LabelExclusionFilters",
    "LabelCategoryInclusionFilters",
    "LabelCategoryExclusionFilters",
)


@dataclass(frozen=True)
class LabelingSettings:
    """Per-run knobs, the same for every labeler (they mirror Rekognition's parameters).

    :param min_confidence: ``DetectLabels.MinConfidence``.
    :param max_labels: ``DetectLabels.MaxLabels`` (``None``: no limit).
    :param features: which of :data:`FEATURES` to run.
    :param moderation_min_confidence: ``DetectModerationLabels.MinConfidence``.
    :param text_min_confidence: minimum confidence of a detected text line.
    :param label_filters: ``DetectLabels.Settings.GeneralLabels`` (inclusion/exclusion filters).
    :param image_properties: also ask DetectLabels for ``IMAGE_PROPERTIES`` (quality, colours).
    """

    min_confidence: float = 70.0
    max_labels: int | None = 50
    features: tuple[str, ...] = DEFAULT_FEATURES
    moderation_min_confidence: float = 50.0
    text_min_confidence: float = 80.0
    label_filters: Mapping[str, list[str]] = field(default_factory=dict)
    image_properties: bool = False

    def __post_init__(self) -> None:
        for name in ("min_confidence", "moderation_min_confidence", "text_min_confidence"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise ValueError(f"{name} must be within 0..100, got {value}")
        if self.max_labels is not None and self.max_labels < 1:
            raise ValueError(f"max_labels must be at least 1, got {self.max_labels}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features:
            raise ValueError(
                f"features must be a non-empty subset of {list(FEATURES)}, got {list(self.features)}"
            )
        if "labels" not in self.features:
            raise ValueError("features must include 'labels' (every document carries its labels)")
        for key, values in self.label_filters.items():
            if key not in LABEL_FILTER_KEYS:
                raise ValueError(f"unknown label filter {key!r}; known: {', '.join(LABEL_FILTER_KEYS)}")
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ValueError(f"label filter {key} must be a list of non-empty strings, got {values!r}")

    def wants(self, feature: str) -> bool:
        """Whether ``feature`` is asked for in this run."""
        return feature in self.features


class Labeler(Protocol):
    """Turns one prepared image into labels (and moderation, text, faces when asked).

    Optional attributes the pipeline honours: ``preferred_concurrency`` (threads per batch,
    default 8) and ``wants_pixels`` (``True``: preflight keeps the decoded image for the
    labeler, which then does not decode again).
    """

    @property
    def name(self) -> str:
        """Stable name stored in every document (``labeler`` field)."""
        ...

    def label(self, image: PreparedImage) -> LabelResult:
        """Label one image; raise :class:`LabelingError` when it cannot be labeled.

        Must be safe to call from several threads at once (batches label concurrently).
        """
        ...


def apply_label_filters(
    labels: list[dict[str, Any]], filters: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    """Apply ``Settings.GeneralLabels`` filters the way Rekognition does, for labelers that
    cannot push them to a service (the local model)."""
    include = set(filters.get("LabelInclusionFilters", []))
    exclude = set(filters.get("LabelExclusionFilters", []))
    include_categories = set(filters.get("LabelCategoryInclusionFilters", []))
    exclude_categories = set(filters.get("LabelCategoryExclusionFilters", []))
    kept = []
    for label in labels:
        categories = {c.get("Name") for c in label.get("Categories", [])}
        if include and label["Name"] not in include:
            continue
        if label["Name"] in exclude:
            continue
        if include_categories and not categories & include_categories:
            continue
        if categories & exclude_categories:
            continue
        kept.append(label)
    return kept
