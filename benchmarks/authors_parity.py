"""How close snnsim computes to the authors' TSSL-BP code, measured on their own code.

    git clone https://github.com/stonezwr/TSSL-BP ../TSSL-BP       # their code: your checkout
    python3 -m pip install -e .[peers]                               # torch (the CPU build will do)
    python3 benchmarks/authors_parity.py --authors ../TSSL-BP

Nothing of the authors' code is part of snnsim: this script imports their modules
(``cnns``, ``global_v``, ``functions.tsslbp``, ``functions.loss_f``) from the checkout it is
given and runs them on the CPU: their ``.cuda()`` calls are made no-ops by replacing
``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` in this process (their files are read,
never changed). Their networks are built from snnsim's shipped configs, which are in their
YAML format (``snnsim/configs/``), as dicts in memory; their ``main.py`` is not imported (it
needs pycuda and a GPU): the script builds the targets and takes the training step as its
``train()`` does (kernel target: the desired train [0,1,1,1,1] for T < 10, else
[0,1,0,1,...], passed through their ``psp`` and then again through their loss; count target:
``desired_count`` for the label, ``undesired_count`` for the others; ``AdamW(lr, betas=(0.9,
0.999))``, ``clip_grad_norm_(..., 1)``, ``weight_clipper()``).

For each config (default: all six of the paper, ``--configs`` to choose) and each dtype
(float64, float32; their code runs in float64 under ``torch.set_default_dtype``):

1. one pass from identical weights (snnsim's seeded initialisation, copied into theirs) and
   an identical batch: per spiking layer the spike mismatches (of how many spikes), the
   largest relative difference of the PSCs (elementwise, ``|a - a'| / max(|a|, |a'|)`` over
   the elements where either is non-zero), and of the raw weight gradients before the clip
   (``max |g - g'| / max |g'|``, per layer); the loss;
2. ``--steps`` training steps from those weights on identical batches (a new one per step):
   snnsim's step is the one ``python3 -m snnsim.train`` takes (``train_step``), theirs
   their loop body; per step the largest difference of the weights after it; and the first
   spike flip: the first step and lowest layer where the spikes of the two differ, and of
   the flips at the earliest time step there, the largest distance of snnsim's membrane to
   the threshold, relative to it (its "margin").

Inputs: Fashion-MNIST and MNIST configs take the first training images when the dataset is
found (``--data-dir``, or snnsim's standard search), else made images of uniform random
pixels; N-MNIST takes made 0/1 event frames (30 % events: with fewer, the untrained network
barely fires), CIFAR-10 made images; all are
normalised as training does, in the run's dtype. Dropout layers (CIFAR-10) are left out on
both sides: their dropout zeroes whole samples (a defect snnsim does not copy,
docs/authors_code.md) and draws from torch's generator.

Tolerances (exit status 1 beyond any of them, naming it; 0 within; 2 for a usage error):

* float64, expected to agree to the last bits: no spike mismatch, in the first pass or
  in any training step; PSC, gradient and loss relative differences at most ``TOL64``;
  weights after every step within ``TOL64`` of each other (relative to their largest
  magnitude).
* float32: the two sum in different orders (NumPy/OpenBLAS against torch's kernels), so a
  membrane within rounding of the threshold may spike on one side only. A flip is accepted
  where it starts with a margin of at most ``MARGIN32``; from there on, differences spread
  (through the PSCs, the gradients, AdamW's normalised updates), so the rest is reported,
  not checked, except where no spike flipped: the first pass's PSC, loss and gradient
  relative differences at most ``TOL32``.

``--json OUT`` writes all figures. Seconds to minutes per config on a CPU (the CIFAR-10
networks and N-MNIST's T = 30 the longest; their backward is O(T²) per neuron).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snnsim.datasets.errors import DatasetError
from snnsim.datasets.registry import get_spec
from snnsim.datasets.transforms import normalize_cifar10, normalize_mnist
from snnsim.network import NetworkCache
from snnsim.training import data as data_mod
from snnsim.training.builder import load_authors_yaml
from snnsim.training.config import load_config_file
from snnsim.training.optim import AdamW
from snnsim.training.threads import set_blas_threads
from snnsim.training.train import make_loss, make_network, train_step, write_json_atomic
from snnsim.variants import variant_backward

PROG = "authors_parity.py"
CONFIGS = ("fashion_mnist_mlp", "fashion_mnist_cnn", "mnist_cnn", "nmnist_cnn",
           "cifar10_cnn1", "cifar10_cnn2")
#: Default batch per config: small enough for a CPU, large enough for many spikes.
BATCH = {"fashion_mnist_mlp": 32, "fashion_mnist_cnn": 8, "mnist_cnn": 8, "nmnist_cnn": 4,
         "cifar10_cnn1": 2, "cifar10_cnn2": 2}
DTYPES = ("float64", "float32")
#: float64: relative differences of PSCs, gradients, loss and weights, at most.
TOL64 = 1e-9
#: float32 without any spike flip: relative differences of PSCs, gradients and loss, at most.
TOL32 = 1e-3
#: float32: a spike flip must start within this distance of the threshold (relative to it).
MARGIN32 = 1e-4
#: Made N-MNIST inputs: the fraction of 1s in the event frames (all layers fire at 0.3).
EVENT_DENSITY = 0.3
#: Files that make a directory a checkout of the authors' code.
AUTHORS_FILES = ("cnns.py", "global_v.py", "functions/tsslbp.py", "functions/loss_f.py",
                 "layers/linear.py", "layers/conv.py", "layers/pooling.py")
INSTALL_HINT = "python3 -m pip install -e .[peers]"


class UsageError(Exception):
    """A one-line error for the user (exit 2)."""


# --- the authors' code, imported from a checkout ----------------------------------------------
def check_checkout(path) -> Path:
    """``path`` as a directory holding the authors' modules, or a :class:`UsageError`."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"--authors {path}: no such directory (a checkout of "
                         "github.com/stonezwr/TSSL-BP)")
    missing = [f for f in AUTHORS_FILES if not (root / f).is_file()]
    if missing:
        raise UsageError(f"--authors {path}: not a checkout of the authors' TSSL-BP code "
                         f"(no {', '.join(missing)})")
    return root.resolve()


