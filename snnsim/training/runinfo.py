"""What a run's numbers depend on besides its config: the machine, the BLAS
library and its thread count, NumPy, the backend.

A training run on NumPy is bit-identical from one repetition to the next only
with the same BLAS library, the same number of BLAS threads, the same dtype and
backend, on the same kind of CPU: OpenBLAS orders the multiply-adds of a matrix
product differently for different thread counts, and a spiking network turns
last-bit differences into different spikes (``docs/reproducibility.md``). So
every run folder records these settings next to its config, in
:data:`RUN_INFO_NAME` together with which snnsim ran (version, git commit), and
every checkpoint carries the latest start's record as an attribute.

    from snnsim.training.runinfo import run_info
    run_info("numpy")["blas"]      # [{'internal_api': 'openblas', 'num_threads': 1, ...}]

``run.json`` is one JSON object: the first start's :func:`run_info`, and under
``"resumed"`` a list with one record per resume, each with ``after_epoch`` (the
checkpoint's epoch it continued from). :func:`starts` lists them in order.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from ..version import current_source_info
from .checkpoint import CheckpointError, atomic_write, regular_file
from .runfolder import RunFolderError

#: The run folder's file of these records (the first start, then one per resume).
RUN_INFO_NAME = "run.json"
#: Environment variables that set the thread count of BLAS/OpenMP libraries, or
#: select OpenBLAS's kernel (all change which arithmetic a matrix product does).
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "OPENBLAS_CORETYPE", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")
#: The largest run.json read back (bytes; a record is a few kB per start).
MAX_RUN_INFO_BYTES = 16 * 2**20
#: The fields of a start record that :func:`reproducibility_key` compares.
KEY_FIELDS = ("machine", "backend", "dtype", "numpy", "cupy", "cuda_runtime", "device")
#: The fields of a BLAS entry of threadpoolctl that identify what computes a product.
BLAS_FIELDS = ("user_api", "internal_api", "prefix", "version", "num_threads",
               "threading_layer", "architecture")


def blas_info() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process, with their thread
    counts (``threadpoolctl.threadpool_info``; file paths left out, they name
    this machine's folders)."""
    from threadpoolctl import threadpool_info
    return [{k: entry.get(k) for k in BLAS_FIELDS if k in entry} for entry in threadpool_info()]


def thread_env() -> dict[str, str]:
    """The thread-setting environment variables that are set, by name."""
    return {name: os.environ[name] for name in THREAD_ENV_VARS if name in os.environ}


def backend_info(backend: str) -> dict:
    """The array library's version (and, for CuPy, the device and CUDA runtime)."""
    info = {"backend": backend, "numpy": np.__version__}
    if backend == "cupy":
        from ..backend import get_backend
        cp = get_backend("cupy")
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        info.update({"cupy": cp.__version__,
                     "cuda_runtime": int(cp.cuda.runtime.runtimeGetVersion()),
                     "device": name.decode() if isinstance(name, bytes) else str(name)})
    return info


def run_info(backend: str = "numpy", dtype: str | None = None) -> dict:
    """Everything besides the config that decides a run's bits: which snnsim
    (version, git commit or None, source: :func:`snnsim.version.source_info`),
    platform, Python, NumPy (and CuPy), the BLAS libraries with their thread
    counts, the thread environment variables, the CPU count; and the start time (UTC)."""
    info = {
        **current_source_info(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        **backend_info(backend),
        "blas": blas_info(),
        "thread_env": thread_env(),
    }
    if dtype is not None:
        info["dtype"] = dtype
    return info


def reproducibility_key(info: dict) -> dict:
    """The part of :func:`run_info` that must match for two NumPy runs of one
    config to be bit-identical (docs/reproducibility.md): machine type, backend,
    dtype, library versions, and each BLAS library's kind, version, kernel
    architecture and thread count.
    The BLAS libraries are compared as a set: threadpoolctl lists the libraries loaded
    in the order they were loaded, which changes from one start to the next."""
    key = {k: info[k] for k in KEY_FIELDS if k in info}
    entries = [{k: e.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
               for e in info.get("blas", [])]
    key["blas"] = sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))
    return key


class RunInfoError(RunFolderError):
    """A run folder's ``run.json`` is not a readable record; the message names it."""


def read_run_info(run_dir) -> dict | None:
    """A run folder's ``run.json``, checked (:func:`check_run_info`), or None when it has
    none (runs of snnsim 0.1.0). :class:`RunInfoError` naming the file when it is not a
    regular file, too large, not JSON or not a record of :func:`record_start`."""
    path = Path(run_dir) / RUN_INFO_NAME
    if not os.path.lexists(path):
        return None
    try:
        regular_file(path, "run record")
        size = path.stat().st_size
        if size > MAX_RUN_INFO_BYTES:
            raise RunInfoError(f"{path}: {size:,} bytes; a run record is at most "
                               f"{MAX_RUN_INFO_BYTES:,}")
        text = path.read_bytes().decode("utf-8")
        record = json.loads(text)
    except CheckpointError as exc:
        raise RunInfoError(str(exc)) from None
    except OSError as exc:
        raise RunInfoError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:       # JSON, UTF-8
        raise RunInfoError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    check_run_info(record, path)
    return record


