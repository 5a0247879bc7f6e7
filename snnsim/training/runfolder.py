"""A crash-consistent run folder with one writer.

The files of a run folder (see :mod:`snnsim.training.train`) change only in this
order, each by an atomic rename (:func:`snnsim.training.checkpoint.atomic_write`)::

    1. checkpoint.h5   epoch e, its history, and best_epoch b (the history's best)
    2. best.h5         a copy of checkpoint.h5, only when b == e (a new best)
    3. metrics.jsonl   the row of epoch e appended

A kill at any instant therefore leaves either the state before step 1 or one in
which ``best.h5`` lags by exactly one promotion: checkpoint.h5's ``best_epoch``
equals its ``epoch`` and best.h5 holds an earlier epoch (or is missing). The next
start repairs that by copying checkpoint.h5 to best.h5 (:func:`repair_best`), and
rewrites metrics.jsonl from the checkpoint's history. After the repair,
``best.h5`` holds the checkpoint's ``best_epoch``: the best epoch of metrics.jsonl.

One writer: :func:`locked` takes an exclusive lock on ``<run folder>/run.lock``
(:mod:`filelock`, released by the OS when the process dies, also on ``kill -9``)
for the whole run; a second ``train`` or ``--resume`` on the folder fails at
once with one line. Temporary files have unique names (pid and a random part);
those a killed writer left (``*.tmp``) are removed on the next start, under the
lock. Ctrl-C (SIGINT) and SIGTERM (what job schedulers send) stop a run at the
next batch or once the epoch's files are written (:func:`sigterm_as_interrupt`); a
second one stops it at once.

Reading back: ``best.h5`` counts as holding an epoch only when it passes every check of
:func:`snnsim.training.checkpoint.load_checkpoint` (a damaged one is replaced by the
next promotion); ``metrics.jsonl`` and ``config.json`` are read by
:func:`read_metrics_file` and :func:`read_json_file`, which check them first.
"""
from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

from .checkpoint import (
    METRIC_ROW_REQUIRED,
    TMP_SUFFIX,
    CheckpointError,
    atomic_copy,
    check_metric_rows,
    kept_batches,
    load_checkpoint,
    regular_file,
)

