"""Results tables from training run folders: mean ± std per experiment, in the
format of ``reference/results.md``; used by ``reference/make_results.py`` and by
``python3 -m snnsim.study report``.

Every snnsim number comes from the run folders (config.json, metrics.jsonl,
checkpoint.h5); the paper's numbers are the published ones (its tables).
Records, one per experiment × source × metric:

    {"experiment", "source": "paper" | "snnsim", "metric": "final_mean" | "best_mean" |
     "best_max", "value", "std", "n_runs", "epochs", "command", "config", "seeds",
     "commit", "device", "wall_s_per_run", "finished_seeds", "runs"}

Accuracies in percent. ``final`` is the test accuracy after the last epoch,
``best`` the maximum over epochs (the paper's "best"); mean ± std (sample std,
ddof = 1) over runs. A paper metric it does not report has value null.

While some runs have not finished the epochs they were started for, the figures (and
``wall_s_per_run``) are over the finished runs only, named in ``finished_seeds``; with none
finished they are null. A mean over runs stopped at different epochs estimates nothing;
``runs`` lists every run with its own epochs.
"""
from __future__ import annotations

import statistics
from pathlib import Path

# Published results (the paper's tables): (mean, std, best); None: not reported.
PAPER = {
    "fashion_mnist_mlp": (89.75, 0.03, 89.80),
    "fashion_mnist_cnn": (92.69, 0.09, 92.83),
    "mnist_cnn": (99.50, 0.02, 99.53),
    "nmnist_cnn": (None, None, 99.23),
    "cifar10_cnn1": (88.98, 0.27, 89.22),
    "cifar10_cnn2": (None, None, 91.41),
}
PAPER_RUNS = 5
PAPER_EPOCHS = {"fashion_mnist_mlp": 100, "fashion_mnist_cnn": 100, "mnist_cnn": 200,
                "nmnist_cnn": 100, "cifar10_cnn1": 150, "cifar10_cnn2": 150}


def code_label(attrs) -> str:
    """The code a run used, for the tables: its commit (``<sha>`` or ``<sha>-dirty``);
    ``none (installed package snnsim==X)`` when the package was not in a git checkout
    (``git_commit`` empty, or null in ``run.json``; ``source`` says where the code came
    from); ``unknown`` when the checkpoint or start record says neither."""
    commit, source = str(attrs.get("git_commit") or ""), str(attrs.get("source") or "")
    if commit:
        return commit
    return f"none ({source})" if source else "unknown"


def read_run(folder: Path) -> dict:
    """A run folder's config, metrics and code label (the checkpoint's root attributes),
    each file read with its checks (:mod:`snnsim.training.runfolder`,
    :func:`snnsim.training.checkpoint.read_root_attrs`,
    :func:`snnsim.training.runinfo.read_run_info`): a damaged file is a CheckpointError
    naming it. ``commit`` is the code of the latest epoch; ``commits`` every code that
    trained the run (each start's, from ``run.json``; a run resumed by newer code has
    several)."""
    from ..training.checkpoint import CheckpointError, read_root_attrs
    from ..training.runfolder import read_json_file, read_metrics_file
    from ..training.runinfo import RunInfoError, read_run_info, starts
    cfg = read_json_file(folder / "config.json", "config")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{folder / 'config.json'}: not a JSON object")
    rows = read_metrics_file(folder / "metrics.jsonl", required=("epoch", "test_acc"))
    if not rows:
        raise SystemExit(f"{folder}: metrics.jsonl holds no epoch")
    commit = code_label(read_root_attrs(folder / "checkpoint.h5"))
    try:
        info = read_run_info(folder)
    except RunInfoError as exc:
        raise CheckpointError(str(exc)) from None
    commits = sorted({commit, *(code_label(start) for start in starts(info))} if info else {commit})
    return {"folder": str(folder), "cfg": cfg, "rows": rows, "commit": commit, "commits": commits,
            "experiment": experiment_name(cfg), **figures(rows),
            "epochs_planned": int(cfg.get("epochs", rows[-1]["epoch"]))}


def figures(rows: list[dict]) -> dict:
    """A run's figures from its metric rows: ``final`` and ``best`` test accuracy (%), the
    ``epochs`` done and ``wall_s`` (training and evaluation seconds, summed)."""
    return {"final": 100 * rows[-1]["test_acc"], "best": 100 * max(r["test_acc"] for r in rows),
            "epochs": rows[-1]["epoch"],
            "wall_s": sum(r.get("seconds", 0.0) + r.get("eval_seconds", 0.0) for r in rows)}


def best_epoch(rows: list[dict]) -> int:
    """The epoch of the best test accuracy among metric rows (the first, on a tie)."""
    return max(rows, key=lambda row: row["test_acc"])["epoch"]


# Config fields whose non-default value makes a run a variant of its experiment.
VARIANT_DEFAULTS = {"preset": "authors", "reading": None, "reset": None, "desired_train": None,
                    "target_filter_passes": None, "sensitivity_bound": 8.0, "warmup": True,
                    "backward": "tsslbp"}


