"""The hints a command prints name the program that is actually running (issue 23, 1):
``Resume with: .venv/bin/python3 -m snnsim.train --resume ...`` after a set-up that
did not activate the virtual environment, ``python3 -m ...`` once it is active,
``.venv/bin/snnsim train --resume ...`` through the console script
(snnsim/commandline.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from test_train import N_TRAIN, tiny_args, write_fashion_mnist

from snnsim import cli, commandline
from snnsim.training import train as train_mod


@pytest.fixture
def venv(tmp_path, monkeypatch):
    """A folder with ``.venv/bin/{python3,snnsim}`` (empty files), the current folder,
    and a PATH that does not hold ``.venv/bin``: the state after ``scripts/setup.sh``."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python3", "snnsim"):
        (bin_dir / name).write_text("")
        (bin_dir / name).chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python3"))
    return bin_dir


def test_the_interpreter_as_typed_here(venv, tmp_path, monkeypatch):
    assert commandline.interpreter() == os.path.join(".venv", "bin", "python3")
    monkeypatch.setenv("PATH", str(venv))                     # source .venv/bin/activate
    assert commandline.interpreter() == "python3"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                             # not below the current folder
    assert commandline.interpreter() == str(venv / "python3")


def test_the_console_script_as_typed_here(venv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(venv / "snnsim"), "train"])
    assert cli.console_prog() == os.path.join(".venv", "bin", "snnsim")
    monkeypatch.setattr(sys, "argv", ["/some/where/pytest"])
    assert cli.console_prog() == "snnsim"


def _interrupted_run(tmp_path, monkeypatch, start) -> None:
    """The output of a run interrupted by Ctrl-C in its second epoch, started by ``start``."""
    data = write_fashion_mnist(tmp_path / "data")
    real_step = train_mod.train_step
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == N_TRAIN // 10 + 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step)
    assert start(tiny_args(data, Path("runs") / "x", epochs=3)) == train_mod.EXIT_INTERRUPTED


def test_the_resume_hint_names_the_running_interpreter(venv, tmp_path, monkeypatch, capsys):
    _interrupted_run(tmp_path, monkeypatch, train_mod.main)
    out = capsys.readouterr().out
    hint = os.path.join(".venv", "bin", "python3") + " -m snnsim.train --resume " \
        + os.path.join("runs", "x")
    assert f"Resume with:\n  {hint}" in out, out[-500:]


def test_the_resume_hint_names_the_console_script(venv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(venv / "snnsim")])
    _interrupted_run(tmp_path, monkeypatch, lambda argv: cli.main(["train", *argv]))
    out = capsys.readouterr().out
    hint = os.path.join(".venv", "bin", "snnsim") + " train --resume " + os.path.join("runs", "x")
    assert f"Resume with:\n  {hint}" in out, out[-500:]
