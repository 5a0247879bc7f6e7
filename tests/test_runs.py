"""``snnsim runs``: the run index finds run folders and tells each state right (tiny real runs,
each state made as a user would meet it: a finished run, a Ctrl-C, a kill, a divergence, a
run holding its lock, a resumed run that was killed after a divergence)."""
from __future__ import annotations

import json
import os

import pytest
from test_train import run_cli, tiny_args, write_fashion_mnist

from snnsim.analysis import runs as runs_mod
from snnsim.training import runfolder
from snnsim.training import train as train_mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=40, n_test=20)


def state_of(folder):
    return runs_mod.describe_run(folder)


def test_finished_interrupted_killed_and_running(data, tmp_path, monkeypatch):
    done = tmp_path / "r" / "done"
    assert run_cli(tiny_args(data, done, epochs=1)) == 0
    rec = state_of(done)
    row = json.loads((done / "metrics.jsonl").read_text())
    assert (rec["state"], rec["epochs_done"], rec["epochs"]) == ("finished", 1, 1)
    assert rec["best_acc"] == rec["last_acc"] == pytest.approx(100 * row["test_acc"])

    stopped = tmp_path / "r" / "stopped"                  # Ctrl-C during epoch 2's evaluation
    real = train_mod.test_pass
    calls = []

    def second_raises(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(train_mod, "test_pass", second_raises)
    assert run_cli(tiny_args(data, stopped, epochs=2)) == 130
    monkeypatch.setattr(train_mod, "test_pass", real)
    assert json.loads((stopped / "status.json").read_text())["state"] == "interrupted"
    assert (state_of(stopped)["state"], state_of(stopped)["epochs_done"]) == ("interrupted", 1)

    killed = tmp_path / "r" / "killed"                    # a kill writes no status: 1 of 2 epochs
    assert run_cli(tiny_args(data, killed, epochs=1)) == 0
    (killed / "status.json").unlink()
    cfg = json.loads((killed / "config.json").read_text())
    (killed / "config.json").write_text(json.dumps({**cfg, "epochs": 2}))
    assert state_of(killed)["state"] == "interrupted"
    with runfolder.locked(killed):                        # another process's lock, as train holds it
        assert state_of(killed)["state"] == "running"
    assert state_of(killed)["state"] == "interrupted"

    listed = runs_mod.find_runs([tmp_path])
    assert [p.name for p in listed] == ["done", "killed", "stopped"]


def test_a_run_stopped_inside_an_epoch_shows_the_batches_it_keeps(data, tmp_path, monkeypatch,
                                                                  capsys):
    """SIGINT after step 6 (4 batches per epoch): epoch 1 done, 2 batches of epoch 2 kept in
    interrupted.h5; the index says so, and no longer once the run has gone on."""
    from test_interrupted import stop_after
    run = tmp_path / "r" / "cut"
    real = stop_after(monkeypatch, [6])
    assert run_cli(tiny_args(data, run, epochs=3)) == 130
    monkeypatch.setattr(train_mod, "train_step", real)
    rec = state_of(run)
    assert (rec["state"], rec["epochs_done"], rec["batches_kept"]) == ("interrupted", 1, 2)
    capsys.readouterr()
    assert runs_mod.main([str(tmp_path / "r")]) == 0
    assert "interrupted (+2 of epoch 2)" in capsys.readouterr().out
    (run / "interrupted.h5").rename(tmp_path / "kept.h5")        # resumed from checkpoint.h5
    assert state_of(run)["batches_kept"] is None
    (tmp_path / "kept.h5").rename(run / "interrupted.h5")
    assert run_cli(["--resume", str(run), "--epochs=3", "--progress=false"]) == 0
    rec = state_of(run)
    assert (rec["state"], rec["batches_kept"]) == ("finished", None)


def test_diverged_and_a_stale_status(data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "div"
    real = train_mod.guard.check_step

    def nan_in_epoch_2(net, opt, loss, epoch, batch, *rest):
        return real(net, opt, float("nan") if epoch == 2 else loss, epoch, batch, *rest)
    monkeypatch.setattr(train_mod.guard, "check_step", nan_in_epoch_2)
    assert run_cli(tiny_args(data, run, epochs=3)) == 3
    monkeypatch.setattr(train_mod.guard, "check_step", real)
    rec = state_of(run)
    assert (rec["state"], rec["epochs_done"], rec["epochs"]) == ("diverged", 1, 3)
    assert "the loss is nan" in rec["message"]
    assert run_cli(["--resume", str(run), "--epochs=3", "--progress=false"]) == 0   # trains on
    assert state_of(run)["state"] == "finished"
    status = json.loads((run / "status.json").read_text())    # a diverged status, then a kill
    (run / "status.json").write_text(json.dumps({**status, "state": "diverged", "epoch": 2}))
    assert state_of(run)["state"] == "finished"                # 3 of 3 done: the status is stale
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "epochs": 5}))
    assert state_of(run)["state"] == "interrupted"


