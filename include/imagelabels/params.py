"""The Params of the ingestion DAGs: shown, with their descriptions, in the trigger form that
users also use for backfills. Kept here so every ingestion DAG offers the same knobs.
"""

from __future__ import annotations

from typing import Any


def ingestion_params() -> dict[str, Any]:
    """Params shared by the ingestion DAGs (validated by Airflow before a run starts)."""
    from airflow.sdk import Param

    from imagelabels.labelers.registry import AVAILABLE_LABELERS

    return {
        "bucket": Param(
            "", type="string", description="Source bucket. Empty: the IMAGELABELS_BUCKET setting."
        ),
        "prefix": Param(
            "",
            type="string",
            description=(
                "Key prefix to list (empty: IMAGELABELS_PREFIX). Jinja is rendered, e.g. "
                "`uploads/{{ data_interval_start | ds }}/` lists one date partition instead of the "
                "whole prefix every hour."
            ),
        ),
        "min_confidence": Param(
            70,
            type="number",
            minimum=0,
            maximum=100,
            description="Drop labels below this confidence (0-100).",
        ),
        "max_labels": Param(
            50, type="integer", minimum=1, maximum=1000, description="At most this many labels per image."
        ),
        "batch_size": Param(
            100, type="integer", minimum=1, maximum=1000, description="Images per mapped labeling task."
        ),
        "labeler": Param(
            "rekognition", type="string", enum=sorted(AVAILABLE_LABELERS), description="Which labeler to use."
        ),
        "reprocess": Param(
            False, type="boolean", description="Label again and overwrite images that are already indexed."
        ),
    }
