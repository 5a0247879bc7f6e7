"""Dataset downloader: ``python3 -m snnsim.datasets.download NAME [--dest DIR] [--base-url URL]``.

Fetches the upstream files listed in :mod:`snnsim.datasets.registry` into ``DIR``
(default ``data/<name>``, relative to the current directory, i.e. the repository's
``data/<name>/`` when run from the repository root, where the loaders look):

* ``mnist``, ``fashion-mnist``: the four ``*-ubyte.gz`` files, kept compressed (the
  readers decompress on the fly). A file is accepted if the md5 of the ``.gz`` is the
  upstream one, or (for a mirror that re-compressed the files) if its decompressed
  size and sha256 match the registry.
* ``cifar10``: ``cifar-10-python.tar.gz`` (md5 checked), extracted to
  ``DIR/cifar-10-batches-py/`` (only regular files under that folder are accepted),
  the batch md5s checked; the archive is deleted unless ``--keep-archive``.
* ``nmnist``: not downloadable by this tool; the error says how to get it by hand.

``--base-url`` replaces the upstream location (the file names are appended to it), for
mirrors and for tests. Every file is downloaded into a temporary file in the
destination directory, verified, then renamed into place with ``os.replace``: no
partial or unverified file is ever left under the final name. Nothing in the
simulator calls this at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..commandline import prog_name
from . import registry
from .errors import DatasetError, DownloadError

__all__ = ["download_file", "download_dataset", "main"]

_CHUNK = 1 << 16


def download_file(url: str, dest, *, md5=None, sha256=None, verify=None,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest``.

    The body is streamed into a temporary file next to ``dest`` while its md5/sha256 are
    computed; if ``md5``/``sha256`` are given they must match, and ``verify(tmp_path)``
    (if given) may raise to reject the file. Only then is the temporary file renamed to
    ``dest``. On any failure (HTTP error, network error, short body, checksum mismatch)
    the temporary file is deleted and :class:`DownloadError` is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "snnsim-downloader"})
            try:
                resp = urllib.request.urlopen(req, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise DownloadError(f"{url}: {exc}") from exc
            with resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                got = 0
                from tqdm import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, disable=not progress, leave=False) as bar:
                    while True:
                        try:
                            chunk = resp.read(_CHUNK)
                        except OSError as exc:
                            raise DownloadError(f"{url}: read failed: {exc}") from exc
                        if not chunk:
                            break
                        out.write(chunk)
                        h_md5.update(chunk)
                        h_sha.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            if total is not None and got != total:
                raise DownloadError(f"{url}: received {got} bytes, expected {total}")
        if md5 is not None and h_md5.hexdigest() != md5.lower():
            raise DownloadError(f"{url}: checksum mismatch: md5 {h_md5.hexdigest()}, "
                                f"expected {md5} (file discarded)")
        if sha256 is not None and h_sha.hexdigest() != sha256.lower():
            raise DownloadError(f"{url}: checksum mismatch: sha256 {h_sha.hexdigest()}, "
                                f"expected {sha256} (file discarded)")
        if verify is not None:
            try:
                verify(tmp)
            except DatasetError as exc:
                if isinstance(exc, DownloadError):
                    raise
                raise DownloadError(f"{url}: {exc} (file discarded)") from exc
        os.replace(tmp, dest)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return dest


def _idx_verifier(entry: registry.FileEntry):
    """Accept a downloaded .gz by its upstream md5, else by decompressed size+sha256."""

    def verify(path):
        got = registry.md5_of(path)
        if entry.gz_md5 and got == entry.gz_md5:
            return
        if entry.sha256 is not None:
            registry.check_entry(entry, path)  # raises DatasetError on mismatch
            return
        raise DownloadError(f"{entry.filename}.gz: checksum mismatch: md5 {got}, expected "
                            f"{entry.gz_md5} (file discarded)")

    return verify


def _url(base_url, filename, default):
    return base_url.rstrip("/") + "/" + filename if base_url else default


def _download_idx(spec, dest, base_url, progress, force, timeout):
    paths = []
    for e in spec.files:
        final = dest / (e.filename + ".gz")
        if final.is_file() and not force:
            try:
                _idx_verifier(e)(final)
                print(f"{final}: already present and verified", file=sys.stderr)
                paths.append(final)
                continue
            except DatasetError:
                pass  # re-download over it
        paths.append(download_file(_url(base_url, e.filename + ".gz", e.url), final,
                                   verify=_idx_verifier(e), progress=progress,
                                   timeout=timeout))
    return paths


def _safe_members(tar, top):
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if (not parts or m.name.startswith(("/", "\\")) or ".." in parts
                or parts[0] != top or not (m.isfile() or m.isdir())):
            raise DownloadError(f"{tar.name}: refusing archive member {m.name!r} "
                                f"(only regular files under {top}/ are allowed)")
        members.append(m)
    return members


def extract_cifar10(archive, dest) -> Path:
    """Extract ``cifar-10-batches-py/`` from ``archive`` into ``dest`` (atomically)."""
    from .cifar import CIFAR10_DIRNAME

    dest = Path(dest)
    final = dest / CIFAR10_DIRNAME
    tmpdir = Path(tempfile.mkdtemp(dir=dest, prefix=".cifar-extract-"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _safe_members(tar, CIFAR10_DIRNAME)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmpdir, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmpdir, members=members)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DownloadError(f"{archive}: cannot extract: {exc}") from exc
        if not (tmpdir / CIFAR10_DIRNAME).is_dir():
            raise DownloadError(f"{archive}: no {CIFAR10_DIRNAME}/ inside")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmpdir / CIFAR10_DIRNAME, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return final


def _download_cifar(spec, dest, base_url, progress, force, timeout, keep_archive):
    archive_name = spec.archive_url.rsplit("/", 1)[1]
    archive = dest / archive_name
    if not force:
        try:
            checks = registry.verify_dataset_files(spec.name, dest)
            print(f"{dest}: already present and verified", file=sys.stderr)
            return [c.path for c in checks]
        except DatasetError:
            pass
    if force or not (archive.is_file() and registry.md5_of(archive) == spec.archive_md5):
        download_file(_url(base_url, archive_name, spec.archive_url), archive,
                      md5=spec.archive_md5, progress=progress, timeout=timeout)
    extract_cifar10(archive, dest)
    checks = registry.verify_dataset_files(spec.name, dest)
    if not keep_archive:
        archive.unlink()
    return [c.path for c in checks]


def download_dataset(name: str, dest=None, base_url=None, *, progress: bool = True,
                     force: bool = False, keep_archive: bool = False,
                     timeout: float = 60.0) -> list:
    """Download dataset ``name`` into ``dest`` (default ``data/<name>``); return the paths.

    Files already present and verified are skipped unless ``force``. Raises
    :class:`DownloadError` (a :class:`DatasetError`) on failure.
    """
    spec = registry.get_spec(name)
    if not spec.downloadable:
        raise DownloadError(f"{spec.name} cannot be downloaded by this tool: {spec.manual}")
    dest = Path(dest) if dest is not None else Path("data") / spec.name
    dest.mkdir(parents=True, exist_ok=True)
    if spec.archive_url:
        return _download_cifar(spec, dest, base_url, progress, force, timeout, keep_archive)
    return _download_idx(spec, dest, base_url, progress, force, timeout)


def _parser():
    p = argparse.ArgumentParser(
        prog=prog_name("python3 -m snnsim.datasets.download"),
        description="Download a dataset for snnsim and verify its checksums. Known "
                    f"datasets: {', '.join(sorted(registry.DATASETS))} (nmnist must be "
                    "fetched by hand; see data/README.md). Fashion-MNIST is also "
                    "available as the Debian package dataset-fashion-mnist.")
    p.add_argument("name", help="dataset name: " + ", ".join(sorted(registry.DATASETS)))
    p.add_argument("--dest", type=Path, default=None,
                   help="destination directory (default: data/<name>)")
    p.add_argument("--base-url", default=None,
                   help="download from this URL prefix instead of upstream (file names "
                        "are appended)")
    p.add_argument("--force", action="store_true", help="download even if files exist")
    p.add_argument("--keep-archive", action="store_true",
                   help="keep cifar-10-python.tar.gz after extraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="network timeout in seconds (default 60)")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 error)."""
    args = _parser().parse_args(argv)
    try:
        paths = download_dataset(args.name, args.dest, args.base_url,
                                 progress=not args.no_progress, force=args.force,
                                 keep_archive=args.keep_archive, timeout=args.timeout)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
