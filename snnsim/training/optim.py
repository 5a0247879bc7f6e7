"""Training updates as the authors ran them (docs/authors_code.md): AdamW,
global gradient-norm clipping, and clamping the weights after every step.

    grads = net.backward(g, cache)          # list of dicts, like net.params
    clip_grad_norm(grads, max_norm=1.0)     # in place, returns the norm before clipping
    opt.step(grads)                         # in place on the live parameter arrays
    clamp_weights(net.params, -4.0, 4.0)    # in place

Everything works in place on the arrays it is given and takes its array module
from them (NumPy or CuPy): nothing is copied between host and device. The
parameter lists are ``list[dict[str, array]]``, one dict per layer, exactly
``Network.params``; layers without parameters have empty dicts.
"""
from __future__ import annotations

import math

from ..backend import array_module, device, to_numpy
from ..layout import into

#: PyTorch's AdamW defaults (torch.optim.AdamW), used by the authors' code.
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8
ADAMW_WEIGHT_DECAY = 0.01
#: Added to the total norm before dividing, as ``torch.nn.utils.clip_grad_norm_`` does.
CLIP_NORM_EPS = 1e-6
#: The authors' weight clamp after every step (their ``weight_clipper``): [-4, 4].
WEIGHT_CLAMP = 4.0


