"""The 100-epoch comparison of backward variants in the fidelity report: which gradient
trains the Fashion-MNIST MLP best over a full run?

The runs are ``python3 -m snnsim.train`` runs of a study (``python3 -m snnsim.study run
... --vary backward=tsslbp,surrogate,timing-bw-flipped``); their records are in
``reference/results.json`` (``reference/make_results.py``), one experiment per variant:
``fashion_mnist_mlp`` (the default backward, TSSL-BP as the authors run it) and
``fashion_mnist_mlp+backward=NAME``. This module reads those records and writes the
report's section: the table, and the comparison of each variant with the authors'
TSSL-BP by Welch's t-test over the per-seed values (``scipy.stats.ttest_ind``,
``equal_var=False``), so that the conclusion is computed from the numbers, not written
beside them.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..analysis.results import mean_std
from ..variants import DEFAULT_BACKWARD

BASE = "fashion_mnist_mlp"
#: A difference is called one when Welch's two-sided p-value is below this.
SIGNIFICANCE = 0.05


def variant_of(experiment: str) -> str | None:
    """The backward variant of an experiment name of the MLP, or None for another experiment:
    ``fashion_mnist_mlp`` -> ``tsslbp``, ``fashion_mnist_mlp+backward=surrogate`` -> ``surrogate``."""
    if experiment == BASE:
        return DEFAULT_BACKWARD
    prefix = BASE + "+backward="
    if experiment.startswith(prefix) and "+" not in experiment[len(prefix):]:
        return experiment[len(prefix):]
    return None


def long_runs(records: list[dict]) -> dict[str, dict]:
    """{variant: its final_mean record} for the MLP experiments whose records list their
    runs (``runs``), the authors' TSSL-BP first."""
    out = {}
    for r in records:
        v = variant_of(r["experiment"])
        if v is not None and r["source"] == "snnsim" and r["metric"] == "final_mean" and r.get("runs"):
            out[v] = r
    return dict(sorted(out.items(), key=lambda kv: kv[0] != DEFAULT_BACKWARD))


