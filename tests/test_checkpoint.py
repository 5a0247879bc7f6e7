"""snnsim.training.checkpoint: the documented HDF5 layout, an exact round trip, atomic
writes (a crash during a save leaves the previous checkpoint), clear errors
for corrupt, truncated or foreign files."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from snnsim.training.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    METRIC_COLUMNS,
    CheckpointError,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from snnsim.training.config import TrainConfig
from snnsim.training.optim import AdamW


def _state(seed: int = 0, dtype=np.float32):
    """What a run saves after an epoch: weights, optimizer, rng, config, metrics."""
    rng = np.random.default_rng(seed)
    params = [{"W": rng.standard_normal((6, 4)).astype(dtype)}, {},
              {"W": rng.standard_normal((3, 6)).astype(dtype)}]
    opt = AdamW(params, lr=1e-3)
    for _ in range(2):
        opt.step([{k: rng.standard_normal(p.shape).astype(dtype) for k, p in layer.items()}
                  for layer in params])
    run_rng = np.random.default_rng([seed, 1])
    run_rng.permutation(10)
    metrics = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.4 + 0.1 * e,
                "seconds": 2.0, "samples_per_s": 30.0 * e, "eval_seconds": 0.5} for e in (1, 2)]
    return dict(weights=params, optimizer=opt.state_dict(), rng_state=run_rng.bit_generator.state,
                epoch=2, config=TrainConfig(seed=seed).to_dict(), metrics=metrics,
                layer_names=["6", "pool", "3"], network="6-pool-3"), run_rng


def test_round_trip_is_exact(tmp_path):
    state, run_rng = _state(dtype=np.float64)
    path = save_checkpoint(tmp_path / "checkpoint.h5", **state)
    ck = load_checkpoint(path)
    assert ck["epoch"] == 2
    assert ck["config"] == state["config"]
    assert TrainConfig.from_dict(ck["config"]) == TrainConfig(seed=0)
    for saved, orig in zip(ck["weights"], state["weights"]):
        assert set(saved) == set(orig)
        for k in orig:
            assert saved[k].dtype == orig[k].dtype and np.array_equal(saved[k], orig[k])
    opt = state["optimizer"]
    assert ck["optimizer"]["step"] == opt["step"] == 2
    for moment in ("m", "v"):
        for saved, orig in zip(ck["optimizer"][moment], opt[moment]):
            for k in orig:
                assert np.array_equal(saved[k], orig[k])
    assert ck["metrics"] == [{k: row[k] for k in METRIC_COLUMNS} for row in state["metrics"]]
    assert ck["best_epoch"] == 2 and ck["best_test_acc"] == pytest.approx(0.6)
    # the generator continues exactly where the saved one would
    assert np.array_equal(restore_rng(ck["rng_state"]).random(5), run_rng.random(5))


def test_documented_layout(tmp_path):
    """The groups, datasets and attributes of docs/checkpoint_format.md."""
    state, _ = _state()
    path = save_checkpoint(tmp_path / "c.h5", **state)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT_NAME and f.attrs["format_version"] == FORMAT_VERSION
        for key in ("snnsim_version", "git_commit", "source", "created", "network", "config"):
            assert isinstance(f.attrs[key], str)
        assert json.loads(f.attrs["config"])["seed"] == 0
        assert int(f.attrs["epoch"]) == 2 and int(f.attrs["best_epoch"]) == 2
        assert sorted(f["weights"]) == ["layer_00", "layer_01", "layer_02"]
        assert len(f["weights/layer_01"]) == 0                      # a layer without parameters
        W = f["weights/layer_00/W"]
        assert W.shape == (6, 4) and W.dtype == np.float32
        assert f["weights/layer_02"].attrs["describe"] == "3"
        og = f["optimizer"]
        assert og.attrs["name"] == "adamw" and og.attrs["step"] == 2
        assert og.attrs["step"].dtype == np.int64
        assert list(og.attrs["betas"]) == [0.9, 0.999]
        assert og["m/layer_00/W"].shape == (6, 4) and og["v/layer_02/W"].shape == (3, 6)
        assert f["rng"].attrs["bit_generator"] == "PCG64"
        assert json.loads(f["rng"].attrs["state"])["bit_generator"] == "PCG64"
        for col, dtype in METRIC_COLUMNS.items():
            assert f["metrics"][col].shape == (2,) and f["metrics"][col].dtype == dtype


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.h5"
    first, _ = _state(seed=0)
    save_checkpoint(path, **first)
    before = path.read_bytes()

    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:                       # in the middle of writing the file
            raise OSError("simulated disk failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    second, _ = _state(seed=1)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, **second)
    monkeypatch.undo()
    assert calls["n"] == 3
    assert path.read_bytes() == before                         # untouched, not half-written
    assert not (tmp_path / "checkpoint.h5.tmp").exists()       # the partial file is removed
    ck = load_checkpoint(path)
    assert np.array_equal(ck["weights"][0]["W"], first["weights"][0]["W"])


def test_interrupt_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the middle of a save: same guarantee."""
    path = tmp_path / "checkpoint.h5"
    first, _ = _state(seed=0)
    save_checkpoint(path, **first)
    real = h5py.Group.create_group

    def interrupted(self, name, *args, **kwargs):
        if name == "rng":
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, **_state(seed=1)[0])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.h5"]
    assert np.array_equal(load_checkpoint(path)["weights"][2]["W"], first["weights"][2]["W"])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    state, _ = _state()
    good = save_checkpoint(tmp_path / "good.h5", **state)
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.h5"):
        load_checkpoint(bad)


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"this is not HDF5 at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.h5.*not a readable HDF5"):
        load_checkpoint(bad)


def test_foreign_hdf5_is_a_clear_error(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(CheckpointError, match=r"other\.h5.*not an snnsim checkpoint"):
        load_checkpoint(other)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    """Valid HDF5 with the right format tag but a group missing."""
    state, _ = _state()
    path = save_checkpoint(tmp_path / "damaged.h5", **state)
    with h5py.File(path, "a") as f:
        del f["optimizer/v"]
    with pytest.raises(CheckpointError, match=r"damaged\.h5.*damaged snnsim checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.h5"):
        load_checkpoint(tmp_path / "nothing.h5")
