"""Figures of a network's firing and of a training run: ``python3 -m snnsim.plots``.

Subcommands (each writes PNG and PDF into ``--out``; ``--help`` of each says more):

- ``sparsity``  the paper's Fig. 7: % of neurons firing 0, 1, ..., T times,
  per layer and for the whole network, averaged over test samples;
- ``rates``     the paper's Fig. 8: histogram of per-neuron firing rates (Hz);
- ``raster``    spike raster and membrane traces of one sample;
- ``curves``    loss and accuracy per epoch of a run (``metrics.jsonl``);
- ``confusion`` confusion matrix on the test set.

Each takes a checkpoint (or run folder), a recording (``python3 -m snnsim.record``)
or ``--network SPEC`` for a freshly initialised network.

The plotting functions build a :class:`matplotlib.figure.Figure` directly (no
pyplot, no global state, headless: the Agg canvas) and return it, so tests can
read back the plotted numbers. A time step is 1 ms (docs/model.md), so a
count c in T steps is the rate c / (T ms) = 1000 c / T Hz.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")          # headless; set before anything of matplotlib draws

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..commandline import (
    ArgumentParser,
    command,
    prog_name,
)
from ..datasets.errors import DatasetError
from ..datasets.registry import get_spec
from .record import (
    DEFAULT_SAMPLES,
    MAX_RATE_BINS,
    MS_PER_S,
    PERCENT,
    Recording,
    add_source_arguments,
    checkpoint_meta,
    confusion_matrix,
    count_distributions,
    default_rate_bins,
    firing_rate_histogram,
    firing_rates_hz,
    is_recording,
    layer_label,
    load_recording,
    mean_rate_histogram,
    network_from_args,
    rate_bin_index,
    record_dataset,
    source_of,
)

NETWORK_KEY = "network"
NETWORK_COLOR = "0.2"
FORMATS = ("png", "pdf")
DPI = 150
#: Bars of a count distribution get their value printed when T is at most this.
ANNOTATE_MAX_STEPS = 10
#: Widest figure (inches): long runs get thinner bars, not wider figures.
MAX_FIG_WIDTH = 14.0
#: Approximate size (points) of one raster panel, to size the spike markers.
RASTER_PANEL_PT = (170.0, 150.0)
#: Up to this many neurons a spike is a vertical tick; beyond, a dash per step.
RASTER_TICK_MAX_ROWS = 50
#: Thinnest dash of a dense raster (points).
RASTER_MIN_LINE_PT = 0.3
#: Membrane traces drawn per layer in the raster figure.
TRACES_PER_LAYER = 4


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int):
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _color_of(label: str, i: int, colors):
    return NETWORK_COLOR if label == NETWORK_KEY else colors[i]


# =============================================================================
# Fig. 7: how many neurons fire k times
# =============================================================================
def plot_count_distribution(dists: dict, n_steps: int, title: str | None = None,
                            n_samples: int | None = None, log: bool = False) -> Figure:
    """Grouped bars: for each k = 0..T the % of neurons firing k times, one bar
    per layer (and the whole network, key ``"network"``), as in the paper's Fig. 7.

    ``dists`` maps a label to a ``(T+1,)`` array of percentages
    (:func:`snnsim.analysis.record.count_distributions`). The bars of each label form one
    ``BarContainer`` of ``fig.axes[0].containers`` labelled with that label, in
    the order of ``dists``; their heights are the percentages.
    """
    labels = list(dists)
    k = np.arange(n_steps + 1)
    width = 0.8 / max(len(labels), 1)
    fig = _figure(min(max(6.0, 1.1 * (n_steps + 1) + 2.5), MAX_FIG_WIDTH), 4.2)
    ax = fig.add_subplot()
    colors = _colors(len(labels))
    for i, label in enumerate(labels):
        pct = np.asarray(dists[label], dtype=float)
        if pct.shape != (n_steps + 1,):
            raise ValueError(f"{label}: expected {n_steps + 1} percentages, got {pct.shape}")
        bars = ax.bar(k + (i - (len(labels) - 1) / 2) * width, pct, width, label=label,
                      color=_color_of(label, i, colors), edgecolor="white", linewidth=0.5)
        if label == NETWORK_KEY and n_steps <= ANNOTATE_MAX_STEPS:
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(k if n_steps <= 2 * ANNOTATE_MAX_STEPS else k[::-(-n_steps // (2 * ANNOTATE_MAX_STEPS))])
    ax.set_xlabel(f"number of spikes per neuron in T = {n_steps} steps (1 ms each)")
    ax.set_ylabel("neurons (%)" + (", log scale" if log else ""))
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, PERCENT * 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="layer", fontsize=8, title_fontsize=8)
    avg = f", averaged over {n_samples} samples" if n_samples else ""
    ax.set_title(wrap_title(title or f"Firing activity: % of neurons firing k times{avg}", fig),
                 fontsize=10)
    return fig


# =============================================================================
# Fig. 8: firing-rate histogram
# =============================================================================
def rate_bin_labels(edges, n_steps: int, step_ms: float = 1.0) -> list[str]:
    """Tick labels: the rates (Hz) that a spike count can give inside each bin,
    e.g. ``"0"``, ``"33-67"``; ``"-"`` for a bin no count reaches."""
    rates = firing_rates_hz(np.arange(n_steps + 1), n_steps, step_ms)
    j = rate_bin_index(rates, edges)
    labels = []
    for b in range(len(edges) - 1):
        inside = rates[j == b]
        if inside.size == 0:
            labels.append("-")
        elif inside.size == 1:
            labels.append(f"{inside[0]:.0f}")
        else:
            labels.append(f"{inside[0]:.0f}-{inside[-1]:.0f}")
    return labels


def plot_rate_histogram(edges, hists: dict, n_steps: int, step_ms: float = 1.0,
                        title: str | None = None, n_samples: int | None = None,
                        tick_labels: list[str] | None = None,
                        xlabel: str | None = None) -> Figure:
    """One panel per label (layer or ``"network"``): % of neurons per firing-rate
    bin (the paper's Fig. 8). Bars are drawn at equal spacing, one per bin, with
    the bin's reachable rates (Hz) as tick labels (or ``tick_labels``). Panel i's
    bars are ``fig.axes[i].containers[0]``, heights = ``hists[label]``."""
    labels = list(hists)
    edges = np.asarray(edges, float)
    ticks = tick_labels or rate_bin_labels(edges, n_steps, step_ms)
    n_bins = len(edges) - 1
    fig = _figure(min(max(6.5, 0.45 * n_bins + 2.5), MAX_FIG_WIDTH), 1.9 * len(labels) + 1.0)
    axes = fig.subplots(len(labels), 1, sharex=True, squeeze=False)[:, 0]
    colors = _colors(len(labels))
    for i, (ax, label) in enumerate(zip(axes, labels)):
        pct = np.asarray(hists[label], float)
        if pct.shape != (n_bins,):
            raise ValueError(f"{label}: expected {n_bins} percentages, got {pct.shape}")
        bars = ax.bar(np.arange(n_bins), pct, 0.8, color=_color_of(label, i, colors))
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
        ax.set_ylim(0, PERCENT * 1.12)
        ax.set_ylabel("neurons (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.text(0.99, 0.9, label, transform=ax.transAxes, ha="right", va="top", fontsize=9)
    axes[-1].set_xticks(np.arange(n_bins), ticks, rotation=45 if n_bins > 8 else 0,
                        ha="right" if n_bins > 8 else "center", fontsize=8)
    axes[-1].set_xlabel(xlabel or f"firing rate (Hz = spikes/s), T = {n_steps} steps of "
                        f"{step_ms:g} ms\n({MS_PER_S / step_ms:.0f} Hz = a spike at every step)")
    avg = f", averaged over {n_samples} samples" if n_samples else ""
    fig.suptitle(wrap_title(title or f"Firing-rate distribution{avg}", fig), fontsize=10)
    return fig


def wrap_title(text: str, fig: Figure, fontsize: float = 10.0) -> str:
    """``text`` with each line wrapped to the figure's width (about 0.55 × fontsize
    points per character), so that no title is cut off at the figure's edges."""
    import textwrap
    width = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)) - 4)
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False)
                     for line in text.splitlines())


