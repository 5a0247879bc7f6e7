"""Train a spiking network with TSSL-BP: ``python3 -m snnsim.train``.

With no arguments: the Fashion-MNIST MLP 784-400-400-10 of the paper, T = 5,
the authors' setup (preset ``authors``, kernel loss, AdamW lr 5e-4, batch 100,
gradient-norm clip 1, weights clamped to [-4, 4]) on NumPy, for the authors'
100 epochs; the time left is estimated once enough batches are timed and again
after every epoch (:mod:`snnsim.training.eta`), Ctrl-C stops cleanly and
``--resume`` continues. See ``--help`` for every option.

A run folder holds::

    config.json       the resolved flat config (also inside every checkpoint), and
                      data_files: the dataset files read (path, bytes, sha256)
    run.json          what besides the config decides the run's bits: snnsim version
                      and git commit (null for an installed package), Python, NumPy,
                      platform, BLAS libraries and threads; each resume appends its
                      own entry (snnsim.training.runinfo, docs/reproducibility.md)
    metrics.jsonl     one JSON line per epoch: epoch, train_loss, train_acc,
                      test_acc, seconds, samples_per_s, eval_seconds
    checkpoint.h5     the latest complete epoch (docs/checkpoint_format.md)
    best.h5           the epoch with the highest test accuracy so far
    interrupted.h5    after a stop inside an epoch, and every save_every_s seconds of
                      a long epoch: that epoch so far, which --resume goes on from
                      (removed when the epoch is complete)
    status.json       how the last start ended: state, last complete epoch, planned
                      epochs, time, message (docs/watching.md)
    run.lock          held while a process trains in the folder (one writer)

A kill at any instant leaves a consistent folder (:mod:`snnsim.training.runfolder`);
SIGTERM stops like Ctrl-C. Either, at any moment from the imports to the exit, ends
the command with one line and exit status 130 (:mod:`snnsim.signals`): a new run
stopped before its first checkpoint leaves no folder behind, and a signal arriving
while an epoch's files are written takes effect once they all are. Before anything
is allocated, a run whose memory (a lower bound, :mod:`snnsim.training.memory`)
exceeds the machine's is refused with the figure; a run without ``--out`` gets a
folder of its own even when another started in the same second. A NaN or inf loss or weight stops the run
(:mod:`snnsim.training.guard`) without touching the last checkpoint. Exit status:
0 done, 2 a user error (one line; --debug for the traceback), 3 diverged, 130
interrupted (Ctrl-C, SIGTERM).

One training step (:func:`train_step`) is the authors' loop body: forward,
loss, backward (TSSL-BP by default; ``--backward`` picks another variant of
:mod:`snnsim.variants`), global gradient-norm clip, AdamW, weight clamp.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from .. import signals
from ..backend import array_module, device, get_backend
from ..commandline import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    ArgumentParser,
    command,
    did_you_mean,
    error_line,
    prog_name,
    rerun,
)
from ..datasets.registry import get_spec
from ..fast import (
    EVAL_CHUNK,
    FastForward,
    fast_forward_applies,
    fast_path_applies,
    fast_train_step,
    warm_up,
)
from ..layers import Layer
from ..loss import count_loss, kernel_loss, kernel_target, n_correct
from ..network import Network
from ..params import GradientParams, NeuronParams
from ..variants import describe_backwards, variant_backward, variant_gradient_params
from . import data as data_mod
from . import eta, guard, memory, provenance, runfolder, runinfo, tboard, threads
from .builder import count_parameters, layers_from_spec, names_config_file
from .checkpoint import (
    CHECKSUM_ATTR,
    TMP_SUFFIX,
    CheckpointError,
    atomic_write,
    checkpoint_epoch,
    load_checkpoint,
    match_network,
    read_root_attrs,
    restore_rng,
    save_checkpoint,
)
from .config import (
    ConfigError,
    TrainConfig,
    coerce,
    describe_fields,
    field_names,
    load_config_file,
    normalize_key,
)
from .optim import AdamW, clamp_weights, clip_grad_norm
from .status import STATUS_NAME, write_status
from .threads import BLAS_THREAD_VARS  # noqa: F401  (re-exported for the benchmark)

RUNS_DIR = Path("runs")
CHECKPOINT_NAME = runfolder.CHECKPOINT_NAME
BEST_NAME = runfolder.BEST_NAME
INTERRUPTED_NAME = runfolder.INTERRUPTED_NAME
CONFIG_NAME = "config.json"
RUN_INFO_NAME = runinfo.RUN_INFO_NAME
METRICS_NAME = "metrics.jsonl"
#: The link to the newest run folder in the default folder: runs/latest.
LATEST_NAME = "latest"
#: Fields that may change when resuming (they do not change what is computed).
RESUME_CHANGEABLE = ("epochs", "out", "data_dir", "backend", "fused", "eval_batch_size", "progress",
                     "tensorboard", "save_every_s")


# --- the network ----------------------------------------------------------------------
def build_layers(cfg: TrainConfig, input_shape: tuple) -> list[Layer]:
    """The layers named by ``cfg.network`` (:func:`snnsim.training.builder.layers_from_spec`:
    the paper's notation or an authors' YAML whose ``Layers:`` section is the network)."""
    try:
        if not names_config_file(cfg.network):
            check_input_size(cfg.network, input_shape)
        return layers_from_spec(cfg.network, input_shape, extra_network_keys=tuple(field_names()))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"network {cfg.network!r}: {exc}") from exc


def check_input_size(spec: str, input_shape: tuple) -> None:
    """A paper-notation network that starts with a plain number (``784-400-10``) names
    its input size first; it must be the data's (C*H*W), or the number would silently
    become a hidden layer."""
    tokens = [t.strip() for t in str(spec).replace("\u2212", "-").split("-")]
    n_in = int(np.prod(input_shape))
    if ":" not in spec and len(tokens) > 1 and tokens[0].isdigit() and int(tokens[0]) != n_in:
        raise ValueError(f"the first number {tokens[0]} is the input size, but the data's "
                         f"samples have {n_in} values ({'x'.join(map(str, input_shape))}); "
                         f"write {n_in}-{'-'.join(tokens[1:])}")


def neuron_and_grad(cfg: TrainConfig) -> tuple[NeuronParams, GradientParams]:
    """The network's neuron and gradient reading: the preset's, unless overridden (a named
    TSSL-BP backward variant brings its own reading, bound and warm-up)."""
    res = cfg.resolved()
    neuron = NeuronParams(tau_m=cfg.tau_m, tau_s=cfg.tau_s, v_th=cfg.v_th, reset=res["reset"])
    grad = GradientParams(reading=res["reading"], sensitivity_bound=cfg.sensitivity_bound,
                          warmup=cfg.warmup)
    return neuron, variant_gradient_params(cfg.backward, grad)


def make_network(cfg: TrainConfig, input_shape: tuple | None = None) -> Network:
    """The network of ``cfg``, initialised from ``cfg.seed``, on ``cfg.backend``.

    A layer may carry its own threshold (authors' YAML ``threshold``); its other
    neuron parameters (τm, τs, reset) are the run's, as in the authors' code.
    """
    input_shape = tuple(input_shape or get_spec(cfg.dataset).input_shape)
    layers = build_layers(cfg, input_shape)
    neuron, grad = neuron_and_grad(cfg)
    for layer in layers:
        if getattr(layer, "neuron", None) is not None:
            layer.neuron = dataclasses.replace(neuron, v_th=layer.neuron.v_th)
    return Network(layers, input_shape, neuron=neuron, grad=grad, backend=cfg.backend,
                   dtype=cfg.dtype, seed=cfg.seed, fused=cfg.fused)


def set_weights(net: Network, weights: list[dict], source="checkpoint") -> None:
    """Copy saved weights (host arrays) into the network's live parameter arrays; a
    checkpoint (``source``, its path) whose layers or shapes are not the network's is a
    CheckpointError naming it (:func:`snnsim.training.checkpoint.match_network`)."""
    match_network(source, weights, net.params)
    for params, saved in zip(net.params, weights):
        for name, p in params.items():
            p[...] = net.xp.asarray(saved[name], dtype=p.dtype, device=device(p))


# --- loss and one step ------------------------------------------------------------------
def make_loss(cfg: TrainConfig, net: Network):
    """``loss_fn(a, labels) -> (L, g)``: the kernel loss against the preset's target, or
    the count loss."""
    res = cfg.resolved()
    n_classes = get_spec(cfg.dataset).n_classes
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
               rng: np.random.Generator, reduce_grads=None,
               model=None, fast: bool = True) -> tuple[float, int]:
    """Forward, loss, backward, clip, AdamW, clamp. Returns (L, n correct).

    The backward is ``cfg.backward`` (:mod:`snnsim.variants`): TSSL-BP with the network's
    own reading by default, or a named variant (another reading, φ<1> flipped, surrogate
    BPTT). ``model``, a :class:`~snnsim.neuron.NeuronModel`, if given, replaces it (the
    benchmark's O(T²) baseline). ``reduce_grads(grads)``: data-parallel training sums the
    gradients over the ranks there, in place (:mod:`snnsim.training.parallel`).
    ``fast``: where it applies (NumPy, TSSL-BP), the same step bit for bit on the fast path
    of :mod:`snnsim.fast` (buffers reused, fewer passes); False: the plain functions.
    """
    if fast and fast_path_applies(net, cfg.backward, model):
        return fast_train_step(net, opt, x_in, labels, loss_fn, cfg, rng, reduce_grads)
    a, cache = net.forward(x_in, train=True, rng=rng)                      # (T, B, C)
    L, g = loss_fn(a, labels)
    if model is None:
        grads = variant_backward(net, g, cache, cfg.backward)
    else:
        grads = net.backward(g, cache, model=model)
    if reduce_grads is not None:
        reduce_grads(grads)
    if cfg.grad_clip:
        opt.last_grad_norm = clip_grad_norm(grads, cfg.grad_clip)   # kept for logs
    else:
        opt.last_grad_norm = None
    opt.step(grads)
    if cfg.weight_clamp:
        clamp_weights(net.params, -cfg.weight_clamp, cfg.weight_clamp)
    return L, n_correct(a, labels)


def evaluate(net: Network, split: data_mod.Split, cfg: TrainConfig, dp=None) -> float:
    """Test accuracy: argmax of the summed output PSC (ties to the lowest index); the
    accuracy of :func:`test_pass`."""
    return test_pass(net, split, cfg, dp)[0]


def test_pass(net: Network, split: data_mod.Split, cfg: TrainConfig, dp=None) -> tuple[float, list[dict]]:
    """One pass over ``split`` without training: the accuracy, and per spiking layer (in
    order) the firing sparsity of the pass, ``{"silent": fraction of (sample, neuron) pairs
    without a spike in the T steps, "spikes": spikes per neuron and sample, "counts": how many
    pairs fired 0, 1, ..., T times}``, counted from the spikes the forward makes anyway.
    Data-parallel (``dp``): every rank counts its part of every batch, then the sums.

    On NumPy with LIF neurons the forward is :class:`~snnsim.fast.FastForward` (bit for bit
    :meth:`~snnsim.network.Network.forward`'s output, no state kept for a backward, the spike counts from its
    kernel), over slices of :data:`~snnsim.fast.EVAL_CHUNK` samples of each batch of
    ``cfg.eval_batch_size``: a layer's arrays then stay near the cache's size instead of a
    batch of 1000 making each of them hundreds of MB (the Fashion-MNIST CNN's first layer:
    500 MB per array). Elsewhere, :meth:`~snnsim.network.Network.forward` on whole batches."""
    n_spiking, T = sum(layer.spiking for layer in net.layers), cfg.n_steps
    correct, spikes, pairs = 0, [0] * n_spiking, [0] * n_spiking
    hists = [[0] * (T + 1) for _ in range(n_spiking)]  # pairs that fired 0, 1, ..., T times

    def tally(counts):                           # per spiking layer, spike counts (B, ...)
        xp = array_module(counts[0])
        for i, c in enumerate(counts):
            if xp is np:                         # one pass (the comparisons below make T + 2)
                h = np.bincount(c.reshape(-1), minlength=T + 1)
                for k in range(T + 1):
                    hists[i][k] += int(h[k])
                spikes[i] += int(np.dot(h, np.arange(T + 1)))
            else:
                for k in range(T + 1):
                    hists[i][k] += int(xp.sum(xp.astype(c == k, xp.int64)))
                spikes[i] += int(xp.sum(xp.astype(c, xp.int64)))
            pairs[i] += math.prod(c.shape)

    fast = FastForward() if fast_forward_applies(net) else None
    for x_in, labels in data_mod.batches(split, cfg.eval_batch_size, net.xp, net.dtype,
                                         cfg.n_steps, device=net.device, shard=dp and dp.shard):
        if labels.shape[0] == 0:      # data-parallel: this rank's part of a small last batch
            continue
        if fast is None:
            a, cache = net.forward(x_in, train=False)
            correct += n_correct(a, labels)
            xp = net.xp
            tally([xp.sum(xp.astype(st.s, xp.int32), axis=0) for st in cache.states if st is not None])
            continue
        for i in range(0, labels.shape[0], EVAL_CHUNK):
            j = i + EVAL_CHUNK
            correct += n_correct(fast.output(net, x_in[:, i:j]), labels[i:j])
            tally(fast.counts)
    if dp is not None:
        sums = dp.sum_counts(correct, *spikes, *pairs, *(n for h in hists for n in h))
        correct = sums[0]
        spikes, pairs = (sums[1 + k * n_spiking:1 + (k + 1) * n_spiking] for k in range(2))
        flat = sums[1 + 2 * n_spiking:]
        hists = [[int(n) for n in flat[i * (T + 1):(i + 1) * (T + 1)]] for i in range(n_spiking)]
    sparsity = [{"silent": h[0] / max(p, 1), "spikes": k / max(p, 1), "counts": h}
                for h, k, p in zip(hists, spikes, pairs)]
    return correct / max(len(split), 1), sparsity


# --- run folder ---------------------------------------------------------------------------
#: The shipped config (snnsim/configs/) whose network and dataset are TrainConfig's defaults.
DEFAULT_EXPERIMENT = "fashion_mnist_mlp"


def default_name(cfg: TrainConfig) -> str:
    """The run's name, the start of its default folder: the config's name; for the
    default network on the default dataset the shipped config's (a run without --config
    and one with --config fashion_mnist_mlp are named alike); else dataset_network."""
    if cfg.name:
        return cfg.name
    defaults = TrainConfig()
    if (cfg.dataset, cfg.network) == (defaults.dataset, defaults.network):
        return DEFAULT_EXPERIMENT
    net = Path(cfg.network).stem if names_config_file(cfg.network) else cfg.network
    return re.sub(r"[^A-Za-z0-9_.-]+", "", f"{cfg.dataset}_{net}")[:80]


def new_run_dir(cfg: TrainConfig) -> Path:
    """``--out``, or the folder snnsim chooses: ``runs/<name>-<date>-<time>`` (made
    unique when the run starts, :func:`claim_new_folder`)."""
    if cfg.out:
        return Path(cfg.out)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{default_name(cfg)}-{stamp}"


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a relative symbolic link to the new ``run_dir`` when the run
    lives in the default folder (``runs/latest``), replacing the link atomically; nothing where
    links cannot be made or where ``latest`` is something other than a link."""
    parent = run_dir.parent
    if parent.resolve() != RUNS_DIR.resolve():
        return
    link = parent / LATEST_NAME
    tmp = parent / f".{LATEST_NAME}.{os.getpid()}{TMP_SUFFIX}"
    try:
        if link.exists() and not link.is_symlink():
            return
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def claim_new_folder(run_dir: Path) -> Path:
    """Make the folder snnsim chose for a new run, ``run_dir`` or, when that exists
    (two runs started in the same second), ``run_dir-2``, ``run_dir-3``, ...: each
    made with an exclusive mkdir, so that two processes never pick the same one."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        candidate = run_dir if k == 1 else run_dir.with_name(f"{run_dir.name}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise runfolder.RunFolderError(f"{run_dir}: 10000 folders of that name exist; pass --out")


def check_out_path(run_dir: Path) -> None:
    """``--out`` (or a folder above it) that is a symbolic link must lead to something:
    a dangling or looping link is named as such (mkdir would say "File exists")."""
    for p in (run_dir, *run_dir.parents):
        if not p.is_symlink():
            continue
        try:
            p.resolve(strict=True)
        except FileNotFoundError:
            raise ConfigError(f"--out {run_dir}: {p} is a symbolic link to {os.readlink(p)}, "
                              "which does not exist") from None
        except (RuntimeError, OSError):              # ELOOP (RuntimeError before 3.13)
            raise ConfigError(f"--out {run_dir}: {p} is a symbolic link that loops "
                              f"({p} -> {os.readlink(p)} -> ...)") from None


def check_writable(run_dir: Path) -> None:
    """The run folder must take files (its lock first): a folder where none can be made
    (``/proc/self``, a read-only mount) is named as such, not as one "in use"."""
    try:
        os.close(os.open(run_dir / runfolder.LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError as exc:
        raise runfolder.RunFolderError(f"--out {run_dir}: cannot create files in it "
                                       f"({exc.strerror})") from None


def write_json_atomic(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def write_metrics(path: Path, history: list[dict]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(
        "".join(json.dumps(row) + "\n" for row in history)))


def append_metrics(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0 in data-parallel training."""


# --- the run ------------------------------------------------------------------------------
def check_output_size(net: Network, dataset: str) -> None:
    """The last layer must have one neuron per class (the loss and the accuracy read
    them as the classes)."""
    n_out = int(np.prod(net.shapes[-1]))
    n_classes = get_spec(dataset).n_classes
    if n_out != n_classes:
        raise ConfigError(f"network {net.describe()}: the output layer has {n_out} neurons; "
                          f"the dataset has {n_classes} classes")


def _prepare(cfg: TrainConfig, resume: dict | None, check_folder: bool = True):
    """Everything that can fail on the user's input, before the run folder is touched:
    the folder's state, the memory the run needs, the data (both splits), the network,
    the resumed state (one stopped inside an epoch: the same training samples)."""
    xp = get_backend(cfg.backend)
    chosen = not cfg.out                     # by snnsim: a fresh folder is claimed at start
    run_dir = Path(cfg.out) if cfg.out else new_run_dir(cfg)
    check_out_path(run_dir)
    existing = run_dir / CHECKPOINT_NAME
    if check_folder and resume is None and not chosen:   # (data-parallel: rank 0 alone)
        runfolder.check_new_run_folder(run_dir)
    elif check_folder and run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder")
    if (resume is not None and existing.exists()
            and existing.resolve() != Path(resume["path"]).resolve()
            and checkpoint_epoch(existing) > int(resume["epoch"])):
        raise ConfigError(f"resuming {resume['path']} (epoch {resume['epoch']}) into {run_dir} "
                          f"would overwrite {existing} (epoch {checkpoint_epoch(existing)}); "
                          "pass --out NEW_DIR")
    cfg = dataclasses.replace(cfg, out=str(run_dir))
    train_split, test_split = data_mod.load_splits(cfg)
    partial = resume.get("partial") if resume is not None else None
    if partial is not None and len(partial["order"]) != len(train_split):
        raise ConfigError(f"{resume['path']}: stopped inside an epoch of "
                          f"{len(partial['order'])} training samples, but this run has "
                          f"{len(train_split)}; resume "
                          f"{Path(resume['path']).parent / CHECKPOINT_NAME} instead "
                          "(that epoch then starts again)")
    input_shape = tuple(get_spec(cfg.dataset).input_shape)
    memory.check_fits(cfg, build_layers(cfg, input_shape), input_shape,   # before allocating
                      len(train_split), len(test_split))
    net = make_network(cfg)
    check_output_size(net, cfg.dataset)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 1])      # shuffling, dropout, augmentation
    if resume is not None:
        set_weights(net, resume["weights"], resume["path"])
        opt.load_state_dict(resume["optimizer"])
        rng = restore_rng(resume["rng_state"])
    return cfg, xp, run_dir, train_split, test_split, net, opt, rng


