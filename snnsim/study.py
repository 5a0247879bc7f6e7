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
Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues a copy of it. A trial whose worker
ran on this machine and is gone (its process no longer exists: the machine restarted,
or the worker was killed) is retried sooner, once its heartbeat is two beats late, so
that a worker started after a restart resumes the runs it finds cut off before it
starts new ones. The copy runs in the same run folder (``DIR/trials/<config>-<key>=<value>-seed<k>``), so it
resumes from the last checkpoint (``--resume``) instead of starting over. An
interrupted worker (Ctrl-C, SIGINT or SIGTERM to the worker alone) stops its run,
queues its trial to resume the same way and exits 130. A worker that was paused past
``--grace`` (its trial declared stale and retried meanwhile) discards the late result
of its run with a note; the retry waits for that run to release its folder, then
resumes it.

Trials. Each trial is a subprocess ``python3 -m snnsim.train`` (its command is in
the trial's attributes and in ``DIR/logs/``): a crash, a leak or GPU memory of one
run cannot touch the worker or the next run, and on Linux the run dies with its
worker (no orphan keeps writing a folder a retry resumes). The trial records as
user attributes: final_test_acc and best_test_acc (%), epochs, seconds, commit,
run_dir (relative to DIR), experiment, seed, resumed_from_epoch, worker, command.

Checks. Every argument is checked before anything is created: seeds (integers >= 0,
each once), ``--vary`` values and configs (each once), ``--search`` ranges, an
override given twice, ``--n-trials``, ``--heartbeat`` (>= 0.5 s), ``--grace`` (at
least twice the heartbeat), ``--max-retry`` (>= 0). The journal is read and
replayed before Optuna opens it (:func:`check_journal`): a damaged line, an
incomplete last line (a truncated file), a journal without its create-study record,
grid points without a trial and run folders no trial knows (:func:`journal_problems`)
end the command with one line naming ``DIR/journal.log``, exit status 2.

Extending a study. A study keeps the arguments it was created with; a worker with
other arguments is refused. To add grid points (a seed, a config, a ``--vary``
value) keeping every other argument, run a worker with the new arguments and
``--extend``::

    python3 -m snnsim.study run DIR --config fashion_mnist_mlp --seeds 0,1,2,3 \\
        --vary preset=authors,paper --epochs=3 --extend

It enqueues the new points once (the old ones keep their trials and run folders),
stores the new arguments, and runs trials as any worker; start the other workers with
the same new arguments (``--extend`` is then a no-op). A search's ``--n-trials`` can
be raised the same way. Run one ``--extend`` worker at a time (two at once would
enqueue the new points twice). See docs/study_runner.md.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
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

from .commandline import ArgumentParser, did_you_mean, prog_name, rerun

STORAGE_FILE = "journal.log"
TRIALS_DIR = "trials"
LOGS_DIR = "logs"
#: Seconds between polls while waiting for other workers (their trials or a retry).
POLL_S = 0.5
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
SEARCH_KINDS = ("float", "log", "int", "cat")
#: The shortest heartbeat: every beat is a journal line (0 wrote 637 kB for a 1 s trial).
MIN_HEARTBEAT_S = 0.5
#: A joining worker waits for the creator's ``ready`` mark while the journal grows; this
#: many seconds without a new line mean the creator died (or the journal lost the mark).
READY_STALL_S = 30.0
#: Seconds a reader waits for an incomplete last journal line to be completed (another
#: worker writing it) before calling the journal truncated.
SETTLE_S = 2.0
#: The keys of a spec, as every version of this module stored them.
SPEC_KEYS = ("configs", "seeds", "vary", "fixed", "search", "n_trials")


class StudyError(Exception):
    """Bad input, or a study that does not match the command (one line, exit 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: the worker stops its run and requeues its trial."""


# --- the study's definition --------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _once(values: list, what: str) -> list:
    """``values``, refused when one is given twice."""
    seen = set()
    for v in values:
        if v in seen:
            raise StudyError(f"{what}: {v} is given twice")
        seen.add(v)
    return values


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: integers in [0, 2**32), each once."""
    seeds = []
    for item in parse_list(text):
        try:
            seed = int(item)
        except ValueError:
            raise StudyError(f"--seeds {text}: {item!r} is not an integer") from None
        if not 0 <= seed < 2**32:
            raise StudyError(f"--seeds {text}: {seed} is out of range (0 <= seed < 2**32)")
        seeds.append(seed)
    if not seeds:
        raise StudyError(f"--seeds {text!r}: no seed given")
    return _once(seeds, "--seeds")


def parse_search(key: str, text: str) -> tuple:
    """``--search KEY=float:LO:HI`` (LO < HI), ``log:LO:HI`` (0 < LO < HI),
    ``int:LO:HI`` (integers, LO <= HI) or ``cat:A,B,...`` (each once), as
    ``(kind, lo, hi)`` or ``("cat", [values])``."""
    kind, _, rest = text.partition(":")
    usage = (f"--search {key}={text}: expected float:LO:HI, log:LO:HI, int:LO:HI or "
             "cat:A,B,...")
    if kind == "cat":
        values = parse_list(rest)
        if not values:
            raise StudyError(usage)
        return "cat", _once(values, f"--search {key}")
    parts = rest.split(":")
    if kind not in SEARCH_KINDS or len(parts) != 2:
        raise StudyError(usage)
    number = int if kind == "int" else float
    try:
        lo, hi = (number(v) for v in parts)
    except ValueError:
        raise StudyError(f"{usage} ({kind} bounds)") from None
    if not all(map(math.isfinite, (lo, hi))):
        raise StudyError(f"--search {key}={text}: the bounds must be finite")
    if (hi < lo) if kind == "int" else not lo < hi:
        raise StudyError(f"--search {key}={text}: LO must be below HI")
    if kind == "log" and lo <= 0:
        raise StudyError(f"--search {key}={text}: a log range needs 0 < LO")
    return kind, lo, hi


def make_spec(configs: list[str], seeds: list[int], vary: dict, fixed: dict, search: dict,
              n_trials: int | None) -> dict:
    """The study's definition (stored in the study; every worker must bring the same).
    Its keys (:data:`SPEC_KEYS`) and their forms are those every earlier version
    stored: a study created by an earlier version is joined, not refused."""
    if search and vary:
        raise StudyError("--vary (a grid) and --search (a search) exclude each other")
    if search and (len(configs) > 1 or len(seeds) > 1 or not n_trials):
        raise StudyError("a search takes one --config, one seed and --n-trials N")
    if n_trials is not None and not search:
        raise StudyError("--n-trials applies to a search (--search KEY=...) only")
    if n_trials is not None and n_trials < 1:
        raise StudyError(f"--n-trials {n_trials}: must be >= 1")
    for key, text in search.items():
        parse_search(key, text)
    for key, values in vary.items():
        if not values:
            raise StudyError(f"--vary {key}=: no value given")
        _once(values, f"--vary {key}")
    _once(list(configs), "--config")
    labels = [config_label(c) for c in configs]
    for label in labels:
        if labels.count(label) > 1:
            raise StudyError(f"--config: two configs named {label!r} would share run folders")
    for key in ("seed", "out", "config", "resume"):
        if key in fixed or key in vary or key in search:
            raise StudyError(f"--{key} is set by the study itself (use --seeds for seeds)")
    for key in fixed:
        if key in vary or key in search:
            raise StudyError(f"--{key} is both fixed (--{key}=...) and "
                             f"{'varied' if key in vary else 'searched'}")
    spec = {"configs": list(configs), "seeds": [int(s) for s in seeds],
            "vary": {k: list(v) for k, v in vary.items()}, "fixed": dict(fixed),
            "search": dict(search), "n_trials": n_trials if search else None}
    names = [p["name"] for p in grid_points(spec)]
    for name in names:
        if names.count(name) > 1:
            raise StudyError(f"two grid points share the run folder {TRIALS_DIR}/{name} "
                             "(values that differ only in characters a folder name drops)")
    return spec


def normalize_spec(spec) -> dict:
    """A stored spec in the form :func:`make_spec` gives, for comparison; StudyError
    when it is not one (a damaged journal): its keys, their types, and what
    :func:`make_spec` checks (seeds, duplicates, search ranges)."""
    damaged = f"the stored study definition is damaged: {json.dumps(spec, default=repr)[:200]}"
    if not isinstance(spec, dict) or set(spec) != set(SPEC_KEYS):
        raise StudyError(damaged)

    def strings(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def str_dict(value, check) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and check(v)
                                               for k, v in value.items())
    ok = (strings(spec["configs"]) and spec["configs"]
          and isinstance(spec["seeds"], list) and spec["seeds"]
          and all(type(v) is int for v in spec["seeds"])
          and str_dict(spec["vary"], strings)
          and str_dict(spec["fixed"], lambda v: isinstance(v, str))
          and str_dict(spec["search"], lambda v: isinstance(v, str))
          and (spec["n_trials"] is None or type(spec["n_trials"]) is int))
    if not ok:
        raise StudyError(damaged)
    try:
        made = make_spec(spec["configs"], spec["seeds"], spec["vary"], spec["fixed"],
                         spec["search"], spec["n_trials"])
    except StudyError as exc:
        raise StudyError(f"{damaged} ({exc})") from None
    if any(not 0 <= s < 2**32 for s in made["seeds"]) or len(set(made["seeds"])) < len(made["seeds"]):
        raise StudyError(f"{damaged} (its seeds)")
    return json.loads(json.dumps(made))


def extension(stored: dict, spec: dict) -> list[dict]:
    """The grid points ``spec`` adds to the study defined by ``stored`` (for
    ``--extend``). StudyError unless ``spec`` keeps every other argument: the same
    overrides and search, and every config, seed and ``--vary`` value of ``stored``."""
    stored, new = normalize_spec(stored), normalize_spec(spec)
    why = None
    if new["fixed"] != stored["fixed"]:
        why = "the overrides (--key=value) differ"
    elif new["search"] != stored["search"]:
        why = "the --search dimensions differ"
    elif set(new["vary"]) != set(stored["vary"]):
        why = "the --vary keys differ"
    elif not set(stored["configs"]) <= set(new["configs"]):
        why = "a config of the study is missing"
    elif not set(stored["seeds"]) <= set(new["seeds"]):
        why = "a seed of the study is missing"
    elif any(not set(v) <= set(new["vary"][k]) for k, v in stored["vary"].items()):
        why = "a --vary value of the study is missing"
    elif stored["search"] and (new["n_trials"] or 0) < (stored["n_trials"] or 0):
        why = "--n-trials is lower than the study's"
    if why:
        raise StudyError(f"--extend adds grid points (seeds, configs, --vary values) or raises "
                         f"--n-trials, keeping every other argument: {why}; the study has "
                         f"{json.dumps(stored)}")
    old = {p["name"] for p in grid_points(stored)}
    return [p for p in grid_points(new) if p["name"] not in old]


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


def trial_point(trial) -> str | None:
    """The grid point a trial runs (its name): a ``--extend`` point's user attribute,
    else the ``point`` parameter (set when the trial starts; before, the value it was
    enqueued with); None for a search trial."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    return (trial.user_attrs.get("point") or trial.params.get("point")
            or (fixed.get("point") if isinstance(fixed, dict) else None))


