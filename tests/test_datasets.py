"""Dataset layer: readers on small files written in the real formats, corruption cases,
N-MNIST binning, transforms, registry, and (when installed) the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snnsim.datasets import (
    DatasetError,
    NMNISTDataset,
    bin_events,
    encode_nmnist_events,
    load_cifar10,
    load_idx_dataset,
    load_nmnist,
    normalize_cifar10,
    normalize_mnist,
    random_crop_flip,
    read_cifar_batch,
    read_idx,
    read_nmnist_events,
    registry,
    verify_dataset_files,
    write_idx,
)
from snnsim.datasets.errors import DatasetNotFoundError
from snnsim.datasets.transforms import CIFAR10_BLACK

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_search(monkeypatch, tmp_path_factory):
    """No test sees the developer's data: env var unset, repo/system roots empty."""
    empty = tmp_path_factory.mktemp("empty")
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", empty / "repo-data")
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", empty / "system")


# ----------------------------------------------------------------------------- IDX

def idx_bytes(arr: np.ndarray, code: int, be_dtype: str) -> bytes:
    """IDX encoding written by hand from the format description."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(be_dtype).tobytes()


def write_split(directory: Path, split: str, images, labels, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    files = [(f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)]
    for name, arr in files:
        data = idx_bytes(np.asarray(arr, np.uint8), 0x08, "u1")
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def small_mnist(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip_images_and_labels(tmp_path, gz):
    images, labels = small_mnist()
    suffix = ".gz" if gz else ""
    pi, pl = tmp_path / f"img{suffix}", tmp_path / f"lbl{suffix}"
    for p, arr in ((pi, images), (pl, labels)):
        data = idx_bytes(arr, 0x08, "u1")
        p.write_bytes(gzip.compress(data) if gz else data)
    assert (pi.read_bytes()[:4] == b"\x00\x00\x08\x03") != gz
    got_i, got_l = read_idx(pi), read_idx(pl)
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 28, 28)
    assert np.array_equal(got_i, images) and np.array_equal(got_l, labels)


def test_read_idx_big_endian_dtypes(tmp_path):
    a = np.array([[1, -2, 300], [-32768, 32767, 0]], dtype=np.int16)
    f = np.array([1.5, -2.25, 1e-3], dtype=np.float32)
    (tmp_path / "a").write_bytes(idx_bytes(a, 0x0B, ">i2"))
    (tmp_path / "f").write_bytes(idx_bytes(f, 0x0D, ">f4"))
    assert np.array_equal(read_idx(tmp_path / "a"), a)
    assert read_idx(tmp_path / "a").dtype.isnative
    assert np.array_equal(read_idx(tmp_path / "f"), f)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
       dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]), gz=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_write_read_idx_roundtrip(tmp_path_factory, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / ("x.idx" + (".gz" if gz else ""))
    write_idx(path, arr)
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    code = {"u1": 8, "i1": 9, "i2": 11, "i4": 12, "f4": 13, "f8": 14}[dtype]
    assert raw == idx_bytes(arr, code, ">" + dtype)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == tuple(shape)
    assert np.array_equal(back, arr)


def _good_idx():
    return idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), 0x08, "u1")


@pytest.mark.parametrize("case, data, match", [
    ("truncated", _good_idx()[:-1], "truncated payload"),
    ("trailing", _good_idx() + b"\x00", "trailing bytes"),
    ("badmagic", b"\x12\x34" + _good_idx()[2:], "bad IDX magic"),
    ("badcode", b"\x00\x00\x07\x03" + _good_idx()[4:], "unknown dtype code 0x07"),
    ("zerodims", b"\x00\x00\x08\x00", "zero dimensions"),
    ("shortheader", _good_idx()[:9], "truncated IDX header"),
    ("tiny", b"\x00\x00", "truncated IDX header"),
])
def test_read_idx_corruption(tmp_path, case, data, match):
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_read_idx_corrupt_gzip(tmp_path):
    gz = bytearray(gzip.compress(_good_idx() * 1))
    bad_crc = bytes(gz[:-8]) + bytes(b ^ 0xFF for b in gz[-8:-4]) + bytes(gz[-4:])
    cases = {
        "crc.gz": bad_crc,
        "cut.gz": bytes(gz[: len(gz) // 2]),
        "notgzip.gz": _good_idx(),
        "garbage.gz": bytes(gz) + b"garbage!",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DatasetError) as exc:
            read_idx(path)
        assert str(path) in str(exc.value), name
    # the gzip payload itself truncated: decompresses fine, IDX check fires
    path = tmp_path / "short-payload.gz"
    path.write_bytes(gzip.compress(_good_idx()[:-3]))
    with pytest.raises(DatasetError, match="truncated payload"):
        read_idx(path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_from_data_dir(tmp_path, name, gz):
    tr_i, tr_l = small_mnist(5, seed=1)
    te_i, te_l = small_mnist(3, seed=2)
    write_split(tmp_path / name, "train", tr_i, tr_l, gz=gz)  # <data_dir>/<name>/
    write_split(tmp_path / name, "test", te_i, te_l, gz=gz)
    x, y = load_idx_dataset(name, "train", data_dir=tmp_path, strict=False)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28) and y.dtype == np.int64
    assert np.array_equal(x, tr_i) and np.array_equal(y, tr_l)
    x, y = load_idx_dataset(name, "test", data_dir=tmp_path / name, strict=False)
    assert np.array_equal(x, te_i) and np.array_equal(y, te_l)
    with pytest.raises(DatasetError, match="expected 10000"):
        load_idx_dataset(name, "test", data_dir=tmp_path)


def test_load_idx_dataset_validation(tmp_path):
    imgs, labels = small_mnist(4)
    write_split(tmp_path / "count", "test", imgs, labels[:3])
    with pytest.raises(DatasetError, match="count mismatch") as exc:
        load_idx_dataset("mnist", "test", data_dir=tmp_path / "count", strict=False)
    assert "t10k-images-idx3-ubyte" in str(exc.value) and "t10k-labels" in str(exc.value)

    write_split(tmp_path / "dims", "test", imgs[:, :, :27], labels)
    with pytest.raises(DatasetError, match="wrong dimensions") as exc:
        load_idx_dataset("mnist", "test", data_dir=tmp_path / "dims", strict=False)
    assert "t10k-images-idx3-ubyte" in str(exc.value)

    write_split(tmp_path / "lab", "test", imgs, np.array([0, 1, 10, 2]))
    with pytest.raises(DatasetError, match="out of range") as exc:
        load_idx_dataset("mnist", "test", data_dir=tmp_path / "lab", strict=False)
    assert "t10k-labels-idx1-ubyte" in str(exc.value)

    with pytest.raises(DatasetError, match="split"):
        load_idx_dataset("mnist", "validation", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="not an IDX dataset"):
        load_idx_dataset("cifar10", "test", data_dir=tmp_path)


def test_idx_search_order(tmp_path, monkeypatch):
    a_i, a_l = small_mnist(2, seed=3)
    b_i, b_l = small_mnist(3, seed=4)
    c_i, c_l = small_mnist(4, seed=5)
    write_split(tmp_path / "explicit", "test", a_i, a_l)
    write_split(tmp_path / "env" / "mnist", "test", b_i, b_l, gz=True)
    write_split(tmp_path / "sys" / "mnist", "test", c_i, c_l, gz=True)
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", tmp_path / "sys")
    assert load_idx_dataset("mnist", "test", strict=False)[0].shape[0] == 4
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "env"))
    assert load_idx_dataset("mnist", "test", strict=False)[0].shape[0] == 3
    x, _ = load_idx_dataset("mnist", "test", data_dir=tmp_path / "explicit", strict=False)
    assert np.array_equal(x, a_i)
    # raw preferred over .gz in the same directory
    write_split(tmp_path / "env" / "mnist", "test", c_i, c_l, gz=False)
    assert load_idx_dataset("mnist", "test", strict=False)[0].shape[0] == 4


@pytest.mark.parametrize("name, hint", [
    ("fashion-mnist", "sudo apt-get install dataset-fashion-mnist"),
    ("mnist", "python3 -m snnsim.datasets.download mnist --dest data/mnist"),
])
def test_idx_not_found_lists_places_and_how_to_get(tmp_path, monkeypatch, name, hint):
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "envdir"))
    with pytest.raises(DatasetError) as exc:
        load_idx_dataset(name, "train", data_dir=tmp_path / "mine")
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, DatasetNotFoundError)
    for place in (tmp_path / "mine", tmp_path / "mine" / name):
        assert f"- {place}\n" in msg
    for place in (tmp_path / "envdir", registry.REPO_DATA_ROOT / name,   # an explicit data_dir
                  registry.SYSTEM_DATA_ROOT / name):                     # is the only place
        assert f"- {place}\n" not in msg
    assert hint in msg and "train-images-idx3-ubyte" in msg


def test_the_download_hint_names_the_interpreter_running(tmp_path, monkeypatch):
    """The hint is a command to copy: it names the Python now running (here one outside
    the PATH, so by its absolute path), not the system's ``python3``, which has none of
    snnsim's dependencies."""
    python = tmp_path / "env" / "bin" / "python3"
    monkeypatch.setattr(sys, "executable", str(python))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(DatasetError) as exc:
        load_idx_dataset("mnist", "train", data_dir=tmp_path / "mine")
    assert f"{python} -m snnsim.datasets.download mnist --dest data/mnist" in str(exc.value)


