"""Training speed and memory: ``python3 -m snnsim.bench``.

Times the one training step of ``python3 -m snnsim.train``
(:func:`snnsim.training.train.train_step`: forward, loss, backward, gradient-norm clip,
AdamW, weight clamp), for each experiment and backend asked for, and in the same run the
same step with the fused CUDA kernels (CuPy only) and with the O(T²) formulation of the
backward (the explicit φ matrix, :func:`snnsim.tsslbp.lif_backward_explicit`, as the
authors compute it) as the baseline; then the peak memory of one MLP step at several T,
both formulations, to show O(T) against O(T²) growth. ``--phases`` adds the breakdown of
the step on real data (data, forward, loss, backward, clip, AdamW, clamp; wall and CPU
time, load average), ``--profile`` a cProfile of it.

Inputs of the timing are random arrays of the experiment's shape (speed does not depend
on pixel values beyond the spike counts they cause; say so when quoting). Figures: median
seconds per batch over ``--batches`` timed batches after ``--warmup`` untimed ones;
samples/s; seconds per 60 000-sample epoch; peak bytes (:class:`snnsim.backend.PeakMemory`).
Every figure is printed and written to the JSON file as soon as it is measured (an
interrupted run keeps what it measured).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from ..backend import BACKENDS, BackendError, backend_name, get_backend, synchronize
from ..commandline import ArgumentParser, prog_name, report_error
from ..datasets.registry import get_spec
from ..fast import EVAL_CHUNK
from ..training import data as data_mod
from ..training import train as train_mod
from ..training.config import ConfigError, TrainConfig, load_config_file
from ..training.optim import AdamW
from ..training.threads import choose_for_run
from ..training.train import make_loss, make_network, train_step, write_json_atomic
from ..variants import BACKWARDS, DEFAULT_BACKWARD
from . import cores as cores_mod
from . import floor as floor_mod
from . import spread as spread_mod
from .steptimer import StepTimer, make_batch  # noqa: F401  (bench.StepTimer, bench.make_batch)

EXPERIMENTS = {
    "mlp": ("fashion_mnist_mlp", {"batch_size": 50}),
    "cnn": ("fashion_mnist_cnn", {"batch_size": 50}),
    "nmnist": ("nmnist_cnn", {"batch_size": 50}),
}
QUICK_EXPERIMENTS, FULL_EXPERIMENTS = "mlp", "mlp,cnn,nmnist"
QUICK_SWEEP, FULL_SWEEP = "5,30", "5,30,100"
EPOCH_SAMPLES = 60_000
#: A figure whose first step takes longer than this many seconds gets --max-batches-slow batches.
SLOW_STEP_S = 2.0
BLAS_THREAD_VARS = train_mod.BLAS_THREAD_VARS


def experiment_config(name: str, backend: str, backward: str = DEFAULT_BACKWARD,
                      **overrides) -> TrainConfig:
    config_name, fixed = EXPERIMENTS[name]
    cfg = load_config_file(config_name)
    return cfg.replace(backend=backend, backward=backward, **{**fixed, **overrides})


def figures(times: list[float], batch_size: int, peak_bytes: int) -> dict:
    sec = statistics.median(times)
    return {"s_per_batch": sec, "samples_per_s": batch_size / sec,
            "s_per_epoch": sec * EPOCH_SAMPLES / batch_size, "peak_bytes": peak_bytes,
            "batches": len(times)}


def time_figure(cfg: TrainConfig, explicit: bool, batches: int, warmup: int, max_slow: int) -> dict:
    """Median step time over ``batches`` (``max_slow`` if the first step is slow; that first
    step then counts), and the peak memory of one more step."""
    timer = StepTimer(cfg, explicit)
    first = timer.step()                          # the first of the warm-up steps, or timed
    if first > SLOW_STEP_S:
        times = [first] + [timer.step() for _ in range(max(max_slow, 1) - 1)]
    elif warmup == 0:
        times = [first] + [timer.step() for _ in range(batches - 1)]
    else:
        for _ in range(warmup - 1):
            timer.step()
        times = [timer.step() for _ in range(batches)]
    return figures(times, cfg.batch_size, timer.peak_bytes())


def memory_figure(cfg: TrainConfig, explicit: bool) -> dict:
    """One step's time and peak memory (the first step: no warm-up)."""
    timer = StepTimer(cfg, explicit)
    return figures([timer.step()], cfg.batch_size, timer.peak_bytes())


