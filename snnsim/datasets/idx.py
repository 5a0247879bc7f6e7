"""IDX files (MNIST, Fashion-MNIST): reader, writer and split loader.

IDX format (LeCun et al.), all integers big-endian:

====== ======================= ==============================================
offset field                   value
====== ======================= ==============================================
0      magic, 4 bytes          ``00 00 <dtype code> <ndim>``
4      ndim x uint32           size of each dimension
4+4*nd payload                 prod(dims) items, row-major, big-endian
====== ======================= ==============================================

dtype codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64. MNIST/Fashion-MNIST images have magic ``0x00000803`` (uint8, 3 dims:
N x 28 x 28) and labels ``0x00000801`` (uint8, 1 dim: N). The payload length must be
exact: a short payload (truncated file) and extra bytes after it (trailing garbage)
are both errors. Files may be gzip-compressed (``.gz`` suffix, or detected by the
gzip magic ``1f 8b``).

File names of a split: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
See :mod:`snnsim.datasets.registry` for the directories searched.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import registry
from .errors import DatasetError

__all__ = ["read_idx", "parse_idx", "write_idx", "load_idx_dataset", "find_idx_files",
           "IDX_DTYPES", "IDX_FILES"]

#: IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("=").str[1:] if dt.itemsize > 1 else dt.str[1:]: c
            for c, dt in IDX_DTYPES.items()}

#: split -> (images file, labels file), without the optional ``.gz``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DATASETS = ("mnist", "fashion-mnist")


#: Deflate's largest expansion: one compressed byte decompresses to at most 1032 bytes
#: (a 258-byte match coded in 2 bits), so a gzip file of n bytes holds at most 1032 n.
GZIP_MAX_RATIO = 1032
#: Bytes read from a stream at a time (a payload is read in chunks, never in one
#: allocation of the size a header declares).
_CHUNK = 1 << 24


def _read_declared(stream, source: str, capacity: int, what: str) -> bytes:
    """The IDX bytes of ``stream``: the header, then at most the payload its dimensions
    declare plus one byte (enough for :func:`parse_idx` to see trailing bytes). A gzip
    stream is thus never decompressed beyond the size the file itself declares.

    ``capacity``: the most bytes the stream can hold (``what`` says why); a header
    declaring more is refused before anything is allocated (a header of 0xFFFFFFFF x
    28 x 28, or of 255 dimensions, in a file of a few bytes)."""
    head = stream.read(4)
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_DTYPES or not head[3]:
        return head                                  # parse_idx names what is wrong
    dims = stream.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return head + dims
    shape = struct.unpack(f">{head[3]}I", dims)
    need = math.prod(shape) * IDX_DTYPES[head[2]].itemsize
    header = len(head) + len(dims)
    if need > capacity - header:
        raise DatasetError(f"{source}: truncated payload: dimensions {_shape_text(shape)} need "
                           f"{_count_text(need)} bytes after the {header}-byte header, but {what}")
    return head + dims + _read_at_most(stream, need + 1)


def _shape_text(shape: tuple) -> str:
    """The dimensions for a message: all of them, or the first few of many."""
    return str(shape) if len(shape) <= 8 else f"({', '.join(map(str, shape[:4]))}, ... " \
        f"{len(shape)} dimensions)"


def _count_text(n: int) -> str:
    """``n`` for a message: its digits, or its power of ten when it has more than 15."""
    return str(n) if n < 10**15 else f"about 10^{int((n.bit_length() - 1) * math.log10(2))}"


def _read_at_most(stream, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream``, read in chunks (memory grows with what is there)."""
    parts = []
    while n > 0:
        part = stream.read(min(n, _CHUNK))
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _read_bytes(path: Path) -> bytes:
    """The file's IDX content (decompressed if gzip, up to the size its header declares,
    see :func:`_read_declared`); DatasetError on corruption."""
    with registry.open_regular(path, "an IDX file") as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(2)
        f.seek(0)
        is_gz = magic == b"\x1f\x8b"
        if path.suffix == ".gz" and not is_gz:
            raise DatasetError(f"{path}: not a gzip file (bad gzip magic "
                               f"{magic.hex() or 'empty'})")
        if not is_gz:
            return _read_declared(f, str(path), size, f"the file holds {size} bytes in all")
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                return _read_declared(g, str(path), GZIP_MAX_RATIO * size,
                                      f"a gzip file of {size} bytes decompresses to at most "
                                      f"{GZIP_MAX_RATIO * size}")
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip stream: {exc}") from exc


