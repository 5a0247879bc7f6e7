"""The training step's fast path on NumPy: the same arithmetic, fewer passes, no allocation.

The plain engine (:mod:`snnsim.neuron`, :mod:`snnsim.tsslbp`, :mod:`snnsim.conv`,
:mod:`snnsim.pool`, :mod:`snnsim.training.optim`) reads as the equations and allocates a new
array for every intermediate. This module is its twin for the CPU training step; it computes
the *same floating-point operations on every element in the same order*, so its results are
bit-identical to the plain path's (tested in float64 and float32, ``tests/test_fast.py``).

Where numba is installed (``pip install snnsim[fast]``), the LIF forward, the TSSL-BP
backward and clip + AdamW + clamp each run as one compiled loop, the kernels of
:mod:`snnsim.fast_kernels` (the warm-up's exp stays NumPy's), and so do the layers' copies
around their matrix products: a convolution's im2col reads the ``(T, B, C, H, W)`` input
straight into its columns (the moveaxis to channels first and the zero padding in the same
pass), its col2im writes the cropped ``(T, B, C, H, W)`` error straight from them, and the
pooling's sum and its backward are one pass each (:class:`FastPath`'s ``forward`` /
``backward``, the ``ops`` of :meth:`~snnsim.network.Network.forward`); the columns, the
products' outputs and the layers' results are workspace arrays. Without numba, the layers
are the plain ones and the neurons take the NumPy passes below, which change:

- buffers: every ``(T, B, N)`` array of the LIF forward and backward lives in a
  :class:`Workspace`, allocated at the first step and handed out again, in the same order,
  at every later step (``out=`` arguments everywhere, no temporaries);
- whole-array passes where the equations allow them: the PSC a = κ * s after the membrane
  loop (a does not feed back), the reverse PSC sum S and the φ<1> source term over all T
  at once;
- selection without branches: ``where(s, p, q)`` is a bit select on the integer views,
  ((p ^ q) & m) ^ q with m all ones where s — the same bits, a few times faster than
  ``numpy.where`` on a spike mask with random pattern;
- blocks of neurons: every neuron's T steps are independent of the others', so a layer runs
  :data:`BLOCK` neurons at a time and the backward's scratch arrays stay in cache (one
  block for the MLP; about forty for the first conv layer of the Fashion-MNIST CNN);
- the optimiser: the clip's scaling, AdamW (the plain
  :meth:`~snnsim.training.optim.AdamW.update` itself) and the clamp in one walk over the
  parameters, in place.

Who takes it: :func:`fast_path_applies` — the NumPy backend, the network's own TSSL-BP
backward (``cfg.backward == "tsslbp"``, LIF neurons, not fused), no substitute model.
CuPy (the fused CUDA kernels are its fast path), PyTorch and ``array_api_strict`` take
the plain path. The workspace's arrays are overwritten by the next step: a
:class:`~snnsim.network.NetworkCache` or gradient of the fast step is valid until then
(a convolution's cached columns only until its backward, which reuses their array).

What it does not change: the matrix products (the same operands, shapes and layouts, so
the same BLAS calls) and the dense and dropout layers, which both paths share. Without numba
the element-wise work stays one NumPy call per operation, some forty passes over a LIF
layer's arrays where a kernel makes one. Measured against the step's floor
(:mod:`snnsim.analysis.floor`, ``python3 -m snnsim.bench``): the MLP step at 1.1x, the
Fashion-MNIST CNN step at 1.15-1.16x with numba (1.50-1.67x before the conv and pooling
kernels, measured in the same machine state), 1.73x without.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import fast_kernels
from .conv import Conv2d, _check_conv_args, conv_weight_grad
from .loss import n_correct
from .neuron import NeuronModel
from .params import WARMUP_PSC_FRACTION, WARMUP_WIDTH, WARMUP_Z_CLIP, GradientParams, NeuronParams
from .pool import Pool2d, _pool_output_shape
from .training.optim import CLIP_NORM_EPS, global_grad_norm
from .tsslbp import LIF, psc_shift_scale, reset_passthrough, reset_shift_coefficient


class Workspace:
    """Arrays allocated once and handed out again in the same order after each :meth:`reset`.

    The k-th :meth:`array` call after a reset returns the k-th array (reallocated only if its
    shape or dtype changed), so the same sequence of calls every step reuses the same memory.
    """

    def __init__(self):
        self._arrays: list[np.ndarray] = []
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def array(self, shape: tuple, dtype) -> np.ndarray:
        i = self._next
        self._next = i + 1
        if i < len(self._arrays):
            a = self._arrays[i]
            if a.shape == shape and a.dtype == dtype:
                return a
            a = self._arrays[i] = np.empty(shape, dtype)
            return a
        self._arrays.append(np.empty(shape, dtype))
        return self._arrays[i]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)


class FastLIFState(NamedTuple):
    """:class:`~snnsim.neuron.LIFState` (the same first five fields) and ``silent``: all ones
    where s[t] = 0, zero where it spiked, as unsigned integers of the float width (the
    forward's reset computes it; the backward's selections use it)."""

    x: object
    u: object
    du: object
    s: object
    a: object
    silent: object


# --- branch-free selection on the bits ------------------------------------------------
_UINT = {4: np.uint32, 8: np.uint64}


def _bits(a):
    """``a`` viewed as unsigned integers of its width (float32 -> uint32, float64 -> uint64)."""
    return a.view(_UINT[a.dtype.itemsize])


def spike_bits(s, out):
    """All ones where ``s``, zero elsewhere, as unsigned integers: 0 - s."""
    return np.subtract(0, s, out=out, dtype=out.dtype, casting="unsafe")


def select(mask, p, q, out):
    """``out = where(s, p, q)``, bit for bit: ((p ^ q) & m) ^ q with m = :func:`spike_bits`.
    ``out`` may be ``p``, not ``q``."""
    o = _bits(out)
    np.bitwise_xor(_bits(p), _bits(q), out=o)
    np.bitwise_and(o, mask, out=o)
    np.bitwise_xor(o, _bits(q), out=o)
    return out


# --- the LIF forward, (2)-(6) -----------------------------------------------------------
#: Neurons per block: each neuron's T steps are independent of every other neuron's, so the
#: forward and backward run block by block over the neurons (B·N), and a block's scratch
#: arrays stay in cache. (A 784-400-400-10 MLP at batch 50 is one block; a conv layer many.)
BLOCK = 1 << 15
#: Samples per slice of an evaluation batch on :class:`FastForward` (measured on the
#: Fashion-MNIST CNN: see :func:`snnsim.training.train.evaluate`).
EVAL_CHUNK = 50


def _blocks(n: int):
    """(start, stop) of the neuron blocks of a layer of ``n`` neurons (B·N)."""
    return [(i, min(i + BLOCK, n)) for i in range(0, n, BLOCK)]


def _by_neuron(a, T: int):
    """``a`` ``(T, B, ...)`` as ``(T, B·...)`` (a view of the contiguous workspace arrays)."""
    return a.reshape(T, -1)


def lif_forward_fast(x, neuron: NeuronParams, ws: Workspace) -> tuple[np.ndarray, FastLIFState]:
    """:func:`snnsim.neuron.lif_forward` into workspace arrays: by
    :func:`~snnsim.fast_kernels.lif_forward_kernel` where numba is installed, else block by
    block of neurons, as follows.

    Per step: charge (4) into Δu[t] and u[t], fire (5) into s[t], reset into ū; after the
    loop the PSC (2) a[t] = (1-θs) a[t-1] + θs s[t], with θs s[t] = θs where s, else +0.0,
    taken from the bits of θs (the exact product, without converting s to floats).
    """
    T, shape, dtype = x.shape[0], x.shape, x.dtype
    uint = _UINT[dtype.itemsize]
    u, du, a = ws.array(shape, dtype), ws.array(shape, dtype), ws.array(shape, dtype)  # (T, B, N)
    s = ws.array(shape, np.bool_)                                         # (T, B, N)
    if fast_kernels.AVAILABLE:
        c, n = dtype.type, math.prod(shape[1:])
        fast_kernels.lif_forward_kernel(*(_by_neuron(v, T) for v in (x, u, du, s, a)),
                                        ws.array((n,), dtype), ws.array((n,), dtype),
                                        c(neuron.theta_m), c(neuron.v_th), c(neuron.theta_s),
                                        c(1.0 - neuron.theta_s), neuron.reset == "zero")
        return a, FastLIFState(x=x, u=u, du=du, s=s, a=a, silent=None)
    silent = ws.array(shape, uint)                                        # (T, B, N)
    n = math.prod(shape[1:])
    width = min(n, BLOCK)
    u_reset, tmp = ws.array((width,), dtype), ws.array((width,), dtype)   # (block,)
    arrays = [_by_neuron(v, T) for v in (x, u, du, s, silent, a)]         # (T, B·N)
    for i, j in _blocks(n):
        _forward_block(*(v[:, i:j] for v in arrays), u_reset[:j - i], tmp[:j - i], neuron)
    return a, FastLIFState(x=x, u=u, du=du, s=s, a=a, silent=silent)


def _forward_block(x, u, du, s, silent, a, u_reset, tmp, neuron: NeuronParams) -> None:
    """The forward of one block of neurons, ``(T, block)`` views in, written in place."""
    T, dtype = x.shape[0], x.dtype
    theta_m, v_th = dtype.type(neuron.theta_m), neuron.v_th   # compared as the plain path does
    decay_s = dtype.type(1.0 - neuron.theta_s)
    theta_s_bits = _bits(np.asarray(neuron.theta_s, dtype))
    zero_reset = neuron.reset == "zero"
    u_reset.fill(0.0)
    for t in range(T):
        np.multiply(u_reset, theta_m, out=tmp)
        np.subtract(x[t], tmp, out=du[t])                                 # Δu = x - θm ū
        np.add(u_reset, du[t], out=u[t])                                  # u = ū + Δu
        np.greater(u[t], v_th, out=s[t])                                  # s = u > V_th
        np.subtract(s[t], 1, out=silent[t], dtype=silent.dtype, casting="unsafe")  # ones: silent
        if zero_reset:                                                    # ū = where(s, 0, u)
            np.bitwise_and(_bits(u[t]), silent[t], out=_bits(u_reset))
        else:                                                             # ū = u - V_th s
            np.multiply(s[t], dtype.type(v_th), out=tmp, dtype=dtype)
            np.subtract(u[t], tmp, out=u_reset)
    a_bits = _bits(a)
    np.bitwise_and(silent, theta_s_bits, out=a_bits)                      # θs (1-s)
    np.bitwise_xor(a_bits, theta_s_bits, out=a_bits)                      # θs s
    for t in range(1, T):                                                 # a[0] = θs s[0]
        np.multiply(a[t - 1], decay_s, out=tmp)
        np.add(tmp, a[t], out=a[t])                                       # (1-θs) a[t-1] + θs s[t]



def lif_psc_fast(x, neuron: NeuronParams, ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """The PSC ``a`` of :func:`lif_forward_fast` alone, for a pass without a backward, and
    each neuron's number of spikes over the T steps ``(B, ...)`` (int32): by
    :func:`~snnsim.fast_kernels.lif_psc_kernel` (no Δu, u, s stored) where numba is installed,
    else from :func:`lif_forward_fast`'s state. Bit for bit the same ``a``."""
    T, shape, dtype = x.shape[0], x.shape, x.dtype
    if not fast_kernels.AVAILABLE:
        a, state = lif_forward_fast(x, neuron, ws)
        return a, np.sum(state.s, axis=0, dtype=np.int32)
    a = ws.array(shape, dtype)                                            # (T, B, N)
    counts = ws.array(shape[1:], np.int32)                                # (B, N)
    c, n = dtype.type, math.prod(shape[1:])
    fast_kernels.lif_psc_kernel(_by_neuron(x, T), _by_neuron(a, T), counts.reshape(-1),
                                ws.array((n,), dtype), ws.array((n,), dtype), c(neuron.theta_m),
                                c(neuron.v_th), c(neuron.theta_s), c(1.0 - neuron.theta_s),
                                neuron.reset == "zero")
    return a, counts


