"""N-MNIST (Orchard et al. 2015): event files, binning into frames, split loader.

Event file format (one ``.bin`` file per sample): a sequence of 40-bit events, 5 bytes
each, no header::

    byte 0: x, 0..33
    byte 1: y, 0..33
    byte 2: bit 7 = polarity (0 = OFF, 1 = ON); bits 6..0 = timestamp bits 22..16
    byte 3: timestamp bits 15..8
    byte 4: timestamp bits 7..0

so ``ts = (b2 & 0x7F) << 16 | b3 << 8 | b4`` is a 23-bit timestamp in microseconds.
A file whose length is not a multiple of 5, or holding a coordinate outside the 34x34
sensor, is rejected with a :class:`DatasetError` naming the file.

Directory layout (as unzipped from the official ``Train.zip`` / ``Test.zip``)::

    <root>/Train/<digit>/*.bin      60000 samples
    <root>/Test/<digit>/*.bin       10000 samples

where ``<root>`` is searched as in :func:`snnsim.datasets.registry.search_dirs`
(``data_dir``, ``data_dir/nmnist``, ``$SNNSIM_DATA_DIR[/nmnist]``, the repository's
``data/nmnist``). The label is the digit of the directory; samples are ordered by
label, then file name.

Frames (:func:`bin_events`): array (T, 2, 34, 34) indexed ``[t, polarity, y, x]``;
channel 0 = polarity 0 (OFF events), channel 1 = polarity 1 (ON events). Frame ``t``
is 1 where at least one event with ``t*bin_us <= ts < (t+1)*bin_us`` occurred at that
(polarity, y, x), else 0. Frame 0 is the first bin (the TSSL-BP authors' loader stores
bin 0 at index T-1; this one does not). Events at or after ``T*bin_us`` are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import registry
from .errors import DatasetError

__all__ = [
    "EVENT_DTYPE", "SENSOR_SIZE", "FRAME_SHAPE", "decode_nmnist_events",
    "read_nmnist_events", "encode_nmnist_events", "bin_events", "find_nmnist_dir",
    "list_nmnist_files", "NMNISTDataset", "load_nmnist",
]

#: Structured dtype of decoded events.
EVENT_DTYPE = np.dtype([("x", np.uint8), ("y", np.uint8), ("p", np.uint8), ("ts", np.uint32)])
#: Sensor width = height of N-MNIST recordings.
SENSOR_SIZE = 34
#: (polarity channels, height, width) of one frame.
FRAME_SHAPE = (2, SENSOR_SIZE, SENSOR_SIZE)
_SPLIT_DIRS = {"train": "Train", "test": "Test"}
#: The largest event file read: a real recording (0.3 s, three saccades) has a few
#: thousand events, tens of kB; 16 MiB bounds the time and memory one file may cost.
MAX_EVENT_FILE_BYTES = 16 << 20


def decode_nmnist_events(buf: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode N-MNIST event bytes into an :data:`EVENT_DTYPE` structured array."""
    n = len(buf)
    if n % 5:
        raise DatasetError(f"{source}: length {n} bytes is not a multiple of 5 "
                           f"(40-bit events; {n % 5} trailing bytes)")
    b = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 5)
    ev = np.empty(b.shape[0], dtype=EVENT_DTYPE)
    ev["x"] = b[:, 0]
    ev["y"] = b[:, 1]
    ev["p"] = b[:, 2] >> 7
    ev["ts"] = ((b[:, 2].astype(np.uint32) & 0x7F) << 16
                | b[:, 3].astype(np.uint32) << 8 | b[:, 4].astype(np.uint32))
    bad = (ev["x"] >= SENSOR_SIZE) | (ev["y"] >= SENSOR_SIZE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{source}: event {i} (byte offset {5 * i}) has coordinates "
                           f"x={ev['x'][i]}, y={ev['y'][i]} outside the "
                           f"{SENSOR_SIZE}x{SENSOR_SIZE} sensor "
                           f"({int(bad.sum())} such events)")
    return ev


