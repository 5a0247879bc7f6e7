"""Data files checked before use (issue 24).

Each test failed on the code before the fix:

- an IDX header declaring 0xFFFFFFFF x 28 x 28 (raw or gzipped): MemoryError; 255
  dimensions: OverflowError                                 -> test_idx_*
- a CIFAR label list nested 8 levels deep: 10 s and 1 GB before the refusal;
  a batch file that is huge or a FIFO                       -> test_cifar_*
- an N-MNIST event file that is a FIFO (a hang) or huge     -> test_nmnist_*
- $SNNSIM_DATA_DIR missing the train labels: taken from the system's copy while
  the test split came from the variable's folder            -> test_one_copy_*
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import procs
import pytest
from test_faults import assert_one_line_error, main_status
from test_train import tiny_args, write_cifar10, write_fashion_mnist, write_nmnist

from snnsim.datasets import registry
from snnsim.datasets.cifar import find_cifar10_dir, read_cifar_batch
from snnsim.datasets.errors import DatasetError
from snnsim.datasets.idx import find_idx_files, read_idx
from snnsim.datasets.nmnist import find_nmnist_dir, read_nmnist_events

REPO = Path(__file__).resolve().parents[1]
#: Peak traced memory a refused file may cost (its header and a few buffers).
SMALL_PEAK = 4 << 20


def refused_cheaply(read, path, match: str, seconds: float = 2.0):
    """``read(path)`` raises DatasetError matching ``match`` and naming the file, within
    ``seconds`` and :data:`SMALL_PEAK` bytes of traced memory."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DatasetError, match=match) as exc:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < seconds
    assert peak < SMALL_PEAK, peak
    assert str(path) in str(exc.value)


# --- IDX ----------------------------------------------------------------------------------
HUGE_IMAGES = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0xFFFFFFFF, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_huge_dimensions_refused_before_allocating(tmp_path, gz):
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    body = HUGE_IMAGES + bytes(28 * 28 * 3)
    path.write_bytes(gzip.compress(body) if gz else body)
    refused_cheaply(read_idx, path, "truncated payload.*4294967295, 28, 28")


@pytest.mark.parametrize("first", [0xFFFFFFFF, 0])
def test_idx_255_dimensions_is_a_dataset_error(tmp_path, first):
    path = tmp_path / "x-idx"
    path.write_bytes(bytes([0, 0, 0x08, 255]) + struct.pack(">255I", first, *[2] * 254))
    refused_cheaply(read_idx, path, "dimensions")


def test_idx_gzip_declaring_more_than_deflate_can_hold_is_refused_before_reading(tmp_path):
    """A header within the 1032:1 bound is read in chunks, and a short stream is
    truncated; one beyond it is refused at once."""
    path = tmp_path / "x-idx.gz"
    n = 200_000                                   # 157 MB of images in a file of 150 bytes
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", n, 28, 28)))
    refused_cheaply(read_idx, path, "decompresses to at most")


def test_idx_huge_header_through_the_command_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", tmp_path / "none")
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", tmp_path / "none")
    data = write_fashion_mnist(tmp_path / "data")
    (data / "fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(HUGE_IMAGES + bytes(100)))
    code, _, err = main_status(tiny_args(data, tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "train", "train-images-idx3-ubyte.gz", "truncated payload")
    assert not (tmp_path / "run").exists()


# --- CIFAR-10 -----------------------------------------------------------------------------
def nested_labels(levels: int, fan_out: int = 10):
    """A list nested ``levels`` deep of ``fan_out`` references to one list each: a
    pickle of a few hundred bytes holding fan_out**levels labels."""
    inner = [0] * fan_out
    for _ in range(levels - 1):
        inner = [inner] * fan_out
    return inner


def test_cifar_nested_label_list_refused_at_once(tmp_path):
    path = tmp_path / "data_batch_1"
    labels = nested_labels(8)
    path.write_bytes(pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": labels},
                                  protocol=2))
    assert path.stat().st_size < 40_000
    refused_cheaply(read_cifar_batch, path, "flat list of ints", seconds=1.0)


@pytest.mark.parametrize("labels, match", [
    ([0, 1, True], "label 2 is a bool"), ([0, 1.0, 2], "label 1 is a float"),
    ([0, 1, 10**30], "out of range"), ("abc", "got str"), ({0: 1, 1: 2, 2: 3}, "got dict"),
])
def test_cifar_labels_must_be_ints(tmp_path, labels, match):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": labels},
                                  protocol=2))
    with pytest.raises(DatasetError, match=match):
        read_cifar_batch(path)


