"""Memory layout: the engine's only NumPy/CuPy-specific calls, each with a standard path.

The array API standard has no strides and no memory order, so the engine asks this
module instead of the arrays:

- :func:`is_time_broadcast`: is ``x`` a read-only view repeated over time (stride 0
  along axis 0, as :func:`snnsim.network.repeat_static` makes on NumPy and CuPy)?
  PyTorch answers from its strides too; other libraries answer False, and the
  network takes the general path (same result, T times more work in the first layer).
- :func:`ascontiguous`: a C-contiguous copy where the array is not (NumPy, CuPy),
  so that later products and the fused kernels read neighbouring addresses;
  elsewhere the array itself (layout is the library's business).
- :func:`into`: an element-wise function written into an existing array, ``out=`` on
  NumPy/CuPy (no temporary), ``out[...] = f(...)`` elsewhere (the standard has no ``out``).
- :func:`window_view`: im2col's receptive fields as one strided view on NumPy (None
  elsewhere: the caller copies one slice per kernel offset).
"""
from __future__ import annotations

from .backend import backend_name, native_module


def _has_layout(xp) -> bool:
    return backend_name(xp) in ("numpy", "cupy")


def is_time_broadcast(x, xp) -> bool:
    """True for a NumPy/CuPy/PyTorch view ``(T, ...)`` with T > 1 whose axis 0 has stride 0."""
    if backend_name(xp) == "torch":
        return x.ndim > 0 and x.shape[0] > 1 and x.stride(0) == 0
    return _has_layout(xp) and x.shape[0] > 1 and x.strides[0] == 0


def ascontiguous(x, xp, dtype=None):
    """``x`` in C order (a copy only if it is not) on NumPy/CuPy, ``x`` elsewhere; cast to
    ``dtype`` if given (in the same copy)."""
    if not _has_layout(xp):
        return x if dtype is None else xp.astype(x, dtype, copy=False)
    return native_module(xp).ascontiguousarray(x, dtype=dtype)


def window_view(a_pad, xp, kernel_size: int, stride: int, H_out: int, W_out: int):
    """The k×k receptive fields of ``a_pad`` ``(C, N, Hp, Wp)`` as a read-only strided view
    ``(C, k, k, N, H_out, W_out)`` on NumPy (one copy then gathers them all, a few times
    faster than one slice per offset); None elsewhere (the caller slices)."""
    if backend_name(xp) != "numpy":
        return None
    import numpy as np
    k, s = kernel_size, stride
    v = np.lib.stride_tricks.sliding_window_view(a_pad, (k, k), axis=(2, 3))   # (C, N, H', W', k, k)
    v = v[:, :, :s * (H_out - 1) + 1:s, :s * (W_out - 1) + 1:s]               # (C, N, Ho, Wo, k, k)
    return v.transpose(0, 4, 5, 1, 2, 3)                                       # (C, k, k, N, Ho, Wo)


def into(xp, name: str, *args, out):
    """``out[...] = xp.<name>(*args)``, without a temporary on NumPy/CuPy; returns ``out``."""
    if _has_layout(xp):
        return getattr(native_module(xp), name)(*args, out=out)
    out[...] = getattr(xp, name)(*args)
    return out


__all__ = ["ascontiguous", "into", "is_time_broadcast", "window_view"]
