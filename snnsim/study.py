"""Studies: many ``python3 -m snnsim.train`` runs, coordinated by Optuna.

    python3 -m snnsim.study run DIR --config fashion_mnist_mlp --seeds 0,1,2 \\
        --vary preset=authors,paper --epochs=3          # a grid: 1 config x 2 x 3 seeds
    python3 -m snnsim.study run DIR                      # more workers: the same command
    python3 -m snnsim.study report DIR                   # mean ± std table and curves

A study is a grid (configs × ``--vary`` values × seeds, every other ``--key=value``
passed to every run) or a search (``--search lr=log:1e-4:1e-2 --n-trials 20``,
Optuna's default sampler, best test accuracy maximised). It lives in an Optuna
storage: by default the journal file ``DIR/journal.log`` (Optuna's
``JournalStorage`` with a file backend and its open-lock, safe for processes on
one machine or on a shared filesystem); ``--storage postgresql://...`` for a
cluster (any SQLAlchemy URL: Optuna's ``RDBStorage``).

Workers. Any number of processes run ``python3 -m snnsim.study run DIR ...`` with the
same arguments; each pulls the next waiting trial, runs it, and repeats until no
trial is waiting or running. ``--gpu ID`` (or ``CUDA_VISIBLE_DEVICES``) gives each
worker its GPU. The first worker creates the study and enqueues every grid point
once: Optuna's ``create_study`` succeeds for exactly one process, the others load
the study and wait for its ``ready`` mark. A trial is taken by setting it from
WAITING to RUNNING, which the storage grants to one worker only.

Crash safety. While a trial runs, its worker writes a heartbeat (a trial system
attribute) every ``--heartbeat`` seconds. A RUNNING trial silent for ``--grace``
seconds belongs to a dead worker: the first worker to notice marks it FAIL and
Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues a copy of it; the copy runs
in the same run folder (``DIR/trials/<config>-<key>=<value>-seed<k>``), so it
resumes from the last checkpoint (``--resume``) instead of starting over. An
interrupted worker (Ctrl-C, or SIGINT to the worker alone) stops its run, queues its
trial to resume the same way and exits 130.

Trials. Each trial is a subprocess ``python3 -m snnsim.train`` (its command is in
the trial's attributes and in ``DIR/logs/``): a crash, a leak or GPU memory of one
run cannot touch the worker or the next run, and on Linux the run dies with its
worker (no orphan keeps writing a folder a retry resumes). The trial records as
user attributes: final_test_acc and best_test_acc (%), epochs, seconds, commit,
run_dir (relative to DIR), experiment, seed, resumed_from_epoch, worker, command.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from .commandline import ArgumentParser, prog_name, rerun

STORAGE_FILE = "journal.log"
TRIALS_DIR = "trials"
LOGS_DIR = "logs"
#: Seconds between polls while waiting for other workers (their trials or a retry).
POLL_S = 0.5
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
SEARCH_KINDS = ("float", "log", "int", "cat")


class StudyError(Exception):
    """Bad input, or a study that does not match the command (one line, exit 2)."""


# --- the study's definition --------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def make_spec(configs: list[str], seeds: list[int], vary: dict, fixed: dict, search: dict,
              n_trials: int | None) -> dict:
    """The study's definition (stored in the study; every worker must bring the same)."""
    if search and vary:
        raise StudyError("--vary (a grid) and --search (a search) exclude each other")
    if search and (len(configs) > 1 or len(seeds) > 1 or not n_trials):
        raise StudyError("a search takes one --config, one seed and --n-trials N")
    for key, text in search.items():
        kind = text.split(":", 1)[0]
        if kind not in SEARCH_KINDS or len(text.split(":")) != (2 if kind == "cat" else 3):
            raise StudyError(f"--search {key}={text}: expected float:LO:HI, log:LO:HI, "
                             "int:LO:HI or cat:A,B,...")
    for key in ("seed", "out", "config", "resume"):
        if key in fixed or key in vary or key in search:
            raise StudyError(f"--{key} is set by the study itself (use --seeds for seeds)")
    return {"configs": list(configs), "seeds": [int(s) for s in seeds],
            "vary": {k: list(v) for k, v in vary.items()}, "fixed": dict(fixed),
            "search": dict(search), "n_trials": n_trials if search else None}


def config_label(config: str) -> str:
    """A config's short name: the shipped name, or a file's stem."""
    return Path(config).stem


