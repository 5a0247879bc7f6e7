"""snnsim.training.optim: AdamW against a transcription of PyTorch's documented algorithm,
gradient-norm clipping as torch.nn.utils.clip_grad_norm_, weight clamping."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snnsim.training.optim import AdamW, clamp_weights, clip_grad_norm, global_grad_norm


def adamw_reference(theta0: list, grad_fn, n_steps, lr, betas, eps, weight_decay):
    """PyTorch's AdamW as its documentation writes the algorithm (amsgrad and
    maximize off), one line per line of the documented pseudocode, float64:

        θ_t ← θ_{t-1} - γ λ θ_{t-1}
        m_t ← β1 m_{t-1} + (1 - β1) g_t
        v_t ← β2 v_{t-1} + (1 - β2) g_t²
        m̂_t ← m_t / (1 - β1^t)
        v̂_t ← v_t / (1 - β2^t)
        θ_t ← θ_t - γ m̂_t / (√v̂_t + ε)
    """
    beta1, beta2 = betas
    theta = [np.array(p, dtype=np.float64) for p in theta0]
    m = [np.zeros_like(p) for p in theta]
    v = [np.zeros_like(p) for p in theta]
    for t in range(1, n_steps + 1):
        g = grad_fn(theta)
        for i in range(len(theta)):
            theta[i] = theta[i] - lr * weight_decay * theta[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            theta[i] = theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def quadratic_grad(targets):
    """g = 2 (θ - target) + sin(θ): a gradient that depends on the current θ, so
    that an error in one step changes all later ones."""
    return lambda theta: [2.0 * (p - c) + np.sin(p) for p, c in zip(theta, targets)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adamw_matches_documented_algorithm(weight_decay, betas):
    rng = np.random.default_rng(1)
    theta0 = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    targets = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    lr, eps, n_steps = 0.05, 1e-8, 12
    expected = adamw_reference(theta0, quadratic_grad(targets), n_steps, lr, betas, eps, weight_decay)

    params = [{"W": theta0[0].copy()}, {}, {"W": theta0[1].copy()}]   # a parameter-free layer between
    opt = AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    grad_fn = quadratic_grad(targets)
    for _ in range(n_steps):
        g = grad_fn([params[0]["W"], params[2]["W"]])
        opt.step([{"W": g[0]}, {}, {"W": g[1]}])
    # only the order of floating-point operations differs (PyTorch's √v/√(1-β2^t))
    np.testing.assert_allclose(params[0]["W"], expected[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(params[2]["W"], expected[1], rtol=1e-12, atol=1e-14)
    assert opt.step_count == n_steps


def test_adamw_decay_is_decoupled():
    """With a zero gradient, m = v = 0 and only the decay acts: p (1 - lr λ)^t exactly;
    a coupled (L2) decay would instead take an Adam step of size ≈ lr."""
    p0 = np.array([1.0, -2.0, 0.5])
    params = [{"W": p0.copy()}]
    opt = AdamW(params, lr=0.1, weight_decay=0.2, eps=1e-8)
    for _ in range(3):
        opt.step([{"W": np.zeros(3)}])
    np.testing.assert_allclose(params[0]["W"], p0 * (1 - 0.1 * 0.2) ** 3, rtol=1e-15)


def test_adamw_first_step_is_lr_times_sign():
    """At t = 1, m̂ = g and v̂ = g², so the step is -lr g/(|g| + ε)."""
    g = np.array([0.3, -2.0, 1e-3])
    params = [{"W": np.zeros(3)}]
    AdamW(params, lr=0.01, weight_decay=0.0).step([{"W": g}])
    np.testing.assert_allclose(params[0]["W"], -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14)


def test_adamw_in_place_and_dtype_preserved():
    W = np.ones((3, 2), dtype=np.float32)
    params = [{"W": W}]
    opt = AdamW(params, lr=1e-3)
    opt.step([{"W": np.full((3, 2), 0.5, dtype=np.float32)}])
    assert params[0]["W"] is W and W.dtype == np.float32
    assert opt.m[0]["W"].dtype == np.float32 and opt.v[0]["W"].dtype == np.float32
    assert np.all(W < 1)


def test_adamw_state_dict_resumes_bit_exactly():
    """3 steps, save, 3 more steps on a fresh optimizer loaded from the state ==
    6 steps straight (np.array_equal). Without the loaded state it differs."""
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((5, 4)).astype(np.float32)
    grads = [rng.standard_normal((5, 4)).astype(np.float32) for _ in range(6)]

    straight = [{"W": p0.copy()}]
    opt = AdamW(straight, lr=1e-2)
    for g in grads:
        opt.step([{"W": g}])

    first = [{"W": p0.copy()}]
    opt1 = AdamW(first, lr=1e-2)
    for g in grads[:3]:
        opt1.step([{"W": g}])
    state = opt1.state_dict()
    assert state["step"] == 3 and isinstance(state["m"][0]["W"], np.ndarray)

    resumed = [{"W": first[0]["W"].copy()}]
    opt2 = AdamW(resumed, lr=1e-2)
    opt2.load_state_dict(state)
    for g in grads[3:]:
        opt2.step([{"W": g}])
    assert np.array_equal(resumed[0]["W"], straight[0]["W"])

    fresh = [{"W": first[0]["W"].copy()}]
    opt3 = AdamW(fresh, lr=1e-2)                      # state not loaded
    for g in grads[3:]:
        opt3.step([{"W": g}])
    assert not np.array_equal(fresh[0]["W"], straight[0]["W"])


def test_adamw_load_state_dict_rejects_wrong_shape():
    opt = AdamW([{"W": np.zeros((2, 2))}], lr=1e-3)
    state = opt.state_dict()
    state["m"][0]["W"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(state)


def test_clip_grad_norm_as_pytorch():
    """‖(3, 4), (12)‖ = 13 > 1: every gradient times 1/(13 + 1e-6); returns 13."""
    grads = [{"W": np.array([3.0, 4.0])}, {}, {"W": np.array([[12.0]])}]
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert norm == pytest.approx(13.0, rel=1e-15)
    scale = 1.0 / (13.0 + 1e-6)
    np.testing.assert_allclose(grads[0]["W"], [3 * scale, 4 * scale], rtol=1e-15)
    np.testing.assert_allclose(grads[2]["W"], [[12 * scale]], rtol=1e-15)


def test_clip_grad_norm_leaves_small_gradients():
    g = np.array([0.3, -0.4])
    grads = [{"W": g.copy()}]
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(0.5)
    assert np.array_equal(grads[0]["W"], g)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=20),
       st.floats(0.01, 10.0))
def test_clip_grad_norm_bounds_the_norm(values, max_norm):
    g = np.asarray(values, dtype=np.float64)
    grads = [{"a": g[: len(g) // 2].copy()}, {"b": g[len(g) // 2:].copy()}]
    before = np.sqrt((g ** 2).sum())
    returned = clip_grad_norm(grads, max_norm)
    assert returned == pytest.approx(before, rel=1e-12, abs=1e-300)
    after = global_grad_norm(grads)
    assert after <= max_norm * (1 + 1e-12)
    if before + 1e-6 <= max_norm:      # PyTorch scales whenever max_norm/(‖g‖+1e-6) < 1
        assert after == pytest.approx(before, rel=1e-15, abs=0)


def test_clip_grad_norm_at_the_bound_scales_like_pytorch():
    """‖g‖ = max_norm exactly: PyTorch's coefficient max_norm/(‖g‖ + 1e-6) is
    just below 1 and it scales; so does snnsim."""
    grads = [{"W": np.array([1.0])}]
    clip_grad_norm(grads, max_norm=1.0)
    assert grads[0]["W"][0] == 1.0 / (1.0 + 1e-6)


def test_clamp_weights_in_place():
    W = np.array([[-5.0, -4.0, 0.0], [3.9, 4.0, 7.0]], dtype=np.float32)
    params = [{"W": W}, {}]
    clamp_weights(params, -4.0, 4.0)
    assert params[0]["W"] is W
    assert np.array_equal(W, np.array([[-4.0, -4.0, 0.0], [3.9, 4.0, 4.0]], dtype=np.float32))
