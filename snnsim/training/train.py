"""Train a spiking network with TSSL-BP: ``python3 -m snnsim.train``.

With no arguments: the Fashion-MNIST MLP 784-400-400-10 of the paper, T = 5,
the authors' setup (preset ``authors``, kernel loss, AdamW lr 5e-4, batch 100,
gradient-norm clip 1, weights clamped to [-4, 4]) on NumPy, for the authors'
100 epochs; the time left is estimated once enough batches are timed and again
after every epoch (:mod:`snnsim.training.eta`), Ctrl-C stops cleanly and
``--resume`` continues. See ``--help`` for every option.

A run folder holds::

    config.json       the resolved flat config (also inside every checkpoint)
    run_info.json     platform, NumPy, BLAS libraries and threads, one entry per
                      start or resume (snnsim.training.runinfo)
    metrics.jsonl     one JSON line per epoch: epoch, train_loss, train_acc,
                      test_acc, seconds, samples_per_s, eval_seconds
    checkpoint.h5     the latest complete epoch (docs/checkpoint_format.md)
    best.h5           the epoch with the highest test accuracy so far

One training step (:func:`train_step`) is the authors' loop body: forward,
loss, TSSL-BP backward, global gradient-norm clip, AdamW, weight clamp.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import data as data_mod
from . import eta
from ..backend import get_backend
from .checkpoint import (CheckpointError, atomic_copy, atomic_write, checkpoint_epoch,
                         load_checkpoint, restore_rng, save_checkpoint)
from .config import (ConfigError, TrainConfig, check_key, coerce, describe_fields,
                     load_config_file, network_is_yaml, normalize_key)
from ..layers import Layer
from ..loss import count_loss, kernel_loss, kernel_target, predict
from ..network import Network
from .optim import AdamW, clamp_weights, clip_grad_norm
from ..params import GradientParams, NeuronParams
from .runinfo import append_run_info, resume_note, run_info

RUNS_DIR = Path("runs")
CHECKPOINT_NAME = "checkpoint.h5"
BEST_NAME = "best.h5"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
#: Fields that may change when resuming (they do not change what is computed).
RESUME_CHANGEABLE = ("epochs", "out", "data_dir", "backend", "fused", "eval_batch_size", "progress")
EXIT_INTERRUPTED = 130


# --- the network ----------------------------------------------------------------------
def build_layers(cfg: TrainConfig, input_shape: tuple) -> list[Layer]:
    """The layers named by ``cfg.network``: paper notation
    (:func:`snnsim.builder.parse_paper_notation`), or an authors' YAML path whose
    ``Layers:`` section is read by :func:`snnsim.builder.layers_from_authors_config`."""
    from . import builder  # noqa: PLC0415
    try:
        if network_is_yaml(cfg.network):
            doc = builder.load_authors_yaml(cfg.network)
            from .config import field_names  # noqa: PLC0415
            layers, _, _ = builder.layers_from_authors_config(
                doc, input_shape=input_shape, extra_network_keys=tuple(field_names()))
            return list(layers)
        return list(builder.parse_paper_notation(cfg.network, input_shape))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"network {cfg.network!r}: {exc}") from exc


def neuron_and_grad(cfg: TrainConfig) -> tuple[NeuronParams, GradientParams]:
    """The network's neuron and gradient reading: the preset's, unless overridden."""
    res = cfg.resolved()
    neuron = NeuronParams(tau_m=cfg.tau_m, tau_s=cfg.tau_s, v_th=cfg.v_th, reset=res["reset"])
    grad = GradientParams(reading=res["reading"], sensitivity_bound=cfg.sensitivity_bound,
                          warmup=cfg.warmup)
    return neuron, grad


def build_network(cfg: TrainConfig, input_shape: tuple | None = None) -> Network:
    """The network of ``cfg``, initialised from ``cfg.seed``, on ``cfg.backend``.

    A layer may carry its own threshold (authors' YAML ``threshold``); its other
    neuron parameters (τm, τs, reset) are the run's, as in the authors' code.
    """
    input_shape = tuple(input_shape or data_mod.INPUT_SHAPES[cfg.dataset])
    layers = build_layers(cfg, input_shape)
    neuron, grad = neuron_and_grad(cfg)
    for layer in layers:
        if getattr(layer, "neuron", None) is not None:
            layer.neuron = dataclasses.replace(neuron, v_th=layer.neuron.v_th)
    return Network(layers, input_shape, neuron=neuron, grad=grad, backend=cfg.backend,
                   dtype=cfg.dtype, seed=cfg.seed, fused=cfg.fused)


def set_weights(net: Network, weights: list[dict]) -> None:
    """Copy saved weights (host arrays) into the network's live parameter arrays."""
    if len(weights) != len(net.layers):
        raise CheckpointError(f"checkpoint has {len(weights)} layers, the network {len(net.layers)}")
    for i, (params, saved) in enumerate(zip(net.params, weights)):
        if set(params) != set(saved):
            raise CheckpointError(f"layer {i}: checkpoint parameters {sorted(saved)}, "
                                  f"network {sorted(params)}")
        for name, p in params.items():
            if tuple(saved[name].shape) != tuple(p.shape):
                raise CheckpointError(f"layer {i} {name}: checkpoint shape {saved[name].shape}, "
                                      f"network {p.shape}")
            p[...] = net.xp.asarray(saved[name], dtype=p.dtype)


def count_params(net: Network) -> int:
    return int(sum(p.size for layer in net.params for p in layer.values()))


# --- loss and one step ------------------------------------------------------------------
def make_loss(cfg: TrainConfig, net: Network):
    """``loss_fn(a, labels) -> (L, g)``: the kernel loss against the preset's target, or
    the count loss."""
    res = cfg.resolved()
    n_classes = data_mod.N_CLASSES
    theta_s = net.neuron.theta_s
    if cfg.loss == "count":
        def loss_fn(a, labels):
            return count_loss(a, labels, cfg.desired_count, cfg.undesired_count)
        return loss_fn

    def loss_fn(a, labels):
        a_hat = kernel_target(labels, n_classes, a.shape[0], theta_s, res["desired_train"],
                              res["target_filter_passes"], dtype=a.dtype)   # (T, B, C)
        return kernel_loss(a, a_hat)
    return loss_fn


def train_step(net: Network, opt: AdamW, x_in, labels, loss_fn, cfg: TrainConfig,
               rng: np.random.Generator) -> tuple[float, int]:
    """Forward, loss, TSSL-BP backward, clip, AdamW, clamp. Returns (L, n correct)."""
    a, cache = net.forward(x_in, train=True, rng=rng)                      # (T, B, C)
    L, g = loss_fn(a, labels)
    grads = net.backward(g, cache)
    if cfg.grad_clip:
        clip_grad_norm(grads, cfg.grad_clip)
    opt.step(grads)
    if cfg.weight_clamp:
        clamp_weights(net.params, -cfg.weight_clamp, cfg.weight_clamp)
    return L, int((predict(a) == labels).sum())


def evaluate(net: Network, split: data_mod.Split, cfg: TrainConfig) -> float:
    """Test accuracy: argmax of the summed output PSC (ties to the lowest index)."""
    correct = 0
    for x_in, labels in data_mod.batches(split, cfg.eval_batch_size, net.xp, net.dtype,
                                         cfg.n_steps):
        a, _ = net.forward(x_in, train=False)
        correct += int((predict(a) == labels).sum())
    return correct / max(len(split), 1)


# --- run folder ---------------------------------------------------------------------------
def default_name(cfg: TrainConfig) -> str:
    if cfg.name:
        return cfg.name
    net = Path(cfg.network).stem if network_is_yaml(cfg.network) else cfg.network
    return re.sub(r"[^A-Za-z0-9_.-]+", "", f"{cfg.dataset}_{net}")[:80]


def new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{default_name(cfg)}-{stamp}"


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def write_metrics(path: Path, history: list[dict]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(
        "".join(json.dumps(row) + "\n" for row in history)))


def append_metrics(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_thread_hint(backend: str) -> str | None:
    """A hint when the CPU is oversubscribed and BLAS threads were left at their default:
    OpenBLAS threads then spin-wait for each other and a training step gets several
    times slower (measured: 5x at load 9 on 2 CPUs, benchmarks/train_speed.py)."""
    if backend != "numpy" or any(os.environ.get(v) for v in BLAS_THREAD_VARS):
        return None
    try:
        load, n_cpu = os.getloadavg()[0], os.cpu_count() or 1
    except (OSError, AttributeError):   # pragma: no cover - platforms without getloadavg
        return None
    if load <= n_cpu:
        return None
    return (f"note: this machine is busy (load {load:.1f} on {n_cpu} CPUs); multi-threaded BLAS "
            f"then slows training several-fold. Faster: OPENBLAS_NUM_THREADS=1 python3 -m "
            f"snnsim.train ...")


# --- the run ------------------------------------------------------------------------------
def run(cfg: TrainConfig, resume: dict | None = None, log=print) -> dict:
    """Train ``cfg`` (from scratch, or continuing the loaded checkpoint ``resume``).

    Returns a dict: ``run_dir``, ``metrics`` (per-epoch rows), ``net``,
    ``interrupted`` (True after Ctrl-C), ``epochs_done``.
    """
    from tqdm import tqdm  # noqa: PLC0415

    xp = get_backend(cfg.backend)
    run_dir = Path(cfg.out) if cfg.out else new_run_dir(cfg)
    existing = run_dir / CHECKPOINT_NAME
    if resume is None and existing.exists():
        raise ConfigError(f"{run_dir} already holds a run ({CHECKPOINT_NAME}); continue it with "
                          f"--resume {run_dir}, or choose another --out")
    if (resume is not None and existing.exists()
            and existing.resolve() != Path(resume["path"]).resolve()
            and checkpoint_epoch(existing) > int(resume["epoch"])):
        raise ConfigError(f"resuming {resume['path']} (epoch {resume['epoch']}) into {run_dir} "
                          f"would overwrite {existing} (epoch {checkpoint_epoch(existing)}); "
                          "pass --out NEW_DIR")
    cfg = dataclasses.replace(cfg, out=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)

    log("snnsim.train: resolved config")
    log(cfg.format())
    write_json_atomic(run_dir / CONFIG_NAME, cfg.to_dict())

    train_split, test_split = data_mod.load_splits(cfg)
    net = build_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, net)
    rng = np.random.default_rng([cfg.seed, 1])      # shuffling, dropout, augmentation
    history: list[dict] = []
    start_epoch = 0
    if resume is not None:
        set_weights(net, resume["weights"])
        opt.load_state_dict(resume["optimizer"])
        rng = restore_rng(resume["rng_state"])
        history = [dict(row) for row in resume["metrics"]]
        start_epoch = int(resume["epoch"])
        log(f"resuming {resume['path']} after epoch {start_epoch}")
    info = dict(run_info(cfg.backend, cfg.dtype), start_epoch=start_epoch)
    note = resume_note(append_run_info(run_dir, info))
    if note:
        log(note)
    write_metrics(run_dir / METRICS_NAME, history)   # the checkpoint's history is authoritative

    n_train, n_test = len(train_split), len(test_split)
    per_epoch = data_mod.n_batches(n_train, cfg.batch_size)
    log(f"network {net.describe()} on input {net.input_shape}: {count_params(net):,} parameters; "
        f"neuron {net.neuron}; gradient {net.grad}")
    log(f"data {cfg.dataset}: {n_train} train / {n_test} test samples, {per_epoch} batches of "
        f"{cfg.batch_size} per epoch; backend {cfg.backend} {cfg.dtype}; run folder {run_dir}")
    hint = blas_thread_hint(cfg.backend)
    if hint:
        log(hint)
    best = max((row["test_acc"] for row in history), default=-1.0)
    ckpt_path = run_dir / CHECKPOINT_NAME
    resume_hint = f"python3 -m snnsim.train --resume {run_dir}"
    batch_seconds, epoch_seconds, estimated = [], [], False   # this session's timings
    epoch = start_epoch
    bar = None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not cfg.progress, leave=False, dynamic_ncols=True)
            loss_sum, correct, seen = 0.0, 0, 0
            t0 = time.perf_counter()
            for i, (x_in, labels) in enumerate(data_mod.batches(
                    train_split, cfg.batch_size, xp, net.dtype, cfg.n_steps, rng, shuffle=True)):
                tb = time.perf_counter()
                L, c = train_step(net, opt, x_in, labels, loss_fn, cfg, rng)
                loss_sum, correct, seen = loss_sum + L, correct + c, seen + int(labels.shape[0])
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                refresh=False)
                if not estimated and epoch == start_epoch and i >= 1:   # batch 0: warm-up
                    batch_seconds.append(time.perf_counter() - tb)
                    left = per_epoch - (i + 1) + per_epoch * (cfg.epochs - epoch - 1)
                    if eta.window_complete(len(batch_seconds), sum(batch_seconds),
                                           per_epoch - (i + 1)):
                        estimated = True
                        tqdm.write(
                            f"estimated training time per epoch "
                            f"{eta.format_estimate(eta.from_batches(batch_seconds, per_epoch))}"
                            f"; for the rest of the run "
                            f"{eta.format_estimate(eta.from_batches(batch_seconds, left))} "
                            f"plus evaluation, if the machine's load stays as now "
                            f"({eta.load_note()}); renewed after every epoch "
                            f"(Ctrl-C stops; {resume_hint} continues)")
            train_seconds = time.perf_counter() - t0
            bar.close()
            t1 = time.perf_counter()
            test_acc = evaluate(net, test_split, cfg)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   "train_acc": correct / max(seen, 1), "test_acc": test_acc,
                   "seconds": train_seconds, "samples_per_s": seen / max(train_seconds, 1e-12),
                   "eval_seconds": time.perf_counter() - t1}
            history.append(row)
            save_checkpoint(ckpt_path, weights=net.params, optimizer=opt.state_dict(),
                            rng_state=rng.bit_generator.state, epoch=epoch + 1,
                            config=cfg.to_dict(), metrics=history,
                            layer_names=[layer.describe() for layer in net.layers],
                            network=net.describe(),
                            extra_attrs={"run_info": json.dumps(info)})
            is_best = test_acc > best
            if is_best:
                best = test_acc
                atomic_copy(ckpt_path, run_dir / BEST_NAME)
            append_metrics(run_dir / METRICS_NAME, row)
            epoch_seconds.append(time.perf_counter() - t0)    # training, evaluation, saving
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
                       f"acc {row['train_acc']:.4f} | test acc {test_acc:.4f} "
                       f"(best {best:.4f}){' *' if is_best else ''} | "
                       f"{train_seconds:.1f} s, {row['samples_per_s']:.0f} samples/s"
                       + (f" | {cfg.epochs - epoch - 1} epoch"
                          f"{'s' if cfg.epochs - epoch - 1 != 1 else ''} left: "
                          + eta.format_estimate(eta.from_epochs(
                              epoch_seconds, cfg.epochs - epoch - 1, batch_seconds))
                          if epoch + 1 < cfg.epochs else ""))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        done = len(history)
        when = f"during epoch {epoch + 1}" if done <= epoch else f"after epoch {done}"
        if done:
            log(f"\ninterrupted {when}; the last complete checkpoint is "
                f"{ckpt_path} (epoch {done}). Resume with:\n  {resume_hint}")
        else:
            log(f"\ninterrupted {when}, before any checkpoint was written")
        return {"run_dir": run_dir, "metrics": history, "net": net, "interrupted": True,
                "epochs_done": done}
    if history:
        b = max(history, key=lambda r: r["test_acc"])
        log(f"done: {len(history)} epochs; best test accuracy {b['test_acc']:.4f} at epoch "
            f"{b['epoch']}; run folder {run_dir}")
    return {"run_dir": run_dir, "metrics": history, "net": net, "interrupted": False,
            "epochs_done": len(history)}


