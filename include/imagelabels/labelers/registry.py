"""Choose a labeler by name (the ``labeler`` Param of the ingestion DAGs).

* ``local``: EfficientNet-Lite0 + open_nsfw on onnxruntime, offline, free (the embedded default);
* ``rekognition``: AWS Rekognition through the Airflow AWS connection, rate-limited to the
  account's quota (:mod:`imagelabels.labelers.ratelimit`).

Factories import their labeler lazily, so choosing one never loads the other's dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imagelabels.labelers.base import Labeler, LabelingSettings
from imagelabels.settings import environment_value

# name -> factory(client_for, settings). ``client_for`` returns a boto3 client for a service name.
LabelerFactory = Callable[[Callable[[str], Any], LabelingSettings], Labeler]

DEFAULT_LABELER = "local"


def _rekognition(client_for: Callable[[str], Any], settings: LabelingSettings) -> Labeler:
    from imagelabels.labelers.ratelimit import limiter_from_settings
    from imagelabels.labelers.rekognition import RekognitionLabeler

    client = client_for("rekognition")
    return RekognitionLabeler(client, settings, limiter_from_settings(client.meta.region_name))


def _local(client_for: Callable[[str], Any], settings: LabelingSettings) -> Labeler:
    from imagelabels.labelers.local import LocalLabeler

    return LocalLabeler(settings)


AVAILABLE_LABELERS: dict[str, LabelerFactory] = {"local": _local, "rekognition": _rekognition}


def default_labeler() -> str:
    """``IMAGELABELS_LABELER`` (``local`` unless a deployment chooses ``rekognition``)."""
    name = environment_value("IMAGELABELS_LABELER").strip() or DEFAULT_LABELER
    if name not in AVAILABLE_LABELERS:
        raise ValueError(f"IMAGELABELS_LABELER={name!r} is not one of {sorted(AVAILABLE_LABELERS)}")
    return name


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
