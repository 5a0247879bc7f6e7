"""snnsim.fidelity.longrun: the 100-epoch comparison section of the fidelity report,
computed from result records (hand-made here, in the format of reference/results.json)."""
from __future__ import annotations

import json

import pytest

from snnsim.fidelity import longrun


def record(experiment, bests, finals, metric="final_mean"):
    runs = [{"seed": i, "best": b, "final": f, "best_epoch": 50, "epochs": 100, "wall_s": 1.0,
             "commit": "abc"} for i, (b, f) in enumerate(zip(bests, finals))]
    return {"experiment": experiment, "source": "snnsim", "metric": metric, "epochs": 100,
            "runs": runs}


def test_variant_names_from_experiments():
    assert longrun.variant_of("fashion_mnist_mlp") == "tsslbp"
    assert longrun.variant_of("fashion_mnist_mlp+backward=surrogate") == "surrogate"
    assert longrun.variant_of("fashion_mnist_mlp+backward=timing-bw-flipped") == "timing-bw-flipped"
    assert longrun.variant_of("fashion_mnist_mlp+preset=paper") is None
    assert longrun.variant_of("fashion_mnist_mlp+backward=surrogate+preset=paper") is None
    assert longrun.variant_of("fashion_mnist_cnn") is None


def test_welch_difference_and_p_value():
    """Two samples of three with equal variance 1 and means 3 apart: t = 3 / sqrt(2/3),
    Welch's df = 4, two-sided p = 0.0213 (t-table)."""
    diff, p = longrun.welch([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert diff == pytest.approx(3.0)
    assert p == pytest.approx(0.02131, abs=2e-4)
    assert longrun.welch([1.0], [2.0, 3.0]) == (pytest.approx(-1.5), None)


def test_section_ranks_and_compares_against_the_authors(tmp_path):
    recs = [record("fashion_mnist_mlp", [89.6, 89.7, 89.8], [89.0, 89.1, 89.2]),
            record("fashion_mnist_mlp", [89.6, 89.7, 89.8], [89.0, 89.1, 89.2], metric="best_mean"),
            record("fashion_mnist_mlp+backward=surrogate", [90.6, 90.7, 90.8], [89.0, 89.2, 89.1]),
            record("fashion_mnist_mlp+preset=paper", [99.0, 99.0], [99.0, 99.0]),
            {"experiment": "fashion_mnist_mlp", "source": "paper", "metric": "final_mean"}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(recs))
    assert list(longrun.long_runs(recs)) == ["tsslbp", "surrogate"]
    text = longrun.long_run_section(path)
    assert "| `tsslbp` | 3 | 100 | 89.70 ± 0.10 | 89.80 | 89.10 ± 0.10 |" in text
    assert "| `surrogate` | 3 | 100 | 90.70 ± 0.10 | 90.80 | 89.10 ± 0.10 |" in text
    assert "`surrogate` > `tsslbp`" in text
    line = next(x for x in text.splitlines() if x.startswith("- `surrogate`"))
    assert "best-epoch accuracy +1.00 points" in line and "a significant difference" in line
    assert "final-epoch accuracy +0.00 points" in line and "not significant" in line
    assert "preset=paper" not in text
    assert "with 3 seeds per variant" in text


def test_no_section_without_two_variants(tmp_path):
    assert longrun.long_run_section(tmp_path / "missing.json") is None
    path = tmp_path / "results.json"
    path.write_text(json.dumps([record("fashion_mnist_mlp", [89.0, 90.0], [88.0, 89.0])]))
    assert longrun.long_run_section(path) is None
