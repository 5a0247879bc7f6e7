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
    /partial              (a run stopped inside an epoch, ``interrupted.h5`` only) attrs:
                          batches_done, samples_seen, loss_sum, correct, train_seconds,
                          base_checksum; datasets order (int64), grad_norms (float64)

Writes are atomic: the file is written as ``<name>.<pid>.<random>.tmp`` in the
same folder (a name no other writer uses), flushed and fsynced, then renamed over
``<name>`` with :func:`os.replace`. A crash or Ctrl-C during a save leaves the
previous checkpoint as it was; a ``kill -9`` may leave the ``.tmp`` file, which the
next run in that folder removes (:mod:`snnsim.training.runfolder`).

The file is built in memory and written with plain file writes: a full disk is an
OSError naming the file being written, never an error inside the HDF5 library.

Integrity: the root attribute ``checksum`` (format version 2) is the SHA-256 of every
group's and dataset's name, attributes and data (:func:`content_digest`); a file
whose content does not match it is refused. Version-1 files (no checksum) still load,
with every other check. Reading back (:func:`load_checkpoint`) checks everything
before use, in one place: the kind of file, sizes declared against the file's size
before anything is read, the layout, dtypes, shapes, attribute types and ranges, the
config, the rng state, the metrics.

Loading refuses weights or optimizer moments holding NaN or inf (a diverged run), or
a negative second moment, unless asked to load them for forensics:
``load_checkpoint(path, allow_nonfinite=True)``, or ``--allow-nonfinite`` on the
command line (:func:`allow_nonfinite_weights`).
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import stat
import types
from pathlib import Path

import h5py
import numpy as np

from ..backend import to_numpy
from ..h5header import check_header, layer_name, write_header
from ..version import current_source_info

FORMAT_NAME = "snnsim-checkpoint"
#: 2: the root attribute ``checksum`` (version 1 files, without it, still load).
FORMAT_VERSION = 2
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
    An OSError (a full disk, ``path`` being a folder) is raised naming ``path``, the
    file being written, not the temporary name or the source of a copy.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise naming_destination(exc, path) from exc
        raise
    _fsync_dir(path.parent)
    return path


def naming_destination(exc: OSError, path, doing: str = "writing") -> OSError:
    """``exc`` as raised for ``doing`` ``path``: same class and errno, ``path`` as its
    file name (a full disk while copying checkpoint.h5 to best.h5 names best.h5)."""
    if exc.errno:
        return type(exc)(exc.errno, f"{exc.strerror} ({doing} this file)", str(path))
    return OSError(f"{path}: {doing} failed: {exc}")


