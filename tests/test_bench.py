"""The benchmark command runs and reports every figure it promises (not a timing test:
no figure is asserted, only its presence and the baseline's equality of gradients,
which tests/test_properties.py::test_explicit_backward_equals_recursion_in_a_network checks);
it times the training loop's own step, stops at once on an unavailable backend, and keeps
what it measured when interrupted."""
from __future__ import annotations

import json

import pytest

from snnsim.analysis import bench, steptimer
from snnsim.backend import BackendError

QUICK = ["--batches", "1", "--warmup", "0", "--max-batches-slow", "1", "--steps-sweep", "5",
         "--floor-steps", "0", "--busy-steps", "0"]      # those two: tests/test_floor.py


def test_bench_writes_all_figures(tmp_path, capsys, monkeypatch):
    calls = []
    step = steptimer.train_step
    monkeypatch.setattr(steptimer, "train_step", lambda *a, **k: calls.append(1) or step(*a, **k))
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", *QUICK, "--out", str(out)]) == 0
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
    # every figure is a step of snnsim.training.train.train_step: 2 per run figure (timed,
    # then its peak memory) and 2 per memory figure
    assert len(calls) == 2 * 2 + 2 * 2


def test_the_recorded_command_names_no_path_of_this_machine(tmp_path, monkeypatch):
    """Run as ``python3 -m snnsim.bench`` (sys.argv[0] is the module's absolute path): the
    JSON records the command as it is typed, not that path."""
    out = tmp_path / "bench.json"
    monkeypatch.setattr(bench.sys, "argv", ["/abs/path/snnsim/bench.py", "--experiments", "mlp",
                                            *QUICK, "--no-baseline", "--out", str(out)])
    assert bench.main() == 0
    argv = json.loads(out.read_text())["argv"]
    assert argv[0] == "python3 -m snnsim.bench" and "/abs/path" not in " ".join(argv)


def test_quick_default_and_full_plans():
    p = bench.make_parser()
    quick = bench.plan(p.parse_args([]))
    assert {(k, key) for k, _, key, _, _ in quick} == {("run", "mlp"), ("memory", 5), ("memory", 30),
                                                         ("floor", "mlp"), ("busy", "mlp")}
    full = bench.plan(p.parse_args(["--full"]))
    assert {key for k, _, key, _, _ in full if k == "run"} == {"mlp", "cnn", "nmnist"}
    assert {key for k, _, key, _, _ in full if k == "memory"} == {5, 30, 100}


def test_unavailable_backend_fails_before_measuring(tmp_path, capsys, monkeypatch):
    def get_backend(name):
        if name == "cupy":
            raise BackendError("no CUDA device")
        return bench.np
    monkeypatch.setattr(bench, "get_backend", get_backend)
    monkeypatch.setattr(bench, "time_figure", lambda *a, **k: pytest.fail("measured"))
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--backends", "numpy,cupy", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "backend cupy is not available: no CUDA device" in err and "Traceback" not in err
    assert not out.exists()


def test_interrupt_keeps_the_figures_measured(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench, "memory_figure", interrupted)
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", *QUICK, "--out", str(out)]) == 130
    (row,) = json.loads(out.read_text())["runs"]
    assert row["recursion"]["s_per_batch"] > 0 and row["explicit_phi"]["s_per_batch"] > 0


def test_phases_of_the_step(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "", "--steps-sweep", "", "--phases", "--batches", "2",
                       "--warmup", "1", "--out", str(out)]) == 0
    (ph,) = json.loads(out.read_text())["phases"]
    assert set(ph["phases_s"]) == set(bench.PHASES)
    assert all(v > 0 for k, v in ph["phases_s"].items() if k != "clip")
    assert ph["wall_s_per_batch"] >= sum(ph["phases_s"].values()) * 0.5
    assert "forward" in capsys.readouterr().out


def test_peak_memory_counts_the_fast_paths_workspace():
    """The fast step writes into a workspace allocated at its first step and held between
    steps; a peak measured on a later step alone missed it (the recursion's peak at T = 5
    read 4.2 MiB where the step uses 9.6). The peak counts it now, and only where the step
    takes the fast path."""
    cfg = bench.experiment_config("mlp", "numpy")
    timer = bench.StepTimer(cfg)
    timer.step()                                       # allocates the workspace
    held = timer.net.fast_path.ws.nbytes
    assert held > 0
    assert timer.peak_bytes() >= held
    timer.fast = False                                 # the plain step holds nothing
    assert timer.held_bytes() == 0


