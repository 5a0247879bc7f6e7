"""Data-parallel training (snnsim/training/parallel.py) under a real ``mpiexec -n 2``:
the same weights as one process at the same global batch, bit-exact resume, and a
resume with another number of ranks.

The runs are tiny (65 training samples, 784-24-10, float64) so that each takes
about a second. Skipped, with the reason, where mpi4py or mpiexec is missing.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import procs
import pytest
from test_train import write_fashion_mnist

from snnsim.training.checkpoint import checkpoint_epoch, kept_batches, load_checkpoint
from snnsim.training.data import Split, batches, shard_batch

REPO = Path(__file__).resolve().parents[1]
#: 65 = 6 batches of 10 and a last one of 5 (split 3 + 2); 31 test samples in batches of
#: 15 leave a last batch of 1, so rank 1's part of it is empty.
N_TRAIN, N_TEST = 65, 31
#: Relative tolerance on the weights (Frobenius norm of the difference over the norm) after
#: 14 steps in float64. The two runs differ only in the order of the batch sum of each
#: gradient (two partial sums added by Allreduce instead of one BLAS sum): a few ulps
#: (eps = 2.2e-16) per step, which AdamW's m / sqrt(v) passes on without amplifying
#: them. Measured: 5e-17. 1e-12 leaves room without hiding a wrong gradient (a missed
#: or doubled part changes the weights at 1e-2).
RTOL_WEIGHTS = 1e-12


def _mpiexec() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(_mpiexec() is None,
                               reason="mpi4py or mpiexec missing (scripts/setup.sh --test "
                                      "installs openmpi-bin and mpi4py)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=N_TRAIN, n_test=N_TEST)


def args(data_dir, out, epochs):
    return ["--data-dir", str(data_dir), "--out", str(out), f"--epochs={epochs}",
            "--network=784-24-10", "--batch-size=10", "--dtype=float64", "--eval_batch_size=15",
            "--progress=false", "--seed=3"]


#: OpenMPI refuses root without the first two (CI containers run as root); the third
#: makes a waiting rank yield its core instead of spinning (2 ranks on 2 busy cores).
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_mpi_yield_when_idle": "1"}


def train(argv, n_ranks: int | None):
    """``python3 -m snnsim.train ARGV``, under ``mpiexec -n n_ranks --data-parallel`` unless
    n_ranks is None."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **MPI_ENV}
    cmd = [sys.executable, "-m", "snnsim.train", *argv]
    if n_ranks is not None:
        cmd = [_mpiexec(), "-n", str(n_ranks), "--oversubscribe", "--bind-to", "none",
               *cmd, "--data-parallel"]
    proc = procs.run(cmd, 300, cwd=REPO, env=env)     # a hung rank: mpiexec and ranks killed
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(run_dir):
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.h5")
    return ckpt, [layer[k] for layer in ckpt["weights"] for k in sorted(layer)]


def rel_diff(a, b) -> float:
    return max(float(np.linalg.norm(x - y) / np.linalg.norm(y)) for x, y in zip(a, b))


@needs_mpi
def test_two_ranks_equal_one_process_and_resume_bit_exactly(data_dir, tmp_path):
    train(args(data_dir, tmp_path / "one", 2), None)
    proc = train(args(data_dir, tmp_path / "dp", 2), 2)
    assert "data-parallel over 2 MPI ranks" in proc.stdout
    assert proc.stdout.count("epoch 2/2:") == 1          # rank 0 alone prints
    one, w_one = weights(tmp_path / "one")
    dp, w_dp = weights(tmp_path / "dp")
    assert dp["epoch"] == 2
    assert rel_diff(w_dp, w_one) <= RTOL_WEIGHTS
    # Every epoch's summed loss, accuracies and test accuracy match too.
    for r1, r2 in zip(one["metrics"], dp["metrics"]):
        assert r2["train_acc"] == r1["train_acc"] and r2["test_acc"] == r1["test_acc"]
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-12)
    assert dp["rng_state"] == one["rng_state"]          # the same shuffles on every rank

    # 1 epoch, then resume to 2 with the same 2 ranks: bit-exact with the straight run.
    train(args(data_dir, tmp_path / "half", 1), 2)
    assert load_checkpoint(tmp_path / "half" / "checkpoint.h5")["epoch"] == 1
    train(["--resume", str(tmp_path / "half"), "--epochs=2", "--progress=false"], 2)
    _, w_resumed = weights(tmp_path / "half")
    for a, b in zip(w_resumed, w_dp):
        np.testing.assert_array_equal(a, b)

    # Resume with another N (here: one process, no MPI): the same run, to the tolerance.
    train(args(data_dir, tmp_path / "half1", 1), 2)
    train(["--resume", str(tmp_path / "half1"), "--epochs=2", "--progress=false"], None)
    assert rel_diff(weights(tmp_path / "half1")[1], w_one) <= RTOL_WEIGHTS


