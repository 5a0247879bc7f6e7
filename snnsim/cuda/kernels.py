"""Fused per-neuron CUDA kernels: the LIF forward and the TSSL-BP backward recursion.

One thread per neuron runs all T steps in registers, so a layer's forward is one
kernel launch instead of ~10 array operations per time step, and its backward is
one launch with O(1) state per neuron (no (T, T) anything):

- ``lif_forward_kernel``: for t = 0..T-1, charge (4), fire (5), reset, PSC (2),
  in the arithmetic order of :func:`snnsim.neuron.lif_forward`;
- ``lif_backward_kernel``: for t = T-1..0, S[t] = θs g[t] + (1-θs) S[t+1] ((9), (12)),
  the spike / silent step of the carry G and the warm-up replacement of δ (S 2.3),
  in the arithmetic order of :func:`snnsim.tsslbp.lif_backward`.

Arrays are time-first and C-contiguous, ``(T, M)`` with M the product of the
non-time axes: element [t, i] at t·M + i, so neighbouring threads read
neighbouring addresses at every step.

The source :data:`LIF_KERNEL_SOURCE` is ONE text, templated on the float type
by a two-line preamble (:func:`kernel_source`), that compiles three ways:

- under NVRTC (CuPy ``RawKernel``; ``__CUDACC__``/``__CUDACC_RTC__`` defined): CUDA kernels, used by
  :func:`fused_lif_forward` / :func:`fused_lif_backward` on CuPy arrays;
- under gcc with ``-DSNNSIM_CPU_EMULATION``: plain C functions that take the
  thread index as a trailing argument, plus drivers ``lif_forward_all`` /
  ``lif_backward_all`` looping it over all neurons (``cpu_emulation_library`` of tests/cuda_emulation.py);
- under g++ with a stub of the CUDA built-ins (``mode="cuda"`` of
  ``cpu_emulation_library``): the CUDA branch itself, launched by a loop
  over the real grid (ceil(M/256) blocks of 256 threads, the tail threads
  included), so the ``extern "C"``/``__global__`` text and the thread-index
  arithmetic are compiled and run on a machine without a GPU.

The NumPy engine stays :mod:`snnsim.neuron` / :mod:`snnsim.tsslbp`; the fused
functions refuse NumPy arrays; :data:`FUSED_LIF` is the pair as a neuron model.
The tests' ``emulated_lif_forward`` / ``emulated_lif_backward``
(``tests/cuda_emulation.py``) run the kernel source on NumPy arrays through the
gcc build, with the same argument marshalling as the CuPy path.

Compilation uses ``--fmad=false`` under NVRTC: CUDA contracts a*b + c into one
fused multiply-add by default, which rounds once instead of twice and so would
not reproduce the NumPy engine's float64 results bit for bit.

Agreement with the NumPy engine (measured and asserted in tests/test_kernels.py):
the forward (float64 and float32, both resets) and the backward outside warm-up
bit-identical; warm-up entries within a few ulp (exp differs between libraries).

The derived constants (1-θm, 1-θs, WARMUP_PSC_FRACTION·θs, ...) are computed in
float64 on the host and rounded once to the array dtype, exactly as NumPy rounds
the Python numbers of the engine; so the kernels take ``decay_m``/``decay_s``
beside θm/θs instead of forming 1-θ in the kernel's precision.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

import numpy as np

from ..backend import cupy_module_of
from ..neuron import LIFState, NeuronModel
from ..params import WARMUP_PSC_FRACTION, WARMUP_WIDTH, WARMUP_Z_CLIP, GradientParams, NeuronParams
from ..tsslbp import psc_shift_scale, reset_passthrough, reset_shift_coefficient

#: Threads per CUDA block; the grid is ceil(M / THREADS_PER_BLOCK) blocks.
THREADS_PER_BLOCK = 256
#: NVRTC options: no a*b+c contraction into FMA (bit-equality with NumPy in float64).
NVRTC_OPTIONS = ("--fmad=false",)
#: Kernel names in :data:`LIF_KERNEL_SOURCE`.
FORWARD_KERNEL = "lif_forward_kernel"
BACKWARD_KERNEL = "lif_backward_kernel"

#: dtype -> (C type of real_t, its exp function).
_REAL_TYPES = {
    np.dtype(np.float32): ("float", "expf"),
    np.dtype(np.float64): ("double", "exp"),
}

LIF_KERNEL_SOURCE = (resources.files(__package__) / "lif_kernels.cu").read_text()

# --- source ------------------------------------------------------------------
def _real_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _REAL_TYPES:
        raise TypeError(f"the fused LIF kernels take float32 or float64 arrays, got {dtype}")
    return dtype


def kernel_source(dtype) -> str:
    """:data:`LIF_KERNEL_SOURCE` for one float type: ``typedef <float|double> real_t;``
    and ``#define REAL_EXP <expf|exp>`` prepended."""
    real, exp_name = _REAL_TYPES[_real_dtype(dtype)]
    return f"typedef {real} real_t;\n#define REAL_EXP {exp_name}\n" + LIF_KERNEL_SOURCE