def run(cfg: TrainConfig, resume: dict | None = None, log=print, dp=None) -> dict:
    """Train ``cfg`` (from scratch, or continuing the loaded checkpoint ``resume``).
    ``dp``: a :class:`snnsim.training.parallel.DataParallel` (one run over MPI ranks;
    rank 0 alone locks and writes the run folder and prints).

    Returns a dict: ``run_dir``, ``metrics`` (per-epoch rows), ``net``,
    ``interrupted`` (True after Ctrl-C or SIGTERM), ``epochs_done``, ``data_files``.
    Raises :class:`~snnsim.training.guard.DivergenceError` when the loss, a weight or
    the optimizer state becomes NaN or inf (the last checkpoint stays as it was), and
    :class:`~snnsim.training.runfolder.RunFolderError` when another process holds
    the run folder. Nothing is created on disk until the config, the data and the
    network have been checked.
    """
    root = dp is None or dp.root
    if not root:
        log, cfg = _silent, dataclasses.replace(cfg, progress=False)
    chosen = not cfg.out and resume is None            # a folder name snnsim chooses
    cfg, xp, run_dir, train_split, test_split, net, opt, rng = _prepare(
        cfg, resume, check_folder=root)
    data_files = train_split.files + test_split.files
    if not root:                       # the other ranks compute; rank 0 owns the folder
        return _run_locked(cfg, resume, log, xp, run_dir, train_split, test_split, net, opt, rng,
                           data_files, dp)
    if cfg.tensorboard:
        tboard.check_available()
    failed_start = created = False
    try:
        with signals.deferred():        # made and known to be made, or neither
            if chosen:
                run_dir = claim_new_folder(run_dir)
                cfg, created = dataclasses.replace(cfg, out=str(run_dir)), True
            else:
                created = not run_dir.exists()
                run_dir.mkdir(parents=True, exist_ok=True)
            failed_start = created
        if created:
            point_latest(run_dir)
        check_writable(run_dir)
        with runfolder.locked(run_dir):
            try:
                result = _run_locked(cfg, resume, log, xp, run_dir, train_split, test_split, net,
                                     opt, rng, data_files, dp)
                done = result["epochs_done"]
                write_status(run_dir, "interrupted" if result["interrupted"] or done < cfg.epochs
                             else "finished", done, cfg.epochs)
                return result
            except guard.DivergenceError as exc:
                ckpt = run_dir / CHECKPOINT_NAME
                write_status(run_dir, "diverged", checkpoint_epoch(ckpt) if ckpt.exists() else 0,
                             cfg.epochs, str(exc))
                raise
            finally:
                with signals.deferred():  # a start that failed or was stopped: undone whole
                    failed_start = created and runfolder.resume_file(run_dir) is None
                    if failed_start:
                        runfolder.remove_files(run_dir, (CONFIG_NAME, METRICS_NAME,
                                                         RUN_INFO_NAME, STATUS_NAME))
    finally:
        if failed_start:
            with signals.deferred():
                runfolder.remove_if_only_lock(run_dir)


