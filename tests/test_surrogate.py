"""Tests of snnsim.surrogate: surrogate-gradient BPTT of the discrete LIF network.

Two independent checks:
1. On the discrete network, the reverse recursion equals a forward-mode (tangent)
   transcription written here: the Jacobian J[k, m] = ∂a[k]/∂x[m] built by pushing
   a unit tangent through the forward equations with ∂s/∂u := σ'(u), then δ = Jᵀ g.
2. With real-valued spikes s = sigmoid((u - V_th)/0.2) in the forward (the smooth
   network of ``smooth_lif_forward``) and the reset attached, the backward with the
   unclipped ``sigmoid_surrogate`` is that network's exact derivative: checked by
   float64 central differences along random directions (relative error < 1e-6).
"""
import numpy as np
import pytest
from fdiff import central, directional, fd_along
from hypothesis import given, settings
from hypothesis import strategies as st

from snnsim import Dense, Network, NeuronParams, kernel_loss, lif_backward, lif_forward, repeat_static
from snnsim.neuron import NeuronModel
from snnsim.params import GradientParams
from snnsim.surrogate import (
    network_backward,
    sigmoid_surrogate,
    smooth_lif_forward,
    surrogate_backward,
    surrogate_lif_backward,
)
from snnsim.tsslbp import warmup_surrogate

FD_STEP = 1e-6          # central-difference step in float64
FD_RTOL = 1e-6          # relative tolerance of FD against the analytic derivative


def tangent_jacobian(x, neuron, detach_reset, surrogate):
    """Forward-mode oracle: J[b, n, k, m] = ∂a[k]/∂x[m] of the discrete run, with
    ∂s/∂u replaced by ``surrogate`` — one tangent per source step m, pushed through
    charge, fire, reset and synapse exactly as the forward runs them."""
    T = x.shape[0]
    _, state = lif_forward(x, neuron)
    th_m, th_s = neuron.theta_m, neuron.theta_s
    J = np.zeros(x.shape[1:] + (T, T))
    for m in range(T):
        ub_tan = np.zeros(x.shape[1:])
        a_tan = np.zeros(x.shape[1:])
        for t in range(T):
            u_tan = (1 - th_m) * ub_tan + (1.0 if t == m else 0.0)
            u, s = state.u[t], state.s[t].astype(float)
            s_tan = surrogate(u, neuron.v_th) * u_tan
            if neuron.reset == "zero":                    # ū = u (1 - s)
                ub_tan = u_tan * (1 - s) + (0 if detach_reset else -u * s_tan)
            else:                                         # ū = u - V_th s
                ub_tan = u_tan + (0 if detach_reset else -neuron.v_th * s_tan)
            a_tan = (1 - th_s) * a_tan + th_s * s_tan
            J[..., t, m] = a_tan
    return J, state


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), T=st.integers(1, 9), reset=st.sampled_from(["zero", "subtract"]),
       detach=st.booleans(), gain=st.floats(0.3, 2.5))
