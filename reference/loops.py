"""TSSL-BP written out one neuron and one time step at a time: the test oracle.

Everything here is plain Python floats and ``for`` loops, meant to be stepped
through in a debugger (``python3 -m pdb``) with the paper and the repository's
account of the model open beside it (``docs/model.md``, ``docs/gradient.md``,
``docs/authors_code.md``). Every line names the equation it implements: "(n)"
is the paper's main text, "(S n)" its supplementary material; a docs page
where the term is not an equation of the paper.

It follows the paper and that account independently of ``snnsim.neuron`` /
``snnsim.tsslbp`` (nothing is imported from snnsim), so that
``tests/test_reference.py`` can test the vectorised engine against it. It is
slow on purpose: the PSC reverse sum S is computed by its O(T²) definition,
not by the engine's recursion; φ is built entry by entry.

Arrays: the per-neuron functions take a list or 1-D array of T values and
return lists. The network functions take and return NumPy arrays shaped like
the engine's, time first ``(T, B, N)``, but fill them element by element.
"""
from __future__ import annotations

import math

import numpy as np

# --- named constants (the same numbers as snnsim.params, restated on purpose) --
#: Bound on 1/Δu at a spike, "we set a bound for this derivative" (S 2.3); the
#: authors' code uses 8.
SENSITIVITY_BOUND = 8.0
#: Width w of the warm-up sigmoid σ((u - V_th)/w) (authors' code: 0.2), (S 2.3).
WARMUP_WIDTH = 0.2
#: Clip of the warm-up sigmoid's argument z (authors' code: ±8), (S 2.3).
WARMUP_Z_CLIP = 8.0
#: Warm-up where a[t] < 1/(4 τs) (authors' code), docs/authors_code.md; 4 = this denominator.
WARMUP_PSC_DENOMINATOR = 4.0

RESETS = ("zero", "subtract")
READINGS = ("authors", "timing")


# =============================================================================
# Small helpers
# =============================================================================
def _floats(values):
    """A list/1-D array of T numbers as a list of Python floats."""
    return [float(v) for v in values]


def _check_reset(reset):
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")


def kappa_at(k, tau_s):
    """κ[k] = θs (1-θs)^k for k ≥ 0, 0 for k < 0: the PSC of one spike, k steps later   (2)."""
    theta_s = 1.0 / tau_s                                   # θs = 1/τs
    if k < 0:                                               # causal kernel: nothing before the spike
        return 0.0
    return theta_s * (1.0 - theta_s) ** k                   # κ[k] = θs (1-θs)^k   (2)


def bounded_inverse(du_t, bound):
    """r = 1/Δu[t], with |r| limited to ``bound`` (S 2.3), or unlimited for ``bound=None``.

    The authors' code writes min(1/Δu, 8); with the zero reset Δu > 0 at every
    spike, where min(1/Δu, bound) is all there is to it. With the subtract reset
    Δu can be negative at a spike (ū[t-1] > V_th after a large input); the
    engine then bounds symmetrically, max(1/Δu, -bound), and so does this.
    """
    r = 1.0 / du_t                              # -∂t_m/∂u[t_m] = 1/(∂u/∂t) = 1/Δu   (S 15), gradient.md
    if bound is None:                                       # exact sensitivity (EXACT_TIMING)
        return r
    r = min(r, bound)                                       # authors: min(1/Δu, 8)   (S 2.3), authors_code.md
    r = max(r, -bound)                                      # engine's symmetric extension (Δu < 0 only)
    return r


def warmup_applies(a_t, tau_s):
    """Warm-up replaces δ[t] where a[t] < 1/(4 τs)   (S 2.3), docs/authors_code.md."""
    return a_t < 1.0 / (WARMUP_PSC_DENOMINATOR * tau_s)    # a[t] < 1/(4τs)


def warmup_derivative(u_t, v_th):
    """σ'(u) = e^z / (w (1+e^z)²), z = clip((V_th - u)/w, -8, 8), w = 0.2   (S 2.3), authors_code.md."""
    z = (v_th - u_t) / WARMUP_WIDTH                         # z = (V_th - u)/w
    z = min(max(z, -WARMUP_Z_CLIP), WARMUP_Z_CLIP)          # clip to [-8, 8]
    ez = math.exp(z)                                        # e^z
    return ez / (WARMUP_WIDTH * (1.0 + ez) ** 2)            # σ'(u) = e^z / (w (1+e^z)²)