# --- the evaluation's forward --------------------------------------------------------------
def eval_figure(cfg: TrainConfig, samples: int, repeats: int = 3) -> dict:
    """Seconds per sample of a test pass (:func:`snnsim.training.train.test_pass`) over
    ``samples`` samples of real data (random images where the data set is missing), the best
    of ``repeats``: as training evaluates (on NumPy: :class:`~snnsim.fast.FastForward` in
    slices of :data:`~snnsim.fast.EVAL_CHUNK`), and, for comparison, the plain
    :meth:`~snnsim.network.Network.forward` on the same slices (``plain_s_per_sample``)."""
    split, source = real_split(cfg, samples)
    net = make_network(cfg)
    cfg = cfg.replace(eval_batch_size=max(samples, 1))
    out = {"samples": samples, "data": source}
    for label, fast in (("s_per_sample", True), ("plain_s_per_sample", False)):
        plain_cfg = cfg if fast else cfg.replace(eval_batch_size=EVAL_CHUNK)
        with mock.patch.object(train_mod, "fast_forward_applies",
                               train_mod.fast_forward_applies if fast else (lambda net: False)):
            train_mod.test_pass(net, split, plain_cfg)          # warm: workspace, kernels
            best = float("inf")
            for _ in range(repeats):
                synchronize(net.xp)
                t0 = time.perf_counter()
                train_mod.test_pass(net, split, plain_cfg)
                synchronize(net.xp)
                best = min(best, time.perf_counter() - t0)
        out[label] = best / samples
    return out


# --- the phases of the step on real data (what benchmarks/train_speed.py did) ------------
PHASES = ("data", "forward", "loss", "backward", "clip", "adamw", "clamp")


class _PhaseClock:
    """Wraps the callables :func:`train_step` calls, adding their seconds to ``self.t``."""

    def __init__(self, xp):
        self.xp, self.t = xp, dict.fromkeys(PHASES, 0.0)

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            synchronize(self.xp)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(self.xp)
            self.t[phase] += time.perf_counter() - t0
            return out
        return timed


def real_split(cfg: TrainConfig, n: int):
    """The first n training samples of the real dataset, or random images (said so)."""
    try:
        return data_mod.load_split(cfg.dataset, "train", cfg.replace(train_subset=n)), "real"
    except Exception as exc:  # any missing-data error: fall back, say so
        rng = np.random.default_rng(0)
        spec = get_spec(cfg.dataset)
        x = rng.standard_normal((n, *spec.input_shape)).astype(cfg.dtype)
        y = rng.integers(0, spec.n_classes, n)
        return data_mod.Split("train", "static", y, x=x), f"synthetic ({type(exc).__name__})"


def phase_figures(cfg: TrainConfig, batches: int, warmup: int, profile: bool = False) -> dict:
    """Per batch of real data: wall and CPU seconds of drawing the batch and of
    :func:`train_step`, and the median seconds of each phase of the step."""
    split, source = real_split(cfg, (batches + warmup) * cfg.batch_size)
    net = make_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    clock = _PhaseClock(net.xp)
    loss_fn = clock.wrap("loss", make_loss(cfg, net))
    net.forward = clock.wrap("forward", net.forward)
    net.backward = clock.wrap("backward", net.backward)
    opt.step = clock.wrap("adamw", opt.step)
    rng = np.random.default_rng([cfg.seed, 1])
    it = data_mod.batches(split, cfg.batch_size, net.xp, net.dtype, cfg.n_steps, rng, shuffle=True,
                          device=net.device)
    wall, cpu, rows = [], [], []
    load0 = os.getloadavg()[0]
    prof = cProfile.Profile() if profile else None
    with mock.patch.object(train_mod, "clip_grad_norm", clock.wrap("clip", train_mod.clip_grad_norm)), \
            mock.patch.object(train_mod, "clamp_weights", clock.wrap("clamp", train_mod.clamp_weights)):
        for i in range(warmup + batches):
            clock.t = dict.fromkeys(PHASES, 0.0)
            w0, c0 = time.perf_counter(), time.process_time()
            if prof and i >= warmup:
                prof.enable()
            x_in, labels = clock.wrap("data", next)(it)
            train_step(net, opt, x_in, labels, loss_fn, cfg, rng, fast=False)   # phases: plain path
            if prof:
                prof.disable()
            if i >= warmup:
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
                rows.append([clock.t[p] for p in PHASES])
    med = np.median(np.array(rows), axis=0)
    out = {"data": source, "network": os.path.basename(cfg.network), "n_steps": cfg.n_steps,
           "batch_size": cfg.batch_size, "backward": cfg.backward, "batches": batches,
           "wall_s_per_batch": statistics.median(wall), "cpu_s_per_batch": statistics.median(cpu),
           "wall_iqr": [float(q) for q in np.percentile(wall, [25, 75])],
           "phases_s": dict(zip(PHASES, map(float, med))),
           "load_average_start": load0, "load_average_end": os.getloadavg()[0]}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        out["profile"] = s.getvalue()
    return out


