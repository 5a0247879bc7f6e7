"""HDF5 checkpoints: everything needed to resume a run bit-exactly.

Layout (documented in ``docs/checkpoint_format.md``)::

    /                     attrs: format, format_version, snnsim_version, git_commit,
                                 source, created, epoch, config (JSON), network, best_test_acc,
                                 best_epoch
    /weights/layer_NN/    one dataset per parameter ("W", ...); attrs: layer, describe
    /optimizer            attrs: name, step, lr, betas, eps, weight_decay
    /optimizer/m/layer_NN/<param>, /optimizer/v/layer_NN/<param>
    /rng                  attrs: bit_generator, state (JSON of bit_generator.state)
    /metrics/<column>     one 1-D dataset per column, one row per completed epoch

Writes are atomic: the file is written as ``<name>.<pid>.<random>.tmp`` in the
same folder (a name no other writer uses), flushed and fsynced, then renamed over
``<name>`` with :func:`os.replace`. A crash or Ctrl-C during a save leaves the
previous checkpoint as it was; a ``kill -9`` may leave the ``.tmp`` file, which the
next run in that folder removes (:mod:`snnsim.training.runfolder`).

Loading refuses weights holding NaN or inf (a diverged run) unless asked to load
them for forensics: ``load_checkpoint(path, allow_nonfinite=True)``, or
``--allow-nonfinite`` on the command line (:func:`allow_nonfinite_weights`).
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import os
import secrets
import shutil
from pathlib import Path

import h5py
import numpy as np

from ..backend import to_numpy
from ..h5header import check_header, has_format, layer_name, write_header
from ..version import current_source_info

FORMAT_NAME = "snnsim-checkpoint"
FORMAT_VERSION = 1
#: Columns of the per-epoch metrics table, in order, with their dtypes.
METRIC_COLUMNS = {"epoch": np.int64, "train_loss": np.float64, "train_acc": np.float64,
                  "test_acc": np.float64, "seconds": np.float64, "samples_per_s": np.float64,
                  "eval_seconds": np.float64}
#: Optional per-epoch columns with one value per spiking layer, ``(epoch, layer)`` float64: the
#: firing sparsity of the test pass (``snnsim.training.train.test_pass``). Rows of epochs
#: trained before they existed are NaN, and their metrics rows have no such key.
LAYER_METRIC_COLUMNS = ("test_silent", "test_spikes")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or not an snnsim checkpoint.
    The message names the file."""




# --- atomic writes ---------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:   # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:   # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_SUFFIX = ".tmp"


def temporary_name(path) -> Path:
    """``<path>.<pid>.<random>.tmp``: a temporary name in ``path``'s folder that no other
    process or call shares."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path`` atomically.

    ``tmp_path`` is :func:`temporary_name` of ``path``; it is fsynced before
    :func:`os.replace` and removed if ``write`` fails (also on KeyboardInterrupt).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_copy(src, dst) -> Path:
    """Copy ``src`` to ``dst`` atomically (``best.h5`` from ``checkpoint.h5``)."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


# --- save ------------------------------------------------------------------------
def _metrics_table(history: list[dict]) -> dict:
    cols = {}
    for key, dtype in METRIC_COLUMNS.items():
        cols[key] = np.asarray([row.get(key, np.nan) for row in history], dtype=dtype)
    for key in LAYER_METRIC_COLUMNS:
        widths = {len(row[key]) for row in history if key in row}
        if len(widths) == 1:
            n = widths.pop()
            cols[key] = np.asarray([row.get(key, [np.nan] * n) for row in history], dtype=np.float64)
    return cols


def _metrics_rows(group) -> list[dict]:
    """The metrics rows of a checkpoint's ``/metrics`` group (with the optional per-layer
    columns where a row has them)."""
    cols = {k: group[k][()] for k in METRIC_COLUMNS}
    layer_cols = {k: group[k][()] for k in LAYER_METRIC_COLUMNS if k in group}
    rows = []
    for i in range(len(cols["epoch"])):
        row = {k: (int(cols[k][i]) if k == "epoch" else float(cols[k][i])) for k in METRIC_COLUMNS}
        for k, col in layer_cols.items():
            if not np.all(np.isnan(col[i])):
                row[k] = [float(v) for v in col[i]]
        rows.append(row)
    return rows


