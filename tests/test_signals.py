"""Ctrl-C and SIGTERM at any moment, from import to exit (issue 24): one line, exit
status 130, nothing half made; the run folder a new run chooses or is given.

Each test failed on the code before the fix:

- Ctrl-C during the imports or the data loading: a KeyboardInterrupt traceback
                                                   -> test_a_signal_at_any_moment_*
- SIGTERM right after "resolved config": killed silently, the folder left with only
  run.lock                                         -> test_sigterm_after_resolved_config_*
- a second signal 2 ms after the first during a save: a traceback
                                                   -> test_two_signals_during_a_save_*
- two runs without --out in the same second: the second refused for the name snnsim
  chose                                            -> test_runs_started_in_the_same_second_*
- --out a dangling or looping symlink ("File exists"), or /proc/self ("in use by
  another process")                                -> test_out_*

The children run ``python3 -m snnsim.train`` (the real entry point: its imports are
part of what is tested) on the tiny synthetic dataset of tests/test_train.py.
"""
from __future__ import annotations

import datetime
import os
import signal
import sys
import time
from pathlib import Path

import procs
import pytest
from faults import check_consistent
from test_faults import assert_one_line_error, main_status
from test_train import tiny_args, write_fashion_mnist

from snnsim.cli import EXIT_INTERRUPTED
from snnsim.training import train as train_mod