def percent(fraction: float) -> str:
    """An accuracy as printed everywhere: in %, two decimals (``0.8971`` -> ``89.71``).
    The files (metrics.jsonl, checkpoints) keep fractions."""
    return f"{100 * fraction:.2f}"


def progress_bar_wanted() -> bool:
    """A progress bar only on a terminal: redrawn lines would fill a log file."""
    return sys.stderr.isatty()


def _run_locked(cfg, resume, log, xp, run_dir, train_split, test_split, net, opt, rng,
                data_files, dp=None) -> dict:
    from tqdm import tqdm

    root = dp is None or dp.root
    say = tqdm.write if root else _silent
    if root:
        if resume is None:
            runfolder.check_new_run_folder(run_dir)      # again, under the lock
        removed = runfolder.clean_leftovers(run_dir)
        if removed:
            log(f"removed {len(removed)} temporary file(s) a killed run left in {run_dir}")
    if dp is not None:
        dp.check_batches(len(train_split), cfg.batch_size)
        dp.agree(config=cfg)     # rank 0's folder checks passed and the ranks' configs agree
                                 # (else every rank leaves here)
    log("snnsim.train: resolved config")
    log(cfg.format())
    log("data files read:\n" + provenance.describe(data_files))
    previous = runinfo.read_run_info(Path(resume["path"]).parent) if resume is not None else None
    threads_note = threads.choose_for_run(cfg.backend, runinfo.blas_thread_count(previous))
    if threads_note:                                  # before run.json records the count
        log(threads_note)
    if root:
        write_json_atomic(run_dir / CONFIG_NAME, {**cfg.to_dict(), "data_files": data_files})
        info = runinfo.run_info(cfg.backend, cfg.dtype)
        if resume is None:
            record = runinfo.record_start(run_dir, info)
        else:
            record = runinfo.record_start(run_dir, info, int(resume["epoch"]), previous)
        note = runinfo.resume_note(record)
        if note:
            log(note)
        started = runinfo.starts(record)[-1]

    loss_fn = make_loss(cfg, net)
    history: list[dict] = []
    start_epoch = 0
    partial = None                 # the epoch so far, of a run stopped inside it
    if resume is not None:
        history = [dict(row) for row in resume["metrics"]]
        start_epoch = int(resume["epoch"])
        for note in resume.get("notes", ()):
            log(note)
        partial = resume.get("partial")
        log(f"resuming {resume['path']} after epoch {start_epoch}"
            + (f", batch {partial['batches_done']} of epoch {start_epoch + 1}" if partial else ""))
        changed = provenance.differences(resume.get("data_files", []), data_files)
        if resume.get("data_files") and changed:
            log(f"note: the data differ from those the checkpoint was trained on: "
                f"{', '.join(changed)}")
        if root and runfolder.adopt_best(run_dir, resume):
            log(f"{BEST_NAME} brought up to epoch {resume['best_epoch']} (a kill had "
                "interrupted its promotion)")
    if root:
        write_metrics(run_dir / METRICS_NAME, history)   # the checkpoint's history is authoritative

    n_train, n_test = len(train_split), len(test_split)
    per_epoch = data_mod.n_batches(n_train, cfg.batch_size)
    log(f"network {net.describe()} on input {net.input_shape}: {count_parameters(net):,} parameters; "
        f"neuron {net.neuron}; backward {cfg.backward}, gradient {net.grad}")
    log(f"data {cfg.dataset}: {n_train} train / {n_test} test samples, {per_epoch} batches of "
        f"{cfg.batch_size} per epoch; backend {cfg.backend} {cfg.dtype}; run folder {run_dir}")
    if dp is not None:
        log(f"data-parallel over {dp.size} MPI ranks: {cfg.batch_size} samples per batch split "
            f"across them, gradients summed with one Allreduce per step")
    best = max((row["test_acc"] for row in history), default=-1.0)
    ckpt_path = run_dir / CHECKPOINT_NAME
    saved_epoch = start_epoch                        # the epoch checkpoint.h5 holds
    resume_hint = rerun("snnsim.train", f"--resume {run_dir}")   # as the user started it
    batch_seconds, epoch_seconds, estimated = [], [], False   # this session's timings
    if cfg.backend == "numpy":
        warm_up((cfg.dtype,))       # numba compiles the kernels now, not inside the timed epoch 1
    # another look at the machine every threads.WATCH_S seconds (data-parallel ranks: none)
    watch = threads.watch_for_run(cfg.backend) if dp is None else None
    show_bar = cfg.progress and progress_bar_wanted()
    epoch = start_epoch
    bar = None
    stopped_at = None        # the batches done in the epoch when a stop was asked for
    # the checksum of the checkpoint an interrupted.h5 written now would continue
    base_checksum = ("" if resume is None else resume["partial"]["base_checksum"]
                     if resume.get("partial") else resume.get("checksum", ""))
    # inside an epoch, interrupted.h5 every cfg.save_every_s (data-parallel: when due on
    # any rank's clock, agreed by the ranks with the stop request)
    keep_every = cfg.save_every_s

    def so_far(batches_done: int) -> dict:
        """The epoch so far, for interrupted.h5 (the loop's variables at a safe point).
        Data-parallel: the counts summed over the ranks (a collective: every rank calls
        it at the same step), so that the file does not depend on their number."""
        sums = ((loss_sum, correct, seen) if dp is None
                else dp.sum_counts(loss_sum, correct, seen))
        return {"batches_done": batches_done, "order": order, "loss_sum": float(sums[0]),
                "correct": int(sums[1]), "samples_seen": int(sums[2]), "grad_norms": norms,
                "train_seconds": seconds_before + time.perf_counter() - t0}

    def keep(batches_done: int, say) -> Path | None:
        """interrupted.h5 now (every rank calls it; rank 0 writes)."""
        part = so_far(batches_done)
        return (_save_interrupted(run_dir, state(), epoch, history, base_checksum, part, say)
                if root else None)
    board = tboard.EpochLog(run_dir) if cfg.tensorboard and root else None
    layer_names = [layer.describe() for layer in net.layers]

    def state() -> dict:
        """The run's state now, for checkpoint.h5 and interrupted.h5 (``started`` changes
        when the BLAS threads do)."""
        return _run_state(net, opt, rng, cfg, layer_names, data_files, started)
    try:
        with runfolder.sigterm_as_interrupt() as stop:
            if dp is None:
                def check_stop(due: bool = False) -> bool:
                    stop.check()
                    return due
            else:                     # the ranks agree on both
                check_stop = functools.partial(dp.check_stop, stop)
            check_v = guard.needs_v_check(cfg.grad_clip, net.xp, opt)   # does a clip bound v?
            for epoch in range(start_epoch, cfg.epochs):
                bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           disable=not show_bar, leave=False, dynamic_ncols=True)
                if partial is not None:                      # stopped inside this epoch
                    order, done_before = partial["order"], partial["batches_done"]
                    loss_sum, correct = partial["loss_sum"], partial["correct"]
                    seen, seconds_before = partial["samples_seen"], partial["train_seconds"]
                    if not root:            # data-parallel: rank 0 carries the summed counts
                        loss_sum, correct, seen = 0.0, 0, 0
                    norms = [float(x) for x in partial["grad_norms"]]
                    bar.update(done_before)
                    partial = None
                else:
                    order = data_mod.batch_order(n_train, rng, shuffle=True)
                    done_before, loss_sum, correct, seen, seconds_before = 0, 0.0, 0, 0, 0.0
                    norms = []                               # the clip's norm of every step
                t0 = last_kept = time.perf_counter()
                for i, (x_in, labels) in enumerate(data_mod.batches(
                        train_split, cfg.batch_size, xp, net.dtype, cfg.n_steps, rng, shuffle=True,
                        device=net.device, shard=dp and dp.shard, order=order,
                        start=done_before), start=done_before):
                    tb = time.perf_counter()
                    if dp is None:
                        L, c = train_step(net, opt, x_in, labels, loss_fn, cfg, rng)
                    else:
                        L, c = train_step(net, opt, x_in, labels, loss_fn, cfg,
                                          dp.dropout_rng(cfg.seed, epoch, i), dp.allreduce_grads)
                    guard.check_step(net, opt, L, epoch + 1, i, check_v)
                    if board is not None and getattr(opt, "last_grad_norm", None) is not None:
                        norms.append(float(opt.last_grad_norm))
                    loss_sum, correct, seen = loss_sum + L, correct + c, seen + int(labels.shape[0])
                    stopped_at = i + 1           # a safe point: the step and its counts are whole
                    due = check_stop(bool(keep_every) and i + 1 < per_epoch
                                     and time.perf_counter() - last_kept >= keep_every)
                    stopped_at = None
                    if due:
                        keep(i + 1, say)
                        last_kept = time.perf_counter()
                    change = watch.poll() if watch is not None else None
                    if change:
                        say(f"BLAS threads: {change[0]} -> {change[1]} after batch {i + 1} of "
                            f"epoch {epoch + 1} (other processes kept {change[2]:.1f} of "
                            f"{watch.n_cpu} cores busy; recorded in {RUN_INFO_NAME})")
                        try:
                            started = runinfo.starts(runinfo.record_blas_change(
                                run_dir, epoch + 1, i + 1, change[1]))[-1]   # (and checkpoints)
                        except (runinfo.RunInfoError, OSError) as exc:    # the run goes on
                            say(f"note: the change is not recorded: {error_line(exc)}")
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{percent(correct / seen)} %",
                                    refresh=False)
                    if not estimated and epoch == start_epoch and i >= 1:   # batch 0: warm-up
                        batch_seconds.append(time.perf_counter() - tb)
                        left = per_epoch - (i + 1) + per_epoch * (cfg.epochs - epoch - 1)
                        if eta.window_complete(len(batch_seconds), sum(batch_seconds),
                                               per_epoch - (i + 1)):
                            estimated = True
                            say(f"estimated training time per epoch "
                                f"{eta.format_estimate(eta.from_batches(batch_seconds, per_epoch))}"
                                f"; for the rest of the run "
                                f"{eta.format_estimate(eta.from_batches(batch_seconds, left))} "
                                f"plus evaluation, if the machine's load stays as now "
                                f"({eta.load_note()}); renewed after every epoch "
                                f"(Ctrl-C stops; {resume_hint} continues)")
                train_seconds = seconds_before + time.perf_counter() - t0
                bar.close()
                if dp is not None:
                    loss_sum, correct, seen = dp.sum_counts(loss_sum, correct, seen)
                t1 = time.perf_counter()
                test_acc, sparsity = test_pass(net, test_split, cfg, dp)
                row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                       "train_acc": correct / max(seen, 1), "test_acc": test_acc,
                       "seconds": train_seconds, "samples_per_s": seen / max(train_seconds, 1e-12),
                       "eval_seconds": time.perf_counter() - t1,
                       "test_silent": [round(d["silent"], 6) for d in sparsity],
                       "test_spikes": [round(d["spikes"], 6) for d in sparsity]}
                with signals.deferred():     # an epoch's files: all written, or none
                    if root:
                        save_checkpoint(ckpt_path, **state(), epoch=epoch + 1,
                                        metrics=history + [row])
                    if root:                 # the epoch it was stopped in is now whole
                        base_checksum = read_root_attrs(ckpt_path).get(CHECKSUM_ATTR, "")
                        runfolder.remove_files(run_dir, (INTERRUPTED_NAME,))
                    history.append(row)
                    saved_epoch = epoch + 1
                    is_best = test_acc > best
                    if is_best:
                        best = test_acc
                    if root:
                        runfolder.promote(run_dir, is_best)
                        append_metrics(run_dir / METRICS_NAME, row)
                if board is not None:
                    board.epoch(row, opt.lr, layer_names, net.params, [d["counts"] for d in sparsity],
                                norms)
                # training (of every batch: an epoch resumed inside it counts the time
                # before the stop too; the estimates said 30 % too little after such a
                # resume), evaluation, saving
                epoch_seconds.append(train_seconds + time.perf_counter() - t1)
                left = cfg.epochs - epoch - 1
                say(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
                    f"acc {percent(row['train_acc'])} % | test acc {percent(test_acc)} % "
                    f"(best {percent(best)} %){' *' if is_best else ''} | "
                    f"{train_seconds:.1f} s, {row['samples_per_s']:.0f} samples/s"
                    + (f" | {left} epoch{'s' if left != 1 else ''} left: "
                       + eta.format_estimate(eta.from_epochs(epoch_seconds, left, batch_seconds))
                       if left > 0 else ""))
                check_stop()
    except KeyboardInterrupt as exc:
        signals.hold()                   # the message below is not cut by another signal
        if bar is not None:
            bar.close()
        what = "terminated (SIGTERM)" if isinstance(exc, runfolder.Terminated) else "interrupted"
        when = (f"during epoch {epoch + 1}" if saved_epoch <= epoch
                else f"after epoch {saved_epoch}")
        kept = None
        if stopped_at is not None and saved_epoch == epoch and stop.agreed:
            kept = keep(stopped_at, log)      # (data-parallel: every rank is here)
        if kept is not None:
            log(f"\n{what} after batch {stopped_at} of {per_epoch} in epoch {epoch + 1}; the "
                f"state is kept in {kept}, and the epoch goes on from there. Resume with:\n"
                f"  {resume_hint}")
        elif saved_epoch > 0 and ckpt_path.exists():
            log(f"\n{what} {when}; the last complete checkpoint is "
                f"{ckpt_path} (epoch {saved_epoch}). Resume with:\n  {resume_hint}")
        else:
            log(f"\n{what} {when}, before any checkpoint was written")
        return {"run_dir": run_dir, "metrics": history, "net": net, "interrupted": True,
                "epochs_done": saved_epoch, "data_files": data_files}
    except guard.DivergenceError as exc:
        if bar is not None:
            bar.close()
        raise guard.DivergenceError(f"{exc}; {last_finite(ckpt_path)}") from exc
    finally:
        if board is not None:
            board.close()
    if history:
        b = max(history, key=lambda r: r["test_acc"])
        log(f"done: {len(history)} epoch{'s' if len(history) != 1 else ''}; best test accuracy "
            f"{percent(b['test_acc'])} % at epoch "
            f"{b['epoch']}; run folder {run_dir}")
    return {"run_dir": run_dir, "metrics": history, "net": net, "interrupted": False,
            "epochs_done": len(history), "data_files": data_files}


