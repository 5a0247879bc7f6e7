"""Conv2d: the im2col engine against the loop oracle, its backward against
central differences, its init and its errors.

Finite differences: the conv is bilinear in (a, W), so f(W) = ⟨v, conv(a, W)⟩
along a direction U is exactly linear and the central difference with
h = 1e-6 has no truncation error. Its rounding error is that of evaluating f
twice, ≲ ε Σ|v ⊙ x| each, divided by 2h: the absolute tolerance is
:func:`fd_atol` = 100 ε Σ|v ⊙ x| / h (≈ 2e-8 Σ|v ⊙ x|), with a relative one
of 1e-7. A wrong index or a missing term is an O(1) error and fails both.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from fdiff import RTOL_FD, central, fd_atol
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reference.conv_loops import conv_backward_loops, conv_forward_loops
from snnsim.backend import cupy_available, get_backend, to_numpy
from snnsim.conv import Conv2d, conv_backward, conv_forward, conv_output_size
from snnsim.network import repeat_static


@st.composite
def conv_cases(draw):
    """Small random conv problems: shapes, stride, padding, values (float64)."""
    T = draw(st.integers(1, 2))
    B = draw(st.integers(1, 2))
    C_in = draw(st.integers(1, 3))
    C_out = draw(st.integers(1, 3))
    H = draw(st.integers(1, 7))
    W = draw(st.integers(1, 7))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 2))
    assume(conv_output_size(H, k, stride, padding) >= 1 and conv_output_size(W, k, stride, padding) >= 1)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((T, B, C_in, H, W))
    w = rng.standard_normal((C_out, C_in, k, k))
    return a, w, stride, padding, rng


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_conv_forward_matches_loops(case):
    a, w, stride, padding, _ = case
    x, _ = conv_forward(a, w, stride, padding)
    expected = conv_forward_loops(a, w, stride, padding)
    assert x.shape == expected.shape
    assert x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_conv_backward_matches_loops(case):
    a, w, stride, padding, rng = case
    x, cache = conv_forward(a, w, stride, padding)
    dx = rng.standard_normal(x.shape)
    a0, w0, dx0 = a.copy(), w.copy(), dx.copy()
    da, dW = conv_backward(dx, cache)
    da_ref, dW_ref = conv_backward_loops(dx, a, w, stride, padding)
    np.testing.assert_allclose(da, da_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-12, atol=1e-12)
    # backward mutated neither the inputs nor the upstream gradient
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dx, dx0)
    # no input gradient asked for: none computed, same dW
    da_none, dW2 = conv_backward(dx, cache, need_input_grad=False)
    assert da_none is None
    np.testing.assert_allclose(dW2, dW, rtol=1e-14, atol=0)


@settings(max_examples=25, deadline=None)
@given(conv_cases())
def test_conv_backward_central_differences(case):
    """⟨Jᵀ v, u⟩ from conv_backward against (f(θ + h u) - f(θ - h u)) / 2h,
    f = ⟨v, conv(a, W)⟩, along random directions of W and of a."""
    a, w, stride, padding, rng = case
    x, cache = conv_forward(a, w, stride, padding)
    v = rng.standard_normal(x.shape)
    da, dW = conv_backward(v, cache)
    atol = fd_atol(v, x)

    def f(a_, w_):
        return float((v * conv_forward(a_, w_, stride, padding)[0]).sum())

    u_w = rng.standard_normal(w.shape)
    fd_w = central(lambda e: f(a, w + e * u_w))
    vjp_w = float((dW * u_w).sum())
    assert vjp_w == pytest.approx(fd_w, rel=RTOL_FD, abs=atol), f"<dW, u> = {vjp_w!r}, FD = {fd_w!r}"

    u_a = rng.standard_normal(a.shape)
    fd_a = central(lambda e: f(a + e * u_a, w))
    vjp_a = float((da * u_a).sum())
    assert vjp_a == pytest.approx(fd_a, rel=RTOL_FD, abs=atol), f"<da, u> = {vjp_a!r}, FD = {fd_a!r}"


def test_conv_known_values():
    """A 1-channel 3x3 input, a 2x2 all-ones kernel: window sums, by hand."""
    a = np.arange(9.0).reshape(1, 1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    x, _ = conv_forward(a, w)
    np.testing.assert_array_equal(x[0, 0, 0], [[0 + 1 + 3 + 4, 1 + 2 + 4 + 5],
                                               [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]])
    x_pad, _ = conv_forward(a, w, stride=2, padding=1)                  # windows at (-1,-1), (-1,1), ...
    np.testing.assert_array_equal(x_pad[0, 0, 0], [[0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]])


# --- the layer ------------------------------------------------------------------
def test_conv2d_layer_shapes_and_dtype():
    layer = Conv2d(4, 3, padding=1)
    rng = np.random.default_rng(0)
    layer.init_params((2, 6, 5), rng, np, np.float32)
    assert layer.params["W"].shape == (4, 2, 3, 3) and layer.params["W"].dtype == np.float32
    assert layer.output_shape((2, 6, 5)) == (4, 6, 5)
    assert Conv2d(4, 3, stride=2).output_shape((2, 7, 6)) == (4, 3, 2)
    images = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)
    a = repeat_static(images, 4)                                        # read-only broadcast view
    x, cache = layer.forward(a)
    assert x.shape == (4, 3, 4, 6, 5) and x.dtype == np.float32
    d_in, grads = layer.backward(np.ones_like(x), cache)
    assert d_in.shape == a.shape and d_in.dtype == np.float32
    assert set(grads) == {"W"} and grads["W"].shape == layer.params["W"].shape
    assert grads["W"].dtype == np.float32


@pytest.mark.parametrize("weight_scale", [1.0, 5.0])
def test_conv2d_init_uniform_bound(weight_scale):
    """Authors' init: uniform on ±weight_scale/√fan_in, fan_in = C_in·k·k."""
    layer = Conv2d(64, 3, weight_scale=weight_scale)
    layer.init_params((8, 5, 5), np.random.default_rng(1), np, np.float64)
    W = layer.params["W"]
    bound = weight_scale / math.sqrt(8 * 3 * 3)
    assert np.abs(W).max() <= bound
    assert np.abs(W).max() > 0.99 * bound                               # 4608 draws fill the interval
    # uniform: mean 0, variance bound²/3 (4608 draws: 5 standard errors)
    n = W.size
    assert abs(W.mean()) < 5 * bound / math.sqrt(3 * n)
    assert W.var() == pytest.approx(bound ** 2 / 3, rel=5 * math.sqrt(0.8 / n))
    again = Conv2d(64, 3, weight_scale=weight_scale)
    again.init_params((8, 5, 5), np.random.default_rng(1), np, np.float64)
    np.testing.assert_array_equal(again.params["W"], W)


