"""Exception types shared by the dataset readers, loaders and the downloader."""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetNotFoundError", "DownloadError"]


class DatasetError(ValueError):
    """A dataset file is missing, malformed or does not match what was expected.

    The message always names the file (or the places searched) and the
    problem: truncated payload, bad magic number, wrong dimensions, count
    mismatch between images and labels, value out of range, checksum mismatch.
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No copy of a dataset was found; the message lists every place searched
    and says how to obtain the data. Catchable as ``DatasetError`` or as
    ``FileNotFoundError``."""


class DownloadError(DatasetError):
    """A download failed (HTTP error, network error, checksum mismatch). No file
    is left under the final name when this is raised."""
