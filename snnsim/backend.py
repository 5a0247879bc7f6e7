"""Array backends: NumPy on the CPU, CuPy on a CUDA GPU, PyTorch tensors (its CPU, or its
CUDA device where present), and any array API library in tests.

The engine is written in the Python array API standard: it takes its namespace
``xp`` from the arrays it is given (:func:`array_module`) and creates new arrays on
their device (:func:`device`), so that the array type and device in equal those out
and nothing is copied between host and device behind the user's back. Conversion to
NumPy happens only at the edges (plots, HDF5 files) through :func:`to_numpy`.

Namespaces: NumPy itself for NumPy arrays (NumPy ≥ 2 implements the standard
functions the engine uses, at NumPy's own speed), ``array_api_compat``'s wrappers of
CuPy and PyTorch for theirs, and the library's own namespace for a standard library such as
``array_api_strict`` (the test suite runs the engine on it, on a non-default device:
it refuses implicit NumPy conversion, mixed devices and mixed-kind promotions).

This is the only module of snnsim that imports CuPy or PyTorch, and it does so
lazily, only when the ``cupy`` or ``torch`` backend is asked for by name.
"""
from __future__ import annotations

import sys
from types import ModuleType

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "cupy", "torch")
#: NumPy's own namespace speaks the standard from NumPy 2.0 on.
_NUMPY_IS_STANDARD = int(np.__version__.split(".")[0]) >= 2


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


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError("the 'torch' backend needs PyTorch (`pip install torch`), "
                           "or use --backend numpy") from exc
    return torch


def default_device(name: str):
    """Where a backend puts new parameters: PyTorch's CUDA device when it has one, else
    its CPU; None (the library's own default) for NumPy and CuPy."""
    if name != "torch":
        return None
    torch = _torch()
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def get_backend(name: str) -> ModuleType:
    """Return the array namespace for a backend name, ``"numpy"``, ``"cupy"`` or ``"torch"``.

    The choice is explicit: asking for ``"cupy"`` on a machine without CuPy or
    without a GPU raises :class:`BackendError`; it never falls back to NumPy.
    """
    if name == "numpy":
        return np if _NUMPY_IS_STANDARD else array_api_compat.array_namespace(np.empty(0))
    if name == "cupy":
        return array_api_compat.array_namespace(_cupy().empty(0))
    if name == "torch":
        return array_api_compat.array_namespace(_torch().empty(0))
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def check_backend(name: str) -> None:
    """Raise :class:`BackendError` when this machine cannot run the backend ``name``,
    without allocating on a device (a study's worker checks before it creates a trial)."""
    if name == "cupy":
        _cupy()
    elif name == "torch":
        _torch()


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy()
    except BackendError:
        return False
    return True


def array_module(*arrays) -> ModuleType:
    """The array API namespace ``xp`` of the given arrays (None entries ignored).

    NumPy arrays (and scalars) give ``numpy`` itself, by a check cheap enough for
    the inner loops; anything else goes through
    :func:`array_api_compat.array_namespace`, which wraps CuPy without importing it
    in a NumPy-only program. Mixing arrays of two libraries is a TypeError, not a
    silent copy.
    """
    for a in arrays:                                  # the inner loops' case: all NumPy arrays
        if type(a) is not np.ndarray:
            break
    else:
        if _NUMPY_IS_STANDARD:
            return np
    arrays = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if _NUMPY_IS_STANDARD and all(isinstance(a, (np.ndarray, np.generic)) for a in arrays):
        return np
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        raise TypeError(f"arrays of several libraries ({exc}); move them to one device first") from exc


def device(x):
    """The device of array ``x``: create new arrays with ``device=device(x)`` so that
    they live beside it (``"cpu"`` for NumPy)."""
    if type(x) is np.ndarray:
        return "cpu"
    return array_api_compat.device(x)


def is_numpy_namespace(xp: ModuleType) -> bool:
    return xp is np or array_api_compat.is_numpy_namespace(xp)


def backend_name(xp: ModuleType) -> str:
    """``"numpy"``, ``"cupy"``, or the name of another array API namespace."""
    if is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    return xp.__name__.rsplit(".", 1)[-1]


def to_numpy(a):
    """A NumPy array of ``a``, an explicit copy to the host for arrays of other
    libraries or devices (CuPy: ``.get()``; others: ``to_device("cpu")`` or DLPack)."""
    if isinstance(a, (np.ndarray, np.generic)) or not hasattr(a, "shape"):
        return np.asarray(a)
    if hasattr(a, "get"):
        return a.get()
    if array_api_compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(array_module(a)):
        import array_api_strict
        a = a.to_device(array_api_strict.Device("CPU_DEVICE"))
    return np.from_dlpack(a)


def synchronize(xp: ModuleType) -> None:
    """Wait for the device to finish queued work (CuPy); nothing for NumPy.
    Call it only where a number is read: timings, printed figures."""
    if backend_name(xp) == "cupy":
        _cupy().cuda.get_current_stream().synchronize()
    elif backend_name(xp) == "torch" and _torch().cuda.is_available():
        _torch().cuda.synchronize()


class PeakMemory:
    """Peak bytes allocated by array work inside a ``with`` block.

    NumPy: tracemalloc's peak (NumPy reports its data buffers to it); the same for
    ``array_api_strict``, whose arrays are NumPy buffers (the tests run the benchmark
    on it). CuPy: the bytes the default memory pool holds after the block, starting
    from an emptied pool — the pool keeps every block it needed, so this is the peak
    of simultaneously live device arrays, rounded up to CuPy's block sizes.
    """

    def __init__(self, xp: ModuleType):
        name = backend_name(xp)
        if name not in ("numpy", "cupy", "array_api_strict"):
            raise ValueError(f"peak memory is measured on numpy and cupy, not {name}")
        self.xp = _cupy() if name == "cupy" else np
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


def cupy_module_of(*arrays) -> ModuleType | None:
    """The ``cupy`` module itself when every array is a CuPy array, else None (for the
    raw CUDA kernels; CuPy is looked up only if something has imported it)."""
    cupy = sys.modules.get("cupy")
    if cupy is None or not arrays or not all(isinstance(a, cupy.ndarray) for a in arrays):
        return None
    return cupy


def native_module(xp: ModuleType) -> ModuleType:
    """The library behind namespace ``xp`` for NumPy/CuPy-only code (memory layout,
    raw CUDA kernels, memory pools): ``numpy`` or ``cupy``; TypeError otherwise."""
    if is_numpy_namespace(xp):
        return np
    if array_api_compat.is_cupy_namespace(xp):
        return _cupy()
    raise TypeError(f"{backend_name(xp)} arrays have no NumPy/CuPy memory layout")
