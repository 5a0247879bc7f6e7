"""The benchmark script runs and reports every figure it promises (not a timing test:
no figure is asserted, only its presence and the baseline's equality of gradients,
which tests/test_properties.py::test_explicit_backward_equals_recursion_in_a_network checks)."""
from __future__ import annotations

import json

from snnsim.analysis import bench


def test_bench_writes_all_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", "--batches", "1", "--warmup", "0",
                       "--steps-sweep", "5", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["runs"]
    assert row["experiment"] == "mlp" and row["backend"] == "numpy" and row["n_steps"] == 5
    for label in ("recursion", "explicit_phi"):
        assert row[label]["s_per_batch"] > 0 and row[label]["peak_bytes"] > 0
    assert row["speedup_vs_explicit"] > 0
    (sweep,) = res["memory_sweep"]
    # at T = 5 the explicit φ (B, N, T, T) already needs more memory than the recursion
    assert sweep["explicit_phi"]["peak_bytes"] > sweep["recursion"]["peak_bytes"]
    assert "samples/s" in capsys.readouterr().out
