"""The event-shift model: the smooth function whose derivative `timing` computes.

A spike is all-or-none, so finite differences of the discrete network are zero
or jumps. The event-shift model (docs/gradient.md) holds the nominal spike
pattern fixed and lets each spike *time* move when a membrane value moves, so
that the network output is a smooth function of the weights. Per neuron, with
the nominal spike steps m_j, membrane u⁰ and slope Δu⁰ held fixed:

- u[t] = (1-θm) ū[t-1] + x[t]                       (no threshold test)
- spike j fires at τ_j = m_j - (u[m_j] - u⁰[m_j]) / Δu⁰[m_j]
- its reset removes R (V_th for ``subtract``, u[m_j] for ``zero``) at τ_j:
  ū[m_j] = u[m_j] - R (1-θm)^{m_j - τ_j};  ū[t] = u[t] elsewhere
- a[k] = Σ_j [k ≥ m_j] θs (1-θs)^{k - τ_j}

At the nominal weights it reproduces the discrete run exactly, and its
gradient is what ``GradientParams(reading="timing", sensitivity_bound=None,
warmup=False)`` computes.
"""
from __future__ import annotations

from .backend import array_module, device
from .neuron import LIFState, NeuronModel
from .params import NeuronParams


def spike_time(u_t, u0_t, du0_t, m: int):
    """Real-valued spike time τ = m - (u[m] - u⁰[m]) / Δu⁰[m] (linear rise within the step)."""
    return m - (u_t - u0_t) / du0_t


def event_shift_lif(x, nominal: LIFState, neuron: NeuronParams):
    """Output PSC ``(T, B, ...)`` of the event-shift model for input currents ``x``,
    with the spike pattern, u⁰ and Δu⁰ of ``nominal`` held fixed."""
    xp = array_module(x)
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    a = xp.empty(x.shape, dtype=x.dtype, device=device(x))
    u_reset = xp.zeros(x.shape[1:], dtype=x.dtype, device=device(x))
    a_t = xp.zeros(x.shape[1:], dtype=x.dtype, device=device(x))
    for t in range(x.shape[0]):
        u_t = (1.0 - theta_m) * u_reset + x[t, ...]
        s_t = nominal.s[t, ...]
        du0 = xp.where(s_t, nominal.du[t, ...], 1.0)
        lead = t - spike_time(u_t, nominal.u[t, ...], du0, t)            # m - τ, 0 at nominal
        R = u_t if neuron.reset == "zero" else neuron.v_th
        u_reset = xp.where(s_t, u_t - R * (1.0 - theta_m) ** lead, u_t)
        a_t = (1.0 - theta_s) * a_t + xp.where(s_t, theta_s * (1.0 - theta_s) ** lead, 0.0)
        a[t, ...] = a_t
    return a


def event_shift_forward(net, x_in, nominal_cache, train: bool = False, rng=None):
    """Output PSC of ``net`` under the event-shift model around ``nominal_cache``
    (a :class:`~snnsim.network.NetworkCache` of a discrete forward pass).

    The model's ``forward`` is called once per spiking layer, in order; it takes
    each layer's nominal state in that order. It has no backward (its gradient
    is what the ``timing`` reading computes)."""
    nominal = iter([state for state in nominal_cache.states if state is not None])

    def forward(x, neuron):
        return event_shift_lif(x, next(nominal), neuron), None

    return net.forward(x_in, train=train, rng=rng, model=NeuronModel(forward, None))[0]
