"""Which data a run read: the files, as found, with their size and sha256.

Recorded in ``config.json`` (key ``data_files``) and in every checkpoint (attribute
``data_files``), and printed at the start of a run. A path is written relative to
the repository when it lies inside it, else as it was given (``--data-dir``, or the
search path of :mod:`snnsim.datasets.registry`), so that no absolute path of the
machine that ran the tests ends up in a committed file through the repository's
own ``data/``. An installed package has no repository: its paths are written as given.

One record per file::

    {"split": "train", "path": "data/fashion-mnist/train-images-idx3-ubyte.gz",
     "bytes": 26421880, "sha256": "..."}

N-MNIST splits are thousands of small files, read lazily: a split is recorded as
its folder with ``files`` (their number) and ``sha256`` of its listing (one line
``<relative path> <bytes>`` per file, sorted), not of the event bytes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..version import is_source_tree, package_dir

#: The source tree that holds the running package; None for an installed package
#: (``site-packages/snnsim``), which has no repository.
REPO_ROOT = package_dir().parent if is_source_tree(package_dir().parent) else None


def display_path(path) -> str:
    """``path`` relative to the repository when inside it, else as given."""
    path = Path(path)
    if REPO_ROOT is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def sha256_file(path) -> str:
    """sha256 of the file's bytes as stored (compressed files are not decompressed)."""
    from ..datasets.registry import digest_file
    return digest_file(path, decompress=False)[1]


def file_record(split: str, path) -> dict:
    """The record of one file read for ``split``."""
    path = Path(path)
    return {"split": split, "path": display_path(path), "bytes": path.stat().st_size,
            "sha256": sha256_file(path)}


def listing_record(split: str, root, paths) -> dict:
    """The record of a folder of many files (N-MNIST): their number and the sha256 of
    the sorted listing of relative paths and sizes."""
    root = Path(root)
    lines = sorted(f"{Path(p).relative_to(root).as_posix()} {Path(p).stat().st_size}\n"
                   for p in paths)
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    return {"split": split, "path": display_path(root), "files": len(lines),
            "sha256_of_listing": digest}


def describe(records: list[dict]) -> str:
    """Lines for the run's log: one per record."""
    out = []
    for r in records:
        if "files" in r:
            out.append(f"  {r['split']:<5} {r['path']}/ ({r['files']} files, listing sha256 "
                       f"{r['sha256_of_listing']})")
        else:
            out.append(f"  {r['split']:<5} {r['path']} ({r['bytes']} bytes, sha256 "
                       f"{r['sha256']})")
    return "\n".join(out)


def differences(old: list[dict], new: list[dict]) -> list[str]:
    """Paths whose content (sha256) differs between two records, or that one lacks."""
    def key(r):
        return r.get("sha256") or r.get("sha256_of_listing")
    old_by = {(r["split"], Path(r["path"]).name): key(r) for r in old}
    new_by = {(r["split"], Path(r["path"]).name): key(r) for r in new}
    return sorted(f"{s} {n}" for (s, n) in set(old_by) | set(new_by)
                  if old_by.get((s, n)) != new_by.get((s, n)))


__all__ = ["REPO_ROOT", "describe", "differences", "display_path", "file_record",
           "listing_record", "sha256_file"]
