"""The local labeler's confidence calibration: monotone, bounded, at its fitted points, and what it
does to the sample photos' labels at the default min confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagelabels.labelers import local, local_models
from imagelabels.labelers.base import LabelingSettings
from imagelabels.labelers.local_models import calibrate


def test_calibration_is_monotone_and_keeps_its_bounds() -> None:
    p = np.linspace(0.0, 1.0, 10_001, dtype=np.float32)
    c = calibrate(p)
    assert c.dtype == np.float32
    assert c[0] == 0.0
    assert c[-1] == 100.0
    assert np.all(np.diff(c) >= 0)
    assert np.all((c >= 0) & (c <= 100))
    assert np.all(np.isfinite(c))


@pytest.mark.parametrize(
    ("probability", "expected"),
    [(0.5, 78.0), (0.39, 70.0), (0.2, 47.3), (0.9, 97.0), (0.01, 3.5), (0.999, 99.98)],
)
def test_calibration_known_points(probability: float, expected: float) -> None:
    assert float(calibrate(np.array([probability]))[0]) == pytest.approx(expected, abs=0.6)


def test_calibration_raises_confidences_but_never_reorders_them() -> None:
    p = np.array([0.05, 0.3, 0.6, 0.95], dtype=np.float32)
    assert np.all(calibrate(p) >= 100 * p)
    assert list(np.argsort(calibrate(p))) == list(np.argsort(p))


def test_calibration_constants_are_a_monotone_increasing_map() -> None:
    assert local_models.CALIBRATION_SLOPE > 0
    assert -5 < local_models.CALIBRATION_BIAS < 5


def test_uncalibrated_labels_are_the_probabilities() -> None:
    with Image.open(Path(__file__).resolve().parents[2] / "sample_images" / "chelsea.png") as opened:
        image = opened.convert("RGB")
    raw = {
        label["Name"]: label["Confidence"]
        for label in local.detect_labels(image, min_confidence=0, max_labels=None, calibrated=False)["Labels"]
    }
    calibrated = {
        label["Name"]: label["Confidence"]
        for label in local.detect_labels(image, min_confidence=0, max_labels=None)["Labels"]
    }
    assert raw.keys() == calibrated.keys()
    for name, confidence in raw.items():
        assert calibrated[name] == pytest.approx(float(calibrate(np.array([confidence / 100]))[0]), abs=1e-3)
    # a parent aggregates its classes before calibration, so it still tops each of them
    assert calibrated["Cat"] >= calibrated["Tabby Cat"]


def test_a_kitten_is_findable_at_the_default_min_confidence() -> None:
    """Before calibration this photo got no label at all at the default 70 (Animal 69 %, Cat 39 %)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_set" / "kitten.jpg"
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    settings = LabelingSettings()
    labels = local.detect_labels(image, min_confidence=settings.min_confidence, max_labels=None)["Labels"]
    assert {"Animal", "Mammal"} <= {label["Name"] for label in labels}
    cat = local.detect_labels(image, min_confidence=0, max_labels=None)["Labels"]
    assert next(label for label in cat if label["Name"] == "Cat")["Confidence"] > 65