def check_run_info(record, path) -> None:
    """RunInfoError naming ``path`` unless ``record`` is a run.json record: an object
    whose fields compared by :func:`reproducibility_key` are plain values, whose
    ``blas`` is a list of objects with an integer (or null) ``num_threads``, and whose
    ``resumed`` is a list of such records with an ``after_epoch`` >= 0."""
    def bad(what):
        return RunInfoError(f"{path}: {what}")

    def check_start(entry, where):
        if not isinstance(entry, dict):
            raise bad(f"{where} is {type(entry).__name__}, expected an object")
        for k in KEY_FIELDS:
            if isinstance(entry.get(k), (list, dict)):
                raise bad(f"{where} field {k!r} is a {type(entry[k]).__name__}")
        blas = entry.get("blas", [])
        if not isinstance(blas, list) or not all(isinstance(e, dict) for e in blas):
            raise bad(f"{where} field 'blas' is not a list of objects")
        changes = entry.get("blas_changes", [])
        if not isinstance(changes, list):
            raise bad(f"{where} field 'blas_changes' is {type(changes).__name__}, expected a list")
        for c in changes:
            if not isinstance(c, dict) or any(
                    isinstance(c.get(k), bool) or not isinstance(c.get(k), int) or c[k] < 1
                    for k in ("epoch", "batch", "threads")):
                raise bad(f"{where} a BLAS change is {c!r}, expected epoch, batch and threads "
                          "as integers >= 1")
        for e in blas:
            n = e.get("num_threads")
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise bad(f"{where} a BLAS entry's num_threads is {n!r}, expected an integer "
                          ">= 1")
            for k in BLAS_FIELDS:
                if isinstance(e.get(k), (list, dict)):
                    raise bad(f"{where} a BLAS entry's {k!r} is a {type(e[k]).__name__}")

    check_start(record, "the record")
    resumed = record.get("resumed", [])
    if not isinstance(resumed, list):
        raise bad(f"field 'resumed' is {type(resumed).__name__}, expected a list")
    for i, entry in enumerate(resumed):
        check_start(entry, f"resume {i + 1}")
        after = entry.get("after_epoch")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise bad(f"resume {i + 1}: after_epoch is {after!r}, expected an integer >= 0")


def starts(record: dict) -> list[dict]:
    """The start records of a ``run.json``, in order: the first start, then each resume."""
    first = {k: v for k, v in record.items() if k != "resumed"}
    return [first, *record.get("resumed", [])]


def _write(run_dir, record: dict) -> dict:
    """Write ``record`` as the run folder's ``run.json`` (atomically); returns it."""
    atomic_write(Path(run_dir) / RUN_INFO_NAME,
                 lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return record


def record_start(run_dir, info: dict, resumed_after: int | None = None,
                 previous: dict | None = None) -> dict:
    """Write the run folder's ``run.json`` (atomically) for a start with ``info``
    (:func:`run_info`): a new run's is ``info``; a resume (``resumed_after`` = the
    checkpoint's epoch) keeps ``previous`` and appends ``info`` with ``after_epoch``
    to its ``"resumed"`` list. Returns the record written."""
    if resumed_after is None:
        record = dict(info)
    else:
        previous = previous or {}
        record = {**previous, "resumed": [*previous.get("resumed", []),
                                          {**info, "after_epoch": int(resumed_after)}]}
    return _write(run_dir, record)


def record_blas_change(run_dir, epoch: int, batch: int, threads: int) -> dict:
    """Append ``{"epoch", "batch", "threads"}`` (the count set after that batch of that
    epoch, both counted from 1) to the ``blas_changes`` of the run's latest start in its
    ``run.json`` (atomically; :class:`~snnsim.training.threads.LoadWatch` changed it).
    Returns the record written."""
    record = read_run_info(run_dir) or {}
    latest = record["resumed"][-1] if record.get("resumed") else record
    latest["blas_changes"] = [*latest.get("blas_changes", []),
                              {"epoch": int(epoch), "batch": int(batch), "threads": int(threads)}]
    return _write(run_dir, record)


def blas_thread_count(record: dict | None) -> int | None:
    """The BLAS thread count of a ``run.json`` record's first start, or None when the
    record has none: the count its BLAS libraries share (a run sets every library to
    one count); where they differ, the most common one, the smallest of equally common
    ones. Not the first library's: threadpoolctl lists them in loading order, which
    changes from one start to the next."""
    if not record:
        return None
    counts = [e.get("num_threads") for e in starts(record)[0].get("blas", [])
              if e.get("user_api") == "blas" and e.get("num_threads")]
    if not counts:
        return None
    return int(min(set(counts), key=lambda n: (-counts.count(n), n)))


def resume_note(record: dict) -> str | None:
    """A note when the latest start of a run (``run.json``'s record) differs from its
    first one in what decides the bits (:func:`reproducibility_key`): the resumed
    epochs then differ from an uninterrupted run's in the last bits, and so in later
    spikes."""
    entries = starts(record)
    if len(entries) < 2:
        return None
    first, now = reproducibility_key(entries[0]), reproducibility_key(entries[-1])
    changed = sorted(k for k in set(first) | set(now) if first.get(k) != now.get(k))
    if not changed:
        return None
    return (f"note: this run started with other settings ({', '.join(changed)} differ; "
            f"see {RUN_INFO_NAME}): from here on it is not bit-identical to an "
            "uninterrupted run (docs/reproducibility.md)")


__all__ = ["BLAS_FIELDS", "KEY_FIELDS", "MAX_RUN_INFO_BYTES", "RUN_INFO_NAME", "RunInfoError",
           "THREAD_ENV_VARS", "backend_info", "blas_info", "blas_thread_count", "check_run_info",
           "read_run_info", "record_blas_change", "record_start", "reproducibility_key",
           "resume_note", "run_info", "starts", "thread_env"]
