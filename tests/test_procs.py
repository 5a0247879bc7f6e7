"""tests/procs.py, the bounded child processes of the tests: a child that does not
finish in time fails its test and is killed together with what it started."""
from __future__ import annotations

import sys
from pathlib import Path

import procs
import pytest

#: A child that starts a grandchild in a process group of its own (as OpenMPI starts its
#: ranks), writes the grandchild's pid to a file, then both sleep.
PARENT = """import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], process_group=0)
open(sys.argv[1], "w").write(str(p.pid))
time.sleep(600)
"""


def dead(pid: int) -> bool:
    """The process is gone or a zombie (killed; its reaper may not have reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_hung_child_is_killed_with_its_descendants(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    proc = procs.start([sys.executable, "-c", PARENT, str(pid_file)])
    procs.wait_for(lambda: pid_file.exists() and pid_file.read_text(), proc, 60,
                   "the grandchild's pid")
    grandchild = int(pid_file.read_text())
    with pytest.raises(pytest.fail.Exception, match=r"did not finish in 0\.5 s"):
        procs.finish(proc, 0.5)
    assert proc.returncode is not None and proc.returncode < 0      # killed, and reaped
    assert dead(grandchild)


def test_a_child_that_exits_early_fails_the_wait_with_its_output():
    proc = procs.start([sys.executable, "-c", "print('bye'); raise SystemExit(3)"])
    with pytest.raises(pytest.fail.Exception, match=r"(?s)exited \(3\).*bye"):
        procs.wait_for(lambda: False, proc, 60, "something")
