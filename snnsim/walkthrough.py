"""One TSSL-BP gradient, term by term, on a network small enough to hold in one's head.

    python3 -m snnsim.walkthrough                      # the whole walkthrough, checked
    python3 -m snnsim.walkthrough --section checks     # only the table of checks
    python3 -m snnsim.walkthrough --break lif_backward # stop in pdb inside the engine

The example (:data:`EXAMPLE`): 2 input currents -> 2 hidden LIF neurons -> 1 output
LIF neuron, T = 5 steps, one sample, fixed weights, float64, τm = 5, τs = 3,
V_th = 1, zero reset, the authors' kernel loss and target. Chosen so that every
neuron spikes, hidden neuron 1 spikes three times (twice in a row, then after a
silent step) and the output neuron twice with a silent step between: every term
of the backward pass (φ<1>, φ<2>, the leak path, warm-up) is non-zero somewhere.

Every quantity is computed by the engine's own functions (:mod:`snnsim.neuron`,
:mod:`snnsim.loss`, :mod:`snnsim.tsslbp`, :class:`snnsim.network.Network`) and,
when run, checked

- against the plain-loop oracle ``reference/loops.py`` (written independently
  of the engine; not part of the installed package: when ``reference`` is not
  importable that check is reported as skipped, never as passed);
- against central differences of the smooth function it is the exact
  derivative of, where there is one: the ``timing`` reading is the derivative
  of the event-shift model (:mod:`snnsim.eventshift`); the ``authors`` reading,
  the bound on ∂t_m/∂u and the warm-up surrogate are not the derivative of the
  network (nor of any stated smooth function of it), so they have no such check;
- where the recursion of :func:`snnsim.tsslbp.lif_backward` and the explicit
  φ matrix meet: δ[m] = Σ_k φ(t_k, t_m) g[t_k] (9), and the per-step functions
  ``phi_inter``, ``phi_intra``, ``leak_path`` against the columns of φ's terms.

Equation labels: "(n)" the paper's main text, "(S n)" its supplement.
Exit status 0 when every check that ran passed, 1 otherwise, 2 for bad options.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field

import numpy as np

from . import eventshift, layers, loss, tsslbp
from .commandline import ArgumentParser, prog_name
from .layers import Dense
from .network import Network
from .neuron import NeuronModel
from .params import EXACT_TIMING, GradientParams, NeuronParams

# --- the example -----------------------------------------------------------------
#: Input currents x_in[t] of the two input neurons, one sample, ``(T, 2)``.
X_IN = ((3.0, 1.0), (0.0, 1.0), (1.0, 1.0), (3.0, 0.0), (0.0, 1.0))
#: Hidden weights W¹ (2 × 2) and output weights W² (1 × 2).
W_HIDDEN = ((-1.0, 2.5), (-1.0, 3.5))
W_OUTPUT = ((0.5, 1.5),)
#: The label of the sample (the output neuron is the label neuron).
LABEL = 0


@dataclass(frozen=True)
class Example:
    """The fixed example: neuron, input, weights, target convention."""

    neuron: NeuronParams = NeuronParams(tau_m=5.0, tau_s=3.0, v_th=1.0, reset="zero")
    x_in: tuple = X_IN
    weights: tuple = (W_HIDDEN, W_OUTPUT)
    label: int = LABEL
    desired_train: str = "authors"          # d = [0, 1, 1, 1, 1] (the authors' code, T = 5)
    target_filter_passes: int = 2           # â = κ * (κ * d) (the authors' code)

    @property
    def n_steps(self) -> int:
        return len(self.x_in)


EXAMPLE = Example()

#: The two readings of the backward pass shown: the authors' (as they train:
#: bound 8 on 1/Δu, warm-up on) and the exact derivative of the event-shift model.
READINGS = {"authors": GradientParams(), "timing": EXACT_TIMING}
#: What c of ∂a[t_k]/∂t_m = -c κ[k-m] is, per reading.
C_NOTE = {"authors": "1: the authors' code", "timing": "ln(1-θs): the event-shift model"}
#: Layers by the paper's index l: 1 hidden, 2 output (``Network.layers[l - 1]``).
LAYERS = (1, 2)

# --- tolerances -------------------------------------------------------------------
#: Engine against oracle, both float64, the same arithmetic in another order
#: (reference/README.md): |Δ| ≤ ORACLE_RTOL · max|oracle| + ORACLE_ATOL.
ORACLE_RTOL = 1e-10
ORACLE_ATOL = 1e-14
#: Central-difference step (float64, values O(1)).
FD_STEP = 1e-6
#: Analytic against central differences: |Δ| ≤ FD_RTOL · max|fd| + FD_ATOL. The
#: rounding error of a central difference is ~ ε |f| / h ≈ 2e-10 |f|; the truncation
#: error ~ h² (1/Δu)³ ≈ 1e-12 here (every spike of the example has Δu ≥ 0.81): the
#: tolerance leaves > 10³ of headroom, and a wrong factor (sign, (1-θ), ln(1-θ)) is
#: an O(0.1-1) relative error (the tests of tests/test_gradients.py use the same).
FD_RTOL = 1e-6
FD_ATOL = 1e-8
#: Two engine paths that compute the same sum (recursion against φ matrix).
IDENTITY_RTOL = 1e-12
IDENTITY_ATOL = 1e-15


# --- records ------------------------------------------------------------------------
@dataclass
class Check:
    """One comparison of a quantity with an independent value."""

    kind: str                       # "oracle" | "fd" | "identity"
    against: str                    # what it is compared with
    max_diff: float | None = None
    tol: float | None = None
    skipped: str | None = None      # why it did not run
    expected: np.ndarray | None = field(default=None, repr=False)   # the independent value

    @property
    def passed(self) -> bool | None:
        """True / False, or None when skipped."""
        if self.skipped is not None:
            return None
        return bool(self.max_diff <= self.tol)


@dataclass
class Quantity:
    """One quantity of the forward or backward pass, with where it comes from."""

    key: str                        # unique, e.g. "phi_1 timing l=2"
    symbol: str                     # the paper's symbol
    meaning: str                    # one line: what it is
    label: str                      # equation label(s)
    engine: str                     # the snnsim function that computes it
    reference: str                  # the reference/loops.py function that re-derives it
    fd: str                         # the finite-difference check, or why there is none
    value: np.ndarray               # its value (NumPy, float64 or bool)
    layout: str                     # "time" (T, N) | "phi" (N, T, T) | "matrix" | "scalar"
    section: str                    # "forward" | "backward authors" | "backward timing"
    checks: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


@dataclass
class Walkthrough:
    """Every quantity of the example, in the order of the walkthrough."""

    example: Example
    quantities: list
    oracle_note: str | None         # why the oracle checks were skipped, or None

    def __getitem__(self, key: str) -> Quantity:
        for q in self.quantities:
            if q.key == key:
                return q
        raise KeyError(key)

    def keys(self) -> list:
        return [q.key for q in self.quantities]

    @property
    def checks(self) -> list:
        return [(q, c) for q in self.quantities for c in q.checks]

    @property
    def failures(self) -> list:
        return [(q, c) for q, c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failures


# --- the oracle ---------------------------------------------------------------------
def load_oracle():
    """``(reference.loops, None)``, or ``(None, why)`` when ``reference/`` is not importable.

    ``reference/`` lives in the repository, not in the installed package: it is
    importable when the command runs from the repository root (or with the root on
    ``PYTHONPATH``).
    """
    try:
        from reference import loops
    except ImportError as exc:
        return None, (f"reference/ is not importable ({exc}); it is not part of the installed "
                      "package: run from the repository root to include the loop oracle")
    return loops, None


# --- checks -------------------------------------------------------------------------
def _max_diff(value, expected) -> float:
    value, expected = np.asarray(value, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if value.shape != expected.shape:
        return float("inf")
    return float(np.abs(value - expected).max()) if value.size else 0.0


def compare(kind: str, against: str, value, expected, rtol: float, atol: float) -> Check:
    """|value - expected| ≤ rtol · max|expected| + atol, as a :class:`Check`."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return Check(kind, against, _max_diff(value, expected), rtol * scale + atol, expected=expected)


