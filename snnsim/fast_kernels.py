"""Fused loops of the CPU fast path, compiled by numba (optional: ``pip install snnsim[fast]``).

Each kernel is one loop over the neurons (or the weights, or a layer's elements) that does,
per element, the arithmetic (or the copies) of several plain functions in the order they do
it, in the array's dtype: every constant is passed in as a scalar of that dtype (a Python
float meets a float32 array as a float32, NumPy's rule), no ``fastmath`` (no reassociation,
no contraction to fused multiply-adds), IEEE division (``error_model="numpy"``: x/0 is ±inf,
not an exception). The results are the plain path's bit for bit, in float32 and float64
(``tests/test_fast.py``). What a kernel cannot reproduce bit for bit stays NumPy: the exp of
the warm-up's σ' (numba's exp is the C library's, NumPy's float32 exp its own SIMD code: on
10⁶ float32 z in [-8, 8], 39 % differed in the last bit).

:mod:`snnsim.fast` calls them where :data:`AVAILABLE` (numba is installed) and runs its
NumPy passes otherwise. Compiled code is cached on disk (``cache=True``): the first call of
each kernel and dtype compiles it once per machine, later processes load it.
"""
from __future__ import annotations

import numpy as np

try:
    import numba

    # numba's first compile (or cache load) loads SciPy's BLAS for its own np.dot and
    # np.linalg (numba.np.arraymath); loaded now, at import, it comes under the BLAS thread
    # count a run sets at its start (snnsim.training.threads), not OpenBLAS's default.
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError:                      # the NumPy passes of snnsim.fast serve instead
    numba = None

#: numba is installed: :mod:`snnsim.fast` runs these kernels (tests switch it off).
AVAILABLE = numba is not None


def _jit(f):
    """Compile ``f`` with numba where it is installed (IEEE arithmetic, cached on disk)."""
    if numba is None:
        return f
    return numba.njit(cache=True, error_model="numpy")(f)


# --- the LIF forward: snnsim.neuron ---------------------------------------------------------
@_jit
def lif_forward_kernel(x, u, du, s, a, u_reset, a_prev, theta_m, v_th, theta_s, decay_s,
                       zero_reset):
    """One LIF layer's forward, :func:`snnsim.neuron.lif_forward`: ``(T, n)`` arrays in (``x``)
    and out (``u``, ``du``, ``s``, ``a``), :func:`lif_forward_step` for t = 0..T-1 from
    ū[-1] = a[-1] = 0; ``u_reset``, ``a_prev`` ``(n,)`` scratch, the carries ū[t-1], a[t-1]."""
    zero = x.dtype.type(0.0)
    u_reset[:] = zero
    a_prev[:] = zero
    for t in range(x.shape[0]):
        lif_forward_step(x[t], u[t], du[t], s[t], a[t], u_reset, a_prev, theta_m, v_th, theta_s,
                         decay_s, zero_reset)


@_jit
def lif_forward_step(x, u, du, s, a, u_reset, a_prev, theta_m, v_th, theta_s, decay_s,
                     zero_reset):
    """Step t of every neuron, ``(n,)`` arrays; ``decay_s`` = 1 - θs. Per neuron, as
    :func:`snnsim.neuron.lif_forward` calls them:

    - charge (4), :func:`~snnsim.neuron.membrane_update`: Δu = x - θm ū;  u = ū + Δu
    - fire (5), :func:`~snnsim.neuron.fire`: s = u > V_th
    - reset, :func:`~snnsim.neuron.reset_membrane`: ū = where(s, 0, u) or u - V_th s
    - synapse (2), :func:`~snnsim.neuron.psc_update`: a = (1-θs) a[t-1] + θs s

    (One step of all neurons per loop, a function of its own, the carries in scratch rows:
    so the compiler runs the neurons on SIMD lanes, the selections as blends. The same loop
    body nested inside the loop over t ran 5-10x slower, unvectorised.)
    """
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    for j in range(x.shape[0]):
        d = x[j] - theta_m * u_reset[j]
        v = u_reset[j] + d
        spike = v > v_th
        s_f = one if spike else zero
        u_reset[j] = (zero if spike else v) if zero_reset else v - v_th * s_f
        a_prev[j] = decay_s * a_prev[j] + theta_s * s_f
        du[j], u[j], s[j], a[j] = d, v, spike, a_prev[j]


