"""The whole-network gradient against finite differences.

`timing` with no bound and no warm-up (EXACT_TIMING) is the exact gradient of
the event-shift model (docs/gradient.md): checked along random weight
directions, ⟨∇L, v⟩ against (L(W + h v) - L(W - h v)) / 2h, float64, h = 1e-6.
Rounding ~ ε |L| / h ≈ 1e-9 relative for |L| ~ 10; truncation ~ h² ≈ 1e-12.
The h² truncation error is removed by Richardson extrapolation (see
directional_check). Tolerance 1e-6 relative: a missing term (leak, reset, one
layer's chain) is off by far more.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import random_dense_net
from fdiff import directional, random_direction, richardson, weights_along
from hypothesis import assume, given
from hypothesis import strategies as st

from snnsim.eventshift import event_shift_forward
from snnsim.loss import count_loss, kernel_loss, kernel_target
from snnsim.params import EXACT_TIMING

H = 1e-6


def directional_check(net, x, loss_of_a, rng):
    """Returns (analytic, finite-difference) derivative of the event-shift loss
    along one random direction over all layers' weights."""
    a, cache = net.forward(x)
    _, g = loss_of_a(a)
    grads = net.backward(g, cache)
    direction = random_direction(rng, net.params)
    move = weights_along(net, direction)

    def loss_at(eps):
        move(eps)
        return loss_of_a(event_shift_forward(net, x, cache))[0]

    # Richardson extrapolation of two central differences, (4 D(h/2) - D(h)) / 3:
    # removes the h² truncation term, which ill-conditioned spikes (small Δu)
    # make large (seen: 8e-6 relative at h = 1e-6; 9e-11 after extrapolation).
    fd = richardson(loss_at, H)[0]
    move(0.0)
    return directional(grads, direction), fd, cache


@given(seed=st.integers(0, 2**31), T=st.integers(2, 30), n_layers=st.integers(2, 3),
       reset=st.sampled_from(["zero", "subtract"]), scale=st.floats(1.5, 4.0))
def test_network_timing_gradient_vs_event_shift_fd(seed, T, n_layers, reset, scale):
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(3, 8, size=n_layers + 1)]
    net = random_dense_net(rng, sizes, reset=reset, grad=EXACT_TIMING, weight_scale=scale)
    B = 3
    x = rng.uniform(0, 1.5, size=(T, B, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=B)
    a_hat = kernel_target(labels, sizes[-1], T, net.neuron.theta_s, "authors", 2, dtype=np.float64)
    _, cache = net.forward(x)
    assume(all(st_.s.any() for st_ in cache.states))               # every layer spikes
    assume(min(np.abs(st_.u - net.neuron.v_th).min() for st_ in cache.states) > 1e-6)
    # Well-conditioned spikes: the event-shift model's n-th derivative grows like
    # (1/Δu)^n, so a spike with tiny slope makes the h² truncation error of the
    # central difference, not the gradient, the dominant error.
    assume(min(np.abs(st_.du[st_.s]).min() for st_ in cache.states) > 0.05)
    analytic, fd, _ = directional_check(net, x, lambda a: kernel_loss(a, a_hat), rng)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-8), f"analytic {analytic!r} vs fd {fd!r}"


def test_network_timing_gradient_count_loss():
    """The same check with the count loss (N-MNIST's), T = 30, three layers."""
    rng = np.random.default_rng(7)
    net = random_dense_net(rng, [6, 8, 7, 4], reset="zero", grad=EXACT_TIMING, weight_scale=2.5,
                           tau_m=8.0, tau_s=4.0)
    x = rng.uniform(0, 1.5, size=(30, 4, 6))
    labels = rng.integers(0, 4, size=4)
    analytic, fd, cache = directional_check(net, x, lambda a: count_loss(a, labels, 15 * 0.2, 3 * 0.2), rng)
    assert all(s.s.any() for s in cache.states)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-8), f"analytic {analytic!r} vs fd {fd!r}"


def test_authors_gradient_is_not_the_event_shift_gradient():
    """The check above can fail: the authors' reading does not pass it."""
    from snnsim.params import GradientParams
    rng = np.random.default_rng(3)
    net = random_dense_net(rng, [5, 6, 4], grad=GradientParams("authors", None, False))
    x = rng.uniform(0, 1.5, size=(10, 3, 5))
    a_hat = kernel_target(rng.integers(0, 4, size=3), 4, 10, net.neuron.theta_s, "authors", 2,
                          dtype=np.float64)
    analytic, fd, _ = directional_check(net, x, lambda a: kernel_loss(a, a_hat), rng)
    assert analytic != pytest.approx(fd, rel=1e-2)
