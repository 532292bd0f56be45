"""The cost estimate and the max_cost limit: per feature, per labeler, price overrides, rounding."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from imagelabels.labelers import costs
from imagelabels.labelers.base import LabelingSettings

NO_ENV: dict[str, str] = {}


def _settings(*features: str, image_properties: bool = False) -> LabelingSettings:
    return LabelingSettings(features=("labels", *features), image_properties=image_properties)


def test_the_shipped_table_names_its_source_and_date_and_prices_every_rekognition_call() -> None:
    table = costs.load_prices(environ=NO_ENV)
    assert "aws.amazon.com/rekognition/pricing" in table.source
    assert table.as_of.startswith("20")
    assert {
        name: table.prices["rekognition"][name] for name in ("labels", "moderation", "text", "faces")
    } == {name: Decimal("0.001") for name in ("labels", "moderation", "text", "faces")}
    assert table.prices["local"] == {}


@pytest.mark.parametrize(
    ("features", "per_image"),
    [
        ((), "0.001"),
        (("moderation",), "0.002"),
        (("text",), "0.002"),
        (("moderation", "text", "faces"), "0.004"),
    ],
)
def test_each_feature_is_one_paid_call_per_image(features: tuple[str, ...], per_image: str) -> None:
    table = costs.load_prices(environ=NO_ENV)
    estimate = costs.estimate_cost(1000, "rekognition", _settings(*features), table)
    assert estimate.per_image == Decimal(per_image)
    assert estimate.total == Decimal(per_image) * 1000
    assert [name for name, _ in estimate.unit_prices] == ["labels", *features]


def test_image_properties_is_priced_on_top_of_labels() -> None:
    table = costs.load_prices(environ=NO_ENV)
    plain = costs.estimate_cost(10, "rekognition", _settings(), table)
    with_properties = costs.estimate_cost(10, "rekognition", _settings(image_properties=True), table)
    assert with_properties.total - plain.total == 10 * table.prices["rekognition"]["image_properties"] > 0


def test_the_local_labeler_is_free_whatever_it_runs() -> None:
    estimate = costs.estimate_cost(
        10**6,
        "local",
        _settings("moderation", "text", "faces", image_properties=True),
        costs.load_prices(environ=NO_ENV),
    )
    assert (estimate.total, estimate.paid, estimate.unit_prices) == (Decimal(0), False, ())
    costs.check_budget(estimate, Decimal(0))  # a limit of 0 never stops the free labeler
    assert "free" in estimate.describe()


def test_a_labeler_without_prices_is_refused_not_free() -> None:
    with pytest.raises(costs.PriceTableError, match="no prices for labeler 'clip'"):
        costs.estimate_cost(1, "clip", _settings(), costs.load_prices(environ=NO_ENV))


def test_env_overrides_one_price_and_a_file_replaces_the_table(tmp_path: Path) -> None:
    env = {"IMAGELABELS_PRICE_REKOGNITION_MODERATION": "0.0006"}
    table = costs.load_prices(environ=env)
    assert table.prices["rekognition"]["moderation"] == Decimal("0.0006")
    assert table.prices["rekognition"]["labels"] == Decimal("0.001")
    assert costs.estimate_cost(1000, "rekognition", _settings("moderation"), table).total == Decimal("1.6")

    own = tmp_path / "prices.yaml"
    own.write_text(
        "labelers:\n  rekognition:\n    labels: 0.0008\n  local: {}\nsource: contract\nas_of: '2027-01-01'\n"
    )
    table = costs.load_prices(environ={"IMAGELABELS_PRICES_FILE": str(own)})
    assert (table.source, table.prices["rekognition"]) == ("contract", {"labels": Decimal("0.0008")})
    # a feature the table does not price costs nothing there (here: moderation under a contract)
    assert costs.estimate_cost(5, "rekognition", _settings("moderation"), table).total == Decimal("0.004")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IMAGELABELS_PRICE_REKOGNITION_LABLES": "0.001"}, "IMAGELABELS_PRICE_REKOGNITION_LABLES"),
        ({"IMAGELABELS_PRICE_CLIP_LABELS": "0.001"}, "IMAGELABELS_PRICE_CLIP_LABELS"),
        ({"IMAGELABELS_PRICE_REKOGNITION_LABELS": "cheap"}, "not a number"),
        ({"IMAGELABELS_PRICE_REKOGNITION_LABELS": "-1"}, "must be a finite amount >= 0"),
        ({"IMAGELABELS_PRICES_FILE": "/nonexistent/prices.yaml"}, "cannot read the price table"),
    ],
)
def test_bad_overrides_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(costs.PriceTableError, match=message):
        costs.load_prices(environ=env)


def test_a_table_with_an_unknown_feature_is_refused(tmp_path: Path) -> None:
    own = tmp_path / "prices.yaml"
    own.write_text("labelers:\n  rekognition:\n    celebrities: 0.001\n")
    with pytest.raises(costs.PriceTableError, match="unknown celebrities"):
        costs.load_prices(own, environ=NO_ENV)


def test_money_is_exact_and_shown_rounded_up() -> None:
    table = costs.PriceTable({"rekognition": {"labels": Decimal("0.1")}})
    estimate = costs.estimate_cost(3, "rekognition", _settings(), table)
    assert 3 * 0.1 > 0.3  # what floats would compare
    assert estimate.total == Decimal("0.3")
    costs.check_budget(estimate, costs.parse_max_cost(0.3, NO_ENV))  # equal to the limit: runs

    tiny = costs.estimate_cost(
        1, "rekognition", _settings(), costs.PriceTable({"rekognition": {"labels": Decimal("0.00001")}})
    )
    assert costs.format_usd(tiny.total) == "$0.0001"  # never shown as $0.0000
    assert costs.format_usd(Decimal("12.34561")) == "$12.3457"
    assert costs.format_usd(Decimal("5")) == "$5.0000"


def test_above_the_limit_stops_with_images_features_price_estimate_and_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imagelabels.labelers.costs")
    estimate = costs.estimate_cost(
        5, "rekognition", _settings("moderation"), costs.load_prices(environ=NO_ENV)
    )
    with pytest.raises(costs.CostLimitExceeded) as stopped:
        costs.check_budget(estimate, Decimal("0.0099"))
    message = str(stopped.value)
    for part in (
        "before any paid call",
        "5 image(s)",
        "rekognition [labels $0.0010 + moderation $0.0010]",
        "$0.0020 per image",
        "estimate $0.0100",
        "max_cost $0.0099",
        "as of",
    ):
        assert part in message
    costs.check_budget(estimate, Decimal("0.01"))  # equal: runs
    assert any("estimate $0.0100" in r.getMessage() for r in caplog.records)


def test_max_cost_empty_means_the_setting_else_no_limit_and_zero_is_a_limit() -> None:
    assert costs.parse_max_cost(None, NO_ENV) is None
    assert costs.parse_max_cost("", NO_ENV) is None
    assert costs.parse_max_cost(None, {"IMAGELABELS_MAX_COST": "25"}) == Decimal(25)
    assert costs.parse_max_cost(3, {"IMAGELABELS_MAX_COST": "25"}) == Decimal(3)  # the Param wins
    assert costs.parse_max_cost(0, NO_ENV) == Decimal(0)
    paid = costs.estimate_cost(1, "rekognition", _settings(), costs.load_prices(environ=NO_ENV))
    with pytest.raises(costs.CostLimitExceeded):
        costs.check_budget(paid, Decimal(0))
    costs.check_budget(
        costs.estimate_cost(0, "rekognition", _settings(), costs.load_prices(environ=NO_ENV)), Decimal(0)
    )
    with pytest.raises(costs.PriceTableError, match="IMAGELABELS_MAX_COST"):
        costs.parse_max_cost(None, {"IMAGELABELS_MAX_COST": "lots"})


def test_images_in_adds_up_manifest_counts() -> None:
    assert costs.images_in([{"uri": "s3://b/1", "count": 100}, {"uri": "s3://b/2", "count": 7}]) == 107
    assert costs.images_in([]) == 0
