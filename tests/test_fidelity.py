"""Tests of snnsim.fidelity (measure, problems, report, cli) and snnsim.variants: the gradient-comparison tool.

- The finite differences of the event-shift model agree with the exact ``timing``
  gradient (EXACT_TIMING) along random directions, to FD_RTOL relative (float64).
- ``signed_lif_backward`` with φ<1> negated equals the explicit φ of
  ``phi_matrix`` with its non-warm-up terms negated (an independent construction).
- The sign pattern the report explains: the ``timing-flipped`` weight gradient of
  layer l is exactly (-1)^(L-l+1) times the ``timing`` one, and where no neuron fires
  twice (so φ<2> is idle) the authors' raw gradient is exactly
  (1/ln(1-θs))^(L-l+1) times the ``timing`` one.
- The CLI's ``random`` subcommand writes its JSON, table and figure.
"""
import json

import numpy as np
import pytest

from snnsim import EXACT_TIMING, GradientParams, NeuronParams, kernel_loss, lif_forward, phi_matrix
from snnsim import variants
from snnsim.fidelity import cli, measure, problems
from snnsim.tsslbp import lif_backward

FD_RTOL = 1e-6


@pytest.mark.parametrize("net_index", [0, 2])
def test_fd_of_event_shift_model_matches_exact_timing(net_index):
    """Smooth function: the kernel loss of the event-shift model around the nominal run."""
    sizes, n_steps, reset = problems.RANDOM_NETS[net_index]
    net, x_in, a_hat = problems.random_problem(sizes, n_steps, reset, seed=11)
    a, cache = net.forward(x_in)
    _, g = kernel_loss(a, a_hat)
    exact = measure.flat_grads(net, net.backward(g, cache, EXACT_TIMING))
    dirs = measure.random_directions(net, 6, np.random.default_rng(0))
    fd = measure.fd_projections(net, x_in, a_hat, cache, dirs)
    for e, (p_fd, v, gx) in enumerate(zip(fd, dirs, exact)):
        p_an = v @ gx
        err = np.abs(p_fd - p_an) / np.abs(p_fd).max()
        assert err.max() < FD_RTOL, (e, p_fd, p_an)
        assert measure.cosine(p_fd, p_an) > 1 - 1e-9
    # the weights are restored exactly
    a2, _ = net.forward(x_in)
    np.testing.assert_array_equal(a, a2)


def test_fd_tells_authors_from_timing():
    """The FD check can fail: the authors' gradient is not the event-shift gradient."""
    sizes, n_steps, reset = problems.RANDOM_NETS[0]
    net, x_in, a_hat = problems.random_problem(sizes, n_steps, reset, seed=11)
    res = measure.measure(net, x_in, a_hat, ("authors", "timing"), n_dirs=8)
    for row in res["layers"]:
        assert row["fd_timing_rel_err"] < FD_RTOL
        assert row["variants"]["timing"]["cos_fd"] > 1 - 1e-9
        assert row["variants"]["authors"]["cos_fd"] < 0.999


