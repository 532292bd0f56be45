"""Every task of a DAG file is one call into ``imagelabels.tasks``; the TaskFlow helpers it uses."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest

from imagelabels.tasks.taskflow import FROM_CONTEXT, batch_label, materialize

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))


def _is_task(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "task"


def _tasks(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and any(_is_task(d) for d in node.decorator_list)
    ]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_each_task_is_one_call_into_tasks(path: Path) -> None:
    """Imports from ``imagelabels.tasks`` inside the function (heavy modules load at run time
    only), then ``return some_function(...)``: the logic lives where it is tested and type-checked."""
    tasks = _tasks(path)
    assert tasks, f"{path.name} defines no @task"
    for function in tasks:
        *imports, last = function.body
        where = f"{path.name}: task {function.name}"
        assert all(
            isinstance(node, ast.ImportFrom) and (node.module or "").startswith("imagelabels.tasks")
            for node in imports
        ), f"{where}: only imports from imagelabels.tasks before the call"
        assert isinstance(last, ast.Return), f"{where}: the body ends with `return some_function(...)`"
        assert isinstance(last.value, ast.Call), f"{where}: the body ends with `return some_function(...)`"
        arguments = [*last.value.args, *(keyword.value for keyword in last.value.keywords)]
        assert not any(isinstance(node, ast.Call) for arg in arguments for node in ast.walk(arg)), (
            f"{where}: no nested calls in the arguments: move that logic into imagelabels.tasks"
        )


def test_context_arguments_default_to_none() -> None:
    """Airflow refuses any other default for an argument named after a context key."""
    assert FROM_CONTEXT is None


def test_batch_label_names_the_manifest_file_and_its_size() -> None:
    batch = {"uri": "s3://staging/imagelabels/run/batch-00001.jsonl", "count": 5}
    assert batch_label(batch, "keys") == "batch-00001.jsonl (5 keys)"
    assert batch_label({**batch, "count": 2}, "documents") == "batch-00001.jsonl (2 documents)"


class _Lazy(Sequence[int]):
    """A lazy XCom sequence stand-in that records which indexes were read."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> int:  # ints only: no slices here
        self.read.append(index)
        return self.items[index]


def test_materialize_reads_each_index_once_and_never_past_the_end() -> None:
    lazy = _Lazy([3, 1, 2])
    assert materialize(lazy) == [3, 1, 2]
    assert lazy.read == [0, 1, 2]  # iterating would also have probed index 3
    assert materialize(_Lazy([])) == []
