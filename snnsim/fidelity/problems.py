"""The test problems of the fidelity study: small random dense networks (float64, seconds)
and the paper's Fashion-MNIST MLP on a batch of test samples, at initialisation, with
saved weights, or from a checkpoint of ``python3 -m snnsim.train``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..layers import Dense
from ..loss import kernel_target
from ..network import Network, repeat_static
from ..params import NeuronParams
from ..presets import get_preset
from ..training.config import ConfigError
from .measure import (
    BATCH_VARIANTS,
    N_DIRECTIONS,
    RANDOM_VARIANTS,
    descent_losses,
    ladder,
    measure,
    param_entries,
    predicted_compounding,
)

#: The Fashion-MNIST MLP of the paper: 784-400-400-10, T = 5.
MLP_SIZES = (784, 400, 400, 10)
MLP_STEPS = 5
N_CLASSES = 10


# --- random networks ----------------------------------------------------------------
#: (layer sizes, T, reset) of the random-network report.
RANDOM_NETS = (((10, 16, 12, 4), 5, "zero"),
               ((14, 20, 16, 10, 5), 6, "zero"),
               ((8, 12, 6), 8, "subtract"),
               ((12, 24, 24, 6), 5, "zero"))
RANDOM_BATCH = 4
#: Random nets: Kaiming init times this scale, inputs uniform in [0, RANDOM_INPUT_SCALE):
#: enough drive that every layer fires.
RANDOM_WEIGHT_SCALE = 3.0
RANDOM_INPUT_SCALE = 2.0


def random_problem(sizes, n_steps: int, reset: str, seed: int, batch: int = RANDOM_BATCH):
    """A float64 dense network, random input currents ``(T, B, n_in)`` and a random target."""
    rng = np.random.default_rng(seed)
    net = Network([Dense(n, weight_scale=RANDOM_WEIGHT_SCALE) for n in sizes[1:]], (sizes[0],),
                  neuron=NeuronParams(reset=reset), dtype="float64", seed=seed)
    x_in = RANDOM_INPUT_SCALE * rng.random((n_steps, batch, sizes[0]))
    labels = rng.integers(sizes[-1], size=batch)
    a_hat = kernel_target(labels, sizes[-1], n_steps, net.neuron.theta_s, "authors", 2, dtype=np.float64)
    return net, x_in, a_hat


def run_random(seed: int = 0, n_dirs: int = 16, variants=RANDOM_VARIANTS) -> dict:
    """:func:`measure` on each network of :data:`RANDOM_NETS` (seed ``seed + index``)."""
    nets = []
    for j, (sizes, n_steps, reset) in enumerate(RANDOM_NETS):
        net, x_in, a_hat = random_problem(sizes, n_steps, reset, seed + j)
        res = measure(net, x_in, a_hat, variants, n_dirs, np.random.default_rng(seed + j))
        res.update(sizes=list(sizes), n_steps=n_steps, reset=reset, seed=seed + j, batch=RANDOM_BATCH)
        nets.append(res)
    return {"command": "random", "variants": list(variants), "nets": nets}



# --- real data ------------------------------------------------------------------------
def load_fashion(split: str):
    """Fashion-MNIST ``split`` as (float32 images (N, 784) normalised as the authors do, int64 labels)."""
    from ..datasets import load_idx_dataset, normalize_mnist
    images, labels = load_idx_dataset("fashion-mnist", split)
    return normalize_mnist(images).reshape(len(images), -1), labels.astype(np.int64)


def build_mlp(dtype: str = "float64", seed: int = 0, preset: str = "authors") -> Network:
    """The 784-400-400-10 MLP with the preset's reset (authors: zero reset)."""
    p = get_preset(preset)
    return Network([Dense(n) for n in MLP_SIZES[1:]], (MLP_SIZES[0],), neuron=NeuronParams(reset=p.reset),
                   dtype=dtype, seed=seed)


