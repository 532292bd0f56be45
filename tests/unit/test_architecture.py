"""The package layout is the pipeline's stages, and imports only point down them.

Every module of ``imagelabels`` belongs to a stage (its package, or itself at the top); a stage
may import its own modules and the stages below it, never one above, and no two modules import
each other round a cycle. Imports inside functions count: a lazy import is still a dependency.
DAG files call the task layer only; the plugin mounts the web app. ARCHITECTURE.md draws the same
order; a new top-level module or package fails here until it is given its place.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "imagelabels"

# lowest first; names on one line are one layer (they may import each other, acyclically)
LAYERS: list[set[str]] = [
    {"imagelabels", "settings", "masking", "errors"},
    {"fingerprints"},
    {"documents"},
    {"sources"},
    {"preflight"},
    {"labelers"},
    {"engine"},
    {"search"},
    {"clients"},
    {"pipeline"},
    {"channels"},
    {"alerts"},
    {"reports"},
    {"tasks"},
    {"devstack"},
    {"cli", "webapp", "__main__"},
]
RANK = {stage: rank for rank, layer in enumerate(LAYERS) for stage in layer}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "imagelabels"


def imported_modules(path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) for every ``imagelabels`` import in ``path``, module-level or not; ``from
    package import submodule`` names the submodule."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "imagelabels":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imagelabels":
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            named = [name for name in submodules if name in known]
            yield from ((node.lineno, name) for name in named)
            if len(named) < len(submodules):
                yield node.lineno, node.module


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges[module] = {target for _, target in imported_modules(path, MODULES) if target != module}
    return edges


def test_every_module_has_a_stage() -> None:
    unplaced = sorted({_stage(module) for module in MODULES} - RANK.keys())
    assert not unplaced, f"give these a layer in LAYERS and ARCHITECTURE.md: {unplaced}"


def test_imports_never_point_up_the_stages() -> None:
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({_stage(module)} may not import {_stage(target)})"
        for module, path in MODULES.items()
        for line, target in imported_modules(path, MODULES)
        if target in MODULES and RANK[_stage(target)] > RANK[_stage(module)]
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    edges = _edges()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("dag_file", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dag_files_call_the_task_layer_only(dag_file: Path) -> None:
    outside = [
        f"{dag_file.name}:{line} imports {target}"
        for line, target in imported_modules(dag_file, MODULES)
        if not target.startswith("imagelabels.tasks")
    ]
    assert outside == []


def test_the_plugin_mounts_the_web_app_only() -> None:
    plugin = ROOT / "plugins" / "image_search_plugin.py"
    targets = {target for _, target in imported_modules(plugin, MODULES)}
    assert targets
    assert targets <= {"imagelabels.webapp", "imagelabels.search.queries"}


def test_the_checker_sees_lazy_and_upward_imports(tmp_path: Path) -> None:
    """The check itself can fail: an import inside a function and one up the stages are found."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from imagelabels.tasks import ingestion\n    import imagelabels.cli\n")
    found = list(imported_modules(source, MODULES))
    assert found == [(2, "imagelabels.tasks.ingestion"), (3, "imagelabels.cli")]
    assert RANK[_stage("imagelabels.tasks.ingestion")] > RANK[_stage("imagelabels.documents")]


def test_modules_over_500_lines_say_why() -> None:
    long_without_reason = [
        f"{path.relative_to(ROOT)} ({length} lines)"
        for path in MODULES.values()
        if (length := len(path.read_text().splitlines())) > 500
        and "Why this module is long" not in (ast.get_docstring(ast.parse(path.read_text())) or "")
    ]
    assert long_without_reason == []


def test_only_settings_reads_the_environment() -> None:
    """Settings are read in one place (``settings.py``); devstack sets up servers' environments."""
    readers = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for module, path in MODULES.items()
        if module != "imagelabels.settings" and not module.startswith("imagelabels.devstack")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and node.attr in {"environ", "getenv", "environb"}
    ]
    assert readers == []