@_jit
def lif_psc_kernel(x, a, counts, u_reset, a_prev, theta_m, v_th, theta_s, decay_s, zero_reset):
    """:func:`lif_forward_kernel` keeping the PSC ``a`` alone (a pass without a backward:
    evaluation), and each neuron's number of spikes over the T steps in ``counts`` ``(n,)``
    (int32). ``(T, n)`` in (``x``) and out (``a``); the same arithmetic in the same order,
    :func:`lif_psc_step` for t = 0..T-1, so ``a`` is bit for bit the forward's."""
    zero = x.dtype.type(0.0)
    u_reset[:] = zero
    a_prev[:] = zero
    counts[:] = 0
    for t in range(x.shape[0]):
        lif_psc_step(x[t], a[t], counts, u_reset, a_prev, theta_m, v_th, theta_s, decay_s,
                     zero_reset)


@_jit
def lif_psc_step(x, a, counts, u_reset, a_prev, theta_m, v_th, theta_s, decay_s, zero_reset):
    """:func:`lif_forward_step` without the stores of Δu, u and s; a spike adds one to the
    neuron's count."""
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    for j in range(x.shape[0]):
        d = x[j] - theta_m * u_reset[j]
        v = u_reset[j] + d
        spike = v > v_th
        s_f = one if spike else zero
        u_reset[j] = (zero if spike else v) if zero_reset else v - v_th * s_f
        a_prev[j] = decay_s * a_prev[j] + theta_s * s_f
        a[j] = a_prev[j]
        counts[j] += 1 if spike else 0


# --- the TSSL-BP backward: snnsim.tsslbp ----------------------------------------------------
@_jit
def lif_backward_kernel(g, u, du, s, G, S, Z, S_next, G_next, theta_s, decay_s, neg_c, decay_m,
                        b, through, bound, v_th, zero_reset, warmup, width, z_clip):
    """δ of one LIF layer (without the warm-up's replacement) into ``G``, the reverse
    recursion of :func:`snnsim.tsslbp.lif_backward`: ``(T, n)`` arrays,
    :func:`lif_backward_step` for t = T-1..0 from S[T] = G[T] = 0; ``S_next``, ``G_next``
    ``(n,)`` scratch, the carries S[t+1], G[t+1]."""
    zero = g.dtype.type(0.0)
    S_next[:] = zero
    G_next[:] = zero
    for t in range(g.shape[0] - 1, -1, -1):
        lif_backward_step(g[t], u[t], du[t], s[t], G[t], S[t], Z[t], S_next, G_next, theta_s,
                          decay_s, neg_c, decay_m, b, through, bound, v_th, zero_reset, warmup,
                          width, z_clip)


@_jit
def lif_backward_step(g, u, du, s, G, S, Z, S_next, G_next, theta_s, decay_s, neg_c, decay_m, b,
                      through, bound, v_th, zero_reset, warmup, width, z_clip):
    """Step t of every neuron's backward, ``(n,)`` arrays. Per neuron:

    - S = θs g + (1-θs) S[t+1]  (9), (12)  -> ``S``         :func:`~snnsim.tsslbp.psc_reverse_sum`
    - leak = (1-θm) G[t+1]  (4)                            :func:`~snnsim.tsslbp.leak_path`
    - ∂t/∂u = clip(-1/Δu, ±bound)  (12)                   :func:`~snnsim.tsslbp.spike_time_sensitivity`
    - at a spike G = -c S ∂t/∂u  (11)  +  G[t+1] b R ∂t/∂u  (13)  +  through · leak
      (:func:`~snnsim.tsslbp.phi_inter`, :func:`~snnsim.tsslbp.phi_intra`,
      :func:`~snnsim.tsslbp.reset_passthrough`); silent: G = leak  -> ``G``

    ``neg_c`` = -c of :func:`~snnsim.tsslbp.psc_shift_scale`, ``b`` of
    :func:`~snnsim.tsslbp.reset_shift_coefficient`, ``through`` of
    :func:`~snnsim.tsslbp.reset_passthrough`, R = u (zero reset) or V_th; ``bound`` = inf
    for none (the clip then changes nothing). With ``warmup``:
    z = clip((V_th - u)/w, ±z_clip) of :func:`~snnsim.tsslbp.warmup_surrogate` -> ``Z``.
    """
    minus_one = g.dtype.type(-1.0)
    for j in range(g.shape[0]):
        S_j = theta_s * g[j] + decay_s * S_next[j]
        leak = decay_m * G_next[j]
        dt_du = minus_one / du[j]
        dt_du = -bound if dt_du < -bound else (bound if dt_du > bound else dt_du)
        R = u[j] if zero_reset else v_th
        at_spike = neg_c * S_j * dt_du + G_next[j] * b * R * dt_du + through * leak
        G_next[j] = at_spike if s[j] else leak
        S_next[j] = S_j
        G[j], S[j] = G_next[j], S_j
        if warmup:
            z = (v_th - u[j]) / width
            Z[j] = -z_clip if z < -z_clip else (z_clip if z > z_clip else z)


