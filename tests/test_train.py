"""snnsim.training.train, snnsim.training.config, snnsim.training.data: the command line, the run folder,
bit-exact resume, reproducibility, Ctrl-C, and a real (tiny) learning check.

Every run trains a tiny network on a tiny synthetic Fashion-MNIST written in
the real IDX format (gzip) to a temporary folder, so the tests take seconds.
"""
from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import snnsim
from snnsim.training import data as data_mod
from snnsim.training import train as train_mod
from snnsim.training.checkpoint import METRIC_COLUMNS, load_checkpoint
from snnsim.training.config import ConfigError, TrainConfig, field_names, load_config_file
from snnsim.training.optim import AdamW
from snnsim.variants import BACKWARDS
from snnsim.version import current_source_info

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 60, 30
#: The synthetic problem's classes (of the 10 outputs): class c lights up band c of rows.
N_SYNTH_CLASSES = 3
BAND_ROWS = 28 // N_SYNTH_CLASSES


# --- a tiny dataset in the real IDX format -------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: magic 00 00 08 <ndim>, big-endian uint32 sizes, uint8 payload."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def synthetic_images(n: int, rng: np.random.Generator):
    """Separable 28×28 images: a dim noisy background and a bright band of rows
    (band = label) — a problem a small SNN learns in a few epochs."""
    labels = rng.integers(0, N_SYNTH_CLASSES, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        rows = slice(int(c) * BAND_ROWS, (int(c) + 1) * BAND_ROWS)
        images[i, rows] = rng.integers(180, 256, (BAND_ROWS, 28))
    return images, labels


def write_fashion_mnist(root: Path, n_train=N_TRAIN, n_test=N_TEST, seed=0) -> Path:
    """``root/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``."""
    d = root / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = synthetic_images(n, rng)
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


def tiny_args(data_dir, out, *extra, epochs=1, dtype="float64", network="784-24-10", seed=3):
    return ["--data-dir", str(data_dir), "--out", str(out), f"--epochs={epochs}",
            f"--network={network}", "--batch-size=10", f"--dtype={dtype}", "--eval_batch_size=15",
            "--progress=false", f"--seed={seed}", *extra]


def run_cli(argv) -> int:
    """Run the command line in-process (as ``python3 -m snnsim.train`` would)."""
    return train_mod.main(argv)


def final_weights(run_dir) -> list[dict]:
    return load_checkpoint(Path(run_dir) / "checkpoint.h5")["weights"]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        assert set(la) == set(lb)
        for k in la:
            assert np.array_equal(la[k], lb[k]), f"weights {k} differ"


# --- command line ------------------------------------------------------------------------
def test_help_explains_every_option():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "snnsim.train", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for option in ("--config", "--backend", "--epochs", "--batch-size", "--seed", "--out",
                   "--resume", "--data-dir"):
        assert option in text
    for key in field_names():
        assert f"--{key.replace('_', '-')}=" in text, f"config field {key} missing from --help"


def test_unknown_key_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["--bogus_rate=3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option --bogus-rate" in err and "--help lists the options" in err
    assert "\n" not in err.strip()                   # one line; close names: tests/test_messages.py


def test_bad_value_is_an_error_naming_the_key(capsys):
    with pytest.raises(SystemExit):
        run_cli(["--n_steps=five"])
    assert "n_steps" in capsys.readouterr().err


def test_overrides_parse_to_field_types():
    cfg, ckpt = train_mod.parse_args(["--epochs", "7", "--lr=1e-3", "--betas=0.8,0.99",
                                      "--grad-clip=0", "--weight_clamp=none", "--warmup=false",
                                      "--train_subset", "100", "--preset=paper"])
    assert ckpt is None
    assert (cfg.epochs, cfg.lr, cfg.betas) == (7, 1e-3, (0.8, 0.99))
    assert cfg.grad_clip is None and cfg.weight_clamp is None and cfg.warmup is False
    assert cfg.train_subset == 100
    assert cfg.resolved() == {"reset": "subtract", "reading": "authors", "desired_train": "paper",
                              "target_filter_passes": 1}


def test_defaults_are_the_fashion_mnist_mlp():
    cfg, _ = train_mod.parse_args([])
    assert (cfg.dataset, cfg.network, cfg.n_steps, cfg.batch_size, cfg.lr) == \
        ("fashion-mnist", "784-400-400-10", 5, 100, 5e-4)
    assert (cfg.preset, cfg.loss, cfg.grad_clip, cfg.weight_clamp, cfg.weight_decay) == \
        ("authors", "kernel", 1.0, 4.0, 0.01)
    assert (cfg.backend, cfg.dtype, cfg.tau_m, cfg.tau_s) == ("numpy", "float32", 5.0, 3.0)
    net = train_mod.make_network(cfg)
    assert net.describe() == "400-400-10" and net.neuron.reset == "zero"
    assert net.grad.reading == "authors"


def test_authors_yaml_maps_network_keys(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("""
Network:
  epochs: 3
  batch_size: 20
  n_steps: 8
  dataset: "MNIST"
  rule: "TSSLBP"
  data_path: "../somewhere"
  lr: 0.0002
  loss: "count"
  n_class: 10
  desired_count: 6
  undesired_count: 2
  tau_m: 8
  tau_s: 4
  model: "LIF"
Layers:
  hidden:
    type: "linear"
    n_inputs: 784
    n_outputs: 12
    weight_scale: 1
    threshold: 1.5
  output:
    type: "linear"
    n_inputs: 12
    n_outputs: 10
    weight_scale: 1
    threshold: 1
""")
    cfg = load_config_file(str(path))
    assert (cfg.epochs, cfg.batch_size, cfg.n_steps, cfg.dataset, cfg.lr) == (3, 20, 8, "mnist", 2e-4)
    assert (cfg.loss, cfg.desired_count, cfg.undesired_count, cfg.tau_m, cfg.tau_s) == \
        ("count", 6.0, 2.0, 8.0, 4.0)
    assert cfg.network == str(path.resolve()) and cfg.name == "mine"
    net = train_mod.make_network(cfg.replace(preset="paper"))
    assert net.describe().startswith("12")
    # a layer's own threshold, with the run's reset and time constants
    assert net.layers[0].neuron.v_th == 1.5 and net.layers[0].neuron.reset == "subtract"
    assert net.layers[0].neuron.tau_m == 8.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("  model:", "  momentum: 0.9\n  model:"))
    with pytest.raises(ConfigError, match="momentum"):
        load_config_file(str(bad))


def test_a_runs_config_json_starts_a_new_run(data_dir, tmp_path):
    first = tmp_path / "first"
    assert run_cli(tiny_args(data_dir, first, epochs=1)) == 0
    cfg, _ = train_mod.parse_args(["--config", str(first / "config.json"), "--seed=9"])
    assert cfg.out is None and cfg.seed == 9
    assert cfg.replace(seed=3, out=str(first)) == TrainConfig.from_dict(
        json.loads((first / "config.json").read_text()))


def test_shipped_config_by_name():
    cfg = load_config_file("fashion_mnist_mlp")
    assert cfg.dataset == "fashion-mnist" and cfg.name == "fashion_mnist_mlp"
    assert train_mod.make_network(cfg).describe() == "400-400-10"


# --- data ---------------------------------------------------------------------------------
def test_batches_cover_the_split_once_in_a_seeded_order(data_dir):
    cfg = TrainConfig(data_dir=str(data_dir), dtype="float64")
    train, test = data_mod.load_splits(cfg)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    assert train.x.shape == (N_TRAIN, 1, 28, 28) and train.x.dtype == np.float64
    # (x/255 - 0.1307)/0.3081
    raw = gzip.decompress((Path(data_dir) / "fashion-mnist/train-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw[16:16 + 784], np.uint8).reshape(28, 28)
    np.testing.assert_allclose(train.x[0, 0], (first / 255.0 - 0.1307) / 0.3081, rtol=1e-6)

    def one_pass(seed):
        rng = np.random.default_rng(seed)
        out = list(data_mod.batches(train, 25, np, np.float64, 5, rng, shuffle=True))
        return out
    out = one_pass(0)
    assert [x.shape for x, _ in out] == [(5, 25, 1, 28, 28), (5, 25, 1, 28, 28), (5, 10, 1, 28, 28)]
    assert all(x.strides[0] == 0 for x, _ in out)          # a static current: broadcast over T
    labels = np.concatenate([y for _, y in out])
    assert np.array_equal(np.sort(labels), np.sort(train.y))
    assert not np.array_equal(labels, train.y)             # shuffled
    again = one_pass(0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(out, again))


def test_inputs_are_normalised_in_the_runs_dtype(data_dir):
    """float64: exactly the formula in float64 (the old code widened a float32 result,
    off by up to 2.8e-7); float32: the old float32 computation bit for bit, so float32
    training is unchanged. Both references are written out here, from the raw file."""
    raw = gzip.decompress((Path(data_dir) / "fashion-mnist/train-images-idx3-ubyte.gz").read_bytes())
    pixels = np.frombuffer(raw[16:], np.uint8).reshape(-1, 1, 28, 28)
    f = np.float32
    want = {"float64": (pixels.astype(np.float64) / 255.0 - 0.1307) / 0.3081,
            "float32": (pixels.astype(f) / f(255.0) - f(0.1307)) / f(0.3081)}
    for dtype, expected in want.items():
        train, _ = data_mod.load_splits(TrainConfig(data_dir=str(data_dir), dtype=dtype))
        assert train.x.dtype == np.dtype(dtype)
        assert np.array_equal(train.x, expected), dtype


def write_cifar10(root: Path, n_per_batch=4, seed=0) -> Path:
    """``root/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}``: pickled dicts
    with b"data" uint8 (N, 3072) and b"labels", as the official files."""
    import pickle
    d = root / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n_per_batch)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_cifar10_batches_normalised_and_augmented_per_seed(tmp_path):
    root = write_cifar10(tmp_path)
    cfg = TrainConfig(dataset="cifar10", data_dir=str(root), n_steps=3)
    train, test = data_mod.load_splits(cfg)
    assert (len(train), len(test)) == (20, 4) and train.augment and not test.augment
    assert train.x.shape == (20, 3, 32, 32) and train.x.dtype == np.float32

    def first_batch(seed):
        rng = np.random.default_rng(seed)
        return next(data_mod.batches(train, 8, np, np.float32, 3, rng, shuffle=True))
    (x1, y1), (x2, y2), (x3, _) = first_batch(0), first_batch(0), first_batch(1)
    assert x1.shape == (3, 8, 3, 32, 32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    # an augmented image is a crop/flip of its normalised original: values come from it
    # or from the black padding
    order = np.random.default_rng(0).permutation(20)
    from snnsim.datasets.transforms import CIFAR10_BLACK
    for b in range(8):
        src = train.x[order[b]]
        for c in range(3):
            allowed = np.append(src[c].ravel(), np.float32(CIFAR10_BLACK[c]))
            assert np.isin(x1[0, b, c], allowed).all()
    xt, _ = next(data_mod.batches(test, 4, np, np.float32, 3))
    assert np.array_equal(xt[0], test.x[:4])                   # no augmentation at test time


def write_nmnist(tmp_path: Path, n_train=2, n_test=1) -> Path:
    """``tmp_path/nmnist/{Train,Test}/<digit>/<k>.bin``: per file one ON event at
    (x=digit, y=k) in bin 1 (3000..5999 us) and one OFF event at (0, 5) in bin 0."""
    from snnsim.datasets.nmnist import encode_nmnist_events
    root = tmp_path / "nmnist"
    for split, n in (("Train", n_train), ("Test", n_test)):
        for digit in range(10):
            d = root / split / str(digit)
            d.mkdir(parents=True)
            for k in range(n):
                ev = {"x": np.array([digit, 0]), "y": np.array([k, 5]), "p": np.array([1, 0]),
                      "ts": np.array([3500, 10])}
                (d / f"{k:05d}.bin").write_bytes(encode_nmnist_events(ev))
    return root


def test_nmnist_batches_are_time_first_event_frames(tmp_path):
    write_nmnist(tmp_path)
    cfg = TrainConfig(dataset="nmnist", data_dir=str(tmp_path), n_steps=4, train_subset=5)
    train, test = data_mod.load_splits(cfg)
    assert len(test) == 10 and len(train) == 5
    assert len(set(train.y.tolist())) == 5                     # spread over the labels
    x, y = next(data_mod.batches(test, 10, np, np.float64, 4))
    assert x.shape == (4, 10, 2, 34, 34) and x.dtype == np.float64 and x.flags.c_contiguous
    for b, digit in enumerate(y.tolist()):
        assert x[1, b, 1, 0, digit] == 1.0 and x[0, b, 0, 5, 0] == 1.0
        assert x[:, b].sum() == 2.0


# --- a run --------------------------------------------------------------------------------
def test_one_epoch_writes_the_run_folder(data_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.h5", "checkpoint.h5", "config.json",
                                                    "metrics.jsonl", "run.json", "run.lock",
                                                    "status.json"]
    saved = json.loads((out / "config.json").read_text())
    cfg = TrainConfig.from_dict(saved)
    assert (cfg.epochs, cfg.batch_size, cfg.network, cfg.out) == (1, 10, "784-24-10", str(out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    assert set(METRIC_COLUMNS) <= set(rows[0])
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and rows[0]["samples_per_s"] > 0
    ck = load_checkpoint(out / "checkpoint.h5")
    files = saved.pop("data_files")         # the provenance record: config.json and checkpoint
    assert ck["epoch"] == 1 and ck["config"] == saved and ck["data_files"] == files
    assert ck["optimizer"]["step"] == N_TRAIN // 10
    assert [w["W"].shape for w in ck["weights"]] == [(24, 784), (10, 24)]
    assert ck["weights"][0]["W"].dtype == np.float64
    with h5py.File(out / "checkpoint.h5", "r") as f:
        assert sorted(f) == ["metrics", "optimizer", "rng", "weights"]
        assert f["metrics/test_acc"][0] == pytest.approx(rows[0]["test_acc"])
    assert load_checkpoint(out / "best.h5")["epoch"] == 1
    info = json.loads((out / "run.json").read_text())
    assert {k: info[k] for k in ("snnsim_version", "git_commit", "source")} == current_source_info()
    assert info["snnsim_version"] == snnsim.__version__ and "resumed" not in info
    assert (ck["snnsim_version"], ck["git_commit"] or None, ck["source"]) == (
        info["snnsim_version"], info["git_commit"], info["source"])


def test_refuses_to_overwrite_a_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_is_bit_exact(data_dir, tmp_path):
    """2 epochs straight == 1 epoch + resume + 1 epoch, on CPU in float64
    (np.array_equal of every weight, optimizer moment and epoch-2 metric)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(tiny_args(data_dir, straight, epochs=2)) == 0
    assert run_cli(tiny_args(data_dir, split, epochs=1)) == 0
    assert run_cli(["--resume", str(split), "--epochs=2", "--progress=false"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.h5"), load_checkpoint(split / "checkpoint.h5")
    assert a["epoch"] == b["epoch"] == 2
    assert_same_weights(a["weights"], b["weights"])
    for moment in ("m", "v"):
        assert_same_weights(a["optimizer"][moment], b["optimizer"][moment])
    assert a["optimizer"]["step"] == b["optimizer"]["step"]
    assert a["rng_state"] == b["rng_state"]
    for key in ("train_loss", "train_acc", "test_acc"):
        assert [r[key] for r in a["metrics"]] == [r[key] for r in b["metrics"]]
    rows = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_every_epoch_records_the_test_pass_sparsity_and_resume_keeps_it(data_dir, tmp_path):
    """metrics.jsonl and the checkpoint's metrics carry, per spiking layer, the silent fraction
    and the spikes per neuron and sample of the test pass (test_pass's figures for the
    epoch's weights); a resume rewrites metrics.jsonl from the checkpoint and keeps them; an
    epoch of a checkpoint written without them (an older snnsim) gets no such key."""
    from snnsim.training import data as data_mod
    from snnsim.training.checkpoint import load_checkpoint as load
    from snnsim.training.train import make_network, test_pass
    run = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, run, epochs=1)) == 0
    ck = load(run / "checkpoint.h5")
    cfg = TrainConfig.from_dict({**ck["config"], "data_dir": str(data_dir)})
    net = make_network(cfg)
    for layer, w in zip(net.layers, ck["weights"]):
        layer.params.update(w)
    _, test_split = data_mod.load_splits(cfg)
    row = json.loads((run / "metrics.jsonl").read_text())
    assert len(row["test_silent"]) == len(row["test_spikes"]) == 2       # 784-24-10: two LIF layers
    assert all(0.0 <= v <= 1.0 for v in row["test_silent"]) and all(v >= 0 for v in row["test_spikes"])
    acc, sparsity = test_pass(net, test_split, cfg)
    assert acc == row["test_acc"]
    assert row["test_silent"] == [round(d["silent"], 6) for d in sparsity]
    assert row["test_spikes"] == [round(d["spikes"], 6) for d in sparsity]
    assert ck["metrics"][0]["test_silent"] == row["test_silent"]
    assert run_cli(["--resume", str(run), "--epochs=2", "--progress=false"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_spikes"] for r in rows[:1]] == [row["test_spikes"]] and len(rows[1]["test_spikes"]) == 2
    from snnsim.training.checkpoint import seal
    with h5py.File(run / "checkpoint.h5", "r+") as f:                  # as an older snnsim wrote it
        del f["metrics/test_silent"], f["metrics/test_spikes"]
        seal(f)
    assert run_cli(["--resume", str(run), "--epochs=3", "--progress=false"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ["test_silent" in r for r in rows] == [False, False, True]
    from snnsim.training.checkpoint import CheckpointError
    with h5py.File(run / "checkpoint.h5", "r+") as f:                  # a fraction above 1
        f["metrics/test_silent"][2, 0] = 1.5
        seal(f)
    with pytest.raises(CheckpointError, match="test_silent row 3"):
        load(run / "checkpoint.h5")


@pytest.mark.parametrize("broken", ["rng", "optimizer"])
def test_resume_exactness_check_can_fail(data_dir, tmp_path, monkeypatch, broken):
    """The check above is sensitive: resuming without the saved rng state (the
    epoch's shuffle restarts from the seed) or without the optimizer's moments
    gives different weights."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(tiny_args(data_dir, straight, epochs=2)) == 0
    assert run_cli(tiny_args(data_dir, split, epochs=1)) == 0
    if broken == "rng":
        monkeypatch.setattr(train_mod, "restore_rng", lambda state: np.random.default_rng([3, 1]))
    else:
        monkeypatch.setattr(AdamW, "load_state_dict", lambda self, state: None)
    assert run_cli(["--resume", str(split), "--epochs=2", "--progress=false"]) == 0
    a, b = final_weights(straight), final_weights(split)
    assert not all(np.array_equal(la["W"], lb["W"]) for la, lb in zip(a, b))


def test_resume_refuses_to_change_the_computation(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    with pytest.raises(SystemExit):
        run_cli(["--resume", str(out / "checkpoint.h5"), "--lr=0.1"])
    assert "cannot change lr when resuming" in capsys.readouterr().err


def test_resume_from_an_older_file_does_not_overwrite_a_newer_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 0
    (out / "epoch1.h5").write_bytes((out / "checkpoint.h5").read_bytes())
    assert run_cli(["--resume", str(out), "--epochs=2", "--progress=false"]) == 0
    assert run_cli(["--resume", str(out / "epoch1.h5"), "--epochs=3", "--progress=false"]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 2


def test_resume_from_corrupt_checkpoint_names_the_file(data_dir, tmp_path, capsys):
    bad = tmp_path / "checkpoint.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(SystemExit):
        run_cli(["--resume", str(bad)])
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable HDF5" in err


def test_seeded_runs_are_reproducible(data_dir, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run_cli(tiny_args(data_dir, tmp_path / name, seed=seed, epochs=1,
                                 dtype="float32")) == 0
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    assert not np.array_equal(final_weights(tmp_path / "a")[0]["W"],
                              final_weights(tmp_path / "c")[0]["W"])


def test_ctrl_c_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    """KeyboardInterrupt in epoch 2: exit status 130, epoch 1's checkpoint intact,
    the resume command printed; resuming then finishes the run."""
    out = tmp_path / "run"
    real_step = train_mod.train_step
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == N_TRAIN // 10 + 2:           # the second batch of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", step)
    assert run_cli(tiny_args(data_dir, out, epochs=3)) == train_mod.EXIT_INTERRUPTED
    text = capsys.readouterr().out
    assert "interrupted during epoch 2" in text and f"--resume {out}" in text
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.h5", "checkpoint.h5", "config.json",
                                                    "metrics.jsonl", "run.json", "run.lock",
                                                    "status.json"]
    monkeypatch.setattr(train_mod, "train_step", real_step)
    started = json.loads((out / "run.json").read_text())["started"]
    assert run_cli(["--resume", "--out", str(out), "--progress=false"]) == 0   # --resume: --out
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 3
    info = json.loads((out / "run.json").read_text())           # the first start kept, the resume added
    assert info["started"] == started and [r["after_epoch"] for r in info["resumed"]] == [1]


def test_training_learns_a_separable_problem(data_dir, tmp_path):
    """A real learning check (seeded, so deterministic): on bands-of-rows images the
    training loss falls by more than half over 6 epochs and test accuracy exceeds
    90 % (chance: 1/3). With these settings seeds 3-10 all reach 100 % by epoch 6,
    so the check does not sit on a knife edge."""
    out = tmp_path / "learn"
    assert run_cli(tiny_args(data_dir, out, "--lr=3e-3", epochs=6, dtype="float32",
                             network="784-50-10")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    assert rows[-1]["test_acc"] > 0.9, rows[-1]


@pytest.mark.parametrize("backward", BACKWARDS)
def test_cli_trains_with_every_backward_variant(data_dir, tmp_path, backward):
    out = tmp_path / "run"
    assert run_cli(tiny_args(data_dir, out, f"--backward={backward}")) == 0
    assert json.loads((out / "config.json").read_text())["backward"] == backward
    assert load_checkpoint(out / "checkpoint.h5")["config"]["backward"] == backward
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
