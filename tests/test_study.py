"""``python3 -m snnsim.study`` (snnsim/study.py) with real worker processes: two workers
share a grid and run every point exactly once (journal file and PostgreSQL), a
worker killed mid-trial has its trial resumed by another from the checkpoint, a
search, the report, and one-line errors. Then the study's own edge cases: every
argument checked before anything is created, a damaged, truncated or incomplete
journal and an unusable study folder named in one line, the report's status,
``--extend``, a study created by the previous version joined, and workers that are
terminated (SIGTERM) or paused past ``--grace``. tests/test_fuzz_study.py fuzzes the
journal.

Every trial trains 784-24-10 on a tiny synthetic Fashion-MNIST in float64, so a
trial takes a second or two (most of it the subprocess starting).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import procs
import pytest

optuna = pytest.importorskip("optuna", reason="optuna missing (pip install -e .[test])")

from test_train import write_fashion_mnist  # noqa: E402

import snnsim  # noqa: E402
from snnsim import study as study_mod  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = {"network": "784-24-10", "dataset": "fashion-mnist", "batch_size": 10,
        "dtype": "float64", "eval_batch_size": 15, "epochs": 2}
GRID = ["--seeds", "0,1", "--vary", "preset=authors,paper"]
#: Heartbeat every 0.5 s; a trial silent for 3 s is retried (the defaults are 30 s / 120 s).
FAST_RETRY = ["--heartbeat", "0.5", "--grace", "3"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("data"), n_train=60, n_test=30)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def worker(study_dir, config, data_dir, *extra) -> subprocess.Popen:
    """One ``python3 -m snnsim.study run`` worker process (output in the returned Popen;
    a worker still running when its test ends is killed with its runs: tests/procs.py)."""
    # unbuffered: a worker killed for hanging shows what it had printed
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "snnsim.study", "run", str(study_dir), "--config", str(config),
           f"--data_dir={data_dir}", *extra]
    return procs.start(cmd, cwd=REPO, env=env, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout=300, status=0) -> str:
    """The worker's output, once it exited with ``status`` within ``timeout`` seconds."""
    out, _ = procs.finish(proc, timeout)
    assert proc.returncode == status, out[-4000:]
    return out


def load(study_dir, storage=None):
    return optuna.load_study(study_name=Path(study_dir).name,
                             storage=study_mod.open_storage(Path(study_dir), storage))


def metrics_epochs(run_dir) -> list[int]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def assert_code_recorded(label: str):
    """A trial names the code it ran: the commit of this checkout when the suite tests
    the source tree, else the installed package (scripts/check_dist.sh runs the suite
    against a wheel installed in a fresh environment)."""
    if Path(snnsim.__file__).resolve().parent == REPO / "snnsim":
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", label), label
    else:
        assert label == f"none (installed package snnsim=={snnsim.__version__})", label


def check_grid_done_once(study_dir, storage=None):
    """Four grid points, four trials, all complete, each in its own run folder with epochs
    1 and 2 once, each run by one trial (one log per point)."""
    study = load(study_dir, storage)
    trials = study.get_trials()
    points = [p["name"] for p in study_mod.grid_points(study.user_attrs["spec"])]
    assert len(points) == 4
    assert len(trials) == 4, [(t.number, t.state, t.params) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params["point"] for t in trials) == sorted(points)
    for t in trials:
        a = t.user_attrs
        assert a["run_dir"] == f"trials/{t.params['point']}"
        assert metrics_epochs(Path(study_dir) / a["run_dir"]) == [1, 2]
        assert a["epochs"] == 2 and a["resumed_from_epoch"] == 0
        assert 0 <= a["final_test_acc"] <= a["best_test_acc"] <= 100 and a["seconds"] > 0
        assert_code_recorded(a["commit"])
        assert t.value == a["best_test_acc"]
        assert a["command"].startswith("python3 -m snnsim.train --config ")
        assert f"--out {Path(study_dir) / a['run_dir']} " in a["command"]
    logs = sorted(p.name.split(".trial")[0] for p in (Path(study_dir) / "logs").iterdir())
    assert logs == sorted(points)
    return study


def test_two_workers_run_every_grid_point_once(tmp_path, tiny_config, data_dir):
    """Both workers start together: the study is created and its grid enqueued once."""
    study_dir = tmp_path / "grid"
    workers = [worker(study_dir, tiny_config, data_dir, *GRID) for _ in range(2)]
    outs = [finish(p) for p in workers]
    assert sum("created study" in out for out in outs) == 1
    study = check_grid_done_once(study_dir)

    # The report: one table per variant (results.md format) and the curves.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rep = procs.run([sys.executable, "-m", "snnsim.study", "report", str(study_dir),
                     "--device", "test machine"], 120, cwd=REPO, env=env)
    assert rep.returncode == 0, rep.stderr[-4000:]
    text = (study_dir / "report.md").read_text()
    assert "## tiny+preset=authors" in text and "## tiny+preset=paper" in text
    assert "| snnsim |" in text and "| paper |" not in text     # not a paper experiment
    assert "on test machine" in text and "(seeds [0, 1]), 2 epochs" in text
    assert f"`python3 -m snnsim.study report {study_dir}`" in text     # the path as given
    assert f"; commit {study.trials[0].user_attrs['commit']}." in text
    records = json.loads((study_dir / "report.json").read_text())
    study = load(study_dir)
    for exp in ("tiny+preset=authors", "tiny+preset=paper"):
        bests = [t.user_attrs["best_test_acc"] for t in study.trials
                 if t.user_attrs["experiment"] == exp]
        rec = next(r for r in records if r["experiment"] == exp and r["metric"] == "best_mean")
        assert rec["value"] == pytest.approx(sum(bests) / 2, abs=5e-4) and rec["n_runs"] == 2
    assert (study_dir / "curves.png").stat().st_size > 0

    # A worker started after the end finds nothing to do; other arguments are refused.
    assert "ran none" in finish(worker(study_dir, tiny_config, data_dir, *GRID))
    out = finish(worker(study_dir, tiny_config, data_dir, "--seeds", "0,1,2", "--vary",
                        "preset=authors,paper"), timeout=120, status=2)
    assert "created with other arguments" in out and "--extend" in out