def _run_state(net, opt, rng, cfg, layer_names, data_files, started) -> dict:
    """What every file a run keeps (checkpoint.h5 and interrupted.h5) holds besides its
    epoch and metrics: ``save_checkpoint``'s keyword arguments for the state now."""
    return {"weights": net.params, "optimizer": opt.state_dict(),
            "rng_state": rng.bit_generator.state, "config": cfg.to_dict(),
            "layer_names": layer_names, "network": net.describe(),
            "extra_attrs": {"data_files": json.dumps(data_files),
                            "run_info": json.dumps(started)}}


def _save_interrupted(run_dir, state, epoch, history, base_checksum, so_far, log) -> Path | None:
    """Write ``interrupted.h5``: the run stopped inside epoch ``epoch + 1`` (``state``,
    from ``_run_state``, after ``so_far["batches_done"]`` of its batches, and the epoch's
    sample order and counts so far, ``so_far``), continuing the checkpoint of epoch
    ``epoch`` whose checksum is ``base_checksum``, so that ``--resume`` goes on from that
    batch, bit-identical to a run that was not stopped. Returns its path, or None (with a
    note) when it cannot be written: the resume then starts the epoch again."""
    path = run_dir / INTERRUPTED_NAME
    try:
        with signals.deferred():
            save_checkpoint(path, **state, epoch=epoch, metrics=history,
                            partial={**so_far, "base_checksum": base_checksum})
    except (CheckpointError, OSError) as exc:
        log(f"note: the epoch so far is not kept ({error_line(exc)})")
        return None
    return path


