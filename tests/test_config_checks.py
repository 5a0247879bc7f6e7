"""Configs and neuron parameters checked in one place each (issue 24).

Each test failed on the code before the fix (a ValueError/TypeError/ArrayMemoryError
traceback, or a value silently taken):

- neuron parameters (tau_m <= 1, tau_s <= 1) from the command line, a checkpoint's
  config (resume, record, inspection) and under mpiexec -> test_neuron_*
- an authors' YAML with lr "abc", [1, 2], true          -> test_authors_yaml_*
- a flat config: bools as numbers, a key written twice  -> test_flat_config_*
- a run that cannot fit in memory                        -> test_memory_*
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import procs
import pytest
import yaml
from test_faults import assert_one_line_error, main_status
from test_train import tiny_args, write_fashion_mnist

from snnsim.training import train as train_mod
from snnsim.training.builder import find_config_file
from snnsim.training.config import ConfigError, TrainConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"))


# --- neuron parameters --------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--tau-m=1", "--tau-m=0.5", "--tau-s=1", "--tau_s=0.9"])
def test_neuron_parameters_on_the_command_line_are_one_line(data_dir, tmp_path, capsys, option):
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run", option), capsys)
    assert_one_line_error(code, err, "train", option[2:7].replace("-", "_"), "exceed 1 ms")
    assert not (tmp_path / "run").exists()


def _set_checkpoint_config(path, **changes):
    """Write ``changes`` into the config stored in the checkpoint ``path`` (a config as
    an older or a hand-edited run could have left it)."""
    from snnsim.training.checkpoint import seal
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["config"])
        cfg.update(changes)
        f.attrs["config"] = json.dumps(cfg)
        seal(f)                      # its checksum renewed: the config is what is wrong


@pytest.mark.parametrize("change", [{"tau_m": 1.0}, {"tau_s": 0.5}])
def test_neuron_parameters_from_a_checkpoint_are_one_line(data_dir, tmp_path, capsys, change):
    """resume, record and inspection read the checkpoint's config: each says what is
    wrong with it in one line."""
    from snnsim.analysis import inspection, record
    out = tmp_path / "run"
    assert main_status(tiny_args(data_dir, out), capsys)[0] == 0
    for name in ("checkpoint.h5", "best.h5"):
        _set_checkpoint_config(out / name, **change)
    key = next(iter(change))
    code, _, err = main_status(["--resume", str(out), "--epochs=2", "--progress=false"], capsys)
    assert_one_line_error(code, err, "train", key, "exceed 1 ms")
    for command, main, argv in (
            ("record", record.main, [str(out), "--samples", "5", "--out", str(tmp_path / "r.h5"),
                                     "--data-dir", str(data_dir)]),
            ("inspection", inspection.main, ["--checkpoint", str(out / "best.h5"),
                                             "--samples", "0,1", "--data-dir", str(data_dir),
                                             "--out", str(tmp_path / "i.h5")])):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        assert_one_line_error(code, capsys.readouterr().err, command, key, "exceed 1 ms")


def test_neuron_parameters_under_mpiexec_are_one_line_on_every_rank(data_dir, tmp_path):
    mpiexec = shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        pytest.skip("mpi4py or mpiexec missing (scripts/setup.sh --test installs them)")
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1",
               OMPI_MCA_mpi_yield_when_idle="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = procs.run([mpiexec, "-n", "2", "--oversubscribe", "--bind-to", "none",
                      sys.executable, "-m", "snnsim.train",
                      *tiny_args(data_dir, tmp_path / "run", "--tau-m=1"), "--data-parallel"],
                     120, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 2 and all("tau_m must exceed 1 ms" in ln for ln in lines), proc.stderr


def test_neuron_check_is_one_function_for_every_path():
    """NeuronParams and TrainConfig refuse the same values with the same words."""
    from snnsim.params import NeuronParams, check_neuron
    for bad in ({"tau_m": 1.0}, {"tau_s": 1.0}, {"tau_s": 0.5}, {"v_th": 0.0},
                {"tau_m": math.inf}, {"v_th": math.nan}):
        args = {"tau_m": 5.0, "tau_s": 3.0, "v_th": 1.0, **bad}
        with pytest.raises(ValueError) as direct:
            check_neuron(**args)
        with pytest.raises(ValueError) as params:
            NeuronParams(**args)
        with pytest.raises(ConfigError) as cfg:
            TrainConfig.from_dict(args)
        assert str(direct.value) == str(params.value)
        assert str(direct.value) in str(cfg.value)


# --- authors' YAML ------------------------------------------------------------------------
@pytest.mark.parametrize("value", ['"abc"', "[1, 2]", "true", "{a: 1}", ".nan", ".inf"])
@pytest.mark.parametrize("key", ["lr", "tau_m", "tau_s"])
def test_authors_yaml_bad_number_is_one_line(data_dir, tmp_path, capsys, key, value):
    doc = yaml.safe_load(find_config_file("fashion_mnist_mlp").read_text())
    doc["Network"][key] = yaml.safe_load(value)
    path = tmp_path / "authors.yaml"
    path.write_text(yaml.safe_dump(doc))
    args = [a for a in tiny_args(data_dir, tmp_path / "run") if not a.startswith("--network")]
    code, _, err = main_status(["--config", str(path), *args], capsys)
    assert_one_line_error(code, err, "train", str(path), key)
    assert not (tmp_path / "run").exists()


def test_authors_yaml_number_written_as_a_string_still_reads(tmp_path):
    """YAML 1.1 reads 5e-4 (no dot) as a string; the authors' files write it so."""
    doc = yaml.safe_load(find_config_file("fashion_mnist_mlp").read_text())
    doc["Network"]["lr"] = "5e-4"
    path = tmp_path / "authors.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_config_file(str(path)).lr == 5e-4


