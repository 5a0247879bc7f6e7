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
  the numbers.
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
from reference.make_backward100 import SPARSITY_SAMPLES, best_run, sparsity_rows  # noqa: E402
from snnsim.analysis.plots import plot_study_curves, save_figure  # noqa: E402
from snnsim.analysis.results import PAPER, finished, read_run  # noqa: E402

EXPERIMENT = "fashion_mnist_cnn"
STUDIES = {"tsslbp": "table3-cnn", "surrogate": "table3-cnn-surrogate"}


def run_folders(study_dir: Path) -> list[Path]:
    """The study's run folders with at least one finished epoch, in name order."""
    out = []
    for folder in sorted((study_dir / "trials").glob("*")):
        metrics = folder / "metrics.jsonl"
        if (folder / "checkpoint.h5").is_file() and metrics.is_file() and metrics.read_text().strip():
            out.append(folder)
    return out


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

    def best_up_to(run, k):
        return 100.0 * max(row["test_acc"] for row in run["rows"] if row["epoch"] <= k)
    parts, diffs = [], []
    for t, s in sorted(pairs, key=lambda p: p[0]["cfg"]["seed"]):
        k = min(t["epochs"], s["epochs"])
        bt, bs = best_up_to(t, k), best_up_to(s, k)
        diffs.append(bs - bt)
        parts.append(f"seed {t['cfg']['seed']} at epoch {k}: {bs:.2f} against {bt:.2f} ({bs - bt:+.2f})")
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
    at_k = [r for r in runs if r["epochs"] >= k]
    if k < 2 or len(at_k) < 2:
        return ""
    import statistics
    bests = [100.0 * max(row["test_acc"] for row in r["rows"] if row["epoch"] <= k) for r in at_k]
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
    folders = {b: run_folders(d) for b, d in (("tsslbp", args.tsslbp), ("surrogate", args.surrogate))}
    folders = {b: fs for b, fs in folders.items() if fs}
    if not folders:
        raise SystemExit(f"make_table3_cnn.py: no run of {args.tsslbp} or {args.surrogate} has "
                         "finished an epoch yet")
    out = args.out_dir / "table3_cnn"
    out.mkdir(parents=True, exist_ok=True)
    make_results.main([str(f) for fs in folders.values() for f in fs]
                      + ["--device", args.device, "--out-dir", str(args.out_dir)])
    runs = {b: [read_run(f) for f in fs] for b, fs in folders.items()}
    mean_p, std_p, _ = PAPER[EXPERIMENT]
    fig = plot_study_curves({b: [r["rows"] for r in rs] for b, rs in runs.items()},
                            title="Fashion-MNIST CNN: test accuracy of every run")
    ax = fig.axes[0]
    ax.axhspan(mean_p - std_p, mean_p + std_p, color="k", alpha=0.12, lw=0,
               label=f"paper: {mean_p:.2f} ± {std_p:.2f}")
    ax.legend(fontsize=8)
    save_figure(fig, out, "curves", formats=("png",))
    lines = ["# Firing sparsity of the CNN's best networks", "",
             f"Written by `python3 reference/make_table3_cnn.py`; do not edit by hand. Per gradient, "
             f"the run with the highest best-epoch test accuracy, its `best.h5`, on the first "
             f"{SPARSITY_SAMPLES} test samples: % of neurons silent (k = 0 spikes in T steps), % "
             f"firing at every step (k = T), and the mean number of spikes per neuron and sample. "
             f"Figures: `sparsity_<backward>/sparsity.png`.", "",
             "| backward | run (best test acc) | layer | silent % | every step % | spikes per neuron |",
             "|---|---|---|---|---|---|"]
    for backward, fs in folders.items():
        folder, best = best_run(fs)
        lines += sparsity_rows(backward, folder, best, out, args.data_dir)
    (out / "sparsity.md").write_text("\n".join(lines) + "\n")
    (out / "summary.md").write_text(summary(runs))
    (out / "runs.json").write_text(json.dumps(
        {b: [{"run": f.name, "epochs": r["epochs"], "epochs_planned": r["epochs_planned"],
              "best": round(r["best"], 3), "final": round(r["final"], 3)} for f, r in zip(folders[b], rs)]
         for b, rs in runs.items()}, indent=1) + "\n")
    print(f"wrote {out}/curves.png, sparsity.md, summary.md and runs.json")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