def read_nmnist_events(path) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file into a structured array with fields
    ``x``, ``y``, ``p`` (uint8) and ``ts`` (uint32, microseconds)."""
    path = Path(path)
    with registry.open_regular(path, "an N-MNIST event file") as f:
        info = os.fstat(f.fileno())
        if info.st_size > MAX_EVENT_FILE_BYTES:
            raise DatasetError(f"{path}: {info.st_size} bytes, more than an N-MNIST sample "
                               f"may hold ({MAX_EVENT_FILE_BYTES}; a recording of 0.3 s is "
                               "tens of kB)")
        buf = f.read(MAX_EVENT_FILE_BYTES + 1)
    return decode_nmnist_events(buf, source=str(path))


def _fields(events):
    try:
        return tuple(np.asarray(events[k]) for k in ("x", "y", "p", "ts"))
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError("events must be a structured array or mapping with fields "
                         "x, y, p, ts") from exc


def encode_nmnist_events(events) -> bytes:
    """Inverse of :func:`decode_nmnist_events` (for writing test fixtures).

    ``events``: structured array or mapping with ``x``, ``y`` (0..33), ``p`` (0/1) and
    ``ts`` (0 .. 2**23 - 1).
    """
    x, y, p, ts = (a.astype(np.int64) for a in _fields(events))
    if x.size and (x.min() < 0 or x.max() >= SENSOR_SIZE or y.min() < 0
                   or y.max() >= SENSOR_SIZE):
        raise ValueError("coordinates must lie in 0..33")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("polarity must be 0 or 1")
    if ts.size and (ts.min() < 0 or ts.max() >= 1 << 23):
        raise ValueError("timestamps must fit in 23 bits")
    out = np.empty((x.size, 5), dtype=np.uint8)
    out[:, 0] = x
    out[:, 1] = y
    out[:, 2] = (p << 7) | (ts >> 16)
    out[:, 3] = (ts >> 8) & 0xFF
    out[:, 4] = ts & 0xFF
    return out.tobytes()


def bin_events(events, n_steps: int, bin_us: int = 3000, shape=FRAME_SHAPE,
               dtype=np.float32) -> np.ndarray:
    """Bin events into 0/1 frames of shape ``(n_steps, *shape)``, indexed [t, p, y, x].

    Frame ``t`` covers ``[t*bin_us, (t+1)*bin_us)``; frame 0 is the first bin. Events
    with ``ts >= n_steps*bin_us`` are dropped. ``events`` is a structured array (as
    returned by :func:`read_nmnist_events`) or a mapping of arrays x, y, p, ts.
    """
    n_steps, bin_us = int(n_steps), int(bin_us)
    if n_steps < 1 or bin_us < 1:
        raise ValueError(f"n_steps and bin_us must be >= 1, got {n_steps}, {bin_us}")
    x, y, p, ts = (a.astype(np.int64).ravel() for a in _fields(events))
    if not (x.size == y.size == p.size == ts.size):
        raise ValueError("event fields x, y, p, ts must have the same length")
    c, h, w = shape
    out = np.zeros((n_steps, c, h, w), dtype=dtype)
    if x.size == 0:
        return out
    if (p.min() < 0 or p.max() >= c or y.min() < 0 or y.max() >= h or x.min() < 0
            or x.max() >= w or ts.min() < 0):
        raise DatasetError(f"events out of range for frame shape {tuple(shape)}: "
                           f"p {p.min()}..{p.max()}, y {y.min()}..{y.max()}, "
                           f"x {x.min()}..{x.max()}, ts min {ts.min()}")
    t = ts // bin_us
    keep = t < n_steps
    out[t[keep], p[keep], y[keep], x[keep]] = 1
    return out


def find_nmnist_dir(split: str, data_dir=None) -> Path:
    """The ``Train``/``Test`` directory of ``split`` (lowercase names accepted too)."""
    if split not in _SPLIT_DIRS:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    sub = _SPLIT_DIRS[split]
    tried = []
    for d in registry.search_dirs("nmnist", data_dir):
        for cand in (d / sub, d / sub.lower()):
            tried.append(cand)
            if cand.is_dir():
                return cand
        others = [d / o for other in _SPLIT_DIRS.values() for o in (other, other.lower())]
        if any(o.is_dir() for o in others):       # this copy: the other split alone
            raise registry.partial_copy_error("nmnist", d, f"{sub}/")
    raise registry.not_found_error("nmnist", f"{split} split ({sub}/<digit>/*.bin)", tried)


def list_nmnist_files(split_dir):
    """``(paths, labels int64)`` of the ``.bin`` files under ``split_dir/<digit>/``."""
    split_dir = Path(split_dir)
    paths, labels = [], []
    for digit in range(10):
        files = sorted((split_dir / str(digit)).glob("*.bin"))
        paths += files
        labels += [digit] * len(files)
    if not paths:
        raise DatasetError(f"{split_dir}: no <digit>/*.bin event files found")
    return paths, np.asarray(labels, dtype=np.int64)


class NMNISTDataset:
    """Lazy N-MNIST split: files are read and binned on access.

    ``ds[i]`` -> ``(frames (n_steps, 2, 34, 34) dtype, label int)``;
    ``ds.batch(indices)`` -> ``(frames (B, n_steps, 2, 34, 34), labels int64 (B,))``.
    With ``strict`` (default) the number of files must be the official one.
    """

    def __init__(self, split: str, n_steps: int, bin_us: int = 3000, data_dir=None,
                 dtype=np.float32, strict: bool = True):
        self.split, self.n_steps, self.bin_us, self.dtype = split, int(n_steps), int(bin_us), dtype
        self.root = find_nmnist_dir(split, data_dir)
        self.paths, self.labels = list_nmnist_files(self.root)
        if strict:
            want = registry.expected_count("nmnist", split)
            if len(self.paths) != want:
                raise DatasetError(f"{self.root}: {len(self.paths)} event files, expected "
                                   f"{want} for the official N-MNIST {split} split (pass "
                                   "strict=False to load a subset)")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        ev = read_nmnist_events(self.paths[i])
        return (bin_events(ev, self.n_steps, self.bin_us, dtype=self.dtype),
                int(self.labels[i]))

    def batch(self, indices):
        idx = np.asarray(indices, dtype=np.int64).ravel()
        out = np.empty((idx.size, self.n_steps, *FRAME_SHAPE), dtype=self.dtype)
        for k, i in enumerate(idx):
            out[k] = self[int(i)][0]
        return out, self.labels[idx]


def load_nmnist(split: str, n_steps: int, bin_us: int = 3000, data_dir=None,
                dtype=np.uint8, strict: bool = True):
    """Load a whole N-MNIST split: ``(frames (N, n_steps, 2, 34, 34), labels int64 (N,))``.

    Frames are 0/1 in ``dtype`` (default uint8 to save memory; convert a batch with
    ``.astype(np.float32)``). Memory is N * n_steps * 2312 bytes for uint8: about 4.2 GB
    for the train split at n_steps=30; use :class:`NMNISTDataset` to read lazily.
    """
    ds = NMNISTDataset(split, n_steps, bin_us, data_dir, dtype=dtype, strict=strict)
    return ds.batch(np.arange(len(ds)))
