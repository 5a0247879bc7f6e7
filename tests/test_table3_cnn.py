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
    assert ("1 of 2 runs has not finished its 2 epochs (epochs done: 1); the figures below are "
            "of the 1 finished run (seed 0)") in results
    assert "| 1 of 2 (unfinished) |" in results
    runs = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())["tsslbp"]
    best0 = runs[0]["best"]
    assert f"| snnsim | {runs[0]['final']:.2f} | {best0:.2f} | {best0:.2f} |" in results
    assert [(r["run"], r["epochs"], r["epochs_planned"]) for r in runs] == [
        ("fashion_mnist_cnn-seed0", 2, 2), ("fashion_mnist_cnn-seed1", 1, 2)]
    for name in ("curves.png", "sparsity.md", "sparsity_tsslbp/sparsity.png"):
        assert (out_dir / "table3_cnn" / name).stat().st_size > 0
    sparsity = (out_dir / "table3_cnn" / "sparsity.md").read_text()
    assert sparsity.count("| `tsslbp` |") >= 3                    # hidden layer, output, network
    summary = (out_dir / "table3_cnn" / "summary.md").read_text()
    # the finished run against the paper; the unfinished one apart, as a lower bound (a
    # mean over runs at different epochs estimates nothing)
    best0, best1 = runs[0]["best"], runs[1]["best"]
    assert (f"2 run(s), 1 finished (seed 0: 2/2, seed 1: 1/2). Finished run: best-epoch accuracy "
            f"{best0:.2f} % (max {best0:.2f}), {best0 - 92.69:+.2f} points from the paper's mean. "
            "One finished run: no spread over seeds yet") in summary
    assert (f"Best so far of the runs not finished (seed 1 {best1:.2f}): a lower bound of the best "
            "they will reach") in summary
    assert "confidence interval" not in summary

    cfg_path.write_text(json.dumps({**cfg, "epochs": 1}))          # seed 1 planned 1: finished
    assert make_table3_cnn.main(["--tsslbp", str(study), "--surrogate", str(tmp_path / "none"),
                                 "--out-dir", str(out_dir), "--data-dir", str(data), "--device", "test"]) == 0
    summary = (out_dir / "table3_cnn" / "summary.md").read_text()
    mean = (best0 + best1) / 2
    assert (f"2 run(s), 2 finished (seed 0: 2/2, seed 1: 1/1). Finished runs: best-epoch accuracy "
            f"{mean:.2f} % on average (max {max(best0, best1):.2f}), {mean - 92.69:+.2f} points") in summary
    assert "not finished" not in summary
    import statistics

    from scipy.stats import t as student_t
    half = 12.706204736174698 * statistics.stdev([best0, best1]) / 2 ** 0.5
    assert student_t.ppf(0.975, 1) == pytest.approx(12.706204736174698)   # the t-table: 12.706
    assert (f"the 95 % confidence interval of the mean is ± {half:.2f} points (Student's t, "
            "1 degree of freedom)") in summary


def test_the_surrogate_study_adds_its_rows_sparsity_and_a_seed_by_seed_comparison(tmp_path):
    data = write_fashion_mnist(tmp_path / "data", n_train=60, n_test=30)
    for study, backward, epochs in (("table3-cnn", "tsslbp", 2), ("surrogate", "surrogate", 1)):
        out = tmp_path / study / "trials" / "fashion_mnist_cnn-seed0"
        assert run_cli(["--config", "fashion_mnist_cnn", f"--backward={backward}",
                        *tiny_args(data, out, epochs=epochs, seed=0, network="784-24-10")]) == 0
    out_dir = tmp_path / "ref"
    assert make_table3_cnn.main(["--tsslbp", str(tmp_path / "table3-cnn"),
                                 "--surrogate", str(tmp_path / "surrogate"), "--out-dir",
                                 str(out_dir), "--data-dir", str(data), "--device", "test"]) == 0
    results = (out_dir / "results.md").read_text()
    assert "## fashion_mnist_cnn+backward=surrogate" in results
    assert (out_dir / "table3_cnn" / "sparsity_surrogate" / "sparsity.png").stat().st_size > 0
    assert (out_dir / "table3_cnn" / "sparsity.md").read_text().count("| `surrogate` |") >= 3
    runs = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())
    t, s = runs["tsslbp"][0], runs["surrogate"][0]
    summary = (out_dir / "table3_cnn" / "summary.md").read_text()
    assert "- `surrogate`: 1 run(s), 1 finished (seed 0: 1/1)" in summary
    # seed 0 compared at epoch 1, the latest both runs have: the surrogate run's only
    # epoch against the TSSL-BP run's first (not its best over two epochs)
    rows = [json.loads(line) for line in (tmp_path / "table3-cnn" / "trials" / "fashion_mnist_cnn-seed0"
                                          / "metrics.jsonl").read_text().splitlines()]
    first = 100 * rows[0]["test_acc"]
    assert (f"seed 0 at epoch 1: {s['best']:.2f} against {first:.2f} "
            f"({s['best'] - first:+.2f})") in summary
    assert t["epochs"] == 2 and "one seed, so no spread yet" in summary