# --- the TSSL-BP backward, (9)-(14), (S 2.3) ------------------------------------------------
def lif_backward_fast(dL_da, state: FastLIFState, neuron: NeuronParams, grad: GradientParams,
                      ws: Workspace):
    """:func:`snnsim.tsslbp.lif_backward` into a workspace array, by the kernels where numba
    is installed, else block by block of neurons; returns δ ``(T, B, N)``. ``state`` from
    :func:`lif_forward_fast` (its ``silent`` bits on the NumPy passes)."""
    T, shape, dtype = dL_da.shape[0], dL_da.shape, dL_da.dtype
    G = ws.array(shape, dtype)                                            # (T, B, N)
    if fast_kernels.AVAILABLE:
        _lif_backward_kernels(dL_da, state, neuron, grad, G, ws)
        return G
    n = math.prod(shape[1:])
    width = min(n, BLOCK)
    # scratch of one block: S, P, ∂t/∂u; warm-up σ' S, its denominator, a temporary; the
    # warm-up mask and its bits; per step: leak, φ, zero
    block = [ws.array((T, width), dtype) for _ in range(6)]
    block += [ws.array((T, width), np.bool_), ws.array((T, width), _UINT[dtype.itemsize])]
    step = [ws.array((width,), dtype) for _ in range(3)]
    arrays = [_by_neuron(v, T) for v in (dL_da, state.u, state.du, state.a, state.silent, G)]
    for i, j in _blocks(n):
        _backward_block(*(v[:, i:j] for v in arrays), [b[..., :j - i] for b in block],
                        [b[:j - i] for b in step], neuron, grad)
    return G


