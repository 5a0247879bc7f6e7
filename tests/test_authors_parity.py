"""benchmarks/authors_parity.py: snnsim against the authors' TSSL-BP code.

Always: ``--help``, the one-line errors for a missing path and for a directory that is
not their code, and the tolerance check on made figures. The comparison itself needs a
checkout of github.com/stonezwr/TSSL-BP (nothing of it is in this repository, and CI has
no network to fetch it): it runs when ``SNNSIM_AUTHORS_CODE`` names one, and is skipped
with that reason otherwise."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "authors_parity.py"
AUTHORS_ENV = "SNNSIM_AUTHORS_CODE"


def load_script():
    spec = importlib.util.spec_from_file_location("authors_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def test_help():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for word in ("--authors", "--steps", "--configs", "--json", "float64", "float32",
                 "pip install -e .[peers]"):
        assert word in out.stdout


def test_missing_path_is_one_line(tmp_path):
    missing = tmp_path / "no-such-checkout"
    out = run("--authors", missing)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "--authors" in out.stderr and str(missing) in out.stderr
    assert "no such directory" in out.stderr


def test_not_their_code_is_one_line(tmp_path):
    (tmp_path / "cnns.py").write_text("")
    out = run("--authors", tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "not a checkout" in out.stderr and "functions/tsslbp.py" in out.stderr


def made_result(dtype, mismatches=0, psc=0.0, flip_margin=None, weights=0.0):
    flip = (None if flip_margin is None else
            {"layer": "hidden_1", "layer_index": 0, "time_step": 2, "flips_at_that_step": 1,
             "margin": flip_margin})
    return {"config": "fashion_mnist_mlp", "dtype": dtype,
            "first_pass": {"layers": [{"layer": "hidden_1", "mismatches": mismatches,
                                       "psc_rel": psc, "grad_rel": 0.0}],
                           "loss_rel": 0.0, "first_flip": flip},
            "training": [{"step": 1, "spike_mismatches": 0, "weights_rel": weights}],
            "training_first_flip": None}


def test_tolerances():
    script = load_script()
    assert script.failures(made_result("float64", psc=1e-15, weights=1e-13)) == []
    assert "spike mismatches" in script.failures(made_result("float64", mismatches=1))[0]
    assert "psc_rel" in script.failures(made_result("float64", psc=1e-6))[0]
    assert "weights after step 1" in script.failures(made_result("float64", weights=1e-6))[0]
    # float32: a flip at rounding distance of the threshold is accepted, and then the PSCs
    # may differ; a flip far from the threshold is not
    assert script.failures(made_result("float32", 3, psc=1.0, flip_margin=1e-7)) == []
    assert "from the threshold" in script.failures(made_result("float32", 3, flip_margin=0.1))[0]
    assert "psc_rel" in script.failures(made_result("float32", psc=1e-2))[0]


@pytest.mark.skipif(not os.environ.get(AUTHORS_ENV),
                    reason=f"{AUTHORS_ENV} names no checkout of github.com/stonezwr/TSSL-BP "
                           "(the comparison needs the authors' code, which is not part of "
                           "snnsim and which CI cannot fetch)")
def test_against_the_authors_code(tmp_path):
    pytest.importorskip("torch")
    out_json = tmp_path / "parity.json"
    out = run("--authors", os.environ[AUTHORS_ENV], "--configs", "fashion_mnist_mlp",
              "fashion_mnist_cnn", "--steps", "2", "--json", out_json, timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out_json.read_text())
    assert figures["failures"] == []
    float64 = [r for r in figures["results"] if r["dtype"] == "float64"]
    assert len(float64) == 2
    for r in float64:                             # the last bits: no spike differs anywhere
        assert all(row["mismatches"] == 0 and row["spikes"] > 0 for row in r["first_pass"]["layers"])
        assert r["training_first_flip"] is None