# --------------------------------------------------------------------------- CIFAR

def _s(b: bytes) -> bytes:  # Python 2 str opcodes (SHORT_BINSTRING / BINSTRING)
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _i(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def py2_cifar_pickle(data: np.ndarray, labels) -> bytes:
    """A batch pickled as the official files are: Python 2 cPickle, protocol 2, str
    keys (-> bytes with encoding='bytes'), data a numpy uint8 array (N, 3072)."""
    n = data.shape[0]
    o = b"\x80\x02}(" + _s(b"batch_label") + _s(b"training batch 1 of 5")
    o += (_s(b"data") + b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
          + _i(0) + b"\x85" + _s(b"b") + b"\x87R")
    o += (b"(" + _i(1) + _i(n) + _i(3072) + b"\x86" + b"cnumpy\ndtype\n" + _s(b"u1")
          + b"\x89\x88\x87R" + b"(" + _i(3) + _s(b"|") + b"NNN" + _i(-1) + _i(-1) + _i(0)
          + b"tb" + b"\x89" + _s(data.tobytes()) + b"tb")
    o += _s(b"labels") + b"](" + b"".join(_i(int(v)) for v in labels) + b"e"
    o += _s(b"filenames") + b"](" + b"".join(_s(b"img%d.png" % k) for k in range(n)) + b"e"
    return o + b"u."


def make_cifar_dir(root: Path, sizes=(2, 3, 1, 2, 2), test=3, seed=0):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(sizes) + [test]):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        (d / name).write_bytes(py2_cifar_pickle(data, labels))
        out[name] = (data, labels)
    return out


