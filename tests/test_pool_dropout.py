"""Pool2d and Dropout: engine against loop oracles, backward against central
differences, and the dropout mask's structure.

Both layers are linear in their input (dropout for a fixed mask), so the
central difference with h = 1e-6 of f(a) = ⟨v, layer(a)⟩ has no truncation
error. Its rounding error is ≲ ε Σ|v ⊙ y| / h for an output y: the absolute
tolerance is 100 times that (:func:`fd_atol`), the relative one 1e-7.
"""
from __future__ import annotations

import numpy as np
import pytest
from fdiff import RTOL_FD, central, fd_atol
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.conv_loops import pool_backward_loops, pool_forward_loops
from snnsim.dropout import Dropout
from snnsim.pool import POOL_GAIN, Pool2d, pool_backward, pool_forward


@st.composite
def pool_cases(draw):
    k = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             draw(st.integers(k, 8)), draw(st.integers(k, 8)))             # H, W not always multiples of k
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    gain = draw(st.sampled_from([POOL_GAIN, 1.0, 0.5]))
    return rng.standard_normal(shape), k, gain, rng


# --- pooling ---------------------------------------------------------------------
def test_pool_gain_is_authors_value():
    assert POOL_GAIN == 1.1
    assert Pool2d(2).gain == POOL_GAIN


@settings(max_examples=40, deadline=None)
@given(pool_cases())
def test_pool_matches_loops(case):
    a, k, gain, rng = case
    out, cache = pool_forward(a, k, gain)
    np.testing.assert_allclose(out, pool_forward_loops(a, k, gain), rtol=1e-12, atol=1e-12)
    d_out = rng.standard_normal(out.shape)
    d_out0 = d_out.copy()
    d_in = pool_backward(d_out, cache)
    np.testing.assert_allclose(d_in, pool_backward_loops(d_out, a.shape, k, gain), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(d_out, d_out0)


@settings(max_examples=25, deadline=None)
@given(pool_cases())
def test_pool_backward_central_differences(case):
    a, k, gain, rng = case
    out, cache = pool_forward(a, k, gain)
    v = rng.standard_normal(out.shape)
    u = rng.standard_normal(a.shape)
    vjp = float((pool_backward(v, cache) * u).sum())

    def f(a_):
        return float((v * pool_forward(a_, k, gain)[0]).sum())

    fd = central(lambda e: f(a + e * u))
    assert vjp == pytest.approx(fd, rel=RTOL_FD, abs=fd_atol(v, out)), f"<J^T v, u> = {vjp!r}, FD = {fd!r}"


def test_pool_floor_behaviour():
    """5x7 input, k = 2: output 2x3; the last row and column are not read and get 0 gradient."""
    a = np.arange(35.0).reshape(1, 1, 1, 5, 7)
    layer = Pool2d(2)
    assert layer.output_shape((1, 5, 7)) == (1, 2, 3)
    out, cache = layer.forward(a)
    assert out[0, 0, 0, 0, 0] == pytest.approx(POOL_GAIN * (0 + 1 + 7 + 8))
    d_in, grads = layer.backward(np.ones_like(out), cache)
    assert grads == {}
    assert np.all(d_in[..., 4, :] == 0) and np.all(d_in[..., :, 6] == 0)
    assert np.all(d_in[..., :4, :6] == POOL_GAIN)


def test_pool_dtype_and_describe():
    a = np.ones((2, 3, 4, 6, 6), dtype=np.float32)
    out, cache = Pool2d(3).forward(a)
    assert out.dtype == np.float32 and out.shape == (2, 3, 4, 2, 2)
    assert pool_backward(np.ones_like(out), cache).dtype == np.float32
    assert Pool2d(2).describe() == "P2"


def test_pool_errors():
    with pytest.raises(ValueError, match="kernel_size"):
        Pool2d(0)
    with pytest.raises(ValueError, match="needs H, W >= 3"):
        Pool2d(3).output_shape((4, 2, 9))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Pool2d(2).output_shape((100,))
    with pytest.raises(ValueError, match=r"\(T, B, C, H, W\)"):
        Pool2d(2).forward(np.zeros((2, 3, 4, 4)))


# --- dropout ---------------------------------------------------------------------
def _dropout_run(p, shape, seed, dtype=np.float64):
    layer = Dropout(p)
    a = np.random.default_rng(seed + 1).uniform(0.5, 1.5, shape).astype(dtype)   # no zeros in a
    out, mask = layer.forward(a, train=True, rng=np.random.default_rng(seed))
    return layer, a, out, mask


def test_dropout_mask_fixed_over_time():
    _, a, out, mask = _dropout_run(0.4, (6, 5, 3, 4, 4), seed=0)
    assert mask.shape == (1, 5, 3, 4, 4)
    kept = out != 0                                                       # (T, B, ...)
    assert np.all(kept == kept[:1]), "a neuron's mask changed between time steps"
    np.testing.assert_allclose(out, a * mask, rtol=0, atol=0)


def test_dropout_mask_per_sample_and_neuron():
    """Each sample draws its own mask over its neurons: not whole samples
    zeroed or kept (the authors' bug), and samples differ."""
    p, B, N = 0.3, 64, 500
    _, _, _, mask = _dropout_run(p, (2, B, N), seed=1)
    kept_fraction = (mask[0] != 0).mean(axis=1)                           # (B,)
    assert np.all(kept_fraction > 0) and np.all(kept_fraction < 1), "whole samples dropped or kept"
    # per sample, Binomial(500, 0.7)/500 has sd 0.0205: all within 5 sd of 1 - p
    assert np.all(np.abs(kept_fraction - (1 - p)) < 5 * np.sqrt(p * (1 - p) / N))
    assert len({m.tobytes() for m in mask[0]}) == B, "two samples share a mask"


def test_dropout_scaling_keeps_the_mean():
    """Inverted dropout: kept values are scaled by 1/(1-p), so E[out] = a."""
    p = 0.2
    _, a, out, mask = _dropout_run(p, (1, 200, 1000), seed=2)
    assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - p)}
    ratio = out / a
    n = ratio.size
    # mean of 200 000 draws of Bernoulli(0.8)/0.8: sd sqrt(p/(1-p)/n) = 0.0011
    assert abs(ratio.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)


