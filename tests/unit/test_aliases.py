"""Aliases: what people type maps to the labels the local labeler gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image

from imagelabels.labelers import local, local_models
from imagelabels.labelers.aliases import label_aliases


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("kitty", {"Cat"}),
        ("kitten", {"Cat"}),
        ("coffee", {"Coffee", "Espresso"}),
        ("people", {"Person"}),
        ("human", {"Person"}),
        ("woman", {"Person"}),
        ("man", {"Person"}),
        ("puppy", {"Dog"}),
        ("automobile", {"Car"}),
        ("car", {"Car", "Sports Car", "Convertible"}),
        ("cat", {"Cat"}),
    ],
)
def test_words_people_type_find_labels(word: str, expected: set[str]) -> None:
    assert expected <= set(label_aliases()[word])


def test_a_label_of_that_name_comes_first_and_keys_are_lower_case() -> None:
    aliases = label_aliases()
    assert aliases["coffee"][0] == "Coffee"
    assert aliases["car"][0] == "Car"
    assert all(word == word.lower() for word in aliases)
    aliases["kitty"].append("changed")
    assert label_aliases()["kitty"] == ["Cat"]


def test_taxonomy_aliases_have_rekognitions_shape() -> None:
    labels: dict[str, Any] = json.loads(local_models.TAXONOMY_PATH.read_text(encoding="utf-8"))["labels"]
    for name, entry in labels.items():
        assert isinstance(entry["Aliases"], list), name
        for alias in entry["Aliases"]:
            assert set(alias) == {"Name"}
            assert alias["Name"]
            assert alias["Name"].lower() != name.lower()
    assert {"Kitty", "Kitten"} <= {alias["Name"] for alias in labels["Cat"]["Aliases"]}
    assert "Machine" not in {alias["Name"] for alias in labels["Car"]["Aliases"]}


def test_the_local_labeler_emits_aliases() -> None:
    from pathlib import Path

    with Image.open(Path(__file__).resolve().parents[2] / "sample_images" / "chelsea.png") as opened:
        labels = local.detect_labels(opened.convert("RGB"), min_confidence=50, max_labels=None)["Labels"]
    cat = next(label for label in labels if label["Name"] == "Cat")
    assert {"Name": "Kitty"} in cat["Aliases"]


def test_documents_keep_the_aliases() -> None:
    from imagelabels.documents import normalize_label

    label = {
        "Name": "Cat",
        "Confidence": 90.0,
        "Aliases": [{"Name": "Kitty"}],
        "Parents": [],
        "Categories": [],
    }
    assert normalize_label(label)["Aliases"] == [{"Name": "Kitty"}]