def _ms(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def welch(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """(mean(a) - mean(b), Welch's two-sided p-value or None with fewer than 2 values each)."""
    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None
    from scipy.stats import ttest_ind
    return diff, float(ttest_ind(a, b, equal_var=False).pvalue)


def p_text(p: float) -> str:
    """A p-value as written in the report: three decimals, or "p < 0.001"."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def n_comparisons(n_variants: int) -> int:
    """The comparisons the section makes: every variant against TSSL-BP, best and final."""
    return 2 * (n_variants - 1)


def level(p: float | None, n_variants: int) -> str | None:
    """Whether a difference counts: "corrected" (p below 5 % after a Bonferroni correction
    for :func:`n_comparisons`), "alone" (below 5 % uncorrected only), or None."""
    if p is not None and p < SIGNIFICANCE / n_comparisons(n_variants):
        return "corrected"
    if p is not None and p < SIGNIFICANCE:
        return "alone"
    return None


def verdict(p: float | None, n_variants: int) -> str:
    """The p-value and its :func:`level`, in words."""
    if p is None:
        return "not enough runs to test"
    return p_text(p) + {"corrected": ", significant also after the correction",
                        "alone": ", significant at the 5 % level alone, not after the correction",
                        None: ", not significant"}[level(p, n_variants)]


def comparison_lines(runs: dict[str, dict]) -> list[str]:
    """One sentence per variant against the authors' TSSL-BP, for best and final accuracy."""
    if DEFAULT_BACKWARD not in runs:
        return []
    ref = runs[DEFAULT_BACKWARD]["runs"]
    lines = []
    for v, rec in runs.items():
        if v == DEFAULT_BACKWARD:
            continue
        parts = []
        for key, what in (("best", "best-epoch"), ("final", "final-epoch")):
            diff, p = welch([r[key] for r in rec["runs"]], [r[key] for r in ref])
            parts.append(f"{what} accuracy {diff:+.2f} points ({verdict(p, len(runs))})")
        lines.append(f"- `{v}` against the authors' TSSL-BP ({len(rec['runs'])} vs {len(ref)} seeds): "
                     + "; ".join(parts) + ".")
    return lines


def answer(runs: dict[str, dict]) -> str | None:
    """The answer to the section's question, computed from the runs: does the gradient the
    paper calls more precise (the authors' TSSL-BP) train better than surrogate BPTT, and by
    how much; and how far apart all the variants are, against the spread over seeds.
    The section makes 2·(variants - 1) comparisons (every variant against TSSL-BP, best
    and final), so a difference counts as one when it passes the 5 % level after a
    Bonferroni correction for them; one that passes only uncorrected is reported as such.
    None without both ``tsslbp`` and ``surrogate``."""
    if DEFAULT_BACKWARD not in runs or "surrogate" not in runs:
        return None
    ref = runs[DEFAULT_BACKWARD]["runs"]
    sur = runs["surrogate"]["runs"]
    parts, firm, loose = [], [], []
    for key, what in (("best", "best-epoch"), ("final", "final-epoch")):
        diff, p = welch([r[key] for r in ref], [r[key] for r in sur])
        counts = level(p, len(runs))
        if counts == "corrected":
            firm.append(diff)
        elif counts == "alone":
            loose.append(diff)
        side = "ahead of" if diff > 0 else "behind" if diff < 0 else "level with"
        parts.append(f"in {what} accuracy TSSL-BP is {abs(diff):.2f} points {side} it "
                     f"({verdict(p, len(runs))})")
    if firm:
        how = "better than" if all(d > 0 for d in firm) else "worse than" if all(
            d < 0 for d in firm) else "neither uniformly better nor worse than"
    elif loose:
        how = "no better than" if all(d < 0 for d in loose) else "no worse than" if all(
            d > 0 for d in loose) else "neither better nor worse than"
    else:
        how = "neither better nor worse than"
    means = {v: statistics.mean(r["best"] for r in rec["runs"]) for v, rec in runs.items()}
    stds = [mean_std([r["best"] for r in rec["runs"]])[1] for rec in runs.values()]
    stds = [x for x in stds if x is not None]
    spread = (f", against a standard deviation over seeds of {min(stds):.2f}-{max(stds):.2f} "
              "points within a variant" if stds else "")
    return (f"**The answer.** Over 100 epochs the authors' TSSL-BP, the gradient the paper calls "
            f"more precise, trains the MLP {how} surrogate-gradient BPTT: "
            + "; ".join(parts)
            + f". The mean best-epoch accuracies of all {len(runs)} "
            f"gradients lie within {max(means.values()) - min(means.values()):.2f} points of "
            f"each other{spread}.")


def long_run_section(results_json: Path) -> str | None:
    """The report's section on the 100-epoch runs, or None when ``results_json`` has none."""
    path = Path(results_json)
    if not path.is_file():
        return None
    runs = long_runs(json.loads(path.read_text()))
    if len(runs) < 2:
        return None
    rows = []
    for v, rec in runs.items():
        finals, bests = [r["final"] for r in rec["runs"]], [r["best"] for r in rec["runs"]]
        rows.append(f"| `{v}` | {len(rec['runs'])} | {rec['epochs']} | {_ms(bests)} | {max(bests):.2f} "
                    f"| {_ms(finals)} |")
    ranked = sorted(runs, key=lambda v: -statistics.mean(r["best"] for r in runs[v]["runs"]))
    counts = sorted({len(rec["runs"]) for rec in runs.values()})
    seeds = "-".join(map(str, (counts[0], counts[-1]) if len(counts) > 1 else counts))
    lines = ["| backward | runs | epochs | best (mean ± std) | best (max) | final (mean ± std) |",
             "|---|---|---|---|---|---|", *rows, "",
             "Ranked by mean best-epoch accuracy: " + " > ".join(f"`{v}`" for v in ranked) + ".", "",
             *comparison_lines(runs), "",
             f"The comparisons use Welch's t-test on the per-seed values (two-sided), "
             f"{n_comparisons(len(runs))} of them, so a difference counts when p < "
             f"{SIGNIFICANCE / n_comparisons(len(runs)):.4f} (5 % after a Bonferroni correction); "
             f"with {seeds} seeds per variant, only large differences are detectable."]
    verdict = answer(runs)
    if verdict:
        lines += ["", verdict]
    return "\n".join(lines) + "\n"


__all__ = ["BASE", "SIGNIFICANCE", "answer", "comparison_lines", "level", "long_run_section",
           "long_runs", "n_comparisons", "p_text", "variant_of", "verdict", "welch"]
