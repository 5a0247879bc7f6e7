"""Every file snnsim reads back is checked before use (issue 24, "Files read back"):
checkpoints and best.h5 (layout, dtypes, shapes, attribute types and ranges, sizes
bounded before reading, links, finiteness of the weights and of the optimizer state,
the checksum), run.json, metrics.jsonl; non-regular files; a full disk while writing;
the divergence guard over the optimizer state; run.json's BLAS list in any order.

A damaged file ends train --resume, record, plots and inspection with one line naming
the file and what is wrong, exit status 2: never a traceback, a hang, a crash or a
silently wrong result.

Mutations that a checksum would catch anyway are re-sealed (:func:`reseal`: the checksum
renewed, as a buggy or older writer would have left the file) so that each check is
tested on its own.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_train import tiny_args, write_fashion_mnist

from snnsim.analysis import inspection, plots, record
from snnsim.datasets import registry
from snnsim.training import checkpoint as ckpt_mod
from snnsim.training import runinfo
from snnsim.training import train as train_mod
from snnsim.training.checkpoint import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
#: Where the dataset search looks (before the autouse fixture below hides it).
REAL_DATA = (registry.SYSTEM_DATA_ROOT, registry.REPO_DATA_ROOT, os.environ.get(registry.ENV_VAR))
#: Seconds a command given a damaged file may take in a subprocess before it counts as hung.
HANG_S = 120


# --- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def no_other_data(tmp_path, monkeypatch):
    """No dataset where the search path would look without --data-dir."""
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", tmp_path / "none")
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", tmp_path / "none")
    monkeypatch.delenv(registry.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def good_run(data_dir, tmp_path_factory):
    """A finished 2-epoch run folder of the tiny network (float32)."""
    out = tmp_path_factory.mktemp("good") / "run"
    with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
        assert train_mod.main(tiny_args(data_dir, out, epochs=2, dtype="float32")) == 0
    return out


def copy_run(good_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(good_run, dst, ignore=shutil.ignore_patterns("run.lock"))
    return dst


def reseal(f) -> None:
    """Renew the checksum of the open checkpoint ``f`` (no-op before checksums existed,
    and for a file the sealing itself refuses: a link, a dataset of bytes)."""
    seal = getattr(ckpt_mod, "seal", None)
    if seal is not None:
        with contextlib.suppress(CheckpointError):
            seal(f)


def mutate(path, change, renew: bool = True) -> Path:
    with h5py.File(path, "r+") as f:
        change(f)
        if renew:
            reseal(f)
    return Path(path)


def run_main(main, argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a command's main run in-process; a traceback escapes."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line(code, err, command, *needles):
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    # "snnsim.<command>: error:", or from a parser its prog, which names the interpreter
    assert lines and re.match(rf"(\S*python3 -m )?snnsim\.{command}: error:", lines[-1]), err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def readers(run, data_dir, tmp_path, ckpt=None):
    """(command, main, argv) of every command that reads the checkpoint ``ckpt``
    (default: the run's checkpoint.h5)."""
    ckpt = str(ckpt or run / "checkpoint.h5")
    data = ["--data-dir", str(data_dir)]
    return [
        ("train", train_mod.main, ["--resume", ckpt, "--out", str(run), "--epochs=3",
                                   "--progress=false", *data]),
        ("record", record.main, [ckpt, "--samples", "4", "--out", str(tmp_path / "r.h5"), *data]),
        ("plots", plots.main, ["curves", ckpt, "--out", str(tmp_path / "p")]),
        ("plots", plots.main, ["sparsity", ckpt, "--samples", "4", "--out", str(tmp_path / "p"),
                               *data]),
        ("inspection", inspection.main, [ckpt, "--indices", "0,1", "--out",
                                         str(tmp_path / "i.h5"), *data]),
    ]


def assert_every_reader_refuses(run, data_dir, tmp_path, capsys, *needles, ckpt=None):
    ckpt = Path(ckpt or run / "checkpoint.h5")
    for command, main, argv in readers(run, data_dir, tmp_path, ckpt):
        code, err = run_main(main, argv, capsys)
        assert_one_line(code, err, command, ckpt.name, *needles)


# --- checkpoints: each defect of the issue ------------------------------------------------
def _config_list(f):
    f.attrs["config"] = json.dumps([1, 2])


def _config_value_list(f):
    cfg = json.loads(f.attrs["config"])
    cfg["lr"] = [[1, 2]]
    f.attrs["config"] = json.dumps(cfg)


def _config_deep(f):
    cfg = json.loads(f.attrs["config"])
    f.attrs["config"] = json.dumps(cfg)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _short_test_acc(f):
    del f["metrics/test_acc"]
    f["metrics"].create_dataset("test_acc", data=np.array([0.5]))


def _huge_dataset(f):
    del f["optimizer/m/layer_00/W"]
    f["optimizer/m/layer_00"].create_dataset("W", shape=(10**6, 10**6), dtype="f8")


def _self_link(f):
    del f["weights/layer_00/W"]
    f["weights/layer_00/W"] = h5py.SoftLink("/weights/layer_00/W")


def _bytes_weights(f):
    a = f["weights/layer_00/W"][()]
    del f["weights/layer_00/W"]
    f["weights/layer_00"].create_dataset("W", data=np.void(a.tobytes()))


def _as_dtype(dtype):
    def change(f):
        a = f["weights/layer_00/W"][()]
        del f["weights/layer_00/W"]
        f["weights/layer_00"].create_dataset("W", data=a.astype(dtype))
    return change


def _m_wrong_shape(f):
    a = f["optimizer/m/layer_00/W"][()]
    del f["optimizer/m/layer_00/W"]
    f["optimizer/m/layer_00"].create_dataset("W", data=a[:, :5])


def _attr(path, name, value):
    def change(f):
        f[path].attrs[name] = value
    return change


def _rng_state(value):
    def change(f):
        state = json.loads(f["rng"].attrs["state"])
        state["state"] = value
        f["rng"].attrs["state"] = json.dumps(state)
    return change


def _nan_test_acc(f):
    a = f["metrics/test_acc"][()]
    a[0] = np.nan
    f["metrics/test_acc"][...] = a


def _poison(path, value, index=3):
    def change(f):
        a = f[path][()]
        a.flat[index] = value
        f[path][...] = a
    return change


CHECKPOINT_DEFECTS = {
    "config is a list": (_config_list, "config"),
    "a config value is a nested list": (_config_value_list, "lr"),
    "config nested 100000 deep": (_config_deep, "config"),
    "short test_acc column": (_short_test_acc, "/metrics"),
    "(1e6, 1e6) dataset": (_huge_dataset, "declares"),
    "soft link to itself": (_self_link, "SoftLink"),
    "weights stored as bytes": (_bytes_weights, "/weights/layer_00/W"),
    "int32 weights": (_as_dtype(np.int32), "int32"),
    "complex64 weights": (_as_dtype(np.complex64), "complex64"),
    "optimizer m of the wrong shape": (_m_wrong_shape, "optimizer m"),
    "optimizer step -5": (_attr("optimizer", "step", np.int64(-5)), "step"),
    "optimizer step a string": (_attr("optimizer", "step", "5"), "step"),
    "rng state 5": (_attr("rng", "state", "5"), "rng"),
    "rng state of a wrong bit generator": (_attr("rng", "bit_generator", "MT19937"), "rng"),
    "rng state values out of range": (_rng_state({"state": -1, "inc": "x"}), "rng"),
    "epoch -1": (_attr("/", "epoch", np.int64(-1)), "epoch"),
    "epoch 1e9": (_attr("/", "epoch", np.int64(10**9)), "epoch"),
    "epoch a float": (_attr("/", "epoch", 2.0), "epoch"),
    "NaN test_acc in the history": (_nan_test_acc, "test_acc"),
    "best_epoch not the history's best": (_attr("/", "best_epoch", np.int64(0)), "best_epoch"),
    "NaN in optimizer m": (_poison("optimizer/m/layer_00/W", np.nan), "optimizer m"),
    "negative optimizer v": (_poison("optimizer/v/layer_00/W", -1.0), "optimizer v"),
    "inf in optimizer v": (_poison("optimizer/v/layer_01/W", np.inf), "optimizer v"),
    "data_files records without split or path": (_attr("/", "data_files", '[{"x": 1}]'),
                                                 "data_files"),
}


@pytest.mark.parametrize("defect", list(CHECKPOINT_DEFECTS))
def test_damaged_checkpoint_refused_by_load(good_run, tmp_path, defect):
    change, needle = CHECKPOINT_DEFECTS[defect]
    path = tmp_path / "checkpoint.h5"
    shutil.copyfile(good_run / "checkpoint.h5", path)
    mutate(path, change, renew=defect != "(1e6, 1e6) dataset")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(str(path)) and needle in text and "\n" not in text, text


@pytest.mark.parametrize("defect", ["config nested 100000 deep", "(1e6, 1e6) dataset",
                                    "soft link to itself", "int32 weights",
                                    "optimizer m of the wrong shape", "optimizer step -5",
                                    "rng state 5", "epoch -1", "NaN test_acc in the history",
                                    "negative optimizer v",
                                    "data_files records without split or path"])
def test_damaged_checkpoint_refused_by_every_command(good_run, data_dir, tmp_path, capsys,
                                                      defect):
    """train --resume, record, plots curves/sparsity, inspection: one line, exit 2."""
    change, _ = CHECKPOINT_DEFECTS[defect]
    run = copy_run(good_run, tmp_path)
    mutate(run / "checkpoint.h5", change, renew=defect != "(1e6, 1e6) dataset")
    before = (run / "checkpoint.h5").read_bytes()
    assert_every_reader_refuses(run, data_dir, tmp_path, capsys)
    assert (run / "checkpoint.h5").read_bytes() == before


def test_flipped_bytes_in_the_arrays_are_refused(good_run, data_dir, tmp_path, capsys):
    """200 flipped bytes in the weights and the optimizer data: the checksum refuses the
    file (before: loaded and trained on)."""
    run = copy_run(good_run, tmp_path)
    path = run / "checkpoint.h5"
    with h5py.File(path, "r") as f:
        spans = [(f[p].id.get_offset(), f[p].id.get_storage_size())
                 for p in ("weights/layer_00/W", "optimizer/m/layer_00/W",
                           "optimizer/v/layer_01/W")]
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for k in range(200):
        offset, size = spans[k % len(spans)]
        data[offset + int(rng.integers(size))] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    assert_every_reader_refuses(run, data_dir, tmp_path, capsys, "checksum")


def test_one_flipped_bit_is_refused(good_run, tmp_path):
    path = tmp_path / "c.h5"
    shutil.copyfile(good_run / "checkpoint.h5", path)
    with h5py.File(path, "r") as f:
        offset = f["weights/layer_01/W"].id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0x01                    # the low bit of a mantissa: a tiny change
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.h5.*checksum"):
        load_checkpoint(path)


def test_older_checkpoint_without_checksum_loads(good_run, tmp_path):
    """Version 1 (no checksum attribute) still loads, with every other check."""
    path = tmp_path / "old.h5"
    shutil.copyfile(good_run / "checkpoint.h5", path)
    with h5py.File(path, "r+") as f:
        del f.attrs["checksum"]
        f.attrs["format_version"] = 1
    old, new = load_checkpoint(path), load_checkpoint(good_run / "checkpoint.h5")
    assert old["epoch"] == new["epoch"] == 2
    assert np.array_equal(old["weights"][0]["W"], new["weights"][0]["W"])
    mutate(path, _poison("optimizer/v/layer_00/W", -1.0), renew=False)
    with pytest.raises(CheckpointError, match="optimizer v"):
        load_checkpoint(path)


def test_version_2_without_checksum_is_refused(good_run, tmp_path):
    path = tmp_path / "c.h5"
    shutil.copyfile(good_run / "checkpoint.h5", path)
    with h5py.File(path, "r+") as f:
        del f.attrs["checksum"]
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_checkpoint_of_another_network_names_the_file(good_run, data_dir, tmp_path, capsys):
    """Weights whose shape is not that of the config's network: record names the file."""
    path = tmp_path / "c.h5"
    shutil.copyfile(good_run / "checkpoint.h5", path)

    def change(f):
        cfg = json.loads(f.attrs["config"])
        cfg["network"] = "784-30-10"
        f.attrs["config"] = json.dumps(cfg)
    mutate(path, change)
    code, err = run_main(record.main, [str(path), "--samples", "4", "--data-dir", str(data_dir),
                                       "--out", str(tmp_path / "r.h5")], capsys)
    assert_one_line(code, err, "record", "c.h5", "shape")


def test_save_refuses_nonfinite_optimizer_state(good_run, tmp_path):
    ck = load_checkpoint(good_run / "checkpoint.h5")
    ck["optimizer"]["v"][0]["W"][0, 0] = np.inf
    with pytest.raises(CheckpointError, match="not written.*optimizer v"):
        ckpt_mod.save_checkpoint(tmp_path / "c.h5", weights=ck["weights"],
                                 optimizer=ck["optimizer"], rng_state=ck["rng_state"],
                                 epoch=ck["epoch"], config=ck["config"], metrics=ck["metrics"])
    assert not list(tmp_path.iterdir())


# --- run.json, metrics.jsonl, non-regular files ----------------------------------------------
@pytest.mark.parametrize("content", ["[1, 2]", '{"blas": 5}', '{"blas": [{"num_threads": "x", '
                                     '"user_api": "blas"}]}', '{"resumed": {}}', "not json",
                                     '{"machine": [1]}'])
def test_damaged_run_json_is_one_line(good_run, data_dir, tmp_path, capsys, content):
    run = copy_run(good_run, tmp_path)
    (run / "run.json").write_text(content)
    code, err = run_main(train_mod.main, ["--resume", str(run), "--epochs=3", "--progress=false",
                                          "--data-dir", str(data_dir)], capsys)
    assert_one_line(code, err, "train", "run.json")
    assert (run / "run.json").read_text() == content


def test_run_json_that_is_a_folder_is_named(good_run, data_dir, tmp_path, capsys):
    """Before: the error named the temporary file ``run.json.<pid>.<random>.tmp``."""
    run = copy_run(good_run, tmp_path)
    (run / "run.json").unlink()
    (run / "run.json").mkdir()
    code, err = run_main(train_mod.main, ["--resume", str(run), "--epochs=3", "--progress=false",
                                          "--data-dir", str(data_dir)], capsys)
    assert_one_line(code, err, "train", "run.json")
    assert ".tmp" not in err
    assert not list(run.glob("*.tmp"))


def test_run_json_blas_order_does_not_matter():
    """threadpoolctl lists the libraries in loading order: the same two in another order
    are the same settings (before: "blas differ" on about half the resumes)."""
    libs = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.27",
             "architecture": "Haswell", "num_threads": 1, "prefix": "libopenblas"},
            {"user_api": "blas", "internal_api": "openblas", "version": "0.3.29",
             "architecture": "Haswell", "num_threads": 2, "prefix": "libscipy_openblas"},
            {"user_api": "blas", "internal_api": "openblas", "version": "0.3.28",
             "architecture": "Zen", "num_threads": 2, "prefix": "libother"}]
    base = {"machine": "x86_64", "backend": "numpy", "dtype": "float32", "numpy": "2.0"}
    first = dict(base, blas=libs)
    again = dict(base, blas=libs[::-1])
    assert runinfo.reproducibility_key(first) == runinfo.reproducibility_key(again)
    assert runinfo.resume_note({**first, "resumed": [dict(again, after_epoch=1)]}) is None
    counts = {runinfo.blas_thread_count(dict(base, blas=order))
              for order in (libs, libs[::-1], libs[1:] + libs[:1])}
    assert len(counts) == 1, counts
    assert counts == {2}             # the count most libraries share


