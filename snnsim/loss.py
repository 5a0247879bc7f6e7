"""Losses, targets and decoding at the output layer (docs/model.md).

Each loss returns ``(L, dL_da)`` with ``dL_da`` = g^L = ∂L/∂a^L, ``(T, B, C)``.
"""
from __future__ import annotations

from .backend import array_module, device
from .neuron import psc_filter

DESIRED_TRAINS = ("paper", "authors")


def desired_spike_train(n_steps: int, convention: str = "authors"):
    """The desired spike train d of the label neuron, a list of 0/1 of length T.

    ``paper`` (S 2.4): [0,1,0,1,1] for T = 5; ``authors`` (their code): [0,1,1,1,1]
    for T = 5. For any other T both use the alternating [0,1,0,1,...] that the
    authors' code uses for T ≥ 10.
    """
    if convention not in DESIRED_TRAINS:
        raise ValueError(f"desired-train convention must be one of {DESIRED_TRAINS}, got {convention!r}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if n_steps == 5:
        return [0, 1, 0, 1, 1] if convention == "paper" else [0, 1, 1, 1, 1]
    return [t % 2 for t in range(n_steps)]


def kernel_target(labels, n_classes: int, n_steps: int, theta_s: float,
                  convention: str = "authors", filter_passes: int = 2, dtype=None):
    """â: the desired PSC of every output neuron, ``(T, B, C)``   (7).

    The label neuron's target is κ * d (paper: ``filter_passes=1``) or
    κ * (κ * d) (authors' code: ``filter_passes=2``); the others' target is 0.
    ``labels`` (B,) integer array on the target backend.
    """
    xp, dev = array_module(labels), device(labels)
    dtype = dtype or xp.float32
    if filter_passes not in (1, 2):
        raise ValueError(f"filter_passes must be 1 or 2, got {filter_passes}")
    d = xp.asarray(desired_spike_train(n_steps, convention), dtype=dtype, device=dev)[:, None]   # (T, 1)
    for _ in range(filter_passes):
        d = psc_filter(d, theta_s)
    classes = xp.arange(n_classes, dtype=labels.dtype, device=dev)
    onehot = xp.astype(labels[:, None] == classes[None, :], dtype)                  # (B, C)
    return d[:, :, None] * onehot[None, :, :]                                       # (T, B, C)


def kernel_loss(a, a_hat):
    """Kernel (van Rossum style) loss (7): L = ½ Σ_{t,b,i} (a_i[t] - â_i[t])², summed.

    Returns ``(L, g)`` with g = ∂L/∂a = a - â   (S 10).
    """
    diff = a - a_hat
    return 0.5 * float(array_module(diff).sum(diff * diff)), diff


def count_loss(a, labels, desired_count: float, undesired_count: float):
    """Count loss (authors' code, N-MNIST): c_i = Σ_t a_i[t],
    e_i = (c_i - c*_i)/T with c* = ``desired_count`` for the label neuron and
    ``undesired_count`` for the others, e_i set to 0 where the label neuron is
    above its target or another neuron below its; g_i[t] = e_i; L = ½ T Σ e_i².
    """
    xp = array_module(a)
    T, _, C = a.shape
    c = xp.sum(a, axis=0)                                                           # (B, C)
    is_label = labels[:, None] == xp.arange(C, dtype=labels.dtype, device=device(a))[None, :]
    target = xp.where(is_label, xp.asarray(desired_count, dtype=a.dtype, device=device(a)),
                      xp.asarray(undesired_count, dtype=a.dtype, device=device(a)))
    e = (c - target) / T
    satisfied = xp.where(is_label, c > target, c < target)
    e = xp.where(satisfied, 0.0, e)
    g = xp.asarray(xp.broadcast_to(e[None, ...], a.shape), copy=True)
    return 0.5 * T * float(xp.sum(e * e)), g


def predict(a):
    """Predicted class: argmax_i Σ_t a_i[t]; ties go to the lowest index. ``(B,)``."""
    xp = array_module(a)
    return xp.argmax(xp.sum(a, axis=0), axis=-1)


def n_correct(a, labels) -> int:
    """How many samples :func:`predict` gets right."""
    xp = array_module(a, labels)
    return int(xp.sum(xp.astype(predict(a) == labels, xp.int64)))
