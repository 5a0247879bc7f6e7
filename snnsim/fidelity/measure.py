"""Measuring a backward variant against the exact gradient of the event-shift model.

Per layer, for a network and a batch (:func:`measure`):

- the weight gradient under every backward variant (:data:`snnsim.variants.VARIANTS`);
- finite differences of the event-shift loss along K random unit directions v_k per
  layer (float64, central): p_fd[k] ≈ ⟨∇L_ES, v_k⟩;
- for each variant: cosine with the exact ``timing`` gradient (and with the authors' and
  the surrogate gradient), cosine between its projections ⟨g, v_k⟩ and p_fd (an estimate
  of the cosine with ∇L_ES that uses no code of the backward pass, standard error
  ≈ 1/√K), and the norm ratio to ``timing``;
- what a step along each variant's direction does to the loss of the discrete network
  and of the event-shift model (:func:`descent_losses`);
- the ladder from the exact gradient to the authors' code, one factor per rung
  (:func:`ladder`), and the predicted compounding of the sign per layer.

The network and its batch may live on any backend of the engine, on any device: the
passes run there, in the array API standard, and the comparisons run on the host, on
float64 NumPy copies of the gradients made in one place (:func:`flat_grads`). The
random directions are drawn on the host and copied to the network's device explicitly
(:func:`fd_projections`).
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import array_module, device, to_numpy
from ..eventshift import event_shift_forward
from ..loss import kernel_loss
from ..network import Network
from ..params import log1m
from ..tsslbp import warmup_mask
from ..variants import VARIANTS, variant_backward

#: Central-difference step along a unit direction in weight space (float64).
FD_STEP = 1e-6
#: Random unit directions per layer for the finite-difference projections.
N_DIRECTIONS = 32

#: Variants of the random-network report (the authors', the exact, the surrogate, and context).
RANDOM_VARIANTS = ("authors", "authors-raw", "timing", "timing-bw", "timing-flipped", "surrogate")
#: Variants of the real-data measurements.
BATCH_VARIANTS = tuple(VARIANTS)
#: The ladder from the exact gradient to the authors' code, one factor per rung.
LADDER = ("timing", "timing-flipped", "authors-raw", "authors-nowarmup", "authors")


# --- parameters as flat per-layer vectors ------------------------------------------
def param_entries(net: Network) -> list[tuple[int, str]]:
    """(layer index, parameter name) of every parameter array, bottom up."""
    return [(i, key) for i, p in enumerate(net.params) for key in sorted(p)]


def entry_label(net: Network, i: int, key: str) -> str:
    return f"layer {i + 1} {key} {tuple(net.params[i][key].shape)}"


def flat_grads(net: Network, grads: list[dict]) -> list[np.ndarray]:
    """The gradient arrays of :func:`param_entries`, as float64 NumPy vectors."""
    return [to_numpy(grads[i][key]).astype(np.float64).ravel() for i, key in param_entries(net)]


def ratio(num: float, den: float) -> float:
    """num / den; NaN when den is zero (a layer that did not fire has a zero gradient),
    without NumPy's divide-by-zero warning."""
    return float(num) / float(den) if den != 0 else float("nan")


def descent_direction(xp, grad, w):
    """-grad scaled to the norm of ``w``; zero where the gradient is zero (a silent layer),
    instead of NaN and a divide warning."""
    norm = float(xp.linalg.vector_norm(grad))
    return -grad / norm * float(xp.linalg.vector_norm(w)) if norm > 0 else xp.zeros_like(grad)


def cosine(p, q) -> float:
    """⟨p, q⟩ / (‖p‖ ‖q‖); NaN if either is zero."""
    npq = float(np.linalg.norm(p) * np.linalg.norm(q))
    return float(np.dot(p, q) / npq) if npq > 0 else float("nan")


# --- the event-shift model and its finite differences --------------------------------
def event_shift_loss(net: Network, x_in, a_hat, nominal_cache) -> float:
    """L_ES(W) = kernel loss (7) of the event-shift model around ``nominal_cache``."""
    return kernel_loss(event_shift_forward(net, x_in, nominal_cache), a_hat)[0]


