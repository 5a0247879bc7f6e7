"""CIFAR-10, "python version" batch files.

Layout: a directory ``cifar-10-batches-py/`` holding ``data_batch_1`` ... ``data_batch_5``
(train, 10000 images each) and ``test_batch`` (10000 images), as extracted from
``cifar-10-python.tar.gz``. Each batch is a pickled dict (written by Python 2, pickle
protocol 2) with bytes keys:

* ``b"data"``: uint8 NumPy array (N, 3072); a row is the 1024 red, then 1024 green, then
  1024 blue values of a 32x32 image, each channel row-major. It is returned reshaped to
  (N, 3, 32, 32) (channels first).
* ``b"labels"``: list of N ints in 0..9.
* ``b"batch_label"``, ``b"filenames"``: ignored.

The loader looks for ``cifar-10-batches-py/`` (or the batch files directly) in the
directories of :func:`snnsim.datasets.registry.search_dirs` (``data_dir``,
``$SNNSIM_DATA_DIR``, the repository's ``data/cifar10/``, ``/usr/share/datasets/cifar10/``).

Security: pickle can run arbitrary code while loading. The batches are read with
``pickle.load(f, encoding="bytes")`` through a restricted unpickler that resolves only
the globals needed to rebuild a NumPy array (``numpy.core.multiarray._reconstruct`` /
``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, and
``numpy._core.numeric._frombuffer`` used by pickle protocol 5) and ``_codecs.encode``
restricted to latin-1 (how Python 3 writes bytes in protocol 2). Any other global is
refused with a :class:`DatasetError`. Still, only load files from a source you trust.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np

from . import registry
from .errors import DatasetError

__all__ = ["read_cifar_batch", "load_cifar10", "find_cifar10_dir", "CIFAR10_DIRNAME",
           "CIFAR10_BATCHES", "CIFAR10_CLASSES"]

CIFAR10_DIRNAME = "cifar-10-batches-py"
#: split -> batch file names, in concatenation order.
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
#: The largest batch file read (an official one, 10000 images, is 31 MB): the
#: unpickler's memory stays within a small multiple of the file's size.
MAX_BATCH_BYTES = 1 << 30
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused")
    return codecs.encode(obj, "latin1", errors)


def _allowed_globals():
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR batch") from None


def _get(d, key):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_cifar_batch(path):
    """Read one CIFAR-10 batch file: ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    Raises :class:`DatasetError` naming the file if it is not a valid pickle, refers to a
    forbidden global, lacks ``data``/``labels``, has wrong dimensions, a count mismatch
    or labels outside 0..9.
    """
    path = Path(path)
    try:
        with registry.open_regular(path, "a CIFAR batch") as f:
            info = os.fstat(f.fileno())
            if info.st_size > MAX_BATCH_BYTES:
                raise DatasetError(f"{path}: {info.st_size} bytes, more than a CIFAR batch "
                                   f"may hold ({MAX_BATCH_BYTES}; an official batch of 10000 "
                                   "images is 31 MB)")
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except (DatasetError, FileNotFoundError):
        raise
    except RecursionError:
        raise DatasetError(f"{path}: not a valid CIFAR batch pickle: nested too "
                           "deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, OSError) as exc:
        raise DatasetError(f"{path}: not a valid CIFAR batch pickle: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: CIFAR batch must be a pickled dict, got "
                           f"{type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, "labels")
    except KeyError as exc:
        raise DatasetError(f"{path}: CIFAR batch dict lacks key b{exc.args[0]!r}; keys: "
                           f"{_keys_text(obj)}") from None
    if isinstance(data, (bytes, bytearray)):
        if len(data) % 3072:
            raise DatasetError(f"{path}: data holds {len(data)} bytes, not a multiple of 3072")
        data = np.frombuffer(bytes(data), np.uint8).reshape(-1, 3072)
    if not isinstance(data, np.ndarray):
        raise DatasetError(f"{path}: data must be a uint8 array, got {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: wrong dimensions: data must be uint8 (N, 3072), got "
                           f"{data.dtype} {data.shape}")
    lab = _labels(labels, path)
    if lab.shape[0] != data.shape[0]:
        raise DatasetError(f"{path}: count mismatch: {data.shape[0]} images but "
                           f"{lab.shape[0]} labels")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 9):
        raise DatasetError(f"{path}: label values out of range 0..9 "
                           f"(min {lab.min()}, max {lab.max()})")
    images = np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy()
    return images, lab


def _labels(labels, path) -> np.ndarray:
    """The labels as a flat int64 array, checked before any conversion: a flat list
    (or 1-d integer array) of ints. A list of lists is refused at its first element, so
    that a pickle whose few bytes reference one list many times over, nested many
    levels deep (10^8 labels from a few hundred bytes), costs no time or memory."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise DatasetError(f"{path}: labels must be a flat list of ints, got an array "
                               f"{labels.dtype} {labels.shape}")
        return labels
    if not isinstance(labels, (list, tuple)):
        raise DatasetError(f"{path}: labels must be a flat list of ints, got "
                           f"{type(labels).__name__}")
    for i, value in enumerate(labels):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DatasetError(f"{path}: labels must be a flat list of ints; label {i} is a "
                               f"{type(value).__name__}")
        if not -(1 << 62) < value < 1 << 62:
            raise DatasetError(f"{path}: label {i} value {value} out of range 0..9")
    return np.asarray(labels, dtype=np.int64)


def _keys_text(d: dict, limit: int = 8) -> str:
    """A few of a dict's keys for a message (a key may be long or deeply nested)."""
    shown = []
    for key in list(d)[:limit]:
        text = repr(key) if isinstance(key, (bytes, str, int)) else type(key).__name__
        shown.append(text if len(text) <= 40 else text[:37] + "...")
    return ", ".join(shown) + (f", ... ({len(d)} keys)" if len(d) > limit else "")


def find_cifar10_dir(split: str = "train", data_dir=None) -> Path:
    """Directory holding the batch files of ``split`` (see module docstring).

    In each searched directory ``d``, ``d/cifar-10-batches-py/`` is tried before ``d``.
    Raises :class:`DatasetNotFoundError` listing every place searched.
    """
    if split not in CIFAR10_BATCHES:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    tried = []
    every = [b for batches in CIFAR10_BATCHES.values() for b in batches]
    for d in registry.search_dirs("cifar10", data_dir):
        for cand in (d / CIFAR10_DIRNAME, d):
            tried.append(cand)
            missing = [b for b in CIFAR10_BATCHES[split] if not (cand / b).is_file()]
            if not missing:
                return cand
            if any((cand / b).is_file() for b in every):   # this copy, incomplete
                raise registry.partial_copy_error("cifar10", cand, ", ".join(missing))
    raise registry.not_found_error(
        "cifar10", f"{split} split ({', '.join(CIFAR10_BATCHES[split])})", tried)


def load_cifar10(split: str, data_dir=None, strict: bool = True):
    """Load CIFAR-10: ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    ``split`` is ``"train"`` (data_batch_1..5 concatenated in order) or ``"test"``
    (test_batch). With ``strict`` (default) N must be the official count (50000 /
    10000); pass ``strict=False`` for test fixtures.
    """
    root = find_cifar10_dir(split, data_dir)
    parts = [read_cifar_batch(root / b) for b in CIFAR10_BATCHES[split]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if strict:
        want = registry.expected_count("cifar10", split)
        if images.shape[0] != want:
            raise DatasetError(f"{root}: {images.shape[0]} samples, expected {want} for the "
                               f"official CIFAR-10 {split} split (pass strict=False to load "
                               "a subset)")
    return images, labels
