"""Surrogate-gradient BPTT of the same discrete LIF network: the method TSSL-BP is compared against.

The forward pass is the discrete network of :func:`snnsim.neuron.lif_forward`
(eqs. (2)-(6)); only the derivative of the Heaviside spike function is replaced
by a smooth pseudo-derivative (Neftci, Mostafa & Zenke 2019), and the error is
back-propagated through time along every path of the recursion:

    u[t] = (1-θm) ū[t-1] + x[t]                                  charge     (4)
    s[t] = H(u[t] - V_th),    ∂s/∂u ≈ σ'(u[t])                    fire       (5)
    ū[t] = u[t] (1 - s[t])  (zero)   or   u[t] - V_th s[t]  (subtract)      reset
    a[t] = (1-θs) a[t-1] + θs s[t]                                synapse    (2)

with σ'(u) = d/du sigmoid((u - V_th)/w), w = WARMUP_WIDTH = 0.2, the same
function as the warm-up of TSSL-BP (:func:`snnsim.tsslbp.warmup_surrogate`).
Backwards over t, with A[t] = ∂L/∂a[t] (all paths) and S[t] = θs A[t]
(:func:`snnsim.tsslbp.psc_reverse_sum`):

    ∂L/∂ū[t] = (1-θm) ∂L/∂u[t+1]                                          leak
    ∂L/∂s[t] = S[t] + ∂L/∂ū[t] · ∂ū/∂s[t]                                 PSC + reset
    ∂L/∂u[t] = ∂L/∂ū[t] · ∂ū/∂u[t]|_s + ∂L/∂s[t] · σ'(u[t])

∂ū/∂s = -u[t] (zero) or -V_th (subtract); ∂ū/∂u|_s = 1 - s[t] (zero) or 1
(subtract). ``detach_reset=True`` drops the ∂ū/∂s term (the reset is treated as a
constant in the backward pass: the common choice, e.g. SpikingJelly's
``detach_reset``); ``detach_reset=False`` keeps it.

With ``detach_reset=False`` and real-valued spikes, this backward is the exact
derivative of the smooth network of :func:`smooth_lif_forward` (spikes replaced
by s[t] = sigmoid((u[t] - V_th)/w) in the forward, the reset made soft); the
tests check it there by central differences, and check the discrete case against
an independent per-neuron loop.
"""
from __future__ import annotations

from collections.abc import Callable

from .backend import array_module, device
from .neuron import LIFState, NeuronModel, lif_forward, membrane_update, psc_update
from .params import WARMUP_WIDTH, NeuronParams
from .tsslbp import leak_path, psc_reverse_sum, warmup_surrogate

#: The surrogate the paper's comparison methods use here: the derivative of a
#: sigmoid of width WARMUP_WIDTH = 0.2, the same function as TSSL-BP's warm-up.
DEFAULT_SURROGATE_WIDTH = WARMUP_WIDTH


def sigmoid(z):
    """sigmoid(z) = 1 / (1 + e^{-z}), computed without overflow for large ``|z|``."""
    xp = array_module(z)
    ez = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def sigmoid_surrogate(u, v_th: float, width: float = DEFAULT_SURROGATE_WIDTH):
    """σ'(u) = d/du sigmoid((u - V_th)/w) = sig(z)(1 - sig(z))/w, z = (u - V_th)/w, unclipped.

    The exact derivative of the spike function of :func:`smooth_lif_forward`.
    (:func:`snnsim.tsslbp.warmup_surrogate` is the same function with z clipped at
    ±8, as in the authors' code; it is the default surrogate of the backward.)
    """
    p = sigmoid((u - v_th) / width)
    return p * (1.0 - p) / width


def reset_derivatives(u, s, neuron: NeuronParams):
    """(∂ū/∂u at fixed s, ∂ū/∂s) of the reset, elementwise.

    zero:     ū = u (1 - s)   -> (1 - s, -u)
    subtract: ū = u - V_th s  -> (1, -V_th)
    ``s`` may be bool (discrete run) or real (the smooth network).
    """
    xp = array_module(u)
    s = xp.astype(s, u.dtype, copy=False)
    if neuron.reset == "zero":
        return 1.0 - s, -u
    return xp.ones_like(u), xp.full_like(u, -neuron.v_th)