LOCK_NAME = "run.lock"
CHECKPOINT_NAME = "checkpoint.h5"
BEST_NAME = "best.h5"
#: The state of a run stopped inside an epoch (Ctrl-C, SIGTERM): checkpoint.h5's epoch
#: plus the batches done since, which ``--resume`` continues from; removed when the
#: epoch's checkpoint is written (docs/checkpoint_format.md).
INTERRUPTED_NAME = "interrupted.h5"
METRICS_NAME = "metrics.jsonl"
#: The largest JSON file of a run folder read back (metrics.jsonl, config.json), in bytes:
#: a metrics line is about 200 bytes, so this holds hundreds of thousands of epochs.
MAX_JSON_FILE_BYTES = 64 * 2**20


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another process holds it, or it holds files of
    another run. The message names the folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: the run stops as after Ctrl-C."""


@contextlib.contextmanager
def locked(run_dir):
    """Hold an exclusive lock on ``run_dir`` (created if needed) for the block;
    :class:`RunFolderError` at once if another process holds it."""
    from filelock import FileLock, Timeout
    run_dir = Path(run_dir)
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"{run_dir} is in use by another snnsim.train process (it holds "
                             f"{run_dir / LOCK_NAME}); wait for it to finish or choose another "
                             "--out") from None
    try:
        yield run_dir
    finally:
        lock.release()


def clean_leftovers(run_dir) -> list[Path]:
    """Remove the temporary files (``*.tmp``) a killed writer left; call under the lock.
    Returns the removed paths."""
    removed = []
    for p in sorted(Path(run_dir).glob(f"*{TMP_SUFFIX}")):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def best_epoch_on_disk(run_dir) -> int | None:
    """The epoch ``best.h5`` holds, or None when it is missing, unreadable or fails a
    check of :func:`load_checkpoint` (damaged: the next promotion replaces it)."""
    path = Path(run_dir) / BEST_NAME
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, allow_nonfinite=False)["epoch"]
    except CheckpointError:
        return None


def read_json_file(path, what: str):
    """The JSON value of a run folder's file ``path`` (``what``: how to name it):
    CheckpointError naming the file when it is not a regular file, larger than
    :data:`MAX_JSON_FILE_BYTES`, not UTF-8 or not JSON."""
    path = regular_file(path, what)
    size = path.stat().st_size
    if size > MAX_JSON_FILE_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes; a {what} file is at most "
                              f"{MAX_JSON_FILE_BYTES:,}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({type(exc).__name__})") from None


def read_metrics_file(path, required=METRIC_ROW_REQUIRED) -> list[dict]:
    """The rows of a run folder's ``metrics.jsonl``, checked: a regular file of bounded
    size, one JSON object per non-blank line, the columns ``required``, epochs 1, 2, ...
    in order, finite losses and accuracies in [0, 1]
    (:func:`snnsim.training.checkpoint.check_metric_rows`). CheckpointError naming the
    file and the line otherwise."""
    path = regular_file(path, "metrics")
    size = path.stat().st_size
    if size > MAX_JSON_FILE_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes; a metrics file is at most "
                              f"{MAX_JSON_FILE_BYTES:,}")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise CheckpointError(f"{path}: line {n} is not JSON: {line[:40]!r}") from None
        if not isinstance(row, dict):
            raise CheckpointError(f"{path}: line {n} is a JSON {type(row).__name__}, expected "
                                  "an object")
        rows.append(row)
    check_metric_rows(rows, path, required)
    return rows


def repair_best(run_dir, ckpt: dict) -> bool:
    """Finish a promotion a kill interrupted: when the checkpoint ``ckpt`` (loaded from
    ``run_dir/checkpoint.h5``) is its own history's best epoch and ``best.h5`` does not
    hold that epoch, copy checkpoint.h5 to best.h5. Returns True if it copied."""
    run_dir = Path(run_dir)
    if ckpt["best_epoch"] != ckpt["epoch"] or ckpt["epoch"] < 1:
        return False
    if best_epoch_on_disk(run_dir) == ckpt["epoch"]:
        return False
    atomic_copy(run_dir / CHECKPOINT_NAME, run_dir / BEST_NAME)
    return True


def adopt_best(run_dir, ckpt: dict) -> bool:
    """Make ``run_dir/best.h5`` hold the best epoch of the resumed checkpoint ``ckpt``.

    Resuming ``run_dir``'s own checkpoint: :func:`repair_best`. Resuming a checkpoint
    of another folder into a new one: copy that folder's best.h5 when it holds the
    best epoch, or the checkpoint itself when it is the best epoch. Returns True if a
    file was copied."""
    run_dir, src = Path(run_dir), Path(ckpt["path"])
    if (run_dir / CHECKPOINT_NAME).resolve() == src.resolve():
        return repair_best(run_dir, ckpt)
    if ckpt["best_epoch"] < 1 or best_epoch_on_disk(run_dir) == ckpt["best_epoch"]:
        return False
    if best_epoch_on_disk(src.parent) == ckpt["best_epoch"]:
        atomic_copy(src.parent / BEST_NAME, run_dir / BEST_NAME)
        return True
    if ckpt["best_epoch"] == ckpt["epoch"]:
        atomic_copy(src, run_dir / BEST_NAME)
        return True
    return False


def remove_files(run_dir, names) -> None:
    """Remove ``names`` and temporary leftovers from ``run_dir`` (a start that failed
    before its first checkpoint)."""
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)
    clean_leftovers(run_dir)


def remove_if_only_lock(run_dir) -> None:
    """Remove ``run_dir`` when it holds nothing but the lock file (a failed start in a
    folder that did not exist before)."""
    run_dir = Path(run_dir)
    if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        try:
            run_dir.rmdir()
        except OSError:   # pragma: no cover - another process wrote into it meanwhile
            pass


def promote(run_dir, is_best: bool) -> None:
    """Step 2 of the order above, after checkpoint.h5 was written: copy it to best.h5
    when its epoch is a new best."""
    if is_best:
        atomic_copy(Path(run_dir) / CHECKPOINT_NAME, Path(run_dir) / BEST_NAME)


def resume_file(run_dir) -> Path | None:
    """The file ``--resume run_dir`` starts from: checkpoint.h5, else interrupted.h5 (a
    run stopped inside its first epoch), else None."""
    for name in (CHECKPOINT_NAME, INTERRUPTED_NAME):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return None


def kept_in(run_dir) -> int | None:
    """The batches of the next epoch that ``run_dir``'s interrupted.h5 keeps, when it
    continues the folder's checkpoint.h5 (or, with none, is a stop inside epoch 1):
    :func:`~snnsim.training.checkpoint.kept_batches`, for a log line or a table."""
    ckpt = Path(run_dir) / CHECKPOINT_NAME
    return kept_batches(Path(run_dir) / INTERRUPTED_NAME, ckpt if ckpt.exists() else None)


def check_new_run_folder(run_dir, names=(CHECKPOINT_NAME, BEST_NAME, INTERRUPTED_NAME)) -> None:
    """A new run may start in ``run_dir`` only if it holds none of ``names`` (a run's
    checkpoint or best) and is a folder (or does not exist yet)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir}: exists and is not a folder")
    held = [n for n in names if (run_dir / n).exists()]
    if held:
        raise RunFolderError(f"{run_dir} already holds a run ({', '.join(held)}); continue it "
                             f"with --resume {run_dir}, or choose another --out")