def oracle_check(against: str, value, expected) -> Check:
    return compare("oracle", against, value, expected, ORACLE_RTOL, ORACLE_ATOL)


def fd_check(against: str, value, expected) -> Check:
    return compare("fd", against, value, expected, FD_RTOL, FD_ATOL)


def identity_check(against: str, value, expected) -> Check:
    return compare("identity", against, value, expected, IDENTITY_RTOL, IDENTITY_ATOL)


def central_difference(f, h: float = FD_STEP):
    """(f(h) - f(-h)) / 2h: the derivative at 0 of a smooth function of one number."""
    return (np.asarray(f(h), dtype=np.float64) - np.asarray(f(-h), dtype=np.float64)) / (2.0 * h)


# --- the engine's pass ----------------------------------------------------------------
def example_network(example: Example = EXAMPLE) -> Network:
    """The example's 2-2-1 network (float64, NumPy) with its fixed weights."""
    net = Network([Dense(2), Dense(1)], input_shape=(2,), neuron=example.neuron,
                  dtype="float64", backend="numpy")
    for params, W in zip(net.params, example.weights):
        params["W"][...] = np.asarray(W, dtype=np.float64)
    return net


def input_currents(example: Example = EXAMPLE):
    """x_in ``(T, B=1, 2)``."""
    return np.asarray(example.x_in, dtype=np.float64)[:, None, :]


def target(example: Example = EXAMPLE):
    """â ``(T, 1, 1)``: the label neuron's desired PSC (7)."""
    return loss.kernel_target(np.array([example.label]), 1, example.n_steps,
                              example.neuron.theta_s, example.desired_train,
                              example.target_filter_passes, dtype=np.float64)


def forward(example: Example = EXAMPLE):
    """``(net, x_in, a_out, cache, a_hat, L, g)``: the forward pass, the loss and g = ∂L/∂a."""
    net = example_network(example)
    x_in = input_currents(example)
    a_out, cache = net.forward(x_in)
    a_hat = target(example)
    L, g = loss.kernel_loss(a_out, a_hat)
    return net, x_in, a_out, cache, a_hat, L, g


def backward(net, cache, g, grad: GradientParams):
    """Per layer l = 1, 2: ``{l: dict(g, delta, carry, dW)}`` for one reading.

    ``g`` arriving at the output layer is ∂L/∂a (S 10); at the hidden layer
    (W²)ᵀ δ² (10). ``carry`` is the recursion's G before warm-up replaces δ
    (the same call with ``warmup=False``: warm-up never changes the carry).
    """
    walk = net.backward_pass(g, cache, grad)
    deltas, grads = walk.deltas, walk.grads
    no_warmup = dataclasses.replace(grad, warmup=False)
    out = {}
    g_l = g
    for l in reversed(LAYERS):
        carry = tsslbp.lif_backward(g_l, cache.states[l - 1], net.neuron_of(net.layers[l - 1]), no_warmup)
        out[l] = {"g": g_l, "delta": deltas[l - 1], "carry": carry, "dW": grads[l - 1]["W"]}
        if l > 1:
            g_l = layers.delta_hidden(deltas[l - 1], net.params[l - 1]["W"])
    return out


