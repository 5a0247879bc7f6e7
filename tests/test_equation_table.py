"""Every name in reference/README.md's equation table exists: the engine
functions (``module.name`` under ``snnsim/``), the oracle functions of
``reference/`` and the tests (``T::name`` = ``tests/T.py::name``).

A renamed or removed function leaves the table pointing at nothing; this test
names each such entry.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("reference") is None:                # `reference/` lives at the repo root
    sys.path.insert(0, str(ROOT))
TABLE_HEADING = "## Equation → function → test"
NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*")
TEST_NAME = re.compile(r"(test_[A-Za-z_0-9]+)::([A-Za-z_][A-Za-z_0-9]*)")


def table_rows() -> list[list[str]]:
    """The table's data rows, each as its four cells (the escaped ``\\|`` kept inside a cell)."""
    text = (ROOT / "reference" / "README.md").read_text(encoding="utf-8")
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[0] == "equation / term":
            continue
        assert len(cells) == 4, f"a row of the equation table has {len(cells)} cells: {line}"
        rows.append(cells)
    return rows


def names_in(cell: str) -> list[str]:
    """Backquoted dotted names of a cell; names in parentheses are dict keys or
    arguments (``(`phi_1`)``, ``(`terms=True`)``), not functions."""
    cell = re.sub(r"\(`[^`]*`\)", "", cell)
    return [t for t in re.findall(r"`([^`]+)`", cell) if NAME.fullmatch(t)]


def resolve(package: str, dotted: str):
    """Import ``package.<module>`` for the longest importable prefix of ``dotted`` and
    getattr the rest; raises if any part is missing."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join([package, *parts[:n]]))
        except ModuleNotFoundError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"no module {package}.{parts[0]}")


def functions_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


ROWS = table_rows()


def test_the_table_is_read():
    assert len(ROWS) >= 25, "the equation table was not found or not parsed"


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_every_engine_name_exists(row):
    names = names_in(row[1])
    assert names, f"no engine function named for {row[0]!r}"
    for name in names:
        resolve("snnsim", name)


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_every_reference_name_exists(row):
    for name in names_in(row[2]):
        module, _, attr = name.rpartition(".")
        getattr(importlib.import_module(f"reference.{module or 'loops'}"), attr)


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_every_test_name_exists(row):
    found = TEST_NAME.findall(row[3])
    assert found, f"no test named for {row[0]!r}"
    for module, name in found:
        path = ROOT / "tests" / f"{module}.py"
        assert path.is_file(), f"{module}::{name}: no tests/{module}.py"
        assert name in functions_of(path), f"{module}::{name}: no such test"