def suggest(trial, spec: dict) -> dict:
    """The trial's run: its grid point, or its sampled search parameters.

    A grid point is the categorical parameter ``point`` whose choices are the points the
    study was created with (Optuna refuses other choices later: they are kept in the
    study's ``point_choices`` once ``--extend`` changed the grid); a point added by
    ``--extend`` is the trial's user attribute ``point`` instead."""
    if not spec["search"]:
        points = {p["name"]: p for p in grid_points(spec)}
        name = trial.user_attrs.get("point")
        if name is None:
            choices = trial.study.user_attrs.get("point_choices") or list(points)
            name = trial.suggest_categorical("point", choices)
        return _point(points, name, trial)
    overrides = {}
    for key, text in spec["search"].items():
        kind, *bounds = parse_search(key, text)
        if kind == "cat":
            overrides[key] = trial.suggest_categorical(key, bounds[0])
        else:
            lo, hi = bounds
            overrides[key] = (trial.suggest_int(key, lo, hi) if kind == "int" else
                              trial.suggest_float(key, lo, hi, log=kind == "log"))
    # A retry carries the user attributes of the trial it retries: the same run folder.
    config = spec["configs"][0]
    name = trial.user_attrs.get("name", f"{config_label(config)}-trial{trial.number}")
    return {"name": name, "experiment": name.replace("-trial", "+trial"), "config": config,
            "seed": spec["seeds"][0], "overrides": overrides}


def _point(points: dict, name, trial) -> dict:
    """The grid point ``name`` of ``points``; StudyError for one the grid lacks (a
    damaged journal)."""
    if not isinstance(name, str) or name not in points:
        raise StudyError(f"trial {trial.number} names {name!r}, not a grid point of the study "
                         "(a damaged journal?)")
    return points[name]


