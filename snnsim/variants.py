"""Backward variants: the ways of computing a network's weight gradient that snnsim can
train with (``python3 -m snnsim.train --backward=NAME``) and that the gradient-fidelity
study compares (:mod:`snnsim.fidelity`). Defined once, here.

The forward pass is always the discrete LIF network (2)-(6); a variant only replaces the
LIF layer's backward δ = ∂L/∂u inside :meth:`snnsim.network.Network.backward` (the
weight gradient (8) and the error to the layer below (10) are shared):

- ``tsslbp``: the network's own TSSL-BP reading (:class:`~snnsim.params.GradientParams`
  from the preset and the ``reading`` / ``sensitivity_bound`` / ``warmup`` settings);
  the training default, computed exactly as before variants existed.
- named TSSL-BP variants (:data:`VARIANTS` of kind ``"tsslbp"``): a fixed reading, bound
  and warm-up, and optionally φ<1> with its sign flipped (:func:`signed_lif_backward`);
- surrogate-gradient BPTT of the same network (:mod:`snnsim.surrogate`), with the reset
  detached or attached.

The sign analysis behind the ``*-flipped`` variants: in every spiking layer the TSSL-BP
recursion (:func:`snnsim.tsslbp.lif_backward`) has one source term,
φ<1> = -c κ[k-m] ∂t_m/∂u[m]; φ<2> and the leak only carry it to earlier steps. So
without warm-up, δ is homogeneous of degree one in the coefficient c: c = 1 for
``authors``, c = ln(1-θs) < 0 for ``timing``. Multiplying c by -1 multiplies δ by -1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .neuron import NeuronModel
from .params import EXACT_TIMING, SENSITIVITY_BOUND, GradientParams, NeuronParams, log1m
from .surrogate import surrogate_lif_backward
from .tsslbp import LIF, lif_backward, psc_reverse_sum, warmup_replace

#: The training default: TSSL-BP with the network's own gradient reading.
DEFAULT_BACKWARD = "tsslbp"
DEFAULT_BACKWARD_DOC = ("default: TSSL-BP, the preset's reading (authors: as `authors`) "
                        "with --reading, --sensitivity_bound, --warmup")


@dataclass(frozen=True)
class Variant:
    """One way of computing the backward pass.

    kind : ``"tsslbp"`` (:func:`signed_lif_backward` with ``grad`` and ``phi1_sign``)
        or ``"surrogate"`` (:func:`snnsim.surrogate.surrogate_lif_backward`).
    doc : one line, for ``--help`` and the reports.
    """

    name: str
    kind: str
    doc: str
    grad: GradientParams | None = None
    phi1_sign: float = 1.0
    detach_reset: bool = True


#: The timing reading with the authors' bound and warm-up.
TIMING_BW = GradientParams("timing", SENSITIVITY_BOUND, True)

VARIANTS = {v.name: v for v in [
    Variant("authors", "tsslbp", "authors' code: φ<1> = +κ min(1/Δu, 8), warm-up", GradientParams()),
    Variant("authors-nowarmup", "tsslbp", "authors' reading, bound 8, no warm-up",
            GradientParams("authors", SENSITIVITY_BOUND, False)),
    Variant("authors-nobound", "tsslbp", "authors' reading, warm-up, no bound",
            GradientParams("authors", None, True)),
    Variant("authors-raw", "tsslbp", "authors' reading, no bound, no warm-up",
            GradientParams("authors", None, False)),
    Variant("authors-flipped", "tsslbp",
            "authors' code with φ<1> negated (the exact sign); bound, warm-up kept",
            GradientParams(), phi1_sign=-1.0),
    Variant("timing", "tsslbp", "exact event-shift gradient (EXACT_TIMING: no bound, no warm-up)",
            EXACT_TIMING),
    Variant("timing-bw", "tsslbp", "timing reading with bound 8 and warm-up", TIMING_BW),
    Variant("timing-flipped", "tsslbp",
            "timing with φ<1> negated (the authors' sign): c = -ln(1-θs)",
            EXACT_TIMING, phi1_sign=-1.0),
    Variant("timing-bw-flipped", "tsslbp", "timing with φ<1> negated, bound 8 and warm-up",
            TIMING_BW, phi1_sign=-1.0),
    Variant("surrogate", "surrogate", "surrogate-gradient BPTT, sigmoid width 0.2, reset detached"),
    Variant("surrogate-attached", "surrogate", "surrogate-gradient BPTT, reset attached",
            detach_reset=False),
]}

#: Every name ``--backward`` accepts: the default, then the named variants.
BACKWARDS = (DEFAULT_BACKWARD,) + tuple(VARIANTS)


def get_variant(name: str) -> Variant | None:
    """The named variant; None for ``tsslbp`` (the network's own reading).
    Raises ValueError listing the valid names."""
    if name == DEFAULT_BACKWARD:
        return None
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown backward variant {name!r}; choose one of "
                         + ", ".join(BACKWARDS)) from None


def describe_backwards(indent: str = "  ", names=BACKWARDS) -> str:
    """One line per name (default: every name ``--backward`` accepts), for ``--help``."""
    width = max(map(len, names))
    docs = {DEFAULT_BACKWARD: DEFAULT_BACKWARD_DOC, **{n: v.doc for n, v in VARIANTS.items()}}
    return "\n".join(f"{indent}{n:<{width}}  {docs[n]}" for n in names)


def signed_lif_backward(dL_da, state, neuron: NeuronParams, grad: GradientParams,
                        phi1_sign: float = 1.0):
    """δ of :func:`snnsim.tsslbp.lif_backward` with φ<1>'s coefficient c multiplied by ``phi1_sign``.

    The recursion's only source term is φ<1> = -c κ ∂t_m/∂u; φ<2> and the leak
    carry G[t+1] linearly, so G(c) = c G(1) and G(sign · c) = sign · G(c). Warm-up
    (δ = σ'(u) S where a < 1/(4τs), S 2.3) does not involve c and is applied after.
    ``phi1_sign = 1`` reproduces ``lif_backward(dL_da, state, neuron, grad)`` bit for bit.
    """
    G = lif_backward(dL_da, state, neuron, dataclasses.replace(grad, warmup=False))
    if phi1_sign != 1.0:
        G = phi1_sign * G
    if not grad.warmup:
        return G
    return warmup_replace(G, psc_reverse_sum(dL_da, neuron.theta_s), state, neuron)


def variant_model(variant: Variant | str, base: NeuronModel = LIF) -> NeuronModel | None:
    """``base`` (a :class:`~snnsim.neuron.NeuronModel`) with the variant's backward, for
    :meth:`snnsim.network.Network.backward`; None for ``tsslbp`` (the network's own)."""
    variant = get_variant(variant) if isinstance(variant, str) else variant
    if variant is None:
        return None
    if variant.kind == "surrogate":
        def backward(g, state, neuron, grad):
            return surrogate_lif_backward(g, state, neuron, variant.detach_reset)
    else:
        def backward(g, state, neuron, grad):
            return signed_lif_backward(g, state, neuron, variant.grad, variant.phi1_sign)
    return base._replace(backward=backward)


def variant_backward(net, dL_da, cache, variant: Variant | str | None = DEFAULT_BACKWARD) -> list[dict]:
    """Whole-network weight gradients under one variant (one dict per layer, keyed like
    ``layer.params``). ``tsslbp`` / None: exactly ``net.backward(dL_da, cache)``."""
    if variant is None:
        return net.backward(dL_da, cache)
    return net.backward(dL_da, cache, model=variant_model(variant, net.model))


def variant_gradient_params(name: str, default: GradientParams) -> GradientParams:
    """The :class:`GradientParams` a network trained with ``name`` reports: the variant's
    own for a named TSSL-BP variant, else ``default`` (the config's reading)."""
    v = get_variant(name)
    return v.grad if v is not None and v.kind == "tsslbp" else default


def psc_sign(variant: str) -> float:
    """Sign of the coefficient of ∂a[t_k]/∂u[t_m] in φ<1> of a TSSL-BP variant: +1 for the
    authors' sign (raising u raises a), -1 for the event-shift model's."""
    v = VARIANTS[variant]
    c = 1.0 if v.grad.reading == "authors" else log1m(NeuronParams().theta_s)
    return math.copysign(1.0, c * v.phi1_sign)


__all__ = ["BACKWARDS", "DEFAULT_BACKWARD", "TIMING_BW", "VARIANTS", "Variant", "describe_backwards",
           "get_variant", "psc_sign", "signed_lif_backward", "variant_backward",
           "variant_gradient_params", "variant_model"]
