"""Inverted dropout of PSCs, one mask per (sample, neuron) held over all T steps.

Forward with ``train=True`` (docs/model.md):

    m[b, n] ~ Bernoulli(1 - p) / (1 - p),   drawn once per forward pass
    out[t, b, n] = m[b, n] · a[t, b, n]     for every step t

so that E[out] = a and a dropped neuron stays silent for the whole sample, as
the paper's CIFAR-10 runs intend. Backward: ∂L/∂a[t, b, n] = m[b, n] ∂L/∂out[t, b, n].
With ``train=False`` or p = 0 the layer is the identity.

Not copied from the authors' code: their call reshapes (T, B, C, H, W) PSCs
so that current PyTorch treats each *sample* as one channel of a Dropout3d, and
zeroes whole samples (docs/model.md).

The mask is drawn on the host by the NumPy Generator passed to ``forward`` (so
a seed gives the same masks on NumPy and CuPy) and moved with ``xp.asarray``:
one host-to-device copy of B·N floats per batch and dropout layer on CuPy
(fine for now: small next to the T·B·N currents the layer passes on).
"""
from __future__ import annotations

import numpy as np

from .backend import array_module, device
from .layers import Layer


def dropout_mask(rng: np.random.Generator, shape: tuple, p: float):
    """Host mask m = Bernoulli(1 - p) / (1 - p) of shape ``(B, ...features)``
    (NumPy float64; cast by the caller)."""
    keep = rng.random(shape) >= p                                                # (B, ...) bool
    return keep / (1.0 - p)


def dropout_forward(a_prev, mask):
    """out[t] = m · a[t] for every t: ``a_prev`` ``(T, B, ...)``, ``mask``
    ``(1, B, ...)`` broadcast over T."""
    return a_prev * mask, mask


def dropout_backward(d_out, mask):
    """∂L/∂a[t] = m · ∂L/∂out[t] (the mask of the forward pass)."""
    return d_out * mask


class Dropout(Layer):
    """Inverted dropout with drop probability ``p`` in [0, 1). Non-spiking."""

    spiking = False

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout needs 0 <= p < 1, got {p!r}")
        self.p = float(p)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def init_params(self, in_shape, rng, xp, dtype):
        self.params = {}

    def forward(self, a_in, train=False, rng=None):
        """Apply a fresh mask when ``train`` (drawn from ``rng``, a
        :class:`numpy.random.Generator`); identity otherwise. The cache is the
        device mask ``(1, B, ...)``, or None for the identity."""
        if not train or self.p == 0.0:
            return a_in, None
        if not isinstance(rng, np.random.Generator):
            raise ValueError("Dropout.forward(train=True) needs rng, a numpy.random.Generator "
                             f"(got {type(rng).__name__})")
        xp = array_module(a_in)
        m_host = dropout_mask(rng, tuple(a_in.shape[1:]), self.p)                  # (B, ...)
        mask = xp.asarray(m_host[None], dtype=a_in.dtype, device=device(a_in))  # (1, B, ...): one H2D copy
        return dropout_forward(a_in, mask)

    def backward(self, d_out, cache, need_input_grad=True):
        if not need_input_grad:
            return None, {}
        if cache is None:                                                        # identity forward
            return d_out, {}
        return dropout_backward(d_out, cache), {}

    def describe(self):
        return f"D{self.p:g}"


__all__ = ["Dropout", "dropout_backward", "dropout_forward", "dropout_mask"]