# --- command line -----------------------------------------------------------------------------
DESCRIPTION = """\
Train a spiking network with TSSL-BP (Zhang & Li, NeurIPS 2020).

Without arguments: Fashion-MNIST, 784-400-400-10, T=5, the authors' setup
(preset authors, kernel loss, AdamW lr 5e-4 wd 0.01, batch 100, clip 1,
weights in [-4, 4]) on NumPy for the authors' 100 epochs. The time left is
estimated, with a range, once at least 10 batches and 30 s are timed, and
again after every epoch; tqdm's bar shows the rest of the current epoch.
Ctrl-C keeps the last complete epoch's checkpoint and prints the command that
resumes it. For a quick look: python3 -m snnsim.train --epochs=1 --train-subset=5000
On a busy CPU, OPENBLAS_NUM_THREADS=1 python3 -m snnsim.train is often several
times faster (multi-threaded BLAS spin-waits when the CPUs are oversubscribed)."""

EPILOG_HEAD = """\
A run folder (--out, default runs/<name>-<date>-<time>) gets config.json,
run_info.json (BLAS library and threads, NumPy, platform: what besides the
config decides the bits, see docs/reproducibility.md), metrics.jsonl (one line
per epoch), checkpoint.h5 (latest epoch) and best.h5 (best test accuracy); the
HDF5 layout is in docs/checkpoint_format.md.

Every config field can be set with --key=value or --key value, parsed to the
field's type; 'none' clears an optional field. Option names are written with
'-' (--train-subset); the '_' of the config files' keys (--train_subset) is
accepted as well.
Precedence: defaults < --config file < command line. When resuming, only
these may change: """ + ", ".join(RESUME_CHANGEABLE) + """.

Config fields:
"""


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m snnsim.train", description=DESCRIPTION,
                                epilog=EPILOG_HEAD + describe_fields(),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", metavar="PATH_OR_NAME",
                   help="config file: an authors' YAML (Network:/Layers:), a flat JSON/YAML "
                        "(e.g. a run's config.json), or the name of a shipped config in "
                        "configs/ such as fashion_mnist_mlp")
    p.add_argument("--backend", choices=("numpy", "cupy"), help="array backend (default numpy)")
    p.add_argument("--epochs", type=int, metavar="N", help="number of epochs (in total, "
                   "counting those of a resumed run)")
    p.add_argument("--batch-size", type=int, metavar="N", help="training batch size")
    p.add_argument("--seed", type=int, metavar="N", help="seed of initialisation, shuffling, "
                   "dropout and augmentation")
    p.add_argument("--out", metavar="DIR", help="run folder (must not hold a run already, "
                   "unless resuming)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT_OR_DIR",
                   help="continue from a checkpoint file or a run folder (its checkpoint.h5); "
                        "without a value: --out, else the newest folder in runs/")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset")
    return p


