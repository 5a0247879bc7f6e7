"""The floor of a training step, timed in the same run as the step; and the step on a busy machine.

A training step cannot take less time than the work it cannot avoid (its *floor*):

1. **its matrix products**, at its shapes, dtype and operand layouts: per dense layer the
   input currents x = W a (4), the weight gradient ∂L/∂W = Σ δ aᵀ (8) and, above the first
   layer, the error g = Wᵀ δ (10); per convolution the same three as im2col products
   (:mod:`snnsim.conv`). A static image's first layer runs on B rows, not T·B
   (:func:`snnsim.network.repeat_static`);
2. **one read or one write ("touch") of every array it must read or write**: per LIF layer
   the forward reads x and writes u, s, a, the backward reads g, u, s, a and writes δ;
   the loss reads a and writes g; per weight array the clip's norm reads g and
   AdamW + clamp read p, g, m, v and write p, m, v; pooling and dropout read their input
   and write their output, both ways; im2col writes its columns, col2im reads them back;
   a static image's first layer writes γ[t] x and its backward reads δ once more;
3. **one exp per element the warm-up replaces** (σ' of (S 2.3); the fraction measured on
   the batch).

Each part is timed in the process that runs the step, alternating with it: the products
with ``numpy.matmul`` into preallocated outputs; touches as ``numpy.add(a, b, out=c)``
(three touches) on arrays of the touched shape, scaled by touches / 3 (arrays of over
:data:`CAP` elements by a timed add of ``CAP`` elements, scaled by size); exps with
``numpy.exp``. floor = products + touches + exps. A floor of 1 would need fused kernels
and perfect products; NumPy runs each element-wise operation as its own pass.

The ratio step / floor is the median over ``n`` rounds of (step, floor) measured back to
back, each round's step divided by the same round's floor, so that the load of a shared
machine weighs on both alike; the fast path's rounds first, then the plain path's.

:func:`busy_figures` times the step with a competing busy-loop process that it starts:
with as many BLAS threads as cores (OpenBLAS's default), with one, and with the count
:mod:`snnsim.training.threads` chooses.
"""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..conv import Conv2d
from ..layers import Dense
from ..training.threads import choose_blas_threads, idle_cpus, set_blas_threads
from ..tsslbp import warmup_mask
from .steptimer import StepTimer, make_network

#: Timed arrays have at most this many elements; larger ones are scaled by size.
CAP = 1 << 22
#: Busy-loop processes :func:`busy_figures` starts.
COMPETITORS = 1


@dataclass(frozen=True)
class Product:
    """C = A @ B with A ``(m, k)``, B ``(k, n)``; ``*_t``: the operand is a transposed view."""

    name: str
    m: int
    k: int
    n: int
    a_t: bool = False
    b_t: bool = False


def step_work(net, x) -> tuple[list[Product], dict, list[int]]:
    """The unavoidable work of one training step of ``net`` on the batch ``x``:
    (products, touches, exps) — touches as {(shape, dtype name): count}, a bool array's
    touch counted by its bytes; exps as element counts. Read off one forward pass."""
    a, cache = net.forward(x, train=True, rng=np.random.default_rng(0))
    dtype = np.dtype(net.dtype)
    products, touches, exps = [], {}, []

    def touch(shape, n, itemsize=None):
        key = (tuple(int(v) for v in shape), dtype.name)
        touches[key] = touches.get(key, 0.0) + n * (itemsize or dtype.itemsize) / dtype.itemsize

    for i, (layer, lc, state) in enumerate(zip(net.layers, cache.layer_caches, cache.states)):
        first = i == 0
        if isinstance(layer, Dense):
            (a_prev, W), _ = lc
            rows = math.prod(a_prev.shape[:-1])
            n_out, n_in = W.shape
            products += [Product(f"{i}:x=Wa", rows, n_in, n_out, b_t=True),
                         Product(f"{i}:dW", n_out, rows, n_in, a_t=True)]
            if not first:
                products.append(Product(f"{i}:g=W'd", rows, n_out, n_in))
        elif isinstance(layer, Conv2d):
            cols_2d, W, in_shape, padded_hw, _, _ = lc
            (K, P), C_out = cols_2d.shape, W.shape[0]
            products += [Product(f"{i}:x=W*a", C_out, K, P),
                         Product(f"{i}:dW", K, P, C_out, b_t=True)]
            touch(in_shape, 1)                                            # im2col reads a
            touch(cols_2d.shape, 1)                                       # ... writes cols
            if not first:
                products.append(Product(f"{i}:g=W'*d", K, C_out, P, a_t=True))
                touch(cols_2d.shape, 1)                                   # col2im reads dcols
                touch(in_shape, 1)                                        # ... writes g
        elif layer.spiking:
            raise ValueError(f"no floor for a {type(layer).__name__} layer")
        elif lc is not None:                                              # pool, dropout (not off)
            touch(x.shape[:2] + net.shapes[i], 2)                        # read a; write its g
            touch(x.shape[:2] + net.shapes[i + 1], 2)                    # write out; read its g
        if state is not None:
            shape = state.u.shape
            touch(shape, 3)                                               # forward: x; u, a
            touch(shape, 1, itemsize=1)                                   # s
            touch(shape, 4)                                               # backward: g, u, a; δ
            touch(shape, 1, itemsize=1)                                   # s
            if net.grad.warmup:
                exps.append(int(np.count_nonzero(warmup_mask(state.a, net.neuron_of(layer).theta_s))))
            if first and cache.input_gain is not None:
                touch(shape, 2)                                           # γ[t] x; Σ_t γ[t] δ[t]
    touch(a.shape, 2)                                                     # the loss: a; g
    for layer in net.params:
        for p in layer.values():
            touch(p.shape, 8)                                             # g; p, g, m, v; p, m, v
    return products, touches, exps


