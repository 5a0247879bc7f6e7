"""snnsim.training.threads: how many BLAS threads a run takes (no timing here: the benchmark
shows the effect on a busy machine, python3 -m snnsim.bench)."""
from __future__ import annotations

import pytest

from snnsim.training import threads


@pytest.mark.parametrize("n_cpu,idle,expected", [
    (2, 0.0, 1),       # both cores busy: one thread, never zero
    (2, 0.9, 1),       # one core busy
    (2, 1.0, 1),
    (2, 1.7, 1),       # a core 30 % busy is not free
    (2, 1.8, 2),       # ... 20 % is (MARGIN 0.25)
    (2, 2.0, 2),       # idle machine: every core
    (4, 2.8, 3),
    (32, 31.9, 32),
    (32, 40.0, 32),    # never more than the cores
    (1, 0.0, 1),
])
def test_threads_are_the_idle_cores(n_cpu, idle, expected):
    assert threads.choose_blas_threads(n_cpu, idle) == expected


def test_idle_cpus_from_proc_stat(monkeypatch):
    """Over the window, 150 of 200 jiffies idle on 2 cores: 1.5 cores idle."""
    samples = iter([(1000.0, 5000.0), (1150.0, 5200.0)])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.idle_cpus(n_cpu=2) == pytest.approx(1.5)


def test_idle_cpus_without_proc_uses_the_load_average(monkeypatch):
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.25, 0.0, 0.0))
    assert threads.idle_cpus(n_cpu=2) == pytest.approx(0.75)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert threads.idle_cpus(n_cpu=2) == 0.0


def test_proc_stat_parses_on_linux():
    times = threads._cpu_times()
    if times is None:
        pytest.skip("no /proc/stat on this platform")
    idle, total = times
    assert 0 <= idle <= total and total > 0


@pytest.fixture
def blas_restored():
    before = threads.blas_threads()
    yield before
    threads.set_blas_threads(before)


def test_a_run_takes_the_idle_cores(monkeypatch, blas_restored):
    for var in threads.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: 0.4)
    note = threads.choose_for_run("numpy")
    assert threads.blas_threads() == 1
    assert note.startswith("BLAS threads: 1 (0.4 of 2 cores idle") and "OPENBLAS_NUM_THREADS=1" in note
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: 2.0)
    threads.choose_for_run("numpy")
    assert threads.blas_threads() == 2


def test_an_environment_variable_fixes_the_count(monkeypatch, blas_restored):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: pytest.fail("measured anyway"))
    threads.set_blas_threads(1)
    note = threads.choose_for_run("numpy")
    assert "fixed by OPENBLAS_NUM_THREADS=1" in note and threads.blas_threads() == 1


def test_other_backends_choose_nothing(monkeypatch):
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: pytest.fail("measured anyway"))
    assert threads.choose_for_run("cupy") is None and threads.choose_for_run("torch") is None


def test_a_resumed_run_takes_its_first_count_again(monkeypatch, blas_restored):
    """The count of the run's first start (run.json) is set again on resume, whatever the
    load now, so that the resumed epochs are bit-identical to an uninterrupted run."""
    from snnsim.training import runinfo
    for var in threads.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "idle_cpus", lambda n_cpu=None: pytest.fail("measured anyway"))
    first = {"blas": [{"user_api": "openmp", "num_threads": 7},
                      {"user_api": "blas", "internal_api": "openblas", "num_threads": 2}],
             "resumed": [{"blas": [{"user_api": "blas", "num_threads": 1}], "after_epoch": 3}]}
    assert runinfo.blas_thread_count(first) == 2          # the first start's, not the resume's
    assert runinfo.blas_thread_count(None) is None and runinfo.blas_thread_count({}) is None
    threads.set_blas_threads(1)
    note = threads.choose_for_run("numpy", runinfo.blas_thread_count(first))
    assert threads.blas_threads() == 2 and "as at the run's first start" in note