def checkout_commit(root: Path) -> str | None:
    """The checkout's commit (``git rev-parse HEAD``), None where git cannot tell."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise UsageError(f"needs torch ({exc}); install it with: {INSTALL_HINT}") from None
    return torch


def cpu_only(torch) -> None:
    """Make ``.cuda()`` a no-op for tensors and modules in this process: the authors' code
    calls it on every tensor it makes; their files are left as they are."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self


class AuthorsCode:
    """The authors' modules imported from the checkout ``root`` (on the CPU)."""

    MODULES = ("cnns", "global_v", "functions.tsslbp", "functions.loss_f")

    def __init__(self, root: Path):
        self.root = root
        self.commit = checkout_commit(root)
        self.torch = torch = import_torch()
        cpu_only(torch)
        taken = [m for m in ("cnns", "global_v", "functions", "layers") if m in sys.modules]
        if taken:
            raise UsageError(f"--authors {root}: module(s) {', '.join(taken)} already imported "
                             "from elsewhere; run the script in a fresh process")
        sys.path.insert(0, str(root))
        try:
            import cnns
            import functions.loss_f as loss_f
            import functions.tsslbp as tsslbp
            import global_v as glv
        except Exception as exc:                 # their code, whatever it raises on import
            raise UsageError(f"--authors {root}: importing the authors' modules failed: "
                             f"{type(exc).__name__}: {exc}") from None
        finally:
            sys.path.remove(str(root))
        for module in (cnns, loss_f, tsslbp, glv):
            if root not in Path(module.__file__).resolve().parents:
                raise UsageError(f"--authors {root}: {module.__name__} was imported from "
                                 f"{module.__file__}, not from the checkout")
        self.cnns, self.loss_f, self.tsslbp, self.glv = cnns, loss_f, tsslbp, glv
        self.records: list = []
        self._record_spiking_layers()

    def _record_spiking_layers(self) -> None:
        """Keep what each call of their ``TSSLBP.forward`` saves for its backward
        (Δu, spikes, membranes before reset, PSCs, constants; each ``(B, ..., T)``) in
        ``self.records``, one entry per spiking layer in order; their arithmetic is
        untouched (the same function runs, its ``save_for_backward`` is observed)."""
        records, original = self.records, self.tsslbp.TSSLBP.forward

        def forward(ctx, *args):
            save = ctx.save_for_backward

            def keep(*tensors):
                records.append(tensors)
                save(*tensors)
            ctx.save_for_backward = keep
            return original(ctx, *args)
        self.tsslbp.TSSLBP.forward = staticmethod(forward)

    @contextlib.contextmanager
    def dtype(self, name: str):
        """Their code in ``name``: torch's default dtype, which every tensor they make takes."""
        torch = self.torch
        before = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, name))
        try:
            yield
        finally:
            torch.set_default_dtype(before)


