"""Slow loop transcriptions of convolution and pooling: the test oracles.

One output element at a time, per sample, channel and pixel, straight from the
definitions in :mod:`snnsim.conv` and :mod:`snnsim.pool`. NumPy only, float64
friendly, for tiny shapes. ``n`` runs over the T·B images of a ``(T, B, ...)``
array (time and batch do not interact in either layer).
"""
from __future__ import annotations

import numpy as np


def conv_forward_loops(a_prev, W, stride=1, padding=0):
    """x[n, o, i, j] = Σ_{c,p,q} W[o, c, p, q] a_pad[n, c, s·i + p, s·j + q]   (4).

    ``a_prev`` ``(T, B, C, H, W)``, ``W`` ``(C_out, C, k, k)``.
    """
    T, B, C, H, Wd = a_prev.shape
    C_out, _, k, _ = W.shape
    H_out = (H + 2 * padding - k) // stride + 1
    W_out = (Wd + 2 * padding - k) // stride + 1
    x = np.zeros((T, B, C_out, H_out, W_out), dtype=np.result_type(a_prev, W))
    for t in range(T):
        for b in range(B):
            for o in range(C_out):
                for i in range(H_out):
                    for j in range(W_out):
                        total = 0.0
                        for c in range(C):
                            for p in range(k):
                                for q in range(k):
                                    y = stride * i + p - padding        # row in the unpadded input
                                    z = stride * j + q - padding
                                    if 0 <= y < H and 0 <= z < Wd:       # zero padding elsewhere
                                        total += W[o, c, p, q] * a_prev[t, b, c, y, z]
                        x[t, b, o, i, j] = total
    return x


def conv_backward_loops(dL_dx, a_prev, W, stride=1, padding=0):
    """Every output element (t, b, o, i, j) sends its δ back along each weight
    it used:  ∂L/∂W[o,c,p,q] += δ · a[y, z]   (8);  ∂L/∂a[y, z] += δ · W[o,c,p,q]   (10).

    Returns ``(∂L/∂a_prev, ∂L/∂W)``.
    """
    T, B, C, H, Wd = a_prev.shape
    C_out, _, k, _ = W.shape
    _, _, _, H_out, W_out = dL_dx.shape
    da = np.zeros(a_prev.shape, dtype=np.result_type(dL_dx, W))
    dW = np.zeros(W.shape, dtype=np.result_type(dL_dx, a_prev))
    for t in range(T):
        for b in range(B):
            for o in range(C_out):
                for i in range(H_out):
                    for j in range(W_out):
                        delta = dL_dx[t, b, o, i, j]
                        for c in range(C):
                            for p in range(k):
                                for q in range(k):
                                    y = stride * i + p - padding
                                    z = stride * j + q - padding
                                    if 0 <= y < H and 0 <= z < Wd:
                                        dW[o, c, p, q] += delta * a_prev[t, b, c, y, z]
                                        da[t, b, c, y, z] += delta * W[o, c, p, q]
    return da, dW


def pool_forward_loops(a_prev, kernel_size, gain):
    """out[n, c, i, j] = gain · Σ_{p,q<k} a[n, c, k·i + p, k·j + q], ⌊H/k⌋ × ⌊W/k⌋."""
    T, B, C, H, Wd = a_prev.shape
    k = kernel_size
    H_out, W_out = H // k, Wd // k
    out = np.zeros((T, B, C, H_out, W_out), dtype=a_prev.dtype)
    for t in range(T):
        for b in range(B):
            for c in range(C):
                for i in range(H_out):
                    for j in range(W_out):
                        total = 0.0
                        for p in range(k):
                            for q in range(k):
                                total += a_prev[t, b, c, k * i + p, k * j + q]
                        out[t, b, c, i, j] = gain * total
    return out


def pool_backward_loops(d_out, in_shape, kernel_size, gain):
    """∂L/∂a[n, c, k·i + p, k·j + q] = gain · ∂L/∂out[n, c, i, j]; 0 on floored-off rows."""
    T, B, C, H_out, W_out = d_out.shape
    k = kernel_size
    d_in = np.zeros(in_shape, dtype=d_out.dtype)
    for t in range(T):
        for b in range(B):
            for c in range(C):
                for i in range(H_out):
                    for j in range(W_out):
                        for p in range(k):
                            for q in range(k):
                                d_in[t, b, c, k * i + p, k * j + q] += gain * d_out[t, b, c, i, j]
    return d_in
