"""reference/make_results.py computes its records from run folders (synthetic folders here)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from reference import make_results
from snnsim.analysis.results import in_progress
from snnsim.training.checkpoint import CheckpointError


def _run(folder, seed, accs, attrs=None):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": "fashion_mnist_mlp", "seed": seed,
                                                    "backend": "numpy", "network": "x.yaml"}))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "test_acc": a, "seconds": 10.0, "eval_seconds": 1.0}) + "\n"
        for i, a in enumerate(accs)))
    with h5py.File(folder / "checkpoint.h5", "w") as f:
        for key, value in ({"git_commit": "abc"} if attrs is None else attrs).items():
            f.attrs[key] = value


def _authors_and_paper_runs(tmp_path):
    """Run folders ``a`` (the authors' preset) and ``p`` (``--preset=paper``) of one seed;
    returns an empty output folder."""
    _run(tmp_path / "a", 0, [0.8])
    _run(tmp_path / "p", 0, [0.9])
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    (tmp_path / "p" / "config.json").write_text(json.dumps({**cfg, "preset": "paper"}))
    out = tmp_path / "out"
    out.mkdir()
    return out


def test_records_from_run_folders(tmp_path):
    _run(tmp_path / "s0", 0, [0.80, 0.90, 0.85])
    _run(tmp_path / "s1", 1, [0.82, 0.86, 0.87])
    out = tmp_path / "out"
    out.mkdir()
    assert make_results.main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--device", "cpu",
                              "--out-dir", str(out)]) == 0
    recs = {(r["source"], r["metric"]): r for r in json.loads((out / "results.json").read_text())}
    assert recs[("snnsim", "final_mean")]["value"] == pytest.approx(86.0)
    assert recs[("snnsim", "final_mean")]["std"] == pytest.approx(1.414, abs=1e-3)
    assert recs[("snnsim", "best_mean")]["value"] == pytest.approx(88.5)
    assert recs[("snnsim", "best_max")]["value"] == pytest.approx(90.0)
    assert recs[("snnsim", "best_max")]["seeds"] == [0, 1]
    assert recs[("snnsim", "best_max")]["wall_s_per_run"] == pytest.approx(33.0)
    assert recs[("paper", "best_mean")]["value"] == 89.75 and recs[("paper", "final_mean")]["value"] is None
    assert set(recs[("snnsim", "final_mean")]) == {
        "experiment", "source", "metric", "value", "std", "n_runs", "epochs", "command", "config",
        "seeds", "commit", "device", "wall_s_per_run", "finished_seeds", "runs"}
    assert recs[("snnsim", "final_mean")]["runs"] == [
        {"seed": 0, "final": 85.0, "best": 90.0, "best_epoch": 2, "epochs": 3, "epochs_planned": 3,
         "wall_s": 33.0,
         "commit": "abc"},
        {"seed": 1, "final": 87.0, "best": 87.0, "best_epoch": 3, "epochs": 3, "epochs_planned": 3,
         "wall_s": 33.0,
         "commit": "abc"}]
    text = (out / "results.md").read_text()
    assert "| snnsim | 86.00 ± 1.41 | 88.50 ± 2.12 | 90.00 |" in text
    assert "| 0 | 85.00 | 90.00 | 2 | 3 | 33 |" in text and "| 1 | 87.00 | 87.00 | 3 | 3 | 33 |" in text


def test_other_experiments_are_kept_unless_replaced(tmp_path):
    """A second call with another experiment's runs keeps the first's records (and its
    table, without per-run rows where the records have none); --replace drops them."""
    out = _authors_and_paper_runs(tmp_path)
    make_results.main([str(tmp_path / "a"), "--device", "cpu", "--out-dir", str(out)])
    old = json.loads((out / "results.json").read_text())
    for r in old:                                       # as in results.json of older versions
        r.pop("runs", None)
    (out / "results.json").write_text(json.dumps(old))
    make_results.main([str(tmp_path / "p"), "--device", "gpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    assert {(r["experiment"], r["source"]) for r in recs} == {
        ("fashion_mnist_mlp", "paper"), ("fashion_mnist_mlp", "snnsim"),
        ("fashion_mnist_mlp+preset=paper", "snnsim")}
    text = (out / "results.md").read_text()
    assert "## fashion_mnist_mlp\n" in text and "on cpu;" in text and "on gpu;" in text
    assert "(The per-run rows of this table were not kept.)" in text
    make_results.main([str(tmp_path / "p"), "--device", "gpu", "--out-dir", str(out), "--replace"])
    recs = json.loads((out / "results.json").read_text())
    assert {r["experiment"] for r in recs if r["source"] == "snnsim"} == {"fashion_mnist_mlp+preset=paper"}


def test_variants_are_their_own_experiment(tmp_path):
    out = _authors_and_paper_runs(tmp_path)
    make_results.main([str(tmp_path / "a"), str(tmp_path / "p"), "--device", "cpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    exps = {(r["experiment"], r["source"]) for r in recs}
    assert exps == {("fashion_mnist_mlp", "paper"), ("fashion_mnist_mlp", "snnsim"),
                    ("fashion_mnist_mlp+preset=paper", "snnsim")}
    variant = next(r for r in recs if r["experiment"] == "fashion_mnist_mlp+preset=paper")
    assert variant["command"].endswith("--preset=paper")
    assert variant["config"] == "configs/fashion_mnist_mlp.yaml"


@pytest.mark.parametrize("attrs, shown", [
    ({"git_commit": "abc", "source": "git checkout"}, "abc"),
    # a run of an installed package: no commit, the checkpoint says where the code came from
    ({"git_commit": "", "source": "installed package snnsim==0.1.0"},
     "none (installed package snnsim==0.1.0)"),
    ({}, "unknown"),                        # a checkpoint that says neither
])
def test_the_code_of_a_run_is_named(tmp_path, attrs, shown):
    _run(tmp_path / "s0", 0, [0.8], attrs)
    out = tmp_path / "out"
    out.mkdir()
    assert make_results.main([str(tmp_path / "s0"), "--device", "cpu", "--out-dir", str(out)]) == 0
    recs = json.loads((out / "results.json").read_text())
    assert {tuple(r["commit"]) for r in recs if r["source"] == "snnsim"} == {(shown,)}
    assert f"; commit {shown}." in (out / "results.md").read_text()


def test_a_start_record_of_an_installed_package_names_no_commit():
    """run.json writes null for the commit of an installed package (the checkpoint an empty
    string): both are the same code, not a commit named 'None'."""
    from snnsim.analysis.results import code_label
    source = "installed package snnsim==0.1.0"
    assert code_label({"git_commit": None, "source": source}) == code_label(
        {"git_commit": "", "source": source}) == f"none ({source})"
    assert code_label({"git_commit": None, "source": None}) == "unknown"


def test_runs_of_other_commits_keep_the_earlier_figures(tmp_path):
    """New runs of an experiment replace its record; made at another commit, the old
    record stays, renamed '... (earlier commits)', with the paper row beside it."""
    out = tmp_path / "out"
    out.mkdir()
    _run(tmp_path / "old", 0, [0.80, 0.90], {"git_commit": "old"})
    make_results.main([str(tmp_path / "old"), "--device", "cpu", "--out-dir", str(out)])
    _run(tmp_path / "new", 0, [0.85], {"git_commit": "new"})
    make_results.main([str(tmp_path / "new"), "--device", "cpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    snn = {r["experiment"]: r for r in recs if r["source"] == "snnsim" and r["metric"] == "best_mean"}
    assert snn["fashion_mnist_mlp"]["value"] == 85.0 and snn["fashion_mnist_mlp"]["commit"] == ["new"]
    assert snn["fashion_mnist_mlp (earlier commits)"]["value"] == 90.0
    text = (out / "results.md").read_text()
    section = text.split("## fashion_mnist_mlp (earlier commits)")[1].split("## ")[0]
    assert "| paper | not reported | 89.75 ± 0.03 | 89.80 |" in section
    # the same commit again: replaced, no second earlier record
    make_results.main([str(tmp_path / "new"), "--device", "cpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    assert sorted({r["experiment"] for r in recs if r["source"] == "snnsim"}) == [
        "fashion_mnist_mlp", "fashion_mnist_mlp (earlier commits)"]


def test_runs_still_going_are_listed_with_their_epoch(tmp_path):
    """A run folder whose config plans more epochs than metrics.jsonl holds is a run in
    progress: the section says so, its row shows "2 of 100 (unfinished)", the command the
    planned epochs; finished runs show their epochs alone."""
    _run(tmp_path / "s0", 0, [0.80, 0.90])
    _run(tmp_path / "s1", 1, [0.82, 0.86, 0.87])
    for name, planned in (("s0", 100), ("s1", 3)):
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        (tmp_path / name / "config.json").write_text(json.dumps({**cfg, "epochs": planned}))
    out = tmp_path / "out"
    out.mkdir()
    make_results.main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--device", "test", "--out-dir", str(out)])
    text = (out / "results.md").read_text()
    assert ("**In progress:** 1 of 2 runs has not finished its 100 epochs (epochs done: 2); "
            "the figures below are of the 1 finished run (seed 1); the unfinished one is listed "
            "below and not averaged.") in text
    assert "| 0 | 90.00 | 90.00 | 2 | 2 of 100 (unfinished) | 22 |" in text
    going = [{"epochs": 2, "epochs_planned": 100}, {"epochs": 5, "epochs_planned": 100}]
    assert in_progress({"n_runs": 3, "finished_seeds": [1]}, going) == (      # plural
        "**In progress:** 2 of 3 runs have not finished their 100 epochs (epochs done: 2, 5); "
        "the figures below are of the 1 finished run (seed 1); the unfinished ones, stopped at "
        "different epochs, are listed below and not averaged.")
    assert "| 1 | 87.00 | 87.00 | 3 | 3 | 33 |" in text
    assert "--epochs 100`" in text
    # the figures are the finished run's alone: seed 0's 90 % after 2 of 100 epochs is not
    # averaged with seed 1's 87 % after all 3 of its epochs
    assert "| snnsim | 87.00 | 87.00 | 87.00 |" in text and "33 s per finished run" in text
    recs = {r["metric"]: r for r in json.loads((out / "results.json").read_text())
            if r["source"] == "snnsim"}
    assert recs["best_mean"]["value"] == 87.0 and recs["best_mean"]["std"] is None
    assert recs["best_max"]["value"] == 87.0 and recs["best_mean"]["finished_seeds"] == [1]
    assert recs["best_mean"]["n_runs"] == 2 and len(recs["best_mean"]["runs"]) == 2


def test_with_no_run_finished_there_are_no_mean_figures(tmp_path):
    """Runs all unfinished, at 1 and 2 of 100 epochs: no mean, std or max (a figure over
    runs at different epochs estimates nothing), each run listed with its epochs."""
    _run(tmp_path / "s0", 0, [0.80, 0.90])
    _run(tmp_path / "s1", 1, [0.70])
    for name in ("s0", "s1"):
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        (tmp_path / name / "config.json").write_text(json.dumps({**cfg, "epochs": 100}))
    out = tmp_path / "out"
    out.mkdir()
    make_results.main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--device", "test", "--out-dir", str(out)])
    recs = [r for r in json.loads((out / "results.json").read_text()) if r["source"] == "snnsim"]
    assert {(r["value"], r["std"], r["wall_s_per_run"]) for r in recs} == {(None, None, None)}
    assert all(r["finished_seeds"] == [] and len(r["runs"]) == 2 for r in recs)
    text = (out / "results.md").read_text()
    assert "no run has finished, so there are no mean figures yet" in text
    assert "| snnsim | no run finished | no run finished | no run finished |" in text
    assert "; no run finished yet; commit abc." in text
    assert "| 1 | 70.00 | 70.00 | 1 | 1 of 100 (unfinished) | 11 |" in text


def test_a_run_resumed_by_newer_code_replaces_its_own_earlier_figures(tmp_path):
    """A run started at commit 'first' and resumed at 'second' (run.json holds both
    starts, the checkpoint the latest): its record names both commits, and replaces the
    record made of the same run when only 'first' had trained it. It used to keep that one
    as '(earlier commits)': the same runs twice, the old copy listed as still running."""
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"
    _run(run, 0, [0.80, 0.85], {"git_commit": "first"})
    start = {"git_commit": "first", "source": "git checkout", "blas": []}
    (run / "run.json").write_text(json.dumps(start))
    make_results.main([str(run), "--device", "cpu", "--out-dir", str(out)])
    with h5py.File(run / "checkpoint.h5", "a") as f:
        f.attrs["git_commit"] = "second"
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + json.dumps(
        {"epoch": 3, "test_acc": 0.9, "seconds": 10.0, "eval_seconds": 1.0}) + "\n")
    (run / "run.json").write_text(json.dumps(
        {**start, "resumed": [{**start, "git_commit": "second", "after_epoch": 2}]}))
    make_results.main([str(run), "--device", "cpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    snn = [r for r in recs if r["source"] == "snnsim" and r["metric"] == "best_mean"]
    assert [(r["experiment"], r["commit"], r["value"]) for r in snn] == [
        ("fashion_mnist_mlp", ["first", "second"], 90.0)]
    assert snn[0]["runs"][0]["commit"] == "second"            # the latest epoch's code
    # A copy of the first figures already kept as '(earlier commits)' (by the old merge)
    # goes too; an earlier record of other runs (commit 'other') stays.
    first = json.loads((out / "results.json").read_text())
    stale = [{**r, "experiment": r["experiment"] + " (earlier commits)",
              "commit": [c]} for c in ("first", "other") for r in first if r["source"] == "snnsim"]
    (out / "results.json").write_text(json.dumps(first + stale))
    make_results.main([str(run), "--device", "cpu", "--out-dir", str(out)])
    recs = json.loads((out / "results.json").read_text())
    assert sorted({(r["experiment"], tuple(r["commit"])) for r in recs if r["source"] == "snnsim"}) == [
        ("fashion_mnist_mlp", ("first", "second")), ("fashion_mnist_mlp (earlier commits)", ("other",))]
    (run / "run.json").write_text("{not json")            # named like any damaged file of it
    with pytest.raises(CheckpointError, match="run.json"):
        make_results.main([str(run), "--device", "cpu", "--out-dir", str(out)])


#: README's Results rows and the experiments whose records they quote.
README_ROWS = {"Fashion-MNIST MLP 784-400-400-10": "fashion_mnist_mlp",
               "Fashion-MNIST CNN 32C5-P2-64C5-P2-1024-10": "fashion_mnist_cnn"}


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / "README.md").is_file(),
                    reason="no README.md beside tests/: the installed package's suite "
                           "(scripts/check_dist.sh copies tests/ and reference/ only); the "
                           "source tree's run checks README")
def test_the_readme_results_rows_quote_reference_results_json():
    """README's Results table says what reference/results.json says: each row's snnsim
    cell starts with the experiment's current best-epoch figure, "mean ± std (max M)" as
    results.md rounds it, and every other such figure in the cell is one of the records of
    that experiment (its earlier commits); an experiment with no finished run is "in
    progress" and quotes no mean. A README left behind by a new results.json fails here."""
    import re
    repo = Path(__file__).resolve().parents[1]
    records = json.loads((repo / "reference" / "results.json").read_text())
    readme = (repo / "README.md").read_text()
    figure = re.compile(r"(\d+\.\d\d) ± (\d+\.\d\d) \(max (\d+\.\d\d)\)")

    def quoted(experiment):
        recs = {r["metric"]: r for r in records if r["source"] == "snnsim"
                and r["experiment"] == experiment}
        if not recs or recs["best_mean"]["value"] is None:
            return None
        return (f"{recs['best_mean']['value']:.2f}", f"{recs['best_mean']['std']:.2f}",
                f"{recs['best_max']['value']:.2f}")
    for label, experiment in README_ROWS.items():
        line = next(row for row in readme.splitlines() if row.startswith(f"| {label}"))
        cell = line.split("|")[2]
        current, found = quoted(experiment), figure.findall(cell)
        if current is None:
            assert "in progress" in cell and not found, line
            continue
        assert found and found[0] == current, (line, current)
        allowed = {current, quoted(experiment + " (earlier commits)")}
        assert set(found) <= allowed, (line, allowed)
