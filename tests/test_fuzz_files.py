"""Fuzzing the files snnsim reads back (issue 24): mutations of a valid checkpoint,
of the interrupted.h5 of a run stopped inside an epoch, of run.json and metrics.jsonl,
fed to every command that reads them (train --resume, record, plots, inspection, and
the readers themselves).

The outcome must be a correct result or exit status 2 with one line naming the file:
never a traceback, a hang, a crash or a silently wrong result. "Correct" for a
checkpoint: a file accepted after a mutation that was not re-sealed (its checksum not
renewed) holds exactly the original's content (the mutation touched no content); one
accepted after a re-sealed mutation passes every check, and the commands run on it.

Limits: each in-process call runs under a watchdog (:data:`CALL_LIMIT_S`; a hang dumps
the stacks and ends the run) and may not raise the process's peak memory by more than
:data:`MEMORY_LIMIT_BYTES`; raw byte damage (bit flips in HDF5's own structures,
truncation: a damaged HDF5 file may crash the library) runs in a subprocess
(tests/fuzz_worker.py) under RLIMIT_AS and a time limit.

Examples: a bounded number in CI (``DEFAULT_EXAMPLES`` per test, about 40 s in all on
one core); ``SNNSIM_FUZZ_EXAMPLES=N`` runs N examples per test (each test prints how
many ran)::

    SNNSIM_FUZZ_EXAMPLES=500 python3 -m pytest -q tests/test_fuzz_files.py
"""
from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from test_train import tiny_args, write_fashion_mnist

from snnsim.analysis import inspection, plots, record
from snnsim.datasets import registry
from snnsim.training import checkpoint as ckpt_mod
from snnsim.training import runfolder, runinfo
from snnsim.training import train as train_mod
from snnsim.training.checkpoint import CheckpointError, load_checkpoint
from snnsim.training.runfolder import RunFolderError

#: The checksum's sealing and the metrics reader (fallbacks let the suite run against an
#: snnsim without them, to show what it finds there).
seal = getattr(ckpt_mod, "seal", lambda f: None)
read_metrics_file = getattr(runfolder, "read_metrics_file", plots.read_metrics)

REPO = Path(__file__).resolve().parents[1]
ENV_EXAMPLES = "SNNSIM_FUZZ_EXAMPLES"
#: Examples per test in CI (without SNNSIM_FUZZ_EXAMPLES).
DEFAULT_EXAMPLES = {"checkpoint_load": 60, "checkpoint_commands": 10, "raw_bytes": 16,
                    "run_json": 40, "metrics": 40, "interrupted": 30}
CALL_LIMIT_S = 120
MEMORY_LIMIT_BYTES = 2 * 2**30
#: The worker's address-space limit and wall-clock limit.
WORKER_AS_BYTES = 6 * 2**30
WORKER_TIMEOUT_S = 600


def n_examples(name: str) -> int:
    value = os.environ.get(ENV_EXAMPLES)
    return int(value) if value else DEFAULT_EXAMPLES[name]


def fuzz_settings(name: str):
    return settings(max_examples=n_examples(name), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])


