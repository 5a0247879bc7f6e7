"""Downloader against a local HTTP server on 127.0.0.1 (ephemeral port, loopback only)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from snnsim.datasets import DatasetError, DownloadError, download, load_cifar10, load_idx_dataset, registry
from snnsim.datasets.registry import DatasetSpec, FileEntry

REPO = Path(__file__).resolve().parents[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/srv`` on 127.0.0.1:<ephemeral>; yields (dir, base_url)."""
    root = tmp_path / "srv"
    root.mkdir()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(d: Path):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_download_file_success(server, tmp_path):
    root, url = server
    payload = bytes(range(256)) * 1000
    (root / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    got = download.download_file(f"{url}/blob.bin", dest, progress=False, timeout=10,
                                 md5=hashlib.md5(payload).hexdigest(),
                                 sha256=hashlib.sha256(payload).hexdigest())
    assert got == dest and dest.read_bytes() == payload
    assert _leftovers(dest.parent) == []


def test_download_file_checksum_mismatch(server, tmp_path):
    root, url = server
    (root / "blob.bin").write_bytes(b"hello")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.download_file(f"{url}/blob.bin", dest, md5="0" * 32, progress=False,
                               timeout=10)
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_download_file_http_404(server, tmp_path):
    _, url = server
    dest = tmp_path / "out" / "missing.bin"
    with pytest.raises(DownloadError, match="404") as exc:
        download.download_file(f"{url}/missing.bin", dest, progress=False, timeout=10)
    assert "missing.bin" in str(exc.value)
    assert not dest.exists() and _leftovers(dest.parent) == []


def _idx(arr):
    arr = np.asarray(arr, np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) \
        + arr.tobytes()


def _fake_idx_spec(root: Path, name: str, wrong_gz_md5=False, with_sha=False):
    """Serve 4 small gzipped IDX files and return a spec describing them."""
    rng = np.random.default_rng(0)
    entries = []
    for fname, n in (("train-images-idx3-ubyte", 4), ("train-labels-idx1-ubyte", 4),
                     ("t10k-images-idx3-ubyte", 2), ("t10k-labels-idx1-ubyte", 2)):
        shape = (n, 28, 28) if "images" in fname else (n,)
        raw = _idx(rng.integers(0, 10, shape))
        gz = gzip.compress(raw, mtime=0)
        (root / (fname + ".gz")).write_bytes(gz)
        split = "train" if fname.startswith("train") else "test"
        entries.append(FileEntry(
            name, split, "images" if "images" in fname else "labels", fname, n,
            size=len(raw), sha256=hashlib.sha256(raw).hexdigest() if with_sha else None,
            url="http://upstream.invalid/" + fname + ".gz",
            gz_md5="0" * 32 if wrong_gz_md5 else hashlib.md5(gz).hexdigest()))
    return DatasetSpec(name=name, counts={"train": 4, "test": 2}, files=tuple(entries))


def test_download_idx_dataset_cli(server, tmp_path, monkeypatch, capsys):
    root, url = server
    monkeypatch.setitem(registry.DATASETS, "mnist", _fake_idx_spec(root, "mnist"))
    dest = tmp_path / "data" / "mnist"
    rc = download.main(["mnist", "--dest", str(dest), "--base-url", url + "/",
                        "--no-progress", "--timeout", "10"])
    assert rc == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        e.filename + ".gz" for e in registry.DATASETS["mnist"].files)
    x, y = load_idx_dataset("mnist", "train", data_dir=dest, strict=False)
    assert x.shape == (4, 28, 28) and y.shape == (4,)
    # second run: files already there and verified, nothing fetched
    for f in root.iterdir():
        f.unlink()
    assert download.main(["mnist", "--dest", str(dest), "--base-url", url,
                          "--no-progress"]) == 0
    assert "already present" in capsys.readouterr().err


def test_download_idx_checksum_mismatch_cli(server, tmp_path, monkeypatch, capsys):
    root, url = server
    monkeypatch.setitem(registry.DATASETS, "mnist",
                        _fake_idx_spec(root, "mnist", wrong_gz_md5=True))
    dest = tmp_path / "data" / "mnist"
    rc = download.main(["mnist", "--dest", str(dest), "--base-url", url, "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "train-images-idx3-ubyte.gz" in err
    assert list(dest.iterdir()) == []  # nothing under a final name, no temp file


def test_download_recompressed_mirror_accepted_by_sha256(server, tmp_path, monkeypatch):
    root, url = server
    monkeypatch.setitem(registry.DATASETS, "fashion-mnist",
                        _fake_idx_spec(root, "fashion-mnist", wrong_gz_md5=True,
                                       with_sha=True))
    paths = download.download_dataset("fashion-mnist", tmp_path / "fm", url, progress=False)
    assert len(paths) == 4 and all(p.is_file() for p in paths)


def test_download_http_404_cli(server, tmp_path, monkeypatch, capsys):
    root, url = server
    monkeypatch.setitem(registry.DATASETS, "mnist", _fake_idx_spec(root, "mnist"))
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    dest = tmp_path / "mnist"
    assert download.main(["mnist", "--dest", str(dest), "--base-url", url,
                          "--no-progress"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists() and _leftovers(dest) == []


def _tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fake_cifar(root: Path, members):
    import pickle

    blob = _tar_gz(members)
    (root / "cifar-10-python.tar.gz").write_bytes(blob)
    files = []
    for name, data in members:
        base = name.rsplit("/", 1)[-1]
        if base.startswith(("data_batch", "test_batch")):
            files.append(FileEntry("cifar10", "test" if base == "test_batch" else "train",
                                   "batch", name, pickle.loads(data)[b"data"].shape[0],
                                   md5=hashlib.md5(data).hexdigest()))
    return DatasetSpec(name="cifar10", counts={"train": 5, "test": 1}, files=tuple(files),
                       archive_url="http://upstream.invalid/cifar-10-python.tar.gz",
                       archive_md5=hashlib.md5(blob).hexdigest())


def _batch(n, seed):
    import pickle

    rng = np.random.default_rng(seed)
    return pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, n).tolist()}, protocol=2)


def test_download_cifar10(server, tmp_path, monkeypatch):
    root, url = server
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    members = [(f"cifar-10-batches-py/{n}", _batch(1, k)) for k, n in enumerate(names)]
    monkeypatch.setitem(registry.DATASETS, "cifar10", _fake_cifar(root, members))
    dest = tmp_path / "cifar10"
    download.download_dataset("cifar10", dest, url, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py"]
    x, y = load_cifar10("train", data_dir=dest, strict=False)
    assert x.shape == (5, 3, 32, 32) and y.shape == (5,)


def test_download_cifar10_rejects_path_traversal(server, tmp_path, monkeypatch):
    root, url = server
    members = [("cifar-10-batches-py/test_batch", _batch(1, 0)), ("../evil.txt", b"x")]
    monkeypatch.setitem(registry.DATASETS, "cifar10", _fake_cifar(root, members))
    dest = tmp_path / "cifar10"
    with pytest.raises(DownloadError, match="refusing archive member"):
        download.download_dataset("cifar10", dest, url, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "cifar-10-batches-py").exists()


def test_nmnist_is_manual(tmp_path):
    with pytest.raises(DatasetError, match="Train.zip"):
        download.download_dataset("nmnist", tmp_path)


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "snnsim.datasets.download", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--base-url" in proc.stdout and "--dest" in proc.stdout
    assert "fashion-mnist" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr
