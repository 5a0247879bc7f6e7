"""The CUDA source compiles with NVIDIA's own compiler, on the CPU, in CI.

``kernel_source(dtype)`` is compiled by NVRTC (the compiler CuPy's ``RawKernel``
uses) with exactly :data:`snnsim.cuda.kernels.NVRTC_OPTIONS` plus the target
architecture, to SASS for sm_80 (A100) and sm_90 (H100/H200), float32 and float64.
A test fails on a compile error, on any diagnostic in NVRTC's log (a warning is a
defect here), and on any register spill or stack frame in ptxas's report. The
registers per kernel are printed (``pytest -s``) so that a change that pushes them
up shows in the CI log; the limit asserted is the one that matters for occupancy
at 256 threads per block, 255 per thread, with spills = 0 as the real guard.

libnvrtc comes from the ``nvidia-cuda-nvrtc-cu12`` wheel of the ``test`` extra.
Where it is absent the tests skip with that reason, except under CI (``CI`` set),
where an absent compiler is a failure: this suite must run there.
"""
from __future__ import annotations

import os

import numpy as np
import nvrtc_compile as nv
import pytest

from snnsim.cuda.kernels import (
    BACKWARD_KERNEL,
    FORWARD_KERNEL,
    NVRTC_OPTIONS,
    THREADS_PER_BLOCK,
    kernel_source,
)

ARCHS = ("sm_80", "sm_90")
DTYPES = ("float32", "float64")
#: ptxas's per-thread maximum; a kernel at it would be limited to 65536/255 threads per SM.
MAX_REGISTERS = 255


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return nv.load_nvrtc()
    except nv.NvrtcUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the NVRTC tests: {exc}")
        pytest.skip(str(exc))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_source_compiles_clean_without_spills(nvrtc, dtype, arch):
    result = nv.compile_cubin(kernel_source(dtype), NVRTC_OPTIONS, arch, lib=nvrtc)
    assert result.ok, f"NVRTC {result.status} for {dtype} {arch}:\n{result.log}"
    assert result.warnings() == [], f"NVRTC diagnostics for {dtype} {arch}:\n{result.log}"
    assert set(result.kernels) == {FORWARD_KERNEL, BACKWARD_KERNEL}, result.log
    major, minor = nv.nvrtc_version(nvrtc)
    for name, res in sorted(result.kernels.items()):
        print(f"NVRTC {major}.{minor} {arch} {dtype} {name}: {res.registers} registers, "
              f"spill stores {res.spill_stores} B, spill loads {res.spill_loads} B, "
              f"stack frame {res.stack_frame} B")
        assert res.spill_stores == 0 and res.spill_loads == 0, f"{name} spills:\n{result.log}"
        assert res.stack_frame == 0, f"{name} uses local memory:\n{result.log}"
        assert 0 < res.registers <= MAX_REGISTERS
        # a full block of THREADS_PER_BLOCK must fit in one SM's 64K registers
        assert res.registers * THREADS_PER_BLOCK <= 65536


# --- the checker can fail: a spill, a warning, an error are each caught ---------------
def test_checker_reports_spills_under_a_register_cap(nvrtc):
    """Capped at 16 registers (ptxas lifts the cap to its floor, 24 on sm_80, still below
    the 34 the float64 backward uses) the backward spills, and the parser sees it."""
    result = nv.compile_cubin(kernel_source(np.float64), NVRTC_OPTIONS + ("--maxrregcount=16",),
                              "sm_80", lib=nvrtc)
    assert result.ok, result.log
    spills = result.kernels[BACKWARD_KERNEL]
    assert spills.spill_stores > 0 and spills.spill_loads > 0, result.log


def test_checker_reports_a_warning(nvrtc):
    source = kernel_source(np.float32) + '\nextern "C" __global__ void unused_var() { int x; }\n'
    result = nv.compile_cubin(source, NVRTC_OPTIONS, "sm_80", lib=nvrtc)
    assert result.ok
    assert any("warning" in line for line in result.warnings()), result.log


def test_checker_reports_a_compile_error(nvrtc):
    result = nv.compile_cubin(kernel_source(np.float32) + "\nthis is not C++;\n", NVRTC_OPTIONS,
                              "sm_90", lib=nvrtc)
    assert not result.ok
    assert "error" in result.log
