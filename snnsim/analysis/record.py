"""Recordings of a network's firing on test samples, and the firing statistics
behind the paper's Figs. 7-8.

    net, cfg, _ = network_from_checkpoint("runs/my_run/best.h5")
    rec = record_dataset(net, cfg, n_samples=100, full=True)      # 100 test samples
    save_recording("rec.h5", rec)
    pct = firing_count_distribution(rec.layers[0].counts, rec.n_steps)   # (T+1,) in %

or from the command line::

    python3 -m snnsim.record runs/my_run/best.h5 --samples 100 --full --out rec.h5

A :class:`Recording` holds, per spiking layer, the spike count of every neuron
on every sample (Σ_t s[t], an integer in 0..T) and, optionally ("full"), the
spike trains s and the membrane traces u (after integration, before reset) of
the first samples; plus the network's predictions, the output scores
Σ_t a_out[t] and the labels (for a confusion matrix). The HDF5 layout is in
``docs/recording_format.md``; spike trains are stored bit-packed.

The firing statistics are pure NumPy functions of the counts
(:func:`firing_count_distribution`, :func:`network_count_distribution`,
:func:`firing_rate_histogram`): the percentage of neurons firing k times is
computed per sample and then averaged over samples, as the paper does (S 4.5:
"we count the percentage of neurons that fire 0, 1, ..., 5 times, respectively,
and average the percentages over 100 testing samples").

Arrays move from the backend to the host (:func:`snnsim.backend.to_numpy`)
only here, once per batch, as counts (and, with ``full``, spikes and u).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..backend import array_module, to_numpy
from ..commandline import ArgumentParser, UserError, command, prog_name
from ..datasets.registry import DATASETS
from ..h5header import check_header, has_format, layer_name, write_header
from ..loss import predict

FORMAT_NAME = "snnsim-recording"
FORMAT_VERSION = 1
#: Duration of one time step in ms (docs/model.md: t = 0..T-1, 1 ms each).
STEP_MS = 1.0
MS_PER_S = 1000.0
PERCENT = 100.0
#: Bit order of the packed spike trains (np.packbits(..., bitorder=...)).
PACK_BITORDER = "little"
#: Default number of test samples of a recording (the paper averages over 100).
DEFAULT_SAMPLES = 100
#: At most this many bins in the default firing-rate histogram.
MAX_RATE_BINS = 20
#: gzip level of the count and membrane datasets.
GZIP_LEVEL = 4


# =============================================================================
# The recording
# =============================================================================
@dataclass
class LayerRecord:
    """What was recorded of one spiking layer.

    name : ``layer_NN``, NN its position in ``net.layers`` (as in checkpoints).
    describe : the layer in the paper's notation (``"400"``, ``"32C5(pad 2)"``).
    index : its position in ``net.layers``.
    shape : feature shape of its neurons (no T, no batch), e.g. ``(400,)``.
    v_th : its firing threshold.
    counts : ``(N, *shape)`` int32, spikes of each neuron on each sample, Σ_t s[t].
    spikes : ``(T, K, *shape)`` bool, the spike trains of the first K samples, or None.
    membrane : ``(T, K, *shape)`` float32, u[t] (after integration, before reset)
        of the first K samples, or None.
    """

    name: str
    describe: str
    index: int
    shape: tuple
    v_th: float
    counts: np.ndarray
    spikes: np.ndarray | None = None
    membrane: np.ndarray | None = None

    @property
    def n_neurons(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Recording:
    """Firing of a network on N samples (see the module docstring).

    n_steps : T.   layers : one :class:`LayerRecord` per spiking layer, bottom up.
    predictions : ``(N,)`` int64, argmax_i Σ_t a_out_i[t].   scores : ``(N, C)``
    float32, Σ_t a_out[t].   labels : ``(N,)`` int64 or None.
    sample_index : ``(N,)`` int64, each sample's index in its dataset split, or None.
    neuron : the network's NeuronParams as a dict.   config : the run's flat
    config (dict) if known.   meta : free-form strings (source, dataset, split).
    """

    n_steps: int
    layers: list[LayerRecord]
    predictions: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    sample_index: np.ndarray | None = None
    neuron: dict = field(default_factory=dict)
    config: dict | None = None
    meta: dict = field(default_factory=dict)
    step_ms: float = STEP_MS

    @property
    def n_samples(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def n_full(self) -> int:
        """K, the number of samples with spike trains and membrane traces (0 if none)."""
        first = self.layers[0] if self.layers else None
        return 0 if first is None or first.spikes is None else int(first.spikes.shape[1])

    def layer(self, name_or_index) -> LayerRecord:
        """A layer by name (``layer_NN``), role (``hidden 1``, ``output``, see
        :func:`layer_role`), describe string, or position in ``layers``."""
        if isinstance(name_or_index, int):
            return self.layers[name_or_index]
        for lr in self.layers:
            if name_or_index in (lr.name, lr.describe, layer_role(lr, self.layers)):
                return lr
        raise KeyError(f"no recorded layer {name_or_index!r}; have "
                       + ", ".join(lr.name for lr in self.layers))


def _unpack_batch(item):
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise ValueError("a batch is x_in or (x_in, labels)")
        return item[0], item[1]
    return item, None


def record(net, batches, *, n_samples: int | None = None, full: bool = False,
           full_samples: int | None = None, counts: bool = True, config: dict | None = None,
           meta: dict | None = None, sample_index=None) -> Recording:
    """Run ``net`` (inference mode) over ``batches`` and record its firing.

    batches : iterable of ``x_in`` ``(T, B, *input_shape)`` arrays on the
        network's backend, or of ``(x_in, labels)`` pairs (as
        :func:`snnsim.training.data.batches` yields).
    n_samples : stop after this many samples (None: all batches).
    full : also keep the spike trains s and membrane traces u of the first
        ``full_samples`` samples (None: of every sample). They take
        T × neurons × (1 bit + 4 bytes) per sample on disk.
    counts : False records no layer at all (``layers`` is empty): only the
        predictions, scores and labels, e.g. for a confusion matrix of a large
        network on the whole test set.
    config, meta, sample_index : stored as they are.

    Counts are Σ_t s[t] per neuron (int32). Only counts (and with ``full`` the
    traces of the samples kept) are copied to the host, batch by batch.
    """
    spiking = [i for i, layer in enumerate(net.layers) if layer.spiking and counts]
    n_spikes = {i: [] for i in spiking}
    spikes = {i: [] for i in spiking}
    membrane = {i: [] for i in spiking}
    preds, scores, labels = [], [], []
    have_labels = None
    seen, kept, n_steps = 0, 0, None
    keep_limit = (full_samples if full_samples is not None else np.inf) if full else 0
    for item in batches:
        if n_samples is not None and seen >= n_samples:
            break
        x_in, y = _unpack_batch(item)
        take = x_in.shape[1] if n_samples is None else min(x_in.shape[1], n_samples - seen)
        if take < x_in.shape[1]:
            x_in = x_in[:, :take, ...]
            y = y[:take] if y is not None else None
        if have_labels is None:
            have_labels = y is not None
        elif have_labels != (y is not None):
            raise ValueError("either every batch has labels or none has")
        a_out, cache = net.forward(x_in, train=False)                    # (T, B, C)
        xp = array_module(a_out)
        n_steps = int(a_out.shape[0])
        keep = int(max(0, min(take, keep_limit - kept)))
        for i in spiking:
            s = cache.states[i].s                                         # (T, B, ...) bool
            n_spikes[i].append(to_numpy(xp.sum(xp.astype(s, xp.int32), axis=0)))  # (B, ...)
            if keep:
                spikes[i].append(to_numpy(s[:, :keep, ...]))             # (T, keep, ...)
                membrane[i].append(to_numpy(cache.states[i].u[:, :keep, ...]).astype(np.float32))
        preds.append(to_numpy(predict(a_out)).astype(np.int64))
        scores.append(to_numpy(xp.sum(a_out, axis=0)).astype(np.float32))   # (B, C)
        if y is not None:
            labels.append(to_numpy(y).astype(np.int64))
        seen += take
        kept += keep
    if seen == 0:
        raise ValueError("record: no samples (empty batches)")
    layers = []
    for i in spiking:
        layer = net.layers[i]
        neuron = net.neuron_of(layer)
        layers.append(LayerRecord(
            name=layer_name(i), describe=layer.describe(), index=i,
            shape=tuple(int(n) for n in net.shapes[i + 1]), v_th=float(neuron.v_th),
            counts=np.concatenate(n_spikes[i], axis=0),
            spikes=np.concatenate(spikes[i], axis=1) if full and kept else None,
            membrane=np.concatenate(membrane[i], axis=1) if full and kept else None))
    return Recording(
        n_steps=n_steps, layers=layers, predictions=np.concatenate(preds),
        scores=np.concatenate(scores), labels=np.concatenate(labels) if have_labels else None,
        sample_index=None if sample_index is None else np.asarray(sample_index, np.int64)[:seen],
        neuron=net.neuron.to_dict(), config=config, meta=dict(meta or {}))


# =============================================================================
# Firing statistics (pure functions of the counts)
# =============================================================================
def _as_counts(counts, n_steps: int) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim < 1:
        raise ValueError("counts must be (N, ...) per sample and neuron")
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"counts must be integers, got {c.dtype}")
    c = c.reshape(c.shape[0], -1).astype(np.int64)                       # (N, neurons)
    if c.size and (c.min() < 0 or c.max() > n_steps):
        raise ValueError(f"counts must lie in 0..{n_steps} (T = {n_steps}), got "
                         f"{c.min()}..{c.max()}")
    return c


def firing_count_distribution(counts, n_steps: int) -> np.ndarray:
    """The paper's Fig. 7 statistic: P[k] = the percentage of neurons that fire
    exactly k times in T steps, k = 0..T, averaged over samples.

    counts : ``(N, *shape)`` integer spike counts of one layer (N samples).
    Per sample n: P_n[k] = 100 · #{neurons with count k} / #neurons; then
    P[k] = mean_n P_n[k]. Returns ``(T+1,)`` float64; Σ_k P[k] = 100.
    """
    c = _as_counts(counts, n_steps)                                       # (N, M)
    n, m = c.shape
    if m == 0 or n == 0:
        raise ValueError("counts has no samples or no neurons")
    offsets = np.arange(n)[:, None] * (n_steps + 1)
    hist = np.bincount((c + offsets).ravel(), minlength=n * (n_steps + 1))
    per_sample = hist.reshape(n, n_steps + 1) * (PERCENT / m)             # (N, T+1)
    return per_sample.mean(axis=0)


def network_count_distribution(counts_by_layer, n_steps: int) -> np.ndarray:
    """Fig. 7 for the whole network: per sample, the percentage of all neurons
    of all the given layers together that fire k times, then the mean over
    samples. Layers weigh by their number of neurons. Returns ``(T+1,)``."""
    flat = [_as_counts(c, n_steps) for c in counts_by_layer]
    if not flat:
        raise ValueError("no layers")
    if len({c.shape[0] for c in flat}) != 1:
        raise ValueError("every layer must have the same number of samples")
    return firing_count_distribution(np.concatenate(flat, axis=1), n_steps)


def count_distributions(rec: Recording, layers=None) -> dict[str, np.ndarray]:
    """Fig. 7 per recorded layer (keyed by ``describe`` of the layer, prefixed by
    its name) and for the whole network (key ``"network"``)."""
    chosen = rec.layers if layers is None else [rec.layer(x) for x in layers]
    out = {layer_label(lr, rec.layers): firing_count_distribution(lr.counts, rec.n_steps)
           for lr in chosen}
    out["network"] = network_count_distribution([lr.counts for lr in chosen], rec.n_steps)
    return out


def layer_role(lr: LayerRecord, layers: list[LayerRecord] | None = None) -> str:
    """What a spiking layer is in its network: ``"output"`` for the last of
    ``layers`` (a recording's spiking layers, bottom up), ``"conv k"`` for the
    k-th convolution, ``"hidden k"`` for the k-th other hidden layer; without
    ``layers``, the layer's storage name (``layer_NN``)."""
    if not layers:
        return lr.name
    names = [x.name for x in layers]
    if lr.name not in names:
        return lr.name
    pos = names.index(lr.name)
    if pos == len(layers) - 1:
        return "output"
    kind = "conv" if _is_conv(lr) else "hidden"
    k = sum(1 for x in layers[:pos + 1] if ("conv" if _is_conv(x) else "hidden") == kind)
    return f"{kind} {k}"


def _is_conv(lr: LayerRecord) -> bool:
    """A convolution's neurons have a (channels, height, width) shape."""
    return len(lr.shape) == 3


def layer_label(lr: LayerRecord, layers: list[LayerRecord] | None = None) -> str:
    """A short label: ``"hidden 1 (400)"``, ``"conv 1 (32C5(pad 2))"``, ``"output (10)"``
    (see :func:`layer_role`)."""
    return f"{layer_role(lr, layers)} ({lr.describe})"


def firing_rates_hz(counts, n_steps: int, step_ms: float = STEP_MS) -> np.ndarray:
    """Per-neuron firing rate in Hz (spikes/s): r = count / (T · step_ms ms) · 1000 ms/s."""
    return np.asarray(counts, dtype=np.float64) / (n_steps * step_ms) * MS_PER_S


def default_rate_bins(n_steps: int, step_ms: float = STEP_MS,
                      max_bins: int = MAX_RATE_BINS) -> np.ndarray:
    """Bin edges in Hz for :func:`firing_rate_histogram`, aligned to spike counts.

    Rates take the values c · u, u = 1000/(T step_ms) Hz, c = 0..T; edges lie
    halfway between neighbouring values. For T < ``max_bins``: one bin per count.
    Otherwise a bin of the silent neurons alone, [0, u/2), then bins of
    g = ceil(T / (max_bins - 1)) consecutive counts each (the last may hold fewer),
    up to 1000/step_ms Hz (a spike at every step), so that every bin spans the
    same number of possible counts.
    """
    unit = MS_PER_S / (n_steps * step_ms)
    top = MS_PER_S / step_ms
    group = 1 if n_steps < max_bins else -(-n_steps // (max_bins - 1))
    inner = (np.arange(0, n_steps, group) + 0.5) * unit
    return np.concatenate([[0.0], inner, [top]])


def firing_rate_histogram(counts, n_steps: int, bins=None, step_ms: float = STEP_MS):
    """The paper's Fig. 8 statistic: the percentage of neurons whose firing rate
    falls in each bin, per sample, averaged over samples.

    counts : ``(N, *shape)`` (one layer) or a list of such arrays (neurons of
        all of them pooled, as one network).
    bins : edges in Hz (default :func:`default_rate_bins`); bin j is
        [e_j, e_{j+1}), the last one closed [e_{J-1}, e_J]. Rates outside raise.
    Returns ``(edges (J+1,), percentages (J,))``; the percentages sum to 100.
    """
    if isinstance(counts, (list, tuple)):
        c = np.concatenate([_as_counts(x, n_steps) for x in counts], axis=1)
    else:
        c = _as_counts(counts, n_steps)                                   # (N, M)
    edges = np.asarray(default_rate_bins(n_steps, step_ms) if bins is None else bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bins must be increasing edges, at least two")
    rates = firing_rates_hz(c, n_steps, step_ms)                           # (N, M)
    if rates.min() < edges[0] or rates.max() > edges[-1]:
        raise ValueError(f"rates {rates.min():g}..{rates.max():g} Hz fall outside the bins "
                         f"{edges[0]:g}..{edges[-1]:g} Hz")
    j = rate_bin_index(rates, edges)                                       # (N, M)
    n, m = c.shape
    offsets = np.arange(n)[:, None] * (edges.size - 1)
    hist = np.bincount((j + offsets).ravel(), minlength=n * (edges.size - 1))
    per_sample = hist.reshape(n, edges.size - 1) * (PERCENT / m)
    return edges, per_sample.mean(axis=0)


def mean_rate_histogram(counts, n_steps: int, n_bins: int = MAX_RATE_BINS,
                        step_ms: float = STEP_MS):
    """Each neuron's firing rate averaged over the N samples, as a histogram: the
    percentage of neurons per bin.

    Where T is small, one sample's rates take only T+1 values, so the paper's
    per-sample histogram (:func:`firing_rate_histogram`) is the spike-count
    distribution of Fig. 7 in other units. The mean over samples takes many
    values, and tells apart neurons that never fire on any sample from neurons
    that fire on some. Bins: the first holds the neurons that never fire (mean
    exactly 0; its upper edge is half the smallest non-zero mean, one spike in N
    samples); then ``n_bins`` equal bins up to 1000/step_ms Hz (50 Hz wide for
    the default 20 bins and 1 ms steps).

    counts : ``(N, *shape)`` of one layer, or a list of such arrays (pooled).
    Returns ``(edges (n_bins+2,), percentages (n_bins+1,))``, summing to 100.
    """
    if isinstance(counts, (list, tuple)):
        c = np.concatenate([_as_counts(x, n_steps) for x in counts], axis=1)
    else:
        c = _as_counts(counts, n_steps)                                   # (N, M)
    n, m = c.shape
    if n == 0 or m == 0:
        raise ValueError("counts has no samples or no neurons")
    if n_bins < 1:
        raise ValueError(f"need at least 1 bin, got {n_bins}")
    top = MS_PER_S / step_ms
    never = 0.5 * firing_rates_hz(1.0 / n, n_steps, step_ms)             # half of 1 spike / N
    edges = np.concatenate([[0.0, never], np.linspace(0.0, top, n_bins + 1)[1:]])
    if edges[2] <= never:                                                 # tiny N: keep increasing
        edges[1] = 0.5 * edges[2]
    rates = firing_rates_hz(c.sum(axis=0) / n, n_steps, step_ms)          # (M,)
    j = rate_bin_index(rates, edges)
    return edges, np.bincount(j, minlength=n_bins + 1) * (PERCENT / m)


def rate_bin_index(rates, edges) -> np.ndarray:
    """The bin j of each rate: e_j <= r < e_{j+1}, the last bin closed on the right."""
    edges = np.asarray(edges, np.float64)
    return np.clip(np.searchsorted(edges, rates, side="right") - 1, 0, edges.size - 2)


def confusion_matrix(labels, predictions, n_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of samples of true class i predicted as j, ``(C, C)`` int64."""
    y = np.asarray(labels, np.int64)
    p = np.asarray(predictions, np.int64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    n_classes = int(n_classes or max(int(y.max(initial=-1)), int(p.max(initial=-1))) + 1)
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes,
                                                                                    n_classes)


# =============================================================================
# HDF5
# =============================================================================
def pack_spikes(spikes) -> tuple[np.ndarray, int]:
    """``(T, K, *shape)`` bool -> (``(T, K, ceil(M/8))`` uint8, M) with M the
    neurons per sample, bits in :data:`PACK_BITORDER` order along the last axis."""
    s = np.asarray(spikes, dtype=bool)
    m = int(np.prod(s.shape[2:]))
    return np.packbits(s.reshape(s.shape[0], s.shape[1], m), axis=-1, bitorder=PACK_BITORDER), m


def unpack_spikes(packed, n_neurons: int, shape: tuple) -> np.ndarray:
    """Inverse of :func:`pack_spikes`: ``(T, K, *shape)`` bool."""
    p = np.asarray(packed, dtype=np.uint8)
    bits = np.unpackbits(p, axis=-1, count=n_neurons, bitorder=PACK_BITORDER)
    return bits.astype(bool).reshape(p.shape[0], p.shape[1], *shape)


def save_recording(path, rec: Recording) -> Path:
    """Write ``rec`` to HDF5 at ``path`` atomically (built in memory, written to a
    temporary name, then :func:`os.replace`: a full disk is one OSError naming ``path``).
    Layout: ``docs/recording_format.md``."""
    from ..training.checkpoint import atomic_write_h5
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(f):
        write_header(f, FORMAT_NAME, FORMAT_VERSION)
        f.attrs["n_steps"] = int(rec.n_steps)
        f.attrs["step_ms"] = float(rec.step_ms)
        f.attrs["n_samples"] = rec.n_samples
        f.attrs["n_full"] = rec.n_full
        f.attrs["layer_names"] = json.dumps([lr.name for lr in rec.layers])
        f.attrs["layer_describe"] = json.dumps([lr.describe for lr in rec.layers])
        f.attrs["layer_shapes"] = json.dumps([list(lr.shape) for lr in rec.layers])
        f.attrs["neuron"] = json.dumps(rec.neuron)
        f.attrs["config"] = json.dumps(rec.config) if rec.config is not None else ""
        f.attrs["meta"] = json.dumps(rec.meta)
        f.create_dataset("predictions", data=rec.predictions.astype(np.int64))
        f.create_dataset("scores", data=rec.scores.astype(np.float32))
        if rec.labels is not None:
            f.create_dataset("labels", data=rec.labels.astype(np.int64))
        if rec.sample_index is not None:
            f.create_dataset("sample_index", data=rec.sample_index.astype(np.int64))
        lg = f.create_group("layers")
        for lr in rec.layers:
            g = lg.create_group(lr.name)
            g.attrs["describe"] = lr.describe
            g.attrs["index"] = int(lr.index)
            g.attrs["shape"] = np.asarray(lr.shape, np.int64)
            g.attrs["v_th"] = float(lr.v_th)
            g.create_dataset("counts", data=lr.counts.astype(np.int32),
                             compression="gzip", compression_opts=GZIP_LEVEL)
            if lr.spikes is not None:
                packed, m = pack_spikes(lr.spikes)
                ds = g.create_dataset("spikes_packed", data=packed, compression="gzip",
                                      compression_opts=GZIP_LEVEL)
                ds.attrs["n_neurons"] = m
                ds.attrs["bitorder"] = PACK_BITORDER
                ds.attrs["unpacked_shape"] = np.asarray(lr.spikes.shape, np.int64)
            if lr.membrane is not None:
                g.create_dataset("membrane", data=lr.membrane.astype(np.float32),
                                 compression="gzip", compression_opts=GZIP_LEVEL)

    return atomic_write_h5(path, fill)


class RecordingError(UserError, RuntimeError):
    """A recording file is missing, damaged or not an snnsim recording; names the file."""


def is_recording(path) -> bool:
    """True if ``path`` is an HDF5 file written by :func:`save_recording` (False for
    anything but a regular file: a FIFO is never opened)."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return has_format(f, FORMAT_NAME)
    except OSError:
        return False


#: A recording's datasets are gzip-compressed, so they may declare more bytes than the
#: file holds, but not more than this factor times its size (or 1 GiB): a larger
#: declaration is damage, refused before anything is allocated.
MAX_EXPANSION = 1000


def load_recording(path) -> Recording:
    """Read a recording written by :func:`save_recording`; :class:`RecordingError`, one
    line naming the file, when it is not a regular file, not an snnsim recording, or
    damaged (a dataset declaring more than :data:`MAX_EXPANSION` times the file's size,
    a packed spike train whose neuron count does not fit its bytes or its layer's shape)."""
    from ..training.checkpoint import regular_file
    path = regular_file(path, "recording", RecordingError)
    limit = max(MAX_EXPANSION * path.stat().st_size, 2**30)

    def read(ds):
        declared = math.prod(int(n) for n in ds.shape or ()) * ds.dtype.itemsize
        if ds.dtype.kind not in "biuf" or declared > limit:
            raise RecordingError(f"{path}: {ds.name} is {ds.dtype} {ds.shape} (declares "
                                 f"{declared:,} bytes)")
        return ds[()]

    try:
        with h5py.File(path, "r") as f:
            check_header(f, path, FORMAT_NAME, FORMAT_VERSION, "recording", RecordingError)
            layers = []
            for name in json.loads(f.attrs["layer_names"]):
                g = f["layers"][name]
                shape = tuple(int(n) for n in g.attrs["shape"])
                spikes = None
                if "spikes_packed" in g:
                    ds = g["spikes_packed"]
                    packed, n_neurons = read(ds), int(ds.attrs["n_neurons"])
                    if (packed.ndim < 1 or not 0 <= n_neurons <= 8 * packed.shape[-1]
                            or math.prod(shape) != n_neurons):
                        raise RecordingError(f"{path}: {ds.name}: {n_neurons} neurons of shape "
                                             f"{shape} in packed bytes {packed.shape}")
                    spikes = unpack_spikes(packed, n_neurons, shape)
                layers.append(LayerRecord(
                    name=name, describe=str(g.attrs["describe"]), index=int(g.attrs["index"]),
                    shape=shape, v_th=float(g.attrs["v_th"]), counts=read(g["counts"]),
                    spikes=spikes, membrane=read(g["membrane"]) if "membrane" in g else None))
            config = f.attrs["config"]
            return Recording(
                n_steps=int(f.attrs["n_steps"]), layers=layers,
                predictions=read(f["predictions"]), scores=read(f["scores"]),
                labels=read(f["labels"]) if "labels" in f else None,
                sample_index=read(f["sample_index"]) if "sample_index" in f else None,
                neuron=json.loads(f.attrs["neuron"]),
                config=json.loads(config) if config else None,
                meta=json.loads(f.attrs["meta"]), step_ms=float(f.attrs["step_ms"]))
    except RecordingError:
        raise
    except Exception as exc:      # any error of h5py, json or NumPy on a damaged file
        raise RecordingError(f"{path}: damaged snnsim recording ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None


# =============================================================================
# Networks and data from checkpoints, specs and dataset files
# =============================================================================
def network_from_checkpoint(path, backend: str | None = None, dtype: str | None = None):
    """The trained network of a checkpoint (or of a run folder: its ``best.h5``,
    else its ``checkpoint.h5``).

    Returns ``(net, cfg, ckpt)``: the :class:`~snnsim.network.Network` with the
    saved weights, its :class:`~snnsim.training.config.TrainConfig` (``backend`` and
    ``dtype`` replaced when given) and the dict of
    :func:`snnsim.training.checkpoint.load_checkpoint`.
    """
    from ..training.checkpoint import load_checkpoint
    from ..training.config import TrainConfig
    from ..training.train import make_network, set_weights
    path = resolve_checkpoint_path(path)
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt["config"], source=str(path))
    changes = {k: v for k, v in (("backend", backend), ("dtype", dtype)) if v is not None}
    if changes:
        cfg = cfg.replace(source="network_from_checkpoint", **changes)
    net = make_network(cfg)
    set_weights(net, ckpt["weights"], path)
    return net, cfg, ckpt


def resolve_checkpoint_path(path) -> Path:
    """A checkpoint file, or a run folder's ``best.h5`` (else ``checkpoint.h5``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.h5", "checkpoint.h5"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: run folder without best.h5 or checkpoint.h5")
    return p


def checkpoint_meta(source) -> dict:
    """What a figure title needs from a checkpoint (or run folder): the epoch it
    holds and that epoch's test accuracy, as recording ``meta`` strings; ``{}``
    for no source. The checkpoint is read with every check of
    :func:`snnsim.training.checkpoint.load_checkpoint`."""
    from ..training.checkpoint import load_checkpoint
    if not source:
        return {}
    ckpt = load_checkpoint(resolve_checkpoint_path(source))
    epoch = ckpt["epoch"]
    hit = [row for row in ckpt["metrics"] if row["epoch"] == epoch]
    if not hit:
        return {"checkpoint_epoch": str(epoch)}
    return {"checkpoint_epoch": str(epoch), "checkpoint_test_acc": f"{hit[-1]['test_acc']:.6f}"}


def network_from_spec(spec: str = "784-400-400-10", **config):
    """A freshly initialised network from the paper's notation, with the run
    settings of :class:`~snnsim.training.config.TrainConfig` (``dataset``, ``n_steps``,
    ``seed``, ``preset``, ``reading``, ``backend``, ``dtype``, ...) given as keywords.
    Returns ``(net, cfg)``."""
    from ..training.config import TrainConfig
    from ..training.train import make_network
    cfg = TrainConfig().replace(source="network_from_spec", network=spec, **config)
    return make_network(cfg), cfg


def load_samples(cfg, split: str = "test", n_samples: int | None = None, indices=None,
                 data_dir: str | None = None):
    """The preprocessed samples of ``cfg.dataset`` (host arrays, :class:`snnsim.training.data.Split`).

    ``indices`` picks samples by their index in the split; otherwise the first
    ``n_samples`` (None: all; N-MNIST: spread evenly over its label-ordered files).
    Returns ``(split, sample_index)``.
    """
    from ..training import data as data_mod
    changes = {"data_dir": data_dir} if data_dir is not None else {}
    subset = None if indices is not None else n_samples
    changes["train_subset" if split == "train" else "test_subset"] = subset
    cfg = cfg.replace(source="load_samples", **changes)
    s = data_mod.load_split(cfg.dataset, split, cfg)
    if s.kind == "static":
        s.augment = False
    index = s.index if s.index is not None else np.arange(len(s))
    if indices is None:
        return s, np.asarray(index, np.int64)
    idx = np.asarray(indices, np.int64)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= len(s):
        raise IndexError(f"sample indices must lie in 0..{len(s) - 1} ({cfg.dataset} {split})")
    picked = dataclasses.replace(s, y=s.y[idx], x=None if s.x is None else s.x[idx],
                                 index=None if s.index is None else s.index[idx])
    return picked, np.asarray(index, np.int64)[idx]


def sample_batches(net, split, n_steps: int, batch_size: int):
    """``(x_in (T, B, ...), labels)`` on the network's backend, in order."""
    from ..training import data as data_mod
    return data_mod.batches(split, batch_size, net.xp, net.dtype, n_steps)


def record_dataset(net, cfg, n_samples: int | None = DEFAULT_SAMPLES, split: str = "test",
                   full: bool = False, full_samples: int | None = None, batch_size: int = 100,
                   data_dir: str | None = None, indices=None, meta: dict | None = None,
                   counts: bool = True) -> Recording:
    """:func:`record` on the first ``n_samples`` samples (or ``indices``) of
    ``cfg.dataset``'s ``split``, with the config and sample indices stored."""
    s, index = load_samples(cfg, split, n_samples, indices, data_dir)
    info = {"dataset": cfg.dataset, "split": split, "network": net.describe()}
    info.update(meta or {})
    return record(net, sample_batches(net, s, cfg.n_steps, batch_size), full=full,
                  full_samples=full_samples, counts=counts, config=cfg.to_dict(), meta=info,
                  sample_index=index)


# =============================================================================
# Command line
# =============================================================================
DESCRIPTION = """\
Record the firing of a network on test samples into an HDF5 file
(layout: docs/recording_format.md): per spiking layer the spike count of
every neuron on every sample, the predictions, output scores and labels, and
with --full the spike trains (bit-packed) and membrane traces.

Source: a checkpoint (or a run folder: its best.h5), or --network SPEC for a
freshly initialised network. Example:
  python3 -m snnsim.record runs/latest/best.h5 --samples 100 --full --out runs/rec.h5"""


def parse_indices(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-3"`` or ``"0,5-7"`` -> sample indices."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"expected sample indices such as 0,1,2 or 0-3, got {text!r}") \
                from None
    if not out:
        raise ValueError(f"no sample index in {text!r}")
    return out


def _indices_type(text: str) -> list[int]:
    try:
        return parse_indices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_type(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of samples (a positive "
                                         f"integer), got {text!r}; for dataset indices use "
                                         "--indices 0,1,2") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of samples, got {n}")
    return n


SOURCE_HELP = "checkpoint .h5 or run folder (its best.h5)"


def add_source_arguments(p: argparse.ArgumentParser, samples_default: int | None = DEFAULT_SAMPLES,
                         *, source_help: str | None = SOURCE_HELP, samples: bool = True,
                         batch_size: bool = True):
    """The options of record, plots and inspection that say which network runs on
    which samples, defined once:

    - ``SOURCE`` (positional; ``--checkpoint`` is the same, an older spelling) or
      ``--network SPEC`` with ``--dataset``, ``--n-steps``, ``--seed``, ``--preset``;
    - ``--samples N`` (a count: the first N samples of the split) or ``--indices``
      (dataset indices, ``0,1,2`` or ``0-3``), ``--split``, ``--data-dir``,
      ``--batch-size``, ``--backend``.

    ``source_help=None`` leaves the positional out (the caller defines it);
    ``samples=False`` leaves out ``--samples`` and ``--indices``, ``batch_size=False``
    ``--batch-size``.
    Read the source with :func:`source_of`.
    """
    if source_help is not None:
        p.add_argument("source", nargs="?", metavar="SOURCE", help=source_help)
    p.add_argument("--checkpoint", metavar="SOURCE", default=None, help=argparse.SUPPRESS)
    p.add_argument("--network", metavar="SPEC", help="instead of a checkpoint: a freshly "
                   "initialised network in the paper's notation, e.g. 784-400-400-10")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset of --network (a "
                   "checkpoint uses its own): " + " | ".join(DATASETS))
    p.add_argument("--n-steps", type=int, default=None, metavar="T",
                   help="time steps T (default: the checkpoint's, or 5 with --network)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of --network")
    p.add_argument("--preset", default="authors", help="preset of --network: authors | paper")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the dataset")
    p.add_argument("--split", default="test", choices=("test", "train"), help="dataset split")
    if samples:
        p.add_argument("--samples", type=_count_type, default=samples_default, metavar="N",
                       help="number of samples: the first N of the split"
                            + (f" (default {samples_default})" if samples_default
                               else " (default all)"))
        p.add_argument("--indices", type=_indices_type, default=None, metavar="LIST",
                       help="instead of --samples: these dataset indices, e.g. 0,1,2 or 0-3")
    if batch_size:
        p.add_argument("--batch-size", type=int, default=100, metavar="B", help="batch size")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: the checkpoint's, or numpy)")


def source_of(args) -> str | None:
    """The checkpoint given as SOURCE or as ``--checkpoint`` (None: neither)."""
    positional, option = getattr(args, "source", None), getattr(args, "checkpoint", None)
    if positional and option and positional != option:
        raise SystemExit(f"two sources: {positional} and --checkpoint {option}; give one")
    return positional or option


def network_from_args(args, source: str | None = None, dtype: str | None = None):
    """(net, cfg, label) from a checkpoint path (default :func:`source_of`) or ``--network``."""
    source = source or source_of(args)
    if source and args.network:
        raise SystemExit("give a checkpoint or --network, not both")
    if source:
        net, cfg, _ = network_from_checkpoint(source, backend=args.backend, dtype=dtype)
        if args.n_steps is not None:
            cfg = cfg.replace(source="command line", n_steps=args.n_steps)
        return net, cfg, str(resolve_checkpoint_path(source))
    if not args.network:
        raise SystemExit("give a checkpoint (or run folder) or --network SPEC")
    extra = {"n_steps": args.n_steps} if args.n_steps is not None else {}
    if dtype is not None:
        extra["dtype"] = dtype
    net, cfg = network_from_spec(args.network, dataset=args.dataset, seed=args.seed,
                                 preset=args.preset, backend=args.backend or "numpy", **extra)
    return net, cfg, f"fresh {args.network} (seed {args.seed})"


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.record"), description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(p)
    p.add_argument("--full", action="store_true", help="also record spike trains and "
                   "membrane traces")
    p.add_argument("--full-samples", type=int, default=None, metavar="K",
                   help="with --full: only of the first K samples (default all)")
    p.add_argument("--out", default="runs/recording.h5",
                   help="output file (default runs/recording.h5)")
    return p


@command("record")
def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    net, cfg, label = network_from_args(args)
    rec = record_dataset(net, cfg, args.samples, args.split, args.full, args.full_samples,
                         args.batch_size, args.data_dir, indices=args.indices,
                         meta={"source": label, **checkpoint_meta(source_of(args))})
    save_recording(args.out, rec)
    acc = (rec.predictions == rec.labels).mean() * PERCENT if rec.labels is not None else None
    print(f"recorded {rec.n_samples} {cfg.dataset} {args.split} samples of {label}, T = "
          f"{rec.n_steps}, {len(rec.layers)} spiking layers"
          + (f", accuracy {acc:.2f} %" if acc is not None else "") + f" -> {args.out}")
    for name, pct in count_distributions(rec).items():
        print(f"  {name:<24} silent {pct[0]:6.2f} %   fire every step {pct[-1]:6.2f} %")
    return 0


__all__ = ["DEFAULT_SAMPLES", "FORMAT_NAME", "FORMAT_VERSION", "STEP_MS", "LayerRecord",
           "Recording", "RecordingError", "checkpoint_meta", "confusion_matrix",
           "count_distributions", "default_rate_bins", "firing_count_distribution",
           "firing_rate_histogram", "firing_rates_hz", "is_recording", "layer_label",
           "layer_role", "load_recording", "load_samples", "mean_rate_histogram",
           "network_count_distribution", "network_from_args", "network_from_checkpoint",
           "network_from_spec", "pack_spikes", "parse_indices", "rate_bin_index", "record",
           "record_dataset", "resolve_checkpoint_path", "save_recording", "source_of",
           "unpack_spikes"]

if __name__ == "__main__":
    sys.exit(main())