# --- finite differences of the smooth model --------------------------------------------
def _spike_time_of(u, du, m):
    """e ↦ τ(u[m] + e): the real-valued spike time of the event-shift model."""
    return lambda e: eventshift.spike_time(u[m] + e, u[m], du[m], m)


def fd_phi_column(state, neuron: NeuronParams, i: int, m: int):
    """∂a[·]/∂u[m] of neuron i under the event-shift model: central differences in
    x[m] (u[m] = (1-θm) ū[m-1] + x[m], so ∂/∂x[m] = ∂/∂u[m]). The whole φ(·, m)."""
    def psc(e):
        x = state.x.copy()
        x[m, 0, i] += e
        return eventshift.event_shift_lif(x, state, neuron)[:, 0, i]
    return central_difference(psc)


def fd_phi_terms(state, neuron: NeuronParams, i: int):
    """φ<1>, φ<2>, leak and φ of neuron i ``(T, T)`` ``[k, m]``, each by central
    differences of the part of the event-shift model it differentiates:

    - φ<1>(·, m): the PSC of spike m alone, θs (1-θs)^{k-τ}, τ = τ(u[m]);
    - φ<2>(·, m): the reset's contribution -R (1-θm)^{t_p-τ} to u[p] at the next
      spike p (R held), times φ(·, p) (itself by central differences);
    - leak(·, m): a silent m: the whole column; a spike m: the pass-through
      u - R(u) with τ held (0 for the zero reset, 1 for subtract) times
      (1-θm)^{p-m} φ(·, p);
    - φ(·, m): the whole event-shift model, :func:`fd_phi_column`.
    """
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    u, du, s = state.u[:, 0, i], state.du[:, 0, i], state.s[:, 0, i]
    T = len(u)
    k = np.arange(T, dtype=np.float64)
    full = np.stack([fd_phi_column(state, neuron, i, m) for m in range(T)], axis=1)
    out = {name: np.zeros((T, T)) for name in ("phi_1", "phi_2", "leak")}
    out["phi"] = full
    for m in range(T):
        later = np.flatnonzero(s[m + 1:])
        p = m + 1 + int(later[0]) if later.size else None        # the next spike, or none
        if not s[m]:
            out["leak"][:, m] = full[:, m]
            continue
        tau = _spike_time_of(u, du, m)
        out["phi_1"][:, m] = central_difference(
            lambda e: np.where(k >= m, theta_s * (1.0 - theta_s) ** (k - tau(e)), 0.0))
        if p is None:
            continue
        R = u[m] if neuron.reset == "zero" else neuron.v_th
        moves_u_p = central_difference(lambda e: -R * (1.0 - theta_m) ** (p - tau(e)))
        out["phi_2"][:, m] = moves_u_p * full[:, p]
        reset_of = (lambda v: v) if neuron.reset == "zero" else (lambda v: neuron.v_th)
        passes = central_difference(lambda e: (u[m] + e) - reset_of(u[m] + e))
        out["leak"][:, m] = passes * (1.0 - theta_m) ** (p - m) * full[:, p]
    return out


def _event_shift_loss(net, x_in, cache, a_hat, perturb=None):
    """L of the event-shift model around ``cache``; ``perturb(x, l) -> x`` may change the
    current of layer l."""
    spiking = iter([j for j, layer in enumerate(net.layers) if layer.spiking])

    def forward(x, neuron):                    # the neuron model's forward hook, layer by layer
        j = next(spiking)
        if perturb is not None:
            x = perturb(x, j + 1)
        return eventshift.event_shift_lif(x, cache.states[j], neuron), None
    a_out = net.forward(x_in, model=NeuronModel(forward, None))[0]
    return loss.kernel_loss(a_out, a_hat)[0]


def fd_delta(net, x_in, cache, a_hat, l: int):
    """δ^l[t, i] = ∂L/∂x^l[t, i] of the event-shift model, central differences ``(T, 1, N)``."""
    shape = cache.states[l - 1].x.shape
    fd = np.zeros(shape)
    for idx in np.ndindex(*shape):
        def perturbed(e, idx=idx):
            def perturb(x, layer):
                if layer != l:
                    return x
                x = x.copy()
                x[idx] += e
                return x
            return _event_shift_loss(net, x_in, cache, a_hat, perturb)
        fd[idx] = central_difference(perturbed)
    return fd


def fd_weight_grad(net, x_in, cache, a_hat, l: int):
    """∂L/∂W^l of the event-shift model, one central difference per weight."""
    W = net.params[l - 1]["W"]
    fd = np.zeros(W.shape)
    for idx in np.ndindex(*W.shape):
        w0 = W[idx]

        def at(e, idx=idx, w0=w0):
            W[idx] = w0 + e
            return _event_shift_loss(net, x_in, cache, a_hat)
        try:
            fd[idx] = central_difference(at)
        finally:
            W[idx] = w0
    return fd


# --- the walkthrough ---------------------------------------------------------------------
NO_FD_AUTHORS = ("none: the authors' reading is not the derivative of the network nor of any "
                 "stated smooth function of it")