def atomic_write_h5(path, fill) -> Path:
    """Build an HDF5 file in memory with ``fill(h5py.File)``, then write its bytes to
    ``path`` with :func:`atomic_write`. The HDF5 library never writes to disk: a full
    disk is a plain OSError of the final write (HDF5 writing into a full disk ends, in
    some versions, in a crash of the process)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
    image = buf.getvalue()
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(image))


def atomic_copy(src, dst) -> Path:
    """Copy ``src`` to ``dst`` atomically (``best.h5`` from ``checkpoint.h5``); a write
    error names ``dst`` (a full disk while copying names the copy, not ``src``)."""
    regular_file(src, "checkpoint")
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


def save_checkpoint(path, *, weights: list[dict], optimizer: dict, rng_state: dict, epoch: int,
                    config: dict, metrics: list[dict], layer_names: list[str] | None = None,
                    network: str = "", extra_attrs: dict | None = None,
                    partial: dict | None = None) -> Path:
    """Write a checkpoint to ``path`` atomically (see the module docstring).

    weights : one dict of arrays per layer (NumPy or CuPy; written as NumPy).
    optimizer : :meth:`snnsim.training.optim.AdamW.state_dict`.
    rng_state : ``np.random.Generator.bit_generator.state``.
    epoch : completed epochs.
    config : the flat config as a dict (stored as a JSON string attribute).
    metrics : per-epoch rows with the keys of :data:`METRIC_COLUMNS`.
    partial : for a run stopped inside epoch ``epoch + 1``, the epoch so far
        (:data:`PARTIAL_ATTRS` and the arrays ``order`` and ``grad_norms``), else None.

    Non-finite weights or optimizer moments (and a negative v) are refused
    (:class:`CheckpointError`) before anything is written: a diverged network never
    replaces a finite checkpoint. The last step seals the file (:func:`seal`).
    """
    path = Path(path)
    hit = first_nonfinite(weights)
    if hit:
        raise CheckpointError(f"{path}: not written: layer {hit[0]} parameter {hit[1]} holds "
                              f"{hit[2]} non-finite value(s) (NaN or inf)")
    try:
        check_optimizer_state(path, optimizer)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: not written: {str(exc).removeprefix(f'{path}: ')}") \
            from None
    path.parent.mkdir(parents=True, exist_ok=True)
    test_acc = [row["test_acc"] for row in metrics]
    best = int(np.argmax(test_acc)) if test_acc else -1

    def fill(f):
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
        if partial is not None:
            pg = f.create_group("partial")
            for key, kind in PARTIAL_ATTRS.items():
                pg.attrs[key] = kind(partial[key])
            pg.create_dataset("order", data=np.asarray(partial["order"], dtype=np.int64))
            pg.create_dataset("grad_norms", data=np.asarray(partial["grad_norms"],
                                                            dtype=np.float64))
        seal(f)

    return atomic_write_h5(path, fill)


# --- load ------------------------------------------------------------------------
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


# --- reading back: one validated reader -------------------------------------------
#: Bounds of what a checkpoint may declare, checked before anything is read or allocated.
MAX_EPOCH = 10**6            # completed epochs
MAX_STEP = 2**53             # optimizer steps (exact in a float64)
MAX_DEPTH = 6                # /optimizer/m/layer_NN/<param> is depth 4
MAX_OBJECTS = 100_000        # groups and datasets
MAX_NDIM = 8
#: The attributes of /partial (a run stopped inside an epoch) and their types.
PARTIAL_ATTRS = {"batches_done": int, "samples_seen": int, "loss_sum": float, "correct": int,
                 "train_seconds": float, "base_checksum": str}
#: Bit generators of NumPy a checkpoint's /rng may name.
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
CHECKSUM_ATTR = "checksum"
#: Versions this snnsim reads: 1 (no checksum) and 2 (root attribute ``checksum``).
READABLE_VERSIONS = (1, FORMAT_VERSION)


def regular_file(path, what: str, error: type[Exception] = CheckpointError) -> Path:
    """``path`` if it names a regular file (a symbolic link to one is fine); ``error``
    naming it otherwise: missing, a folder, a FIFO (reading one would wait for a writer
    for ever), a device or a socket."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise error(f"{path}: is {kind}, not a {what} file (snnsim reads regular files only)")
    return path


class _Budget:
    """The bytes a file may still declare: a file cannot hold more data than its size
    (snnsim writes checkpoints uncompressed), so a larger declaration is damage,
    refused before anything is allocated."""

    def __init__(self, file_bytes: int):
        self.left = int(file_bytes)

    def take(self, n_bytes: int, what: str) -> None:
        if n_bytes > self.left:
            raise CheckpointError(f"{what} declares {n_bytes:,} bytes, more than the "
                                  "file holds")
        self.left -= n_bytes


def _declared_bytes(shape, itemsize: int) -> int:
    return math.prod(int(n) for n in (shape or ())) * int(itemsize)


def _read_attrs(obj, budget: _Budget) -> dict:
    """The attributes of an HDF5 object: strings or numeric scalars/arrays, sizes
    bounded before reading."""
    out = {}
    for name in obj.attrs.keys():
        aid = obj.attrs.get_id(name)
        where = f"attribute {name!r} of {obj.name}"
        if aid.dtype.kind not in "biufSUO" or aid.dtype.names is not None:
            raise CheckpointError(f"{where} has dtype {aid.dtype}")
        budget.take(_declared_bytes(aid.shape, max(aid.dtype.itemsize, 1)), where)
        value = obj.attrs[name]
        if isinstance(value, np.ndarray) and value.dtype.kind == "O":
            raise CheckpointError(f"{where} is an array of strings or objects")
        out[name] = value
    return out


