"""Table of the known datasets, their files, checksums and where they are looked for.

Names: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"nmnist"`` (aliases such as
``"fashion_mnist"``, ``"cifar-10"``, ``"n-mnist"`` are accepted by :func:`get_spec`).

Checksums
---------
* ``sha256`` / ``md5`` of a :class:`FileEntry` are of the *decompressed* file content,
  i.e. of ``train-images-idx3-ubyte``, not of ``train-images-idx3-ubyte.gz``. The
  Fashion-MNIST sha256 values were computed from the files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) after
  decompression. Debian re-compressed those ``.gz`` files, so their ``.gz`` md5 differ
  from the upstream ones while the decompressed content is the same.
* ``gz_md5`` is the md5 of the upstream ``.gz`` file as served at ``url`` (values used
  by torchvision). For MNIST the decompressed sha256 is not recorded here: a local
  copy is verified by its decompressed size, and by ``gz_md5`` when it is the
  untouched upstream ``.gz``.
* CIFAR-10 batch files carry the md5 of the extracted pickles (values used by
  torchvision); the archive ``cifar-10-python.tar.gz`` has md5
  ``c58f30108f718f92721af3b95e74349a``.
* N-MNIST has no recorded checksums (the files come as zip archives fetched by hand);
  :func:`verify_dataset_files` checks the number of ``.bin`` files per split.

Search order (:func:`search_dirs`)
----------------------------------
The first directory searched that holds any file of a dataset is its one copy: both
splits come from it, and a file it lacks is an error, never taken from another copy
(:func:`partial_copy_error`). An explicit ``data_dir`` (``--data-dir``) is the only
place searched: ``data_dir``, then ``<data_dir>/<name>/``; when neither holds the files
the load fails (no other copy is ever substituted for the one the user named).
Without it:

1. ``$SNNSIM_DATA_DIR``, then ``$SNNSIM_DATA_DIR/<name>/``;
2. the repository's ``data/<name>/`` (:data:`REPO_DATA_ROOT`);
3. the system location ``/usr/share/datasets/<name>/`` (:data:`SYSTEM_DATA_ROOT`;
   the Debian package ``dataset-fashion-mnist`` installs Fashion-MNIST there).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError, DatasetNotFoundError

__all__ = [
    "FileEntry",
    "DatasetSpec",
    "DATASETS",
    "PREPROCESSINGS",
    "authors_dataset",
    "authors_dataset_names",
    "ENV_VAR",
    "REPO_DATA_ROOT",
    "SYSTEM_DATA_ROOT",
    "get_spec",
    "canonical_name",
    "expected_count",
    "search_dirs",
    "how_to_get",
    "find_file",
    "partial_copy_error",
    "open_regular",
    "digest_file",
    "verify_dataset_files",
    "FileCheck",
]

#: Environment variable naming a data directory (searched after an explicit ``data_dir``).
ENV_VAR = "SNNSIM_DATA_DIR"
#: ``data/`` at the root of the source checkout (``<repo>/data/<name>/`` is searched).
REPO_DATA_ROOT = Path(__file__).resolve().parents[2] / "data"
#: System-wide location used by Debian's dataset packages.
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset, as stored on disk after decompression.

    ``filename`` is relative to the dataset directory. ``size``, ``sha256`` and ``md5``
    describe the decompressed content (``None`` when unknown). ``url`` is where the
    downloader fetches the compressed file (``None`` when the file comes inside an
    archive); ``gz_md5`` is the md5 of that compressed download.
    """

    dataset: str
    split: str
    role: str  # "images", "labels" or "batch"
    filename: str
    count: int
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None
    gz_md5: str | None = None


