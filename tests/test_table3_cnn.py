"""reference/make_table3_cnn.py: the CNN row of Table 3 from its study's run folders, finished
or still going (tiny real runs here: a two-epoch run and a run stopped after one of two)."""
from __future__ import annotations

import json

import pytest
from test_train import run_cli, tiny_args, write_fashion_mnist

from reference import make_table3_cnn


def test_partial_and_finished_runs_make_the_row_figures_and_summary(tmp_path):
    data = write_fashion_mnist(tmp_path / "data", n_train=60, n_test=30)
    study = tmp_path / "table3-cnn"
    for seed, epochs in ((0, 2), (1, 1)):
        out = study / "trials" / f"fashion_mnist_cnn-seed{seed}"
        assert run_cli(["--config", "fashion_mnist_cnn", *tiny_args(data, out, epochs=epochs, seed=seed,
                                                                      network="784-24-10")]) == 0
    cfg_path = study / "trials" / "fashion_mnist_cnn-seed1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "epochs": 2}))          # seed 1: 1 of 2 epochs done
    (study / "trials" / "not-started").mkdir()                     # a trial without an epoch: left out
    out_dir = tmp_path / "ref"
    assert make_table3_cnn.main(["--tsslbp", str(study), "--surrogate", str(tmp_path / "none"),
                                 "--out-dir", str(out_dir), "--data-dir", str(data), "--device", "test"]) == 0
    results = (out_dir / "results.md").read_text()
    assert "## fashion_mnist_cnn" in results and "| paper | not reported | 92.69 ± 0.09 | 92.83 |" in results
    assert "1 of 2 runs have not finished their 2 epochs (epochs done: 1)" in results
    assert "| 1 of 2 (running) |" in results
    runs = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())["tsslbp"]
    assert [(r["run"], r["epochs"], r["epochs_planned"]) for r in runs] == [
        ("fashion_mnist_cnn-seed0", 2, 2), ("fashion_mnist_cnn-seed1", 1, 2)]
    for name in ("curves.png", "sparsity.md", "sparsity_tsslbp/sparsity.png"):
        assert (out_dir / "table3_cnn" / name).stat().st_size > 0
    sparsity = (out_dir / "table3_cnn" / "sparsity.md").read_text()
    assert sparsity.count("| `tsslbp` |") >= 3                    # hidden layer, output, network
    summary = (out_dir / "table3_cnn" / "summary.md").read_text()
    mean = (runs[0]["best"] + runs[1]["best"]) / 2
    assert f"2 run(s), 1 finished (seed 0: 2/2, seed 1: 1/2); best-epoch accuracy {mean:.2f} %" in summary
    assert f"{mean - 92.69:+.2f} points from the paper's mean" in summary
    assert "a lower bound of the best they will reach" in summary
    import statistics

    from scipy.stats import t as student_t
    half = 12.706204736174698 * statistics.stdev([runs[0]["best"], runs[1]["best"]]) / 2 ** 0.5
    assert student_t.ppf(0.975, 1) == pytest.approx(12.706204736174698)   # the t-table: 12.706
    assert (f"the 95 % confidence interval of the mean is ± {half:.2f} points (Student's t, "
            "1 degree of freedom)") in summary


def _run(seed, accs):
    return {"cfg": {"seed": seed}, "epochs": len(accs),
            "rows": [{"epoch": e, "test_acc": a} for e, a in enumerate(accs, 1)]}


def test_runs_at_different_epochs_are_compared_at_the_latest_epoch_they_share():
    # seeds 0 and 1 reached epoch 3, seed 2 only epoch 1: epoch 3, seeds 0 and 1; their
    # best up to epoch 3 is 0.90 and 0.88 (seed 1's best came at epoch 2, not its last)
    runs = [_run(0, [0.80, 0.85, 0.90, 0.91]), _run(1, [0.82, 0.88, 0.87]), _run(2, [0.70])]
    text = make_table3_cnn.common_epoch(runs)
    assert "Compared at epoch 3, the latest that 2 runs (seeds 0, 1) have reached" in text
    assert "best up to it 89.00 ± 1.41." in text          # mean of 90, 88; std √2
    assert make_table3_cnn.common_epoch([_run(0, [0.8, 0.9]), _run(1, [0.7])]) == ""
    assert make_table3_cnn.common_epoch([_run(0, [0.8, 0.9])]) == ""
