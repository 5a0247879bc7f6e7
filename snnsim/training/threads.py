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

During the run (:class:`LoadWatch`) the process looks at the machine again every
:data:`WATCH_S` seconds, between two steps: how many cores *other* processes kept busy
since the last look (the busy time of all cores from /proc/stat, less this process's own
CPU time). When another process arrives and takes a core, the count goes down to what is
left (two threads with a core taken were 8x slower than one, measured); when it leaves,
the count goes back up, to as many threads as the machine has cores at most: a run that
started on one thread because the machine was busy takes the cores freed later. Each change is
logged and recorded in ``run.json`` (the start's ``blas_changes``): a run whose count
changed is bit-identical only to a run with the same changes at the same steps, so for an
exact repeat fix the count with ``OPENBLAS_NUM_THREADS`` (nothing is then watched).
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
#: Seconds between two looks at the machine by a run's :class:`LoadWatch`.
WATCH_S = 10.0


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
    fixed = fixed_by_environment()
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
    watched = (f"a training run follows the cores other processes leave it, checked every "
               f"{WATCH_S:.0f} s" if n_cpu > 1 else "kept for this run")
    return (f"BLAS threads: {n} ({idle:.1f} of {n_cpu} cores idle; {watched}; results can "
            f"depend on it: set OPENBLAS_NUM_THREADS={n} to repeat it exactly)")


def fixed_by_environment() -> list[str]:
    """The ``VAR=value`` settings of :data:`BLAS_THREAD_VARS` that fix the count (none: the
    run chooses)."""
    return [f"{v}={os.environ[v]}" for v in BLAS_THREAD_VARS if os.environ.get(v)]


class LoadWatch:
    """A run's second look at the machine: :meth:`poll` between two steps; every
    ``interval_s`` seconds it measures how many cores other processes kept busy since the
    last look (default :data:`WATCH_S`) and sets the BLAS threads to :func:`choose_blas_threads`
    of the cores they left, at most ``most`` (the machine's cores). ``cpu_times`` (/proc/stat's
    idle and total), ``process_time`` (this process's CPU seconds, all its threads) and
    ``clock`` are the readers (tests pass their own); ``set_threads`` sets the count;
    ``start`` is the count in effect now (default ``most``)."""

    def __init__(self, most: int, n_cpu: int | None = None, interval_s: float | None = None,
                 cpu_times=None, process_time=time.process_time, clock=time.monotonic,
                 set_threads=None, start: int | None = None):
        self.most = int(most)
        self.threads = self.most if start is None else int(start)
        self.n_cpu = n_cpu or os.cpu_count() or 1
        self.interval_s = WATCH_S if interval_s is None else interval_s
        self._cpu_times = cpu_times or _cpu_times
        self._process_time, self._clock = process_time, clock
        self._set = set_threads or set_blas_threads
        self._last = self._sample()

    def _sample(self):
        return self._clock(), self._cpu_times(), self._process_time()

    def others(self, before, after) -> float | None:
        """Cores other processes kept busy between two samples (None without /proc/stat)."""
        (t0, cpu0, own0), (t1, cpu1, own1) = before, after
        if cpu0 is None or cpu1 is None or t1 <= t0 or cpu1[1] <= cpu0[1]:
            return None
        busy = self.n_cpu * (1.0 - (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]))
        return max(0.0, busy - (own1 - own0) / (t1 - t0))

    def poll(self) -> tuple[int, int, float] | None:
        """None, or ``(old, new, others)`` when this look changed the count (already set)."""
        if self._clock() - self._last[0] < self.interval_s:
            return None
        now = self._sample()
        others, self._last = self.others(self._last, now), now
        if others is None:
            return None
        n = min(self.most, choose_blas_threads(self.n_cpu, self.n_cpu - others))
        if n == self.threads:
            return None
        old, self.threads = self.threads, n
        self._set(n)
        return old, n, others


def watch_for_run(backend: str) -> LoadWatch | None:
    """The :class:`LoadWatch` of a run on NumPy whose count was chosen here, started now
    from the count in effect, up to one thread per core; None when an environment variable
    fixes the count, on a one-core machine, without a BLAS library that threadpoolctl sees,
    or off Linux (no /proc/stat)."""
    if backend != "numpy" or fixed_by_environment() or _cpu_times() is None:
        return None
    n_cpu = os.cpu_count() or 1
    now = blas_threads()
    if n_cpu < 2 or not now:
        return None
    return LoadWatch(n_cpu, n_cpu, start=min(int(now), n_cpu))


__all__ = ["BLAS_THREAD_VARS", "LoadWatch", "MARGIN", "WATCH_S", "blas_threads",
           "choose_blas_threads", "choose_for_run", "fixed_by_environment", "idle_cpus",
           "set_blas_threads", "watch_for_run"]