@needs_mpi
def test_a_batch_smaller_than_the_ranks_is_refused(data_dir, tmp_path):
    """65 samples in batches of 32: the last has 1 sample, too few for 2 ranks (exit 2,
    one line, no rank left waiting)."""
    argv = args(data_dir, tmp_path / "r", 1)
    argv[argv.index("--batch-size=10")] = "--batch-size=32"
    env = {**os.environ, "PYTHONPATH": str(REPO), **MPI_ENV}
    proc = procs.run([_mpiexec(), "-n", "2", "--oversubscribe", sys.executable, "-m",
                      "snnsim.train", *argv, "--data-parallel"], 300, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert "needs at least 2 samples in every batch" in proc.stderr


def test_shards_cover_every_batch_once():
    """The parts of all ranks put together are the batch, in order (no MPI needed)."""
    x = np.arange(7 * 3, dtype=float).reshape(7, 3)
    split = Split("train", "static", np.arange(7), x=x)
    whole = list(batches(split, 4, np, "float64", 1))
    for size in (1, 2, 3):
        parts = [list(batches(split, 4, np, "float64", 1, shard=(r, size))) for r in range(size)]
        for b, (xb, yb) in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), yb)
            np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts], axis=1), xb)
    # Augmented splits draw for the whole batch on every rank: the generator advances alike.
    aug = Split("train", "static", np.arange(7), x=np.zeros((7, 3, 32, 32)), augment=True)
    g1, g2 = np.random.default_rng(0), np.random.default_rng(0)
    shard_batch(aug, np.arange(4), g1, 0, 2)
    shard_batch(aug, np.arange(4), g2, 1, 2)
    assert g1.bit_generator.state == g2.bit_generator.state


