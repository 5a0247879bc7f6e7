"""The training step's fast path on NumPy: the same arithmetic, fewer passes, no allocation.

The plain engine (:mod:`snnsim.neuron`, :mod:`snnsim.tsslbp`, :mod:`snnsim.training.optim`)
reads as the equations and allocates a new array for every intermediate. This module is
its twin for the CPU training step; it computes the *same floating-point operations on
every element in the same order*, so its results are bit-identical to the plain path's
(tested in float64 and float32, ``tests/test_fast.py``). What it changes:

- buffers: every ``(T, B, N)`` array of the LIF forward and backward lives in a
  :class:`Workspace`, allocated at the first step and handed out again, in the same order,
  at every later step (``out=`` arguments everywhere, no temporaries);
- whole-array passes where the equations allow them: the PSC a = κ * s after the membrane
  loop (a does not feed back), the reverse PSC sum S and the φ<1> source term over all T
  at once;
- selection without branches: ``where(s, p, q)`` is a bit select on the integer views,
  ((p ^ q) & m) ^ q with m all ones where s — the same bits, a few times faster than
  ``numpy.where`` on a spike mask with random pattern;
- the optimiser: the clip's scaling, AdamW and the clamp run block by block
  (:data:`BLOCK` elements, in cache) through the plain :meth:`AdamW.update` itself.

Who takes it: :func:`fast_path_applies` — the NumPy backend, the network's own TSSL-BP
backward (``cfg.backward == "tsslbp"``, LIF neurons, not fused), no substitute model.
CuPy (the fused CUDA kernels are its fast path), PyTorch and ``array_api_strict`` take
the plain path. The workspace's arrays are overwritten by the next step: a
:class:`~snnsim.network.NetworkCache` or gradient of the fast step is valid until then.
"""
from __future__ import annotations

import numpy as np

from .loss import n_correct
from .neuron import LIFState, NeuronModel
from .params import WARMUP_PSC_FRACTION, WARMUP_WIDTH, WARMUP_Z_CLIP, GradientParams, NeuronParams
from .training.optim import CLIP_NORM_EPS, global_grad_norm
from .tsslbp import LIF, psc_shift_scale, reset_passthrough, reset_shift_coefficient

#: Elements per block of the optimiser update: five float32 blocks (p, g, m, v, scratch)
#: of 64 KiB stay in a 512 KiB L2 cache between the update's twelve passes.
BLOCK = 1 << 14


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

    def array(self, shape, dtype) -> np.ndarray:
        i, self._next = self._next, self._next + 1
        shape, dtype = tuple(shape), np.dtype(dtype)
        if i == len(self._arrays):
            self._arrays.append(np.empty(shape, dtype))
        elif self._arrays[i].shape != shape or self._arrays[i].dtype != dtype:
            self._arrays[i] = np.empty(shape, dtype)
        return self._arrays[i]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)


# --- branch-free selection on the bits ------------------------------------------------
def _bits(a):
    """``a`` viewed as unsigned integers of its width (float32 -> uint32, float64 -> uint64)."""
    return a.view(f"u{a.dtype.itemsize}")


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
def lif_forward_fast(x, neuron: NeuronParams, ws: Workspace) -> tuple[np.ndarray, LIFState]:
    """:func:`snnsim.neuron.lif_forward` into workspace arrays.

    Per step: charge (4) into Δu[t] and u[t], fire (5) into s[t], reset into ū; after the
    loop the PSC (2) a[t] = (1-θs) a[t-1] + θs s[t] (θs s over all T in one pass).
    """
    T, dtype = x.shape[0], x.dtype
    theta_m, theta_s, v_th = neuron.theta_m, neuron.theta_s, neuron.v_th
    u, du, a = (ws.array(x.shape, dtype) for _ in range(3))              # (T, B, N)
    s = ws.array(x.shape, np.bool_)                                       # (T, B, N)
    u_reset, tmp = ws.array(x.shape[1:], dtype), ws.array(x.shape[1:], dtype)   # (B, N)
    keep = ws.array(x.shape[1:], f"u{dtype.itemsize}")                    # (B, N) bits
    u_reset[...] = 0.0
    for t in range(T):
        np.multiply(u_reset, theta_m, out=tmp)
        np.subtract(x[t], tmp, out=du[t])                                 # Δu = x - θm ū
        np.add(u_reset, du[t], out=u[t])                                  # u = ū + Δu
        np.greater(u[t], v_th, out=s[t])                                  # s = u > V_th
        if neuron.reset == "zero":                                        # ū = where(s, 0, u)
            np.subtract(s[t], 1, out=keep, dtype=keep.dtype, casting="unsafe")   # ones where silent
            np.bitwise_and(_bits(u[t]), keep, out=_bits(u_reset))
        else:                                                             # ū = u - V_th s
            np.multiply(s[t], v_th, out=tmp, dtype=dtype)
            np.subtract(u[t], tmp, out=u_reset)
    np.multiply(s, theta_s, out=a, dtype=dtype)                           # θs s[t]
    for t in range(1, T):                                                 # a[0] = θs s[0]
        np.multiply(a[t - 1], 1.0 - theta_s, out=tmp)
        np.add(tmp, a[t], out=a[t])                                       # (1-θs) a[t-1] + θs s[t]
    return a, LIFState(x=x, u=u, du=du, s=s, a=a)


