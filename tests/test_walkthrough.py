"""The walkthrough (`python3 -m snnsim.walkthrough`, examples/walkthrough.ipynb,
docs/walkthrough.md): it runs, its checks are real, and the example is what it claims.

The checks' own tolerances are those of snnsim/walkthrough.py (oracle 1e-10
relative, central differences 1e-6 relative + 1e-8, float64); here we test that
they run, that they fail when a term of the engine is wrong, and that the
example spikes as the documentation says.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snnsim import tsslbp, walkthrough
from snnsim.walkthrough import compute, main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "walkthrough.ipynb"
DOC = ROOT / "docs" / "walkthrough.md"


def _run(args, cwd, pythonpath):
    env = dict(os.environ, PYTHONPATH=str(pythonpath), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "snnsim.walkthrough", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def full_output():
    """The command's whole output, run from the repository root (oracle importable)."""
    proc = _run([], ROOT, ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return proc.stdout


# --- the terminal command ----------------------------------------------------------
def test_command_runs_every_check_and_passes(full_output):
    for title in ("1. The example", "2. Forward pass", "3. Backward pass, reading `authors`",
                  "4. Backward pass, reading `timing`", "5. Every check"):
        assert title in full_output
    summary = re.search(r"(\d+) checks: (\d+) passed, (\d+) failed, (\d+) skipped", full_output)
    assert summary, full_output[-2000:]
    total, passed, failed, skipped = map(int, summary.groups())
    assert failed == 0 and skipped == 0 and passed == total
    w = compute()
    kinds = {c.kind for _, c in w.checks}
    assert kinds == {"oracle", "fd", "identity"}
    # every quantity is checked against something, and every timing term by finite differences
    assert all(q.checks for q in w.quantities)
    for name in ("dt_du", "phi_1", "phi_2", "leak", "phi", "delta", "dW"):
        for l in (1, 2):
            assert any(c.kind == "fd" for c in w[f"{name} timing l={l}"].checks), name
    assert total == len(w.checks)


def test_help_and_bad_option():
    proc = _run(["--help"], ROOT, ROOT)
    assert proc.returncode == 0
    assert "docs/walkthrough.md" in proc.stdout and "--no-oracle" in proc.stdout
    bad = _run(["--section", "nonsense"], ROOT, ROOT)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_without_reference_the_oracle_is_skipped_and_fd_still_runs(tmp_path):
    """An installed package has no reference/: the oracle checks say why they were
    skipped, the finite-difference and identity checks still run and pass. The source
    tree's package is copied to an empty folder; an installed one (scripts/check_dist.sh)
    is run as it is, from an empty folder."""
    import snnsim
    pkg = Path(snnsim.__file__).resolve().parent
    if pkg == ROOT / "snnsim":
        shutil.copytree(pkg, tmp_path / "snnsim", ignore=shutil.ignore_patterns("__pycache__"))
    proc = _run(["--section", "checks"], tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "reference/ is not importable" in proc.stdout
    total, passed, failed, skipped = map(int, re.search(
        r"(\d+) checks: (\d+) passed, (\d+) failed, (\d+) skipped", proc.stdout).groups())
    w = compute()
    n_oracle = sum(c.kind == "oracle" for _, c in w.checks)
    assert (total, failed, skipped) == (len(w.checks), 0, n_oracle)
    assert passed == total - n_oracle > 0


def test_no_oracle_option_is_reported_as_skipped():
    w = compute(use_oracle=False)
    oracle = [c for _, c in w.checks if c.kind == "oracle"]
    assert oracle and all(c.passed is None and "--no-oracle" in c.skipped for c in oracle)
    assert w.passed


# --- the checks can fail -----------------------------------------------------------------
def _scaled(monkeypatch, module, name, factor):
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: factor * original(*a, **k))


@pytest.mark.parametrize("planted, must_fail", [
    # φ<1>'s scale c of ∂a[t_k]/∂t_m, 1 % off: φ<1> of both readings against the oracle,
    # of timing against central differences
    (("psc_shift_scale", 1.01), {("phi_1 authors l=2", "oracle"), ("phi_1 timing l=2", "oracle"),
                                 ("phi_1 timing l=2", "fd"), ("delta timing l=1", "fd"),
                                 ("dW timing l=1", "fd")}),
    # the reset's shift coefficient b: φ<2>
    (("reset_shift_coefficient", 1.01), {("phi_2 authors l=1", "oracle"), ("phi_2 timing l=1", "fd"),
                                         ("dW timing l=1", "fd")}),
    # the leak path of the recursion only (phi_matrix builds its own): δ against the oracle,
    # the recursion's leak against the matrix column, δ against Σ_k φ g
    (("leak_path", 1.01), {("delta authors l=2", "oracle"), ("leak timing l=2", "identity"),
                           ("delta timing l=1", "identity"), ("delta timing l=1", "fd")}),
    # S of the recursion: S against its double-loop definition
    (("psc_reverse_sum", 1.01), {("S authors l=2", "oracle"), ("S timing l=1", "oracle"),
                                 ("delta timing l=2", "fd")}),
])
def test_a_planted_error_fails_the_walkthrough(monkeypatch, capsys, planted, must_fail):
    name, factor = planted
    _scaled(monkeypatch, tsslbp, name, factor)
    w = compute()
    failed = {(q.key, c.kind) for q, c in w.failures}
    assert must_fail <= failed, must_fail - failed
    assert main(["--section", "checks"]) == 1
    out = capsys.readouterr()
    assert "FAILED" in out.out and "FAILED" in out.err


def test_finite_differences_alone_catch_a_wrong_timing_term(monkeypatch):
    """Without the oracle, a wrong reset coefficient b still fails in the `timing` reading
    (central differences of the event-shift model); in the `authors` reading nothing is left
    to fail against but the identities, which a wrong b passes (the recursion and φ use the
    same b): only the oracle catches it there."""
    _scaled(monkeypatch, tsslbp, "reset_shift_coefficient", 1.05)
    w = compute(use_oracle=False)
    failed = {(q.key, c.kind) for q, c in w.failures}
    assert ("phi_2 timing l=1", "fd") in failed and ("dW timing l=1", "fd") in failed
    assert not any("authors" in key for key, _ in failed)
    with_oracle = {(q.key, c.kind) for q, c in compute().failures}
    assert ("phi_2 authors l=1", "oracle") in with_oracle


def test_check_records():
    ok = walkthrough.compare("fd", "x", np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), 1e-6, 0.0)
    bad = walkthrough.compare("fd", "x", np.array([1.0, 2.0]), np.array([1.0, 2.1]), 1e-6, 0.0)
    shape = walkthrough.compare("fd", "x", np.zeros(2), np.zeros(3), 1e-6, 1.0)
    assert ok.passed and not bad.passed and not shape.passed
    assert walkthrough.Check("oracle", "x", skipped="why").passed is None


