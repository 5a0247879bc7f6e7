"""CPU emulation of the fused CUDA kernels (test code): the kernel source of
:mod:`snnsim.cuda.kernels` compiled with gcc (as C) or g++ (its CUDA branch, with
host stubs of the CUDA built-ins), run on NumPy arrays with the same argument
marshalling as the CuPy launch. Lets a machine without a GPU test the kernels'
arithmetic and thread-index code against the NumPy engine.
"""
from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from snnsim.backend import array_module
from snnsim.cuda.kernels import (
    BACKWARD_KERNEL,
    FORWARD_KERNEL,
    THREADS_PER_BLOCK,
    _real_dtype,
    _run_backward,
    _run_forward,
    check_kernel_args,
    kernel_source,
)
from snnsim.neuron import LIFState
from snnsim.params import GradientParams, NeuronParams

#: gcc/g++ options of the CPU emulation: ISO mode and explicitly no FMA contraction.
EMULATION_CFLAGS = ("-O2", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra")

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


@functools.cache
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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
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
