"""Training speed and memory: ``python3 -m snnsim.bench``.

For each experiment (the shipped configs: Fashion-MNIST MLP and CNN at batch 50,
N-MNIST CNN at T = 30) and each backend asked for, times the whole training step
of :func:`snnsim.train.train_step` — forward, kernel/count loss, TSSL-BP
backward, gradient-norm clip, AdamW, weight clamp — and in the same run the
same step with the fused CUDA kernels (CuPy only, :mod:`snnsim.kernels`) and
with the O(T²) formulation of the backward (the explicit φ matrix,
:func:`snnsim.tsslbp.lif_backward_explicit`, as the authors compute it) as the
baseline. Then peak memory of one step for the MLP at T = 5, 30, 100, both
formulations, to show O(T) against O(T²) growth.

Inputs are random arrays of the experiment's shape (speed does not depend on
pixel values beyond the spike counts they cause; say so when quoting).
Figures: median seconds per batch over ``--batches`` timed batches after
``--warmup`` untimed ones; samples/s; seconds per 60 000-sample epoch; peak
bytes (see :class:`snnsim.backend.PeakMemory`). Printed and saved as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from ..backend import BACKENDS, PeakMemory, backend_name, get_backend, synchronize
from ..cli import prog_name
from ..datasets.registry import get_spec
from ..training.config import TrainConfig, load_config_file
from ..training.optim import AdamW, clamp_weights, clip_grad_norm
from ..training.train import make_loss, make_network
from ..tsslbp import LIF_EXPLICIT

EXPERIMENTS = {
    "mlp": ("fashion_mnist_mlp", {"batch_size": 50}),
    "cnn": ("fashion_mnist_cnn", {"batch_size": 50}),
    "nmnist": ("nmnist_cnn", {"batch_size": 50}),
}
EPOCH_SAMPLES = 60_000


def experiment_config(name: str, backend: str, **overrides) -> TrainConfig:
    config_name, fixed = EXPERIMENTS[name]
    cfg = load_config_file(config_name)
    return cfg.replace(backend=backend, **{**fixed, **overrides})


def make_batch(cfg: TrainConfig, net, rng: np.random.Generator):
    """A random input batch of the experiment's shape on the network's backend:
    a static image repeated over T (as training feeds images) or 0/1 event frames."""
    xp, B, T = net.xp, cfg.batch_size, cfg.n_steps
    if cfg.dataset == "nmnist":
        x = xp.asarray(rng.random((T, B) + net.input_shape) < 0.05, dtype=net.dtype)
    else:
        from ..network import repeat_static
        x = repeat_static(xp.asarray(rng.standard_normal((B,) + net.input_shape), dtype=net.dtype), T)
    labels = xp.asarray(rng.integers(0, get_spec(cfg.dataset).n_classes, size=B))
    return x, labels


def step(net, opt, loss_fn, cfg, x, labels, rng, explicit: bool) -> None:
    """One training step as snnsim.train.train_step, with a choice of LIF backward."""
    a, cache = net.forward(x, train=True, rng=rng)
    _, g = loss_fn(a, labels)
    grads = net.backward(g, cache, model=LIF_EXPLICIT if explicit else None)
    if cfg.grad_clip:
        clip_grad_norm(grads, cfg.grad_clip)
    opt.step(grads)
    if cfg.weight_clamp:
        clamp_weights(net.params, -cfg.weight_clamp, cfg.weight_clamp)


def time_steps(cfg: TrainConfig, explicit: bool, batches: int, warmup: int) -> dict:
    net = make_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, net)
    rng = np.random.default_rng(cfg.seed)
    x, labels = make_batch(cfg, net, rng)
    times = []
    for i in range(warmup + batches):
        synchronize(net.xp)
        t0 = time.perf_counter()
        step(net, opt, loss_fn, cfg, x, labels, rng, explicit)
        synchronize(net.xp)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    with PeakMemory(net.xp) as mem:
        step(net, opt, loss_fn, cfg, x, labels, rng, explicit)
    sec = statistics.median(times)
    return {"s_per_batch": sec, "samples_per_s": cfg.batch_size / sec,
            "s_per_epoch": sec * EPOCH_SAMPLES / cfg.batch_size, "peak_bytes": int(mem.peak_bytes),
            "batches": batches}


def device_name(xp) -> str:
    if backend_name(xp) == "numpy":
        return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog_name("python3 -m snnsim.bench"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="numpy", help="comma-separated: numpy,cupy (default numpy)")
    p.add_argument("--experiments", default="mlp,cnn,nmnist",
                   help=f"comma-separated of {sorted(EXPERIMENTS)}")
    p.add_argument("--batches", type=int, default=20, help="timed batches per figure (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    p.add_argument("--max-batches-slow", type=int, default=3,
                   help="timed batches for a figure whose first step takes over 2 s (default 3)")
    p.add_argument("--steps-sweep", default="5,30,100", help="T values of the MLP memory sweep ('' to skip)")
    p.add_argument("--no-baseline", action="store_true", help="skip the O(T²) baseline")
    p.add_argument("--out", default="bench.json", help="JSON file of all figures (default bench.json)")
    args = p.parse_args(argv)

    results = {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": [], "memory_sweep": []}
    for backend in [b for b in args.backends.split(",") if b]:
        if backend not in BACKENDS or backend == "torch":
            p.error(f"unknown backend {backend!r}; the benchmark measures numpy and cupy")
        xp = get_backend(backend)
        device = device_name(xp)
        print(f"== backend {backend} on {device}")
        for name in [e for e in args.experiments.split(",") if e]:
            if name not in EXPERIMENTS:
                p.error(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
            cfg = experiment_config(name, backend)
            row = {"experiment": name, "backend": backend, "device": device, "n_steps": cfg.n_steps,
                   "batch_size": cfg.batch_size, "network": cfg.network}
            variants = [("recursion", False, cfg)]
            if backend == "cupy":                     # one CUDA kernel per LIF layer and pass
                variants.append(("fused", False, cfg.replace(fused=True)))
            if not args.no_baseline:
                variants.append(("explicit_phi", True, cfg))
            for label, explicit, vcfg in variants:
                t0 = time.perf_counter()
                probe = time_steps(vcfg, explicit, batches=1, warmup=0)
                slow = time.perf_counter() - t0 > 2.0
                n = min(args.batches, args.max_batches_slow) if slow else args.batches
                row[label] = (probe if slow and n <= 1
                              else time_steps(vcfg, explicit, n, 0 if slow else args.warmup))
                r = row[label]
                print(f"  {name:7s} {label:13s} {r['s_per_batch'] * 1e3:9.2f} ms/batch  "
                      f"{r['samples_per_s']:9.0f} samples/s  {r['s_per_epoch']:8.1f} s/epoch  "
                      f"peak {r['peak_bytes'] / 2**20:8.1f} MiB")
            if "explicit_phi" in row:
                row["speedup_vs_explicit"] = (row["explicit_phi"]["s_per_batch"]
                                              / row["recursion"]["s_per_batch"])
                print(f"  {name:7s} recursion is {row['speedup_vs_explicit']:.2f}x the O(T²) "
                      "baseline's speed")
            results["runs"].append(row)
        for T in [int(t) for t in args.steps_sweep.split(",") if t]:
            cfg = experiment_config("mlp", backend, n_steps=T)
            entry = {"backend": backend, "n_steps": T}
            for label, explicit in (("recursion", False), ("explicit_phi", True)):
                if explicit and args.no_baseline:
                    continue
                entry[label] = time_steps(cfg, explicit, batches=1, warmup=0)
            results["memory_sweep"].append(entry)
            print(f"  memory T={T:4d}: recursion {entry['recursion']['peak_bytes'] / 2**20:8.1f} MiB"
                  + (f", explicit φ {entry['explicit_phi']['peak_bytes'] / 2**20:8.1f} MiB"
                     if "explicit_phi" in entry else ""))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"figures saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