def format_phases(r: dict) -> str:
    per_epoch = EPOCH_SAMPLES / r["batch_size"]
    total = sum(r["phases_s"].values())
    return (f"  phases on {r['data']} data, {r['network']} T={r['n_steps']} batch {r['batch_size']} "
            f"(median of {r['batches']}): wall {r['wall_s_per_batch'] * 1e3:.2f} ms "
            f"(IQR {r['wall_iqr'][0] * 1e3:.2f}-{r['wall_iqr'][1] * 1e3:.2f}), CPU "
            f"{r['cpu_s_per_batch'] * 1e3:.2f} ms per batch; {r['wall_s_per_batch'] * per_epoch:.1f} s "
            f"wall per {EPOCH_SAMPLES}-sample epoch; load average {r['load_average_start']:.2f} -> "
            f"{r['load_average_end']:.2f}\n  " + ", ".join(
                f"{k} {v * 1e3:.2f} ms ({100 * v / total:.0f}%)" for k, v in r["phases_s"].items()))


# --- the command ------------------------------------------------------------------------------
def device_name(xp) -> str:
    if backend_name(xp) == "numpy":
        return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


DESCRIPTION = __doc__ + """
How long, on a 2-core CPU with NumPy:
  python3 -m snnsim.bench              quick: the MLP step and its O(T²) baseline, the step
                                       against its floor (snnsim/analysis/floor.py) and with a
                                       competing process, memory at T = 5, 30 - about 40 s
                                       (measured: 41 s with both cores busy with other work)
  python3 -m snnsim.bench --full       + the CNN and N-MNIST experiments with their baselines
                                       and floors, memory at T = 100 - over 15 min and 17 GB
                                       of memory (the N-MNIST O(T²) baseline alone is 1.5-3 min
                                       a batch; --floor-steps 20 shortens the CNN floors)
  python3 -m snnsim.bench --phases     + the step's phases on real data - a few seconds more
  python3 -m snnsim.bench --processes 10
                                       the same in 10 fresh processes: each figure's
                                       min / median / max over them (a spread between
                                       processes is a cost decided at a process's start)
A backend that is not available (e.g. cupy without a GPU) stops the command at once."""


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.bench"), description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="numpy", help="comma-separated: numpy,cupy (default numpy)")
    p.add_argument("--full", action="store_true",
                   help=f"experiments {FULL_EXPERIMENTS} and memory sweep T = {FULL_SWEEP} "
                        f"(about 15 min, 17 GB)")
    p.add_argument("--experiments", default=None,
                   help=f"comma-separated of {sorted(EXPERIMENTS)} (default {QUICK_EXPERIMENTS}; "
                        f"--full: {FULL_EXPERIMENTS}; '' to skip)")
    p.add_argument("--steps-sweep", default=None,
                   help=f"T values of the MLP memory sweep (default {QUICK_SWEEP}; --full: "
                        f"{FULL_SWEEP}; '' to skip)")
    p.add_argument("--backward", default=DEFAULT_BACKWARD, choices=BACKWARDS, metavar="NAME",
                   help="backward variant of the timed step (default tsslbp; names in "
                        "python3 -m snnsim.train --help)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per figure (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    p.add_argument("--max-batches-slow", type=int, default=3,
                   help=f"timed batches for a figure whose first step takes over {SLOW_STEP_S:g} s, "
                        "that step included (default 3)")
    p.add_argument("--no-baseline", action="store_true", help="skip the O(T²) baseline")
    p.add_argument("--eval-samples", type=int, default=0, metavar="N",
                   help="also time the evaluation's forward on N test samples, per sample, "
                        "against the training step (default 0: not measured)")
    p.add_argument("--phases", action="store_true",
                   help="also time the phases of the MLP step on real data (wall and CPU time)")
    p.add_argument("--profile", action="store_true", help="with --phases: cProfile, top 25 functions")
    floor_mod.add_arguments(p)
    p.add_argument("--cores", action="store_true",
                   help="first probe what the cores give at this moment: matrix products and "
                        "element-wise passes of one worker alone against one per core at once "
                        "(about 4 s; on a virtual machine two cores can give far less than two "
                        "cores' work: snnsim/analysis/cores.py)")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run the whole benchmark in N fresh processes, one after the other, "
                        "and report each figure's min / median / max over them (default 1; "
                        "what a process decides at its start, such as how its BLAS threads "
                        "share the cores, then shows as a spread; see snnsim/analysis/spread.py)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="JSON file of all figures, rewritten after each (default a new file "
                        "runs/bench-<date>-<time>.json, so that no earlier result is overwritten)")
    return p


