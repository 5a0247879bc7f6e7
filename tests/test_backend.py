"""Backends: explicit choice, no silent switching, and NumPy-CuPy parity.

The parity tests need CuPy and a CUDA device; they skip cleanly elsewhere (CI
has no GPU). Tolerances: float64 — the same arithmetic in another order,
1e-10 relative; float32 — 1e-5 on PSCs (values in [0, 1)) and 1e-4 of the
largest gradient entry (ε32 ≈ 1.2e-7 amplified by the spike-time bound 8).
Spikes must match exactly wherever the float64 membrane is 1e-4 off threshold.
"""
from __future__ import annotations

import numpy as np
import pytest

from snnsim import Dense, GradientParams, Network, NeuronParams, kernel_loss, kernel_target
from snnsim.backend import BackendError, array_module, backend_name, cupy_available, get_backend, to_numpy


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("jax")


def test_numpy_backend_and_array_module():
    assert get_backend("numpy") is np
    assert array_module(np.zeros(3), np.ones(2)) is np
    assert backend_name(np) == "numpy"
    assert isinstance(to_numpy(np.arange(3)), np.ndarray)


@pytest.mark.skipif(cupy_available(), reason="this machine has a usable CuPy")
def test_cupy_request_without_gpu_fails_loudly():
    """Asking for cupy where it is unusable raises; it never falls back to NumPy."""
    with pytest.raises(BackendError):
        get_backend("cupy")
    with pytest.raises(BackendError):
        Network([Dense(3)], (4,), backend="cupy")


def test_network_rejects_foreign_input_type():
    net = Network([Dense(3)], (4,))
    with pytest.raises(ValueError, match="expected input"):
        net.forward(np.zeros((5, 2, 7), dtype=np.float32))


def _run(backend, dtype, reset, reading, x, labels):
    net = Network([Dense(12, weight_scale=3.0), Dense(8, weight_scale=3.0), Dense(4, weight_scale=3.0)],
                  (x.shape[-1],), neuron=NeuronParams(reset=reset), grad=GradientParams(reading=reading),
                  backend=backend, dtype=dtype, seed=11)
    xp = net.xp
    xin = xp.asarray(x, dtype=dtype)
    lab = xp.asarray(labels)
    a, cache = net.forward(xin)
    a_hat = kernel_target(lab, 4, x.shape[0], net.neuron.theta_s, dtype=net.dtype)
    loss, g = kernel_loss(a, a_hat)
    grads = net.backward(g, cache)
    assert array_module(a, *[gr["W"] for gr in grads]) is xp      # array type in = array type out
    return (to_numpy(a), [to_numpy(s.s) for s in cache.states], [to_numpy(s.u) for s in cache.states],
            loss, [to_numpy(gr["W"]) for gr in grads])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("reading", ["authors", "timing"])
def test_numpy_cupy_parity(cupy, dtype, reset, reading):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1.5, size=(20, 16, 10))
    labels = rng.integers(0, 4, size=16)
    a_np, s_np, u_np, loss_np, g_np = _run("numpy", dtype, reset, reading, x, labels)
    a_cp, s_cp, u_cp, loss_cp, g_cp = _run("cupy", dtype, reset, reading, x, labels)
    margin = min(np.abs(u - 1.0).min() for u in u_np)
    if margin > 1e-4:
        for s1, s2 in zip(s_np, s_cp):
            np.testing.assert_array_equal(s1, s2)
    rtol_a, rtol_g = (1e-10, 1e-10) if dtype == "float64" else (1e-5, 1e-4)
    np.testing.assert_allclose(a_cp, a_np, atol=rtol_a)
    assert loss_cp == pytest.approx(loss_np, rel=rtol_g)
    for g1, g2 in zip(g_np, g_cp):
        assert np.abs(g1 - g2).max() <= rtol_g * max(np.abs(g1).max(), 1e-6)


def test_fused_needs_cupy():
    with pytest.raises(ValueError, match="fused=True needs backend='cupy'"):
        Network([Dense(3)], (4,), fused=True)