def test_cifar_official_format_roundtrip(tmp_path):
    batches = make_cifar_dir(tmp_path / "cifar10")
    x, y = load_cifar10("train", data_dir=tmp_path, strict=False)
    data = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{k}"][1] for k in range(1, 6)])
    assert x.dtype == np.uint8 and x.shape == (10, 3, 32, 32) and y.dtype == np.int64
    assert np.array_equal(y, labels)
    # channel layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    assert np.array_equal(x[:, 0], data[:, :1024].reshape(-1, 32, 32))
    assert np.array_equal(x[:, 2, 5, 7], data[:, 2048 + 5 * 32 + 7])
    xt, yt = load_cifar10("test", data_dir=tmp_path / "cifar10" / "cifar-10-batches-py",
                          strict=False)
    assert np.array_equal(xt.reshape(3, -1), batches["test_batch"][0])
    with pytest.raises(DatasetError, match="expected 50000"):
        load_cifar10("train", data_dir=tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python3_pickles(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(tmp_path / "batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": [3, 9]}, f, protocol=protocol)
    x, y = read_cifar_batch(tmp_path / "batch")
    assert np.array_equal(x.reshape(2, -1), data) and y.tolist() == [3, 9]


class _Evil:
    def __reduce__(self):
        return (Path, ("/should/not/be/built",))


def test_cifar_restricted_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "evil_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match="not allowed") as exc:
        read_cifar_batch(path)
    assert str(path) in str(exc.value)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


@pytest.mark.parametrize("case, make, match", [
    ("shape", lambda p: _dump(p, {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}),
     "wrong dimensions"),
    ("dtype", lambda p: _dump(p, {b"data": np.zeros((2, 3072), np.int16), b"labels": [0, 1]}),
     "wrong dimensions"),
    ("count", lambda p: _dump(p, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
     "count mismatch"),
    ("range", lambda p: _dump(p, {b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}),
     "out of range"),
    ("nokey", lambda p: _dump(p, {b"data": np.zeros((1, 3072), np.uint8)}), "lacks key"),
    ("notdict", lambda p: _dump(p, [1, 2]), "must be a pickled dict"),
    ("truncated", lambda p: p.write_bytes(py2_cifar_pickle(np.zeros((2, 3072), np.uint8),
                                                           [1, 2])[:-40]),
     "not a valid CIFAR batch"),
    ("garbage", lambda p: p.write_bytes(b"this is not a pickle"), "not a valid CIFAR batch"),
])
def test_cifar_bad_batches(tmp_path, case, make, match):
    path = tmp_path / f"batch_{case}"
    make(path)
    with pytest.raises(DatasetError, match=match) as exc:
        read_cifar_batch(path)
    assert str(path) in str(exc.value)


def test_cifar_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_cifar10("test", data_dir=tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "test_batch" in msg
    assert "python3 -m snnsim.datasets.download cifar10" in msg


# -------------------------------------------------------------------------- N-MNIST

def pack_event(x: int, y: int, p: int, ts: int) -> bytes:
    """One 40-bit event assembled bit by bit: x[39:32] y[31:24] p[23] ts[22:0]."""
    assert 0 <= ts < 2**23 and p in (0, 1)
    return ((x << 32) | (y << 24) | (p << 23) | ts).to_bytes(5, "big")


def write_events(path: Path, events) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(pack_event(*e) for e in events))
    return path


def test_nmnist_decode_full_timestamp_and_polarity(tmp_path):
    path = write_events(tmp_path / "a.bin", [(33, 0, 1, 0x7FFFFF), (0, 33, 0, 0x7FFFFF),
                                             (5, 6, 1, 0), (1, 2, 0, 0x012345)])
    assert path.read_bytes()[:10] == bytes([33, 0, 0xFF, 0xFF, 0xFF, 0, 33, 0x7F, 0xFF, 0xFF])
    ev = read_nmnist_events(path)
    assert ev["x"].tolist() == [33, 0, 5, 1] and ev["y"].tolist() == [0, 33, 6, 2]
    assert ev["p"].tolist() == [1, 0, 1, 0]
    assert ev["ts"].tolist() == [0x7FFFFF, 0x7FFFFF, 0, 0x012345]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, 1),
                          st.integers(0, 2**23 - 1)), max_size=50))
