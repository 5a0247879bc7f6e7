"""Write reference/results.json and reference/results.md from training run folders.

    python reference/make_results.py runs/repro/fmnist_mlp_s* --device "CPU ..."

Every snnsim number comes from the run folders (config.json, metrics.jsonl,
checkpoint.h5); the paper's numbers are the published ones (docs/authors_code.md). Records, one per experiment × source × metric:

    {"experiment", "source": "paper" | "snnsim", "metric": "final_mean" | "best_mean" |
     "best_max", "value", "std", "n_runs", "epochs", "command", "config", "seeds",
     "commit", "device", "wall_s_per_run"}

Accuracies in percent. ``final`` is the test accuracy after the last epoch,
``best`` the maximum over epochs (the paper's "best"); mean ± std (sample std,
ddof = 1) over runs. A paper metric it does not report has value null.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import h5py

HERE = Path(__file__).resolve().parent

# Published results (paper tables; docs/authors_code.md): (mean, std, best); None: not reported.
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


def read_run(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{folder}: metrics.jsonl holds no epoch")
    with h5py.File(folder / "checkpoint.h5", "r") as f:
        commit = str(f.attrs.get("git_commit", "unknown"))
    return {"folder": str(folder), "cfg": cfg, "rows": rows, "commit": commit,
            "experiment": experiment_name(cfg),
            "final": 100 * rows[-1]["test_acc"], "best": 100 * max(r["test_acc"] for r in rows),
            "epochs": rows[-1]["epoch"],
            "wall_s": sum(r["seconds"] + r.get("eval_seconds", 0.0) for r in rows)}


# Config fields whose non-default value makes a run a variant of its experiment.
VARIANT_DEFAULTS = {"preset": "authors", "reading": None, "reset": None, "desired_train": None,
                    "target_filter_passes": None, "sensitivity_bound": 8.0, "warmup": True}


def experiment_name(cfg: dict) -> str:
    """The run's experiment (its config name), with ``+key=value`` for every field
    of VARIANT_DEFAULTS it changes, e.g. ``fashion_mnist_mlp+preset=paper``."""
    base = cfg.get("name") or Path(cfg["network"]).stem
    changes = [f"+{k}={cfg[k]}" for k, v in VARIANT_DEFAULTS.items() if k in cfg and cfg[k] != v]
    return base + "".join(changes)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def records_for(experiment: str, runs: list[dict], device: str) -> list[dict]:
    cfg = runs[0]["cfg"]
    seeds = sorted(r["cfg"]["seed"] for r in runs)
    epochs = sorted({r["epochs"] for r in runs})
    base, *changes = experiment.split("+")
    command = (f"python3 -m snnsim.train --config {base} --seed SEED --epochs {epochs[-1]}"
               + "".join(f" --{c}" for c in changes)
               + ("" if cfg["backend"] == "numpy" else f" --backend {cfg['backend']}"))
    common = {"experiment": experiment, "source": "snnsim", "n_runs": len(runs),
              "epochs": epochs[-1] if len(epochs) == 1 else epochs, "command": command,
              "config": f"configs/{base}.yaml", "seeds": seeds,
              "commit": sorted({r["commit"] for r in runs}), "device": device,
              "wall_s_per_run": round(statistics.mean(r["wall_s"] for r in runs), 1)}
    finals, bests = [r["final"] for r in runs], [r["best"] for r in runs]
    out = []
    for metric, (value, std) in (("final_mean", mean_std(finals)), ("best_mean", mean_std(bests)),
                                 ("best_max", (max(bests), None))):
        out.append({**common, "metric": metric, "value": round(value, 3),
                    "std": None if std is None else round(std, 3)})
    return out


def paper_records(experiment: str) -> list[dict]:
    mean, std, best = PAPER[experiment]
    common = {"experiment": experiment, "source": "paper", "n_runs": PAPER_RUNS,
              "epochs": PAPER_EPOCHS[experiment], "command": None,
              "config": f"configs/{experiment}.yaml", "seeds": None, "commit": None,
              "device": None, "wall_s_per_run": None}
    return [{**common, "metric": "final_mean", "value": None, "std": None},
            {**common, "metric": "best_mean", "value": mean, "std": std},
            {**common, "metric": "best_max", "value": best, "std": None}]


def markdown(records: list[dict], runs_by_exp: dict, device: str) -> str:
    lines = ["# Reproduction results", "",
             "Written by `python reference/make_results.py` from the run folders; do not edit by hand.",
             "Test accuracy in %. *final*: after the last epoch; *best*: maximum over epochs (the",
             "paper's \"best\"); mean ± sample std over runs.", ""]
    for exp, runs in runs_by_exp.items():
        recs = {(r["source"], r["metric"]): r for r in records if r["experiment"] == exp}
        recs.update({("paper", r["metric"]): r for r in records
                     if r["experiment"] == exp.split("+")[0] and r["source"] == "paper"})
        s = recs[("snnsim", "final_mean")]
        lines += [f"## {exp}", "",
                  f"snnsim: {s['n_runs']} run{'s' if s['n_runs'] > 1 else ''} (seeds {s['seeds']}), {s['epochs']} epochs, "
                  f"`{s['command']}`, on {device}; {s['wall_s_per_run']:.0f} s per run; "
                  f"commit {', '.join(s['commit'])}.", "",
                  "| source | final (mean ± std) | best (mean ± std) | best (max) |", "|---|---|---|---|"]
        for src in ("paper", "snnsim"):
            cells = []
            for metric in ("final_mean", "best_mean", "best_max"):
                r = recs[(src, metric)]
                if r["value"] is None:
                    cells.append("not reported")
                elif r["std"] is None:
                    cells.append(f"{r['value']:.2f}")
                else:
                    cells.append(f"{r['value']:.2f} ± {r['std']:.2f}")
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines += ["", "| seed | final | best | best epoch | wall s |", "|---|---|---|---|---|"]
        for r in sorted(runs, key=lambda r: r["cfg"]["seed"]):
            best_epoch = max(r["rows"], key=lambda row: row["test_acc"])["epoch"]
            lines.append(f"| {r['cfg']['seed']} | {r['final']:.2f} | {r['best']:.2f} | {best_epoch} | {r['wall_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (config.json, metrics.jsonl, checkpoint.h5)")
    p.add_argument("--device", required=True, help="where the runs ran, in words")
    p.add_argument("--out-dir", default=str(HERE), help="where results.json/.md go (default reference/)")
    args = p.parse_args(argv)
    runs_by_exp: dict[str, list] = defaultdict(list)
    for folder in args.runs:
        run = read_run(Path(folder))
        runs_by_exp[run["experiment"]].append(run)
    records = []
    for exp, runs in runs_by_exp.items():
        base = exp.split("+")[0]
        if base not in PAPER:
            raise SystemExit(f"unknown experiment {base!r} (run config name); known: {sorted(PAPER)}")
        if not any(r["experiment"] == base and r["source"] == "paper" for r in records):
            records += paper_records(base)
        records += records_for(exp, runs, args.device)
    out = Path(args.out_dir)
    (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / "results.md").write_text(markdown(records, runs_by_exp, args.device))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
