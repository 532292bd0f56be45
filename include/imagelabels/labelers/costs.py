"""What a run will cost before it makes a paid call, and the ``max_cost`` guard that stops it.

With Rekognition every feature (``labels``, ``moderation``, ``text``, ``faces``) is one paid call
per image, so a run's cost is known once its batches are planned:

    estimate = images x (sum of the run's per-feature prices)

Prices come from a table (``config/prices.yaml``: source, date, USD per image per feature, per
labeler); a deployment points ``IMAGELABELS_PRICES_FILE`` at its own copy or overrides one price
with ``IMAGELABELS_PRICE_<LABELER>_<FEATURE>``. The local model is in the table with no prices:
it costs 0. A labeler missing from the table is an error, so a new paid labeler can never run as
if it were free.

The estimate is an upper bound: images already indexed, rejected by preflight or deleted since
the listing cost nothing, and later pricing tiers are cheaper. Money is :class:`~decimal.Decimal`
throughout (``3 x 0.1`` must not exceed a limit of ``0.3``); the limit compares the exact
estimate, and what is shown is rounded *up* to a hundredth of a cent so it never understates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from imagelabels.labelers.base import FEATURES, LabelingSettings
from imagelabels.settings import environment

log = logging.getLogger(__name__)

DEFAULT_PRICES_PATH = Path(__file__).resolve().parents[3] / "config" / "prices.yaml"
PRICES_FILE_ENV = "IMAGELABELS_PRICES_FILE"
PRICE_ENV_PREFIX = "IMAGELABELS_PRICE_"
MAX_COST_ENV = "IMAGELABELS_MAX_COST"
IMAGE_PROPERTIES = "image_properties"  # a priced add-on of DetectLabels, not a feature
PRICED_CALLS = (*FEATURES, IMAGE_PROPERTIES)
DISPLAY_STEP = Decimal("0.0001")


class PriceTableError(ValueError):
    """The price table or a price override is missing or malformed."""


class CostLimitExceeded(RuntimeError):
    """The estimate of a run is above its ``max_cost``: stopped before any paid call."""


def _money(value: Any, where: str) -> Decimal:
    """A non-negative amount of USD, from YAML/env/Param values (via ``str``: no float noise)."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceTableError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{where}: {value!r} must be a finite amount >= 0")
    return amount


def format_usd(amount: Decimal) -> str:
    """``$0.0013``: rounded up to a hundredth of a cent, so a shown estimate never understates."""
    return f"${amount.quantize(DISPLAY_STEP, rounding=ROUND_CEILING)}"


@dataclass(frozen=True)
class PriceTable:
    """USD per image, per labeler and feature, with where the numbers come from."""

    prices: Mapping[str, Mapping[str, Decimal]]
    source: str = ""
    as_of: str = ""

    def unit_prices(self, labeler: str, settings: LabelingSettings) -> tuple[tuple[str, Decimal], ...]:
        """The priced calls one image costs with ``labeler`` and the run's settings.

        :raises PriceTableError: when the labeler has no entry (unknown cost is not zero cost).
        """
        if labeler not in self.prices:
            known = ", ".join(sorted(self.prices))
            raise PriceTableError(
                f"no prices for labeler {labeler!r} in the price table (known: {known}); "
                f"add it to config/prices.yaml or {PRICES_FILE_ENV}"
            )
        table = self.prices[labeler]
        wanted = [*settings.features, *([IMAGE_PROPERTIES] if settings.image_properties else [])]
        return tuple((name, table[name]) for name in wanted if table.get(name))


