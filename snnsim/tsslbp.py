"""The TSSL-BP backward pass through LIF neurons, one function per term.

Notation (docs/model.md): g[t] = ∂L/∂a[t] arrives at a layer (``dL_da``);
δ[t] = ∂L/∂u[t] = ∂L/∂x[t] leaves it (``dL_du``). The paper writes

    δ[t_m] = Σ_{k≥m} φ(t_k, t_m) g[t_k],      φ = φ<1> + φ<2>        (9), (14)

and this module computes the sum without forming φ, by one reverse recursion
per neuron (O(T) time, O(1) carry):

    S[t] = Σ_{k≥t} κ[k-t] g[k] = θs g[t] + (1-θs) S[t+1]          (9) with (12)
    spike step m:  G[m] = φ<1>-sum + φ<2>-sum + (pass-through of the reset)
    silent step t: G[t] = (1-θm) G[t+1]                                    (leak)
    δ[t] = G[t], or σ'(u[t]) S[t] where warm-up applies                     (S 2.3)

Each term has two readings (``GradientParams.reading``): ``authors`` — what the
authors' public code computes (docs/authors_code.md) — and ``timing`` — the
exact derivative of the event-shift model (docs/gradient.md). :func:`phi_matrix`
builds φ explicitly, term by term, from the paper's next-spike form (13), (14); it is
slow, for inspection and as the oracle of :func:`lif_backward`.
"""
from __future__ import annotations

from .backend import array_module, device
from .neuron import LIFState, NeuronModel, lif_forward
from .params import (
    WARMUP_PSC_FRACTION,
    WARMUP_WIDTH,
    WARMUP_Z_CLIP,
    GradientParams,
    NeuronParams,
    log1m,
)


# --- the PSC kernel ----------------------------------------------------------
def kappa(n_steps: int, theta_s: float, xp, dtype, device=None):
    """The discrete PSC kernel of one spike, κ[k] = θs (1-θs)^k, k = 0..T-1   (2)."""
    k = xp.arange(n_steps, dtype=dtype, device=device)
    return theta_s * (1.0 - theta_s) ** k


def kernel_matrix(n_steps: int, theta_s: float, xp, dtype, device=None):
    """K[k, m] = κ[k-m] for k ≥ m, else 0: the PSC a = K s as a (T, T) matrix."""
    k = xp.arange(n_steps, dtype=xp.float64, device=device)
    lag = k[:, None] - k[None, :]
    return xp.astype(xp.where(lag >= 0, theta_s * (1.0 - theta_s) ** xp.maximum(lag, 0.0), 0.0), dtype)


def psc_reverse_sum(dL_da, theta_s: float):
    """S[t] = Σ_{k≥t} κ[k-t] g[k], by S[t] = θs g[t] + (1-θs) S[t+1]: the sum over
    k of (9) with the PSC kernel of ∂a[t_k]/∂t_m (12).

    The error a spike at t would carry through its own PSC: Σ_k ∂a[k]/∂s[t] g[k].
    ``dL_da`` is ``(T, ...)``; returns the same shape.
    """
    xp = array_module(dL_da)
    S = xp.empty_like(dL_da)
    S_next = xp.zeros(dL_da.shape[1:], dtype=dL_da.dtype, device=device(dL_da))
    for t in reversed(range(dL_da.shape[0])):
        S_next = theta_s * dL_da[t, ...] + (1.0 - theta_s) * S_next
        S[t, ...] = S_next
    return S


# --- φ<1>: the inter-neuron term, (11)-(12) ---------------------------------
def spike_time_sensitivity(du, s, bound: float | None):
    """∂t_m/∂u[t_m] = -1 / (∂u/∂t at t_m) = -1/Δu[t_m] at a spike, 0 elsewhere   (12).

    Within step m the membrane is taken to rise linearly by Δu[m], so the
    threshold crossing is at t* = m - (u[m] - V_th)/Δu[m] (docs/gradient.md).
    ``bound`` limits ``|1/Δu|`` (S 2.3; the authors' code: min(1/Δu, 8), which is
    this clip wherever Δu > 0, as it always is at a spike with the zero reset).
    """
    xp = array_module(du)
    dt_du = -1.0 / xp.where(s, du, xp.inf)                               # 0 where no spike
    if bound is not None:
        dt_du = xp.clip(dt_du, -bound, bound)
    return dt_du


