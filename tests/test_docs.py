"""The repository's own documentation: it points nowhere outside the repository,
its links resolve, and every name in the equation map (docs/equations.md) exists."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
MARKDOWN = [REPO / "README.md", REPO / "plots" / "README.md", REPO / "reference" / "README.md",
            *DOCS]
#: Where the model, its gradient and the authors' code are described (issue 12).
ACCOUNT = ("model.md", "gradient.md", "authors_code.md", "equations.md", "reproducibility.md")


def test_the_account_exists():
    names = {p.name for p in DOCS}
    assert set(ACCOUNT) <= names


def test_nothing_points_outside_the_repository():
    offenders = []
    for root in ("README.md", "docs", "reference", "snnsim", "plots"):
        base = REPO / root
        files = [base] if base.is_file() else [p for p in base.rglob("*")
                                               if p.suffix in (".md", ".py", ".cu", ".yaml")]
        for path in files:
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "shared/" in line or "design doc" in line.lower():
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    # the fidelity study writes its own report; its wording is fixed where it is generated
    offenders = [o for o in offenders if "fidelity" not in o.split(":")[0]]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        if not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: broken links {broken}"


def _table_cells(path: Path) -> list[list[str]]:
    rows = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("|---")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[1:]]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _has_attr_path(module, dotted: str) -> bool:
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names something: the longest importable module prefix,
    then attributes (``snnsim.fidelity.measure.cosine``, ``snnsim.network.Network.backward``)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:n]))
        except ModuleNotFoundError:
            continue
        return _has_attr_path(module, ".".join(parts[n:])) if parts[n:] else True
    return False


def _test_names(file: str) -> set[str]:
    tree = ast.parse((REPO / "tests" / f"{file}.py").read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_name_in_the_equation_map_exists():
    rows = _table_cells(REPO / "docs" / "equations.md")
    assert len(rows) >= 20
    loops = importlib.import_module("reference.loops")
    conv_loops = importlib.import_module("reference.conv_loops")
    missing = []
    for paper, _term, engine, oracle, tests in rows:
        assert paper, "every row names where the term comes from"
        for name in _names(engine):
            if not _resolves("snnsim." + name):
                missing.append(f"snnsim.{name}")
        for name in _names(oracle):
            mod, attr = (conv_loops, name.split(".", 1)[1]) if name.startswith("conv_loops.") \
                else (loops, name)
            if not hasattr(mod, attr):
                missing.append(f"reference: {name}")
        for name in _names(tests):
            file, _, func = name.partition("::")
            if func not in _test_names(file):
                missing.append(f"tests/{name}")
    assert not missing, missing
