"""One forward/backward pass laid open: ``python3 -m snnsim.inspection``.

Runs a checkpoint's network (or a freshly initialised one) on a few samples,
computes the loss and the TSSL-BP backward pass, and writes every intermediate
to HDF5 (layout: ``docs/inspect_format.md``), so that a reader can compare it
with a derivation by hand or with another implementation:

- per spiking layer and step: x, u, Δu, s, a (forward (2)-(6)); g = ∂L/∂a;
  δ = ∂L/∂u (9); ∂L/∂W (8); which elements took the warm-up surrogate (S 2.3);
  the explicit φ(t_k, t_m) (14), split into its terms φ<1>, φ<2>, leak and
  warm-up, for up to ``--max-neurons`` neurons (φ is (B, N, T, T));
- per non-spiking layer (pooling, dropout): its input and output PSC and g;
- the input, its PSC a^0, labels, output, target, loss, config.

    python3 -m snnsim.inspection --network 784-400-400-10 --samples 3 --out runs/inspect.h5
    python3 -m snnsim.inspection runs/latest/best.h5 --indices 7 --reading timing

Everything is computed with the engine's own functions: the backward is
:meth:`snnsim.network.Network.backward_pass`, the walk of ``Network.backward``
that keeps g, δ and ∂L/∂θ at every layer; φ comes from ``phi_matrix``. The pass
runs in inference mode (dropout off).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ..backend import array_module, device, to_numpy
from ..commandline import ArgumentParser, command, prog_name
from ..h5header import layer_name, write_header
from ..loss import kernel_target, predict
from ..neuron import LIFState
from ..params import GradientParams
from ..tsslbp import phi_matrix, warmup_mask
from .record import add_source_arguments, network_from_args, parse_indices, source_of

FORMAT_NAME = "snnsim-inspect"
FORMAT_VERSION = 1
#: Default number of neurons per layer whose φ matrices are written.
DEFAULT_MAX_NEURONS = 64
PHI_TERMS = ("phi_1", "phi_2", "leak", "warmup")
PHI_SELECT = ("first", "active")


def _np(a):
    """A contiguous host copy (broadcast views are materialised)."""
    return np.ascontiguousarray(to_numpy(a))


def select_neurons(s_flat, max_neurons: int, how: str = "first") -> np.ndarray:
    """Flat indices of the neurons whose φ is written.

    ``first``: 0..max_neurons-1. ``active``: the ``max_neurons`` neurons with the
    most spikes over all samples and steps (ties to the lowest index), sorted.
    ``s_flat`` is ``(T, B, M)`` (host).
    """
    m = s_flat.shape[-1]
    n = min(max_neurons, m)
    if how == "first":
        return np.arange(n)
    if how == "active":
        total = s_flat.reshape(-1, m).sum(axis=0, dtype=np.int64)
        order = np.lexsort((np.arange(m), -total))
        return np.sort(order[:n])
    raise ValueError(f"phi selection must be one of {PHI_SELECT}, got {how!r}")


def state_subset(state: LIFState, neurons) -> LIFState:
    """The state of a few neurons: every field ``(T, B, ...)`` flattened to
    ``(T, B, M)`` and indexed with ``neurons`` (flat indices)."""
    def pick(a):
        xp = array_module(a)
        flat = xp.reshape(a, (a.shape[0], a.shape[1], -1))
        return xp.take(flat, xp.asarray(neurons, device=device(a)), axis=-1)
    return LIFState(*(pick(f) for f in state))


def inspect_pass(net, x_in, labels, loss_fn, grad: GradientParams | None = None,
                 max_neurons: int = DEFAULT_MAX_NEURONS, phi_select: str = "first",
                 target=None) -> dict:
    """Forward, loss and backward of ``net`` on ``x_in`` ``(T, B, ...)``, every
    intermediate kept. ``loss_fn(a_out, labels) -> (L, g)``; ``grad`` the
    gradient reading (default the network's); ``target`` (optional) the desired
    output PSC, stored as is.

    Returns a nested dict ready for :func:`write_inspection`: ``"attrs"``,
    ``"data"`` (top-level arrays) and ``"layers"`` (one dict per layer, with
    ``"attrs"``, ``"data"`` and for spiking layers ``"phi"``). Arrays are NumPy.
    """
    grad = grad or net.grad
    xp = net.xp
    a_out, cache = net.forward(x_in, train=False)                       # (T, B, C)
    L, dL_da_out = loss_fn(a_out, labels)
    static = cache.input_gain is not None

    # the PSC entering every layer: a^0, then each layer's output
    a_ins = [cache.input_psc]
    for i, layer in enumerate(net.layers[:-1]):
        state = cache.states[i]
        if state is not None:
            a_ins.append(state.a)
        else:                                   # non-spiking: deterministic in inference mode
            a_ins.append(layer.forward(a_ins[i], train=False)[0])

    walk = net.backward_pass(dL_da_out, cache, grad)                   # the engine's own walk
    layers = []
    for i, layer in enumerate(net.layers):
        state, neuron = cache.states[i], net.neuron_of(layer)
        rec = {"attrs": {"kind": type(layer).__name__, "describe": layer.describe(), "index": i,
                         "spiking": bool(layer.spiking),
                         "in_shape": list(net.shapes[i]), "out_shape": list(net.shapes[i + 1])},
               "data": {"a_in": _np(a_ins[i]), "g": _np(walk.g[i])}}
        for name, p in layer.params.items():
            rec["data"][name] = _np(p)
        if layer.spiking:
            rec["attrs"].update(neuron.to_dict())
            warm = warmup_mask(state.a, neuron.theta_s) if grad.warmup else xp.zeros(
                state.a.shape, dtype=xp.bool, device=device(state.a))
            rec["data"].update({
                "x": _np(state.x), "u": _np(state.u), "du": _np(state.du),
                "s": _np(state.s).astype(np.uint8), "a": _np(state.a),
                "counts": _np(xp.sum(xp.astype(state.s, xp.int32), axis=0)),
                "delta": _np(walk.deltas[i]), "warmup_mask": _np(warm).astype(np.uint8)})
            if max_neurons > 0:
                s_flat = rec["data"]["s"].reshape(state.s.shape[0], state.s.shape[1], -1)
                neurons = select_neurons(s_flat, max_neurons, phi_select)
                parts = phi_matrix(state_subset(state, neurons), neuron, grad, terms=True)
                phi = {name: _np(parts[name]) for name in PHI_TERMS}        # (B, n, T, T)
                phi["total"] = sum(phi[name] for name in PHI_TERMS)
                phi["neurons"] = neurons.astype(np.int64)
                rec["phi"] = phi
        else:
            rec["data"]["a_out"] = _np(a_ins[i + 1] if i + 1 < len(net.layers) else a_out)
        for name, d in walk.grads[i].items():
            rec["data"][f"dL_d{name}"] = _np(d)
        layers.append(rec)

    data = {"input": _np(x_in), "input_psc": _np(cache.input_psc), "output": _np(a_out),
            "g_out": _np(dL_da_out), "labels": _np(labels).astype(np.int64),
            "predictions": _np(predict(a_out)).astype(np.int64)}
    if static:
        data["input_gain"] = _np(cache.input_gain)
    if target is not None:
        data["target"] = _np(target)
    attrs = {"loss": float(L), "n_steps": int(a_out.shape[0]), "batch": int(a_out.shape[1]),
             "static_input": bool(static), "train_mode": False,
             "neuron": json.dumps(net.neuron.to_dict()), "grad": json.dumps(grad.to_dict()),
             "network": net.describe(), "max_neurons": int(max_neurons), "phi_select": phi_select,
             "dtype": str(net.dtype),
             "layer_names": json.dumps([layer_name(i) for i in range(len(net.layers))])}
    return {"attrs": attrs, "data": data, "layers": layers}


def write_inspection(path, result: dict, extra_attrs: dict | None = None) -> Path:
    """Write :func:`inspect_pass`'s result to HDF5 atomically (built in memory, then
    written under a temporary name and renamed: a full disk is one OSError naming
    ``path``; layout: ``docs/inspect_format.md``)."""
    from ..training.checkpoint import atomic_write_h5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(f):
        write_header(f, FORMAT_NAME, FORMAT_VERSION)
        for k, v in {**result["attrs"], **(extra_attrs or {})}.items():
            f.attrs[k] = v
        for k, v in result["data"].items():
            f.create_dataset(k, data=v)
        lg = f.create_group("layers")
        for i, rec in enumerate(result["layers"]):
            g = lg.create_group(layer_name(i))
            for k, v in rec["attrs"].items():
                g.attrs[k] = np.asarray(v, np.int64) if isinstance(v, list) else v
            for k, v in rec["data"].items():
                g.create_dataset(k, data=v)
            if "phi" in rec:
                pg = g.create_group("phi")
                pg.attrs["index_order"] = "sample, neuron, k (effect step), m (cause step)"
                for k, v in rec["phi"].items():
                    pg.create_dataset(k, data=v)

    return atomic_write_h5(path, fill)


# =============================================================================
# Command line
# =============================================================================
DESCRIPTION = """\
Run one forward/backward pass of TSSL-BP on a few samples and write every
intermediate to HDF5 (layout: docs/inspect_format.md): per layer and step
x, u, du, s, a; g = dL/da; delta = dL/du; dL/dW; the warm-up mask; the
explicit phi matrices (phi_1, phi_2, leak, warmup; (B, N, T, T), for at most
--max-neurons neurons per layer); the input, labels, output, target and loss.

