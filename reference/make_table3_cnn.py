"""The Fashion-MNIST CNN row of the paper's Table 3, from its studies' run folders, as they land.

    python3 reference/make_table3_cnn.py [--tsslbp DIR] [--surrogate DIR] [--device "..."]

The studies are those of ``scripts/table3_cnn.sh`` (defaults: ``~/studies/table3-cnn`` and
``~/studies/table3-cnn-surrogate``; a missing one is left out). Every run folder of a study
that has finished at least one epoch counts, finished or not: partial results are results,
and a run still going is listed with its epoch. Writes:

- ``reference/results.json`` and ``results.md`` (``reference/make_results.py``): the CNN's
  rows, best-epoch and final-epoch mean ± std and max, the runs and their epochs;
- ``reference/table3_cnn/curves.png``: test accuracy per epoch of every run (mean ± std per
  gradient where two or more runs), the paper's 92.69 ± 0.09 % as a band;
- ``reference/table3_cnn/sparsity_<backward>/sparsity.png`` and ``sparsity.md``: the firing
  sparsity (as the paper's Fig. 7) of each gradient's best network (``best.h5`` of the run
  with the highest best-epoch accuracy) on the first 100 test samples;
- ``reference/table3_cnn/summary.md``: the comparison with the paper, in words computed from
  the numbers;
- ``reference/table3_cnn/runs.json``: every run these tables count, read back by the next call.

The study folders live on one machine and go with it; ``runs.json`` is what outlives them.
Each run there (``{"tsslbp": [...], "surrogate": [...]}``, one object per run: ``run``,
``seed``, ``epochs``, ``epochs_planned``, ``best``, ``final`` and ``best_epoch`` (test
accuracy in %), ``wall_s``, ``commit``, ``commits``, ``cfg`` (the config fields the tables
use, no paths), ``rows`` (its metrics.jsonl rows: epoch, losses, accuracies, seconds) and
``history``: ``"full"``, or ``"best and final epochs only"`` where only those two rows were
kept) counts again on the next call: a run of the study folder replaces the kept run of its
seed, except that a kept finished run is not replaced by an unfinished one; a kept finished
run that the study folder lacks stays; a kept unfinished run that it lacks is left out, with
a line saying so (without its checkpoint it cannot go on, and a new run of that seed starts
from the beginning).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:                       # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from reference import make_results  # noqa: E402
from reference.make_backward100 import SPARSITY_SAMPLES, sparsity_rows  # noqa: E402
from snnsim.analysis.plots import plot_study_curves, save_figure  # noqa: E402
from snnsim.analysis.results import (  # noqa: E402
    PAPER,
    VARIANT_DEFAULTS,
    best_epoch,
    experiment_name,
    figures,
    finished,
    read_run,
)

EXPERIMENT = "fashion_mnist_cnn"
STUDIES = {"tsslbp": "table3-cnn", "surrogate": "table3-cnn-surrogate"}
#: What runs.json keeps of a run's config (the fields the tables read; no paths) and rows.
CFG_KEYS = ("name", "seed", "backend", "dtype", "epochs", "batch_size", "lr", *VARIANT_DEFAULTS)
ROW_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "seconds", "eval_seconds")
FULL = "full"
ENTRY_KEYS = ("run", "seed", "epochs", "epochs_planned", "best", "final", "best_epoch", "wall_s",
              "commit", "commits", "history", "cfg", "rows")


def run_folders(study_dir: Path) -> list[Path]:
    """The study's run folders with at least one finished epoch, in name order."""
    out = []
    for folder in sorted((study_dir / "trials").glob("*")):
        metrics = folder / "metrics.jsonl"
        if (folder / "checkpoint.h5").is_file() and metrics.is_file() and metrics.read_text().strip():
            out.append(folder)
    return out