def random_directions(net: Network, n_dirs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per parameter entry, ``(n_dirs, n_params)`` Gaussian directions of unit norm (float64)."""
    dirs = []
    for i, key in param_entries(net):
        v = rng.standard_normal((n_dirs, net.params[i][key].size))
        dirs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return dirs


def fd_projections(net: Network, x_in, a_hat, nominal_cache, directions, step: float = FD_STEP):
    """p[e][k] = (L_ES(W + h v_k) - L_ES(W - h v_k)) / 2h for every entry e and direction k.

    Central differences of the event-shift loss (a smooth function of the weights,
    docs/gradient.md); the weights are restored exactly afterwards. ``directions``
    are host arrays (:func:`random_directions`); each v_k is copied to W's device.
    """
    out = []
    for (i, key), dirs in zip(param_entries(net), directions):
        W = net.params[i][key]
        xp = array_module(W)
        W0 = xp.asarray(W, copy=True)
        proj = np.empty(len(dirs))
        for k, v in enumerate(dirs):
            dv = xp.asarray(v.reshape(W.shape), dtype=W.dtype, device=device(W))
            W[...] = W0 + step * dv
            lp = event_shift_loss(net, x_in, a_hat, nominal_cache)
            W[...] = W0 - step * dv
            lm = event_shift_loss(net, x_in, a_hat, nominal_cache)
            proj[k] = (lp - lm) / (2 * step)
        W[...] = W0
        out.append(proj)
    return out


# --- one measurement --------------------------------------------------------------
def layer_activity(net: Network, cache) -> list[dict]:
    """Per parameter entry: spike rate, fraction of elements under warm-up, fraction of
    (sample, neuron) pairs that never fire (their exact δ is zero)."""
    out = []
    for i, _ in param_entries(net):
        state = cache.states[i]
        if state is None:
            out.append({})
            continue
        s = to_numpy(state.s)
        theta_s = net.neuron_of(net.layers[i]).theta_s
        out.append({"spike_rate": float(s.mean()),
                    "warmup_fraction": float(to_numpy(warmup_mask(state.a, theta_s)).mean()),
                    "silent_fraction": float((~s.any(axis=0)).mean())})
    return out


def measure(net: Network, x_in, a_hat, variants=BATCH_VARIANTS, n_dirs: int = N_DIRECTIONS,
            rng: np.random.Generator | None = None, step: float = FD_STEP) -> dict:
    """All fidelity numbers for one network and batch (JSON-ready dict).

    Per parameter entry and variant: ``cos_timing`` (full cosine with the exact
    gradient), ``cos_authors``, ``cos_surrogate`` (when those variants are measured),
    ``cos_fd`` (cosine of the projections on K random directions with the FD
    projections of the event-shift loss), ``norm_ratio`` (‖g‖/‖g_timing‖), ``norm``.
    Per entry also ``fd_timing_rel_err`` = ‖P g_timing - p_fd‖/‖p_fd‖.
    ``net`` should be float64 for the finite differences to mean anything.
    """
    rng = rng or np.random.default_rng(0)
    variants = list(dict.fromkeys(("timing",) + tuple(variants)))
    a, cache = net.forward(x_in)
    loss, g = kernel_loss(a, a_hat)
    grads = {name: flat_grads(net, variant_backward(net, g, cache, name)) for name in variants}
    directions = random_directions(net, n_dirs, rng) if n_dirs > 0 else None
    fd = fd_projections(net, x_in, a_hat, cache, directions, step) if n_dirs > 0 else None
    activity = layer_activity(net, cache)
    layers = []
    for e, (i, key) in enumerate(param_entries(net)):
        ref = grads["timing"][e]
        row = {"name": entry_label(net, i, key), "n_params": int(ref.size), **activity[e], "variants": {}}
        if fd is not None:
            p_timing = directions[e] @ ref
            row["fd_timing_rel_err"] = ratio(np.linalg.norm(p_timing - fd[e]), np.linalg.norm(fd[e]))
        for name in variants:
            gv = grads[name][e]
            m = {"cos_timing": cosine(gv, ref), "norm": float(np.linalg.norm(gv)),
                 "norm_ratio": ratio(np.linalg.norm(gv), np.linalg.norm(ref))}
            for other in ("authors", "surrogate"):
                if other in grads:
                    m[f"cos_{other}"] = cosine(gv, grads[other][e])
            if fd is not None:
                m["cos_fd"] = cosine(directions[e] @ gv, fd[e])
            row["variants"][name] = m
        layers.append(row)
    return {"loss": float(loss), "n_directions": int(n_dirs), "fd_step": step, "layers": layers}


#: Relative step sizes η of :func:`descent_losses`: each layer moves by η ‖W^l‖.
DESCENT_STEPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: Variants whose descent directions are probed on real data.
DESCENT_VARIANTS = ("authors", "authors-raw", "authors-flipped", "timing", "timing-flipped",
                    "timing-bw-flipped", "surrogate")


def descent_losses(net: Network, x_in, a_hat, variants=DESCENT_VARIANTS, steps=DESCENT_STEPS) -> dict:
    """What each variant's update does to the real loss: the kernel loss of the discrete
    network and of the event-shift model (around the nominal run) at
    W^l - η ‖W^l‖ g^l/‖g^l‖ for every layer at once, for η in ``steps``.

    A direction that descends the discrete network's loss is one gradient descent
    can use; the event-shift loss is the smooth model whose exact gradient is ``timing``.
    Returns {"steps": [0, *steps], variant: {"discrete": [...], "event_shift": [...]}}
    (non-finite event-shift values, where the linearised spike times blow up, as None).
    """
    xp = net.xp
    a, cache = net.forward(x_in)
    loss0, g = kernel_loss(a, a_hat)
    entries = param_entries(net)
    W0 = [xp.asarray(net.params[i][k], copy=True) for i, k in entries]
    out = {"steps": [0.0, *steps]}
    for name in variants:
        grads = variant_backward(net, g, cache, name)
        dirs = [descent_direction(xp, grads[i][k], w) for (i, k), w in zip(entries, W0)]
        disc, es = [loss0], [loss0]
        for eta in steps:
            for (i, k), w, d in zip(entries, W0, dirs):
                net.params[i][k][...] = w + eta * d
            disc.append(kernel_loss(net.forward(x_in)[0], a_hat)[0])
            with np.errstate(all="ignore"):
                le = kernel_loss(event_shift_forward(net, x_in, cache), a_hat)[0]
            es.append(le if math.isfinite(le) else None)
        for (i, k), w in zip(entries, W0):
            net.params[i][k][...] = w
        out[name] = {"discrete": disc, "event_shift": es}
    return out


def ladder(net: Network, x_in, a_hat, names=LADDER) -> list[dict]:
    """Cosines with ``timing`` and with ``authors`` per entry, along :data:`LADDER`."""
    a, cache = net.forward(x_in)
    _, g = kernel_loss(a, a_hat)
    grads = {n: flat_grads(net, variant_backward(net, g, cache, n))
             for n in dict.fromkeys(names + ("timing", "authors"))}
    return [{"variant": n, "doc": VARIANTS[n].doc,
             "cos_timing": [cosine(gv, gt) for gv, gt in zip(grads[n], grads["timing"])],
             "cos_authors": [cosine(gv, ga) for gv, ga in zip(grads[n], grads["authors"])],
             "norm_ratio": [ratio(np.linalg.norm(gv), np.linalg.norm(gt))
                            for gv, gt in zip(grads[n], grads["timing"])]}
            for n in names]


def predicted_compounding(theta_s: float, n_layers: int) -> list[float]:
    """Π_{j=l}^{L} c_authors/c_timing = (1/ln(1-θs))^{L-l+1} per layer l = 1..L (bottom up):
    the factor between the authors' and the exact gradient when both lack warm-up and
    bound and their reset terms agree."""
    r = 1.0 / log1m(theta_s)
    return [r ** (n_layers - l) for l in range(n_layers)]
