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
    assert "best-epoch accuracy +1.00 points" in line and "significant also after" in line
    assert "final-epoch accuracy +0.00 points" in line and "not significant" in line
    assert "preset=paper" not in text
    assert "with 3 seeds per variant" in text
    assert "2 of them, so a difference counts when p < 0.0250" in text


def test_no_section_without_two_variants(tmp_path):
    assert longrun.long_run_section(tmp_path / "missing.json") is None
    path = tmp_path / "results.json"
    path.write_text(json.dumps([record("fashion_mnist_mlp", [89.0, 90.0], [88.0, 89.0])]))
    assert longrun.long_run_section(path) is None


def test_the_answer_is_computed_from_the_runs():
    """TSSL-BP 89.6/89.7/89.8 best, surrogate 90.6/90.7/90.8: surrogate is 1.00 point ahead,
    significant also after the Bonferroni correction for 2 variants x 2 metrics = 4
    comparisons (p = 2.1e-4 by hand: t = 1 / sqrt(2 · 0.01 / 3) = 12.25, df = 4, against
    0.05 / 4 = 0.0125); the final accuracies are equal (0.00 points, p = 1). The three means
    lie within 1.00 point; each variant's seeds have std 0.10."""
    runs = longrun.long_runs([
        record("fashion_mnist_mlp", [89.6, 89.7, 89.8], [89.0, 89.1, 89.2]),
        record("fashion_mnist_mlp+backward=surrogate", [90.6, 90.7, 90.8], [89.0, 89.2, 89.1]),
        record("fashion_mnist_mlp+backward=timing-bw-flipped", [89.9, 90.0, 90.1],
               [89.0, 89.1, 89.2])])
    text = longrun.answer(runs)
    assert "trains the MLP worse than surrogate-gradient BPTT" in text
    assert ("in best-epoch accuracy TSSL-BP is 1.00 points behind it (p < 0.001, significant "
            "also after the correction)") in text
    assert "final-epoch accuracy TSSL-BP is 0.00 points level with it (p = 1.000, not significant)" in text
    assert "within 1.00 points of each other" in text
    assert "standard deviation over seeds of 0.10-0.10 points" in text


def test_a_difference_significant_only_uncorrected_is_not_called_one():
    """Best 89/90/91 against 92/93/94: 3 points behind, p = 0.0213 (the t-table value of
    test_welch_difference_and_p_value), below 0.05 but not below 0.05 / 4 = 0.0125."""
    runs = longrun.long_runs([
        record("fashion_mnist_mlp", [89.0, 90.0, 91.0], [89.0, 89.1, 89.2]),
        record("fashion_mnist_mlp+backward=surrogate", [92.0, 93.0, 94.0], [89.0, 89.1, 89.2]),
        record("fashion_mnist_mlp+backward=timing-bw-flipped", [90.0, 90.0, 90.1],
               [89.0, 89.1, 89.2])])
    text = longrun.answer(runs)
    assert "trains the MLP no better than surrogate-gradient BPTT" in text
    assert "3.00 points behind it (p = 0.021, significant at the 5 % level alone" in text
    level = longrun.long_runs([
        record("fashion_mnist_mlp", [89.6, 89.7, 89.8], [89.0, 89.1, 89.2]),
        record("fashion_mnist_mlp+backward=surrogate", [89.7, 89.6, 89.9], [89.1, 89.0, 89.3])])
    assert "neither better nor worse than" in longrun.answer(level)
    assert longrun.answer({"tsslbp": level["tsslbp"]}) is None