def kept_entry(run: dict) -> dict:
    """runs.json's object for a run (of :func:`read_run` or :func:`run_from_entry`)."""
    return {"run": run["name"], "seed": run["cfg"]["seed"], "epochs": run["epochs"],
            "epochs_planned": run["epochs_planned"], "best": round(run["best"], 3),
            "final": round(run["final"], 3), "best_epoch": best_epoch(run["rows"]),
            "wall_s": round(run["wall_s"], 1), "commit": run["commit"], "commits": run["commits"],
            "history": run.get("history", FULL),
            "cfg": {k: run["cfg"][k] for k in CFG_KEYS if k in run["cfg"]},
            "rows": [{k: row[k] for k in ROW_KEYS if k in row} for row in run["rows"]]}


def run_from_entry(entry: dict, where: str) -> dict:
    """A run as :func:`read_run` returns it, from its runs.json object (``where`` names the
    file, for errors). With its full history, the figures are computed from its rows."""
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise SystemExit(f"{where}: run {entry.get('run', '?')!r} lacks {', '.join(missing)}")
    run = {"folder": None, "name": entry["run"], "cfg": entry["cfg"], "rows": entry["rows"],
           "commit": entry["commit"], "commits": entry["commits"],
           "experiment": experiment_name(entry["cfg"]), "final": entry["final"],
           "best": entry["best"], "epochs": entry["epochs"],
           "epochs_planned": entry["epochs_planned"], "wall_s": entry["wall_s"],
           "history": entry["history"]}
    if entry["history"] == FULL:
        run.update(figures(entry["rows"]))
    return run


def read_kept(path: Path) -> dict[str, list[dict]]:
    """The runs of runs.json, per gradient ({} when there is no such file)."""
    if not path.is_file():
        return {}
    try:
        kept = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not JSON ({exc})") from None
    if not isinstance(kept, dict) or not all(isinstance(v, list) for v in kept.values()):
        raise SystemExit(f"{path}: not an object of lists of runs")
    return {b: [run_from_entry(e, str(path)) for e in entries] for b, entries in kept.items()}


def merge_runs(kept: list[dict], live: list[dict]) -> tuple[list[dict], list[str]]:
    """One gradient's runs: those of the study folder (``live``) and those runs.json kept
    (see the module's docstring for which wins), in seed order; and a line for each kept run
    left out or preferred."""
    live_by_seed = {r["cfg"]["seed"]: r for r in live}
    out, notes, shadowed = [], [], set()
    for k in kept:
        seed = k["cfg"]["seed"]
        here = live_by_seed.get(seed)
        if here is None:
            if finished(k):
                out.append(k)
            else:
                notes.append(f"{k['name']} ({k['epochs']} of {k['epochs_planned']} epochs) is in "
                             "runs.json but not in the study folder: left out (without its "
                             "checkpoint it cannot go on; a new run of seed "
                             f"{seed} starts from the beginning)")
        elif finished(k) and not finished(here):
            out.append(k)
            shadowed.add(seed)
            notes.append(f"{k['name']} finished {k['epochs']} epochs (runs.json); the study "
                         f"folder's run of seed {seed} ({here['epochs']} epochs) is not counted")
    out += [r for r in live if r["cfg"]["seed"] not in shadowed]
    return sorted(out, key=lambda r: r["cfg"]["seed"]), notes


def best_up_to(run: dict, k: int) -> float | None:
    """The best test accuracy (%) of epochs 1..k; None where the run's kept history (best
    and final epochs only) does not say (k before its best epoch)."""
    if run.get("history", FULL) != FULL and k < best_epoch(run["rows"]):
        return None
    return 100.0 * max(row["test_acc"] for row in run["rows"] if row["epoch"] <= k)