def test_resuming_runs_latest_resumes_the_run_it_names(data, tmp_path, monkeypatch, capsys):
    """docs/commands.md's ``--resume runs/latest`` printed (and recorded) the run folder as
    runs/latest, which names another run as soon as a newer one starts."""
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_args(data, "unused", epochs=1) if a not in ("--out", "unused")]
    assert run_cli(args) == 0
    made = next(p for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    capsys.readouterr()
    assert run_cli(["--resume", "runs/latest", "--epochs=2", "--progress=false"]) == 0
    out = capsys.readouterr().out
    assert f"run folder runs/{made.name}" in out and "run folder runs/latest" not in out
    assert json.loads((made / "config.json").read_text())["out"] == f"runs/{made.name}"


def test_command_json_table_latest_and_errors(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_args(data, "unused", epochs=1) if a not in ("--out", "unused")]
    assert run_cli(args) == 0
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))
    made = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert len(made) == 1 and latest.resolve() == made[0].resolve()
    capsys.readouterr()
    assert runs_mod.main(["--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == [made[0].name]      # runs/latest is not listed again
    rec = records[0]
    assert (rec["state"], rec["config"], rec["backward"]) == ("finished", "784-24-10", "tsslbp")
    assert runs_mod.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "config", "backward", "epochs", "best", "%", "last", "%", "state",
                              "started"]
    assert made[0].name in out[1] and " 1/1 " in out[1] and "finished" in out[1]
    assert runs_mod.main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"snnsim.runs: error: {tmp_path / 'none'}: no such folder"


def test_tensorboard_event_files_hold_the_metrics(data, tmp_path):
    """--tensorboard: the event files, read back by TensorBoard's own reader, hold every
    epoch's losses, accuracies (%), lr and per-layer sparsity as metrics.jsonl has them, the
    weight histograms, and spike-count histograms over every (test sample, neuron) pair."""
    pytest.importorskip("tensorboardX", reason="the tensorboard extra (tensorboardX) is not installed")
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                 reason="tensorboard (the event reader) is not installed")
    run = tmp_path / "tb"
    assert run_cli(tiny_args(data, run, "--tensorboard=true", epochs=2)) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = ea_mod.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()

    def values(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]
    # event files hold float32 scalars: equal to metrics.jsonl's float64 to 1e-6 relative (float32
    # rounding is 6e-8; pytest.approx's default 1e-6 relative is that bound)
    assert values("loss/train") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    assert values("accuracy/test") == [(r["epoch"], pytest.approx(100 * r["test_acc"])) for r in rows]
    assert values("lr") == [(1, pytest.approx(json.loads((run / "config.json").read_text())["lr"])),
                            (2, pytest.approx(json.loads((run / "config.json").read_text())["lr"]))]
    for k in (1, 2):
        assert values(f"sparsity/silent/layer_{k}") == [(r["epoch"], pytest.approx(r["test_silent"][k - 1]))
                                                        for r in rows]
        assert values(f"sparsity/spikes/layer_{k}") == [(r["epoch"], pytest.approx(r["test_spikes"][k - 1]))
                                                        for r in rows]
    assert any(t.startswith("weights/") for t in tags["histograms"])
    means, maxes = values("grad_norm/mean"), values("grad_norm/max")   # the clip (1) computes it
    assert [s for s, _ in means] == [1, 2] and all(0 < m <= x for (_, m), (_, x) in zip(means, maxes))
    n_test = 20
    for k, width in ((1, 24), (2, 10)):                       # 784-24-10: 24 and 10 neurons
        h = acc.Histograms(f"spike_counts/layer_{k}")
        assert [e.step for e in h] == [1, 2]
        assert h[-1].histogram_value.num == n_test * width
        silent = h[-1].histogram_value.bucket[0] / (n_test * width)
        assert silent == pytest.approx(rows[-1]["test_silent"][k - 1], abs=1e-6)


def test_tensorboard_without_tensorboardx_is_one_line(data, tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX"
                        else real(name, *a))
    assert run_cli(tiny_args(data, tmp_path / "x", "--tensorboard=true")) == 2
    assert "--tensorboard needs tensorboardX" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
