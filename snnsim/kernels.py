"""Fused per-neuron CUDA kernels: the LIF forward and the TSSL-BP backward recursion.

One thread per neuron runs all T steps in registers, so a layer's forward is one
kernel launch instead of ~10 array operations per time step, and its backward is
one launch with O(1) state per neuron (no (T, T) anything):

- ``lif_forward_kernel``: for t = 0..T-1, charge (4), fire (5), reset, PSC (2),
  in the arithmetic order of :func:`snnsim.neuron.lif_forward`;
- ``lif_backward_kernel``: for t = T-1..0, S[t] = θs g[t] + (1-θs) S[t+1] (S 10),
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
  ``lif_backward_all`` looping it over all neurons (:func:`cpu_emulation_library`);
- under g++ with a stub of the CUDA built-ins (``mode="cuda"`` of
  :func:`cpu_emulation_library`): the CUDA branch itself, launched by a loop
  over the real grid (ceil(M/256) blocks of 256 threads, the tail threads
  included), so the ``extern "C"``/``__global__`` text and the thread-index
  arithmetic are compiled and run on a machine without a GPU.

The NumPy engine stays :mod:`snnsim.neuron` / :mod:`snnsim.tsslbp`; the fused
functions refuse NumPy arrays. :func:`emulated_lif_forward` /
:func:`emulated_lif_backward` run the kernel source on NumPy arrays through the
gcc build, with the same argument marshalling as the CuPy path, for tests.

Compilation uses ``--fmad=false`` under NVRTC: CUDA contracts a*b + c into one
fused multiply-add by default, which rounds once instead of twice and so would
not reproduce the NumPy engine's float64 results bit for bit.

Agreement with the NumPy engine (measured and asserted in tests/test_kernels.py):
float64 forward and float64/float32 backward outside warm-up bit-identical;
warm-up entries within a few ulp (exp differs between libraries); float32 forward
within stated tolerances, because the NumPy engine promotes ``θs * s`` (and
``V_th * s`` of the subtract reset) to float64 — a Python float times a bool array.

The derived constants (1-θm, 1-θs, WARMUP_PSC_FRACTION·θs, ...) are computed in
float64 on the host and rounded once to the array dtype, exactly as NumPy rounds
the Python numbers of the engine; so the kernels take ``decay_m``/``decay_s``
beside θm/θs instead of forming 1-θ in the kernel's precision.
"""
from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .backend import array_module
from .neuron import LIFState
from .params import WARMUP_PSC_FRACTION, WARMUP_WIDTH, WARMUP_Z_CLIP, GradientParams, NeuronParams
from .tsslbp import psc_shift_scale, reset_passthrough, reset_shift_coefficient