def _lif_backward_kernels(dL_da, state: FastLIFState, neuron: NeuronParams, grad: GradientParams,
                          G, ws: Workspace) -> None:
    """δ into ``G`` by :func:`~snnsim.fast_kernels.lif_backward_kernel` and, with the
    warm-up, NumPy's exp and :func:`~snnsim.fast_kernels.warmup_kernel`."""
    T, dtype = G.shape[0], G.dtype
    c = dtype.type
    theta_s, bound = neuron.theta_s, grad.sensitivity_bound
    S, Z = ws.array(G.shape, dtype), ws.array(G.shape if grad.warmup else (0,), dtype)
    fast_kernels.lif_backward_kernel(
        *(_by_neuron(v, T) for v in (dL_da, state.u, state.du, state.s, G, S)),
        Z.reshape(T, -1), ws.array((G[0].size,), dtype), ws.array((G[0].size,), dtype),
        c(theta_s), c(1.0 - theta_s), c(-psc_shift_scale(theta_s, grad.reading)),
        c(1.0 - neuron.theta_m), c(reset_shift_coefficient(neuron, grad.reading)),
        c(reset_passthrough(neuron)), c(np.inf if bound is None else bound), c(neuron.v_th),
        neuron.reset == "zero", grad.warmup, c(WARMUP_WIDTH), c(WARMUP_Z_CLIP))
    if grad.warmup:
        np.exp(Z, out=Z)                                                  # e^z (S 2.3)
        fast_kernels.warmup_kernel(G.reshape(-1), S.reshape(-1), state.a.reshape(-1),
                                   Z.reshape(-1), c(WARMUP_PSC_FRACTION * theta_s), c(WARMUP_WIDTH))