class _Builder:
    """Collects the quantities of :func:`compute` and runs their checks as they are added."""

    def __init__(self, example: Example, use_oracle: bool):
        self.example = example
        self.R, self.oracle_note = (load_oracle() if use_oracle
                                    else (None, "the oracle was turned off (--no-oracle)"))
        self.quantities: list[Quantity] = []
        n = example.neuron
        self.loop_neuron = (n.tau_m, n.tau_s, n.v_th, n.reset)   # the oracle's arguments
        self.net, self.x_in, self.a_out, self.cache, self.a_hat, self.L, self.g = forward(example)
        self.weights = [np.asarray(W, dtype=np.float64) for W in example.weights]
        self.ref_fwd = (self.R.network_forward_loops(self.x_in, self.weights, *self.loop_neuron)
                        if self.R else None)

    def add(self, q: Quantity, oracle=None, fd=None):
        """``oracle``, ``fd``: ``(against, thunk)`` or None; the thunk computes the expected
        value and runs only when the check does (the oracle only when it is importable)."""
        if oracle is not None:
            q.checks.append(oracle_check(oracle[0], q.value, oracle[1]()) if self.R is not None
                            else Check("oracle", oracle[0], skipped=self.oracle_note))
        if fd is not None:
            q.checks.append(fd_check(fd[0], q.value, fd[1]()))
        self.quantities.append(q)

    # ---- forward, loss, g ----
    def forward_quantities(self):
        R, ex, cache, a_out, a_hat = self.R, self.example, self.cache, self.a_out, self.a_hat
        self.add(Quantity("a0", "a^(0)[t]", "input PSC: the input currents through the synapse, "
                          "a^(0) = κ * x_in", "(2), (3)", "snnsim.neuron.psc_filter (in Network.forward)",
                          "input_filter (in network_forward_loops)", "none: not a derivative",
                          cache.input_psc[:, 0, :], "time", "forward"),
                 oracle=("network_forward_loops: input_psc", lambda: self.ref_fwd["input_psc"][:, 0, :]))
        for l in LAYERS:
            st = cache.states[l - 1]
            rows = [
                ("x", "x", f"input current W^({l}) a^({l - 1})[t]", "(4), (6)",
                 "snnsim.layers.dense_forward", "dense_forward_loops", st.x),
                ("u", "u", "membrane after integration, before the reset: (1-θm) ū[t-1] + x[t]",
                 "(4), (6)", "snnsim.neuron.membrane_update (in lif_forward)", "lif_neuron_forward", st.u),
                ("du", "Δu", "one-step rise u[t] - ū[t-1] (the slope of the spike-time sensitivity)",
                 "(4)", "snnsim.neuron.membrane_update (in lif_forward)", "lif_neuron_forward", st.du),
                ("s", "s", "spike: 1 where u[t] > V_th (then ū[t] = 0, zero reset)", "(5)",
                 "snnsim.neuron.fire (in lif_forward)", "lif_neuron_forward", st.s),
                ("a", "a", "PSC: a[t] = (1-θs) a[t-1] + θs s[t] = (κ * s)[t]", "(2), (3)",
                 "snnsim.neuron.psc_update (in lif_forward)", "lif_neuron_forward", st.a),
            ]
            for name, sym, meaning, label, engine, reference, value in rows:
                self.add(Quantity(f"{name} l={l}", f"{sym}^({l})[t]", meaning, label, engine, reference,
                                  "none: the forward pass", np.asarray(value[:, 0, :]), "time", "forward"),
                         oracle=(f"network_forward_loops: layers[{l - 1}]['{name}']",
                                 lambda l=l, name=name: self.ref_fwd["layers"][l - 1][name][:, 0, :]))
        d = loss.desired_spike_train(ex.n_steps, ex.desired_train)
        self.add(Quantity("a_hat", "â[t]", f"target PSC of the label neuron: κ * (κ * d), d = {d}",
                          "(7), (S 2.4)", "snnsim.loss.kernel_target", "kernel_target_loops",
                          "none: not a derivative", a_hat[:, 0, :], "time", "forward"),
                 oracle=("kernel_target_loops", lambda: R.kernel_target_loops(
                     [ex.label], 1, ex.n_steps, ex.neuron.tau_s, ex.desired_train,
                     ex.target_filter_passes)[:, 0, :]))
        self.add(Quantity("L", "L", "kernel loss ½ Σ_t (a^(2)[t] - â[t])², a^(2) the output PSC",
                          "(7), (S 4)", "snnsim.loss.kernel_loss", "kernel_loss_loops",
                          "none (its derivative g is checked)", np.asarray(self.L), "scalar", "forward"),
                 oracle=("kernel_loss_loops", lambda: np.asarray(R.kernel_loss_loops(a_out, a_hat)[0])))

        def fd_g():
            steps = np.arange(len(a_out))
            return np.stack([central_difference(
                lambda e, t=t: loss.kernel_loss(a_out + e * (steps == t)[:, None, None], a_hat)[0])
                for t in steps])[:, None]
        self.add(Quantity("g l=2", "g^(2)[t] = ∂L/∂a^(2)[t]", "error arriving at the output neuron: "
                          "a^(2) - â", "(S 10)", "snnsim.loss.kernel_loss", "kernel_loss_loops",
                          "central differences of L in each a^(2)[t]", self.g[:, 0, :], "time", "forward"),
                 oracle=("kernel_loss_loops", lambda: R.kernel_loss_loops(a_out, a_hat)[1][:, 0, :]),
                 fd=("central differences of kernel_loss", fd_g))

    # ---- backward, one reading ----
    def backward_quantities(self, reading: str, grad: GradientParams):
        R = self.R
        walk = backward(self.net, self.cache, self.g, grad)
        refs = (R.network_backward_loops(self.g, self.ref_fwd, self.weights, *self.loop_neuron,
                                         reading=reading, bound=grad.sensitivity_bound,
                                         warmup=grad.warmup) if R else None)
        for l in reversed(LAYERS):
            self.layer_backward(reading, grad, l, walk[l], refs)

    def layer_backward(self, reading, grad, l, walk, refs):
        """g, S, ∂t/∂u, the φ terms, φ, δ, ∂L/∂W of layer l in one reading."""
        R, neuron, section = self.R, self.example.neuron, f"backward {reading}"
        tau_s, v_th = neuron.tau_s, neuron.v_th
        st = self.cache.states[l - 1]
        u, du, s = st.u[:, 0, :], st.du[:, 0, :], st.s[:, 0, :]            # (T, N)
        n = u.shape[-1]
        exact = grad == EXACT_TIMING
        tag = f"{reading} l={l}"
        g_l = walk["g"]
        if l < LAYERS[-1]:
            self.add(Quantity(f"g {tag}", f"g^({l})[t] = ∂L/∂a^({l})[t]",
                              f"error reaching layer {l}: (W^({l + 1}))ᵀ δ^({l + 1})[t]", "(10), (S 12)",
                              "snnsim.layers.delta_hidden", "dense_backward_loops",
                              "none here: δ, of which it is a linear map, is checked",
                              g_l[:, 0, :], "time", section),
                     oracle=("dense_backward_loops: g_prev", lambda: R.dense_backward_loops(
                         refs[1][l], self.ref_fwd["layers"][l - 1]["a"], self.weights[l])[0][:, 0, :]))

        S = tsslbp.psc_reverse_sum(g_l, neuron.theta_s)
        self.add(Quantity(f"S {tag}", f"S^({l})[t]", "Σ_{k≥t} κ[k-t] g[k]: the error a spike at t "
                          "carries through its own PSC (recursion θs g[t] + (1-θs) S[t+1])",
                          "not numbered: the κ-sum of (9) through (12)", "snnsim.tsslbp.psc_reverse_sum",
                          "psc_reverse_sum (double loop)", "none: a sum by definition",
                          S[:, 0, :], "time", section),
                 oracle=("psc_reverse_sum", lambda: np.array(
                     [R.psc_reverse_sum(g_l[:, 0, i], tau_s) for i in range(n)]).T))

        bound = grad.sensitivity_bound
        dt_du = tsslbp.spike_time_sensitivity(st.du, st.s, bound)
        self.add(Quantity(f"dt_du {tag}", f"∂t_m/∂u^({l})[t_m]", "spike-time sensitivity -1/Δu at a "
                          "spike, 0 elsewhere" + (f"; |·| bounded by {bound:g} (S 2.3)" if bound else
                                                  ", unbounded"),
                          "(12), (S 15)" + (", (S 2.3)" if bound else ""),
                          "snnsim.tsslbp.spike_time_sensitivity", "bounded_inverse (negated: -1/Δu, bounded)",
                          "central differences of the spike time τ(u) = m - (u - u⁰)/Δu⁰ "
                          "(snnsim.eventshift.spike_time)" if bound is None else
                          "none: the bound clips; the unbounded value is checked in the timing section",
                          dt_du[:, 0, :], "time", section),
                 oracle=("-bounded_inverse", lambda: np.array(
                     [[-R.bounded_inverse(du[t, i], bound) if s[t, i] else 0.0 for i in range(n)]
                      for t in range(len(du))])),
                 fd=("central differences of eventshift.spike_time", lambda: np.array(
                     [[central_difference(_spike_time_of(u[:, i], du[:, i], t)) if s[t, i] else 0.0
                       for i in range(n)] for t in range(len(u))])) if bound is None else None)

        # the φ matrix by terms, and the recursion's per-step terms they must sum to
        parts = {name: m[0] for name, m in tsslbp.phi_matrix(st, neuron, grad, terms=True).items()}
        phi = sum(parts.values())                                          # (N, T, T) [i, k, m]
        ref_terms = ([R.phi_matrix_loops(u[:, i], du[:, i], s[:, i], st.a[:, 0, i], *self.loop_neuron,
                                         reading, bound, grad.warmup, terms=True) for i in range(n)]
                     if R else None)
        fd_terms = [fd_phi_terms(st, neuron, i) for i in range(n)] if exact else None
        carry = walk["carry"][:, 0, :]
        G_next = np.concatenate([carry[1:], np.zeros_like(carry[:1])])  # G[t+1], 0 after the last step
        warm = tsslbp.warmup_mask(st.a, neuron.theta_s)[:, 0, :] if grad.warmup else np.zeros_like(s)
        kept = ~warm                                                       # columns warm-up leaves alone
        b = tsslbp.reset_shift_coefficient(neuron, reading)
        leak_step = tsslbp.leak_path(G_next, neuron.theta_m)
        c = tsslbp.psc_shift_scale(neuron.theta_s, reading)

        def summed(term):                                                  # Σ_k term[i, k, m] g[k, i]
            return np.einsum("ikm,ki->mi", term, g_l[:, 0, :])

        terms = [
            ("phi_1", "φ<1>", "inter-neuron term: ∂a[t_k]/∂t_m · ∂t_m/∂u[t_m], at a spike t_m; "
             f"∂a[t_k]/∂t_m = -c κ[k-m], c = {c:+.4f} ({C_NOTE[reading]})", "(11), (12), (S 13), (S 14)",
             "central differences of spike m's PSC θs (1-θs)^{k-τ(u[m])}",
             "Σ_k φ<1> g = tsslbp.phi_inter(S, ∂t/∂u) (the recursion's term)",
             tsslbp.phi_inter(S[:, 0, :], dt_du[:, 0, :], neuron.theta_s, reading) * kept),
            ("phi_2", "φ<2>", "intra-neuron term: the reset at t_m moves u at the next spike t_p: "
             f"φ(t_k, t_p) · b R (1-θm)^(p-m-1) · ∂t_m/∂u[t_m], b = {b:+.4f}", "(13), (S 16)",
             "central differences of the reset's -R (1-θm)^{t_p-τ(u[m])}, times φ(·, p) by central "
             "differences", "Σ_k φ<2> g = tsslbp.phi_intra(G[t+1], R, ∂t/∂u, b) (the recursion's term)",
             tsslbp.phi_intra(G_next, tsslbp.reset_size(u, neuron), dt_du[:, 0, :], b) * kept),
            ("leak", "leak", "the leak path (1-θm)^(p-m) φ(t_k, t_p) at a silent t_m (and through a "
             "subtract reset); the paper's φ sets it to 0, the authors' code keeps it",
             "not in the paper; from (4)", "central differences of the whole event-shift model at a silent m",
             "Σ_k leak g = tsslbp.leak_path(G[t+1]) (silent steps; × pass-through at spikes)",
             np.where(s, tsslbp.reset_passthrough(neuron) * leak_step, leak_step) * kept),
        ]
        if grad.warmup:
            terms.append(("warmup", "warm-up", "κ[k-m] σ'(u[m]) replaces column m where a[m] < 1/(4τs) "
                          "(no spike lately): the sigmoid surrogate", "(S 2.3)",
                          "none: a surrogate, not a derivative of the network",
                          "Σ_k warm-up g = tsslbp.warmup_surrogate(u) S where warm",
                          np.where(warm, tsslbp.warmup_surrogate(u, v_th) * S[:, 0, :], 0.0)))
        for name, sym, meaning, label, fd_text, identity, per_step in terms:
            has_fd = exact and name != "warmup"
            self.add(Quantity(f"{name} {tag}", f"{sym}(t_k, t_m) of layer {l}", meaning, label,
                              f"snnsim.tsslbp.phi_matrix(terms=True)['{name}']",
                              f"phi_matrix_loops(terms=True)['{name}']",
                              fd_text if has_fd or name == "warmup" else NO_FD_AUTHORS,
                              parts[name], "phi", section,
                              checks=[identity_check(identity, summed(parts[name]), per_step)]),
                     oracle=(f"phi_matrix_loops(terms=True)['{name}']",
                             lambda name=name: np.array([ref[name] for ref in ref_terms])),
                     fd=(f"event-shift model, term {name}",
                         lambda name=name: np.array([fd[name] for fd in fd_terms])) if has_fd else None)
        self.add(Quantity(f"phi {tag}", f"φ(t_k, t_m) of layer {l}",
                          "∂a[t_k]/∂u[t_m] as the backward uses it: the sum of the terms above",
                          "(14), (S 17)", "snnsim.tsslbp.phi_matrix", "phi_matrix_loops",
                          "central differences of the event-shift model's a[·] in x[m] (= u[m])"
                          if exact else NO_FD_AUTHORS, phi, "phi", section),
                 oracle=("phi_matrix_loops", lambda: np.array(
                     [sum(np.asarray(term) for term in ref.values()) for ref in ref_terms])),
                 fd=("event-shift model, whole column", lambda: np.array(
                     [fd["phi"] for fd in fd_terms])) if exact else None)

        delta = walk["delta"][:, 0, :]
        self.add(Quantity(f"delta {tag}", f"δ^({l})[t] = ∂L/∂u^({l})[t]",
                          "the error leaving the neuron, by the O(T) reverse recursion",
                          "(9), (S 9)" if l == LAYERS[-1] else "(10), (S 12)",
                          "snnsim.tsslbp.lif_backward (via Network.backward_pass)",
                          "network_backward_loops (authors_backward / timing_backward)",
                          "central differences of the event-shift loss in x[t] (= u[t])"
                          if exact else NO_FD_AUTHORS, delta, "time", section,
                          checks=[identity_check("Σ_k φ(t_k, t_m) g[t_k] with φ = phi_matrix (9)",
                                                 delta, summed(phi))]),
                 oracle=("network_backward_loops: delta", lambda: refs[1][l - 1][:, 0, :]),
                 fd=("event-shift model", lambda: fd_delta(self.net, self.x_in, self.cache, self.a_hat,
                                                           l)[:, 0, :]) if exact else None)
        self.add(Quantity(f"dW {tag}", f"∂L/∂W^({l})", f"Σ_t δ^({l})[t] a^({l - 1})[t]ᵀ",
                          "(8), (S 8)", "snnsim.layers.weight_grad (via Network.backward)",
                          "network_backward_loops: dW (dense_backward_loops)",
                          "central differences of the event-shift loss in each weight"
                          if exact else NO_FD_AUTHORS, walk["dW"], "matrix", section),
                 oracle=("network_backward_loops: dW", lambda: refs[0][l - 1]),
                 fd=("event-shift model", lambda: fd_weight_grad(self.net, self.x_in, self.cache,
                                                                 self.a_hat, l)) if exact else None)


