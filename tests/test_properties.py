"""Properties of the engine (hypothesis): causality, value ranges, the O(T)
recursion against the explicit φ matrix, equivariance, no mutation, precision."""
from __future__ import annotations

import numpy as np
from conftest import random_dense_net
from hypothesis import assume, given
from hypothesis import strategies as st

from snnsim.loss import kernel_loss, kernel_target
from snnsim.neuron import lif_forward, psc_filter
from snnsim.params import GradientParams, NeuronParams
from snnsim.tsslbp import lif_backward, phi_matrix

grad_params = st.builds(GradientParams, reading=st.sampled_from(["authors", "timing"]),
                        sensitivity_bound=st.sampled_from([None, 8.0, 2.0]), warmup=st.booleans())
resets = st.sampled_from(["zero", "subtract"])


def _state(seed, T, reset, drive=1.2, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    neuron = NeuronParams(reset=reset)
    x = rng.uniform(-0.2, drive, size=(T,) + shape)
    return rng, neuron, x, lif_forward(x, neuron)


@given(seed=st.integers(0, 2**31), T=st.integers(2, 25), t0=st.integers(0, 24), reset=resets, gp=grad_params)
def test_causality(seed, T, t0, reset, gp):
    """Nothing at t depends on later inputs; φ(t_k, t_m) = 0 for t_k < t_m."""
    assume(t0 < T)
    rng, neuron, x, (a, state) = _state(seed, T, reset)
    x2 = x.copy()
    x2[t0:] += rng.standard_normal(x2[t0:].shape)
    a2, state2 = lif_forward(x2, neuron)
    for name in ("u", "du", "s", "a"):
        np.testing.assert_array_equal(getattr(state, name)[:t0], getattr(state2, name)[:t0])
    phi = phi_matrix(state, neuron, gp)
    assert np.all(np.triu(phi, k=1) == 0)


@given(seed=st.integers(0, 2**31), T=st.integers(1, 25), reset=resets)
def test_value_ranges(seed, T, reset):
    """Spikes are 0/1; a PSC of spikes lies in [0, 1); so does the input filter of 0/1 events."""
    rng, neuron, x, (a, state) = _state(seed, T, reset, drive=3.0)
    assert state.s.dtype == bool
    assert np.all(a >= 0) and np.all(a < 1)
    events = (rng.random((T, 2, 5)) < 0.5).astype(np.float64)
    a0 = psc_filter(events, neuron.theta_s)
    assert np.all(a0 >= 0) and np.all(a0 < 1)


@given(seed=st.integers(0, 2**31), T=st.integers(1, 25), reset=resets, gp=grad_params)
def test_recursion_equals_phi_matrix(seed, T, reset, gp):
    """The O(T) recursion of lif_backward equals δ[m] = Σ_k φ(t_k, t_m) g[k] with φ built explicitly."""
    rng, neuron, x, (a, state) = _state(seed, T, reset)
    g = rng.standard_normal(a.shape)
    delta = lif_backward(g, state, neuron, gp)
    phi = phi_matrix(state, neuron, gp)                               # (B, N, T, T)
    np.testing.assert_allclose(delta, np.einsum("bnkm,kbn->mbn", phi, g), rtol=1e-10, atol=1e-12)
    terms = phi_matrix(state, neuron, gp, terms=True)
    np.testing.assert_allclose(sum(terms.values()), phi, rtol=0, atol=0)


@given(seed=st.integers(0, 2**31), T=st.integers(2, 12), reset=resets, gp=grad_params)
def test_batch_permutation_equivariance(seed, T, reset, gp):
    """Permuting the batch permutes every output and leaves weight gradients unchanged."""
    rng = np.random.default_rng(seed)
    net = random_dense_net(rng, [5, 6, 4], reset=reset, grad=gp)
    B = 5
    x = rng.uniform(0, 1.5, size=(T, B, 5))
    labels = rng.integers(0, 4, size=B)
    perm = rng.permutation(B)
    a_hat = kernel_target(labels, 4, T, net.neuron.theta_s, dtype=np.float64)
    a, cache = net.forward(x)
    grads = net.backward(kernel_loss(a, a_hat)[1], cache)
    a_p, cache_p = net.forward(x[:, perm])
    grads_p = net.backward(kernel_loss(a_p, a_hat[:, perm])[1], cache_p)
    np.testing.assert_array_equal(a_p, a[:, perm])
    for g1, g2 in zip(grads, grads_p):
        np.testing.assert_allclose(g1["W"], g2["W"], rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**31), T=st.integers(1, 12), reset=resets, gp=grad_params)