def psc_shift_scale(theta_s: float, reading: str) -> float:
    """c in ∂a[t_k]/∂t_m = -c κ[k-m] (k ≥ m): how a spike's PSC moves with its time   (12).

    ``timing``: a spike at real time τ adds θs (1-θs)^{k-τ} at step k, so
    ∂a[k]/∂τ = -ln(1-θs) κ[k-m] and c = ln(1-θs) < 0 (a later spike has decayed
    less). ``authors``: the code takes ∂a[k]/∂t_m = -κ[k-m] (c = 1), the
    opposite sign and another scale (docs/authors_code.md).
    """
    return 1.0 if reading == "authors" else log1m(theta_s)


def phi_inter(S_t, dt_du_t, theta_s: float, reading: str):
    """Σ_k φ<1>(t_k, t_m) g[t_k] at step m, φ<1> = ∂a[t_k]/∂t_m · ∂t_m/∂u[t_m]   (11).

    = -c S[m] ∂t_m/∂u[m] with c from :func:`psc_shift_scale`; zero where no spike
    (``dt_du_t`` is zero there).
    """
    return -psc_shift_scale(theta_s, reading) * S_t * dt_du_t


# --- φ<2>: the intra-neuron (reset) term, (13) --------------------------------
def reset_size(u, neuron: NeuronParams):
    """R, what a reset removes: u[t_m] for the ``zero`` reset, V_th for ``subtract``."""
    xp = array_module(u)
    if neuron.reset == "zero":
        return u
    return xp.full_like(u, neuron.v_th)


def reset_shift_coefficient(neuron: NeuronParams, reading: str) -> float:
    """b in ∂u[t_m + 1]/∂t_m = b R: how the reset at t_m moves the next membrane value.

    Carried on through the leak, ∂u[t_p]/∂t_m = b R (1-θm)^{p-m-1}, the factor
    ∂(ν * s[t_m])[t_p]/∂t_m of (13) with ν the reset kernel.
    ``timing``: a reset of size R at real time τ contributes -R (1-θm)^{t-τ} at
    step t, so b = (1-θm) ln(1-θm). ``authors``: b = -θm (one step less of decay
    and θm for -ln(1-θm); docs/authors_code.md).
    """
    theta_m = neuron.theta_m
    if reading == "authors":
        return -theta_m
    return (1.0 - theta_m) * log1m(theta_m)


def phi_intra(dL_du_next, R_t, dt_du_t, b: float):
    """Σ_k φ<2>(t_k, t_m) g[t_k] at step m   (13):
    ∂L/∂u[m+1] · ∂u[m+1]/∂t_m · ∂t_m/∂u[m] = G[m+1] · b R · ∂t_m/∂u[m].

    Through G[m+1] (= (1-θm)^{p-m-1} G[p] for the next spike p) it chains over all
    later spikes, as φ(t_k, t_p) does in (13).
    """
    return dL_du_next * b * R_t * dt_du_t


def reset_passthrough(neuron: NeuronParams) -> float:
    """∂ū[t_m]/∂u[t_m] with the spike time held: 0 for ``zero`` (ū = 0 whatever u
    was), 1 for ``subtract`` (ū = u - V_th)."""
    return 0.0 if neuron.reset == "zero" else 1.0


def leak_path(dL_du_next, theta_m: float):
    """∂L/∂ū[t] = (1-θm) ∂L/∂u[t+1], from u[t+1] = (1-θm) ū[t] + x[t+1]   (4).

    At a silent step ū[t] = u[t], so this is all of δ there: the path the paper's
    φ sets to zero and the authors' code keeps (docs/authors_code.md).
    """
    return (1.0 - theta_m) * dL_du_next


# --- warm-up (S 2.3) ----------------------------------------------------------
def warmup_mask(a, theta_s: float):
    """Where warm-up replaces δ: a[t] < WARMUP_PSC_FRACTION · θs = 1/(4 τs)."""
    return a < WARMUP_PSC_FRACTION * theta_s


