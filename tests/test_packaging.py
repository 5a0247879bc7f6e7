"""The package as users install it: its package data declared, the version written
once and recorded with the commit honestly, and the ``snnsim`` console command.

These also run against an installed wheel (``scripts/check_dist.sh`` copies tests/
out of the source tree); the few that read the source tree's own files
(pyproject.toml, CHANGELOG.md) skip there, where the script checks the built
wheel's contents instead. The package data themselves: tests/test_package_data.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from test_package_data import PKG, RUNTIME_FILES

import snnsim
from snnsim import cli
from snnsim.training import train as train_mod
from snnsim.version import is_source_tree, source_info

SOURCE_ROOT = PKG.parent
in_source_tree = pytest.mark.skipif(
    not is_source_tree(SOURCE_ROOT),
    reason="reads the source tree's own files; against an installed wheel, "
           "scripts/check_dist.sh checks the wheel's contents")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


# --- package data ---------------------------------------------------------------------------
@in_source_tree
def test_every_data_file_in_the_package_is_declared_package_data():
    """Every non-Python file under snnsim/ matches a [tool.setuptools.package-data]
    pattern of pyproject.toml, so the wheel and the sdist carry it."""
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["snnsim"]
    declared = {p for pattern in patterns for p in PKG.glob(pattern) if p.is_file()}
    data = {p for p in PKG.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts}
    assert {PKG.joinpath(*r.split("/")) for r in RUNTIME_FILES} <= data
    missing = sorted(str(p.relative_to(PKG)) for p in data - declared)
    assert not missing, f"not declared as package data in pyproject.toml: {missing}"


# --- version and commit ---------------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                           "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env, timeout=60).stdout.strip()


def _fake_tree(root: Path, pyproject: bool = True) -> Path:
    """``root/snnsim/__init__.py`` and (optionally) a pyproject.toml naming snnsim."""
    (root / "snnsim").mkdir(parents=True)
    (root / "snnsim" / "__init__.py").write_text("x = 1\n")
    (root / "README").write_text("readme\n")
    if pyproject:
        (root / "pyproject.toml").write_text('[project]\nname = "snnsim"\n')
    return root / "snnsim"


@needs_git
def test_a_checkout_records_its_commit_and_dirty_package_files(tmp_path):
    pkg = _fake_tree(tmp_path / "src")
    _git(pkg.parent, "init", "-q")
    _git(pkg.parent, "add", ".")
    _git(pkg.parent, "commit", "-q", "-m", "one")
    head = _git(pkg.parent, "rev-parse", "HEAD")
    assert source_info(pkg) == {"snnsim_version": snnsim.__version__, "git_commit": head,
                                "source": "git checkout"}
    (pkg.parent / "README").write_text("changed outside the package\n")
    assert source_info(pkg)["git_commit"] == head
    (pkg / "__init__.py").write_text("x = 2\n")
    assert source_info(pkg)["git_commit"] == head + "-dirty"
    _git(pkg.parent, "checkout", "-q", "--", "snnsim")
    (pkg / "new_module.py").write_text("y = 1\n")                 # new code counts too
    assert source_info(pkg)["git_commit"] == head + "-dirty"


@needs_git
@pytest.mark.parametrize("where", ["site-packages in a repository", "subfolder of a repository"])
def test_a_repository_around_the_package_is_not_asked(tmp_path, where):
    """A package under a .venv inside some repository, or an unpacked sdist in a
    subfolder of one: that repository's commit is not the package's."""
    repo = tmp_path / "repo"
    if where == "site-packages in a repository":
        pkg = _fake_tree(repo / ".venv" / "lib" / "site-packages", pyproject=False)
        expected = f"installed package snnsim=={snnsim.__version__}"
    else:
        pkg = _fake_tree(repo / "snnsim-0.1.0")
        expected = f"source tree without git history (snnsim=={snnsim.__version__})"
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "unrelated")
    assert source_info(pkg) == {"snnsim_version": snnsim.__version__, "git_commit": None,
                                "source": expected}


@needs_git
def test_git_variables_of_the_caller_do_not_redirect_the_question(tmp_path, monkeypatch):
    other = tmp_path / "other"
    _fake_tree(other)
    _git(other, "init", "-q")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "other")
    pkg = _fake_tree(tmp_path / "plain", pyproject=False)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert source_info(pkg)["git_commit"] is None


@in_source_tree
def test_the_version_is_written_once():
    """pyproject.toml takes the version from snnsim/version.py (no second copy), and
    CHANGELOG.md has a section for it."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "snnsim.version.__version__"}
    assert f"## [{snnsim.__version__}]" in (SOURCE_ROOT / "CHANGELOG.md").read_text()


# --- the console command --------------------------------------------------------------------
def test_snnsim_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in cli.available():
        assert f"\n  {name} " in text
    assert "alias: inspect" in text


@pytest.mark.parametrize("name", sorted(cli.available()) + sorted(cli.ALIASES))
def test_every_command_help_names_how_it_was_invoked(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"], prog="snnsim")
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: snnsim {name} ")


def test_module_commands_keep_their_own_usage_line(tmp_path, monkeypatch):
    """Run as a module, a command's usage line names the interpreter as typed here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert train_mod.make_parser().prog == ".venv/bin/python3 -m snnsim.train"


def test_an_unknown_command_is_a_one_line_error(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown command 'trian'" in err and "did you mean 'train'" in err


def test_python_m_snnsim_dispatches(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT))
    proc = subprocess.run([sys.executable, "-m", "snnsim", "train", "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # argparse breaks the usage line after the program when the interpreter's path is
    # long (an absolute one, where the environment is not active): any white space
    usage = re.match(r"usage: (\S+) -m snnsim train\s", proc.stdout)
    assert usage, proc.stdout[:200]
    program = usage.group(1)
    assert "--config" in proc.stdout
    again = subprocess.run([program, "-m", "snnsim", "train", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)   # the usage line runs
    assert again.returncode == 0 and again.stdout == proc.stdout, again.stderr


def test_the_console_script_is_declared():
    """``snnsim = snnsim.cli:main``: in pyproject.toml in a source tree, in the installed
    distribution's entry points otherwise."""
    if is_source_tree(SOURCE_ROOT):
        tomllib = pytest.importorskip("tomllib")
        scripts = tomllib.loads((SOURCE_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    else:
        scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")
                   if ep.dist is not None and ep.dist.name == "snnsim"}
    assert scripts == {"snnsim": "snnsim.cli:main"}
