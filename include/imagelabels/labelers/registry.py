"""Choose a labeler by name (the ``labeler`` Param of the ingestion DAGs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagelabels.labelers.base import Labeler, LabelingSettings
from imagelabels.labelers.rekognition import RekognitionLabeler

# name -> factory(clients, settings). ``clients`` provides what a labeler needs (e.g. a
# ``rekognition`` boto3 client); new labelers register here.
LabelerFactory = Callable[[Callable[[str], Any], LabelingSettings], Labeler]

AVAILABLE_LABELERS: dict[str, LabelerFactory] = {
    "rekognition": lambda client_for, settings: RekognitionLabeler(client_for("rekognition"), settings),
}


def make_labeler(name: str, client_for: Callable[[str], Any], settings: LabelingSettings) -> Labeler:
    """Build the labeler called ``name``.

    :param client_for: returns a boto3 client for a service name (``"rekognition"``, ``"s3"``).
    :raises ValueError: for an unknown name, listing the known ones.
    """
    try:
        factory = AVAILABLE_LABELERS[name]
    except KeyError:
        known = ", ".join(sorted(AVAILABLE_LABELERS))
        raise ValueError(f"unknown labeler {name!r}; choose one of: {known}") from None
    return factory(client_for, settings)