def last_finite(ckpt_path: Path) -> str:
    """What a diverged run leaves: ``ckpt_path`` is named the last finite checkpoint only
    when it loads with every check (finite weights and optimizer state); a run resumed
    with --allow-nonfinite or into a new folder may have none."""
    if not ckpt_path.exists():
        return f"no checkpoint was written in {ckpt_path.parent}"
    try:
        epoch = load_checkpoint(ckpt_path, allow_nonfinite=False)["epoch"]
    except CheckpointError:
        return f"{ckpt_path} is left as it was, but it is not a finite checkpoint either"
    return f"{ckpt_path} (epoch {epoch}) is the last finite checkpoint"


# --- command line -----------------------------------------------------------------------------
DESCRIPTION = """\
Train a spiking network with TSSL-BP (Zhang & Li, NeurIPS 2020).

Without arguments: Fashion-MNIST, 784-400-400-10, T=5, the authors' setup
(preset authors, kernel loss, AdamW lr 5e-4 wd 0.01, batch 100, clip 1,
weights in [-4, 4]) on NumPy for the authors' 100 epochs. The time left is
estimated, with a range, once at least 10 batches and 30 s are timed, and
again after every epoch; tqdm's bar shows the rest of the current epoch.
Ctrl-C stops after the current batch, keeps the epoch so far (interrupted.h5) and
prints the command that resumes it from the next batch, bit-identical to a run never
stopped. For a quick look: python3 -m snnsim.train --epochs=1 --train-subset=5000
On NumPy the run uses as many BLAS threads as cores are idle at its start (one on a
busy machine, where more would spin-wait), fewer while other processes take cores and
more when they free them, up to one per core (checked every 10 s, recorded in
run.json); OPENBLAS_NUM_THREADS=n fixes the count."""