def _parse_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict:
    out, i = {}, 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            parser.error(f"unexpected argument {tok!r}; config overrides are --key=value")
        body = tok[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            key, value = body, extra[i + 1]
            i += 2
        else:
            key, value = body, None
            i += 1
        key = normalize_key(key)
        try:
            check_key(key, "command line")
        except ConfigError as exc:
            parser.error(str(exc))
        option = "--" + key.replace("_", "-")
        if value is None:
            parser.error(f"{option} needs a value: {option}=VALUE")
        try:
            coerce(key, value)
        except ConfigError as exc:
            parser.error(f"{option}: {exc}")
        out[key] = value
    return out


def _latest_run(base: Path = RUNS_DIR) -> Path:
    runs = sorted((p.parent for p in base.glob(f"*/{CHECKPOINT_NAME}")),
                  key=lambda d: (d / CHECKPOINT_NAME).stat().st_mtime)
    if not runs:
        raise CheckpointError(f"--resume without a value: no {base}/*/{CHECKPOINT_NAME} found")
    return runs[-1]


def resolve_resume_path(value: str, out: str | None) -> Path:
    target = Path(value) if value else (Path(out) if out else _latest_run())
    return target / CHECKPOINT_NAME if target.is_dir() else target


def parse_args(argv=None) -> tuple[TrainConfig, dict | None]:
    """Command line -> (config, loaded checkpoint or None). Exits with a message on errors."""
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    changes = _parse_overrides(extra, parser)
    named = {"backend": args.backend, "epochs": args.epochs, "batch_size": args.batch_size,
             "seed": args.seed, "out": args.out, "data_dir": args.data_dir}
    for key, value in named.items():
        if value is not None:
            if key in changes:
                parser.error(f"{key} given twice")
            changes[key] = value
    try:
        if args.resume is not None:
            if args.config:
                parser.error("--config and --resume exclude each other: a resumed run keeps "
                             "its own config")
            path = resolve_resume_path(args.resume, changes.get("out"))
            ckpt = load_checkpoint(path)
            cfg = TrainConfig.from_dict(ckpt["config"], source=str(path))
            fixed = [k for k, v in changes.items() if k not in RESUME_CHANGEABLE
                     and getattr(cfg.replace(**{k: v}), k) != getattr(cfg, k)]
            if fixed:
                parser.error(f"cannot change {', '.join(fixed)} when resuming (only "
                             f"{', '.join(RESUME_CHANGEABLE)}); start a new run instead")
            changes.setdefault("out", str(path.parent))
            return cfg.replace(source="command line", **changes), ckpt
        cfg = load_config_file(args.config) if args.config else TrainConfig()
        return cfg.replace(source="command line", **changes), None
    except (ConfigError, CheckpointError) as exc:
        parser.error(str(exc))
    raise AssertionError("unreachable")


def main(argv=None) -> int:
    from ..datasets.errors import DatasetError  # noqa: PLC0415
    cfg, ckpt = parse_args(argv)
    try:
        result = run(cfg, resume=ckpt)
    except (ConfigError, CheckpointError, DatasetError) as exc:
        print(f"snnsim.train: error: {exc}", file=sys.stderr)
        return 2
    return EXIT_INTERRUPTED if result["interrupted"] else 0


__all__ = ["BEST_NAME", "CHECKPOINT_NAME", "CONFIG_NAME", "METRICS_NAME", "build_layers",
           "build_network", "evaluate", "main", "make_loss", "make_parser", "neuron_and_grad",
           "parse_args", "run", "set_weights", "train_step"]

if __name__ == "__main__":
    sys.exit(main())