def sparsity_of(backward: str, runs: list[dict], out: Path, earlier: list[str],
                data_dir: str | None) -> list[str]:
    """sparsity.md's rows of one gradient: of its best run (highest best-epoch accuracy) from
    its ``best.h5`` when the study folder has it; else, for a run runs.json kept, the rows an
    earlier call wrote of it (``earlier``: the old sparsity.md's lines; its figure in
    ``sparsity_<backward>/`` stays too); else the next best run that has either, with a line
    saying so; a row saying that none has when no run has."""
    ranked = sorted(runs, key=lambda r: r["best"], reverse=True)
    for run in ranked:
        if run["folder"] is not None and (Path(run["folder"]) / "best.h5").is_file():
            rows = sparsity_rows(backward, Path(run["folder"]), run["best"], out, data_dir)
        else:
            rows = [line for line in earlier if line.startswith(f"| `{backward}` | {run['name']} (")]
            if rows:
                print(f"make_table3_cnn.py: {backward}: {run['name']} is kept in runs.json only; "
                      "its sparsity rows and figure are left as they were")
        if rows:
            if run is not ranked[0]:
                print(f"make_table3_cnn.py: {backward}: the best run {ranked[0]['name']} has no "
                      f"best.h5 here and no rows in sparsity.md; the rows are of {run['name']}")
            return rows
    return [f"| `{backward}` | none: no best.h5 of its runs on this machine | | | | |"]


def summary(runs_by_backward: dict[str, list[dict]]) -> str:
    """The comparison with the paper's row, in words: how many runs at which epochs, the mean
    best-epoch accuracy against 92.69 ± 0.09 %, and what the spread means for that many runs."""
    mean_p, std_p, best_p = PAPER[EXPERIMENT]
    lines = ["# Table 3, Fashion-MNIST CNN: summary", "",
             "Written by `python3 reference/make_table3_cnn.py`; do not edit by hand. Test accuracy "
             f"in %. The paper: {mean_p:.2f} ± {std_p:.2f} (best {best_p:.2f}), 5 runs of 100 epochs.", ""]
    for backward, runs in runs_by_backward.items():
        done = [r for r in runs if finished(r)]
        epochs = ", ".join(f"seed {r['cfg']['seed']}: {r['epochs']}/{r['epochs_planned']}" for r in runs)
        line = f"- `{backward}`: {len(runs)} run(s), {len(done)} finished ({epochs})."
        if done:
            line += " " + against_paper(done)
        if len(done) < len(runs):
            unfinished = [r for r in runs if r not in done]
            bests = ", ".join(f"seed {r['cfg']['seed']} {r['best']:.2f}" for r in unfinished)
            line += (f" Best so far of the runs not finished ({bests}): a lower bound of the best "
                     "they will reach; taken at different epochs, these are not averaged.")
            line += common_epoch(runs)
        lines.append(line)
    if "tsslbp" in runs_by_backward and "surrogate" in runs_by_backward:
        lines += ["", gradient_comparison(runs_by_backward["tsslbp"], runs_by_backward["surrogate"])]
    return "\n".join(lines) + "\n"


def against_paper(done: list[dict]) -> str:
    """The finished runs' best-epoch accuracy against the paper's mean: their mean and max,
    and with two or more runs the sample std and whether the paper's mean lies inside the 95 %
    confidence interval of theirs (Student's t). Only finished runs: a mean over runs stopped
    at different epochs estimates nothing."""
    import statistics
    mean_p = PAPER[EXPERIMENT][0]
    bests = [r["best"] for r in done]
    mean, n = statistics.mean(bests), len(bests)
    text = (f"Finished run{'s' if n > 1 else ''}: best-epoch accuracy {mean:.2f} % "
            f"{'on average ' if n > 1 else ''}(max {max(bests):.2f}), {mean - mean_p:+.2f} points "
            "from the paper's mean.")
    if n < 2:
        return text + " One finished run: no spread over seeds yet, so no statement of significance."
    from scipy.stats import t as student_t
    sd = statistics.stdev(bests)
    half = student_t.ppf(0.975, n - 1) * sd / n ** 0.5
    inside = abs(mean - mean_p) <= half
    return text + (f" Sample std over seeds {sd:.2f}; with {n} runs the 95 % confidence interval "
                   f"of the mean is ± {half:.2f} points (Student's t, {n - 1} degree"
                   f"{'s' if n > 2 else ''} of freedom), and the paper's mean lies "
                   f"{'inside' if inside else 'outside'} it.")