def report(capsys, name: str, ran: int) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {name}: {ran} examples ran ({ENV_EXAMPLES}="
              f"{os.environ.get(ENV_EXAMPLES, 'unset')})")


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic dataset, a finished 2-epoch run of the tiny network, its checkpoint's
    content and the names of its nodes and attributes."""
    root = tmp_path_factory.mktemp("fuzz")
    data = write_fashion_mnist(root / "data")
    run = root / "good"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert train_mod.main(tiny_args(data, run, epochs=2, dtype="float32")) == 0
    return {"root": root, "data": data, "run": run, **node_names(run / "checkpoint.h5")}


def node_names(path: Path) -> dict:
    """A checkpoint's content (``original``) and the names of its datasets, groups,
    attributes and config keys: what :func:`mutations` chooses from."""
    datasets, groups, attrs = [], [], []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            (datasets if isinstance(obj, h5py.Dataset) else groups).append("/" + name)
        f.visititems(visit)
        for node in ["/", *groups, *datasets]:
            attrs += [(node, k) for k in f[node].attrs]
    original = load_checkpoint(path)
    return {"original": original, "datasets": sorted(datasets), "groups": sorted(groups),
            "attrs": sorted(attrs), "config_keys": sorted(original["config"])}


@pytest.fixture(scope="module")
def stopped(world):
    """The tiny run stopped by SIGINT after batch 3 of epoch 2 (6 batches an epoch): its
    folder holds checkpoint.h5 (epoch 1) and interrupted.h5, whose names are given."""
    run = world["root"] / "stopped"
    real, count = train_mod.train_step, {"n": 0}

    def step(*args, **kwargs):
        out = real(*args, **kwargs)
        count["n"] += 1
        if count["n"] == 9:
            os.kill(os.getpid(), signal.SIGINT)
        return out
    train_mod.train_step = step
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert train_mod.main(tiny_args(world["data"], run, epochs=3,
                                            dtype="float32")) == train_mod.EXIT_INTERRUPTED
    finally:
        train_mod.train_step = real
    return {"run": run, **node_names(run / "interrupted.h5")}


@pytest.fixture(autouse=True)
def no_other_data(monkeypatch, tmp_path_factory):
    nowhere = tmp_path_factory.getbasetemp() / "no-data"
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", nowhere)
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", nowhere)
    monkeypatch.delenv(registry.ENV_VAR, raising=False)


def fresh_copy(world) -> Path:
    """A copy of the good run folder in a new temporary folder."""
    dst = Path(tempfile.mkdtemp(dir=world["root"])) / "run"
    shutil.copytree(world["run"], dst, ignore=shutil.ignore_patterns("run.lock"))
    return dst


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def limits(what: str):
    """The time limit (a watchdog that dumps the stacks and ends the run: a hang must not
    block CI) and the memory limit of one in-process call: the address space may grow by
    :data:`MEMORY_LIMIT_BYTES` (RLIMIT_AS, so that a runaway allocation is a MemoryError
    here, never the machine's out-of-memory killer), and the peak RSS by as much."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = _address_space()
    if vm is not None:
        cap = vm + MEMORY_LIMIT_BYTES
        resource.setrlimit(resource.RLIMIT_AS,
                           (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    faulthandler.dump_traceback_later(CALL_LIMIT_S, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown <= MEMORY_LIMIT_BYTES, f"{what}: peak memory grew by {grown / 2**30:.1f} GiB"


def call(main, argv) -> tuple[int, str]:
    """(exit status, stderr) of a command's main in-process, under :func:`limits`; an
    exception escaping (a traceback) fails the example."""
    err = io.StringIO()
    with limits(f"{main.__module__} {argv}"), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def assert_outcome(code, err, what, name: str) -> None:
    """Exit 0, or exit 2 with the error on one line naming the file ``name``."""
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    if code == 0:
        return
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"{what}: exit status {code}\n{err}"
    assert lines and ": error: " in lines[-1] and name in lines[-1], f"{what}: {err}"


# --- checkpoint mutations -------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
attr_values = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=30), st.binary(max_size=30),
    st.booleans(), json_values.map(json.dumps),
    st.lists(st.floats(width=32), min_size=0, max_size=4).map(lambda x: np.asarray(x)),
    st.sampled_from([np.int64(-1), np.int64(0), np.int64(10**9), np.float64("nan"),
                     np.int32(1), np.uint8(255), np.asarray([1, 2], np.int64)]))
DTYPES = ["int8", "int32", "int64", "uint16", "float16", "float32", "float64", "complex64",
          "bool"]
element_values = st.one_of(st.floats(width=32), st.sampled_from([np.nan, np.inf, -np.inf, -1.0,
                                                                   3.4e38, 0.0, -0.0]))


def mutations(world):
    """A strategy of one mutation of the checkpoint whose names ``world`` holds
    (:func:`node_names`), as a tuple naming what it changes."""
    ds, groups, attrs = world["datasets"], world["groups"], world["attrs"]
    return st.one_of(
        st.tuples(st.just("attr"), st.sampled_from(attrs), attr_values),
        st.tuples(st.just("config"), st.sampled_from(world["config_keys"] + ["extra"]),
                  json_values),
        st.tuples(st.just("rng_state"), st.sampled_from(["state", "bit_generator",
                                                         "has_uint32", "uinteger", "x"]),
                  json_values),
        st.tuples(st.just("dtype"), st.sampled_from(ds), st.sampled_from(DTYPES)),
        st.tuples(st.just("shape"), st.sampled_from(ds),
                  st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple)),
        st.tuples(st.just("declared"), st.sampled_from(ds),
                  st.lists(st.integers(1, 10**7), min_size=1, max_size=3).map(tuple)),
        st.tuples(st.just("value"), st.sampled_from(ds), st.floats(0, 1), element_values),
        st.tuples(st.just("delete"), st.sampled_from(ds + groups)),
        st.tuples(st.just("softlink"), st.sampled_from(ds + groups)),
        st.tuples(st.just("delete_attr"), st.sampled_from(attrs)),
        st.tuples(st.just("data_bits"), st.sampled_from(ds), st.lists(
            st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1,
            max_size=40)),
    )


def _replace(f, path, data=None, **kwargs):
    parent, name = path.rsplit("/", 1)
    parent = parent or "/"
    del f[path]
    f[parent].create_dataset(name, data=data, **kwargs)


def apply_mutation(path: Path, mutation, renew: bool) -> bool:
    """Apply ``mutation`` to the checkpoint ``path`` (then renew its checksum when
    ``renew`` and the file can be sealed). Returns False when h5py cannot store it."""
    kind = mutation[0]
    if kind == "data_bits":
        with h5py.File(path, "r") as f:
            offset, size = f[mutation[1]].id.get_offset(), f[mutation[1]].id.get_storage_size()
        if offset is None or size == 0:
            return False
        data = bytearray(path.read_bytes())
        for frac, bit in mutation[2]:
            data[offset + int(frac * size)] ^= 1 << bit
        path.write_bytes(bytes(data))
        return True
    try:
        with h5py.File(path, "r+") as f:
            if kind == "attr":
                (obj, name), value = mutation[1], mutation[2]
                f[obj].attrs[name] = value
            elif kind == "config":
                cfg = json.loads(f.attrs["config"])
                cfg[mutation[1]] = mutation[2]
                f.attrs["config"] = json.dumps(cfg)
            elif kind == "rng_state":
                state = json.loads(f["rng"].attrs["state"])
                state[mutation[1]] = mutation[2]
                f["rng"].attrs["state"] = json.dumps(state)
            elif kind == "dtype":
                _replace(f, mutation[1], f[mutation[1]][()].astype(mutation[2]))
            elif kind == "shape":
                a = f[mutation[1]][()].ravel()
                n = int(np.prod(mutation[2]))
                _replace(f, mutation[1], np.resize(a, n).reshape(mutation[2]) if a.size else
                         np.zeros(mutation[2], a.dtype))
            elif kind == "declared":                    # a shape with no data written
                dtype = f[mutation[1]].dtype
                _replace(f, mutation[1], shape=mutation[2], dtype=dtype)
            elif kind == "value":
                a = f[mutation[1]][()]
                if a.size == 0:
                    return False
                a.flat[int(mutation[2] * (a.size - 1))] = mutation[3]
                f[mutation[1]][...] = a
            elif kind == "delete":
                del f[mutation[1]]
            elif kind == "softlink":
                del f[mutation[1]]
                f[mutation[1]] = h5py.SoftLink(mutation[1])
            elif kind == "delete_attr":
                obj, name = mutation[1]
                del f[obj].attrs[name]
            if renew and kind != "declared":    # sealing would read the declared bytes
                with limits("seal"), contextlib.suppress(CheckpointError, MemoryError,
                                                         ValueError):
                    seal(f)
    except (TypeError, ValueError, OverflowError, KeyError, OSError):
        return False                   # a value h5py cannot store: not a file to test
    return True


def same_content(a: dict, b: dict) -> bool:
    def arrays(ck):
        return [ck["weights"], ck["optimizer"]["m"], ck["optimizer"]["v"]]
    for la, lb in zip(arrays(a), arrays(b)):
        for x, y in zip(la, lb):
            if set(x) != set(y) or any(not np.array_equal(x[k], y[k]) for k in x):
                return False
    keys = ("epoch", "config", "metrics", "best_epoch", "rng_state", "network", "data_files")
    pa, pb = a.get("partial"), b.get("partial")
    if (pa is None) != (pb is None) or (pa is not None and any(
            not np.array_equal(pa[k], pb[k]) for k in pa)):
        return False
    return all(a[k] == b[k] for k in keys) and a["optimizer"]["step"] == b["optimizer"]["step"]


def check_loaded(world, path: Path, renewed: bool) -> dict | None:
    """load_checkpoint's outcome on a mutated file: the dict, or None after a one-line
    CheckpointError naming the file; accepted without a renewed checksum means the
    content is the original's."""
    with limits(f"load_checkpoint {path}"):
        try:
            ck = load_checkpoint(path)
        except CheckpointError as exc:
            text = str(exc)
            assert text.startswith(str(path)) and "\n" not in text, text
            return None
    if not renewed:
        assert same_content(ck, world["original"]), "a damaged checkpoint was accepted as is"
    return ck


def test_fuzz_checkpoint_load(world, capsys):
    """Structured mutations (attributes, config, rng state, dtypes, shapes, declared
    sizes, values, deletions, links, flipped bits in the data), re-sealed or not, fed to
    the checkpoint reader."""
    ran = {"n": 0, "accepted": 0}

    @fuzz_settings("checkpoint_load")
    @given(mutation=mutations(world), renew=st.booleans())
    def prop(mutation, renew):
        path = Path(tempfile.mkdtemp(dir=world["root"])) / "checkpoint.h5"
        shutil.copyfile(world["run"] / "checkpoint.h5", path)
        if not apply_mutation(path, mutation, renew):
            reject()
        ran["n"] += 1
        ran["accepted"] += check_loaded(world, path, renew) is not None
        shutil.rmtree(path.parent)

    prop()
    report(capsys, f"checkpoint load ({ran['accepted']} accepted)", ran["n"])


def command_argv(command: str, run: Path, data: Path, out: Path):
    ckpt = str(run / "checkpoint.h5")
    d = ["--data-dir", str(data)]
    return {
        "train": (train_mod.main, ["--resume", str(run), "--epochs=3", "--progress=false", *d]),
        "record": (record.main, [ckpt, "--samples", "3", "--out", str(out / "r.h5"), *d]),
        "plots curves": (plots.main, ["curves", ckpt, "--formats", "png", "--out", str(out)]),
        "plots sparsity": (plots.main, ["sparsity", ckpt, "--samples", "3", "--formats", "png",
                                        "--out", str(out), *d]),
        "inspection": (inspection.main, [ckpt, "--indices", "0", "--max-neurons", "2",
                                         "--out", str(out / "i.h5"), *d]),
    }[command]


COMMANDS = ["train", "record", "plots curves", "plots sparsity", "inspection"]


def test_fuzz_checkpoint_commands(world, capsys):
    """Mutated checkpoints through train --resume, record, plots and inspection: exit 0,
    or 2 with one line naming checkpoint.h5."""
    ran = {"n": 0}

    @fuzz_settings("checkpoint_commands")
    @given(mutation=mutations(world), renew=st.booleans(),
           commands=st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=2, unique=True))
    def prop(mutation, renew, commands):
        run = fresh_copy(world)
        if not apply_mutation(run / "checkpoint.h5", mutation, renew):
            reject()
        ran["n"] += 1
        for command in commands:
            main, argv = command_argv(command, run, world["data"], run.parent / "out")
            code, err = call(main, argv)
            assert_outcome(code, err, f"{command} after {mutation!r:.200}", "checkpoint.h5")
        shutil.rmtree(run.parent)

    prop()
    report(capsys, "checkpoint through the commands", ran["n"])


