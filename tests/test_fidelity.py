"""Tests of the gradient-comparison tool: snnsim.fidelity (measure, problems, report, cli), snnsim.variants.

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
from pathlib import Path

import numpy as np
import pytest

from snnsim import EXACT_TIMING, GradientParams, NeuronParams, kernel_loss, lif_forward, phi_matrix, variants
from snnsim.fidelity import cli, measure, problems, training
from snnsim.training.config import ConfigError
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
    for li, (gt, gf) in enumerate(zip(timing, flipped)):             # li = 0 is the first layer
        assert np.abs(gt).max() > 0
        np.testing.assert_allclose(gf, (-1.0) ** (L - li) * gt, rtol=1e-12, atol=1e-15)


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


# --- training through python3 -m snnsim.train ----------------------------------------------
@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    from test_train import write_fashion_mnist
    return str(write_fashion_mnist(tmp_path_factory.mktemp("fashion"), n_train=40, n_test=20))


def test_compare_training_is_runs_of_snnsim_train(tiny_fashion, tmp_path):
    """Each run of compare-training is the run ``python3 -m snnsim.train --backward=...`` makes
    (same metrics, bit for bit); a second call reads the folders and trains nothing; more
    epochs continue the runs."""
    from snnsim.training import train as train_mod
    from snnsim.training.checkpoint import load_checkpoint
    runs = tmp_path / "runs"
    res = training.run_compare_training(["authors", "surrogate"], [1], 1, 40, 20, runs, data_dir=tiny_fashion)
    assert [r["epoch"] for r in res["runs"]["surrogate"][0]["epochs"]] == [0, 1]
    assert res["runs"]["authors"][0]["epochs"][0] == res["runs"]["surrogate"][0]["epochs"][0]  # same init
    direct = tmp_path / "direct"
    argv = ["--backward=surrogate", "--seed=1", "--epochs=1", "--train_subset=40", "--test_subset=20",
            f"--out={direct}", f"--data-dir={tiny_fashion}", "--progress=false"]
    assert train_mod.main(argv) == 0
    got = res["runs"]["surrogate"][0]["epochs"][1]
    want = load_checkpoint(direct / "checkpoint.h5")["metrics"][0]
    assert (got["train_loss"], got["test_acc"]) == (want["train_loss"], want["test_acc"])
    ckpt = runs / "compare" / "surrogate_seed1" / "checkpoint.h5"
    stamp = ckpt.stat().st_mtime_ns
    again = training.run_compare_training(["surrogate"], [1], 1, 40, 20, runs, data_dir=tiny_fashion)
    assert ckpt.stat().st_mtime_ns == stamp
    assert again["runs"]["surrogate"][0]["epochs"][1]["test_acc"] == got["test_acc"]
    longer = training.run_compare_training(["surrogate"], [1], 2, 40, 20, runs, data_dir=tiny_fashion)
    assert [r["epoch"] for r in longer["runs"]["surrogate"][0]["epochs"]] == [0, 1, 2]
    assert longer["runs"]["surrogate"][0]["epochs"][1]["train_loss"] == got["train_loss"]
    with pytest.raises(ConfigError, match="another run"):
        training.run_compare_training(["surrogate"], [1], 1, 30, 20, runs, data_dir=tiny_fashion)


@pytest.mark.slow
def test_along_training_measures_the_checkpoint_of_every_epoch(tiny_fashion, tmp_path):
    runs = tmp_path / "runs"
    res = training.run_along_training("authors", 1, 2, 40, 20, n_samples=4, n_dirs=2, runs_dir=runs,
                                      data_dir=tiny_fashion)
    assert [r["epoch"] for r in res["epochs"]] == [0, 1, 2]
    assert all(len(r["fidelity"]["layers"]) == 3 for r in res["epochs"])
    folder = runs / "along" / "authors_seed1"
    assert (folder / "epoch_1.h5").is_file() and (folder / "epoch_2.h5").is_file()
    # one epoch at a time with --resume is the uninterrupted run of compare-training
    cmp = training.run_compare_training(["authors"], [1], 2, 40, 20, runs, data_dir=tiny_fashion)
    uninterrupted = cmp["runs"]["authors"][0]["epochs"]
    assert [r["test_acc"] for r in res["epochs"]] == [r["test_acc"] for r in uninterrupted]
    assert [r["train_loss"] for r in res["epochs"][1:]] == [r["train_loss"] for r in uninterrupted[1:]]


def test_commands_write_to_runs_unless_told(tmp_path, monkeypatch):
    ap = cli.make_parser()
    assert ap.parse_args(["random"]).out == Path("runs/fidelity")
    assert ap.parse_args(["report", "--out", "reference"]).out == Path("reference")
    assert ap.parse_args(["--out", "x", "report"]).out == Path("x")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["random", "--n-dirs", "2"]) == 0
    assert (tmp_path / "runs" / "fidelity" / "fidelity_random.json").is_file()
    assert not (tmp_path / "reference").exists()


def test_report_sentences_and_help(tmp_path, capsys):
    cli.main(["--out", str(tmp_path), "random", "--n-dirs", "2"])
    cli.main(["--out", str(tmp_path), "report"])
    assert "issue" not in (tmp_path / "fidelity.md").read_text().lower()
    template = (Path(cli.__file__).parent / "report_template.md").read_text()
    assert "issue" not in template.lower()
    for sub in ("random", "batch", "along-training", "compare-training", "report"):
        with pytest.raises(SystemExit):
            cli.main([sub, "--help"])
        out = capsys.readouterr().out
        assert "default" in out and len(out.split("\n\n")[1]) > 80, sub
        assert all(f"\n  {name} " in out for name in variants.VARIANTS), sub
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in variants.VARIANTS:
        assert f"\n  {name} " in out