# --- the example is what it claims --------------------------------------------------------
def test_example_spikes_as_claimed():
    """docs/walkthrough.md and the module docstring: both hidden neurons and the output
    neuron spike, hidden neuron 1 three times (t = 1, 2, 4), the output twice (t = 2, 4);
    every term of φ is non-zero somewhere; the spikes are well away from the threshold
    and have Δu ≥ 0.5, so the central differences are well conditioned."""
    w = compute()
    s1, s2 = w["s l=1"].value, w["s l=2"].value
    assert s1.astype(int).T.tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 0, 1]]
    assert s2.astype(int).T.tolist() == [[0, 0, 1, 0, 1]]
    for name in ("phi_1", "phi_2", "leak", "warmup"):
        assert np.abs(w[f"{name} authors l=1"].value).max() > 0.01, name
    for name in ("phi_1", "phi_2", "leak"):
        assert np.abs(w[f"{name} timing l=2"].value).max() > 0.01, name
    v_th = w.example.neuron.v_th
    for l in (1, 2):
        u, du, s = (w[f"{n} l={l}"].value for n in ("u", "du", "s"))
        assert np.abs(u - v_th).min() > 0.05
        assert du[s].min() > 0.5


def test_break_option_stops_in_the_engine_function():
    """--break runs the engine function under pdb with the example's arrays: at its first
    line the argument dL_da is g^(2) = a - â."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "snnsim.walkthrough", "--break", "lif_backward"],
                          cwd=ROOT, env=env, input="p dL_da[:, 0, 0].round(5).tolist()\nc\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tsslbp.py" in proc.stdout and "lif_backward()" in proc.stdout
    w = compute()
    assert str(w["g l=2"].value[:, 0].round(5).tolist()) in proc.stdout
    fn, args = walkthrough.engine_call("lif_backward")
    np.testing.assert_array_equal(fn(*args), w["delta authors l=2"].value[:, None, :])


# --- the notebook and the document ---------------------------------------------------------
def _nbformat():
    """nbformat, or skip: a test-only package (the test extra), absent where only snnsim's
    dependencies are installed (the GPU check's machines, docs/gpu.md)."""
    return pytest.importorskip("nbformat", reason="nbformat missing (pip install -e .[test])")


def test_notebook_is_stored_without_outputs():
    nb = _nbformat().read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_notebook_executes(monkeypatch):
    """Every cell runs (its last cell asserts that every check passed)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))          # this checkout's snnsim and reference/
    nb = _nbformat().read(NOTEBOOK, as_version=4)
    nbclient = pytest.importorskip("nbclient", reason="nbclient missing (pip install -e .[test])")
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    text = "".join(o.get("text", "") for o in outputs)
    assert "0 failed, 0 skipped" in text


def test_document_numbers_are_the_commands_output(full_output):
    """Every ```text block of docs/walkthrough.md is copied from the command's output."""
    blocks = re.findall(r"```text\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        assert block in full_output, block[:200]