def compute(example: Example = EXAMPLE, use_oracle: bool = True) -> Walkthrough:
    """Run the example through the engine, every quantity of the forward and backward
    pass in both readings, and check each one (see the module docstring)."""
    builder = _Builder(example, use_oracle)
    builder.forward_quantities()
    for reading, grad in READINGS.items():
        builder.backward_quantities(reading, grad)
    return Walkthrough(example, builder.quantities, builder.oracle_note)


# --- printing -------------------------------------------------------------------------------
SECTIONS = ("example", "forward", "authors", "timing", "checks")
_SECTION_OF = {"forward": "forward", "authors": "backward authors", "timing": "backward timing"}
_WIDTH = 10


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return f"{int(v):>{_WIDTH}d}"
    if v == 0.0:
        return f"{'·':>{_WIDTH}}"                     # an exact zero: the structure shows
    return f"{v:>{_WIDTH}.5f}"


def format_value(q: Quantity) -> list[str]:
    """The value of ``q`` as a small table (rows t, columns neurons; φ rows k, columns m)."""
    v = np.asarray(q.value)
    if q.layout == "scalar":
        return [f"{float(v):.10f}"]
    if q.layout == "time":
        head = "   t " + "".join(f"{f'neuron {i}':>{_WIDTH}}" for i in range(v.shape[1]))
        return [head] + [f"{t:4d} " + "".join(_cell(x) for x in row) for t, row in enumerate(v)]
    if q.layout == "matrix":
        head = "  out\\in " + "".join(f"{f'j = {j}':>{_WIDTH}}" for j in range(v.shape[1]))
        return [head] + [f"{f'i = {i}':>8} " + "".join(_cell(x) for x in row) for i, row in enumerate(v)]
    lines = []
    for i, mat in enumerate(v):                           # (N, T, T) [i, k, m]
        lines.append(f"neuron {i}: rows k (t_k), columns m (t_m); · is an exact 0")
        lines.append("  k\\m " + "".join(f"{m:>{_WIDTH}d}" for m in range(mat.shape[1])))
        lines += [f"{k:5d} " + "".join(_cell(x) for x in row) for k, row in enumerate(mat)]
    return lines