# --- arguments, shared by the CuPy launch and the CPU emulation ---------------
def _n_neurons(shape) -> tuple[int, int]:
    """(T, M): time steps and neurons (the product of the non-time axes)."""
    T = int(shape[0])
    return T, int(np.prod(shape[1:], dtype=np.int64))


def _forward_args(x, u, du, s, a, neuron: NeuronParams) -> tuple:
    """Arguments of ``lif_forward_kernel``; scalars as NumPy scalars of the C types
    (int -> int32, long long -> int64, real_t -> the array dtype), rounded from
    the same float64 expressions as the Python numbers of :func:`snnsim.neuron.lif_forward`."""
    real = x.dtype.type
    T, M = _n_neurons(x.shape)
    return (x, u, du, s, a, np.int32(T), np.int64(M),
            real(neuron.theta_m), real(neuron.theta_s), real(1.0 - neuron.theta_s),
            real(neuron.v_th), np.int32(neuron.reset == "zero"))


def _backward_args(g, u, du, s, a, delta, neuron: NeuronParams, grad: GradientParams) -> tuple:
    """Arguments of ``lif_backward_kernel``, the constants of :func:`snnsim.tsslbp.lif_backward`."""
    real = g.dtype.type
    T, M = _n_neurons(g.shape)
    theta_m, theta_s = neuron.theta_m, neuron.theta_s
    bound = grad.sensitivity_bound if grad.sensitivity_bound is not None else 0.0   # <= 0: none
    return (g, u, du, s, a, delta, np.int32(T), np.int64(M),
            real(1.0 - theta_m), real(theta_s), real(1.0 - theta_s), real(neuron.v_th),
            real(psc_shift_scale(theta_s, grad.reading)),
            real(reset_shift_coefficient(neuron, grad.reading)),
            real(reset_passthrough(neuron)), np.int32(neuron.reset == "zero"), real(bound),
            np.int32(bool(grad.warmup)), real(WARMUP_PSC_FRACTION * theta_s),
            real(WARMUP_WIDTH), real(WARMUP_Z_CLIP))


@functools.cache
def kernel_signature(name: str) -> tuple[tuple[str, str], ...]:
    """The parameters ``(C type, name)`` of a kernel, read from :data:`LIF_KERNEL_SOURCE`
    (``const`` and ``RESTRICT`` dropped; the emulation's thread index left out)."""
    match = re.search(rf"KERNEL void {name}\((.*?)NEURON_INDEX_PARAM\)", LIF_KERNEL_SOURCE, re.S)
    if match is None:
        raise ValueError(f"no kernel {name!r} in the source")
    params = []
    for param in match.group(1).split(","):
        param = " ".join(param.replace("const ", "").replace("RESTRICT", "").split())
        ctype, pname = param.rsplit(" ", 1)
        params.append((ctype, pname))
    return tuple(params)


def check_kernel_args(name: str, dtype, args) -> None:
    """Raise TypeError unless ``args`` match the kernel's C parameters exactly as a
    CUDA launch needs them (it packs each scalar by its own size): ``real_t*`` a
    C-contiguous array of ``dtype``, ``unsigned char*`` one of uint8, ``int`` an
    np.int32, ``long long`` an np.int64, ``real_t`` a scalar of ``dtype``."""
    dtype = np.dtype(dtype)
    signature = kernel_signature(name)
    if len(args) != len(signature):
        raise TypeError(f"{name} takes {len(signature)} arguments, got {len(args)}")
    arrays = {"real_t*": dtype, "unsigned char*": np.dtype(np.uint8)}
    scalars = {"int": np.int32, "long long": np.int64, "real_t": dtype.type}
    for (ctype, pname), arg in zip(signature, args):
        if ctype in arrays:
            if not (hasattr(arg, "flags") and arg.dtype == arrays[ctype] and arg.flags.c_contiguous):
                raise TypeError(f"{name}: {pname} must be a C-contiguous {arrays[ctype]} array")
        elif type(arg) is not scalars[ctype]:
            raise TypeError(f"{name}: {pname} ({ctype}) must be {scalars[ctype].__name__}, "
                            f"got {type(arg).__name__}")