def test_dropout_identity_in_eval_and_p0():
    a = np.random.default_rng(3).standard_normal((3, 4, 10))
    out, cache = Dropout(0.5).forward(a, train=False)
    assert out is a and cache is None
    out0, cache0 = Dropout(0.0).forward(a, train=True, rng=np.random.default_rng(0))
    assert out0 is a and cache0 is None
    d, grads = Dropout(0.5).backward(a, None)
    assert d is a and grads == {}


def test_dropout_backward_uses_the_forward_mask():
    layer, a, out, mask = _dropout_run(0.5, (4, 3, 2, 5, 5), seed=4)
    g = np.random.default_rng(5).standard_normal(out.shape)
    d_in, grads = layer.backward(g, mask)
    np.testing.assert_array_equal(d_in, g * mask)
    assert grads == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dropout_backward_central_differences(seed):
    """f(a) = ⟨v, dropout(a)⟩ with the mask fixed (same Generator seed)."""
    rng = np.random.default_rng(100 + seed)
    layer = Dropout(0.3)
    a = rng.standard_normal((4, 3, 7))
    v = rng.standard_normal(a.shape)
    u = rng.standard_normal(a.shape)

    def f(a_):
        return float((v * layer.forward(a_, train=True, rng=np.random.default_rng(seed))[0]).sum())

    out, mask = layer.forward(a, train=True, rng=np.random.default_rng(seed))
    vjp = float((layer.backward(v, mask)[0] * u).sum())
    fd = central(lambda e: f(a + e * u))
    assert vjp == pytest.approx(fd, rel=RTOL_FD, abs=fd_atol(v, out)), f"<J^T v, u> = {vjp!r}, FD = {fd!r}"


def test_dropout_reproducible_and_dtype():
    _, _, out1, m1 = _dropout_run(0.2, (2, 3, 8), seed=7, dtype=np.float32)
    _, _, out2, m2 = _dropout_run(0.2, (2, 3, 8), seed=7, dtype=np.float32)
    np.testing.assert_array_equal(m1, m2)
    assert out1.dtype == np.float32 and m1.dtype == np.float32


def test_dropout_errors_and_describe():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="0 <= p < 1"):
            Dropout(p)
    with pytest.raises(ValueError, match="needs rng"):
        Dropout(0.2).forward(np.ones((2, 2, 2)), train=True, rng=None)
    assert Dropout(0.2).describe() == "D0.2"
    assert Dropout(0.2).output_shape((3, 4, 4)) == (3, 4, 4)
