"""One source of defaults: the trigger form, a run whose conf leaves a Param out, and the
labeling dataclass agree (they had drifted: ``max_labels`` 50 in the form, no cap without it)."""

from __future__ import annotations

import dataclasses

from imagelabels.labelers.base import LabelingSettings
from imagelabels.settings import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from imagelabels.tasks.params import labeling_params, labeling_settings


def test_the_form_shows_the_dataclass_defaults() -> None:
    params = labeling_params()
    defaults = LabelingSettings()
    for field in dataclasses.fields(LabelingSettings):
        shown = params[field.name].value
        expected = getattr(defaults, field.name)
        assert (tuple(shown) if field.name == "features" else shown) == expected, field.name


def test_a_run_without_params_labels_like_the_form() -> None:
    assert labeling_settings({}) == LabelingSettings()
    form = {name: param.value for name, param in labeling_params().items()}
    assert labeling_settings(form) == LabelingSettings()


def test_batch_size_default_and_bound_come_from_settings() -> None:
    param = labeling_params()["batch_size"]
    assert param.value == DEFAULT_BATCH_SIZE
    assert param.schema["maximum"] == MAX_BATCH_SIZE