# =============================================================================
# Spike raster and membrane traces of one sample
# =============================================================================
def trace_neurons(spikes, membrane, n: int) -> np.ndarray:
    """The ``n`` neurons (flat indices, sorted) whose membrane traces are drawn:
    one neuron per distinct spike count, highest counts first (among equal counts
    the highest peak u, then the lowest index), keeping one silent neuron when
    there is one, then the next in that order. ``spikes``, ``membrane``:
    ``(T, M)`` of one sample."""
    count = spikes.sum(axis=0, dtype=np.int64)
    peak = membrane.max(axis=0)
    m = count.size
    order = np.lexsort((np.arange(m), -peak, -count))
    firsts = [int(order[i]) for i in range(m) if i == 0 or count[order[i]] != count[order[i - 1]]]
    if len(firsts) > n and n > 1 and count[firsts[-1]] == 0:
        chosen = firsts[:n - 1] + [firsts[-1]]
    else:
        chosen = firsts[:n]
    rest = [int(j) for j in order if int(j) not in set(chosen)]
    chosen = chosen + rest[:max(0, n - len(chosen))]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _raster_marker(n_rows: int, n_steps: int):
    """(marker, size in pt², line width in pt) of a raster with ``n_rows`` neurons
    and ``n_steps`` steps in a panel of about RASTER_PANEL_PT: a vertical tick per
    spike for few neurons; for many, a dash as wide as a step and as thick as a
    row, so that dense rasters read like an image instead of merging."""
    width_pt, height_pt = RASTER_PANEL_PT
    row, step = height_pt / max(n_rows, 1), width_pt / max(n_steps, 1)
    if n_rows <= RASTER_TICK_MAX_ROWS:
        return "|", (0.8 * row) ** 2, 1.5
    return "_", (0.8 * step) ** 2, max(0.8 * row, RASTER_MIN_LINE_PT)


