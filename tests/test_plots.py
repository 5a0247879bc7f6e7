"""The figures plot the numbers they claim to (snnsim.analysis.plots).

The plotting functions return matplotlib Figures; these tests read the plotted
data back from the artists (bar heights, scatter offsets, line data, image
arrays) and compare it with the statistics computed independently.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fashion_mnist_available

from snnsim import Dense, Network, NeuronParams
from snnsim.analysis import plots
from snnsim.analysis.plots import (
    main,
    mean_std_per_epoch,
    plot_confusion,
    plot_count_distribution,
    plot_raster,
    plot_rate_histogram,
    plot_study_curves,
    plot_training_curves,
    rate_bin_labels,
    save_figure,
    trace_neurons,
)
from snnsim.analysis.record import (
    confusion_matrix,
    count_distributions,
    default_rate_bins,
    firing_rate_histogram,
    record,
    save_recording,
)

T = 5
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF"


@pytest.fixture(scope="module")
def rec():
    net = Network([Dense(16, weight_scale=3.0), Dense(8, weight_scale=3.0), Dense(4, weight_scale=3.0)],
                  (12,), neuron=NeuronParams(), dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    batches = [((rng.random((T, 6, 12)) < 0.5).astype(float), rng.integers(0, 4, 6))
               for _ in range(2)]
    r = record(net, batches, full=True, meta={"dataset": "synthetic"})
    assert sum(int(lr.counts.sum()) for lr in r.layers) > 0
    return r


def bar_heights(container):
    return np.array([patch.get_height() for patch in container.patches])


def test_count_distribution_bars_are_the_percentages(rec):
    dists = count_distributions(rec)
    fig = plot_count_distribution(dists, T, n_samples=rec.n_samples)
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == list(dists)
    for container, pct in zip(ax.containers, dists.values()):
        np.testing.assert_allclose(bar_heights(container), pct)
        assert bar_heights(container).sum() == pytest.approx(100.0)
    # bars of k = 0..T sit around x = k
    centers = [p.get_x() + p.get_width() / 2 for p in ax.containers[0].patches]
    assert np.all(np.abs(np.array(centers) - np.arange(T + 1)) < 0.5)
    assert "%" in ax.get_ylabel() and "ms" in ax.get_xlabel()


def test_count_distribution_rejects_wrong_length():
    with pytest.raises(ValueError):
        plot_count_distribution({"a": np.ones(3)}, T)


def test_rate_histogram_bars_are_the_percentages(rec):
    edges = default_rate_bins(rec.n_steps)
    hists = {lr.name: firing_rate_histogram(lr.counts, rec.n_steps, edges)[1] for lr in rec.layers}
    fig = plot_rate_histogram(edges, hists, rec.n_steps)
    assert len(fig.axes) == len(hists)
    for ax, pct in zip(fig.axes, hists.values()):
        np.testing.assert_allclose(bar_heights(ax.containers[0]), pct)
    assert "Hz" in fig.axes[-1].get_xlabel()
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks == rate_bin_labels(edges, rec.n_steps) == ["0", "200", "400", "600", "800", "1000"]


def test_rate_bin_labels_long_run():
    edges = default_rate_bins(100, max_bins=5)                 # silent, then 4 bins up to 1000 Hz
    labels = rate_bin_labels(edges, 100)
    assert labels[0] == "0" and labels[-1].endswith("-1000") and len(labels) == 5


def test_raster_shows_the_recorded_spikes(rec):
    sample = 2
    fig = plot_raster(rec, sample=sample)
    n_layers = len(rec.layers)
    for j, lr in enumerate(rec.layers):
        ax = fig.axes[j]
        offsets = np.asarray(ax.collections[0].get_offsets())
        s = lr.spikes[:, sample].reshape(T, -1)
        tt, ii = np.nonzero(s)
        assert len(offsets) == int(s.sum()) == int(lr.counts[sample].sum())
        got = sorted(map(tuple, offsets.tolist()))
        assert got == sorted(zip((tt * rec.step_ms).tolist(), ii.astype(float).tolist()))
        assert "ms" in ax.get_xlabel()
        # membrane traces: every drawn "-o" line is some neuron's u over the T steps
        u = lr.membrane[:, sample].reshape(T, -1)
        trace_ax = fig.axes[n_layers + j]
        traces = [ln for ln in trace_ax.lines if ln.get_linestyle() == "-" and len(ln.get_ydata()) == T]
        assert traces
        for ln in traces:
            y = np.asarray(ln.get_ydata())
            assert np.any(np.all(np.isclose(u, y[:, None]), axis=0))
        assert "ms" in trace_ax.get_xlabel()


def test_raster_needs_spike_trains(rec):
    from dataclasses import replace
    counts_only = replace(rec, layers=[replace(lr, spikes=None, membrane=None) for lr in rec.layers])
    with pytest.raises(ValueError, match="full"):
        plot_raster(counts_only)
    with pytest.raises(IndexError):
        plot_raster(rec, sample=rec.n_full)


def test_trace_neurons_prefers_distinct_counts():
    s = np.zeros((T, 6), bool)
    s[:, 1] = True                       # 5 spikes
    s[:3, 4] = True                      # 3 spikes
    s[:3, 5] = True                      # 3 spikes
    u = np.zeros((T, 6))
    u[:, 2] = 0.9                        # the silent neuron with the highest peak
    chosen = trace_neurons(s, u, 3)
    np.testing.assert_array_equal(chosen, [1, 2, 4])


def test_training_curves_plot_the_metrics():
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.45 + 0.1 * e}
            for e in (1, 2, 3)]
    fig = plot_training_curves(rows)
    loss_ax, acc_ax = fig.axes
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(), [60.0, 70.0, 80.0])
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [55.0, 65.0, 75.0])
    np.testing.assert_allclose(acc_ax.lines[2].get_ydata(), [75.0])       # best test accuracy
    assert "%" in acc_ax.get_ylabel()


def test_confusion_image_is_row_normalised(rec):
    cm = confusion_matrix([0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 0], 3)
    fig = plot_confusion(cm, ["a", "b", "c"])
    img = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(img, [[200 / 3, 100 / 3, 0], [0, 100, 0], [50, 0, 50]])
    np.testing.assert_allclose(img.sum(axis=1), 100.0)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["2", "1", "1", "1", "1"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]


def test_save_figure_writes_png_and_pdf(rec, tmp_path):
    fig = plot_count_distribution(count_distributions(rec), T)
    paths = save_figure(fig, tmp_path, "sparsity")
    assert [p.name for p in paths] == ["sparsity.png", "sparsity.pdf"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert paths[1].read_bytes()[:4] == PDF_MAGIC


def test_cli_from_a_recording(rec, tmp_path, capsys):
    path = save_recording(tmp_path / "rec.h5", rec)
    out = tmp_path / "figs"
    for cmd in ("sparsity", "rates", "confusion"):
        assert main([cmd, str(path), "--out", str(out), "--formats", "png"]) == 0
    assert main(["raster", str(path), "--sample", "1", "--out", str(out), "--formats", "png"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["confusion.png", "rates.png", "raster_sample1.png", "sparsity.png"])
    printed = capsys.readouterr().out
    # the printed whole-network row is the computed statistic
    net_row = [line for line in printed.splitlines() if line.strip().startswith("network")][0]
    np.testing.assert_allclose([float(v) for v in net_row.split()[1:]],
                               count_distributions(rec)["network"], atol=0.006)


def test_study_curves_mean_and_band_over_runs():
    """Three runs of one experiment (the third stops after epoch 1) and one of another:
    the mean and sample std per epoch over the runs that reached it, drawn as a thick
    line with a band; epoch 3, reached by one run only, has no mean."""
    runs = [[{"epoch": 1, "test_acc": 0.50}, {"epoch": 2, "test_acc": 0.60}, {"epoch": 3, "test_acc": 0.7}],
            [{"epoch": 1, "test_acc": 0.70}, {"epoch": 2, "test_acc": 0.80}],
            [{"epoch": 1, "test_acc": 0.90}]]
    epochs, mean, std = mean_std_per_epoch(runs)
    assert epochs.tolist() == [1, 2]
    np.testing.assert_allclose(mean, [70.0, 70.0])                  # (50+70+90)/3, (60+80)/2
    np.testing.assert_allclose(std, [20.0, 200 ** 0.5])            # ddof 1: sqrt(800/2), sqrt(200/1)
    fig = plot_study_curves({"a": runs, "b": [runs[0]]})
    ax = fig.axes[0]
    assert len(ax.lines) == 3 + 1 + 1                                # every run, then a's mean
    np.testing.assert_allclose(ax.lines[-1].get_ydata(), [70.0, 70.0])
    assert len(ax.collections) == 1                                  # a's band; b has one run


def test_cli_curves_from_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"epoch": e, "train_loss": 0.1 / e, "train_acc": 0.8, "test_acc": 0.7 + 0.01 * e}
            for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["curves", str(run), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "o" / "curves.pdf").read_bytes()[:4] == PDF_MAGIC


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST test set not installed")
def test_cli_fresh_network_on_fashion_mnist(tmp_path, capsys):
    assert main(["sparsity", "--network", "784-20-10", "--samples", "8", "--out", str(tmp_path),
                 "--formats", "png"]) == 0
    assert (tmp_path / "sparsity.png").stat().st_size > 0
    assert main(["raster", "--network", "784-20-10", "--sample-index", "3", "--out", str(tmp_path),
                 "--formats", "png"]) == 0
    assert (tmp_path / "raster_sample3.png").stat().st_size > 0


@pytest.mark.parametrize("n_steps", [5, 30, 100])
def test_rate_bin_labels_cover_every_count_once(n_steps):
    # every count 0..T lands in exactly one labelled bin, including T (1000 Hz)
    edges = default_rate_bins(n_steps)
    labels = rate_bin_labels(edges, n_steps)
    covered = []
    for lab in labels:
        lo, _, hi = lab.partition("-")
        covered.append((float(lo), float(hi or lo)))
    assert covered[0] == (0.0, 0.0) and covered[-1][1] == 1000.0
    assert all(a[1] < b[0] for a, b in zip(covered, covered[1:]))


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in
                                                 ("sparsity", "rates", "raster", "curves", "confusion")])
def test_help_of_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: " in text and " -m snnsim.plots " in text and "%%" not in text


# --- several runs in one figure, and the sparsity per epoch -------------------------------------
def _fake_run(folder, seed, accs, **cfg):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": "fashion_mnist_mlp", "backward": "tsslbp",
                                                    "seed": seed, **cfg}))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "train_loss": 0.1, "train_acc": a, "test_acc": a,
                    "test_silent": [0.5 + 0.01 * i, 0.8], "test_spikes": [0.4, 0.1]}) + "\n"
        for i, a in enumerate(accs)))
    return folder


def test_curves_of_several_runs_grouped_by_seed(tmp_path):
    """plots curves A B C --group seed: the three seeds of one config are one mean line with a
    ± std band (and every run thin); a run of another backward is its own line; without
    --group each run is its own entry; a non-folder among several sources is one line, exit 2."""
    runs = [_fake_run(tmp_path / f"s{k}", k, [0.80 + 0.01 * k, 0.85 + 0.01 * k]) for k in range(3)]
    other = _fake_run(tmp_path / "sur", 0, [0.7, 0.75, 0.8], backward="surrogate")
    out = tmp_path / "out"
    assert plots.main(["curves", *map(str, runs), str(other), "--group", "seed", "--out", str(out),
                       "--formats", "png"]) == 0
    fig = plots.cmd_curves(plots.make_parser().parse_args(
        ["curves", *map(str, runs), str(other), "--group", "seed"]))[0][0]
    ax = fig.axes[0]
    assert len(ax.collections) == 1                              # one band: the three seeds
    mean_line = ax.lines[-1]
    assert list(mean_line.get_ydata()) == pytest.approx([81.0, 86.0])     # mean of 80/81/82, ...
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("fashion_mnist_mlp, tsslbp") and "mean ± std of 3 runs" in t for t in labels)
    assert any(t.startswith("fashion_mnist_mlp, surrogate") for t in labels)
    assert (out / "curves.png").stat().st_size > 0
    fig = plots.cmd_curves(plots.make_parser().parse_args(["curves", *map(str, runs)]))[0][0]
    assert len(fig.axes[0].collections) == 0 and len(fig.axes[0].lines) == 3      # one per seed
    assert plots.main(["curves", str(runs[0]), str(runs[0] / "metrics.jsonl"), "--out", str(out)]) == 2


def test_single_run_curves_draw_the_sparsity_per_layer(tmp_path):
    run = _fake_run(tmp_path / "r", 0, [0.8, 0.85, 0.9])
    fig = plots.cmd_curves(plots.make_parser().parse_args(["curves", str(run)]))[0][0]
    assert len(fig.axes) == 3
    silent = fig.axes[2]
    assert [list(line.get_ydata()) for line in silent.lines] == [pytest.approx([50.0, 51.0, 52.0]),
                                                                 pytest.approx([80.0, 80.0, 80.0])]
    # named as the other figures name them, from the network config.json builds (784-400-400-10)
    assert [t.get_text() for t in silent.get_legend().get_texts()] == ["hidden 1", "hidden 2"]
