"""Labelers: anything that turns a prepared image into one Rekognition-shaped label result.

* :mod:`.base` - the :class:`Labeler` protocol and :class:`LabelingSettings` (features, thresholds);
* :mod:`.rekognition` - AWS Rekognition through boto3, rate-limited by :mod:`.ratelimit`;
* :mod:`.local` - the offline model (EfficientNet-Lite0 ONNX, :mod:`.local_models`, the Person
  detector :mod:`.person`, label synonyms :mod:`.aliases`);
* :mod:`.registry` - the name -> labeler table; :mod:`.costs` - what a run will cost.

May import: settings, errors, fingerprints, documents, preflight. Never the engine: a labeler
answers for one image and knows nothing of where its result is stored.
"""

from __future__ import annotations

from imagelabels.errors import LabelingError
from imagelabels.labelers.base import Labeler, LabelingSettings
from imagelabels.labelers.registry import AVAILABLE_LABELERS, make_labeler

__all__ = ["AVAILABLE_LABELERS", "Labeler", "LabelingError", "LabelingSettings", "make_labeler"]
