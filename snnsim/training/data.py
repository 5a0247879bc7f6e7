"""From datasets to batches: preprocessing as the authors did (docs/authors_code.md;
each dataset's spec in :mod:`snnsim.datasets.registry` names its
preprocessing), a seeded shuffle, and one host-to-backend copy per batch.

    train, test = load_splits(cfg)                   # host (NumPy) arrays
    for x_in, labels in batches(train, 100, xp, cfg.dtype, cfg.n_steps, rng, shuffle=True):
        ...                                          # x_in (T, B, C, H, W) on the backend

- MNIST, Fashion-MNIST: (x/255 - 0.1307)/0.3081, a static current repeated at
  every step (:func:`snnsim.network.repeat_static`, a broadcast view). Normalised in
  the run's dtype (a float64 run is float64 from the pixels on).
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

from dataclasses import dataclass, field

import numpy as np

from ..datasets.errors import DatasetError
from ..datasets.registry import get_spec
from ..layout import ascontiguous
from ..network import repeat_static
from . import provenance

#: CIFAR-10 training augmentation (authors: RandomCrop(32, padding=4), RandomHorizontalFlip).
CIFAR10_CROP_PAD = 4


@dataclass
class Split:
    """One split of a dataset on the host.

    kind : ``"static"`` (``x`` holds preprocessed images ``(N, C, H, W)``) or
        ``"events"`` (``frames`` is a lazy N-MNIST reader; ``index`` selects its samples).
    y : labels ``(N,)`` int64.
    augment : apply the CIFAR-10 crop and flip to every batch drawn from it.
    files : what was read, :mod:`snnsim.training.provenance` records (path, sha256).
    """

    name: str
    kind: str
    y: np.ndarray
    x: np.ndarray | None = None
    frames: object = None
    index: np.ndarray | None = None
    augment: bool = False
    files: list = field(default_factory=list)

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
                from ..datasets.transforms import CIFAR10_BLACK, random_crop_flip
                x = random_crop_flip(x, rng, pad=CIFAR10_CROP_PAD, fill=CIFAR10_BLACK)
        return x, self.y[idx]


def _subset_index(n: int, subset: int | None, evenly: bool = False) -> np.ndarray:
    if subset is None or subset >= n:
        return np.arange(n)
    if evenly:   # files ordered by label: spread the subset over all of them
        return np.unique(np.linspace(0, n - 1, subset).round().astype(np.int64))
    return np.arange(subset)


def _load_mnist(dataset: str, split: str, cfg, subset, dtype) -> Split:
    from ..datasets.idx import find_idx_files, load_idx_dataset
    from ..datasets.transforms import normalize_mnist
    files = [provenance.file_record(split, p) for p in find_idx_files(dataset, split, cfg.data_dir)]
    images, labels = load_idx_dataset(dataset, split, data_dir=cfg.data_dir, strict=False)
    idx = _subset_index(len(labels), subset)
    x = normalize_mnist(images[idx], dtype)[:, None]                     # (N, 1, 28, 28)
    return Split(split, "static", labels[idx].astype(np.int64), x=x, files=files)


def _load_cifar10(dataset: str, split: str, cfg, subset, dtype) -> Split:
    from ..datasets.cifar import CIFAR10_BATCHES, find_cifar10_dir, load_cifar10
    from ..datasets.transforms import normalize_cifar10
    root = find_cifar10_dir(split, cfg.data_dir)
    files = [provenance.file_record(split, root / b) for b in CIFAR10_BATCHES[split]]
    images, labels = load_cifar10(split, data_dir=cfg.data_dir, strict=False)
    idx = _subset_index(len(labels), subset)
    x = normalize_cifar10(images[idx], dtype)                            # (N, 3, 32, 32)
    return Split(split, "static", labels[idx].astype(np.int64), x=x,
                 augment=bool(cfg.augment and split == "train"), files=files)


def _load_events(dataset: str, split: str, cfg, subset, dtype) -> Split:
    from ..datasets.nmnist import NMNISTDataset
    frames = NMNISTDataset(split, cfg.n_steps, cfg.nmnist_bin_us, data_dir=cfg.data_dir,
                           dtype=np.uint8, strict=False)
    idx = _subset_index(len(frames), subset, evenly=True)
    files = [provenance.listing_record(split, frames.root, frames.paths)]
    return Split(split, "events", np.asarray(frames.labels)[idx].astype(np.int64),
                 frames=frames, index=idx, files=files)


#: The loader of each preprocessing a dataset spec names
#: (:data:`snnsim.datasets.registry.PREPROCESSINGS`).
LOADERS = {"mnist": _load_mnist, "cifar10": _load_cifar10, "events": _load_events}


def load_split(dataset: str, split: str, cfg) -> Split:
    """Load and preprocess ``split`` ("train"|"test") of ``dataset`` for config ``cfg``,
    as its spec's ``preprocessing`` says.

    The files read are recorded in ``Split.files`` (path, size, sha256). An empty
    split is an error, and so is an N-MNIST file that does not decode (every file
    of the split is checked here, before any training)."""
    spec = get_spec(dataset)
    if spec.preprocessing not in LOADERS:
        raise ValueError(f"no loader for dataset {dataset!r} (preprocessing "
                         f"{spec.preprocessing!r}; known: {sorted(LOADERS)})")
    subset = cfg.train_subset if split == "train" else cfg.test_subset
    out = LOADERS[spec.preprocessing](spec.name, split, cfg, subset, np.dtype(cfg.dtype))
    if len(out) == 0:
        where = ", ".join(r["path"] for r in out.files) or dataset
        raise DatasetError(f"{where}: the {split} split of {dataset} is empty (0 samples)")
    if out.kind == "events":
        validate_events(out)
    return out


def validate_events(split: Split) -> None:
    """Decode every event file ``split`` uses, so that a bad file stops the run before
    training rather than after a whole epoch (DatasetError naming the file)."""
    from ..datasets.nmnist import read_nmnist_events
    for i in split.index:
        read_nmnist_events(split.frames.paths[int(i)])


def load_splits(cfg) -> tuple[Split, Split]:
    """(train, test) of ``cfg.dataset``, preprocessed, on the host; both checked before
    either is used."""
    return load_split(cfg.dataset, "train", cfg), load_split(cfg.dataset, "test", cfg)


def to_backend(x_host, split_kind: str, xp, dtype, n_steps: int, device=None):
    """A host batch as the network input ``(T, B, ...)`` on backend ``xp`` (on ``device``).

    Static images: one copy ``(B, ...)``, then a broadcast view over T steps.
    Event frames ``(B, T, ...)`` (uint8): copied as they are, then time-first in ``dtype``.
    """
    if split_kind == "events":
        x = xp.asarray(x_host, device=device)                             # (B, T, ...)
        return ascontiguous(xp.moveaxis(x, 1, 0), xp, dtype=dtype)        # (T, B, ...)
    x = xp.asarray(x_host, dtype=dtype, device=device)                    # (B, ...)
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


def shard_batch(split: Split, idx: np.ndarray, rng, rank: int, size: int):
    """Part ``rank`` of ``size`` of the batch ``idx`` (contiguous parts, ``np.array_split``;
    data-parallel training, :mod:`snnsim.training.parallel`). Augmentation is drawn for
    the whole batch and then sliced, so that ``rng`` advances as in one process."""
    part = np.array_split(np.arange(len(idx)), size)[rank]
    if split.augment:
        x, y = split.host_batch(idx, rng)
        return x[part], y[part]
    return split.host_batch(idx[part], rng)


def batches(split: Split, batch_size: int, xp, dtype, n_steps: int,
            rng: np.random.Generator | None = None, shuffle: bool = False, device=None,
            shard: tuple[int, int] | None = None, order: np.ndarray | None = None,
            start: int = 0):
    """Yield ``(x_in (T, B, ...), labels (B,))`` on backend ``xp`` over one pass of ``split``.

    The order is drawn from ``rng`` before the first batch (:func:`batch_order`), unless
    given (``order``, drawn by the caller); augmentation draws from ``rng`` per batch.
    ``start``: the pass begins at that batch (a run stopped inside an epoch goes on).
    Labels are int64 on the backend. ``shard = (rank, size)``: only that rank's part of
    every batch (:func:`shard_batch`).
    """
    if order is None:
        order = batch_order(len(split), rng, shuffle)
    for first in range(start * batch_size, len(order), batch_size):
        idx = order[first:first + batch_size]
        x_host, y_host = (split.host_batch(idx, rng) if shard is None
                          else shard_batch(split, idx, rng, *shard))
        yield (to_backend(x_host, split.kind, xp, dtype, n_steps, device),
               xp.asarray(y_host, device=device))


__all__ = ["CIFAR10_CROP_PAD", "LOADERS", "Split", "batch_order", "batches",
           "load_split", "load_splits", "n_batches", "shard_batch", "to_backend"]
