"""snnsim.fast: the fast path of the training step computes the plain path's numbers, bit for bit.

Equality is of the bits (the arrays' integer views), not of values: -0.0 against +0.0 or
two different NaNs would fail. Every test checks that the case it compares is not vacuous
(spikes and silent steps both occur, warm-up both applies and not, the clip and the clamp
act). The fast path is compared twice: with the numba kernels of :mod:`snnsim.fast_kernels`
(where numba is installed; the ``test`` extra installs it) and with its NumPy passes, the
path taken without numba (in one block of neurons, or in short blocks).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snnsim import fast, fast_kernels
from snnsim.conv import Conv2d
from snnsim.layers import Dense
from snnsim.network import Network, repeat_static
from snnsim.neuron import lif_forward
from snnsim.params import EXACT_TIMING, GradientParams, NeuronParams
from snnsim.pool import Pool2d
from snnsim.training.config import TrainConfig
from snnsim.training.optim import AdamW
from snnsim.training.train import make_loss, train_step
from snnsim.tsslbp import lif_backward, warmup_mask


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == np.bool_:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}")))


def currents(rng, shape, dtype):
    """Input currents that make LIF neurons fire at some steps and not at others."""
    return (0.9 * rng.standard_normal(shape) + 0.6).astype(dtype)


GRADS = [GradientParams(), GradientParams("timing", 8.0, True), EXACT_TIMING,
         GradientParams("authors", None, False)]
ROOT = Path(__file__).resolve().parents[1]
#: The top-level kernels, called from snnsim.fast (the per-step ones from inside them).
KERNELS = ("lif_forward_kernel", "lif_backward_kernel", "warmup_kernel", "adamw_kernel")
#: The convolution's and the pooling's kernels (a CNN's step calls them; an MLP's does not).
CONV_KERNELS = ("im2col_kernel", "col2im_kernel", "pool_forward_kernel", "pool_backward_kernel")


def use_path(path: str, monkeypatch) -> dict:
    """Take the fast path's ``path``: ``numba`` (its kernels), ``numpy`` (its NumPy passes in
    one block of neurons) or ``numpy-N`` (in blocks of N). Returns the kernels' call counts."""
    if path == "numba" and not fast_kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install -e .[fast])")
    monkeypatch.setattr(fast_kernels, "AVAILABLE", path == "numba")
    if path.startswith("numpy-"):
        monkeypatch.setattr(fast, "BLOCK", int(path.split("-")[1]))
    calls = dict.fromkeys(KERNELS + CONV_KERNELS, 0)

    def counted(name, kernel):
        def call(*args):
            calls[name] += 1
            return kernel(*args)
        return call

    for name in KERNELS + CONV_KERNELS:
        monkeypatch.setattr(fast_kernels, name, counted(name, getattr(fast_kernels, name)))
    return calls


def check_calls(path: str, calls: dict, names=KERNELS) -> None:
    """The kernels ran on the numba path, and none on the NumPy one."""
    for name in names:
        assert (calls[name] > 0) == (path == "numba"), (name, calls)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("grad", GRADS, ids=lambda g: f"{g.reading}-{g.sensitivity_bound}-{g.warmup}")
@pytest.mark.parametrize("v_th", [1.0, 0.3])
@pytest.mark.parametrize("path", ["numba", "numpy", "numpy-37"])
def test_lif_forward_and_backward_bit_identical(dtype, reset, grad, v_th, path, monkeypatch):
    """Every field of the state and δ; V_th = 0.3 (not a float32) with currents exactly at
    float32(0.3), where comparing in another precision than the plain path would differ;
    the numba kernels, or the NumPy passes with the 231 neurons in one block or in blocks
    of 37 (the last one shorter)."""
    calls = use_path(path, monkeypatch)
    rng = np.random.default_rng(3)
    neuron = NeuronParams(reset=reset, v_th=v_th)
    x = currents(rng, (6, 7, 33), dtype) * v_th                           # (T, B, N)
    x[0, 0, :5] = v_th                                                    # u[0] = x[0] = V_th
    g = rng.standard_normal(x.shape).astype(dtype)
    ws = fast.Workspace()
    for _ in range(2):                                                    # the second reuses buffers
        ws.reset()
        a_f, st_f = fast.lif_forward_fast(x, neuron, ws)
        d_f = fast.lif_backward_fast(g, st_f, neuron, grad, ws)
    a, st = lif_forward(x, neuron)
    d = lif_backward(g, st, neuron, grad)
    assert 0.05 < st.s.mean() < 0.8                                       # spikes and silence
    warm = warmup_mask(st.a, neuron.theta_s)
    assert warm.any() and not warm.all()
    assert same_bits(a_f, a)
    for name in ("u", "du", "s", "a"):
        assert same_bits(getattr(st_f, name), getattr(st, name)), name
    assert same_bits(d_f, d)
    check_calls(path, calls, KERNELS[:3] if grad.warmup else KERNELS[:2])


