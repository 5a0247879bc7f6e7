"""Recordings and the firing statistics behind Figs. 7-8 (snnsim.analysis.record).

Each statistic is checked against numbers worked out by hand or against the
spikes themselves: percentages sum to 100, a silent network is 100 % silent, a
neuron driven hard fires at every step, counts equal the recorded spikes, and
an HDF5 round trip gives back every array.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snnsim import Dense, Network, NeuronParams, repeat_static
from snnsim.analysis.record import (
    FORMAT_NAME,
    RecordingError,
    confusion_matrix,
    count_distributions,
    default_rate_bins,
    firing_count_distribution,
    firing_rate_histogram,
    firing_rates_hz,
    is_recording,
    load_recording,
    network_count_distribution,
    pack_spikes,
    record,
    save_recording,
    unpack_spikes,
)

T = 5


def small_net(sizes=(12, 16, 8, 4), weight_scale=3.0, seed=0, reset="zero"):
    layers = [Dense(n, weight_scale=weight_scale) for n in sizes[1:]]
    return Network(layers, (sizes[0],), neuron=NeuronParams(reset=reset), dtype="float64", seed=seed)


def random_batches(rng, n_batches, batch, n_in, n_steps=T, n_classes=4):
    """Event-like 0/1 inputs (time-varying) with labels."""
    for _ in range(n_batches):
        x = (rng.random((n_steps, batch, n_in)) < 0.5).astype(np.float64)
        yield x, rng.integers(0, n_classes, batch)


# --- firing_count_distribution -------------------------------------------------------------
def test_count_distribution_by_hand():
    # sample 0: counts 0,0,1,5 -> k=0: 50 %, k=1: 25 %, k=5: 25 %; sample 1: all 2 -> k=2: 100 %
    counts = np.array([[0, 0, 1, 5], [2, 2, 2, 2]])
    pct = firing_count_distribution(counts, T)
    np.testing.assert_allclose(pct, [25.0, 12.5, 50.0, 0.0, 0.0, 12.5])


def test_count_distribution_averages_per_sample_percentages():
    # per-sample percentages then the mean: independent of how the neurons are shaped
    counts = np.array([[[0, 1], [1, 1]], [[3, 3], [3, 0]]])          # (N=2, 2, 2)
    np.testing.assert_allclose(firing_count_distribution(counts, 3),
                               [(25 + 25) / 2, 75 / 2, 0, 75 / 2])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.lists(st.integers(1, 9), min_size=1, max_size=4),
       st.integers(0, 2**31 - 1))
def test_percentages_sum_to_100_per_layer_and_network(n_steps, n_samples, sizes, seed):
    rng = np.random.default_rng(seed)
    layers = [rng.integers(0, n_steps + 1, (n_samples, m)) for m in sizes]
    for c in layers:
        pct = firing_count_distribution(c, n_steps)
        assert pct.shape == (n_steps + 1,)
        assert np.all(pct >= 0)
        assert pct.sum() == pytest.approx(100.0, abs=1e-9)
    net = network_count_distribution(layers, n_steps)
    assert net.sum() == pytest.approx(100.0, abs=1e-9)
    # pooled per sample = the layers' distributions weighted by their neuron counts
    w = np.array(sizes, float) / sum(sizes)
    expected = sum(wi * firing_count_distribution(c, n_steps) for wi, c in zip(w, layers))
    np.testing.assert_allclose(net, expected, atol=1e-9)


def test_count_distribution_rejects_bad_counts():
    with pytest.raises(ValueError):
        firing_count_distribution(np.array([[0, 6]]), 5)                 # more spikes than steps
    with pytest.raises(TypeError):
        firing_count_distribution(np.array([[0.5]]), 5)


# --- firing rates ----------------------------------------------------------------------------
def test_rates_in_hz():
    # 3 spikes in 30 steps of 1 ms = 100 Hz; 30 spikes = 1000 Hz
    np.testing.assert_allclose(firing_rates_hz(np.array([0, 3, 30]), 30), [0.0, 100.0, 1000.0])


def test_rate_histogram_short_runs_is_the_count_distribution():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, T + 1, (7, 50))
    edges, pct = firing_rate_histogram(counts, T)
    assert len(edges) == T + 2                                            # one bin per count
    np.testing.assert_allclose(pct, firing_count_distribution(counts, T))


def test_rate_histogram_long_runs():
    n_steps = 100
    counts = np.array([[0, 0, 0, 1, 10, 100], [0, 50, 50, 50, 50, 50]])
    edges, pct = firing_rate_histogram(counts, n_steps)
    assert pct.sum() == pytest.approx(100.0)
    assert edges[0] == 0 and edges[-1] == pytest.approx(1000.0)
    # the first bin holds exactly the silent neurons
    assert pct[0] == pytest.approx(firing_count_distribution(counts, n_steps)[0])
    assert pct[0] == pytest.approx((50 + 100 / 6) / 2)
    # 100 spikes in 100 ms = 1000 Hz falls in the last (closed) bin: 1/6 of sample 0
    assert pct[-1] == pytest.approx(100 / 6 / 2)
    assert np.array_equal(default_rate_bins(n_steps), edges)


# --- recording a network ----------------------------------------------------------------------
def test_silent_network_is_100_percent_silent():
    net = small_net()
    for params in net.params:
        params["W"][...] = 0.0
    rng = np.random.default_rng(2)
    rec = record(net, random_batches(rng, 2, 5, 12))
    for pct in count_distributions(rec).values():
        np.testing.assert_allclose(pct, [100.0] + [0.0] * T)
    assert all(int(lr.counts.sum()) == 0 for lr in rec.layers)


def test_neuron_driven_hard_fires_every_step():
    # A constant input 1 gives the input PSC a0[t] = 1 - (2/3)^(t+1) >= 1/3. Neuron 3 of
    # the first layer gets weight 100 from every input: x >= 100/3 > V_th at every step,
    # and with the zero reset u[t] = x[t], so it fires T times; every other weight is 0.
    n_in, n_hidden = 6, 5
    net = Network([Dense(n_hidden), Dense(2)], (n_in,), dtype="float64")
    net.params[0]["W"][...] = 0.0
    net.params[0]["W"][3, :] = 100.0
    net.params[1]["W"][...] = 0.0
    x = repeat_static(np.ones((4, n_in)), T)                             # static input, 4 samples
    rec = record(net, [x])
    c = rec.layers[0].counts                                             # (4, 5)
    expected = np.zeros((4, n_hidden), int)
    expected[:, 3] = T
    np.testing.assert_array_equal(c, expected)
    pct = firing_count_distribution(c, T)
    np.testing.assert_allclose(pct, [80.0, 0, 0, 0, 0, 20.0])            # 1 of 5 neurons
    assert rec.layers[1].counts.sum() == 0


def test_counts_agree_with_spikes_and_with_the_network():
    net = small_net()
    rng = np.random.default_rng(3)
    batches = list(random_batches(rng, 3, 4, 12))
    rec = record(net, batches, full=True)
    assert rec.n_samples == 12 and rec.n_full == 12 and rec.n_steps == T
    for lr in rec.layers:
        assert lr.spikes.dtype == bool and lr.spikes.shape == (T, 12) + lr.shape
        np.testing.assert_array_equal(lr.spikes.sum(axis=0), lr.counts)
    # and with the engine's own states, batch by batch
    for b, (x, y) in enumerate(batches):
        a, cache = net.forward(x)
        for lr in rec.layers:
            s = cache.states[lr.index]
            np.testing.assert_array_equal(lr.spikes[:, 4 * b:4 * b + 4], s.s)
            np.testing.assert_array_equal(lr.membrane[:, 4 * b:4 * b + 4], s.u.astype(np.float32))
        np.testing.assert_array_equal(rec.predictions[4 * b:4 * b + 4], a.sum(0).argmax(-1))
        np.testing.assert_array_equal(rec.labels[4 * b:4 * b + 4], y)
    assert any(lr.counts.sum() > 0 for lr in rec.layers)                 # not a vacuous test


def test_n_samples_and_full_samples_limits():
    net = small_net()
    rng = np.random.default_rng(4)
    rec = record(net, random_batches(rng, 5, 4, 12), n_samples=7, full=True, full_samples=3)
    assert rec.n_samples == 7 and rec.labels.shape == (7,)
    assert rec.n_full == 3
    for lr in rec.layers:
        assert lr.counts.shape[0] == 7
        np.testing.assert_array_equal(lr.spikes.sum(0), lr.counts[:3])


def test_record_without_labels():
    net = small_net()
    rng = np.random.default_rng(5)
    rec = record(net, [x for x, _ in random_batches(rng, 2, 3, 12)])
    assert rec.labels is None and rec.n_samples == 6


# --- HDF5 -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.lists(st.integers(1, 11), min_size=1, max_size=3),
       st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(n_steps, k, shape, seed):
    s = np.random.default_rng(seed).random((n_steps, k, *shape)) < 0.3
    packed, m = pack_spikes(s)
    assert packed.dtype == np.uint8 and packed.shape == (n_steps, k, -(-m // 8))
    np.testing.assert_array_equal(unpack_spikes(packed, m, tuple(shape)), s)


def test_hdf5_round_trip(tmp_path):
    net = small_net()
    rng = np.random.default_rng(6)
    rec = record(net, random_batches(rng, 2, 5, 12), full=True, full_samples=4,
                 config={"network": "12-16-8-4", "n_steps": T}, meta={"dataset": "synthetic"},
                 sample_index=np.arange(100, 110))
    path = save_recording(tmp_path / "rec.h5", rec)
    assert not (tmp_path / "rec.h5.tmp").exists()
    assert is_recording(path)
    back = load_recording(path)
    assert back.n_steps == T and back.n_samples == 10 and back.n_full == 4
    assert back.config == rec.config and back.meta == rec.meta and back.neuron == rec.neuron
    for name in ("predictions", "scores", "labels", "sample_index"):
        np.testing.assert_array_equal(getattr(back, name), getattr(rec, name))
    for a, b in zip(rec.layers, back.layers):
        assert (a.name, a.describe, a.index, a.shape, a.v_th) == (b.name, b.describe, b.index,
                                                                  b.shape, b.v_th)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.spikes, b.spikes)
        np.testing.assert_array_equal(a.membrane, b.membrane)
    with h5py.File(path, "r") as f:                                      # the documented layout
        assert f.attrs["format"] == FORMAT_NAME
        assert json.loads(f.attrs["layer_names"]) == ["layer_00", "layer_01", "layer_02"]
        ds = f["layers/layer_00/spikes_packed"]
        assert ds.dtype == np.uint8 and ds.shape == (T, 4, 2)            # 16 neurons -> 2 bytes
        assert ds.attrs["n_neurons"] == 16 and ds.attrs["bitorder"] == "little"
        assert f["layers/layer_00/counts"].shape == (10, 16)


def test_load_recording_errors(tmp_path):
    with pytest.raises(RecordingError, match="no such"):
        load_recording(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(RecordingError, match="not an snnsim recording"):
        load_recording(other)
    assert not is_recording(other)


def test_confusion_matrix():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


# --- checkpoints -----------------------------------------------------------------------------
def test_network_from_checkpoint(tmp_path):
    pytest.importorskip("snnsim.training.train")
    from snnsim.analysis.record import network_from_checkpoint, network_from_spec
    from snnsim.training.checkpoint import save_checkpoint
    from snnsim.training.optim import AdamW
    net, cfg = network_from_spec("784-7-10", seed=3)
    for p in net.params:
        p["W"] *= -2.0                                                   # not the initial weights
    opt = AdamW(net.params, lr=cfg.lr)
    save_checkpoint(tmp_path / "checkpoint.h5", weights=net.params, optimizer=opt.state_dict(),
                    rng_state=np.random.default_rng(0).bit_generator.state, epoch=1,
                    config=cfg.to_dict(), metrics=[], network=net.describe())
    back, cfg2, ckpt = network_from_checkpoint(tmp_path / "checkpoint.h5")
    assert cfg2.network == "784-7-10" and back.describe() == net.describe()
    for p, q in zip(net.params, back.params):
        np.testing.assert_array_equal(p["W"], q["W"])
    back64, _, _ = network_from_checkpoint(tmp_path, dtype="float64")   # a run folder
    assert back64.dtype == np.float64


def test_record_predictions_only(tmp_path):
    net = small_net()
    rng = np.random.default_rng(7)
    batches = list(random_batches(rng, 2, 3, 12))
    rec = record(net, batches, counts=False)
    full = record(net, batches)
    assert rec.layers == [] and rec.n_full == 0
    np.testing.assert_array_equal(rec.predictions, full.predictions)
    np.testing.assert_array_equal(rec.labels, full.labels)
    back = load_recording(save_recording(tmp_path / "p.h5", rec))
    np.testing.assert_array_equal(back.scores, full.scores)


def test_cli_help(capsys):
    from snnsim.analysis.record import main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--full" in capsys.readouterr().out
