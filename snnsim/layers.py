"""Layers: the synaptic operations between populations of LIF neurons.

Every layer is a forward/backward pair in the CS231n style::

    out, cache = layer.forward(a_in, train=..., rng=...)     # (T, B, ...) in and out
    d_in, grads = layer.backward(d_out, cache)

A layer with ``spiking = True`` (dense, conv) produces input currents x = W a
that drive LIF neurons (:mod:`snnsim.neuron`); the network runs those neurons
after it. Non-spiking layers (pooling, dropout) act on PSCs directly.
Parameters live in ``layer.params`` (a dict of arrays), gradients come back in
a dict with the same keys.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module
from .params import NeuronParams


class Layer:
    """Base class. Subclasses set ``spiking`` and implement the methods below."""

    spiking = False
    #: optional per-layer neuron parameters (e.g. a per-layer V_th); None: the network's
    neuron: NeuronParams | None = None

    def __init__(self):
        self.params: dict = {}

    def output_shape(self, in_shape: tuple) -> tuple:
        """Feature shape out for a feature shape in (no T, no batch)."""
        raise NotImplementedError

    def init_params(self, in_shape: tuple, rng: np.random.Generator, xp, dtype) -> None:
        """Draw initial parameters for input features of shape ``in_shape``."""

    def forward(self, a_in, train: bool = False, rng=None):
        raise NotImplementedError

    def backward(self, d_out, cache, need_input_grad: bool = True):
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


# --- dense --------------------------------------------------------------------
def dense_forward(a_prev, W):
    """x^l[t] = W^l a^{l-1}[t] for every t and sample, same step, no bias   (4).

    ``a_prev`` ``(T, B, N_in)``, ``W`` ``(N_out, N_in)`` -> ``x`` ``(T, B, N_out)``;
    the T·B rows as one matrix product (one GEMM, not T).
    """
    return _rows_times(a_prev, W.T), (a_prev, W)


def delta_hidden(dL_dx, W):
    """g^{l-1}[t] = (W^l)^T δ^l[t]: the error reaching the layer below   (10), (S 12)."""
    return _rows_times(dL_dx, W)                                          # (T, B, N_in)


def _rows_times(a, M):
    """``a`` ``(T, B, n)`` times ``M`` ``(n, m)`` as one ``(T·B, n) @ (n, m)`` product."""
    xp = array_module(a, M)
    rows = xp.reshape(a, (-1, a.shape[-1])) @ M                          # (T·B, m)
    return xp.reshape(rows, a.shape[:-1] + (M.shape[-1],))


def weight_grad(dL_dx, a_prev):
    """∂L/∂W^l = Σ_t Σ_batch δ^l[t] (a^{l-1}[t])^T   (8)."""
    xp = array_module(dL_dx, a_prev)
    n_out, n_in = dL_dx.shape[-1], a_prev.shape[-1]
    return xp.reshape(dL_dx, (-1, n_out)).T @ xp.reshape(a_prev, (-1, n_in))   # (N_out, N_in)


def dense_backward(dL_dx, cache, need_input_grad: bool = True):
    """Backward of :func:`dense_forward`: (∂L/∂a^{l-1}, ∂L/∂W)."""
    a_prev, W = cache
    dW = weight_grad(dL_dx, a_prev)
    return (delta_hidden(dL_dx, W) if need_input_grad else None), dW


class Dense(Layer):
    """Fully connected spiking layer of ``n_out`` LIF neurons.

    Init (authors): Kaiming normal, std √(2/fan_in), times ``weight_scale``.
    Input of any feature shape is flattened.
    """

    spiking = True

    def __init__(self, n_out: int, weight_scale: float = 1.0, neuron: NeuronParams | None = None):
        super().__init__()
        if n_out < 1:
            raise ValueError(f"Dense needs n_out >= 1, got {n_out}")
        self.n_out = int(n_out)
        self.weight_scale = float(weight_scale)
        self.neuron = neuron

    def output_shape(self, in_shape):
        return (self.n_out,)

    def init_params(self, in_shape, rng, xp, dtype):
        fan_in = int(np.prod(in_shape))
        W = rng.standard_normal((self.n_out, fan_in)) * math.sqrt(2.0 / fan_in) * self.weight_scale
        self.params = {"W": xp.asarray(W, dtype=dtype)}

    def forward(self, a_in, train=False, rng=None):
        T, B = a_in.shape[:2]
        a_flat = array_module(a_in).reshape(a_in, (T, B, -1))             # (T, B, N_in)
        if a_flat.shape[-1] != self.params["W"].shape[1]:
            raise ValueError(f"Dense expects {self.params['W'].shape[1]} input features, "
                             f"got {a_flat.shape[-1]} (input shape {a_in.shape[2:]})")
        x, cache = dense_forward(a_flat, self.params["W"])
        return x, (cache, a_in.shape)

    def backward(self, d_out, cache, need_input_grad=True):
        dense_cache, in_shape = cache
        d_in, dW = dense_backward(d_out, dense_cache, need_input_grad)
        return (array_module(d_in).reshape(d_in, in_shape) if d_in is not None else None), {"W": dW}

    def describe(self):
        return f"{self.n_out}"
