"""Figure titles and layer names (issue 12, item 9): layers are called hidden k /
conv k / output, the sparsity and rates titles name dataset, network and the
checkpoint's accuracy and fit the figure, and at small T the rates plot shows
each neuron's mean rate (not a copy of the sparsity plot)."""
from __future__ import annotations

import numpy as np
import pytest

from snnsim.analysis import plots
from snnsim.analysis.record import (
    LayerRecord,
    Recording,
    count_distributions,
    firing_rate_histogram,
    layer_label,
    layer_role,
    mean_rate_histogram,
)

T = 5


def layer(i, shape, counts):
    return LayerRecord(name=f"layer_{i:02d}", describe="x", index=i, shape=shape, v_th=1.0,
                       counts=np.asarray(counts, np.int32))


def recording(layers, config=None, meta=None):
    n = layers[0].counts.shape[0]
    return Recording(n_steps=T, layers=layers, predictions=np.zeros(n, np.int64),
                     scores=np.zeros((n, 10), np.float32), config=config, meta=meta or {})


def test_layer_roles_mlp_and_cnn():
    mlp = [layer(0, (400,), [[0] * 400]), layer(1, (400,), [[0] * 400]),
           layer(2, (10,), [[0] * 10])]
    assert [layer_role(lr, mlp) for lr in mlp] == ["hidden 1", "hidden 2", "output"]
    cnn = [layer(0, (32, 28, 28), np.zeros((1, 32, 28, 28))),
           layer(2, (64, 14, 14), np.zeros((1, 64, 14, 14))),   # layer_01, _03: pooling
           layer(4, (1024,), np.zeros((1, 1024))), layer(5, (10,), np.zeros((1, 10)))]
    assert [layer_role(lr, cnn) for lr in cnn] == ["conv 1", "conv 2", "hidden 1", "output"]
    assert layer_label(mlp[0], mlp) == "hidden 1 (x)"
    assert layer_role(mlp[0]) == "layer_00"                      # no context: the storage name
    rec = recording(mlp)
    assert rec.layer("output") is mlp[2] and rec.layer("hidden 2") is mlp[1]
    assert list(count_distributions(rec)) == ["hidden 1 (x)", "hidden 2 (x)", "output (x)",
                                              "network"]


def test_mean_rate_histogram_by_hand():
    # 4 samples, 4 neurons, T = 5: total spikes 0, 1, 10, 20 -> mean counts 0, 0.25, 2.5, 5
    # -> mean rates 0, 50, 500, 1000 Hz (1 ms steps)
    counts = np.array([[0, 1, 2, 5], [0, 0, 3, 5], [0, 0, 2, 5], [0, 0, 3, 5]])
    edges, pct = mean_rate_histogram(counts, T, n_bins=4)
    # never: [0, 25) (half of one spike in 4 samples = 50/2 Hz); then 0-250 ... 750-1000
    np.testing.assert_allclose(edges, [0, 25, 250, 500, 750, 1000])
    np.testing.assert_allclose(pct, [25, 25, 0, 25, 25])
    assert pct.sum() == pytest.approx(100.0)


def test_small_t_rates_plot_is_not_the_sparsity_plot():
    # a neuron that fires 5 times on half the samples and never on the others: per sample
    # it is "5 spikes" or "silent" (the sparsity statistic); its mean rate is 500 Hz
    counts = np.array([[5, 0], [0, 5], [5, 0], [0, 5]])
    per_sample = firing_rate_histogram(counts, T)[1]
    np.testing.assert_allclose(per_sample[[0, -1]], [50, 50])
    edges, mean = mean_rate_histogram(counts, T, n_bins=20)
    assert mean[0] == 0 and mean.max() == 100     # nobody is silent on every sample