@pytest.mark.parametrize("layer_key, value", [("weight_scale", ".nan"), ("weight_scale", "[1]"),
                                              ("threshold", "abc"), ("threshold", "true")])
def test_authors_yaml_bad_layer_number_is_one_line(data_dir, tmp_path, capsys, layer_key, value):
    doc = yaml.safe_load(find_config_file("fashion_mnist_mlp").read_text())
    first = next(iter(doc["Layers"].values()))
    first[layer_key] = yaml.safe_load(value)
    path = tmp_path / "authors.yaml"
    path.write_text(yaml.safe_dump(doc))
    args = [a for a in tiny_args(data_dir, tmp_path / "run") if not a.startswith("--network")]
    code, _, err = main_status(["--config", str(path), *args], capsys)
    assert_one_line_error(code, err, "train", layer_key)


# --- flat configs -------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ("epochs: true\n", "boolean"), ("lr: true\n", "boolean"), ("batch_size: false\n", "boolean"),
    ("lr: [1, 2]\n", "lr"), ("lr: {a: 1}\n", "lr"), ("network: [784, 10]\n", "network"),
    ("name: true\n", "name"), ("betas: {a: 1, b: 2}\n", "betas"), ("betas: [true, 0.9]\n", "betas"),
    ("train_subset: 5\ntrain-subset: 6\n", "both set train_subset"),
    ("1: 2\n", "not a name"), ("- 1\n- 2\n", "mapping"),
])
def test_flat_config_wrong_types_are_one_line(data_dir, tmp_path, capsys, text, needle):
    path = tmp_path / "flat.yaml"
    path.write_text(text)
    code, _, err = main_status(["--config", str(path), *tiny_args(data_dir, tmp_path / "run")],
                               capsys)
    assert_one_line_error(code, err, "train", needle)
    assert not (tmp_path / "run").exists()


def test_flat_config_numbers_and_strings_still_read(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("epochs: 3\nlr: 1e-3\nbatch_size: 20.0\nbetas: [0.8, 0.99]\nname: abc\n")
    cfg = load_config_file(str(path))
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.betas, cfg.name) == (3, 1e-3, 20, (0.8, 0.99),
                                                                        "abc")