@_jit
def warmup_kernel(delta, S, a, ez, warm_below, width):
    """δ = σ'(u) S where a < 1/(4τs) (``warm_below``), ``delta`` elsewhere   (S 2.3), flat
    arrays: σ' = e^z / (w (1 + e^z)²) as :func:`snnsim.tsslbp.warmup_surrogate`
    (``ez`` = e^z), times S, as :func:`snnsim.tsslbp.warmup_replace`."""
    one = delta.dtype.type(1.0)
    for i in range(delta.size):
        one_plus = one + ez[i]
        warm = ez[i] / (width * one_plus * one_plus) * S[i]
        delta[i] = warm if a[i] < warm_below else delta[i]


# --- clip's scaling, AdamW and the clamp: snnsim.training.optim -----------------------------
@_jit
def adamw_kernel(p, g, m, v, scaled, scale, decayed, decay, one_minus_beta1, beta2,
                 one_minus_beta2, inv_sqrt_bc2, eps, step_size, clamped, clamp):
    """One walk over the flat parameter ``p`` with its gradient g and moments m, v:

    - the clip's scaling (:func:`~snnsim.training.optim.clip_grad_norm`): g·scale, if ``scaled``
      (the scaled g is used, not written back);
    - :meth:`~snnsim.training.optim.AdamW.update`, in its order: p (1 - lr λ) if ``decayed``;
      m + (1-β1)(g - m);  β2 v + (1-β2) g²;  p - step_size · m / (√v / √(1-β2^t) + ε);
    - the clamp (:func:`~snnsim.training.optim.clamp_weights`) to ±``clamp``, if ``clamped``.
    """
    for i in range(p.size):
        g_i = g[i] * scale if scaled else g[i]
        p_i = p[i] * decay if decayed else p[i]
        m_i = m[i] + (g_i - m[i]) * one_minus_beta1
        v_i = v[i] * beta2 + (g_i * g_i) * one_minus_beta2
        p_i = p_i - m_i / (np.sqrt(v_i) * inv_sqrt_bc2 + eps) * step_size
        if clamped:
            if p_i < -clamp:
                p_i = -clamp
            elif p_i > clamp:
                p_i = clamp
        p[i], m[i], v[i] = p_i, m_i, v_i


# --- im2col and col2im of a convolution: snnsim.conv -----------------------------------------
#: Index type of the conv and pool kernels' flat arrays: with unsigned indices numba leaves out
#: its check for negative ones (Python's wraparound), which kept the loops from vectorising
#: (2-3x slower).
_u = np.uint64


@_jit
def im2col_kernel(a, cols, C, H, W, k, H_out, W_out, stride, padding):
    """:func:`snnsim.conv.im2col` of the zero-padded, channels-first input, read straight from
    ``a``, the flat T·B = N images ``(N, C, H, W)`` of ``(T, B, C, H, W)``: one pass that
    does the moveaxis, the padding and the window copy,

        cols[c, p, q, n, i, j] = a[n, c, s·i + p - pad, s·j + q - pad], 0 outside a,

    into the flat ``cols`` ``(C, k, k, N, H_out, W_out)``, written in its memory order."""
    N = a.size // (C * H * W)
    zero = cols.dtype.type(0.0)
    o = 0                                                   # the row cols[c, p, q, n, i]
    for c in range(C):
        for p in range(k):
            for q in range(k):
                j_lo, j_hi = _inside(q, padding, stride, W, W_out)
                for n in range(N):
                    image = (n * C + c) * H * W
                    for i in range(H_out):
                        y = stride * i + p - padding
                        if y < 0 or y >= H:
                            for j in range(W_out):
                                cols[_u(o + j)] = zero
                        else:
                            r = image + y * W + q - padding
                            for j in range(j_lo):
                                cols[_u(o + j)] = zero
                            if stride == 1:                 # (a loop the compiler vectorises)
                                for j in range(j_lo, j_hi):
                                    cols[_u(o + j)] = a[_u(r + j)]
                            else:
                                for j in range(j_lo, j_hi):
                                    cols[_u(o + j)] = a[_u(r + stride * j)]
                            for j in range(j_hi, W_out):
                                cols[_u(o + j)] = zero
                        o += W_out


