"""The engine on a strict array API library, on a non-default device, against NumPy.

``array_api_strict`` implements the Python array API standard and nothing more: it
refuses implicit conversion to NumPy, arrays of two devices in one operation, and
the promotions NumPy allows silently between kinds (a Python float times a bool
array, an int array with a float array). Each test runs one path of snnsim on
strict arrays living on ``Device("device1")`` (not the default device, so any array
created without ``device=`` makes the operation that meets it fail) and compares
the result with the NumPy engine on the same inputs.

Tolerance: bit-identical (``assert_array_equal``), float32 and float64. The strict
library computes with NumPy underneath, so the same operations in the same order
give the same bits; any difference means the two paths do different arithmetic.

Covered: neuron forward (both resets, input filter); every TSSL-BP term, the
recursion and the explicit φ (terms, δ); dense, conv (stride, padding), pool
(floor), dropout; the network's forward/backward for an MLP and a CNN, on the
general and the static-input path; kernel and count losses, prediction; the
surrogate backward and smooth forward; the event-shift model; AdamW, clipping,
clamping; the training step and evaluation; checkpoint save and load; recording;
inspection; the fidelity measurement (every backward variant of snnsim.variants
against the exact ``timing`` gradient and the finite differences of the event-shift
loss, the ladder, the descent probe, and ``run_batch`` end to end on Fashion-MNIST
test samples); the benchmark (its timed step for the MLP, CNN and N-MNIST
experiments, recursion and O(T²) baseline, and ``python3 -m snnsim.bench`` end to
end: time and memory figures, the phase clock). The fidelity study and the benchmark
build their own networks: their tests make that constructor move each network to
DEVICE (:func:`build_on_strict`), and nothing else of theirs is changed.

79 tests after parametrisation (one skips without the Fashion-MNIST test set).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import fashion_mnist_available

from snnsim import Dense, GradientParams, Network, NeuronParams, tsslbp
from snnsim import network as network_mod
from snnsim import neuron as neuron_mod
from snnsim import surrogate as surrogate_mod
from snnsim.backend import array_module, to_numpy
from snnsim.conv import Conv2d, conv_backward, conv_forward
from snnsim.dropout import Dropout
from snnsim.eventshift import event_shift_forward
from snnsim.loss import count_loss, kernel_loss, kernel_target, n_correct, predict
from snnsim.pool import Pool2d, pool_backward, pool_forward
from snnsim.training import optim

# a test-only package (the test extra): where only snnsim's dependencies are installed (the
# GPU check's machines, docs/gpu.md) the module skips instead of failing the collection
xs = pytest.importorskip("array_api_strict", reason="array-api-strict missing (pip install -e .[test])")

DEVICE = xs.Device("device1")
DTYPES = ("float32", "float64")
RESETS = ("zero", "subtract")
READINGS = ("authors", "timing")


def strict(a):
    """A NumPy array as a strict array on DEVICE (the one explicit conversion)."""
    return xs.asarray(np.asarray(a), device=DEVICE, copy=True)


def assert_same(strict_result, numpy_result, what=""):
    """``strict_result`` is a strict array on DEVICE, bit-identical to ``numpy_result``."""
    assert array_module(strict_result) is xs, what
    assert strict_result.device == DEVICE, what
    host = to_numpy(strict_result)
    assert host.dtype == np.asarray(numpy_result).dtype, what
    np.testing.assert_array_equal(host, numpy_result, err_msg=what)


def lif_inputs(dtype, seed=0, shape=(12, 3, 9)):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.0, size=shape).astype(dtype)                   # (T, B, N)
    g = rng.normal(0.0, 1.0, size=shape).astype(dtype)                   # (T, B, N)
    return x, g


def strict_state(state):
    return neuron_mod.LIFState(*(strict(v) for v in state))


# --- the harness refuses what it is meant to refuse ---------------------------------
def test_strict_device_refuses_the_three_classes_of_mistake():
    """Implicit NumPy conversion, mixing devices and bool-float promotion all raise here,
    so that the tests below would catch them in the engine."""
    x = strict(np.ones(3, dtype=np.float32))
    with pytest.raises((RuntimeError, TypeError)):
        np.asarray(x)
    with pytest.raises(ValueError, match="device"):
        x + xs.zeros(3, dtype=xs.float32)                                # default device
    with pytest.raises(TypeError):
        0.5 * (x > 0)                                                    # float times bool
    with pytest.raises(TypeError):
        x + xs.asarray([1, 2, 3], device=DEVICE)                         # float32 + int64 array


def test_engine_would_have_caught_the_float32_promotion():
    """The PSC update once multiplied θs by the bool spikes (float64 in NumPy 2): on strict
    arrays that expression raises, the engine's own does not."""
    a_prev, s = strict(np.zeros(4, np.float32)), strict(np.array([True, False, True, False]))
    with pytest.raises(TypeError):
        (1.0 - 0.25) * a_prev + 0.25 * s                                 # the old expression
    assert_same(neuron_mod.psc_update(a_prev, s, 0.25),
                neuron_mod.psc_update(np.zeros(4, np.float32), np.array([True, False, True, False]), 0.25))


