"""Training with each backward variant, through the one training path.

Every training run of the study is a run of ``python3 -m snnsim.train`` (the function
:func:`snnsim.training.train.run`, in this process) with ``--backward=<variant>``, the
defaults of :class:`~snnsim.training.config.TrainConfig` otherwise (the authors' setup:
784-400-400-10, T = 5, AdamW lr 5e-4, weight decay 0.01, batch 100, clip 1, clamp ±4,
float32), in its own run folder under ``--runs-dir`` (default ``runs/fidelity``):

    compare/<variant>_seed<seed>/    compare-training: one run per variant and seed
    along/<variant>_seed<seed>/      along-training: one run, epoch_<k>.h5 kept per epoch

The study reads what those folders hold (``checkpoint.h5``'s metrics, ``epoch_<k>.h5``).
A folder that already holds the same run is continued (``--resume``) or, when it has the
epochs asked for, only read: an interrupted study continues where it stopped when the same
command is run again. Epoch 0 is the test accuracy of the initial network (the seed's
initialisation, evaluated once per seed).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..training import data as data_mod
from ..training.checkpoint import atomic_copy, load_checkpoint
from ..training.config import ConfigError, TrainConfig, field_names
from ..training.train import CHECKPOINT_NAME, RESUME_CHANGEABLE, evaluate, make_network, run, set_weights
from .measure import BATCH_VARIANTS, N_DIRECTIONS, descent_losses, measure
from .problems import config_problem

#: Where the study's training runs go.
RUNS_DIR = Path("runs/fidelity")
#: Variants trained by ``compare-training``.
TRAIN_VARIANTS = ("authors", "authors-nowarmup", "authors-flipped", "timing", "timing-bw",
                  "timing-flipped", "timing-bw-flipped", "surrogate")
#: Fields of a run that say what it is (the rest of TrainConfig stays at its default).
RUN_FIELDS = ("backward", "seed", "epochs", "train_subset", "test_subset")


def training_config(variant: str, seed: int, epochs: int, n_train: int, n_test: int,
                    out: Path, data_dir: str | None = None) -> TrainConfig:
    """The run of one variant: the training defaults with ``--backward=variant``."""
    return TrainConfig(backward=variant, seed=seed, epochs=epochs, train_subset=n_train,
                       test_subset=n_test, out=str(out), data_dir=data_dir,
                       progress=sys.stderr.isatty())


def train_command(cfg: TrainConfig) -> str:
    """The command line that trains the same run."""
    return ("python3 -m snnsim.train " + " ".join(f"--{k}={getattr(cfg, k)}" for k in RUN_FIELDS)
            + f" --out={cfg.out}" + (f" --data-dir={cfg.data_dir}" if cfg.data_dir else ""))


def _log(msg: str) -> None:
    """train.run's messages without its config dump (the run folder's config.json has it)."""
    if not msg.startswith(("snnsim.train: resolved config", "  ")):
        print(msg, file=sys.stderr)


def train_or_continue(cfg: TrainConfig, log: Callable = _log) -> list[dict]:
    """The per-epoch metrics of ``cfg``'s first ``cfg.epochs`` epochs, training only what
    its run folder does not hold yet. Raises ConfigError if the folder holds another run
    and KeyboardInterrupt if the training was interrupted (its checkpoint is kept)."""
    ckpt_path = Path(cfg.out) / CHECKPOINT_NAME
    if not ckpt_path.exists():
        result = run(cfg, log=log)
    else:
        ckpt = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(ckpt["config"], source=str(ckpt_path))
        differ = [k for k in field_names()
                  if k not in RESUME_CHANGEABLE and getattr(saved, k) != getattr(cfg, k)]
        if differ:
            raise ConfigError(f"{cfg.out} holds another run ("
                              + ", ".join(f"{k}={getattr(saved, k)!r}" for k in differ)
                              + "); choose another --runs-dir")
        if int(ckpt["epoch"]) >= cfg.epochs:
            return [dict(row) for row in ckpt["metrics"][:cfg.epochs]]
        result = run(saved.replace(epochs=cfg.epochs, progress=cfg.progress), resume=ckpt, log=log)
    if result["interrupted"]:
        raise KeyboardInterrupt
    return result["metrics"]


def run_setup(cfg: TrainConfig) -> dict:
    """What a run used, for the report."""
    keys = ("backward", "seed", "epochs", "train_subset", "test_subset", "lr", "weight_decay",
            "batch_size", "grad_clip", "weight_clamp", "dtype", "network", "dataset", "preset")
    out = {k: getattr(cfg, k) for k in keys}
    out.update(variant=cfg.backward, n_train=cfg.train_subset, n_test=cfg.test_subset)
    return out


def initial_accuracy(cfg: TrainConfig, test_split) -> float:
    """Test accuracy of the network ``cfg`` initialises (epoch 0)."""
    return evaluate(make_network(cfg), test_split, cfg)


def run_compare_training(variants, seeds, epochs: int, n_train: int, n_test: int,
                         runs_dir: Path = RUNS_DIR, save: Callable | None = None,
                         data_dir: str | None = None) -> dict:
    """Test accuracy per epoch for each variant and seed (same initialisation and data order
    per seed). ``save(partial_result)`` is called after every run."""
    res = {"command": "compare-training", "trainer": "snnsim.training.train.run",
           "variants": list(variants), "seeds": list(seeds), "epochs": epochs, "n_train": n_train,
           "n_test": n_test, "runs_dir": str(runs_dir), "runs": {v: [] for v in variants}}
    test_split, init_acc = None, {}
    for s in seeds:
        for v in variants:
            cfg = training_config(v, s, epochs, n_train, n_test, runs_dir / "compare" / f"{v}_seed{s}",
                                  data_dir)
            print(f"compare-training: {v} seed {s}: {train_command(cfg)}", file=sys.stderr)
            metrics = train_or_continue(cfg)
            if s not in init_acc:
                test_split = test_split or data_mod.load_split(cfg.dataset, "test", cfg)
                init_acc[s] = initial_accuracy(cfg, test_split)
            res["runs"][v].append({
                "setup": run_setup(cfg), "run_dir": cfg.out, "train_command": train_command(cfg),
                "epochs": [{"epoch": 0, "train_loss": None, "test_acc": init_acc[s]}] + metrics})
            if save:
                save(res)
    return res


def epoch_snapshot(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"epoch_{epoch}.h5"


def run_along_training(variant: str = "authors", seed: int = 0, epochs: int = 3, n_train: int = 60000,
                       n_test: int = 10000, n_samples: int = 100, n_dirs: int = N_DIRECTIONS,
                       runs_dir: Path = RUNS_DIR, data_dir: str | None = None) -> dict:
    """Train ``variant`` one epoch at a time (``--resume``, bit-exact) and after every epoch
    (0 = initialisation) :func:`measure` the network in float64 on the first ``n_samples``
    test samples, with the descent probe. Keeps ``epoch_<k>.h5`` in the run folder (for
    ``batch --checkpoint``)."""
    from ..analysis.record import network_from_checkpoint
    run_dir = runs_dir / "along" / f"{variant}_seed{seed}"
    cfg = training_config(variant, seed, epochs, n_train, n_test, run_dir, data_dir)
    cfg64 = cfg.replace(dtype="float64")

    def fidelity(net64, epoch: int) -> dict:
        x_in, a_hat = config_problem(net64, cfg64, n_samples)
        res = measure(net64, x_in, a_hat, BATCH_VARIANTS, n_dirs, np.random.default_rng(seed + epoch))
        res["descent"] = descent_losses(net64, x_in, a_hat)
        return res

    print(f"along-training: {variant} seed {seed}: {train_command(cfg)}, one epoch at a time",
          file=sys.stderr)
    net = make_network(cfg)
    test_split = data_mod.load_split(cfg.dataset, "test", cfg)
    net64 = make_network(cfg64)                      # the float32 initial weights, in float64
    set_weights(net64, [{k: to_numpy(v) for k, v in p.items()} for p in net.params])
    records = [{"epoch": 0, "train_loss": None, "test_acc": evaluate(net, test_split, cfg),
                "fidelity": fidelity(net64, 0)}]
    for epoch in range(1, epochs + 1):
        snap = epoch_snapshot(run_dir, epoch)
        if not snap.exists():
            train_or_continue(cfg.replace(epochs=epoch))
            atomic_copy(run_dir / CHECKPOINT_NAME, snap)
        net64, _, ckpt = network_from_checkpoint(snap, backend="numpy", dtype="float64")
        if int(ckpt["epoch"]) != epoch:
            raise ConfigError(f"{snap} holds epoch {ckpt['epoch']}, not {epoch}")
        row = dict(ckpt["metrics"][epoch - 1])
        records.append({**row, "fidelity": fidelity(net64, epoch)})
        print(f"  epoch {epoch}: test acc {100 * row['test_acc']:.2f} %, measured", file=sys.stderr)
    return {"command": "along-training", "trainer": "snnsim.training.train.run",
            "setup": run_setup(cfg), "run_dir": str(run_dir), "train_command": train_command(cfg),
            "n_samples": n_samples, "n_directions": n_dirs, "epochs": records}


__all__ = ["RUNS_DIR", "TRAIN_VARIANTS", "initial_accuracy", "run_along_training",
           "run_compare_training", "train_command", "train_or_continue", "training_config"]
