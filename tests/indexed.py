"""Documents with one label each, indexed straight into the alias (no labeling): the input of
report and alert tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from imagelabels.documents import INDEX_ALIAS, LabelResult, ObjectInfo, build_document, document_id
from imagelabels.engine.indexing import bulk_write, ensure_indices


def index_labelled(
    es: Any,
    items: list[tuple[str, str, float]],
    ingested_at: Callable[[int], datetime],
    bucket: str = "photos",
) -> None:
    """One document per ``(key, label, confidence)``; item ``i`` ingested at ``ingested_at(i)``."""
    ensure_indices(es)
    actions = []
    for i, (key, label, confidence) in enumerate(items):
        at = ingested_at(i)
        obj = ObjectInfo(bucket=bucket, key=key, size=10, etag=f"e-{key}", last_modified=at)
        result = LabelResult(
            labels=[{"Name": label, "Confidence": confidence, "Parents": []}],
            labeler="local",
            label_model_version="t",
            min_confidence=50.0,
            max_labels=10,
        )
        source = build_document(obj, result, dag_id="d", run_id="r", ingested_at=at)
        doc_id = document_id(bucket, key, None, obj.etag)
        actions.append({"_op_type": "create", "_index": INDEX_ALIAS, "_id": doc_id, "_source": source})
    assert bulk_write(es, actions, refresh="wait_for").ok