def grid_points(spec: dict) -> list[dict]:
    """Every (config, varied values, seed) of a grid, with its name and experiment:
    ``{"name", "experiment", "config", "seed", "overrides"}``.

    Seed-major: every variant's first seed comes before any variant's second, so that
    a study stopped half way covers its variants equally."""
    keys = list(spec["vary"])
    points = []
    for config in spec["configs"]:
        for seed in spec["seeds"]:
            for values in itertools.product(*(spec["vary"][k] for k in keys)):
                overrides = dict(zip(keys, values))
                experiment = config_label(config) + "".join(f"+{k}={v}" for k, v in overrides.items())
                name = "-".join([config_label(config), *(f"{k}={v}" for k, v in overrides.items()),
                                 f"seed{seed}"])
                points.append({"name": re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name),
                               "experiment": experiment, "config": config, "seed": seed,
                               "overrides": overrides})
    return points


def suggest(trial, spec: dict) -> dict:
    """The trial's run: its grid point, or its sampled search parameters."""
    if not spec["search"]:
        points = {p["name"]: p for p in grid_points(spec)}
        return points[trial.suggest_categorical("point", list(points))]
    overrides = {}
    for key, text in spec["search"].items():
        kind, rest = text.split(":", 1)
        if kind == "cat":
            overrides[key] = trial.suggest_categorical(key, parse_list(rest))
        else:
            lo, hi = rest.split(":")
            overrides[key] = (trial.suggest_int(key, int(lo), int(hi)) if kind == "int" else
                              trial.suggest_float(key, float(lo), float(hi), log=kind == "log"))
    # A retry carries the user attributes of the trial it retries: the same run folder.
    config = spec["configs"][0]
    name = trial.user_attrs.get("name", f"{config_label(config)}-trial{trial.number}")
    return {"name": name, "experiment": name.replace("-trial", "+trial"), "config": config,
            "seed": spec["seeds"][0], "overrides": overrides}


def check_runs(spec: dict) -> None:
    """Every config loads and every override parses (before any trial is queued)."""
    from .training.config import ConfigError, check_key, load_config_file, normalize_key
    try:
        for config in spec["configs"]:
            cfg = load_config_file(config)
            for key in [*spec["fixed"], *spec["vary"], *spec["search"]]:
                check_key(normalize_key(key), "study")
            cfg.replace(source="study", **spec["fixed"])
            for point in grid_points(spec) if not spec["search"] else []:
                cfg.replace(source="study", **spec["fixed"], **point["overrides"])
    except ConfigError as exc:
        raise StudyError(str(exc)) from exc


# --- storage and the study ----------------------------------------------------------------
def open_storage(study_dir: Path, url: str | None):
    """Optuna storage: an SQLAlchemy URL (RDB), else the journal file DIR/journal.log."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # the study prints its own lines
    if url:
        return _rdb_storage(url)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
    path = str(study_dir / STORAGE_FILE)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def _rdb_storage(url: str, attempts: int = 5):
    """Optuna's RDBStorage. Workers that start together on an empty database race to
    create its tables; the losers' CREATE fails, and a second try finds the tables."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(POLL_S * (attempt + 1))
    raise AssertionError("unreachable")


def create_or_join(storage, name: str, spec: dict | None, log=print, wait_s: float = 600.0):
    """The study ``name``: created (and its grid enqueued, once) by the first worker,
    joined by the others; ``spec`` None only reads an existing study."""
    import optuna
    if spec is not None:
        try:
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:      # this worker created it: it alone enqueues the grid
            study.set_user_attr("spec", spec)
            for point in ([] if spec["search"] else grid_points(spec)):
                study.enqueue_trial({"point": point["name"]}, skip_if_exists=False)
            study.set_user_attr("ready", True)
            log(f"created study {name!r}: " + (f"{len(grid_points(spec))} grid points"
                                              if not spec["search"]
                                              else f"a search of {spec['n_trials']} trials"))
            return study
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError as exc:
        raise StudyError(f"no study {name!r} in the storage") from exc
    deadline = time.monotonic() + wait_s
    while not study.user_attrs.get("ready"):
        if time.monotonic() > deadline:
            raise StudyError(f"study {name!r} was created but never marked ready (its creator "
                             "died while enqueueing?); delete it and start again")
        time.sleep(POLL_S)
    if spec is not None and study.user_attrs["spec"] != json.loads(json.dumps(spec)):
        raise StudyError(f"study {name!r} was created with other arguments: "
                         f"{json.dumps(study.user_attrs['spec'])}")
    return study


