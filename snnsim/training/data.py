"""From datasets to batches: preprocessing as the authors did (docs/authors_code.md), a seeded shuffle, and one host-to-backend copy per batch.

    train, test = load_splits(cfg)                   # host (NumPy) arrays
    for x_in, labels in batches(train, 100, xp, cfg.dtype, cfg.n_steps, rng, shuffle=True):
        ...                                          # x_in (T, B, C, H, W) on the backend

- MNIST, Fashion-MNIST: (x/255 - 0.1307)/0.3081, a static current repeated at
  every step (:func:`snnsim.network.repeat_static`, a broadcast view).
- CIFAR-10: per-channel normalisation; training batches get a random crop of the
  4-padded image (padding = black) and a horizontal flip, drawn from ``rng``.
- N-MNIST: 0/1 event frames in 3 ms bins, ``(T, B, 2, 34, 34)``, frame 0 the first
  bin; files are read lazily, a batch at a time.

Everything random draws from the one ``np.random.Generator`` the caller passes
(the training run's), in a fixed order: the epoch's permutation first, then
per batch the augmentation. Saving that generator's state after an epoch is
enough to resume bit-exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import repeat_static

#: Feature shape of one sample, (channels, height, width), per dataset.
INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "nmnist": (2, 34, 34)}
N_CLASSES = 10
#: CIFAR-10 training augmentation (authors: RandomCrop(32, padding=4), RandomHorizontalFlip).
CIFAR10_CROP_PAD = 4


@dataclass
class Split:
    """One split of a dataset on the host.

    kind : ``"static"`` (``x`` holds preprocessed images ``(N, C, H, W)``) or
        ``"events"`` (``frames`` is a lazy N-MNIST reader; ``index`` selects its samples).
    y : labels ``(N,)`` int64.
    augment : apply the CIFAR-10 crop and flip to every batch drawn from it.
    """

    name: str
    kind: str
    y: np.ndarray
    x: np.ndarray | None = None
    frames: object = None
    index: np.ndarray | None = None
    augment: bool = False

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def host_batch(self, idx: np.ndarray, rng: np.random.Generator | None = None):
        """Samples ``idx``: (x ``(B, ...)`` for static or ``(B, T, ...)`` for events, y ``(B,)``)."""
        if self.kind == "events":
            x, _ = self.frames.batch(self.index[idx])
        else:
            x = self.x[idx]                                               # (B, C, H, W)
            if self.augment:
                if rng is None:
                    raise ValueError("augmentation needs the run's rng")
                from ..datasets.transforms import CIFAR10_BLACK, random_crop_flip  # noqa: PLC0415
                x = random_crop_flip(x, rng, pad=CIFAR10_CROP_PAD, fill=CIFAR10_BLACK)
        return x, self.y[idx]


def _subset_index(n: int, subset: int | None, evenly: bool = False) -> np.ndarray:
    if subset is None or subset >= n:
        return np.arange(n)
    if evenly:   # files ordered by label: spread the subset over all of them
        return np.unique(np.linspace(0, n - 1, subset).round().astype(np.int64))
    return np.arange(subset)


def load_split(dataset: str, split: str, cfg) -> Split:
    """Load and preprocess ``split`` ("train"|"test") of ``dataset`` for config ``cfg``."""
    dtype = np.dtype(cfg.dtype)
    subset = cfg.train_subset if split == "train" else cfg.test_subset
    if dataset in ("mnist", "fashion-mnist"):
        from ..datasets.idx import load_idx_dataset  # noqa: PLC0415
        from ..datasets.transforms import normalize_mnist  # noqa: PLC0415
        images, labels = load_idx_dataset(dataset, split, data_dir=cfg.data_dir, strict=False)
        idx = _subset_index(len(labels), subset)
        x = normalize_mnist(images[idx]).astype(dtype, copy=False)[:, None]   # (N, 1, 28, 28)
        return Split(split, "static", labels[idx].astype(np.int64), x=x)
    if dataset == "cifar10":
        from ..datasets.cifar import load_cifar10  # noqa: PLC0415
        from ..datasets.transforms import normalize_cifar10  # noqa: PLC0415
        images, labels = load_cifar10(split, data_dir=cfg.data_dir, strict=False)
        idx = _subset_index(len(labels), subset)
        x = normalize_cifar10(images[idx]).astype(dtype, copy=False)          # (N, 3, 32, 32)
        return Split(split, "static", labels[idx].astype(np.int64), x=x,
                     augment=bool(cfg.augment and split == "train"))
    if dataset == "nmnist":
        from ..datasets.nmnist import NMNISTDataset  # noqa: PLC0415
        frames = NMNISTDataset(split, cfg.n_steps, cfg.nmnist_bin_us, data_dir=cfg.data_dir,
                               dtype=np.uint8, strict=False)
        idx = _subset_index(len(frames), subset, evenly=True)
        return Split(split, "events", np.asarray(frames.labels)[idx].astype(np.int64),
                     frames=frames, index=idx)
    raise ValueError(f"no loader for dataset {dataset!r}; known: {sorted(INPUT_SHAPES)}")


def load_splits(cfg) -> tuple[Split, Split]:
    """(train, test) of ``cfg.dataset``, preprocessed, on the host."""
    return load_split(cfg.dataset, "train", cfg), load_split(cfg.dataset, "test", cfg)


def to_backend(x_host, split_kind: str, xp, dtype, n_steps: int):
    """A host batch as the network input ``(T, B, ...)`` on backend ``xp``.

    Static images: one copy ``(B, ...)``, then a broadcast view over T steps.
    Event frames ``(B, T, ...)`` (uint8): copied as they are, then time-first in ``dtype``.
    """
    if split_kind == "events":
        x = xp.asarray(x_host)                                            # (B, T, ...)
        return xp.ascontiguousarray(xp.moveaxis(x, 1, 0), dtype=dtype)    # (T, B, ...)
    x = xp.asarray(x_host, dtype=dtype)                                   # (B, ...)
    return repeat_static(x, n_steps)                                      # (T, B, ...)


def batch_order(n: int, rng: np.random.Generator | None, shuffle: bool) -> np.ndarray:
    """Sample order of one pass: ``rng.permutation(n)`` when shuffling, else 0..n-1."""
    if shuffle:
        if rng is None:
            raise ValueError("shuffling needs the run's rng")
        return rng.permutation(n)
    return np.arange(n)


def n_batches(n: int, batch_size: int) -> int:
    """Batches of one pass (the last one may be smaller; none is dropped)."""
    return -(-n // batch_size)


def batches(split: Split, batch_size: int, xp, dtype, n_steps: int,
            rng: np.random.Generator | None = None, shuffle: bool = False):
    """Yield ``(x_in (T, B, ...), labels (B,))`` on backend ``xp`` over one pass of ``split``.

    The order is drawn from ``rng`` before the first batch; augmentation draws
    from it per batch. Labels are int64 on the backend.
    """
    order = batch_order(len(split), rng, shuffle)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x_host, y_host = split.host_batch(idx, rng)
        yield to_backend(x_host, split.kind, xp, dtype, n_steps), xp.asarray(y_host)


__all__ = ["CIFAR10_CROP_PAD", "INPUT_SHAPES", "N_CLASSES", "Split", "batch_order", "batches",
           "load_split", "load_splits", "n_batches", "to_backend"]