def test_fuzz_interrupted_file(world, stopped, capsys):
    """Mutations of interrupted.h5 (re-sealed or not): its reader accepts it (unchanged
    content when not re-sealed) or names it in one line; train --resume of the folder
    then exits 0 (a damaged file passed over with a note, the epoch started again from
    checkpoint.h5) or 2 with one line naming interrupted.h5."""
    ran = {"n": 0, "accepted": 0}

    @fuzz_settings("interrupted")
    @given(mutation=mutations(stopped), renew=st.booleans())
    def prop(mutation, renew):
        run = Path(tempfile.mkdtemp(dir=world["root"])) / "run"
        shutil.copytree(stopped["run"], run, ignore=shutil.ignore_patterns("run.lock"))
        if not apply_mutation(run / "interrupted.h5", mutation, renew):
            reject()
        ran["n"] += 1
        ran["accepted"] += check_loaded(stopped, run / "interrupted.h5", renew) is not None
        code, err = call(train_mod.main, ["--resume", str(run), "--epochs=3", "--progress=false",
                                          "--data-dir", str(world["data"])])
        assert_outcome(code, err, f"train --resume after {mutation!r:.200}", "interrupted.h5")
        shutil.rmtree(run.parent)

    prop()
    report(capsys, f"interrupted.h5 ({ran['accepted']} accepted)", ran["n"])