def fail_stale(study, grace_s: float, max_retry: int | None) -> list[int]:
    """Mark FAIL every RUNNING trial whose last sign of life (heartbeat, else its
    start) is older than ``grace_s``, and enqueue its retry (Optuna's callback).
    Returns the numbers failed by this call (another worker may have been first)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState
    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = max(float(t.system_attrs.get("heartbeat", 0.0)), t.datetime_start.timestamp())
        if now - alive <= grace_s:
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue            # another worker failed it first
        RetryHeartbeatStaleTrialCallback(max_retry)(study, t)
        failed.append(t.number)
    return failed


def pop_waiting(study):
    """Take the next WAITING trial (the storage grants each to one worker), or None.
    Optuna's ``ask`` would create a new trial when the queue is empty; a grid must not.
    Retries of failed or interrupted trials come first (in the order of the trials they
    retry): their runs resume from a checkpoint, and a study that is stopped again
    should have finished them rather than started more."""
    import optuna
    from optuna.trial import Trial, TrialState
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    retry_first = sorted(waiting, key=lambda t: ("failed_trial" not in t.system_attrs,
                                                 t.system_attrs.get("failed_trial", t.number)))
    for t in retry_first:
        try:
            if study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                return Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


@contextlib.contextmanager
def heartbeat(study, trial, interval_s: float):
    """Record the time as the trial's ``heartbeat`` every ``interval_s`` while the body runs."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):   # a missed beat is retried at the next one
                study._storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time())
            if stop.wait(interval_s):
                return
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- one trial ------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


#: Seconds an interrupted worker gives its run to stop on its own before passing the
#: SIGINT on (Ctrl-C reaches the run too; ``kill -INT WORKER`` only the worker), and
#: then before killing it (a run stops after its current batch).
INTERRUPT_GRACE_S = 10.0
KILL_GRACE_S = 60.0


def die_with_parent():
    """Linux: a ``preexec_fn`` after which the run gets SIGKILL when its worker dies
    (``prctl(PR_SET_PDEATHSIG)``); None elsewhere. A worker that died between the fork
    and the ``prctl`` sends no signal: the child, no longer the worker's, kills itself.
    The function is looked up here, in the worker, so that the child between fork and
    exec only calls it."""
    if sys.platform != "linux":
        return None
    import ctypes
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    worker = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker:
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


def stop_run(proc: subprocess.Popen, grace_s: float = INTERRUPT_GRACE_S,
             kill_s: float = KILL_GRACE_S) -> int:
    """The run of an interrupted worker, stopped: it got the SIGINT too when it came
    from the terminal (the whole foreground group) and stops after its batch,
    resumable; when the worker alone got it, the run gets SIGINT after ``grace_s``,
    and SIGKILL ``kill_s`` later (its last checkpoint stays). Returns its exit status."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, kill_s)):
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    return proc.wait()


def train_command(run: dict, spec: dict, run_dir: Path, resume: bool) -> list[str]:
    """The trial's ``python3 -m snnsim.train`` command line."""
    cmd = [sys.executable, "-m", "snnsim.train"]
    if resume:
        return cmd + ["--resume", str(run_dir), "--progress=false"]
    overrides = {**spec["fixed"], **run["overrides"]}
    return cmd + ["--config", run["config"], "--seed", str(run["seed"]), "--out", str(run_dir),
                  "--progress=false", *(f"--{k}={v}" for k, v in overrides.items())]


def shown_command(run: dict, spec: dict) -> str:
    """The command of the experiment's runs, as the report shows it (SEED for the seed)."""
    overrides = {**spec["fixed"], **run["overrides"]}
    return " ".join(["python3 -m snnsim.train --config", run["config"], "--seed SEED",
                     *(f"--{k}={v}" for k, v in overrides.items())])


