"""How a run's last start ended: ``status.json`` in the run folder.

``python3 -m snnsim.train`` writes it (atomically, rank 0 only) when a start ends without
being killed::

    {"state": "finished" | "interrupted" | "diverged", "epoch": 12, "epochs": 100,
     "time": "2026-12-06T05:40:00+00:00", "message": "..."}

``epoch`` is the last complete epoch (the checkpoint's), ``epochs`` the epochs the run was
started for, ``message`` the one line said at the end (a divergence's cause). A start that
was killed (``kill -9``, a power cut, a session's end) writes nothing, so the file may be
older than the run's metrics: :mod:`snnsim.analysis.runs` reads it together with the lock
(``run.lock`` held: running) and ``metrics.jsonl`` (more epochs than the status says: the
status is stale, the run was interrupted since).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .checkpoint import atomic_write

STATUS_NAME = "status.json"
STATES = ("finished", "interrupted", "diverged")


def write_status(run_dir, state: str, epoch: int, epochs: int, message: str = "") -> Path:
    """Record how this start of the run in ``run_dir`` ended."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    record = {"state": state, "epoch": int(epoch), "epochs": int(epochs),
              "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "message": message}
    path = Path(run_dir) / STATUS_NAME
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return path


def read_status(run_dir) -> dict | None:
    """The recorded end of the run's last start, or None (none recorded, or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("state") not in STATES \
            or not isinstance(record.get("epoch"), int):
        return None
    return record


__all__ = ["STATES", "STATUS_NAME", "read_status", "write_status"]