# --- the TSSL-BP backward, (9)-(14), (S 2.3) ------------------------------------------------
def lif_backward_fast(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams,
                      ws: Workspace):
    """:func:`snnsim.tsslbp.lif_backward` into workspace arrays; returns δ ``(T, B, N)``."""
    T, dtype = dL_da.shape[0], dL_da.dtype
    shape, step_shape = dL_da.shape, dL_da.shape[1:]
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    S, P, dt_du, G = (ws.array(shape, dtype) for _ in range(4))          # (T, B, N)
    m = ws.array(shape, f"u{dtype.itemsize}")                             # (T, B, N) spike bits
    leak, intra, zero = (ws.array(step_shape, dtype) for _ in range(3))   # (B, N)
    zero[...] = 0.0
    # S[t] = θs g[t] + (1-θs) S[t+1], S[T] = 0    (9), (12)
    np.multiply(dL_da, theta_s, out=S)
    np.add(S[T - 1], zero, out=S[T - 1])
    for t in reversed(range(T - 1)):
        np.multiply(S[t + 1], 1.0 - theta_s, out=leak)
        np.add(S[t], leak, out=S[t])
    # ∂t_m/∂u[t_m] = -1/Δu at a spike, 0 elsewhere, within ±bound    (12)
    spike_bits(state.s, m)
    inf_bits = _bits(np.asarray(np.inf, dtype))
    np.bitwise_xor(_bits(state.du), inf_bits, out=_bits(dt_du))
    np.bitwise_and(_bits(dt_du), m, out=_bits(dt_du))
    np.bitwise_xor(_bits(dt_du), inf_bits, out=_bits(dt_du))             # where(s, Δu, inf)
    np.divide(-1.0, dt_du, out=dt_du)
    if grad.sensitivity_bound is not None:
        np.clip(dt_du, -grad.sensitivity_bound, grad.sensitivity_bound, out=dt_du)
    # φ<1> source term -c S ∂t_m/∂u over all T    (11)
    np.multiply(S, -psc_shift_scale(theta_s, grad.reading), out=P)
    np.multiply(P, dt_du, out=P)
    R = state.u if neuron.reset == "zero" else np.broadcast_to(np.asarray(neuron.v_th, dtype), shape)
    b = reset_shift_coefficient(neuron, grad.reading)
    through = reset_passthrough(neuron)
    carry = zero                                                          # G[t+1]
    for t in reversed(range(T)):
        np.multiply(carry, 1.0 - theta_m, out=leak)                       # leak path (4)
        np.multiply(carry, b, out=intra)                                  # φ<2> (13)
        np.multiply(intra, R[t], out=intra)
        np.multiply(intra, dt_du[t], out=intra)
        np.add(P[t], intra, out=intra)                                    # φ<1> + φ<2>
        np.multiply(leak, through, out=G[t])
        np.add(intra, G[t], out=intra)                                    # + pass-through
        select(m[t], intra, leak, out=G[t])                               # spike ? φ : leak
        carry = G[t]
    if not grad.warmup:
        return G
    return warmup_replace_fast(G, S, state, neuron, ws)


