"""snnsim.training.threads: how many BLAS threads a run takes (no timing here: the benchmark
shows the effect on a busy machine, python3 -m snnsim.bench)."""
from __future__ import annotations

import json

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


class FakeMachine:
    """/proc/stat, this process's CPU time and the clock of a 2-core machine, moved on by
    :meth:`advance`: ``own`` cores used by this process and ``others`` by other processes
    over ``seconds``."""

    def __init__(self):
        self.t, self.idle, self.total, self.own = 0.0, 0.0, 0.0, 0.0

    def advance(self, seconds: float, own: float, others: float, n_cpu: int = 2):
        jiffies = 100 * seconds                       # USER_HZ per core
        self.t += seconds
        self.total += n_cpu * jiffies
        self.idle += (n_cpu - own - others) * jiffies
        self.own += own * seconds

    def watch(self, most: int, set_threads, start: int | None = None):
        return threads.LoadWatch(most, n_cpu=2, interval_s=10.0,
                                 cpu_times=lambda: (self.idle, self.total),
                                 process_time=lambda: self.own, clock=lambda: self.t,
                                 set_threads=set_threads, start=start)


def test_the_watch_follows_other_processes_not_its_own_threads():
    """Two threads on an idle machine (its own two busy cores are not others' load): kept.
    Another process takes a core: one thread. It leaves: two again, never more than the
    machine's cores; between looks (every 10 s) nothing is measured or set."""
    machine, set_to = FakeMachine(), []
    watch = machine.watch(2, set_to.append)
    machine.advance(10.0, own=1.9, others=0.05)
    assert watch.poll() is None and watch.threads == 2            # alone: its own load
    machine.advance(10.0, own=1.0, others=1.0)
    old, new, others = watch.poll()
    assert (old, new, set_to) == (2, 1, [1]) and others == pytest.approx(1.0)
    machine.advance(5.0, own=1.0, others=0.0)
    assert watch.poll() is None                                   # 5 s: no look yet
    machine.advance(5.0, own=1.0, others=0.0)
    assert watch.poll()[:2] == (1, 2) and set_to == [1, 2]        # gone: back to two
    machine.advance(10.0, own=1.0, others=0.3)                    # a core 30 % busy is taken
    assert watch.poll()[:2] == (2, 1)
    capped = machine.watch(1, set_to.append)
    machine.advance(10.0, own=1.0, others=0.0)
    assert capped.poll() is None and capped.threads == 1          # never above ``most``


def test_a_run_started_on_a_busy_machine_takes_the_cores_freed_later():
    """A run that started on one thread (another process had a core) keeps it while the
    other process runs, and takes the second core when it leaves."""
    machine, set_to = FakeMachine(), []
    watch = machine.watch(2, set_to.append, start=1)
    machine.advance(10.0, own=1.0, others=1.0)
    assert watch.poll() is None and watch.threads == 1 and set_to == []
    machine.advance(10.0, own=1.0, others=0.1)
    old, new, others = watch.poll()
    assert (old, new, set_to) == (1, 2, [2]) and others == pytest.approx(0.1)


def test_the_watch_needs_proc_stat():
    watch = threads.LoadWatch(2, n_cpu=2, cpu_times=lambda: None, clock=lambda: 100.0,
                              set_threads=lambda n: pytest.fail("set without a measurement"))
    watch._last = (0.0, None, 0.0)
    assert watch.poll() is None


def test_no_watch_where_the_count_is_fixed_or_one(monkeypatch, blas_restored):
    for var in threads.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    threads.set_blas_threads(2)
    assert isinstance(threads.watch_for_run("numpy"), threads.LoadWatch)
    assert threads.watch_for_run("cupy") is None and threads.watch_for_run("torch") is None
    assert threads.watch_for_run("numpy").threads == 2
    threads.set_blas_threads(1)                                   # started on a busy machine:
    watch = threads.watch_for_run("numpy")                        # watched, up to the cores
    assert (watch.threads, watch.most) == (1, 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 1)
    assert threads.watch_for_run("numpy") is None                 # one core: nothing to do
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    threads.set_blas_threads(2)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert threads.watch_for_run("numpy") is None                 # fixed by the user


def test_a_change_of_count_is_recorded_in_the_latest_start(tmp_path):
    """run.json keeps each start's changes (read back and checked); a damaged entry is
    named by the reader."""
    from snnsim.training import runinfo
    info = {"machine": "x86_64", "backend": "numpy", "blas": [{"user_api": "blas", "num_threads": 2}]}
    runinfo.record_start(tmp_path, info)
    runinfo.record_blas_change(tmp_path, 1, 37, 1)
    runinfo.record_start(tmp_path, info, 3, runinfo.read_run_info(tmp_path))
    runinfo.record_blas_change(tmp_path, 5, 2, 1)
    runinfo.record_blas_change(tmp_path, 5, 90, 2)
    first, resume = runinfo.starts(runinfo.read_run_info(tmp_path))
    assert first["blas_changes"] == [{"epoch": 1, "batch": 37, "threads": 1}]
    assert [c["batch"] for c in resume["blas_changes"]] == [2, 90]
    assert runinfo.blas_thread_count(runinfo.read_run_info(tmp_path)) == 2
    path = tmp_path / runinfo.RUN_INFO_NAME
    for bad in ([{"epoch": 1, "batch": 0, "threads": 1}], "1", [{"epoch": True, "batch": 1,
                                                                "threads": 1}]):
        path.write_text(json.dumps({**info, "blas_changes": bad}))
        with pytest.raises(runinfo.RunInfoError, match="blas_changes|BLAS change"):
            runinfo.read_run_info(tmp_path)