def experiment_name(cfg: dict) -> str:
    """The run's experiment (its config name), with ``+key=value`` for every field
    of VARIANT_DEFAULTS it changes, e.g. ``fashion_mnist_mlp+preset=paper``."""
    base = cfg.get("name") or Path(cfg["network"]).stem
    changes = [f"+{k}={cfg[k]}" for k, v in VARIANT_DEFAULTS.items() if k in cfg and cfg[k] != v]
    return base + "".join(changes)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def records_for(experiment: str, runs: list[dict], device: str,
                command: str | None = None) -> list[dict]:
    """The snnsim records of one experiment's runs; ``command`` (default: rebuilt from
    the experiment's name) is the command line shown for them."""
    cfg = runs[0]["cfg"]
    seeds = sorted(r["cfg"]["seed"] for r in runs)
    epochs = sorted({r["epochs"] for r in runs})
    base, *changes = experiment.split("+")
    planned = max(r.get("epochs_planned", r["epochs"]) for r in runs)
    command = command or (f"python3 -m snnsim.train --config {base} --seed SEED --epochs {planned}"
               + "".join(f" --{c}" for c in changes)
               + ("" if cfg["backend"] == "numpy" else f" --backend {cfg['backend']}"))
    per_run = [{"seed": r["cfg"]["seed"], "final": round(r["final"], 3), "best": round(r["best"], 3),
                "best_epoch": best_epoch(r["rows"]),
                "epochs": r["epochs"], "epochs_planned": r.get("epochs_planned", r["epochs"]),
                "wall_s": round(r["wall_s"], 1), "commit": r["commit"]}
               for r in sorted(runs, key=lambda r: r["cfg"]["seed"])]
    done = [r for r in runs if finished(r)]
    common = {"experiment": experiment, "source": "snnsim", "n_runs": len(runs),
              "epochs": epochs[-1] if len(epochs) == 1 else epochs, "command": command,
              "config": f"configs/{base}.yaml", "seeds": seeds,
              "commit": sorted({c for r in runs for c in r.get("commits", [r["commit"]])}),
              "device": device,
              "wall_s_per_run": round(statistics.mean(r["wall_s"] for r in done), 1) if done else None,
              "finished_seeds": sorted(r["cfg"]["seed"] for r in done),
              "runs": per_run}
    if not done:
        return [{**common, "metric": metric, "value": None, "std": None}
                for metric in ("final_mean", "best_mean", "best_max")]
    finals, bests = [r["final"] for r in done], [r["best"] for r in done]
    out = []
    for metric, (value, std) in (("final_mean", mean_std(finals)), ("best_mean", mean_std(bests)),
                                 ("best_max", (max(bests), None))):
        out.append({**common, "metric": metric, "value": round(value, 3),
                    "std": None if std is None else round(std, 3)})
    return out


def finished(run: dict) -> bool:
    """Whether a run (of :func:`read_run`, or a record's ``runs`` row) has done the epochs
    it was started for."""
    return run["epochs"] >= run.get("epochs_planned", run["epochs"])


def paper_records(experiment: str) -> list[dict]:
    mean, std, best = PAPER[experiment]
    common = {"experiment": experiment, "source": "paper", "n_runs": PAPER_RUNS,
              "epochs": PAPER_EPOCHS[experiment], "command": None,
              "config": f"configs/{experiment}.yaml", "seeds": None, "commit": None,
              "device": None, "wall_s_per_run": None}
    return [{**common, "metric": "final_mean", "value": None, "std": None},
            {**common, "metric": "best_mean", "value": mean, "std": std},
            {**common, "metric": "best_max", "value": best, "std": None}]