def gradient_comparison(tsslbp: list[dict], surrogate: list[dict]) -> str:
    """Surrogate-gradient BPTT against TSSL-BP, seed by seed (same seed: same initial weights
    and sample order): each pair compared at the latest epoch both runs have reached, by the
    best test accuracy up to it; the mean difference, and its sample std over pairs."""
    by_seed = {r["cfg"]["seed"]: r for r in tsslbp}
    pairs = [(by_seed[r["cfg"]["seed"]], r) for r in surrogate if r["cfg"]["seed"] in by_seed]
    if not pairs:
        return ("Surrogate gradient against TSSL-BP: no seed has runs of both yet, so no "
                "comparison.")

    parts, diffs = [], []
    for t, s in sorted(pairs, key=lambda p: p[0]["cfg"]["seed"]):
        k = min(t["epochs"], s["epochs"])
        bt, bs = best_up_to(t, k), best_up_to(s, k)
        if bt is None or bs is None:
            parts.append(f"seed {t['cfg']['seed']} at epoch {k}: not known (the per-epoch history "
                         "of a run of it was not kept)")
            continue
        diffs.append(bs - bt)
        parts.append(f"seed {t['cfg']['seed']} at epoch {k}: {bs:.2f} against {bt:.2f} ({bs - bt:+.2f})")
    if not diffs:
        return ("Surrogate gradient against TSSL-BP, seed by seed: " + "; ".join(parts) + ".")
    import statistics
    mean = statistics.mean(diffs)
    spread = (f", sample std {statistics.stdev(diffs):.2f} over {len(diffs)} seeds"
              if len(diffs) >= 2 else "; one seed, so no spread yet")
    return ("Surrogate gradient against TSSL-BP, seed by seed, by the best test accuracy up to "
            "the latest epoch both runs of a seed have reached (surrogate against TSSL-BP): "
            + "; ".join(parts) + f". Mean difference {mean:+.2f} points{spread}.")


