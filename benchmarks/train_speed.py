"""Seconds per training batch and per 60 000-sample epoch of `python3 -m snnsim.train`.

    python benchmarks/train_speed.py                        # Fashion-MNIST MLP, batch 50, NumPy float32
    python benchmarks/train_speed.py --config fashion_mnist_cnn --batches 10
    python benchmarks/train_speed.py --profile              # + cProfile of the step, top functions

Times exactly the training loop's step (snnsim.training.train.train_step: forward, kernel
loss, TSSL-BP backward, gradient-norm clip, AdamW, weight clamp) and the batch
preparation (snnsim.training.data.batches: shuffle, indexing, host-to-backend copy), on
real data when it is found (else on random images of the same shape, said so in
the output). After --warmup untimed batches, every batch is timed; the figures
are medians over --batches batches, with the phase breakdown of the same
batches. Wall time and process CPU time are both printed, with the load
average: on a shared machine the wall time of a batch grows with the load,
its CPU time much less (CPU time counts every BLAS thread, so it can exceed
the wall time).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnsim.datasets.registry import get_spec
from snnsim.loss import predict
from snnsim.training import data as data_mod
from snnsim.training.config import TrainConfig, load_config_file
from snnsim.training.optim import AdamW, clamp_weights, clip_grad_norm
from snnsim.training.train import make_loss, make_network, train_step

EPOCH_SAMPLES = 60_000


def get_split(cfg: TrainConfig, n: int):
    """The first n training samples of the real dataset, or random images."""
    try:
        split = data_mod.load_split(cfg.dataset, "train", cfg.replace(train_subset=n))
        return split, "real"
    except Exception as exc:  # any missing-data error: fall back, say so
        rng = np.random.default_rng(0)
        spec = get_spec(cfg.dataset)
        x = rng.standard_normal((n, *spec.input_shape)).astype(cfg.dtype)
        y = rng.integers(0, spec.n_classes, n)
        return data_mod.Split("train", "static", y, x=x), f"synthetic ({type(exc).__name__})"


def phase_times(net, opt, loss_fn, cfg, split, rng, n):
    """Per batch: seconds of data, forward, loss, backward, clip, adamw, clamp, predict."""
    rows = []
    it = data_mod.batches(split, cfg.batch_size, net.xp, net.dtype, cfg.n_steps, rng, shuffle=True)
    for _ in range(n):
        t = [time.perf_counter()]
        x_in, labels = next(it)
        t.append(time.perf_counter())
        a, cache = net.forward(x_in, train=True, rng=rng)
        t.append(time.perf_counter())
        _, g = loss_fn(a, labels)
        t.append(time.perf_counter())
        grads = net.backward(g, cache)
        t.append(time.perf_counter())
        if cfg.grad_clip:
            clip_grad_norm(grads, cfg.grad_clip)
        t.append(time.perf_counter())
        opt.step(grads)
        t.append(time.perf_counter())
        if cfg.weight_clamp:
            clamp_weights(net.params, -cfg.weight_clamp, cfg.weight_clamp)
        t.append(time.perf_counter())
        int((predict(a) == labels).sum())
        t.append(time.perf_counter())
        rows.append(np.diff(t))
    names = ["data", "forward", "loss", "backward", "clip", "adamw", "clamp", "predict"]
    return dict(zip(names, np.median(np.array(rows), axis=0)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="config name or path (default: the MLP defaults)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--batches", type=int, default=100, help="timed batches")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--profile", action="store_true", help="cProfile the step and print the top 25")
    args = p.parse_args(argv)

    cfg = load_config_file(args.config) if args.config else TrainConfig()
    cfg = cfg.replace(batch_size=args.batch_size, dtype=args.dtype, backend=args.backend,
                      data_dir=args.data_dir)
    n_samples = (args.batches + args.warmup) * args.batch_size
    split, source = get_split(cfg, n_samples)
    net = make_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, net)
    rng = np.random.default_rng([cfg.seed, 1])
    print(f"network {net.describe()} ({cfg.network}), T={cfg.n_steps}, batch {cfg.batch_size}, "
          f"{cfg.backend} {cfg.dtype}, data {cfg.dataset} {source}")
    threads = {v: os.environ[v] for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if v in os.environ}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) at start; "
          f"BLAS threads: {threads or 'default'}")

    def loop(n):
        wall, cpu = [], []
        it = data_mod.batches(split, cfg.batch_size, net.xp, net.dtype, cfg.n_steps, rng,
                              shuffle=True)
        for _ in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            x_in, labels = next(it)
            train_step(net, opt, x_in, labels, loss_fn, cfg, rng)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        return wall, cpu

    loop(args.warmup)
    wall, cpu = loop(args.batches)
    per_epoch = EPOCH_SAMPLES / cfg.batch_size
    med_w, med_c = statistics.median(wall), statistics.median(cpu)
    q1, q3 = np.percentile(wall, [25, 75])
    print(f"per batch  (median of {args.batches}): wall {med_w * 1e3:.2f} ms "
          f"(IQR {q1 * 1e3:.2f}-{q3 * 1e3:.2f}), CPU {med_c * 1e3:.2f} ms")
    print(f"per {EPOCH_SAMPLES}-sample epoch ({per_epoch:.0f} batches): wall {med_w * per_epoch:.1f} s, "
          f"CPU {med_c * per_epoch:.1f} s")
    phases = phase_times(net, opt, loss_fn, cfg, split, rng, min(args.batches, 50))
    total = sum(phases.values())
    print("phases (median ms per batch): " + ", ".join(
        f"{k} {v * 1e3:.2f} ({100 * v / total:.0f}%)" for k, v in phases.items()))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at end")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        loop(min(args.batches, 50))
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())


if __name__ == "__main__":
    main()