# --- raw bytes, in a subprocess -----------------------------------------------------------
def raw_mutations(data: bytes, rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
    """``n`` byte-level damages of ``data``: flipped bits anywhere (metadata included),
    a run of overwritten bytes, truncation."""
    out = []
    for i in range(n):
        b = bytearray(data)
        kind = ("flip", "overwrite", "truncate")[i % 3]
        if kind == "flip":
            for _ in range(int(rng.integers(1, 41))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        elif kind == "overwrite":
            at = int(rng.integers(len(b)))
            run = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
            b[at:at + len(run)] = run
        else:
            b = b[:int(rng.integers(len(b)))]
        out.append((kind, bytes(b)))
    return out


def _worker_limits():
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_AS_BYTES, WORKER_AS_BYTES))


def test_fuzz_raw_bytes_in_a_subprocess(world, capsys):
    """Bit flips anywhere in the file (HDF5's own metadata too), overwritten runs of
    bytes, truncation: the reader and record/plots in a worker process under a memory
    and time limit; no crash, hang or traceback, and no damaged file accepted as
    different content."""
    n = n_examples("raw_bytes")
    work = Path(tempfile.mkdtemp(dir=world["root"]))
    original = (world["run"] / "checkpoint.h5").read_bytes()
    rng = np.random.default_rng(24)
    jobs, kinds = [], {}
    for i, (kind, blob) in enumerate(raw_mutations(original, rng, n)):
        path = work / f"m{i:04d}" / "checkpoint.h5"
        path.parent.mkdir()
        path.write_bytes(blob)
        kinds[str(path)] = kind
        out = path.parent / "out"
        jobs.append({"id": f"{i}-load", "command": "load", "argv": [str(path)]})
        command = ("record", "plots curves", "plots sparsity", "inspection")[i % 4]
        _, argv = command_argv(command, path.parent, world["data"], out)
        jobs.append({"id": f"{i}-{command}", "command": command.split()[0], "argv": argv})
    (work / "jobs.json").write_text(json.dumps(jobs))
    results = work / "results.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    env.pop(registry.ENV_VAR, None)
    try:
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_worker.py"),
                               str(work / "jobs.json"), str(results)], env=env, cwd=work,
                              capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              preexec_fn=_worker_limits)
    except subprocess.TimeoutExpired:
        proc = None
    lines = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() \
        else []
    started = [r["id"] for r in lines if r.get("started")]
    assert proc is not None, f"worker hung (last job started: {started[-1:]})"
    assert proc.returncode == 0, (f"worker ended with {proc.returncode} (crash, hang or memory) "
                                  f"during job {started[-1:]}: {proc.stderr[-2000:]}")
    done = [r for r in lines if "code" in r]
    assert len(done) == len(jobs)
    by_id = {j["id"]: j for j in jobs}
    for r in done:
        job = by_id[r["id"]]
        assert not r["traceback"], f"{job}: traceback\n{r['traceback']}"
        assert_outcome(r["code"], r["err"], job, "checkpoint.h5")
        if job["command"] == "load" and r["code"] == 0:
            same = same_content(load_checkpoint(job["argv"][0]), world["original"])
            assert same, f"{job}: damaged bytes accepted as other content"
    accepted = sum(1 for r in done if r["id"].endswith("-load") and r["code"] == 0)
    report(capsys, f"raw bytes in a subprocess ({len(jobs)} jobs, {accepted} files unchanged "
                   "in content)", n)