def check_runs(spec: dict) -> None:
    """Every config loads and every override, varied value, search bound and seed
    parses as the config's type and range, and this machine has every backend the runs
    use (before anything is created: a worker without CuPy would fail every trial of
    a ``--backend=cupy`` grid)."""
    from .backend import BackendError, check_backend
    from .training.config import ConfigError, check_key, load_config_file, normalize_key
    backends = set()
    try:
        for config in spec["configs"]:
            cfg = load_config_file(config)
            for key in [*spec["fixed"], *spec["vary"], *spec["search"]]:
                check_key(normalize_key(key), "study")
            cfg = cfg.replace(source="study", **spec["fixed"])
            backends.add(cfg.backend)
            for seed in spec["seeds"]:
                cfg.replace(source="study", seed=seed)
            for point in grid_points(spec) if not spec["search"] else []:
                backends.add(cfg.replace(source="study", **point["overrides"]).backend)
            for key, text in spec["search"].items():
                kind, *bounds = parse_search(key, text)
                for value in (bounds[0] if kind == "cat" else bounds):
                    backends.add(cfg.replace(source=f"study: --search {key}={text}",
                                             **{key: value}).backend)
        for backend in sorted(backends):
            check_backend(backend)
    except (ConfigError, BackendError) as exc:
        raise StudyError(str(exc)) from exc


def check_worker_options(opts) -> None:
    """--heartbeat, --grace and --max-retry (before anything is created)."""
    if not (math.isfinite(opts.heartbeat) and opts.heartbeat >= MIN_HEARTBEAT_S):
        raise StudyError(f"--heartbeat {opts.heartbeat}: must be at least {MIN_HEARTBEAT_S} s "
                         "(every beat is a line of the journal)")
    if not (math.isfinite(opts.grace) and opts.grace >= 2 * opts.heartbeat):
        raise StudyError(f"--grace {opts.grace}: must be at least twice --heartbeat "
                         f"({opts.heartbeat} s), else a live worker's trial is declared stale")
    if opts.max_retry < 0:
        raise StudyError(f"--max-retry {opts.max_retry}: must be >= 0")