def _read_tree(f, budget: _Budget) -> dict:
    """Every group and dataset of the open file ``f``: ``{name: {"attrs", "data",
    "children"}}`` (``data`` None for a group). Only hard links (a soft or external link
    is refused), nesting and counts bounded, numeric datasets of bounded size."""
    tree: dict = {}

    def visit(group, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{group.name}: groups nested deeper than {MAX_DEPTH}")
        keys = sorted(group.keys())
        tree[group.name] = {"attrs": _read_attrs(group, budget), "data": None,
                            "children": keys}
        for key in keys:
            name = f"{group.name.rstrip('/')}/{key}"
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise CheckpointError(f"{name} is a {type(link).__name__} (a checkpoint holds "
                                      "only plain groups and datasets)")
            if len(tree) >= MAX_OBJECTS:
                raise CheckpointError(f"more than {MAX_OBJECTS} groups and datasets")
            obj = group[key]
            if isinstance(obj, h5py.Group):
                visit(obj, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                tree[name] = {"attrs": _read_attrs(obj, budget),
                              "data": _read_dataset(obj, name, budget), "children": None}
            else:
                raise CheckpointError(f"{name} is a {type(obj).__name__}")

    visit(f, 0)
    return tree


def _read_dataset(ds, name: str, budget: _Budget) -> np.ndarray:
    dtype = ds.dtype
    if dtype.kind not in "biuf" or dtype.names is not None or dtype.subdtype is not None:
        raise CheckpointError(f"{name} holds {dtype} values, not numbers (bytes, strings, "
                              "complex or compound data are refused)")
    if ds.shape is None or len(ds.shape) > MAX_NDIM:
        raise CheckpointError(f"{name} has shape {ds.shape}")
    budget.take(_declared_bytes(ds.shape, dtype.itemsize), name)
    return np.asarray(ds[()])


def _attr_bytes(value) -> bytes:
    """A canonical byte string of an attribute's value, for the checksum."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    a = np.asarray(value)
    if a.dtype.kind == "S":
        return b"S" + a.tobytes()
    return b"a" + a.dtype.str.encode() + repr(a.shape).encode() + np.ascontiguousarray(a).tobytes()


def content_digest(tree: dict) -> str:
    """``sha256:<hex>`` of every group's and dataset's name, attributes (but the
    checksum itself) and data (dtype, shape, bytes), in name order: what the root
    attribute ``checksum`` of a version-2 checkpoint holds."""
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    for name in sorted(tree):
        node = tree[name]
        put(b"N" + name.encode("utf-8", "surrogatepass"))
        for key in sorted(node["attrs"]):
            if name == "/" and key == CHECKSUM_ATTR:
                continue
            put(b"A" + key.encode("utf-8", "surrogatepass"))
            put(_attr_bytes(node["attrs"][key]))
        a = node["data"]
        if a is not None:
            put(b"D" + a.dtype.str.encode() + repr(a.shape).encode())
            put(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


def seal(f) -> str:
    """Write the ``checksum`` attribute of the open checkpoint ``f`` (the last step of a
    save); returns it."""
    digest = content_digest(_read_tree(f, _Budget(2**62)))
    f.attrs[CHECKSUM_ATTR] = digest
    return digest


# --- typed reads of the tree ----------------------------------------------------------
def _int(value, where: str, lo: int, hi: int) -> int:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise CheckpointError(f"{where} is {_show(value)}, expected an integer")
    if not lo <= int(value) <= hi:
        raise CheckpointError(f"{where} is {int(value)}, expected {lo}..{hi}")
    return int(value)


def _float(value, where: str, lo: float = -math.inf, hi: float = math.inf,
           allow_nan: bool = False, lo_open: bool = False) -> float:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        raise CheckpointError(f"{where} is {_show(value)}, expected a number")
    x = float(value)
    if math.isnan(x) and allow_nan:
        return x
    if not (math.isfinite(x) and lo <= x <= hi and not (lo_open and x == lo)):
        raise CheckpointError(f"{where} is {x}, expected a finite number in "
                              f"{'(' if lo_open else '['}{lo}, {hi}]")
    return x


def _str(value, where: str) -> str:
    if not isinstance(value, str):
        raise CheckpointError(f"{where} is {_show(value)}, expected a string")
    return value


def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _json(value, where: str, kind: type):
    text = _str(value, where)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(obj, kind):
        raise CheckpointError(f"{where} is JSON {type(obj).__name__}, expected {kind.__name__}")
    return obj


def _node(tree: dict, name: str, group: bool = True) -> dict:
    node = tree.get(name)
    if node is None:
        raise CheckpointError(f"{name} is missing")
    if group != (node["data"] is None):
        raise CheckpointError(f"{name} is a {'dataset' if group else 'group'}, expected a "
                              f"{'group' if group else 'dataset'}")
    return node


def _attr(node: dict, name: str, where: str, default=KeyError):
    if name not in node["attrs"]:
        if default is KeyError:
            raise CheckpointError(f"{where} has no attribute {name!r}")
        return default
    return node["attrs"][name]


def _layers(tree: dict, group: str) -> list[dict]:
    """``[{param: array}]`` of ``group``'s ``layer_NN`` subgroups (float32/float64 only)."""
    keys = _node(tree, group)["children"]
    expected = [layer_name(i) for i in range(len(keys))]
    if keys != expected:
        shown = keys if len(keys) < 8 else keys[:8] + ["..."]
        raise CheckpointError(f"{group}: layer groups {shown}, expected layer_00, layer_01, ...")
    out = []
    for key in keys:
        lname = f"{group}/{key}"
        layer = {}
        for param in _node(tree, lname)["children"]:
            a = _node(tree, f"{lname}/{param}", group=False)["data"]
            if a.dtype not in (np.float32, np.float64):
                raise CheckpointError(f"{lname}/{param} is {a.dtype}; weights and moments are "
                                      "float32 or float64")
            layer[param] = a
        out.append(layer)
    return out


def _check_like(moments: list[dict], weights: list[dict], what: str) -> None:
    """CheckpointError unless ``moments`` have the layers, names, shapes and dtypes of
    ``weights``."""
    if len(moments) != len(weights):
        raise CheckpointError(f"{what} has {len(moments)} layers, the weights "
                              f"{len(weights)}")
    for i, (m, w) in enumerate(zip(moments, weights)):
        if set(m) != set(w):
            raise CheckpointError(f"{what} of layer {i} has parameters {sorted(m)}, "
                                  f"the weights {sorted(w)}")
        for k in w:
            if m[k].shape != w[k].shape or m[k].dtype != w[k].dtype:
                raise CheckpointError(f"{what} of layer {i} {k} is {m[k].dtype} "
                                      f"{m[k].shape}, the weight {w[k].dtype} {w[k].shape}")


def check_optimizer_state(path, optimizer: dict) -> None:
    """CheckpointError naming ``path`` when AdamW's moments are not finite or its second
    moment v is negative (it is a running mean of squares): such a state turns the next
    update into NaN or inf."""
    for moment in ("m", "v"):
        hit = first_nonfinite(optimizer[moment])
        if hit:
            raise CheckpointError(
                f"{path}: optimizer {moment} of layer {hit[0]} parameter {hit[1]} holds "
                f"{hit[2]} non-finite value(s) (NaN or inf: the run diverged)")
    for i, layer in enumerate(optimizer["v"]):
        for name, a in layer.items():
            neg = int(np.count_nonzero(to_numpy(a) < 0))
            if neg:
                raise CheckpointError(f"{path}: optimizer v of layer {i} parameter {name} holds "
                                      f"{neg} negative value(s); v is a mean of squares (>= 0)")


#: The columns every metrics row must have (a metrics.jsonl of older or hand-made runs may
#: lack the timings; a checkpoint's /metrics always holds every column).
METRIC_ROW_REQUIRED = ("epoch", "train_loss", "train_acc", "test_acc")


def check_metric_rows(rows: list[dict], where, required=METRIC_ROW_REQUIRED) -> None:
    """The per-epoch rows of a checkpoint's /metrics or a metrics.jsonl: the columns
    ``required``; epochs 1, 2, ... in order; losses and accuracies finite, accuracies in
    [0, 1]; the timings, where present, >= 0 (NaN: unknown, in older files).
    CheckpointError naming ``where`` and the row otherwise."""
    for i, row in enumerate(rows):
        at = f"{where}: row {i + 1}"
        missing = [k for k in required if k not in row]
        if missing:
            raise CheckpointError(f"{at} lacks {', '.join(missing)}")
        _int(row["epoch"], f"{at} epoch", i + 1, i + 1)
        if "train_loss" in row:
            _float(row["train_loss"], f"{at} train_loss", 0.0)
        for key in ("train_acc", "test_acc"):
            if key in row:
                _float(row[key], f"{at} {key}", 0.0, 1.0)
        for key in ("seconds", "samples_per_s", "eval_seconds"):
            if key in row:
                _float(row[key], f"{at} {key}", 0.0, allow_nan=True)


def _metrics(tree: dict, path) -> list[dict]:
    _node(tree, "/metrics")
    cols = {}
    for key, dtype in METRIC_COLUMNS.items():
        a = _node(tree, f"/metrics/{key}", group=False)["data"]
        kind = "iu" if dtype is np.int64 else "iuf"
        if a.ndim != 1 or a.dtype.kind not in kind:
            raise CheckpointError(f"/metrics/{key} is {a.dtype} {a.shape}, expected a 1-D "
                                  f"{np.dtype(dtype)} column")
        cols[key] = a
    n = {len(c) for c in cols.values()}
    if len(n) != 1:
        raise CheckpointError(f"/metrics columns of different lengths {sorted(n)}")
    n_rows = n.pop()
    rows = [{k: (int(cols[k][i]) if k == "epoch" else float(cols[k][i])) for k in METRIC_COLUMNS}
            for i in range(n_rows)]
    check_metric_rows(rows, "/metrics", tuple(METRIC_COLUMNS))
    for key in LAYER_METRIC_COLUMNS:                    # optional: (epoch, layer), NaN rows: none
        if f"/metrics/{key}" not in tree:
            continue
        a = _node(tree, f"/metrics/{key}", group=False)["data"]
        if a.ndim != 2 or a.shape[0] != n_rows or a.dtype.kind != "f":
            raise CheckpointError(f"/metrics/{key} is {a.dtype} {a.shape}, expected a float "
                                  f"({n_rows}, layers) table")
        for i, values in enumerate(a):
            if np.all(np.isnan(values)):
                continue
            limit = 1.0 if key == "test_silent" else None
            if not np.all(np.isfinite(values)) or np.any(values < 0) \
                    or (limit is not None and np.any(values > limit)):
                raise CheckpointError(f"/metrics/{key} row {i + 1} holds {values.tolist()}, expected "
                                      f"finite values >= 0{' and <= 1' if limit else ''}")
            rows[i][key] = [float(v) for v in values]
    return rows


def _check_config(config: dict) -> None:
    """The stored config: a flat JSON object of scalars (lists of numbers: ``betas``),
    then :meth:`TrainConfig.from_dict`'s checks."""
    from .builder import ConfigError
    from .config import TrainConfig
    for key, value in config.items():
        flat = value is None or isinstance(value, (str, int, float, bool))
        if isinstance(value, list) and len(value) <= 16:
            flat = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        if not flat:
            raise CheckpointError(f"config attribute: {key!r} is {_show(value)}, not a value")
    try:
        TrainConfig.from_dict(config, source="config attribute")
    except (ConfigError, ValueError, TypeError, OverflowError) as exc:
        raise CheckpointError(str(exc)) from None


def _rng_state(tree: dict) -> dict:
    rg = _node(tree, "/rng")
    name = _str(_attr(rg, "bit_generator", "/rng"), "/rng attribute bit_generator")
    if name not in BIT_GENERATORS:
        raise CheckpointError(f"/rng names the bit generator {name[:40]!r}; NumPy's are "
                              f"{', '.join(BIT_GENERATORS)}")
    state = _json(_attr(rg, "state", "/rng"), "/rng attribute state", dict)
    if state.get("bit_generator") != name:
        raise CheckpointError(f"/rng state is of {str(state.get('bit_generator'))[:40]!r}, "
                              f"its attribute says {name!r}")
    restore_rng(state)
    return state


def _optimizer(tree: dict, weights: list[dict]) -> dict:
    og = _node(tree, "/optimizer")
    betas = np.asarray(_attr(og, "betas", "/optimizer"))
    if betas.shape != (2,) or betas.dtype.kind not in "iuf":
        raise CheckpointError(f"/optimizer attribute betas is {_show(betas)}, expected 2 numbers")
    opt = {
        "name": _str(_attr(og, "name", "/optimizer"), "/optimizer attribute name"),
        "step": _int(_attr(og, "step", "/optimizer"), "/optimizer attribute step", 0, MAX_STEP),
        "lr": _float(_attr(og, "lr", "/optimizer"), "/optimizer attribute lr", 0.0),
        "betas": [_float(b, "/optimizer attribute betas", 0.0, 1.0) for b in betas],
        "eps": _float(_attr(og, "eps", "/optimizer"), "/optimizer attribute eps", 0.0,
                      lo_open=True),
        "weight_decay": _float(_attr(og, "weight_decay", "/optimizer"),
                               "/optimizer attribute weight_decay", 0.0),
        "m": _layers(tree, "/optimizer/m"),
        "v": _layers(tree, "/optimizer/v"),
    }
    if opt["name"] != "adamw":
        raise CheckpointError(f"/optimizer is {opt['name'][:40]!r}; snnsim saves AdamW ('adamw')")
    if any(b >= 1.0 for b in opt["betas"]):
        raise CheckpointError(f"/optimizer attribute betas {opt['betas']}: each must be below 1")
    for moment in ("m", "v"):
        _check_like(opt[moment], weights, f"optimizer {moment}")
    return opt


def _partial(tree: dict, config: dict) -> dict:
    """/partial: the epoch so far of a run stopped inside it, checked against the config
    (the sample order a permutation of the training samples, the batches done within the
    epoch's batches, the counts within the samples)."""
    pg = _node(tree, "/partial")
    order = _node(tree, "/partial/order", group=False)["data"]
    norms = _node(tree, "/partial/grad_norms", group=False)["data"]
    n = order.shape[0] if order.ndim == 1 else -1
    if (order.ndim != 1 or order.dtype.kind not in "iu" or n < 1
            or not np.array_equal(np.sort(order), np.arange(n))):
        raise CheckpointError(f"/partial/order is not a permutation of 0..n-1 "
                              f"({order.dtype}, shape {order.shape})")
    subset = config.get("train_subset")
    if isinstance(subset, int) and subset > 0 and n > subset:
        raise CheckpointError(f"/partial/order orders {n} samples; the config's train_subset "
                              f"is {subset}")
    batch = config.get("batch_size")
    per_epoch = -(-n // batch) if isinstance(batch, int) and batch > 0 else n
    out = {"order": order.astype(np.int64)}
    out["batches_done"] = _int(_attr(pg, "batches_done", "/partial"),
                               "/partial attribute batches_done", 1, per_epoch)
    out["samples_seen"] = _int(_attr(pg, "samples_seen", "/partial"),
                               "/partial attribute samples_seen", 1, n)
    out["correct"] = _int(_attr(pg, "correct", "/partial"), "/partial attribute correct", 0,
                          out["samples_seen"])
    out["loss_sum"] = _float(_attr(pg, "loss_sum", "/partial"), "/partial attribute loss_sum")
    out["train_seconds"] = _float(_attr(pg, "train_seconds", "/partial"),
                                  "/partial attribute train_seconds", 0.0)
    out["base_checksum"] = _str(_attr(pg, "base_checksum", "/partial"),
                                "/partial attribute base_checksum")
    if (norms.ndim != 1 or norms.dtype != np.float64 or norms.shape[0] > out["batches_done"]
            or not np.all(np.isfinite(norms))):
        raise CheckpointError(f"/partial/grad_norms is {norms.dtype} of shape {norms.shape}; "
                              f"expected at most {out['batches_done']} finite float64 values")
    out["grad_norms"] = norms
    return out


def _parse(tree: dict, path: Path) -> dict:
    """The checkpoint dict of :func:`load_checkpoint` from the file's tree, every part
    checked (raises CheckpointError without the file's name; the caller adds it)."""
    root = tree["/"]
    weights = _layers(tree, "/weights")
    dtypes = {a.dtype for layer in weights for a in layer.values()}
    if len(dtypes) > 1:
        raise CheckpointError(f"weights of mixed dtypes {sorted(map(str, dtypes))}")
    config = _json(_attr(root, "config", "/"), "attribute config", dict)
    _check_config(config)
    metrics = _metrics(tree, path)
    epochs_cfg = config.get("epochs", MAX_EPOCH)
    epoch = _int(_attr(root, "epoch", "/"), "attribute epoch", 0,
                 min(MAX_EPOCH, epochs_cfg) if isinstance(epochs_cfg, int) else MAX_EPOCH)
    if metrics and len(metrics) != epoch:
        raise CheckpointError(f"attribute epoch is {epoch}, but /metrics holds {len(metrics)} "
                              "epochs")
    best_epoch = _int(_attr(root, "best_epoch", "/"), "attribute best_epoch", -1, epoch)
    best_acc = _float(_attr(root, "best_test_acc", "/"), "attribute best_test_acc", 0.0, 1.0,
                      allow_nan=True)
    if metrics:
        accs = [row["test_acc"] for row in metrics]
        best = int(np.argmax(accs))
        if best_epoch != best + 1 or best_acc != accs[best]:
            raise CheckpointError(f"attributes best_epoch {best_epoch}, best_test_acc {best_acc} "
                                  f"disagree with /metrics (best: epoch {best + 1}, "
                                  f"{accs[best]})")
    data_files = _json(_attr(root, "data_files", "/", "[]"), "attribute data_files", list)
    for d in data_files:
        digest = d.get("sha256", d.get("sha256_of_listing", "")) if isinstance(d, dict) else 0
        if not (isinstance(d, dict) and isinstance(d.get("split"), str)
                and isinstance(d.get("path"), str) and isinstance(digest, str)):
            raise CheckpointError(f"attribute data_files: {str(d)[:60]} is not a record of a "
                                  "data file (split, path, sha256)")
    return {
        "path": str(path),
        "epoch": epoch,
        "partial": _partial(tree, config) if "/partial" in tree else None,
        "config": config,
        "network": _str(_attr(root, "network", "/"), "attribute network"),
        "snnsim_version": _str(_attr(root, "snnsim_version", "/"), "attribute snnsim_version"),
        "git_commit": _str(_attr(root, "git_commit", "/"), "attribute git_commit"),
        "source": _str(_attr(root, "source", "/", ""), "attribute source"),
        "created": _str(_attr(root, "created", "/"), "attribute created"),
        "best_test_acc": best_acc,
        "best_epoch": best_epoch,
        "weights": weights,
        "optimizer": _optimizer(tree, weights),
        "rng_state": _rng_state(tree),
        "metrics": metrics,
        "data_files": data_files,
    }


def load_checkpoint(path, allow_nonfinite: bool | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, every part checked first.

    Returns a dict: ``epoch``, ``config`` (dict), ``weights`` (list of dicts of
    NumPy arrays), ``optimizer`` (like ``AdamW.state_dict()``), ``rng_state``,
    ``metrics`` (list of per-epoch dicts), ``snnsim_version``, ``git_commit``,
    ``source``, ``created``, ``network``, ``best_test_acc``, ``best_epoch``, ``data_files``
    (the dataset files the run read: path, bytes, sha256; [] for older files),
    ``path``, ``checksum`` (the file's, "" for version 1) and ``partial`` (None, or the
    epoch so far of a run stopped inside it: ``interrupted.h5``).

    Raises :class:`CheckpointError`, one line naming the file and what is wrong, when
    it is missing or not a regular file; not HDF5, truncated or corrupt; not an snnsim
    checkpoint of a version this snnsim reads; when its content does not match its
    ``checksum`` (version 2); when a part breaks the layout of
    ``docs/checkpoint_format.md`` (a link, a dataset that declares more bytes than the
    file holds, weights that are not float32/float64, moments unlike the weights,
    attributes of the wrong type or out of range, a config that is not a valid flat
    config, an rng state NumPy cannot restore, metrics that are not epochs 1..epoch
    with finite losses and accuracies in [0, 1]); and when a weight or an optimizer
    moment is NaN or inf or v is negative, unless ``allow_nonfinite`` (None: the
    setting of :func:`allow_nonfinite_weights`, default False).
    """
    path = regular_file(path, "checkpoint")
    if allow_nonfinite is None:
        allow_nonfinite = _ALLOW_NONFINITE.get()
    try:
        f = h5py.File(path, "r")
    except Exception as exc:       # h5py raises OSError, and others on corrupt superblocks
        raise CheckpointError(f"{path}: not a readable HDF5 file (corrupt or truncated "
                              f"checkpoint?): {error_text(exc)}") from None
    try:
        with f:
            budget = _Budget(path.stat().st_size)
            header = types.SimpleNamespace(attrs=_read_attrs(f, budget))   # sizes bounded
            check_header(header, path, FORMAT_NAME, READABLE_VERSIONS, "checkpoint",
                         CheckpointError)
            version = int(header.attrs["format_version"])
            tree = _read_tree(f, budget)
    except CheckpointError as exc:
        raise _naming(exc, path) from None
    except Exception as exc:       # any error of h5py on a damaged file: one line
        raise CheckpointError(f"{path}: damaged snnsim checkpoint ({type(exc).__name__}: "
                              f"{error_text(exc)})") from None
    try:
        stored = tree["/"]["attrs"].get(CHECKSUM_ATTR)
        if version >= 2 or stored is not None:
            if stored != content_digest(tree):
                raise CheckpointError(
                    "damaged snnsim checkpoint: its content does not match its checksum "
                    f"attribute{'' if stored is not None else ' (missing)'} (a changed bit "
                    "on disk or in a copy)")
        out = _parse(tree, path)
        out["checksum"] = stored if isinstance(stored, str) else ""
        if not allow_nonfinite:
            check_finite_weights(path, out["weights"])
            check_optimizer_state(path, out["optimizer"])
    except CheckpointError as exc:
        raise _naming(exc, path) from None
    return out


def _naming(exc: CheckpointError, path) -> CheckpointError:
    """``exc`` with ``path`` in front, unless it already names it."""
    text = str(exc)
    return exc if text.startswith(str(path)) else CheckpointError(f"{path}: {text}")


def error_text(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:200]


def checkpoint_epoch(path) -> int:
    """The ``epoch`` attribute of a checkpoint, without reading its arrays (not checked
    against its checksum: :func:`load_checkpoint` does that)."""
    attrs = read_root_attrs(path)
    if attrs.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an snnsim checkpoint")
    try:
        return _int(attrs.get("epoch"), "attribute epoch", 0, MAX_EPOCH)
    except CheckpointError as exc:
        raise _naming(exc, path) from None


def kept_batches(interrupted, checkpoint=None) -> int | None:
    """How many batches of the next epoch ``interrupted`` (an ``interrupted.h5``) keeps,
    read from its attributes alone, when it continues ``checkpoint`` (same epoch, its
    checksum as base; with no checkpoint, a run stopped in its first epoch); else None,
    also when either file cannot be read. What a log line may say before the run itself
    loads both with every check (``--resume`` passes over one that does not continue)."""
    try:
        path = regular_file(interrupted, "checkpoint")
        with h5py.File(path, "r") as f:
            budget = _Budget(path.stat().st_size)
            root = _read_attrs(f, budget)
            part = _read_attrs(f["partial"], budget) if "partial" in f else None
        if part is None or root.get("format") != FORMAT_NAME:
            return None
        base = read_root_attrs(checkpoint) if checkpoint is not None else {"epoch": 0}
        if checkpoint is not None and base.get("format") != FORMAT_NAME:
            return None
        if (_int(root.get("epoch"), "attribute epoch", 0, MAX_EPOCH)
                != _int(base.get("epoch"), "attribute epoch", 0, MAX_EPOCH)):
            return None
        if (_str(part.get("base_checksum"), "/partial attribute base_checksum")
                != _str(base.get(CHECKSUM_ATTR, ""), "attribute checksum")):
            return None
        return _int(part.get("batches_done"), "/partial attribute batches_done", 1, 2**53)
    except Exception:             # a log line's detail: any unreadable file gives None
        return None


def read_root_attrs(path) -> dict:
    """The root attributes of an HDF5 file (strings and numbers), sizes bounded, nothing
    else read: what a table needs of a checkpoint (``git_commit``, ``source``) without
    loading it. CheckpointError naming the file when it cannot be read."""
    path = regular_file(path, "checkpoint")
    try:
        with h5py.File(path, "r") as f:
            return _read_attrs(f, _Budget(path.stat().st_size))
    except CheckpointError as exc:
        raise _naming(exc, path) from None
    except Exception as exc:      # any error of h5py on a damaged file
        raise CheckpointError(f"{path}: not a readable HDF5 file: {error_text(exc)}") from None


def restore_rng(rng_state: dict) -> np.random.Generator:
    """A ``np.random.Generator`` in exactly the saved state (CheckpointError when NumPy
    cannot restore it)."""
    name = rng_state.get("bit_generator") if isinstance(rng_state, dict) else None
    bit_gen_cls = getattr(np.random, name, None) if name in BIT_GENERATORS else None
    if bit_gen_cls is None:
        raise CheckpointError(f"unknown bit generator {str(name)[:40]!r} in checkpoint")
    bg = bit_gen_cls()
    try:
        bg.state = rng_state
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise CheckpointError(f"rng state: NumPy's {name} refuses it ({error_text(exc)})") \
            from None
    return np.random.Generator(bg)


def match_network(path, weights: list[dict], params: list[dict]) -> None:
    """CheckpointError naming ``path`` unless the checkpoint's ``weights`` have the
    layers, parameter names and shapes of the network's ``params`` (the network its
    config builds)."""
    if len(weights) != len(params):
        raise CheckpointError(f"{path}: the checkpoint has {len(weights)} layers, the network "
                              f"of its config {len(params)}")
    for i, (saved, live) in enumerate(zip(weights, params)):
        if set(saved) != set(live):
            raise CheckpointError(f"{path}: layer {i} has parameters {sorted(saved)}, the "
                                  f"network of its config {sorted(live)}")
        for name, p in live.items():
            if tuple(saved[name].shape) != tuple(p.shape):
                raise CheckpointError(f"{path}: layer {i} {name} has shape "
                                      f"{tuple(saved[name].shape)}, the network of its config "
                                      f"{tuple(p.shape)}")


__all__ = ["BIT_GENERATORS", "CHECKSUM_ATTR", "CheckpointError", "FORMAT_NAME", "FORMAT_VERSION",
           "MAX_EPOCH", "METRIC_COLUMNS", "METRIC_ROW_REQUIRED", "PARTIAL_ATTRS", "READABLE_VERSIONS",
           "TMP_SUFFIX",
           "allow_nonfinite_weights", "atomic_copy", "atomic_write", "atomic_write_h5",
           "check_finite_weights", "check_metric_rows", "check_optimizer_state",
           "checkpoint_epoch", "content_digest", "error_text", "first_nonfinite",
           "load_checkpoint", "match_network", "naming_destination", "read_root_attrs", "regular_file",
           "restore_rng", "save_checkpoint", "seal", "temporary_name"]