def plot_raster(rec: Recording, sample: int = 0, max_neurons: int | None = None,
                n_traces: int = TRACES_PER_LAYER, class_names=None) -> Figure:
    """Top row: the spike raster of each spiking layer for recorded sample
    ``sample`` (position in the recording, < ``rec.n_full``); a dot at (t, i)
    for s_i[t] = 1 (``fig.axes[j].collections[0].get_offsets()``, layer j).
    Bottom row: membrane traces u[t] (after integration, before reset) of a few
    neurons per layer (the output layer: every class) with the threshold."""
    if rec.n_full == 0:
        raise ValueError("this recording has no spike trains; record with full=True (--full)")
    if not 0 <= sample < rec.n_full:
        raise IndexError(f"sample {sample}: the recording has spike trains of samples "
                         f"0..{rec.n_full - 1}")
    T = rec.n_steps
    t_ms = np.arange(T) * rec.step_ms
    n_layers = len(rec.layers)
    fig = _figure(max(7.0, 3.2 * n_layers), 6.4)
    axes = fig.subplots(2, n_layers, squeeze=False)
    for j, lr in enumerate(rec.layers):
        s = lr.spikes[:, sample].reshape(T, -1)                           # (T, M)
        u = lr.membrane[:, sample].reshape(T, -1)                          # (T, M)
        m = s.shape[1] if max_neurons is None else min(max_neurons, s.shape[1])
        tt, ii = np.nonzero(s[:, :m])
        ax = axes[0, j]
        marker, size, width = _raster_marker(m, T)
        ax.scatter(tt * rec.step_ms, ii, s=size, marker=marker, color="k", linewidths=width)
        ax.set_xlim(-0.5 * rec.step_ms, (T - 0.5) * rec.step_ms)
        ax.set_ylim(-0.5, m - 0.5)
        ax.invert_yaxis()
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("neuron index" if m == s.shape[1] else f"neuron index (first {m})")
        n_spk = int(s.sum())
        ax.set_title(f"{layer_label(lr, rec.layers)}\n{n_spk} spike{'' if n_spk == 1 else 's'}; "
                     f"{100.0 * (s.sum(0) > 0).mean():.1f} % of its neurons fire", fontsize=9)
        is_output = j == n_layers - 1
        chosen = np.arange(s.shape[1]) if is_output and s.shape[1] <= 10 else \
            trace_neurons(s, u, n_traces)
        ax = axes[1, j]
        colors = _colors(len(chosen))
        for c, i in zip(colors, chosen):
            name = (class_names[i] if class_names is not None and is_output and i < len(class_names)
                    else f"neuron {i}")
            ax.plot(t_ms, u[:, i], "-o", ms=3, lw=1, color=c, label=name)
            fired = s[:, i]
            ax.plot(t_ms[fired], u[fired, i], "*", ms=9 if T <= ANNOTATE_MAX_STEPS else 5, color=c)
        ax.axhline(lr.v_th, ls="--", color="r", lw=1, label=f"threshold V_th = {lr.v_th:g}")
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("membrane potential u (before reset)")
        ax.legend(fontsize=6, ncol=2 if len(chosen) > 5 else 1)
        ax.grid(alpha=0.3)
    idx = f" (dataset index {int(rec.sample_index[sample])})" if rec.sample_index is not None else ""
    lab = ""
    if rec.labels is not None:
        names = class_names or [str(i) for i in range(rec.scores.shape[1])]
        lab = (f": label {names[int(rec.labels[sample])]}, predicted "
               f"{names[int(rec.predictions[sample])]}")
    fig.suptitle(f"Sample {sample}{idx}{lab}; stars: spikes (u > V_th)", fontsize=10)
    return fig