def test_backward_mutates_nothing(seed, T, reset, gp):
    """lif_backward and Network.backward write to neither their inputs nor the upstream
    gradient: every input is made read-only, so an in-place write would raise."""
    rng, neuron, x, (a, state) = _state(seed, T, reset)
    g = rng.standard_normal(a.shape)
    copies = [g.copy()] + [v.copy() for v in state]
    for arr in (g, *state):
        arr.flags.writeable = False
    lif_backward(g, state, neuron, gp)
    for before, after in zip(copies, (g, *state)):
        np.testing.assert_array_equal(before, after)
    net = random_dense_net(rng, [4, 5, 3], reset=reset, grad=gp)
    xin = rng.uniform(0, 1.5, size=(T, 2, 4))
    a_out, cache = net.forward(xin)
    g_out = rng.standard_normal(a_out.shape)
    g_out.flags.writeable = False
    frozen = [cache.input_psc] + [v for s in cache.states for v in s] + [p["W"] for p in net.params]
    for arr in frozen:
        arr.flags.writeable = False
    net.backward(g_out, cache)


@given(seed=st.integers(0, 2**31), T=st.integers(2, 20), reset=resets,
       reading=st.sampled_from(["authors", "timing"]))
def test_float32_close_to_float64(seed, T, reset, reading):
    """float32 gives the same spikes as float64 wherever float64 stays 1e-4 off the
    threshold, and gradients within 1e-4 of the largest entry (float32 ε ≈ 1.2e-7,
    amplified by at most the bound 8 per spike-time factor over ≤ 3 layers)."""
    gp = GradientParams(reading=reading)
    rng = np.random.default_rng(seed)
    net64 = random_dense_net(np.random.default_rng(seed), [6, 7, 4], reset=reset, grad=gp)
    net32 = random_dense_net(np.random.default_rng(seed), [6, 7, 4], reset=reset, grad=gp, dtype="float32")
    x = rng.uniform(0, 1.5, size=(T, 3, 6))
    a64, c64 = net64.forward(x)
    assume(min(np.abs(s.u - 1.0).min() for s in c64.states) > 1e-4)
    a32, c32 = net32.forward(x.astype(np.float32))
    for s64, s32 in zip(c64.states, c32.states):
        np.testing.assert_array_equal(s64.s, s32.s)
    np.testing.assert_allclose(a32, a64, atol=1e-5)
    a_hat = kernel_target(rng.integers(0, 4, size=3), 4, T, net64.neuron.theta_s, dtype=np.float64)
    g64 = net64.backward(kernel_loss(a64, a_hat)[1], c64)
    g32 = net32.backward(kernel_loss(a32, a_hat.astype(np.float32))[1], c32)
    for w64, w32 in zip(g64, g32):
        assert w32["W"].dtype == np.float32
        scale = max(np.abs(w64["W"]).max(), 1e-3)
        assert np.abs(w32["W"] - w64["W"]).max() <= 1e-4 * scale


@given(seed=st.integers(0, 2**31), T=st.integers(2, 8), reset=resets, gp=grad_params)
def test_static_input_path_equals_time_varying_path(seed, T, reset, gp):
    """A repeat_static view takes the one-pass first layer (γ[t] · layer(x)); a
    materialised copy of the same input takes the general path. Same result."""
    from snnsim.network import repeat_static
    rng = np.random.default_rng(seed)
    net = random_dense_net(rng, [6, 7, 4], reset=reset, grad=gp)
    images = rng.uniform(0, 1.5, size=(3, 6))
    view = repeat_static(images, T)
    assert view.strides[0] == 0
    copy = np.ascontiguousarray(view)
    a_hat = kernel_target(rng.integers(0, 4, size=3), 4, T, net.neuron.theta_s, dtype=np.float64)
    results = []
    for x in (view, copy):
        a, cache = net.forward(x)
        grads = net.backward(kernel_loss(a, a_hat)[1], cache)
        results.append((a, cache, grads))
    (a1, c1, g1), (a2, c2, g2) = results
    assert c1.input_gain is not None and c2.input_gain is None
    np.testing.assert_allclose(a1, a2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c1.input_psc, c2.input_psc, rtol=1e-12, atol=1e-14)
    for s1, s2 in zip(c1.states, c2.states):
        np.testing.assert_array_equal(s1.s, s2.s)
    for w1, w2 in zip(g1, g2):
        np.testing.assert_allclose(w1["W"], w2["W"], rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**31), T=st.integers(1, 12), reset=resets, gp=grad_params)
def test_explicit_backward_equals_recursion_in_a_network(seed, T, reset, gp):
    """The O(T²) baseline (explicit φ) gives the recursion's weight gradients."""
    from snnsim.tsslbp import LIF_EXPLICIT
    rng = np.random.default_rng(seed)
    net = random_dense_net(rng, [5, 6, 4], reset=reset, grad=gp)
    x = rng.uniform(0, 1.5, size=(T, 3, 5))
    a, cache = net.forward(x)
    g = rng.standard_normal(a.shape)
    fast = net.backward(g, cache)
    slow = net.backward(g, cache, model=LIF_EXPLICIT)
    for w1, w2 in zip(fast, slow):
        np.testing.assert_allclose(w1["W"], w2["W"], rtol=1e-10, atol=1e-12)
