"""Array backends: NumPy on the CPU, CuPy on a CUDA GPU.

This is the only module of snnsim that imports CuPy, and it does so lazily,
only when the ``cupy`` backend is asked for by name. Everything else takes its
array module from the arrays it is given (:func:`array_module`), so that the
array type in equals the array type out and nothing is copied between host and
device behind the user's back. Conversion to NumPy happens only at the edges
(plots, HDF5 files) through :func:`to_numpy`.
"""
from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

BACKENDS = ("numpy", "cupy")


class BackendError(RuntimeError):
    """A backend was asked for that this machine cannot provide."""


def _cupy() -> ModuleType:
    try:
        import cupy  # the one CuPy import of snnsim
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError(
            "the 'cupy' backend needs CuPy: install the wheel matching your CUDA "
            "toolkit, e.g. `pip install cupy-cuda12x`, or use --backend numpy"
        ) from exc
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise BackendError(f"CuPy is installed but no CUDA device is usable: {exc}") from exc
    if n_devices < 1:  # pragma: no cover
        raise BackendError("CuPy is installed but no CUDA device was found")
    return cupy


def get_backend(name: str) -> ModuleType:
    """Return the array module for a backend name, ``"numpy"`` or ``"cupy"``.

    The choice is explicit: asking for ``"cupy"`` on a machine without CuPy or
    without a GPU raises :class:`BackendError`; it never falls back to NumPy.
    """
    if name == "numpy":
        return np
    if name == "cupy":
        return _cupy()
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy()
    except BackendError:
        return False
    return True


def array_module(*arrays) -> ModuleType:
    """The array module (numpy or cupy) of the given arrays.

    CuPy is consulted only if it has already been imported (by
    :func:`get_backend`); a NumPy-only program never imports it. Mixing host
    and device arrays is an error, not a silent copy.
    """
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        kinds = {isinstance(a, cupy.ndarray) for a in arrays if hasattr(a, "shape")}
        if kinds == {True}:
            return cupy
        if kinds == {True, False}:
            raise TypeError("mixed NumPy and CuPy arrays; move them to one device first")
    return np


def backend_name(xp: ModuleType) -> str:
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "numpy" if xp is np else "cupy"


def to_numpy(a):
    """A NumPy array of ``a`` (copied from the device for CuPy arrays)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def synchronize(xp: ModuleType) -> None:
    """Wait for the device to finish queued work (CuPy); nothing for NumPy.
    Call it only where a number is read: timings, printed figures."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


class PeakMemory:
    """Peak bytes allocated by array work inside a ``with`` block.

    NumPy: tracemalloc's peak (NumPy reports its data buffers to it). CuPy: the
    bytes the default memory pool holds after the block, starting from an
    emptied pool — the pool keeps every block it needed, so this is the peak
    of simultaneously live device arrays, rounded up to CuPy's block sizes.
    """

    def __init__(self, xp: ModuleType):
        self.xp = xp
        self.peak_bytes = 0

    def __enter__(self):
        if self.xp is np:
            import tracemalloc
            self._tm = tracemalloc
            self._was_tracing = tracemalloc.is_tracing()
            if not self._was_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self._base = tracemalloc.get_traced_memory()[0]
        else:
            synchronize(self.xp)
            self.xp.get_default_memory_pool().free_all_blocks()
            self._base = self.xp.get_default_memory_pool().used_bytes()
        return self

    def __exit__(self, *exc):
        if self.xp is np:
            self.peak_bytes = self._tm.get_traced_memory()[1] - self._base
            if not self._was_tracing:
                self._tm.stop()
        else:
            synchronize(self.xp)
            self.peak_bytes = self.xp.get_default_memory_pool().total_bytes() - self._base
        return False