def test_garbage_metrics_line_is_one_line(good_run, tmp_path, capsys):
    run = copy_run(good_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{garbage\n")
    code, err = run_main(plots.main, ["curves", str(run), "--out", str(tmp_path / "p")], capsys)
    assert_one_line(code, err, "plots", "metrics.jsonl", "line 3")


@pytest.mark.parametrize("row", ['{"epoch": 3, "train_loss": 0.1, "train_acc": 0.5}',
                                 '{"epoch": 3, "train_loss": 0.1, "train_acc": 0.5, '
                                 '"test_acc": NaN}',
                                 '{"epoch": 1, "train_loss": 0.1, "train_acc": 0.5, '
                                 '"test_acc": 0.5}',
                                 '[1, 2]', '{"epoch": 3, "train_loss": "x", "train_acc": 0.5, '
                                 '"test_acc": 0.5}'])
def test_bad_metrics_rows_are_one_line(good_run, tmp_path, capsys, row):
    run = copy_run(good_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(row + "\n")
    code, err = run_main(plots.main, ["curves", str(run), "--out", str(tmp_path / "p")], capsys)
    assert_one_line(code, err, "plots", "metrics.jsonl")


def _subprocess(argv, timeout=HANG_S, preexec=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "snnsim", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def test_fifo_is_refused_not_waited_on(tmp_path):
    """plots sparsity on a FIFO: before, it waited for a writer for ever."""
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    for argv in (["plots", "sparsity", str(fifo), "--out", str(tmp_path / "p")],
                 ["plots", "curves", str(fifo), "--out", str(tmp_path / "p")],
                 ["record", str(fifo), "--out", str(tmp_path / "r.h5")]):
        try:
            proc = _subprocess(argv, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"snnsim {' '.join(argv[:2])} on a FIFO hung")
        assert_one_line(proc.returncode, proc.stderr, argv[0], "pipe.h5", "FIFO")


# --- a full disk --------------------------------------------------------------------------
def test_disk_full_copying_to_best_names_best(data_dir, tmp_path, capsys, monkeypatch):
    """A full disk while checkpoint.h5 is copied to best.h5: the error names best.h5 (the
    copy's OSError carries the source's name; before, the line named checkpoint.h5)."""
    real = shutil.copyfile

    def full(src, dst, *args, **kwargs):
        if Path(str(dst)).name.startswith("best.h5"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", full)
    out = tmp_path / "run"
    code, err = run_main(train_mod.main, tiny_args(data_dir, out, epochs=1), capsys)
    assert_one_line(code, err, "train", "best.h5", "No space left")
    assert "checkpoint.h5" not in err.strip().splitlines()[-1]
    assert not list(out.glob("*.tmp"))


def _file_size_limit(n_bytes):
    """preexec_fn: files larger than ``n_bytes`` cannot be written (EFBIG, as a full disk
    gives ENOSPC): the process gets an OSError, not SIGXFSZ."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


@pytest.mark.parametrize("command", ["record", "inspection"])
def test_full_disk_while_writing_is_one_line(good_run, data_dir, tmp_path, command):
    """record and inspection on a full disk: before, a segmentation fault (rc 139) and a
    .tmp left behind."""
    out = tmp_path / "out" / "file.h5"
    out.parent.mkdir()
    argv = [command, str(good_run / "best.h5"), "--data-dir", str(data_dir), "--out", str(out)]
    argv += ["--samples", "4"] if command == "record" else ["--indices", "0,1"]
    proc = _subprocess(argv, preexec=_file_size_limit(4096))
    assert_one_line(proc.returncode, proc.stderr, command, "file.h5")
    assert list(out.parent.iterdir()) == []


def test_full_disk_on_a_small_tmpfs(good_run, data_dir, tmp_path):
    """The same on a real filesystem that fills up during the write (a small tmpfs with
    16 kB left; needs root to mount)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "slack").write_bytes(b"\0" * 16384)
        with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
            while True:                      # until the disk is full
                f.write(b"\0" * 4096)
                f.flush()
        (mnt / "slack").unlink()             # 16 kB left: a write starts, then fails
        for command, extra in (("record", ["--samples", "20", "--full"]),
                               ("inspection", ["--indices", "0,1"])):
            out = mnt / f"{command}.h5"
            proc = _subprocess([command, str(good_run / "best.h5"), "--data-dir", str(data_dir),
                                "--out", str(out), *extra])
            assert_one_line(proc.returncode, proc.stderr, command, out.name)
            assert [p.name for p in mnt.iterdir()] == ["filler"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- the guard over the optimizer state ----------------------------------------------------
def test_infinite_second_moment_is_divergence(data_dir, tmp_path, capsys, monkeypatch):
    """v = inf after a step while the weights stay finite (the update m_hat / inf is 0): the
    run stops (exit 3) naming AdamW's v, and no checkpoint holds it. Before: exit 0 and
    v = inf saved in checkpoint.h5."""
    out = tmp_path / "run"
    real_step = train_mod.train_step
    calls = {"n": 0}

    def step(net, opt, *args, **kwargs):
        result = real_step(net, opt, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            opt.v[1]["W"][0, 0] = np.inf
        return result

    monkeypatch.setattr(train_mod, "train_step", step)
    # without a clip (with one, v cannot overflow and is not checked: the test below)
    code, err = run_main(train_mod.main, tiny_args(data_dir, out, "--grad-clip=0", epochs=2), capsys)
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert "epoch 1, batch 3" in last and "second moment v" in last and "layer 1" in last, last
    assert "weights" not in last.split("became")[0]           # the weights were finite
    assert "no checkpoint was written" in last and not (out / "checkpoint.h5").exists()


def test_a_clip_bounds_v_so_its_check_is_skipped():
    """With the gradient clipped to a norm c <= CLIP_BOUNDS_V every element is at most c, and
    AdamW's v (float32, AdamW's beta2) stays finite however long the largest such gradient
    lasts; so the guard checks v only without such a clip."""
    from snnsim.training import guard
    from snnsim.training.optim import ADAMW_BETAS
    assert not guard.needs_v_check(1.0) and not guard.needs_v_check(guard.CLIP_BOUNDS_V)
    assert guard.needs_v_check(None) and guard.needs_v_check(0) and guard.needs_v_check(1e19)

    class Opt:                                                # a v that is inf from the start
        v = [{"W": np.array([1.0, np.inf], np.float32)}]
    assert guard.needs_v_check(1.0, np, Opt())
    b2 = np.float32(ADAMW_BETAS[1])
    g = np.float32(guard.CLIP_BOUNDS_V)
    v = np.float32(0.0)
    for _ in range(10_000):
        v = b2 * v + (np.float32(1) - b2) * g * g
    assert np.isfinite(v) and np.isfinite(g * g)
    g = np.float32(1e20)                                      # beyond the bound, g² overflows
    with np.errstate(over="ignore"):
        assert not np.isfinite(g * g)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_issue_lr_1e6_case_on_fashion_mnist(tmp_path, monkeypatch):
    """The issue's command: --lr=1e6 --weight-clamp=0 --grad-clip=0 on 500 Fashion-MNIST
    samples. Before: exit 0, weights at 1e22 and v = inf in checkpoint.h5."""
    from conftest import fashion_mnist_available
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", REAL_DATA[0])
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", REAL_DATA[1])
    if REAL_DATA[2] is not None:
        monkeypatch.setenv(registry.ENV_VAR, REAL_DATA[2])
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not available on this machine")
    out = tmp_path / "run"
    proc = _subprocess(["train", "--lr=1e6", "--weight-clamp=0", "--grad-clip=0", "--epochs=1",
                        "--train-subset=500", "--test-subset=100", "--progress=false",
                        "--out", str(out)])
    if proc.returncode == 0:
        ck = load_checkpoint(out / "checkpoint.h5", allow_nonfinite=True)
        finite = all(np.isfinite(a).all() for layer in ck["optimizer"]["v"] for a in layer.values())
        pytest.fail(f"exit 0 with lr 1e6; optimizer v finite in the checkpoint: {finite}")
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "diverged" in last and "Traceback" not in proc.stderr
    if (out / "checkpoint.h5").exists():
        load_checkpoint(out / "checkpoint.h5")          # whatever was saved is finite
    else:
        assert "last finite checkpoint" not in last


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_last_finite_checkpoint_only_said_of_a_finite_one(good_run, data_dir, tmp_path, capsys):
    """Resuming a checkpoint whose v is inf for forensics (--allow-nonfinite): the run
    diverges, and the message must not call that file the last finite checkpoint."""
    run = copy_run(good_run, tmp_path)
    mutate(run / "checkpoint.h5", _poison("optimizer/v/layer_00/W", np.inf))
    code, err = run_main(train_mod.main, ["--resume", str(run), "--epochs=3", "--progress=false",
                                          "--data-dir", str(data_dir), "--allow-nonfinite"],
                         capsys)
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert "is the last finite checkpoint" not in last, last
    assert "not a finite checkpoint" in last


# --- recordings (read back by plots) ---------------------------------------------------------
def test_damaged_recording_is_one_line(good_run, data_dir, tmp_path, capsys):
    """A recording whose dataset declares (1e6, 1e6) values, or whose packed spikes claim
    more neurons than their bytes hold: plots exits 2 naming it, nothing allocated."""
    rec = tmp_path / "rec.h5"
    code, err = run_main(record.main, [str(good_run), "--samples", "4", "--full", "--out",
                                       str(rec), "--data-dir", str(data_dir)], capsys)
    assert code == 0, err
    huge, lying = tmp_path / "huge.h5", tmp_path / "lying.h5"
    shutil.copyfile(rec, huge)
    shutil.copyfile(rec, lying)
    with h5py.File(huge, "r+") as f:
        del f["scores"]
        f.create_dataset("scores", shape=(10**6, 10**6), dtype="f4")
    with h5py.File(lying, "r+") as f:
        layer = sorted(f["layers"])[0]
        f[f"layers/{layer}/spikes_packed"].attrs["n_neurons"] = 10**9
    for path in (huge, lying):
        code, err = run_main(plots.main, ["raster", str(path), "--out", str(tmp_path / "p")],
                             capsys)
        assert_one_line(code, err, "plots", path.name)
