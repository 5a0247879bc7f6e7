"""snnsim.training.runinfo: what decides a run's bits besides its config is recorded
in every run folder and checkpoint, and runs with the same settings are bit-identical
(docs/reproducibility.md).

The bit-identity test trains in fresh processes with the BLAS thread count set in
the environment (as a user would, OPENBLAS_NUM_THREADS=2 python3 -m snnsim.train),
in float32, where multi-threaded OpenBLAS is the usual source of last-bit changes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_train import assert_same_weights, final_weights, run_cli, tiny_args, write_fashion_mnist

from snnsim.training import runinfo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


def train_in_subprocess(data_dir, out, threads: str) -> None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "snnsim.train",
                           *tiny_args(data_dir, out, epochs=2, dtype="float32",
                                      network="784-64-64-10")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_run_info_names_blas_threads_and_versions(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    info = runinfo.run_info("numpy", "float32")
    assert info["numpy"] == np.__version__ and info["backend"] == "numpy"
    assert info["dtype"] == "float32" and info["cpu_count"] == os.cpu_count()
    assert info["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert info["blas"], "threadpoolctl found no BLAS library under NumPy"
    assert all("num_threads" in e and "internal_api" in e for e in info["blas"])
    assert "filepath" not in json.dumps(info)          # no paths of this machine
    json.dumps(info)                                     # JSON-serialisable as is


def test_reproducibility_key_and_resume_note():
    a = {"machine": "x86_64", "backend": "numpy", "dtype": "float32", "numpy": "2.0",
         "blas": [{"internal_api": "openblas", "version": "0.3", "architecture": "Haswell",
                   "num_threads": 2}], "time": "t0", "platform": "p"}
    b = dict(a, time="t1", platform="q")                  # time and kernel string do not count
    c = dict(a, blas=[dict(a["blas"][0], num_threads=1)])
    assert runinfo.reproducibility_key(a) == runinfo.reproducibility_key(b)
    assert runinfo.reproducibility_key(a) != runinfo.reproducibility_key(c)
    assert runinfo.resume_note(a) is None
    assert runinfo.resume_note(dict(a, resumed=[dict(b, after_epoch=1)])) is None
    note = runinfo.resume_note(dict(a, resumed=[dict(b, after_epoch=1), dict(c, after_epoch=2)]))
    assert note and "blas" in note and "not bit-identical" in note


def test_every_run_folder_and_checkpoint_records_the_settings(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    entries = runinfo.starts(json.loads((out / runinfo.RUN_INFO_NAME).read_text()))
    assert len(entries) == 1 and "after_epoch" not in entries[0]
    assert entries[0]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert entries[0]["dtype"] == "float64" and entries[0]["blas"]
    assert entries[0]["numpy"] == np.__version__ and "snnsim_version" in entries[0]
    with h5py.File(out / "checkpoint.h5", "r") as f:
        assert json.loads(f.attrs["run_info"]) == entries[0]
    # a resume adds its own entry, and its checkpoint carries that entry
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert run_cli(["--resume", str(out), "--epochs=2", "--progress=false"]) == 0
    entries = runinfo.starts(json.loads((out / runinfo.RUN_INFO_NAME).read_text()))
    assert [e.get("after_epoch") for e in entries] == [None, 1]
    assert entries[1]["thread_env"]["OPENBLAS_NUM_THREADS"] == "2"
    with h5py.File(out / "checkpoint.h5", "r") as f:
        assert json.loads(f.attrs["run_info"]) == entries[1]


def test_same_settings_give_bit_identical_runs(data_dir, tmp_path):
    """Two runs, each a fresh process with OPENBLAS_NUM_THREADS=2, float32, 2 epochs:
    every weight equal bit for bit, and both run folders record 2 BLAS threads."""
    for name in ("a", "b"):
        train_in_subprocess(data_dir, tmp_path / name, "2")
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    for name in ("a", "b"):
        entries = runinfo.starts(json.loads((tmp_path / name / runinfo.RUN_INFO_NAME).read_text()))
        assert entries[0]["thread_env"]["OPENBLAS_NUM_THREADS"] == "2"
        openblas = [e for e in entries[0]["blas"] if e.get("internal_api") == "openblas"]
        if not openblas:
            pytest.skip("NumPy is not linked to OpenBLAS here")
        assert all(e["num_threads"] in {2, min(2, os.cpu_count() or 1)} for e in openblas)


@pytest.fixture
def core_taken(monkeypatch):
    """A 2-core machine idle at the run's start (two BLAS threads chosen), whose watch looks
    at every batch and finds one core kept busy by other processes (its measurement
    replaced); the BLAS threads are set back afterwards. Yields snnsim.training.threads."""
    from snnsim.training import threads
    before = threads.blas_threads()
    for var in threads.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: 2.0)
    monkeypatch.setattr(threads, "WATCH_S", 0.0)
    monkeypatch.setattr(threads.LoadWatch, "others", lambda self, a, b: 1.0)
    yield threads
    threads.set_blas_threads(before)


def test_a_core_taken_during_a_run_drops_a_thread_and_is_recorded(data_dir, tmp_path,
                                                                 core_taken, capsys):
    """A run that chose two threads on an idle machine; then other processes keep a core
    busy (the watch's measurement replaced, every batch looked at): from the first batch
    on it runs on one thread, says so, and run.json and the checkpoint record the change."""
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    assert core_taken.blas_threads() == 1
    printed = capsys.readouterr()
    assert "BLAS threads: 2 -> 1 after batch 1 of epoch 1" in printed.out + printed.err
    (entry,) = runinfo.starts(json.loads((out / runinfo.RUN_INFO_NAME).read_text()))
    assert entry["blas_changes"] == [{"epoch": 1, "batch": 1, "threads": 1}]
    assert runinfo.blas_thread_count(entry) == 2                  # the start's count
    with h5py.File(out / "checkpoint.h5", "r") as f:
        assert json.loads(f.attrs["run_info"]) == entry


def test_a_run_json_damaged_during_the_run_does_not_stop_it(data_dir, tmp_path, core_taken,
                                                          monkeypatch, capsys):
    """The change cannot be recorded (run.json made unreadable while the run trains): the
    run says so and trains on; the count is changed all the same."""
    real = runinfo.record_blas_change

    def damaged(run_dir, *args):
        (Path(run_dir) / runinfo.RUN_INFO_NAME).write_text("{not json")
        return real(run_dir, *args)

    monkeypatch.setattr(runinfo, "record_blas_change", damaged)
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    assert core_taken.blas_threads() == 1
    printed = capsys.readouterr()
    assert "note: the change is not recorded: " in printed.out and "not valid JSON" in printed.out
