"""``python3 -m snnsim runs [DIR ...]``: every run folder under DIR, one line each.

    snnsim runs                      # the run folders under runs/
    snnsim runs ~/studies/table3-cnn # a study's runs (its trials/ folder is searched too)
    snnsim runs runs/x --json        # one run, as JSON for scripts

A run folder is a folder with a ``config.json`` beside a ``metrics.jsonl``; DIR is searched
three levels deep (symbolic links such as ``runs/latest`` are not followed, so no run is
listed twice). Per run: its name, config, backward, epochs done of those planned, best
and last test accuracy (%), state and start time. The state:

- ``running``: a process holds the folder's ``run.lock`` now;
- ``finished``: every planned epoch is done;
- ``diverged``: its last start ended on a NaN or infinite loss, weight or optimizer value
  (``status.json``, :mod:`snnsim.training.status`; the message is in ``--json``);
- ``interrupted``: stopped before its last epoch (Ctrl-C, SIGTERM, a kill, a crash):
  ``python3 -m snnsim.train --resume FOLDER`` continues it. When it keeps part of the
  next epoch (``interrupted.h5``), the table says how much, ``interrupted (+491 of
  epoch 49)``: the batches done of that epoch, which ``--resume`` goes on from.

Reading is all it does: no file of a run is changed, and a run that starts meanwhile is
not disturbed (the lock is tested with a shared lock, released at once).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from ..commandline import ArgumentParser, command, prog_name
from ..training.runfolder import kept_in
from ..training.status import read_status
from ..training.train import RUNS_DIR

#: How deep below a DIR run folders are looked for (runs/<run>, <study>/trials/<run>).
MAX_DEPTH = 3
PERCENT = 100.0


def find_runs(paths) -> list[Path]:
    """The run folders at or below ``paths``, sorted by path, each once."""
    found: list[Path] = []
    for top in map(Path, paths):
        if _is_run(top):
            found.append(top)
            continue
        base = len(top.parts)
        for folder, dirs, _ in os.walk(top):                  # followlinks=False
            here = Path(folder)
            if here != top and _is_run(here):
                found.append(here)
                dirs[:] = []
            elif len(here.parts) - base >= MAX_DEPTH:
                dirs[:] = []
            else:
                dirs.sort()
    return sorted(dict.fromkeys(found))


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file()


def is_locked(folder: Path) -> bool:
    """True while a process holds the run's ``run.lock`` (an exclusive flock, as
    :func:`snnsim.training.runfolder.locked` takes it)."""
    try:
        fd = os.open(folder / "run.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _rows(folder: Path) -> tuple[list[dict], int]:
    """metrics.jsonl's rows with an epoch and a test accuracy, and how many lines were not."""
    rows, bad = [], 0
    for line in (folder / "metrics.jsonl").read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            float(row["test_acc"]), int(row["epoch"])
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        rows.append(row)
    return rows, bad


def describe_run(folder: Path) -> dict:
    """One run's line of the index, as a dict (the ``--json`` record)."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    if not isinstance(cfg, dict):
        cfg = {}
    rows, bad = _rows(folder)
    done = int(rows[-1]["epoch"]) if rows else 0
    planned = cfg.get("epochs") if isinstance(cfg.get("epochs"), int) else None
    status = read_status(folder)
    if is_locked(folder):
        state = "running"
    elif status is not None and status["epoch"] == done and status.get("epochs") == planned:
        state = status["state"]
    elif planned is not None and done >= planned:
        state = "finished"
    else:
        state = "interrupted"
    kept = kept_in(folder) if state == "interrupted" else None
    started = None
    try:
        info = json.loads((folder / "run.json").read_text())
        started = info.get("started") if isinstance(info, dict) else None
    except (OSError, ValueError):
        pass
    network = cfg.get("network")
    return {"run": str(folder), "name": folder.name,
            "config": cfg.get("name") or (Path(network).stem if isinstance(network, str) else None),
            "backward": cfg.get("backward", "tsslbp"), "epochs_done": done, "epochs": planned,
            "best_acc": max(PERCENT * float(r["test_acc"]) for r in rows) if rows else None,
            "last_acc": PERCENT * float(rows[-1]["test_acc"]) if rows else None,
            "state": state, "batches_kept": kept, "started": started,
            "message": status["message"] if status is not None and state == status["state"] else "",
            "unreadable_metrics_lines": bad}


def format_table(records: list[dict]) -> str:
    """The index as aligned text columns, one line per run."""
    head = ("run", "config", "backward", "epochs", "best %", "last %", "state", "started")

    def pct(v):
        return "-" if v is None else f"{v:.2f}"
    lines = [(r["name"], str(r["config"] or "?"), str(r["backward"]),
              f"{r['epochs_done']}/{r['epochs'] if r['epochs'] is not None else '?'}",
              pct(r["best_acc"]), pct(r["last_acc"]),
              r["state"] + (f" (+{r['batches_kept']} of epoch {r['epochs_done'] + 1})"
                            if r.get("batches_kept") else ""),
              str(r["started"] or "-"))
             for r in records]
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [head, *lines])


def make_parser() -> ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.runs"),
                       description=__doc__.split("\n\n")[0],
                       epilog="States: running (run.lock held), finished, diverged, interrupted "
                              "(resume with train --resume FOLDER).")
    p.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                   help="run folders, or folders to search for them (default runs/)")
    p.add_argument("--json", action="store_true", help="print a JSON list of the runs instead")
    return p


@command("runs")
def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    dirs = args.dirs or [RUNS_DIR]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(d))
    records = [describe_run(f) for f in find_runs(dirs)]
    if args.json:
        print(json.dumps(records, indent=1))
    elif not records:
        print(f"no run folder under {', '.join(map(str, dirs))}")
    else:
        print(format_table(records))
    return 0


__all__ = ["describe_run", "find_runs", "format_table", "is_locked", "main"]
