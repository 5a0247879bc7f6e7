"""The vectorised engine equals the plain-loop reference (``reference/loops.py``).

Both compute the same float64 arithmetic in a different order (vector ops,
BLAS matmuls, the O(T) recursion for S against its O(T²) definition), so they
agree to a few ulps times the number of terms summed (T ≤ 30, a few neurons)
and the chain amplification (|1/Δu| unbounded in some cases): RTOL = 1e-10
leaves a margin of about 10⁴ over that, and still fails on any wrong term. An
absolute floor ATOL_REL × (the array's largest entry) absorbs entries that
cancel to ~0.

Draws keep the membrane off the threshold (|u - V_th| > 1e-9 everywhere) so
that the engine and the reference fire the same spikes, and the PSC off the
warm-up switch (|a - 1/(4τs)| > 1e-12) so that they take the same branch.

The timing reference is checked against central differences of the
reference's own event-shift model (docs/gradient.md), as the brief asks.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

if importlib.util.find_spec("reference") is None:                # `reference/` lives at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fdiff import central

from reference import loops as ref
from snnsim import Dense, GradientParams, Network, NeuronParams
from snnsim.eventshift import event_shift_lif
from snnsim.layers import dense_backward, dense_forward
from snnsim.loss import count_loss, desired_spike_train, kernel_loss, kernel_target, predict
from snnsim.neuron import lif_forward, psc_filter
from snnsim.tsslbp import (
    kappa,
    kernel_matrix,
    lif_backward,
    next_spike_index,
    phi_matrix,
    psc_reverse_sum,
    spike_time_sensitivity,
    warmup_mask,
    warmup_surrogate,
)

RTOL = 1e-10            # same arithmetic, different order (see module docstring)
ATOL_REL = 1e-12        # absolute floor, relative to the largest entry compared
OFF_THRESHOLD = 1e-9    # |u - V_th| kept above this (brief)
OFF_WARMUP_SWITCH = 1e-12
FD_STEP = 1e-6          # central-difference step, float64
FD_RTOL = 1e-7          # see test_timing_reference_vs_event_shift_fd
FD_ROUNDOFF = 1e-9      # × Σ|g|: the round-off floor of (L(x+h) - L(x-h)) / 2h
MIN_SPIKE_SLOPE = 1e-2  # |Δu| at spikes in the FD test: truncation error ~ (h/Δu)²

RESETS = ("zero", "subtract")
READINGS = ("authors", "timing")
BOUNDS = (ref.SENSITIVITY_BOUND, None)


def close(actual, desired, what=""):
    """assert_allclose with RTOL and an absolute floor relative to the largest entry."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    scale = max(1.0, float(np.abs(desired).max(initial=0.0)))
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL_REL * scale, err_msg=what)


# --- strategies ------------------------------------------------------------------
taus = st.one_of(st.just(5.0), st.just(3.0), st.floats(1.5, 12.0))
v_ths = st.one_of(st.just(1.0), st.floats(0.3, 2.0))


@st.composite
def neuron_cases(draw, resets=RESETS):
    """Input currents x (T, B, N) for a few independent LIF neurons, and their parameters."""
    T = draw(st.integers(1, 30))
    B = draw(st.integers(1, 3))
    N = draw(st.integers(1, 4))
    neuron = NeuronParams(tau_m=draw(taus), tau_s=draw(taus), v_th=draw(v_ths),
                          reset=draw(st.sampled_from(resets)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    drive = draw(st.floats(-0.2, 1.2)) * neuron.v_th       # mean current, in thresholds
    spread = draw(st.floats(0.2, 3.0))                      # large spreads make Δu < 0 spikes (subtract)
    x = rng.normal(drive, spread, size=(T, B, N))           # (T, B, N)
    g = rng.normal(size=(T, B, N))                          # upstream ∂L/∂a
    return x, g, neuron


def reference_forward(x, neuron):
    """Reference forward of every neuron of x (T, B, N): dict of (T, B, N) arrays."""
    T, B, N = x.shape
    out = {k: np.zeros((T, B, N)) for k in ("u", "du", "a")}
    out["s"] = np.zeros((T, B, N), dtype=bool)
    for b, i in product(range(B), range(N)):
        f = ref.lif_neuron_forward(x[:, b, i], neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset)
        for k in out:
            out[k][:, b, i] = f[k]
    return out


def assume_well_posed(fwd, neuron, need_spikes=True):
    """Off the threshold, off the warm-up switch, and (optionally) some spikes."""
    assume(np.all(np.abs(fwd["u"] - neuron.v_th) > OFF_THRESHOLD))
    assume(np.all(np.abs(fwd["a"] - 1.0 / (4.0 * neuron.tau_s)) > OFF_WARMUP_SWITCH))
    if need_spikes:
        assume(fwd["s"].any())


def per_neuron(fn, arrays, *args, **kwargs):
    """Apply a per-neuron reference function to every (b, i) of (T, B, N) arrays."""
    T, B, N = arrays[0].shape
    out = np.zeros((T, B, N))
    for b, i in product(range(B), range(N)):
        out[:, b, i] = fn(*[arr[:, b, i] for arr in arrays], *args, **kwargs)
    return out


# --- forward ---------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(neuron_cases())
def test_lif_forward_matches_reference(case):
    """lif_forward (u, Δu, s, a) = lif_neuron_forward, both resets   (2)-(5)."""
    x, _, neuron = case
    fwd = reference_forward(x, neuron)
    assume_well_posed(fwd, neuron, need_spikes=False)
    a, state = lif_forward(x, neuron)
    np.testing.assert_array_equal(state.s, fwd["s"])
    for k in ("u", "du", "a"):
        close(getattr(state, k), fwd[k], k)
    close(a, fwd["a"], "returned a")


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), taus, st.integers(0, 2**32 - 1))
def test_input_filter_matches_psc_filter(T, tau_s, seed):
    """psc_filter = input_filter: a⁰[t] = (1-θs) a⁰[t-1] + θs x[t]   (2)."""
    x = np.random.default_rng(seed).normal(size=(T, 2))
    expected = np.stack([ref.input_filter(x[:, j], tau_s) for j in range(2)], axis=1)
    close(psc_filter(x, 1.0 / tau_s), expected)