# =============================================================================
# Training curves and confusion matrix
# =============================================================================
def read_metrics(source) -> list[dict]:
    """Per-epoch rows from a run folder (``metrics.jsonl``), a ``.jsonl`` file or a checkpoint,
    checked by the reader of that file kind (:func:`snnsim.training.runfolder.read_metrics_file`,
    :func:`snnsim.training.checkpoint.load_checkpoint`)."""
    from ..training.checkpoint import load_checkpoint
    from ..training.runfolder import read_metrics_file
    p = Path(source)
    if p.is_dir():
        p = p / "metrics.jsonl"
    rows = read_metrics_file(p) if p.suffix == ".jsonl" else load_checkpoint(p)["metrics"]
    if not rows:
        raise ValueError(f"{source}: no completed epoch in the metrics")
    return rows


def spiking_layer_names(folder) -> list[str] | None:
    """The names of a run's spiking layers as the other figures write them (``conv 1``,
    ``hidden 1``, ``output``), from the network its ``config.json`` builds; None where
    that cannot be built."""
    from ..conv import Conv2d
    from ..training.config import TrainConfig
    from ..training.runfolder import read_json_file
    from ..training.train import make_network
    try:
        cfg = read_json_file(Path(folder) / "config.json", "config")
        cfg = {k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__}
        net = make_network(TrainConfig.from_dict(cfg))
    except Exception:              # any config this snnsim cannot build: generic names
        return None
    spiking = [layer for layer in net.layers if layer.spiking]
    names, seen = [], {"conv": 0, "hidden": 0}
    for i, layer in enumerate(spiking):
        if i == len(spiking) - 1:
            names.append("output")
            continue
        kind = "conv" if isinstance(layer, Conv2d) else "hidden"
        seen[kind] += 1
        names.append(f"{kind} {seen[kind]}")
    return names


def plot_training_curves(rows: list[dict], title: str | None = None,
                         layer_names: list[str] | None = None) -> Figure:
    """Left: mean training loss per epoch. Right: train and test accuracy (%) per
    epoch, the best test accuracy marked. Lines: ``fig.axes[0].lines[0]`` the
    loss, ``fig.axes[1].lines[0]`` train, ``[1]`` test accuracy (%)."""
    epoch = np.array([r["epoch"] for r in rows], dtype=float)
    loss = np.array([r["train_loss"] for r in rows], dtype=float)
    train = np.array([r["train_acc"] for r in rows], dtype=float) * PERCENT
    test = np.array([r["test_acc"] for r in rows], dtype=float) * PERCENT
    sparse = [r for r in rows if "test_silent" in r]
    fig = _figure(13.0 if sparse else 9.0, 3.6)
    axes = fig.subplots(1, 3 if sparse else 2)
    ax_loss, ax_acc = axes[0], axes[1]
    ax_loss.plot(epoch, loss, "-o", ms=3, color="C0")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (mean per sample)")
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(epoch, train, "-o", ms=3, color="C0", label="train")
    ax_acc.plot(epoch, test, "-o", ms=3, color="C1", label="test")
    best = int(np.argmax(test))
    ax_acc.plot([epoch[best]], [test[best]], "*", ms=12, color="C3",
                label=f"best test {test[best]:.2f} % (epoch {epoch[best]:.0f})")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    if sparse:                                   # the test pass's firing, per spiking layer
        ax_sp = axes[2]
        ep = [r["epoch"] for r in sparse]
        for k in range(len(sparse[-1]["test_silent"])):
            ax_sp.plot(ep, [PERCENT * r["test_silent"][k] for r in sparse], "-o", ms=3,
                       color=f"C{k}", label=layer_names[k] if layer_names and k < len(layer_names)
                       else f"spiking layer {k + 1}")
        ax_sp.set_xlabel("epoch")
        ax_sp.set_ylabel("silent neurons on the test set (%)")
        ax_sp.grid(alpha=0.3)
        ax_sp.legend(fontsize=8)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(wrap_title(title or "Training curves", fig), fontsize=10)
    return fig