def test_conv2d_describe():
    assert Conv2d(32, 5).describe() == "32C5"
    assert Conv2d(32, 5, padding=2).describe() == "32C5(pad 2)"
    assert Conv2d(32, 5, padding=2, stride=2).describe() == "32C5(pad 2, stride 2)"


@pytest.mark.parametrize("kwargs", [dict(out_channels=0, kernel_size=3), dict(out_channels=2, kernel_size=0),
                                    dict(out_channels=2, kernel_size=3, stride=0),
                                    dict(out_channels=2, kernel_size=3, padding=-1),
                                    dict(out_channels=2.5, kernel_size=3)])
def test_conv2d_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Conv2d needs"):
        Conv2d(**kwargs)


def test_conv2d_shape_errors():
    layer = Conv2d(2, 5)
    with pytest.raises(ValueError, match="output would be empty"):
        layer.output_shape((1, 4, 8))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        layer.output_shape((784,))
    layer.init_params((3, 8, 8), np.random.default_rng(0), np, np.float64)
    with pytest.raises(ValueError, match=r"\(T, B, C, H, W\)"):
        layer.forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        layer.forward(np.zeros((2, 1, 1, 8, 8)))
    with pytest.raises(ValueError, match="output would be empty"):
        conv_forward(np.zeros((1, 1, 3, 2, 2)), np.zeros((2, 3, 3, 3)))


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="CuPy with a CUDA device is not available")
def test_conv_cupy_matches_numpy():
    """Same forward and backward on CuPy as on NumPy (float32: rtol 1e-5)."""
    cp = get_backend("cupy")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    dx_shape = (2, 3, 5, 5, 5)
    g = rng.standard_normal(dx_shape).astype(np.float32)
    x_np, c_np = conv_forward(a, w, 2, 1)
    x_cp, c_cp = conv_forward(cp.asarray(a), cp.asarray(w), 2, 1)
    assert isinstance(x_cp, cp.ndarray)
    np.testing.assert_allclose(to_numpy(x_cp), x_np, rtol=1e-5, atol=1e-5)
    da_np, dW_np = conv_backward(g, c_np)
    da_cp, dW_cp = conv_backward(cp.asarray(g), c_cp)
    np.testing.assert_allclose(to_numpy(da_cp), da_np, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dW_cp), dW_np, rtol=1e-5, atol=1e-4)