@pytest.mark.parametrize("grad", [GradientParams(), EXACT_TIMING, GradientParams("timing", 8.0, True),
                                  GradientParams("authors", None, False)])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_signed_backward_against_explicit_phi(grad, reset):
    rng = np.random.default_rng(3)
    neuron = NeuronParams(reset=reset)
    _, state = lif_forward(1.6 * rng.random((7, 3, 5)), neuron)
    assert state.s.sum(axis=0).max() >= 2                      # some neuron fires twice: φ<2> acts
    g = rng.standard_normal(state.u.shape)
    np.testing.assert_allclose(variants.signed_lif_backward(g, state, neuron, grad, 1.0),
                               lif_backward(g, state, neuron, grad), rtol=1e-12, atol=1e-14)
    parts = phi_matrix(state, neuron, grad, terms=True)        # (B, N, k, m)
    phi_flipped = parts["warmup"] - (parts["phi_1"] + parts["phi_2"] + parts["leak"])
    expected = np.moveaxis(np.einsum("bnkm,kbn->bnm", phi_flipped, g), -1, 0)
    got = variants.signed_lif_backward(g, state, neuron, grad, -1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _layer_grads(net, x_in, a_hat, name):
    a, cache = net.forward(x_in)
    _, g = kernel_loss(a, a_hat)
    return measure.flat_grads(net, variants.variant_backward(net, g, cache, name)), cache


def test_flipped_sign_compounds_once_per_layer():
    sizes, n_steps, reset = problems.RANDOM_NETS[1]
    net, x_in, a_hat = problems.random_problem(sizes, n_steps, reset, seed=5)
    timing, _ = _layer_grads(net, x_in, a_hat, "timing")
    flipped, _ = _layer_grads(net, x_in, a_hat, "timing-flipped")
    L = len(timing)
    for l, (gt, gf) in enumerate(zip(timing, flipped)):             # l = 0 is the first layer
        assert np.abs(gt).max() > 0
        np.testing.assert_allclose(gf, (-1.0) ** (L - l) * gt, rtol=1e-12, atol=1e-15)


def test_authors_raw_is_timing_times_predicted_factor_without_second_spikes():
    """With at most one spike per neuron (φ<2> idle), c alone separates the readings:
    g_authors-raw^l = (1/ln(1-θs))^(L-l+1) g_timing^l exactly."""
    for seed in range(200):
        net, x_in, a_hat = problems.random_problem((6, 8, 6, 3), 3, "zero", seed, batch=2)
        a, cache = net.forward(x_in)
        counts = [st.s.sum(axis=0) for st in cache.states]
        if all(c.max() == 1 for c in counts):                         # every layer fires, none twice
            break
    else:
        pytest.fail("no random problem with single spikes found")
    timing, _ = _layer_grads(net, x_in, a_hat, "timing")
    raw, _ = _layer_grads(net, x_in, a_hat, "authors-raw")
    factors = measure.predicted_compounding(net.neuron.theta_s, len(net.layers))
    assert factors[-1] < 0 < factors[-2]                             # the sign alternates
    for gt, gr, f in zip(timing, raw, factors):
        np.testing.assert_allclose(gr, f * gt, rtol=1e-10, atol=1e-15)


def test_random_command_writes_outputs(tmp_path):
    cli.main(["--out", str(tmp_path), "--plot-dir", str(tmp_path), "random", "--n-dirs", "3"])
    res = json.loads((tmp_path / "fidelity_random.json").read_text())
    assert (tmp_path / "fidelity_random.png").stat().st_size > 0
    text = (tmp_path / "fidelity_random.md").read_text()
    assert "cos(authors, timing)" in text
    for n in res["nets"]:
        for row in n["layers"]:
            assert row["fd_timing_rel_err"] < FD_RTOL


def test_descent_probe_and_report(tmp_path):
    """A small step along -timing lowers the event-shift loss (it is that loss's gradient);
    the probe restores the weights; ``report`` assembles whatever JSON exists."""
    sizes, n_steps, reset = problems.RANDOM_NETS[0]
    net, x_in, a_hat = problems.random_problem(sizes, n_steps, reset, seed=11)
    a0, _ = net.forward(x_in)
    d = measure.descent_losses(net, x_in, a_hat, ("timing", "authors"), steps=(1e-5,))
    assert d["timing"]["discrete"][0] == kernel_loss(a0, a_hat)[0]
    assert d["timing"]["event_shift"][1] < d["timing"]["event_shift"][0]
    np.testing.assert_array_equal(net.forward(x_in)[0], a0)
    cli.main(["--out", str(tmp_path), "--plot-dir", str(tmp_path), "random", "--n-dirs", "2"])
    cli.main(["--out", str(tmp_path), "--plot-dir", str(tmp_path), "report"])
    text = (tmp_path / "fidelity.md").read_text()
    assert "compounded once per layer" in text and "fidelity_random.md" in text