def new_output_file(folder: Path = Path("runs")) -> Path:
    """``runs/bench-<date>-<time>.json``, a file that does not exist yet (``-2``, ``-3``
    appended when two benchmarks start in the same second)."""
    stem = time.strftime("bench-%Y%m%d-%H%M%S")
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.json"
    return path


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def plan(args) -> list[tuple]:
    """Every figure to measure, in order: (kind, backend, experiment or T, label, explicit)."""
    experiments = _names(args.experiments if args.experiments is not None else
                         FULL_EXPERIMENTS if args.full else QUICK_EXPERIMENTS)
    sweep = [int(t) for t in _names(args.steps_sweep if args.steps_sweep is not None else
                                    FULL_SWEEP if args.full else QUICK_SWEEP)]
    jobs = [("cores", "numpy", "", "cores", False)] if args.cores else []
    for backend in _names(args.backends):
        for name in experiments:
            jobs.append(("run", backend, name, "recursion", False))
            if backend == "cupy":
                jobs.append(("run", backend, name, "fused", False))
            if not args.no_baseline:
                jobs.append(("run", backend, name, "explicit_phi", True))
        if args.eval_samples:
            jobs += [("eval", backend, name, "eval", False) for name in experiments]
        jobs += floor_mod.jobs(args, backend, experiments)
        if args.phases:
            jobs.append(("phases", backend, "mlp", "phases", False))
        for T in sweep:
            jobs.append(("memory", backend, T, "recursion", False))
            if not args.no_baseline:
                jobs.append(("memory", backend, T, "explicit_phi", True))
    return jobs


def check_args(p: argparse.ArgumentParser, args) -> dict:
    """Every backend and experiment usable, before anything is measured: {backend: device}."""
    devices = {}
    for backend in _names(args.backends):
        if backend not in BACKENDS or backend == "torch":
            p.error(f"unknown backend {backend!r}; the benchmark measures numpy and cupy")
        try:
            devices[backend] = device_name(get_backend(backend))
        except BackendError as exc:
            p.error(f"backend {backend} is not available: {exc}")
    for name in _names(args.experiments or ""):
        if name not in EXPERIMENTS:
            p.error(f"unknown experiment {name!r}; choose from {', '.join(sorted(EXPERIMENTS))}")
    if not devices:
        p.error("no backend given")
    if args.processes < 1:
        p.error(f"--processes must be 1 or more, got {args.processes}")
    if args.eval_samples < 0:
        p.error(f"--eval-samples must be 0 or more, got {args.eval_samples}")
    if not all(t.strip().isdigit() and int(t) > 0 for t in _names(args.steps_sweep or "")):
        p.error(f"--steps-sweep must be comma-separated positive integers, got {args.steps_sweep!r}")
    return devices


