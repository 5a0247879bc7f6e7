"""A feed-forward spiking network: layers, LIF neurons, forward and TSSL-BP backward.

    net = Network([Dense(400), Dense(400), Dense(10)], input_shape=(784,))
    a_out, cache = net.forward(x_in)             # x_in (T, B, 784), time first
    loss, g = kernel_loss(a_out, a_hat)
    grads = net.backward(g, cache)               # one dict per layer, like layer.params

The input is filtered once by the synapse (a^0 = κ * x_in). Each spiking layer
(dense, conv) turns the PSC below into currents x = W a, and its LIF neurons
turn x into spikes and a PSC; non-spiking layers (pool, dropout) act on PSCs.
The cache keeps every layer's :class:`~snnsim.neuron.LIFState` (x, u, Δu, s, a)
for the backward pass and for inspection. The neuron model is a pair of hooks,
:class:`~snnsim.neuron.NeuronModel` (default :data:`snnsim.tsslbp.LIF`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backend import array_module, backend_name, default_device, device, get_backend, to_numpy
from .layers import Layer
from .layout import is_time_broadcast
from .neuron import LIFState, NeuronModel, psc_filter
from .params import GradientParams, NeuronParams
from .tsslbp import LIF


class BackwardPass(NamedTuple):
    """Everything one backward pass computed, per layer i (input side first):

    grads[i] : ∂L/∂θ, a dict keyed like ``layers[i].params``;
    g[i] : ∂L/∂a^i, the error handed to layer i at its output ``(T, B, ...)``;
    deltas[i] : δ^i = ∂L/∂u^i of a spiking layer (None for the others).

    For a static input the first layer's own backward receives Σ_t γ[t] δ[t]
    ``(1, B, ...)`` (see :meth:`Network.forward`); ``deltas[0]`` is δ over time.
    """

    grads: list
    g: list
    deltas: list


class NetworkCache(NamedTuple):
    """What a forward pass keeps: the filtered input a^0 ``(T, B, ...)``, and per
    layer its own cache and its LIF state (None for non-spiking layers).

    For a static input (:func:`repeat_static`) ``input_psc`` is the read-only
    product γ[t] x of the gain ``input_gain`` γ ``(T,)`` and the image, and the
    first layer's cache is that of the single image (see :meth:`Network.forward`).
    """

    input_psc: object
    layer_caches: list
    states: list
    input_gain: object = None


def repeat_static(images, n_steps: int):
    """A static input (B, ...) as a current repeated at every step: a read-only
    broadcast view ``(T, B, ...)`` (no copy).

    :meth:`Network.forward` recognises such a view (stride 0 along time) and
    runs the first layer once: the input synapse and every layer are linear, so
    with a^0[t] = γ[t] x, γ[t] = 1 - (1-θs)^{t+1}, the first layer's output is
    γ[t] · layer(x) exactly — T times fewer operations in the largest layer.
    """
    xp = array_module(images)
    return xp.broadcast_to(images[None, ...], (n_steps,) + images.shape)


def static_input_gain(n_steps: int, theta_s: float, xp, dtype, device=None):
    """γ[t] = Σ_{k≤t} κ[k] = 1 - (1-θs)^{t+1}: the input PSC of a unit current held on."""
    steps = xp.arange(1, n_steps + 1, dtype=dtype, device=device)
    return xp.astype(1.0 - (1.0 - theta_s) ** steps, dtype)


class Network:
    """A stack of layers with LIF neurons after every spiking layer.

    Parameters
    ----------
    layers : list of :class:`~snnsim.layers.Layer`.
    input_shape : feature shape of one input sample, e.g. ``(784,)`` or ``(1, 28, 28)``.
    neuron : default :class:`NeuronParams` (a layer's own ``neuron`` overrides it).
    grad : :class:`GradientParams`, the reading of the backward pass.
    backend : ``"numpy"``, ``"cupy"`` or ``"torch"`` (PyTorch tensors, on CUDA where
        PyTorch has it), chosen explicitly.
    dtype : ``"float32"`` (default) or ``"float64"``.
    seed : seed of the initialisation (a NumPy Generator; the same weights on
        both backends).
    fused : run each LIF layer's forward and backward as one CUDA kernel per
        pass (:data:`snnsim.cuda.kernels.FUSED_LIF`); needs ``backend="cupy"``.
    model : the :class:`~snnsim.neuron.NeuronModel` of every spiking layer
        (default :data:`snnsim.tsslbp.LIF`; with ``fused``, its CUDA twin).
    """

    def __init__(self, layers: list[Layer], input_shape: tuple, neuron: NeuronParams = NeuronParams(),
                 grad: GradientParams = GradientParams(), backend: str = "numpy",
                 dtype: str = "float32", seed: int = 0, fused: bool = False,
                 model: NeuronModel | None = None):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if fused and backend != "cupy":
            raise ValueError("fused=True needs backend='cupy' (the fused LIF kernels are CUDA kernels)")
        if fused and model is not None:
            raise ValueError("fused=True chooses the fused LIF model; do not pass model= too")
        self.fused = fused
        self.model = _fused().FUSED_LIF if fused else (model or LIF)
        self.layers = list(layers)
        self.input_shape = tuple(int(n) for n in input_shape)
        self.neuron = neuron
        self.grad = grad
        self.backend = backend
        self.xp = get_backend(backend)
        self.dtype_name, self.device = dtype, None
        self.dtype = _namespace_dtype(self.xp, dtype)
        rng = np.random.default_rng(seed)
        shape = self.input_shape
        self.shapes = [shape]
        for layer in self.layers:
            layer.init_params(shape, rng, self.xp, self.dtype)
            shape = tuple(layer.output_shape(shape))
            self.shapes.append(shape)
        if default_device(backend) is not None:
            self.move_to(self.xp, default_device(backend))

    def move_to(self, xp, device=None) -> Network:
        """Move the parameters to array API namespace ``xp`` on ``device`` (e.g.
        ``array_api_strict`` in the tests); build the optimizer afterwards."""
        self.xp, self.device = xp, device
        self.backend = backend_name(xp)
        self.dtype = _namespace_dtype(xp, self.dtype_name)
        for layer in self.layers:
            layer.params = {k: xp.asarray(to_numpy(v), device=device) for k, v in layer.params.items()}
        return self

    # --- parameters ----------------------------------------------------------
    @property
    def params(self) -> list[dict]:
        """Per layer, its dict of parameter arrays (the live arrays)."""
        return [layer.params for layer in self.layers]

    def neuron_of(self, layer: Layer) -> NeuronParams:
        return layer.neuron if layer.neuron is not None else self.neuron

    def describe(self) -> str:
        return "-".join(layer.describe() for layer in self.layers)

    # --- forward ---------------------------------------------------------------
    def forward(self, x_in, train: bool = False, rng=None, model: NeuronModel | None = None,
                ops=None):
        """Run the network on ``x_in`` ``(T, B, *input_shape)``.

        ``train`` enables dropout, drawing masks from ``rng``. ``model`` replaces
        the network's neuron model for this call (its ``forward`` is used), e.g.
        by the event-shift model (:mod:`snnsim.eventshift`). ``ops`` replaces the
        layers' own forward: ``ops.forward(layer, a, train, rng)`` (the fast path's
        convolution and pooling, :class:`snnsim.fast.FastPath`).
        Returns ``(a_out, cache)``: the output PSC ``(T, B, C)`` and a
        :class:`NetworkCache`.
        """
        xp = array_module(x_in)
        if xp is not self.xp:
            raise TypeError(f"input is a {xp.__name__} array but the network lives on {self.backend}")
        if tuple(x_in.shape[2:]) != self.input_shape:
            raise ValueError(f"expected input (T, B, {', '.join(map(str, self.input_shape))}), "
                             f"got {x_in.shape}")
        T = x_in.shape[0]
        gain = None
        if is_time_broadcast(x_in, xp):                                     # repeat_static view
            image = xp.astype(x_in[0, ...], self.dtype, copy=False)        # (B, ...)
            gain = static_input_gain(T, self.neuron.theta_s, xp, self.dtype, device(x_in))  # (T,)
            a = xp.broadcast_to(_expand(gain, image.ndim) * image, x_in.shape)  # a^0, read-only
        else:
            a = psc_filter(xp.astype(x_in, self.dtype, copy=False), self.neuron.theta_s)  # a^0, (T, B, ...)
        input_psc = a
        model = model or self.model
        forward = ops.forward if ops is not None else _own_forward
        layer_caches, states = [], []
        for i, layer in enumerate(self.layers):
            if i == 0 and gain is not None:
                out1, cache = forward(layer, image[None, ...], train, rng)         # (1, B, ...)
                out = _expand(gain, out1.ndim - 1) * out1[0, ...]                # γ[t] layer(x)
            else:
                out, cache = forward(layer, a, train, rng)
            state = None
            if layer.spiking:
                a, state = model.forward(out, self.neuron_of(layer))
            else:
                a = out
            layer_caches.append(cache)
            states.append(state)
        return a, NetworkCache(input_psc, layer_caches, states, gain)

    # --- backward --------------------------------------------------------------
    def backward(self, dL_da, cache: NetworkCache, grad: GradientParams | None = None,
                 model: NeuronModel | None = None, ops=None) -> list[dict]:
        """∂L/∂θ for every layer from g^L = ∂L/∂a^L ``(T, B, C)``: the ``grads`` of
        :meth:`backward_pass`. Returns one dict per layer, keyed like ``layer.params``."""
        return self.backward_pass(dL_da, cache, grad, model, ops).grads

    def backward_pass(self, dL_da, cache: NetworkCache, grad: GradientParams | None = None,
                      model: NeuronModel | None = None, ops=None) -> BackwardPass:
        """The backward walk, every intermediate kept (:class:`BackwardPass`).

        Per spiking layer, top down: δ^l = backward(g^l) (9), then
        ∂L/∂W^l = Σ_t δ^l a^{l-1}ᵀ (8) and g^{l-1} = W^lᵀ δ^l (10).
        ``grad`` overrides the network's reading for this call; ``model``
        the neuron model (its ``backward(g, state, neuron, grad) -> δ``), e.g. a
        surrogate gradient or the O(T²) explicit-φ baseline; ``ops`` the layers'
        own backward (``ops.backward(layer, g, cache, need_input_grad)``, as in
        :meth:`forward`).
        """
        grad = grad or self.grad
        model = model or self.model
        backward = ops.backward if ops is not None else _own_backward
        xp = array_module(dL_da)
        n = len(self.layers)
        grads: list[dict] = [{} for _ in range(n)]
        gs, deltas = [None] * n, [None] * n
        g = dL_da
        for i in reversed(range(n)):
            layer, state = self.layers[i], cache.states[i]
            gs[i] = g
            if layer.spiking:
                g = deltas[i] = model.backward(g, state, self.neuron_of(layer), grad)
            if i == 0 and cache.input_gain is not None:                   # static input: Σ_t γ[t] g[t]
                g = xp.tensordot(cache.input_gain, g, axes=((0,), (0,)))[None, ...]
            g, grads[i] = backward(layer, g, cache.layer_caches[i], i > 0)
        return BackwardPass(grads, gs, deltas)


def _own_forward(layer: Layer, a, train: bool, rng):
    """The layer's own forward (:meth:`Network.forward` without ``ops``)."""
    return layer.forward(a, train=train, rng=rng)


def _own_backward(layer: Layer, g, cache, need_input_grad: bool):
    """The layer's own backward (:meth:`Network.backward_pass` without ``ops``)."""
    return layer.backward(g, cache, need_input_grad=need_input_grad)


def _namespace_dtype(xp, name: str):
    """The dtype ``name`` as namespace ``xp`` spells it (a NumPy dtype for NumPy and CuPy,
    which share NumPy's dtypes)."""
    return np.dtype(name) if backend_name(xp) in ("numpy", "cupy") else getattr(xp, name)


def _fused():
    """The CUDA kernels' module, imported only when a fused network runs."""
    from .cuda import kernels
    return kernels


def _expand(gain, n_trailing: int):
    """γ ``(T,)`` shaped ``(T, 1, ..., 1)`` to broadcast over ``n_trailing`` axes."""
    return array_module(gain).reshape(gain, gain.shape + (1,) * n_trailing)


__all__ = ["BackwardPass", "LIFState", "Network", "NetworkCache", "repeat_static"]
