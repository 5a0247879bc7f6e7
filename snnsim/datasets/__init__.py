"""Dataset layer: readers for MNIST / Fashion-MNIST (IDX), CIFAR-10 (pickled batches)
and N-MNIST (binary events), preprocessing transforms and a registry of known files.

All readers return NumPy arrays on the host. File formats, search locations and how to
obtain each dataset are documented in the submodules and in ``data/README.md``:

* :mod:`.idx` - ``read_idx``, ``load_idx_dataset("mnist" | "fashion-mnist", split)``
* :mod:`.cifar` - ``read_cifar_batch``, ``load_cifar10(split)``
* :mod:`.nmnist` - ``read_nmnist_events``, ``bin_events``, ``load_nmnist``,
  ``NMNISTDataset``
* :mod:`.transforms` - ``normalize_mnist``, ``normalize_cifar10``, ``random_crop_flip``
* :mod:`.registry` - checksums, search order, ``verify_dataset_files``
* :mod:`.download` - ``python3 -m snnsim.datasets.download NAME`` (never used at run time,
  so not imported here)

Every malformed or missing file raises :class:`DatasetError` (a ``ValueError``) whose
message names the file and the problem.
"""

from .cifar import load_cifar10, read_cifar_batch
from .errors import DatasetError, DatasetNotFoundError, DownloadError
from .idx import find_idx_files, load_idx_dataset, read_idx, write_idx
from .nmnist import (
    NMNISTDataset,
    bin_events,
    decode_nmnist_events,
    encode_nmnist_events,
    load_nmnist,
    read_nmnist_events,
)
from .registry import DATASETS, search_dirs, verify_dataset_files
from .transforms import normalize_cifar10, normalize_mnist, random_crop_flip

__all__ = [
    "DatasetError", "DatasetNotFoundError", "DownloadError",
    "read_idx", "write_idx", "find_idx_files", "load_idx_dataset",
    "read_cifar_batch", "load_cifar10",
    "read_nmnist_events", "decode_nmnist_events", "encode_nmnist_events", "bin_events",
    "load_nmnist", "NMNISTDataset",
    "normalize_mnist", "normalize_cifar10", "random_crop_flip",
    "DATASETS", "search_dirs", "verify_dataset_files",
]
