"""Training-step speed of snnsim against snnTorch, a generic SNN library, on the CPU.

    python3 -m pip install -e .[peers]                       # torch and snntorch
    python3 benchmarks/peers.py                              # 1 thread each, about a minute
    python3 benchmarks/peers.py --threads 2 --json peers.json
    python3 benchmarks/peers.py --authors ../TSSL-BP          # and the authors' code's step

Times ONE training step of the paper's Fashion-MNIST MLP (784-400-400-10, T = 5, batch
50, float32, AdamW) in each contender, on the same random batch, and prints the median
step of each and its ratio to snnsim's step. The contenders take turns round by round
(the order rotates from round to round) so that all see the same machine load; in each
round each runs a block of ``--block`` timed steps after ``--settle`` seconds of untimed
ones. The settling is for two threads: after a switch, the other library's idle worker
threads (OpenBLAS's for snnsim, OpenMP's for torch) keep spinning a while: on 2 cores
they made the first two or three steps after a switch 2-4 times slower, and step-by-step
alternation made the medians of snnsim's and snnTorch's steps 2.5 times slower.
The batch is the one ``python3 -m snnsim.bench`` times (``snnsim.analysis.bench``: a
standard-normal image per sample, repeated over T, random labels). After the race, each
contender's spike fraction per layer on that batch is printed (untimed): all are active.

1. ``snnsim tsslbp``: the step ``python3 -m snnsim.train`` takes, ``train_step`` with the
   default config (TSSL-BP, ``authors`` preset, kernel loss, gradient clip, AdamW, weight
   clamp) on the CPU fast path (the numba kernels where numba is installed);
2. ``snnsim surrogate``: the same ``train_step`` with ``backward="surrogate"``,
   surrogate-gradient BPTT (sigmoid pseudo-derivative, reset detached), NumPy;
3. ``snntorch``: snnTorch's documented way: ``nn.Linear`` layers without bias, each
   followed by ``snntorch.Leaky`` (β = 1 - 1/τm, snnsim's membrane decay; threshold and
   reset mechanism snnsim's; ``surrogate.fast_sigmoid()``, its default slope), a Python
   loop over the T steps, BPTT by autograd (snnTorch's tutorial network). The input is a
   static image (the same at every step), so its product with the first layer's weights
   is taken once, before the loop, as snnsim's step does (the tutorials take it in the
   loop, T times); ``snntorch.functional.mse_count_loss`` on the output spikes (the
   tutorials' rates 0.8 and 0.2), ``torch.optim.AdamW`` (its default implementation) with
   snnsim's hyper-parameters, and the same gradient-norm clip and weight clamp as
   snnsim's step, so that both do the same work after the gradient;
4. ``snntorch compiled``: the same with the network ``torch.compile``-d (its forward and,
   through autograd, its backward; the optimiser step stays eager), torch's documented
   way to speed a model up. Compiling takes about half a minute on a 2-core machine (in
   the warm-up, untimed); ``--no-compile`` leaves it out. TorchScript is not timed: snnTorch
   1.0's ``Leaky`` neither scripts (``torch.jit.script`` fails on its state handling) nor
   traces (``torch.jit.trace`` fails its own sanity check);
5. ``authors``, with ``--authors PATH`` (a checkout of github.com/stonezwr/TSSL-BP): the
   authors' own training step, their modules imported from that checkout and run on the CPU
   as ``benchmarks/authors_parity.py`` runs them (``.cuda()`` made a no-op; nothing of their
   code is in this repository): their network from the same config (784-400-400-10, the
   batch's T), snnsim's initial weights copied in, their forward, kernel loss, their
   backward as written (O(T²) per neuron: a T × T product per step, PyTorch autograd
   around it), ``clip_grad_norm_``, ``torch.optim.AdamW``, the weight clamp. The same
   arithmetic as snnsim's step (``benchmarks/authors_parity.py`` measures how close), so
   the ratio is one of implementations, not of methods.

The neuron models are not the same arithmetic: snnsim's LIF has a first-order synapse (the
next layer sees the post-synaptic current a[t], eq. (2)), snnTorch's ``Leaky`` passes its
spikes straight on; the losses differ (snnsim's van Rossum kernel loss against
``mse_count_loss``) and so do the weight initialisations, hence the spike counts. This is
a speed comparison at equal network size, T, batch, dtype and thread count, not of
identical arithmetic.

Threads: ``--threads N`` sets every BLAS library of the process to N threads
(``threadpoolctl``, as a training run does) and ``torch.set_num_threads(N)``. Not a test:
the figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnsim.analysis.bench import StepTimer
from snnsim.training.builder import load_authors_yaml
from snnsim.training.config import TrainConfig
from snnsim.training.threads import set_blas_threads
from snnsim.training.train import neuron_and_grad, write_json_atomic
from snnsim.version import __version__

NETWORK = "784-400-400-10"
#: snnTorch's tutorial targets for ``mse_count_loss``: the label neuron fires at 80 % of
#: the steps, the others at 20 %.
CORRECT_RATE, INCORRECT_RATE = 0.8, 0.2
INSTALL_HINT = "python3 -m pip install -e .[peers]"


def import_peers():
    """``(torch, snntorch)``, or a one-line error naming the extra, exit 2."""
    try:
        import snntorch
        import torch
    except ImportError as exc:
        print(f"peers.py: needs torch and snntorch ({exc}); install them with: {INSTALL_HINT}",
              file=sys.stderr)
        raise SystemExit(2) from None
    return torch, snntorch


# --- snnsim ------------------------------------------------------------------------------
def snnsim_config(args, backward: str) -> TrainConfig:
    return TrainConfig(network=NETWORK, batch_size=args.batch_size, n_steps=args.n_steps,
                       dtype="float32", backward=backward, progress=False)


# --- snnTorch ----------------------------------------------------------------------------
class SnnTorchStep:
    """One snnTorch training step of the MLP of ``cfg`` on the static image batch ``image``
    (B, 1, 28, 28) NumPy (every time step sees the same image, as snnsim's training feeds
    it); :meth:`step` takes one and returns its seconds."""

    def __init__(self, cfg: TrainConfig, image, labels, compile_forward: bool = False):
        torch, snntorch = import_peers()
        from snntorch import functional as SF
        from snntorch import surrogate

        neuron, _ = neuron_and_grad(cfg)
        sizes = [int(n) for n in cfg.network.split("-")]
        beta = 1.0 - neuron.theta_m                 # u[t] = (1-θm) ū[t-1] + x[t], eq. (4)
        T = cfg.n_steps

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.ModuleList(torch.nn.Linear(n_in, n_out, bias=False)
                                              for n_in, n_out in zip(sizes[:-1], sizes[1:]))
                self.lif = torch.nn.ModuleList(
                    snntorch.Leaky(beta=beta, threshold=neuron.v_th,
                                   reset_mechanism=neuron.reset,
                                   spike_grad=surrogate.fast_sigmoid())
                    for _ in sizes[1:])

            def forward(self, image):                                       # (B, 784)
                mem = [lif.reset_mem() for lif in self.lif]
                cur0 = self.fc[0](image)          # a static input: its product once, as snnsim
                out = []
                for _ in range(T):
                    cur, mem[0] = self.lif[0](cur0, mem[0])
                    for i in range(1, len(self.lif)):
                        cur, mem[i] = self.lif[i](self.fc[i](cur), mem[i])
                    out.append(cur)
                return torch.stack(out)                                     # (T, B, C) spikes

        torch.manual_seed(cfg.seed)
        self.torch, self.cfg, self.net = torch, cfg, Net()
        self.forward = torch.compile(self.net) if compile_forward else self.net
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                     eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.loss_fn = SF.mse_count_loss(correct_rate=CORRECT_RATE,
                                         incorrect_rate=INCORRECT_RATE)
        self.image = torch.from_numpy(np.array(image).reshape(len(image), -1))
        self.labels = torch.from_numpy(np.asarray(labels)).long()

    def step(self) -> float:
        cfg, net = self.cfg, self.net
        t0 = time.perf_counter()
        self.opt.zero_grad()
        loss = self.loss_fn(self.forward(self.image), self.labels)
        loss.backward()
        if cfg.grad_clip:
            self.torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        self.opt.step()
        if cfg.weight_clamp:
            with self.torch.no_grad():
                for p in net.parameters():
                    p.clamp_(-cfg.weight_clamp, cfg.weight_clamp)
        return time.perf_counter() - t0

    def spike_rates(self) -> list[float]:
        """Fraction of spikes per layer on the batch (an untimed forward)."""
        rates = []
        hooks = [lif.register_forward_hook(lambda m, i, o: rates.append(o[0].mean().item()))
                 for lif in self.net.lif]
        with self.torch.no_grad():
            self.net(self.image)
        for h in hooks:
            h.remove()
        n = len(self.net.lif)
        return [float(np.mean(rates[i::n])) for i in range(n)]


def snnsim_spike_rates(timer: StepTimer) -> list[float]:
    """Fraction of spikes per spiking layer on the timer's batch (an untimed forward)."""
    _, cache = timer.net.forward(timer.x, train=True, rng=np.random.default_rng(0))
    return [float(np.mean(s.s)) for s in cache.states if s is not None]


