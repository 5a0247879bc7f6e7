"""The inspection file of one forward/backward pass is self-consistent (snnsim.analysis.inspection).

The file is written, read back with h5py, and every relation a reader would
check by hand is checked from the stored arrays alone:
δ[m] = Σ_k φ[k, m] g[k] (9); ∂L/∂W = Σ_t δ[t] a_in[t]ᵀ (8); g^{l-1} = Wᵀ δ^l (10);
x = W a_in (4); the warm-up mask is a < 1/(4 τs) (S 2.3); counts are Σ_t s;
the φ terms add up to φ; g at the output is a - â for the kernel loss (7).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import fashion_mnist_available

from snnsim import Dense, GradientParams, Network, NeuronParams, kernel_loss, kernel_target, repeat_static
from snnsim.analysis.inspection import (
    FORMAT_NAME,
    PHI_TERMS,
    inspect_pass,
    main,
    parse_samples,
    select_neurons,
    write_inspection,
)

T = 5
N_CLASSES = 4
#: float64 throughout: the relations hold to rounding of a few operations.
RTOL, ATOL = 1e-10, 1e-12


def dense_net(reset="zero", grad=GradientParams(), seed=0):
    layers = [Dense(10, weight_scale=2.5), Dense(8, weight_scale=2.5), Dense(N_CLASSES, weight_scale=2.5)]
    return Network(layers, (1, 4, 4), neuron=NeuronParams(reset=reset), grad=grad, dtype="float64",
                   seed=seed)


def kernel_loss_fn(theta_s):
    def loss_fn(a, labels):
        a_hat = kernel_target(labels, N_CLASSES, a.shape[0], theta_s, dtype=a.dtype)
        return kernel_loss(a, a_hat)
    return loss_fn


def run_and_read(tmp_path, net, x_in, labels, grad=None, max_neurons=64, phi_select="first"):
    a_hat = kernel_target(labels, N_CLASSES, x_in.shape[0], net.neuron.theta_s, dtype=net.dtype)
    result = inspect_pass(net, x_in, labels, kernel_loss_fn(net.neuron.theta_s), grad, max_neurons,
                          phi_select, target=a_hat)
    path = write_inspection(tmp_path / "inspect.h5", result, {"source": "test"})
    assert not (tmp_path / "inspect.h5.tmp").exists()
    return h5py.File(path, "r")


def flat(a):
    """(T, B, ...) -> (T, B, M)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def check_file(f):
    """Every relation between the stored arrays (see the module docstring)."""
    assert f.attrs["format"] == FORMAT_NAME
    neuron = json.loads(f.attrs["neuron"])
    grad = json.loads(f.attrs["grad"])
    theta_s = 1.0 / neuron["tau_s"]
    names = json.loads(f.attrs["layer_names"])
    layers = [f["layers"][n] for n in names]
    # output: g = a - â (kernel loss), and the loss itself
    g_out = f["g_out"][()]
    np.testing.assert_allclose(g_out, f["output"][()] - f["target"][()], rtol=RTOL, atol=ATOL)
    assert float(f.attrs["loss"]) == pytest.approx(0.5 * float((g_out ** 2).sum()), rel=1e-12)
    np.testing.assert_array_equal(layers[-1]["g"][()], g_out)
    np.testing.assert_array_equal(layers[0]["a_in"][()], f["input_psc"][()])
    n_checked_spikes = 0
    for i, g in enumerate(layers):
        a_in = flat(g["a_in"][()])                                        # (T, B, N_in)
        if i + 1 < len(layers):                                           # chaining of the layers
            np.testing.assert_array_equal(layers[i + 1]["a_in"][()], g["a"][()])
        W = g["W"][()]
        x, u, du, s, a = (g[k][()] for k in ("x", "u", "du", "s", "a"))
        G, delta = g["g"][()], g["delta"][()]
        # (4): x = W a_in
        np.testing.assert_allclose(x, np.einsum("tbj,ij->tbi", a_in, W), rtol=RTOL, atol=1e-10)
        # counts = Σ_t s; s is 0/1
        assert s.dtype == np.uint8 and set(np.unique(s)) <= {0, 1}
        np.testing.assert_array_equal(g["counts"][()], s.sum(axis=0))
        n_checked_spikes += int(s.sum())
        # warm-up mask: a < 1/(4 τs) (S 2.3)
        expected_warm = (a < 0.25 * theta_s) if grad["warmup"] else np.zeros(a.shape, bool)
        np.testing.assert_array_equal(g["warmup_mask"][()].astype(bool), expected_warm)
        # (8): ∂L/∂W = Σ_t Σ_b δ[t] a_in[t]ᵀ
        np.testing.assert_allclose(g["dL_dW"][()], np.einsum("tbi,tbj->ij", delta, a_in),
                                   rtol=1e-9, atol=1e-12)
        # (10): the error reaching the layer below is Wᵀ δ
        if i > 0:
            np.testing.assert_allclose(layers[i - 1]["g"][()], delta @ W, rtol=RTOL, atol=ATOL)
        # (9): δ[m] = Σ_k φ[k, m] g[k] for the neurons whose φ is stored; terms add up
        phi = {k: g["phi"][k][()] for k in PHI_TERMS + ("total",)}
        np.testing.assert_allclose(sum(phi[k] for k in PHI_TERMS), phi["total"], rtol=RTOL, atol=ATOL)
        sel = g["phi/neurons"][()]
        assert phi["total"].shape == (s.shape[1], len(sel), s.shape[0], s.shape[0])
        g_sel = flat(G)[..., sel]                                         # (T, B, n)
        d_sel = flat(delta)[..., sel]
        np.testing.assert_allclose(np.einsum("bnkm,kbn->mbn", phi["total"], g_sel), d_sel,
                                   rtol=1e-9, atol=1e-12)
        # φ<1>, φ<2> only at spikes; the warm-up term only where the mask is set
        s_sel = flat(s)[..., sel].transpose(1, 2, 0).astype(bool)        # (B, n, T) over m
        w_sel = flat(g["warmup_mask"][()])[..., sel].transpose(1, 2, 0).astype(bool)
        for term in ("phi_1", "phi_2"):
            assert np.all(phi[term][~np.broadcast_to(s_sel[:, :, None, :], phi[term].shape)] == 0)
        assert np.all(phi["warmup"][~np.broadcast_to(w_sel[:, :, None, :], phi["warmup"].shape)] == 0)
    assert n_checked_spikes > 0                                            # not a silent network


