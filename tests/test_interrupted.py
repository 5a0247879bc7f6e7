"""A run stopped inside an epoch (SIGINT or SIGTERM at the safe point after a batch) keeps
the epoch so far in ``interrupted.h5``, and ``--resume`` goes on from that batch: the
finished run is bit-identical to one never stopped (every weight, optimizer moment, the
rng state and the per-epoch losses and accuracies), in float32, where any change in the
order of the samples or the dropout draws would show. The file is checked when read back
like a checkpoint, and one that does not continue the folder's checkpoint is passed over.

The runs are in-process (``train.main``) on the tiny synthetic Fashion-MNIST of
tests/test_train.py: 60 training samples, batches of 10, so 6 batches per epoch.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

import h5py
import numpy as np
import pytest
from test_train import assert_same_weights, run_cli, tiny_args, write_fashion_mnist

from snnsim import study as study_mod
from snnsim.training import runfolder
from snnsim.training import train as train_mod
from snnsim.training.checkpoint import CheckpointError, kept_batches, load_checkpoint, seal

PER_EPOCH = 6
EPOCHS = 3

def new_run(data_dir, out, epochs=EPOCHS) -> list[str]:
    """Same settings for every run: float32, and a dropout layer, so that the rng is drawn
    at every step."""
    return tiny_args(data_dir, out, epochs=epochs, dtype="float32", network="784-24-D0.2-10")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """The run never stopped."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert run_cli(new_run(data_dir, out)) == 0
    return out


def _replace(group, name, data):
    del group[name]
    group[name] = data


def stop_after(monkeypatch, steps: list[int], signum=signal.SIGINT):
    """Send ``signum`` to this process right after each of the given training steps
    (counted over the whole process, 1-based): the run stops at the next safe point."""
    real = train_mod.train_step
    count = {"n": 0}

    def step(*args, **kwargs):
        out = real(*args, **kwargs)
        count["n"] += 1
        if count["n"] in steps:
            os.kill(os.getpid(), signum)
        return out
    monkeypatch.setattr(train_mod, "train_step", step)
    return real