# --- storage and the study ----------------------------------------------------------------
def open_storage(study_dir: Path, url: str | None, create: bool = False):
    """Optuna storage: an SQLAlchemy URL (RDB), else the journal file DIR/journal.log,
    checked first (:func:`check_study_folder`, :func:`check_journal`); ``create``: the
    folder and the journal are made when missing (``run``), else they must exist."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # the study prints its own lines
    if url:
        if create:
            check_study_folder(study_dir, create, journal=False)
        return _rdb_storage(url)
    path = check_study_folder(study_dir, create)
    check_journal(path)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def check_study_folder(study_dir: Path, create: bool, journal: bool = True) -> Path:
    """The study folder and its journal usable (``create``: made, and writable; the
    journal left alone when ``journal`` is False, a study in a database): the journal's
    path, or StudyError naming the path and the reason."""
    path = study_dir / STORAGE_FILE
    if study_dir.exists() and not study_dir.is_dir():
        raise StudyError(f"{study_dir}: exists and is not a folder (the study folder)")
    if path.exists() and not path.is_file():
        raise StudyError(f"{path}: is not a file (a folder?); the study's journal must be one")
    if not create:
        if not path.exists():
            raise StudyError(f"{study_dir} holds no study (no {STORAGE_FILE}: no worker has "
                             "created it; a study in a database: pass --storage URL)")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise StudyError(f"{path}: cannot be read ({exc.strerror})") from None
        return path
    try:
        for sub in ("", TRIALS_DIR, LOGS_DIR):
            (study_dir / sub).mkdir(parents=True, exist_ok=True)
        if journal:
            with open(path, "ab"):
                pass
    except OSError as exc:
        where = exc.filename or study_dir
        raise StudyError(f"{where}: cannot write the study there ({exc.strerror})") from None
    return path


def read_journal(path: Path, settle_s: float | None = None) -> list[dict]:
    """The journal's records, checked: every line a JSON object that Optuna's replay
    accepts (StudyError naming the file and the line otherwise). An incomplete last
    line is waited for ``settle_s`` (default :data:`SETTLE_S`; another worker may be
    writing it), then called what it is: a truncated journal."""
    deadline = time.monotonic() + (SETTLE_S if settle_s is None else settle_s)
    while True:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StudyError(f"{path}: cannot be read ({exc.strerror})") from None
        if not data or data.endswith(b"\n"):
            break
        if time.monotonic() > deadline:
            tail = data.rsplit(b"\n", 1)[-1]
            n = data.count(b"\n") + 1
            raise StudyError(f"{path}: line {n} is incomplete ({len(tail)} bytes without an end "
                             "of line): the journal was truncated or a write was cut; restore it, "
                             f"or delete line {n} to keep the records before it")
        time.sleep(0.1)
    replay = _replay_checker()
    records = []
    for n, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
                raise ValueError("not an Optuna journal record")
            if replay is not None:
                replay.apply_logs([record])
        except Exception as exc:      # any failure of the replay is the record's fault
            text = (str(exc) or type(exc).__name__).splitlines()[0][:120]
            raise StudyError(f"{path} line {n}: damaged ({type(exc).__name__}: {text}); restore "
                             "the journal from a copy") from None
        records.append(record)
    return records


def _replay_checker():
    """Optuna's own replay of a journal (its private class; None if it moved), to which
    records are fed one by one: a record it cannot apply is found with its line."""
    try:
        from optuna.storages.journal._storage import JournalStorageReplayResult
    except ImportError:     # pragma: no cover - another Optuna layout: JSON checks only
        return None
    return JournalStorageReplayResult("snnsim-study-check-")


def check_journal(path: Path) -> list[dict]:
    """The journal readable (:func:`read_journal`) and begun by a create-study record
    (a journal that lost its first line holds records of a study it cannot name)."""
    from optuna.storages.journal._storage import JournalOperation
    records = read_journal(path)
    if records and records[0]["op_code"] != JournalOperation.CREATE_STUDY:
        raise StudyError(f"{path}: holds {len(records)} records but does not begin with the "
                         "record that creates the study (its first lines were lost); restore it "
                         "from a copy")
    return records


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


def create_or_join(storage, name: str, spec: dict | None, log=print, wait_s: float = 600.0,
                   extend: bool = False, journal: Path | None = None):
    """The study ``name``: created (and its grid enqueued, once) by the first worker,
    joined by the others; ``spec`` None only reads an existing study. ``extend``: a
    ``spec`` that adds grid points to the stored one is stored and its new points
    enqueued (:func:`extension`). ``journal``: the journal file, whose growth shows
    that a creator is still enqueueing (a wait for its ``ready`` mark ends when the
    journal stalls for :data:`READY_STALL_S`; else after ``wait_s``)."""
    import optuna
    quiet_since = journal.stat().st_mtime if journal is not None else None   # before our lines
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
        where = f" {journal}" if journal else " the storage"
        raise StudyError(f"no study {name!r} in{where} (--name chooses another)") from exc
    _wait_ready(study, journal, quiet_since, wait_s, log)
    stored = normalize_spec(study.user_attrs.get("spec"))
    if spec is not None and stored != normalize_spec(spec):
        if not extend:
            raise StudyError(f"study {name!r} was created with other arguments: "
                             f"{json.dumps(stored)}; to add seeds, configs or --vary values "
                             "keeping the others, run with the new arguments and --extend")
        added = extension(stored, spec)
        if "point_choices" not in study.user_attrs and not stored["search"]:
            study.set_user_attr("point_choices", [p["name"] for p in grid_points(stored)])
        for point in added:
            study.enqueue_trial({}, user_attrs={"point": point["name"]}, skip_if_exists=False)
        study.set_user_attr("spec", spec)
        log(f"extended study {name!r}: {len(added)} new grid point{'' if len(added) == 1 else 's'}"
            + (f", {spec['n_trials']} trials" if spec["search"] else ""))
    return study


def _wait_ready(study, journal: Path | None, quiet_since: float | None, wait_s: float,
                log) -> None:
    """Wait for the creator's ``ready`` mark (it enqueues the grid first), saying so;
    StudyError once the journal has not grown for :data:`READY_STALL_S` since
    ``quiet_since`` (its time before this worker's own lines), or after ``wait_s``
    without a journal: the creator died, or the journal lost the mark."""
    deadline, said = time.monotonic() + wait_s, False
    size = journal.stat().st_size if journal is not None else 0
    while not study.user_attrs.get("ready"):
        if journal is not None:
            if journal.stat().st_size != size:        # another worker is writing
                size, quiet_since = journal.stat().st_size, time.time()
            stalled = time.time() - quiet_since > READY_STALL_S
        else:
            stalled = time.monotonic() > deadline
        if stalled:
            where = f" ({journal} has not grown for {READY_STALL_S:.0f} s)" if journal else ""
            raise StudyError(f"study {study.study_name!r} was created but never marked ready"
                             f"{where}: its creator died while enqueueing, or the journal lost "
                             "records; delete the study folder and start again")
        if not said:
            log(f"waiting for the creator of study {study.study_name!r} to enqueue its grid")
            said = True
        time.sleep(POLL_S)


def journal_problems(study, study_dir: Path) -> list[str]:
    """What a complete journal of this study would not show: grid points without any
    trial (the creator enqueues them all before its ``ready`` mark), completed trials
    whose run folder is gone, run folders under ``DIR/trials`` no trial names (a trial
    records its folder before its run starts). Each is a lost record or a moved folder."""
    runs = study_dir / TRIALS_DIR      # listed first: a folder seen here was made after
    listed = [p for p in (runs.iterdir() if runs.is_dir() else []) if p.is_dir()]   # its record
    spec = study.user_attrs["spec"]
    trials = study.get_trials(deepcopy=False)
    problems = []
    if not spec["search"]:
        have = {trial_point(t) for t in trials}
        missing = [p["name"] for p in grid_points(spec) if p["name"] not in have]
        if missing:
            problems.append(f"{len(missing)} grid point(s) have no trial ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''})")
    known = {t.user_attrs.get("run_dir") for t in trials}
    from optuna.trial import TrialState
    gone = [t.number for t in trials if t.state == TrialState.COMPLETE
            and not (study_dir / str(t.user_attrs.get("run_dir", "?"))).is_dir()]
    if gone:
        problems.append(f"the run folders of completed trials {gone[:5]} are missing")
    unknown = sorted(p.name for p in listed if f"{TRIALS_DIR}/{p.name}" not in known
                     and any((p / f).exists() for f in ("metrics.jsonl", "checkpoint.h5")))
    if unknown:
        problems.append(f"run folders no trial records: {', '.join(unknown[:3])}"
                        f"{', ...' if len(unknown) > 3 else ''}")
    return problems


def check_consistent(study, study_dir: Path, journal: Path | None) -> None:
    """StudyError when :func:`journal_problems` finds any."""
    problems = journal_problems(study, study_dir)
    if problems:
        where = journal if journal is not None else "the storage"
        raise StudyError(f"{where}: study {study.study_name!r} is damaged or incomplete: "
                         + "; ".join(problems) + " (a truncated journal?); restore it from a copy")


def _stopped(trial) -> bool:
    """Whether a FAIL trial was stopped rather than wrong: its run exited 130 (a stop
    request) or was killed by a signal, or no exit status was recorded (its worker was
    lost and the trial declared stale). Its run folder can be resumed."""
    rc = trial.user_attrs.get("exit_code")
    return rc is None or rc == EXIT_INTERRUPTED or (isinstance(rc, int) and rc < 0)


def trial_counts(study) -> dict:
    """Trials by state: complete, running, waiting, failed (of which ``stopped``: stopped,
    killed or cut off, :func:`_stopped`; and ``retried``: a retry was enqueued for them),
    and the grid points (or search trials) done of all.
    A retry names the first failed trial of its chain (``failed_trial``) and every
    failed trial of it (``retry_history``): a trial retried again after its own retry
    failed is counted through the latter."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    spec = study.user_attrs["spec"]
    retried = {n for t in trials
               for n in [t.system_attrs.get("failed_trial"), *t.system_attrs.get("retry_history", ())]}
    counts = {"complete": 0, "running": 0, "waiting": 0, "failed": 0, "stopped": 0, "retried": 0}
    for t in trials:
        key = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running",
               TrialState.WAITING: "waiting", TrialState.FAIL: "failed"}.get(t.state)
        if key:
            counts[key] += 1
        if t.state == TrialState.FAIL:
            counts["stopped"] += _stopped(t)
            counts["retried"] += t.number in retried
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if spec["search"]:
        counts["total"], counts["done"] = spec["n_trials"], len(done)
    else:
        counts["total"] = len(grid_points(spec))
        counts["done"] = len({trial_point(t) for t in done})
    return counts


