"""Forward pass of the LIF neuron and its synapse, eqs. (2)-(6) of the paper.

Arrays are time-first: ``(T, B, ...)`` with T = ``n_steps``. A neuron step is
split into its equations — charge (:func:`membrane_update`), fire
(:func:`fire`), reset (:func:`reset_membrane`), synapse (:func:`psc_update`) —
and :func:`lif_forward` runs them for every step, keeping every per-step
quantity (x, u, Δu, s, a) for the backward pass and for inspection.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .backend import array_module, device
from .params import NeuronParams


class LIFState(NamedTuple):
    """Everything one spiking layer computed, each ``(T, B, ...)``.

    x : input current W a^{l-1}[t];
    u : membrane after integration, before reset;
    du : Δu[t] = u[t] - ū[t-1];
    s : spikes (bool);
    a : PSC.
    """

    x: object
    u: object
    du: object
    s: object
    a: object


class NeuronModel(NamedTuple):
    """A neuron model for :class:`~snnsim.network.Network`: two hooks with
    matching arguments, the layer's parameters last but one::

        forward(x, neuron) -> (a, state)         currents (T, B, ...) -> PSC, state
        backward(g, state, neuron, grad) -> δ    g = ∂L/∂a -> δ = ∂L/∂u (= ∂L/∂x)

    ``state`` is whatever ``forward`` keeps for ``backward`` (LIF: a
    :class:`LIFState`); ``neuron`` the layer's :class:`NeuronParams`; ``grad`` the
    :class:`~snnsim.params.GradientParams` of the pass. LIF with TSSL-BP is
    :data:`snnsim.tsslbp.LIF`; a second model is one module defining its pair.
    """

    forward: Callable
    backward: Callable


def membrane_update(u_reset_prev, x_t, theta_m: float):
    """Charge, eq. (4): Δu[t] = -θm ū[t-1] + x[t];  u[t] = ū[t-1] + Δu[t].

    Returns ``(u[t], Δu[t])``.
    """
    du_t = x_t - theta_m * u_reset_prev
    return u_reset_prev + du_t, du_t


def fire(u_t, v_th: float):
    """Fire, eq. (5): s[t] = 1 if u[t] > V_th (strict), else 0. Returns bools."""
    return u_t > v_th


def reset_membrane(u_t, s_t, v_th: float, reset: str):
    """Reset after a spike: ū[t] = u[t] (1 - s[t]) (``zero``, authors' code)
    or ū[t] = u[t] - V_th s[t] (``subtract``, paper text)."""
    xp = array_module(u_t)
    if reset == "zero":
        return xp.where(s_t, 0.0, u_t)
    return u_t - v_th * xp.astype(s_t, u_t.dtype)      # a bool times a float would be float64


def psc_update(a_prev, s_t, theta_s: float):
    """Synapse, eqs. (2)-(3): a[t] = (1-θs) a[t-1] + θs s[t], i.e. a = κ * s
    with κ[k] = θs (1-θs)^k."""
    xp = array_module(a_prev)
    return (1.0 - theta_s) * a_prev + theta_s * xp.astype(s_t, a_prev.dtype)   # keeps float32 float32


def psc_filter(x, theta_s: float):
    """The synaptic filter applied over time to a whole ``(T, ...)`` input:
    a[t] = (1-θs) a[t-1] + θs x[t], a[-1] = 0. The network input enters this way
    (docs/model.md); it accepts a broadcast (read-only) view."""
    xp = array_module(x)
    a = xp.empty(x.shape, dtype=x.dtype, device=device(x))
    a_t = xp.zeros(x.shape[1:], dtype=x.dtype, device=device(x))
    for t in range(x.shape[0]):
        a_t = psc_update(a_t, x[t, ...], theta_s)
        a[t, ...] = a_t
    return a


def lif_forward(x, neuron: NeuronParams) -> tuple[object, LIFState]:
    """Run LIF neurons over all T steps for input currents ``x`` ``(T, B, ...)``.

    State starts at zero. For t = 0..T-1: charge (4), fire (5), reset, PSC (2).
    Returns ``(a, state)`` with ``a`` the PSC ``(T, B, ...)`` passed to the next
    layer and ``state`` a :class:`LIFState` of every per-step quantity.
    """
    xp, dev = array_module(x), device(x)
    T = x.shape[0]
    u = xp.empty(x.shape, dtype=x.dtype, device=dev)          # (T, B, ...)
    du = xp.empty(x.shape, dtype=x.dtype, device=dev)         # (T, B, ...)
    s = xp.empty(x.shape, dtype=xp.bool, device=dev)          # (T, B, ...)
    a = xp.empty(x.shape, dtype=x.dtype, device=dev)          # (T, B, ...)
    u_reset = xp.zeros(x.shape[1:], dtype=x.dtype, device=dev)
    a_t = xp.zeros(x.shape[1:], dtype=x.dtype, device=dev)
    for t in range(T):
        u_t, du_t = membrane_update(u_reset, x[t, ...], neuron.theta_m)
        s_t = fire(u_t, neuron.v_th)
        u_reset = reset_membrane(u_t, s_t, neuron.v_th, neuron.reset)
        a_t = psc_update(a_t, s_t, neuron.theta_s)
        u[t, ...], du[t, ...], s[t, ...], a[t, ...] = u_t, du_t, s_t, a_t
    return a, LIFState(x=x, u=u, du=du, s=s, a=a)