def _backward_block(dL_da, u, du, a, silent, G, block, step, neuron: NeuronParams,
                    grad: GradientParams) -> None:
    """δ of one block of neurons into ``G``, ``(T, block)`` views; scratch in ``block``, ``step``."""
    T, dtype = dL_da.shape[0], dL_da.dtype
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    S, P, dt_du = block[:3]
    leak, intra, zero = step
    zero.fill(0.0)
    # S[t] = θs g[t] + (1-θs) S[t+1], S[T] = 0    (9), (12)
    decay_s = dtype.type(1.0 - theta_s)
    np.multiply(dL_da, dtype.type(theta_s), out=S)
    np.add(S[T - 1], zero, out=S[T - 1])
    for t in range(T - 2, -1, -1):
        np.multiply(S[t + 1], decay_s, out=leak)
        np.add(S[t], leak, out=S[t])
    # ∂t_m/∂u[t_m] = -1/Δu at a spike, 0 elsewhere, within ±bound    (12)
    dt_bits, du_bits = _bits(dt_du), _bits(du)
    inf_bits = _bits(np.asarray(np.inf, dtype))
    np.bitwise_xor(du_bits, inf_bits, out=dt_bits)
    np.bitwise_and(dt_bits, silent, out=dt_bits)
    np.bitwise_xor(dt_bits, du_bits, out=dt_bits)                        # where(s, Δu, inf)
    np.divide(dtype.type(-1.0), dt_du, out=dt_du)
    if grad.sensitivity_bound is not None:
        np.clip(dt_du, -grad.sensitivity_bound, grad.sensitivity_bound, out=dt_du)
    # φ<1> source term -c S ∂t_m/∂u over all T    (11)
    np.multiply(S, dtype.type(-psc_shift_scale(theta_s, grad.reading)), out=P)
    np.multiply(P, dt_du, out=P)
    R = u if neuron.reset == "zero" else np.broadcast_to(np.asarray(neuron.v_th, dtype), u.shape)
    b = dtype.type(reset_shift_coefficient(neuron, grad.reading))
    through = dtype.type(reset_passthrough(neuron))
    decay_m = dtype.type(1.0 - theta_m)
    G_bits, intra_bits, leak_bits = _bits(G), _bits(intra), _bits(leak)
    carry = zero                                                          # G[t+1]
    for t in range(T - 1, -1, -1):
        np.multiply(carry, decay_m, out=leak)                             # leak path (4)
        np.multiply(carry, b, out=intra)                                  # φ<2> (13)
        np.multiply(intra, R[t], out=intra)
        np.multiply(intra, dt_du[t], out=intra)
        np.add(P[t], intra, out=intra)                                    # φ<1> + φ<2>
        np.multiply(leak, through, out=G[t])
        np.add(intra, G[t], out=intra)                                    # + pass-through
        np.bitwise_xor(leak_bits, intra_bits, out=G_bits[t])              # G = where(s, φ, leak):
        np.bitwise_and(G_bits[t], silent[t], out=G_bits[t])               #   select() on the
        np.bitwise_xor(G_bits[t], intra_bits, out=G_bits[t])              #   silent bits
        carry = G[t]
    if grad.warmup:
        warmup_replace_fast(G, S, u, a, neuron, block[3:])