def test_kappa_and_kernel_matrix():
    """kappa, kernel_matrix = κ[k-m] from kappa_at   (2)."""
    T, tau_s = 7, 3.0
    close(kappa(T, 1.0 / tau_s, np, np.float64), [ref.kappa_at(k, tau_s) for k in range(T)])
    K = kernel_matrix(T, 1.0 / tau_s, np, np.float64)
    close(K, [[ref.kappa_at(k - m, tau_s) for m in range(T)] for k in range(T)])


# --- backward pieces ---------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), taus, st.integers(0, 2**32 - 1))
def test_psc_reverse_sum_matches_definition(T, tau_s, seed):
    """psc_reverse_sum (recursion) = Σ_{k≥t} κ[k-t] g[k] by a double loop   (9), (12)."""
    g = np.random.default_rng(seed).normal(size=(T, 3))
    expected = np.stack([ref.psc_reverse_sum(g[:, j], tau_s) for j in range(3)], axis=1)
    close(psc_reverse_sum(g, 1.0 / tau_s), expected)


@pytest.mark.parametrize("bound", BOUNDS)
def test_spike_time_sensitivity_matches_bounded_inverse(bound):
    """spike_time_sensitivity = -bounded_inverse(Δu) at spikes, 0 elsewhere   (S 15), (S 2.3)."""
    du = np.array([2.0, 0.5, 0.1, 1e-3, -0.05, -2.0, 0.3])
    s = np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool)
    expected = [-ref.bounded_inverse(d, bound) if f else 0.0 for d, f in zip(du, s)]
    close(spike_time_sensitivity(du, s, bound), expected)


def test_warmup_surrogate_and_mask():
    """warmup_surrogate = σ'(u), warmup_mask = a < 1/(4τs)   (S 2.3)."""
    v_th, tau_s = 1.3, 3.0
    u = np.linspace(-2.0, 4.0, 61)                          # crosses both ends of the z clip
    close(warmup_surrogate(u, v_th), [ref.warmup_derivative(v, v_th) for v in u])
    a = np.linspace(0.0, 0.2, 41) + 1e-7                    # off the switch at 1/12
    np.testing.assert_array_equal(warmup_mask(a, 1.0 / tau_s), [ref.warmup_applies(v, tau_s) for v in a])