def format_check(c: Check) -> str:
    if c.skipped is not None:
        return f"  skip {c.kind:<8} {c.against}: {c.skipped}"
    mark = "ok  " if c.passed else "FAIL"
    return f"  {mark} {c.kind:<8} max|Δ| {c.max_diff:.1e}, tol {c.tol:.1e}: vs {c.against}"


def format_quantity(q: Quantity) -> list[str]:
    lines = [f"── {q.symbol}   {q.label}", f"   {q.meaning}",
             f"   engine:    {q.engine}", f"   reference: reference.loops.{q.reference}",
             f"   FD:        {q.fd}"]
    lines += ["   " + line for line in format_value(q)]
    lines += [format_check(c) for c in q.checks]
    return lines


def format_example(w: Walkthrough) -> list[str]:
    ex = w.example
    n = ex.neuron
    lines = [
        f"A 2-2-1 LIF network, T = {ex.n_steps} steps of 1 ms, one sample, float64.",
        f"Neurons: τm = {n.tau_m:g} (θm = {n.theta_m:g}), τs = {n.tau_s:g} (θs = {n.theta_s:.4f}), "
        f"V_th = {n.v_th:g}, reset = {n.reset} (ū = 0 after a spike).",
        f"Loss: kernel loss (7) against â = κ * (κ * d), "
        f"d = {loss.desired_spike_train(ex.n_steps, ex.desired_train)} "
        f"({ex.desired_train} convention), label neuron {ex.label}.",
        "Input currents x_in[t] (filtered by the synapse into a^(0)):",
    ]
    lines += ["   t " + "".join(f"{f'input {j}':>{_WIDTH}}" for j in range(len(ex.x_in[0])))]
    lines += [f"{t:4d} " + "".join(_cell(float(x)) for x in row) for t, row in enumerate(ex.x_in)]
    for l, W in zip(LAYERS, ex.weights):
        lines.append(f"W^({l}) (rows: neurons of layer {l}, columns: layer {l - 1}):")
        lines += ["       " + "".join(_cell(float(x)) for x in row) for row in W]
    lines += [
        "Readings of the backward pass:",
        "  authors: what the authors' code computes: ∂a[t_k]/∂t_m = -κ[k-m], reset term -θm R,",
        "           |∂t_m/∂u| bounded by 8, warm-up surrogate where a[t] < 1/(4τs)   (GradientParams())",
        "  timing:  the exact derivative of the event-shift model (snnsim.eventshift): -ln(1-θs) κ,",
        "           (1-θm) ln(1-θm) R, no bound, no warm-up   (EXACT_TIMING)",
        "Each block: symbol, equation label ((n) main text, (S n) supplement), meaning, the engine",
        "function, the loop oracle, the finite-difference check (or why there is none), the value,",
        f"and the checks: oracle (reference/loops.py), fd (central differences, h = {FD_STEP:g}),",
        "identity (the O(T) recursion against the explicit φ matrix).",
        f"Tolerances: oracle {ORACLE_RTOL:g}·max|ref| + {ORACLE_ATOL:g}; "
        f"fd {FD_RTOL:g}·max|fd| + {FD_ATOL:g}; identity {IDENTITY_RTOL:g}·max + {IDENTITY_ATOL:g}.",
    ]
    if w.oracle_note:
        lines.append(f"Oracle checks SKIPPED: {w.oracle_note}.")
    return lines


