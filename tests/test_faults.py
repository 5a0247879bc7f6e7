"""Fault injection: runs you can trust (issue 11).

Each numbered defect of the issue has tests here that failed on the code before the
fix (commit 6742c93) and pass now:

1. divergence is silent                -> test_divergence_*, test_nonfinite_*
2. --data-dir silently replaced       -> test_data_dir_*, test_provenance_*
3. best.h5 stale for good             -> test_best_*, test_soak_*
4. two writers                        -> test_second_writer_*, test_atomic_write_*
5. Ctrl-C message names a missing file -> test_interrupt_during_save_*
6. tracebacks instead of one line     -> test_one_line_*, test_full_disk_*
7. duplicate keys win silently        -> test_duplicate_*
8. smaller ones                       -> test_new_run_*, test_empty_*, test_nmnist_*,
                                         test_input_size_*, test_failed_start_*,
                                         test_leftover_*, test_name_*, test_idx_*,
                                         test_sigterm_*

Every run is a tiny MLP on a tiny synthetic Fashion-MNIST in the real IDX format
(tests/test_train.py's fixture), float64; the kill -9 soak forks the runs
(tests/faults.py) so that it takes seconds.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import procs
import pytest
from faults import check_consistent, finish_run, kill9, kill_window, soak, start_run
from test_train import (
    N_TRAIN,
    idx_bytes,
    synthetic_images,
    tiny_args,
    write_fashion_mnist,
    write_nmnist,
)

from snnsim.commandline import prog_name
from snnsim.datasets import registry
from snnsim.datasets.errors import DatasetError
from snnsim.training import train as train_mod
from snnsim.training.checkpoint import atomic_write, checkpoint_epoch, load_checkpoint, seal

REPO = Path(__file__).resolve().parents[1]
BATCHES_PER_EPOCH = N_TRAIN // 10


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def no_other_data(tmp_path, monkeypatch):
    """A valid dataset sits where the search path would look without --data-dir: an
    explicit --data-dir must never fall back to it."""
    decoy = write_fashion_mnist(tmp_path / "decoy", n_train=40, n_test=20, seed=9)
    monkeypatch.setattr(registry, "SYSTEM_DATA_ROOT", decoy)
    monkeypatch.setattr(registry, "REPO_DATA_ROOT", decoy)
    monkeypatch.delenv(registry.ENV_VAR, raising=False)


def main_status(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python3 -m snnsim.train ARGV`` run in-process;
    an exception escaping main (a traceback) fails the test."""
    try:
        code = train_mod.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, command="train", *needles):
    """Exit status 2, no traceback, and the error on one line naming what is wrong."""
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith((f"snnsim.{command}: error:",
                            f"{prog_name(f'python3 -m snnsim.{command}')}: error:"))
    for needle in needles:
        assert needle in last, (needle, last)


def poison(path, layer="layer_00", name="W"):
    """Write a NaN into a checkpoint's weights (as a diverged run of a writer without the
    guard would have saved), the checksum renewed: the non-finite check, not the
    checksum, is what must refuse it."""
    with h5py.File(path, "r+") as f:
        w = f[f"weights/{layer}/{name}"]
        a = w[()]
        a.flat[3] = np.nan
        w[...] = a
        seal(f)


@contextlib.contextmanager
def failing_hdf5_writer(monkeypatch, code: int, text: str, calls):
    """Within the block the n-th opening of an HDF5 file for writing, n in ``calls``
    (1-based), raises OSError(code, text), as a full or failing disk does."""
    real_file = h5py.File
    n = {"w": 0}

    def file(name, mode="r", *a, **k):
        if mode == "w":
            n["w"] += 1
            if n["w"] in calls:
                raise OSError(code, text, str(name))
        return real_file(name, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", file)
    try:
        yield
    finally:
        monkeypatch.setattr(h5py, "File", real_file)


def tree(run_dir) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir()) if p.is_file()}


