"""Fuzzing the readers of data files and configs (issue 24; hypothesis).

Mutations of valid files are fed to the code that reads them: IDX files (raw and
gzipped: bytes flipped, set, cut, inserted; header dimensions, dtype code and number
of dimensions replaced), CIFAR-10 batch pickles (built with wrong types, shapes and
nested or shared label lists, and their bytes mutated), N-MNIST event files (any
bytes), flat configs (YAML or JSON with any keys and values, also two spellings of a
key) and authors' YAMLs (a Network: or layer value replaced, a key removed or
added). The outcome must be:

- a correct result, checked against an oracle written here (an independent IDX
  parser and N-MNIST decoder; for a CIFAR batch the invariants of its arrays; for a
  config, every field of its declared type and equal to the value the file gave), or
- the reader's own error (DatasetError / ConfigError), one line naming the file;

never another exception (a traceback), a hang, a crash or a silently wrong result.
Every example runs in a forked child under a time limit (:data:`TIME_LIMIT_S`) and a
memory limit (:data:`MEMORY_LIMIT`, address space above what the child starts with).
A few examples go through the training command itself (``python3 -m snnsim.train``
in a child process under the same limits): exit 0, or 2 with one line.

Examples per test: :data:`EXAMPLES` (CI) or the environment variable
``SNNSIM_FUZZ_EXAMPLES``; the count that ran is printed at the end of the module.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import pickle
import re
import resource
import select
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import procs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train import idx_bytes, synthetic_images, tiny_args, write_fashion_mnist

from snnsim.datasets.errors import DatasetError
from snnsim.training.builder import ConfigError, find_config_file

REPO = Path(__file__).resolve().parents[1]
#: Examples per reader test in CI; ``SNNSIM_FUZZ_EXAMPLES`` sets another number.
EXAMPLES = int(os.environ.get("SNNSIM_FUZZ_EXAMPLES", "40"))
#: Examples that run the training command (a process start each, ~1.5 s).
COMMAND_EXAMPLES = max(2, EXAMPLES // 20)
TIME_LIMIT_S = 20
MEMORY_LIMIT = 1 << 30
RAN: Counter = Counter()


def fuzz_settings(n: int = EXAMPLES):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def _report_examples(request):
    yield
    line = "fuzz examples run: " + ", ".join(f"{k} {v}" for k, v in sorted(RAN.items())) \
        + f" (SNNSIM_FUZZ_EXAMPLES={EXAMPLES})"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}", flush=True)


# --- running one example under limits ---------------------------------------------------------
def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def limited(fn, *args):
    """``fn(*args)`` in a forked child with :data:`TIME_LIMIT_S` seconds and
    :data:`MEMORY_LIMIT` bytes of address space beyond its start; returns
    ``("ok", value)``, ``("error", exception type name, message)`` for DatasetError and
    ConfigError, and fails the test on any other exception (with its traceback), a
    crash or a time-out."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # the child
        os.close(read_end)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + MEMORY_LIMIT,) * 2)
            try:
                out = ("ok", fn(*args))
            except (DatasetError, ConfigError) as exc:
                out = ("error", type(exc).__name__, str(exc))
            except BaseException:
                out = ("exception", traceback.format_exc())
            data = pickle.dumps(out)
            with os.fdopen(write_end, "wb") as w:
                w.write(data)
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + TIME_LIMIT_S
    with os.fdopen(read_end, "rb") as r:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"{fn.__name__}{args!r:.200}: no result in {TIME_LIMIT_S} s (hung)")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"{fn.__name__}: the child crashed (wait status {status})")
    out = pickle.loads(b"".join(chunks))
    if out[0] == "exception":
        pytest.fail(f"{fn.__name__}: an exception other than the reader's own:\n{out[1]}")
    if out[0] == "error":
        assert out[2].strip(), "an error without a message"
    return out


# --- mutations of bytes -------------------------------------------------------------------
def mutation():
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
        st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
        st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=9)),
        st.tuples(st.just("drop"), st.integers(0, 1 << 20), st.integers(1, 16)),
    )


