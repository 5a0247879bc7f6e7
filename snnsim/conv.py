"""Spiking 2-D convolution: x^l[t] = W^l ⊛ a^{l-1}[t], the conv form of (4).

The paper writes every layer as x = W a (4), "also applied to convolutional and
pooling layers" (section 3.1). For a convolution the product W a is the
cross-correlation (no kernel flip, as in PyTorch and the authors' code)

    x[t, b, o, i, j] = Σ_{c, p, q} W[o, c, p, q] · a_pad[t, b, c, s·i + p, s·j + q]

with ``s`` the stride and ``a_pad`` the input zero-padded by ``padding`` on each
side. As for :mod:`snnsim.layers`, there is no bias and no delay: the current of
step t comes from the PSC of step t.

Implementation (CS231n ``conv_forward_im2col`` style, one GEMM): the T·B images
of a ``(T, B, C, H, W)`` input are one batch of N = T·B images. im2col gathers
every k×k receptive field into a matrix ``cols`` of shape ``(C·k·k, N·Ho·Wo)``
by one strided slice per kernel offset (kh, kw); then x = W_flat @ cols is a
single ``(C_out, C·k·k) @ (C·k·k, N·Ho·Wo)`` product. The backward uses the same
matrix: ∂L/∂W = δ_flat @ colsᵀ (8) and ∂L/∂cols = W_flatᵀ @ δ_flat (10), which
col2im scatters back by adding one strided slice per (kh, kw) — within one
offset the slices do not overlap, so plain ``+=`` is exact on NumPy and CuPy
alike (no ``add.at``).

Memory: the cache holds ``cols``, k² times the (padded) input of the layer, e.g.
CIFAR-10 CNN1's second conv at T=5, B=50: 96·9 × 250·32·32 floats ≈ 0.9 GB in
float32.
"""
from __future__ import annotations

import math

from .backend import array_module, device
from .layers import Layer
from .layout import ascontiguous, window_view
from .params import NeuronParams


