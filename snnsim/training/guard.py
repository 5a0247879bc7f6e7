"""The divergence guard: a training run stops at the first non-finite loss, weight or
optimizer state, with a message naming the epoch, the batch, the layer and what went
non-finite.

Checked after every step (:func:`check_step`), at the cost of two reductions per
parameter array (``isfinite(...).all()`` over the weights W and AdamW's second moment
v, which the step has just written anyway):

- the loss L (a float the step returns);
- the weights W after the AdamW update and the clamp. A non-finite gradient shows
  there: AdamW's first moment m = b1 m + (1 - b1) g and the update
  lr m_hat / (sqrt(v_hat) + eps) carry a NaN or inf of g into W (a clamp keeps a
  NaN a NaN);
- AdamW's second moment v = b2 v + (1 - b2) g². A finite gradient whose square
  overflows (above about 1.8e19 in float32: weights grown without bound, ``--lr=1e6
  --weight-clamp=0 --grad-clip=0``) makes v inf while W stays finite (the update
  m_hat / inf is 0): without this check such a run went on and saved v = inf.

The check of v costs a second reduction per array (2.4 ms against 1.0 ms per step of the
784-400-400-10 MLP, measured). It is needed only where a gradient element can exceed
about 1.8e19: a run whose gradient is clipped to a norm c ≤ :data:`CLIP_BOUNDS_V` has
every element |g| ≤ c after the clip, so g² ≤ 1e36 and v, a weighted mean of such
squares, stays finite. :func:`needs_v_check` says so for a config, and such runs (the
default clip 1) skip it.

Only when a layer fails are its m and v looked at, to name what left the finite
numbers first: the gradient (m non-finite), the squared gradient (v alone), or the
update itself (W alone: lr, eps).

The run then ends with exit status :data:`snnsim.cli.EXIT_DIVERGED` and the last
checkpoint left as it was: the diverged state is never saved
(:func:`snnsim.training.checkpoint.save_checkpoint` refuses it as well).
"""
from __future__ import annotations

import math


class DivergenceError(RuntimeError):
    """The loss, a weight or the optimizer state became NaN or inf; the message names
    the epoch, the batch, the layer and what went non-finite."""


#: A gradient clipped to a norm at most this bounds every squared element by 1e36, below
#: float32's largest value (3.4e38): AdamW's v cannot overflow.
CLIP_BOUNDS_V = 1e18


def needs_v_check(grad_clip: float | None, xp=None, opt=None) -> bool:
    """True unless the gradient clip bounds v (see the module docstring) and v is finite to
    begin with (``opt``'s v, looked at once: a checkpoint resumed with ``--allow-nonfinite``
    may bring a v that is inf already)."""
    if not (grad_clip and 0 < grad_clip <= CLIP_BOUNDS_V):
        return True
    layers = getattr(opt, "v", None) or []
    return not all(_all_finite(xp, v) for layer in layers for v in layer.values())


def _all_finite(xp, a) -> bool:
    return bool(xp.isfinite(a).all())


def _moment(opt, moment: str, i: int, name: str):
    layers = getattr(opt, moment, None)
    return layers[i].get(name) if layers else None


def describe_failure(xp, w, m, v) -> tuple[list[str], str]:
    """(which of the weights W, AdamW's m and v are non-finite, the likely cause)."""
    bad = [label for label, a in (("weights", w), ("AdamW first moment m", m),
                                  ("AdamW second moment v", v))
           if a is not None and not _all_finite(xp, a)]
    if "AdamW first moment m" in bad:
        cause = "its gradient was NaN or inf"
    elif "AdamW second moment v" in bad:
        cause = ("the squared gradient overflowed (the gradient was finite but too large: "
                 "weights or lr without bound)")
    else:
        cause = "the gradient was finite but the AdamW update was not (lr, eps?)"
    return bad, cause


def check_step(net, opt, loss: float, epoch: int, batch: int, check_v: bool = True) -> None:
    """Raise :class:`DivergenceError` if ``loss``, a weight of ``net`` or (``check_v``:
    where :func:`needs_v_check`) the second moment v of ``opt`` is not finite after the
    step of ``batch`` (0-based) of ``epoch`` (1-based)."""
    where = f"epoch {epoch}, batch {batch + 1}"
    xp = net.xp
    for i, layer in enumerate(net.params):
        for name, p in layer.items():
            v = _moment(opt, "v", i, name)
            if _all_finite(xp, p) and (v is None or not check_v or _all_finite(xp, v)):
                continue
            bad, cause = describe_failure(xp, p, _moment(opt, "m", i, name), v)
            raise DivergenceError(
                f"{where}: {' and '.join(bad)} of parameter {name} of layer {i} "
                f"({net.layers[i].describe()}) became NaN or inf after the step; {cause}; "
                f"loss {loss:.6g}. Training stopped. Try a smaller lr, or keep grad_clip and "
                "weight_clamp on")
    if not math.isfinite(loss):
        raise DivergenceError(f"{where}: the loss is {loss}; training stopped")


__all__ = ["CLIP_BOUNDS_V", "DivergenceError", "check_step", "describe_failure", "needs_v_check"]
