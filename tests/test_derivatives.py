"""Each derivative factor of TSSL-BP against central differences of the smooth
function it differentiates (docs/gradient.md), in float64.

Central differences with step h = 1e-6 on functions of O(1) values: truncation
error ~ h² f''' ≈ 1e-12, rounding error ~ ε·|f|/h ≈ 1e-10; tolerances of 1e-7
(relative) leave two orders of magnitude of headroom yet catch any wrong factor
(a wrong sign, a missing (1-θ) or ln(1-θ) is an O(0.1-1) relative error).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from fdiff import RTOL_FD as RTOL
from fdiff import central, fd_atol, rounding
from hypothesis import assume, given
from hypothesis import strategies as st

from snnsim.eventshift import event_shift_lif
from snnsim.layers import dense_backward, dense_forward
from snnsim.loss import count_loss, kernel_loss
from snnsim.neuron import lif_forward
from snnsim.params import EXACT_TIMING, WARMUP_WIDTH, WARMUP_Z_CLIP, GradientParams, NeuronParams
from snnsim.tsslbp import (
    kappa,
    lif_backward,
    phi_matrix,
    psc_shift_scale,
    reset_shift_coefficient,
    spike_time_sensitivity,
    warmup_mask,
    warmup_surrogate,
)

taus = st.floats(1.5, 20.0)


# --- spike-time sensitivity (12) with its bound (S 2.3) -------------------------
@given(v_th=st.floats(0.2, 2.0), du0=st.floats(0.02, 3.0), frac=st.floats(0.01, 0.99),
       bound=st.one_of(st.none(), st.floats(0.5, 20.0)), m=st.integers(0, 30))
def test_spike_time_sensitivity_fd(v_th, du0, frac, bound, m):
    """t*(u) = m - (u - V_th)/Δu⁰ (linear rise within step m); ∂t*/∂u = -1/Δu⁰, clipped at ±bound."""
    u0 = v_th + frac * du0                       # crossed V_th within the step
    t_star = lambda u: m - (u - v_th) / du0      # noqa: E731
    fd = central(t_star, u0)
    got = spike_time_sensitivity(np.array([du0]), np.array([True]), bound)[0]
    expected = fd if bound is None or 1.0 / du0 <= bound else -bound
    assert got == pytest.approx(expected, rel=RTOL), (got, fd)
    assert spike_time_sensitivity(np.array([du0]), np.array([False]), bound)[0] == 0.0


# --- PSC shift (12) ------------------------------------------------------------
@given(tau_s=taus, m=st.integers(0, 10), lag=st.integers(0, 20))
def test_psc_shift_fd(tau_s, m, lag):
    """A spike of step m at real time τ contributes θs (1-θs)^{k-τ} at k ≥ m;
    the timing reading's ∂a[k]/∂t_m = -c κ[k-m] must be its τ-derivative."""
    theta_s = 1.0 / tau_s
    k = m + lag
    a_k = lambda tau: theta_s * (1.0 - theta_s) ** (k - tau)   # noqa: E731
    fd = central(a_k, float(m))
    kap = kappa(k - m + 1, theta_s, np, np.float64)[k - m]
    assert -psc_shift_scale(theta_s, "timing") * kap == pytest.approx(fd, rel=RTOL)
    # The authors' reading, section 5: ∂a[t_k]/∂t_m = -κ[k-m]: opposite sign, other scale.
    assert -psc_shift_scale(theta_s, "authors") * kap == pytest.approx(-kap, rel=1e-15)
    assert np.sign(-psc_shift_scale(theta_s, "authors") * kap) == -np.sign(fd)