def mlp_target(net: Network, labels, preset: str = "authors"):
    """The kernel target â (T, B, 10) of the preset for host ``labels``, on the network's device."""
    p = get_preset(preset)
    labels = net.xp.asarray(labels, device=net.device)
    return kernel_target(labels, N_CLASSES, MLP_STEPS, net.neuron.theta_s, p.desired_train,
                         p.target_filter_passes, dtype=net.dtype)



def load_weights(net: Network, path: Path) -> None:
    with np.load(path) as f:
        for i, k in param_entries(net):
            net.params[i][k][...] = net.xp.asarray(f[f"{i}.{k}"], dtype=net.dtype, device=net.device)


def batch_problem(net: Network, n_samples: int, offset: int = 0, preset: str = "authors"):
    """The first ``n_samples`` Fashion-MNIST test samples from ``offset``.

    Returns (x_in (T, B, 784), a_hat, labels).
    """
    images, labels = load_fashion("test")
    x = net.xp.asarray(images[offset:offset + n_samples], dtype=net.dtype, device=net.device)  # (B, 784)
    y = labels[offset:offset + n_samples]
    return repeat_static(x, MLP_STEPS), mlp_target(net, y, preset), y


def config_problem(net: Network, cfg, n_samples: int, offset: int = 0):
    """Test samples ``offset .. offset + n_samples`` of ``cfg.dataset`` as the network's input
    ``(T, B, ...)`` and the kernel target of ``cfg`` (a :class:`~snnsim.training.config.TrainConfig`)."""
    from ..analysis.record import load_samples, sample_batches
    if cfg.loss != "kernel":
        raise ConfigError(f"fidelity measures the kernel loss; this run used {cfg.loss!r}")
    split, _ = load_samples(cfg, "test", indices=np.arange(offset, offset + n_samples))
    x_in, labels = next(iter(sample_batches(net, split, cfg.n_steps, n_samples)))
    r = cfg.resolved()
    a_hat = kernel_target(labels, int(np.prod(net.shapes[-1])), cfg.n_steps, net.neuron.theta_s,
                          r["desired_train"], r["target_filter_passes"], dtype=net.dtype)
    return x_in, a_hat


def checkpoint_problem(path, n_samples: int, offset: int = 0):
    """A trained network of :mod:`snnsim.train` (checkpoint file or run folder), in float64,
    and test samples ``offset .. offset + n_samples`` of its dataset with its kernel target."""
    from ..analysis.record import network_from_checkpoint
    net, cfg, _ = network_from_checkpoint(path, backend="numpy", dtype="float64")
    try:
        return (net, *config_problem(net, cfg, n_samples, offset))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def run_batch(seed: int = 0, n_samples: int = 100, offset: int = 0, n_dirs: int = N_DIRECTIONS,
              weights: str | None = None, checkpoint: str | None = None) -> dict:
    """Every measurement on one batch: :func:`measure`, :func:`ladder`, :func:`descent_losses`.
    The network: a checkpoint of :mod:`snnsim.train`, or the MLP at init (``seed``) or with
    ``weights`` (an .npz of weights saved by earlier versions of ``along-training``; it now
    keeps a checkpoint per epoch, for ``--checkpoint``)."""
    if checkpoint:
        net, x_in, a_hat = checkpoint_problem(checkpoint, n_samples, offset)
    else:
        net = build_mlp("float64", seed)
        if weights:
            load_weights(net, Path(weights))
        x_in, a_hat, _ = batch_problem(net, n_samples, offset)
    t0 = time.time()
    res = measure(net, x_in, a_hat, BATCH_VARIANTS, n_dirs, np.random.default_rng(seed))
    res["ladder"] = ladder(net, x_in, a_hat)
    res["descent"] = descent_losses(net, x_in, a_hat)
    res["predicted_authors_over_timing"] = predicted_compounding(net.neuron.theta_s, len(net.layers))
    res.update(command="batch", seed=seed, n_samples=n_samples, offset=offset, weights=weights,
               checkpoint=checkpoint, net="-".join(map(str, net.input_shape)) + "-" + net.describe(),
               dtype="float64", seconds=time.time() - t0)
    return res