def parse_idx(buf: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``source`` names the file in errors."""
    n = len(buf)
    if n < 4:
        raise DatasetError(f"{source}: truncated IDX header ({n} bytes, need at least 4)")
    magic = struct.unpack(">I", buf[:4])[0]
    code, ndim = buf[2], buf[3]
    if buf[0] != 0 or buf[1] != 0:
        raise DatasetError(f"{source}: bad IDX magic number 0x{magic:08x} "
                           "(first two bytes must be zero)")
    if code not in IDX_DTYPES:
        raise DatasetError(f"{source}: bad IDX magic number 0x{magic:08x}: unknown dtype "
                           f"code 0x{code:02x} (known: "
                           + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES) + ")")
    if ndim == 0:
        raise DatasetError(f"{source}: bad IDX magic number 0x{magic:08x}: zero dimensions")
    header = 4 + 4 * ndim
    if n < header:
        raise DatasetError(f"{source}: truncated IDX header ({n} bytes, need {header} "
                           f"for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    payload = n - header
    if payload < expected:
        raise DatasetError(f"{source}: truncated payload: dimensions {_shape_text(dims)} need "
                           f"{_count_text(expected)} bytes after the {header}-byte header, "
                           f"found {payload}")
    if payload > expected:
        raise DatasetError(f"{source}: {payload - expected} trailing bytes after the "
                           f"payload (dimensions {_shape_text(dims)} need exactly {_count_text(expected)} "
                           "bytes)")
    try:
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=header).reshape(dims)
    except ValueError as exc:          # more dimensions than NumPy's arrays may have
        raise DatasetError(f"{source}: {ndim} dimensions cannot be read: {exc}") from None
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian NumPy array.

    Raises :class:`DatasetError` naming the file for a bad magic number, unknown dtype
    code, truncated header or payload, trailing bytes, or a corrupt gzip stream.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), source=str(path))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Supports the IDX dtypes (uint8, int8, int16, int32, float32, float64); mainly
    meant for building small test fixtures. Returns the path.
    """
    path = Path(path)
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=").str[1:] if arr.dtype.itemsize > 1 else arr.dtype.str[1:]
    if key not in _CODE_OF:
        raise DatasetError(f"{path}: dtype {arr.dtype} has no IDX code")
    if arr.ndim == 0 or arr.ndim > 255:
        raise DatasetError(f"{path}: IDX needs 1..255 dimensions, got {arr.ndim}")
    code = _CODE_OF[key]
    data = (bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes())
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def _check_name(name: str) -> str:
    name = registry.canonical_name(name)
    if name not in _IDX_DATASETS:
        raise DatasetError(f"{name} is not an IDX dataset (IDX datasets: "
                           f"{', '.join(_IDX_DATASETS)})")
    return name


def find_idx_files(name: str, split: str, data_dir=None):
    """Paths ``(images, labels)`` of ``split`` of ``name`` (see the registry's search order).

    In each searched directory the raw file is preferred over its ``.gz``. The first
    directory holding any file of the dataset is its one copy: both splits come from
    it, and one it lacks is an error (never a file of another copy). Raises
    :class:`DatasetNotFoundError` listing every place searched and how to obtain the data.
    """
    name = _check_name(name)
    if split not in IDX_FILES:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    img_name, lbl_name = IDX_FILES[split]
    dirs = registry.search_dirs(name, data_dir)
    for d in dirs:
        img, lbl = registry.find_file(d, img_name), registry.find_file(d, lbl_name)
        if img is not None and lbl is not None:
            return img, lbl
        if any(registry.find_file(d, f) for pair in IDX_FILES.values() for f in pair):
            missing = [f"{f}[.gz]" for f, p in ((img_name, img), (lbl_name, lbl)) if p is None]
            raise registry.partial_copy_error(name, d, " and ".join(missing))
    raise registry.not_found_error(
        name, f"{split} split ({img_name}[.gz] and {lbl_name}[.gz])", dirs)


def load_idx_dataset(name: str, split: str, data_dir=None, strict: bool = True):
    """Load MNIST or Fashion-MNIST: ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``name`` is ``"mnist"`` or ``"fashion-mnist"``; ``split`` is ``"train"`` or
    ``"test"``. Images must be IDX magic 0x00000803 with 28x28 frames, labels magic
    0x00000801 with values 0..9, and both must hold the same number of samples. With
    ``strict`` (default) that number must also be the official one (60000 / 10000);
    pass ``strict=False`` for subsets or test fixtures.
    """
    name = _check_name(name)
    img_path, lbl_path = find_idx_files(name, split, data_dir)
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{img_path}: wrong dimensions for {name} images: expected IDX "
                           f"magic 0x00000803 (uint8, 3 dims) of shape (N, 28, 28), got "
                           f"{images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{lbl_path}: wrong dimensions for {name} labels: expected IDX "
                           f"magic 0x00000801 (uint8, 1 dim), got {labels.dtype} of shape "
                           f"{labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"count mismatch: {img_path} holds {images.shape[0]} images but "
                           f"{lbl_path} holds {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{lbl_path}: label value {int(labels.max())} out of range 0..9")
    if strict:
        want = registry.expected_count(name, split)
        if images.shape[0] != want:
            raise DatasetError(f"{img_path}: {images.shape[0]} samples, expected {want} for "
                               f"the official {name} {split} split (pass strict=False to "
                               "load a subset)")
    return images, labels.astype(np.int64)
