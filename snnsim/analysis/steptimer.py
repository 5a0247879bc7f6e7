"""The benchmark's timed training step (:class:`StepTimer`) on a random batch of an
experiment's shape (:func:`make_batch`): what ``python3 -m snnsim.bench``
(:mod:`snnsim.analysis.bench`) and the floor and busy-machine figures
(:mod:`snnsim.analysis.floor`) both time. A module of its own so that neither of those
two imports the other for it."""
from __future__ import annotations

import time

import numpy as np

from ..backend import PeakMemory, synchronize
from ..training.config import TrainConfig
from ..training.optim import AdamW
from ..training.train import make_loss, make_network, train_step
from ..tsslbp import LIF_EXPLICIT


def make_batch(cfg: TrainConfig, net, rng: np.random.Generator):
    """A random input batch of the experiment's shape on the network's backend and device:
    a static image repeated over T (as training feeds images) or 0/1 event frames."""
    xp, dev, B, T = net.xp, net.device, cfg.batch_size, cfg.n_steps
    if cfg.dataset == "nmnist":
        x = xp.asarray(rng.random((T, B) + net.input_shape) < 0.05, dtype=net.dtype, device=dev)
    else:
        from ..network import repeat_static
        x = repeat_static(xp.asarray(rng.standard_normal((B,) + net.input_shape), dtype=net.dtype,
                                     device=dev), T)
    labels = xp.asarray(rng.integers(0, 10, size=B), device=dev)
    return x, labels


class StepTimer:
    """A network, optimiser, loss and batch of ``cfg``, and :func:`train_step` on them."""

    def __init__(self, cfg: TrainConfig, explicit: bool = False):
        self.cfg = cfg
        self.net = make_network(cfg)
        self.opt = AdamW(self.net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                         weight_decay=cfg.weight_decay)
        self.loss_fn = make_loss(cfg, self.net)
        self.rng = np.random.default_rng(cfg.seed)
        self.x, self.labels = make_batch(cfg, self.net, self.rng)
        self.model = LIF_EXPLICIT if explicit else None
        self.fast = True                          # False: the plain path (snnsim.fast)

    def step(self) -> float:
        """Seconds of one synchronised training step."""
        synchronize(self.net.xp)
        t0 = time.perf_counter()
        train_step(self.net, self.opt, self.x, self.labels, self.loss_fn, self.cfg, self.rng,
                   model=self.model, fast=self.fast)
        synchronize(self.net.xp)
        return time.perf_counter() - t0

    def peak_bytes(self) -> int:
        """Peak bytes of one step: what it allocates, plus the fast path's workspace, which
        it allocated at the first step and holds from step to step (the step needs it as
        much as what it allocates anew; without it the fast step would look ~free)."""
        with PeakMemory(self.net.xp) as mem:
            self.step()
        return int(mem.peak_bytes) + self.held_bytes()

    def held_bytes(self) -> int:
        """Bytes of the fast path's workspace where this timer's step takes the fast path
        (:func:`snnsim.fast.fast_path_applies`), else 0."""
        from ..fast import fast_path_applies
        fast = getattr(self.net, "fast_path", None)
        if not (self.fast and fast is not None
                and fast_path_applies(self.net, self.cfg.backward, self.model)):
            return 0
        return int(fast.ws.nbytes)


__all__ = ["StepTimer", "make_batch", "make_network"]