# --- reset shift (13) -----------------------------------------------------------
@given(tau_m=taus, R=st.floats(0.1, 3.0), m=st.integers(0, 10), gap=st.integers(1, 20))
def test_reset_shift_fd(tau_m, R, m, gap):
    """A reset of size R at real time τ contributes -R (1-θm)^{t_p-τ} at step t_p;
    ∂u[t_p]/∂t_m = b R (1-θm)^{p-m-1} with b = reset_shift_coefficient(timing)."""
    neuron = NeuronParams(tau_m=tau_m)
    theta_m = neuron.theta_m
    p = m + gap
    contribution = lambda tau: -R * (1.0 - theta_m) ** (p - tau)   # noqa: E731
    fd = central(contribution, float(m))
    got = reset_shift_coefficient(neuron, "timing") * R * (1.0 - theta_m) ** (gap - 1)
    assert got == pytest.approx(fd, rel=RTOL)
    # authors (section 5): -θm R (1-θm)^{p-m-1}, same sign, θm for -ln(1-θm)·(1-θm)
    authors = reset_shift_coefficient(neuron, "authors") * R * (1.0 - theta_m) ** (gap - 1)
    assert authors == pytest.approx(-theta_m * R * (1.0 - theta_m) ** (gap - 1), rel=1e-15)
    assert np.sign(authors) == np.sign(fd)


# --- warm-up surrogate (S 2.3) ------------------------------------------------
@given(v_th=st.floats(0.2, 2.0), z=st.floats(-WARMUP_Z_CLIP + 0.01, WARMUP_Z_CLIP - 0.01))
def test_warmup_surrogate_fd(v_th, z):
    """σ'(u) is the derivative of sigmoid((u - V_th)/w), w = 0.2, inside the clip."""
    u0 = v_th - z * WARMUP_WIDTH
    sig = lambda u: 1.0 / (1.0 + math.exp(-(u - v_th) / WARMUP_WIDTH))   # noqa: E731
    fd = central(sig, u0)
    assert warmup_surrogate(np.array([u0]), v_th)[0] == pytest.approx(fd, rel=1e-6, abs=1e-12)


@given(v_th=st.floats(0.2, 2.0), beyond=st.floats(0.01, 50.0), side=st.sampled_from([-1.0, 1.0]))
def test_warmup_surrogate_clip(v_th, beyond, side):
    """Outside |z| ≤ 8 the surrogate is held at its value at the clip (authors' code)."""
    u_out = v_th - side * (WARMUP_Z_CLIP + beyond) * WARMUP_WIDTH
    u_edge = v_th - side * WARMUP_Z_CLIP * WARMUP_WIDTH
    assert warmup_surrogate(np.array([u_out]), v_th)[0] == pytest.approx(
        warmup_surrogate(np.array([u_edge]), v_th)[0], rel=1e-12)


def test_warmup_surrogate_as_delta():
    """δ = σ'(u) S is the derivative of Σ_k g[k] (κ * σ((u - V_th)/w))[k] in each u[t]."""
    rng = np.random.default_rng(0)
    T, neuron = 12, NeuronParams()
    x = np.full((T, 1, 1), 0.05)                                 # a silent neuron: warm-up everywhere
    _, state = lif_forward(x, neuron)
    assert not state.s.any() and warmup_mask(state.a, neuron.theta_s).all()
    g = rng.standard_normal((T, 1, 1))
    K = np.tril(np.array([[kappa(T, neuron.theta_s, np, np.float64)[max(k - m, 0)] for m in range(T)]
                          for k in range(T)]))
    smooth_loss = lambda u: g[:, 0, 0] @ (K @ (1 / (1 + np.exp(-(u - neuron.v_th) / WARMUP_WIDTH))))  # noqa: E731
    u0 = state.u[:, 0, 0]
    fd = np.array([central(lambda e, t=t: smooth_loss(u0 + e * np.eye(T)[t]), 0.0) for t in range(T)])
    delta = lif_backward(g, state, neuron, GradientParams(warmup=True))[:, 0, 0]
    np.testing.assert_allclose(delta, fd, rtol=1e-6, atol=1e-12)


# --- φ in `timing` form against the event-shift model -----------------------------
@given(T=st.integers(2, 30), reset=st.sampled_from(["zero", "subtract"]), seed=st.integers(0, 2**31),
       tau_m=st.floats(2.0, 10.0), tau_s=st.floats(2.0, 8.0), drive=st.floats(0.3, 1.5))