def warmup_replace_fast(delta, S, u, a, neuron: NeuronParams, scratch) -> None:
    """:func:`snnsim.tsslbp.warmup_replace` in place on ``delta``: δ = σ'(u) S where
    a < 1/(4τs)    (S 2.3); σ' as :func:`snnsim.tsslbp.warmup_surrogate`, one exp an element.
    ``scratch``: three float arrays, a bool and an unsigned one, of ``delta``'s shape."""
    dtype = delta.dtype
    ez, den, tmp, warm, m = scratch
    width = dtype.type(WARMUP_WIDTH)
    np.subtract(dtype.type(neuron.v_th), u, out=ez)
    np.divide(ez, width, out=ez)
    np.clip(ez, -WARMUP_Z_CLIP, WARMUP_Z_CLIP, out=ez)                    # z
    np.exp(ez, out=ez)                                                    # e^z
    np.add(dtype.type(1.0), ez, out=den)                                  # 1 + e^z
    np.multiply(width, den, out=tmp)
    np.multiply(tmp, den, out=den)                                        # w (1 + e^z)^2
    np.divide(ez, den, out=ez)                                            # σ'(u)
    np.multiply(ez, S, out=ez)
    np.less(a, WARMUP_PSC_FRACTION * neuron.theta_s, out=warm)
    spike_bits(warm, m)
    np.bitwise_xor(_bits(ez), _bits(delta), out=_bits(ez))                # δ = where(warm, σ'S, δ)
    np.bitwise_and(_bits(ez), m, out=_bits(ez))
    np.bitwise_xor(_bits(ez), _bits(delta), out=_bits(delta))


# --- the convolution, (4), (8), (10) -------------------------------------------------------
def conv_forward_fast(a_prev, W, stride: int, padding: int, ws: Workspace):
    """:func:`snnsim.conv.conv_forward` into workspace arrays, its im2col by
    :func:`~snnsim.fast_kernels.im2col_kernel` straight from ``a_prev`` ``(T, B, C, H, W)``
    (no channels-first copy, no padded copy). The same product W_flat @ cols on the same
    operands; the same cache. numba only (without it the layer's own forward serves)."""
    T, B, C, H, W_in = a_prev.shape
    C_out, H_out, W_out = _check_conv_args(a_prev.shape[2:], W.shape, stride, padding)
    k, N, dtype = W.shape[2], T * B, a_prev.dtype
    cols = ws.array((C * k * k, N * H_out * W_out), dtype)                # (C·k·k, N·Ho·Wo)
    fast_kernels.im2col_kernel(np.ascontiguousarray(a_prev).reshape(-1), cols.reshape(-1), C, H,
                               W_in, k, H_out, W_out, stride, padding)
    x_2d = np.matmul(W.reshape(C_out, C * k * k), cols,
                     out=ws.array((C_out, N * H_out * W_out), dtype))     # (C_out, N·Ho·Wo)
    x = ws.array((T, B, C_out, H_out, W_out), dtype)                      # (T, B, C_out, Ho, Wo)
    np.copyto(x, np.moveaxis(x_2d.reshape(C_out, T, B, H_out, W_out), 0, 2))
    padded_hw = (H + 2 * padding, W_in + 2 * padding)
    return x, (cols, W, a_prev.shape, padded_hw, stride, padding)


