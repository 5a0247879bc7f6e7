"""The header every HDF5 file of snnsim carries, written and checked in one place.

Checkpoints (``docs/checkpoint_format.md``), recordings
(``docs/recording_format.md``) and inspection files (``docs/inspect_format.md``)
all start with the same root attributes::

    format          the file kind, e.g. "snnsim-checkpoint"
    format_version  an integer; a reader accepts only the version it knows
    snnsim_version  the version of the snnsim that wrote the file

and name the groups of their layers ``layer_00``, ``layer_01``, ... (:func:`layer_name`).
"""
from __future__ import annotations


def layer_name(i: int) -> str:
    """The group name of layer ``i``: ``layer_NN`` (two digits at least)."""
    return f"layer_{i:02d}"


def snnsim_version() -> str:
    from .version import __version__
    return __version__


def write_header(f, format_name: str, format_version: int) -> None:
    """Write ``format``, ``format_version`` and ``snnsim_version`` on the root of
    the open ``h5py.File`` ``f``."""
    f.attrs["format"] = format_name
    f.attrs["format_version"] = format_version
    f.attrs["snnsim_version"] = snnsim_version()


def has_format(f, format_name: str) -> bool:
    """Whether the open file ``f`` says it is a ``format_name`` file."""
    return f.attrs.get("format") == format_name


def check_header(f, path, format_name: str, format_version: int, what: str,
                 error: type[Exception]) -> None:
    """Raise ``error`` naming ``path`` unless ``f`` is a ``format_name`` file of
    version ``format_version``; ``what`` names the kind ("checkpoint", ...)."""
    if not has_format(f, format_name):
        raise error(f"{path}: not an snnsim {what} (format attribute "
                    f"{f.attrs.get('format')!r}, expected {format_name!r})")
    version = int(f.attrs["format_version"])
    if version != format_version:
        raise error(f"{path}: {what} format version {version}; this snnsim reads version "
                    f"{format_version}")


__all__ = ["check_header", "has_format", "layer_name", "snnsim_version", "write_header"]