def test_phi_timing_vs_event_shift(T, reset, seed, tau_m, tau_s, drive):
    """Column m of φ (timing, exact) = ∂a[·]/∂x[m] of the event-shift model, by central differences."""
    rng = np.random.default_rng(seed)
    neuron = NeuronParams(tau_m=tau_m, tau_s=tau_s, reset=reset)
    x = rng.uniform(0, drive, size=(T, 3, 2))                      # (T, B, N)
    _, state = lif_forward(x, neuron)
    assume(state.s.any())
    assume(np.abs(state.u - neuron.v_th).min() > 1e-6)             # off the threshold kink
    assume(np.abs(state.du[state.s]).min() > 0.05)                 # well-conditioned (test_gradients)
    phi = phi_matrix(state, neuron, EXACT_TIMING)                    # (B, N, T, T) [.., k, m]
    for m in range(T):
        e = np.zeros_like(x)
        e[m] = 1.0
        fd = central(lambda h, e=e: event_shift_lif(x + h * e, state, neuron))
        # rounding of the central difference: ~ε·T·max|a|/h ≈ 2e-16·30/1e-6 ≈ 6e-9
        np.testing.assert_allclose(np.moveaxis(phi[..., m], -1, 0), fd, rtol=1e-6, atol=2e-8,
                                   err_msg=f"column m={m}")


# --- losses -----------------------------------------------------------------------
@given(seed=st.integers(0, 2**31), T=st.integers(1, 10), B=st.integers(1, 4), C=st.integers(1, 5))
def test_kernel_loss_fd(seed, T, B, C):
    """L = ½ Σ (a - â)²: g = a - â, checked along a random direction."""
    rng = np.random.default_rng(seed)
    a, a_hat, v = rng.random((T, B, C)), rng.random((T, B, C)), rng.standard_normal((T, B, C))
    L, g = kernel_loss(a, a_hat)
    fd = central(lambda e: kernel_loss(a + e * v, a_hat)[0], 0.0)
    assert float((g * v).sum()) == pytest.approx(fd, rel=1e-7, abs=rounding(L))


@given(seed=st.integers(0, 2**31), T=st.integers(1, 10), B=st.integers(1, 4), C=st.integers(2, 5))
def test_count_loss_fd(seed, T, B, C):
    """L = ½ T Σ e², e = (Σ_t a - c*)/T, masked where the target is already met;
    away from the mask's switching points the mask is constant and g is exact."""
    rng = np.random.default_rng(seed)
    a = rng.random((T, B, C))
    labels = rng.integers(0, C, size=B)
    desired, undesired = 0.6 * T, 0.3 * T
    c = a.sum(0)
    target = np.where(labels[:, None] == np.arange(C), desired, undesired)
    assume(np.abs(c - target).min() > 1e-3)
    v = rng.standard_normal(a.shape)
    L, g = count_loss(a, labels, desired, undesired)
    fd = central(lambda e: count_loss(a + e * v, labels, desired, undesired)[0], 0.0)
    assert float((g * v).sum()) == pytest.approx(fd, rel=1e-7, abs=rounding(L))


# --- the dense layer ------------------------------------------------------------------
@given(seed=st.integers(0, 2**31), T=st.integers(1, 6), B=st.integers(1, 4),
       n_in=st.integers(1, 7), n_out=st.integers(1, 7))
def test_dense_layer_fd(seed, T, B, n_in, n_out):
    """x = W a: ∂⟨v, x⟩/∂W (8) and ∂⟨v, x⟩/∂a (10) along random directions."""
    rng = np.random.default_rng(seed)
    a, W = rng.standard_normal((T, B, n_in)), rng.standard_normal((n_out, n_in))
    v = rng.standard_normal((T, B, n_out))
    dW_dir, da_dir = rng.standard_normal(W.shape), rng.standard_normal(a.shape)
    x, cache = dense_forward(a, W)
    da, dW = dense_backward(v, cache)
    fd_W = central(lambda e: float((dense_forward(a, W + e * dW_dir)[0] * v).sum()), 0.0)
    fd_a = central(lambda e: float((dense_forward(a + e * da_dir, W)[0] * v).sum()), 0.0)
    # rounding of a central difference: ~ ε Σ|terms| / h; allow 100 times that
    round_W = fd_atol(v, x) + fd_atol(v, np.einsum("tbi,oi->tbo", a, dW_dir))
    round_a = fd_atol(v, x) + fd_atol(v, np.einsum("tbi,oi->tbo", da_dir, W))
    assert float((dW * dW_dir).sum()) == pytest.approx(fd_W, rel=1e-7, abs=round_W)
    assert float((da * da_dir).sum()) == pytest.approx(fd_a, rel=1e-7, abs=round_a)