def load_prices(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> PriceTable:
    """Read the price table: ``path``, else ``IMAGELABELS_PRICES_FILE``, else ``config/prices.yaml``;
    then apply ``IMAGELABELS_PRICE_<LABELER>_<FEATURE>`` overrides."""
    import yaml

    environ = environment() if environ is None else environ
    location = Path(path or environ.get(PRICES_FILE_ENV, "").strip() or DEFAULT_PRICES_PATH)
    try:
        data = yaml.safe_load(location.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PriceTableError(f"cannot read the price table {location}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("labelers"), dict):
        raise PriceTableError(f"{location}: expected a mapping with 'labelers'")
    prices: dict[str, dict[str, Decimal]] = {}
    for labeler, features in data["labelers"].items():
        if not isinstance(features, dict):
            raise PriceTableError(f"{location}: labelers.{labeler} must be a mapping of feature: price")
        unknown = [str(name) for name in features if name not in PRICED_CALLS]
        if unknown:
            raise PriceTableError(
                f"{location}: labelers.{labeler}: unknown {', '.join(unknown)} (known: {', '.join(PRICED_CALLS)})"
            )
        prices[str(labeler)] = {
            str(name): _money(value, f"{location}: labelers.{labeler}.{name}")
            for name, value in features.items()
        }
    for variable, value in environ.items():
        if not variable.startswith(PRICE_ENV_PREFIX) or not value.strip():
            continue
        labeler, _, feature = variable[len(PRICE_ENV_PREFIX) :].lower().partition("_")
        if labeler not in prices or feature not in PRICED_CALLS:
            raise PriceTableError(
                f"{variable}: expected {PRICE_ENV_PREFIX}<LABELER>_<FEATURE> with a labeler of the table "
                f"({', '.join(sorted(prices))}) and one of {', '.join(PRICED_CALLS)}"
            )
        prices[labeler][feature] = _money(value, variable)
    return PriceTable(prices, str(data.get("source", "")), str(data.get("as_of", "")))


@dataclass(frozen=True)
class CostEstimate:
    """What ``images`` images will cost with one labeler and the run's features."""

    labeler: str
    images: int
    unit_prices: tuple[tuple[str, Decimal], ...]
    source: str = ""
    as_of: str = ""

    @property
    def per_image(self) -> Decimal:
        return sum((price for _, price in self.unit_prices), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Exact; compare this, show :func:`format_usd` of it."""
        return self.per_image * self.images

    @property
    def paid(self) -> bool:
        """Whether one image costs anything (the local labeler does not)."""
        return self.per_image > 0

    def describe(self) -> str:
        """One line for the log: images, priced calls, price per image and the estimate."""
        if not self.paid:
            return f"{self.images} image(s) with {self.labeler}: free (no paid calls), estimate $0"
        calls = " + ".join(f"{name} {format_usd(price)}" for name, price in self.unit_prices)
        origin = f" (prices: {self.source}, as of {self.as_of})" if self.source else ""
        return (
            f"{self.images} image(s) x {self.labeler} [{calls}] = {format_usd(self.per_image)} per image"
            f" -> estimate {format_usd(self.total)}{origin}"
        )

    def as_xcom(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler,
            "images": self.images,
            "features": [name for name, _ in self.unit_prices],
            "per_image_usd": str(self.per_image),
            "estimate_usd": str(self.total),
            "estimate": format_usd(self.total),
        }


def estimate_cost(
    images: int, labeler: str, settings: LabelingSettings, prices: PriceTable | None = None
) -> CostEstimate:
    """The cost of labeling ``images`` images (``prices`` default: :func:`load_prices`)."""
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    table = prices if prices is not None else load_prices()
    return CostEstimate(labeler, images, table.unit_prices(labeler, settings), table.source, table.as_of)


def parse_max_cost(value: Any, environ: Mapping[str, str] | None = None) -> Decimal | None:
    """The run's limit in USD: the ``max_cost`` Param, else ``IMAGELABELS_MAX_COST``, else none.

    Empty/``None`` means "not set" (no limit unless the deployment sets one); ``0`` is a limit
    like any other: nothing paid may run, the free local labeler still does.
    """
    environ = environment() if environ is None else environ
    if value is None or (isinstance(value, str) and not value.strip()):
        value = environ.get(MAX_COST_ENV, "").strip() or None
        if value is None:
            return None
        return _money(value, MAX_COST_ENV)
    return _money(value, "max_cost")


def check_budget(estimate: CostEstimate, max_cost: Decimal | None, *, what: str = "this run") -> None:
    """Log the estimate; raise :class:`CostLimitExceeded` when it is above ``max_cost``.

    The limit is inclusive: an estimate equal to ``max_cost`` runs.
    """
    limit = "no limit" if max_cost is None else f"max_cost {format_usd(max_cost)}"
    log.info("cost estimate of %s: %s; %s", what, estimate.describe(), limit)
    if max_cost is None or estimate.total <= max_cost:
        return
    raise CostLimitExceeded(
        f"cost guard stopped {what} before any paid call: {estimate.describe()}, above the limit "
        f"max_cost {format_usd(max_cost)}. Nothing was labeled. Raise max_cost (or empty it for no "
        "limit), use fewer features or the local labeler, and run again."
    )


def images_in(batches: Iterable[Mapping[str, Any]]) -> int:
    """How many images the planned batches hold (their manifests' counts)."""
    return sum(int(batch["count"]) for batch in batches)