REPO = Path(__file__).resolve().parents[1]
#: What a child may end with after Ctrl-C or SIGTERM: the command's one line on
#: stderr, or (stopped inside the training loop) the run's own message on stdout.
STDERR_LINES = ("snnsim.train: interrupted (Ctrl-C)", "snnsim.train: terminated (SIGTERM)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


def start(data_dir, out, *extra, epochs=3, network="784-24-10"):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return procs.start([sys.executable, "-m", "snnsim.train",
                        *tiny_args(data_dir, out, *extra, epochs=epochs, network=network)],
                       cwd=REPO, env=env)


def wait_for_numpy(proc) -> None:
    """Wait until the child has NumPy's extension mapped (/proc/PID/maps): it is past
    the interpreter's own start-up (site, encodings: no snnsim code runs there) and in
    the imports of snnsim's modules."""
    maps = Path(f"/proc/{proc.pid}/maps")
    procs.wait_for(lambda: "_multiarray_umath" in maps.read_text(), proc, 60,
                   "NumPy's import in the child")


def assert_stopped_cleanly(proc, out: Path, stdout: str, stderr: str) -> None:
    """Exit 130 (or 0: the run finished first), no traceback, one line saying so, and
    the folder either absent (stopped before its first batch) or consistent, holding a
    checkpoint or the epoch so far (interrupted.h5, stopped inside epoch 1)."""
    assert proc.returncode in (0, EXIT_INTERRUPTED), (proc.returncode, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    if proc.returncode == EXIT_INTERRUPTED:
        lines = stderr.strip().splitlines()
        said_on_stdout = "\ninterrupted " in stdout or "\nterminated (SIGTERM) " in stdout
        assert said_on_stdout or (len(lines) == 1 and lines[0] in STDERR_LINES), (stdout, stderr)
    if out.exists():
        assert not list(out.glob("*.tmp")), sorted(p.name for p in out.iterdir())
        assert ((out / "checkpoint.h5").exists() or (out / "interrupted.h5").exists()), \
            sorted(p.name for p in out.iterdir())
        check_consistent(out)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_stops_with_one_line(data_dir, tmp_path, signum):
    """Delays from the start of the imports (NumPy's: snnsim's entry point runs before
    it) through the data loading and the first epochs."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs Linux's /proc/PID/maps to see the child's imports")
    for k, delay in enumerate((0.0, 0.3, 0.8, 1.4)):
        out = tmp_path / f"run{k}"
        proc = start(data_dir, out)
        wait_for_numpy(proc)
        time.sleep(delay)
        proc.send_signal(signum)
        stdout, stderr = procs.finish(proc, 120)
        assert_stopped_cleanly(proc, out, stdout, stderr)


def test_sigterm_after_resolved_config_leaves_no_folder(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = start(data_dir, out, epochs=50)
    seen = ""
    while "resolved config" not in seen:
        line = proc.stdout.readline()
        assert line, f"the run ended before 'resolved config': {seen}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = procs.finish(proc, 120)
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert_stopped_cleanly(proc, out, seen + stdout, stderr)


def _wait_for_a_save(proc, out: Path, after_checkpoint: bool) -> bool:
    """Poll until a temporary file of an atomic write is in ``out`` (after the first
    checkpoint when ``after_checkpoint``); False if the run ended first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (not after_checkpoint or (out / "checkpoint.h5").exists()) and list(out.glob("*.tmp")):
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("after_checkpoint", [False, True])
def test_two_signals_during_a_save_stop_cleanly(data_dir, tmp_path, after_checkpoint):
    """A first signal while a file is being written, a second 2 ms later: the save is
    finished or undone, never left half made, and the stop is one line."""
    hits = 0
    for k in range(3):
        out = tmp_path / f"run{k}"
        proc = start(data_dir, out, epochs=30, network="784-600-10")
        if _wait_for_a_save(proc, out, after_checkpoint):
            hits += 1
            proc.send_signal(signal.SIGINT)
            time.sleep(0.002)
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = procs.finish(proc, 120)
        assert_stopped_cleanly(proc, out, stdout, stderr)
    assert hits >= 1, "no save was caught in progress"


def test_a_signal_within_a_deferred_block_arrives_at_its_end():
    from snnsim import signals
    got = []
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    old_int = signal.signal(signal.SIGINT, lambda s, f: got.append(("after", s)))
    try:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            got.append("block done")
        assert got == ["block done", ("after", signal.SIGINT)]
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGUSR1, previous)


def interrupts_after(action, signum) -> list:
    """With snnsim's handlers installed: ``action()`` (which raises ``signum`` somewhere
    inside), then up to 5 s of waiting; the interrupts caught, each checked to be the
    signal's kind."""
    from snnsim import signals
    previous = signals.install()
    stops = []
    try:
        try:
            action()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.001)
        except KeyboardInterrupt as exc:
            stops.append(exc)
    finally:
        signals.restore(previous)
        signals._State.raised = False
    assert all(signals.is_sigterm(e) == (signum == signal.SIGTERM) for e in stops)
    return stops


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_finaliser_is_not_lost(signum, monkeypatch):
    """CI caught it (llvmlite's ObjectRef.__del__): a signal handled while the garbage
    collector ran a finaliser raised there, Python printed "Exception ignored" and
    dropped it, and the run finished with status 0. Now it is sent again and raised
    after the finaliser."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class Finalised:
        def __del__(self):
            signal.raise_signal(signum)       # the handler runs before __del__ returns
            self.after = "finaliser done"

    stops = interrupts_after(lambda: Finalised(), signum)   # dropped at once: __del__ runs
    assert not unraisable, [u.exc_value for u in unraisable]
    assert len(stops) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("redeliver_s", [0.01, 0.0])
def test_a_signal_inside_a_weakref_callback_is_not_lost(signum, redeliver_s, monkeypatch):
    """CI caught it: a SIGTERM handled while the import system's weakref callback
    (``_get_module_lock.<locals>.cb``) ran was raised there, Python printed "Exception
    ignored" and dropped it, and the run finished with status 0. No frame tells such a
    callback from the code that dropped the reference; the interrupt is seen dropped
    (``sys.unraisablehook``) and sent again. Whatever else is dropped still reaches the
    hook in place before. With no delay the signal sent again comes while the hook still
    starts the thread that sends it (as on a busy machine, where it was dropped there)."""
    import weakref

    from snnsim import signals
    monkeypatch.setattr(signals, "REDELIVER_S", redeliver_s)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    class Referent:
        pass

    def callback(_ref):
        signal.raise_signal(signum)           # the handler runs inside the callback
        done.append("callback done")

    def drop_last_reference():
        obj = Referent()
        refs.append(weakref.ref(obj, callback))
        del obj                               # the callback runs here, from C

    done, refs = [], []
    stops = interrupts_after(drop_last_reference, signum)
    assert not unraisable, [u.exc_value for u in unraisable]
    assert len(stops) == 1

    def failing(_ref):
        raise ValueError("not an interrupt")

    previous = signals.install()
    try:
        obj = Referent()
        ref = weakref.ref(obj, failing)
        del obj
    finally:
        signals.restore(previous)
    assert [type(u.exc_value) for u in unraisable] == [ValueError], ref
    assert sys.unraisablehook == unraisable.append


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_numbas_compiler_arrives_after_it(signum, tmp_path):
    """CI caught it: a Ctrl-C that landed while numba loaded a kernel from its cache was
    raised inside llvmlite's ctypes callback (``_raw_object_cache_getbuffer``), dropped
    there ("Exception ignored on calling ctypes callback function"), and the process then
    died of SIGSEGV. Code of numba or llvmlite is now left to finish first. Here a function
    whose file lies in a ``numba`` package folder stands for the compiler."""
    fake = tmp_path / "site-packages" / "numba" / "core" / "compiler.py"
    ns: dict = {"signal": signal}
    exec(compile("def compile_kernel(signum, done):\n"
                 "    signal.raise_signal(signum)\n"
                 "    done.append('compiled')\n", str(fake), "exec"), ns)
    done = []
    stops = interrupts_after(lambda: ns["compile_kernel"](signum, done), signum)
    assert done == ["compiled"] and len(stops) == 1


# --- the run folder -------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_their_own_folders(data_dir, tmp_path, capsys,
                                                                monkeypatch):
    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(train_mod._dt, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_args(data_dir, "unused") if a not in ("--out", "unused")]
    for _ in range(2):
        code, _, err = main_status(args, capsys)
        assert code == 0, err
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    assert folders == ["fashion-mnist_784-24-10-20260102-030405",
                       "fashion-mnist_784-24-10-20260102-030405-2"]
    assert (tmp_path / "runs" / "latest").resolve() == (tmp_path / "runs" / folders[1]).resolve()
    for name in folders:
        check_consistent(tmp_path / "runs" / name)


@pytest.mark.parametrize("case, needle", [("dangling", "which does not exist"),
                                          ("loop", "loops"), ("proc", "cannot create files")])
def test_out_that_cannot_be_a_folder_is_named_so(data_dir, tmp_path, capsys, case, needle):
    out = tmp_path / "out"
    if case == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    elif case == "loop":
        out.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(out)
    else:
        out.symlink_to("/proc/self")
    code, _, err = main_status(tiny_args(data_dir, out), capsys)
    assert_one_line_error(code, err, "train", str(out), needle)
    assert "File exists" not in err and "in use" not in err
