"""The repository's own documentation: it points nowhere outside the repository,
its links resolve, every name in the equation map (docs/equations.md) exists, and
the documentation is executed (issue 23): every Python block runs, every snnsim
command line names a real command and real options, every ``snnsim.…`` name resolves."""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


# --- executed documentation (issue 23) -----------------------------------------------------
# Every fenced code block of README.md, docs/*.md and the other READMEs of the tree is
# checked as a reader would use it:
#
# - a ``python`` block runs, in a scratch folder of its own, within PYTHON_BLOCK_SECONDS;
#   the folder holds ``runs/x/``, a finished tiny run (checkpoint.h5, best.h5, ...), which
#   is what the examples' ``runs/x`` stands for, and SNNSIM_DATA_DIR points at a tiny
#   synthetic Fashion-MNIST in the real IDX format, so "the dataset" is read in seconds;
#   ``breakpoint()`` is switched off (PYTHONBREAKPOINT=0) and a debugger started by the
#   block reads ``c`` (continue) from its standard input;
# - a shell line (``bash``/``sh``/``console`` blocks, blocks without a language, ``$ ``
#   lines of ``text-session`` blocks, and inline code spans) that runs snnsim
#   (``python3 -m snnsim...``, ``snnsim ...``, or the same through ``.venv/bin/`` or
#   another virtual environment's ``bin/``) names a module or command whose ``--help``
#   exits 0 and lists every ``--option`` the line gives (``study run`` passes unknown
#   ``--key=value`` to each training run, so those are looked up in ``train --help``);
#   another ``python3 -m X`` names an importable module and ``python3 path.py`` or
#   ``bash path.sh`` an existing file;
# - a ``json`` block parses.
#
# A block that cannot run as written here is marked on the line above its fence with
# ``<!-- docs-test: skip: <why> -->`` (the reason is required and printed).
SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.*?)\s*-->")
PYTHON_BLOCK_SECONDS = 180
SHELL_LANGS = ("", "bash", "sh", "shell", "console")


def documentation_files() -> list[Path]:
    """README.md, docs/*.md and every other README.md of the tree (not in hidden folders
    nor in what runs write: runs/, studies/, dist/, build/)."""
    skip = {"runs", "studies", "dist", "build", "node_modules"}
    readmes = [p for p in REPO.rglob("README.md")
               if not any(part.startswith(".") or part in skip
                          for part in p.relative_to(REPO).parts[:-1])]
    return sorted({REPO / "README.md", *DOCS, *readmes})


@dataclass
class Block:
    path: Path
    line: int          # of the opening fence
    lang: str
    text: str
    skip: str | None   # the reason of a skip mark

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with their language and skip mark."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(2), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        mark = SKIP_MARK.search(lines[start - 1]) if start else None
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in lines[start + 1:j])
        blocks.append(Block(path, start + 1, m.group(3).lower(), body,
                            mark.group(1) if mark else None))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in documentation_files() for b in code_blocks(p)]


def _strip_fenced(text: str) -> str:
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)


def shell_commands(block_text: str, session: bool = False) -> list[str]:
    """The command lines of a shell block: continuations joined, comments and (for a
    session) everything but the ``$ `` lines dropped."""
    text = block_text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if session:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if line and not line.startswith("#"):
            out.append(line)
    return out


_PYTHON = re.compile(r"^(?:\S*/)?python3?$")
_SNNSIM = re.compile(r"^(?:\S*/)?snnsim$")
_REDIRECT = re.compile(r"^\d?[<>]")


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ; && || | &, loop keywords, leading
    VAR=value assignments and an ``mpiexec -n N`` prefix removed), as tokens up to the
    first redirection."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        tokens = line.split()
    commands, current = [], []
    for tok in tokens + [";"]:
        pieces = re.split(r"(;|&&|\|\||\||&)$", tok)
        word, sep = (pieces[0], pieces[1]) if len(pieces) > 1 else (tok, "")
        if tok in (";", "&&", "||", "|", "&"):
            word, sep = "", tok
        if word:
            current.append(word)
        if sep:
            commands.append(current)
            current = []
    out = []
    for cmd in commands:
        while cmd and (cmd[0] in ("do", "then", "done", "wait", "time")
                       or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0])):
            cmd = cmd[1:]
        if cmd[:1] == ["mpiexec"]:
            cmd = cmd[3:] if len(cmd) > 2 and cmd[1] == "-n" else cmd[1:]
            while cmd and cmd[0].startswith("--"):          # --allow-run-as-root
                cmd = cmd[1:]
        cut = next((k for k, t in enumerate(cmd) if _REDIRECT.match(t)), len(cmd))
        if cmd[:cut]:
            out.append(cmd[:cut])
    return out