# =============================================================================
# Forward: one neuron, eqs. (2)-(5), docs/model.md
# =============================================================================
def lif_neuron_forward(x, tau_m, tau_s, v_th, reset):
    """One LIF neuron with its synapse over T steps, state starting at zero.

    For t = 0..T-1, in the order of docs/model.md:
      Δu[t] = -θm ū[t-1] + x[t];  u[t] = ū[t-1] + Δu[t]          (4)
      s[t] = 1 if u[t] > V_th else 0 (strict)                    (5)
      ū[t] = u[t] (1 - s[t])  [zero]  |  u[t] - V_th s[t]  [subtract]
      a[t] = (1-θs) a[t-1] + θs s[t]                             (2), (3)

    Returns a dict of lists: x, u, du, s (0/1 ints), u_reset, a.
    """
    _check_reset(reset)
    x = _floats(x)
    theta_m = 1.0 / tau_m                                   # θm = 1/τm
    theta_s = 1.0 / tau_s                                   # θs = 1/τs
    u_reset_prev = 0.0                                      # ū[-1] = 0
    a_prev = 0.0                                            # a[-1] = 0
    out = {"x": x, "u": [], "du": [], "s": [], "u_reset": [], "a": []}
    for t in range(len(x)):
        du_t = -theta_m * u_reset_prev + x[t]               # Δu[t] = -θm ū[t-1] + x[t]   (4)
        u_t = u_reset_prev + du_t                           # u[t] = ū[t-1] + Δu[t]       (4)
        s_t = 1 if u_t > v_th else 0                        # s[t] = H(u[t] - V_th), strict   (5)
        if reset == "zero":
            u_reset_t = u_t * (1 - s_t)                     # ū[t] = u[t](1 - s[t])  (authors' code)
        else:
            u_reset_t = u_t - v_th * s_t                    # ū[t] = u[t] - V_th s[t]  (paper text)
        a_t = (1.0 - theta_s) * a_prev + theta_s * s_t      # a[t] = (1-θs) a[t-1] + θs s[t]   (2), (3)
        out["du"].append(du_t)
        out["u"].append(u_t)
        out["s"].append(s_t)
        out["u_reset"].append(u_reset_t)
        out["a"].append(a_t)
        u_reset_prev = u_reset_t                            # carry ū[t] to step t+1
        a_prev = a_t                                        # carry a[t] to step t+1
    return out


def input_filter(x, tau_s):
    """The input PSC a⁰[t] = (1-θs) a⁰[t-1] + θs x_in[t], a⁰[-1] = 0   (2), docs/model.md."""
    theta_s = 1.0 / tau_s                                   # θs = 1/τs
    a = []
    a_prev = 0.0                                            # a⁰[-1] = 0
    for x_t in _floats(x):
        a_t = (1.0 - theta_s) * a_prev + theta_s * x_t      # a⁰[t] = (1-θs) a⁰[t-1] + θs x[t]   (2)
        a.append(a_t)
        a_prev = a_t
    return a


# =============================================================================
# Backward of one neuron: the pieces
# =============================================================================
def psc_reverse_sum(g, tau_s):
    """S[t] = Σ_{k≥t} κ[k-t] g[k], by its definition: a double loop, O(T²)   (S 9), (S 14), authors_code.md.

    The sum over k of (S 9) with the PSC kernel of ∂a[t_k]/∂t_m (S 14).

    (The engine uses the equivalent recursion S[t] = θs g[t] + (1-θs) S[t+1].)
    """
    g = _floats(g)
    T = len(g)
    S = []
    for t in range(T):
        total = 0.0
        for k in range(t, T):                               # k ≥ t: the PSC is causal
            total += kappa_at(k - t, tau_s) * g[k]          # κ[k-t] g[k]
        S.append(total)                                     # S[t] = Σ_{k≥t} κ[k-t] g[k]
    return S


