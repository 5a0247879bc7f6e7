"""NVIDIA's runtime compiler (NVRTC) on the CPU, through ctypes: compile the kernel
source to a cubin for one GPU architecture, with ptxas's resource report.

NVRTC is a host library: it needs no GPU and no driver. It comes from the
``nvidia-cuda-nvrtc-cu12`` wheel (the ``test`` extra; CuPy's own CUDA 12 wheels use
the same library), which also carries ptxas: compiling for a real architecture
(``--gpu-architecture=sm_XX``) makes NVRTC assemble SASS, and
``--ptxas-options=-v`` puts ptxas's per-kernel register and spill report in the
program log. So one wheel gives both the front end CuPy uses and the assembler's
verdict.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from dataclasses import dataclass

NVRTC_SUCCESS = 0


class NvrtcUnavailable(RuntimeError):
    """libnvrtc could not be found or loaded."""


def _candidate_paths():
    """libnvrtc from the nvidia-cuda-nvrtc-cu12 wheel first, then the system's."""
    try:
        import nvidia.cuda_nvrtc as wheel
        for root in wheel.__path__:
            yield os.path.join(root, "lib", "libnvrtc.so.12")
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield found


def load_nvrtc() -> ctypes.CDLL:
    """The NVRTC library, or :class:`NvrtcUnavailable` with the reason."""
    tried = []
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            tried.append(f"{path}: {exc}")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    raise NvrtcUnavailable("libnvrtc not found (install the nvidia-cuda-nvrtc-cu12 wheel: "
                           "pip install -e .[test])" + ("; tried " + "; ".join(tried) if tried else ""))


def nvrtc_version(lib: ctypes.CDLL) -> tuple[int, int]:
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


@dataclass
class KernelResources:
    """ptxas's report for one kernel (bytes for the spills and the stack frame)."""
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int


@dataclass
class CompileResult:
    ok: bool              # NVRTC_SUCCESS and a cubin was produced
    status: str           # NVRTC's result name
    log: str              # the whole program log (diagnostics + ptxas report)
    cubin_bytes: int
    kernels: dict         # kernel name -> KernelResources

    def warnings(self) -> list[str]:
        """Diagnostic lines of the log: anything that is not ptxas's ``-v`` report."""
        return [line for line in self.log.splitlines()
                if line.strip() and not _PTXAS_INFO.match(line)]


#: Lines that ``--ptxas-options=-v`` adds ("ptxas info    : ..." and "ptxas         .    ...").
_PTXAS_INFO = re.compile(r"^ptxas\s+(info\s+:|\.)")
_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas_report(log: str) -> dict:
    """{kernel: KernelResources} from ptxas's ``-v`` lines; a kernel whose report
    lacks the register or spill line is an error (the format changed)."""
    kernels: dict = {}
    current, frame = None, None
    for line in log.splitlines():
        if (m := _ENTRY.search(line)):
            current, frame = m.group(1), None
        elif current and (m := _FRAME.search(line)):
            frame = tuple(int(g) for g in m.groups())
        elif current and (m := _REGS.search(line)):
            if frame is None:
                raise ValueError(f"ptxas report of {current} has no stack/spill line")
            kernels[current] = KernelResources(registers=int(m.group(1)), stack_frame=frame[0],
                                               spill_stores=frame[1], spill_loads=frame[2])
            current = None
    return kernels


def compile_cubin(source: str, options, arch: str, lib: ctypes.CDLL | None = None,
                  name: str = "lif_kernels.cu") -> CompileResult:
    """Compile ``source`` with ``options`` + ``--gpu-architecture=<arch>`` +
    ``--ptxas-options=-v``; never raises on a compile error (see ``ok``/``log``)."""
    lib = lib or load_nvrtc()
    prog = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    if status != NVRTC_SUCCESS:
        raise RuntimeError(f"nvrtcCreateProgram: {lib.nvrtcGetErrorString(status).decode()}")
    try:
        opts = [o.encode() for o in options] + [f"--gpu-architecture={arch}".encode(),
                                                 b"--ptxas-options=-v"]
        status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        cubin = ctypes.c_size_t(0)
        if status == NVRTC_SUCCESS:
            lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin))
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    ok = status == NVRTC_SUCCESS and cubin.value > 0
    return CompileResult(ok=ok, status=lib.nvrtcGetErrorString(status).decode(), log=log,
                         cubin_bytes=cubin.value, kernels=parse_ptxas_report(log) if ok else {})