#: The preprocessings of :mod:`snnsim.training.data`, by the name a spec gives.
PREPROCESSINGS = {
    "mnist": "(x/255 - 0.1307)/0.3081, a static current repeated at every step",
    "cifar10": "per-channel normalisation, a static current; training batches get a random "
               "crop of the 4-padded image and a horizontal flip",
    "events": "0/1 event frames in time bins, (T, B, 2, 34, 34)",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: what a sample is (feature shape, classes, preprocessing), the
    names the authors' configuration files give it, its files, official split
    sizes and how to obtain it. A new dataset is one entry of :data:`DATASETS`."""

    name: str
    counts: dict
    input_shape: tuple = ()        # (channels, height, width) of one sample
    class_names: tuple = ()        # in label order
    preprocessing: str | None = None   # a key of PREPROCESSINGS
    authors_names: tuple = ()      # the ``dataset:`` values of the authors' files
    files: tuple = ()
    archive_url: str | None = None
    archive_md5: str | None = None
    apt_package: str | None = None
    downloadable: bool = True
    manual: str | None = None
    aliases: tuple = field(default=())

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def entries(self, split=None, role=None):
        """File entries, optionally filtered by split and role."""
        return [f for f in self.files
                if (split is None or f.split == split) and (role is None or f.role == role)]


_IDX_SIZES = {
    "train-images-idx3-ubyte": (60000, 16 + 60000 * 28 * 28),
    "train-labels-idx1-ubyte": (60000, 8 + 60000),
    "t10k-images-idx3-ubyte": (10000, 16 + 10000 * 28 * 28),
    "t10k-labels-idx1-ubyte": (10000, 8 + 10000),
}

_FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _idx_entries(dataset, base_url, gz_md5, sha256):
    out = []
    for fname, (count, size) in _IDX_SIZES.items():
        split = "train" if fname.startswith("train") else "test"
        role = "images" if "images" in fname else "labels"
        out.append(FileEntry(dataset, split, role, fname, count, size=size,
                             sha256=sha256.get(fname), url=base_url + fname + ".gz",
                             gz_md5=gz_md5[fname]))
    return tuple(out)


_CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

_DIGITS = tuple(str(i) for i in range(10))

DATASETS = {
    "mnist": DatasetSpec(
        name="mnist", counts={"train": 60000, "test": 10000},
        input_shape=(1, 28, 28), class_names=_DIGITS, preprocessing="mnist",
        authors_names=("MNIST",),
        files=_idx_entries("mnist", _MNIST_URL, _MNIST_GZ_MD5, {})),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", counts={"train": 60000, "test": 10000},
        input_shape=(1, 28, 28), preprocessing="mnist", authors_names=("FashionMNIST",),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        files=_idx_entries("fashion-mnist", _FASHION_URL, _FASHION_GZ_MD5, _FASHION_SHA256),
        apt_package="dataset-fashion-mnist",
        aliases=("fashion_mnist", "fashionmnist", "fmnist")),
    "cifar10": DatasetSpec(
        name="cifar10", counts={"train": 50000, "test": 10000},
        input_shape=(3, 32, 32), preprocessing="cifar10", authors_names=("CIFAR10",),
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"),
        files=tuple(FileEntry("cifar10", "test" if b == "test_batch" else "train", "batch",
                              "cifar-10-batches-py/" + b, 10000, md5=m)
                    for b, m in _CIFAR_MD5.items()),
        archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        aliases=("cifar-10", "cifar_10")),
    "nmnist": DatasetSpec(
        name="nmnist", counts={"train": 60000, "test": 10000},
        input_shape=(2, 34, 34), class_names=_DIGITS, preprocessing="events",
        authors_names=("NMNIST_Spiking", "NMNIST"),
        downloadable=False,
        manual=("download Train.zip and Test.zip from the N-MNIST page "
                "(https://www.garrickorchard.com/datasets/n-mnist, files hosted on "
                "Mendeley Data) and unzip them so that data/nmnist/Train/<digit>/*.bin "
                "and data/nmnist/Test/<digit>/*.bin exist"),
        aliases=("n-mnist", "n_mnist")),
}


def canonical_name(name: str) -> str:
    """Map a dataset name or alias to its registry key; DatasetError if unknown."""
    key = str(name).strip().lower()
    for spec in DATASETS.values():
        if key == spec.name or key in spec.aliases:
            return spec.name
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")


def authors_dataset(name: str) -> DatasetSpec:
    """The spec of the dataset the authors' configuration files call ``name``
    (``"FashionMNIST"``, ``"NMNIST_Spiking"``, ...); DatasetError if none."""
    for spec in DATASETS.values():
        if name in spec.authors_names:
            return spec
    raise DatasetError(f"unknown dataset {name!r}; known: {sorted(authors_dataset_names())}")


def authors_dataset_names() -> list[str]:
    """Every dataset name of the authors' configuration files."""
    return [n for spec in DATASETS.values() for n in spec.authors_names]


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (aliases accepted)."""
    return DATASETS[canonical_name(name)]


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    return split


def expected_count(name: str, split: str) -> int:
    """Number of samples in the official ``split`` of ``name``."""
    return get_spec(name).counts[_check_split(split)]


def search_dirs(name: str, data_dir=None) -> list:
    """Directories searched for dataset ``name``, in order, without duplicates: only
    ``data_dir`` and ``data_dir/<name>`` when ``data_dir`` is given (see the module
    docstring)."""
    name = canonical_name(name)
    cands = []
    if data_dir is not None:
        cands += [Path(data_dir), Path(data_dir) / name]
    else:
        env = os.environ.get(ENV_VAR)
        if env:
            cands += [Path(env), Path(env) / name]
        cands.append(Path(REPO_DATA_ROOT) / name)
        cands.append(Path(SYSTEM_DATA_ROOT) / name)
    out, seen = [], set()
    for c in cands:
        c = c.expanduser()
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def how_to_get(name: str) -> str:
    """Human-readable instructions to obtain dataset ``name``; the download command names
    the interpreter now running (``.venv/bin/python3``, ...), so that it can be copied."""
    from ..commandline import interpreter
    spec = get_spec(name)
    ways = []
    if spec.apt_package:
        ways.append(f"sudo apt-get install {spec.apt_package}   "
                    f"(installs into {Path(SYSTEM_DATA_ROOT) / spec.name})")
    if spec.downloadable:
        ways.append(f"{interpreter()} -m snnsim.datasets.download {spec.name} --dest data/{spec.name}")
    if spec.manual:
        ways.append(spec.manual)
    ways.append(f"or point data_dir= / ${ENV_VAR} at a directory holding the files")
    return "To get it:\n" + "\n".join(f"  - {w}" for w in ways)


def not_found_error(name: str, what: str, dirs) -> DatasetNotFoundError:
    """Build the error raised when no copy of ``what`` was found in ``dirs``."""
    places = "\n".join(f"  - {d}" for d in dirs)
    return DatasetNotFoundError(
        f"{canonical_name(name)}: {what} not found. Searched:\n{places}\n{how_to_get(name)}")


def partial_copy_error(name: str, directory, missing: str) -> DatasetError:
    """The error of a copy of dataset ``name`` in ``directory`` that lacks ``missing``:
    the first directory searched that holds any file of a dataset is its one copy, so
    that the train and test splits never come from two places (a file missing from
    ``$SNNSIM_DATA_DIR`` taken silently from the system's copy)."""
    return DatasetError(f"{directory}: holds a copy of {canonical_name(name)} without "
                        f"{missing}; both splits are read from one copy (the first place "
                        f"searched that holds any of its files), never from two: complete "
                        f"it, or point --data-dir / ${ENV_VAR} at a complete one")


def open_regular(path, what: str):
    """``open(path, "rb")`` of a regular file; DatasetError naming ``path`` for a
    directory, a FIFO or a device (``what``: the kind of file expected, for the
    message). The file is opened without blocking, so that a FIFO is refused instead
    of waited on for a writer that never comes."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError as exc:
        raise DatasetError(f"{path}: is a directory, not {what}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DatasetError(f"{path}: is a directory, not {what}")
        if not stat.S_ISREG(mode):
            raise DatasetError(f"{path}: not a regular file (a FIFO or device is not {what})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def find_file(directory, filename: str):
    """``directory/filename`` if it exists, else ``directory/filename.gz``, else None."""
    base = Path(directory) / filename
    for p in (base, base.with_name(base.name + ".gz")):
        if p.is_file():
            return p
        if p.is_dir():
            raise DatasetError(f"{p}: is a directory, not a {filename} file")
    return None


def is_gzip_file(path) -> bool:
    """True if ``path`` starts with the gzip magic bytes 1f 8b."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def digest_file(path, decompress: bool = True):
    """Return ``(size, sha256_hex, md5_hex)`` of the file content.

    With ``decompress`` a gzip file (detected by its magic bytes) is hashed after
    decompression, streaming. A corrupt gzip stream raises :class:`DatasetError`.
    """
    path = Path(path)
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        opener = gzip.open if (decompress and is_gzip_file(path)) else open
        with opener(path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                sha.update(chunk)
                md5.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DatasetError(f"{path}: cannot read/decompress: {exc}") from exc
    return size, sha.hexdigest(), md5.hexdigest()


def md5_of(path) -> str:
    """md5 of the raw (not decompressed) bytes of ``path``."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileCheck:
    """Result of verifying one file: its entry, the path used and the checks passed."""

    entry: FileEntry
    path: Path
    checks: tuple


def check_entry(entry: FileEntry, path) -> FileCheck:
    """Verify one file against its registry entry; DatasetError on any mismatch."""
    path = Path(path)
    checks = []
    if entry.gz_md5 and is_gzip_file(path) and md5_of(path) == entry.gz_md5:
        checks.append("gz_md5")
    size, sha, md5 = digest_file(path)
    problems = []
    if entry.size is not None:
        if size != entry.size:
            problems.append(f"decompressed size {size} bytes, expected {entry.size}")
        else:
            checks.append("size")
    if entry.sha256 is not None:
        if sha != entry.sha256:
            problems.append(f"sha256 {sha}, expected {entry.sha256}")
        else:
            checks.append("sha256")
    if entry.md5 is not None:
        if md5 != entry.md5:
            problems.append(f"md5 {md5}, expected {entry.md5}")
        else:
            checks.append("md5")
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems))
    return FileCheck(entry, path, tuple(checks))


def _nmnist_root(split_dir_name, dirs):
    for d in dirs:
        for sub in (split_dir_name, split_dir_name.lower()):
            if (d / sub).is_dir():
                return d / sub
    return None


def verify_dataset_files(name: str, data_dir=None) -> list:
    """Check every file of dataset ``name`` against the registry.

    The dataset directory is the first of :func:`search_dirs` holding any of its files
    (``data_dir`` itself or ``data_dir/<name>`` when ``data_dir`` is given). Each file is
    checked for its decompressed size and its sha256/md5 where the registry knows them.
    Returns a list of :class:`FileCheck`; raises :class:`DatasetError` listing every
    missing or mismatching file. For N-MNIST the number of ``.bin`` files per split is
    checked (no checksums are known).
    """
    spec = get_spec(name)
    dirs = search_dirs(spec.name, data_dir)
    if data_dir is not None:
        dirs = dirs[:2]  # only data_dir and data_dir/<name>
    if spec.name == "nmnist":
        return _verify_nmnist(spec, dirs)
    root = None
    for d in dirs:
        if any(find_file(d, e.filename) for e in spec.files):
            root = d
            break
    if root is None:
        raise not_found_error(spec.name, "dataset files", dirs)
    results, problems = [], []
    for e in spec.files:
        p = find_file(root, e.filename)
        if p is None:
            problems.append(f"{root / e.filename}[.gz]: missing")
            continue
        try:
            results.append(check_entry(e, p))
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        raise DatasetError(f"{spec.name}: verification failed in {root}:\n"
                           + "\n".join(f"  - {p}" for p in problems))
    return results


def _verify_nmnist(spec, dirs):
    problems, results = [], []
    for split, sub in (("train", "Train"), ("test", "Test")):
        root = _nmnist_root(sub, dirs)
        if root is None:
            problems.append(f"{sub}/ not found in any of: {', '.join(map(str, dirs))}")
            continue
        n = sum(1 for p in root.glob("[0-9]/*.bin"))
        if n != spec.counts[split]:
            problems.append(f"{root}: {n} .bin files, expected {spec.counts[split]}")
        else:
            results.append(FileCheck(FileEntry(spec.name, split, "events", sub, n), root,
                                     ("count",)))
    if problems:
        raise DatasetError(f"{spec.name}: verification failed:\n"
                           + "\n".join(f"  - {p}" for p in problems))
    return results
