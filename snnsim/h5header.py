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


def check_header(f, path, format_name: str, format_version, what: str,
                 error: type[Exception]) -> None:
    """Raise ``error`` naming ``path`` unless ``f`` is a ``format_name`` file of
    version ``format_version`` (an int, or a tuple of the versions read); ``what``
    names the kind ("checkpoint", ...)."""
    if not has_format(f, format_name):
        shown = repr(f.attrs.get("format"))
        raise error(f"{path}: not an snnsim {what} (format attribute "
                    f"{shown[:60]}, expected {format_name!r})")
    versions = format_version if isinstance(format_version, tuple) else (format_version,)
    raw = f.attrs["format_version"]
    version = int(raw) if getattr(raw, "shape", ()) == () and str(raw).lstrip("-").isdigit() \
        else None
    if version not in versions:
        raise error(f"{path}: {what} format version {str(raw)[:40]}; this snnsim reads "
                    f"version {' or '.join(map(str, versions))}")


__all__ = ["check_header", "has_format", "layer_name", "snnsim_version", "write_header"]
