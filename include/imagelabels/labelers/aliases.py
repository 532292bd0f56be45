"""The words people search labels by: every label's ``Aliases`` from the local taxonomy.

:func:`label_aliases` maps a lower-case word or phrase ("kitty", "coffee", "people") to the label
names it stands for (``Cat``; ``Coffee``, ``Espresso``, ``Coffee Mug``...; ``Person``), for query
expansion on the search side. Every label's own name maps to itself too, so a caller can expand
any word without first checking whether it is a label. The taxonomy ships next to the local model
(``models/imagenet_taxonomy.json``); reading it needs neither onnxruntime nor the model.
"""

from __future__ import annotations

import json
from functools import cache

from imagelabels.labelers.local_models import TAXONOMY_PATH

__all__ = ["label_aliases", "names_for"]


@cache
def _load() -> dict[str, tuple[str, ...]]:
    labels = json.loads(TAXONOMY_PATH.read_text(encoding="utf-8"))["labels"]
    found: dict[str, list[str]] = {}
    for name, entry in labels.items():
        for word in (name, *(alias["Name"] for alias in entry.get("Aliases", []))):
            names = found.setdefault(word.lower(), [])
            if name not in names:
                names.append(name)
    # the label of that very name first, then the others by name
    return {
        word: tuple(sorted(names, key=lambda name: (name.lower() != word, name)))
        for word, names in found.items()
    }


def names_for(word: str) -> tuple[str, ...]:
    """The label names ``word`` stands for (any case and spacing), ``()`` when none."""
    return _load().get(" ".join(word.split()).lower(), ())


def label_aliases() -> dict[str, list[str]]:
    """Lower-case alias (or label name) -> label names, e.g. ``"kitty" -> ["Cat"]``.

    A fresh dict each call (the parsed taxonomy is cached), so callers may change it.
    """
    return {word: list(names) for word, names in _load().items()}
