"""``--backend torch``: the engine on PyTorch tensors (array-api-compat's torch namespace),
on the CPU here, against the NumPy engine.

Tolerance: float64, relative 1e-10 of each array's largest entry. PyTorch's matrix
products and reductions may add in another order than NumPy's BLAS (the element-wise
work is the same IEEE operations), so the results agree to rounding, ~1e-15
relative, not always bit for bit; 1e-10 leaves room for that rounding carried
through a few layers, and is far below any modelling difference. Spikes must be
identical (the inputs keep every membrane well away from threshold in these sizes).

Without PyTorch the tests skip, except under CI (``CI`` set), where they must run.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from snnsim import Dense, GradientParams, Network, NeuronParams
from snnsim.backend import array_module, to_numpy
from snnsim.conv import Conv2d
from snnsim.dropout import Dropout
from snnsim.network import repeat_static
from snnsim.pool import Pool2d

try:
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None
    if os.environ.get("CI"):
        raise
pytestmark = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

RTOL = 1e-10


def close(t, n, what=""):
    """``t`` (a torch tensor) equals ``n`` within RTOL of max|n| (exactly for bool/int)."""
    assert isinstance(t, torch.Tensor), what
    host = to_numpy(t)
    if host.dtype.kind in "biu":
        np.testing.assert_array_equal(host, n, err_msg=what)
    else:
        assert host.dtype == n.dtype == np.float64, what
        np.testing.assert_allclose(host, n, rtol=0, atol=RTOL * max(float(np.abs(n).max()), 1e-300),
                                   err_msg=what)


def mlp(backend, reset="zero", reading="authors"):
    return Network([Dense(16, weight_scale=3.0), Dense(10, weight_scale=3.0)], (12,),
                   neuron=NeuronParams(reset=reset), grad=GradientParams(reading=reading),
                   backend=backend, dtype="float64", seed=3)


def cnn(backend, reset="zero", reading="authors"):
    return Network([Conv2d(4, 3, padding=1, weight_scale=3.0), Pool2d(2), Dropout(0.2),
                    Dense(10, weight_scale=3.0)], (1, 6, 6), neuron=NeuronParams(reset=reset),
                   grad=GradientParams(reading=reading), backend=backend, dtype="float64", seed=4)


def test_torch_backend_lives_on_torch():
    net = mlp("torch")
    assert net.backend == "torch" and net.dtype == torch.float64
    assert all(isinstance(p, torch.Tensor) for layer in net.params for p in layer.values())
    with pytest.raises(TypeError, match="network lives on"):
        net.forward(np.zeros((5, 2, 12)))


@pytest.mark.parametrize("static", (False, True), ids=("frames", "static"))
@pytest.mark.parametrize("reading", ("authors", "timing"))
@pytest.mark.parametrize("reset", ("zero", "subtract"))
@pytest.mark.parametrize("make", (mlp, cnn), ids=("mlp", "cnn"))
def test_forward_backward_parity(make, reset, reading, static):
    net_np, net_t = make("numpy", reset, reading), make("torch", reset, reading)
    rng = np.random.default_rng(5)
    if static:
        images = rng.random((3,) + net_np.input_shape)
        x_np, x_t = repeat_static(images, 5), repeat_static(torch.asarray(images), 5)
    else:
        x_np = rng.random((5, 3) + net_np.input_shape)
        x_t = torch.asarray(x_np)
    a_np, c_np = net_np.forward(x_np, train=True, rng=np.random.default_rng(1))
    a_t, c_t = net_t.forward(x_t, train=True, rng=np.random.default_rng(1))
    assert (c_t.input_gain is not None) == static == (c_np.input_gain is not None)
    close(a_t, a_np, "a out")
    for st, sn in zip(c_t.states, c_np.states):
        if sn is not None:
            close(st.s, sn.s, "spikes")
            close(st.u, sn.u, "membrane")
    g = rng.normal(size=a_np.shape)
    for gt, gn in zip(net_t.backward(torch.asarray(g), c_t), net_np.backward(g, c_np)):
        for k in gn:
            close(gt[k], gn[k], f"dL/d{k}")


@pytest.mark.parametrize("network", ("784-16-10", "28x28-4C5-P2-10"))
def test_training_steps_and_evaluation_parity(network):
    """Three steps of train_step (kernel loss, clip, AdamW, clamp) and evaluate() with
    ``backend="torch"`` against ``backend="numpy"``."""
    from snnsim.training import data as data_mod
    from snnsim.training.config import TrainConfig
    from snnsim.training.optim import AdamW
    from snnsim.training.train import evaluate, make_loss, make_network, train_step

    net_spec = network if network.startswith("784") else network.split("-", 1)[1]
    rng_data = np.random.default_rng(6)
    images = rng_data.random((9, 1, 28, 28))
    labels = rng_data.integers(0, 10, size=9)
    split = data_mod.Split("test", "static", labels.astype(np.int64), x=images)
    out = {}
    for backend in ("numpy", "torch"):
        cfg = TrainConfig(network=net_spec, backend=backend, dtype="float64", batch_size=3,
                          eval_batch_size=4, seed=2)
        net = make_network(cfg)
        opt = AdamW(net.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                    weight_decay=cfg.weight_decay)
        loss_fn, rng = make_loss(cfg, net), np.random.default_rng(0)
        losses = []
        for batch in data_mod.batches(split, 3, net.xp, net.dtype, cfg.n_steps, device=net.device):
            losses.append(train_step(net, opt, *batch, loss_fn, cfg, rng))
        out[backend] = (losses, net.params, evaluate(net, split, cfg))
    (l_np, w_np, acc_np), (l_t, w_t, acc_t) = out["numpy"], out["torch"]
    assert acc_t == acc_np
    for (L_t, c_t), (L_n, c_n) in zip(l_t, l_np):
        assert c_t == c_n and L_t == pytest.approx(L_n, rel=RTOL)
    for lt, ln in zip(w_t, w_np):
        for k in ln:
            assert array_module(lt[k]) is array_module(torch.empty(0))
            close(lt[k], ln[k], f"weight {k}")