def test_the_gradient_comparison_pairs_runs_by_seed_at_their_common_epoch():
    tsslbp = [_run(0, [0.80, 0.85, 0.90]), _run(1, [0.82, 0.88, 0.87]), _run(2, [0.70])]
    surrogate = [_run(1, [0.81, 0.86]), _run(0, [0.79, 0.84, 0.91, 0.95]), _run(5, [0.5])]
    text = make_table3_cnn.gradient_comparison(tsslbp, surrogate)
    # seed 0 at epoch 3: 91 against 90; seed 1 at epoch 2: 86 against 88; seed 5: no pair
    assert ("seed 0 at epoch 3: 91.00 against 90.00 (+1.00); seed 1 at epoch 2: 86.00 against "
            "88.00 (-2.00). Mean difference -0.50 points, sample std 2.12 over 2 seeds.") in text
    assert "no seed has runs of both" in make_table3_cnn.gradient_comparison(tsslbp, [_run(7, [0.5])])


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


def test_the_study_script_starts_two_workers_returns_and_stops_them(tmp_path):
    """scripts/table3_cnn.sh with a stand-in interpreter (it records its arguments and waits
    to be stopped): the script returns although its output is read through a pipe (its
    workers used to keep the pipe open, so that a caller reading it waited for ever), the
    two workers run the study's command with one BLAS thread, a second start is refused
    while they run, the surrogate study starts beside it on --workers=1 with the seeds
    --seeds names, and --stop ends each study's workers."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists() or not (repo / "scripts" / "table3_cnn.sh").exists():
        pytest.skip("needs the git checkout (the script clones it)")
    if shutil.which("pgrep") is None:
        pytest.skip("needs pgrep and pkill (procps), which the script uses")
    # The stand-in handles signals as snnsim does: SIGTERM stops it, and SIGINT too unless
    # it started ignored (the script's background start leaves it so); --stop used to send
    # SIGINT, which the real workers of the CNN study ignored.
    fake = tmp_path / "python3"
    fake.write_text(f"#!{sys.executable}\n"
                    "import os, signal, sys, time\n"
                    "with open(os.environ['FAKE_CALLS'], 'a') as f:\n"
                    "    print(os.environ.get('OPENBLAS_NUM_THREADS'), *sys.argv[1:], file=f)\n"
                    "if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:\n"
                    "    signal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
                    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))\n"
                    "while True:\n    time.sleep(0.1)\n")
    fake.chmod(0o755)
    studies = tmp_path / "studies"
    env = {**os.environ, "SNNSIM_STUDIES": str(studies), "SNNSIM_PYTHON": str(fake),
           "FAKE_CALLS": str(tmp_path / "calls"), "SNNSIM_WORKER_GAP": "1"}
    script = ["bash", str(repo / "scripts" / "table3_cnn.sh")]
    try:
        started = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0 and "started 2 workers" in started.stdout, started
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(
                (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists()
                else []) < 2:
            time.sleep(0.1)
        calls = (tmp_path / "calls").read_text().splitlines()
        assert calls == [f"1 -m snnsim.study run {studies / 'table3-cnn'} --config fashion_mnist_cnn "
                         "--seeds 0,1,2,3,4 --epochs=100 --grace 600 --max-retry 100"] * 2
        again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "already running" in again.stderr
        # The surrogate study beside it, on one worker (the machine shared between them).
        one = subprocess.run([*script, "surrogate", "--workers=1", "--seeds=1"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert one.returncode == 0, one
        assert one.stdout.endswith(
            f"started 1 worker; logs: {studies / 'table3-cnn-surrogate' / 'worker1.log'}\n")
        while time.monotonic() < deadline + 30 and len(
                (tmp_path / "calls").read_text().splitlines()) < 3:
            time.sleep(0.1)
        assert (tmp_path / "calls").read_text().splitlines()[2:] == [
            f"1 -m snnsim.study run {studies / 'table3-cnn-surrogate'} --config fashion_mnist_cnn "
            "--seeds 1 --backward=surrogate --epochs=100 --grace 600 --max-retry 100"]
        bad = subprocess.run([*script, "--workers=0"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 2 and "unknown argument '--workers=0'" in bad.stderr
        bad = subprocess.run([*script, "--seeds=2,x"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 2 and "--seeds takes a comma-separated list" in bad.stderr
    finally:
        stop = subprocess.run([*script, "--stop"], env=env, capture_output=True,
                              text=True, timeout=60)
        stop_s = subprocess.run([*script, "surrogate", "--stop"], env=env, capture_output=True,
                                text=True, timeout=60)
    assert "asked the workers" in stop.stdout and "asked the workers" in stop_s.stdout
    left = []
    for name in ("table3-cnn", "table3-cnn-surrogate"):
        pattern = f"snnsim.study run {studies / name}( |$)"
        deadline = time.monotonic() + 30
        while (time.monotonic() < deadline
               and subprocess.run(["pgrep", "-f", pattern]).returncode == 0):
            time.sleep(0.1)
        if subprocess.run(["pgrep", "-f", pattern]).returncode == 0:
            left.append(name)
            subprocess.run(["pkill", "-KILL", "-f", pattern])    # not left behind the test
    assert not left, f"workers of {left} did not stop"


def test_runs_json_keeps_finished_runs_when_their_study_folder_is_gone(tmp_path, capsys):
    """A study folder lives on one machine: reference/table3_cnn/runs.json is what outlives
    it. After the folder is gone, the finished run still counts (same figures, from its kept
    rows) and its sparsity rows stay; the unfinished one is left out, with a line saying so;
    a run of a new study adds to the kept one; a kept finished run is not replaced by an
    unfinished run of its seed; where the best run has neither best.h5 nor rows, the next
    best that has one stands in, with a line saying so."""
    import shutil
    data = write_fashion_mnist(tmp_path / "data", n_train=60, n_test=30)
    study = tmp_path / "table3-cnn"

    def train(seed, epochs, planned, worst=False):
        out = study / "trials" / f"fashion_mnist_cnn-seed{seed}"
        assert run_cli(["--config", "fashion_mnist_cnn", *tiny_args(data, out, epochs=epochs, seed=seed,
                                                                      network="784-24-10")]) == 0
        path = out / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "epochs": planned}))
        if worst:       # below any real run: which run is the best is then known
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            (out / "metrics.jsonl").write_text("".join(json.dumps({**r, "test_acc": 0.001}) + "\n"
                                                       for r in rows))

    train(0, 2, 2)
    train(1, 1, 2, worst=True)                                      # 1 of 2 epochs
    out_dir = tmp_path / "ref"
    argv = ["--tsslbp", str(study), "--surrogate", str(tmp_path / "none"), "--out-dir", str(out_dir),
            "--data-dir", str(data), "--device", "test"]
    assert make_table3_cnn.main(argv) == 0
    first = json.loads((out_dir / "results.json").read_text())
    kept = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())["tsslbp"]
    assert not any("/" in str(v) for entry in kept for v in entry["cfg"].values())   # no paths
    sparsity_md = out_dir / "table3_cnn" / "sparsity.md"
    seed0_rows = [line for line in sparsity_md.read_text().splitlines()
                  if line.startswith("| `tsslbp` | fashion_mnist_cnn-seed0 (")]
    assert len(seed0_rows) >= 3

    shutil.rmtree(study)                                            # the machine is gone
    capsys.readouterr()
    assert make_table3_cnn.main(argv) == 0
    said = capsys.readouterr().out
    assert ("tsslbp: fashion_mnist_cnn-seed1 (1 of 2 epochs) is in runs.json but not in the study "
            "folder: left out") in said
    runs = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())["tsslbp"]
    assert [r["run"] for r in runs] == ["fashion_mnist_cnn-seed0"] and runs[0] == kept[0]
    again = {r["metric"]: r for r in json.loads((out_dir / "results.json").read_text())
             if r["source"] == "snnsim"}
    before = {r["metric"]: r for r in first if r["source"] == "snnsim"}
    for metric in ("final_mean", "best_mean", "best_max"):       # seed 0 was the finished run
        assert again[metric]["value"] == before[metric]["value"]
    assert again["best_mean"]["seeds"] == [0] and again["best_mean"]["n_runs"] == 1
    assert sparsity_md.read_text().splitlines()[-len(seed0_rows):] == seed0_rows
    assert "fashion_mnist_cnn-seed0 is kept in runs.json only" in said

    # A new study (another machine): seed 1 again, one epoch of 2, beside the kept seed 0;
    # and a seed 0 run there, unfinished, does not replace the kept finished one.
    train(0, 1, 2)
    train(1, 1, 2, worst=True)
    assert make_table3_cnn.main(argv) == 0
    said = capsys.readouterr().out
    assert ("tsslbp: fashion_mnist_cnn-seed0 finished 2 epochs (runs.json); the study folder's run "
            "of seed 0 (1 epochs) is not counted") in said
    runs = json.loads((out_dir / "table3_cnn" / "runs.json").read_text())["tsslbp"]
    assert [(r["run"], r["epochs"], r["epochs_planned"]) for r in runs] == [
        ("fashion_mnist_cnn-seed0", 2, 2), ("fashion_mnist_cnn-seed1", 1, 2)]
    assert runs[0] == kept[0]

    # The kept best run's rows gone from sparsity.md: seed 1's best.h5 stands in.
    sparsity_md.write_text("\n".join(line for line in sparsity_md.read_text().splitlines()
                                     if line not in seed0_rows) + "\n")
    assert make_table3_cnn.main(argv) == 0
    assert ("tsslbp: the best run fashion_mnist_cnn-seed0 has no best.h5 here and no rows in "
            "sparsity.md; the rows are of fashion_mnist_cnn-seed1") in capsys.readouterr().out
    assert "| `tsslbp` | fashion_mnist_cnn-seed1 (0.10 %) |" in sparsity_md.read_text()
    # ... and with no study folder at all, a row says that no best.h5 is here.
    shutil.rmtree(study)
    sparsity_md.write_text("")
    assert make_table3_cnn.main(argv) == 0
    assert sparsity_md.read_text().splitlines()[-1] == (
        "| `tsslbp` | none: no best.h5 of its runs on this machine | | | | |")

    runs_path = out_dir / "table3_cnn" / "runs.json"
    broken = {"tsslbp": [{k: v for k, v in kept[0].items() if k != "rows"}]}
    runs_path.write_text(json.dumps(broken))
    with pytest.raises(SystemExit, match="runs.json: run 'fashion_mnist_cnn-seed0' lacks rows"):
        make_table3_cnn.main(argv)


def test_a_run_kept_with_its_best_and_final_epochs_only_is_compared_where_that_says_enough():
    """Runs whose per-epoch history was not kept (two rows: the best epoch and the last):
    the best up to an epoch is known from their best epoch on, not before; the comparisons
    leave them out where it is not known."""
    sparse = {**_run(0, []), "history": "best and final epochs only", "epochs": 10,
              "rows": [{"epoch": 6, "test_acc": 0.92}, {"epoch": 10, "test_acc": 0.91}]}
    assert make_table3_cnn.best_up_to(sparse, 10) == pytest.approx(92.0)
    assert make_table3_cnn.best_up_to(sparse, 6) == pytest.approx(92.0)
    assert make_table3_cnn.best_up_to(sparse, 5) is None
    full = _run(1, [0.80, 0.85, 0.90, 0.91])
    assert make_table3_cnn.best_up_to(full, 2) == pytest.approx(85.0)
    # epoch 4 is the latest two runs share, but the sparse run's best up to it is unknown
    assert make_table3_cnn.common_epoch([sparse, full]) == ""
    text = make_table3_cnn.gradient_comparison([sparse], [_run(0, [0.5, 0.6])])
    assert "seed 0 at epoch 2: not known (the per-epoch history of a run of it was not kept)" in text
    assert "Mean difference" not in text