def authors_backward(g, u, du, s, a, tau_m, tau_s, v_th, reset, bound=SENSITIVITY_BOUND, warmup=True):
    """δ[t] = ∂L/∂u[t] of one neuron as the authors' code computes it, docs/authors_code.md.

    Backwards over t with a carry ρ = 0:
      r[t] = min(1/Δu[t], bound) at a spike                       (S 15), (S 2.3)
      spike step, zero reset:     G = r S + ρ θm u[t] r            (S 13) + (S 16)
      spike step, subtract reset: G = r S + ρ θm V_th r + ρ (1-θm)
            (engine's generalisation: R = V_th, and ū = u - V_th passes u on)
      then ρ ← G
      silent step: G = ρ (1-θm); ρ ← G                             leak, authors_code.md
      δ[t] = G, or σ'(u[t]) S[t] where warm-up applies (a[t] < 1/(4τs));
      ρ is updated from G before this replacement                  (S 2.3)

    ``bound=None`` drops the bound; ``warmup=False`` never replaces δ.
    """
    _check_reset(reset)
    g, u, du, a = _floats(g), _floats(u), _floats(du), _floats(a)
    theta_m = 1.0 / tau_m                                   # θm = 1/τm
    T = len(g)
    S = psc_reverse_sum(g, tau_s)                           # S[t] = Σ_{k≥t} κ[k-t] g[k]   (S 9), (S 14)
    delta = [0.0] * T
    rho = 0.0                                               # ρ = G[t+1], the un-replaced carry
    for t in reversed(range(T)):
        if s[t]:
            r = bounded_inverse(du[t], bound)               # r = min(1/Δu[t], 8)   (S 15), (S 2.3)
            if reset == "zero":
                G = r * S[t] + rho * theta_m * u[t] * r     # φ<1>: r S;  φ<2>: ρ θm u[t] r   authors_code.md
            else:
                G = (r * S[t]                               # φ<1>: r S   authors_code.md
                     + rho * (theta_m * v_th * r)           # φ<2> with R = V_th
                     + rho * (1.0 - theta_m))               # ū = u - V_th: u[t] passes through the reset
            rho = G                                         # ρ ← G
        else:
            G = rho * (1.0 - theta_m)                       # leak: G[t] = (1-θm) G[t+1]   authors_code.md
            rho = G                                         # ρ ← ρ (1-θm)
        if warmup and warmup_applies(a[t], tau_s):          # a[t] < 1/(4τs)   (S 2.3)
            delta[t] = warmup_derivative(u[t], v_th) * S[t]  # δ[t] = σ'(u[t]) S[t]
        else:
            delta[t] = G                                    # δ[t] = G[t]
    return delta


def timing_backward(g, u, du, s, a, tau_m, tau_s, v_th, reset, bound=None, warmup=False):
    """δ[t] = ∂L/∂u[t] of one neuron: the exact derivative of the event-shift model (gradient.md).

    Derived by hand, step by step, backwards (B = ∂L/∂ū[t], the error on the
    membrane after the reset; δ[t+1] the *un-replaced* carry G[t+1]):

      u[t+1] = (1-θm) ū[t] + x[t+1]                 =>  B = (1-θm) δ[t+1]
      silent step t: ū[t] = u[t]                      =>  δ[t] = B
      spike step m, lead λ = m - τ = (u[m] - u⁰[m]) / Δu⁰[m]   (∂λ/∂u[m] = 1/Δu[m]):
        a[k] ∋ θs (1-θs)^{k-m} (1-θs)^λ              =>  ∂/∂u[m] Σ_k g[k] a[k] = ln(1-θs) S[m] / Δu[m]
        ū[m] = u[m] - R (1-θm)^λ, with R = u[m], ∂R/∂u = 1 (zero reset)
               or R = V_th, ∂R/∂u = 0 (subtract), at λ = 0:
                                                      =>  ∂ū[m]/∂u[m] = (1 - ∂R/∂u) - R ln(1-θm) / Δu[m]
      so  δ[m] = (ln(1-θs) S[m] - ln(1-θm) R B) / Δu[m] + (1 - ∂R/∂u) B.

    ``bound`` limits |1/Δu| as the engine does for either reading (S 2.3);
    ``warmup`` replaces δ (not the carry) as in :func:`authors_backward`. The
    defaults give the exact derivative, checked by finite differences of
    :func:`event_shift_neuron`.
    """
    _check_reset(reset)
    g, u, du, a = _floats(g), _floats(u), _floats(du), _floats(a)
    theta_m = 1.0 / tau_m                                   # θm = 1/τm
    theta_s = 1.0 / tau_s                                   # θs = 1/τs
    ln_leak = math.log(1.0 - theta_m)                       # ln(1-θm) < 0: continuous membrane decay rate
    ln_syn = math.log(1.0 - theta_s)                        # ln(1-θs) < 0: continuous PSC decay rate
    T = len(g)
    S = psc_reverse_sum(g, tau_s)                           # S[t] = Σ_{k≥t} κ[k-t] g[k]   (S 9), (S 14)
    delta = [0.0] * T
    delta_next = 0.0                                        # G[t+1] = ∂L/∂u[t+1] (0 beyond T-1)
    for t in reversed(range(T)):
        # ∂L/∂ū[t], from u[t+1] = (1-θm) ū[t] + x[t+1]   (4)
        B = (1.0 - theta_m) * delta_next
        if s[t]:
            r = bounded_inverse(du[t], bound)       # 1/Δu[t] = ∂λ/∂u[t] = -∂τ/∂u[t]   (S 15), gradient.md
            if reset == "zero":
                R, dR_du = u[t], 1.0                        # zero reset removes R = u[t]
            else:
                R, dR_du = v_th, 0.0                        # subtract reset removes R = V_th
            G = ((ln_syn * S[t]                             # PSC shift: ∂a[k]/∂τ = -ln(1-θs) κ[k-m]  (S 14)
                  - ln_leak * R * B) * r            # reset shift: ∂ū[m]/∂τ = R ln(1-θm)   (S 16), gradient.md
                 + (1.0 - dR_du) * B)                       # ∂ū[m]/∂u[m] with τ held
        else:
            G = B                                           # silent: ū[t] = u[t]; leak path   authors_code.md
        delta_next = G                                      # carry the un-replaced G
        if warmup and warmup_applies(a[t], tau_s):          # a[t] < 1/(4τs)   (S 2.3)
            delta[t] = warmup_derivative(u[t], v_th) * S[t]  # δ[t] = σ'(u[t]) S[t]
        else:
            delta[t] = G
    return delta