The source options (SOURCE or --network, --samples N or --indices LIST, ...)
are those of python3 -m snnsim.record and python3 -m snnsim.plots; without a
source, a fresh 784-400-400-10 network. Examples:
  python3 -m snnsim.inspection --network 784-400-400-10 --samples 3
  python3 -m snnsim.inspection runs/latest/best.h5 --indices 7 --reading timing"""

#: Samples of one inspection unless --samples or --indices say otherwise.
DEFAULT_INSPECT_SAMPLES = 3
DEFAULT_INSPECT_NETWORK = "784-400-400-10"

#: The older spelling: ``--samples 0,1,2`` were dataset indices (now ``--indices``).
parse_samples = parse_indices


def _bound(text: str):
    return None if str(text).strip().lower() in ("none", "null", "inf") else float(text)


def layer_roles(layers) -> list[str]:
    """What each layer is called in everything snnsim prints and draws (as the plots
    name them, :func:`snnsim.analysis.record.layer_role`): the last spiking layer
    ``output``, the others ``conv k`` or ``hidden k``; a layer without neurons by its
    kind (``pool``, ``dropout``). The files keep their groups' names (``layer_00``)."""
    spiking = [i for i, layer in enumerate(layers) if layer.spiking]
    roles, counts = [], {}
    for i, layer in enumerate(layers):
        if not layer.spiking:
            roles.append(type(layer).__name__.lower().removesuffix("2d"))
        elif i == spiking[-1]:
            roles.append("output")
        else:
            kind = "conv" if type(layer).__name__.startswith("Conv") else "hidden"
            counts[kind] = counts.get(kind, 0) + 1
            roles.append(f"{kind} {counts[kind]}")
    return roles


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.inspection"), description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(p, DEFAULT_INSPECT_SAMPLES, batch_size=False)
    p.add_argument("--reading", choices=("authors", "timing"), default=None,
                   help="gradient reading (default: the checkpoint's or preset's)")
    p.add_argument("--sensitivity-bound", default=None, metavar="B",
                   help="bound on |dt/du| (a number, or none; default: the config's)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="warm-up surrogate on/off (default: the config's)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute in this precision (default: the checkpoint's, or float32)")
    p.add_argument("--max-neurons", type=int, default=DEFAULT_MAX_NEURONS, metavar="N",
                   help=f"phi matrices of at most N neurons per layer (default "
                        f"{DEFAULT_MAX_NEURONS}; 0: none)")
    p.add_argument("--phi-neurons", choices=PHI_SELECT, default="first",
                   help="which neurons: the first N, or the N that spike most (default first)")
    p.add_argument("--out", default="runs/inspect.h5", help="output file (default runs/inspect.h5)")
    return p


def _older_samples(argv):
    """``--samples 0,1,2`` / ``--samples 0-3`` (indices, the older meaning) -> ``--indices``,
    with a note; a plain number after ``--samples`` is a count, as in record and plots."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, tok in enumerate(argv):
        value = tok.split("=", 1)[1] if tok.startswith("--samples=") else (
            argv[i + 1] if tok == "--samples" and i + 1 < len(argv) else None)
        if value is not None and ("," in value or "-" in value.strip("-")):
            print(f"note: --samples {value} reads as dataset indices; write --indices {value} "
                  "(--samples N is a count, the first N samples)", file=sys.stderr)
            argv[i:i + (1 if "=" in tok else 2)] = ["--indices", value]
            break
    return argv


@command("inspection")
def main(argv=None) -> int:
    from ..training import data as data_mod
    from ..training.train import make_loss
    from .record import load_samples
    args = make_parser().parse_args(_older_samples(argv))
    indices = args.indices or list(range(args.samples))
    if not source_of(args) and not args.network:
        args.network = DEFAULT_INSPECT_NETWORK
    net, cfg, source = network_from_args(args, dtype=args.dtype)
    changes = {}
    if args.reading is not None:
        changes["reading"] = args.reading
    if args.sensitivity_bound is not None:
        changes["sensitivity_bound"] = _bound(args.sensitivity_bound)
    if args.warmup is not None:
        changes["warmup"] = args.warmup
    grad = dataclasses.replace(net.grad, **changes)
    if changes or cfg.backward != "tsslbp":     # the pass is TSSL-BP's, whatever trained the
        # weights (a checkpoint of --backward=surrogate takes --reading timing too)
        cfg = cfg.replace(source="command line", backward="tsslbp", **changes)

    split, sample_index = load_samples(cfg, args.split, indices=indices, data_dir=args.data_dir)
    x_host, y_host = split.host_batch(np.arange(len(split)))
    x_in = data_mod.to_backend(x_host, split.kind, net.xp, net.dtype, cfg.n_steps)
    labels = net.xp.asarray(y_host)
    loss_fn = make_loss(cfg, net)
    target = None
    if cfg.loss == "kernel":
        res = cfg.resolved()
        target = kernel_target(labels, net.shapes[-1][0], cfg.n_steps, net.neuron.theta_s,
                               res["desired_train"], res["target_filter_passes"], dtype=net.dtype)
    result = inspect_pass(net, x_in, labels, loss_fn, grad, args.max_neurons, args.phi_neurons,
                          target)
    result["data"]["sample_index"] = np.asarray(sample_index, np.int64)
    write_inspection(args.out, result, {"source": source, "dataset": cfg.dataset,
                                        "split": args.split, "loss_kind": cfg.loss,
                                        "config": json.dumps(cfg.to_dict())})
    print(f"{source}: {len(indices)} {cfg.dataset} {args.split} samples {indices}, T = "
          f"{cfg.n_steps}, loss {result['attrs']['loss']:.6g}, gradient {grad} -> {args.out}")
    for i, (rec, role) in enumerate(zip(result["layers"], layer_roles(net.layers))):
        d = rec["data"]
        label = f"{role} ({rec['attrs']['describe']})"
        if rec["attrs"]["spiking"]:
            print(f"  {label:<24} {int(d['s'].sum())} "
                  f"spikes, warm-up on {100.0 * d['warmup_mask'].mean():.1f} % of (t, b, n), "
                  f"|dL/dW| = {float(np.linalg.norm(d['dL_dW'])) if 'dL_dW' in d else 0:.4g}"
                  f"  [group {layer_name(i)}]")
        else:
            print(f"  {label:<24} no neurons  [group {layer_name(i)}]")
    return 0


__all__ = ["DEFAULT_INSPECT_SAMPLES", "DEFAULT_MAX_NEURONS", "FORMAT_NAME", "FORMAT_VERSION",
           "PHI_TERMS", "inspect_pass", "main", "make_parser", "parse_samples", "select_neurons",
           "state_subset", "write_inspection"]

if __name__ == "__main__":
    sys.exit(main())
