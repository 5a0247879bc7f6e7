"""Runs snnsim's commands on damaged files in one process, for tests/test_fuzz_files.py.

    python3 tests/fuzz_worker.py JOBS.json RESULTS.jsonl

JOBS.json is a list of jobs ``{"id", "command", "argv"}``; ``command`` is ``load`` (the
checkpoint reader itself), ``train``, ``record``, ``plots`` or ``inspection`` (that
command's ``main(argv)``, called in this process). Before each job the worker appends
``{"id", "started": true}`` to RESULTS.jsonl, after it ``{"id", "code", "err",
"traceback", "seconds"}``: a job that crashes the process (a segmentation fault in a
library) or hangs is the last one started. The caller sets the memory limit
(RLIMIT_AS) and the time limit; each job also has :data:`JOB_TIMEOUT_S` of its own
(SIGALRM), after which the worker reports it as hung and leaves.

Raw byte-level damage (flipped bits in HDF5's own structures, truncation) runs here,
not in the test process: a damaged HDF5 file may crash the library.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
import traceback

#: Seconds one job may take.
JOB_TIMEOUT_S = 60


class Hung(BaseException):
    """A job ran past JOB_TIMEOUT_S."""


def _alarm(signum, frame):
    raise Hung()


def run_job(job) -> dict:
    from snnsim.analysis import inspection, plots, record
    from snnsim.training import train
    from snnsim.training.checkpoint import CheckpointError, load_checkpoint
    mains = {"train": train.main, "record": record.main, "plots": plots.main,
             "inspection": inspection.main}
    err = io.StringIO()
    tb = ""
    code = None
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            if job["command"] == "load":
                try:
                    load_checkpoint(job["argv"][0])
                    code = 0
                except CheckpointError as exc:
                    code = 2
                    print(f"snnsim.load: error: {exc}", file=sys.stderr)
            else:
                code = mains[job["command"]](job["argv"])
        except SystemExit as exc:
            code = exc.code
        except Hung:
            raise
        except BaseException:                     # a traceback: what the fuzz looks for
            tb = traceback.format_exc()
    return {"code": code, "err": err.getvalue(), "traceback": tb}


def main(jobs_path, results_path) -> int:
    import matplotlib
    matplotlib.use("Agg")
    jobs = json.loads(open(jobs_path).read())
    signal.signal(signal.SIGALRM, _alarm)
    with open(results_path, "a") as out:
        for job in jobs:
            out.write(json.dumps({"id": job["id"], "started": True}) + "\n")
            out.flush()
            os.fsync(out.fileno())
            t0 = time.perf_counter()
            signal.alarm(JOB_TIMEOUT_S)
            try:
                result = run_job(job)
            except Hung:
                out.write(json.dumps({"id": job["id"], "hung": True}) + "\n")
                return 3
            finally:
                signal.alarm(0)
            result.update(id=job["id"], seconds=time.perf_counter() - t0)
            out.write(json.dumps(result) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