def warmup_replace_fast(delta, S, state: LIFState, neuron: NeuronParams, ws: Workspace):
    """:func:`snnsim.tsslbp.warmup_replace` in place on ``delta``: δ = σ'(u) S where
    a < 1/(4τs)    (S 2.3); σ' as :func:`snnsim.tsslbp.warmup_surrogate`, one exp an element."""
    dtype = delta.dtype
    ez, den, tmp = (ws.array(delta.shape, dtype) for _ in range(3))      # (T, B, N)
    warm = ws.array(delta.shape, np.bool_)
    m = ws.array(delta.shape, f"u{dtype.itemsize}")
    np.subtract(neuron.v_th, state.u, out=ez)
    np.divide(ez, WARMUP_WIDTH, out=ez)
    np.clip(ez, -WARMUP_Z_CLIP, WARMUP_Z_CLIP, out=ez)                    # z
    np.exp(ez, out=ez)                                                    # e^z
    np.add(1.0, ez, out=den)                                              # 1 + e^z
    np.multiply(WARMUP_WIDTH, den, out=tmp)
    np.multiply(tmp, den, out=den)                              # w (1 + e^z)^2
    np.divide(ez, den, out=ez)                                            # σ'(u)
    np.multiply(ez, S, out=ez)
    np.less(state.a, WARMUP_PSC_FRACTION * neuron.theta_s, out=warm)
    spike_bits(warm, m)
    return select(m, ez, delta, out=ez)


# --- the neuron model and the optimiser update ----------------------------------------------
class FastPath:
    """The fast twin of :data:`snnsim.tsslbp.LIF` and of clip + AdamW + clamp, with its own
    :class:`Workspace`. ``model`` is a :class:`~snnsim.neuron.NeuronModel` for
    :meth:`Network.forward` / :meth:`Network.backward`; call :meth:`start` before each step."""

    def __init__(self):
        self.ws = Workspace()
        self.model = NeuronModel(
            forward=lambda x, neuron: lif_forward_fast(x, neuron, self.ws),
            backward=lambda g, state, neuron, grad: lif_backward_fast(g, state, neuron, grad, self.ws))

    def start(self) -> None:
        """A new step: the workspace hands out its arrays from the first again."""
        self.ws.reset()


def update_fast(opt, grads: list[dict], grad_clip: float, weight_clamp: float) -> None:
    """:func:`clip_grad_norm`, :meth:`AdamW.step` and :func:`clamp_weights` on ``opt.params``,
    in that order, block by block: each block of a parameter is scaled, updated by
    :meth:`AdamW.update` and clamped while it is in cache. Same norm, same scale, same
    operations on every element as the three plain calls."""
    scale = 1.0
    if grad_clip:
        if not grad_clip > 0:
            raise ValueError(f"max_norm must be positive, got {grad_clip}")
        scale = grad_clip / (global_grad_norm(grads) + CLIP_NORM_EPS)
    consts = opt.begin_step(grads)
    for layer, g_layer, m_layer, v_layer, t_layer in zip(opt.params, grads, opt.m, opt.v, opt._tmp):
        for name, p in layer.items():
            arrays = (p, g_layer[name], m_layer[name], v_layer[name], t_layer[name])
            if all(a.flags.c_contiguous for a in arrays):
                flat = [a.reshape(-1) for a in arrays]
                blocks = [[f[i:i + BLOCK] for f in flat] for i in range(0, p.size, BLOCK)]
            else:                                                         # one block: the arrays
                blocks = [arrays]
            for pb, gb, mb, vb, tb in blocks:
                if scale < 1.0:
                    gb *= scale
                opt.update(pb, gb, mb, vb, tb, consts)
                if weight_clamp:
                    np.clip(pb, -weight_clamp, weight_clamp, out=pb)


def fast_train_step(net, opt, x_in, labels, loss_fn, cfg, rng, reduce_grads=None):
    """:func:`snnsim.training.train.train_step` on the fast path (where
    :func:`fast_path_applies`): forward, loss, backward, clip + AdamW + clamp."""
    fast = getattr(net, "fast_path", None)
    if fast is None:
        fast = net.fast_path = FastPath()
    fast.start()
    a, cache = net.forward(x_in, train=True, rng=rng, model=fast.model)   # (T, B, C)
    L, g = loss_fn(a, labels)
    grads = net.backward(g, cache, model=fast.model)
    if reduce_grads is not None:
        reduce_grads(grads)
    update_fast(opt, grads, cfg.grad_clip, cfg.weight_clamp)
    return L, n_correct(a, labels)


def fast_path_applies(net, backward: str, model) -> bool:
    """True where :func:`snnsim.training.train.train_step` takes the fast path: NumPy, the
    network's own LIF with TSSL-BP (``backward == "tsslbp"``, no substitute ``model``)."""
    return net.backend == "numpy" and net.xp is np and model is None and backward == "tsslbp" \
        and net.model is LIF


__all__ = ["BLOCK", "FastPath", "Workspace", "fast_path_applies", "fast_train_step", "lif_backward_fast",
           "lif_forward_fast", "select", "update_fast", "warmup_replace_fast"]
