"""Where the commands write when no --out is given (issue 23, 6): into runs/, never into
the current folder or a tracked folder such as plots/; and a second benchmark does not
overwrite the first one's figures."""
from __future__ import annotations

import json

import pytest
from test_bench import QUICK
from test_train import write_fashion_mnist

from snnsim.analysis import bench, inspection, plots, record


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty current folder, and a tiny Fashion-MNIST outside it."""
    data = write_fashion_mnist(tmp_path / "data")
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd, data


def written(cwd):
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file())


SOURCE = ["--network", "784-12-10", "--samples", "3"]


def test_record_writes_into_runs(here):
    cwd, data = here
    assert record.main([*SOURCE, "--data-dir", str(data)]) == 0
    assert written(cwd) == ["runs/recording.h5"]


def test_inspection_writes_into_runs(here):
    cwd, data = here
    assert inspection.main([*SOURCE, "--data-dir", str(data)]) == 0
    assert written(cwd) == ["runs/inspect.h5"]


def test_plots_write_into_runs(here):
    cwd, data = here
    assert plots.main(["sparsity", *SOURCE, "--data-dir", str(data), "--formats", "png"]) == 0
    assert written(cwd) == ["runs/plots/sparsity.png"]


def test_a_second_benchmark_keeps_the_first(here, monkeypatch):
    cwd, _ = here
    monkeypatch.setattr(bench.time, "strftime", lambda fmt, *a: fmt.replace("%Y%m%d-%H%M%S", "same"))
    for _ in range(2):
        assert bench.main(["--experiments", "mlp", *QUICK, "--no-baseline"]) == 0
    files = written(cwd)
    assert files == ["runs/bench-same-2.json", "runs/bench-same.json"], files
    assert all(json.loads((cwd / f).read_text())["runs"] for f in files)