# --- shapes --------------------------------------------------------------------
def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length ⌊(size + 2·padding - k)/stride⌋ + 1 along one spatial axis
    (same rule as PyTorch and the authors' code)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def _check_conv_args(in_shape, w_shape, stride: int, padding: int):
    """Validate a conv's input feature shape ``(C, H, W)`` against a kernel of
    shape ``(C_out, C_in, k, k)``; return the output feature shape."""
    if len(in_shape) != 3:
        raise ValueError(f"Conv2d expects input features (C, H, W), got shape {tuple(in_shape)}")
    c_out, c_in, kh, kw = w_shape
    if kh != kw:
        raise ValueError(f"Conv2d supports square kernels only, got {kh}x{kw}")
    if stride < 1:
        raise ValueError(f"Conv2d needs stride >= 1, got {stride}")
    if padding < 0:
        raise ValueError(f"Conv2d needs padding >= 0, got {padding}")
    C, H, W = in_shape
    if C != c_in:
        raise ValueError(f"Conv2d kernel expects {c_in} input channels, got {C} "
                         f"(input shape {tuple(in_shape)})")
    H_out = conv_output_size(H, kh, stride, padding)
    W_out = conv_output_size(W, kw, stride, padding)
    if H_out < 1 or W_out < 1:
        raise ValueError(f"Conv2d output would be empty: input {H}x{W}, kernel {kh}, stride {stride}, "
                         f"padding {padding} give {H_out}x{W_out}")
    return (c_out, H_out, W_out)


# --- im2col / col2im ----------------------------------------------------------
def im2col(a_pad, kernel_size: int, stride: int, H_out: int, W_out: int):
    """Receptive fields as columns.

    ``a_pad`` ``(C, N, Hp, Wp)`` (channels first, padded) ->
    ``cols`` ``(C, k, k, N, H_out, W_out)`` with
    cols[c, p, q, n, i, j] = a_pad[c, n, s·i + p, s·j + q].
    """
    xp = array_module(a_pad)
    C, N = a_pad.shape[:2]
    k, s = kernel_size, stride
    cols = xp.empty((C, k, k, N, H_out, W_out), dtype=a_pad.dtype, device=device(a_pad))
    windows = window_view(a_pad, xp, k, s, H_out, W_out)                         # NumPy: one copy
    if windows is not None:
        cols[...] = windows
        return cols
    for p in range(k):
        for q in range(k):
            cols[:, p, q, ...] = a_pad[:, :, p:p + s * (H_out - 1) + 1:s, q:q + s * (W_out - 1) + 1:s]
    return cols


def col2im(dcols, padded_hw: tuple, stride: int):
    """Adjoint of :func:`im2col`: scatter-add ``dcols`` ``(C, k, k, N, Ho, Wo)``
    back to the padded input ``(C, N, Hp, Wp)``. Each kernel offset (p, q)
    writes a strided slice whose elements are distinct, so ``+=`` is exact."""
    xp = array_module(dcols)
    C, k, _, N, H_out, W_out = dcols.shape
    s = stride
    da_pad = xp.zeros((C, N) + tuple(padded_hw), dtype=dcols.dtype, device=device(dcols))
    for p in range(k):
        for q in range(k):
            da_pad[:, :, p:p + s * (H_out - 1) + 1:s, q:q + s * (W_out - 1) + 1:s] += dcols[:, p, q, ...]
    return da_pad


def zero_pad(a, padding: int):
    """``a`` ``(C, N, H, W)`` with ``padding`` zeros on each side of H and W."""
    xp = array_module(a)
    C, N, H, W = a.shape
    a_pad = xp.zeros((C, N, H + 2 * padding, W + 2 * padding), dtype=a.dtype, device=device(a))
    a_pad[:, :, padding:padding + H, padding:padding + W] = a
    return a_pad


# --- forward / backward ------------------------------------------------------
def conv_forward(a_prev, W, stride: int = 1, padding: int = 0):
    """Input currents of a conv layer, (4) with x = W ⊛ a:

        x[t, b, o, i, j] = Σ_{c,p,q} W[o, c, p, q] a_pad[t, b, c, s·i + p, s·j + q]

    ``a_prev`` ``(T, B, C_in, H, W)``, ``W`` ``(C_out, C_in, k, k)`` ->
    ``x`` ``(T, B, C_out, H_out, W_out)`` (contiguous), and the cache.
    All T·B images go through one GEMM.
    """
    xp = array_module(a_prev, W)
    if a_prev.ndim != 5:
        raise ValueError(f"conv_forward expects a_prev of shape (T, B, C, H, W), got {a_prev.shape}")
    T, B = a_prev.shape[:2]
    C_out, H_out, W_out = _check_conv_args(a_prev.shape[2:], W.shape, stride, padding)
    C_in, k = W.shape[1], W.shape[2]
    N = T * B
    # channels first: (C, N, H, W), then zero padding
    a_cn = xp.moveaxis(xp.reshape(a_prev, (N,) + a_prev.shape[2:]), 1, 0)        # (C, N, H, W)
    a_pad = zero_pad(a_cn, padding) if padding else a_cn                         # (C, N, Hp, Wp)
    cols = im2col(a_pad, k, stride, H_out, W_out)                                # (C, k, k, N, Ho, Wo)
    cols_2d = xp.reshape(cols, (C_in * k * k, N * H_out * W_out))                # (C·k·k, N·Ho·Wo)
    x_2d = xp.reshape(W, (C_out, C_in * k * k)) @ cols_2d                        # (C_out, N·Ho·Wo)
    x = xp.reshape(x_2d, (C_out, T, B, H_out, W_out))                            # (C_out, T, B, Ho, Wo)
    x = ascontiguous(xp.moveaxis(x, 0, 2), xp)                                   # (T, B, C_out, Ho, Wo)
    cache = (cols_2d, W, a_prev.shape, a_pad.shape[2:], stride, padding)
    return x, cache


def conv_weight_grad(dL_dx_2d, cols_2d, w_shape):
    """∂L/∂W = Σ_t Σ_b δ[t, b] ⊛ a_pad[t, b], i.e. (8) as a correlation:

        ∂L/∂W[o, c, p, q] = Σ_{t,b,i,j} δ[t, b, o, i, j] a_pad[t, b, c, s·i + p, s·j + q]

    ``dL_dx_2d`` ``(C_out, N·Ho·Wo)``, ``cols_2d`` ``(C·k·k, N·Ho·Wo)``.
    """
    # computed as (cols δᵀ)ᵀ: the same product, but OpenBLAS splits a long reduction
    # over N·Ho·Wo better with the big operand on the left (2-3x faster multi-threaded)
    dW_t = cols_2d @ dL_dx_2d.T                                                  # (C·k·k, C_out)
    return array_module(dW_t).reshape(dW_t.T, w_shape)                           # (C_out, C_in, k, k)


def conv_delta_hidden(dL_dx_2d, W, in_shape, padded_hw, out_hw, stride: int, padding: int):
    """g^{l-1} = W^lᵀ ⊛ δ^l, (10) as a transposed convolution:

        ∂L/∂a_pad[t, b, c, y, z] = Σ_{o,i,j: s·i+p=y, s·j+q=z} W[o, c, p, q] δ[t, b, o, i, j]

    computed as W_flatᵀ @ δ_flat (one GEMM) followed by col2im; the padding
    border is cut off. ``dL_dx_2d`` ``(C_out, N·Ho·Wo)``; returns
    ``(T, B, C_in, H, W)`` = ``in_shape``.
    """
    xp = array_module(dL_dx_2d, W)
    C_out, C_in, k = W.shape[0], W.shape[1], W.shape[2]
    T, B, _, H, W_in = in_shape
    H_out, W_out = out_hw
    dcols_2d = xp.reshape(W, (C_out, C_in * k * k)).T @ dL_dx_2d                 # (C·k·k, N·Ho·Wo)
    dcols = xp.reshape(dcols_2d, (C_in, k, k, T * B, H_out, W_out))              # (C, k, k, N, Ho, Wo)
    da_pad = col2im(dcols, padded_hw, stride)                                    # (C, N, Hp, Wp)
    da_cn = da_pad[:, :, padding:padding + H, padding:padding + W_in]            # (C, N, H, W)
    return xp.reshape(ascontiguous(xp.moveaxis(da_cn, 0, 1), xp), in_shape)      # (T, B, C, H, W)


def conv_backward(dL_dx, cache, need_input_grad: bool = True):
    """Backward of :func:`conv_forward`: ``(∂L/∂a^{l-1}, ∂L/∂W)``.

    ``dL_dx`` = δ^l ``(T, B, C_out, H_out, W_out)``. ∂L/∂W by (8)
    (:func:`conv_weight_grad`); ∂L/∂a^{l-1} by (10) (:func:`conv_delta_hidden`),
    or None when ``need_input_grad`` is False (first layer).
    """
    cols_2d, W, in_shape, padded_hw, stride, padding = cache
    xp = array_module(dL_dx, W)
    C_out = W.shape[0]
    dL_dx_2d = xp.reshape(xp.moveaxis(dL_dx, 2, 0), (C_out, -1))                 # (C_out, N·Ho·Wo)
    dW = conv_weight_grad(dL_dx_2d, cols_2d, W.shape)
    if not need_input_grad:
        return None, dW
    d_in = conv_delta_hidden(dL_dx_2d, W, in_shape, padded_hw, dL_dx.shape[3:], stride, padding)
    return d_in, dW


# --- the layer -----------------------------------------------------------------
class Conv2d(Layer):
    """Convolutional spiking layer: ``out_channels`` feature maps of LIF neurons.

    Input ``(T, B, C_in, H, W)``, currents out ``(T, B, C_out, H_out, W_out)``
    with H_out = ⌊(H + 2·padding - k)/stride⌋ + 1. Kernel ``W`` of shape
    ``(C_out, C_in, k, k)``, no bias.

    Init (authors: PyTorch's default conv init): uniform on ±1/√fan_in, times
    ``weight_scale``, fan_in = C_in·k·k.
    """

    spiking = True

    def __init__(self, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 weight_scale: float = 1.0, neuron: NeuronParams | None = None):
        super().__init__()
        for name, value, low in (("out_channels", out_channels, 1), ("kernel_size", kernel_size, 1),
                                 ("stride", stride, 1), ("padding", padding, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"Conv2d needs an integer {name} >= {low}, got {value!r}")
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = int(padding)
        self.weight_scale = float(weight_scale)
        self.neuron = neuron

    def _w_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"Conv2d expects input features (C, H, W), got shape {tuple(in_shape)}")
        return (self.out_channels, int(in_shape[0]), self.kernel_size, self.kernel_size)

    def output_shape(self, in_shape):
        return _check_conv_args(tuple(in_shape), self._w_shape(in_shape), self.stride, self.padding)

    def init_params(self, in_shape, rng, xp, dtype):
        w_shape = self._w_shape(in_shape)
        self.output_shape(in_shape)                                             # validate early
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        bound = self.weight_scale / math.sqrt(fan_in)
        W = rng.uniform(-bound, bound, size=w_shape)
        self.params = {"W": xp.asarray(W, dtype=dtype)}

    def forward(self, a_in, train=False, rng=None):
        if a_in.ndim != 5:
            raise ValueError(f"Conv2d expects input (T, B, C, H, W), got shape {a_in.shape}")
        return conv_forward(a_in, self.params["W"], self.stride, self.padding)

    def backward(self, d_out, cache, need_input_grad=True):
        d_in, dW = conv_backward(d_out, cache, need_input_grad)
        return d_in, {"W": dW}

    def describe(self):
        opts = []
        if self.padding:
            opts.append(f"pad {self.padding}")
        if self.stride != 1:
            opts.append(f"stride {self.stride}")
        return f"{self.out_channels}C{self.kernel_size}" + (f"({', '.join(opts)})" if opts else "")


__all__ = ["Conv2d", "col2im", "conv_backward", "conv_delta_hidden", "conv_forward",
           "conv_output_size", "conv_weight_grad", "im2col"]
