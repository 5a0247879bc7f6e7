"""``python3 -m snnsim.bench --processes N``: the benchmark in N fresh processes, and the spread.

Some costs are decided when a process starts and hold for its whole life: on a 2-core
machine, whether OpenBLAS's second thread helps or hinders a step has been seen to differ
by 1.2-1.6x between identical processes started one after the other (docs/performance.md,
"Two BLAS threads on a 2-core machine"). One process's figure is then one draw of a
lottery. With ``--processes N`` the benchmark runs itself N times, one fresh process after
the other, with the same arguments, and reports every timed figure's minimum, median and
maximum over the processes and max/min, so that a lottery shows in the output instead of
hiding in one number.

The JSON file (``--out``) holds the N processes' own results under ``"processes"`` (each
the file a single run writes; each process's own file is kept beside it, ``<out>.p1.json``,
...) and the spread under ``"spread"``: one record per figure,
``{"figure": "runs/0/recursion/s_per_batch", "values": [...], "min", "median", "max",
"max_over_min"}``, the figure named by its path in a single run's file.
"""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The leaves of a single run's results whose spread is reported (times and their ratios).
FIGURES = ("s_per_batch", "samples_per_s", "step_s", "floor_s", "step_over_floor",
           "s_per_sample", "eval_over_step", "speedup_vs_explicit", "slowdown", "gemm_scaling",
           "elementwise_scaling")
#: Those of :data:`FIGURES` that are seconds (printed in ms).
TIMES = ("s_per_batch", "step_s", "floor_s", "s_per_sample")
#: Leaves that say how the process ran (shown beside the spread, not spread themselves).
SETTINGS = ("blas_threads",)


def strip_processes(argv: list[str]) -> list[str]:
    """``argv`` without ``--processes N`` / ``--processes=N`` and without ``--out``: each
    child writes its own file."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--processes", "--out"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--out=")):
            continue
        out.append(arg)
    return out


def leaves(tree, path: str = ""):
    """(path, value) of every number in a JSON tree, paths joined with ``/``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, f"{path}/{key}" if path else str(key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from leaves(value, f"{path}/{i}" if path else str(i))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def spread(results: list[dict]) -> list[dict]:
    """Min, median, max and max/min over the processes of every figure of :data:`FIGURES`
    that all of them measured, in the order of the first process's file."""
    per_run = [dict(leaves(r)) for r in results]
    records = []
    for path in per_run[0]:
        if path.rsplit("/", 1)[-1] not in FIGURES or not all(path in r for r in per_run):
            continue
        values = [r[path] for r in per_run]
        lo, hi = min(values), max(values)
        records.append({"figure": path, "values": values, "min": lo,
                        "median": statistics.median(values), "max": hi,
                        "max_over_min": hi / lo if lo > 0 else None})
    return records


def settings(results: list[dict]) -> dict:
    """The values of :data:`SETTINGS` seen in the processes (e.g. the BLAS threads each chose)."""
    seen: dict[str, list] = {}
    for r in results:
        for path, value in leaves(r):
            if path.rsplit("/", 1)[-1] in SETTINGS:
                seen.setdefault(path, []).append(value)
    return seen


def format_spread(records: list[dict], n: int) -> str:
    lines = [f"spread over {n} fresh processes (min / median / max, max/min):"]
    for r in records:
        scale, unit = (1e3, " ms") if r["figure"].endswith(TIMES) else (1.0, "")
        ratio = "" if r["max_over_min"] is None else f"  max/min {r['max_over_min']:.2f}"
        lines.append(f"  {r['figure']:45s} {r['min'] * scale:10.4g} / {r['median'] * scale:.4g}"
                     f" / {r['max'] * scale:.4g}{unit}{ratio}")
    return "\n".join(lines)


def run(argv: list[str], n: int, out: Path, write_json, log=print) -> int:
    """The benchmark ``argv`` in ``n`` fresh processes, one after the other (each prints its
    own lines); the results and their spread to ``out``. 130 when interrupted (what was
    measured is kept), the failing child's status when one fails."""
    child_args = strip_processes(argv)
    results: dict = {"argv": ["python3 -m snnsim.bench", *argv],
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "processes": [], "spread": []}
    for k in range(n):
        log(f"process {k + 1} of {n}: python3 -m snnsim.bench {shlex.join(child_args)}",
            flush=True)
        child_out = out.with_name(f"{out.stem}.p{k + 1}{out.suffix}")
        try:
            rc = subprocess.call([sys.executable, "-m", "snnsim.bench", *child_args,
                                  "--out", str(child_out)])
        except KeyboardInterrupt:
            rc = 130
        if rc != 0:
            write_json(out, results)
            if rc == 130:
                log(f"interrupted; the {k} processes measured so far are in {out}",
                    file=sys.stderr)
            return rc
        results["processes"].append(json.loads(child_out.read_text()))
        results["spread"] = spread(results["processes"])
        results["settings"] = settings(results["processes"])
        write_json(out, results)
    log(format_spread(results["spread"], n))
    for path, values in results["settings"].items():
        log(f"  {path}: {values}")
    log(f"measurements saved to {out}")
    return 0


__all__ = ["FIGURES", "format_spread", "leaves", "run", "spread", "strip_processes"]