def plot_study_curves(curves: dict, title: str | None = None) -> Figure:
    """Test accuracy (%) per epoch of many runs: ``curves`` maps an experiment to its
    runs' metric rows (``python3 -m snnsim.study report``). One colour per experiment:
    each run a thin line, and where an experiment has two or more runs, their mean per
    epoch as a thick line with a band of ± one sample standard deviation (over the runs
    that reached that epoch). ``fig.axes[0].lines`` are the runs, in order, then the
    means; ``fig.axes[0].collections`` the bands."""
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    colors = _colors(len(curves))
    for i, (experiment, runs) in enumerate(curves.items()):
        for rows in runs:
            ax.plot([r["epoch"] for r in rows], [r["test_acc"] * PERCENT for r in rows], "-o",
                    lw=0.6, ms=2.5, alpha=0.35, color=colors[i],
                    label=f"{experiment}" if len(runs) == 1 else None)
    for i, (experiment, runs) in enumerate(curves.items()):
        if len(runs) < 2:
            continue
        epochs, mean, std = mean_std_per_epoch(runs)
        ax.plot(epochs, mean, "-o", lw=1.8, ms=4, color=colors[i],
                label=f"{experiment}: mean ± std of {len(runs)} runs")
        ax.fill_between(epochs, mean - std, mean + std, color=colors[i], alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:           # none when no experiment has a run
        ax.legend(fontsize=8)
    fig.suptitle(title or "Test accuracy per epoch", fontsize=10)
    return fig


def mean_std_per_epoch(runs: list[list[dict]]):
    """(epochs, mean, std) of the test accuracy (%) over runs, per epoch that at least
    two runs reached; std is the sample standard deviation (ddof 1)."""
    by_epoch: dict[int, list[float]] = {}
    for rows in runs:
        for r in rows:
            by_epoch.setdefault(int(r["epoch"]), []).append(r["test_acc"] * PERCENT)
    epochs = np.array(sorted(e for e, v in by_epoch.items() if len(v) >= 2), dtype=np.int64)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) for e in epochs])
    return epochs, mean, std


def plot_confusion(cm, class_names=None, title: str | None = None) -> Figure:
    """The confusion matrix as an image of row-normalised percentages (row = true
    class; each row sums to 100 %), each cell annotated with its count.
    ``fig.axes[0].images[0].get_array()`` is the percentage matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(cm * PERCENT, rows, out=np.zeros(cm.shape), where=rows > 0)
    names = class_names or [str(i) for i in range(n)]
    fig = _figure(1.0 + 0.62 * n, 0.6 + 0.55 * n)
    ax = fig.add_subplot()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=PERCENT)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if pct[i, j] > PERCENT / 2 else "black")
    ax.set_xticks(np.arange(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="% of the true class (cells: sample counts)")
    acc = np.trace(cm) / max(cm.sum(), 1) * PERCENT
    ax.set_title(wrap_title(title or f"Confusion matrix: {cm.sum()} samples, accuracy "
                            f"{acc:.2f} %", fig), fontsize=10)
    return fig


def save_figure(fig: Figure, out_dir, name: str, formats=FORMATS) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.<fmt>`` for each format; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


# =============================================================================
# Command line
# =============================================================================
DESCRIPTION = """\
Figures of a spiking network's firing and of a training run (PNG and PDF).

SOURCE is a checkpoint .h5 (or a run folder: its best.h5), a recording .h5
(python3 -m snnsim.record), or leave it out and give --network SPEC for a freshly
initialised network. Checkpoints and --network are run on the first --samples
test samples. Time steps are 1 ms: a neuron firing c times in T steps fires at
1000 c / T Hz.

  sparsity   Fig. 7 of the paper: % of neurons firing 0, 1, ..., T times per
             layer and for the whole network, averaged over samples
  rates      Fig. 8 of the paper: histogram of per-neuron firing rates (Hz)
  raster     spike raster and membrane traces of one sample
  curves     training loss and accuracy per epoch (run folder, metrics.jsonl
             or checkpoint)
  confusion  confusion matrix (default: the whole test set)