def save_checkpoint(path, *, weights: list[dict], optimizer: dict, rng_state: dict, epoch: int,
                    config: dict, metrics: list[dict], layer_names: list[str] | None = None,
                    network: str = "", extra_attrs: dict | None = None) -> Path:
    """Write a checkpoint to ``path`` atomically (see the module docstring).

    weights : one dict of arrays per layer (NumPy or CuPy; written as NumPy).
    optimizer : :meth:`snnsim.training.optim.AdamW.state_dict`.
    rng_state : ``np.random.Generator.bit_generator.state``.
    epoch : completed epochs.
    config : the flat config as a dict (stored as a JSON string attribute).
    metrics : per-epoch rows with the keys of :data:`METRIC_COLUMNS`.

    Non-finite weights are refused (:class:`CheckpointError`) before anything is
    written: a diverged network never replaces a finite checkpoint.
    """
    path = Path(path)
    hit = first_nonfinite(weights)
    if hit:
        raise CheckpointError(f"{path}: not written: layer {hit[0]} parameter {hit[1]} holds "
                              f"{hit[2]} non-finite value(s) (NaN or inf)")
    path.parent.mkdir(parents=True, exist_ok=True)
    test_acc = [row["test_acc"] for row in metrics]
    best = int(np.argmax(test_acc)) if test_acc else -1

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            write_header(f, FORMAT_NAME, FORMAT_VERSION)
            info = current_source_info()     # commit or none, and where the code came from
            f.attrs["git_commit"] = info["git_commit"] or ""
            f.attrs["source"] = info["source"]
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["epoch"] = int(epoch)
            f.attrs["config"] = json.dumps(config, sort_keys=False)
            f.attrs["network"] = network
            f.attrs["best_test_acc"] = float(test_acc[best]) if best >= 0 else float("nan")
            f.attrs["best_epoch"] = int(metrics[best]["epoch"]) if best >= 0 else -1
            for k, v in (extra_attrs or {}).items():
                f.attrs[k] = v
            g = f.create_group("weights")
            for i, layer in enumerate(weights):
                lg = g.create_group(layer_name(i))
                lg.attrs["layer"] = i
                lg.attrs["describe"] = layer_names[i] if layer_names else ""
                for name, a in layer.items():
                    lg.create_dataset(name, data=to_numpy(a))
            og = f.create_group("optimizer")
            og.attrs["name"] = optimizer.get("name", "adamw")
            og.attrs["step"] = np.int64(optimizer["step"])
            for key in ("lr", "eps", "weight_decay"):
                og.attrs[key] = float(optimizer[key])
            og.attrs["betas"] = np.asarray(optimizer["betas"], dtype=np.float64)
            for moment in ("m", "v"):
                mg = og.create_group(moment)
                for i, layer in enumerate(optimizer[moment]):
                    lg = mg.create_group(layer_name(i))
                    for name, a in layer.items():
                        lg.create_dataset(name, data=to_numpy(a))
            rg = f.create_group("rng")
            rg.attrs["bit_generator"] = rng_state["bit_generator"]
            rg.attrs["state"] = json.dumps(rng_state)
            mg = f.create_group("metrics")
            for key, col in _metrics_table(metrics).items():
                mg.create_dataset(key, data=col)
            f.flush()

    return atomic_write(path, write)


# --- load ------------------------------------------------------------------------
def _read_layers(group) -> list[dict]:
    keys = sorted(group.keys())
    expected = [layer_name(i) for i in range(len(keys))]
    if keys != expected:
        raise KeyError(f"{group.name}: layer groups {keys}, expected {expected}")
    return [{name: ds[()] for name, ds in group[k].items()} for k in keys]


_ALLOW_NONFINITE = contextvars.ContextVar("snnsim_allow_nonfinite", default=False)


@contextlib.contextmanager
def allow_nonfinite_weights(allow: bool = True):
    """Within the block, :func:`load_checkpoint` calls that do not say otherwise load
    non-finite weights (the command line's ``--allow-nonfinite``)."""
    token = _ALLOW_NONFINITE.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW_NONFINITE.reset(token)


def first_nonfinite(weights: list[dict]):
    """``(layer index, parameter name, number of NaN/inf values)`` of the first parameter
    holding a non-finite value, or None when every weight is finite."""
    for i, layer in enumerate(weights):
        for name, a in layer.items():
            a = to_numpy(a)
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                return i, name, bad
    return None