def lif_neuron_backward(g, u, du, s, a, tau_m, tau_s, v_th, reset, reading="authors",
                        bound=SENSITIVITY_BOUND, warmup=True):
    """δ of one neuron for a reading: :func:`authors_backward` or :func:`timing_backward`."""
    if reading == "authors":
        return authors_backward(g, u, du, s, a, tau_m, tau_s, v_th, reset, bound=bound, warmup=warmup)
    if reading == "timing":
        return timing_backward(g, u, du, s, a, tau_m, tau_s, v_th, reset, bound=bound, warmup=warmup)
    raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")


# =============================================================================
# φ explicitly: the paper's next-spike form (S 16), (S 17)
# =============================================================================
def psc_time_derivative(k, m, tau_s, reading):
    """∂a[t_k]/∂t_m for a spike at step m   (S 14).

    ``authors``: -κ[k-m] (as if a later spike removed its whole PSC), authors_code.md.
    ``timing``:  -ln(1-θs) κ[k-m] (the kernel's continuous extension), gradient.md.
    """
    if reading == "authors":
        return -kappa_at(k - m, tau_s)                      # -κ[k-m]   authors_code.md
    theta_s = 1.0 / tau_s
    return -math.log(1.0 - theta_s) * kappa_at(k - m, tau_s)  # -ln(1-θs) κ[k-m]   gradient.md


def reset_time_derivative(p, m, R_m, tau_m, reading):
    """∂(ν * s[t_m])[t_p]/∂t_m: how the reset at step m moves u at the next spike p   (S 16).

    ``authors``: -θm R (1-θm)^{p-m-1}, authors_code.md.  ``timing``: R ln(1-θm) (1-θm)^{p-m}
    (a reset of size R at real time τ adds -R (1-θm)^{t_p-τ}), gradient.md.
    """
    theta_m = 1.0 / tau_m
    if reading == "authors":
        return -theta_m * R_m * (1.0 - theta_m) ** (p - m - 1)          # authors_code.md
    return R_m * math.log(1.0 - theta_m) * (1.0 - theta_m) ** (p - m)    # gradient.md


