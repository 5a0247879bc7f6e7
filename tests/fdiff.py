"""The tests' finite-difference toolkit: central differences, Richardson
extrapolation, directions over a network's weights and the rounding bounds the
tolerances are built from. Every gradient check of the suite uses these.

In float64, a central difference (f(x + h) - f(x - h)) / 2h with h = 1e-6 has a
truncation error c h² (c ~ f'''/6) and a rounding error ≲ ε |f| / h. Where the
curvature is large (the event-shift model near small Δu) the h² term is removed
by Richardson extrapolation of the differences at h and h/2, (4 D(h/2) - D(h)) / 3.
"""
from __future__ import annotations

import numpy as np

#: Central-difference step and relative tolerance of the layer FD tests (float64).
H_FD = 1e-6
RTOL_FD = 1e-7
#: Safety factor over the rounding bound of a central difference.
ROUNDING_SAFETY = 100.0
EPS64 = float(np.finfo(np.float64).eps)


def central(f, x0=0.0, h: float = H_FD):
    """(f(x0 + h) - f(x0 - h)) / 2h."""
    return (f(x0 + h) - f(x0 - h)) / (2 * h)


def richardson(f, h: float = H_FD):
    """(4 D(h/2) - D(h)) / 3 of the central differences D at 0 of ``f``: the h² term
    cancels. Returns ``(extrapolated, D(h), D(h/2))``."""
    d_h = central(f, 0.0, h)
    d_h2 = central(f, 0.0, h / 2)
    return (4.0 * d_h2 - d_h) / 3.0, d_h, d_h2


def fd_atol(v, y) -> float:
    """Absolute tolerance of a central difference of f = Σ v ⊙ y: the rounding
    error of each evaluation is at most ε Σ|v ⊙ y|, divided by the step h."""
    return ROUNDING_SAFETY * EPS64 * float(np.abs(v * y).sum()) / H_FD


def rounding(f_value, h: float = H_FD) -> float:
    """100 × the rounding error of a central difference of a function of size |f|: ε |f| / h."""
    return ROUNDING_SAFETY * EPS64 * max(abs(f_value), 1.0) / h


def random_direction(rng: np.random.Generator, params: list[dict]) -> list[dict]:
    """A standard-normal direction over every parameter of ``params`` (one dict per layer)."""
    return [{k: rng.standard_normal(v.shape) for k, v in p.items()} for p in params]


def directional(grads: list[dict], direction: list[dict]) -> float:
    """⟨∇, U⟩: the derivative the gradients ``grads`` give along ``direction``."""
    return sum(float((g[k] * d[k]).sum()) for g, d in zip(grads, direction) for k in g)


def weights_along(net, direction: list[dict]):
    """``move(eps)``: sets every layer's parameters to W + eps U (fresh arrays; the
    original arrays are kept and ``move(0)`` puts them back)."""
    base = [dict(layer.params) for layer in net.layers]

    def move(eps: float) -> None:
        for layer, w, d in zip(net.layers, base, direction):
            layer.params = {k: w[k] + eps * d[k] for k in w} if eps else dict(w)
    return move


def fd_along(net, direction: list[dict], f, h: float = H_FD) -> float:
    """The central difference of ``f()`` (a function of the network's current
    weights) along ``direction``; the weights are put back afterwards."""
    move = weights_along(net, direction)

    def at(eps):
        move(eps)
        return f()

    try:
        return central(at, 0.0, h)
    finally:
        move(0.0)
