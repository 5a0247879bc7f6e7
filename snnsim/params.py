"""Model and gradient parameters: documented, immutable records.

Every bare number of the authors' code that enters the mathematics gets a named
constant here, with the place it comes from.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

# --- named constants -------------------------------------------------------
#: Bound on ``|∂t_m/∂u[t_m]|`` = 1/Δu[t_m] (paper S 2.3 "we set a bound for this
#: derivative"; the authors' code uses 8).
SENSITIVITY_BOUND = 8.0
#: Width of the warm-up sigmoid σ((u - V_th)/w) (authors' code: 0.2).
WARMUP_WIDTH = 0.2
#: Clip of the warm-up sigmoid's argument z = (V_th - u)/w (authors' code: ±8).
WARMUP_Z_CLIP = 8.0
#: Warm-up applies where a[t] < WARMUP_PSC_FRACTION · θs, i.e. a[t] < 1/(4 τs)
#: (authors' code; paper S 2.3 "no spike within a certain time window").
WARMUP_PSC_FRACTION = 0.25

RESETS = ("zero", "subtract")
READINGS = ("authors", "timing")


def check_neuron(tau_m, tau_s, v_th, reset: str = "zero") -> None:
    """The one check of a neuron's parameters (:class:`NeuronParams` and every config
    that names them, :mod:`snnsim.training.config`): ValueError naming the first that
    the discrete model cannot use. τm and τs must exceed one time step (1 ms): the
    per-step factors 1 - 1/τ must lie in (0, 1), else the membrane or the PSC flips
    sign every step (τ < 1) or forgets at once (τ = 1, where ln(1 - θ) is -inf);
    V_th must be positive; each a finite real number, not a bool."""
    for key, value in (("tau_m", tau_m), ("tau_s", tau_s), ("v_th", v_th)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}")
    if not tau_m > 1.0:
        raise ValueError(f"tau_m must exceed 1 ms (one time step), got {tau_m}")
    if not tau_s > 1.0:
        raise ValueError(f"tau_s must exceed 1 ms (one time step), got {tau_s}")
    if not v_th > 0.0:
        raise ValueError(f"v_th must be positive, got {v_th}")
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")


@dataclass(frozen=True)
class NeuronParams:
    """Leaky integrate-and-fire neuron with a first-order synapse, eqs. (2)-(6).

    Attributes
    ----------
    tau_m : membrane time constant τm in ms (time step 1 ms); θm = 1/τm.
    tau_s : synaptic time constant τs in ms; θs = 1/τs.
    v_th : firing threshold V_th (dimensionless membrane units).
    reset : ``"zero"`` (authors' code: ū = u (1 - s)) or ``"subtract"``
        (paper text: ū = u - V_th s).
    """

    tau_m: float = 5.0
    tau_s: float = 3.0
    v_th: float = 1.0
    reset: str = "zero"

    def __post_init__(self):
        check_neuron(self.tau_m, self.tau_s, self.v_th, self.reset)

    @property
    def theta_m(self) -> float:
        """Leak rate θm = 1/τm per step."""
        return 1.0 / self.tau_m

    @property
    def theta_s(self) -> float:
        """Synaptic decay rate θs = 1/τs per step."""
        return 1.0 / self.tau_s

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GradientParams:
    """How the TSSL-BP backward pass reads its terms (docs/gradient.md).

    Attributes
    ----------
    reading : ``"authors"`` — what the public code computes: ∂a[t_k]/∂t_m = -κ[k-m]
        and ∂u[t_p]/∂t_m = -θm R (1-θm)^{p-m-1} (the reset at t_m moves the membrane
        at the next spike t_p); or ``"timing"`` — the exact derivative of the
        event-shift model: ∂a[t_k]/∂t_m = -ln(1-θs) κ[k-m] and
        ∂u[t_p]/∂t_m = R ln(1-θm) (1-θm)^{p-m} (< 0: a later reset leaves less charge).
    sensitivity_bound : bound on ``|∂t_m/∂u[t_m]|`` (S 2.3), or None for the exact value.
    warmup : replace δ[t] by the sigmoid surrogate where a[t] < 1/(4τs) (S 2.3).
    """

    reading: str = "authors"
    sensitivity_bound: float | None = SENSITIVITY_BOUND
    warmup: bool = True

    def __post_init__(self):
        if self.reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {self.reading!r}")
        if self.sensitivity_bound is not None and not self.sensitivity_bound > 0:
            raise ValueError(f"sensitivity_bound must be positive or None, got {self.sensitivity_bound}")

    def to_dict(self) -> dict:
        return asdict(self)


#: The gradient of section 6: exact, unbounded, no warm-up. What the
#: finite-difference tests of the event-shift model check.
EXACT_TIMING = GradientParams(reading="timing", sensitivity_bound=None, warmup=False)


def log1m(theta: float) -> float:
    """ln(1 - θ), the continuous-time decay exponent of a per-step factor (1 - θ)."""
    return math.log1p(-theta)
