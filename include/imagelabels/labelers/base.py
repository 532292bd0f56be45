"""The labeler interface every implementation (Rekognition, a local model, ...) follows.

The pipeline only ever sees :class:`~imagelabels.documents.LabelResult`: Rekognition's
``DetectLabels`` shape (``Name``, ``Confidence`` 0-100, ``Parents``, ``Aliases``, ``Categories``,
``Instances``) plus the labeler's name and model version. A new labeler plugs in by implementing
``label`` and registering a factory in :mod:`imagelabels.labelers.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imagelabels.documents import LabelResult, ObjectInfo


@dataclass(frozen=True)
class LabelingSettings:
    """Per-run knobs, the same for every labeler (they mirror DetectLabels' parameters)."""

    min_confidence: float = 70.0
    max_labels: int | None = 50

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 100:
            raise ValueError(f"min_confidence must be within 0..100, got {self.min_confidence}")
        if self.max_labels is not None and self.max_labels < 1:
            raise ValueError(f"max_labels must be at least 1, got {self.max_labels}")


class LabelingError(Exception):
    """An image could not be labeled.

    :param reason: a short stable code for reports (``invalid_image_format``, ``object_gone``...).
    :param retryable: ``False`` when retrying cannot help (the image itself is bad); ``True`` when
        the cause is outside the image (throttling after retries, service errors, permissions).
    """

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retryable = retryable


class Labeler(Protocol):
    """Turns one S3 object version into labels."""

    @property
    def name(self) -> str:
        """Stable name stored in every document (``labeler`` field)."""
        ...

    def label(self, obj: ObjectInfo) -> LabelResult:
        """Label one object; raise :class:`LabelingError` when it cannot be labeled."""
        ...