@pytest.mark.parametrize("reading", ["authors", "timing"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_inspect_file_is_consistent_static_input(tmp_path, reading, reset):
    grad = GradientParams(reading=reading)
    net = dense_net(reset=reset, grad=grad, seed=1)
    rng = np.random.default_rng(0)
    x_in = repeat_static(rng.normal(0.5, 1.0, (3, 1, 4, 4)), T)          # static path of forward
    labels = np.array([0, 3, 1])
    with run_and_read(tmp_path, net, x_in, labels) as f:
        assert bool(f.attrs["static_input"])
        np.testing.assert_allclose(f["input_gain"][()], 1 - (1 - 1 / 3) ** np.arange(1, T + 1))
        check_file(f)
        assert json.loads(f.attrs["grad"])["reading"] == reading
        # the engine's own gradient
        a, cache = net.forward(x_in)
        g = a - kernel_target(labels, N_CLASSES, T, net.neuron.theta_s, dtype=a.dtype)
        for i, ref in enumerate(net.backward(g, cache)):
            np.testing.assert_allclose(f["layers"][f"layer_{i:02d}"]["dL_dW"][()], ref["W"],
                                       rtol=1e-12, atol=1e-14)


def test_inspect_file_is_consistent_event_input_no_warmup(tmp_path):
    net = dense_net(seed=2)
    rng = np.random.default_rng(1)
    x_in = (rng.random((8, 2, 1, 4, 4)) < 0.6).astype(np.float64) * 3.0   # time-varying input
    grad = GradientParams(reading="timing", sensitivity_bound=None, warmup=False)
    with run_and_read(tmp_path, net, x_in, np.array([2, 0]), grad=grad, max_neurons=3,
                      phi_select="active") as f:
        assert not bool(f.attrs["static_input"]) and "input_gain" not in f
        assert f["layers/layer_00/phi/total"].shape == (2, 3, 8, 8)
        assert not f["layers/layer_00/warmup_mask"][()].any()
        check_file(f)


def test_inspect_conv_pool_network(tmp_path):
    Conv2d = pytest.importorskip("snnsim.conv").Conv2d
    Pool2d = pytest.importorskip("snnsim.pool").Pool2d
    net = Network([Conv2d(2, 3, padding=1, weight_scale=4.0), Pool2d(2), Dense(N_CLASSES, weight_scale=3.0)],
                  (1, 4, 4), dtype="float64", seed=3)
    rng = np.random.default_rng(2)
    x_in = repeat_static(rng.normal(1.0, 1.0, (2, 1, 4, 4)), T)
    with run_and_read(tmp_path, net, x_in, np.array([1, 2])) as f:
        conv, pool, out = (f["layers"][n] for n in ("layer_00", "layer_01", "layer_02"))
        assert conv["u"].shape == (T, 2, 2, 4, 4) and conv["phi/total"].shape == (2, 32, T, T)
        assert not bool(pool.attrs["spiking"]) and "delta" not in pool
        np.testing.assert_array_equal(pool["a_in"][()], conv["a"][()])
        np.testing.assert_array_equal(out["a_in"][()], pool["a_out"][()])
        # pooling: 1.1 × the sum of each 2×2 window (authors' gain)
        a = conv["a"][()]
        windows = a.reshape(T, 2, 2, 2, 2, 2, 2).sum(axis=(4, 6))
        np.testing.assert_allclose(pool["a_out"][()], 1.1 * windows, rtol=1e-12)
        # φ and δ still agree in the conv layer
        sel = conv["phi/neurons"][()]
        np.testing.assert_allclose(np.einsum("bnkm,kbn->mbn", conv["phi/total"][()],
                                             flat(conv["g"][()])[..., sel]),
                                   flat(conv["delta"][()])[..., sel], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(conv["counts"][()], conv["s"][()].sum(0))


def test_select_neurons():
    s = np.zeros((3, 2, 5), np.uint8)
    s[:, :, 4] = 1
    s[0, 0, 1] = 1
    np.testing.assert_array_equal(select_neurons(s, 2, "first"), [0, 1])
    np.testing.assert_array_equal(select_neurons(s, 2, "active"), [1, 4])
    np.testing.assert_array_equal(select_neurons(s, 9, "active"), np.arange(5))
    with pytest.raises(ValueError):
        select_neurons(s, 2, "random")


def test_parse_samples():
    assert parse_samples("0,1,2") == [0, 1, 2]
    assert parse_samples("3-5,9") == [3, 4, 5, 9]
    with pytest.raises(ValueError):
        parse_samples(",")


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST test set not installed")
def test_cli_fresh_mlp_on_fashion_mnist(tmp_path):
    out = tmp_path / "inspect.h5"
    assert main(["--network", "784-30-10", "--indices", "0,4", "--max-neurons", "5",
                 "--dtype", "float64", "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["sample_index"][()], [0, 4])
        assert f["input"].shape == (T, 2, 1, 28, 28)
        assert f["layers/layer_00/phi/total"].shape == (2, 5, T, T)
        assert f.attrs["dataset"] == "fashion-mnist"
        assert json.loads(f.attrs["config"])["network"] == "784-30-10"
        check_file(f)


def test_a_surrogate_checkpoint_is_inspected_with_either_reading(tmp_path):
    """The inspection is a TSSL-BP pass, whatever trained the weights: docs/inspect_format.md's
    ``runs/latest ... --reading timing`` was refused when the newest run was a surrogate one."""
    from test_train import tiny_args, write_fashion_mnist

    from snnsim.training import train as train_mod
    data = write_fashion_mnist(tmp_path / "data", n_train=60, n_test=20)
    assert train_mod.main(tiny_args(data, tmp_path / "run", "--backward=surrogate")) == 0
    for reading in ("timing", "authors"):
        out = tmp_path / f"{reading}.h5"
        assert main([str(tmp_path / "run"), "--indices", "0", "--reading", reading,
                     "--data-dir", str(data), "--out", str(out)]) == 0
        with h5py.File(out, "r") as f:
            config = json.loads(f.attrs["config"])
            assert config["backward"] == "tsslbp" and config["reading"] == reading


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--max-neurons" in capsys.readouterr().out