def surrogate_lif_backward(dL_da, state: LIFState, neuron: NeuronParams, detach_reset: bool = True,
                           surrogate: Callable | None = None):
    """δ = ∂L/∂u (= ∂L/∂x) of one LIF layer by surrogate-gradient BPTT.

    A drop-in for :func:`snnsim.tsslbp.lif_backward`: ``dL_da`` (g = ∂L/∂a) and
    ``state`` are ``(T, B, ...)``; returns δ of the same shape; modifies neither.
    ``surrogate(u, v_th)`` is ∂s/∂u; default :func:`snnsim.tsslbp.warmup_surrogate`
    (sigmoid of width 0.2). Reads the forward in reverse (module docstring).
    """
    xp = array_module(dL_da, state.u)
    surrogate = surrogate or warmup_surrogate
    S = psc_reverse_sum(dL_da, neuron.theta_s)                            # (T, B, ...) θs A[t]
    ds_du = surrogate(state.u, neuron.v_th)                               # (T, B, ...)
    dreset_du, dreset_ds = reset_derivatives(state.u, state.s, neuron)    # (T, B, ...) each
    dL_du = xp.empty_like(S)
    carry = xp.zeros(S.shape[1:], dtype=S.dtype, device=device(S))        # ∂L/∂u[t+1]
    for t in reversed(range(S.shape[0])):
        dL_dureset = leak_path(carry, neuron.theta_m)                     # ∂L/∂ū[t]
        dL_ds = S[t, ...] if detach_reset else S[t, ...] + dL_dureset * dreset_ds[t, ...]
        carry = dL_dureset * dreset_du[t, ...] + dL_ds * ds_du[t, ...]
        dL_du[t, ...] = carry
    return dL_du


def smooth_lif_forward(x, neuron: NeuronParams, width: float = DEFAULT_SURROGATE_WIDTH):
    """The smooth stand-in network whose exact derivative the attached-reset surrogate
    backward (with :func:`sigmoid_surrogate`) is. For t = 0..T-1, state zero at start:

        u[t] = (1-θm) ū[t-1] + x[t]
        s[t] = sigmoid((u[t] - V_th)/w)          (real-valued "spike")
        ū[t] = u[t](1 - s[t])  or  u[t] - V_th s[t]      (soft reset)
        a[t] = (1-θs) a[t-1] + θs s[t]

    Returns ``(a, LIFState)`` with real-valued ``s``. Not the discrete network: a test oracle.
    """
    xp, dev = array_module(x), device(x)
    u = xp.empty(x.shape, dtype=x.dtype, device=dev)                      # (T, B, ...)
    du = xp.empty(x.shape, dtype=x.dtype, device=dev)
    s = xp.empty(x.shape, dtype=x.dtype, device=dev)
    a = xp.empty(x.shape, dtype=x.dtype, device=dev)
    u_reset = xp.zeros(x.shape[1:], dtype=x.dtype, device=dev)
    a_t = xp.zeros(x.shape[1:], dtype=x.dtype, device=dev)
    for t in range(x.shape[0]):
        u_t, du_t = membrane_update(u_reset, x[t, ...], neuron.theta_m)
        s_t = sigmoid((u_t - neuron.v_th) / width)
        u_reset = u_t * (1.0 - s_t) if neuron.reset == "zero" else u_t - neuron.v_th * s_t
        a_t = psc_update(a_t, s_t, neuron.theta_s)
        u[t, ...], du[t, ...], s[t, ...], a[t, ...] = u_t, du_t, s_t, a_t
    return a, LIFState(x=x, u=u, du=du, s=s, a=a)


def surrogate_model(detach_reset: bool = True, surrogate: Callable | None = None) -> NeuronModel:
    """LIF neurons with the surrogate-gradient BPTT backward, as a neuron model for
    :class:`~snnsim.network.Network` (the gradient reading ``grad`` has no meaning here)."""
    def backward(dL_da, state, neuron, grad):
        return surrogate_lif_backward(dL_da, state, neuron, detach_reset=detach_reset,
                                      surrogate=surrogate)
    return NeuronModel(forward=lif_forward, backward=backward)


def network_backward(net, dL_da, cache, lif_backward_fn: Callable) -> list[dict]:
    """∂L/∂θ for every layer of ``net`` with ``lif_backward_fn(g, state, neuron) -> δ`` in
    place of the network's neuron backward: :meth:`snnsim.network.Network.backward`
    with that function as the model's backward. The interface of the fidelity
    study's variants; new code passes a :class:`~snnsim.neuron.NeuronModel` to
    ``Network.backward`` itself.
    """
    def backward(g, state, neuron, grad):
        return lif_backward_fn(g, state, neuron)
    return net.backward(dL_da, cache, model=net.model._replace(backward=backward))


def surrogate_backward(net, dL_da, cache, detach_reset: bool = True,
                       surrogate: Callable | None = None) -> list[dict]:
    """Whole-network surrogate-gradient BPTT: :meth:`snnsim.network.Network.backward`
    with :func:`surrogate_model` (top down: δ^l by :func:`surrogate_lif_backward`,
    ∂L/∂W^l = Σ_t δ^l a^{l-1}ᵀ (8), g^{l-1} = W^lᵀ δ^l (10))."""
    return net.backward(dL_da, cache, model=surrogate_model(detach_reset, surrogate))


__all__ = ["DEFAULT_SURROGATE_WIDTH", "network_backward", "reset_derivatives", "sigmoid",
           "sigmoid_surrogate", "smooth_lif_forward", "surrogate_backward", "surrogate_lif_backward",
           "surrogate_model"]