Example:
  python3 -m snnsim.plots sparsity runs/latest/best.h5 --samples 100 --out runs/plots"""


def _class_names(dataset):
    """The dataset's class names (its spec's), or None for an unknown dataset."""
    try:
        return list(get_spec(dataset).class_names) or None
    except DatasetError:
        return None


def _load_source(args, full: bool, n_samples, indices=None, counts: bool = True):
    """(recording, dataset name, label) from a recording, a checkpoint or --network."""
    source = source_of(args)
    if source and is_recording(source):
        rec = load_recording(source)
        return rec, rec.meta.get("dataset"), str(source)
    net, cfg, label = network_from_args(args, source)
    if indices is None:
        indices = getattr(args, "indices", None)
    rec = record_dataset(net, cfg, n_samples, args.split, full=full, batch_size=args.batch_size,
                         data_dir=args.data_dir, indices=indices,
                         meta={"source": label, **checkpoint_meta(source)}, counts=counts)
    return rec, cfg.dataset, label


def _layers_selected(rec: Recording, spec):
    if not spec:
        return None
    return [int(x) if x.strip().isdigit() else x.strip() for x in spec.split(",")]


def network_title(rec: Recording) -> str:
    """One line naming what was recorded: dataset, network, T, and the checkpoint's
    test accuracy and epoch (or "untrained" for a fresh network), e.g.
    ``"fashion-mnist, 784-400-400-10, T = 5: test accuracy 89.06 % (epoch 26)"``."""
    cfg, meta = rec.config or {}, rec.meta or {}
    network = str(cfg.get("network") or meta.get("network") or "network")
    if network.lower().endswith((".yaml", ".yml")):          # an authors' YAML: name + layers
        network = f"{cfg.get('name') or Path(network).stem} ({meta.get('network', '')})"
    head = f"{meta.get('dataset') or cfg.get('dataset') or 'data'}, {network}, T = {rec.n_steps}"
    if "checkpoint_test_acc" in meta:
        return (f"{head}: test accuracy {float(meta['checkpoint_test_acc']) * PERCENT:.2f} % "
                f"(epoch {meta.get('checkpoint_epoch', '?')})")
    if str(meta.get("source", "")).startswith("fresh"):
        return f"{head}: untrained (seed {cfg.get('seed', '?')})"
    return head


def _split_name(rec: Recording) -> str:
    return str((rec.meta or {}).get("split", "test"))


def cmd_sparsity(args):
    rec, _, label = _load_source(args, False, args.samples)
    dists = count_distributions(rec, _layers_selected(rec, args.layers))
    fig = plot_count_distribution(dists, rec.n_steps, n_samples=rec.n_samples, log=args.log,
                                  title=f"{network_title(rec)}\n% of neurons firing k times in "
                                        f"T steps, mean of {rec.n_samples} {_split_name(rec)} "
                                        "samples")
    print(f"% of neurons firing k = 0..{rec.n_steps} times, mean over {rec.n_samples} samples:")
    for name, pct in dists.items():
        print(f"  {name:<24} " + " ".join(f"{p:6.2f}" for p in pct))
    return [(fig, "sparsity")]


def mean_rate_labels(edges) -> list[str]:
    """Tick labels of :func:`snnsim.record.mean_rate_histogram`'s bins: ``"never"``,
    then ``"lo-hi"`` in Hz."""
    inner = [f"{lo:.0f}-{hi:.0f}" for lo, hi in zip(edges[2:-1], edges[3:])]
    return ["never", f">0-{edges[2]:.0f}"] + inner


def cmd_rates(args):
    rec, _, label = _load_source(args, False, args.samples)
    chosen = rec.layers if not args.layers else [rec.layer(x) for x in _layers_selected(rec, args.layers)]
    T, n = rec.n_steps, rec.n_samples
    per_sample = args.per_sample or T >= args.bins
    if per_sample:          # the paper's Fig. 8: per sample, then the mean over samples
        edges = default_rate_bins(T, rec.step_ms, args.bins)
        hist = lambda counts: firing_rate_histogram(counts, T, edges, rec.step_ms)[1]  # noqa: E731
        ticks = rate_bin_labels(edges, T, rec.step_ms)
        what = f"% of neurons per firing-rate bin in each sample, mean of {n} samples"
        note = (f"at T = {T} a sample's rates are its spike counts: the same numbers as the "
                "sparsity plot" if T < args.bins else "")
        xlabel = None
    else:                   # small T: each neuron's rate averaged over the samples
        edges = mean_rate_histogram(chosen[0].counts, T, args.bins, rec.step_ms)[0]
        hist = lambda counts: mean_rate_histogram(counts, T, args.bins, rec.step_ms)[1]  # noqa: E731
        ticks = mean_rate_labels(edges)
        what = f"% of neurons by their firing rate averaged over {n} samples"
        note = (f"at T = {T} one sample's rates are its spike counts (the sparsity plot); "
                "--per-sample draws the per-sample histogram")
        xlabel = (f"mean firing rate over {n} samples (Hz); T = {T} steps of {rec.step_ms:g} ms, "
                  f"{MS_PER_S / rec.step_ms:.0f} Hz = a spike at every step")
    hists = {layer_label(lr, rec.layers): hist(lr.counts) for lr in chosen}
    hists["network"] = hist([lr.counts for lr in chosen])
    fig = plot_rate_histogram(edges, hists, T, rec.step_ms, n_samples=n,
                              title=f"{network_title(rec)}\n{what}", tick_labels=ticks,
                              xlabel=xlabel)
    if note:
        print(f"({note})")
    print("% of neurons per firing-rate bin (Hz): " + " | ".join(ticks))
    for name, pct in hists.items():
        print(f"  {name:<24} " + " ".join(f"{p:6.2f}" for p in pct))
    return [(fig, "rates")]


def cmd_raster(args):
    source = source_of(args)
    if source and is_recording(source):
        rec, dataset, _ = _load_source(args, True, None)
        pos = args.sample_index
    else:
        rec, dataset, _ = _load_source(args, True, None, indices=[args.sample_index])
        pos = 0
    fig = plot_raster(rec, pos, args.max_neurons, args.traces, _class_names(dataset))
    idx = int(rec.sample_index[pos]) if rec.sample_index is not None else pos
    return [(fig, f"raster_sample{idx}")]


def run_title(source, rows: list[dict]) -> str:
    """The curves' title: what was trained (from the run folder's config.json, when there
    is one) and its best test accuracy, e.g. ``"fashion-mnist, 784-400-400-10, T = 5:
    30 epochs, best test accuracy 89.11 % (epoch 28)"``; never a path."""
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    head = "Training curves"
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        head = f"{cfg.get('dataset', 'data')}, {cfg.get('name') or cfg.get('network')}, " \
               f"T = {cfg.get('n_steps', '?')}"
    except (OSError, ValueError, AttributeError):
        pass
    n = len(rows)
    text = f"{head}: {n} epoch{'' if n == 1 else 's'}"
    best = max(rows, key=lambda r: r.get("test_acc", -1.0), default=None)
    if best is not None and "test_acc" in best:
        text += f", best test accuracy {best['test_acc'] * PERCENT:.2f} % (epoch {best['epoch']})"
    return text