# --- the authors' code ----------------------------------------------------------------------
class AuthorsStep:
    """The authors' training step on their code (:class:`authors_parity.AuthorsNet`), from
    ``timer``'s weights on ``timer``'s batch; :meth:`step` takes one and returns its seconds."""

    def __init__(self, code, timer: StepTimer):
        from authors_parity import AuthorsNet
        doc = load_authors_yaml("fashion_mnist_mlp")                 # 784-400-400-10 = NETWORK
        doc["Network"]["n_steps"] = timer.cfg.n_steps
        self.net = AuthorsNet(code, doc, timer.net.input_shape, "float32")
        self.net.set_weights([np.array(p["W"]) for p in timer.net.params])
        self.image = np.array(timer.x[0])                            # (B, 1, 28, 28)
        self.labels = np.asarray(timer.labels)

    def step(self) -> float:
        t0 = time.perf_counter()
        self.net.train_step(self.image, self.labels, "static", keep=False)
        return time.perf_counter() - t0

    def spike_rates(self) -> list[float]:
        return self.net.spike_rates(self.image, self.labels, "static")


def import_authors(path: str):
    """The authors' modules from the checkout ``path`` (:class:`authors_parity.AuthorsCode`),
    or its one-line error, exit 2."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from authors_parity import AuthorsCode, UsageError, check_checkout
    try:
        return AuthorsCode(check_checkout(path))
    except UsageError as exc:
        print(f"peers.py: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# --- the race ----------------------------------------------------------------------------
def contenders(args, authors=None) -> dict:
    """name -> an object whose ``step()`` takes one training step and returns its seconds;
    ``authors``: the authors' code (:func:`import_authors`), a contender too."""
    tssl = StepTimer(snnsim_config(args, "tsslbp"))
    surr = StepTimer(snnsim_config(args, "surrogate"))
    surr.x, surr.labels = tssl.x, tssl.labels                    # the same batch for all
    image = tssl.x[0]                                            # (B, 1, 28, 28)
    peers = {"snnsim tsslbp": tssl, "snnsim surrogate": surr,
             "snntorch": SnnTorchStep(tssl.cfg, image, tssl.labels)}
    if args.compile:
        peers["snntorch compiled"] = SnnTorchStep(tssl.cfg, image, tssl.labels, True)
    if authors is not None:
        peers["authors"] = AuthorsStep(authors, tssl)
    return peers