def run_trial(study, trial, spec: dict, study_dir: Path, opts, log=print) -> str:
    """Run one trial to its end; returns its state's name."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from .analysis.results import read_run
    from .training.checkpoint import checkpoint_epoch
    run = suggest(trial, spec)
    run_dir = study_dir / TRIALS_DIR / run["name"]
    ckpt = run_dir / "checkpoint.h5"
    resumed = checkpoint_epoch(ckpt) if ckpt.exists() else 0
    cmd = train_command(run, spec, run_dir, resume=resumed > 0)
    for key, value in {"name": run["name"], "run_dir": str(run_dir.relative_to(study_dir)),
                       "experiment": run["experiment"], "seed": run["seed"],
                       "resumed_from_epoch": resumed,
                       "worker": f"{socket.gethostname()}:{os.getpid()}",
                       "command": " ".join(["python3", *cmd[1:]])}.items():
        trial.set_user_attr(key, value)
    log_path = study_dir / LOGS_DIR / f"{run['name']}.trial{trial.number}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if opts.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(opts.gpu)
    log(f"trial {trial.number} {run['name']}: "
        + (f"resuming after epoch {resumed}" if resumed else "starting") + f" (log {log_path})")
    t0 = time.time()
    interrupted = False
    with open(log_path, "ab") as out:    # started before the heartbeat thread: fork, then exec
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent())
    with heartbeat(study, trial, opts.heartbeat):
        try:
            rc = proc.wait()
        except KeyboardInterrupt:   # the run stops, keeping its last checkpoint
            interrupted = True
            rc = stop_run(proc)
    if rc == 0:           # finished (an interrupted run exits 130)
        result = read_run(run_dir)
        for key, value in {"final_test_acc": result["final"], "best_test_acc": result["best"],
                           "epochs": result["epochs"], "seconds": round(time.time() - t0, 1),
                           "train_seconds": round(result["wall_s"], 1),
                           "commit": result["commit"]}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, result["best"])
        log(f"trial {trial.number} {run['name']}: done, best test accuracy "
            f"{result['best']:.2f} %, final {result['final']:.2f} %")
        state = "COMPLETE"
    else:
        trial.set_user_attr("exit_code", rc)
        frozen = study.tell(trial, state=TrialState.FAIL)
        if interrupted or rc < 0:     # stopped or killed, not wrong: another worker resumes it
            RetryHeartbeatStaleTrialCallback(opts.max_retry)(study, frozen)
            log(f"trial {trial.number} {run['name']}: stopped (exit {rc}); queued to resume")
        else:
            log(f"trial {trial.number} {run['name']}: failed (exit {rc}); see {log_path}")
        state = "FAIL"
    if interrupted:       # the worker stops too, also after a run that finished meanwhile
        raise KeyboardInterrupt
    return state


def work(study, spec: dict, study_dir: Path, opts, log=print) -> dict:
    """Pull trials until none is waiting or running (retrying dead workers' trials);
    a search also asks for new trials until it has ``n_trials``. Returns counts."""
    from optuna.trial import TrialState
    done: dict[str, int] = defaultdict(int)
    while True:
        for number in fail_stale(study, opts.grace, opts.max_retry):
            log(f"trial {number}: its worker stopped beating; queued to resume")
        trial = pop_waiting(study)
        if trial is None and spec["search"]:
            fresh = [t for t in study.get_trials(deepcopy=False)
                     if "failed_trial" not in t.system_attrs]
            if len(fresh) < spec["n_trials"]:
                trial = study.ask()
        if trial is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(POLL_S)       # others are working: wait for them or their retries
                continue
            return dict(done)
        done[run_trial(study, trial, spec, study_dir, opts, log)] += 1


# --- the report ----------------------------------------------------------------------------
def report(study, study_dir: Path, device: str, out_dir: Path, log=print) -> dict:
    """``report.md`` (the format of reference/results.md), ``report.json`` (its records)
    and ``curves.png`` (test accuracy per epoch, every run) from the completed trials."""
    from optuna.trial import TrialState

    from .analysis.plots import plot_study_curves, save_figure
    from .analysis.results import PAPER, markdown, paper_records, read_run, records_for
    spec = study.user_attrs["spec"]
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: t.user_attrs["run_dir"])
    if not trials:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet")
    runs_by_exp, commands = defaultdict(list), {}
    for t in trials:
        run = read_run(study_dir / t.user_attrs["run_dir"])
        run["folder"] = t.user_attrs["run_dir"]
        runs_by_exp[t.user_attrs["experiment"]].append(run)
        commands[t.user_attrs["experiment"]] = shown_command(suggest(t, spec), spec)
    records = []
    for exp, runs in runs_by_exp.items():
        base = exp.split("+")[0]
        if base in PAPER and not any(r["experiment"] == base for r in records):
            records += paper_records(base)
        records += records_for(exp, runs, device, command=commands[exp])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(records, indent=1) + "\n")
    text = markdown(records, runs_by_exp, device, title=f"Study {study.study_name}",
                    made_by=f"python3 -m snnsim.study report {study_dir}")   # as given
    (out_dir / "report.md").write_text(text)
    fig = plot_study_curves({exp: [r["rows"] for r in runs] for exp, runs in runs_by_exp.items()},
                            title=f"Study {study.study_name}: test accuracy of every run")
    paths = save_figure(fig, out_dir, "curves", formats=("png",))
    log(f"wrote {out_dir / 'report.md'}, {out_dir / 'report.json'} and {paths[0]} "
        f"({len(trials)} runs, {len(runs_by_exp)} experiments)")
    return {"records": records, "markdown": text}


# --- command line -------------------------------------------------------------------------
DESCRIPTION = __doc__.split("\n\n")[0] + """

  python3 -m snnsim.study run DIR --config fashion_mnist_mlp --seeds 0,1,2 \\
      --vary preset=authors,paper --epochs=3
  python3 -m snnsim.study report DIR

Start as many workers (the same 'run' command) as you have GPUs or cores; each
pulls trials until none is left. A killed worker's trial is resumed by another."""


def make_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog_name("python3 -m snnsim.study"), description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="join (or create) a study and run trials until none is left",
                       allow_abbrev=False,
                       description="Every --key=value not listed below is a training override "
                                   "passed to every run (see python3 -m snnsim.train --help), "
                                   "e.g. --epochs=3 --train_subset=5000.")
    r.add_argument("dir", type=Path, help="the study folder (run folders, logs, journal)")
    r.add_argument("--config", action="append", metavar="NAME_OR_PATH",
                   help="a training config (repeat for several); default fashion_mnist_mlp")
    r.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds of a grid (default 0)")
    r.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a grid axis: every run for each value (e.g. preset=authors,paper)")
    r.add_argument("--search", action="append", default=[], metavar="KEY=KIND:...",
                   help="a search dimension: float:LO:HI, log:LO:HI, int:LO:HI or cat:A,B")
    r.add_argument("--n-trials", type=int, metavar="N", help="trials of a search")
    r.add_argument("--gpu", metavar="ID", help="this worker's GPU (sets CUDA_VISIBLE_DEVICES "
                   "for its runs; add --backend=cupy)")
    r.add_argument("--heartbeat", type=float, default=30.0, metavar="S",
                   help="seconds between a running trial's heartbeats (default 30)")
    r.add_argument("--grace", type=float, default=120.0, metavar="S",
                   help="a trial silent this long is retried by another worker (default 120)")
    r.add_argument("--max-retry", type=int, default=3, metavar="N",
                   help="retries of one trial (default 3)")
    for q in (r, rep := sub.add_parser("report", help="the mean ± std table and the curves",
                                        allow_abbrev=False)):
        q.add_argument("--storage", metavar="URL", help="an SQLAlchemy URL (e.g. "
                       "postgresql://user@host/db); default the journal file DIR/journal.log")
        q.add_argument("--name", help="the study's name in the storage (default: DIR's name)")
    rep.add_argument("dir", type=Path, help="the study folder")
    rep.add_argument("--device", help="where the runs ran, in words (default: this machine)")
    rep.add_argument("--out-dir", type=Path, help="where report.md/.json and curves.png go "
                     "(default DIR)")
    return p