def conv_backward_fast(dL_dx, cache, need_input_grad: bool, ws: Workspace):
    """:func:`snnsim.conv.conv_backward` into workspace arrays: ∂L/∂W by the plain
    :func:`~snnsim.conv.conv_weight_grad`; g = W_flatᵀ @ δ_flat into the array of the cached
    columns (not needed after ∂L/∂W: the cache's columns are overwritten), then col2im, the
    crop and the move back to ``(T, B, C, H, W)`` in one
    :func:`~snnsim.fast_kernels.col2im_kernel`."""
    cols, W, in_shape, _, stride, padding = cache
    C_out, C, k = W.shape[:3]
    T, B, H_out, W_out = dL_dx.shape[0], dL_dx.shape[1], dL_dx.shape[3], dL_dx.shape[4]
    dtype = dL_dx.dtype
    dL_dx_2d = ws.array((C_out, T * B * H_out * W_out), dtype)            # (C_out, N·Ho·Wo)
    np.copyto(dL_dx_2d.reshape(C_out, T, B, H_out, W_out), np.moveaxis(dL_dx, 2, 0))
    dW = conv_weight_grad(dL_dx_2d, cols, W.shape)
    if not need_input_grad:
        return None, dW
    dcols = np.matmul(W.reshape(C_out, C * k * k).T, dL_dx_2d, out=cols)  # (C·k·k, N·Ho·Wo)
    d_in = ws.array(tuple(in_shape), dtype)                               # (T, B, C, H, W)
    fast_kernels.col2im_kernel(dcols.reshape(-1), d_in.reshape(-1), C, in_shape[3], in_shape[4],
                               k, H_out, W_out, stride, padding)
    return d_in, dW