#: Threads per CUDA block; the grid is ceil(M / THREADS_PER_BLOCK) blocks.
THREADS_PER_BLOCK = 256
#: NVRTC options: no a*b+c contraction into FMA (bit-equality with NumPy in float64).
NVRTC_OPTIONS = ("--fmad=false",)
#: gcc/g++ options of the CPU emulation: ISO mode and explicitly no FMA contraction.
EMULATION_CFLAGS = ("-O2", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra")
#: Kernel names in :data:`LIF_KERNEL_SOURCE`.
FORWARD_KERNEL = "lif_forward_kernel"
BACKWARD_KERNEL = "lif_backward_kernel"

#: dtype -> (C type of real_t, its exp function).
_REAL_TYPES = {
    np.dtype(np.float32): ("float", "expf"),
    np.dtype(np.float64): ("double", "exp"),
}

LIF_KERNEL_SOURCE = r"""
/* snnsim fused LIF kernels: one thread per neuron, all T steps in registers.
 * Expects a preamble (snnsim.kernels.kernel_source):
 *     typedef float|double real_t;   #define REAL_EXP expf|exp
 * Arrays are (T, M) C-contiguous: element [t, i] at t*M + i.
 * Compiles under NVRTC/NVCC (__CUDACC__ or __CUDACC_RTC__) as CUDA kernels, or under gcc with
 * -DSNNSIM_CPU_EMULATION as C functions taking the thread index as a trailing
 * argument i_emul, plus drivers lif_forward_all / lif_backward_all. */

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define KERNEL extern "C" __global__
#define NEURON_INDEX_PARAM
#define NEURON_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#elif defined(SNNSIM_CPU_EMULATION)
#include <math.h>
#define KERNEL
#define NEURON_INDEX_PARAM , long long i_emul
#define NEURON_INDEX i_emul
#else
#error "compile with NVRTC/NVCC, or with -DSNNSIM_CPU_EMULATION for the CPU emulation"
#endif

#define RESTRICT __restrict__

/* Forward, design doc section 2, per neuron i, state starting at zero:
 *   du[t] = x[t] - theta_m u_reset[t-1];  u[t] = u_reset[t-1] + du[t]      (4)
 *   s[t]  = u[t] > v_th (strict)                                           (5)
 *   u_reset[t] = 0 (reset_zero) | u[t] - v_th (subtract) at a spike, else u[t]
 *   a[t]  = (1-theta_s) a[t-1] + theta_s s[t]                              (2) */
KERNEL void lif_forward_kernel(
    const real_t* RESTRICT x, real_t* RESTRICT u, real_t* RESTRICT du,
    unsigned char* RESTRICT s, real_t* RESTRICT a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero NEURON_INDEX_PARAM)
{
    const long long i = NEURON_INDEX;
    if (i >= M) return;
    real_t u_reset = (real_t)0;                         /* u_reset[-1] = 0 */
    real_t a_t = (real_t)0;                             /* a[-1] = 0 */
    for (int t = 0; t < T; ++t) {
        const long long k = (long long)t * M + i;
        const real_t du_t = x[k] - theta_m * u_reset;  /* (4) */
        const real_t u_t = u_reset + du_t;              /* (4) */
        const int s_t = u_t > v_th;                     /* (5), strict */
        if (s_t) {
            u_reset = reset_zero ? (real_t)0 : u_t - v_th;
        } else {
            u_reset = u_t;
        }
        a_t = decay_s * a_t + theta_s * (real_t)s_t;    /* (2) */
        u[k] = u_t;
        du[k] = du_t;
        s[k] = (unsigned char)s_t;
        a[k] = a_t;
    }
}

/* TSSL-BP backward, design doc section 5, per neuron i, t = T-1..0, carry G[t+1]:
 *   S[t] = theta_s g[t] + (1-theta_s) S[t+1]                               (S 10)
 *   leak = (1-theta_m) G[t+1]
 *   spike:  dt_du = -1/du[t] (clipped to +-bound if bound > 0)             (15)
 *           G[t] = -c S[t] dt_du + G[t+1] b R dt_du + through leak   (13), (16)
 *           R = u[t] (reset_zero) | v_th (subtract)
 *   silent: G[t] = leak
 *   delta[t] = G[t], or where warmup and a[t] < warm_threshold:           (S 2.3)
 *           sigma'(u[t]) S[t], sigma' = e^z / (w (1+e^z)^2),
 *           z = clip((v_th - u[t]) / w, +-zclip); the carry keeps G[t]. */
KERNEL void lif_backward_kernel(
    const real_t* RESTRICT g, const real_t* RESTRICT u, const real_t* RESTRICT du,
    const unsigned char* RESTRICT s, const real_t* RESTRICT a, real_t* RESTRICT delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip
    NEURON_INDEX_PARAM)
{
    const long long i = NEURON_INDEX;
    if (i >= M) return;
    real_t S = (real_t)0;                               /* S[T] = 0 */
    real_t carry = (real_t)0;                           /* G[T] = 0 */
    for (int t = T - 1; t >= 0; --t) {
        const long long k = (long long)t * M + i;
        S = theta_s * g[k] + decay_s * S;               /* (S 10) */
        const real_t leak = decay_m * carry;            /* leak path of (4) */
        if (s[k]) {
            real_t dt_du = (real_t)(-1) / du[k];        /* (15) */
            if (bound > (real_t)0) {                    /* NaN passes, as np.clip */
                dt_du = dt_du < -bound ? -bound : (dt_du > bound ? bound : dt_du);
            }
            const real_t R = reset_zero ? u[k] : v_th;
            const real_t phi_1 = -c * S * dt_du;                /* (13) */
            const real_t phi_2 = carry * b * R * dt_du;         /* (16) */
            carry = phi_1 + phi_2 + through * leak;
        } else {
            carry = leak;
        }
        real_t out = carry;
        if (warmup && a[k] < warm_threshold) {          /* (S 2.3) */
            real_t z = (v_th - u[k]) / warm_width;
            z = z < -warm_zclip ? -warm_zclip : (z > warm_zclip ? warm_zclip : z);
            const real_t ez = REAL_EXP(z);
            const real_t one_plus = (real_t)1 + ez;
            out = ez / (warm_width * one_plus * one_plus) * S;
        }
        delta[k] = out;
    }
}

#if defined(SNNSIM_CPU_EMULATION)
/* CPU test drivers: "launch" one call per neuron. */
void lif_forward_all(
    const real_t* x, real_t* u, real_t* du, unsigned char* s, real_t* a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero)
{
    for (long long i = 0; i < M; ++i) {
        lif_forward_kernel(x, u, du, s, a, T, M, theta_m, theta_s, decay_s,
                           v_th, reset_zero, i);
    }
}

void lif_backward_all(
    const real_t* g, const real_t* u, const real_t* du, const unsigned char* s,
    const real_t* a, real_t* delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip)
{
    for (long long i = 0; i < M; ++i) {
        lif_backward_kernel(g, u, du, s, a, delta, T, M, decay_m, theta_s, decay_s,
                            v_th, c, b, through, reset_zero, bound, warmup,
                            warm_threshold, warm_width, warm_zclip, i);
    }
}
#endif
"""

#: Test scaffolding for ``mode="cuda"``: the CUDA built-ins the kernels use, as
#: host globals, so that g++ compiles the ``__CUDACC__`` branch of the source.
_CUDA_STUB_PRELUDE = r"""
#include <math.h>
struct snnsim_dim3 { unsigned int x, y, z; };
static snnsim_dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __CUDACC__ 1
"""

#: ...and drivers that launch every thread of a grid: ``*_launch`` the grid given
#: (n_blocks, block_size), ``*_all`` the grid of the CuPy path.
_CUDA_STUB_DRIVER = r"""
extern "C" void lif_forward_launch(
    unsigned int n_blocks, unsigned int block_size,
    const real_t* x, real_t* u, real_t* du, unsigned char* s, real_t* a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero)
{
    blockDim.x = block_size; blockDim.y = 1; blockDim.z = 1;
    for (blockIdx.x = 0; blockIdx.x < n_blocks; ++blockIdx.x)
        for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)
            lif_forward_kernel(x, u, du, s, a, T, M, theta_m, theta_s, decay_s,
                               v_th, reset_zero);
}

extern "C" void lif_backward_launch(
    unsigned int n_blocks, unsigned int block_size,
    const real_t* g, const real_t* u, const real_t* du, const unsigned char* s,
    const real_t* a, real_t* delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip)
{
    blockDim.x = block_size; blockDim.y = 1; blockDim.z = 1;
    for (blockIdx.x = 0; blockIdx.x < n_blocks; ++blockIdx.x)
        for (threadIdx.x = 0; threadIdx.x < blockDim.x; ++threadIdx.x)
            lif_backward_kernel(g, u, du, s, a, delta, T, M, decay_m, theta_s, decay_s,
                                v_th, c, b, through, reset_zero, bound, warmup,
                                warm_threshold, warm_width, warm_zclip);
}

static unsigned int snnsim_n_blocks(long long M)
{
    return (unsigned int)((M + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK);
}

extern "C" void lif_forward_all(
    const real_t* x, real_t* u, real_t* du, unsigned char* s, real_t* a,
    int T, long long M, real_t theta_m, real_t theta_s, real_t decay_s,
    real_t v_th, int reset_zero)
{
    lif_forward_launch(snnsim_n_blocks(M), THREADS_PER_BLOCK, x, u, du, s, a, T, M,
                       theta_m, theta_s, decay_s, v_th, reset_zero);
}

extern "C" void lif_backward_all(
    const real_t* g, const real_t* u, const real_t* du, const unsigned char* s,
    const real_t* a, real_t* delta,
    int T, long long M, real_t decay_m, real_t theta_s, real_t decay_s, real_t v_th,
    real_t c, real_t b, real_t through, int reset_zero, real_t bound,
    int warmup, real_t warm_threshold, real_t warm_width, real_t warm_zclip)
{
    lif_backward_launch(snnsim_n_blocks(M), THREADS_PER_BLOCK, g, u, du, s, a, delta,
                        T, M, decay_m, theta_s, decay_s, v_th, c, b, through, reset_zero,
                        bound, warmup, warm_threshold, warm_width, warm_zclip);
}
"""


class KernelBuildError(RuntimeError):
    """The CPU emulation of the kernels could not be compiled (no compiler, or an error)."""


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


@functools.lru_cache(maxsize=None)
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
    xp = array_module(*arrays)
    if xp is np:
        raise TypeError("the fused LIF kernels run on CuPy arrays only; the NumPy engine is "
                        "snnsim.neuron.lif_forward / snnsim.tsslbp.lif_backward")
    return xp


@functools.lru_cache(maxsize=None)
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


def fused_neuron_forward(x, layer_index: int, neuron: NeuronParams):
    """:func:`fused_lif_forward` in the form of the ``neuron_forward`` hook of
    :meth:`snnsim.network.Network.forward`."""
    return fused_lif_forward(x, neuron)


def fused_backward_fn(grad: GradientParams):
    """:func:`fused_lif_backward` in the form of the ``lif_backward_fn`` hook of
    :meth:`snnsim.network.Network.backward`, for the reading ``grad``."""
    def lif_backward_fn(dL_da, state, neuron):
        return fused_lif_backward(dL_da, state, neuron, grad)
    return lif_backward_fn


# --- CPU emulation (tests) -------------------------------------------------------
EMULATION_MODES = ("c", "cuda")


def cpu_emulation_library(dtype, mode: str = "c") -> ctypes.CDLL:
    """Compile the kernel source for the CPU and load it; exports ``lif_forward_all`` and
    ``lif_backward_all`` (the kernels' parameters, the thread index looped inside).

    ``mode="c"``: ``gcc -std=c11 -DSNNSIM_CPU_EMULATION``, the source as plain C.
    ``mode="cuda"``: ``g++ -std=c++17`` on the ``__CUDACC__`` branch of the source,
    with host stubs of ``__global__``/``blockIdx``/``blockDim``/``threadIdx`` and a
    driver that runs every thread of the CuPy path's grid.
    Raises :class:`KernelBuildError` if the compiler is missing or fails. Built once
    per (dtype, mode) and process; the compiler's warnings are in ``.build_warnings``.
    """
    if mode not in EMULATION_MODES:
        raise ValueError(f"mode must be one of {EMULATION_MODES}, got {mode!r}")
    return _build_library(_real_dtype(dtype).name, mode)


@functools.lru_cache(maxsize=None)
def _build_library(dtype_name: str, mode: str) -> ctypes.CDLL:
    dtype = np.dtype(dtype_name)
    compiler = "gcc" if mode == "c" else "g++"
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"{compiler} not found on PATH: cannot build the CPU emulation of the kernels")
    if mode == "c":
        text, std, suffix = kernel_source(dtype), "-std=c11", ".c"
        defines = ["-DSNNSIM_CPU_EMULATION"]
    else:
        text = (_CUDA_STUB_PRELUDE + kernel_source(dtype)
                + f"#define THREADS_PER_BLOCK {THREADS_PER_BLOCK}\n" + _CUDA_STUB_DRIVER)
        std, suffix, defines = "-std=c++17", ".cpp", []
    with tempfile.TemporaryDirectory(prefix="snnsim-kernels-") as tmp:
        src = Path(tmp) / f"lif_kernels_{dtype.name}{suffix}"
        lib = Path(tmp) / f"lif_kernels_{dtype.name}_{mode}.so"
        src.write_text(text)
        cmd = [compiler, *EMULATION_CFLAGS, std, *defines, str(src), "-o", str(lib), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KernelBuildError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        library = ctypes.CDLL(str(lib))          # mapped: the file may go with the folder
    library.build_warnings = proc.stderr
    return library


_CTYPES = {
    np.dtype(np.int32): ctypes.c_int,
    np.dtype(np.int64): ctypes.c_longlong,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
}


def _ctypes_args(args) -> list:
    """Kernel arguments as ctypes values: C-contiguous NumPy arrays as pointers,
    NumPy scalars as the C type of their dtype."""
    out = []
    for arg in args:
        if isinstance(arg, np.ndarray):
            if not arg.flags.c_contiguous:
                raise ValueError("kernel arrays must be C-contiguous")
            out.append(ctypes.c_void_p(arg.ctypes.data))
        else:
            out.append(_CTYPES[np.dtype(type(arg))](arg.item()))
    return out


def _emulation_launcher(mode: str):
    def launch(name, dtype, M, args):
        check_kernel_args(name, dtype, args)
        library = cpu_emulation_library(np.dtype(dtype).name, mode)
        driver = {FORWARD_KERNEL: library.lif_forward_all, BACKWARD_KERNEL: library.lif_backward_all}[name]
        c_args = _ctypes_args(args)
        driver.argtypes = [type(v) for v in c_args]
        driver.restype = None
        driver(*c_args)
    return launch


def emulated_lif_forward(x, neuron: NeuronParams, mode: str = "c"):
    """:func:`fused_lif_forward` on NumPy arrays, the kernel source compiled for the CPU
    (:func:`cpu_emulation_library`). For tests of the kernel's arithmetic."""
    if array_module(x) is not np:
        raise TypeError("the CPU emulation takes NumPy arrays")
    return _run_forward(np.asarray(x), neuron, np, _emulation_launcher(mode))


def emulated_lif_backward(dL_da, state: LIFState, neuron: NeuronParams, grad: GradientParams,
                          mode: str = "c"):
    """:func:`fused_lif_backward` on NumPy arrays through the CPU build of the kernels."""
    if array_module(dL_da, state.u) is not np:
        raise TypeError("the CPU emulation takes NumPy arrays")
    return _run_backward(dL_da, state, neuron, grad, np, _emulation_launcher(mode))


__all__ = [
    "LIF_KERNEL_SOURCE", "THREADS_PER_BLOCK", "NVRTC_OPTIONS", "KernelBuildError",
    "kernel_source", "kernel_signature", "check_kernel_args", "fused_lif_forward", "fused_lif_backward", "fused_neuron_forward",
    "fused_backward_fn", "cpu_emulation_library", "emulated_lif_forward", "emulated_lif_backward",
]
