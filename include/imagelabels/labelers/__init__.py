"""Labelers: anything that turns an S3 object into one Rekognition-shaped label result."""

from __future__ import annotations

from imagelabels.errors import LabelingError
from imagelabels.labelers.base import Labeler, LabelingSettings
from imagelabels.labelers.registry import AVAILABLE_LABELERS, make_labeler

__all__ = ["AVAILABLE_LABELERS", "Labeler", "LabelingError", "LabelingSettings", "make_labeler"]