def race(peers: dict, rounds: int, block: int, settle_s: float, warmup: int
         ) -> tuple[dict, int]:
    """Seconds of each contender's steps: per round, a block of ``block`` timed steps of each
    contender, the order rotating every round, each block after ``settle_s`` seconds of
    untimed steps. Ctrl-C ends it early and keeps the rounds done."""
    names = list(peers)
    for name in tqdm(names, desc="warm-up", leave=False, file=sys.stderr):
        for _ in range(warmup):
            peers[name].step()
    times = {name: [] for name in names}
    done = 0
    try:
        for r in tqdm(range(rounds), desc="rounds", file=sys.stderr):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                settled = time.perf_counter() + settle_s
                while time.perf_counter() < settled:
                    peers[name].step()
                times[name] += [peers[name].step() for _ in range(block)]
            done += 1
    except KeyboardInterrupt:
        print(f"interrupted after {done} rounds", file=sys.stderr)
    return {name: t[:done * block] for name, t in times.items()}, done


def summary(times: dict, base: str = "snnsim tsslbp") -> dict:
    """Median, quartiles and the ratio of the median to ``base``'s median, per contender."""
    out = {}
    for name, t in times.items():
        q1, med, q3 = statistics.quantiles(t, n=4) if len(t) > 1 else (t[0],) * 3
        out[name] = {"median_ms": 1e3 * med, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3,
                     "ratio_to_snnsim": med / statistics.median(times[base])}
    return out