# --- the authors' reading against section 5's formulas ---------------------------------
def _one_neuron(x, reset="zero"):
    neuron = NeuronParams(reset=reset)
    _, state = lif_forward(np.asarray(x, dtype=np.float64)[:, None, None], neuron)
    return neuron, state


def test_authors_clip_at_eight():
    """A spike that barely crosses (Δu < 1/8) gets r = 8, not 1/Δu (section 5)."""
    neuron, state = _one_neuron([0.9, 0.3, 0.0, 0.0])              # u[1] = 0.72 + 0.3 = 1.02, Δu = 0.12
    assert state.s[:, 0, 0].tolist() == [False, True, False, False]
    du = state.du[1, 0, 0]
    assert 1.0 / du > 8.0
    g = np.zeros((4, 1, 1))
    g[1] = 1.0                                                      # S[1] = θs
    delta = lif_backward(g, state, neuron, GradientParams(warmup=False))
    assert delta[1, 0, 0] == pytest.approx(8.0 * neuron.theta_s, rel=1e-12)
    unbounded = lif_backward(g, state, neuron, GradientParams(sensitivity_bound=None, warmup=False))
    assert unbounded[1, 0, 0] == pytest.approx(neuron.theta_s / du, rel=1e-12)
    # the silent step before it receives the leak (1-θm) G[1]
    assert delta[0, 0, 0] == pytest.approx((1 - neuron.theta_m) * 8.0 * neuron.theta_s, rel=1e-12)


def test_authors_spike_step_formula():
    """G[m] = r S[m] + ρ θm u[m] r with ρ = G[m+1] (section 5), two spikes, zero reset."""
    x = [1.5, 0.2, 0.9, 0.1, 0.0]
    neuron, state = _one_neuron(x)
    s = state.s[:, 0, 0]
    assert s.tolist() == [True, False, True, False, False]
    u, du = state.u[:, 0, 0], state.du[:, 0, 0]
    g = np.array([0.3, -0.2, 0.5, 0.7, -0.4])
    th_s, th_m = neuron.theta_s, neuron.theta_m
    S = [sum(th_s * (1 - th_s) ** (k - t) * g[k] for k in range(t, 5)) for t in range(5)]
    r = [min(1 / du[t], 8.0) if s[t] else 0.0 for t in range(5)]
    G = [0.0] * 6
    for t in (4, 3):
        G[t] = G[t + 1] * (1 - th_m)
    G[2] = r[2] * S[2] + G[3] * th_m * u[2] * r[2]
    G[1] = G[2] * (1 - th_m)
    G[0] = r[0] * S[0] + G[1] * th_m * u[0] * r[0]
    delta = lif_backward(g[:, None, None], state, neuron, GradientParams(warmup=False))[:, 0, 0]
    np.testing.assert_allclose(delta, G[:5], rtol=1e-12)


def test_warmup_switch_threshold():
    """Warm-up replaces δ[t] exactly where a[t] < 1/(4 τs), and the carry keeps G."""
    neuron = NeuronParams(tau_s=3.0)
    a = np.array([0.25 / 3.0 - 1e-9, 0.25 / 3.0, 0.25 / 3.0 + 1e-9])
    assert warmup_mask(a, neuron.theta_s).tolist() == [True, False, False]
    # after one spike a decays by (2/3) per step; 1/12 is crossed between 3 and 4 steps later
    x = [1.5] + [0.0] * 7
    neuron, state = _one_neuron(x)
    warm = warmup_mask(state.a[:, 0, 0], neuron.theta_s)
    assert warm.tolist() == [False, False, False, False, True, True, True, True]
    g = np.linspace(-1, 1, 8)[:, None, None]
    plain = lif_backward(g, state, neuron, GradientParams(warmup=False))[:, 0, 0]
    warmed = lif_backward(g, state, neuron, GradientParams(warmup=True))[:, 0, 0]
    np.testing.assert_array_equal(warmed[~warm], plain[~warm])      # the spike's δ uses the un-warmed carry
    assert not np.allclose(warmed[warm], plain[warm])