def phi_matrix_loops(u, du, s, a, tau_m, tau_s, v_th, reset, reading="authors",
                     bound=SENSITIVITY_BOUND, warmup=True, terms=False):
    """φ(t_k, t_m) = ∂a[t_k]/∂u[t_m] of one neuron as a T×T list of lists ``phi[k][m]``,
    so that δ[m] = Σ_k φ[k][m] g[k]   (9), (S 17).

    Columns m from T-1 down to 0, with p the next spike after m (p = T: none,
    φ(·, T) = 0), and ∂t_m/∂u[t_m] = -r[m] = -1/Δu[m] bounded   (S 15):
      φ<1>(k, m) = ∂a[t_k]/∂t_m · ∂t_m/∂u[t_m]                      spike at m   (S 13), (S 14)
      φ<2>(k, m) = φ(k, p) · ∂(ν*s[t_m])[t_p]/∂t_m · ∂t_m/∂u[t_m]   spike at m   (S 16)
      leak(k, m) = (1-θm)^{p-m} φ(k, p)     silent m (the path the paper sets to 0, authors_code.md);
                   also at a spike with the subtract reset (ū = u - V_th passes u on)
      warm-up(k, m) = κ[k-m] σ'(u[m]) replaces the whole column where a[m] < 1/(4τs);
                   the earlier columns chain through the un-replaced φ(k, p)   (S 2.3)

    ``terms=True`` returns a dict of the four T×T term matrices (they sum to φ).
    """
    _check_reset(reset)
    u, du, a = _floats(u), _floats(du), _floats(a)
    theta_m = 1.0 / tau_m                                   # θm = 1/τm
    T = len(u)

    def zeros():
        return [[0.0] * T for _ in range(T)]                # a fresh T×T matrix of zeros

    phi_1, phi_2, leak, warm = zeros(), zeros(), zeros(), zeros()
    chain = zeros()                                         # un-replaced φ: earlier columns chain through it
    for m in reversed(range(T)):
        p = m + 1                                           # the next spike after m ...
        while p < T and not s[p]:
            p += 1                                          # ... or T if none
        passthrough = (not s[m]) or reset == "subtract"     # ∂ū[m]/∂u[m] = 1 with the spike time held
        if s[m]:
            dt_du = -bounded_inverse(du[m], bound)          # ∂t_m/∂u[t_m] = -1/Δu[m], bounded   (S 15)
            R_m = u[m] if reset == "zero" else v_th         # what the reset removes
        for k in range(T):
            phi_kp = chain[k][p] if p < T else 0.0          # φ(t_k, t_p); 0 with no next spike
            if s[m]:
                phi_1[k][m] = psc_time_derivative(k, m, tau_s, reading) * dt_du               # (S 13)
                if p < T:
                    phi_2[k][m] = phi_kp * reset_time_derivative(p, m, R_m, tau_m, reading) * dt_du  # (S 16)
            if passthrough:
                leak[k][m] = (1.0 - theta_m) ** (p - m) * phi_kp                 # leak, authors_code.md
            chain[k][m] = phi_1[k][m] + phi_2[k][m] + leak[k][m]                             # (S 17)
        if warmup and warmup_applies(a[m], tau_s):          # a[m] < 1/(4τs)   (S 2.3)
            for k in range(T):
                warm[k][m] = kappa_at(k - m, tau_s) * warmup_derivative(u[m], v_th)  # κ[k-m] σ'(u[m])
                phi_1[k][m] = phi_2[k][m] = leak[k][m] = 0.0  # the column is replaced
    if terms:
        return {"phi_1": phi_1, "phi_2": phi_2, "leak": leak, "warmup": warm}
    return [[phi_1[k][m] + phi_2[k][m] + leak[k][m] + warm[k][m] for m in range(T)] for k in range(T)]