def check_finite_weights(path, weights: list[dict]) -> None:
    """CheckpointError naming the file, layer and parameter when a loaded weight is NaN
    or inf."""
    hit = first_nonfinite(weights)
    if hit:
        raise CheckpointError(
            f"{path}: layer {hit[0]} parameter {hit[1]} holds {hit[2]} non-finite value(s) "
            "(NaN or inf: the run diverged); load it anyway for forensics with "
            "--allow-nonfinite (load_checkpoint(..., allow_nonfinite=True))")


def load_checkpoint(path, allow_nonfinite: bool | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns a dict: ``epoch``, ``config`` (dict), ``weights`` (list of dicts of
    NumPy arrays), ``optimizer`` (like ``AdamW.state_dict()``), ``rng_state``,
    ``metrics`` (list of per-epoch dicts), ``snnsim_version``, ``git_commit``,
    ``source``, ``created``, ``network``, ``best_test_acc``, ``best_epoch``, ``data_files``
    (the dataset files the run read: path, bytes, sha256; [] for older files),
    ``path``.
    Raises :class:`CheckpointError` naming the file if it is missing, corrupt,
    truncated, not HDF5, or not an snnsim checkpoint of a known version, and if
    a weight is NaN or inf unless ``allow_nonfinite`` (None: the setting of
    :func:`allow_nonfinite_weights`, default False).
    """
    path = Path(path)
    if allow_nonfinite is None:
        allow_nonfinite = _ALLOW_NONFINITE.get()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path}: not a readable HDF5 file (corrupt or truncated "
                              f"checkpoint?): {exc}") from exc
    try:
        with f:
            check_header(f, path, FORMAT_NAME, FORMAT_VERSION, "checkpoint", CheckpointError)
            og = f["optimizer"]
            out = {
                "path": str(path),
                "epoch": int(f.attrs["epoch"]),
                "config": json.loads(f.attrs["config"]),
                "network": str(f.attrs["network"]),
                "snnsim_version": str(f.attrs["snnsim_version"]),
                "git_commit": str(f.attrs["git_commit"]),
                "source": str(f.attrs.get("source", "")),
                "created": str(f.attrs["created"]),
                "best_test_acc": float(f.attrs["best_test_acc"]),
                "best_epoch": int(f.attrs["best_epoch"]),
                "weights": _read_layers(f["weights"]),
                "optimizer": {
                    "name": str(og.attrs["name"]),
                    "step": int(og.attrs["step"]),
                    "lr": float(og.attrs["lr"]),
                    "betas": [float(b) for b in og.attrs["betas"]],
                    "eps": float(og.attrs["eps"]),
                    "weight_decay": float(og.attrs["weight_decay"]),
                    "m": _read_layers(og["m"]),
                    "v": _read_layers(og["v"]),
                },
                "rng_state": json.loads(f["rng"].attrs["state"]),
            }
            out["metrics"] = _metrics_rows(f["metrics"])
            out["data_files"] = json.loads(f.attrs.get("data_files", "[]"))
    except CheckpointError:
        raise
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: damaged snnsim checkpoint ({type(exc).__name__}: "
                              f"{exc})") from exc
    if not allow_nonfinite:
        check_finite_weights(path, out["weights"])
    return out


def checkpoint_epoch(path) -> int:
    """The ``epoch`` attribute of a checkpoint, without reading its arrays."""
    try:
        with h5py.File(path, "r") as f:
            if not has_format(f, FORMAT_NAME):
                raise CheckpointError(f"{path}: not an snnsim checkpoint")
            return int(f.attrs["epoch"])
    except (OSError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable snnsim checkpoint: {exc}") from exc


def restore_rng(rng_state: dict) -> np.random.Generator:
    """A ``np.random.Generator`` in exactly the saved state."""
    name = rng_state["bit_generator"]
    bit_gen_cls = getattr(np.random, name, None)
    if bit_gen_cls is None:
        raise CheckpointError(f"unknown bit generator {name!r} in checkpoint")
    bg = bit_gen_cls()
    bg.state = rng_state
    return np.random.Generator(bg)


__all__ = ["CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "LAYER_METRIC_COLUMNS", "METRIC_COLUMNS",
           "TMP_SUFFIX",
           "allow_nonfinite_weights", "atomic_copy", "atomic_write", "check_finite_weights",
           "checkpoint_epoch", "first_nonfinite", "load_checkpoint", "restore_rng",
           "save_checkpoint", "temporary_name"]