def test_cifar_huge_batch_file_refused_without_reading(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:                 # sparse: no disk used
        f.truncate((1 << 30) + 1)
    refused_cheaply(read_cifar_batch, path, "more than a CIFAR batch")


def _reads_in_a_child(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a child Python (a read that hangs is killed); its stdout."""
    proc = procs.run([sys.executable, "-c", code], timeout,
                     env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("reader", ["cifar", "nmnist", "idx"])
def test_a_fifo_is_refused_not_waited_on(tmp_path, reader):
    fifo = tmp_path / {"cifar": "data_batch_1", "nmnist": "00001.bin", "idx": "x-idx"}[reader]
    os.mkfifo(fifo)
    call = {"cifar": "from snnsim.datasets.cifar import read_cifar_batch as read",
            "nmnist": "from snnsim.datasets.nmnist import read_nmnist_events as read",
            "idx": "from snnsim.datasets.idx import read_idx as read"}[reader]
    out = _reads_in_a_child(f"{call}\nfrom snnsim.datasets.errors import DatasetError\n"
                            f"try:\n    read({str(fifo)!r})\n"
                            f"except DatasetError as exc:\n    print(exc)\n", timeout=30)
    assert "not a regular file" in out


# --- N-MNIST ------------------------------------------------------------------------------
def test_nmnist_huge_event_file_refused_without_reading(tmp_path):
    path = tmp_path / "00001.bin"
    with open(path, "wb") as f:
        f.truncate(100 << 20)
    refused_cheaply(read_nmnist_events, path, "more than an N-MNIST sample")


# --- one copy per dataset -----------------------------------------------------------------
@pytest.fixture
def system_copy(tmp_path, monkeypatch):
    """A complete copy where the search path looks last (the system's), none elsewhere."""
    system = tmp_path / "system"
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", system)
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", tmp_path / "no-repo-copy")
    return system


def test_one_copy_idx_env_folder_missing_train_labels(tmp_path, monkeypatch, capsys,
                                                      system_copy):
    write_fashion_mnist(system_copy, seed=1)
    env = write_fashion_mnist(tmp_path / "env", seed=2)
    (env / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(registry.ENV_VAR, str(env))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte"):
        find_idx_files("fashion-mnist", "train")
    args = [a for a in tiny_args("unused", tmp_path / "run") if a not in ("--data-dir", "unused")]
    code, _, err = main_status(args, capsys)
    assert_one_line_error(code, err, "train", str(env / "fashion-mnist"), "train-labels")
    assert not (tmp_path / "run").exists()
    # the test split alone reads as before, from the variable's folder
    assert find_idx_files("fashion-mnist", "test")[0].parent == env / "fashion-mnist"


def test_one_copy_cifar_and_nmnist(tmp_path, monkeypatch, system_copy):
    write_cifar10(system_copy)
    write_nmnist(system_copy)
    env = tmp_path / "env"
    write_cifar10(env)
    (env / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    write_nmnist(env)
    shutil.rmtree(env / "nmnist" / "Test")
    monkeypatch.setenv(registry.ENV_VAR, str(env))
    with pytest.raises(DatasetError, match="data_batch_3"):
        find_cifar10_dir("train")
    assert find_cifar10_dir("test").parent == env / "cifar10"
    with pytest.raises(DatasetError, match="Test/"):
        find_nmnist_dir("test")
    assert find_nmnist_dir("train").parent == env / "nmnist"