# =============================================================================
# The event-shift model of one neuron, docs/gradient.md
# =============================================================================
def event_shift_neuron(x, s0, u0, du0, tau_m, tau_s, v_th, reset):
    """PSC a[0..T-1] of one neuron under the event-shift model around a nominal run.

    The nominal spike steps m_j (where s0 = 1), membrane u⁰ and slope Δu⁰ are held:
      u[t] = (1-θm) ū[t-1] + x[t]                 (no threshold test)      (4)
      τ_j = m_j - (u[m_j] - u⁰[m_j]) / Δu⁰[m_j]   (linear rise in the step)  gradient.md
      ū[m_j] = u[m_j] - R (1-θm)^{m_j - τ_j},  R = u[m_j] (zero) or V_th (subtract)
      ū[t] = u[t] at the other steps
      a[k] = Σ_j [k ≥ m_j] θs (1-θs)^{k - τ_j}                             (2), gradient.md
    Returns a list of floats (it equals the discrete run at x = nominal x).
    """
    _check_reset(reset)
    x, u0, du0 = _floats(x), _floats(u0), _floats(du0)
    theta_m = 1.0 / tau_m                                   # θm = 1/τm
    theta_s = 1.0 / tau_s                                   # θs = 1/τs
    u_reset_prev = 0.0                                      # ū[-1] = 0
    spike_times = []                                        # (m_j, τ_j)
    a = []
    for t in range(len(x)):
        u_t = (1.0 - theta_m) * u_reset_prev + x[t]         # u[t] = (1-θm) ū[t-1] + x[t]   (4)
        if s0[t]:
            tau_j = t - (u_t - u0[t]) / du0[t]              # τ_j = m_j - (u - u⁰)/Δu⁰   gradient.md
            R = u_t if reset == "zero" else v_th            # reset size
            u_reset_prev = u_t - R * (1.0 - theta_m) ** (t - tau_j)  # ū = u - R (1-θm)^{m-τ}   gradient.md
            spike_times.append((t, tau_j))
        else:
            u_reset_prev = u_t                              # no spike: ū[t] = u[t]
        a_t = 0.0
        for _m_j, tau_j in spike_times:                     # every spike with m_j ≤ t
            a_t += theta_s * (1.0 - theta_s) ** (t - tau_j)  # θs (1-θs)^{t-τ_j}   (2), gradient.md
        a.append(a_t)
    return a


# =============================================================================
# Dense layer, losses, targets (docs/model.md; eqs. (7), (8), (10))
# =============================================================================
def dense_forward_loops(a_prev, W):
    """x[t, b, i] = Σ_j W[i, j] a_prev[t, b, j]: same step, no bias   (4).

    ``a_prev`` (T, B, N_in), ``W`` (N_out, N_in) -> x (T, B, N_out).
    """
    a_prev, W = np.asarray(a_prev), np.asarray(W)
    T, B, n_in = a_prev.shape
    n_out = W.shape[0]
    x = np.zeros((T, B, n_out), dtype=np.float64)           # (T, B, N_out)
    for t in range(T):
        for b in range(B):
            for i in range(n_out):
                total = 0.0
                for j in range(n_in):
                    total += float(W[i, j]) * float(a_prev[t, b, j])  # W^l a^{l-1}[t]   (4)
                x[t, b, i] = total
    return x


def dense_backward_loops(dL_dx, a_prev, W):
    """Backward of :func:`dense_forward_loops`, sums written out:

      ∂L/∂W[i, j] = Σ_t Σ_b δ[t, b, i] a_prev[t, b, j]                  (8)
      g_prev[t, b, j] = Σ_i W[i, j] δ[t, b, i]                          (10), (S 12)

    Returns ``(g_prev (T, B, N_in), dW (N_out, N_in))``.
    """
    dL_dx, a_prev, W = np.asarray(dL_dx), np.asarray(a_prev), np.asarray(W)
    T, B, n_out = dL_dx.shape
    n_in = a_prev.shape[-1]
    dW = np.zeros((n_out, n_in), dtype=np.float64)          # (N_out, N_in)
    g_prev = np.zeros((T, B, n_in), dtype=np.float64)       # (T, B, N_in)
    for i in range(n_out):
        for j in range(n_in):
            total = 0.0
            for t in range(T):
                for b in range(B):
                    total += float(dL_dx[t, b, i]) * float(a_prev[t, b, j])  # δ^l[t] a^{l-1}[t]ᵀ   (8)
            dW[i, j] = total
    for t in range(T):
        for b in range(B):
            for j in range(n_in):
                total = 0.0
                for i in range(n_out):
                    total += float(W[i, j]) * float(dL_dx[t, b, i])  # (W^l)ᵀ δ^l[t]   (10)
                g_prev[t, b, j] = total
    return g_prev, dW


def kernel_loss_loops(a, a_hat):
    """L = ½ Σ_{t,b,i} (a[t,b,i] - â[t,b,i])², g = a - â   (7), (S 10). Returns ``(L, g)``."""
    a, a_hat = np.asarray(a), np.asarray(a_hat)
    T, B, C = a.shape
    L = 0.0
    g = np.zeros((T, B, C), dtype=np.float64)
    for t in range(T):
        for b in range(B):
            for i in range(C):
                diff = float(a[t, b, i]) - float(a_hat[t, b, i])  # a - â
                L += 0.5 * diff * diff                      # ½ (a - â)²   (7)
                g[t, b, i] = diff                           # ∂L/∂a = a - â   (S 10)
    return L, g