def mutate(data: bytes, steps) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in steps:
        pos = pos % (len(buf) + 1)
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= arg
        elif kind == "set" and pos < len(buf):
            buf[pos] = arg
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = arg
        elif kind == "drop":
            del buf[pos:pos + arg]
    return bytes(buf)


# --- IDX ----------------------------------------------------------------------------------
IDX_ITEM = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def oracle_idx(raw: bytes):
    """The IDX format read independently of snnsim: the array, or None (malformed)."""
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_ITEM or raw[3] == 0:
        return None
    nd = raw[3]
    if len(raw) < 4 + 4 * nd:
        return None
    dims = struct.unpack(f">{nd}I", raw[4:4 + 4 * nd])
    item = np.dtype(IDX_ITEM[raw[2]])
    if len(raw) != 4 + 4 * nd + math.prod(dims) * item.itemsize or nd > 32:
        return None
    return np.frombuffer(raw, item, offset=4 + 4 * nd).reshape(dims)


def idx_header_change():
    return st.one_of(
        st.none(),
        st.tuples(st.just("dims"), st.lists(st.sampled_from([0, 1, 2, 28, 60, 0xFFFF, 0x7FFFFFFF,
                                                              0xFFFFFFFF]), min_size=1,
                                            max_size=4)),
        st.tuples(st.just("code"), st.integers(0, 255)),
        st.tuples(st.just("ndim"), st.integers(0, 255)),
    )


def apply_header(raw: bytes, change) -> bytes:
    if change is None:
        return raw
    kind, value = change
    if kind == "dims":
        nd = raw[3]
        dims = (value * nd)[:nd]
        return raw[:4] + struct.pack(f">{nd}I", *dims) + raw[4 + 4 * nd:]
    if kind == "code":
        return raw[:2] + bytes([value]) + raw[3:]
    return raw[:3] + bytes([value]) + raw[4:]


def read_idx_summary(path):
    from snnsim.datasets.idx import read_idx
    a = read_idx(path)
    return a.dtype.str, a.shape, a.tobytes()


@fuzz_settings()
@given(n=st.integers(1, 4), labels=st.booleans(), header=idx_header_change(),
       steps=st.lists(mutation(), max_size=3), gz=st.booleans(), mutate_gz=st.booleans())
def test_fuzz_idx(tmp_path_factory, n, labels, header, steps, gz, mutate_gz):
    images, lab = synthetic_images(n, np.random.default_rng(n))
    raw = apply_header(idx_bytes(lab if labels else images), header)
    raw = raw if (gz and mutate_gz) else mutate(raw, steps)
    data = gzip.compress(raw, mtime=0) if gz else raw
    if gz and mutate_gz:
        data = mutate(data, steps)
    path = tmp_path_factory.mktemp("idx") / ("x-idx" + (".gz" if gz else ""))
    path.write_bytes(data)
    out = limited(read_idx_summary, path)
    RAN["idx"] += 1
    try:
        content = gzip.decompress(data) if gz else data
    except (OSError, EOFError, ValueError, Exception):
        content = None
    expected = oracle_idx(content) if content is not None else None
    if out[0] == "ok":
        assert expected is not None, "accepted a file the oracle refuses"
        dtype, shape, payload = out[1]
        assert shape == expected.shape
        assert np.array_equal(np.frombuffer(payload, np.dtype(dtype)).reshape(shape),
                              expected.astype(np.dtype(dtype)), equal_nan=True)
    else:
        assert str(path) in out[2]
        if expected is not None and expected.ndim <= 32:
            # a gzip stream with trailing garbage after a complete member: refused, as
            # corrupt, is the only case where the oracle's decompress is more lenient
            assert gz, f"refused a valid file: {out[2]}"


