"""The divergence guard: a training run stops at the first non-finite loss, gradient or
weight, with a message naming the epoch, the batch and the layer.

Checked after every step (:func:`check_step`), at the cost of one reduction per
parameter array (``isfinite(...).all()`` over the weights, which the step has just
written anyway):

- the loss L (a float the step returns);
- the weights W after the AdamW update and the clamp. A non-finite gradient always
  shows there: AdamW's first moment m = b1 m + (1 - b1) g and the update
  lr m_hat / (sqrt(v_hat) + eps) carry a NaN or inf of g into W (a clamp keeps a
  NaN a NaN). Only when a layer's weights fail is the optimizer's m of that layer
  looked at, to say whether the gradient or the update itself (lr, eps) was the
  first to leave the finite numbers.

The run then ends with exit status :data:`snnsim.cli.EXIT_DIVERGED` and the last
checkpoint left as it was: the diverged weights are never saved.
"""
from __future__ import annotations

import math


class DivergenceError(RuntimeError):
    """The loss, a gradient or a weight became NaN or inf; the message names the epoch,
    the batch and the layer."""


def _all_finite(xp, a) -> bool:
    return bool(xp.isfinite(a).all())


def check_step(net, opt, loss: float, epoch: int, batch: int) -> None:
    """Raise :class:`DivergenceError` if ``loss`` or any weight of ``net`` is not finite
    after the step of ``batch`` (0-based) of ``epoch`` (1-based)."""
    where = f"epoch {epoch}, batch {batch + 1}"
    for i, layer in enumerate(net.params):
        for name, p in layer.items():
            if not _all_finite(net.xp, p):
                m = opt.m[i].get(name) if getattr(opt, "m", None) else None
                grad_bad = m is not None and not _all_finite(net.xp, m)
                cause = ("its gradient was NaN or inf" if grad_bad else
                         "the gradient was finite but the AdamW update was not (lr, eps?)")
                raise DivergenceError(
                    f"{where}: weights {name} of layer {i} ({net.layers[i].describe()}) became "
                    f"NaN or inf after the step; {cause}; loss {loss:.6g}. Training stopped; "
                    "the last checkpoint is the last finite one. Try a smaller lr, or keep "
                    "grad_clip and weight_clamp on")
    if not math.isfinite(loss):
        raise DivergenceError(f"{where}: the loss is {loss}; training stopped; the last "
                              "checkpoint is the last finite one")


__all__ = ["DivergenceError", "check_step"]