def common_epoch(runs: list[dict]) -> str:
    """Runs at different epochs compared where they can be: the latest epoch k that two or
    more runs have reached, and those runs' best test accuracy up to epoch k (mean ± sample
    std), or "" when no two runs share an epoch beyond the first."""
    k = sorted((r["epochs"] for r in runs), reverse=True)[1] if len(runs) >= 2 else 0
    if k < 2:
        return ""
    at_k = [r for r in runs if r["epochs"] >= k and best_up_to(r, k) is not None]
    if len(at_k) < 2:
        return ""
    import statistics
    bests = [best_up_to(r, k) for r in at_k]
    seeds = ", ".join(str(r["cfg"]["seed"]) for r in at_k)
    return (f" Compared at epoch {k}, the latest that {len(at_k)} runs (seeds {seeds}) have "
            f"reached: best up to it {statistics.mean(bests):.2f} ± {statistics.stdev(bests):.2f}.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    home = Path.home() / "studies"
    p.add_argument("--tsslbp", type=Path, default=home / STUDIES["tsslbp"],
                   help="the TSSL-BP study's folder (default ~/studies/table3-cnn)")
    p.add_argument("--surrogate", type=Path, default=home / STUDIES["surrogate"],
                   help="the surrogate-gradient study's folder (default ~/studies/table3-cnn-surrogate)")
    p.add_argument("--device", default="CPU: 2-core x86_64 (this project's dev machine), NumPy float32, "
                   "OPENBLAS_NUM_THREADS=1, two runs at a time (one study, two workers)",
                   help="where the runs ran, in words")
    p.add_argument("--out-dir", type=Path, default=HERE, help="instead of reference/: results.* there, "
                   "the figures and tables in OUT_DIR/table3_cnn")
    p.add_argument("--data-dir", help="directory holding Fashion-MNIST (default: the usual places)")
    args = p.parse_args(argv)
    out = args.out_dir / "table3_cnn"
    kept = read_kept(out / "runs.json")
    runs, notes = {}, []
    for backward, study in (("tsslbp", args.tsslbp), ("surrogate", args.surrogate)):
        live = []
        for folder in run_folders(study):
            run = read_run(folder)
            run["name"], run["history"] = folder.name, FULL
            live.append(run)
        merged, why = merge_runs(kept.get(backward, []), live)
        notes += [f"{backward}: {line}" for line in why]
        if merged:
            runs[backward] = merged
    for line in notes:
        print(f"make_table3_cnn.py: {line}")
    if not runs:
        raise SystemExit(f"make_table3_cnn.py: no run of {args.tsslbp} or {args.surrogate} has "
                         f"finished an epoch yet, and {out / 'runs.json'} keeps none")
    out.mkdir(parents=True, exist_ok=True)
    make_results.write([r for rs in runs.values() for r in rs], args.device, args.out_dir)
    mean_p, std_p, _ = PAPER[EXPERIMENT]
    fig = plot_study_curves({b: [r["rows"] for r in rs if r["history"] == FULL]
                             for b, rs in runs.items()},
                            title="Fashion-MNIST CNN: test accuracy of every run")
    ax = fig.axes[0]
    ax.axhspan(mean_p - std_p, mean_p + std_p, color="k", alpha=0.12, lw=0,
               label=f"paper: {mean_p:.2f} ± {std_p:.2f}")
    drawn = {}                                 # a gradient's colour: its run's or mean's line
    for line in ax.lines:
        drawn.setdefault(line.get_label().split(":")[0], line.get_color())
    for i, (backward, rs) in enumerate(runs.items()):   # kept with their best and final epochs only
        sparse = [r for r in rs if r["history"] != FULL]
        for marker, r in zip("xP^sDv*", sparse):        # the gradient's colour, a marker per seed
            ax.plot([row["epoch"] for row in r["rows"]], [100 * row["test_acc"] for row in r["rows"]],
                    marker, ls="none", ms=7, mew=1.5, color=drawn.get(backward, f"C{i}"),
                    label=f"{backward} seed {r['cfg']['seed']}: best and final epochs (its other "
                    "epochs were not kept)")
    ax.legend(fontsize=8)
    save_figure(fig, out, "curves", formats=("png",))
    old_sparsity = (out / "sparsity.md").read_text().splitlines() if (out / "sparsity.md").is_file() else []
    lines = ["# Firing sparsity of the CNN's best networks", "",
             f"Written by `python3 reference/make_table3_cnn.py`; do not edit by hand. Per gradient, "
             f"the run with the highest best-epoch test accuracy, its `best.h5`, on the first "
             f"{SPARSITY_SAMPLES} test samples: % of neurons silent (k = 0 spikes in T steps), % "
             f"firing at every step (k = T), and the mean number of spikes per neuron and sample. "
             f"Figures: `sparsity_<backward>/sparsity.png`.", "",
             "| backward | run (best test acc) | layer | silent % | every step % | spikes per neuron |",
             "|---|---|---|---|---|---|"]
    for backward, rs in runs.items():
        lines += sparsity_of(backward, rs, out, old_sparsity, args.data_dir)
    (out / "sparsity.md").write_text("\n".join(lines) + "\n")
    (out / "summary.md").write_text(summary(runs))
    (out / "runs.json").write_text(json.dumps(
        {b: [kept_entry(r) for r in rs] for b, rs in runs.items()}, indent=1) + "\n")
    print(f"wrote {out}/curves.png, sparsity.md, summary.md and runs.json")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