def status_line(counts: dict, search: bool) -> str:
    """One sentence: how far the study is, and its trials by state (an ended trial as
    "stopped or cut off", which a resumed study continues, or "failed")."""
    what = "search trials" if search else "grid points"
    partial = counts["done"] < counts["total"]
    return (f"{counts['done']} of {counts['total']} {what} complete"
            + (" (partial: runs not finished are listed with the epochs they have done)"
               if partial else "")
            + f"; trials: {counts['complete']} complete, {counts['running']} running, "
            f"{counts['waiting']} waiting, {counts['stopped']} stopped or cut off, "
            f"{counts['failed'] - counts['stopped']} failed "
            f"({counts['retried']} of these {counts['failed']} retried)")


def enqueue_retry(study, trial, max_retry: int | None) -> None:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` for the failed ``trial``: a WAITING copy
    (its user attributes: the same run folder), unless it was retried ``max_retry`` times.
    Optuna marks the callback experimental; its warning said so in every worker's log
    at every stop, and is left out."""
    import copy
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # (a copy: the callback appends to the trial's own retry_history list, which an
        # in-memory or cached storage hands out uncopied)
        RetryHeartbeatStaleTrialCallback(max_retry)(study, copy.deepcopy(trial))


def fail_stale(study, grace_s: float, max_retry: int | None,
               heartbeat_s: float | None = None) -> list[int]:
    """Mark FAIL every RUNNING trial whose last sign of life (heartbeat, else its
    start) is older than ``grace_s``, or older than two ``heartbeat_s`` when its worker
    ran on this machine and is gone (:func:`worker_gone`), and enqueue its retry
    (Optuna's callback). Returns the numbers failed by this call (another worker may
    have been first)."""
    import optuna
    from optuna.trial import TrialState
    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = max(_number(t.system_attrs.get("heartbeat")),
                    t.datetime_start.timestamp() if t.datetime_start else 0.0)
        if now - alive <= grace_s and not (heartbeat_s is not None
                                           and now - alive > 2 * heartbeat_s
                                           and worker_gone(t.user_attrs.get("worker"))):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue            # another worker failed it first
        enqueue_retry(study, t, max_retry)
        failed.append(t.number)
    return failed


def worker_gone(worker) -> bool:
    """True when ``worker`` (a trial's ``host:pid`` attribute) names a process of this
    machine (same host name) that no longer exists, or this very process (which is not
    running that trial: a number reused after a restart). False for another machine,
    a live process, a damaged attribute, or off POSIX; the grace period then decides."""
    host, _, pid = str(worker).rpartition(":")
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit() or int(pid) < 1:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:               # exists, another user's (EPERM), or cannot tell
        return False
    return False


def _number(value) -> float:
    """A stored time as a float (0 for a missing or damaged one: long ago)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


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


def report_epochs(study, trial, metrics: Path, reported: set) -> None:
    """Each epoch of the run's ``metrics.jsonl`` not yet in ``reported``: its test accuracy
    (%) as the trial's intermediate value at step = the epoch (the learning curve Optuna's
    dashboard draws while the run trains). A damaged or half-written line is skipped."""
    try:
        lines = metrics.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            row = json.loads(line)
            epoch, acc = int(row["epoch"]), 100.0 * float(row["test_acc"])
        except (ValueError, TypeError, KeyError):
            continue
        if epoch not in reported:
            study._storage.set_trial_intermediate_value(trial._trial_id, epoch, acc)
            reported.add(epoch)


@contextlib.contextmanager
def heartbeat(study, trial, interval_s: float, metrics: Path | None = None):
    """Record the time as the trial's ``heartbeat`` every ``interval_s`` while the body
    runs, and (``metrics``: the run's ``metrics.jsonl``) its epochs' test accuracy as
    intermediate values (:func:`report_epochs`); the beats stop when another worker has
    declared the trial stale (finished)."""
    import optuna
    stop = threading.Event()
    reported: set = set()

    def beat():
        while True:
            try:
                study._storage.set_trial_system_attr(trial._trial_id, "heartbeat", time.time())
                if metrics is not None:
                    report_epochs(study, trial, metrics, reported)
            except optuna.exceptions.UpdateFinishedTrialError:
                return           # failed by another worker: its retry owns the run now
            except Exception:    # a missed beat is retried at the next one
                pass
            if stop.wait(interval_s):
                if metrics is not None:       # the last epochs, before the trial is told
                    with contextlib.suppress(Exception):
                        report_epochs(study, trial, metrics, reported)
                return
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def folder_in_use(run_dir: Path) -> bool:
    """True while another process holds the run folder's lock (a run training there)."""
    from filelock import FileLock, Timeout

    from .training.runfolder import LOCK_NAME
    if not (run_dir / LOCK_NAME).exists():
        return False
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def wait_for_folder(run_dir: Path, log, label: str) -> None:
    """Wait while another process holds the run folder's lock: the run of a trial
    declared stale (its worker paused past ``--grace``) may still be training there;
    the retry resumes it once it has stopped or finished (a run refuses a locked
    folder)."""
    said = False
    while folder_in_use(run_dir):
        if not said:
            log(f"{label}: {run_dir} is still in use (the run of the stale trial this one "
                "retries); waiting for it to stop")
            said = True
        time.sleep(POLL_S)


# --- one trial ------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


#: Seconds an interrupted worker gives its run to stop on its own before sending it
#: SIGTERM (Ctrl-C reaches the run too; ``kill -INT WORKER`` only the worker), and
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
    resumable; when the worker alone got the signal, the run gets SIGTERM after
    ``grace_s`` (it stops the same way), and SIGKILL ``kill_s`` later (its last
    checkpoint stays). Not SIGINT: a worker started in the background by a shell
    (``nohup ... &``) passes on an ignored SIGINT to its run, which then trained on
    until the SIGKILL and lost the epoch so far. Returns its exit status."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_s)):
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


def starting_text(run_dir: Path) -> str:
    """How a trial's run starts, for the worker's log: ``starting``, ``resuming after
    epoch N``, or with a stop inside the next epoch kept (interrupted.h5 continuing the
    checkpoint) ``resuming after epoch N, batch B of epoch N+1``."""
    from .training.checkpoint import checkpoint_epoch
    from .training.runfolder import kept_in, resume_file
    state = resume_file(run_dir)
    if state is None:
        return "starting"
    resumed, kept = checkpoint_epoch(state), kept_in(run_dir)
    return ((f"resuming after epoch {resumed}" if resumed else "resuming")
            + (f", batch {kept} of epoch {resumed + 1}" if kept else ""))


def run_trial(study, trial, spec: dict, study_dir: Path, opts, log=print) -> str:
    """Run one trial to its end; returns its state's name (``STALE``: another worker
    declared the trial stale meanwhile, and its result was discarded)."""
    import optuna

    from .training.checkpoint import checkpoint_epoch
    from .training.runfolder import resume_file
    run = suggest(trial, spec)
    label = f"trial {trial.number} {run['name']}"
    run_dir = study_dir / TRIALS_DIR / run["name"]
    if folder_in_use(run_dir):
        with heartbeat(study, trial, opts.heartbeat):
            wait_for_folder(run_dir, log, label)
    state = resume_file(run_dir)      # checkpoint.h5, else interrupted.h5 (stopped in epoch 1)
    resumed = checkpoint_epoch(state) if state is not None else 0
    cmd = train_command(run, spec, run_dir, resume=state is not None)
    try:
        for key, value in {"name": run["name"], "run_dir": str(run_dir.relative_to(study_dir)),
                           "experiment": run["experiment"], "seed": run["seed"],
                           "resumed_from_epoch": resumed,
                           "worker": f"{socket.gethostname()}:{os.getpid()}",
                           "command": " ".join(["python3", *cmd[1:]])}.items():
            trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        log(f"{label}: declared stale by another worker before it started; left to its retry")
        return "STALE"
    log_path = study_dir / LOGS_DIR / f"{run['name']}.trial{trial.number}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if opts.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(opts.gpu)
    log(f"{label}: {starting_text(run_dir)} (log {log_path})")
    t0 = time.time()
    interrupted = None
    with open(log_path, "ab") as out:    # started before the heartbeat thread: fork, then exec
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent())
    with heartbeat(study, trial, opts.heartbeat, run_dir / "metrics.jsonl"):
        try:
            rc = proc.wait()
        except KeyboardInterrupt as exc:   # the run stops, keeping its last checkpoint
            interrupted = exc
            rc = stop_run(proc)
    try:
        state = _record(study, trial, run, run_dir, rc, interrupted is not None, t0, log_path,
                        opts, log)
    except optuna.exceptions.UpdateFinishedTrialError:
        log(f"{label}: another worker declared this trial stale while it ran (its heartbeat "
            f"stopped for over --grace {opts.grace:g} s) and queued a retry; the result of this "
            f"run (exit {rc}) is discarded, the retry resumes {run_dir}")
        state = "STALE"
    if interrupted is not None:    # the worker stops too, also after a run that finished
        raise interrupted
    return state


def _record(study, trial, run, run_dir, rc, interrupted, t0, log_path, opts, log) -> str:
    """The trial's result in the study: COMPLETE with the run's accuracies, or FAIL
    (and queued to resume when the run was stopped or killed). Optuna's
    UpdateFinishedTrialError when another worker has failed the trial meanwhile."""
    from optuna.trial import TrialState

    from .analysis.results import read_run
    label = f"trial {trial.number} {run['name']}"
    result = None
    if rc == 0:           # finished (an interrupted run exits 130)
        try:
            result = read_run_checked(run_dir, read_run)
        except StudyError as exc:
            log(f"{label}: the run exited 0 but {exc}")
    if result is not None:
        for key, value in {"final_test_acc": result["final"], "best_test_acc": result["best"],
                           "epochs": result["epochs"], "seconds": round(time.time() - t0, 1),
                           "train_seconds": round(result["wall_s"], 1),
                           "commit": result["commit"]}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, result["best"])
        log(f"{label}: done, best test accuracy {result['best']:.2f} %, "
            f"final {result['final']:.2f} %")
        return "COMPLETE"
    trial.set_user_attr("exit_code", rc)
    frozen = study.tell(trial, state=TrialState.FAIL)
    if rc == 0:
        log(f"{label}: failed (its run folder cannot be read); see {log_path}")
        return "FAIL"
    if interrupted or rc < 0:     # stopped or killed, not wrong: another worker resumes it
        enqueue_retry(study, frozen, opts.max_retry)
        log(f"{label}: stopped (exit {rc}); queued to resume")
    else:
        log(f"{label}: failed (exit {rc}); see {log_path}")
    return "FAIL"


def work(study, spec: dict, study_dir: Path, opts, log=print) -> dict:
    """Pull trials until none is waiting or running (retrying dead workers' trials);
    a search also asks for new trials until it has ``n_trials``. Returns counts.
    The study's stored definition is read before every trial: another worker's
    ``--extend`` may have added points meanwhile."""
    from optuna.trial import TrialState
    done: dict[str, int] = defaultdict(int)
    while True:
        spec = study.user_attrs["spec"]
        for number in fail_stale(study, opts.grace, opts.max_retry, opts.heartbeat):
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
    and ``curves.png`` (test accuracy per epoch, every run) from the completed trials and
    from the runs still to be continued (a trial running or waiting, its run folder with
    at least one finished epoch), which are listed with the epochs they have done: a study
    of long runs has results before its first run ends."""
    from optuna.trial import TrialState

    from .analysis.plots import plot_study_curves, save_figure
    from .analysis.results import PAPER, markdown, paper_records, read_run, records_for
    from .training.checkpoint import CheckpointError
    spec = study.user_attrs["spec"]
    status = status_line(trial_counts(study), bool(spec["search"]))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in trials:
        _check_attrs(t)
    going = _runs_going(study, {t.user_attrs["run_dir"] for t in trials})
    runs_by_exp, commands = defaultdict(list), {}
    for t in sorted(trials, key=lambda t: t.user_attrs["run_dir"]):
        run = read_run_checked(study_dir / t.user_attrs["run_dir"], read_run)
        run["folder"] = t.user_attrs["run_dir"]
        runs_by_exp[t.user_attrs["experiment"]].append(run)
        commands[t.user_attrs["experiment"]] = shown_command(_run_of(t, spec), spec)
    for run_dir, t in sorted(going.items()):
        folder = study_dir / run_dir
        if not (folder / "checkpoint.h5").is_file() or not (folder / "metrics.jsonl").is_file():
            continue                    # (no epoch finished yet)
        try:
            run = read_run(folder)
        except SystemExit:              # (metrics.jsonl holds no epoch yet)
            continue
        except (CheckpointError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log(f"{run_dir}: left out of the report, its run cannot be read "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        run["folder"] = run_dir
        experiment = t.user_attrs["experiment"]
        runs_by_exp[experiment].append(run)
        if experiment not in commands:
            try:
                commands[experiment] = shown_command(_run_of(t, spec), spec)
            except (StudyError, ValueError, KeyError):
                pass                    # (records_for then shows the experiment's command)
    if not runs_by_exp:
        raise StudyError(f"study {study.study_name!r} has no run with a finished epoch yet: "
                         f"{status}")
    records = []
    for exp, runs in runs_by_exp.items():
        base = exp.split("+")[0]
        if base in PAPER and not any(r["experiment"] == base for r in records):
            records += paper_records(base)
        records += records_for(exp, runs, device, command=commands.get(exp))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(records, indent=1) + "\n")
    text = markdown(records, runs_by_exp, device, title=f"Study {study.study_name}",
                    made_by=f"python3 -m snnsim.study report {study_dir}")   # as given
    title, _, rest = text.partition("\n\n")
    text = f"{title}\n\nStudy status: {status}.\n\n{rest}"
    (out_dir / "report.md").write_text(text)
    fig = plot_study_curves({exp: [r["rows"] for r in runs] for exp, runs in runs_by_exp.items()},
                            title=f"Study {study.study_name}: test accuracy of every run")
    paths = save_figure(fig, out_dir, "curves", formats=("png",))
    n_runs = sum(len(r) for r in runs_by_exp.values())
    log(f"wrote {out_dir / 'report.md'}, {out_dir / 'report.json'} and {paths[0]} "
        f"({n_runs} run{'s' * (n_runs != 1)}, {len(runs_by_exp)} "
        f"experiment{'s' * (len(runs_by_exp) != 1)})")
    log(f"study {study.study_name!r}: {status}")
    return {"records": records, "markdown": text, "status": status}


def _runs_going(study, finished: set) -> dict:
    """{run_dir: trial} of the runs still to be continued: a trial running, or waiting
    with a run folder (a retry carries its trial's), whose folder no completed trial has.
    A trial that failed for good (no retry waits) is not among them."""
    from optuna.trial import TrialState
    going = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        run_dir = t.user_attrs.get("run_dir")
        if run_dir is None or run_dir in finished:
            continue
        _check_attrs(t)
        going[run_dir] = t
    return going


def _check_attrs(trial) -> None:
    """A trial's records the report reads: ``run_dir`` a folder of ``DIR/trials``,
    ``experiment`` a name (StudyError otherwise: a damaged journal)."""
    run_dir, experiment = trial.user_attrs.get("run_dir"), trial.user_attrs.get("experiment")
    name = run_dir.removeprefix(f"{TRIALS_DIR}/") if isinstance(run_dir, str) else ""
    if (not isinstance(run_dir, str) or not run_dir.startswith(f"{TRIALS_DIR}/")
            or not re.fullmatch(r"[A-Za-z0-9_.=+-]+", name) or name in (".", "..")
            or not isinstance(experiment, str) or not experiment):
        raise StudyError(f"trial {trial.number}'s records are damaged "
                         f"(run_dir {run_dir!r}, experiment {experiment!r})")


def read_run_checked(folder: Path, read_run) -> dict:
    """``read_run(folder)`` (snnsim.analysis.results), its failures as StudyError
    naming the folder."""
    try:
        return read_run(folder)
    except SystemExit as exc:
        raise StudyError(str(exc.code)) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise StudyError(f"{folder}: the run cannot be read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _run_of(trial, spec: dict) -> dict:
    """A finished trial's run (its grid point, or its search parameters)."""
    if spec["search"]:
        return suggest(trial, spec)
    return _point({p["name"]: p for p in grid_points(spec)}, trial_point(trial), trial)


# --- command line -------------------------------------------------------------------------
DESCRIPTION = __doc__.split("\n\n")[0] + """

  python3 -m snnsim.study run DIR --config fashion_mnist_mlp --seeds 0,1,2 \\
      --vary preset=authors,paper --epochs=3
  python3 -m snnsim.study report DIR

Start as many workers (the same 'run' command) as you have GPUs or cores; each
pulls trials until none is left. A killed worker's trial is resumed by another."""


class _Parser(ArgumentParser):
    """snnsim's parser (plain ``--help``, "did you mean" for a misspelt option) whose errors
    are StudyError (one line, exit status 2); see :class:`_StoreOnce` for options given twice."""

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            options = [a.split("=", 1)[0] for a in unknown.group(1).split() if a.startswith("-")]
            if options:
                message += did_you_mean(options[0], self.option_strings())
        raise StudyError(message)


class _StoreOnce(argparse.Action):
    """``store``, refusing a second occurrence of the option (the last one silently won)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, "_given", set())
        if self.dest in given:
            parser.error(f"{option_string} is given twice")
        namespace._given = given | {self.dest}
        setattr(namespace, self.dest, values)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=prog_name("python3 -m snnsim.study"), description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="join (or create) a study and run trials until none is left",
                       allow_abbrev=False,
                       description="Every --key=value not listed below is a training override "
                                   "passed to every run (see python3 -m snnsim.train --help), "
                                   "e.g. --epochs=3 --train_subset=5000.")
    r.add_argument("dir", type=Path, help="the study folder (run folders, logs, journal)")
    r.add_argument("--config", action="append", metavar="NAME_OR_PATH",
                   help="a training config (repeat for several); default fashion_mnist_mlp")
    r.add_argument("--seeds", default="0", action=_StoreOnce, metavar="S,S,...",
                   help="seeds of a grid (default 0)")
    r.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a grid axis: every run for each value (e.g. preset=authors,paper)")
    r.add_argument("--search", action="append", default=[], metavar="KEY=KIND:...",
                   help="a search dimension: float:LO:HI, log:LO:HI, int:LO:HI or cat:A,B")
    r.add_argument("--n-trials", type=int, action=_StoreOnce, metavar="N",
                   help="trials of a search")
    r.add_argument("--extend", action="store_true",
                   help="add the grid points (seeds, configs, --vary values) these arguments "
                        "add to the existing study, or raise its --n-trials")
    r.add_argument("--gpu", metavar="ID", action=_StoreOnce,
                   help="this worker's GPU (sets CUDA_VISIBLE_DEVICES for its runs; add "
                        "--backend=cupy)")
    r.add_argument("--heartbeat", type=float, default=30.0, action=_StoreOnce, metavar="S",
                   help=f"seconds between a running trial's heartbeats (default 30, at least "
                        f"{MIN_HEARTBEAT_S})")
    r.add_argument("--grace", type=float, default=120.0, action=_StoreOnce, metavar="S",
                   help="a trial silent this long is retried by another worker (default 120, "
                        "at least twice --heartbeat); one whose worker ran on this machine "
                        "and is gone, after two missed heartbeats")
    r.add_argument("--max-retry", type=int, default=3, action=_StoreOnce, metavar="N",
                   help="retries of one trial (default 3)")
    dash = sub.add_parser("dashboard", help="the study in a browser (Optuna's dashboard)",
                          allow_abbrev=False,
                          description="Serve the study's storage with optuna-dashboard (the "
                                      "dashboard extra) on 127.0.0.1 and print its address; "
                                      "Ctrl-C stops it. Every trial shows its run (user "
                                      "attributes) and its test accuracy per epoch.")
    dash.add_argument("dir", type=Path, help="the study folder")
    dash.add_argument("--port", type=int, default=8080, action=_StoreOnce,
                      help="the local port (default 8080)")
    for q in (r, rep := sub.add_parser("report", help="the mean ± std table and the curves",
                                        allow_abbrev=False), dash):
        q.add_argument("--storage", metavar="URL", action=_StoreOnce,
                       help="an SQLAlchemy URL (e.g. postgresql://user@host/db); default the "
                            "journal file DIR/journal.log")
        q.add_argument("--name", action=_StoreOnce,
                       help="the study's name in the storage (default: DIR's name)")
    rep.add_argument("dir", type=Path, help="the study folder")
    rep.add_argument("--device", action=_StoreOnce,
                     help="where the runs ran, in words (default: this machine)")
    rep.add_argument("--out-dir", type=Path, action=_StoreOnce,
                     help="where report.md/.json and curves.png go (default DIR)")
    return p


def dashboard(study_dir: Path, storage_url: str | None, name: str, journal, port: int) -> int:
    """Serve the study's storage with optuna-dashboard on 127.0.0.1:``port`` until Ctrl-C."""
    import importlib.util
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise StudyError("dashboard needs optuna-dashboard: pip install 'snnsim[dashboard]' "
                         "(or pip install optuna-dashboard)")
    if not 0 < port < 65536:
        raise StudyError(f"--port must be a port number (1-65535), got {port}")
    storage = open_storage(study_dir, storage_url)
    create_or_join(storage, name, None, journal=journal)      # the study is there, and reads
    from optuna_dashboard import run_server
    print(f"dashboard of study {name!r} ({study_dir}) at http://127.0.0.1:{port}/dashboard/ "
          "(Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host="127.0.0.1", port=port)
    except KeyboardInterrupt:
        return 0
    return 0


def _key_values(items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` items (``--vary``, ``--search``), each key once."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise StudyError(f"{flag} {item!r}: expected KEY=VALUE")
        key = key.strip().replace("-", "_")
        if key in out:
            raise StudyError(f"{flag} {key} is given twice")
        out[key] = value
    return out