def test_surrogate_bptt_equals_forward_mode_oracle(seed, T, reset, detach, gain):
    rng = np.random.default_rng(seed)
    neuron = NeuronParams(reset=reset)
    x = gain * rng.random((T, 3, 4)) + 0.2 * rng.standard_normal((T, 3, 4))   # spiking and silent
    g = rng.standard_normal(x.shape)
    J, state = tangent_jacobian(x, neuron, detach, warmup_surrogate)
    expected = np.moveaxis(np.einsum("bnkm,kbn->bnm", J, g), -1, 0)            # δ = Jᵀ g, (T, B, N)
    g_copy, u_copy = g.copy(), state.u.copy()
    got = surrogate_lif_backward(g, state, neuron, detach_reset=detach)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert np.array_equal(g, g_copy) and np.array_equal(state.u, u_copy)      # nothing mutated


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_detached_and_attached_reset_differ_only_through_the_future(reset):
    """The attached reset adds ∂L/∂ū[t] ∂ū/∂s σ'(u[t]), which acts wherever σ' > 0
    (silent steps too: the surrogate is smooth) but needs a later step: at t = T-1
    both agree exactly, before it they differ (so the flag is not a no-op)."""
    rng = np.random.default_rng(1)
    neuron = NeuronParams(reset=reset)
    g = rng.standard_normal((6, 2, 5))
    _, state = lif_forward(0.9 * rng.random((6, 2, 5)) + 0.3, neuron)
    detached = surrogate_lif_backward(g, state, neuron, True)
    attached = surrogate_lif_backward(g, state, neuron, False)
    np.testing.assert_array_equal(detached[-1], attached[-1])
    assert not np.allclose(detached[:-1], attached[:-1], rtol=1e-3)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_attached_surrogate_is_exact_derivative_of_smooth_network(reset):
    """Smooth function: the network of ``smooth_lif_forward`` (s = sigmoid((u-V_th)/0.2),
    soft reset), L = Σ g·a. FD of L along random x-directions vs ⟨δ, v⟩."""
    rng = np.random.default_rng(2)
    neuron = NeuronParams(reset=reset)
    x = 0.8 * rng.random((7, 3, 5)) + 0.3 * rng.standard_normal((7, 3, 5))
    g = rng.standard_normal(x.shape)
    _, state = smooth_lif_forward(x, neuron)
    delta = surrogate_lif_backward(g, state, neuron, detach_reset=False, surrogate=sigmoid_surrogate)
    for _ in range(5):
        v = rng.standard_normal(x.shape)
        fd = central(lambda e, v=v: (g * smooth_lif_forward(x + e * v, neuron)[0]).sum(), 0.0, FD_STEP)
        an = (delta * v).sum()
        assert abs(fd - an) <= FD_RTOL * max(abs(fd), abs(an)), (fd, an)
    # the detached backward is NOT this derivative (so the check above can fail)
    wrong = surrogate_lif_backward(g, state, neuron, detach_reset=True, surrogate=sigmoid_surrogate)
    assert not np.allclose(wrong, delta, rtol=1e-3)


def test_whole_network_surrogate_matches_fd_of_smooth_network():
    """Whole network, smooth stand-in in every layer: surrogate_backward (attached
    reset, unclipped sigmoid) against central differences of the kernel loss along
    one random direction per layer."""
    rng = np.random.default_rng(3)
    net = Network([Dense(6), Dense(5), Dense(3)], (4,), dtype="float64", seed=4)
    x_in = rng.random((6, 2, 4)) * 2
    a_hat = rng.random((6, 2, 3)) * 0.3

    smooth = NeuronModel(forward=smooth_lif_forward, backward=None)

    def loss():
        return kernel_loss(net.forward(x_in, model=smooth)[0], a_hat)[0]

    a, cache = net.forward(x_in, model=smooth)
    _, g = kernel_loss(a, a_hat)
    grads = surrogate_backward(net, g, cache, detach_reset=False, surrogate=sigmoid_surrogate)
    for i in range(len(grads)):
        v = [{k: np.zeros_like(w) for k, w in p.items()} for p in net.params]
        v[i]["W"] = rng.standard_normal(v[i]["W"].shape)                  # one layer at a time
        fd, an = fd_along(net, v, loss, FD_STEP), directional(grads, v)
        assert abs(fd - an) <= FD_RTOL * max(abs(fd), abs(an)), (fd, an)


@pytest.mark.parametrize("static", [False, True])
def test_network_backward_mirrors_network_backward(static):
    """network_backward with TSSL-BP's lif_backward reproduces Network.backward,
    for event input and for a static image (repeat_static: the first layer runs once)."""
    rng = np.random.default_rng(5)
    net = Network([Dense(7), Dense(3)], (5,), dtype="float64", seed=6)
    x_in = repeat_static(rng.random((4, 5)) * 3, 5) if static else rng.random((5, 4, 5)) * 3
    a, cache = net.forward(x_in)
    g = rng.standard_normal(a.shape)
    grad = GradientParams()
    ref = net.backward(g, cache, grad)
    got = network_backward(net, g, cache, lambda g_, s_, n_: lif_backward(g_, s_, n_, grad))
    for r, q in zip(ref, got):
        np.testing.assert_array_equal(r["W"], q["W"])
