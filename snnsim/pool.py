"""Pooling of PSCs, as the authors pool: a scaled sum over each k×k window.

The pooling layer has no neuron (docs/model.md): it passes on

    out[t, b, c, i, j] = POOL_GAIN · Σ_{p,q < k} a[t, b, c, k·i + p, k·j + q]

with stride k and no padding. Its derivative is the same constant on every
window element:

    ∂L/∂a[t, b, c, k·i + p, k·j + q] = POOL_GAIN · ∂L/∂out[t, b, c, i, j].

An input whose H or W is not a multiple of k is floored, as PyTorch's pooling
and the authors' code (a stride-k convolution) do: H_out = ⌊H/k⌋, the last
H - k·H_out rows (columns) are not read and get zero gradient.
"""
from __future__ import annotations

from .backend import array_module, device
from .layers import Layer

#: Gain of the pooling sum (authors' code: their pooling kernel is all 1.1,
#: the default of their config key ``theta``). Not in the paper.
POOL_GAIN = 1.1


def _pool_output_shape(in_shape, kernel_size: int):
    if len(in_shape) != 3:
        raise ValueError(f"Pool2d expects input features (C, H, W), got shape {tuple(in_shape)}")
    C, H, W = in_shape
    if H < kernel_size or W < kernel_size:
        raise ValueError(f"Pool2d with kernel {kernel_size} needs H, W >= {kernel_size}, got {H}x{W}")
    return (C, H // kernel_size, W // kernel_size)


def pool_forward(a_prev, kernel_size: int, gain: float = POOL_GAIN):
    """out = gain · Σ over each k×k window of the PSC, stride k, floor.

    ``a_prev`` ``(T, B, C, H, W)`` -> ``(T, B, C, ⌊H/k⌋, ⌊W/k⌋)``, and the cache. The sum
    runs over the k² window offsets (p, q), one strided slice a[..., k·i + p, k·j + q] each.
    """
    if a_prev.ndim != 5:
        raise ValueError(f"pool_forward expects a_prev of shape (T, B, C, H, W), got {a_prev.shape}")
    k = kernel_size
    _, H_out, W_out = _pool_output_shape(a_prev.shape[2:], k)
    total = None
    for p in range(k):
        for q in range(k):
            window = a_prev[..., p:k * H_out:k, q:k * W_out:k]                  # (T, B, C, Ho, Wo)
            total = window if total is None else total + window
    return gain * total, (a_prev.shape, k, gain)                              # (T, B, C, Ho, Wo)


def pool_backward(d_out, cache):
    """∂L/∂a = gain · ∂L/∂out on every element of its window, written offset by offset
    (p, q); 0 on floored-off rows and columns. ``d_out`` ``(T, B, C, Ho, Wo)`` ->
    ``(T, B, C, H, W)``."""
    in_shape, k, gain = cache
    xp = array_module(d_out)
    T, B, C, H_out, W_out = d_out.shape
    g = gain * d_out                                                             # (T, B, C, Ho, Wo)
    floored = tuple(in_shape[3:]) != (k * H_out, k * W_out)
    make = xp.zeros if floored else xp.empty
    d_in = make(tuple(in_shape), dtype=d_out.dtype, device=device(d_out))      # (T, B, C, H, W)
    for p in range(k):
        for q in range(k):
            d_in[..., p:k * H_out:k, q:k * W_out:k] = g
    return d_in


class Pool2d(Layer):
    """Sum pooling of PSCs over k×k windows, stride k, times ``gain``
    (:data:`POOL_GAIN` = 1.1, the authors' value). Non-spiking: no neuron, no
    parameters. ``(T, B, C, H, W)`` -> ``(T, B, C, ⌊H/k⌋, ⌊W/k⌋)``."""

    spiking = False

    def __init__(self, kernel_size: int, gain: float = POOL_GAIN):
        super().__init__()
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"Pool2d needs an integer kernel_size >= 1, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.gain = float(gain)

    def output_shape(self, in_shape):
        return _pool_output_shape(tuple(in_shape), self.kernel_size)

    def init_params(self, in_shape, rng, xp, dtype):
        self.output_shape(in_shape)                                             # validate early
        self.params = {}

    def forward(self, a_in, train=False, rng=None):
        return pool_forward(a_in, self.kernel_size, self.gain)

    def backward(self, d_out, cache, need_input_grad=True):
        return (pool_backward(d_out, cache) if need_input_grad else None), {}

    def describe(self):
        return f"P{self.kernel_size}"


__all__ = ["POOL_GAIN", "Pool2d", "pool_backward", "pool_forward"]