def _fixed_overrides(extra: list[str]) -> dict:
    """The training overrides ``--key=value``, each key once."""
    fixed = {}
    for tok in extra:
        key, sep, value = tok[2:].partition("=")
        if not tok.startswith("--") or not sep:
            raise StudyError(f"unexpected argument {tok!r}; training overrides are --key=value")
        key = key.replace("-", "_")
        if key in fixed:
            raise StudyError(f"--{key} is given twice ({fixed[key]} and {value})")
        fixed[key] = value
    return fixed


def this_machine() -> str:
    import platform
    return f"{platform.machine()} with {os.cpu_count()} CPUs"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread for
    the block, so that a terminated worker stops its run and requeues its trial as an
    interrupted one does (by default SIGTERM killed it and left the trial RUNNING until
    ``--grace`` passed)."""
    def handler(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:          # not the main thread (a test calling main): nothing to do
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    try:
        return _main(argv)
    except StudyError as exc:
        print(f"snnsim.study: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as exc:   # a full disk, a folder gone, a journal damaged
        # while the study ran
        from .commandline import error_line
        line = error_line(exc)
        if isinstance(exc, ValueError):
            line = _journal_fault(argv) or line
        print(f"snnsim.study: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _journal_fault(argv) -> str | None:
    """What is wrong with the study's journal, checked again after Optuna raised a
    ValueError (a journal damaged while the study ran); None when it reads well."""
    try:
        args, _ = make_parser().parse_known_args(argv)
        journal = args.dir / STORAGE_FILE
        if args.storage is None and journal.is_file():
            check_journal(journal)
    except (StudyError, OSError) as exc:
        return str(exc)
    return None


def _main(argv=None) -> int:
    args, extra = make_parser().parse_known_args(argv)
    if extra and args.command != "run":
        raise StudyError(f"unexpected arguments {' '.join(extra)}")
    study_dir = args.dir
    name = args.name or study_dir.resolve().name
    journal = None if args.storage else study_dir / STORAGE_FILE
    if args.command == "dashboard":
        return dashboard(study_dir, args.storage, name, journal, args.port)
    if args.command == "report":
        study = create_or_join(open_storage(study_dir, args.storage), name, None,
                               journal=journal)
        check_consistent(study, study_dir, journal)
        report(study, study_dir, args.device or this_machine(), args.out_dir or study_dir)
        return 0
    vary = {k: parse_list(v) for k, v in _key_values(args.vary, "--vary").items()}
    spec = make_spec(args.config or ["fashion_mnist_mlp"], parse_seeds(args.seeds), vary,
                     _fixed_overrides(extra), _key_values(args.search, "--search"),
                     args.n_trials)
    check_runs(spec)
    check_worker_options(args)
    with sigterm_as_interrupt():
        try:
            study = create_or_join(open_storage(study_dir, args.storage, create=True), name,
                                   spec, extend=args.extend, journal=journal)
            check_consistent(study, study_dir, journal)
            done = work(study, spec, study_dir, args)
        except KeyboardInterrupt as exc:
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            print(f"{what}; a trial this worker was running is queued to resume "
                  "(start a worker again to continue)", file=sys.stderr)
            return EXIT_INTERRUPTED
    print(f"no trial left: this worker ran {dict(done) or 'none'}; "
          f"{rerun('snnsim.study', f'report {study_dir}')} writes the table")
    return 0


__all__ = ["create_or_join", "fail_stale", "grid_points", "main", "make_spec", "open_storage",
           "pop_waiting", "report", "report_epochs", "run_trial", "work", "worker_gone"]

if __name__ == "__main__":
    sys.exit(main())