# --- run.json -------------------------------------------------------------------------------
def run_json_mutations(good: dict):
    """A damaged run.json: random JSON, a field of the record replaced, or text."""
    fields = sorted(good) + ["resumed", "blas"]
    return st.one_of(
        json_values.map(json.dumps),
        st.tuples(st.sampled_from(fields), json_values).map(
            lambda kv: json.dumps({**good, kv[0]: kv[1]})),
        st.tuples(st.sampled_from(["num_threads", "user_api", "internal_api", "version"]),
                  json_values).map(lambda kv: json.dumps(
                      {**good, "blas": [{**e, kv[0]: kv[1]} for e in good.get("blas", [])]})),
        st.tuples(st.sampled_from(["after_epoch", "blas", "machine"]), json_values).map(
            lambda kv: json.dumps({**good, "resumed": [{**good, kv[0]: kv[1]}]})),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    )


def test_fuzz_run_json(world, capsys):
    """A damaged run.json: the reader returns a record that blas_thread_count and
    resume_note take without error, or RunInfoError naming the file; a few go through
    train --resume (exit 0, or 2 naming run.json)."""
    good = json.loads((world["run"] / "run.json").read_text())
    ran = {"n": 0, "resumed": 0}

    @fuzz_settings("run_json")
    @given(text=run_json_mutations(good), resume=st.integers(0, 7))
    def prop(text, resume):
        folder = Path(tempfile.mkdtemp(dir=world["root"]))
        (folder / "run.json").write_text(text, encoding="utf-8", errors="surrogateescape")
        ran["n"] += 1
        with limits("read_run_info"):
            try:
                record_ = runinfo.read_run_info(folder)
            except RunFolderError as exc:
                assert str(exc).startswith(str(folder / "run.json")) and "\n" not in str(exc)
                record_ = None
            if record_ is not None:
                runinfo.blas_thread_count(record_)
                runinfo.resume_note(runinfo.record_start(folder, runinfo.run_info(), 1, record_))
        if resume == 0:                        # one example in eight: the whole command
            ran["resumed"] += 1
            run = fresh_copy(world)
            (run / "run.json").write_text(text, encoding="utf-8", errors="surrogateescape")
            code, err = call(train_mod.main, ["--resume", str(run), "--epochs=3",
                                              "--progress=false", "--data-dir",
                                              str(world["data"])])
            assert_outcome(code, err, f"train --resume with run.json {text[:100]!r}", "run.json")
            shutil.rmtree(run.parent)
        shutil.rmtree(folder)

    prop()
    report(capsys, f"run.json ({ran['resumed']} through train --resume)", ran["n"])