def format_checks(w: Walkthrough) -> list[str]:
    rows = w.checks
    key_w = max(len(q.key) for q, _ in rows)
    lines = [f"{'quantity':<{key_w}}  {'check':<8}  {'max|Δ|':>8}  {'tol':>8}  result"]
    for q, c in rows:
        if c.skipped is not None:
            lines.append(f"{q.key:<{key_w}}  {c.kind:<8}  {'':>8}  {'':>8}  skipped")
        else:
            lines.append(f"{q.key:<{key_w}}  {c.kind:<8}  {c.max_diff:8.1e}  {c.tol:8.1e}  "
                         f"{'ok' if c.passed else 'FAIL'}")
    n_fail = len(w.failures)
    n_skip = sum(c.passed is None for _, c in rows)
    lines.append(f"{len(rows)} checks: {len(rows) - n_fail - n_skip} passed, {n_fail} failed, "
                 f"{n_skip} skipped")
    if w.oracle_note:
        lines.append(f"oracle checks skipped: {w.oracle_note}")
    for q, c in w.failures:
        lines.append(f"FAILED: {q.key} ({q.engine}) {c.kind} vs {c.against}: "
                     f"max|Δ| = {c.max_diff:.3e} > tol {c.tol:.3e}")
    return lines


def format_walkthrough(w: Walkthrough, sections=SECTIONS) -> str:
    out = []
    titles = {"example": "1. The example", "forward": "2. Forward pass, loss and ∂L/∂a",
              "authors": "3. Backward pass, reading `authors` (top layer first)",
              "timing": "4. Backward pass, reading `timing` (top layer first)",
              "checks": "5. Every check"}
    for name in SECTIONS:
        if name not in sections:
            continue
        out += ["", "=" * 78, titles[name], "=" * 78]
        if name == "example":
            out += format_example(w)
        elif name == "checks":
            out += format_checks(w)
        else:
            for q in w.quantities:
                if q.section == _SECTION_OF[name]:
                    out += [""] + format_quantity(q)
    return "\n".join(out).lstrip("\n") + "\n"