def test_eval_figure_times_the_training_loops_test_pass(tmp_path, capsys, monkeypatch):
    """--eval-samples: the evaluation's forward per sample (the test pass training runs, and
    the plain forward in the same slices), beside the training step's time per sample."""
    from snnsim.training import train as train_mod
    calls = []
    real = train_mod.test_pass
    monkeypatch.setattr(train_mod, "test_pass", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", *QUICK, "--steps-sweep", "", "--no-baseline",
                       "--eval-samples", "30", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())["eval"]
    assert r["experiment"] == "mlp" and r["samples"] == 30
    assert r["s_per_sample"] > 0 and r["plain_s_per_sample"] > 0
    assert r["eval_over_step"] == pytest.approx(r["s_per_sample"] / r["step_s_per_sample"])
    assert len(calls) == 2 * (1 + 3) and all(len(split) == 30 for split in calls)   # warm + 3, twice
    assert "a training step's time per sample" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--eval-samples", "-1", "--out", str(out)])
    assert exc.value.code == 2


# --- --processes: the spread over fresh processes (issue 29) -------------------------------
def test_spread_is_min_median_max_of_each_figure_over_the_processes():
    from snnsim.analysis import spread
    runs = [{"runs": [{"recursion": {"s_per_batch": v, "peak_bytes": 7}}],
             "floor": [{"fast": {"step_over_floor": r}, "blas_threads": n}]}
            for v, r, n in ((0.004, 1.1, 2), (0.006, 1.5, 2), (0.005, 1.2, 1))]
    records = {r["figure"]: r for r in spread.spread(runs)}
    assert set(records) == {"runs/0/recursion/s_per_batch", "floor/0/fast/step_over_floor"}
    step = records["runs/0/recursion/s_per_batch"]
    assert (step["min"], step["median"], step["max"]) == (0.004, 0.005, 0.006)
    assert step["values"] == [0.004, 0.006, 0.005]
    assert records["floor/0/fast/step_over_floor"]["max_over_min"] == pytest.approx(1.5 / 1.1)
    assert spread.settings(runs) == {"floor/0/blas_threads": [2, 2, 1]}
    # a figure one process lacks is not compared
    del runs[1]["runs"][0]["recursion"]["s_per_batch"]
    assert [r["figure"] for r in spread.spread(runs)] == ["floor/0/fast/step_over_floor"]


def test_strip_processes_leaves_the_childs_arguments():
    from snnsim.analysis.spread import strip_processes
    assert strip_processes(["--processes", "3", "--batches", "2", "--out", "x.json",
                            "--processes=4", "--out=y", "--steps-sweep", ""]) == \
        ["--batches", "2", "--steps-sweep", ""]


def test_processes_runs_the_benchmark_in_fresh_processes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--experiments", "mlp", *QUICK, "--steps-sweep", "", "--no-baseline",
                       "--processes", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    pids = [p["pid"] for p in res["processes"]]
    assert len(set(pids)) == 2 and bench.os.getpid() not in pids
    step = {r["figure"]: r for r in res["spread"]}["runs/0/recursion/s_per_batch"]
    assert step["values"] == [p["runs"][0]["recursion"]["s_per_batch"] for p in res["processes"]]
    for k in (1, 2):                                  # each process's own file, kept beside
        assert json.loads((tmp_path / f"bench.p{k}.json").read_text())["pid"] == pids[k - 1]
    text = capsys.readouterr().out
    assert "spread over 2 fresh processes" in text and "runs/0/recursion/s_per_batch" in text


def test_processes_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--processes", "0", "--out", str(tmp_path / "b.json")])
    assert exc.value.code == 2
    assert "--processes must be 1 or more, got 0" in capsys.readouterr().err


def test_cores_probe_runs_workers_alone_and_together(monkeypatch):
    from snnsim.analysis import cores
    r = cores.probe(2, seconds=0.05)
    assert r["workers"] == 2 and len(r["together"]) == 2
    for w in (r["alone"], *r["together"]):
        assert w["gemm_flops"] > 0 and w["elementwise_per_s"] > 0
    assert r["gemm_scaling"] == pytest.approx(
        sum(w["gemm_flops"] for w in r["together"]) / r["alone"]["gemm_flops"])
    assert "2 workers at once do" in cores.format_probe(r)


def test_bench_cores_records_the_probe(tmp_path, monkeypatch):
    from snnsim.analysis import cores
    monkeypatch.setattr(cores, "SECONDS", 0.05)
    monkeypatch.setattr(cores.probe, "__defaults__", (None, 0.05))
    out = tmp_path / "bench.json"
    assert bench.main(["--cores", "--experiments", "", "--steps-sweep", "", "--floor-steps", "0",
                       "--busy-steps", "0", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["cores"]
    assert r["workers"] >= 1 and r["gemm_scaling"] > 0 and r["elementwise_scaling"] > 0