# --- metrics.jsonl --------------------------------------------------------------------------
def metrics_mutations(rows: list[dict]):
    line = st.one_of(
        json_values.map(json.dumps),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
        st.tuples(st.sampled_from(list(rows[0]) + ["extra"]), json_values).map(
            lambda kv: json.dumps({**rows[0], kv[0]: kv[1]})),
        st.tuples(st.sampled_from(list(rows[0])), st.floats()).map(
            lambda kv: json.dumps({**rows[-1], kv[0]: kv[1]})),
        st.sampled_from(list(rows[0])).map(
            lambda k: json.dumps({c: v for c, v in rows[0].items() if c != k})),
    )
    return st.tuples(st.integers(0, len(rows)), line, st.booleans())


def test_fuzz_metrics_jsonl(world, capsys):
    """A damaged metrics.jsonl (a line inserted or replaced): plots curves exits 0 with the
    rows the reader accepted, or 2 with one line naming metrics.jsonl."""
    text = (world["run"] / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    ran = {"n": 0, "accepted": 0}

    @fuzz_settings("metrics")
    @given(change=metrics_mutations(rows))
    def prop(change):
        at, line, replace = change
        lines = text.splitlines()
        lines[at:at + int(replace)] = [line]
        folder = Path(tempfile.mkdtemp(dir=world["root"]))
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8",
                                              errors="surrogateescape")
        ran["n"] += 1
        try:
            with limits("read_metrics_file"):
                got = read_metrics_file(folder / "metrics.jsonl")
            ran["accepted"] += 1
            assert [r["epoch"] for r in got] == list(range(1, len(got) + 1))
            assert all(0.0 <= r["test_acc"] <= 1.0 for r in got)
        except CheckpointError as exc:
            assert "metrics.jsonl" in str(exc) and "\n" not in str(exc)
        code, err = call(plots.main, ["curves", str(folder), "--formats", "png", "--out",
                                      str(folder / "out")])
        assert_outcome(code, err, f"plots curves with line {line[:80]!r}", "metrics.jsonl")
        shutil.rmtree(folder)

    prop()
    report(capsys, f"metrics.jsonl ({ran['accepted']} accepted)", ran["n"])