# --- stepping through the engine in pdb ------------------------------------------------------
BREAKABLE = ("lif_forward", "kernel_loss", "psc_reverse_sum", "spike_time_sensitivity",
             "phi_matrix", "lif_backward", "event_shift_lif", "network_backward")


def engine_call(name: str, layer: int = 2, reading: str = "authors", example: Example = EXAMPLE):
    """``(function, args)``: one engine function with the example's arguments, for
    ``pdb.runcall`` (``--break``) or for calling it by hand."""
    from .neuron import lif_forward
    net, x_in, a_out, cache, a_hat, L, g = forward(example)
    grad = READINGS[reading]
    st, neuron = cache.states[layer - 1], example.neuron
    g_l = backward(net, cache, g, grad)[layer]["g"]
    calls = {
        "lif_forward": (lif_forward, (st.x, neuron)),
        "kernel_loss": (loss.kernel_loss, (a_out, a_hat)),
        "psc_reverse_sum": (tsslbp.psc_reverse_sum, (g_l, neuron.theta_s)),
        "spike_time_sensitivity": (tsslbp.spike_time_sensitivity, (st.du, st.s, grad.sensitivity_bound)),
        "phi_matrix": (tsslbp.phi_matrix, (st, neuron, grad, True)),
        "lif_backward": (tsslbp.lif_backward, (g_l, st, neuron, grad)),
        "event_shift_lif": (eventshift.event_shift_lif, (st.x, st, neuron)),
        "network_backward": (net.backward, (g, cache, grad)),
    }
    return calls[name]


# --- command line -------------------------------------------------------------------------------
DESCRIPTION = """\
Print one TSSL-BP gradient of a tiny fixed network (2 inputs -> 2 hidden -> 1 output LIF
neuron, T = 5, one sample, float64) term by term: membrane u, spikes s, PSC a; the loss and
∂L/∂a; S[t]; the spike-time sensitivity and its bound; φ<1>, φ<2>, the leak path and warm-up in
both readings (authors, timing); φ; δ; ∂L/∂W. Each quantity names its equation ((n) main text,
(S n) supplement), the snnsim function that computes it and the loop in reference/loops.py
that re-derives it, and is checked against that loop (when reference/ is importable: run from
the repository root) and, for the timing reading, against central differences of the
event-shift model. Exit status 0 when every check that ran passed, 1 otherwise.
Stepping through it in a debugger: docs/walkthrough.md."""

EPILOG = """\
examples:
  python3 -m snnsim.walkthrough                         # everything
  python3 -m snnsim.walkthrough --section forward --section checks
  python3 -m snnsim.walkthrough --break lif_backward --layer 2 --reading timing
"""


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.walkthrough"), description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", action="append", choices=SECTIONS, metavar="NAME",
                   help=f"print only this section (repeatable): {', '.join(SECTIONS)} "
                        "(default: all; the checks run in any case)")
    p.add_argument("--no-oracle", action="store_true",
                   help="skip the checks against reference/loops.py (reported as skipped)")
    p.add_argument("--break", dest="break_at", choices=BREAKABLE, metavar="FUNC",
                   help="instead of printing, stop in pdb at the first line of this engine function "
                        f"called with the example's arrays: {', '.join(BREAKABLE)}")
    p.add_argument("--layer", type=int, choices=LAYERS, default=2,
                   help="layer of --break: 1 hidden, 2 output (default 2)")
    p.add_argument("--reading", choices=tuple(READINGS), default="authors",
                   help="reading of --break (default authors)")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.break_at:
        import pdb
        fn, call_args = engine_call(args.break_at, args.layer, args.reading)
        print(f"pdb stops at the first line of {fn.__module__}.{fn.__qualname__} "
              f"(layer {args.layer}, reading {args.reading}); see docs/walkthrough.md for what to print. "
              "`c` continues to the end.")
        debugger, quit_asked = pdb.Pdb(), []
        set_quit = debugger.set_quit                       # what `q` (and end of input) call
        debugger.set_quit = lambda: quit_asked.append(True) or set_quit()
        result = debugger.runcall(fn, *call_args)
        if quit_asked:                                     # `q`: the function did not return
            print(f"left the debugger before {fn.__qualname__} returned")
        else:
            print(f"{fn.__qualname__} returned {type(result).__name__}")
        return 0
    w = compute(use_oracle=not args.no_oracle)
    sys.stdout.write(format_walkthrough(w, tuple(args.section or SECTIONS)))
    if not w.passed:
        print(f"walkthrough: {len(w.failures)} check(s) FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
