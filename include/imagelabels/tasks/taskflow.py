"""What the ingestion DAGs' ``@task`` bodies call, and the TaskFlow helpers every DAG uses.

Each task of a DAG file is one call into ``imagelabels.tasks``. The functions here take what
Airflow injects (``params``, ``dag_run``, ``ti``, a mapped task's lazy results), set what the
task shows in the UI (:func:`set_batch_label` for ``map_index_template``) or pushes to XCom, and
call the plain functions of :mod:`imagelabels.tasks.ingestion`, which know nothing of Airflow's
objects. The DAG processor imports this module when it parses the DAG files (for the names their
task signatures use: :data:`FROM_CONTEXT`, :data:`Upstream`, :data:`DagRun`, :data:`TaskInstance`):
everything else is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TypeAlias, TypeVar, cast

from airflow.sdk.types import DagRunProtocol, RuntimeTaskInstanceProtocol

T = TypeVar("T")

DagRun: TypeAlias = DagRunProtocol
"""What Airflow passes as a task's ``dag_run`` argument (the Task SDK's view of the run)."""

TaskInstance: TypeAlias = RuntimeTaskInstanceProtocol
"""What Airflow passes as a task's ``ti`` argument (``xcom_push``, ``xcom_pull``...)."""

FROM_CONTEXT: Any = None
"""Default of a task argument named after a context key (``params``, ``dag_run``, ``ti``...).

Airflow passes the value whenever the task runs, and refuses any default but ``None``; typed
``Any`` so that the argument's annotation says what the task receives (``dag_run:
DagRun = FROM_CONTEXT``) and the DAG calls the task without it (``cost_guard(batches)``).
"""

Upstream: TypeAlias = Any
"""Annotation of a task argument filled from an upstream task's XCom (``summarize(labeled)``).

The DAG passes an ``XComArg`` where the task receives the value (a mapped task's results: a lazy
sequence), and Airflow's typing checks the call against the function's own signature: only
``Any`` fits both. The function the task calls declares the real type.
"""


def batch_label(batch: Mapping[str, Any], noun: str) -> str:
    """The name of a mapped task instance in the UI: ``batch-00001.jsonl (5 keys)``."""
    return f"{str(batch['uri']).rsplit('/', 1)[-1]} ({batch['count']} {noun})"


def set_batch_label(batch: Mapping[str, Any], noun: str) -> None:
    """Name this mapped task instance after its manifest: the mapped tasks declare
    ``map_index_template="{{ batch_label }}"``, rendered from the task's context."""
    from airflow.sdk import get_current_context

    context = cast(MutableMapping[str, Any], get_current_context())  # a key Context does not declare
    context["batch_label"] = batch_label(batch, noun)


def materialize(results: Sequence[T]) -> list[T]:
    """A mapped task's results as a list.

    Airflow passes them as a lazy sequence that pulls each item when it is read; ``len()`` first
    and then each index: iterating would probe one index past the end.
    """
    return [results[i] for i in range(len(results))]


def list_interval_batches(params: Mapping[str, Any], dag_run: DagRun) -> list[dict[str, Any]]:
    """The hourly ``list_batches`` task: manifests of the run's data interval (for a run without
    one, the last complete hour before it)."""
    from imagelabels.tasks.ingestion import HOURLY, plan_interval, run_interval

    start, end = run_interval(
        dag_run.data_interval_start, dag_run.data_interval_end, dag_run.run_after, HOURLY
    )
    return plan_interval(params, dag_run.dag_id, dag_run.run_id, start, end)


def label_batch_task(
    batch: Mapping[str, Any], params: Mapping[str, Any], dag_run: DagRun, noun: str
) -> dict[str, Any]:
    """The mapped ``label_and_index`` task: named after its manifest (``noun`` counts its
    entries: keys, events), one manifest of either kind (or a group) labeled and indexed."""
    from imagelabels.tasks.ingestion import label_event_or_retry_batch

    set_batch_label(batch, noun)
    return label_event_or_retry_batch(batch, params, dag_run.dag_id, dag_run.run_id)


def summarize_mapped(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ingestion DAGs' ``summarize`` task: the mapped batches' reports added up and logged."""
    from imagelabels.tasks.ingestion import summarize_reports

    return summarize_reports(materialize(reports))


def plan_reconcile_task(params: Mapping[str, Any], dag_run: DagRun, ti: TaskInstance) -> list[dict[str, Any]]:
    """The reconciliation ``plan`` task: walk the day's prefix (for a run without a data
    interval, the last complete 03:00-to-03:00 UTC day) and return the batches to label; the
    counts go to XCom ``counts`` (a mapped task can only expand ``return_value``)."""
    from imagelabels.tasks.ingestion import DAILY, HOURLY, plan_reconcile_run, run_interval

    start, _ = run_interval(
        dag_run.data_interval_start, dag_run.data_interval_end, dag_run.run_after, DAILY, 3 * HOURLY
    )
    batches, counts = plan_reconcile_run(params, dag_run.dag_id, dag_run.run_id, start)
    ti.xcom_push("counts", counts)
    return batches


def reconcile_report_task(reports: Sequence[dict[str, Any]], ti: TaskInstance) -> dict[str, Any]:
    """The reconciliation ``report`` task: the walk's counts plus what labeling gave."""
    from imagelabels.pipeline import reconcile
    from imagelabels.pipeline.batch import summarize

    labeling = summarize(materialize(reports))
    return reconcile.report_totals(ti.xcom_pull(task_ids="plan", key="counts"), labeling)


def plan_relabel_task(params: Mapping[str, Any], dag_run: DagRun, ti: TaskInstance) -> list[dict[str, Any]]:
    """The re-label ``plan`` task: the batches of stale documents; the counts go to XCom
    ``counts`` (a mapped task can only expand ``return_value``)."""
    from imagelabels.tasks.ingestion import plan_relabel_run

    batches, counts = plan_relabel_run(params, dag_run.dag_id, dag_run.run_id)
    ti.xcom_push("counts", counts)
    return batches


def relabel_batch_task(
    batch: Mapping[str, Any], params: Mapping[str, Any], dag_run: DagRun
) -> dict[str, Any]:
    """The mapped ``relabel`` task: named after its manifest, its stale documents re-labeled."""
    from imagelabels.tasks.ingestion import relabel_one_batch

    set_batch_label(batch, "documents")
    return relabel_one_batch(batch, params, dag_run.dag_id, dag_run.run_id)


def relabel_report_task(reports: Sequence[dict[str, Any]], ti: TaskInstance) -> dict[str, Any]:
    """The re-label ``report`` task: the planning counts plus what the batches did, logged."""
    from imagelabels.tasks.ingestion import relabel_report

    return relabel_report(ti.xcom_pull(task_ids="plan", key="counts"), materialize(reports))
