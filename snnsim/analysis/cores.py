"""What the machine's cores give at this moment: one worker alone against several at once.

``python3 -m snnsim.bench --cores`` runs this probe: a worker process doing single-threaded
matrix products (float32, 512 × 512, one BLAS thread) and, separately, element-wise passes
(an exp and a product over 64 k float32, what the step's kernels and NumPy passes are like),
first alone and then ``n`` workers at the same time, one per core. The figure is the
*scaling*: the work of all ``n`` together per second over the work of one alone, for
products and for element-wise passes. On ``n`` independent cores it is near ``n``.

Why it is measured and not assumed: on a virtual machine the guest's "cores" are threads
on the host, and two of them may share one physical core (hyperthreads) or compete with
other guests, which the guest cannot see (``lscpu`` may say one thread per core). On this
project's 2-core KVM development machine the probe gave 1.69-2.29 (products) and 1.74-2.10
(element-wise) over ten rounds of a clean idle series (one worker alone 109-144 GFLOP/s
from round to round), and down to 1.06 and 1.07 the same morning when other commands may
have been running: what a second thread (a BLAS thread, or a second training run) can
give changes, from almost nothing to a whole core (docs/performance.md, "Two BLAS threads
on a 2-core machine").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

#: Seconds each worker measures each kind of work.
SECONDS = 1.0

_WORKER = r"""
import json, sys, time, numpy as np
from threadpoolctl import threadpool_limits
seconds = float(sys.argv[1])
rng = np.random.default_rng(0)
a = rng.standard_normal((512, 512)).astype(np.float32)
x = rng.uniform(-1, 1, 1 << 16).astype(np.float32)
y = np.empty_like(x)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()                                     # start together
with threadpool_limits(1, "blas"):
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ a; n += 1
    gemm = n * 2 * 512 ** 3 / (time.perf_counter() - t0)
t0, m = time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    np.exp(x, out=y); np.multiply(y, 0.5, out=y); m += 1
print(json.dumps({"gemm_flops": gemm, "elementwise_per_s": m * x.size / (time.perf_counter() - t0)}))
"""


def _run_workers(n: int, seconds: float) -> list[dict]:
    """``n`` workers started, then released at once; their rates."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a core probe worker did not start")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def probe(n: int | None = None, seconds: float = SECONDS) -> dict:
    """One worker alone, then ``n`` (default: the cores this process may use) at once:
    their rates and the scalings (sum of the ``n`` over the one alone)."""
    if not n:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    alone = _run_workers(1, seconds)[0]
    together = _run_workers(n, seconds) if n > 1 else [alone]
    return {"workers": n, "alone": alone, "together": together,
            "gemm_scaling": sum(w["gemm_flops"] for w in together) / alone["gemm_flops"],
            "elementwise_scaling": (sum(w["elementwise_per_s"] for w in together)
                                    / alone["elementwise_per_s"])}


def format_probe(r: dict) -> str:
    return (f"  cores: {r['workers']} workers at once do {r['gemm_scaling']:.2f}x the matrix "
            f"products of one alone ({r['alone']['gemm_flops'] / 1e9:.0f} GFLOP/s) and "
            f"{r['elementwise_scaling']:.2f}x its element-wise passes (independent cores: "
            f"{r['workers']}x)")


__all__ = ["SECONDS", "format_probe", "probe"]
