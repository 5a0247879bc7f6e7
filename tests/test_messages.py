"""What the commands say to a user (issue 23, 8): a misspelt option or config key is one
line naming the closest valid one, and --help is plain words, not reStructuredText."""
from __future__ import annotations

import re

import pytest

from snnsim import cli
from snnsim.training.config import ConfigError, load_config_file


def one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv, prog="snnsim")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "usage:" not in err, err
    return err


@pytest.mark.parametrize("argv, wrong, right", [
    (["train", "--epoch", "1"], "--epoch", "--epochs"),               # a config key
    (["train", "--batch_sise=3"], "--batch-sise", "--batch-size"),
    (["train", "--resum"], "--resum", "--resume"),                    # an option of the parser
    (["plots", "sparsity", "--sampels", "3"], "--sampels", "--samples"),   # a subcommand's
    (["record", "--smaples", "3"], "--smaples", "--samples"),
])
def test_a_misspelt_option_names_the_closest(capsys, argv, wrong, right):
    err = one_line_error(capsys, argv)
    assert wrong in err and f"did you mean '{right}'?" in err, err


def test_an_option_of_another_subcommand_names_its_subcommands(capsys):
    """``fidelity batch --data-dir X``: the option exists, but only for other
    subcommands; it said "did you mean '--data-dir'?", the very option written."""
    err = one_line_error(capsys, ["fidelity", "batch", "--data-dir", "x"])
    assert "--data-dir is an option of along-training and compare-training only" in err, err
    assert "did you mean" not in err, err


def test_runtime_errors_of_bench_and_fidelity_are_the_commands_one_line(tmp_path, capsys,
                                                                        monkeypatch):
    """As every command's: ``snnsim.<command>: error: ...`` (they printed ``python3 -m
    snnsim.bench: error: ...``, naming an interpreter that may not be the one running)."""
    from snnsim.analysis import bench
    from snnsim.fidelity import cli as fidelity_cli
    from snnsim.training.config import ConfigError
    assert fidelity_cli.main(["--out", str(tmp_path), "batch", "--checkpoint",
                              str(tmp_path / "none.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"snnsim.fidelity batch: error: {tmp_path / 'none.h5'}: no such checkpoint file", err

    def refuse(*args, **kwargs):
        raise ConfigError("no such experiment")
    monkeypatch.setattr(bench, "experiment_config", refuse)
    assert bench.main(["--experiments", "mlp", "--backends", "numpy", "--out",
                       str(tmp_path / "b.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("snnsim.bench: error: no such experiment")


def test_a_misspelt_config_key_names_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'; did you mean 'epochs'\?"):
        load_config_file(str(path))


#: reStructuredText that must not reach a terminal: ``literal``, :role:`target`.
REST = re.compile(r"``|:(func|mod|class|meth|data|attr):`")


@pytest.mark.parametrize("name", sorted(cli.available()))
def test_help_is_plain_words(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"], prog="snnsim")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    found = sorted({m.group(0) for m in REST.finditer(text)})
    assert not found, f"snnsim {name} --help shows {found}"


# --- what a training run prints (issue 23, 7, 9, 11) ------------------------------------------
def _train_args(data, out, epochs=1):
    return ["--data-dir", str(data), "--out", str(out), f"--epochs={epochs}", "--network=784-12-10",
            "--batch-size=10", "--eval_batch_size=15", "--seed=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from test_train import write_fashion_mnist
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


def test_accuracy_is_printed_in_percent(data, tmp_path, capsys):
    from snnsim.training import train as train_mod
    assert train_mod.main([*_train_args(data, tmp_path / "r"), "--progress=false"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"acc \d{1,3}\.\d\d % \| test acc \d{1,3}\.\d\d % \(best \d{1,3}\.\d\d %\)", out), out
    assert re.search(r"done: 1 epoch; best test accuracy \d{1,3}\.\d\d % at epoch 1", out), out
    assert not re.search(r"acc 0\.\d{4}", out), out


def test_no_progress_bar_in_a_log_file(data, tmp_path):
    """stdout and stderr into a file (not a terminal): the epoch lines, no redrawn bar."""
    import os
    import subprocess
    import sys
    log = tmp_path / "train.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "snnsim.train", *_train_args(data, tmp_path / "r")],
                              stdout=f, stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "epoch 1/1: train loss" in text
    assert "\r" not in text and "batch/s" not in text, text[-800:]


def test_the_kernels_are_compiled_before_the_first_timed_step(data, tmp_path, monkeypatch):
    """Epoch 1's time (and so the first time estimate) must not include numba compiling
    the kernels: the run compiles them (fast.warm_up) before its first step."""
    from snnsim.training import train as train_mod
    events = []
    monkeypatch.setattr(train_mod, "warm_up", lambda *a, **k: events.append("compile"))
    step = train_mod.train_step
    monkeypatch.setattr(train_mod, "train_step",
                        lambda *a, **k: events.append("step") or step(*a, **k))
    assert train_mod.main([*_train_args(data, tmp_path / "r"), "--progress=false"]) == 0
    assert events[:2] == ["compile", "step"], events[:3]


def test_fidelity_measures_of_a_silent_layer_warn_nothing():
    """A layer that did not fire has a zero gradient: its ratios are NaN and its descent
    direction zero, without NumPy's divide-by-zero warning in the test log."""
    import warnings

    import numpy as np

    from snnsim.fidelity import measure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(measure.ratio(np.linalg.norm(np.ones(3)), np.linalg.norm(np.zeros(3))))
        d = measure.descent_direction(np, np.zeros(4), np.ones(4))
        assert np.array_equal(d, np.zeros(4))
        assert measure.ratio(3.0, 2.0) == 1.5


@pytest.mark.parametrize("answer, said", [("q\n", "left the debugger before lif_backward returned"),
                                          ("c\n", "lif_backward returned ndarray")])
def test_the_walkthrough_debugger_says_what_happened(answer, said):
    """``--break``: after `q` the function did not return (it used to say 'returned
    NoneType'); after `c` it did."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "snnsim.walkthrough", "--break", "lif_backward"],
                          input=answer, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert said in proc.stdout and "NoneType" not in proc.stdout, proc.stdout[-500:]


def test_the_walkthrough_network_is_not_named_like_the_training_builder():
    from snnsim import build_network, walkthrough
    assert not hasattr(walkthrough, "build_network")
    assert walkthrough.example_network().describe() != build_network.__name__


def test_the_default_run_is_named_as_its_shipped_config():
    """python3 -m snnsim.train and python3 -m snnsim.train --config fashion_mnist_mlp train the
    same network: their run folders start alike (they were fashion-mnist_784-400-400-10-...
    and fashion_mnist_mlp-...)."""
    from snnsim.training.config import TrainConfig
    from snnsim.training.train import default_name
    assert default_name(TrainConfig()) == default_name(load_config_file("fashion_mnist_mlp"))
    assert default_name(TrainConfig(network="784-100-10")) == "fashion-mnist_784-100-10"