def test_select_is_where_bit_for_bit():
    rng = np.random.default_rng(0)
    p = np.array([-0.0, 0.0, np.nan, -np.inf, 1.5, -2.0])
    q = np.array([0.0, -0.0, 3.0, np.inf, np.nan, -0.0])
    s = np.array([True, False, True, False, True, False])
    out = np.empty_like(p)
    fast.select(fast.spike_bits(s, np.empty(6, np.uint64)), p, q, out)
    assert same_bits(out, np.where(s, p, q))
    x = rng.standard_normal(1000).astype(np.float32)
    s = rng.random(1000) < 0.3
    out = np.empty_like(x)
    fast.select(fast.spike_bits(s, np.empty(1000, np.uint32)), x, -x, out)
    assert same_bits(out, np.where(s, x, -x))


# weights scaled up so that every layer fires at 10-30 % of its steps (see the test below)
def mlp(dtype):
    return Network([Dense(40, 2.0), Dense(30, 2.0), Dense(10, 3.0)], input_shape=(50,), dtype=dtype,
                   seed=1)


def cnn(dtype):
    return Network([Conv2d(4, 3, padding=1, weight_scale=4.0), Pool2d(2),
                    Conv2d(6, 3, padding=1, stride=2, weight_scale=4.0), Dense(20, 3.0), Dense(10, 3.0)],
                   input_shape=(2, 10, 10), dtype=dtype, seed=2)


CLIP = 1.0
CASES = [(mlp, True), (mlp, False), (cnn, True), (cnn, False)]
CASE_IDS = ["mlp-static", "mlp-events", "cnn-static", "cnn-events"]


def batches(net, rng, n, static: bool):
    """``n`` batches: static images (the first layer's shortcut) or event frames."""
    T, B = 5, 8
    out = []
    for _ in range(n):
        if static:
            x = repeat_static(np.asarray(2.0 * rng.random((B,) + net.input_shape), net.dtype), T)
        else:
            x = np.asarray(rng.random((T, B) + net.input_shape) < 0.4, net.dtype)
        out.append((x, rng.integers(0, 10, B)))
    return out


def train_both(make, dtype, static, grad_clip, weight_clamp, steps=4):
    cfg = TrainConfig(dtype=dtype, n_steps=5, batch_size=8, grad_clip=grad_clip,
                      weight_clamp=weight_clamp, lr=0.05)
    runs = []
    for use_fast in (False, True):
        net = make(dtype)
        opt = AdamW(net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                    weight_decay=cfg.weight_decay)
        loss_fn = make_loss(cfg, net)
        rng = np.random.default_rng(7)
        results = [train_step(net, opt, x, y, loss_fn, cfg, rng, fast=use_fast)
                   for x, y in batches(net, np.random.default_rng(5), steps, static)]
        runs.append((net, opt, results))
    assert fast.fast_path_applies(runs[1][0], cfg.backward, None)
    assert getattr(runs[0][0], "fast_path", None) is None                 # the plain run was plain
    assert runs[1][0].fast_path.ws.nbytes > 0
    return runs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,static", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("path", ["numba", "numpy", "numpy-101"])
def test_train_step_bit_identical_over_steps(make, static, dtype, path, monkeypatch):
    """Four steps of the whole training step (forward, loss, backward, clip, AdamW with its
    moments, clamp): weights, m, v, losses and counts equal bit for bit; the numba kernels,
    or the NumPy passes with the layers' neurons in one block each or in blocks of 101."""
    calls = use_path(path, monkeypatch)
    (net_p, opt_p, res_p), (net_f, opt_f, res_f) = train_both(make, dtype, static, CLIP, 0.3)
    assert res_p == res_f
    assert opt_p.step_count == opt_f.step_count == 4
    clamped = 0
    for i, (lp, lf) in enumerate(zip(net_p.params, net_f.params)):
        for name in lp:
            assert same_bits(lp[name], lf[name]), (i, name)
            assert same_bits(opt_p.m[i][name], opt_f.m[i][name]), (i, name, "m")
            assert same_bits(opt_p.v[i][name], opt_f.v[i][name]), (i, name, "v")
            clamped += int(np.sum(np.abs(lp[name]) == 0.3))
    assert clamped > 0                                                    # the clamp acted
    check_calls(path, calls, KERNELS + (CONV_KERNELS if make is cnn else ()))
    if make is cnn:                                    # per step: im2col of both convs, col2im of
        assert calls["col2im_kernel"] in (0, 4) and calls["im2col_kernel"] in (0, 8)   # the second


