"""The package's imports form no circle through the command-line layer (issue 23, 5):
the one error path (snnsim.commandline) imports no command, the commands import it and
not the dispatcher (snnsim.cli), and the benchmark's floor does not import the benchmark.
Every import statement counts, also those inside functions."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import snnsim
from snnsim.cli import COMMANDS

PKG = Path(snnsim.__file__).resolve().parent      # the source tree's, or the installed package


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the snnsim modules it imports anywhere in its text."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")
                    parent = parent[:len(parent) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def reachable(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


GRAPH = import_graph()


def test_the_error_path_imports_no_command():
    commands = {c.module for c in COMMANDS.values()}
    assert not reachable(GRAPH, "snnsim.commandline") & (commands | {"snnsim.cli"})


@pytest.mark.parametrize("module", ["snnsim.training.train", "snnsim.training.parallel",
                                    "snnsim.analysis.record", "snnsim.analysis.plots",
                                    "snnsim.analysis.inspection", "snnsim.analysis.bench"])
def test_a_command_does_not_import_the_dispatcher(module):
    assert "snnsim.cli" not in reachable(GRAPH, module)


def test_the_floor_does_not_import_the_benchmark():
    assert "snnsim.analysis.bench" not in reachable(GRAPH, "snnsim.analysis.floor")