def previous_runs(path: str) -> list[dict]:
    """The runs already in the JSON file ``path`` (none if it is missing); a file of another
    kind is a one-line error, exit 2, before anything is timed."""
    if not Path(path).exists():
        return []
    try:
        runs = json.loads(Path(path).read_text(encoding="utf-8"))["runs"]
        if isinstance(runs, list):
            return runs
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print(f"peers.py: {path} exists and is not a list of runs of this script; "
          "name another --json file", file=sys.stderr)
    raise SystemExit(2)


def shown_command(argv: list[str]) -> str:
    return " ".join(["python3 benchmarks/peers.py", *argv])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Prints the median step of each contender and its ratio to snnsim's step "
               "(TSSL-BP). Needs torch and snntorch: " + INSTALL_HINT,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=40,
                   help="rounds; each times a block of steps of every contender in turn")
    p.add_argument("--block", type=int, default=10, help="timed steps per contender and round")
    p.add_argument("--settle", type=float, default=0.15, metavar="SECONDS",
                   help="untimed steps for this long before each block (the previous "
                        "library's idle threads may still spin)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps of each contender first")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads of snnsim (threadpoolctl) and torch.set_num_threads")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--n-steps", type=int, default=5, help="T, time steps per sample")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave out snnTorch with torch.compile (saves its half-minute compile)")
    p.add_argument("--authors", metavar="PATH",
                   help="also time the authors' training step, from this checkout of "
                        "github.com/stonezwr/TSSL-BP (their code, on the CPU)")
    p.add_argument("--json", metavar="OUT",
                   help="also add this run's figures to the list of runs in this JSON file "
                        "(created if missing)")
    args = p.parse_args(argv)
    for name in ("rounds", "block", "threads", "batch_size", "n_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.settle < 0:
        p.error("--warmup and --settle must be at least 0")
    runs = previous_runs(args.json) if args.json else []
    authors = import_authors(args.authors) if args.authors else None    # a bad path: first
    torch, snntorch = import_peers()
    set_blas_threads(args.threads)
    torch.set_num_threads(args.threads)
    peers = contenders(args, authors)
    times, done = race(peers, args.rounds, args.block, args.settle, args.warmup)
    if done == 0:
        print("peers.py: interrupted before the first round; no figures", file=sys.stderr)
        return 1
    figs = summary(times)
    for name, peer in peers.items():
        rates = peer.spike_rates() if hasattr(peer, "spike_rates") else snnsim_spike_rates(peer)
        figs[name]["spike_rates"] = rates
    print(f"network {NETWORK}, T {args.n_steps}, batch {args.batch_size}, float32, "
          f"{args.threads} thread(s), {done} rounds of {args.block} steps; snnsim "
          f"{__version__}, torch {torch.__version__}, snntorch {snntorch.__version__}"
          + (f", authors' code at {authors.commit or 'an unknown commit'}" if authors else ""))
    for name, f in figs.items():
        print(f"  {name:18s} median {f['median_ms']:8.2f} ms  (quartiles {f['q1_ms']:.2f}-"
              f"{f['q3_ms']:.2f})  ratio to snnsim {f['ratio_to_snnsim']:.2f}  spike rates "
              + " ".join(f"{r:.3f}" for r in f["spike_rates"]))
    if args.json:
        record = {"command": shown_command(argv), "rounds": done, "block": args.block,
                  "settle_s": args.settle, "threads": args.threads,
                  "network": NETWORK, "n_steps": args.n_steps, "batch_size": args.batch_size,
                  "dtype": "float32", "snnsim": __version__, "torch": torch.__version__,
                  "snntorch": snntorch.__version__, "numpy": np.__version__,
                  "authors_commit": authors.commit if authors else None,
                  "python": platform.python_version(), "cpus": os.cpu_count(),
                  "load_average": os.getloadavg(), "contenders": figs}
        write_json_atomic(Path(args.json), {"runs": [*runs, record]})
        print(f"added the run to {args.json} ({len(runs) + 1} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