# --- CIFAR-10 -----------------------------------------------------------------------------
def label_values():
    leaf = st.one_of(st.integers(-3, 12), st.booleans(), st.floats(allow_nan=True),
                     st.integers(min_value=2**62, max_value=2**70), st.text(max_size=3),
                     st.none())
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@st.composite
def cifar_batch(draw):
    n = draw(st.integers(0, 4))
    kind = draw(st.sampled_from(["array", "bytes", "list", "wrong_shape", "wrong_dtype"]))
    data = np.arange(n * 3072, dtype=np.uint8).reshape(n, 3072)
    if kind == "bytes":
        data = data.tobytes()
    elif kind == "list":
        data = data.tolist()
    elif kind == "wrong_shape":
        data = data.reshape(-1)[: n * 3071]
    elif kind == "wrong_dtype":
        data = data.astype(draw(st.sampled_from([np.int16, np.float32, np.int64])))
    labels_kind = draw(st.sampled_from(["good", "values", "nested", "shared", "array"]))
    if labels_kind == "good":
        labels = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    elif labels_kind == "values":
        labels = draw(st.lists(label_values(), min_size=n, max_size=n + 1))
    elif labels_kind == "nested":
        labels = draw(label_values())
    elif labels_kind == "shared":              # few bytes, fan_out**levels labels
        labels = [0] * 10
        for _ in range(draw(st.integers(1, 7))):
            labels = [labels] * 10
    else:
        labels = np.asarray(draw(st.lists(st.integers(-2, 12), min_size=n, max_size=n)),
                            dtype=np.int64)
        labels = labels.astype(draw(st.sampled_from([np.int64, np.uint8, np.float64])))
    keys = draw(st.sampled_from([(b"data", b"labels"), ("data", "labels"), (b"data", b"label")]))
    batch = {keys[0]: data, keys[1]: labels, b"batch_label": b"fuzz"}
    return pickle.dumps(batch, protocol=draw(st.sampled_from([2, 4, 5])))


def read_cifar_summary(path):
    from snnsim.datasets.cifar import read_cifar_batch
    images, labels = read_cifar_batch(path)
    return images.dtype.str, images.shape, labels.dtype.str, labels.tolist()


@fuzz_settings()
@given(blob=cifar_batch(), steps=st.lists(mutation(), max_size=2))
def test_fuzz_cifar_batch(tmp_path_factory, blob, steps):
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(mutate(blob, steps))
    t0 = time.monotonic()
    out = limited(read_cifar_summary, path)
    RAN["cifar"] += 1
    assert time.monotonic() - t0 < 5, "a refusal or a read took seconds"
    if out[0] == "ok":
        images_dtype, shape, labels_dtype, labels = out[1]
        assert np.dtype(images_dtype) == np.uint8 and shape[1:] == (3, 32, 32)
        assert np.dtype(labels_dtype) == np.int64 and len(labels) == shape[0]
        assert all(type(v) is int and 0 <= v <= 9 for v in labels)
    else:
        assert str(path) in out[2]


# --- N-MNIST ------------------------------------------------------------------------------
def oracle_events(buf: bytes):
    if len(buf) % 5:
        return None
    rows = [buf[i:i + 5] for i in range(0, len(buf), 5)]
    if any(r[0] >= 34 or r[1] >= 34 for r in rows):
        return None
    return [(r[0], r[1], r[2] >> 7, (r[2] & 0x7F) << 16 | r[3] << 8 | r[4]) for r in rows]


def read_events_summary(path):
    from snnsim.datasets.nmnist import bin_events, read_nmnist_events
    ev = read_nmnist_events(path)
    frames = bin_events(ev, 4, 3000)
    return [tuple(int(v) for v in e) for e in ev.tolist()], int(frames.sum())


@fuzz_settings()
@given(events=st.lists(st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, 1),
                                 st.integers(0, (1 << 23) - 1)), max_size=6),
       steps=st.lists(mutation(), max_size=3))
