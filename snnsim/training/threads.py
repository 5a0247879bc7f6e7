"""How many BLAS threads a CPU process uses: as many as the machine has idle cores, at least one.

OpenBLAS starts one thread per core. When other processes keep some of those cores busy,
its threads wait for each other at every product, spinning, and a training step gets
several times slower than with a single thread (2-10x measured with one competing
process on 2 cores; ``python3 -m snnsim.bench`` shows it). So before training, a process
on the NumPy backend measures how many cores are idle (:func:`idle_cpus`, over a fifth of
a second) and sets its BLAS thread count with ``threadpoolctl`` (:func:`choose_blas_threads`):

    threads = max(1, min(n_cpu, ⌊idle + MARGIN⌋))

With fewer threads than idle cores a step is at worst the speed of one thread; it never
runs more threads than cores are free, which is what makes OpenBLAS slow.

Reproducibility: the thread count is fixed for the whole run (chosen once, at its start) and
reported. OpenBLAS divides a product's work by its thread count, and a different division
can change the last bits of a float32 product, so two runs that chose different counts
(because the machine was busy for one of them) can differ like two runs with different
``OPENBLAS_NUM_THREADS``. Setting ``OPENBLAS_NUM_THREADS`` (or ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``) fixes the count: the process then keeps it and chooses nothing.
"""
from __future__ import annotations

import os
import time

#: Environment variables that fix the BLAS thread count; if one is set, nothing is chosen.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Idle cores counted as one more thread when at least this fraction of the core is idle.
MARGIN = 0.25
#: Seconds over which :func:`idle_cpus` watches the machine.
WINDOW_S = 0.2


def choose_blas_threads(n_cpu: int, idle: float) -> int:
    """Threads for ``idle`` idle cores of ``n_cpu``: max(1, min(n_cpu, ⌊idle + MARGIN⌋))."""
    return max(1, min(int(n_cpu), int(idle + MARGIN)))


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0.0), sum(fields[:8])   # idle + iowait


def idle_cpus(window_s: float = WINDOW_S, n_cpu: int | None = None) -> float:
    """How many cores were idle, on average, over the next ``window_s`` seconds (this process
    sleeps meanwhile): from /proc/stat on Linux, else n_cpu minus the 1-minute load average."""
    n_cpu = n_cpu or os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        try:
            return max(0.0, n_cpu - os.getloadavg()[0])
        except (OSError, AttributeError):   # pragma: no cover - neither /proc nor getloadavg
            return float(n_cpu)
    time.sleep(window_s)
    after = _cpu_times()
    d_total = after[1] - before[1]
    return n_cpu * (after[0] - before[0]) / d_total if d_total > 0 else float(n_cpu)


def blas_threads() -> int | None:
    """The BLAS thread count now in effect (the first BLAS library's), or None."""
    from threadpoolctl import threadpool_info
    counts = [e["num_threads"] for e in threadpool_info() if e.get("user_api") == "blas"]
    return counts[0] if counts else None


def set_blas_threads(n: int):
    """Set every BLAS library of this process to ``n`` threads (``threadpoolctl``); returns
    the limiter, whose ``restore_original_limits()`` undoes it."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=int(n), user_api="blas")


def choose_for_run(backend: str, previous: int | None = None) -> str | None:
    """Before a run on NumPy: set the BLAS threads to :func:`choose_blas_threads` of the idle
    cores unless an environment variable fixes them; a resumed run (``previous``: the count
    its first start used, from its ``run.json``) takes that count again, so that it stays
    bit-identical to an uninterrupted run. Returns the line to log, or None (CuPy, PyTorch:
    their BLAS is not the CPU's)."""
    if backend != "numpy":
        return None
    fixed = [f"{v}={os.environ[v]}" for v in BLAS_THREAD_VARS if os.environ.get(v)]
    if fixed:
        return f"BLAS threads: {blas_threads()} (fixed by {', '.join(fixed)})"
    if previous:
        set_blas_threads(previous)
        return (f"BLAS threads: {previous}, as at the run's first start (so that the resumed "
                "epochs are bit-identical to an uninterrupted run)")
    n_cpu = os.cpu_count() or 1
    idle = idle_cpus(n_cpu=n_cpu)
    n = choose_blas_threads(n_cpu, idle)
    set_blas_threads(n)
    return (f"BLAS threads: {n} ({idle:.1f} of {n_cpu} cores idle; fixed for this run; results "
            f"can depend on it: set OPENBLAS_NUM_THREADS={n} to repeat it exactly)")


__all__ = ["BLAS_THREAD_VARS", "MARGIN", "blas_threads", "choose_blas_threads", "choose_for_run",
           "idle_cpus", "set_blas_threads"]