def count_loss_loops(a, labels, desired_count, undesired_count):
    """Count loss (authors' code, N-MNIST), docs/model.md:

      c_i = Σ_t a_i[t];  e_i = (c_i - c*_i)/T,  c* = desired (label) | undesired (other)
      e_i = 0 where the label neuron is above its target or another below its
      g_i[t] = e_i at every t;  L = ½ T Σ e_i²
    Returns ``(L, g)``.
    """
    a = np.asarray(a)
    T, B, C = a.shape
    L = 0.0
    g = np.zeros((T, B, C), dtype=np.float64)
    for b in range(B):
        for i in range(C):
            c = 0.0
            for t in range(T):
                c += float(a[t, b, i])                      # c_i = Σ_t a_i[t]
            is_label = int(labels[b]) == i
            target = desired_count if is_label else undesired_count  # c*_i
            e = (c - target) / T                            # e_i = (c_i - c*_i)/T
            if (is_label and c > target) or (not is_label and c < target):
                e = 0.0                                     # satisfied: no error
            L += 0.5 * T * e * e                            # ½ T e_i²
            for t in range(T):
                g[t, b, i] = e                              # g_i[t] = e_i
    return L, g


def desired_train(n_steps, convention="authors"):
    """The label neuron's desired spike train d, a list of 0/1, docs/model.md / (S 2.4).

    T = 5: paper [0,1,0,1,1], authors' code [0,1,1,1,1]. Other T: [0,1,0,1,...]
    (the authors' code for T ≥ 10; the engine uses it for every T ≠ 5).
    """
    if convention not in ("paper", "authors"):
        raise ValueError(f"convention must be 'paper' or 'authors', got {convention!r}")
    if n_steps == 5:
        return [0, 1, 0, 1, 1] if convention == "paper" else [0, 1, 1, 1, 1]  # (S 2.4) | authors' code
    return [t % 2 for t in range(n_steps)]                  # 0, 1, 0, 1, ...


def kernel_target_loops(labels, n_classes, n_steps, tau_s, convention="authors", filter_passes=2):
    """â (T, B, C): κ * d for the label neuron (paper: one pass) or κ * (κ * d)
    (authors' code: two passes), 0 for the others   (7), docs/model.md."""
    d = [float(v) for v in desired_train(n_steps, convention)]
    for _ in range(filter_passes):
        d = input_filter(d, tau_s)                          # κ * d: the same synaptic filter   (2)
    B = len(labels)
    a_hat = np.zeros((n_steps, B, n_classes), dtype=np.float64)
    for b in range(B):
        for t in range(n_steps):
            a_hat[t, b, int(labels[b])] = d[t]              # label neuron: filtered d; others 0
    return a_hat


def predict_loops(a):
    """argmax_i Σ_t a_i[t] per sample; ties go to the lowest index, docs/model.md."""
    a = np.asarray(a)
    T, B, C = a.shape
    out = []
    for b in range(B):
        best, best_c = 0, None
        for i in range(C):
            c = sum(float(a[t, b, i]) for t in range(T))   # Σ_t a_i[t]
            if best_c is None or c > best_c:                # strict: the first maximum wins
                best, best_c = i, c
        out.append(best)
    return np.array(out)


# =============================================================================
# A small dense network, one sample, one neuron, one step at a time
# =============================================================================
def network_forward_loops(x_in, weights, tau_m, tau_s, v_th, reset):
    """Dense network: a⁰ = κ * x_in, then per layer x = W a, LIF neurons   model.md.

    ``x_in`` (T, B, N0); ``weights`` a list of (N_l, N_{l-1}) matrices.
    Returns ``{"input_psc": (T, B, N0), "layers": [ {x, u, du, s, a} each (T, B, N_l) ]}``.
    """
    x_in = np.asarray(x_in, dtype=np.float64)
    T, B, n0 = x_in.shape
    a_prev = np.zeros((T, B, n0), dtype=np.float64)         # a⁰, (T, B, N0)
    for b in range(B):
        for j in range(n0):
            a_prev[:, b, j] = input_filter(x_in[:, b, j], tau_s)  # a⁰ = κ * x_in   model.md
    result = {"input_psc": a_prev, "layers": []}
    for W in weights:
        x = dense_forward_loops(a_prev, W)                  # x^l = W^l a^{l-1}   (4)
        n = x.shape[-1]
        layer = {name: np.zeros((T, B, n), dtype=np.float64) for name in ("x", "u", "du", "a")}
        layer["s"] = np.zeros((T, B, n), dtype=bool)
        for b in range(B):
            for i in range(n):
                out = lif_neuron_forward(x[:, b, i], tau_m, tau_s, v_th, reset)  # (2)-(5)
                layer["x"][:, b, i] = out["x"]
                layer["u"][:, b, i] = out["u"]
                layer["du"][:, b, i] = out["du"]
                layer["s"][:, b, i] = out["s"]
                layer["a"][:, b, i] = out["a"]
        result["layers"].append(layer)
        a_prev = layer["a"]                                 # a layer passes its PSC on
    return result