# (T, B, C, H, W) inputs, kernel (C_out, k), stride, padding: padding wider than the
# kernel's reach, strides that skip rows, an output of one pixel, rectangular images
CONV_CASES = [((5, 3, 2, 9, 9), (4, 3), 1, 1), ((2, 4, 3, 11, 8), (5, 4), 2, 3),
              ((1, 6, 1, 10, 10), (3, 5), 3, 2), ((3, 2, 4, 7, 9), (2, 2), 1, 0),
              ((2, 2, 3, 5, 5), (6, 5), 1, 0), ((4, 3, 2, 6, 5), (3, 3), 2, 4)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("in_shape,kernel,stride,padding", CONV_CASES)
def test_conv_forward_and_backward_bit_identical(in_shape, kernel, stride, padding, dtype):
    """The fast convolution (numba's im2col and col2im, products into workspace arrays) on
    random shapes with stride and padding: currents, the cached columns, ∂L/∂W and ∂L/∂a
    the plain :func:`conv_forward` / :func:`conv_backward`'s bits, twice on one workspace
    (the second reuses its arrays, filled with NaN); inputs and errors with -0.0 and zeros."""
    from snnsim.conv import conv_backward, conv_forward
    if not fast_kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install -e .[fast])")
    rng = np.random.default_rng(sum(in_shape) + 10 * stride + padding)
    c_out, k = kernel
    a = rng.standard_normal(in_shape).astype(dtype)
    a[rng.random(in_shape) < 0.3] = 0.0
    a[rng.random(in_shape) < 0.1] = -0.0
    W = rng.standard_normal((c_out, in_shape[2], k, k)).astype(dtype)
    x, cache = conv_forward(a, W, stride, padding)
    d = rng.standard_normal(x.shape).astype(dtype)
    d[rng.random(x.shape) < 0.2] = -0.0
    d_in, dW = conv_backward(d, cache)
    ws = fast.Workspace()
    for _ in range(2):
        ws.reset()
        x_f, cache_f = fast.conv_forward_fast(a, W, stride, padding, ws)
        assert same_bits(x_f, x) and same_bits(cache_f[0], cache[0])
        assert cache_f[1] is W and cache_f[2:] == cache[2:]
        d_in_f, dW_f = fast.conv_backward_fast(d, cache_f, True, ws)
        assert same_bits(d_in_f, d_in) and same_bits(dW_f, dW)
        assert fast.conv_backward_fast(d, cache_f, False, ws)[0] is None
        for out in (x_f, cache_f[0], d_in_f):                             # the second call rewrites
            out.fill(np.nan)                                              # all of them
    assert d_in.shape == a.shape and np.count_nonzero(d_in) > d_in.size // 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("in_shape,k", [((5, 3, 4, 8, 8), 2), ((2, 2, 3, 9, 7), 2), ((3, 2, 2, 10, 11), 3),
                                        ((2, 3, 1, 4, 5), 1), ((1, 2, 2, 5, 4), 4)])
def test_pool_forward_and_backward_bit_identical(in_shape, k, dtype):
    """The fast sum pooling (numba) on random inputs, H and W multiples of k or floored,
    k = 2 (its own loop) and others: output and ∂L/∂a the plain :func:`pool_forward` /
    :func:`pool_backward`'s bits, twice on one workspace (the second reuses its arrays,
    filled with NaN: the floored rows and columns zeroed again); inputs and errors with -0.0."""
    from snnsim.pool import POOL_GAIN, pool_backward, pool_forward
    if not fast_kernels.AVAILABLE:
        pytest.skip("numba is not installed (pip install -e .[fast])")
    rng = np.random.default_rng(sum(in_shape) + k)
    a = rng.standard_normal(in_shape).astype(dtype)
    a[rng.random(in_shape) < 0.3] = -0.0
    out, cache = pool_forward(a, k)
    d = rng.standard_normal(out.shape).astype(dtype)
    d[rng.random(out.shape) < 0.2] = -0.0
    d_in = pool_backward(d, cache)
    ws = fast.Workspace()
    for _ in range(2):
        ws.reset()
        out_f, cache_f = fast.pool_forward_fast(a, k, POOL_GAIN, ws)
        assert same_bits(out_f, out) and cache_f == cache
        d_in_f = fast.pool_backward_fast(d, cache, ws)
        assert same_bits(d_in_f, d_in)
        out_f.fill(np.nan)                                                # the second call
        d_in_f.fill(np.nan)                                               # rewrites all