# --- sum pooling ---------------------------------------------------------------------------
def pool_forward_fast(a_prev, k: int, gain: float, ws: Workspace):
    """:func:`snnsim.pool.pool_forward` by :func:`~snnsim.fast_kernels.pool_forward_kernel` into
    a workspace array (one pass, where the plain one makes k² - 1 partial sums); the same
    cache."""
    T, B, C, H, W = a_prev.shape
    _pool_output_shape(a_prev.shape[2:], k)
    out = ws.array((T, B, C, H // k, W // k), a_prev.dtype)               # (T, B, C, Ho, Wo)
    fast_kernels.pool_forward_kernel(np.ascontiguousarray(a_prev).reshape(-1), out.reshape(-1), H, W,
                                     k, a_prev.dtype.type(gain))
    return out, (a_prev.shape, k, gain)


def pool_backward_fast(d_out, cache, ws: Workspace):
    """:func:`snnsim.pool.pool_backward` by :func:`~snnsim.fast_kernels.pool_backward_kernel`
    into a workspace array (one pass; the plain one writes g = gain · ∂L/∂out, then each
    window offset)."""
    in_shape, k, gain = cache
    d_in = ws.array(tuple(in_shape), d_out.dtype)                         # (T, B, C, H, W)
    fast_kernels.pool_backward_kernel(np.ascontiguousarray(d_out).reshape(-1), d_in.reshape(-1),
                                      in_shape[3], in_shape[4], k, d_out.dtype.type(gain))
    return d_in


# --- the neuron model, the layers and the optimiser update ---------------------------------
class FastPath:
    """The fast twin of :data:`snnsim.tsslbp.LIF`, of the convolution and the pooling and of
    clip + AdamW + clamp, with its own :class:`Workspace`. ``model`` is a :class:`~snnsim.neuron.NeuronModel`
    and the path itself the ``ops`` for :meth:`~snnsim.network.Network.forward` /
    :meth:`~snnsim.network.Network.backward`; call :meth:`start` before each step."""

    def __init__(self):
        self.ws = Workspace()
        self.model = NeuronModel(
            forward=lambda x, neuron: lif_forward_fast(x, neuron, self.ws),
            backward=lambda g, state, neuron, grad: lif_backward_fast(g, state, neuron, grad, self.ws))

    def start(self) -> None:
        """A new step: the workspace hands out its arrays from the first again."""
        self.ws.reset()

    def forward(self, layer, a, train: bool, rng):
        """A layer's forward: a convolution by :func:`conv_forward_fast`, a pooling by
        :func:`pool_forward_fast` where numba is installed; every other layer (and every
        layer without numba) by its own."""
        if fast_kernels.AVAILABLE and isinstance(layer, Conv2d):
            return conv_forward_fast(a, layer.params["W"], layer.stride, layer.padding, self.ws)
        if fast_kernels.AVAILABLE and isinstance(layer, Pool2d):
            return pool_forward_fast(a, layer.kernel_size, layer.gain, self.ws)
        return layer.forward(a, train=train, rng=rng)

    def backward(self, layer, g, cache, need_input_grad: bool):
        """A layer's backward, as :meth:`forward` chose: :func:`conv_backward_fast`,
        :func:`pool_backward_fast` or its own."""
        if fast_kernels.AVAILABLE and isinstance(layer, Conv2d):
            d_in, dW = conv_backward_fast(g, cache, need_input_grad, self.ws)
            return d_in, {"W": dW}
        if fast_kernels.AVAILABLE and isinstance(layer, Pool2d):
            return (pool_backward_fast(g, cache, self.ws) if need_input_grad else None), {}
        return layer.backward(g, cache, need_input_grad=need_input_grad)


class FastForward:
    """The forward of evaluation on the fast path: :meth:`output` is the output PSC of
    :meth:`Network.forward(x_in, train=False) <snnsim.network.Network.forward>` bit for bit,
    the convolution and pooling by :class:`FastPath`'s kernels and each LIF layer by
    :func:`lif_psc_fast` (no state kept for a backward), in a workspace of its own, reused
    from batch to batch. After each call, :attr:`counts` holds every spiking layer's spike
    counts per neuron ``(B, ...)``, in layer order. :func:`snnsim.training.train.evaluate`
    runs it on slices of :data:`EVAL_CHUNK` samples, so that a layer's arrays stay small
    enough for the cache."""

    def __init__(self):
        self.ops = FastPath()
        self.counts: list[np.ndarray] = []
        ws = self.ops.ws

        def forward(x, neuron):
            a, counts = lif_psc_fast(x, neuron, ws)
            self.counts.append(counts)
            return a, None

        self.model = NeuronModel(forward=forward, backward=None)

    def output(self, net, x_in):
        """The output PSC ``(T, B, C)`` of ``net`` on ``x_in``: a workspace array, valid until
        the next call (so are :attr:`counts`)."""
        self.ops.start()
        self.counts = []
        return net.forward(x_in, train=False, model=self.model, ops=self.ops)[0]


def update_fast(opt, grads: list[dict], grad_clip: float, weight_clamp: float) -> None:
    """:func:`~snnsim.training.optim.clip_grad_norm`, :meth:`~snnsim.training.optim.AdamW.step`
    and :func:`~snnsim.training.optim.clamp_weights` on ``opt.params`` in one walk over the
    parameters: each is scaled, updated by :meth:`~snnsim.training.optim.AdamW.update` and
    clamped in turn. Same norm, same scale, same operations on every element as the three
    plain calls (the clip's norm before clipping is left in ``opt.last_grad_norm``, None
    without a clip). Where numba is installed, one :func:`~snnsim.fast_kernels.adamw_kernel` walk
    per parameter whose arrays share one element order (the gradient is then used scaled,
    not scaled in place). (Blocks that stay in cache were tried: the passes are not memory-bound at
    these sizes, and the calls per block cost more than they saved.)"""
    scale = 1.0
    opt.last_grad_norm = None
    if grad_clip:
        if not grad_clip > 0:
            raise ValueError(f"max_norm must be positive, got {grad_clip}")
        opt.last_grad_norm = global_grad_norm(grads)          # the clip's norm, kept for logs
        scale = grad_clip / (opt.last_grad_norm + CLIP_NORM_EPS)
    consts = opt.begin_step(grads)
    for layer, g_layer, m_layer, v_layer, t_layer in zip(opt.params, grads, opt.m, opt.v, opt._tmp):
        for name, p in layer.items():
            g = g_layer[name]
            flat = _flat(p, g, m_layer[name], v_layer[name]) if fast_kernels.AVAILABLE else None
            if flat is not None:
                _adamw_kernel(opt, flat, scale, consts, weight_clamp)
                continue
            if scale < 1.0:
                g *= scale
            opt.update(p, g, m_layer[name], v_layer[name], t_layer[name], consts)
            if weight_clamp:
                np.clip(p, -weight_clamp, weight_clamp, out=p)


def _flat(*arrays):
    """The arrays as 1-D views in one element order (all C- or all F-contiguous, one dtype),
    or None."""
    if len({a.dtype for a in arrays}) == 1:
        for order in ("C", "F"):
            if all(a.flags[order + "_CONTIGUOUS"] for a in arrays):
                return [a.reshape(-1, order=order) for a in arrays]
    return None


def _adamw_kernel(opt, flat, scale: float, consts, weight_clamp: float) -> None:
    """Clip's scaling, AdamW and clamp of one parameter by :func:`~snnsim.fast_kernels.adamw_kernel`
    (``flat``: p, g, m, v from :func:`_flat`), with the plain path's constants in its dtype."""
    c = flat[0].dtype.type
    decay, step_size, inv_sqrt_bc2 = consts
    beta1, beta2 = opt.betas
    fast_kernels.adamw_kernel(*flat, scale < 1.0, c(scale), bool(opt.weight_decay), c(decay),
                              c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(inv_sqrt_bc2),
                              c(opt.eps), c(step_size), bool(weight_clamp), c(weight_clamp))


def fast_train_step(net, opt, x_in, labels, loss_fn, cfg, rng, reduce_grads=None):
    """:func:`snnsim.training.train.train_step` on the fast path (where
    :func:`fast_path_applies`): forward, loss, backward, clip + AdamW + clamp."""
    fast = getattr(net, "fast_path", None)
    if fast is None:
        fast = net.fast_path = FastPath()
    fast.start()
    a, cache = net.forward(x_in, train=True, rng=rng, model=fast.model, ops=fast)   # (T, B, C)
    L, g = loss_fn(a, labels)
    grads = net.backward(g, cache, model=fast.model, ops=fast)
    if reduce_grads is not None:
        reduce_grads(grads)
    update_fast(opt, grads, cfg.grad_clip, cfg.weight_clamp)
    return L, n_correct(a, labels)


def warm_up(dtypes=("float32", "float64")) -> None:
    """Compile the kernels of :mod:`snnsim.fast_kernels` for ``dtypes`` now (or load them from
    numba's cache: a few seconds the first time on a machine, a fraction of one later), on
    a tiny layer, parameter, convolution and pooling. A process that forks runs (or times
    steps) calls it first, so that the children do not each pay it. Without numba: nothing."""
    if not fast_kernels.AVAILABLE:
        return
    from .training.optim import AdamW
    neuron, grad = NeuronParams(), GradientParams(warmup=True)
    for dtype in dtypes:
        ws, x = Workspace(), np.ones((2, 1, 3), dtype)                    # (T, B, N)
        _, state = lif_forward_fast(x, neuron, ws)
        lif_backward_fast(x, state, neuron, grad, ws)
        lif_psc_fast(x, neuron, ws)
        params = [{"W": np.ones((2, 2), dtype)}]
        update_fast(AdamW(params, lr=0.1), [{"W": np.ones((2, 2), dtype)}], 1.0, 1.0)
        a = np.ones((1, 1, 1, 4, 4), dtype)                               # (T, B, C, H, W)
        x, cache = conv_forward_fast(a, np.ones((1, 1, 2, 2), dtype), 1, 1, ws)
        conv_backward_fast(x, cache, True, ws)
        out, cache = pool_forward_fast(a, 2, 1.0, ws)
        pool_backward_fast(out, cache, ws)


def fast_forward_applies(net) -> bool:
    """True where evaluation takes :class:`FastForward`: NumPy and the network's own LIF
    (any backward: a forward is the same for all)."""
    return net.backend == "numpy" and net.xp is np and net.model is LIF


def fast_path_applies(net, backward: str, model) -> bool:
    """True where :func:`snnsim.training.train.train_step` takes the fast path: NumPy, the
    network's own LIF with TSSL-BP (``backward == "tsslbp"``, no substitute ``model``)."""
    return net.backend == "numpy" and net.xp is np and model is None and backward == "tsslbp" \
        and net.model is LIF


__all__ = ["BLOCK", "EVAL_CHUNK", "FastForward", "FastLIFState", "FastPath", "Workspace",
           "fast_forward_applies", "fast_path_applies", "fast_train_step",
           "lif_backward_fast", "lif_forward_fast", "lif_psc_fast", "select", "update_fast", "warm_up",
           "warmup_replace_fast"]