def _run_forward(x, neuron: NeuronParams, xp, launch):
    """Allocate, marshal, ``launch(kernel_name, dtype, M, args)``; returns (a, LIFState)."""
    dtype = _real_dtype(x.dtype)
    xc = xp.ascontiguousarray(x, dtype=dtype)                             # (T, B, ...)
    u = xp.empty(x.shape, dtype=dtype)                                    # (T, B, ...)
    du = xp.empty(x.shape, dtype=dtype)                                   # (T, B, ...)
    s = xp.empty(x.shape, dtype=xp.uint8)                                 # (T, B, ...)
    a = xp.empty(x.shape, dtype=dtype)                                    # (T, B, ...)
    T, M = _n_neurons(x.shape)
    if T > 0 and M > 0:
        launch(FORWARD_KERNEL, dtype, M, _forward_args(xc, u, du, s, a, neuron))
    return a, LIFState(x=x, u=u, du=du, s=s.view(xp.bool_), a=a)


def _run_backward(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams, xp, launch):
    """Allocate, marshal, ``launch(kernel_name, dtype, M, args)``; returns δ."""
    if tuple(dL_da.shape) != tuple(state.u.shape):
        raise ValueError(f"dL_da has shape {dL_da.shape} but the LIF state {state.u.shape}")
    dtype = _real_dtype(np.result_type(dL_da.dtype, state.u.dtype))

    def contiguous(arr):
        return xp.ascontiguousarray(arr, dtype=dtype)

    g, u, du, a = contiguous(dL_da), contiguous(state.u), contiguous(state.du), contiguous(state.a)
    s = xp.ascontiguousarray(state.s, dtype=xp.bool_).view(xp.uint8)     # (T, B, ...)
    delta = xp.empty(g.shape, dtype=dtype)                                # (T, B, ...)
    T, M = _n_neurons(g.shape)
    if T > 0 and M > 0:
        launch(BACKWARD_KERNEL, dtype, M, _backward_args(g, u, du, s, a, delta, neuron, grad))
    return delta


# --- CuPy ----------------------------------------------------------------------
def _device_module(*arrays):
    xp = cupy_module_of(*arrays)
    if xp is None:
        raise TypeError("the fused LIF kernels run on CuPy arrays only; the NumPy engine is "
                        "snnsim.neuron.lif_forward / snnsim.tsslbp.lif_backward")
    return xp


@functools.cache
def _raw_kernel(xp, name: str, dtype_name: str):
    """The compiled ``xp.RawKernel`` for (kernel name, dtype), built once per process
    (CuPy also caches the binary on disk)."""
    return xp.RawKernel(kernel_source(dtype_name), name, options=NVRTC_OPTIONS)


def _cuda_launcher(xp):
    def launch(name, dtype, M, args):
        n_blocks = (M + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        _raw_kernel(xp, name, np.dtype(dtype).name)((n_blocks,), (THREADS_PER_BLOCK,), args)
    return launch


def fused_lif_forward(x, neuron: NeuronParams):
    """:func:`snnsim.neuron.lif_forward` in one CUDA kernel launch, for a CuPy ``x``
    ``(T, B, ...)`` float32/float64. Returns ``(a, LIFState)``; ``state.s`` is a
    bool view of uint8 spikes. Raises TypeError for NumPy arrays."""
    xp = _device_module(x)
    return _run_forward(x, neuron, xp, _cuda_launcher(xp))


def fused_lif_backward(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams):
    """:func:`snnsim.tsslbp.lif_backward` in one CUDA kernel launch, for CuPy arrays.
    Returns δ = ∂L/∂u ``(T, B, ...)``. Neither input is modified."""
    xp = _device_module(dL_da, state.u)
    return _run_backward(dL_da, state, neuron, grad, xp, _cuda_launcher(xp))


#: LIF with TSSL-BP as fused kernels: the CUDA twin of :data:`snnsim.tsslbp.LIF`,
#: the neuron model of ``Network(..., fused=True)``.
FUSED_LIF = NeuronModel(forward=fused_lif_forward, backward=fused_lif_backward)


__all__ = [
    "LIF_KERNEL_SOURCE", "THREADS_PER_BLOCK", "NVRTC_OPTIONS", "kernel_source", "kernel_signature",
    "check_kernel_args", "fused_lif_forward", "fused_lif_backward", "FUSED_LIF",
]
