"""The package's data files (shipped configs, the CUDA kernel source) as package
resources: found through importlib.resources inside the package, so that a package
installed from a wheel or an sdist finds them as a source checkout does.

The defect these guard against: installed with ``pip install .`` (not editable),
``python3 -m snnsim.train --config fashion_mnist_cnn`` answered "config not found",
because the configs lived at the repository root, outside the package. These tests
also run against an installed wheel (``scripts/check_dist.sh``), and they use only
what the old layout had too (``importlib.resources``, ``python3 -m snnsim.train``),
so that they fail there by assertion.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import h5py
import pytest
from test_train import write_fashion_mnist

import snnsim

#: The paper's six experiments, shipped in ``snnsim/configs/``.
SHIPPED_CONFIGS = ("cifar10_cnn1", "cifar10_cnn2", "fashion_mnist_cnn", "fashion_mnist_mlp",
                   "mnist_cnn", "nmnist_cnn")
#: Every file besides Python modules that the package reads at run time.
RUNTIME_FILES = tuple(f"configs/{name}.yaml" for name in SHIPPED_CONFIGS) + ("cuda/lif_kernels.cu",)

PKG = Path(snnsim.__file__).resolve().parent


@pytest.mark.parametrize("relpath", RUNTIME_FILES)
def test_runtime_files_are_package_resources(relpath):
    """Each file is found through importlib.resources inside the package, as an
    installed wheel finds it (fails on the layout with configs/ at the repository root)."""
    res = resources.files("snnsim").joinpath(*relpath.split("/"))
    assert res.is_file(), f"{relpath} is not inside the snnsim package"
    assert res.read_bytes(), f"{relpath} is empty"


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_config_names_resolve_to_package_resources(name):
    from snnsim.training.config import find_config_file  # inside: the old layout lacks it
    path = find_config_file(name)
    assert path == resources.files("snnsim") / "configs" / f"{name}.yaml"
    assert Path(path).resolve().is_relative_to(PKG)


def test_a_copy_of_the_package_alone_trains_with_a_shipped_config(tmp_path):
    """The package folder alone, outside the source tree and inside an unrelated git
    repository (a .venv in some project), as ``pip install`` lays it out:
    ``python3 -m snnsim.train --config fashion_mnist_mlp`` finds the config inside the
    package, trains, and records no commit (the repository around it is not snnsim's)."""
    repo = tmp_path / "elsewhere"
    site = repo / ".venv" / "site-packages"
    shutil.copytree(PKG, site / "snnsim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if shutil.which("git"):
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo)]
        (repo / "README").write_text("another project\n")
        subprocess.run([*git, "init", "-q"], check=True, timeout=60)
        subprocess.run([*git, "add", "README", ".venv"], check=True, timeout=60)
        subprocess.run([*git, "commit", "-q", "-m", "x"], check=True, timeout=60)
    data = write_fashion_mnist(tmp_path / "data")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-m", "snnsim.train", "--config", "fashion_mnist_mlp", "--epochs=1",
         "--train_subset=20", "--test_subset=10", "--batch-size=10", "--progress=false",
         "--data-dir", str(data), "--out", str(out)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    network = Path(json.loads((out / "config.json").read_text())["network"])
    assert network.parent == (site / "snnsim" / "configs").resolve()
    installed = f"installed package snnsim=={snnsim.__version__}"
    info = json.loads((out / "run.json").read_text())
    assert (info["git_commit"], info["source"]) == (None, installed)
    with h5py.File(out / "checkpoint.h5", "r") as f:
        assert (f.attrs["git_commit"], f.attrs["source"]) == ("", installed)
