"""Cost of the divergence guard (snnsim.training.guard.check_step) per training step.

    OPENBLAS_NUM_THREADS=1 python3 benchmarks/guard_cost.py            # the paper's MLP
    OPENBLAS_NUM_THREADS=1 python3 benchmarks/guard_cost.py --network 784-24-10 --batch-size 10

Times ``train_step`` alone and ``train_step`` followed by ``check_step`` (the loss and
one ``isfinite(W).all()`` per parameter array), alternating the two in the same
process on the same random batch so that both see the same machine load, and prints
the medians and their ratio, with the check timed alone as well. Not a test: the
figures depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnsim.training.config import TrainConfig
from snnsim.training.guard import check_step
from snnsim.training.optim import AdamW
from snnsim.training.train import make_loss, make_network, train_step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--network", default="784-400-400-10")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=40, help="timed steps of each kind")
    args = p.parse_args(argv)
    cfg = TrainConfig(network=args.network, batch_size=args.batch_size, dtype=args.dtype)
    net = make_network(cfg)
    opt = AdamW(net.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, net)
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, (cfg.n_steps, args.batch_size, 1, 28, 28)).astype(cfg.dtype)
    labels = rng.integers(0, 10, args.batch_size)
    for _ in range(3):                                                     # warm-up
        train_step(net, opt, x, labels, loss_fn, cfg, rng)
    plain, guarded, check = [], [], []
    for i in range(args.steps):
        t0 = time.perf_counter()
        L, _ = train_step(net, opt, x, labels, loss_fn, cfg, rng)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        L, _ = train_step(net, opt, x, labels, loss_fn, cfg, rng)
        t1 = time.perf_counter()
        check_step(net, opt, L, 1, i)
        t2 = time.perf_counter()
        guarded.append(t2 - t0)
        check.append(t2 - t1)
    m_plain, m_guarded, m_check = (statistics.median(v) for v in (plain, guarded, check))
    print(f"network {args.network}, batch {args.batch_size}, T {cfg.n_steps}, {args.dtype}, "
          f"{args.steps} steps each")
    print(f"  train_step               median {m_plain * 1e3:8.3f} ms")
    print(f"  train_step + check_step  median {m_guarded * 1e3:8.3f} ms  "
          f"(ratio {m_guarded / m_plain:.4f})")
    print(f"  check_step alone         median {m_check * 1e3:8.3f} ms  "
          f"({100 * m_check / m_plain:.2f} % of a step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