# --- neuron --------------------------------------------------------------------------
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_lif_forward(dtype, reset):
    x, _ = lif_inputs(dtype)
    neuron = NeuronParams(reset=reset)
    a_np, st_np = neuron_mod.lif_forward(x, neuron)
    a_xs, st_xs = neuron_mod.lif_forward(strict(x), neuron)
    assert_same(a_xs, a_np)
    for name in ("u", "du", "s", "a"):
        assert_same(getattr(st_xs, name), getattr(st_np, name), name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_psc_filter(dtype):
    x, _ = lif_inputs(dtype)
    assert_same(neuron_mod.psc_filter(strict(x), 0.3), neuron_mod.psc_filter(x, 0.3))


# --- TSSL-BP -------------------------------------------------------------------------
@pytest.fixture(params=[(d, r) for d in DTYPES for r in RESETS], ids=lambda p: f"{p[0]}-{p[1]}")
def lif_case(request):
    dtype, reset = request.param
    x, g = lif_inputs(dtype, seed=1)
    neuron = NeuronParams(reset=reset)
    _, state = neuron_mod.lif_forward(x, neuron)
    return neuron, state, g


def test_tsslbp_terms(lif_case):
    neuron, st, g = lif_case
    sst, sg = strict_state(st), strict(g)
    theta_s, theta_m = neuron.theta_s, neuron.theta_m
    S_np, S_xs = tsslbp.psc_reverse_sum(g, theta_s), tsslbp.psc_reverse_sum(sg, theta_s)
    assert_same(S_xs, S_np, "S (S 10)")
    for bound in (None, 8.0):
        assert_same(tsslbp.spike_time_sensitivity(sst.du, sst.s, bound),
                    tsslbp.spike_time_sensitivity(st.du, st.s, bound), f"dt/du bound {bound}")
    dt_np = tsslbp.spike_time_sensitivity(st.du, st.s, 8.0)
    dt_xs = tsslbp.spike_time_sensitivity(sst.du, sst.s, 8.0)
    R_np, R_xs = tsslbp.reset_size(st.u, neuron), tsslbp.reset_size(sst.u, neuron)
    assert_same(R_xs, R_np, "R")
    for reading in READINGS:
        b = tsslbp.reset_shift_coefficient(neuron, reading)
        assert_same(tsslbp.phi_inter(S_xs[3, ...], dt_xs[3, ...], theta_s, reading),
                    tsslbp.phi_inter(S_np[3], dt_np[3], theta_s, reading), "phi<1> (13)")
        assert_same(tsslbp.phi_intra(sg[4, ...], R_xs[3, ...], dt_xs[3, ...], b),
                    tsslbp.phi_intra(g[4], R_np[3], dt_np[3], b), "phi<2> (16)")
    assert_same(tsslbp.leak_path(sg, theta_m), tsslbp.leak_path(g, theta_m), "leak")
    assert_same(tsslbp.warmup_mask(sst.a, theta_s), tsslbp.warmup_mask(st.a, theta_s), "warm-up mask")
    assert_same(tsslbp.warmup_surrogate(sst.u, neuron.v_th), tsslbp.warmup_surrogate(st.u, neuron.v_th),
                "sigma'")
    s_last = np.moveaxis(st.s, 0, -1)
    assert_same(tsslbp.next_spike_index(strict(s_last)), tsslbp.next_spike_index(s_last), "next spike")
    dtype = st.u.dtype
    assert_same(tsslbp.kappa(7, theta_s, xs, getattr(xs, dtype.name), DEVICE),
                tsslbp.kappa(7, theta_s, np, dtype), "kappa (2)")
    assert_same(tsslbp.kernel_matrix(7, theta_s, xs, getattr(xs, dtype.name), DEVICE),
                tsslbp.kernel_matrix(7, theta_s, np, dtype), "K")


@pytest.mark.parametrize("reading", READINGS)
@pytest.mark.parametrize("warmup", (True, False))
def test_lif_backward_recursion_and_explicit_phi(lif_case, reading, warmup):
    neuron, st, g = lif_case
    grad = GradientParams(reading=reading, warmup=warmup)
    sst, sg = strict_state(st), strict(g)
    assert_same(tsslbp.lif_backward(sg, sst, neuron, grad), tsslbp.lif_backward(g, st, neuron, grad),
                "recursion")
    assert_same(tsslbp.lif_backward_explicit(sg, sst, neuron, grad),
                tsslbp.lif_backward_explicit(g, st, neuron, grad), "explicit (9)")
    terms_np = tsslbp.phi_matrix(st, neuron, grad, terms=True)
    terms_xs = tsslbp.phi_matrix(sst, neuron, grad, terms=True)
    for name, term in terms_np.items():
        assert_same(terms_xs[name], term, name)


# --- layers --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_layer(dtype):
    rng = np.random.default_rng(2)
    layer = Dense(5)
    layer.init_params((2, 4), rng, np, np.dtype(dtype))
    a = rng.random((3, 2, 2, 4)).astype(dtype)
    d = rng.normal(size=(3, 2, 5)).astype(dtype)
    x_np, c_np = layer.forward(a)
    din_np, gr_np = layer.backward(d, c_np)
    W = layer.params["W"]
    layer.params = {"W": strict(W)}
    x_xs, c_xs = layer.forward(strict(a))
    din_xs, gr_xs = layer.backward(strict(d), c_xs)
    assert_same(x_xs, x_np, "x (4)")
    assert_same(din_xs, din_np, "g below (10)")
    assert_same(gr_xs["W"], gr_np["W"], "dW (8)")


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv(dtype, stride, padding):
    rng = np.random.default_rng(3)
    a = rng.random((2, 3, 2, 7, 7)).astype(dtype)
    W = rng.normal(size=(4, 2, 3, 3)).astype(dtype)
    x_np, c_np = conv_forward(a, W, stride, padding)
    x_xs, c_xs = conv_forward(strict(a), strict(W), stride, padding)
    assert_same(x_xs, x_np, "x")
    d = rng.normal(size=x_np.shape).astype(dtype)
    for need in (True, False):
        din_np, dW_np = conv_backward(d, c_np, need)
        din_xs, dW_xs = conv_backward(strict(d), c_xs, need)
        assert_same(dW_xs, dW_np, "dW")
        if need:
            assert_same(din_xs, din_np, "g below")
        else:
            assert din_xs is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", (8, 9))
def test_pool(dtype, hw):
    rng = np.random.default_rng(4)
    a = rng.random((2, 3, 2, hw, hw)).astype(dtype)
    out_np, c_np = pool_forward(a, 2)
    out_xs, c_xs = pool_forward(strict(a), 2)
    assert_same(out_xs, out_np)
    d = rng.normal(size=out_np.shape).astype(dtype)
    assert_same(pool_backward(strict(d), c_xs), pool_backward(d, c_np))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout(dtype):
    a = np.random.default_rng(5).random((3, 4, 6)).astype(dtype)
    layer = Dropout(0.4)
    out_np, mask_np = layer.forward(a, train=True, rng=np.random.default_rng(9))
    out_xs, mask_xs = layer.forward(strict(a), train=True, rng=np.random.default_rng(9))
    assert_same(out_xs, out_np)
    assert_same(layer.backward(strict(a), mask_xs)[0], layer.backward(a, mask_np)[0])


# --- network -------------------------------------------------------------------------
@pytest.fixture
def strict_static_views(monkeypatch):
    """Strict arrays have no strides: let the network's one layout hook take every strict
    (T, ...) input for a repeat_static view (NumPy arrays are still asked of their strides).
    Only for tests whose strict inputs are all repeat_static views."""
    real = network_mod.is_time_broadcast

    def is_time_broadcast(x, xp):
        return x.shape[0] > 1 if xp is xs else real(x, xp)
    monkeypatch.setattr(network_mod, "is_time_broadcast", is_time_broadcast)


def mlp(dtype, reset="zero"):
    return Network([Dense(16, weight_scale=3.0), Dense(10, weight_scale=3.0)], (12,),
                   neuron=NeuronParams(reset=reset), dtype=dtype, seed=3)


def cnn(dtype):
    return Network([Conv2d(4, 3, padding=1, weight_scale=3.0), Pool2d(2), Dropout(0.2),
                    Dense(10, weight_scale=3.0)], (1, 6, 6), dtype=dtype, seed=4)


def both(make, dtype):
    """The same network twice: on NumPy, and moved to strict arrays on DEVICE."""
    return make(dtype), make(dtype).move_to(xs, DEVICE)


def grads_equal(g_xs, g_np):
    for i, (gx, gn) in enumerate(zip(g_xs, g_np)):
        assert set(gx) == set(gn)
        for k in gn:
            assert_same(gx[k], gn[k], f"layer {i} {k}")


@pytest.mark.parametrize("make", (mlp, cnn), ids=("mlp", "cnn"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_forward_backward(make, dtype):
    net_np, net_xs = both(make, dtype)
    rng = np.random.default_rng(6)
    x = rng.random((5, 3) + net_np.input_shape).astype(dtype)
    a_np, c_np = net_np.forward(x, train=True, rng=np.random.default_rng(1))
    a_xs, c_xs = net_xs.forward(strict(x), train=True, rng=np.random.default_rng(1))
    assert_same(a_xs, a_np, "a out")
    g = rng.normal(size=a_np.shape).astype(dtype)
    grads_equal(net_xs.backward(strict(g), c_xs), net_np.backward(g, c_np))
    for dx, dn in zip(net_xs.backward_pass(strict(g), c_xs).deltas, net_np.backward_pass(g, c_np).deltas):
        if dn is not None:
            assert_same(dx, dn, "delta")


@pytest.mark.parametrize("make", (mlp, cnn), ids=("mlp", "cnn"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_static_input_path(make, dtype, strict_static_views):
    """The static-input path (first layer once, γ[t] gain, Σ_t γ[t] g[t] backward) on strict
    arrays. Strict arrays have no strides, so the view is recognised through the one
    layout hook, patched to say yes for the strict input."""
    net_np, net_xs = both(make, dtype)
    rng = np.random.default_rng(7)
    images = rng.random((3,) + net_np.input_shape).astype(dtype)
    x_np = network_mod.repeat_static(images, 5)
    x_xs = network_mod.repeat_static(strict(images), 5)
    a_np, c_np = net_np.forward(x_np)
    a_xs, c_xs = net_xs.forward(x_xs)
    assert c_np.input_gain is not None and c_xs.input_gain is not None
    assert_same(a_xs, a_np, "a out")
    g = rng.normal(size=a_np.shape).astype(dtype)
    grads_equal(net_xs.backward(strict(g), c_xs), net_np.backward(g, c_np))


def test_network_refuses_arrays_of_another_library():
    _, net_xs = both(mlp, "float64")
    with pytest.raises(TypeError, match="network lives on"):
        net_xs.forward(np.zeros((5, 2, 12)))


# --- losses --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_and_prediction(dtype):
    rng = np.random.default_rng(8)
    a = rng.random((5, 4, 10)).astype(dtype)
    labels = np.array([3, 0, 9, 3])
    sa, sl = strict(a), strict(labels)
    target_np = kernel_target(labels, 10, 5, 0.3, dtype=np.dtype(dtype))
    target_xs = kernel_target(sl, 10, 5, 0.3, dtype=getattr(xs, dtype))
    assert_same(target_xs, target_np, "a-hat (7)")
    L_np, g_np = kernel_loss(a, target_np)
    L_xs, g_xs = kernel_loss(sa, target_xs)
    assert L_xs == L_np
    assert_same(g_xs, g_np, "kernel loss g")
    L_np, g_np = count_loss(a, labels, 3.0, 0.5)
    L_xs, g_xs = count_loss(sa, sl, 3.0, 0.5)
    assert L_xs == L_np
    assert_same(g_xs, g_np, "count loss g")
    assert_same(predict(sa), predict(a))
    assert n_correct(sa, sl) == n_correct(a, labels)


# --- surrogate, event shift ------------------------------------------------------------
@pytest.mark.parametrize("detach", (True, False))
def test_surrogate_backward_and_smooth_forward(lif_case, detach):
    neuron, st, g = lif_case
    backward, sigmoid = surrogate_mod.surrogate_lif_backward, surrogate_mod.sigmoid_surrogate
    assert_same(backward(strict(g), strict_state(st), neuron, detach_reset=detach),
                backward(g, st, neuron, detach_reset=detach))
    assert_same(backward(strict(g), strict_state(st), neuron, surrogate=sigmoid),
                backward(g, st, neuron, surrogate=sigmoid))
    a_np, s_np = surrogate_mod.smooth_lif_forward(st.x, neuron)
    a_xs, s_xs = surrogate_mod.smooth_lif_forward(strict(st.x), neuron)
    assert_same(a_xs, a_np)
    assert_same(s_xs.s, s_np.s)


@pytest.mark.parametrize("reset", RESETS)
def test_event_shift_model(reset):
    net_np, net_xs = both(lambda d: mlp(d, reset), "float64")
    x = np.random.default_rng(9).random((5, 2, 12))
    _, c_np = net_np.forward(x)
    _, c_xs = net_xs.forward(strict(x))
    assert_same(event_shift_forward(net_xs, strict(x), c_xs), event_shift_forward(net_np, x, c_np))


# --- optimiser -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_clip_clamp(dtype):
    rng = np.random.default_rng(10)
    params_np = [{"W": rng.normal(size=(4, 3)).astype(dtype)}, {},
                 {"W": rng.normal(size=(2, 4)).astype(dtype)}]
    params_xs = [{k: strict(v) for k, v in layer.items()} for layer in params_np]
    opt_np, opt_xs = optim.AdamW(params_np, lr=0.05), optim.AdamW(params_xs, lr=0.05)
    for step in range(3):
        grads = [{k: rng.normal(size=v.shape).astype(dtype) * 3 for k, v in layer.items()}
                 for layer in params_np]
        grads_xs = [{k: strict(v) for k, v in layer.items()} for layer in grads]
        assert optim.clip_grad_norm(grads_xs, 1.0) == optim.clip_grad_norm(grads, 1.0)
        opt_np.step(grads)
        opt_xs.step(grads_xs)
        optim.clamp_weights(params_np, -0.5, 0.5)
        optim.clamp_weights(params_xs, -0.5, 0.5)
        for lx, ln in zip(params_xs, params_np):
            for k in ln:
                assert_same(lx[k], ln[k], f"step {step} {k}")


# --- training step and evaluation ---------------------------------------------------------
@pytest.mark.parametrize("network", ("12-16-10", "1x6x6-4C3-P2-10"))
def test_training_step_and_evaluation(network, monkeypatch, strict_static_views):
    """Two steps of snnsim.training.train.train_step (forward, loss, backward, clip, AdamW,
    clamp), then test_pass() over a split, on strict arrays vs NumPy; static images, so
    both take the static-input path."""
    from snnsim.training import data as data_mod
    from snnsim.training.config import TrainConfig
    from snnsim.training.train import make_loss, make_network, test_pass, train_step

    shape = (12,) if network == "12-16-10" else (1, 6, 6)
    net_spec = network.split("-", 1)[1]
    cfg = TrainConfig(network=f"{int(np.prod(shape))}-{net_spec}" if len(shape) == 1 else net_spec,
                      dtype="float64", batch_size=4, n_steps=5, seed=2)
    rng_data = np.random.default_rng(11)
    images = rng_data.random((6,) + shape)
    labels = rng_data.integers(0, 10, size=6)
    split = data_mod.Split("test", "static", labels.astype(np.int64), x=images)
    results = {}
    for name in ("numpy", "strict"):
        net = make_network(cfg, shape)
        if name == "strict":
            net.move_to(xs, DEVICE)
        opt = optim.AdamW(net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
        loss_fn = make_loss(cfg, net)
        rng = np.random.default_rng(0)
        steps = []
        for start in (0, 3):
            x, y = data_mod.to_backend(images[start:start + 3], "static", net.xp, net.dtype, cfg.n_steps,
                                       net.device), net.xp.asarray(labels[start:start + 3], device=net.device)
            steps.append(train_step(net, opt, x, y, loss_fn, cfg, rng))
        results[name] = (steps, [{k: to_numpy(v) for k, v in layer.items()} for layer in net.params],
                         test_pass(net, split, dataclasses.replace(cfg, eval_batch_size=4)))
    (steps_np, w_np, acc_np), (steps_xs, w_xs, acc_xs) = results["numpy"], results["strict"]
    # the test pass: accuracy and per-layer spike counts (NumPy: the fast forward and one
    # bincount per layer; strict arrays: the plain forward and a comparison per count)
    assert steps_xs == steps_np and acc_xs == acc_np
    assert sum(acc_np[1][0]["counts"]) > 0 and 0 < acc_np[1][0]["silent"] < 1
    for ln, lx in zip(w_np, w_xs):
        for k in ln:
            np.testing.assert_array_equal(lx[k], ln[k])


# --- checkpoint and recording -----------------------------------------------------------
def test_checkpoint_save_and_load(tmp_path):
    """Weights and AdamW moments of a strict network go to HDF5 (host copies, explicitly)
    and come back onto DEVICE; the file's arrays equal those of the NumPy run."""
    from snnsim.training.checkpoint import load_checkpoint, save_checkpoint
    from snnsim.training.train import set_weights

    files, loaded = {}, {}
    for name, (net, xp_in) in zip(("numpy", "strict"), [(mlp("float64"), np.asarray), (None, strict)]):
        net = net or mlp("float64").move_to(xs, DEVICE)
        opt = optim.AdamW(net.params, lr=0.01)
        rng = np.random.default_rng(12)
        for _ in range(2):
            opt.step([{k: xp_in(rng.normal(size=p.shape)) for k, p in layer.items()} for layer in net.params])
        path = tmp_path / f"{name}.h5"
        save_checkpoint(path, weights=net.params, optimizer=opt.state_dict(),
                        rng_state=rng.bit_generator.state, epoch=1, config={}, metrics=[])
        files[name] = ckpt = load_checkpoint(path)
        fresh = mlp("float64") if name == "numpy" else mlp("float64").move_to(xs, DEVICE)
        set_weights(fresh, ckpt["weights"])
        opt2 = optim.AdamW(fresh.params, lr=0.01)
        opt2.load_state_dict(ckpt["optimizer"])
        loaded[name] = (fresh, opt2)
    for key in ("weights",):
        for ln, lx in zip(files["numpy"][key], files["strict"][key]):
            for k in ln:
                np.testing.assert_array_equal(lx[k], ln[k])
    for moment in ("m", "v"):
        for ln, lx in zip(files["numpy"]["optimizer"][moment], files["strict"]["optimizer"][moment]):
            for k in ln:
                np.testing.assert_array_equal(lx[k], ln[k])
    (net_np, opt_np), (net_xs, opt_xs) = loaded["numpy"], loaded["strict"]
    for ln, lx in zip(net_np.params, net_xs.params):
        for k in ln:
            assert_same(lx[k], ln[k], "loaded weight")
    for ln, lx in zip(opt_np.v, opt_xs.v):
        for k in ln:
            assert_same(lx[k], ln[k], "loaded moment v")


@pytest.mark.parametrize("make", (mlp, cnn), ids=("mlp", "cnn"))
def test_record(make):
    """snnsim.analysis.record.record on strict batches: counts, kept spike trains and
    membranes, predictions, scores, labels as on NumPy."""
    from snnsim.analysis.record import record

    net_np, net_xs = both(make, "float64")
    rng = np.random.default_rng(13)
    batches = [(rng.random((5, 3) + net_np.input_shape), rng.integers(0, 10, size=3)) for _ in range(2)]
    rec_np = record(net_np, batches, n_samples=5, full=True, full_samples=4)
    rec_xs = record(net_xs, [(strict(x), strict(y)) for x, y in batches], n_samples=5, full=True,
                    full_samples=4)
    for name in ("predictions", "scores", "labels"):
        np.testing.assert_array_equal(getattr(rec_xs, name), getattr(rec_np, name), err_msg=name)
    assert len(rec_xs.layers) == len(rec_np.layers) > 0
    for lx, ln in zip(rec_xs.layers, rec_np.layers):
        for name in ("counts", "spikes", "membrane"):
            np.testing.assert_array_equal(getattr(lx, name), getattr(ln, name), err_msg=name)


@pytest.mark.parametrize("static", (False, True), ids=("frames", "static"))
def test_inspection(static, request):
    """snnsim.analysis.inspection.inspect_pass (every intermediate, φ of chosen neurons,
    the backward walk checked against Network.backward) on strict arrays: every array
    of its result as on NumPy."""
    from snnsim.analysis.inspection import inspect_pass
    if static:
        request.getfixturevalue("strict_static_views")

    net_np, net_xs = both(lambda d: Network([Dense(10, weight_scale=2.5), Dense(10, weight_scale=2.5)],
                                            (1, 4, 4), dtype=d, seed=0), "float64")
    rng = np.random.default_rng(14)
    images = rng.random((3, 1, 4, 4))
    x_np = network_mod.repeat_static(images, 5) if static else rng.random((5, 3, 1, 4, 4))
    x_xs = network_mod.repeat_static(strict(images), 5) if static else strict(x_np)
    labels = np.array([1, 7, 3])

    def loss_fn(a, y):
        xp = array_module(a)
        dtype = np.dtype("float64") if xp is np else xp.float64
        return kernel_loss(a, kernel_target(y, 10, a.shape[0], net_np.neuron.theta_s, dtype=dtype))
    r_np = inspect_pass(net_np, x_np, labels, loss_fn, max_neurons=4, phi_select="active")
    r_xs = inspect_pass(net_xs, x_xs, strict(labels), loss_fn, max_neurons=4, phi_select="active")
    assert r_xs["attrs"]["loss"] == r_np["attrs"]["loss"]
    assert r_xs["attrs"]["static_input"] == r_np["attrs"]["static_input"] == static
    for key, value in r_np["data"].items():
        np.testing.assert_array_equal(r_xs["data"][key], value, err_msg=key)
    for lx, ln in zip(r_xs["layers"], r_np["layers"]):
        for key, value in ln["data"].items():
            np.testing.assert_array_equal(lx["data"][key], value, err_msg=key)
        for key, value in ln.get("phi", {}).items():
            np.testing.assert_array_equal(lx["phi"][key], value, err_msg=f"phi {key}")


# --- fidelity study and benchmark ---------------------------------------------------------
def build_on_strict(monkeypatch, module, name):
    """Make the network constructor ``module.name`` move every network it builds to strict
    arrays on DEVICE (the one change to the code under test); returns the networks built."""
    real, built = getattr(module, name), []

    def make(*args, **kwargs):
        built.append(real(*args, **kwargs).move_to(xs, DEVICE))
        return built[-1]
    monkeypatch.setattr(module, name, make)
    return built


@pytest.mark.parametrize("net_index", (0, 2), ids=("zero-reset", "subtract-reset"))
def test_fidelity_measurement(net_index):
    """snnsim.fidelity.measure on strict arrays: every variant of snnsim.variants against the
    exact ``timing`` gradient and the finite differences of the event-shift loss (measure),
    the ladder, the descent probe; every number as on NumPy, the weights restored exactly."""
    from snnsim.fidelity import measure, problems

    sizes, n_steps, reset = problems.RANDOM_NETS[net_index]
    net_np, x, a_hat = problems.random_problem(sizes, n_steps, reset, seed=11)
    net_xs = problems.random_problem(sizes, n_steps, reset, seed=11)[0].move_to(xs, DEVICE)
    results = {}
    for name, net, x_in, target in (("numpy", net_np, x, a_hat),
                                    ("strict", net_xs, strict(x), strict(a_hat))):
        results[name] = (measure.measure(net, x_in, target, measure.BATCH_VARIANTS, n_dirs=4,
                                         rng=np.random.default_rng(0)),
                         measure.ladder(net, x_in, target),
                         measure.descent_losses(net, x_in, target))
    assert results["strict"] == results["numpy"]                          # (NaN would fail too)
    initial = problems.random_problem(sizes, n_steps, reset, seed=11)[0]
    for lx, l0 in zip(net_xs.params, initial.params):
        for k in l0:
            assert_same(lx[k], l0[k], "weights restored")


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST test set not installed")
def test_fidelity_batch_command(tmp_path, monkeypatch, strict_static_views):
    """snnsim.fidelity.problems.run_batch (``python3 -m snnsim.fidelity batch``) end to end
    with its MLP on strict arrays: weights from a file (load_weights), Fashion-MNIST test
    samples and their target (batch_problem), measure, ladder, descent probe; the result
    as on NumPy but for its seconds."""
    from snnsim.fidelity import measure, problems

    weights = tmp_path / "weights.npz"
    saved = problems.build_mlp("float64", seed=7)
    np.savez(weights, **{f"{i}.{k}": saved.params[i][k] for i, k in measure.param_entries(saved)})

    def run_batch():
        res = problems.run_batch(seed=3, n_samples=4, n_dirs=2, weights=str(weights))
        del res["seconds"]
        return res
    res_np = run_batch()
    built = build_on_strict(monkeypatch, problems, "build_mlp")
    res_xs = run_batch()
    assert len(built) == 1
    assert res_xs == res_np                                               # (NaN would fail too)


@pytest.mark.parametrize("experiment", ("mlp", "cnn", "nmnist"))
def test_bench_step_timer(experiment, monkeypatch, request):
    """The benchmark's timed step (snnsim.analysis.steptimer.StepTimer: its random batch,
    then train_step with the recursion or the O(T²) baseline's explicit φ) on strict arrays:
    the batch on DEVICE as on NumPy, and after two steps every weight as on NumPy.
    Static images (mlp, cnn) take the static-input path, N-MNIST's event frames not."""
    from snnsim.analysis import bench, steptimer
    if experiment != "nmnist":
        request.getfixturevalue("strict_static_views")

    cfg = bench.experiment_config(experiment, "numpy", batch_size=2, n_steps=3)
    timers_np = [bench.StepTimer(cfg, explicit) for explicit in (False, True)]
    built = build_on_strict(monkeypatch, steptimer, "make_network")
    timers_xs = [bench.StepTimer(cfg, explicit) for explicit in (False, True)]
    assert len(built) == 2
    for t_np, t_xs in zip(timers_np, timers_xs):
        assert_same(t_xs.x, t_np.x, "batch")
        assert_same(t_xs.labels, t_np.labels, "labels")
        for _ in range(2):
            t_np.step()
            t_xs.step()
        for ln, lx in zip(t_np.net.params, t_xs.net.params):
            for k in ln:
                assert_same(lx[k], ln[k], f"weight {k} after two steps")


def test_bench_command(tmp_path, monkeypatch, strict_static_views):
    """``python3 -m snnsim.bench`` end to end with every network it builds on strict arrays:
    the MLP step and its O(T²) baseline (time_figure), the memory sweep (memory_figure), the
    phases of the step on real data (the phase clock); every figure there, as
    tests/test_bench.py asks of the NumPy run (no figure's value is asserted)."""
    from test_bench import QUICK

    from snnsim.analysis import bench, steptimer

    timed = build_on_strict(monkeypatch, steptimer, "make_network")   # the timed steps
    phased = build_on_strict(monkeypatch, bench, "make_network")      # the phases' network
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", *QUICK, "--phases", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    built = timed + phased
    assert len(timed) == 2 + 2 and len(phased) == 1      # run figures, memory sweep; phases
    assert all(net.xp is xs and net.device == DEVICE for net in built)
    (row,) = res["runs"]
    (sweep,) = res["memory_sweep"]
    for figure in (row["recursion"], row["explicit_phi"], sweep["recursion"], sweep["explicit_phi"]):
        assert figure["batches"] == 1 and figure["s_per_batch"] > 0 and figure["peak_bytes"] > 0
    (phases,) = res["phases"]
    assert set(phases["phases_s"]) == set(bench.PHASES)
    assert all(v > 0 for k, v in phases["phases_s"].items() if k != "clip")