def run_label(folder: Path, leave_out: str | None = None) -> str:
    """A run's legend entry: its config name (or network) and backward, and the values of
    the other fields that tell runs apart (seed, preset, lr, ...) except ``leave_out``."""
    from ..training.runfolder import read_json_file
    cfg = read_json_file(folder / "config.json", "config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{folder / 'config.json'}: not a JSON object")
    parts = [str(cfg.get("name") or cfg.get("network")), str(cfg.get("backward", "tsslbp"))]
    for key in LABEL_KEYS:
        if key != leave_out and key in cfg:
            parts.append(f"{key} {cfg[key]}")
    return ", ".join(parts)


#: Config fields named in a run's legend entry (besides the config and the backward).
LABEL_KEYS = ("seed", "preset", "lr", "n_steps")


def cmd_curves(args):
    if not args.source:
        raise SystemExit("curves needs a run folder, a metrics.jsonl or a checkpoint")
    if len(args.source) == 1 and not args.group:
        rows = read_metrics(args.source[0])
        folder = Path(args.source[0]) if Path(args.source[0]).is_dir() else Path(args.source[0]).parent
        names = spiking_layer_names(folder) if any("test_silent" in r for r in rows) else None
        fig = plot_training_curves(rows, title=run_title(args.source[0], rows), layer_names=names)
        return [(fig, "curves")]
    runs: dict[str, list] = {}
    for source in args.source:
        folder = Path(source)
        if not folder.is_dir():
            raise SystemExit(f"{source}: several runs (or --group) need run folders")
        runs.setdefault(run_label(folder, args.group), []).append(read_metrics(folder))
    what = f"mean ± std over {args.group}" if args.group else "every run"
    fig = plot_study_curves(runs, title=f"Test accuracy per epoch of {len(args.source)} runs "
                                        f"({what})")
    return [(fig, "curves")]


def cmd_confusion(args):
    rec, dataset, label = _load_source(args, False, args.samples, counts=False)
    if rec.labels is None:
        raise SystemExit("the recording has no labels")
    n_classes = rec.scores.shape[1]
    cm = confusion_matrix(rec.labels, rec.predictions, n_classes)
    fig = plot_confusion(cm, _class_names(dataset),
                         title=f"{network_title(rec)}\nconfusion on {rec.n_samples} "
                               f"{_split_name(rec)} samples, accuracy "
                               f"{np.trace(cm) / cm.sum() * PERCENT:.2f} %")
    print(cm)
    return [(fig, "confusion")]