# --- 1. divergence ---------------------------------------------------------------------
def test_divergence_stops_naming_epoch_batch_and_layer(data_dir, tmp_path, monkeypatch, capsys):
    """A NaN weight after batch 3 of epoch 2: exit 3, message names epoch, batch and
    layer, epoch 1's checkpoint and best stay as they were (finite)."""
    out = tmp_path / "run"
    real_step = train_mod.train_step
    calls = {"n": 0}

    def step(net, *args, **kwargs):
        result = real_step(net, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == BATCHES_PER_EPOCH + 3:
            net.params[1]["W"][0, 0] = np.nan
        return result

    monkeypatch.setattr(train_mod, "train_step", step)
    code, _, err = main_status(tiny_args(data_dir, out, epochs=3), capsys)
    assert code == 3, err
    assert "epoch 2, batch 3" in err and "layer 1" in err and "Traceback" not in err
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
    assert load_checkpoint(out / "best.h5")["epoch"] == 1
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the overflow it provokes
def test_divergence_of_a_huge_learning_rate_is_caught(data_dir, tmp_path, capsys):
    """No injection: lr 1e38 in float32 with clip and clamp off overflows the weights
    in the first steps; the run must stop (exit 3) before any checkpoint is written."""
    out = tmp_path / "run"
    code, _, err = main_status(tiny_args(data_dir, out, "--lr=1e38", "--grad_clip=0",
                                         "--weight_clamp=0", epochs=2, dtype="float32"), capsys)
    assert code == 3, err
    assert "epoch 1, batch" in err and "layer" in err
    assert not (out / "checkpoint.h5").exists()


def test_nonfinite_checkpoint_refused_by_every_loader(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main_status(tiny_args(data_dir, out, epochs=1), capsys)[0] == 0
    poison(out / "checkpoint.h5")
    poison(out / "best.h5")
    with pytest.raises(Exception, match="non-finite"):
        load_checkpoint(out / "checkpoint.h5")
    forensics = load_checkpoint(out / "checkpoint.h5", allow_nonfinite=True)
    assert np.isnan(forensics["weights"][0]["W"]).sum() == 1
    code, _, err = main_status(["--resume", str(out), "--epochs=2", "--progress=false"], capsys)
    assert_one_line_error(code, err, "train", "non-finite")
    from snnsim.analysis import inspection, plots, record
    for command, main, argv in (
            ("record", record.main, [str(out), "--samples", "5", "--out", str(tmp_path / "r.h5"),
                                     "--data-dir", str(data_dir)]),
            ("inspection", inspection.main, ["--checkpoint", str(out / "best.h5"),
                                             "--samples", "0,1",
                                             "--data-dir", str(data_dir),
                                             "--out", str(tmp_path / "i.h5")]),
            ("plots", plots.main, ["curves", str(out / "checkpoint.h5"),
                                   "--out", str(tmp_path / "p")])):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert_one_line_error(code, err, command, "non-finite")
    # for forensics
    assert record.main([str(out), "--samples", "5", "--out", str(tmp_path / "r.h5"),
                        "--data-dir", str(data_dir), "--allow-nonfinite"]) == 0


@pytest.mark.parametrize("option", ["--lr=inf", "--lr=nan", "--eps=0", "--eps=-1e-8",
                                    "--weight_decay=-0.01", "--betas=1.0,0.999",
                                    "--betas=0.9,1.5", "--betas=-0.1,0.9", "--seed=-1"])
def test_nonfinite_or_out_of_range_optimizer_values_are_one_line(data_dir, tmp_path, capsys,
                                                                 option):
    key = option[2:].split("=")[0]
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", option) if key != "seed"
                               else tiny_args(data_dir, tmp_path / "run", seed=-1), capsys)
    assert_one_line_error(code, err, "train", key)
    assert not (tmp_path / "run").exists()


# --- 2. an explicit --data-dir, provenance ------------------------------------------------
@pytest.mark.parametrize("case", ["missing", "file_is_a_dir", "only_train"])
def test_data_dir_is_used_or_the_run_fails(data_dir, tmp_path, capsys, case):
    mine = tmp_path / "mine"
    if case != "missing":
        write_fashion_mnist(mine)
        d = mine / "fashion-mnist"
        if case == "file_is_a_dir":
            (d / "t10k-images-idx3-ubyte.gz").unlink()
            (d / "t10k-images-idx3-ubyte").mkdir()
        else:
            for p in d.glob("t10k-*"):
                p.unlink()
    out = tmp_path / "run"
    code, _, err = main_status(tiny_args(mine, out), capsys)
    assert_one_line_error(code, err, "train", str(mine))
    assert not out.exists()


def test_provenance_records_the_files_read(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, text, _ = main_status(tiny_args(data_dir, out), capsys)
    assert code == 0
    files = json.loads((out / "config.json").read_text())["data_files"]
    on_disk = sorted((data_dir / "fashion-mnist").iterdir())
    assert sorted(Path(r["path"]) for r in files) == on_disk
    for r in files:
        digest = hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest()
        assert r["sha256"] == digest and digest in text            # printed
        assert r["bytes"] == Path(r["path"]).stat().st_size
    assert load_checkpoint(out / "checkpoint.h5")["data_files"] == files
    assert load_checkpoint(out / "best.h5")["data_files"] == files


def test_provenance_paths_inside_the_repo_are_relative():
    """Relative to the source tree when the package tested is the source tree's; an
    installed package (scripts/check_dist.sh) has no repository: every path as given,
    also one beside the package in site-packages."""
    import snnsim
    from snnsim.training.provenance import display_path
    inside = REPO / "data" / "x" / "f.gz"
    pkg = Path(snnsim.__file__).resolve().parent
    if pkg == REPO / "snnsim":
        assert display_path(inside) == os.path.join("data", "x", "f.gz")
    else:
        beside = pkg.parent / "data" / "f.gz"
        assert display_path(inside) == str(inside)
        assert display_path(beside) == str(beside)
    assert display_path("/elsewhere/f.gz") == "/elsewhere/f.gz"


# --- 3. best.h5 never stale ------------------------------------------------------------
def test_best_repaired_after_a_kill_between_checkpoint_and_best(data_dir, tmp_path,
                                                                monkeypatch, capsys):
    """The process dies (here: KeyboardInterrupt) while copying best.h5 after epoch 1's
    checkpoint: resuming must bring best.h5 to epoch 1."""
    import shutil
    out = tmp_path / "run"
    real_copy = shutil.copyfile

    def copy(src, dst, *a, **k):
        if Path(dst).name.startswith("best.h5"):
            raise KeyboardInterrupt
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", copy)
    code, _, _ = main_status(tiny_args(data_dir, out, epochs=1), capsys)
    assert code == train_mod.EXIT_INTERRUPTED
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
    assert not (out / "best.h5").exists()
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    code, _, err = main_status(["--resume", str(out), "--progress=false"], capsys)
    assert code == 0, err
    assert checkpoint_epoch(out / "best.h5") == 1


def test_best_survives_a_failing_save(data_dir, tmp_path, monkeypatch, capsys):
    """An exception inside the checkpoint writer of epoch 2: checkpoint and best stay
    at epoch 1, consistent, and the error is one line."""
    out = tmp_path / "run"
    with failing_hdf5_writer(monkeypatch, errno.EIO, "Input/output error", calls=(2,)):
        code, _, err = main_status(tiny_args(data_dir, out, epochs=3), capsys)
    assert_one_line_error(code, err, "train", "Input/output error")
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
    assert check_consistent(out)["lagging"] is False
    assert not list(out.glob("*.tmp"))


def test_soak_random_kills_leave_a_consistent_folder(data_dir, tmp_path):
    """kill -9 at 20+ random instants of a tiny run, resumed each time: every
    checkpoint loads, best.h5 holds the checkpoint's best epoch (or lags by the one
    promotion the next start repairs), and the finished run has best.h5 equal to
    the best epoch of metrics.jsonl, with the same final weights as a run never
    killed (resume is bit-exact). 60 epochs: the kill window is timed before the soak, and
    on a machine whose load drops meanwhile 30 epochs could finish before the 20th kill."""
    epochs = 60
    startup, per_epoch = kill_window(lambda out, n: tiny_args(data_dir, out, epochs=n),
                                     tmp_path, epochs)
    out = tmp_path / "run"
    result = soak(tiny_args(data_dir, out, epochs=epochs),
                  ["--resume", str(out), "--progress=false"], out, epochs=epochs, kills=20,
                  rng=np.random.default_rng(11), max_delay=startup + 3 * per_epoch)
    assert result["kills"] >= 20
    assert len(set(result["epochs_at_kill"])) > 3          # the kills hit many epochs
    a = load_checkpoint(tmp_path / "ref" / "checkpoint.h5")["weights"]
    b = load_checkpoint(out / "checkpoint.h5")["weights"]
    for la, lb in zip(a, b):
        for k in la:
            assert np.array_equal(la[k], lb[k])


def test_a_forked_run_does_not_wait_on_the_parents_write_lock(data_dir, tmp_path):
    """tqdm's write lock taken in this process by another thread, as tqdm's monitor
    thread takes it every 10 s and as a forked run killed inside tqdm.write left it (its
    semaphore is shared across fork): a run started by start_run finishes all the
    same. Sharing the lock, the run blocked at its first line, at 0 % CPU, for ever."""
    from tqdm import tqdm
    lock, held, release = tqdm.get_lock(), threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(60)
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        finish_run(start_run(tiny_args(data_dir, tmp_path / "run", epochs=1)),
                   "a run forked while the write lock was held", timeout=60)
    finally:
        release.set()
        holder.join(60)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.h5")["epoch"] == 1


# --- 4. one writer ------------------------------------------------------------------------
def test_second_writer_fails_with_one_line(data_dir, tmp_path, capsys):
    """While a process holds the run folder (a run training in it), a second run or
    a --resume on it fails at once and changes nothing."""
    from filelock import FileLock
    out = tmp_path / "run"
    assert main_status(tiny_args(data_dir, out, epochs=1), capsys)[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    with FileLock(str(out / "run.lock"), timeout=0), FileLock(str(other / "run.lock"), timeout=0):
        before, before_other = tree(out), tree(other)
        code, _, err = main_status(["--resume", str(out), "--epochs=2", "--progress=false"],
                                   capsys)
        assert_one_line_error(code, err, "train", "in use")
        code, _, err = main_status(tiny_args(data_dir, other, epochs=1), capsys)
        assert_one_line_error(code, err, "train", "in use")
    assert tree(out) == before and tree(other) == before_other


def test_second_writer_process_fails_while_the_first_trains(data_dir, tmp_path):
    """Two real processes on one --out: a --resume of the folder while the first still
    trains in it exits 2 with one line; the first, stopped afterwards with SIGTERM,
    wrote every epoch once, in order (no interleaved rows)."""
    out = tmp_path / "run"
    first = start_run(tiny_args(data_dir, out, epochs=100_000))      # stopped below
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.h5").exists():   # SIGTERM's handler is installed by then
            assert first.is_alive() and time.time() < deadline, "the first run wrote no checkpoint"
            time.sleep(0.01)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
        try:
            second = subprocess.run([sys.executable, "-m", "snnsim.train", "--resume",
                                     str(out), "--progress=false"], capture_output=True,
                                    text=True, env=env, cwd=REPO, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail("the second writer did not stop: it is training in the same folder")
        assert first.is_alive()
        os.kill(first.pid, signal.SIGTERM)
        first.join(timeout=60)
    finally:
        if first.is_alive():
            kill9(first)
    assert first.exitcode == train_mod.EXIT_INTERRUPTED
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().startswith("snnsim.train: error:") and "in use" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    epochs = [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == len(epochs)  # SIGTERM waits


def test_atomic_write_temporary_names_are_unique(tmp_path):
    """Two saves of one file in flight at once (here: one inside the other) must not
    share a temporary file."""
    (tmp_path / "w").mkdir()
    target = tmp_path / "w" / "f.txt"

    def outer(tmp):
        Path(tmp).write_text("outer")
        atomic_write(target, lambda t: Path(t).write_text("inner"))
    atomic_write(target, outer)
    assert target.read_text() == "outer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


# --- 5. the interrupt message -----------------------------------------------------------------
def test_interrupt_during_save_names_the_checkpoint_on_disk(data_dir, tmp_path, monkeypatch,
                                                           capsys):
    out = tmp_path / "run"
    real_save = train_mod.save_checkpoint

    def save(path, **kw):
        if kw["epoch"] == 2:
            raise KeyboardInterrupt
        return real_save(path, **kw)

    monkeypatch.setattr(train_mod, "save_checkpoint", save)
    code, text, _ = main_status(tiny_args(data_dir, out, epochs=3), capsys)
    assert code == train_mod.EXIT_INTERRUPTED
    assert "during epoch 2" in text and "(epoch 1)" in text and "(epoch 2)" not in text
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    code, _, err = main_status(["--resume", str(out), "--progress=false"], capsys)
    assert code == 0, err


# --- 6. one line, never a traceback ---------------------------------------------------------
def test_one_line_output_size_not_the_classes(data_dir, tmp_path, capsys):
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", network="784-24-7"), capsys)
    assert_one_line_error(code, err, "train", "7", "10 classes")


def test_one_line_cupy_without_cupy(data_dir, tmp_path, capsys):
    from snnsim.backend import cupy_available
    if cupy_available():
        pytest.skip("CuPy works here: --backend cupy is no error")
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", "--backend", "cupy"), capsys)
    assert_one_line_error(code, err, "train")


def test_one_line_fused_on_numpy(data_dir, tmp_path, capsys):
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", "--fused=true"), capsys)
    assert_one_line_error(code, err, "train", "fused")


@pytest.mark.parametrize("case", ["file", "under_a_file", "symlink_loop"])
def test_one_line_unusable_out(data_dir, tmp_path, capsys, case):
    f = tmp_path / "afile"
    f.write_text("x")
    out = {"file": f, "under_a_file": f / "run"}.get(case)
    if case == "symlink_loop":
        out = tmp_path / "loop"
        out.symlink_to(out)
    code, _, err = main_status(tiny_args(data_dir, out), capsys)
    assert_one_line_error(code, err, "train", str(out) if case != "under_a_file" else str(f))


def test_one_line_unreadable_data_file(data_dir, tmp_path, monkeypatch, capsys):
    """A data file the OS will not read (PermissionError; tests run as root here, so it
    is raised by the reader)."""
    from snnsim.datasets import idx

    def read_idx(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(idx, "read_idx", read_idx)
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "train", "Permission denied", "idx")


def test_one_line_symlink_loop_in_data_dir(data_dir, tmp_path, capsys):
    mine = write_fashion_mnist(tmp_path / "mine")
    d = mine / "fashion-mnist"
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte.gz").symlink_to(d / "t10k-labels-idx1-ubyte.gz")
    code, _, err = main_status(tiny_args(mine, tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "train", "t10k-labels")


def test_full_disk_failing_writer_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch,
                                                                capsys):
    """ENOSPC from the HDF5 writer at epoch 2's save: one line, exit 2, epoch 1 kept."""
    out = tmp_path / "run"
    with failing_hdf5_writer(monkeypatch, errno.ENOSPC, "No space left on device",
                             calls=range(2, 100)):
        code, _, err = main_status(tiny_args(data_dir, out, epochs=3), capsys)
    assert_one_line_error(code, err, "train", "No space left on device")
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1


def test_full_disk_on_a_small_tmpfs(data_dir, tmp_path, capsys):
    """A real full disk: a 1200 KiB tmpfs holds epoch 1's checkpoint and best (about
    470 KiB each) but not epoch 2's temporary file. Needs mount (root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)],
                      capture_output=True, check=False, timeout=60).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        out = mnt / "run"
        code, _, err = main_status(tiny_args(data_dir, out, epochs=3), capsys)
        assert_one_line_error(code, err, "train", "No space left on device")
        assert load_checkpoint(out / "checkpoint.h5")["epoch"] == 1
        assert not list(out.glob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=60)


@pytest.mark.parametrize("command", ["record", "inspection", "plots"])
def test_one_line_analysis_commands(tmp_path, capsys, command):
    from snnsim.analysis import inspection, plots, record
    missing = str(tmp_path / "nope.h5")
    main, argv = {"record": (record.main, [missing]),
                  "inspection": (inspection.main, ["--checkpoint", missing]),
                  "plots": (plots.main, ["curves", missing, "--out", str(tmp_path)])}[command]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert_one_line_error(code, capsys.readouterr().err, command, "nope")


def test_debug_shows_the_traceback(data_dir, tmp_path):
    with pytest.raises(Exception, match="10 classes"):
        train_mod.main(tiny_args(data_dir, tmp_path / "run", "--debug", network="784-24-7"))


# --- 7. duplicate keys ------------------------------------------------------------------------
def test_duplicate_yaml_key_is_an_error(data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nlr: 0.001\nepochs: 3\n")
    code, _, err = main_status(["--config", str(cfg), "--data-dir", str(data_dir), "--out",
                                str(tmp_path / "run")], capsys)
    assert code == 2 and "epochs" in err and "twice" in err


def test_duplicate_layer_name_is_an_error(data_dir, tmp_path, capsys):
    net = tmp_path / "net.yaml"
    net.write_text("Network:\n  n_steps: 5\nLayers:\n"
                   "  hidden:\n    type: linear\n    n_inputs: 784\n    n_outputs: 20\n"
                   "  hidden:\n    type: linear\n    n_inputs: 20\n    n_outputs: 20\n"
                   "  output:\n    type: linear\n    n_inputs: 20\n    n_outputs: 10\n")
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", network=str(net)), capsys)
    assert_one_line_error(code, err, "train", "hidden", "twice")


@pytest.mark.parametrize("extra", [("--lr=0.1", "--lr=0.2"), ("--lr", "0.1", "--lr=0.2"),
                                   ("--epochs=1",)])
def test_duplicate_command_line_option_is_an_error(data_dir, tmp_path, capsys, extra):
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", *extra), capsys)
    assert code == 2 and "twice" in err


# --- 8. the smaller ones ----------------------------------------------------------------------
def test_new_run_refuses_a_folder_holding_only_best(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main_status(tiny_args(data_dir, out), capsys)[0] == 0
    for name in ("checkpoint.h5", "config.json", "metrics.jsonl"):
        (out / name).unlink()
    before = (out / "best.h5").read_bytes()
    code, _, err = main_status(tiny_args(data_dir, out), capsys)
    assert_one_line_error(code, err, "train", "best.h5")
    assert (out / "best.h5").read_bytes() == before


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_empty_split_is_refused(tmp_path, capsys, split):
    root = write_fashion_mnist(tmp_path / "d")
    d = root / "fashion-mnist"
    images, labels = synthetic_images(0, np.random.default_rng(0))
    (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(
        images.reshape(0, 28, 28))))
    (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    code, _, err = main_status(tiny_args(root, tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "train", "empty")


def test_nmnist_bad_test_file_found_before_training(tmp_path, monkeypatch, capsys):
    root = write_nmnist(tmp_path)
    (root / "Test" / "7" / "00000.bin").write_bytes(b"\x01\x02\x03")      # not 5-byte events
    steps = {"n": 0}
    real_step = train_mod.train_step

    def step(*a, **k):
        steps["n"] += 1
        return real_step(*a, **k)
    monkeypatch.setattr(train_mod, "train_step", step)
    code, _, err = main_status(["--dataset=nmnist", "--data-dir", str(tmp_path), "--out",
                                str(tmp_path / "run"), "--network=2x34x34:2312-10",
                                "--epochs=1", "--batch-size=5", "--progress=false",
                                "--n_steps=3"], capsys)
    assert_one_line_error(code, err, "train", "00000.bin")
    assert steps["n"] == 0


def test_input_size_in_network_is_checked(data_dir, tmp_path, capsys):
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", network="785-24-10"), capsys)
    assert_one_line_error(code, err, "train", "785", "784")


def test_failed_start_leaves_no_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = main_status(tiny_args(tmp_path / "no-data", out), capsys)
    assert code == 2 and not out.exists()


def test_failed_start_after_the_folder_was_made_removes_it(data_dir, tmp_path, monkeypatch,
                                                           capsys):
    """A failure between writing config.json and the first checkpoint (Ctrl-C in the
    first epoch) leaves no folder holding only config.json."""
    out = tmp_path / "run"

    def step(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "train_step", step)
    code, text, _ = main_status(tiny_args(data_dir, out), capsys)
    assert code == train_mod.EXIT_INTERRUPTED and "before any checkpoint" in text
    assert not out.exists()


def test_leftover_temporary_files_are_cleaned_on_start(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main_status(tiny_args(data_dir, out), capsys)[0] == 0
    for name in ("checkpoint.h5.tmp", "checkpoint.h5.4242.deadbeef.tmp", "best.h5.1.ab.tmp"):
        (out / name).write_bytes(b"\0" * 1000)
    code, _, err = main_status(["--resume", str(out), "--epochs=2", "--progress=false"], capsys)
    assert code == 0, err
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("name", ["../../x", "a/b", ".."])
def test_name_outside_runs_is_refused(data_dir, tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    args = [a for a in tiny_args(data_dir, "unused") if a not in ("--out", "unused")]
    code, _, err = main_status([*args, f"--name={name}"], capsys)
    assert_one_line_error(code, err, "train", "name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "decoy", "fashion-mnist"] \
        + sorted(p.name for p in (tmp_path / "decoy" / "fashion-mnist").iterdir())


def test_idx_gzip_is_decompressed_only_to_the_declared_size(tmp_path):
    """A 64 MiB gzip stream whose header declares 2 labels: refused without
    decompressing it whole (peak traced memory far below the stream's size)."""
    from snnsim.datasets.idx import read_idx
    path = tmp_path / "bomb-labels-idx1-ubyte.gz"
    header = bytes([0, 0, 0x08, 1]) + (2).to_bytes(4, "big")
    path.write_bytes(gzip.compress(header + bytes(64 << 20), compresslevel=9))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="trailing"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


@pytest.mark.parametrize("signum, said", [(signal.SIGTERM, "terminated (SIGTERM)"),
                                           (signal.SIGINT, "interrupted")])
def test_a_signal_stops_the_run_resumably(data_dir, tmp_path, capsys, signum, said):
    """SIGTERM and Ctrl-C's SIGINT stop a run (exit 130) with a consistent folder."""
    out = tmp_path / "run"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = procs.start([sys.executable, "-m", "snnsim.train",
                        *tiny_args(data_dir, out, epochs=5000)], cwd=REPO, env=env)
    # the first checkpoint: the handlers are installed by then
    procs.wait_for((out / "checkpoint.h5").exists, proc, 120, "the first checkpoint")
    proc.send_signal(signum)
    stdout, stderr = procs.finish(proc, 120)
    assert proc.returncode == train_mod.EXIT_INTERRUPTED, stderr
    assert f"\n{said} " in stdout and f"--resume {out}" in stdout
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    epoch = load_checkpoint(out / "checkpoint.h5")["epoch"]
    assert 1 <= epoch < 5000
    assert check_consistent(out)["epoch"] == epoch
    code, _, err = main_status(["--resume", str(out), "--progress=false",
                                f"--epochs={epoch + 1}"], capsys)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == epoch + 1


def test_a_signal_is_a_request_checked_at_the_next_safe_point():
    """Within the run's block SIGINT and SIGTERM only record the request (Python's own
    SIGINT handler raised wherever the run was, also in a finaliser that dropped it);
    stop.check() raises; a second signal raises at once; the handlers are restored."""
    from snnsim.training import runfolder
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for signum, kind in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, runfolder.Terminated)):
        with runfolder.sigterm_as_interrupt() as stop:
            os.kill(os.getpid(), signum)
            time.sleep(0.01)            # the handler runs (it raised here, for SIGINT)
            assert stop.requested and stop.signum == signum
            with pytest.raises(kind) as first:
                stop.check()
            assert isinstance(first.value, runfolder.Terminated) == (signum == signal.SIGTERM)
            with pytest.raises(kind):
                os.kill(os.getpid(), signum)
                time.sleep(1)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a run started in the background
    try:
        with runfolder.sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before[0])