def test_fuzz_nmnist_events(tmp_path_factory, events, steps):
    from snnsim.datasets.nmnist import encode_nmnist_events
    cols = list(zip(*events)) if events else [(), (), (), ()]
    ev = {k: np.asarray(c, dtype=np.int64) for k, c in zip(("x", "y", "p", "ts"), cols)}
    buf = mutate(encode_nmnist_events(ev), steps)
    path = tmp_path_factory.mktemp("nmnist") / "00001.bin"
    path.write_bytes(buf)
    out = limited(read_events_summary, path)
    RAN["nmnist"] += 1
    expected = oracle_events(buf)
    if out[0] == "ok":
        assert expected is not None and out[1][0] == expected
        in_window = {(p, y, x, ts // 3000) for x, y, p, ts in expected if ts < 4 * 3000}
        assert out[1][1] == len(in_window)
    else:
        assert expected is None, f"refused a valid file: {out[2]}"
        assert str(path) in out[2]


# --- configs ------------------------------------------------------------------------------
def any_value():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
                     st.integers(min_value=-(2**80), max_value=2**80),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.sampled_from(["5e-4", "abc", "none", "true", "784-10", "1,2", "0.9,0.99"]))
    return st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=4),
                                                                      inner, max_size=2)),
                        max_leaves=6)


def field_keys():
    from snnsim.training.config import field_names
    names = field_names()
    return st.one_of(st.sampled_from(names), st.sampled_from([n.replace("_", "-") for n in names]),
                     st.text(max_size=6))


def check_config(path):
    """Read the config and build its network's layers (no weights) and its memory check;
    the config's fields as a dict."""
    from snnsim.training import memory
    from snnsim.training import train as train_mod
    from snnsim.training.config import load_config_file
    cfg = load_config_file(str(path))
    shape = (1, 28, 28) if cfg.dataset in ("mnist", "fashion-mnist") else None
    if shape is not None:
        memory.check_fits(cfg, train_mod.build_layers(cfg, shape), shape)
    return cfg.to_dict()


def _base_type(key):
    import typing

    from snnsim.training.config import field_types
    tp = field_types()[key]
    if typing.get_origin(tp) is tuple:
        return tuple, False
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (args[0] if args else tp), type(None) in typing.get_args(tp)


def assert_typed(fields: dict):
    for key, value in fields.items():
        base, optional = _base_type(key)
        if value is None:
            assert optional, key
        elif base is tuple:
            assert all(type(v) is float and math.isfinite(v) for v in value), (key, value)
        elif base is float:
            assert type(value) is float and math.isfinite(value), (key, value)
        elif base is int:
            assert type(value) is int, (key, value)
        elif base is bool:
            assert type(value) is bool, (key, value)
        elif base is str:
            assert type(value) is str, (key, value)


@fuzz_settings()
@given(doc=st.dictionaries(field_keys(), any_value(), max_size=4), as_json=st.booleans(),
       steps=st.lists(mutation(), max_size=1))
def test_fuzz_flat_config(tmp_path_factory, doc, as_json, steps):
    path = tmp_path_factory.mktemp("cfg") / ("c.json" if as_json else "c.yaml")
    text = json.dumps(doc) if as_json else yaml.safe_dump(doc)
    path.write_bytes(mutate(text.encode(), steps))
    out = limited(check_config, path)
    RAN["flat config"] += 1
    if out[0] == "error":
        assert str(path) in out[2] or "network" in out[2], out[2]
        return
    fields = out[1]
    assert_typed(fields)
    if steps:
        return
    from snnsim.training.config import normalize_key
    for key, value in doc.items():       # what the file said, taken as it said it
        name = normalize_key(key)
        base, _ = _base_type(name)
        if name != "out" and type(value) is base and base is not str:
            assert fields[name] == value or (name in ("grad_clip", "weight_clamp")
                                             and value == 0 and fields[name] is None), (key, value)
        assert not (isinstance(value, bool) and base in (int, float)), (key, value)


AUTHORS = yaml.safe_load(find_config_file("fashion_mnist_mlp").read_text())   # package data


@st.composite
def authors_doc(draw):
    doc = json.loads(json.dumps(AUTHORS))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["network", "layer", "drop", "top"]))
        if where != "top" and not (isinstance(doc["Network"], dict)
                                   and isinstance(doc["Layers"], dict) and doc["Layers"]):
            continue                     # a section replaced by an earlier step
        if where == "network":
            doc["Network"][draw(st.sampled_from(sorted(doc["Network"]) + ["extra"]))] = \
                draw(any_value())
        elif where == "layer":
            layer = doc["Layers"][draw(st.sampled_from(sorted(doc["Layers"])))]
            if isinstance(layer, dict):
                layer[draw(st.sampled_from(["type", "n_inputs", "n_outputs", "weight_scale",
                                            "threshold", "p", "kernel_size"]))] = draw(any_value())
        elif where == "drop":
            section = draw(st.sampled_from(["Network", "Layers"]))
            if doc[section]:
                doc[section].pop(draw(st.sampled_from(sorted(doc[section]))))
        else:
            doc[draw(st.sampled_from(["Network", "Layers"]))] = draw(any_value())
    return doc