SUBCOMMAND_HELP = {
    "sparsity": "Per sample, the percentage of neurons that fire exactly k times in T steps, "
                "then the mean over the first --samples test samples (the paper averages over "
                "100); one bar group per k, one bar per layer and one for the whole network. "
                "Writes sparsity.png/pdf.",
    "rates": "Per neuron, rate = spikes / (T ms) in Hz. When T >= --bins (long runs, as the "
             "paper's T = 100): per sample, the percentage of neurons per rate bin, then the "
             "mean over samples; bins are aligned to spike counts, the first holds the silent "
             "neurons. When T < --bins, that statistic is the sparsity plot's in other units, "
             "so by default each neuron's rate is first averaged over the samples (first bin: "
             "neurons that never fire); --per-sample forces the paper's statistic. One panel "
             "per layer and the network. Writes rates.png/pdf.",
    "raster": "Top: each spiking layer's spikes (time in ms, neuron index). Bottom: membrane "
              "potential u (after integration, before reset) of a few neurons per layer and of "
              "every output neuron, threshold dashed, spikes starred. "
              "Writes raster_sample<index>.png/pdf.",
    "curves": "Mean training loss per sample, train/test accuracy (%) and, where recorded, each "
              "spiking layer's silent neurons on the test set (%), per epoch, from a run "
              "folder's metrics.jsonl, a metrics.jsonl file, or a checkpoint's metrics. Several "
              "run folders: their test accuracy per epoch in one figure (--group seed: mean ± "
              "std of the seeds). Writes curves.png/pdf.",
    "confusion": "Rows: true class; columns: predicted class (argmax of the summed output PSC); "
                 "colour: % of the true class, text: sample counts. Default: the whole test set. "
                 "Writes confusion.png/pdf.",
}

COMMANDS = {
    "sparsity": (cmd_sparsity, "Fig. 7: %% of neurons firing 0..T times per layer and network",
                 DEFAULT_SAMPLES),
    "rates": (cmd_rates, "Fig. 8: histogram of per-neuron firing rates in Hz", DEFAULT_SAMPLES),
    "raster": (cmd_raster, "spike raster and membrane traces of one sample", None),
    "curves": (cmd_curves, "loss, accuracy and sparsity per epoch of a run, or several runs", None),
    "confusion": (cmd_confusion, "confusion matrix (default: the whole test set)", None),
}


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.plots"), description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, text, samples) in COMMANDS.items():
        sp = sub.add_parser(name, help=text,
                            description=text.replace("%%", "%") + ". " + SUBCOMMAND_HELP[name])
        source_help = "checkpoint .h5, run folder, or recording .h5"
        if name == "curves":
            sp.add_argument("source", nargs="*", metavar="SOURCE",
                            help=source_help + " (also metrics.jsonl); several run folders: "
                                 "their test accuracy in one figure")
            sp.add_argument("--group", default=None, metavar="KEY",
                            help="with run folders: runs that differ only in this config field "
                                 "(e.g. seed) are one line, their mean with a band of ± one "
                                 "standard deviation")
        else:
            add_source_arguments(sp, samples, source_help=source_help, samples=name != "raster")
        sp.add_argument("--out", default="runs/plots", help="output folder (default runs/plots)")
        sp.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated image formats (default png,pdf)")
        if name in ("sparsity", "rates"):
            sp.add_argument("--layers", default=None, help="comma-separated layers to show "
                            "(hidden 1, output, conv 1, ...; positions among spiking layers; "
                            "or layer_NN); default all")
        if name == "sparsity":
            sp.add_argument("--log", action="store_true", help="logarithmic y axis")
        if name == "rates":
            sp.add_argument("--bins", type=int, default=MAX_RATE_BINS,
                            help=f"at most this many rate bins (default {MAX_RATE_BINS})")
            sp.add_argument("--per-sample", action="store_true",
                            help="the paper's statistic even when T < --bins: per sample, then "
                                 "the mean over samples (at small T it repeats the sparsity "
                                 "plot; by default each neuron's rate is averaged over the "
                                 "samples first)")
        if name == "raster":
            sp.add_argument("--sample-index", type=int, default=0, metavar="I",
                            help="dataset index of the sample (for a recording: its "
                                 "position among the recorded samples; default 0)")
            sp.add_argument("--sample", type=int, dest="sample_index", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)          # the older spelling
            sp.add_argument("--max-neurons", type=int, default=None,
                            help="raster only the first N neurons of each layer (default all)")
            sp.add_argument("--traces", type=int, default=TRACES_PER_LAYER,
                            help="membrane traces per hidden layer: one neuron per distinct "
                                 f"spike count, most active first (default {TRACES_PER_LAYER})")
    return p


@command("plots")
def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for fig, name in COMMANDS[args.command][0](args):
        for path in save_figure(fig, args.out, name, formats):
            print(f"wrote {path}")
    return 0


__all__ = ["main", "mean_std_per_epoch", "plot_confusion", "plot_count_distribution", "plot_raster",
           "plot_rate_histogram", "plot_study_curves", "plot_training_curves", "rate_bin_labels",
           "read_metrics", "save_figure", "trace_neurons"]

if __name__ == "__main__":
    sys.exit(main())