def network_backward_loops(dL_da, forward, weights, tau_m, tau_s, v_th, reset, reading="authors",
                           bound=SENSITIVITY_BOUND, warmup=True):
    """∂L/∂W^l for every layer of :func:`network_forward_loops`, top down:

      δ^l = per-neuron backward of g^l (reading: authors authors_code.md | timing gradient.md)   (9)
      ∂L/∂W^l = Σ_t δ^l[t] a^{l-1}[t]ᵀ                                     (8)
      g^{l-1} = (W^l)ᵀ δ^l                                                 (10)

    Returns ``(dW list, delta list)``, both indexed by layer.
    """
    n_layers = len(weights)
    dWs, deltas = [None] * n_layers, [None] * n_layers
    g = np.asarray(dL_da, dtype=np.float64)                 # g^L = ∂L/∂a^L, (T, B, C)
    for li in reversed(range(n_layers)):
        layer = forward["layers"][li]
        T, B, n = layer["u"].shape
        delta = np.zeros((T, B, n), dtype=np.float64)       # δ^l, (T, B, N_l)
        for b in range(B):
            for i in range(n):
                delta[:, b, i] = lif_neuron_backward(
                    g[:, b, i], layer["u"][:, b, i], layer["du"][:, b, i], layer["s"][:, b, i],
                    layer["a"][:, b, i], tau_m, tau_s, v_th, reset,
                    reading=reading, bound=bound, warmup=warmup)           # (9), (S 17)
        a_prev = forward["layers"][li - 1]["a"] if li > 0 else forward["input_psc"]
        g, dWs[li] = dense_backward_loops(delta, a_prev, weights[li])      # (8), (10)
        deltas[li] = delta
    return dWs, deltas


# =============================================================================
# A worked example: `python3 -m reference.loops` (or under `python3 -m pdb -m reference.loops`)
# =============================================================================
def demo():
    """One neuron, T = 6, τm = 5, τs = 3, V_th = 1, zero reset: the forward states and
    δ of both readings for g = ∂L/∂a = a - â with â the authors' target (two passes)."""
    tau_m, tau_s, v_th, reset = 5.0, 3.0, 1.0, "zero"
    x = [0.6, 0.7, 0.9, 0.2, 1.3, 0.4]                      # input currents x[t]
    fwd = lif_neuron_forward(x, tau_m, tau_s, v_th, reset)
    a_hat = [float(v) for v in kernel_target_loops([0], 1, len(x), tau_s, "authors", 2)[:, 0, 0]]
    g = [a_t - a_hat_t for a_t, a_hat_t in zip(fwd["a"], a_hat)]            # g = a - â   (S 10)
    delta_authors = authors_backward(g, fwd["u"], fwd["du"], fwd["s"], fwd["a"], tau_m, tau_s, v_th, reset)
    delta_timing = timing_backward(g, fwd["u"], fwd["du"], fwd["s"], fwd["a"], tau_m, tau_s, v_th, reset)
    print(" t      x      u     du  s      a      g  δ_authors  δ_timing")
    for t in range(len(x)):
        print(f"{t:2d} {x[t]:6.3f} {fwd['u'][t]:6.3f} {fwd['du'][t]:6.3f} {fwd['s'][t]:2d} "
              f"{fwd['a'][t]:6.3f} {g[t]:6.3f} {delta_authors[t]:10.4f} {delta_timing[t]:9.4f}")
    return fwd, g, delta_authors, delta_timing


if __name__ == "__main__":
    demo()
