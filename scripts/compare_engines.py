"""Time the NumPy training step of two snnsim checkouts in one run, alternating.

    git archive <commit> | tar -x -C /tmp/snnsim-old       # the engine to compare against
    OPENBLAS_NUM_THREADS=1 python3 scripts/compare_engines.py --old /tmp/snnsim-old --new .

Each round runs, in one long-lived subprocess per checkout and in alternating order, the training step of
:func:`snnsim.analysis.bench.time_steps` (forward, loss, TSSL-BP backward, clip, AdamW,
clamp on a random batch; the shipped experiment's config) for the old and the new
checkout, and records each one's median seconds per step. A shared machine's load
drifts: alternation puts both under the same drift, and the figure reported is the
median over rounds of new/old, with the per-round ratios beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

#: A worker: one process per checkout, kept for the whole run; each line on stdin asks for
#: one round (warm-up, timed steps of the step of snnsim.analysis.bench), answered by the
#: median CPU time of the process per step (with OPENBLAS_NUM_THREADS=1: the step's own
#: work, less disturbed by other processes than wall time; waits are not counted).
WORKER = """
import json, statistics, sys, time
import numpy as np
from snnsim.analysis.bench import experiment_config, make_batch, step
from snnsim.training.optim import AdamW
from snnsim.training.train import make_loss, make_network
cfg = experiment_config(sys.argv[1], "numpy")
net = make_network(cfg)
opt = AdamW(net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
loss_fn = make_loss(cfg, net)
rng = np.random.default_rng(cfg.seed)
x, labels = make_batch(cfg, net, rng)
batches, warmup = int(sys.argv[2]), int(sys.argv[3])
for line in sys.stdin:
    cpu = []
    for i in range(warmup + batches):
        t0 = time.process_time()
        step(net, opt, loss_fn, cfg, x, labels, rng, False)
        if i >= warmup:
            cpu.append(time.process_time() - t0)
    print(json.dumps(statistics.median(cpu)), flush=True)
"""


class Worker:
    def __init__(self, path: str, experiment: str, batches: int, warmup: int):
        env = {**os.environ, "PYTHONPATH": os.path.abspath(path)}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, experiment, str(batches), str(warmup)],
                                     cwd=os.path.abspath(path), env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def round(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return float(json.loads(line))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 scripts/compare_engines.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="checkout of the engine to compare against")
    p.add_argument("--new", default=".", help="checkout under test (default: this one)")
    p.add_argument("--experiments", default="mlp", help="comma-separated: mlp,cnn (default mlp)")
    p.add_argument("--rounds", type=int, default=20, help="alternating rounds (default 20)")
    p.add_argument("--batches", type=int, default=20, help="timed steps per round and checkout")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    args = p.parse_args(argv)
    for path in (args.old, args.new):
        if not os.path.isdir(os.path.join(path, "snnsim")):
            p.error(f"{path} holds no snnsim package")
    for experiment in args.experiments.split(","):
        old, new, ratios = [], [], []
        workers = {name: Worker(path, experiment, args.batches, args.warmup)
                   for name, path in (("old", args.old), ("new", args.new))}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            t = {name: workers[name].round() for name in order}
            old.append(t["old"])
            new.append(t["new"])
            ratios.append(t["new"] / t["old"])
            print(f"{experiment} round {r + 1}/{args.rounds}: old {t['old'] * 1e3:.2f} ms, "
                  f"new {t['new'] * 1e3:.2f} ms, new/old {ratios[-1]:.3f}", flush=True)
        for worker in workers.values():
            worker.close()
        print(f"{experiment}: median old {statistics.median(old) * 1e3:.2f} ms, "
              f"new {statistics.median(new) * 1e3:.2f} ms per step; "
              f"median new/old {statistics.median(ratios):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f}, {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