def _key_values(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise StudyError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = value
    return out


def _fixed_overrides(extra: list[str]) -> dict:
    fixed = {}
    for tok in extra:
        key, sep, value = tok[2:].partition("=")
        if not tok.startswith("--") or not sep:
            raise StudyError(f"unexpected argument {tok!r}; training overrides are --key=value")
        fixed[key.replace("-", "_")] = value
    return fixed


def this_machine() -> str:
    import platform
    return f"{platform.machine()} with {os.cpu_count()} CPUs"


def main(argv=None) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if extra and args.command != "run":
            raise StudyError(f"unexpected arguments {' '.join(extra)}")
        study_dir = args.dir
        name = args.name or study_dir.resolve().name
        if args.command == "report":
            if args.storage is None and not (study_dir / STORAGE_FILE).exists():
                raise StudyError(f"{study_dir} holds no study ({STORAGE_FILE}); pass --storage URL")
            study = create_or_join(open_storage(study_dir, args.storage), name, None)
            report(study, study_dir, args.device or this_machine(), args.out_dir or study_dir)
            return 0
        vary = {k: parse_list(v) for k, v in _key_values(args.vary, "--vary").items()}
        spec = make_spec(args.config or ["fashion_mnist_mlp"], parse_list(args.seeds), vary,
                         _fixed_overrides(extra), _key_values(args.search, "--search"),
                         args.n_trials)
        check_runs(spec)
        study_dir.mkdir(parents=True, exist_ok=True)
        study = create_or_join(open_storage(study_dir, args.storage), name, spec)
        try:
            done = work(study, spec, study_dir, args)
        except KeyboardInterrupt:
            print("interrupted; a trial this worker was running is queued to resume "
                  "(start a worker again to continue)", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"no trial left: this worker ran {dict(done) or 'none'}; "
              f"{rerun('snnsim.study', f'report {study_dir}')} writes the table")
        return 0
    except (StudyError, ValueError) as exc:
        print(f"snnsim.study: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


__all__ = ["create_or_join", "fail_stale", "grid_points", "main", "make_spec", "open_storage",
           "pop_waiting", "report", "run_trial", "work"]

if __name__ == "__main__":
    sys.exit(main())
