"""Child processes of the tests, bounded in time.

Every wait on a child has a timeout. A child that does not finish in time is killed
together with everything it started: it runs in a session of its own, which holds a
study worker's training runs and an ``mpiexec``'s ranks (OpenMPI puts each rank in a
process group of its own, so the child's group is not enough), and a kill of the
child alone would leave them running (a rank spinning in an Allreduce, a run still
writing a folder). The test then fails with the child's output so far, instead of
waiting on it for ever. ``conftest.py`` kills, after every test, the groups of the
children it started that are still there (a test that failed half way).
pytest-timeout (600 s per test, ``pyproject.toml``) is the last resort.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

#: Seconds to collect the output of a group just killed (a descendant that left the
#: group may hold the pipes open: then the output stays incomplete).
DRAIN_S = 30
_started: list[subprocess.Popen] = []


def start(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` in a new session (its own process group);
    stdout and stderr are captured as text unless ``kwargs`` says otherwise. The child
    starts with Ctrl-C's SIGINT at its default also when the suite runs with SIGINT
    ignored (a job started in the background inherits that), so that a test can
    interrupt it."""
    kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs}
    with _sigint_not_ignored():
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _started.append(proc)
    return proc


@contextlib.contextmanager
def _sigint_not_ignored():
    """Python's SIGINT handler in the block where SIGINT is ignored (a child inherits an
    ignored signal through exec, a handled one as its default)."""
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def session_members(sid: int) -> list[int]:
    """The processes of session ``sid`` (Linux: from /proc; elsewhere none)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                members.append(int(stat.parent.name))
    return members


def kill_group(proc: subprocess.Popen) -> tuple[str | None, str | None]:
    """SIGKILL to the child's session (the child and what it started; elsewhere than
    Linux its process group); returns what they wrote, as far as it can be read within
    :data:`DRAIN_S`. Only while the child is not reaped: until then its pid, the id of
    its session and group, cannot name another process's."""
    if proc.returncode is None:
        for _ in range(3):           # again for a process started while the others died
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            members = [pid for pid in session_members(proc.pid) if pid != proc.pid]
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not members:
                break
    try:
        return proc.communicate(timeout=DRAIN_S)
    except subprocess.TimeoutExpired as exc:
        return exc.stdout, exc.stderr
    except ValueError:          # its pipes were read to the end and closed already
        proc.wait(timeout=DRAIN_S)
        return None, None


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str | None, str | None]:
    """``proc.communicate()`` within ``timeout`` seconds: (stdout, stderr). A child
    still running then is killed with its group and the test fails, showing its
    output; an interruption of the wait (pytest-timeout, Ctrl-C) kills it too."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = kill_group(proc)
        pytest.fail(f"{' '.join(map(str, proc.args))} did not finish in {timeout} s "
                    f"(killed with its process group); its output:\n{_tail(out)}\n{_tail(err)}")
    except BaseException:
        kill_group(proc)
        raise


def run(cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)``, the
    child and its descendants killed if it times out (see :func:`finish`)."""
    proc = start(cmd, **kwargs)
    out, err = finish(proc, timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(ready, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``ready()`` while ``proc`` runs, until it is true. The test fails, with the
    child's output, if the child exits first or ``timeout`` seconds pass (the child is
    then killed with its group)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited ({proc.returncode})" if proc.returncode is not None
                   else f"still running after {timeout} s (killed with its process group)")
            out, err = kill_group(proc)
            pytest.fail(f"waiting for {what}: {' '.join(map(str, proc.args))} {why}; "
                        f"its output:\n{_tail(out)}\n{_tail(err)}")
        time.sleep(0.02)


def reap() -> None:
    """Kill the groups of the children started since the last call and not reaped yet
    (called by conftest.py after every test)."""
    while _started:
        proc = _started.pop()
        if proc.returncode is None:
            kill_group(proc)


def _tail(text, n: int = 4000) -> str:
    return "" if text is None else (text if isinstance(text, str) else text.decode())[-n:]


__all__ = ["DRAIN_S", "finish", "kill_group", "reap", "run", "session_members", "start",
           "wait_for"]