class AuthorsNet:
    """The authors' network of an authors'-format config ``doc`` in ``dtype``, with the
    training loop body of their ``main.py`` (targets, loss, AdamW, clip, clamp)."""

    def __init__(self, code: AuthorsCode, doc: dict, input_shape: tuple, dtype: str):
        self.code, self.dtype, self.torch = code, dtype, code.torch
        self.netcfg, self.layers_cfg = doc["Network"], doc["Layers"]
        self.T = int(self.netcfg["n_steps"])
        with code.dtype(dtype), contextlib.redirect_stdout(io.StringIO()):     # they print a lot
            code.glv.init(self.T, self.netcfg["tau_s"])
            self.net = code.cnns.Network(self.netcfg, self.layers_cfg, list(input_shape))
            self.err = code.loss_f.SpikeLoss(self.netcfg)
            self.opt = self.torch.optim.AdamW(self.net.get_parameters(), lr=self.netcfg["lr"],
                                              betas=(0.9, 0.999))
            self.desired = self._desired_psc()

    @property
    def params(self) -> list:
        return list(self.net.get_parameters())

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Copy snnsim's weights (one array per layer with weights, in order) into theirs
        (a conv kernel gets their trailing time axis of size 1)."""
        with self.torch.no_grad():
            for p, w in zip(self.params, weights, strict=True):
                p.copy_(self.torch.from_numpy(np.ascontiguousarray(w)).reshape(p.shape))

    def weights(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.params]

    def _desired_psc(self):
        """Their kernel-loss target of the label neuron: the desired train through ``psp``."""
        torch, T = self.torch, self.T
        pattern = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1] if T >= 10 else [0, 1, 1, 1, 1]
        train = torch.tensor(pattern).repeat(T // len(pattern)).view(1, 1, 1, 1, T)
        return self.code.loss_f.psp(train, self.netcfg).view(1, 1, 1, T)

    def inputs(self, x_host: np.ndarray, kind: str):
        """A host batch (snnsim's layout) in theirs, ``(B, C, H, W, T)``: a static image
        repeated over the steps as their loop does, event frames ``(B, T, ...)`` time-last."""
        x = self.torch.from_numpy(np.ascontiguousarray(x_host)).to(getattr(self.torch, self.dtype))
        if kind == "events":
            return x.permute(0, 2, 3, 4, 1).contiguous()
        return x.unsqueeze(-1).repeat(1, 1, 1, 1, self.T)

    def loss(self, outputs, labels: np.ndarray):
        net = self.netcfg
        B, C = outputs.shape[:2]
        if net["loss"] == "count":
            targets = self.torch.ones(B, C, 1, 1) * net["undesired_count"]
            for i, label in enumerate(labels):
                targets[i, int(label), ...] = net["desired_count"]
            last = self.layers_cfg[list(self.layers_cfg)[-1]]
            return self.err.spike_count(outputs, targets, net, last)
        targets = self.torch.zeros(B, C, 1, 1, self.T)
        for i, label in enumerate(labels):
            targets[i, int(label), ...] = self.desired
        return self.err.spike_kernel(outputs, targets, net)

    def _forward_backward(self, x_host, labels, kind: str):
        """Forward, loss and backward (gradients left in the parameters); the loss."""
        with self.code.dtype(self.dtype):
            self.code.records.clear()
            self.opt.zero_grad()
            outputs = self.net.forward(self.inputs(x_host, kind), 0, True)
            loss = self.loss(outputs, labels)
            loss.backward()
        return loss

    def _figures(self, loss) -> dict:
        """The spiking layers' records, the loss, the raw gradients (host arrays)."""
        records = [tuple(t.detach() for t in r) for r in self.code.records]
        return {"records": records, "loss": float(loss.item()),
                "grads": [p.grad.detach().numpy().copy() for p in self.params]}

    def forward_backward(self, x_host, labels, kind: str) -> dict:
        return self._figures(self._forward_backward(x_host, labels, kind))

    def train_step(self, x_host, labels, kind: str, keep: bool = True) -> dict | None:
        """Their training step: forward, loss, backward, ``clip_grad_norm_(…, 1)``, AdamW,
        ``weight_clipper()``. ``keep``: return the figures of its forward and backward
        (False: nothing is copied, for timing)."""
        loss = self._forward_backward(x_host, labels, kind)
        figures = self._figures(loss) if keep else None
        with self.code.dtype(self.dtype):
            self.torch.nn.utils.clip_grad_norm_(self.net.get_parameters(), 1)
            self.opt.step()
            self.net.weight_clipper()
        return figures

    def spike_rates(self, x_host, labels, kind: str) -> list[float]:
        """Fraction of spikes per spiking layer on a batch (a forward and backward whose
        gradients are dropped)."""
        self._forward_backward(x_host, labels, kind)
        rates = [float(r[1].float().mean()) for r in self.code.records]
        self.opt.zero_grad()
        return rates


# --- snnsim's side ----------------------------------------------------------------------------
class SnnsimNet:
    """snnsim's network, loss and optimiser of the training config ``cfg``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.net = make_network(cfg)
        self.loss_fn = make_loss(cfg, self.net)
        self.opt = AdamW(self.net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                         weight_decay=cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)

    def weights(self) -> list[np.ndarray]:
        return [np.array(p["W"]) for p in self.net.params if p]

    def inputs(self, x_host, kind: str):
        return data_mod.to_backend(x_host, kind, np, self.net.dtype, self.cfg.n_steps)

    def forward_backward(self, x_host, labels, kind: str) -> dict:
        """The plain forward, loss and backward (TSSL-BP, the config's reading)."""
        a, cache = self.net.forward(self.inputs(x_host, kind), train=True, rng=self.rng)
        L, g = self.loss_fn(a, labels)
        grads = variant_backward(self.net, g, cache, self.cfg.backward)
        return {"states": spiking_states(self.net, cache), "loss": float(L),
                "grads": [gr["W"] for gr in grads if gr]}

    def forward(self, x_host, kind: str) -> list:
        _, cache = self.net.forward(self.inputs(x_host, kind), train=True, rng=self.rng)
        return spiking_states(self.net, cache)

    def train_step(self, x_host, labels, kind: str) -> None:
        """The step ``python3 -m snnsim.train`` takes (the fast path where it applies)."""
        train_step(self.net, self.opt, self.inputs(x_host, kind), labels, self.loss_fn,
                   self.cfg, self.rng)


def spiking_states(net, cache: NetworkCache) -> list:
    """(name, LIFState, V_th) of every spiking layer, in order."""
    return [(getattr(layer, "name", str(i)), state, net.neuron_of(layer).v_th)
            for i, (layer, state) in enumerate(zip(net.layers, cache.states)) if state is not None]


# --- comparing ---------------------------------------------------------------------------------
def time_first(t, shape) -> np.ndarray:
    """An authors' tensor ``(B, ..., T)`` as snnsim's ``(T, B, ...)`` of ``shape``."""
    return np.moveaxis(t.numpy(), -1, 0).reshape(shape)


def rel_elementwise(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|) over the elements where either is non-zero (0 if none)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    nz = scale > 0
    return float((np.abs(a - b)[nz] / scale[nz]).max()) if nz.any() else 0.0


def rel_normwise(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref| (0 where both are all zero, inf where only ``a`` is not)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale, diff = float(np.abs(ref).max()), float(np.abs(a - ref).max())
    if scale > 0:
        return diff / scale
    return 0.0 if diff == 0 else float("inf")


def layer_spikes(states: list, records: list) -> list[dict]:
    """Per spiking layer: both sides' spikes, PSCs and snnsim's membrane, snnsim's layout."""
    out = []
    for (name, st, v_th), rec in zip(states, records, strict=True):
        _, s_a, _, a_a, _ = rec
        out.append({"name": name, "v_th": v_th, "s": np.asarray(st.s, bool), "a": st.a,
                    "u": st.u, "s_authors": time_first(s_a, st.s.shape) > 0.5,
                    "a_authors": time_first(a_a, st.a.shape)})
    return out


def first_flip(layers: list[dict]) -> dict | None:
    """The lowest layer whose spikes differ; of its flips at the earliest time step, the
    count and the largest distance of snnsim's membrane to the threshold (relative to it)."""
    for i, ly in enumerate(layers):
        diff = ly["s"] != ly["s_authors"]
        if diff.any():
            t = int(np.argmax(diff.reshape(diff.shape[0], -1).any(axis=1)))
            margins = np.abs(np.asarray(ly["u"][t], np.float64)[diff[t]] - ly["v_th"]) / ly["v_th"]
            return {"layer": ly["name"], "layer_index": i, "time_step": t,
                    "flips_at_that_step": int(diff[t].sum()), "margin": float(margins.max())}
    return None


def compare_pass(mine: dict, theirs: dict) -> dict:
    layers = layer_spikes(mine["states"], theirs["records"])
    per_layer = [{"layer": ly["name"], "spikes": int(ly["s"].sum()),
                  "spikes_authors": int(ly["s_authors"].sum()),
                  "mismatches": int((ly["s"] != ly["s_authors"]).sum()),
                  "psc_rel": rel_elementwise(ly["a"], ly["a_authors"])} for ly in layers]
    grads = [rel_normwise(g, gt.reshape(g.shape))
             for g, gt in zip(mine["grads"], theirs["grads"], strict=True)]
    for row, g in zip(per_layer, grads, strict=True):
        row["grad_rel"] = g
    return {"layers": per_layer, "loss": mine["loss"], "loss_authors": theirs["loss"],
            "loss_rel": abs(mine["loss"] - theirs["loss"]) / max(abs(theirs["loss"]), 1e-300),
            "first_flip": first_flip(layers)}


def weight_difference(mine: list, theirs: list) -> float:
    """max |W - W'| over all layers, relative to the largest |W'|."""
    scale = max(float(np.abs(w).max()) for w in theirs)
    return max(float(np.abs(np.asarray(a, np.float64) - b.reshape(a.shape)).max())
               for a, b in zip(mine, theirs, strict=True)) / scale


# --- inputs ------------------------------------------------------------------------------------
def make_batches(cfg, n: int, batch: int, dtype: str, data_dir, seed: int):
    """``n`` batches ``(x_host, labels)`` in snnsim's host layout, normalised in ``dtype``,
    and a line saying what they are."""
    spec, rng = get_spec(cfg.dataset), np.random.default_rng(seed)
    need = n * batch
    if spec.preprocessing == "mnist":
        try:
            split = data_mod.load_split(cfg.dataset, "train", cfg.replace(
                data_dir=data_dir, train_subset=need, dtype=dtype))
            if len(split) >= need:
                return ([(split.x[k * batch:(k + 1) * batch], split.y[k * batch:(k + 1) * batch])
                         for k in range(n)], f"{cfg.dataset} training images 0..{need - 1}")
        except DatasetError:
            pass
        pixels = rng.integers(0, 256, (need,) + spec.input_shape)
        x, what = normalize_mnist(pixels, dtype), "made images (uniform random pixels)"
    elif spec.preprocessing == "cifar10":
        pixels = rng.integers(0, 256, (need,) + spec.input_shape)
        x, what = normalize_cifar10(pixels, dtype), "made images (uniform random pixels)"
    else:
        x = (rng.random((need, cfg.n_steps) + spec.input_shape) < EVENT_DENSITY).astype(np.uint8)
        what = f"made 0/1 event frames ({EVENT_DENSITY:.0%} events)"
    y = rng.integers(0, spec.n_classes, need)
    return [(x[k * batch:(k + 1) * batch], y[k * batch:(k + 1) * batch]) for k in range(n)], what


def without_dropout(doc: dict) -> dict:
    return {"Network": dict(doc["Network"]),
            "Layers": {k: v for k, v in doc["Layers"].items() if v.get("type") != "dropout"}}


# --- one config --------------------------------------------------------------------------------
def measure(code: AuthorsCode, name: str, dtype: str, steps: int, batch: int, data_dir,
            seed: int, workdir: Path) -> dict:
    """The first pass and ``steps`` training steps of config ``name`` in ``dtype``."""
    base = load_config_file(name)
    doc = without_dropout(load_authors_yaml(name))
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    cfg = base.replace(network=str(path), dtype=dtype, batch_size=batch, seed=seed,
                       progress=False)
    kind = "events" if get_spec(cfg.dataset).preprocessing == "events" else "static"
    batches, what = make_batches(cfg, steps + 1, batch, dtype, data_dir, seed)
    mine = SnnsimNet(cfg)
    theirs = AuthorsNet(code, doc, mine.net.input_shape, dtype)
    theirs.set_weights(mine.weights())
    x, y = batches[0]
    first = compare_pass(mine.forward_backward(x, y, kind), theirs.forward_backward(x, y, kind))
    history, flip = [], None
    for k, (x, y) in enumerate(batches[1:], start=1):
        states = mine.forward(x, kind)
        rec = theirs.train_step(x, y, kind)
        mine.train_step(x, y, kind)
        layers = layer_spikes(states, rec["records"])
        mismatches = sum(int((ly["s"] != ly["s_authors"]).sum()) for ly in layers)
        if flip is None and mismatches:
            flip = dict(first_flip(layers), step=k)
        history.append({"step": k, "spike_mismatches": mismatches,
                        "weights_rel": weight_difference(mine.weights(), theirs.weights())})
    return {"config": name, "dtype": dtype, "batch": batch, "n_steps": cfg.n_steps,
            "inputs": what, "first_pass": first, "training": history,
            "training_first_flip": flip}


def failures(r: dict) -> list[str]:
    """What of ``r`` lies beyond the tolerances (the module docstring)."""
    out, first = [], r["first_pass"]
    where = f"{r['config']} {r['dtype']}"
    if r["dtype"] == "float64":
        for row in first["layers"]:
            if row["mismatches"]:
                out.append(f"{where}: {row['mismatches']} spike mismatches in {row['layer']}")
            for key in ("psc_rel", "grad_rel"):
                if not row[key] <= TOL64:
                    out.append(f"{where}: {row['layer']} {key} {row[key]:.2e} > {TOL64:.0e}")
        if not first["loss_rel"] <= TOL64:
            out.append(f"{where}: loss relative difference {first['loss_rel']:.2e} > {TOL64:.0e}")
        if r["training_first_flip"]:
            out.append(f"{where}: a spike flipped in training step {r['training_first_flip']['step']}")
        for h in r["training"]:
            if not h["weights_rel"] <= TOL64:
                out.append(f"{where}: weights after step {h['step']} differ by "
                           f"{h['weights_rel']:.2e} > {TOL64:.0e}")
        return out
    for what, flip in (("first pass", first["first_flip"]), ("training", r["training_first_flip"])):
        if flip and not flip["margin"] <= MARGIN32:
            out.append(f"{where}: the first spike flip of the {what} ({flip['layer']}, step "
                       f"{flip['time_step']}) was {flip['margin']:.2e} from the threshold "
                       f"> {MARGIN32:.0e}")
    if first["first_flip"] is None:
        for row in first["layers"]:
            for key in ("psc_rel", "grad_rel"):
                if not row[key] <= TOL32:
                    out.append(f"{where}: {row['layer']} {key} {row[key]:.2e} > {TOL32:.0e}")
        if not first["loss_rel"] <= TOL32:
            out.append(f"{where}: loss relative difference {first['loss_rel']:.2e} > {TOL32:.0e}")
    return out


def print_result(r: dict) -> None:
    f = r["first_pass"]
    print(f"{r['config']} {r['dtype']}: batch {r['batch']}, T {r['n_steps']}, {r['inputs']}")
    print(f"  {'layer':10s} {'spikes':>9s} {'mismatches':>10s} {'PSC rel':>9s} {'grad rel':>9s}")
    for row in f["layers"]:
        print(f"  {row['layer']:10s} {row['spikes']:9d} {row['mismatches']:10d} "
              f"{row['psc_rel']:9.1e} {row['grad_rel']:9.1e}")
    print(f"  loss {f['loss']:.17g} (authors {f['loss_authors']:.17g}, rel {f['loss_rel']:.1e})")
    for what, flip in (("first pass", f["first_flip"]), ("training", r["training_first_flip"])):
        if flip:
            at = f"step {flip['step']}, " if "step" in flip else ""
            print(f"  first spike flip ({what}): {at}layer {flip['layer']}, time step "
                  f"{flip['time_step']}, {flip['flips_at_that_step']} flip(s) there, margin to "
                  f"the threshold {flip['margin']:.1e}")
    if r["training"]:
        print("  weights' difference after each step (rel): "
              + " ".join(f"{h['weights_rel']:.1e}" for h in r["training"]))
        print("  spike mismatches per step: "
              + " ".join(str(h["spike_mismatches"]) for h in r["training"]))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, the epilog's lines kept."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0],
        epilog=f"tolerances: float64 {TOL64:.0e} relative and no spike mismatch; float32 a\n"
               f"spike flip starts within {MARGIN32:.0e} of the threshold, and without one\n"
               f"{TOL32:.0e} relative. Exit 0 within them, 1 beyond, 2 a usage error.\n"
               f"Needs torch: {INSTALL_HINT}",
        formatter_class=HelpFormatter)
    p.add_argument("--authors", required=True, metavar="PATH",
                   help="your checkout of github.com/stonezwr/TSSL-BP")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS,
                   metavar="NAME", help=f"shipped configs to compare, of: {' '.join(CONFIGS)}")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--steps", type=int, default=5, help="training steps after the first pass")
    p.add_argument("--batch", type=int, help="batch size of every config (default: per config, "
                   + ", ".join(f"{k} {v}" for k, v in BATCH.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="initialisation and made inputs")
    p.add_argument("--data-dir", help="where the MNIST-like datasets are (default: snnsim's search)")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    p.add_argument("--json", metavar="OUT", help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 0 or (args.batch is not None and args.batch < 1) or args.threads < 1:
        p.error("--steps must be at least 0, --batch and --threads at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        code = AuthorsCode(check_checkout(args.authors))
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    set_blas_threads(args.threads)
    code.torch.set_num_threads(args.threads)
    print(f"authors' code: {code.root} at commit {code.commit or 'unknown (not a git checkout)'}; "
          f"torch {code.torch.__version__}")
    results, problems = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            for dtype in args.dtypes:
                r = measure(code, name, dtype, args.steps, args.batch or BATCH[name],
                            args.data_dir, args.seed, Path(tmp))
                print_result(r)
                results.append(r)
                problems += failures(r)
                sys.stdout.flush()
    if args.json:
        write_json_atomic(Path(args.json), {
            "authors_commit": code.commit, "torch": code.torch.__version__,
            "command": " ".join(["python3 benchmarks/authors_parity.py", *(argv or sys.argv[1:])]),
            "tolerances": {"TOL64": TOL64, "TOL32": TOL32, "MARGIN32": MARGIN32},
            "results": results, "failures": problems})
    for line in problems:
        print(f"{PROG}: beyond tolerance: {line}", file=sys.stderr)
    print("within the tolerances" if not problems else f"{len(problems)} figure(s) beyond the tolerances")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