class Floor:
    """The operands of the floor's work, allocated once; :meth:`time` runs it once."""

    def __init__(self, net, x):
        rng = np.random.default_rng(0)
        dtype = np.dtype(net.dtype)
        products, touches, exps = step_work(net, x)

        def arr(shape):
            return rng.standard_normal(shape).astype(dtype)

        self.products = []
        for p in products:
            A = arr((p.k, p.m)).T if p.a_t else arr((p.m, p.k))
            B = arr((p.n, p.k)).T if p.b_t else arr((p.k, p.n))
            self.products.append((A, B, np.empty((p.m, p.n), dtype)))
        self.adds = []
        for (shape, _), n in touches.items():
            size = math.prod(shape)
            elems = min(size, CAP)
            self.adds.append(([arr(elems) for _ in range(3)], n / 3.0 * size / elems))
        self.exps = [(arr(min(n, CAP)), np.empty(min(n, CAP), dtype), n / min(n, CAP))
                     for n in exps if n > 0]
        self.n_products = len(products)
        self.flop = sum(2 * p.m * p.k * p.n for p in products)
        self.touch_bytes = sum(math.prod(s) * n * dtype.itemsize for (s, _), n in touches.items())

    def time(self) -> dict:
        """Seconds of the products, the touches and the exps, one run of each."""
        t0 = time.perf_counter()
        for A, B, C in self.products:
            np.matmul(A, B, out=C)
        t1 = time.perf_counter()
        touches = 0.0
        for (a, b, c), scale in self.adds:
            s = time.perf_counter()
            np.add(a, b, out=c)
            touches += (time.perf_counter() - s) * scale
        exps = 0.0
        for e, out, scale in self.exps:
            s = time.perf_counter()
            np.exp(e, out=out)
            exps += (time.perf_counter() - s) * scale
        return {"products": t1 - t0, "touches": touches, "exps": exps,
                "total": t1 - t0 + touches + exps}


def floor_figures(cfg, n: int, warmup: int = 3) -> dict:
    """``n`` rounds of (fast step, floor), back to back, then ``n`` of (plain step, floor):
    medians, and the medians of each round's step / floor."""
    timers = {"fast": StepTimer(cfg), "plain": StepTimer(cfg)}
    timers["plain"].fast = False
    floor = Floor(timers["fast"].net, timers["fast"].x)
    med = statistics.median
    out = {"rounds": n, "n_products": floor.n_products, "gflop": floor.flop / 1e9,
           "touch_mib": floor.touch_bytes / 2**20, "blas_threads": _blas_threads()}
    for path, timer in timers.items():
        rounds = []
        for i in range(warmup + n):
            row = (timer.step(), floor.time())
            if i >= warmup:
                rounds.append(row)
        steps, parts = zip(*rounds)
        out[path] = {"step_s": med(steps), "floor_s": med(p["total"] for p in parts),
                     "floor_parts_s": {k: med(p[k] for p in parts)
                                       for k in ("products", "touches", "exps")},
                     "step_over_floor": med(s / p["total"] for s, p in zip(steps, parts))}
    out["products_gflops"] = floor.flop / 1e9 / out["fast"]["floor_parts_s"]["products"]
    return out