def test_killed_worker_trial_is_resumed_by_another(tmp_path, tiny_config, data_dir):
    """Worker A is SIGKILLed after two epochs of a 30-epoch trial; its run dies with it;
    worker B retries the trial after the grace period and resumes from the checkpoint:
    the epochs done before the kill are not trained again."""
    epochs = 30
    study_dir = tmp_path / "kill"
    run_dir = study_dir / "trials" / "tiny-seed0"
    args = ["--seeds", "0", f"--epochs={epochs}", *FAST_RETRY]
    a = worker(study_dir, tiny_config, data_dir, *args)
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 2, a, 120, "two epochs of worker A")
    a.send_signal(signal.SIGKILL)           # the worker alone: its run must die with it
    procs.finish(a, 30)
    killed_at = len(metrics_epochs(run_dir))
    assert 2 <= killed_at < epochs
    time.sleep(1.5)                         # the run died with its worker: no more epochs
    assert len(metrics_epochs(run_dir)) == killed_at

    out = finish(worker(study_dir, tiny_config, data_dir, *args))
    assert "stopped beating; queued to resume" in out
    study = load(study_dir)
    failed, retry = study.get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == failed.number
    resumed = retry.user_attrs["resumed_from_epoch"]
    assert resumed >= killed_at            # checkpoint epochs >= metric rows seen at the kill
    assert metrics_epochs(run_dir) == list(range(1, epochs + 1))   # each epoch once
    log = (study_dir / "logs" / f"tiny-seed0.trial{retry.number}.log").read_text()
    assert f"resuming {run_dir / 'checkpoint.h5'} after epoch {resumed}" in log
    trained = [int(line.split("/")[0].split()[-1]) for line in log.splitlines()
               if line.startswith("epoch ") and f"/{epochs}:" in line]
    assert trained == list(range(resumed + 1, epochs + 1))


def test_interrupted_worker_stops_its_run_and_queues_its_trial(tmp_path, tiny_config, data_dir,
                                                              capsys):
    """SIGINT to the worker alone (``kill -INT``; Ctrl-C reaches the run as well): the
    worker passes it on to its run after study.INTERRUPT_GRACE_S, the run stops after
    its batch (exit 130), its trial is failed and queued to resume, and the worker
    exits 130.
    It used to wait for the run to finish all its epochs and carry on."""
    epochs = 100_000                         # hours of training: the run must be stopped
    study_dir = tmp_path / "interrupt"
    run_dir = study_dir / "trials" / "tiny-seed0"
    a = worker(study_dir, tiny_config, data_dir, "--seeds", "0", f"--epochs={epochs}")
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 2, a, 120, "two epochs")
    a.send_signal(signal.SIGINT)
    out = finish(a, timeout=study_mod.INTERRUPT_GRACE_S + study_mod.KILL_GRACE_S + 60,
                 status=study_mod.EXIT_INTERRUPTED)
    assert "stopped (exit 130); queued to resume" in out and "interrupted;" in out
    assert "Warning" not in out                 # (Optuna's ExperimentalWarning was printed)
    stopped_at = len(metrics_epochs(run_dir))
    time.sleep(1.5)                          # the run is gone: no more epochs
    assert 2 <= len(metrics_epochs(run_dir)) == stopped_at < epochs
    failed, retry = load(study_dir).get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL and failed.user_attrs["exit_code"] == 130
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == failed.number
    # Its report lists the run with the epochs it has done (it refused: no trial complete).
    assert study_mod.main(["report", str(study_dir), "--device", "test"]) == 0
    report = (study_dir / "report.md").read_text()
    assert f"| {stopped_at} of {epochs} (unfinished) |" in report
    assert "0 of 1 grid points complete (partial: runs not finished are listed" in report
    records = json.loads((study_dir / "report.json").read_text())
    assert {r["n_runs"] for r in records if r["source"] == "snnsim"} == {1}
    # A damaged file of that run: left out with a line; without runs, one error line.
    (run_dir / "config.json").write_text("{not json")
    assert study_mod.main(["report", str(study_dir), "--device", "test"]) == 2
    printed = capsys.readouterr()
    assert "trials/tiny-seed0: left out of the report" in printed.out
    assert "has no run with a finished epoch yet" in printed.err