def test_nmnist_events_roundtrip(tmp_path_factory, events):
    path = write_events(tmp_path_factory.mktemp("ev") / "e.bin", events)
    ev = read_nmnist_events(path)
    assert [tuple(int(v) for v in e) for e in ev.tolist()] == events
    assert encode_nmnist_events(ev) == path.read_bytes()


@pytest.mark.parametrize("data, match", [
    (pack_event(1, 2, 0, 3) + b"\x00\x00", "not a multiple of 5"),
    (pack_event(1, 2, 0, 3) + pack_event(34, 2, 0, 3), "outside the 34x34"),
    (pack_event(1, 200, 1, 3), "outside the 34x34"),
])
def test_nmnist_bad_files(tmp_path, data, match):
    path = tmp_path / "00001.bin"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as exc:
        read_nmnist_events(path)
    assert str(path) in str(exc.value)


def _events(rows):
    ev = np.zeros(len(rows), dtype=[("x", "u1"), ("y", "u1"), ("p", "u1"), ("ts", "u4")])
    for k, r in enumerate(rows):
        ev[k] = r
    return ev


def test_bin_events_edges():
    T, bin_us = 5, 3000
    ev = _events([(1, 2, 0, 0), (3, 4, 1, bin_us * (T - 1) + 1), (5, 6, 1, bin_us * T),
                  (7, 8, 0, bin_us - 1), (9, 9, 1, bin_us), (7, 8, 0, 10)])
    fr = bin_events(ev, T, bin_us)
    assert fr.shape == (T, 2, 34, 34) and fr.dtype == np.float32
    assert fr[0, 0, 2, 1] == 1                 # ts=0 -> frame 0, OFF channel, [y, x]
    assert fr[T - 1, 1, 4, 3] == 1             # last bin, ON channel
    assert fr[0, 0, 8, 7] == 1                 # two events, still 1
    assert fr[1, 1, 9, 9] == 1                 # ts = bin_us starts frame 1
    assert fr.sum() == 4                        # ts = T*bin_us dropped
    assert set(np.unique(fr)) <= {0.0, 1.0}
    d = {"x": np.array([0]), "y": np.array([0]), "p": np.array([1]), "ts": np.array([5])}
    assert bin_events(d, 2, 3)[1, 1, 0, 0] == 1 and bin_events(d, 2, 3).sum() == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, 1),
                          st.integers(0, 40000)), max_size=40),
       st.integers(1, 12), st.integers(1, 5000))