class StopRequest:
    """Set by SIGINT or SIGTERM; :meth:`check` raises, at the run's next safe point
    (after a batch, after an epoch's files are written), KeyboardInterrupt after
    SIGINT and :class:`Terminated` after SIGTERM. ``agreed``: the stop was raised at a
    safe point (by :meth:`check`, or for data-parallel ranks all together by
    ``DataParallel.check_stop``), not by a second signal wherever the run was."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self.agreed = False

    def check(self) -> None:
        if self.requested:
            self.agreed = True
            raise stop_exception(self.signum)


def stop_exception(signum) -> KeyboardInterrupt:
    """The exception of a stop by ``signum``: :class:`Terminated` for SIGTERM, else
    KeyboardInterrupt."""
    return Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block SIGINT (Ctrl-C) and SIGTERM stop the run cleanly and
    resumably: the handler only records the request, and the run calls
    ``stop.check()`` at its safe points, which raises KeyboardInterrupt (SIGINT) or
    :class:`Terminated` (SIGTERM, a KeyboardInterrupt). Python's own SIGINT handler
    raises KeyboardInterrupt wherever the run is, also inside a finaliser (a weakref
    callback, say), which reports it as "Exception ignored" and drops it: the run
    went on training. A second signal raises at once. An ignored SIGINT (a job
    started in the background) stays ignored. Outside the main thread (where
    handlers cannot be set) the block runs without handlers. Yields the
    :class:`StopRequest`."""
    stop = StopRequest()

    def handler(signum, frame):
        if stop.requested:
            raise stop_exception(signum)
        stop.requested, stop.signum = True, signum
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if not (signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN):
                previous[signum] = signal.signal(signum, handler)
    except ValueError:     # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


__all__ = ["BEST_NAME", "CHECKPOINT_NAME", "INTERRUPTED_NAME", "LOCK_NAME", "MAX_JSON_FILE_BYTES",
           "METRICS_NAME", "RunFolderError", "StopRequest", "Terminated", "adopt_best", "best_epoch_on_disk",
           "check_new_run_folder", "clean_leftovers", "kept_in", "locked", "promote", "read_json_file",
           "read_metrics_file", "remove_files", "remove_if_only_lock", "repair_best", "resume_file",
           "sigterm_as_interrupt", "stop_exception"]