def test_a_run_deaf_to_the_stop_is_killed_after_the_grace(tmp_path):
    """study.stop_run: a run that does not stop on SIGTERM (nor SIGINT) gets SIGKILL
    ``kill_s`` later (an interrupted worker must not wait on it for ever)."""
    ready = tmp_path / "ready"
    deaf = ("import pathlib, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "pathlib.Path(sys.argv[1]).touch(); time.sleep(600)")
    proc = procs.start([sys.executable, "-c", deaf, str(ready)])
    procs.wait_for(ready.exists, proc, 60, "the run to ignore SIGTERM")
    assert study_mod.stop_run(proc, grace_s=0.2, kill_s=0.5) == -signal.SIGKILL


def test_a_run_whose_worker_died_before_it_started_kills_itself():
    """The death signal (PR_SET_PDEATHSIG) is set in the child after the fork; a worker
    that died in between sends none. The child then finds another parent and kills
    itself before it runs. Here the preexec_fn of this process is used by a forked
    child of it: the run's parent is not the worker that prepared it."""
    preexec = study_mod.die_with_parent()
    if preexec is None:
        pytest.skip("PR_SET_PDEATHSIG is Linux only")

    def child():    # exit status: the signal that ended the run, or 100 + its exit status
        rc = subprocess.Popen([sys.executable, "-c", "pass"], preexec_fn=preexec).wait(60)
        os._exit(-rc if rc < 0 else 100 + rc)
    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        pytest.fail("the forked child did not finish in 120 s")
    assert proc.exitcode == signal.SIGKILL      # the run was killed by SIGKILL before exec


def test_search_runs_n_trials(tmp_path, tiny_config, data_dir):
    study_dir = tmp_path / "search"
    finish(worker(study_dir, tiny_config, data_dir, "--search", "lr=log:1e-4:1e-2",
                  "--search", "preset=cat:authors,paper", "--n-trials", "2", "--epochs=1"))
    trials = load(study_dir).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["preset"] in ("authors", "paper")
        cfg = json.loads((study_dir / t.user_attrs["run_dir"] / "config.json").read_text())
        assert cfg["lr"] == t.params["lr"] and cfg["preset"] == t.params["preset"]


@pytest.mark.parametrize("argv, message", [
    (["--vary", "preset=authors,paper", "--search", "lr=log:1e-4:1e-2"], "exclude each other"),
    (["--nonsense=3"], "nonsense"),
    (["--search", "lr=gauss:1:2", "--n-trials", "2"], "expected float:LO:HI"),
    (["--seed=3"], "set by the study itself"),
    (["--vary", "preset"], "expected KEY=VALUE"),
    # Checked only after the study was created before (a FAIL, a RUNNING trial left behind,
    # exit 0), or not at all (the last value silently won, two trials shared a folder):
    (["--seeds=-1"], "--seeds -1: -1 is out of range"),
    (["--seeds", "0,x"], "'x' is not an integer"),
    (["--search", "lr=log:0:1", "--n-trials", "2"], "a log range needs 0 < LO"),
    (["--search", "lr=float:1:0", "--n-trials", "2"], "LO must be below HI"),
    (["--search", "n_steps=int:a:b", "--n-trials", "2"], "(int bounds)"),
    (["--search", "lr=float:1:nan", "--n-trials", "2"], "must be finite"),
    (["--search", "lr=cat:0.1,abc", "--n-trials", "2"], "lr"),
    (["--search", "lr=log:1e-4:1e-2", "--n-trials=-1"], "--n-trials -1: must be >= 1"),
    (["--n-trials", "3"], "applies to a search"),
    (["--heartbeat", "0"], "--heartbeat 0.0: must be at least"),
    (["--heartbeat", "0.01"], "--heartbeat 0.01: must be at least"),
    (["--grace=-5"], "--grace -5.0: must be at least twice --heartbeat"),
    (["--heartbeat", "10", "--grace", "5"], "must be at least twice --heartbeat"),
    (["--max-retry=-1"], "--max-retry -1: must be >= 0"),
    (["--epochs=1", "--epochs=2"], "--epochs is given twice"),
    (["--train-subset=10", "--train_subset=20"], "--train_subset is given twice"),
    (["--vary", "lr=0.1", "--vary", "lr=0.2"], "--vary lr is given twice"),
    (["--seeds", "0", "--seeds", "1"], "--seeds is given twice"),
    (["--seeds", "0,0"], "--seeds: 0 is given twice"),
    (["--vary", "lr=0.001,0.001"], "--vary lr: 0.001 is given twice"),
    (["--vary", "lr=0.1", "--lr=0.2"], "--lr is both fixed"),
    (["--vary", "lr=0.1,abc"], "lr"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, tiny_config, argv, message, capsys):
    """Every argument is checked before anything is created: one line, exit 2, no folder."""
    assert study_mod.main(["run", str(tmp_path / "s"), "--config", str(tiny_config), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("snnsim.study: error:")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv", [["--backend=cupy"], ["--vary", "backend=numpy,cupy"]])
def test_a_backend_this_machine_lacks_is_refused_before_anything_is_created(
        tmp_path, tiny_config, argv, capsys):
    """docs/studies.md's GPU grid on a machine without CuPy: one line and exit 2, not
    every trial of the grid marked failed by a worker that exits 0."""
    from snnsim.backend import cupy_available
    if cupy_available():
        pytest.skip("CuPy with a CUDA device is available here")
    assert study_mod.main(["run", str(tmp_path / "s"), "--config", str(tiny_config), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snnsim.study: error:") and "CuPy" in err
    assert not (tmp_path / "s").exists()


def test_report_without_a_study_is_one_line_exit_2(tmp_path, capsys):
    assert study_mod.main(["report", str(tmp_path)]) == 2
    assert "holds no study" in capsys.readouterr().err


# --- PostgreSQL ----------------------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server (Debian's postgresql; scripts/setup.sh --test installs
    it) on a unix socket in a temporary folder; as root, the server runs as the user
    ``postgres`` (it refuses root). Skipped, with the reason, where one cannot start."""
    pytest.importorskip("psycopg2", reason="psycopg2 missing (pip install -e .[test])")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install "
                    "postgresql")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="snnsim-pg-")       # short: a socket path has <= 107 chars
    if os.geteuid() == 0:
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = Path(root) / "data"

    def pg(*cmd):
        return procs.run([*as_user, *cmd], 120)
    init = pg(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = pg(pg_ctl, "-D", str(data), "-l", str(Path(root) / "server.log"), "-w", "-o",
               f"-k {root} -c listen_addresses=''", "start")
    if start.returncode != 0:
        log = (Path(root) / "server.log")
        tail = log.read_text()[-300:] if log.exists() else start.stderr[-300:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {tail.strip()}")
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={root}"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgresql(tmp_path, tiny_config, data_dir, postgres_url):
    study_dir = tmp_path / "pg_grid"
    workers = [worker(study_dir, tiny_config, data_dir, *GRID, "--storage", postgres_url)
               for _ in range(2)]
    outs = [finish(p) for p in workers]
    assert sum("created study" in out for out in outs) == 1
    assert not (study_dir / study_mod.STORAGE_FILE).exists()     # the study is in the server
    check_grid_done_once(study_dir, postgres_url)


def test_retries_are_taken_before_new_grid_points():
    """Two workers stopped in trials 0 and 1 of a grid of 4: their retries (trials 4, 5,
    queued behind the grid points 2 and 3) are taken first, in the order of the trials
    they retry, then the grid goes on. It used to start points 2 and 3 first and leave
    the half-trained runs for last."""
    from optuna.trial import TrialState
    study = optuna.create_study(direction="maximize")
    for name in "abcd":
        study.enqueue_trial({"point": name}, skip_if_exists=False)
    first = study_mod.pop_waiting(study)
    second = study_mod.pop_waiting(study)
    assert (first.number, second.number) == (0, 1)
    for trial in (second, first):              # the later trial fails first
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study_mod.enqueue_retry(study, study._storage.get_trial(trial._trial_id), None)
    taken = []
    while (trial := study_mod.pop_waiting(study)) is not None:
        taken.append(trial.number)
    retry_of = {t.number: t.system_attrs.get("failed_trial") for t in study.get_trials()}
    assert [retry_of[n] for n in taken[:2]] == [0, 1]     # the retries, of trial 0 then 1
    assert taken[2:] == [2, 3]


def test_every_failed_trial_of_a_retry_chain_counts_as_retried():
    """A run stopped at three session ends: trial 0 fails, its retry 1 fails, its retry 2
    fails, retry 3 waits. All three failed trials were retried. The status line said
    "3 failed (1 of them retried)": a retry's ``failed_trial`` names the chain's first
    trial only (Optuna's callback); the others are in its ``retry_history``."""
    from optuna.trial import TrialState
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spec", {"search": True, "n_trials": 1})
    study.enqueue_trial({"point": "a"}, skip_if_exists=False)
    for _ in range(3):
        trial = study_mod.pop_waiting(study)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study_mod.enqueue_retry(study, study._storage.get_trial(trial._trial_id), None)
    counts = study_mod.trial_counts(study)
    assert {k: counts[k] for k in ("failed", "retried", "waiting", "complete")} == {
        "failed": 3, "retried": 3, "waiting": 1, "complete": 0}
    last = study.get_trials()[-1].system_attrs
    assert last["failed_trial"] == 0 and last["retry_history"] == [0, 1, 2]
    # A failed trial with no retry (max_retry reached) is not counted.
    trial = study_mod.pop_waiting(study)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    study_mod.enqueue_retry(study, study._storage.get_trial(trial._trial_id), 3)
    counts = study_mod.trial_counts(study)
    assert (counts["failed"], counts["retried"], counts["waiting"]) == (4, 3, 0)


def test_the_status_tells_stopped_trials_from_failed_ones():
    """A trial whose run exited 130 (stopped), was killed by a signal, or whose worker was
    lost (no exit status) is counted as stopped or cut off; one that exited 1 as failed.
    The CNN study's status said "23 failed (23 of them retried)" for 23 stops."""
    from optuna.trial import TrialState
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("spec", {"search": True, "n_trials": 5})
    for rc in (130, -9, None, 1):
        study.enqueue_trial({"point": "a"}, skip_if_exists=False)
        trial = study_mod.pop_waiting(study)
        if rc is not None:
            trial.set_user_attr("exit_code", rc)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if rc != 1:
            study_mod.enqueue_retry(study, study._storage.get_trial(trial._trial_id), None)
    counts = study_mod.trial_counts(study)
    assert {k: counts[k] for k in ("failed", "stopped", "retried", "waiting")} == {
        "failed": 4, "stopped": 3, "retried": 3, "waiting": 3}
    assert study_mod.status_line(counts, True).endswith(
        "trials: 0 complete, 0 running, 3 waiting, 3 stopped or cut off, 1 failed "
        "(3 of these 4 retried)")


def test_a_trial_whose_worker_on_this_machine_is_gone_is_retried_before_the_grace(monkeypatch):
    """A RUNNING trial silent for 5 s (beats every 1 s; grace 600 s) is failed and queued
    to resume when its worker (``host:pid``) ran on this machine and no longer exists,
    or is this process; it is left to the grace period when its worker lives, ran on
    another machine, names nothing, or beat within the last two beats. (The study's clock
    is moved 5 s on: the trials started just now.)"""
    import socket
    import types

    from optuna.trial import TrialState
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                      # a pid that existed and is gone
    host = socket.gethostname()
    cases = {"gone": (f"{host}:{dead.pid}", 5.0), "this process": (f"{host}:{os.getpid()}", 5.0),
             "alive": (f"{host}:{os.getppid()}", 5.0), "elsewhere": (f"{host}x:{dead.pid}", 5.0),
             "damaged": (f"{host}:pid", 5.0), "missing": (None, 5.0),
             "beat just now": (f"{host}:{dead.pid}", 1.5)}
    study = optuna.create_study(direction="maximize")
    number = {}
    for name, (worker_attr, silent_s) in cases.items():
        study.enqueue_trial({"point": name}, skip_if_exists=False)
        trial = study_mod.pop_waiting(study)
        if worker_attr is not None:
            trial.set_user_attr("worker", worker_attr)
        study._storage.set_trial_system_attr(trial._trial_id, "heartbeat",
                                             time.time() + 5.0 - silent_s)
        number[name] = trial.number
    monkeypatch.setattr(study_mod, "time", types.SimpleNamespace(time=lambda: time.time() + 5.0))
    failed = study_mod.fail_stale(study, grace_s=600.0, max_retry=None, heartbeat_s=1.0)
    assert sorted(failed) == sorted([number["gone"], number["this process"]])
    state = {t.number: t.state for t in study.get_trials()}
    assert all(state[number[name]] == TrialState.RUNNING for name in cases
               if name not in ("gone", "this process"))
    retries = [t for t in study.get_trials() if "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(failed)
    assert all(t.state == TrialState.WAITING for t in retries)
    # Without the heartbeat interval (the old call), only the grace decides.
    assert study_mod.fail_stale(study, grace_s=600.0, max_retry=None) == []


def test_a_worker_started_after_a_crash_resumes_the_cut_off_run_first(tmp_path, tiny_config,
                                                                       data_dir):
    """The session-end case: worker A (grid of seeds 0 and 1, one worker) is SIGKILLed in
    seed 0; worker B, started with the study's long grace (600 s), resumes seed 0 at once
    and then runs seed 1. It used to start seed 1 and then wait out the grace for seed 0."""
    study_dir = tmp_path / "crash"
    run_dir = study_dir / "trials" / "tiny-seed0"
    args = ["--seeds", "0,1", "--epochs=6", "--heartbeat", "0.5", "--grace", "600"]
    a = worker(study_dir, tiny_config, data_dir, *args)
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 2, a, 120, "two epochs of worker A")
    a.send_signal(signal.SIGKILL)
    procs.finish(a, 30)
    time.sleep(1.5)                              # two beats missed
    out = finish(worker(study_dir, tiny_config, data_dir, *args), timeout=180)
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert "its worker stopped beating; queued to resume" in lines[0], out
    assert "tiny-seed0: resuming after epoch" in lines[1], out
    states = {t.number: t.state for t in load(study_dir).get_trials()}
    assert list(states.values()).count(optuna.trial.TrialState.COMPLETE) == 2, states
    assert metrics_epochs(run_dir) == list(range(1, 7))

# --- the journal and the study folder -------------------------------------------------------
STUDY = "grid1"
#: A grid of two seeds, one epoch each: the finished study the journal tests damage.
SMALL_GRID = ["--seeds", "0,1", "--epochs=1", *FAST_RETRY]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_config, data_dir):
    """A finished study of SMALL_GRID (two complete trials); tests copy it."""
    study_dir = tmp_path_factory.mktemp("finished") / STUDY
    finish(worker(study_dir, tiny_config, data_dir, *SMALL_GRID))
    return study_dir


@pytest.fixture
def study_copy(finished_study, tmp_path):
    """A copy of ``finished_study`` (same name: the study's name is its folder's)."""
    return Path(shutil.copytree(finished_study, tmp_path / STUDY))


def main_run(study_dir, tiny_config, data_dir, *extra) -> list[str]:
    return ["run", str(study_dir), "--config", str(tiny_config), f"--data_dir={data_dir}",
            *SMALL_GRID, *extra]


def one_error_line(capsys, *needles) -> str:
    """stderr is one ``snnsim.study: error:`` line holding every needle (no traceback)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snnsim.study: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def journal_lines(study_dir) -> list[bytes]:
    return (Path(study_dir) / study_mod.STORAGE_FILE).read_bytes().splitlines(keepends=True)


def write_journal(study_dir, lines) -> None:
    (Path(study_dir) / study_mod.STORAGE_FILE).write_bytes(b"".join(lines))


def test_a_study_folder_that_is_a_file_is_one_line(tmp_path, tiny_config, data_dir, capsys):
    """It was a FileExistsError traceback (run) and 'holds no study' (report)."""
    path = tmp_path / "s"
    path.write_text("")
    assert study_mod.main(main_run(path, tiny_config, data_dir)) == 2
    one_error_line(capsys, f"{path}: exists and is not a folder")
    assert study_mod.main(["report", str(path)]) == 2
    one_error_line(capsys, f"{path}: exists and is not a folder")


def test_a_journal_that_is_a_folder_is_one_line(tmp_path, tiny_config, data_dir, capsys):
    """It was an IsADirectoryError traceback."""
    journal = tmp_path / "s" / study_mod.STORAGE_FILE
    journal.mkdir(parents=True)
    for argv in (main_run(tmp_path / "s", tiny_config, data_dir), ["report", str(tmp_path / "s")]):
        assert study_mod.main(argv) == 2
        one_error_line(capsys, f"{journal}: is not a file")


def test_a_read_only_study_folder_is_one_line(tmp_path, tiny_config, data_dir, capsys,
                                              monkeypatch):
    """A read-only filesystem (simulated: the suite may run as root, for whom a mode
    does not make a folder read-only): opening the journal for writing fails with
    EROFS. It was an OSError traceback."""
    import builtins
    import errno
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)
    (tmp_path / "s").mkdir()
    monkeypatch.setattr(builtins, "open", read_only_open)
    assert study_mod.main(main_run(tmp_path / "s", tiny_config, data_dir)) == 2
    one_error_line(capsys, str(tmp_path / "s" / study_mod.STORAGE_FILE), "Read-only file system")


def test_a_garbage_line_in_the_journal_is_named(study_copy, tiny_config, data_dir, capsys):
    """A damaged line: the error names the journal and the line (it named no file)."""
    lines = journal_lines(study_copy)
    write_journal(study_copy, lines[:5] + [b"{garbage\n"] + lines[5:])
    journal = study_copy / study_mod.STORAGE_FILE
    for argv in (main_run(study_copy, tiny_config, data_dir), ["report", str(study_copy)]):
        assert study_mod.main(argv) == 2
        one_error_line(capsys, f"{journal} line 6: damaged")


def test_a_journal_truncated_mid_line_is_reported(study_copy, tiny_config, data_dir, capsys,
                                                  monkeypatch):
    """Truncated to half: 'report' exited 0 with the trials the first half holds."""
    monkeypatch.setattr(study_mod, "SETTLE_S", 0.2)
    journal = study_copy / study_mod.STORAGE_FILE
    data = journal.read_bytes()
    journal.write_bytes(data[:len(data) // 2])
    for argv in (["report", str(study_copy)], main_run(study_copy, tiny_config, data_dir)):
        assert study_mod.main(argv) == 2
        one_error_line(capsys, str(journal), "is incomplete", "truncated")


def test_a_journal_truncated_at_a_line_is_cross_checked(study_copy, tiny_config, data_dir,
                                                        capsys):
    """Cut at a line end after the grid was enqueued and the first trial started: every
    line parses, but a run folder holds a run no trial records. 'report' exited 0 with
    the trials the journal still held."""
    lines = journal_lines(study_copy)
    started = [i for i, line in enumerate(lines) if b'"run_dir"' in line]
    write_journal(study_copy, lines[:started[0]])       # before the first trial's run_dir
    for argv in (["report", str(study_copy)], main_run(study_copy, tiny_config, data_dir)):
        assert study_mod.main(argv) == 2
        one_error_line(capsys, "is damaged or incomplete", "run folders no trial records",
                       "tiny-seed0")


def test_a_journal_missing_its_create_line_is_reported_at_once(study_copy, tiny_config,
                                                               data_dir, capsys):
    """Without its first line the journal's records belong to no study: 'report' said
    'no study', 'run' created the study again over the old run folders (or waited)."""
    write_journal(study_copy, journal_lines(study_copy)[1:])
    t0 = time.monotonic()
    for argv in (["report", str(study_copy)], main_run(study_copy, tiny_config, data_dir)):
        assert study_mod.main(argv) == 2
        one_error_line(capsys, "does not begin with the record that creates the study")
    assert time.monotonic() - t0 < 30


def test_a_study_never_marked_ready_is_reported_not_waited_for(study_copy, tiny_config,
                                                               data_dir, capsys):
    """The journal lost the creator's 'ready' mark (and has not grown since): a joining
    worker waited 600 s in silence; now it says what it waits for, and gives up once
    the journal has not grown for READY_STALL_S."""
    lines = [line for line in journal_lines(study_copy) if b'"ready"' not in line]
    write_journal(study_copy, lines)
    old = time.time() - 2 * study_mod.READY_STALL_S
    os.utime(study_copy / study_mod.STORAGE_FILE, (old, old))
    t0 = time.monotonic()
    assert study_mod.main(main_run(study_copy, tiny_config, data_dir)) == 2
    err = capsys.readouterr().err
    assert "never marked ready" in err and str(study_copy / study_mod.STORAGE_FILE) in err
    assert time.monotonic() - t0 < 30


def test_report_says_partial_and_counts_trials(study_copy, tiny_config, data_dir, capsys):
    """--extend adds seed 2 (one waiting trial); the report says how many grid points are
    complete, that the study is partial, and the trials by state. It said neither."""
    spec = study_mod.make_spec([str(tiny_config)], [0, 1, 2], {},
                               {"data_dir": str(data_dir), "epochs": "1"}, {}, None)
    storage = study_mod.open_storage(study_copy, None)
    study = study_mod.create_or_join(storage, STUDY, spec, extend=True)
    assert study.user_attrs["point_choices"] == ["tiny-seed0", "tiny-seed1"]
    assert study_mod.main(["report", str(study_copy), "--device", "test"]) == 0
    out = capsys.readouterr().out
    status = ("2 of 3 grid points complete (partial: runs not finished are listed with the "
              "epochs they have done); trials: 2 complete, 0 running, 1 waiting, 0 stopped or "
              "cut off, 0 failed (0 of these 0 retried)")
    assert status in out
    assert f"Study status: {status}." in (study_copy / "report.md").read_text()


def test_extend_adds_a_seed_to_a_study(study_copy, tiny_config, data_dir):
    """The same arguments with seed 2 added: refused without --extend (with the way
    forward), with it the new point alone is run; the old trials stay as they were."""
    grid3 = ["--seeds", "0,1,2", "--epochs=1", *FAST_RETRY]
    out = finish(worker(study_copy, tiny_config, data_dir, *grid3), timeout=120, status=2)
    assert "created with other arguments" in out and "--extend" in out
    before = {t.number: t.datetime_complete for t in load(study_copy).get_trials()}
    out = finish(worker(study_copy, tiny_config, data_dir, *grid3, "--extend"))
    assert "extended study 'grid1': 1 new grid point" in out
    assert "trial 2 tiny-seed2: starting" in out and "tiny-seed0" not in out
    study = load(study_copy)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 3
    assert {t.number: t.datetime_complete for t in study.get_trials()[:2]} == before
    assert metrics_epochs(study_copy / "trials" / "tiny-seed2") == [1]
    assert study.user_attrs["spec"]["seeds"] == [0, 1, 2]
    # Now the new arguments are the study's: a worker with them (without --extend) joins.
    assert "ran none" in finish(worker(study_copy, tiny_config, data_dir, *grid3))
    # An extension must keep the other arguments.
    out = finish(worker(study_copy, tiny_config, data_dir, "--seeds", "0,1,2,3", "--epochs=2",
                        *FAST_RETRY, "--extend"), timeout=120, status=2)
    assert "the overrides (--key=value) differ" in out


def test_a_study_of_the_previous_version_is_joined(tmp_path, capsys):
    """Compatibility: a study created by the previous version (the Table 3 CNN study,
    scripts/table3_cnn.sh: --config fashion_mnist_cnn --seeds 0,1,2,3,4 --epochs=100
    --grace 600 --max-retry 100) is joined with the same arguments, not refused as
    'created with other arguments'. Its journal is written here as that version wrote
    it: the spec literal below is what its make_spec stored, then one enqueued trial per
    point, the 'ready' mark; every trial completed, so the worker finds nothing to do."""
    from optuna.trial import TrialState
    study_dir = tmp_path / "table3-cnn"
    study_dir.mkdir()
    (study_dir / study_mod.STORAGE_FILE).touch()
    stored = {"configs": ["fashion_mnist_cnn"], "seeds": [0, 1, 2, 3, 4], "vary": {},
              "fixed": {"epochs": "100"}, "search": {}, "n_trials": None}
    names = [f"fashion_mnist_cnn-seed{s}" for s in range(5)]
    study = optuna.create_study(storage=study_mod.open_storage(study_dir, None),
                                study_name="table3-cnn", direction="maximize")
    study.set_user_attr("spec", stored)
    for name in names:
        study.enqueue_trial({"point": name}, skip_if_exists=False)
    study.set_user_attr("ready", True)
    for name in names:
        trial = study_mod.pop_waiting(study)
        assert trial.suggest_categorical("point", names) == name
        trial.set_user_attr("run_dir", f"trials/{name}")
        (study_dir / "trials" / name).mkdir(parents=True)
        study.tell(trial, 90.0)
    argv = ["run", str(study_dir), "--config", "fashion_mnist_cnn", "--seeds", "0,1,2,3,4",
            "--epochs=100", "--grace", "600", "--max-retry", "100"]
    assert study_mod.main(argv) == 0, capsys.readouterr().err
    assert "this worker ran none" in capsys.readouterr().out
    assert [t.state for t in load(study_dir).get_trials()] == [TrialState.COMPLETE] * 5
    # Extending it with a sixth seed keeps the five trials' points readable.
    spec = study_mod.make_spec(["fashion_mnist_cnn"], list(range(6)), {}, {"epochs": "100"},
                               {}, None)
    study = study_mod.create_or_join(study_mod.open_storage(study_dir, None), "table3-cnn", spec,
                                     extend=True)
    trials = study.get_trials()
    assert [study_mod.trial_point(t) for t in trials] == [*names, "fashion_mnist_cnn-seed5"]
    retry = optuna.trial.Trial(study, trials[0]._trial_id)
    assert study_mod.suggest(retry, spec)["seed"] == 0


# --- workers stopped, paused, terminated -------------------------------------------------------
def test_sigterm_to_a_worker_queues_its_trial(tmp_path, tiny_config, data_dir):
    """SIGTERM to the worker alone (a scheduler ending a job): as SIGINT, the run is
    stopped resumably, the trial failed and queued to resume, exit 130. SIGTERM used to
    kill the worker on the spot, leaving its trial RUNNING until --grace passed."""
    study_dir = tmp_path / "term"
    run_dir = study_dir / "trials" / "tiny-seed0"
    a = worker(study_dir, tiny_config, data_dir, "--seeds", "0", "--epochs=100000")
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 2, a, 120, "two epochs")
    a.send_signal(signal.SIGTERM)
    out = finish(a, timeout=study_mod.INTERRUPT_GRACE_S + study_mod.KILL_GRACE_S + 60,
                 status=study_mod.EXIT_INTERRUPTED)
    assert "stopped (exit 130); queued to resume" in out and "terminated (SIGTERM);" in out
    assert "Traceback" not in out
    failed, retry = load(study_dir).get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL and failed.user_attrs["exit_code"] == 130
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == failed.number


def test_a_background_worker_stops_its_run_resumably(tmp_path, tiny_config, data_dir):
    """A worker started as a shell's background job (``nohup ... &``: SIGINT ignored, and
    so in its run) and stopped with SIGTERM: its run stops after its batch (exit 130),
    not at the SIGKILL 60 s later. The worker passed SIGINT on, which the run ignored:
    the CNN study's runs were killed (exit -9) and lost the epoch so far."""
    study_dir = tmp_path / "background"
    run_dir = study_dir / "trials" / "tiny-seed0"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "snnsim.study", "run", str(study_dir), "--config",
           str(tiny_config), f"--data_dir={data_dir}", "--seeds", "0", "--epochs=100000"]
    a = procs.start(cmd, cwd=REPO, env=env, stderr=subprocess.STDOUT,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 1, a, 120, "an epoch")
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    out = finish(a, timeout=study_mod.INTERRUPT_GRACE_S + study_mod.KILL_GRACE_S + 60,
                 status=study_mod.EXIT_INTERRUPTED)
    assert "stopped (exit 130); queued to resume" in out, out[-2000:]
    assert time.monotonic() - t0 < study_mod.INTERRUPT_GRACE_S + study_mod.KILL_GRACE_S / 2
    log = next((study_dir / "logs").glob("tiny-seed0.trial0.log")).read_text()
    assert "terminated (SIGTERM)" in log, log[-2000:]


def test_a_paused_worker_discards_its_late_result(tmp_path, tiny_config, data_dir):
    """Worker A is paused (SIGSTOP) past --grace while its run trains on; worker B
    declares A's trial stale, and its retry waits for A's run to release the folder,
    then resumes it. A, continued, finds its trial failed: it discards the late
    result with a note and ends normally. A crashed with Optuna's
    UpdateFinishedTrialError, and B's retry was refused by the run folder's lock."""
    epochs = 60
    study_dir = tmp_path / "stale"
    run_dir = study_dir / "trials" / "tiny-seed0"
    args = ["--seeds", "0", f"--epochs={epochs}", *FAST_RETRY]
    a = worker(study_dir, tiny_config, data_dir, *args)
    procs.wait_for(lambda: len(metrics_epochs(run_dir)) >= 1, a, 120, "worker A's first epoch")
    a.send_signal(signal.SIGSTOP)
    try:
        out_b = finish(worker(study_dir, tiny_config, data_dir, *args))
    finally:
        a.send_signal(signal.SIGCONT)
    out_a = finish(a, timeout=120)
    assert "trial 0: its worker stopped beating; queued to resume" in out_b
    assert "declared this trial stale while it ran" in out_a and "is discarded" in out_a
    assert "Traceback" not in out_a + out_b
    failed, retry = load(study_dir).get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0
    assert metrics_epochs(run_dir) == list(range(1, epochs + 1))    # each epoch once


def test_a_journal_damaged_while_the_worker_runs_is_named(study_copy, tiny_config, data_dir,
                                                          capsys, monkeypatch):
    """Damage that appears after the worker's own check (another process writing garbage):
    Optuna's JSONDecodeError named no file; the journal is checked again for the line."""
    journal = study_copy / study_mod.STORAGE_FILE
    n = len(journal_lines(study_copy))

    def damage_then_read(study, study_dir, path):
        with open(journal, "ab") as f:          # garbage, then a line (Optuna skips a
            f.write(b"{garbage\n" + journal_lines(study_copy)[-1])    # last bad line)
        study.get_trials()                  # Optuna reads the new lines
    monkeypatch.setattr(study_mod, "check_consistent", damage_then_read)
    assert study_mod.main(main_run(study_copy, tiny_config, data_dir)) == 2
    one_error_line(capsys, f"{journal} line ", ": damaged")
    assert n < len(journal_lines(study_copy))


def test_a_retry_waits_for_the_run_folder_to_be_released(tmp_path):
    """study.wait_for_folder: while another holder has the run folder's lock (the run of
    a stale trial, still training), the retry waits, saying so, instead of starting a
    run that the lock refuses (exit 2: the retry failed for good)."""
    import threading

    from snnsim.training import runfolder
    run_dir = tmp_path / "run"
    held, release = threading.Event(), threading.Event()

    def hold():
        with runfolder.locked(run_dir):
            held.set()
            release.wait(60)
    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(60)
    lines = []
    threading.Timer(1.0, release.set).start()
    t0 = time.monotonic()
    study_mod.wait_for_folder(run_dir, lines.append, "trial 1 x")
    thread.join(60)
    assert time.monotonic() - t0 >= 0.9           # it waited for the release (after 1 s)
    assert len(lines) == 1 and "is still in use" in lines[0]
    assert not study_mod.folder_in_use(run_dir)