def snnsim_invocation(cmd: list[str]) -> tuple[list[str], list[str]] | None:
    """(``python -m`` arguments up to the first option, the rest) of a command running
    snnsim, or None. ``snnsim train --epochs 1`` -> (["snnsim", "train"], ["--epochs",
    "1"]); ``python3 -m pdb -m snnsim.walkthrough`` -> (["snnsim.walkthrough"], [])."""
    if _SNNSIM.match(cmd[0]):
        rest = ["snnsim", *cmd[1:]]
    elif _PYTHON.match(cmd[0]) and cmd[1:2] == ["-m"] and len(cmd) > 2:
        rest = cmd[2:]
        if rest[0] == "pdb" and rest[1:2] == ["-m"]:
            rest = rest[2:]
        if not (rest[0] == "snnsim" or rest[0].startswith("snnsim.")):
            return None
    else:
        return None
    if not re.fullmatch(r"snnsim(\.\w+)*", rest[0]):   # python3 -m snnsim.<command>, snnsim...
        return None
    k = next((k for k, t in enumerate(rest) if t.startswith("-")), len(rest))
    return rest[:k], rest[k:]


def run_python(args: list[str], cwd=REPO, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg", PYTHONBREAKPOINT="0")
    env.update(kwargs.pop("env", {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@functools.cache
def help_text(words: tuple[str, ...]) -> str | None:
    """The ``--help`` of ``python -m words...`` (None when it fails): with the leading
    positional words as far as they still give a help (a subcommand's own), else of
    the module alone."""
    for n in range(len(words), 0, -1):
        proc = run_python(["-m", *words[:n], "--help"])
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
    return None


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:               # a parent package is missing
        return False


def _options(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if re.match(r"^--[A-Za-z]", a)]


def _lists_option(help: str, option: str) -> bool:
    forms = {option, option.replace("_", "-")}
    return any(re.search(re.escape(f) + r"(?![\w-])", help) for f in forms)


def check_snnsim_command(cmd: list[str]) -> list[str]:
    """What is wrong with one snnsim command line (empty when nothing)."""
    words, args = snnsim_invocation(cmd)
    if words[0] != "snnsim" and not _module_exists(words[0]):
        return [f"no module {words[0]}"]
    helped = help_text(tuple(words))
    if helped is None:
        return [f"{' '.join(words)} --help fails"]
    study_run = words[:2] == ["snnsim.study", "run"] or words[:3] == ["snnsim", "study", "run"]
    problems = []
    for option in _options(args):
        if _lists_option(helped, option):
            continue
        if study_run and _lists_option(help_text(("snnsim.train",)) or "", option):
            continue
        problems.append(f"option {option} is not in `{' '.join(words)} --help`")
    return problems


def check_other_command(cmd: list[str]) -> list[str]:
    """``python3 -m X`` names an importable module; ``python3 path.py`` and ``bash
    path.sh`` an existing file of the tree."""
    if _PYTHON.match(cmd[0]) and cmd[1:2] == ["-m"] and len(cmd) > 2:
        mod = cmd[2]
        if not _module_exists(mod):
            return [f"no module {mod}"]
    elif (_PYTHON.match(cmd[0]) or cmd[0] == "bash") and len(cmd) > 1 \
            and re.match(r"^[\w./-]+\.(py|sh)$", cmd[1]) and not cmd[1].startswith("/"):
        if not (REPO / cmd[1]).is_file() and cmd[1] != "step.py":   # step.py: written above it
            return [f"no file {cmd[1]}"]
    return []


def commands_of(block: Block) -> list[list[str]]:
    if block.lang in SHELL_LANGS or block.lang == "text-session":
        lines = shell_commands(block.text, session=block.lang == "text-session")
        return [c for line in lines for c in simple_commands(line)]
    return []


def inline_commands(path: Path) -> list[list[str]]:
    """Commands in inline code spans of the prose (`python3 -m snnsim.bench --full`)."""
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", _strip_fenced(path.read_text(encoding="utf-8")))
    return [c for span in spans for c in simple_commands(span)
            if c and snnsim_invocation(c) is not None]


def test_every_documented_command_exists_with_its_options():
    problems = []
    for block in all_blocks():
        if block.skip:
            continue
        for cmd in commands_of(block):
            found = check_snnsim_command(cmd) if snnsim_invocation(cmd) else check_other_command(cmd)
            problems += [f"{block.where}: {' '.join(cmd)}: {p}" for p in found]
    for path in documentation_files():
        for cmd in inline_commands(path):
            problems += [f"{path.relative_to(REPO)}: `{' '.join(cmd)}`: {p}"
                         for p in check_snnsim_command(cmd)]
    assert not problems, "\n".join(problems)


def test_every_dotted_snnsim_name_resolves():
    """``snnsim.a.b`` anywhere in the documentation names a module or an attribute."""
    missing = []
    for path in documentation_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in re.findall(r"(?<![\w/.-])snnsim(?:\.[A-Za-z_]\w*)+", line):
                if not _resolves(name):
                    missing.append(f"{path.relative_to(REPO)}:{i}: {name}")
    assert not missing, "\n".join(missing)


def test_json_blocks_parse():
    bad = []
    for block in all_blocks():
        if block.lang == "json" and not block.skip:
            try:
                json.loads(block.text)
            except ValueError as exc:
                bad.append(f"{block.where}: {exc}")
    assert not bad, bad


def test_skip_marks_say_why():
    marks = [b for b in all_blocks() if b.skip is not None]
    assert all(len(b.skip.split()) >= 3 for b in marks), [b.where for b in marks]


# The walk of issue 23: a newcomer runs the shell blocks page by page, README.md first,
# then docs/ in the order README links them, then the other READMEs. So a command line
# must run as written: no placeholder (``runs/<run>``, ``{a,b} ...``), no file it reads
# that no command before it wrote (``runs/latest`` is the newest run of the default
# folder, which README's quick look makes), and nothing written outside the ignored
# folders runs/ and studies/ (the tracked tree stays clean).
WRITABLE = ("runs", "studies")


def walk_order() -> list[Path]:
    """README.md, docs/*.md as README first links them (then the rest by name), then the
    READMEs of plots/, reference/ and data/ (those of the results below reference/ record
    how they were made, in folders of their time)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = dict.fromkeys(REPO / "docs" / f"{m}.md" for m in re.findall(r"\(docs/(\w+)\.md", readme))
    docs = [p for p in linked if p in DOCS] + [p for p in DOCS if p not in linked]
    return [REPO / "README.md", *docs, *(REPO / d / "README.md" for d in ("plots", "reference", "data"))]


def _paths_of(words: list[str], args: list[str]) -> tuple[list[str], list[str]]:
    """(paths read, paths written) by one snnsim command: ``words`` its module's parts
    and positional words (``snnsim nir export A B``), ``args`` the rest. A path is a
    relative one under one of WRITABLE, or a .h5/.nir file anywhere."""
    def is_path(a: str) -> bool:
        return not a.startswith("-") and ("/" in a and a.split("/")[0] in WRITABLE
                                          or a.endswith((".h5", ".nir")))
    command = [w for w in words[1:] if not is_path(w)]
    read, written, k = [w for w in words if is_path(w)], [], 0
    while k < len(args):
        option, _, value = args[k].partition("=")
        if not value and k + 1 < len(args) and not args[k + 1].startswith("-"):
            value, k = args[k + 1], k + 1
        if option == "--out" and value:
            written.append(value)
        elif value and is_path(value):
            read.append(value)
        elif is_path(option):
            read.append(option)
        k += 1
    if command[:2] in (["nir", "export"], ["nir", "import"]) and len(read) >= 2:
        written.append(read.pop(1))
    if command[:2] == ["study", "run"] and read:
        written.append(read.pop(0))
    if command == ["train"] and not written and not any(a.startswith("--resume") for a in args):
        written.append("runs/latest")
    return read, written


def test_shell_commands_run_as_written_in_reading_order():
    problems, made = [], []
    for path in walk_order():
        for block in code_blocks(path):
            if block.skip:
                continue
            for cmd in commands_of(block):
                if snnsim_invocation(cmd) is None:
                    continue
                where = f"{block.where}: {' '.join(cmd)}"
                words, args = snnsim_invocation(cmd)
                words = words[0].split(".") + words[1:]      # snnsim.nir export -> snnsim, nir, export
                odd = [a for a in cmd if re.search(r"[<>{}]", a) or a == "..."]
                if odd:
                    problems.append(f"{where}: a placeholder, not a command: {odd}")
                    continue
                read, written = _paths_of(words, args)
                for w in written:
                    if w.split("/")[0] not in WRITABLE:
                        problems.append(f"{where}: writes {w}, outside {'/, '.join(WRITABLE)}/")
                for r in read:
                    stem = r.split("*")[0].rstrip("/")
                    if not any(stem == m or stem.startswith(m + "/") for m in made):
                        problems.append(f"{where}: reads {r}, which no command before it writes")
                made += [w.rstrip("/") for w in written]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """A folder as the examples assume it: ``runs/x/`` a finished tiny run, ``rec.h5`` a
    full recording of it (3 samples); and the tiny synthetic Fashion-MNIST they read
    (its path, for SNNSIM_DATA_DIR)."""
    from test_train import tiny_args, write_fashion_mnist

    from snnsim.training import train as train_mod
    root = tmp_path_factory.mktemp("docs")
    data = write_fashion_mnist(root / "data", n_train=600, n_test=200)
    base = root / "base"
    assert train_mod.main(tiny_args(data, base / "runs" / "x", epochs=1)) == 0
    proc = run_python(["-m", "snnsim.record", "runs/x/best.h5", "--samples", "3", "--full",
                       "--data-dir", str(data), "--out", "rec.h5"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    return base, data


PYTHON_BLOCKS = [b for b in all_blocks() if b.lang in ("python", "py")]


def missing_imports(text: str) -> list[str]:
    """The packages outside snnsim that a Python block imports and that are not installed
    (docs/nir.md's example needs the nir extra, which ``setup.sh --test`` leaves out)."""
    names = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    return sorted({n for n in names if n != "snnsim" and not _module_exists(n)})


def test_missing_imports_names_what_is_not_installed():
    assert missing_imports("import numpy\nfrom snnsim.nonexistent import x\n") == []
    assert missing_imports("import snnsim_no_such_package.sub\nfrom no_such_pkg_2 import y") \
        == ["no_such_pkg_2", "snnsim_no_such_package"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_block_runs(block, example_folder, tmp_path):
    if block.skip:
        pytest.skip(f"marked in the text: {block.skip}")
    if missing_imports(block.text):      # CI installs every extra the blocks use
        pytest.skip(f"{block.where} imports {', '.join(missing_imports(block.text))}, "
                    "which are not installed (an extra of pyproject.toml)")
    base, data = example_folder
    scratch = tmp_path / "scratch"
    shutil.copytree(base, scratch)
    (scratch / "example.py").write_text(block.text, encoding="utf-8")
    proc = run_python(["example.py"], cwd=scratch, timeout=PYTHON_BLOCK_SECONDS,
                      input="c\n" * 50, env={"SNNSIM_DATA_DIR": str(data)})
    assert proc.returncode == 0, f"{block.where}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