def test_titles_name_dataset_network_accuracy_and_fit(tmp_path):
    counts = np.random.default_rng(0).integers(0, T + 1, (6, 400))
    layers = [layer(0, (400,), counts), layer(1, (400,), counts), layer(2, (10,), counts[:, :10])]
    long_path = "runs/" + "fashion_mnist_784-400-400-10-20261129-070000/" * 3 + "best.h5"
    rec = recording(layers, config={"network": "784-400-400-10", "dataset": "fashion-mnist"},
                    meta={"dataset": "fashion-mnist", "source": long_path,
                          "checkpoint_epoch": "26", "checkpoint_test_acc": "0.8906"})
    title = plots.network_title(rec)
    assert title == "fashion-mnist, 784-400-400-10, T = 5: test accuracy 89.06 % (epoch 26)"
    fig = plots.plot_count_distribution(count_distributions(rec), T,
                                        title=title + "\n" + "a long explanation " * 12)
    shown = fig.axes[0].get_title()
    width = fig.get_figwidth() * 72 / (0.55 * 10)
    assert all(len(line) <= width for line in shown.splitlines())
    assert shown.splitlines()[0] == title
    # nothing drawn outside the canvas: the title's box lies within the figure
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 1


def test_fresh_network_title_says_untrained():
    counts = np.zeros((2, 10), np.int32)
    rec = recording([layer(0, (10,), counts)],
                    config={"network": "784-10", "dataset": "mnist", "seed": 3},
                    meta={"dataset": "mnist", "source": "fresh 784-10 (seed 3)"})
    assert plots.network_title(rec) == "mnist, 784-10, T = 5: untrained (seed 3)"


# --- issue 23, 9 and 10 ------------------------------------------------------------------------
def _rates_title(tmp_path, monkeypatch, extra=()):
    """The suptitle of ``plots rates`` on a fresh tiny network (T = 5)."""
    import matplotlib.figure
    from test_train import write_fashion_mnist
    data = write_fashion_mnist(tmp_path / "data")
    titles = []
    real = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle",
                        lambda self, t, **k: titles.append(t) or real(self, t, **k))
    assert plots.main(["rates", "--network", "784-12-10", "--samples", "4", "--data-dir", str(data),
                       "--out", str(tmp_path / "o"), "--formats", "png", *extra]) == 0
    return titles[-1]


@pytest.mark.parametrize("extra", [(), ("--per-sample",)])
def test_the_rates_title_is_two_lines_without_a_command_hint(tmp_path, monkeypatch, extra):
    title = _rates_title(tmp_path, monkeypatch, extra)
    assert len(title.splitlines()) <= 2 and "--" not in title, title


def test_the_curves_title_names_the_run_not_its_path(tmp_path):
    import json
    run = tmp_path / "runs" / "fashion-mnist_784-12-10-20261206-051046"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataset": "fashion-mnist", "network": "784-12-10",
                                                 "n_steps": 5, "name": ""}))
    rows = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.5, "test_acc": 0.6},
            {"epoch": 2, "train_loss": 0.4, "train_acc": 0.6, "test_acc": 0.7}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    title = plots.run_title(str(run), rows)
    assert str(tmp_path) not in title and "runs/" not in title, title
    assert title == "fashion-mnist, 784-12-10, T = 5: 2 epochs, best test accuracy 70.00 % (epoch 2)"


def test_a_one_epoch_study_curve_is_drawn(tmp_path):
    """One epoch is one point: drawn with a marker, else the figure is empty."""
    rows = [{"epoch": 1, "test_acc": 0.8}]
    fig = plots.plot_study_curves({"mlp": [rows, rows]})
    assert fig.axes[0].lines and all(line.get_marker() not in (None, "None", "", " ")
                                     for line in fig.axes[0].lines)


def test_inspection_names_layers_as_the_plots_do():
    from snnsim.analysis.inspection import layer_roles
    from snnsim.training.builder import layers_from_spec
    mlp = layers_from_spec("400-400-10", (784,))
    assert layer_roles(mlp) == ["hidden 1", "hidden 2", "output"]
    cnn = layers_from_spec("16C5-P2-32C3-P2-100-10", (1, 28, 28))
    assert layer_roles(cnn) == ["conv 1", "pool", "conv 2", "pool", "hidden 1", "output"]


def test_the_notebooks_heatmaps_have_a_colour_bar():
    """examples/walkthrough.ipynb: every cell that draws an image (the φ heatmaps) gives it
    a colour bar (tests/test_walkthrough.py executes the notebook)."""
    import json
    from pathlib import Path
    nb = json.loads((Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb")
                    .read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    drawing = [c for c in cells if "imshow(" in c]
    assert drawing and all(c.count("colorbar(") >= c.count("imshow(") for c in drawing)