@pytest.mark.parametrize("make,static", CASES, ids=CASE_IDS)
def test_compared_steps_fire_and_clip(make, static):
    """In the equality test's first step every spiking layer fires at some steps and not
    at others, and the gradient norm exceeds the clip (the scaled branch is compared)."""
    from snnsim.training.optim import global_grad_norm
    net = make("float64")
    cfg = TrainConfig(dtype="float64", n_steps=5, batch_size=8)
    (x, y), = batches(net, np.random.default_rng(5), 1, static)
    a, cache = net.forward(x, train=True)
    _, g = make_loss(cfg, net)(a, y)
    rates = [float(st.s.mean()) for st in cache.states if st is not None]
    assert all(0.05 < r < 0.5 for r in rates), rates
    assert global_grad_norm(net.backward(g, cache)) > 2 * CLIP


@pytest.mark.parametrize("backward", ["surrogate", "timing"])
def test_other_backwards_take_the_plain_path(backward):
    net = mlp("float64")
    assert not fast.fast_path_applies(net, backward, None)
    assert fast.fast_path_applies(net, "tsslbp", None)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_update_fast_equals_clip_step_clamp(dtype, path, monkeypatch):
    """Parameters of any layout, gradients clipped: the same bits as the three plain calls.
    W and its gradient Fortran-ordered (one element order: the kernel takes them), U
    Fortran-ordered with a C-ordered gradient (the kernel cannot: AdamW.update does), V
    C-ordered; weight decay on and off."""
    from snnsim.training.optim import clamp_weights, clip_grad_norm
    calls = use_path(path, monkeypatch)
    rng = np.random.default_rng(2)
    base = rng.standard_normal((3, 1000)).astype(dtype)
    params = [{"W": np.asfortranarray(rng.standard_normal((30, 20)).astype(dtype)),
               "U": np.asfortranarray(rng.standard_normal((20, 10)).astype(dtype)), "V": base.copy()}]
    layout = {"W": np.asfortranarray, "U": np.ascontiguousarray, "V": np.ascontiguousarray}
    for weight_decay in (0.01, 0.0):
        ps = [{k: v.copy(order="K") for k, v in params[0].items()}]
        twin = [{k: v.copy(order="K") for k, v in params[0].items()}]
        opt_p = AdamW(ps, lr=0.1, weight_decay=weight_decay)
        opt_f = AdamW(twin, lr=0.1, weight_decay=weight_decay)
        for _ in range(3):
            grads = [{k: layout[k](rng.standard_normal(v.shape).astype(dtype))
                      for k, v in params[0].items()}]
            grads_f = [{k: v.copy(order="K") for k, v in grads[0].items()}]
            clip_grad_norm(grads, 1.0)
            opt_p.step(grads)
            clamp_weights(ps, -1.0, 1.0)
            fast.update_fast(opt_f, grads_f, 1.0, 1.0)
        for k in params[0]:
            assert same_bits(ps[0][k], twin[0][k]), k
            assert same_bits(opt_p.m[0][k], opt_f.m[0][k]), k
            assert same_bits(opt_p.v[0][k], opt_f.v[0][k]), k
        assert np.any(np.abs(ps[0]["V"]) == 1.0)                          # the clamp acted
    assert calls["adamw_kernel"] == (2 * 3 * 2 if path == "numba" else 0)   # W and V, not U


def test_without_numba_the_numpy_passes_serve():
    """numba not importable: :data:`snnsim.fast_kernels.AVAILABLE` is False and the fast step
    runs, the MLP's and the CNN's (on its NumPy passes, the layers' own conv and pooling;
    their equality to the plain path is tested above)."""
    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np\n"
            "from snnsim import fast_kernels\n"
            "assert not fast_kernels.AVAILABLE\n"
            "from tests.test_fast import cnn, mlp, train_both\n"
            "for make in (mlp, cnn):\n"
            "    (_, _, plain), (_, _, fast) = train_both(make, 'float32', True, 1.0, 0.3, steps=2)\n"
            "    assert plain == fast, (plain, fast)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=ROOT)



