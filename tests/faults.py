"""Fault injection for the training command: kill -9 at random instants of a tiny run
(in a forked child, so that a restart costs milliseconds, not an interpreter start),
and the check that a run folder is consistent after any of them.

Used by tests/test_faults.py (a soak of 20+ kills, seconds) and by
``python3 scripts/soak_kill.py --kills 50`` (the longer soak, with a report).
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from snnsim.training import train as train_mod
from snnsim.training.checkpoint import checkpoint_epoch, load_checkpoint

#: Seconds a forked run of the tiny network may take before it counts as hung (a run of
#: 30 epochs takes a few seconds, a minute on a machine busy with other work).
RUN_TIMEOUT_S = 300


def _child(argv):
    # The run writes through tqdm.write, whose default lock is a multiprocessing
    # semaphore shared with the parent that forked it (and with every other child of
    # it), plus a thread lock copied as it was at the fork. A child killed (kill -9)
    # inside a write leaves the semaphore taken for ever; a fork while another thread
    # (tqdm's monitor) held the lock leaves the child's copy taken: the next write,
    # here or in the parent, then blocks at 0 % CPU. Each child writes under a lock
    # of its own.
    tqdm.set_lock(threading.RLock())
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = train_mod.main(argv)
    os._exit(code)


def start_run(argv) -> multiprocessing.Process:
    """``python3 -m snnsim.train ARGV`` in a forked child (output discarded)."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(list(argv),))
    proc.start()
    return proc


def kill9(proc: multiprocessing.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(RUN_TIMEOUT_S)
    assert not proc.is_alive(), f"process {proc.pid} survived SIGKILL"


def finish_run(proc: multiprocessing.Process, what: str, timeout: float = RUN_TIMEOUT_S) -> None:
    """Wait for a forked run to end, at most ``timeout`` seconds; it must succeed (one
    still running then is killed and the caller fails)."""
    proc.join(timeout)
    if proc.is_alive():
        kill9(proc)
        raise AssertionError(f"{what} did not finish in {timeout} s (hung; killed)")
    assert proc.exitcode == 0, f"{what} exited {proc.exitcode}"


def timed_run(argv) -> float:
    """Seconds of an uninterrupted forked run of ``argv`` (which must succeed)."""
    t0 = time.perf_counter()
    finish_run(start_run(argv), f"run {argv}")
    return time.perf_counter() - t0


def kill_window(make_argv, tmp, epochs: int) -> tuple[float, float]:
    """(start-up seconds, seconds per epoch) of the run ``make_argv(out, epochs)``, from
    a 1-epoch run and an ``epochs``-epoch run (the latter, in ``tmp/ref``, is the run
    never killed that a soak compares its final weights with); the start-up is the
    longer of a new run's and a resumed one's (a resume of the finished run)."""
    t1 = timed_run(make_argv(Path(tmp) / "ref1", 1))
    tn = timed_run(make_argv(Path(tmp) / "ref", epochs))
    per_epoch = max((tn - t1) / max(epochs - 1, 1), 1e-3)
    t_resume = timed_run(["--resume", str(Path(tmp) / "ref1"), "--progress=false"])
    return max(t1 - per_epoch, t_resume, 0.0), per_epoch


def check_consistent(run_dir) -> dict:
    """The invariants a kill at any instant must leave (snnsim.training.runfolder):
    every checkpoint file loads, and best.h5 holds checkpoint.h5's best epoch, or lags
    it by the one promotion the next start repairs (the checkpoint is its own best);
    interrupted.h5 (a stop inside an epoch), where there is one, loads too.
    Returns a summary: ``epoch``, ``best_epoch`` (None without a checkpoint), ``lagging``."""
    run_dir = Path(run_dir)
    ckpt_path, best_path = run_dir / "checkpoint.h5", run_dir / "best.h5"
    if (run_dir / "interrupted.h5").exists():
        assert load_checkpoint(run_dir / "interrupted.h5")["partial"] is not None
    if not ckpt_path.exists():
        assert not best_path.exists(), "best.h5 without checkpoint.h5"
        return {"epoch": None, "best_epoch": None, "lagging": False}
    ck = load_checkpoint(ckpt_path)
    best_on_disk = load_checkpoint(best_path)["epoch"] if best_path.exists() else None
    lagging = best_on_disk != ck["best_epoch"]
    if lagging:
        assert ck["best_epoch"] == ck["epoch"], (
            f"best.h5 holds epoch {best_on_disk}, checkpoint.h5 (epoch {ck['epoch']}) says "
            f"best is epoch {ck['best_epoch']}: not repairable")
        assert best_on_disk is None or best_on_disk < ck["epoch"]
    return {"epoch": ck["epoch"], "best_epoch": ck["best_epoch"], "lagging": lagging}


def check_finished(run_dir, epochs: int) -> None:
    """A finished run: metrics.jsonl, checkpoint.h5 and best.h5 agree."""
    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    ck = load_checkpoint(run_dir / "checkpoint.h5")
    assert ck["epoch"] == epochs and ck["metrics"] == rows
    best_row = max(rows, key=lambda r: r["test_acc"])       # the first of equal maxima
    assert checkpoint_epoch(run_dir / "best.h5") == best_row["epoch"] == ck["best_epoch"]
    assert not list(run_dir.glob("*.tmp"))


def soak(argv_new, argv_resume, run_dir, epochs: int, kills: int, rng: np.random.Generator,
         max_delay: float, log=None) -> dict:
    """Start the run, kill -9 it after a random delay in [0, max_delay), resume, and so
    on until ``kills`` kills were made; then let it finish. After every kill the folder
    must be consistent (:func:`check_consistent`); at the end, finished
    (:func:`check_finished`). Returns counts: kills, lagging (kills that left best.h5
    one promotion behind), epochs_at_kill (list)."""
    run_dir = Path(run_dir)
    done, lagging, at_kill = 0, 0, []
    while True:
        started = (run_dir / "checkpoint.h5").exists()
        proc = start_run(argv_resume if started else argv_new)
        if done >= kills:
            finish_run(proc, "the last (uninterrupted) run")
            break
        time.sleep(float(rng.uniform(0.0, max_delay)))
        finished_before_kill = not proc.is_alive()
        kill9(proc)
        if finished_before_kill:
            assert proc.exitcode == 0
            if checkpoint_epoch(run_dir / "checkpoint.h5") == epochs:
                break
            continue
        done += 1
        state = check_consistent(run_dir)
        lagging += state["lagging"]
        at_kill.append(state["epoch"])
        if log:
            log(f"kill {done}: checkpoint epoch {state['epoch']}, best {state['best_epoch']}"
                f"{' (best.h5 lagging: repaired on resume)' if state['lagging'] else ''}")
    check_finished(run_dir, epochs)
    return {"kills": done, "lagging": lagging, "epochs_at_kill": at_kill}


__all__ = ["RUN_TIMEOUT_S", "check_consistent", "check_finished", "finish_run", "kill9",
           "kill_window", "soak", "start_run", "timed_run"]