def test_next_spike_index():
    """next_spike_index = the p the reference's φ loop walks to (T if none)."""
    s = np.array([[0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=bool)
    expected = [[1, 4, 4, 4, 6, 6], [6, 6, 6, 6, 6, 6]]
    np.testing.assert_array_equal(next_spike_index(s), expected)


# --- lif_backward, every reading × warm-up × bound × reset -----------------------------
@pytest.mark.parametrize("reading,warmup,bound,reset",
                         list(product(READINGS, (True, False), BOUNDS, RESETS)))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_lif_backward_matches_reference(reading, warmup, bound, reset, data):
    """lif_backward = authors_backward | timing_backward, neuron by neuron   (9), §5, §6."""
    x, g, neuron = data.draw(neuron_cases(resets=(reset,)))
    fwd = reference_forward(x, neuron)
    assume_well_posed(fwd, neuron)
    _, state = lif_forward(x, neuron)
    delta = lif_backward(g, state, neuron, GradientParams(reading, bound, warmup))
    expected = per_neuron(ref.lif_neuron_backward, [g, fwd["u"], fwd["du"], fwd["s"], fwd["a"]],
                          neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset,
                          reading=reading, bound=bound, warmup=warmup)
    close(delta, expected)


@pytest.mark.parametrize("reading", READINGS)
def test_lif_backward_bound_and_negative_slope(reading):
    """A fixed case where the bound matters (0 < Δu < 1/8, and Δu < -1/8 and -1/8 < Δu < 0
    at subtract-reset spikes): the engine's symmetric clip = the reference's."""
    neuron = NeuronParams(tau_m=5.0, tau_s=3.0, v_th=1.0, reset="subtract")
    # step 2: u ≈ 5.7 (ū ≈ 4.7); steps 3-5 spike on the way down (Δu < 0, step 5 with
    # Δu ≈ -0.06); then a constant 0.22 creeps up to V_th and crosses at step 15 (Δu ≈ 0.02)
    x = np.array([0.9, 0.15, 5.0, 0.1, 0.0, 0.2] + [0.22] * 10)[:, None, None]
    g = np.linspace(-1.0, 1.0, x.shape[0])[:, None, None]
    fwd = reference_forward(x, neuron)
    du = fwd["du"][fwd["s"]]                                # Δu at the spikes
    inv = 1.0 / du
    assert (inv > ref.SENSITIVITY_BOUND).any() and (inv < -ref.SENSITIVITY_BOUND).any() \
        and ((inv < 0) & (inv > -ref.SENSITIVITY_BOUND)).any(), \
        f"the case no longer exercises the bound on both sides: Δu at spikes {du}"
    _, state = lif_forward(x, neuron)
    for warmup, bound in product((True, False), BOUNDS):
        delta = lif_backward(g, state, neuron, GradientParams(reading, bound, warmup))
        expected = per_neuron(ref.lif_neuron_backward, [g, fwd["u"], fwd["du"], fwd["s"], fwd["a"]],
                              neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset,
                              reading=reading, bound=bound, warmup=warmup)
        close(delta, expected, f"warmup={warmup} bound={bound}")


# --- φ explicitly ---------------------------------------------------------------------
@pytest.mark.parametrize("reading,reset", list(product(READINGS, RESETS)))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_phi_matrix_matches_reference(reading, reset, data):
    """phi_matrix (terms φ<1>, φ<2>, leak, warm-up) = phi_matrix_loops   (S 13)-(S 17)."""
    x, _, neuron = data.draw(neuron_cases(resets=(reset,)))
    warmup, bound = data.draw(st.booleans()), data.draw(st.sampled_from(BOUNDS))
    fwd = reference_forward(x, neuron)
    assume_well_posed(fwd, neuron)
    _, state = lif_forward(x, neuron)
    grad = GradientParams(reading, bound, warmup)
    terms = phi_matrix(state, neuron, grad, terms=True)     # each (B, N, T, T), [k, m]
    T, B, N = x.shape
    for b, i in product(range(B), range(N)):
        loops = ref.phi_matrix_loops(fwd["u"][:, b, i], fwd["du"][:, b, i], fwd["s"][:, b, i],
                                     fwd["a"][:, b, i], neuron.tau_m, neuron.tau_s, neuron.v_th,
                                     neuron.reset, reading, bound, warmup, terms=True)
        for name, matrix in loops.items():
            close(terms[name][b, i], matrix, f"{name} of neuron ({b}, {i})")


@pytest.mark.parametrize("reading,reset", list(product(READINGS, RESETS)))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_reference_recursion_equals_reference_phi(reading, reset, data):
    """Inside the reference: the backward recursion = Σ_k φ[k][m] g[k] with φ built by
    loops from the next-spike form   (9), (S 17). (No engine involved.)"""
    x, g, neuron = data.draw(neuron_cases(resets=(reset,)))
    warmup, bound = data.draw(st.booleans()), data.draw(st.sampled_from(BOUNDS))
    fwd = reference_forward(x, neuron)
    assume_well_posed(fwd, neuron)
    args = (neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset)
    for b, i in product(range(x.shape[1]), range(x.shape[2])):
        f = [fwd[k][:, b, i] for k in ("u", "du", "s", "a")]
        phi = np.array(ref.phi_matrix_loops(*f, *args, reading, bound, warmup))       # (T, T) [k, m]
        delta = ref.lif_neuron_backward(g[:, b, i], *f, *args, reading=reading, bound=bound, warmup=warmup)
        close(phi.T @ g[:, b, i], delta)


# --- the timing reference is the derivative of the event-shift model ----------------------
@pytest.mark.parametrize("reset", RESETS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_timing_reference_vs_event_shift_fd(reset, data):
    """timing_backward(bound=None, warmup=False) = ∂(Σ_k g[k] a[k])/∂x[m] of
    event_shift_neuron by central differences (∂u[m]/∂x[m] = 1, so δ[m] = ∂L/∂x[m]).

    Tolerance: truncation ~ (h/Δu)² relative with h = 1e-6 and |Δu| ≥ 1e-2 at
    spikes, ≤ 1e-8; round-off ~ ε Σ|g| / h ≈ 2e-10 Σ|g| absolute (a ≤ 1). Hence
    |fd - δ| ≤ 1e-7 max|δ| + 1e-9 Σ|g|.
    """
    x, g, neuron = data.draw(neuron_cases(resets=(reset,)))
    x, g = x[:, 0, 0], g[:, 0, 0]                           # one neuron, (T,)
    args = (neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset)
    f = ref.lif_neuron_forward(x, *args)
    assume(any(f["s"]))
    assume(all(abs(u - neuron.v_th) > OFF_THRESHOLD for u in f["u"]))
    assume(all(abs(du) >= MIN_SPIKE_SLOPE for du, s in zip(f["du"], f["s"]) if s))

    def loss(x_try):
        a = ref.event_shift_neuron(x_try, f["s"], f["u"], f["du"], *args)
        return sum(gk * ak for gk, ak in zip(g, a))

    nominal = ref.event_shift_neuron(x, f["s"], f["u"], f["du"], *args)
    close(nominal, f["a"], "the event-shift model at the nominal currents = the discrete run")
    delta = np.array(ref.timing_backward(g, f["u"], f["du"], f["s"], f["a"], *args))
    fd = np.zeros_like(delta)
    for m in range(len(x)):
        e = np.eye(len(x))[m]
        fd[m] = central(lambda h, e=e: loss(x + h * e), 0.0, FD_STEP)
    tol = FD_RTOL * np.abs(delta).max() + FD_ROUNDOFF * np.abs(g).sum()
    assert np.abs(fd - delta).max() <= tol, f"fd {fd}\nreference {delta}\ntolerance {tol}"


@pytest.mark.parametrize("reset", RESETS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_event_shift_lif_matches_reference(reset, data):
    """snnsim.eventshift.event_shift_lif = event_shift_neuron at perturbed currents (§6)."""
    x, g, neuron = data.draw(neuron_cases(resets=(reset,)))
    fwd = reference_forward(x, neuron)
    assume_well_posed(fwd, neuron, need_spikes=True)
    _, state = lif_forward(x, neuron)
    x_try = x + 1e-3 * g                                    # move away from the nominal currents
    a = event_shift_lif(x_try, state, neuron)
    expected = per_neuron(lambda xi, si, ui, dui: ref.event_shift_neuron(
        xi, si, ui, dui, neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset),
        [x_try, fwd["s"], fwd["u"], fwd["du"]])
    close(a, expected)


# --- dense layer, losses, targets -------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_dense_forward_backward_matches_reference(T, B, n_in, n_out, seed):
    """dense_forward x = W a (4); dense_backward: ∂L/∂W = Σ_t δ aᵀ (8), g = Wᵀ δ (10)."""
    rng = np.random.default_rng(seed)
    a_prev, W = rng.normal(size=(T, B, n_in)), rng.normal(size=(n_out, n_in))
    dL_dx = rng.normal(size=(T, B, n_out))
    x, cache = dense_forward(a_prev, W)
    close(x, ref.dense_forward_loops(a_prev, W))
    g_prev, dW = dense_backward(dL_dx, cache)
    g_ref, dW_ref = ref.dense_backward_loops(dL_dx, a_prev, W)
    close(g_prev, g_ref, "∂L/∂a_prev")
    close(dW, dW_ref, "∂L/∂W")


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 12), st.integers(1, 3), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_losses_match_reference(T, B, C, seed):
    """kernel_loss (7) and count_loss (authors, §3) = their loops; predict = argmax loop."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.0, 1.0, size=(T, B, C))
    a_hat = rng.uniform(0.0, 1.0, size=(T, B, C))
    labels = rng.integers(0, C, size=B)
    L, g = kernel_loss(a, a_hat)
    L_ref, g_ref = ref.kernel_loss_loops(a, a_hat)
    assert math.isclose(L, L_ref, rel_tol=RTOL), (L, L_ref)
    close(g, g_ref)
    desired, undesired = 0.6 * T, 0.1 * T                   # both sides of the satisfied switch occur
    L, g = count_loss(a, labels, desired, undesired)
    L_ref, g_ref = ref.count_loss_loops(a, labels, desired, undesired)
    assert math.isclose(L, L_ref, rel_tol=RTOL, abs_tol=1e-300), (L, L_ref)
    close(g, g_ref)
    np.testing.assert_array_equal(predict(a), ref.predict_loops(a))


@pytest.mark.parametrize("convention,passes", list(product(("paper", "authors"), (1, 2))))
@pytest.mark.parametrize("T", [1, 4, 5, 10, 30])
def test_targets_match_reference(convention, passes, T):
    """desired_spike_train = desired_train (S 2.4, §3); kernel_target = κ*d or κ*(κ*d) (7)."""
    assert list(desired_spike_train(T, convention)) == ref.desired_train(T, convention)
    labels = np.array([0, 2, 1, 2])
    a_hat = kernel_target(labels, 3, T, 1.0 / 3.0, convention, passes, dtype=np.float64)
    close(a_hat, ref.kernel_target_loops(labels, 3, T, 3.0, convention, passes))


# --- a whole dense network -----------------------------------------------------------------
@st.composite
def network_cases(draw):
    T = draw(st.integers(1, 30))
    B = draw(st.integers(1, 2))
    sizes = [draw(st.integers(1, 5))] + [draw(st.integers(1, 5)) for _ in range(draw(st.integers(2, 3)))]
    neuron = NeuronParams(tau_m=draw(taus), tau_s=draw(taus), v_th=draw(v_ths),
                          reset=draw(st.sampled_from(RESETS)))
    weight_scale = draw(st.floats(1.5, 6.0))
    input_scale = draw(st.floats(1.0, 4.0))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x_in = rng.uniform(0.0, input_scale, size=(T, B, sizes[0]))   # (T, B, N0), pixel-like current
    labels = rng.integers(0, sizes[-1], size=B)
    return T, sizes, neuron, weight_scale, seed, x_in, labels


@pytest.mark.parametrize("reading", READINGS)
@settings(max_examples=50, deadline=None)
@given(case=network_cases(), warmup=st.booleans(), bound=st.sampled_from(BOUNDS),
       loss=st.sampled_from(("kernel", "count")))
def test_network_dW_matches_reference(reading, case, warmup, bound, loss):
    """Network.forward states = network_forward_loops; Network.backward ∂L/∂W (8) and
    Network.backward_pass δ (9), (10) = network_backward_loops, 2-3 dense layers."""
    T, sizes, neuron, weight_scale, seed, x_in, labels = case
    grad = GradientParams(reading, bound, warmup)
    net = Network([Dense(n, weight_scale=weight_scale) for n in sizes[1:]], (sizes[0],),
                  neuron=neuron, grad=grad, dtype="float64", seed=seed)
    weights = [p["W"] for p in net.params]
    args = (neuron.tau_m, neuron.tau_s, neuron.v_th, neuron.reset)
    fwd = ref.network_forward_loops(x_in, weights, *args)
    for layer in fwd["layers"]:
        assume_well_posed(layer, neuron, need_spikes=False)
    assume(fwd["layers"][-1]["s"].any())                    # the output layer fires

    a_out, cache = net.forward(x_in)
    close(cache.input_psc, fwd["input_psc"], "input PSC")
    for li, (state, layer) in enumerate(zip(cache.states, fwd["layers"])):
        np.testing.assert_array_equal(state.s, layer["s"], err_msg=f"spikes of layer {li}")
        for k in ("x", "u", "du", "a"):
            close(getattr(state, k), layer[k], f"{k} of layer {li}")

    a_ref = fwd["layers"][-1]["a"]
    if loss == "kernel":
        a_hat = ref.kernel_target_loops(labels, sizes[-1], T, neuron.tau_s, "authors", 2)
        _, g = ref.kernel_loss_loops(a_ref, a_hat)
    else:
        _, g = ref.count_loss_loops(a_ref, labels, 0.6 * T, 0.1 * T)
    dWs, deltas = ref.network_backward_loops(g, fwd, weights, *args, reading=reading, bound=bound,
                                             warmup=warmup)
    for li, delta in enumerate(net.backward_pass(g, cache).deltas):
        close(delta, deltas[li], f"δ of layer {li}")
    for li, grads in enumerate(net.backward(g, cache)):
        close(grads["W"], dWs[li], f"∂L/∂W of layer {li}")