def test_bin_events_matches_reference(events, n_steps, bin_us):
    ref = np.zeros((n_steps, 2, 34, 34), np.float32)
    for x, y, p, ts in events:
        if ts // bin_us < n_steps:
            ref[ts // bin_us, p, y, x] = 1
    assert np.array_equal(bin_events(_events(events), n_steps, bin_us), ref)


def test_load_nmnist_layout(tmp_path):
    root = tmp_path / "nmnist"
    write_events(root / "Train" / "0" / "00002.bin", [(0, 0, 0, 0), (1, 1, 1, 3500)])
    write_events(root / "Train" / "0" / "00001.bin", [(2, 2, 1, 100)])
    write_events(root / "Train" / "7" / "00003.bin", [(33, 33, 0, 6001)])
    write_events(root / "Test" / "9" / "00001.bin", [])
    (root / "Train" / "7" / "notes.txt").write_text("ignored")
    frames, labels = load_nmnist("train", 3, data_dir=tmp_path, strict=False)
    assert frames.shape == (3, 3, 2, 34, 34) and frames.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 7]
    assert frames[0, 0, 1, 2, 2] == 1 and frames[0].sum() == 1          # 00001.bin first
    assert frames[1, 0, 0, 0, 0] == 1 and frames[1, 1, 1, 1, 1] == 1
    assert frames[2, 2, 0, 33, 33] == 1 and frames[2].sum() == 1
    ds = NMNISTDataset("test", 4, data_dir=root, strict=False)
    assert len(ds) == 1 and ds[0][1] == 9 and ds[0][0].dtype == np.float32
    assert ds[0][0].shape == (4, 2, 34, 34) and ds[0][0].sum() == 0
    with pytest.raises(DatasetError, match="expected 10000"):
        NMNISTDataset("test", 4, data_dir=root)
    (root / "Test" / "9" / "00002.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DatasetError, match="00002.bin"):
        load_nmnist("test", 4, data_dir=root, strict=False)


def test_nmnist_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_nmnist("train", 5, data_dir=tmp_path)
    assert str(tmp_path / "nmnist" / "Train") in str(exc.value)
    assert "Train.zip" in str(exc.value)


# ------------------------------------------------------------------------ transforms

def test_normalize_mnist_constants():
    x = np.array([[0, 255], [128, 1]], dtype=np.uint8)
    out = normalize_mnist(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, (x / 255.0 - 0.1307) / 0.3081, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[0, 0], -0.1307 / 0.3081, rtol=1e-6)


def test_normalize_cifar10_constants():
    x = np.zeros((2, 3, 4, 4), np.uint8)
    x[:, :, 1, 1] = 255
    out = normalize_cifar10(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
    np.testing.assert_allclose(out[0, :, 0, 0], -mean / std, rtol=1e-6)
    np.testing.assert_allclose(out[1, :, 1, 1], (1 - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(CIFAR10_BLACK, -mean / std, rtol=1e-12)


ALL_PIXELS = np.arange(256, dtype=np.uint8).reshape(16, 16)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def test_normalize_float32_is_the_old_float32_computation_bit_for_bit():
    # the float32 path as it always was, written out here: float32 operands throughout
    f = np.float32
    old_mnist = (np.asarray(ALL_PIXELS, f) / f(255.0) - f(0.1307)) / f(0.3081)
    for out in (normalize_mnist(ALL_PIXELS), normalize_mnist(ALL_PIXELS, np.float32)):
        assert out.dtype == np.float32 and np.array_equal(out, old_mnist)
    img = np.stack([ALL_PIXELS, ALL_PIXELS[::-1], ALL_PIXELS.T])[None]       # (1, 3, 16, 16)
    mean = np.asarray(CIFAR_MEAN, f)[:, None, None]
    std = np.asarray(CIFAR_STD, f)[:, None, None]
    old_cifar = (np.asarray(img, f) / f(255.0) - mean) / std
    for out in (normalize_cifar10(img), normalize_cifar10(img, "float32")):
        assert out.dtype == np.float32 and np.array_equal(out, old_cifar)


def test_normalize_float64_is_a_float64_computation():
    # float64 from the pixels on, exactly; not the float32 result widened (differs by ~1e-7)
    want = (ALL_PIXELS.astype(np.float64) / 255.0 - 0.1307) / 0.3081
    out = normalize_mnist(ALL_PIXELS, np.float64)
    assert out.dtype == np.float64 and np.array_equal(out, want)
    assert np.abs(normalize_mnist(ALL_PIXELS).astype(np.float64) - want).max() > 1e-8
    img = np.stack([ALL_PIXELS, ALL_PIXELS[::-1], ALL_PIXELS.T])[None]
    mean = np.asarray(CIFAR_MEAN)[:, None, None]
    std = np.asarray(CIFAR_STD)[:, None, None]
    out = normalize_cifar10(img, np.float64)
    assert out.dtype == np.float64 and np.array_equal(out, (img / 255.0 - mean) / std)


def test_random_crop_flip_reproducible_and_shape():
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    a = random_crop_flip(x, np.random.default_rng(42))
    b = random_crop_flip(x, np.random.default_rng(42))
    c = random_crop_flip(x, np.random.default_rng(43))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_random_crop_flip_semantics():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, (12, 3, 32, 32)).astype(np.float32)  # no zeros in the image
    assert np.array_equal(random_crop_flip(x, rng, pad=0, p_flip=1.0), x[..., ::-1])
    assert np.array_equal(random_crop_flip(x, rng, pad=0, p_flip=0.0), x)
    # reference: the same draws, one image at a time
    out = random_crop_flip(x, np.random.default_rng(7), pad=4)
    r = np.random.default_rng(7)
    offs, flips = r.integers(0, 9, size=(12, 2)), r.random(12) < 0.5
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for k in range(12):
        want = padded[k, :, offs[k, 0]:offs[k, 0] + 32, offs[k, 1]:offs[k, 1] + 32]
        assert np.array_equal(out[k], want[..., ::-1] if flips[k] else want)
    assert flips.any() and (~flips).any() and (offs != 4).any()
    # padding before normalising == padding with the black value after it
    raw = rng.integers(0, 256, (4, 3, 32, 32)).astype(np.uint8)
    a = normalize_cifar10(random_crop_flip(raw, np.random.default_rng(3)))
    b = random_crop_flip(normalize_cifar10(raw), np.random.default_rng(3), fill=CIFAR10_BLACK)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------- registry

def test_registry_names_and_counts():
    assert registry.canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert registry.canonical_name("cifar-10") == "cifar10"
    assert registry.expected_count("mnist", "train") == 60000
    assert registry.expected_count("cifar10", "train") == 50000
    with pytest.raises(DatasetError, match="unknown dataset"):
        registry.get_spec("imagenet")
    for e in registry.get_spec("fashion-mnist").files:
        assert e.size is not None and len(e.sha256) == 64 and len(e.gz_md5) == 32


def test_verify_dataset_files_reports_problems(tmp_path):
    d = tmp_path / "fashion-mnist"
    write_split(d, "test", *small_mnist(3))
    with pytest.raises(DatasetError) as exc:
        verify_dataset_files("fashion-mnist", tmp_path)
    msg = str(exc.value)
    assert "t10k-images-idx3-ubyte: decompressed size 2368 bytes, expected 7840016" in msg
    assert "train-images-idx3-ubyte[.gz]: missing" in msg


def test_verify_entry_sha256(tmp_path):
    data = _good_idx()
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(data))
    import hashlib
    ok = registry.FileEntry("x", "test", "images", "f", 3, size=len(data),
                            sha256=hashlib.sha256(data).hexdigest())
    assert registry.check_entry(ok, path).checks == ("size", "sha256")
    bad = registry.FileEntry("x", "test", "images", "f", 3, size=len(data), sha256="0" * 64)
    with pytest.raises(DatasetError, match="sha256") as exc:
        registry.check_entry(bad, path)
    assert str(path) in str(exc.value)


# ------------------------------------------------------------- real Fashion-MNIST

@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(),
                    reason="Fashion-MNIST not installed (sudo apt-get install "
                           "dataset-fashion-mnist puts it in /usr/share/datasets/fashion-mnist)")
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", FASHION_SYSTEM_DIR.parent)
    x, y = load_idx_dataset("fashion-mnist", "test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(y, minlength=10), np.full(10, 1000))
    checks = verify_dataset_files("fashion-mnist", FASHION_SYSTEM_DIR)
    assert len(checks) == 4
    assert all({"size", "sha256"} <= set(c.checks) for c in checks)