def format_floor(name: str, r: dict) -> str:
    f, p = r["fast"], r["plain"]
    fp = f["floor_parts_s"]
    return (f"  numpy {name:7s} floor {f['floor_s'] * 1e3:.2f} ms = products {fp['products'] * 1e3:.2f} "
            f"({r['n_products']} GEMMs, {r['gflop']:.2f} GFLOP at {r['products_gflops']:.0f} GFLOP/s) "
            f"+ touches {fp['touches'] * 1e3:.2f} ({r['touch_mib']:.0f} MiB) + exps {fp['exps'] * 1e3:.2f}"
            f"\n  numpy {name:7s} step {f['step_s'] * 1e3:.2f} ms = {f['step_over_floor']:.2f}x the floor"
            f" (plain path: {p['step_s'] * 1e3:.2f} ms = {p['step_over_floor']:.2f}x); medians of "
            f"{r['rounds']} rounds of step and floor back to back, BLAS threads {r['blas_threads']}")


def _blas_threads():
    from ..training.threads import blas_threads
    return blas_threads()


# --- the busy machine ------------------------------------------------------------------
def start_competitors(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy (a Python busy loop)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def busy_figures(cfg, n: int, competitors: int = COMPETITORS, warmup: int = 3) -> dict:
    """The step with ``competitors`` busy-loop processes running: ``n`` rounds, each timing
    one step with every thread setting (cores, 1, chosen), in turn."""
    timer = StepTimer(cfg)
    n_cpu = os.cpu_count() or 1
    procs = start_competitors(competitors)
    try:
        time.sleep(0.3)
        idle = idle_cpus(n_cpu=n_cpu)
        chosen = choose_blas_threads(n_cpu, idle)
        settings = {"cores": n_cpu, "one": 1}
        if chosen not in settings.values():    # else the chosen setting is one of those two
            settings["chosen"] = chosen
        times = {k: [] for k in settings}
        for i in range(warmup + n):
            for k, threads in settings.items():
                limiter = set_blas_threads(threads)
                t = timer.step()
                limiter.restore_original_limits()
                if i >= warmup:
                    times[k].append(t)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    same = next((k for k, v in settings.items() if v == chosen), "chosen")
    med["chosen"] = med[same]                  # one setting, one figure: timed once
    return {"competitors": competitors, "n_cpu": n_cpu, "idle_cpus": idle,
            "threads": {**settings, "chosen": chosen}, "chosen_is": same,
            "rounds": n, "step_s": med,
            "over_one_thread": {k: med[k] / med["one"] for k in med}}


def format_busy(name: str, r: dict) -> str:
    s, th = r["step_s"], r["threads"]
    same = r.get("chosen_is", "chosen")
    if same == "chosen":
        chosen = (f"with the chosen {th['chosen']} {s['chosen'] * 1e3:.2f} ms "
                  f"({r['over_one_thread']['chosen']:.2f}x one thread's time)")
    else:
        chosen = f"a run would choose {th['chosen']} (the setting timed above)"
    return (f"  numpy {name:7s} with {r['competitors']} busy-loop process(es) on {r['n_cpu']} cores "
            f"({r['idle_cpus']:.1f} idle): step with {th['cores']} BLAS threads (OpenBLAS's default) "
            f"{s['cores'] * 1e3:.2f} ms, with 1 {s['one'] * 1e3:.2f} ms; {chosen}; "
            f"median of {r['rounds']} alternating rounds")


__all__ = ["CAP", "Floor", "Product", "busy_figures", "floor_figures", "format_busy", "format_floor",
           "start_competitors", "step_work"]


# --- the benchmark's hook (python3 -m snnsim.bench) -------------------------------------------
KINDS = ("floor", "busy")


def add_arguments(p) -> None:
    p.add_argument("--floor-steps", type=int, default=100,
                   help="rounds of (step, floor) per experiment on numpy: the step / floor ratio "
                        "(default 100; 0 to skip)")
    p.add_argument("--busy-steps", type=int, default=30,
                   help=f"rounds of the MLP step with {COMPETITORS} busy-loop process started by the "
                        "benchmark, per BLAS thread setting (default 30; 0 to skip; needs the mlp "
                        "experiment)")


def jobs(args, backend: str, experiments: list[str]) -> list[tuple]:
    """The floor and busy-machine figures to measure (NumPy only: the floor is the CPU's)."""
    if backend != "numpy":
        return []
    out = [("floor", backend, name, "floor", False) for name in experiments if args.floor_steps > 0]
    if args.busy_steps > 0 and "mlp" in experiments:
        out.append(("busy", backend, "mlp", "busy", False))
    return out


def measure(kind: str, name: str, cfg, args) -> tuple[dict, str]:
    """One figure of :data:`KINDS`: its results and the lines to print."""
    from ..fast import fast_path_applies
    path = "fast" if fast_path_applies(make_network(cfg), cfg.backward, None) else "plain"
    if kind == "floor":
        r = {"step_path": path, **floor_figures(cfg, args.floor_steps)}
        return r, format_floor(name, r)
    r = {"step_path": path, **busy_figures(cfg, args.busy_steps)}
    return r, format_busy(name, r)