def assert_same_run(a_dir, b_dir):
    a, b = load_checkpoint(a_dir / "checkpoint.h5"), load_checkpoint(b_dir / "checkpoint.h5")
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert_same_weights(a["weights"], b["weights"])
    for moment in ("m", "v"):
        assert_same_weights(a["optimizer"][moment], b["optimizer"][moment])
    assert a["optimizer"]["step"] == b["optimizer"]["step"] == EPOCHS * PER_EPOCH
    assert a["rng_state"] == b["rng_state"]
    for key in ("train_loss", "train_acc", "test_acc", "test_silent", "test_spikes"):
        assert [r[key] for r in a["metrics"]] == [r[key] for r in b["metrics"]], key
    rows = [json.loads(line) for line in (b_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert not (b_dir / "interrupted.h5").exists()       # removed once its epoch was whole


@pytest.mark.parametrize("stops", [
    [PER_EPOCH + 2],                   # inside epoch 2
    [3],                               # inside epoch 1: no checkpoint.h5 yet
    [PER_EPOCH],                       # after the last batch of epoch 1, before its test pass
    [PER_EPOCH + 2, PER_EPOCH + 4],    # stopped twice in epoch 2 (steps of the two starts)
])
def test_a_run_stopped_inside_an_epoch_goes_on_from_that_batch(data_dir, straight, tmp_path,
                                                                monkeypatch, capsys, stops):
    out = tmp_path / "run"
    real = stop_after(monkeypatch, [stops[0]])
    assert run_cli(new_run(data_dir, out)) == train_mod.EXIT_INTERRUPTED
    epoch, batch = divmod(stops[0] - 1, PER_EPOCH)
    text = capsys.readouterr().out
    assert (f"interrupted after batch {batch + 1} of {PER_EPOCH} in epoch {epoch + 1}; the state "
            f"is kept in {out / 'interrupted.h5'}") in text, text
    state = load_checkpoint(out / "interrupted.h5")
    assert state["epoch"] == epoch and state["partial"]["batches_done"] == batch + 1
    assert state["partial"]["samples_seen"] == 10 * (batch + 1)
    assert (out / "checkpoint.h5").exists() == (epoch > 0)
    if len(stops) > 1:                 # the second stop counts the resumed start's steps
        stop_after(monkeypatch, [stops[1] - stops[0]])
        assert run_cli(["--resume", str(out), "--progress=false"]) == train_mod.EXIT_INTERRUPTED
        text = capsys.readouterr().out
        assert f"batch {batch + 1} of epoch {epoch + 1}" in text
        assert load_checkpoint(out / "interrupted.h5")["partial"]["batches_done"] == (
            (stops[1] - 1) % PER_EPOCH + 1)
    monkeypatch.setattr(train_mod, "train_step", real)
    assert run_cli(["--resume", str(out), "--progress=false"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert_same_run(straight, out)


def test_sigterm_inside_an_epoch_keeps_it_too(data_dir, straight, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = stop_after(monkeypatch, [PER_EPOCH + 5], signal.SIGTERM)
    assert run_cli(new_run(data_dir, out)) == train_mod.EXIT_INTERRUPTED
    assert "terminated (SIGTERM) after batch 5 of 6 in epoch 2" in capsys.readouterr().out
    monkeypatch.setattr(train_mod, "train_step", real)
    assert run_cli(["--resume", str(out), "--progress=false"]) == 0
    assert_same_run(straight, out)


@pytest.mark.parametrize("broken", ["rng", "order"])
def test_the_check_can_fail(data_dir, straight, tmp_path, monkeypatch, broken):
    """The comparison above is not vacuous: a resume from interrupted.h5 with a fresh rng
    (the dropout draws after the stop differ), or with the epoch's sample order changed
    (the file sealed again), ends with other weights."""
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)
    if broken == "rng":
        monkeypatch.setattr(train_mod, "restore_rng", lambda state: np.random.default_rng([3, 1]))
    else:
        with h5py.File(out / "interrupted.h5", "r+") as f:
            order = f["partial/order"][()]
            _replace(f["partial"], "order", np.roll(order, 10))   # the batches after the stop
            seal(f)
    assert run_cli(["--resume", str(out), "--progress=false"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.h5"), load_checkpoint(out / "checkpoint.h5")
    assert b["optimizer"]["step"] == EPOCHS * PER_EPOCH
    assert not np.array_equal(a["weights"][0]["W"], b["weights"][0]["W"])


def stopped_in_epoch_2(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = stop_after(monkeypatch, [PER_EPOCH + 3])
    assert run_cli(new_run(data_dir, out)) == train_mod.EXIT_INTERRUPTED
    monkeypatch.setattr(train_mod, "train_step", real)
    return out


def test_an_interrupted_file_of_another_checkpoint_is_passed_over(data_dir, tmp_path,
                                                                   monkeypatch, capsys):
    """interrupted.h5 left from an earlier epoch (a kill between the epoch's checkpoint and
    its removal): the resume names it and starts from checkpoint.h5; a damaged one too."""
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)
    assert kept_batches(out / "interrupted.h5", out / "checkpoint.h5") == 3
    assert study_mod.starting_text(out) == "resuming after epoch 1, batch 3 of epoch 2"
    stale = (out / "interrupted.h5").read_bytes()
    assert run_cli(["--resume", str(out), "--epochs=2", "--progress=false"]) == 0
    (out / "interrupted.h5").write_bytes(stale)            # continues epoch 1, not 2
    # What a study worker's log says: the checkpoint's epoch, and no batch of this file.
    assert kept_batches(out / "interrupted.h5", out / "checkpoint.h5") is None
    assert study_mod.starting_text(out) == "resuming after epoch 2"
    capsys.readouterr()
    assert run_cli(["--resume", str(out), f"--epochs={EPOCHS}", "--progress=false"]) == 0
    text = capsys.readouterr().out
    assert f"note: {out / 'interrupted.h5'} is not the continuation of" in text
    assert f"resuming {out / 'checkpoint.h5'} after epoch 2\n" in text
    assert load_checkpoint(out / "checkpoint.h5")["optimizer"]["step"] == EPOCHS * PER_EPOCH

    out = stopped_in_epoch_2(data_dir, tmp_path / "damaged", monkeypatch)
    with h5py.File(out / "interrupted.h5", "r+") as f:
        f["partial"].attrs["batches_done"] = 7                  # more than an epoch has
        seal(f)
    with pytest.raises(CheckpointError, match="batches_done is 7, expected 1..6"):
        load_checkpoint(out / "interrupted.h5")
    capsys.readouterr()
    assert run_cli(["--resume", str(out), "--progress=false"]) == 0
    text = capsys.readouterr().out
    assert "batches_done is 7, expected 1..6; resuming" in text and "starts again" in text


@pytest.mark.parametrize("edit, message", [
    (lambda g: _replace(g, "order", np.arange(60) % 59), "not a permutation"),
    (lambda g: g.attrs.__setitem__("correct", 99), "correct is 99, expected 0..30"),
    (lambda g: g.attrs.__setitem__("loss_sum", np.nan), "loss_sum is nan"),
    (lambda g: _replace(g, "grad_norms", np.zeros(9)), "grad_norms is float64 of shape (9,)"),
])
def test_a_damaged_partial_group_is_named(data_dir, tmp_path, monkeypatch, edit, message):
    """Each part of /partial is checked on reading (the file sealed again after the edit,
    so that the checksum does not catch it first)."""
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)
    with h5py.File(out / "interrupted.h5", "r+") as f:
        edit(f["partial"])
        seal(f)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(out / "interrupted.h5")


def test_a_new_run_refuses_a_folder_holding_an_interrupted_one(data_dir, tmp_path, monkeypatch,
                                                              capsys):
    """Stopped inside epoch 1, the folder holds interrupted.h5 alone (no checkpoint.h5): a
    new run there is refused, and --resume finds it."""
    out = tmp_path / "run"
    real = stop_after(monkeypatch, [2])
    assert run_cli(new_run(data_dir, out, epochs=1)) == train_mod.EXIT_INTERRUPTED
    monkeypatch.setattr(train_mod, "train_step", real)
    assert not (out / "checkpoint.h5").exists() and (out / "interrupted.h5").exists()
    assert run_cli(tiny_args(data_dir, out, epochs=1)) == 2
    assert "already holds a run (interrupted.h5)" in capsys.readouterr().err
    assert runfolder.resume_file(out) == out / "interrupted.h5"   # what a study's retry resumes
    assert study_mod.starting_text(out) == "resuming, batch 2 of epoch 1"
    assert run_cli(["--resume", "--out", str(out), "--progress=false"]) == 0
    assert load_checkpoint(out / "checkpoint.h5")["optimizer"]["step"] == PER_EPOCH
    assert runfolder.resume_file(out) == out / "checkpoint.h5"
    assert runfolder.resume_file(tmp_path / "nothing") is None
    assert study_mod.starting_text(tmp_path / "nothing") == "starting"


def test_kept_batches_is_none_for_files_that_say_nothing(data_dir, tmp_path, monkeypatch):
    """kept_batches reads attributes only, for a log line: a checkpoint without /partial,
    a file of another format, an unreadable one or a missing one give None, never an
    error (the resume itself checks the files)."""
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)
    ckpt, part = out / "checkpoint.h5", out / "interrupted.h5"
    assert kept_batches(part, ckpt) == 3
    assert kept_batches(ckpt, ckpt) is None                  # a checkpoint keeps no batch
    assert kept_batches(part) is None                        # continues a checkpoint
    assert kept_batches(part, tmp_path / "missing.h5") is None
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert kept_batches(tmp_path / "junk.h5", ckpt) is None
    assert kept_batches(tmp_path, ckpt) is None              # a folder
    with h5py.File(part, "r+") as f:
        f.attrs["format"] = "something else"
    assert kept_batches(part, ckpt) is None


def test_a_resume_that_cannot_go_on_from_the_batch_is_refused(data_dir, tmp_path, monkeypatch):
    """interrupted.h5 continued over another number of training samples (other data in
    --data-dir): one error naming the file and checkpoint.h5."""
    from snnsim.training.config import ConfigError, TrainConfig
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)
    state = train_mod.resume_state(out / "checkpoint.h5")
    assert state["path"] == str(out / "interrupted.h5")
    cfg = TrainConfig.from_dict(state["config"])
    fewer = write_fashion_mnist(tmp_path / "fewer", n_train=50)
    with pytest.raises(ConfigError, match=r"interrupted.h5: stopped inside an epoch of 60 "
                                          r"training samples, but this run has 50; resume .*"
                                          r"checkpoint.h5 instead"):
        train_mod._prepare(cfg.replace(data_dir=str(fewer)), state)


def test_a_crash_inside_an_epoch_loses_at_most_the_save_interval(data_dir, straight, tmp_path,
                                                                  monkeypatch):
    """With --save-every-s tiny (after every batch), a run that crashes in batch 5 of
    epoch 2 (no stop, no clean-up: an exception out of the step) has kept batches 1-4 in
    interrupted.h5, and the resume from it is bit-identical to the run never stopped. With
    save_every_s 0 nothing is kept inside the epoch."""
    class Crash(Exception):
        pass

    real = train_mod.train_step
    for every, kept in ((1e-9, 4), (0, None)):
        out = tmp_path / f"every{every}"
        count = {"n": 0}

        def step(*args, count=count, **kwargs):
            count["n"] += 1
            if count["n"] == PER_EPOCH + 5:
                raise Crash
            return real(*args, **kwargs)
        monkeypatch.setattr(train_mod, "train_step", step)
        with pytest.raises(Crash):
            run_cli([*new_run(data_dir, out), f"--save-every-s={every}"])
        monkeypatch.setattr(train_mod, "train_step", real)
        if kept is None:
            assert not (out / "interrupted.h5").exists()
            continue
        assert load_checkpoint(out / "interrupted.h5")["partial"]["batches_done"] == kept
        assert run_cli(["--resume", str(out), "--progress=false"]) == 0
        assert_same_run(straight, out)


def test_the_time_estimate_counts_a_resumed_epoch_as_a_whole_one(data_dir, tmp_path,
                                                                  monkeypatch):
    """Resumed at batch 4 of 6, the epoch trains 3 batches here; the estimate of the epochs
    left must take a whole epoch's time (the training time before the stop, kept in
    interrupted.h5, and after it), not that half. After the resumes of the CNN study it
    said 4.8 h where 6.7 h were left. Each step is made to take STEP_S more, before the
    stop and after it, so that training outweighs the rest: the half epoch and its
    evaluation (0.1-0.3 s here) stay below a whole epoch's training."""
    STEP_S = 0.3
    real, seen = train_mod.train_step, []

    def slow(*args, **kwargs):
        time.sleep(STEP_S)
        return real(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_step", slow)
    out = stopped_in_epoch_2(data_dir, tmp_path, monkeypatch)     # (its steps are slow too)
    real_eta = train_mod.eta.from_epochs

    def from_epochs(epoch_seconds, *rest):
        seen.append(list(epoch_seconds))
        return real_eta(epoch_seconds, *rest)
    monkeypatch.setattr(train_mod.eta, "from_epochs", from_epochs)
    assert run_cli(["--resume", str(out), "--progress=false"]) == 0
    first = seen[0][0]                  # epoch 2: batches 1-3 before the stop, 4-6 here
    assert first >= PER_EPOCH * STEP_S, seen