def markdown(records: list[dict], runs_by_exp: dict | None = None, device: str | None = None,
             made_by: str = "python3 reference/make_results.py",
             title: str = "Reproduction results") -> str:
    """The results table: per experiment with snnsim records, paper and snnsim rows
    (mean ± std), then one row per run (from the records' ``runs``; records of older
    files have none, and then the runs are not listed). An experiment the paper does
    not have gets the snnsim row only. ``runs_by_exp`` and ``device`` are accepted for
    older callers; the records carry both."""
    lines = [f"# {title}", "",
             f"Written by `{made_by}` from the run folders; do not edit by hand.",
             "Test accuracy in %. *final*: after the last epoch; *best*: maximum over epochs (the",
             "paper's \"best\"); mean ± sample std over runs.", ""]
    experiments = list(dict.fromkeys(r["experiment"] for r in records if r["source"] == "snnsim"))
    for exp in experiments:
        recs = {(r["source"], r["metric"]): r for r in records if r["experiment"] == exp}
        base = exp.removesuffix(EARLIER).split("+")[0]
        recs.update({("paper", r["metric"]): r for r in records
                     if r["experiment"] == base and r["source"] == "paper"})
        s = recs[("snnsim", "final_mean")]
        going = [r for r in s.get("runs") or [] if not finished(r)]
        wall = ("no run finished yet" if s["wall_s_per_run"] is None
                else f"{s['wall_s_per_run']:.0f} s per {'finished ' if going else ''}run")
        lines += [f"## {exp}", "",
                  *([in_progress(s, going), ""] if going else []),
                  f"snnsim: {s['n_runs']} run{'s' if s['n_runs'] > 1 else ''} (seeds {s['seeds']}), "
                  f"{s['epochs']} epochs, "
                  f"`{s['command']}`, on {s['device'] or device}; {wall}; "
                  f"commit {', '.join(s['commit'])}.", "",
                  "| source | final (mean ± std) | best (mean ± std) | best (max) |", "|---|---|---|---|"]
        for src in ("paper", "snnsim"):
            if (src, "final_mean") not in recs:
                continue
            cells = []
            for metric in ("final_mean", "best_mean", "best_max"):
                r = recs[(src, metric)]
                if r["value"] is None:
                    cells.append("not reported" if src == "paper" else "no run finished")
                elif r["std"] is None:
                    cells.append(f"{r['value']:.2f}")
                else:
                    cells.append(f"{r['value']:.2f} ± {r['std']:.2f}")
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        per_run = s.get("runs")
        if per_run is None and runs_by_exp and exp in runs_by_exp:
            per_run = records_for(exp, runs_by_exp[exp], "")[0]["runs"]
        if per_run:
            lines += ["", "| seed | final | best | best epoch | epochs | wall s |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {r['seed']} | {r['final']:.2f} | {r['best']:.2f} | {r['best_epoch']} "
                      f"| {epochs_cell(r)} | {r['wall_s']:.0f} |" for r in per_run]
        else:
            lines += ["", "(The per-run rows of this table were not kept.)"]
        lines.append("")
    return "\n".join(lines)


def in_progress(record: dict, going: list[dict]) -> str:
    """The line that says which runs of an experiment are unfinished and what the figures
    below are of (the finished runs only; an older record without ``finished_seeds`` was
    made over every run)."""
    one = len(going) == 1
    head = (f"**In progress:** {len(going)} of {record['n_runs']} runs "
            f"{'has' if one else 'have'} not finished {'its' if one else 'their'} "
            f"{going[0].get('epochs_planned', going[0]['epochs'])} epochs (epochs done: "
            f"{', '.join(str(r['epochs']) for r in going)}); ")
    done = record.get("finished_seeds")
    if done is None:
        return head + "the figures below are of the epochs done so far."
    if not done:
        return head + ("no run has finished, so there are no mean figures yet: each run is "
                       "listed below with the epochs it has done.")
    rest = ("the unfinished one is listed below and not averaged." if one else
            "the unfinished ones, stopped at different epochs, are listed below and not averaged.")
    return head + (f"the figures below are of the {len(done)} finished run{'s' * (len(done) > 1)} "
                   f"(seed{'s' * (len(done) > 1)} {', '.join(map(str, done))}); " + rest)


def epochs_cell(run: dict) -> str:
    """A run's epochs for the per-run table: ``100``, or ``12 of 100 (unfinished)`` for a
    run that has not finished the epochs it was started for (training on, or stopped to be
    resumed: a table made from files cannot tell, and it outlives either)."""
    return (str(run["epochs"]) if finished(run)
            else f"{run['epochs']} of {run['epochs_planned']} (unfinished)")


#: Appended to the experiment of kept records that newer runs of other commits replace.
EARLIER = " (earlier commits)"


def merge_records(kept: list[dict], new: list[dict]) -> list[dict]:
    """``new`` records, after those of ``kept`` for experiments that ``new`` does not have
    (a paper record is kept once per experiment). A kept snnsim record of an experiment
    that ``new`` has again, made by none of the new runs' commits, stays as
    ``<experiment> (earlier commits)``: newer runs do not erase older figures. One that
    shares a commit with them (the same runs, since resumed by newer code: a run's
    record names every commit that trained it) is replaced, also when it was kept
    as ``(earlier commits)`` before."""
    new_keys = {(r["experiment"], r["source"]) for r in new}
    new_commits: dict[str, set] = {}
    for r in new:
        if r["source"] == "snnsim":
            new_commits.setdefault(r["experiment"], set()).update(r.get("commit") or [])
    out = []
    for r in kept:
        experiment = r["experiment"].removesuffix(EARLIER)
        if (experiment, r["source"]) not in new_keys:
            out.append(r)
        elif r["source"] == "snnsim" and not set(r.get("commit") or []) & new_commits[experiment]:
            out.append({**r, "experiment": experiment + EARLIER})
    return out + new


__all__ = ["EARLIER", "PAPER", "PAPER_EPOCHS", "PAPER_RUNS", "VARIANT_DEFAULTS", "best_epoch",
           "code_label", "epochs_cell", "experiment_name", "figures", "finished", "in_progress",
           "markdown", "mean_std", "merge_records", "paper_records", "read_run", "records_for"]