class AdamW:
    """AdamW (Loshchilov & Hutter) exactly as ``torch.optim.AdamW`` (amsgrad off).

    For every parameter p with gradient g, at step t = 1, 2, ...::

        p   <- p (1 - lr·λ)                         decoupled weight decay
        m   <- β1 m + (1-β1) g                      first moment
        v   <- β2 v + (1-β2) g²                     second moment
        m̂ = m / (1-β1^t),  v̂ = v / (1-β2^t)        bias correction
        p   <- p - lr · m̂ / (√v̂ + ε)

    computed, as PyTorch does, as ``p -= (lr/(1-β1^t)) · m / (√v/√(1-β2^t) + ε)``.

    Parameters
    ----------
    params : list of dicts of parameter arrays (``Network.params``); updated in place.
    lr : learning rate γ.
    betas : (β1, β2).
    eps : ε, added to √v̂.
    weight_decay : λ (decoupled: p <- p - lr·λ·p, before the Adam step).
    """

    def __init__(self, params: list[dict], lr: float, betas=ADAMW_BETAS, eps: float = ADAMW_EPS,
                 weight_decay: float = ADAMW_WEIGHT_DECAY):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        #: The global gradient norm of the last step before its clip (None without a clip):
        #: set by the training step, for the logs (``--tensorboard``).
        self.last_grad_norm: float | None = None
        beta1, beta2 = (float(b) for b in betas)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.params = params
        self.lr = float(lr)
        self.betas = (beta1, beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.step_count = 0
        self.m = [{k: _zeros_like(p) for k, p in layer.items()} for layer in params]
        self.v = [{k: _zeros_like(p) for k, p in layer.items()} for layer in params]
        # scratch buffers, one per parameter: no allocation inside step()
        self._tmp = [{k: _zeros_like(p) for k, p in layer.items()} for layer in params]

    def step(self, grads: list[dict]) -> None:
        """One AdamW update of every parameter from ``grads`` (same structure as params)."""
        consts = self.begin_step(grads)
        for layer, g_layer, m_layer, v_layer, t_layer in zip(self.params, grads, self.m, self.v,
                                                             self._tmp):
            for name, p in layer.items():
                self.update(p, g_layer[name], m_layer[name], v_layer[name], t_layer[name], consts)

    def begin_step(self, grads: list[dict]) -> tuple[float, float, float]:
        """Check ``grads`` against the parameters, count the step t and return its scalars
        (1 - lr·λ, lr/(1-β1^t), 1/√(1-β2^t)) for :meth:`update`."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradient dicts for {len(self.params)} parameter dicts")
        for layer, g_layer in zip(self.params, grads):
            for name, p in layer.items():
                if g_layer[name].shape != p.shape:
                    raise ValueError(f"gradient of {name!r} has shape {g_layer[name].shape}, "
                                     f"parameter {p.shape}")
        self.step_count += 1
        t = self.step_count
        beta1, beta2 = self.betas
        decay = 1.0 - self.lr * self.weight_decay
        step_size = self.lr / (1.0 - beta1 ** t)                 # lr / (1-β1^t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2 ** t)          # 1 / √(1-β2^t)
        return decay, step_size, inv_sqrt_bc2

    def update(self, p, g, m, v, tmp, consts: tuple[float, float, float]) -> None:
        """The update of one parameter ``p`` (or of a block of one, :mod:`snnsim.fast`) with
        its gradient g and moments m, v, in place, through the scratch array ``tmp``."""
        decay, step_size, inv_sqrt_bc2 = consts
        beta1, beta2 = self.betas
        xp = array_module(p, g)
        into(xp, "subtract", g, m, out=tmp)                      # g - m
        if self.weight_decay:
            p *= decay                                            # p (1 - lr λ)
        tmp *= 1.0 - beta1
        m += tmp                                                  # m + (1-β1)(g - m) = β1 m + (1-β1) g
        into(xp, "multiply", g, g, out=tmp)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp                                                  # β2 v + (1-β2) g²
        into(xp, "sqrt", v, out=tmp)
        tmp *= inv_sqrt_bc2
        tmp += self.eps                                           # √v̂ + ε
        into(xp, "divide", m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp                                                  # p - lr m̂ / (√v̂ + ε)

    # --- state -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Step count, hyperparameters and the moments m, v as host (NumPy) arrays."""
        return {
            "name": "adamw",
            "step": int(self.step_count),
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "m": [{k: to_numpy(a).copy() for k, a in layer.items()} for layer in self.m],
            "v": [{k: to_numpy(a).copy() for k, a in layer.items()} for layer in self.v],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore step count and moments (copied onto the parameters' backend).

        Hyperparameters are those this optimizer was built with (the config's);
        the moments must match the parameters in structure and shape.
        """
        for key in ("m", "v"):
            src = state[key]
            if len(src) != len(self.params):
                raise ValueError(f"optimizer state has {len(src)} layers of {key!r}, "
                                 f"the network {len(self.params)}")
            for i, (layer, dst, s) in enumerate(zip(self.params, getattr(self, key), src)):
                if set(s) != set(layer):
                    raise ValueError(f"optimizer state {key!r} of layer {i} has parameters "
                                     f"{sorted(s)}, the network {sorted(layer)}")
                for name, p in layer.items():
                    a = s[name]
                    if tuple(a.shape) != tuple(p.shape):
                        raise ValueError(f"optimizer state {key!r} of layer {i} {name!r} has "
                                         f"shape {tuple(a.shape)}, parameter {tuple(p.shape)}")
                    xp = array_module(p)
                    dst[name][...] = xp.asarray(a, dtype=p.dtype, device=device(p))
        self.step_count = int(state["step"])


def _zeros_like(p):
    xp = array_module(p)
    return xp.zeros_like(p)


def global_grad_norm(grads: list[dict]) -> float:
    """‖g‖ = √(Σ over every gradient array of Σ g²): one L2 norm over all parameters."""
    total = 0.0
    for layer in grads:
        for g in layer.values():
            xp = array_module(g)
            flat = xp.reshape(g, (-1,))
            total += float(flat @ flat)
    return math.sqrt(total)


def clip_grad_norm(grads: list[dict], max_norm: float = 1.0) -> float:
    """Scale all gradients in place by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the
    global L2 norm, as ``torch.nn.utils.clip_grad_norm_``. Returns ‖g‖ before clipping."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = global_grad_norm(grads)
    scale = max_norm / (norm + CLIP_NORM_EPS)
    if scale < 1.0:
        for layer in grads:
            for g in layer.values():
                g *= scale
    return norm


def clamp_weights(params: list[dict], lo: float = -WEIGHT_CLAMP, hi: float = WEIGHT_CLAMP) -> None:
    """Clamp every parameter in place to [lo, hi] (authors: [-4, 4] after every step)."""
    if not lo < hi:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    for layer in params:
        for p in layer.values():
            xp = array_module(p)
            into(xp, "clip", p, lo, hi, out=p)


__all__ = ["ADAMW_BETAS", "ADAMW_EPS", "ADAMW_WEIGHT_DECAY", "AdamW", "CLIP_NORM_EPS",
           "WEIGHT_CLAMP", "clamp_weights", "clip_grad_norm", "global_grad_norm"]