def main(argv=None) -> int:
    from tqdm import tqdm
    p = make_parser()
    args = p.parse_args(argv)
    devices = check_args(p, args)
    if args.processes > 1:
        out = Path(args.out) if args.out else new_output_file()
        out.parent.mkdir(parents=True, exist_ok=True)
        return spread_mod.run(list(sys.argv[1:] if argv is None else argv), args.processes, out,
                              write_json_atomic)
    threads_note = choose_for_run("numpy" if "numpy" in devices else "")   # as training chooses
    if threads_note:
        print(threads_note)
    jobs = plan(args)
    results = {"argv": ["python3 -m snnsim.bench", *(sys.argv[1:] if argv is None else argv)],
               "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
               "backward": args.backward,
               "blas_threads": {v: os.environ.get(v) for v in BLAS_THREAD_VARS},
               "devices": devices, "runs": [], "memory_sweep": [], "phases": []}
    out = Path(args.out) if args.out else new_output_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, sweep = {}, {}
    bar = tqdm(jobs, desc="bench", unit="figure", dynamic_ncols=True)
    try:
        for kind, backend, key, label, explicit in bar:
            bar.set_postfix_str(f"{backend} {f'T={key}' if kind == 'memory' else key} {label}")
            if kind == "run":
                cfg = experiment_config(key, backend, args.backward)
                if label == "fused":
                    cfg = cfg.replace(fused=True)
                if (backend, key) not in rows:
                    rows[backend, key] = {"experiment": key, "backend": backend, "device": devices[backend],
                                          "n_steps": cfg.n_steps, "batch_size": cfg.batch_size,
                                          "network": os.path.basename(cfg.network), "backward": args.backward}
                    results["runs"].append(rows[backend, key])
                row = rows[backend, key]
                r = row[label] = time_figure(cfg, explicit, args.batches, args.warmup, args.max_batches_slow)
                tqdm.write(f"  {backend:5s} {key:7s} {label:13s} {r['s_per_batch'] * 1e3:9.2f} ms/batch  "
                           f"{r['samples_per_s']:9.0f} samples/s  {r['s_per_epoch']:8.1f} s/epoch  "
                           f"peak {r['peak_bytes'] / 2**20:8.1f} MiB")
                if "explicit_phi" in row and "recursion" in row:
                    row["speedup_vs_explicit"] = (row["explicit_phi"]["s_per_batch"]
                                                  / row["recursion"]["s_per_batch"])
                    tqdm.write(f"  {backend:5s} {key:7s} recursion is {row['speedup_vs_explicit']:.2f}x "
                               f"the O(T²) baseline's speed")
            elif kind == "eval":
                r = eval_figure(experiment_config(key, backend, args.backward), args.eval_samples)
                step = rows.get((backend, key), {}).get("recursion")
                if step is not None:
                    r["step_s_per_sample"] = step["s_per_batch"] / rows[backend, key]["batch_size"]
                    r["eval_over_step"] = r["s_per_sample"] / r["step_s_per_sample"]
                results.setdefault("eval", []).append({"experiment": key, "backend": backend, **r})
                tqdm.write(f"  {backend:5s} {key:7s} evaluation {r['s_per_sample'] * 1e3:7.3f} ms/sample "
                           f"(plain forward in the same slices {r['plain_s_per_sample'] * 1e3:.3f})"
                           + (f"; {r['eval_over_step']:.2f}x a training step's time per sample"
                              if step is not None else ""))
            elif kind in floor_mod.KINDS:
                r, text = floor_mod.measure(kind, key, experiment_config(key, backend, args.backward), args)
                results.setdefault(kind, []).append({"experiment": key, "backend": backend, **r})
                tqdm.write(text)
            elif kind == "cores":
                r = cores_mod.probe()
                results["cores"] = r
                tqdm.write(cores_mod.format_probe(r))
            elif kind == "phases":
                cfg = experiment_config("mlp", backend, args.backward)
                r = phase_figures(cfg, args.batches, args.warmup, args.profile)
                results["phases"].append({"backend": backend, **r})
                tqdm.write(format_phases(r))
                if args.profile:
                    tqdm.write(r["profile"])
            else:
                cfg = experiment_config("mlp", backend, args.backward, n_steps=key)
                if (backend, key) not in sweep:
                    sweep[backend, key] = {"backend": backend, "n_steps": key}
                    results["memory_sweep"].append(sweep[backend, key])
                r = sweep[backend, key][label] = memory_figure(cfg, explicit)
                tqdm.write(f"  {backend:5s} memory T={key:4d} {label:13s} peak "
                           f"{r['peak_bytes'] / 2**20:9.1f} MiB, {r['s_per_batch']:.3f} s/batch")
            write_json_atomic(out, results)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; the measurements so far are in {out}", file=sys.stderr)
        return 130
    except (ConfigError, BackendError) as exc:
        bar.close()
        return report_error("bench", exc)
    bar.close()
    write_json_atomic(out, results)
    print(f"measurements saved to {out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