@fuzz_settings()
@given(doc=authors_doc())
def test_fuzz_authors_yaml(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("authors") / "authors.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = limited(check_config, path)
    RAN["authors yaml"] += 1
    if out[0] == "error":
        assert str(path) in out[2], out[2]
        return
    assert_typed(out[1])
    net = doc["Network"]
    for key in ("lr", "tau_m", "tau_s"):        # numbers, never a bool or a list taken
        assert not isinstance(net.get(key), (bool, list, dict)), (key, net.get(key))


# --- the training command on mutated files ------------------------------------------------
def _limit_child():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def train_command(data_dir, out, *extra, network="784-24-10") -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    proc = procs.run([sys.executable, "-m", "snnsim.train",
                      *tiny_args(data_dir, out, *extra, network=network)],
                     120, cwd=REPO, env=env, preexec_fn=_limit_child)
    return proc.returncode, proc.stderr


def assert_command_outcome(code: int, err: str):
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 2:
        last = err.strip().splitlines()[-1]         # "snnsim.train: error: ..." or, from the
        assert re.match(r"(\S*python3 -m )?snnsim\.train: error: ", last), last   # parser, its prog


@fuzz_settings(COMMAND_EXAMPLES)
@given(which=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
       header=idx_header_change(), steps=st.lists(mutation(), max_size=2))
def test_fuzz_train_command_on_mutated_idx(tmp_path_factory, which, header, steps):
    root = write_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=20, n_test=10)
    path = root / "fashion-mnist" / (which + ".gz")
    raw = apply_header(gzip.decompress(path.read_bytes()), header)
    path.write_bytes(gzip.compress(mutate(raw, steps)))
    code, err = train_command(root, tmp_path_factory.mktemp("run") / "r")
    RAN["train command, IDX"] += 1
    assert_command_outcome(code, err)


@fuzz_settings(COMMAND_EXAMPLES)
@given(doc=st.dictionaries(field_keys(), any_value(), min_size=1, max_size=3))
def test_fuzz_train_command_on_a_flat_config(tmp_path_factory, doc):
    data = tmp_path_factory.mktemp("data")
    write_fashion_mnist(data, n_train=20, n_test=10)
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in doc.items()
                                    if k not in ("out", "data_dir", "data-dir")}))
    code, err = train_command(data, tmp_path_factory.mktemp("run") / "r", "--config", str(path))
    RAN["train command, config"] += 1
    assert_command_outcome(code, err)


@fuzz_settings(COMMAND_EXAMPLES)
@given(dataset=st.sampled_from(["cifar10", "nmnist"]), blob=cifar_batch(),
       steps=st.lists(mutation(), min_size=1, max_size=3))
def test_fuzz_train_command_on_mutated_cifar_and_nmnist(tmp_path_factory, dataset, blob, steps):
    """One file of a tiny CIFAR-10 or N-MNIST copy replaced by a mutated one."""
    from test_train import write_cifar10, write_nmnist
    root = tmp_path_factory.mktemp("data")
    if dataset == "cifar10":
        write_cifar10(root)
        target, network = root / "cifar10" / "cifar-10-batches-py" / "data_batch_2", "3072-10"
        target.write_bytes(mutate(blob, steps))
    else:
        write_nmnist(root)
        target, network = root / "nmnist" / "Test" / "3" / "00000.bin", "2312-10"
        target.write_bytes(mutate(target.read_bytes(), steps))
    code, err = train_command(root, tmp_path_factory.mktemp("run") / "r",
                              f"--dataset={dataset}", network=network)
    RAN[f"train command, {dataset}"] += 1
    assert_command_outcome(code, err)
