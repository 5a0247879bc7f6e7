"""The fused CUDA kernels (snnsim.cuda.kernels) against the NumPy engine.

Without a GPU the kernel source is compiled for the CPU and run through the same
Python marshalling as the CuPy launch: ``mode="c"`` (gcc, the source as C) and
``mode="cuda"`` (g++ on the source's CUDA branch with host stubs of the CUDA
built-ins, every thread of the real grid launched, the tail threads included).

Tolerances (ε = float32 machine epsilon 2^-23):

- float64 forward, and every backward entry outside warm-up: bit-identical —
  the kernel does the same IEEE operations in the same order as
  snnsim.neuron.lif_forward / snnsim.tsslbp.lif_backward, with FMA contraction
  off (gcc -ffp-contract=off; NVRTC --fmad=false).
- warm-up entries: σ'(u) uses exp, and libm's exp differs from NumPy's by up to
  1 ulp in float64 and 2 ulp in float32 (measured on 2·10⁵ arguments); the five
  rounded operations after it carry that to ≤ 5 ulp (float64) / 6 ulp (float32),
  measured. Asserted: rtol 1e-12 (float64, as specified) and 16 ε (float32).
- float32 forward (both resets): bit-identical too, now that the NumPy engine
  casts the spikes to the membrane's dtype before θs·s and V_th·s (a Python
  float times a bool array used to give float64 in NumPy 2).
"""
from __future__ import annotations

import ctypes
import shutil
import sys
import types

import cuda_emulation as emu
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snnsim.cuda import kernels
from snnsim.neuron import lif_forward
from snnsim.params import GradientParams, NeuronParams
from snnsim.tsslbp import lif_backward, warmup_mask

EPS32 = float(np.finfo(np.float32).eps)
#: Relative tolerance of warm-up entries (exp differs between libraries).
WARMUP_RTOL = {np.float64: 1e-12, np.float32: 16 * EPS32}
#: On the GPU: CUDA's exp is within 1 ulp (double) / 2 ulp (float) of the exact value.
GPU_RTOL = {np.float64: 1e-12, np.float32: 1e-5}
MODES = emu.EMULATION_MODES
DTYPES = (np.float64, np.float32)


def _compiler(mode: str) -> str:
    return "gcc" if mode == "c" else "g++"


@pytest.fixture(scope="module", params=MODES)
def mode(request):
    """The CPU build of the kernel source; skips only if the compiler is missing
    (a compile error fails the test)."""
    if shutil.which(_compiler(request.param)) is None:
        pytest.skip(f"{_compiler(request.param)} is not installed: cannot compile the kernel source "
                    "for the CPU")
    return request.param


# --- random cases ------------------------------------------------------------------
@st.composite
def lif_cases(draw):
    """(rng, shape, neuron, quantized): T 1..40, M = B·N neurons, parameters drawn
    including τm = 2 (θm = 1/2: exact ties and Δu = 0 at a spike with quantized input)."""
    T = draw(st.integers(1, 40))
    shape = (T, draw(st.integers(1, 3)), draw(st.integers(1, 20)))
    tau_m = draw(st.one_of(st.sampled_from([2.0, 4.0, 5.0, 8.0]), st.floats(1.2, 12.0)))
    tau_s = draw(st.one_of(st.sampled_from([2.0, 3.0, 4.0]), st.floats(1.2, 12.0)))
    v_th = draw(st.one_of(st.sampled_from([1.0, 0.5, 2.0]), st.floats(0.2, 3.0)))
    reset = draw(st.sampled_from(["zero", "subtract"]))
    neuron = NeuronParams(tau_m=tau_m, tau_s=tau_s, v_th=v_th, reset=reset)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng, shape, neuron, draw(st.booleans())


def draw_input(rng, shape, quantized: bool, dtype):
    """Input currents: Gaussian with a random mean and spread, or multiples of 1/8
    (exact values: u = V_th ties at t = 0, Δu = 0 spikes with the subtract reset)."""
    if quantized:
        return (rng.integers(-8, 25, size=shape) / 8.0).astype(dtype)
    return rng.normal(rng.uniform(-0.5, 1.5), rng.uniform(0.1, 3.0), size=shape).astype(dtype)


