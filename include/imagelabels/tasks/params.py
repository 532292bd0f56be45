"""The Params of the ingestion DAGs: shown, with their descriptions, in the trigger form that
users also use for backfills. Kept here so every ingestion DAG offers the same knobs.

A Param value is data typed by whoever triggers a run, never a template: nothing here is
rendered by Jinja. ``prefix`` offers a small fixed set of date placeholders that this module
substitutes itself (:func:`render_prefix`). Text Params are nullable (``None`` by default) so the
trigger and backfill forms can be submitted with them empty; empty (``None`` or ``""``) always
means "use the setting".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imagelabels.settings import ConfigurationError

if TYPE_CHECKING:
    from imagelabels.labelers.base import LabelingSettings

# The only placeholders a prefix may hold: strftime formats of the run's data interval start (UTC).
PREFIX_PLACEHOLDERS: dict[str, str] = {"ds": "%Y-%m-%d", "hour": "%H", "yyyy": "%Y", "mm": "%m", "dd": "%d"}
ALLOWED_PLACEHOLDERS = ", ".join(f"{{{name}}}" for name in PREFIX_PLACEHOLDERS)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def render_prefix(template: str, when: datetime, source: str = "Param 'prefix'") -> str:
    """``template`` with its placeholders replaced by ``when`` (UTC); anything else refused.

    Jinja here once let a trigger form read connection secrets into the task log, so the value
    is never evaluated: ``{{``, ``{%``, an unknown ``{name}`` or a stray brace raise
    :class:`ConfigurationError` naming ``source`` and the allowed placeholders.
    """
    shown = template if len(template) <= 120 else template[:117] + "..."

    def refuse(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"{source} {shown!r}: {why}. A prefix is plain text; the only placeholders are "
            f"{ALLOWED_PLACEHOLDERS} (the run's data interval start, UTC), e.g. 'uploads/{{ds}}/'"
        )

    if any(marker in template for marker in _TEMPLATE_MARKERS):
        raise refuse("Jinja templates are not rendered")
    utc = when.astimezone(UTC)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PREFIX_PLACEHOLDERS:
            raise refuse(f"unknown placeholder {match.group(0)!r}")
        return utc.strftime(PREFIX_PLACEHOLDERS[name])

    rendered = _PLACEHOLDER.sub(substitute, template)
    if "{" in rendered or "}" in rendered:
        raise refuse("a brace outside a placeholder")
    return rendered


def text_param(params: Mapping[str, Any], name: str) -> str:
    """A nullable text Param, stripped: ``None`` and ``""`` both read as ``""`` (use the setting)."""
    value = params.get(name)
    return "" if value is None else str(value).strip()


def unknown_params(given: Mapping[str, Any], declared: Mapping[str, Any]) -> list[str]:
    """Keys of a run's conf that the DAG does not declare (a misspelled Param), sorted."""
    return sorted(str(key) for key in given if key not in declared)


def reject_unknown_params(context: Mapping[str, Any]) -> None:
    """``pre_execute`` of every task: fail at once, without retries, on a conf key the DAG does
    not declare. Airflow passes such keys through silently, so ``min_confidance`` would run
    with the default ``min_confidence`` (and, for a paid labeler, pay for it)."""
    dag_run, dag = context.get("dag_run"), context.get("dag")
    conf = getattr(dag_run, "conf", None) or {}
    declared = getattr(dag, "params", None) or {}
    unknown = unknown_params(conf, declared)
    if unknown:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"unknown Param(s) {', '.join(map(repr, unknown))} in the run's conf; "
            f"{getattr(dag, 'dag_id', 'this DAG')} takes: {', '.join(sorted(declared))}"
        )


def ingestion_params() -> dict[str, Any]:
    """Params of the listing-driven ingestion DAGs: source, labeling, retry-failed."""
    from airflow.sdk import Param

    return {
        "bucket": Param(
            None,
            type=["null", "string"],
            description="Source bucket. Empty: the IMAGELABELS_BUCKET setting (required when that is unset).",
        ),
        "prefix": Param(
            None,
            type=["null", "string"],
            description=(
                "Key prefix to list. Empty: the IMAGELABELS_PREFIX setting, else the whole bucket. "
                "Plain text (never a template) with optional placeholders of the run's data "
                "interval start (UTC): {ds} (YYYY-MM-DD), {hour} (HH), {yyyy}, {mm}, {dd}; e.g. "
                "`uploads/{ds}/` lists one date partition instead of the whole prefix every hour. "
                "Any other brace is refused."
            ),
        ),
        **labeling_params(),
        **retry_params(),
        **cost_params(),
    }


def cost_params() -> dict[str, Any]:
    """The cost guard's limit, shared by every DAG that may call a paid labeler."""
    from airflow.sdk import Param

    return {
        "max_cost": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description=(
                "Stop the run before any paid call when its estimated cost (images x paid calls per "
                "image x price, config/prices.yaml) is above this many USD. Empty: the "
                "IMAGELABELS_MAX_COST setting, else no limit. 0: nothing paid may run (the local "
                "labeler is free and always runs)."
            ),
        ),
    }


def relabel_params() -> dict[str, Any]:
    """Params of the re-label backfill: scope, the labeling settings to reach, dry run, limit."""
    from airflow.sdk import Param

    return {
        "bucket": Param(
            None,
            type=["null", "string"],
            description="Bucket of the documents. Empty: the IMAGELABELS_BUCKET setting.",
        ),
        "prefix": Param(
            None,
            type=["null", "string"],
            description="Only keys under this literal prefix (no placeholders). Empty: every key.",
        ),
        "since": Param(
            None,
            type=["null", "string"],
            description=(
                "Only images whose `timestamp` (S3 LastModified) is at or after this ISO date or "
                "date-time, UTC unless it says otherwise (empty: no lower bound)."
            ),
        ),
        "until": Param(
            None,
            type=["null", "string"],
            description="Only images whose `timestamp` is before this ISO date or date-time (empty: no upper bound).",
        ),
        **{
            name: p for name, p in labeling_params().items() if name != "reprocess"
        },  # re-label is reprocessing
        "label_model_version": Param(
            None,
            type=["null", "string"],
            description=(
                "The current LabelModelVersion. Empty: the local model's own version; for Rekognition "
                "the newest version already in the index (Rekognition reports it only in paid answers)."
            ),
        ),
        "dry_run": Param(
            False, type="boolean", description="Count only: find stale documents, label nothing."
        ),
        **cost_params(),
    }


def retry_params() -> dict[str, Any]:
    """The "retry failed only" switch, shared by every ingestion DAG."""
    from airflow.sdk import Param

    return {
        "retry_failed": Param(
            False,
            type="boolean",
            description=(
                "Retry failed only: instead of new images, reprocess exactly the keys with a failure "
                "record in `images-failures` (for this bucket and prefix); a success clears the record."
            ),
        ),
    }


def queue_params() -> dict[str, Any]:
    """Params of the SQS-driven DAG."""
    from airflow.sdk import Param

    return {
        "queue_url": Param(
            None,
            type=["null", "string"],
            description="SQS queue receiving the S3 events. Empty: the IMAGELABELS_QUEUE_URL setting.",
        ),
        "bucket": Param(
            None,
            type=["null", "string"],
            description=(
                "Bucket for batch manifests and for retry-failed (empty: IMAGELABELS_BUCKET); events "
                "name their own buckets."
            ),
        ),
        "prefix": Param(
            None,
            type=["null", "string"],
            description="Literal prefix for retry-failed only (no placeholders). Empty: all keys.",
        ),
        "max_messages": Param(
            5000, type="integer", minimum=1, maximum=100000, description="At most this many messages per run."
        ),
        "visibility_timeout": Param(
            900,
            type="integer",
            minimum=30,
            maximum=43200,
            description="Seconds a received message stays hidden (extended while its batch runs).",
        ),
        "wait_seconds": Param(
            5, type="integer", minimum=0, maximum=20, description="Long polling of each receive (seconds)."
        ),
        **labeling_params(),
        **retry_params(),
        **cost_params(),
    }


def labeling_params() -> dict[str, Any]:
    """How images are labeled: shared by every ingestion DAG."""
    from airflow.sdk import Param

    from imagelabels.labelers.base import FEATURES, LABEL_FILTER_KEYS, LabelingSettings
    from imagelabels.labelers.registry import AVAILABLE_LABELERS
    from imagelabels.settings import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

    defaults = LabelingSettings()  # the one source of the defaults: the form shows the dataclass's
    return {
        "min_confidence": Param(
            defaults.min_confidence,
            type="number",
            minimum=0,
            maximum=100,
            description="Drop labels below this confidence (0-100).",
        ),
        "max_labels": Param(
            defaults.max_labels,
            type="integer",
            minimum=1,
            maximum=1000,
            description="At most this many labels per image.",
        ),
        "batch_size": Param(
            DEFAULT_BATCH_SIZE,
            type="integer",
            minimum=1,
            maximum=MAX_BATCH_SIZE,
            description="Images per mapped labeling task.",
        ),
        "labeler": Param(
            None,
            type=["null", "string"],
            enum=[None, "", *sorted(AVAILABLE_LABELERS)],
            description=(
                "`local` (offline model, free) or `rekognition` (AWS, paid per image and feature). "
                "Empty: the IMAGELABELS_LABELER setting, else `local`."
            ),
        ),
        "features": Param(
            list(defaults.features),
            type="array",
            items={"type": "string", "enum": list(FEATURES)},
            minItems=1,
            uniqueItems=True,
            description=(
                "What to detect: `labels` (always), `moderation` (unsafe content), `text`, `faces`. "
                "With Rekognition each feature is one paid call per image."
            ),
        ),
        "moderation_min_confidence": Param(
            defaults.moderation_min_confidence,
            type="number",
            minimum=0,
            maximum=100,
            description="Drop moderation labels below this (0-100).",
        ),
        "text_min_confidence": Param(
            defaults.text_min_confidence,
            type="number",
            minimum=0,
            maximum=100,
            description="Drop detected text lines below this (0-100).",
        ),
        "label_filters": Param(
            dict(defaults.label_filters),
            type="object",
            properties={
                key: {"type": "array", "items": {"type": "string", "minLength": 1}}
                for key in LABEL_FILTER_KEYS
            },
            additionalProperties=False,
            description=(
                "DetectLabels `Settings.GeneralLabels`, e.g. "
                '`{"LabelCategoryExclusionFilters": ["Text and Documents"]}`. Keys: '
                + ", ".join(LABEL_FILTER_KEYS)
                + "."
            ),
        ),
        "image_properties": Param(
            defaults.image_properties,
            type="boolean",
            description="Also store image quality and dominant colours (Rekognition only).",
        ),
        "reprocess": Param(
            False, type="boolean", description="Label again and overwrite images that are already indexed."
        ),
    }


def reconcile_params() -> dict[str, Any]:
    """The reconcile DAG's form: where to look, and how to label what is missing (``reprocess``
    has nothing to redo there: reconciliation labels only what the index lacks or got wrong)."""
    from airflow.sdk import Param

    from imagelabels.settings import (
        DEFAULT_DELETE_FLOOR,
        DEFAULT_MAX_DELETE_SHARE,
        DELETE_FLOOR_ENV,
        MAX_DELETE_SHARE_ENV,
    )

    where = {name: param for name, param in ingestion_params().items() if name in ("bucket", "prefix")}
    labeling = {name: param for name, param in labeling_params().items() if name != "reprocess"}
    return {
        **where,
        **labeling,
        "dry_run": Param(False, type="boolean", description="Count only: delete nothing, label nothing."),
        "min_age_hours": Param(
            2, type="integer", minimum=0, description="Leave newer objects to hourly runs."
        ),
        "confirm_mass_delete": Param(
            False,
            type="boolean",
            description=(
                f"Delete even when this run would delete more than {MAX_DELETE_SHARE_ENV} "
                f"({DEFAULT_MAX_DELETE_SHARE}) of the documents (and over {DELETE_FLOOR_ENV}, "
                f"{DEFAULT_DELETE_FLOOR}), or all of them. Only after checking that the objects "
                "really are gone from S3."
            ),
        ),
    }


def labeler_name(params: Mapping[str, Any]) -> str:
    """The ``labeler`` Param, else the deployment's default."""
    from imagelabels.labelers.registry import default_labeler

    return text_param(params, "labeler") or default_labeler()


def labeling_settings(params: Mapping[str, Any]) -> LabelingSettings:
    """Per-run labeling settings from the Params, validated (a bad value fails the run's first
    task, before any paid call)."""
    from imagelabels.labelers.base import LabelingSettings

    defaults = LabelingSettings()  # a Param left out means the same as in the trigger form
    features = tuple(params.get("features") or defaults.features)
    if "labels" not in features:
        features = ("labels", *features)
    return LabelingSettings(
        min_confidence=float(params.get("min_confidence", defaults.min_confidence)),
        max_labels=int(params["max_labels"]) if params.get("max_labels") else defaults.max_labels,
        features=features,
        moderation_min_confidence=float(
            params.get("moderation_min_confidence", defaults.moderation_min_confidence)
        ),
        text_min_confidence=float(params.get("text_min_confidence", defaults.text_min_confidence)),
        label_filters=dict(params.get("label_filters") or defaults.label_filters),
        image_properties=bool(params.get("image_properties", defaults.image_properties)),
    )