def warmup_surrogate(u, v_th: float):
    """σ'(u) = d/du sigmoid((u - V_th)/w) = e^z / (w (1+e^z)^2),
    z = clip((V_th - u)/w, ±WARMUP_Z_CLIP), w = WARMUP_WIDTH   (S 2.3)."""
    xp = array_module(u)
    z = xp.clip((v_th - u) / WARMUP_WIDTH, -WARMUP_Z_CLIP, WARMUP_Z_CLIP)
    ez = xp.exp(z)
    one_plus = 1.0 + ez
    return ez / (WARMUP_WIDTH * one_plus * one_plus)


# --- the whole backward of one LIF layer ---------------------------------------
def lif_backward(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams):
    """δ = ∂L/∂u (= ∂L/∂x) of one LIF layer from g = ∂L/∂a, O(T) reverse recursion.

    ``dL_da`` is ``(T, B, ...)`` like ``state.a``; returns δ of the same shape.
    Neither ``dL_da`` nor ``state`` is modified. Reads the forward in reverse:

    - S from the synapse (2)            -> :func:`psc_reverse_sum`
    - ∂t_m/∂u[t_m] from fire (5)        -> :func:`spike_time_sensitivity`
    - spike step: φ<1> + φ<2> + pass-through of the reset
    - silent step: the leak of (4)      -> :func:`leak_path`
    - warm-up replaces δ (not the carry) where a[t] < 1/(4τs)
    """
    xp = array_module(dL_da, state.u)
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    S = psc_reverse_sum(dL_da, theta_s)                                   # (T, B, ...)
    dt_du = spike_time_sensitivity(state.du, state.s, grad.sensitivity_bound)
    R = reset_size(state.u, neuron)
    b = reset_shift_coefficient(neuron, grad.reading)
    through = reset_passthrough(neuron)
    G = xp.empty_like(S)
    carry = xp.zeros(S.shape[1:], dtype=S.dtype, device=device(S))        # G[t+1]
    for t in reversed(range(S.shape[0])):
        leak = leak_path(carry, theta_m)
        at_spike = (phi_inter(S[t, ...], dt_du[t, ...], theta_s, grad.reading)
                    + phi_intra(carry, R[t, ...], dt_du[t, ...], b)
                    + through * leak)
        carry = xp.where(state.s[t, ...], at_spike, leak)
        G[t, ...] = carry
    if not grad.warmup:
        return G
    return warmup_replace(G, S, state, neuron)


def warmup_replace(delta, S, state: LIFState, neuron: NeuronParams):
    """δ[t] = σ'(u[t]) S[t] where a[t] < 1/(4τs), ``delta`` elsewhere   (S 2.3).

    The warm-up replaces δ, not the carry of the recursion: the steps before
    still chain through the un-replaced G.
    """
    xp = array_module(delta)
    warm = warmup_mask(state.a, neuron.theta_s)
    return xp.where(warm, warmup_surrogate(state.u, neuron.v_th) * S, delta)


# --- φ explicitly, for inspection and as a test oracle -------------------------
def next_spike_index(s):
    """p[..., m] = the first step p > m with a spike, or T if none. ``s`` is ``(..., T)``."""
    xp = array_module(s)
    T = s.shape[-1]
    nxt = xp.empty(s.shape, dtype=xp.int64, device=device(s))
    p = xp.full(s.shape[:-1], T, dtype=xp.int64, device=device(s))
    for m in reversed(range(T)):
        nxt[..., m] = p
        p = xp.where(s[..., m], m, p)
    return nxt