# --- the evaluation's forward -------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,static", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_fast_forward_output_bit_identical(make, static, dtype, path, monkeypatch):
    """FastForward's output PSC equals Network.forward(train=False)'s bit for bit, on the
    whole batch and slice by slice (as evaluate runs it), from one workspace reused across
    batches of two sizes; the numba path calls the PSC-only kernel, not the full forward."""
    use_path(path, monkeypatch)
    psc_calls = []
    monkeypatch.setattr(fast_kernels, "lif_psc_kernel",
                        lambda *a, k=fast_kernels.lif_psc_kernel: psc_calls.append(1) or k(*a))
    net = make(dtype)
    ff = fast.FastForward()
    for x, _ in batches(net, np.random.default_rng(3), 2, static):
        a, cache = net.forward(x, train=False)
        counts = [st.s.sum(axis=0, dtype=np.int32) for st in cache.states if st is not None]
        assert all(0.05 < float(st.s.mean()) < 0.5 for st in cache.states if st is not None)
        assert same_bits(ff.output(net, x), a)
        assert all(same_bits(c, k) for c, k in zip(ff.counts, counts, strict=True))
        for i in range(0, x.shape[1], 3):                                 # slices of 3, 3, 2
            assert same_bits(ff.output(net, x[:, i:i + 3]), a[:, i:i + 3])
            assert all(same_bits(c, k[i:i + 3]) for c, k in zip(ff.counts, counts, strict=True))
    n_spiking = sum(layer.spiking for layer in net.layers)
    assert len(psc_calls) == (2 * 4 * n_spiking if path == "numba" else 0)


@pytest.mark.parametrize("path", ["numba", "numpy"])
@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_test_pass_counts_as_the_plain_forward(make, path, monkeypatch):
    """test_pass() on the fast path (slices of EVAL_CHUNK) counts the correct samples, the
    silent (sample, neuron) pairs and the spikes that the plain forward's spike trains hold,
    batch by batch; with the fast path switched off it takes the plain forward, same result."""
    from snnsim.loss import n_correct
    from snnsim.training import data as data_mod
    from snnsim.training.train import evaluate, test_pass
    use_path(path, monkeypatch)
    net = make("float32")
    rng = np.random.default_rng(4)
    images = np.asarray(2.0 * rng.random((23,) + net.input_shape), np.float32)
    labels = rng.integers(0, 10, 23)
    split = data_mod.Split(name="test", kind="static", y=labels, x=images)
    cfg = TrainConfig(dtype="float32", n_steps=5, eval_batch_size=10)
    monkeypatch.setattr("snnsim.training.train.EVAL_CHUNK", 4)
    correct = 0
    per_layer = []
    for x, y in data_mod.batches(split, 10, np, net.dtype, 5):
        a, cache = net.forward(x, train=False)
        correct += n_correct(a, y)
        k = [st.s.sum(axis=0) for st in cache.states if st is not None]     # (B, ...) per layer
        per_layer.append([(int((c == 0).sum()), int(c.sum()), c.size) for c in k])
    assert 0 < correct < 23
    hists = [np.zeros(6, np.int64) for _ in per_layer[0]]
    for x, _ in data_mod.batches(split, 10, np, net.dtype, 5):
        _, cache = net.forward(x, train=False)
        for h, st in zip(hists, [st for st in cache.states if st is not None]):
            h += np.bincount(st.s.sum(axis=0).ravel(), minlength=6)
    expected = [{"silent": sum(b[i][0] for b in per_layer) / sum(b[i][2] for b in per_layer),
                 "spikes": sum(b[i][1] for b in per_layer) / sum(b[i][2] for b in per_layer),
                 "counts": hists[i].tolist()}
                for i in range(len(per_layer[0]))]
    assert all(d["counts"][0] / sum(d["counts"]) == d["silent"] for d in expected)
    assert all(0 < d["silent"] < 1 and d["spikes"] > 0 for d in expected)
    assert test_pass(net, split, cfg) == (correct / 23, expected)
    assert evaluate(net, split, cfg) == correct / 23
    monkeypatch.setattr("snnsim.training.train.fast_forward_applies", lambda net: False)
    assert test_pass(net, split, cfg) == (correct / 23, expected)
