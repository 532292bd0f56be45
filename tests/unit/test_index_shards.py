"""``IMAGELABELS_INDEX_SHARDS``: the primary shards of a new ``images-vN`` index."""

from __future__ import annotations

import pytest

from imagelabels.documents import index_template
from imagelabels.settings import DEFAULT_INDEX_SHARDS, ConfigurationError, index_shards


def test_two_shards_unless_the_deployment_says_otherwise() -> None:
    assert DEFAULT_INDEX_SHARDS == 2
    assert index_shards({}) == 2
    assert index_shards({"IMAGELABELS_INDEX_SHARDS": " 6 "}) == 6
    assert index_template(6)["template"]["settings"]["number_of_shards"] == 6
    assert index_template()["template"]["settings"]["number_of_shards"] == 2


@pytest.mark.parametrize("raw", ["0", "-1", "65", "two", "1.5"])
def test_a_wrong_shard_count_is_refused_with_the_setting_named(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"IMAGELABELS_INDEX_SHARDS=.*from 1 to 64"):
        index_shards({"IMAGELABELS_INDEX_SHARDS": raw})