def draw_upstream(rng, shape, dtype):
    """g = ∂L/∂a: Gaussian with about a third of the entries zero."""
    return (rng.standard_normal(shape) * (rng.random(shape) < 0.7)).astype(dtype)


grads = st.builds(GradientParams, reading=st.sampled_from(["authors", "timing"]),
                  sensitivity_bound=st.sampled_from([8.0, 2.0, None]), warmup=st.booleans())


# --- forward ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=lif_cases())
def test_forward_bit_identical(mode, dtype, case):
    rng, shape, neuron, quantized = case
    x = draw_input(rng, shape, quantized, dtype)
    a_ref, ref = lif_forward(x, neuron)
    a, state = emu.emulated_lif_forward(x, neuron, mode)
    assert state.s.dtype == np.bool_ and state.u.dtype == dtype and a.dtype == dtype
    for name in ("u", "du", "s", "a"):
        np.testing.assert_array_equal(getattr(state, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(a, a_ref)
    assert state.x is x


# --- backward -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=lif_cases(), grad=grads)
def test_backward_equals_engine(mode, dtype, case, grad):
    """δ from the kernel equals lif_backward on the same forward state: bit-identical
    outside warm-up (non-finite values included: Δu = 0 at a spike without a bound),
    within WARMUP_RTOL where warm-up applies."""
    rng, shape, neuron, quantized = case
    x = draw_input(rng, shape, quantized, dtype)
    _, state = lif_forward(x, neuron)
    g = draw_upstream(rng, shape, dtype)
    saved = [arr.copy() for arr in (g, *state)]
    with np.errstate(divide="ignore", invalid="ignore"):                  # Δu = 0 at a spike
        ref = lif_backward(g, state, neuron, grad)
    delta = emu.emulated_lif_backward(g, state, neuron, grad, mode)
    assert delta.dtype == dtype and delta.shape == shape
    for before, after in zip(saved, (g, *state)):
        np.testing.assert_array_equal(before, after)                 # inputs untouched
    warm = warmup_mask(state.a, neuron.theta_s) if grad.warmup else np.zeros(shape, bool)
    np.testing.assert_array_equal(delta[~warm], ref[~warm])
    np.testing.assert_allclose(delta[warm], ref[warm], rtol=WARMUP_RTOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_without_warmup_is_bit_identical_on_a_large_layer(mode, dtype):
    """One layer of 5000 neurons (20 CUDA blocks, a partial last one in the
    ``cuda`` emulation), T = 30, both resets and readings."""
    rng = np.random.default_rng(7)
    shape = (30, 50, 100)
    for reset in ("zero", "subtract"):
        for reading in ("authors", "timing"):
            neuron = NeuronParams(reset=reset)
            grad = GradientParams(reading=reading, warmup=False)
            x = rng.normal(0.6, 1.0, size=shape).astype(dtype)
            _, state = lif_forward(x, neuron)
            g = draw_upstream(rng, shape, dtype)
            assert 0.05 < state.s.mean() < 0.5
            np.testing.assert_array_equal(emu.emulated_lif_backward(g, state, neuron, grad, mode),
                                          lif_backward(g, state, neuron, grad))


# --- marshalling and edges ------------------------------------------------------------------
def test_broadcast_and_transposed_inputs(mode):
    """Non-contiguous inputs (a repeat_static view; a transposed g) are copied
    contiguous before the launch; results as for contiguous arrays."""
    rng = np.random.default_rng(3)
    neuron, grad = NeuronParams(), GradientParams()
    x = np.broadcast_to(rng.normal(1.0, 1.0, size=(4, 6)), (9, 4, 6))
    a, state = emu.emulated_lif_forward(x, neuron, mode)
    np.testing.assert_array_equal(a, lif_forward(np.ascontiguousarray(x), neuron)[0])
    g = rng.standard_normal((9, 6, 4)).transpose(0, 2, 1)
    np.testing.assert_array_equal(emu.emulated_lif_backward(g, state, neuron, grad, mode),
                                  lif_backward(np.ascontiguousarray(g), state, neuron, grad))


@pytest.mark.parametrize("shape", [(3, 0, 4), (0, 2, 5)])
def test_empty_layers(mode, shape):
    x = np.zeros(shape)
    a, state = emu.emulated_lif_forward(x, NeuronParams(), mode)
    assert a.shape == shape and state.s.shape == shape
    assert emu.emulated_lif_backward(x, state, NeuronParams(), GradientParams(), mode).shape == shape


def test_errors():
    x = np.zeros((3, 2, 4))
    with pytest.raises(TypeError, match="CuPy arrays only"):
        kernels.fused_lif_forward(x, NeuronParams())
    _, state = lif_forward(x, NeuronParams())
    with pytest.raises(TypeError, match="CuPy arrays only"):
        kernels.fused_lif_backward(x, state, NeuronParams(), GradientParams())
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.kernel_source(np.float16)
    with pytest.raises(ValueError, match="shape"):
        kernels._run_backward(np.zeros((3, 2, 5)), state, NeuronParams(), GradientParams(), np, None)


def test_argument_check_catches_a_wrong_scalar_width():
    """check_kernel_args (run on every emulated launch) holds the Python marshalling
    to the C signature: CuPy packs a scalar by its NumPy size, so an int64 for
    ``int T`` would shift every later argument on the GPU."""
    x = np.zeros((3, 4))
    args = kernels._forward_args(x, x.copy(), x.copy(), np.zeros(x.shape, np.uint8), x.copy(), NeuronParams())
    kernels.check_kernel_args(kernels.FORWARD_KERNEL, np.float64, args)
    bad = list(args)
    bad[5] = np.int64(3)                                                   # int T
    with pytest.raises(TypeError, match=r"T \(int\) must be int32"):
        kernels.check_kernel_args(kernels.FORWARD_KERNEL, np.float64, bad)
    bad = list(args)
    bad[7] = np.float32(0.2)                                               # real_t theta_m
    with pytest.raises(TypeError, match=r"theta_m \(real_t\) must be float64"):
        kernels.check_kernel_args(kernels.FORWARD_KERNEL, np.float64, bad)
    bad = list(args)
    bad[3] = np.zeros(x.shape, bool)                                       # unsigned char* s
    with pytest.raises(TypeError, match="s must be"):
        kernels.check_kernel_args(kernels.FORWARD_KERNEL, np.float64, bad)


class _FakeArray(np.ndarray):
    """Stands in for cupy.ndarray (host memory)."""


class _FakeRawKernel:
    """Stands in for cupy.RawKernel: checks the source, options, grid, block and
    arguments it is given, then runs every thread of that grid through the g++
    build of the source's CUDA branch."""

    compiled = []

    def __init__(self, code, name, options=()):
        self.code, self.name, self.options = code, name, tuple(options)
        _FakeRawKernel.compiled.append((name, code))

    def __call__(self, grid, block, args):
        dtype = args[0].dtype
        assert self.code == kernels.kernel_source(dtype)
        assert self.options == kernels.NVRTC_OPTIONS
        kernels.check_kernel_args(self.name, dtype, args)
        (n_blocks,), (block_size,) = grid, block
        M = int(args[7 if self.name == kernels.BACKWARD_KERNEL else 6])
        assert block_size == kernels.THREADS_PER_BLOCK
        assert (n_blocks - 1) * block_size < M <= n_blocks * block_size
        library = emu.cpu_emulation_library(dtype, "cuda")
        launch = {kernels.FORWARD_KERNEL: library.lif_forward_launch,
                  kernels.BACKWARD_KERNEL: library.lif_backward_launch}[self.name]
        c_args = [ctypes.c_uint(n_blocks), ctypes.c_uint(block_size), *emu._ctypes_args(args)]
        launch.argtypes = [type(v) for v in c_args]
        launch(*c_args)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A module named cupy in sys.modules, just enough for snnsim.cuda.kernels' CuPy path."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: cannot compile the kernel source's CUDA branch for the CPU")
    fake = types.ModuleType("cupy")
    fake.ndarray = _FakeArray
    fake.uint8, fake.bool_ = np.uint8, np.bool_
    fake.empty = lambda shape, dtype=float: np.empty(shape, dtype).view(_FakeArray)
    fake.ascontiguousarray = lambda a, dtype=None: np.ascontiguousarray(a, dtype=dtype).view(_FakeArray)
    fake.RawKernel = _FakeRawKernel
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_launch_path_with_a_fake_cupy(fake_cupy, dtype):
    """fused_lif_forward / fused_lif_backward as on a GPU — module detection, kernel
    cache, grid of ceil(M/256) blocks, argument types, uint8 spikes viewed as bool —
    with a host stand-in for CuPy; results as the NumPy engine's (M = 700: a partial
    last block)."""
    rng = np.random.default_rng(5)
    neuron, grad = NeuronParams(reset="subtract"), GradientParams(reading="timing", warmup=False)
    x = rng.normal(0.6, 1.0, size=(20, 7, 100)).astype(dtype)
    g = draw_upstream(rng, x.shape, dtype)
    a, state = kernels.fused_lif_forward(x.view(_FakeArray), neuron)
    assert isinstance(a, _FakeArray) and state.s.dtype == np.bool_ and state.s.base is not None
    emulated = emu.emulated_lif_forward(x, neuron)[1]
    for name in ("u", "du", "s", "a"):
        np.testing.assert_array_equal(getattr(state, name), getattr(emulated, name), err_msg=name)
    delta = kernels.fused_lif_backward(g.view(_FakeArray), state, neuron, grad)
    assert isinstance(delta, _FakeArray) and delta.dtype == dtype
    plain_state = type(state)(*(np.asarray(v) for v in state))
    np.testing.assert_array_equal(delta, lif_backward(np.asarray(g), plain_state, neuron, grad))
    kernels.fused_lif_forward(x.view(_FakeArray), neuron)
    names = [name for name, code in _FakeRawKernel.compiled if code == kernels.kernel_source(dtype)]
    assert sorted(names) == [kernels.BACKWARD_KERNEL, kernels.FORWARD_KERNEL]   # compiled once each


@pytest.mark.parametrize("dtype", DTYPES)
def test_source_builds_without_warnings(mode, dtype):
    """-Wall -Wextra are clean on both branches of the source (the CUDA one as C++)."""
    library = emu.cpu_emulation_library(dtype, mode)
    assert library.build_warnings == ""


def test_source_is_one_text_for_both_types():
    """float32 and float64 differ only in the two-line preamble."""
    f32, f64 = kernels.kernel_source(np.float32), kernels.kernel_source(np.float64)
    assert f32.splitlines()[2:] == f64.splitlines()[2:] == kernels.LIF_KERNEL_SOURCE.splitlines()
    assert f32.splitlines()[:2] == ["typedef float real_t;", "#define REAL_EXP expf"]
    assert f64.splitlines()[:2] == ["typedef double real_t;", "#define REAL_EXP exp"]


# --- on the GPU (CuPy) ---------------------------------------------------------------------------
def _emulation_or_none(x, neuron):
    """The gcc build's forward on the host, or None without gcc."""
    if shutil.which("gcc") is None:
        return None
    return emu.emulated_lif_forward(x, neuron, "c")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_gpu_fused_forward_equals_engine(cupy, dtype, reset):
    """NVRTC's build (--fmad=false, no transcendental in the forward) is bit-identical
    to the gcc build in both dtypes, and so to the NumPy engine within the CPU
    tolerances (float64: bit-identical)."""
    rng = np.random.default_rng(11)
    neuron = NeuronParams(reset=reset)
    x = rng.normal(0.6, 1.0, size=(25, 8, 300)).astype(dtype)          # 2400 neurons, 10 blocks
    a_ref, ref = lif_forward(x, neuron)
    a, state = kernels.fused_lif_forward(cupy.asarray(x), neuron)
    assert isinstance(a, cupy.ndarray) and state.s.dtype == np.bool_
    got = {name: cupy.asnumpy(getattr(state, name)) for name in ("u", "du", "s", "a")}
    emulated = _emulation_or_none(x, neuron)
    if emulated is not None:
        for name in got:
            np.testing.assert_array_equal(got[name], getattr(emulated[1], name), err_msg=name)
    if dtype == np.float64 or reset == "zero":
        for name in ("u", "du", "s"):
            np.testing.assert_array_equal(got[name], getattr(ref, name), err_msg=name)
    else:
        atol = 2 * (neuron.tau_m + 1) * EPS32 * (float(np.abs(ref.u).max()) + neuron.v_th)
        assert np.all(np.abs(ref.u.astype(np.float64) - neuron.v_th) > 2 * atol)   # no near-ties
        np.testing.assert_array_equal(got["s"], ref.s)
        np.testing.assert_allclose(got["u"], ref.u, rtol=0, atol=atol)
    if dtype == np.float64:
        np.testing.assert_array_equal(got["a"], a_ref)
    else:
        np.testing.assert_allclose(got["a"], a_ref, rtol=(x.shape[0] + 2) * EPS32, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("grad", [GradientParams(), GradientParams("timing", None, False),
                                  GradientParams("timing", 8.0, True)])
def test_gpu_fused_backward_equals_engine(cupy, dtype, reset, grad):
    """Bit-identical outside warm-up; warm-up entries within GPU_RTOL (CUDA's exp)."""
    rng = np.random.default_rng(12)
    neuron = NeuronParams(reset=reset)
    shape = (25, 8, 300)
    x = rng.normal(0.6, 1.0, size=shape).astype(dtype)
    _, state = lif_forward(x, neuron)
    g = draw_upstream(rng, shape, dtype)
    ref = lif_backward(g, state, neuron, grad)
    state_gpu = type(state)(*(cupy.asarray(v) for v in state))
    delta = kernels.fused_lif_backward(cupy.asarray(g), state_gpu, neuron, grad)
    assert isinstance(delta, cupy.ndarray) and delta.dtype == dtype
    delta = cupy.asnumpy(delta)
    warm = warmup_mask(state.a, neuron.theta_s) if grad.warmup else np.zeros(shape, bool)
    np.testing.assert_array_equal(delta[~warm], ref[~warm])
    np.testing.assert_allclose(delta[warm], ref[warm], rtol=GPU_RTOL[dtype], atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_gpu_network_through_fused_hooks(cupy, reset):
    """A whole network on CuPy with the fused kernels as its neuron model
    (kernels.FUSED_LIF, both hooks) equals the same network through the NumPy-style engine on
    CuPy (float64; warm-up entries differ by exp's ulps only)."""
    from snnsim import Dense, Network
    rng = np.random.default_rng(13)

    def build(backend):
        return Network([Dense(30, weight_scale=3.0), Dense(10, weight_scale=3.0)], (20,),
                       neuron=NeuronParams(reset=reset), backend=backend, dtype="float64", seed=5)

    net, net_gpu = build("numpy"), build("cupy")                     # the same weights
    x = rng.uniform(0, 1.5, size=(12, 4, 20))
    g = rng.standard_normal((12, 4, 10))
    a_ref, cache_ref = net.forward(x)
    grads_ref = net.backward(g, cache_ref)
    a, cache = net_gpu.forward(cupy.asarray(x), model=kernels.FUSED_LIF)
    grads = net_gpu.backward(cupy.asarray(g), cache, model=kernels.FUSED_LIF)
    np.testing.assert_array_equal(cupy.asnumpy(a), a_ref)
    for gr, gr_ref in zip(grads, grads_ref):
        for k in gr_ref:
            np.testing.assert_allclose(cupy.asnumpy(gr[k]), gr_ref[k], rtol=1e-10, atol=1e-12)
