"""Fuzzing the study runner's journal (snnsim/study.py): mutations of a finished study's
``journal.log`` (truncation, garbage, flipped bytes, lines lost, doubled or swapped)
fed to ``report`` and ``run``. The outcome must be a result (exit 0) or exit status 2
with one ``snnsim.study: error:`` line; never an exception out of ``main`` (a
traceback), and never a hang (every call runs under an alarm of ``CALL_LIMIT_S``).

``run`` gets every mutation too, with its training runs replaced by a stand-in that
fails at once (``subprocess.Popen`` in the worker): what is fuzzed is the journal's
reading, the study's checks and the worker's loop, not training (tests/test_study.py
runs real trials).

Examples: ``FUZZ_EXAMPLES_CI`` per mutation kind by default (about 40 s in all on a busy
2-core machine, a third of it the one real study the examples copy);
``SNNSIM_FUZZ_EXAMPLES=N`` for N per kind. The count that ran, and the outcomes, are
written to the terminal at the end of the module.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import procs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("optuna", reason="optuna missing (pip install -e .[test])")

from test_train import write_fashion_mnist

from snnsim import study as study_mod

REPO = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES_CI = 25
EXAMPLES = int(os.environ.get("SNNSIM_FUZZ_EXAMPLES", FUZZ_EXAMPLES_CI))
#: Seconds one call of main may take (a hang fails the example instead of the suite).
CALL_LIMIT_S = 30
STUDY = "fz"
TINY = {"network": "784-24-10", "dataset": "fashion-mnist", "batch_size": 10,
        "dtype": "float64", "eval_batch_size": 15}
RAN: dict[str, int] = {}
#: Outcomes of the calls: {"report exit 0": n, "run exit 2": n, ...}.
OUTCOMES: dict[str, int] = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory, request):
    """A finished grid of two seeds, one epoch each, made by a real worker; and its
    ``run`` arguments."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_fashion_mnist(root / "data", n_train=40, n_test=20)
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    study_dir = root / "src" / STUDY
    argv = ["run", str(study_dir), "--config", str(config), f"--data_dir={data}",
            "--seeds", "0,1", "--epochs=1", "--heartbeat", "0.5", "--grace", "1"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = procs.run([sys.executable, "-m", "snnsim.study", *argv], 300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield study_dir, argv
    line = (f"fuzzed study journals: {sum(RAN.values())} examples ({RAN}), "
            f"SNNSIM_FUZZ_EXAMPLES={EXAMPLES} per kind; outcomes {OUTCOMES}")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + line)


class _FailingRun:
    """Stands in for a trial's training run: it exits 1 at once."""

    def __init__(self, *args, **kwargs):
        self.returncode = 1

    def wait(self, timeout=None):
        return 1

    def send_signal(self, sig):
        pass


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"main did not return within {CALL_LIMIT_S} s")


def call_main(argv) -> tuple[int, str]:
    """``study.main(argv)`` under an alarm, with the runs stood in: (status, stderr)."""
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CALL_LIMIT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                mock.patch.object(subprocess, "Popen", _FailingRun):
            status = study_mod.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return status, err.getvalue()


def check_outcome(status: int, err: str, what: str) -> None:
    assert status in (0, 2), f"{what}: exit {status}: {err}"
    if status == 2:
        assert err.count("\n") == 1 and err.startswith("snnsim.study: error:"), f"{what}: {err}"


def fuzz_one(base, tmp_path_factory, mutate) -> None:
    """Copy the study, mutate its journal with ``mutate(bytes) -> bytes``, run
    ``report`` then ``run`` on it."""
    src, argv = base
    study_dir = tmp_path_factory.mktemp("ex") / STUDY
    shutil.copytree(src, study_dir)
    journal = study_dir / study_mod.STORAGE_FILE
    journal.write_bytes(mutate(journal.read_bytes()))
    old = journal.stat().st_mtime - 3600          # a journal damaged an hour ago
    os.utime(journal, (old, old))
    with mock.patch.object(study_mod, "SETTLE_S", 0.05), \
            mock.patch.object(study_mod, "POLL_S", 0.05), \
            mock.patch.object(study_mod, "READY_STALL_S", 0.5):
        for args in (["report", str(study_dir), "--device", "fuzz"],
                     [argv[0], str(study_dir), *argv[2:]]):
            status, err = call_main(args)
            check_outcome(status, err, f"{args[0]} on {mutate.__name__}")
            key = f"{args[0]} exit {status}"
            OUTCOMES[key] = OUTCOMES.get(key, 0) + 1


def _settings():
    return settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _count(kind: str) -> None:
    RAN[kind] = RAN.get(kind, 0) + 1


@_settings()
@given(cut=st.floats(0.0, 1.0))
def test_truncated_journal(base, tmp_path_factory, cut):
    def truncate(data: bytes) -> bytes:
        return data[:int(len(data) * cut)]
    _count("truncated")
    fuzz_one(base, tmp_path_factory, truncate)


@_settings()
@given(at=st.floats(0.0, 1.0), garbage=st.binary(min_size=1, max_size=40))
def test_garbage_in_the_journal(base, tmp_path_factory, at, garbage):
    def insert_garbage(data: bytes) -> bytes:
        i = int(len(data) * at)
        return data[:i] + garbage + data[i:]
    _count("garbage")
    fuzz_one(base, tmp_path_factory, insert_garbage)


@_settings()
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True),
                                st.integers(1, 255)), min_size=1, max_size=8))
def test_flipped_bytes_in_the_journal(base, tmp_path_factory, flips):
    def flip(data: bytes) -> bytes:
        out = bytearray(data)
        for at, mask in flips:
            out[int(len(out) * at)] ^= mask
        return bytes(out)
    _count("flipped")
    fuzz_one(base, tmp_path_factory, flip)


@_settings()
@given(edits=st.lists(st.tuples(st.sampled_from(["drop", "double", "swap"]),
                                st.floats(0.0, 1.0, exclude_max=True)), min_size=1, max_size=4))
def test_journal_lines_lost_doubled_or_swapped(base, tmp_path_factory, edits):
    def edit_lines(data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        for op, at in edits:
            if not lines:
                break
            i = int(len(lines) * at)
            if op == "drop":
                del lines[i]
            elif op == "double":
                lines.insert(i, lines[i])
            elif i + 1 < len(lines):
                lines[i], lines[i + 1] = lines[i + 1], lines[i]
        return b"".join(lines)
    _count("lines")
    fuzz_one(base, tmp_path_factory, edit_lines)


def test_the_unmutated_study_reports_and_runs(base, tmp_path_factory):
    """The oracle's baseline: the study itself gives a report and nothing to run."""
    src, argv = base
    study_dir = tmp_path_factory.mktemp("ex") / STUDY
    shutil.copytree(src, study_dir)
    status, err = call_main(["report", str(study_dir), "--device", "fuzz"])
    assert status == 0, err
    assert "2 of 2 grid points complete; trials: 2 complete" in (study_dir / "report.md").read_text()
    status, err = call_main([argv[0], str(study_dir), *argv[2:]])
    assert status == 0, err