EPILOG_HEAD = """\
A run folder (--out, default runs/<name>-<date>-<time>) gets config.json,
run.json (snnsim version and git commit, BLAS library and threads, NumPy,
platform: what besides the config decides the bits, see docs/reproducibility.md),
metrics.jsonl (one line per epoch), checkpoint.h5 (latest epoch), best.h5
(best test accuracy), status.json (how the last start ended) and run.lock
(held while training); the HDF5 layout is in docs/checkpoint_format.md.

Every config field can be set with --key=value or --key value, parsed to the
field's type; 'none' clears an optional field. Option names are written with
'-' (--train-subset); the '_' of the config files' keys (--train_subset) is
accepted as well.
Precedence: defaults < --config file < command line. When resuming, only
these may change: """ + ", ".join(RESUME_CHANGEABLE) + """.

Backward variants (--backward=NAME; what computes the LIF layers' delta, the
forward is always the discrete network; snnsim/variants.py):
""" + describe_backwards() + """

Config fields:
"""


class _Once(argparse.Action):
    """Store an option's value; giving the option twice is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice")
        setattr(namespace, self.dest, values)


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.train"), description=DESCRIPTION,
                                epilog=EPILOG_HEAD + describe_fields(),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", action=_Once, metavar="PATH_OR_NAME",
                   help="config file: an authors' YAML (Network:/Layers:), a flat JSON/YAML "
                        "(e.g. a run's config.json), or the name of a config shipped in the "
                        "package (snnsim/configs/) such as fashion_mnist_mlp")
    p.add_argument("--backend", action=_Once, choices=("numpy", "cupy", "torch"),
                   help="array backend (default numpy; torch: PyTorch tensors, CUDA where present)")
    p.add_argument("--epochs", action=_Once,
                   type=int, metavar="N", help="number of epochs (in total, "
                   "counting those of a resumed run)")
    p.add_argument("--batch-size", action=_Once, type=int, metavar="N", help="training batch size")
    p.add_argument("--seed", action=_Once,
                   type=int, metavar="N", help="seed of initialisation, shuffling, "
                   "dropout and augmentation")
    p.add_argument("--out", action=_Once,
                   metavar="DIR", help="run folder (must not hold a run already, "
                   "unless resuming)")
    p.add_argument("--resume", nargs="?", const="", metavar="CKPT_OR_DIR",
                   help="continue from a checkpoint file or a run folder (its checkpoint.h5); "
                        "without a value: --out, else the newest folder in runs/")
    p.add_argument("--data-dir", action=_Once, metavar="DIR",
                   help="directory holding the dataset: the only place looked in (no other "
                        "copy is used when it lacks a file)")
    p.add_argument("--data-parallel", action="store_true",
                   help="one run over the MPI ranks of mpiexec -n N (mpi4py): each batch split "
                        "across them, gradients summed; rank 0 writes the run folder "
                        "(snnsim/training/parallel.py)")
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
        option = "--" + key.replace("_", "-")
        if key not in field_names():
            known = [*parser._option_string_actions, *(f"--{k.replace('_', '-')}" for k in field_names())]
            parser.error(f"unknown option {option}{did_you_mean(option, known)}")
        if value is None:
            parser.error(f"{option} needs a value: {option}=VALUE")
        if key in out:
            parser.error(f"{option} given twice ({out[key]!r} and {value!r})")
        try:
            coerce(key, value)
        except ConfigError as exc:
            parser.error(f"{option}: {exc}")
        out[key] = value
    return out


def _latest_run(base: Path = RUNS_DIR) -> Path:
    runs = sorted({p.parent for name in (CHECKPOINT_NAME, INTERRUPTED_NAME)
                   for p in base.glob(f"*/{name}")},
                  key=lambda d: runfolder.resume_file(d).stat().st_mtime)
    if not runs:
        raise CheckpointError(f"--resume without a value: no {base}/*/{CHECKPOINT_NAME} found")
    return runs[-1]


def resolve_resume_path(value: str, out: str | None) -> Path:
    target = Path(value) if value else (Path(out) if out else _latest_run())
    if target.name == LATEST_NAME and target.is_symlink():
        # runs/latest: the run it names now, so that the run folder recorded and printed
        # (and the "Resume with" hint) stay that run's when a newer run moves the link
        target = target.parent / os.readlink(target)
    if target.is_dir():
        return runfolder.resume_file(target) or target / CHECKPOINT_NAME
    return target


def resume_state(path: Path) -> dict:
    """The loaded state ``--resume`` continues: the checkpoint at ``path``, or, when the
    run was stopped inside the next epoch, the ``interrupted.h5`` beside it that continues
    that very checkpoint (same epoch, its checksum as base). Another or an unreadable
    interrupted.h5 is passed over with a note (``notes``), and the epoch starts again."""
    ckpt = load_checkpoint(path)
    other = Path(path).parent / INTERRUPTED_NAME
    if ckpt["partial"] is not None or not other.exists():
        return ckpt
    try:
        state = load_checkpoint(other)
    except CheckpointError as exc:
        return {**ckpt, "notes": [f"note: {error_line(exc)}; resuming {path} (epoch "
                                  f"{ckpt['epoch']}) instead, so its next epoch starts again"]}
    part = state["partial"]
    if part is None or state["epoch"] != ckpt["epoch"] or part["base_checksum"] != ckpt["checksum"]:
        return {**ckpt, "notes": [f"note: {other} is not the continuation of {path} (epoch "
                                  f"{ckpt['epoch']}); passed over"]}
    return state


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
            ckpt = resume_state(path)
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


@command("train")
def main(argv=None) -> int:
    """The command line: 0 done, 2 a user error (one line, see :mod:`snnsim.cli`),
    3 diverged, 130 interrupted (Ctrl-C or SIGTERM; resumable)."""
    cfg, ckpt = parse_args(argv)
    dp = None
    if make_parser().parse_known_args(argv)[0].data_parallel:
        from ..backend import BackendError
        from .parallel import DataParallel
        try:
            xp, missing = get_backend(cfg.backend), None
        except BackendError as exc:     # (CuPy missing: the same line from every rank)
            xp, missing = None, exc
        DataParallel().agree(missing)   # the first rank that lacks it says so, once
        dp = DataParallel(xp)
    with dp.abort_on_crash() if dp else contextlib.nullcontext():
        result = run(cfg, resume=ckpt, dp=dp)
    return EXIT_INTERRUPTED if result["interrupted"] else 0


__all__ = ["BEST_NAME", "CHECKPOINT_NAME", "CONFIG_NAME", "EXIT_DIVERGED", "EXIT_INTERRUPTED",
           "INTERRUPTED_NAME", "METRICS_NAME", "RUN_INFO_NAME", "build_layers", "check_input_size",
           "check_output_size", "evaluate", "main", "make_loss", "make_network", "make_parser",
           "neuron_and_grad", "parse_args", "resume_state", "run", "set_weights", "train_step"]

if __name__ == "__main__":
    sys.exit(main())