def mpi_train(argv, timeout_s: float = 120):
    """``mpiexec -n 2 python3 -m snnsim.train ARGV --data-parallel``: the finished process
    (a hang fails the test after ``timeout_s``, ranks killed)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **MPI_ENV}
    return procs.run([_mpiexec(), "-n", "2", "--oversubscribe", "--bind-to", "none",
                      sys.executable, "-m", "snnsim.train", *argv, "--data-parallel"],
                     timeout_s, cwd=REPO, env=env)


@needs_mpi
def test_a_refusal_by_rank_0_alone_stops_every_rank(data_dir, tmp_path):
    """Rank 0 alone checks the run folder: its refusal (a folder that holds a run, an
    --out that is a file) must end rank 1 too, with exit status 2 and one error line,
    instead of leaving it in the first Allreduce (it hung before) or aborting with a
    traceback."""
    train(args(data_dir, tmp_path / "run", 1), None)
    (tmp_path / "file").write_text("")
    for out, message in ((tmp_path / "run", "already holds a run"),
                         (tmp_path / "file", "exists and is not a folder")):
        proc = mpi_train(args(data_dir, out, 1))
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("snnsim.train:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]


def _rank_pids(proc) -> dict[int, int]:
    """{MPI rank: pid} of the ranks ``mpiexec`` (``proc``) started (Linux /proc)."""
    ranks = {}
    for pid in procs.session_members(proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(item.split(b"=", 1)[1])] = pid
    return ranks


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks in /proc")
def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(data_dir, tmp_path):
    """SIGTERM to rank 1 alone (a scheduler that signals one node, say): every rank stops
    after the same step, rank 0 says where the last checkpoint is, and the run resumes.
    Before the stop request was shared, rank 1 left and rank 0 waited in the next
    Allreduce for ever; with rank 1's own request read between the shared check and its
    raise, it still did once in a few runs."""
    out = tmp_path / "run"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **MPI_ENV}
    argv = args(data_dir, out, 500)          # far more epochs than the test waits for
    proc = procs.start([_mpiexec(), "-n", "2", "--oversubscribe", "--bind-to", "none",
                        sys.executable, "-m", "snnsim.train", *argv, "--data-parallel"],
                       cwd=REPO, env=env)
    procs.wait_for((out / "checkpoint.h5").exists, proc, 120, "the first epoch's checkpoint")
    ranks = _rank_pids(proc)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGTERM)
    stdout, stderr = procs.finish(proc, 120)     # a rank left waiting: killed, test failed
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "terminated (SIGTERM)" in stdout and "Resume with" in stdout
    epoch = load_checkpoint(out / "checkpoint.h5")["epoch"]
    assert 1 <= epoch < 500
    done = mpi_train(["--resume", str(out), f"--epochs={epoch + 1}", "--progress=false"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert load_checkpoint(out / "checkpoint.h5")["epoch"] == epoch + 1


@needs_mpi
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_under_mpi_ends_every_rank_with_status_3(data_dir, tmp_path):
    """lr 1e38 in float32, clip and clamp off: the weights overflow in the first steps on
    every rank. The ranks leave through MPI_Abort with the exit status of a diverged run
    alone (3) and the "diverged" line, no traceback, no checkpoint."""
    out = tmp_path / "run"
    argv = args(data_dir, out, 2)
    argv[argv.index("--dtype=float64")] = "--dtype=float32"
    proc = mpi_train([*argv, "--lr=1e38", "--grad_clip=0", "--weight_clamp=0"])
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "snnsim.train: diverged" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "checkpoint.h5").exists()


@needs_mpi
@pytest.mark.parametrize("rank1_change, field", [("--lr=0.01", "lr"),
                                                 ("--network=784-30-10", "network")])
def test_ranks_given_other_arguments_stop_before_the_first_step(data_dir, tmp_path,
                                                                rank1_change, field):
    """Rank 1 started with another --lr (it trained on, exit 0, while the checkpoint
    recorded rank 0's lr) or another --network (it hung in the first Allreduce): every
    rank exits 2 before the first step, rank 0 names the differing field in one line,
    and no run is left in the folder."""
    out = tmp_path / "run"
    argv = args(data_dir, out, 1)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **MPI_ENV}
    rank0 = [sys.executable, "-m", "snnsim.train", *argv, "--data-parallel"]
    key = rank1_change.split("=")[0] + "="
    rank1 = [a for a in rank0 if not a.startswith(key)] + [rank1_change]
    proc = procs.run([_mpiexec(), "--oversubscribe", "--bind-to", "none", "-n", "1", *rank0,
                      ":", "-n", "1", *rank1], 120, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snnsim.train:")]
    assert len(errors) == 1, proc.stderr
    assert "ranks [1] were given another config than rank 0" in errors[0]
    assert f"{field} " in errors[0], errors[0]
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert not (out / "checkpoint.h5").exists() and "epoch 1/1" not in proc.stdout


def test_the_config_digest_ignores_what_only_rank_0_uses():
    """out (a default one holds the second each rank resolved it in) and progress (off
    on ranks other than 0) are left out; any other field changes the digest."""
    from snnsim.training.config import TrainConfig
    from snnsim.training.parallel import config_digest
    cfg = TrainConfig()
    assert config_digest(cfg.replace(out="a", progress=False)) == config_digest(cfg)
    for change in ({"lr": 0.01}, {"network": "784-30-10"}, {"seed": 1}, {"dtype": "float64"}):
        assert config_digest(cfg.replace(**change)) != config_digest(cfg), change


@needs_mpi
def test_a_missing_backend_is_one_line_from_all_the_ranks(data_dir, tmp_path):
    """``--backend cupy`` without CuPy fails on every rank before the ranks share anything:
    one error line for the job (every rank printed it before), exit status 2, no rank
    left waiting."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: the backend is not missing")
    proc = mpi_train([*args(data_dir, tmp_path / "run", 1), "--backend", "cupy"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snnsim.train:")]
    assert len(errors) == 1 and "needs CuPy" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _stop_args(data_dir, out, epochs, *extra) -> list[str]:
    """13 batches of 5 per epoch (3 + 2 samples per rank) and a dropout layer, so that a
    resume that went on from the wrong batch would draw other masks (they depend on the
    epoch and the batch) and other samples."""
    argv = args(data_dir, out, epochs)
    argv[argv.index("--batch-size=10")] = "--batch-size=5"
    argv[argv.index("--network=784-24-10")] = "--network=784-24-D0.2-10"
    return [*argv, *extra]


def _stopped_inside_an_epoch(data_dir, out, how, tries: int = 5):
    """Start a long 2-rank run that keeps the epoch so far after every step
    (``--save-every-s=1e-6``) and stop it inside an epoch after its first: once a
    checkpoint is written and then an interrupted.h5 (the next epoch has begun). ``how``
    is ``"sigterm"`` (SIGTERM to rank 1 alone: both ranks stop after the same step, and
    write interrupted.h5 at that step) or ``"kill"`` (SIGKILL to the whole job, a crash:
    what is left is the last periodic interrupted.h5). Returns (interrupted.h5's epoch,
    batches done, stdout). A stop that still fell at an epoch's end keeps nothing: the
    run is resumed and stopped again, up to ``tries`` times. (Stopped as soon as the
    checkpoint appeared, the runs stopped at that epoch's end nearly every time on CI.)"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **MPI_ENV}
    first = _stop_args(data_dir, out, 500, "--save-every-s=1e-6")
    for attempt in range(tries):
        argv = first if attempt == 0 else ["--resume", str(out), "--progress=false"]
        proc = procs.start([_mpiexec(), "-n", "2", "--oversubscribe", "--bind-to", "none",
                            sys.executable, "-m", "snnsim.train", *argv, "--data-parallel"],
                           cwd=REPO, env=env)
        epoch0 = load_checkpoint(out / "checkpoint.h5")["epoch"] if attempt else 0
        procs.wait_for(lambda e=epoch0: (out / "checkpoint.h5").exists()
                       and checkpoint_epoch(out / "checkpoint.h5") > e
                       and (out / "interrupted.h5").exists(),
                       proc, 120, "an epoch's checkpoint, then the next epoch's first batch")
        if how == "sigterm":
            os.kill(_rank_pids(proc)[1], signal.SIGTERM)
            stdout, stderr = procs.finish(proc, 120)
            assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
        else:
            stdout, _ = procs.kill_group(proc)
        if kept_batches(out / "interrupted.h5", out / "checkpoint.h5"):   # (not a stale one)
            state = load_checkpoint(out / "interrupted.h5")
            return state["epoch"], state["partial"]["batches_done"], stdout or ""
    pytest.fail(f"{tries} stops, none inside an epoch")


def _assert_same_run(a_dir, b_dir):
    """Bit-identical weights, optimizer moments and generator; the epochs' accuracies
    equal and their summed losses to a few ulps (rank 0 carries the sum of the ranks'
    losses so far across the stop: another order of the same float64 sum)."""
    a, wa = weights(a_dir)
    b, wb = weights(b_dir)
    assert a["epoch"] == b["epoch"]
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)
    for moment in ("m", "v"):
        for la, lb in zip(a["optimizer"][moment], b["optimizer"][moment]):
            for k in la:
                np.testing.assert_array_equal(la[k], lb[k])
    assert a["rng_state"] == b["rng_state"]
    for ra, rb in zip(a["metrics"], b["metrics"], strict=True):
        assert (ra["train_acc"], ra["test_acc"]) == (rb["train_acc"], rb["test_acc"])
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-14)


@needs_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks in /proc")
def test_a_data_parallel_stop_inside_an_epoch_keeps_it_and_resumes_bit_exactly(data_dir,
                                                                               tmp_path):
    """SIGTERM to rank 1 inside an epoch: the ranks agree on the step, rank 0 writes
    interrupted.h5 with the counts summed over the ranks, and a 2-rank resume goes on
    from the next batch, bit-identical to a run never stopped. Data-parallel runs used
    to keep only the last complete epoch (and refused to continue an interrupted.h5)."""
    out = tmp_path / "run"
    epoch, done, stdout = _stopped_inside_an_epoch(data_dir, out, "sigterm")
    assert 1 <= done < 13
    assert (f"after batch {done} of 13 in epoch {epoch + 1}; the state is kept in "
            f"{out / 'interrupted.h5'}") in stdout
    part = load_checkpoint(out / "interrupted.h5")["partial"]
    assert part["samples_seen"] == 5 * done              # both ranks' samples, summed
    resumed = mpi_train(["--resume", str(out), f"--epochs={epoch + 2}", "--progress=false"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"after epoch {epoch}, batch {done} of epoch {epoch + 1}" in resumed.stdout
    assert not (out / "interrupted.h5").exists()
    straight = mpi_train(_stop_args(data_dir, tmp_path / "straight", epoch + 2))
    assert straight.returncode == 0, straight.stdout[-2000:] + straight.stderr[-2000:]
    _assert_same_run(out, tmp_path / "straight")


@needs_mpi
def test_a_crashed_data_parallel_run_goes_on_from_its_last_periodic_save(data_dir, tmp_path):
    """--save-every-s small: the ranks agree, after every step, to write interrupted.h5
    (rank 0 writes it); the whole job SIGKILLed (a crash, no stop handled) resumes from
    the last one, bit-identical to a run never stopped; one process resumes it too."""
    out = tmp_path / "run"
    epoch, done, _ = _stopped_inside_an_epoch(data_dir, out, "kill")
    # The file depends not on the number of ranks: one process goes on from it as well
    # (same samples; dropout masks are drawn per rank, so not the 2-rank run's).
    shutil.copytree(out, tmp_path / "alone")
    alone = train(["--resume", str(tmp_path / "alone"), f"--epochs={epoch + 1}",
                   "--progress=false"], None)
    assert f"after epoch {epoch}, batch {done} of epoch {epoch + 1}" in alone.stdout
    assert load_checkpoint(tmp_path / "alone" / "checkpoint.h5")["epoch"] == epoch + 1
    resumed = mpi_train(["--resume", str(out), f"--epochs={epoch + 2}", "--progress=false"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"after epoch {epoch}, batch {done} of epoch {epoch + 1}" in resumed.stdout
    straight = mpi_train(_stop_args(data_dir, tmp_path / "straight", epoch + 2))
    assert straight.returncode == 0, straight.stdout[-2000:] + straight.stderr[-2000:]
    _assert_same_run(out, tmp_path / "straight")