@_jit
def col2im_kernel(dcols, d_in, C, H, W, k, H_out, W_out, stride, padding):
    """:func:`snnsim.conv.col2im`, the crop of the padding and the moveaxis back to
    ``(T, B, C, H, W)`` in one pass: the flat ``dcols`` ``(C, k, k, N, H_out, W_out)``
    scatter-added into the flat ``d_in`` ``(N, C, H, W)``; what lands in the padding is
    skipped (the crop drops it). Each element's sum runs as in the plain col2im: from 0,
    adding the offsets (p, q) in turn, p first (the same additions in the same order)."""
    N = d_in.size // (C * H * W)
    zero = d_in.dtype.type(0.0)
    for c in range(C):
        for n in range(N):
            image = (n * C + c) * H * W
            for e in range(H * W):
                d_in[_u(image + e)] = zero
        for p in range(k):
            i_lo, i_hi = _inside(p, padding, stride, H, H_out)     # rows i not in the padding
            for q in range(k):
                j_lo, j_hi = _inside(q, padding, stride, W, W_out)
                for n in range(N):
                    image = (n * C + c) * H * W
                    block = (((c * k + p) * k + q) * N + n) * H_out * W_out   # dcols[c, p, q, n]
                    for i in range(i_lo, i_hi):
                        r = image + (stride * i + p - padding) * W + q - padding
                        o = block + i * W_out
                        if stride == 1:                     # (a loop the compiler vectorises)
                            for j in range(j_lo, j_hi):
                                d_in[_u(r + j)] += dcols[_u(o + j)]
                        else:
                            for j in range(j_lo, j_hi):
                                d_in[_u(r + stride * j)] += dcols[_u(o + j)]


# --- sum pooling: snnsim.pool --------------------------------------------------------------
@_jit
def pool_forward_kernel(a, out, H, W, k, gain):
    """:func:`snnsim.pool.pool_forward` on the flat ``a`` ``(M, H, W)`` (M = T·B·C) into the
    flat ``out`` ``(M, ⌊H/k⌋, ⌊W/k⌋)``: per window the sum from offset (0, 0), adding the
    others p first, then times ``gain``, as the plain function's slice sums do. (The 2×2
    window written out: a loop the compiler vectorises, 4-6x faster than the general one.)"""
    H_out, W_out = H // k, W // k
    M = a.size // (H * W)
    for m in range(M):
        for i in range(H_out):
            top = (m * H + k * i) * W                       # the row a[m, k·i]
            o = (m * H_out + i) * W_out
            if k == 2:
                for j in range(W_out):
                    total = a[_u(top + 2 * j)] + a[_u(top + 2 * j + 1)]
                    total += a[_u(top + W + 2 * j)]
                    total += a[_u(top + W + 2 * j + 1)]
                    out[_u(o + j)] = gain * total
            else:
                for j in range(W_out):
                    total = a[_u(top + k * j)]
                    for q in range(1, k):
                        total += a[_u(top + k * j + q)]
                    for p in range(1, k):
                        for q in range(k):
                            total += a[_u(top + p * W + k * j + q)]
                    out[_u(o + j)] = gain * total


@_jit
def pool_backward_kernel(d_out, d_in, H, W, k, gain):
    """:func:`snnsim.pool.pool_backward` on flat arrays: ``d_in`` ``(M, H, W)`` = gain ·
    ``d_out`` ``(M, ⌊H/k⌋, ⌊W/k⌋)`` on every element of its window, 0 on the floored-off rows
    and columns. (k = 2 written out, as in :func:`pool_forward_kernel`.)"""
    H_out, W_out = H // k, W // k
    M = d_in.size // (H * W)
    zero = d_in.dtype.type(0.0)
    for m in range(M):
        for y in range(H):
            row = (m * H + y) * W                           # the row d_in[m, y]
            i = y // k
            start = 0                                       # the floored-off columns' start
            if i < H_out:
                o = (m * H_out + i) * W_out
                if k == 2:
                    for j in range(W_out):
                        g = gain * d_out[_u(o + j)]
                        d_in[_u(row + 2 * j)] = g
                        d_in[_u(row + 2 * j + 1)] = g
                else:
                    for j in range(W_out):
                        g = gain * d_out[_u(o + j)]
                        for q in range(k):
                            d_in[_u(row + k * j + q)] = g
                start = k * W_out
            for z in range(start, W):
                d_in[_u(row + z)] = zero


@_jit
def _inside(q, padding, stride, size, n_out):
    """The output indices j (``lo`` to ``hi`` - 1) whose input index s·j + q - pad lies in
    0..size-1 (along one axis, for the kernel offset q)."""
    lo = 0
    while lo < n_out and stride * lo + q - padding < 0:
        lo += 1
    hi = lo
    while hi < n_out and stride * hi + q - padding < size:
        hi += 1
    return lo, hi


__all__ = ["AVAILABLE", "adamw_kernel", "col2im_kernel", "im2col_kernel", "lif_backward_kernel",
           "lif_backward_step", "lif_forward_kernel", "lif_forward_step", "lif_psc_kernel",
           "lif_psc_step", "pool_backward_kernel", "pool_forward_kernel", "warmup_kernel"]