def phi_matrix(state: LIFState, neuron: NeuronParams, grad: GradientParams, terms: bool = False):
    """The explicit φ(t_k, t_m) = ∂a[t_k]/∂u[t_m] as used by the backward, ``(B, ..., T, T)``
    indexed ``[..., k, m]``, so that δ[m] = Σ_k φ[..., k, m] g[k].

    Built column by column from the next-spike form of the paper, independent of
    the recursion in :func:`lif_backward`; p is the next spike after m:

    - φ<1>(k, m) = -c κ[k-m] ∂t_m/∂u[m]                          spike at m   (11)
    - φ<2>(k, m) = φ(k, p) · b R[m] (1-θm)^{p-m-1} · ∂t_m/∂u[m]   spike at m   (13)
    - leak(k, m) = (1-θm)^{p-m} φ(k, p)     silent m; also a spike at m with the
      ``subtract`` reset (the membrane passes the reset)
    - warm-up(k, m) = κ[k-m] σ'(u[m]) replaces the whole column where a[m] < 1/(4τs);
      the columns of earlier steps still chain through the un-replaced φ(k, p).

    With ``terms=True`` returns a dict of the four term matrices, whose sum is φ.
    """
    xp = array_module(state.u)
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    u = xp.moveaxis(state.u, 0, -1)                                       # (..., T)
    s = xp.moveaxis(state.s, 0, -1)
    dt_du = xp.moveaxis(spike_time_sensitivity(state.du, state.s, grad.sensitivity_bound), 0, -1)
    R = xp.moveaxis(reset_size(state.u, neuron), 0, -1)
    T, dtype = u.shape[-1], u.dtype
    K = kernel_matrix(T, theta_s, xp, dtype, device(u))                   # (T, T)
    c = psc_shift_scale(theta_s, grad.reading)
    b = reset_shift_coefficient(neuron, grad.reading)
    through = reset_passthrough(neuron)
    nxt = next_spike_index(s)                                             # (..., T)

    batch = u.shape[:-1]
    phi = xp.zeros(batch + (T, T + 1), dtype=dtype, device=device(u))   # column T: "no next spike" = 0
    parts = {name: xp.zeros(batch + (T, T), dtype=dtype, device=device(u))
             for name in ("phi_1", "phi_2", "leak")}
    for m in reversed(range(T)):
        p = nxt[..., m]                                                   # (...)
        idx = xp.broadcast_to(p[..., None, None], batch + (T, 1))
        phi_p = xp.take_along_axis(phi, idx, axis=-1)[..., 0]             # (..., T) over k
        gap = xp.astype(p - m, dtype)[..., None]
        spike = s[..., m][..., None]
        phi_1 = -c * K[:, m] * dt_du[..., m][..., None]
        phi_2 = phi_p * (b * R[..., m] * dt_du[..., m])[..., None] * (1.0 - theta_m) ** (gap - 1)
        leak = phi_p * (1.0 - theta_m) ** gap
        parts["phi_1"][..., m] = xp.where(spike, phi_1, 0.0)
        parts["phi_2"][..., m] = xp.where(spike, phi_2, 0.0)
        parts["leak"][..., m] = xp.where(spike, through * leak, leak)
        phi[..., m] = parts["phi_1"][..., m] + parts["phi_2"][..., m] + parts["leak"][..., m]
    parts["warmup"] = xp.zeros(batch + (T, T), dtype=dtype, device=device(u))
    if grad.warmup:
        warm = xp.moveaxis(warmup_mask(state.a, theta_s), 0, -1)[..., None, :]   # (..., 1, T)
        surrogate = K * xp.moveaxis(warmup_surrogate(state.u, neuron.v_th), 0, -1)[..., None, :]
        for name in ("phi_1", "phi_2", "leak"):
            parts[name] = xp.where(warm, 0.0, parts[name])
        parts["warmup"] = xp.where(warm, surrogate, 0.0)
    if terms:
        return parts
    return parts["phi_1"] + parts["phi_2"] + parts["leak"] + parts["warmup"]


def lif_backward_explicit(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams):
    """δ[m] = Σ_k φ(t_k, t_m) g[k] (9) through the explicit φ matrix: O(T²) time and
    memory per neuron, the formulation of the authors' code. The baseline of the
    benchmark (:mod:`snnsim.bench`); equal to :func:`lif_backward`."""
    xp = array_module(dL_da)
    phi = phi_matrix(state, neuron, grad)                                 # (B, ..., T, T)
    g = xp.moveaxis(dL_da, 0, -1)                                         # (B, ..., T) over k
    delta = xp.sum(phi * g[..., :, None], axis=-2)                        # (B, ..., T) over m
    return xp.moveaxis(delta, -1, 0)


#: LIF neurons (:func:`snnsim.neuron.lif_forward`) with the TSSL-BP backward
#: (:func:`lif_backward`): the default neuron model of :class:`~snnsim.network.Network`.
LIF = NeuronModel(forward=lif_forward, backward=lif_backward)
#: LIF neurons with the explicit-φ backward (:func:`lif_backward_explicit`, O(T²)).
LIF_EXPLICIT = NeuronModel(forward=lif_forward, backward=lif_backward_explicit)
