"""snnsim.analysis.floor: what the floor of a step counts, and the benchmark's floor and
busy-machine figures (present and well-formed; no figure is asserted: not a timing test)."""
from __future__ import annotations

import json

import numpy as np

from snnsim.analysis import bench, floor
from snnsim.training import threads
from snnsim.training.config import TrainConfig
from snnsim.training.train import make_network


def test_mlp_work_is_the_products_and_passes_of_the_step():
    """The MLP 784-400-400-10 at T = 5, batch 50 on static images: 8 products (the first
    layer on B rows and without its g), 0.309 GFLOP; touches counted by hand."""
    cfg = bench.experiment_config("mlp", "numpy")
    net = make_network(cfg)
    x, _ = bench.make_batch(cfg, net, np.random.default_rng(0))
    products, touches, exps = floor.step_work(net, x)
    shapes = sorted((p.m, p.k, p.n) for p in products)
    assert shapes == sorted([(50, 784, 400), (400, 50, 784),                      # layer 1
                             (250, 400, 400), (400, 250, 400), (250, 400, 400),   # layer 2
                             (250, 400, 10), (10, 250, 400), (250, 10, 400)])     # layer 3
    # 2 (2·50·784·400 + 3·250·400·400 + 3·250·400·10) = 2 · 154 360 000
    assert sum(2 * p.m * p.k * p.n for p in products) == 308_720_000
    # LIF (T, B, N): 3 + 4 float touches and 2 bool ones (1/4 each); the first layer's
    # static input 2 more; the loss 2 on (5, 50, 10); every weight 8
    assert touches[((5, 50, 400), "float32")] == 7.5 + 7.5 + 2
    assert touches[((5, 50, 10), "float32")] == 7.5 + 2
    assert touches[((400, 784), "float32")] == touches[((400, 400), "float32")] == 8
    assert len(exps) == 3 and all(0 < n <= 5 * 50 * 400 for n in exps)


def test_cnn_work_counts_the_im2col_columns():
    cfg = TrainConfig(network="4C3(pad 1)-P2-8C3(pad 1)-P2-16-10", n_steps=2, batch_size=3)
    net = make_network(cfg)
    x, _ = bench.make_batch(cfg, net, np.random.default_rng(0))
    products, touches, _ = floor.step_work(net, x)
    assert len(products) == 2 + 3 + 3 + 3                 # first conv has no g
    # second conv: columns (4·3·3, T·B·14·14) written by im2col and read by col2im
    assert touches[((36, 2 * 3 * 14 * 14), "float32")] == 2


def test_bench_prints_the_floor_and_the_busy_machine(tmp_path, capsys):
    out = tmp_path / "bench.json"
    before = threads.blas_threads()
    try:
        assert bench.main(["--experiments", "mlp", "--no-baseline", "--steps-sweep", "",
                           "--batches", "1", "--warmup", "0", "--floor-steps", "2",
                           "--busy-steps", "1", "--out", str(out)]) == 0
    finally:
        threads.set_blas_threads(before)
    res = json.loads(out.read_text())
    (f,) = res["floor"]
    assert f["step_path"] == "fast" and f["rounds"] == 2 and f["n_products"] == 8
    for path in ("fast", "plain"):
        assert f[path]["step_over_floor"] > 0
        assert set(f[path]["floor_parts_s"]) == {"products", "touches", "exps"}
    (b,) = res["busy"]
    assert b["threads"]["one"] == 1 and b["threads"]["cores"] == b["n_cpu"]
    assert 1 <= b["threads"]["chosen"] <= b["n_cpu"] and b["step_s"]["chosen"] > 0
    printed = capsys.readouterr().out
    assert "x the floor" in printed and "busy-loop" in printed and "BLAS threads" in printed


def test_the_chosen_thread_count_is_timed_once(monkeypatch):
    """Where a run would choose 1 BLAS thread, the busy-machine figure reports the one-thread
    time for it (it printed 'with 1 29.4 ms, with the chosen 1 21.75 ms (0.74x one thread's
    time)': one setting timed twice, two medians)."""
    from snnsim.analysis import floor

    class Timer:
        def __init__(self, cfg):
            self.n = 0

        def step(self):
            self.n += 1
            return 0.01 * self.n            # every step slower than the one before

    monkeypatch.setattr(floor, "StepTimer", Timer)
    monkeypatch.setattr(floor, "start_competitors", lambda n: [])
    monkeypatch.setattr(floor, "choose_blas_threads", lambda n_cpu, idle: 1)
    monkeypatch.setattr(floor.time, "sleep", lambda s: None)
    r = floor.busy_figures(None, n=3, warmup=0)
    assert r["threads"]["chosen"] == 1 and r["step_s"]["chosen"] == r["step_s"]["one"]
    line = floor.format_busy("mlp", r)
    assert "one thread's time" not in line and "a run would choose 1" in line, line