def test_deeply_nested_config_is_one_line(data_dir, tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"lr": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = main_status(["--config", str(path), *tiny_args(data_dir, tmp_path / "run")],
                               capsys)
    assert_one_line_error(code, err, "train", str(path))


def test_an_escape_past_any_character_is_one_line(data_dir, tmp_path, capsys):
    """The fuzz test found it in CI: a bit flip made a \\U escape of a code beyond what a
    C int holds, and PyYAML's scanner raised OverflowError, a traceback."""
    path = tmp_path / "flat.yaml"
    path.write_text('network: "\\UFFFFFFFF"\n')
    code, _, err = main_status(["--config", str(path), *tiny_args(data_dir, tmp_path / "run")],
                               capsys)
    assert_one_line_error(code, err, "train", str(path))


# --- memory -------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--network=784-100000000-10", "--n-steps=10000000",
                                    "--network=784-100000-100000-10"])
def test_memory_refused_with_the_figure(data_dir, tmp_path, capsys, option):
    args = [a for a in tiny_args(data_dir, tmp_path / "run")
            if a.split("=")[0].replace("_", "-") != option.split("=")[0]]
    code, _, err = main_status([*args, option], capsys)
    assert_one_line_error(code, err, "train", "GiB", "needs at least")
    assert not (tmp_path / "run").exists()


def test_memory_batches_larger_than_the_splits_are_not_refused(data_dir, tmp_path, capsys):
    """A batch is never larger than its split: 10^11 as the batch sizes of a 60-sample
    run is no reason to refuse it."""
    args = [a for a in tiny_args(data_dir, tmp_path / "run")
            if not a.startswith(("--batch", "--eval"))]
    code, _, err = main_status([*args, "--batch-size=100000000000",
                                "--eval-batch-size=100000000000"], capsys)
    assert code == 0, err


def test_memory_estimate_is_a_lower_bound_of_a_real_step(data_dir):
    """The estimate counts only arrays a step certainly holds: the traced peak of one
    real training step (weights, AdamW state and one batch, float64) is at least it."""
    from snnsim.training import memory
    cfg = TrainConfig(network="784-64-10", dataset="fashion-mnist", data_dir=str(data_dir),
                      n_steps=7, batch_size=20, eval_batch_size=20, dtype="float64",
                      train_subset=20, test_subset=20, progress=False)
    shape = (1, 28, 28)
    need = memory.estimate(train_mod.build_layers(cfg, shape), shape, cfg.n_steps,
                           cfg.batch_size, cfg.eval_batch_size, 8)
    # the figure by hand: 4 values per weight, per step and sample the input PSC (784)
    # and a spiking layer's 4 values and 1 byte per neuron (64 + 10)
    weights = 64 * 784 + 10 * 64
    assert need["weights"] == 4 * 8 * weights
    assert need["batch"] == 7 * 20 * (784 * 8 + (64 + 10) * (4 * 8 + 1))
    from snnsim.training import data as data_mod
    from snnsim.training.optim import AdamW
    train, _ = data_mod.load_splits(cfg)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        net = train_mod.make_network(cfg)
        opt = AdamW(net.params, lr=cfg.lr)
        x, y = next(data_mod.batches(train, cfg.batch_size, net.xp, net.dtype, cfg.n_steps, rng))
        train_mod.train_step(net, opt, x, y, train_mod.make_loss(cfg, net), cfg, rng)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert need["total"] <= peak, (need, peak)


def test_memory_check_uses_the_machines_figure(data_dir, tmp_path, capsys, monkeypatch):
    """A run that fits is refused on a machine made smaller than its estimate."""
    from snnsim.training import memory
    monkeypatch.setattr(memory, "machine_bytes", lambda backend="numpy": (1 << 10, "tiny"))
    code, _, err = main_status(tiny_args(data_dir, tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "train", "tiny is 0.0 GiB")
