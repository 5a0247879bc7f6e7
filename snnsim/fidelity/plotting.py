"""The fidelity study's figures (matplotlib, Agg): one per subcommand, drawn from its JSON."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .measure import BATCH_VARIANTS


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_random(res: dict, path: Path) -> None:
    plt = _plt()
    labels, series = [], {"cos(authors, timing)": [], "cos(authors, FD)": [], "cos(timing, FD)": [],
                          "cos(surrogate, timing)": []}
    for j, n in enumerate(res["nets"]):
        for k, row in enumerate(n["layers"]):
            labels.append(f"net{j + 1}\nL{k + 1}")
            v = row["variants"]
            series["cos(authors, timing)"].append(v["authors"]["cos_timing"])
            series["cos(authors, FD)"].append(v["authors"]["cos_fd"])
            series["cos(timing, FD)"].append(v["timing"]["cos_fd"])
            series["cos(surrogate, timing)"].append(v["surrogate"]["cos_timing"])
    x = np.arange(len(labels))
    w = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(labels)), 4))
    for j, (name, ys) in enumerate(series.items()):
        ax.bar(x + (j - len(series) / 2 + 0.5) * w, ys, w, label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("random dense networks (float64): per-layer cosines; L1 = first layer")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    _save(plt, fig, path)


def plot_batch(res: dict, path: Path, variants=BATCH_VARIANTS) -> None:
    plt = _plt()
    labs = [row["name"].split(" W")[0] for row in res["layers"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = np.arange(len(variants))
    w = 0.8 / len(labs)
    for k, row in enumerate(res["layers"]):
        off = (k - len(labs) / 2 + 0.5) * w
        axes[0].bar(x + off, [row["variants"][n]["cos_timing"] for n in variants], w, label=labs[k])
        axes[1].bar(x + off, [row["variants"][n].get("cos_fd", np.nan) for n in variants], w, label=labs[k])
        axes[2].bar(x + off, [row["variants"][n]["norm_ratio"] for n in variants], w, label=labs[k])
    titles = ["cos(variant, exact timing gradient)",
              f"cos of projections on {res['n_directions']} random directions "
              "with FD of event-shift loss",
              "‖variant‖ / ‖timing‖"]
    for ax, title in zip(axes, titles):
        ax.set_xticks(x, variants, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.axhline(0 if "cos" in title else 1, color="k", lw=0.5)
        ax.legend(fontsize=7)
    for ax in axes[:2]:
        ax.set_ylim(-1.05, 1.05)
    axes[2].set_yscale("log")
    source = (f"checkpoint {res['checkpoint']}" if res.get("checkpoint") else
              f"weights {res['weights']}" if res.get("weights") else f"initialisation, seed {res['seed']}")
    fig.suptitle(f"{res['net']} on {res['n_samples']} test samples ({source})", fontsize=9)
    _save(plt, fig, path)


def plot_along(res: dict, path: Path) -> None:
    plt = _plt()
    eps = [r["epoch"] for r in res["epochs"]]
    layers = res["epochs"][0]["fidelity"]["layers"]
    labs = [row["name"].split(" W")[0] for row in layers]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for k, lab in enumerate(labs):
        def get(name, key, k=k):
            return [r["fidelity"]["layers"][k]["variants"][name].get(key, np.nan) for r in res["epochs"]]
        col = f"C{k}"
        axes[0].plot(eps, get("authors", "cos_timing"), "o-", color=col,
                     label=f"{lab}: cos(authors, timing)")
        axes[0].plot(eps, get("authors", "cos_fd"), "x:", color=col, label=f"{lab}: cos(authors, FD)")
        axes[1].plot(eps, get("surrogate", "cos_authors"), "o-", color=col,
                     label=f"{lab}: cos(surrogate, authors)")
        axes[1].plot(eps, get("timing-bw-flipped", "cos_authors"), "s--", color=col,
                     label=f"{lab}: cos(timing-bw-flipped, authors)")
    axes[2].plot(eps, [100 * r["test_acc"] for r in res["epochs"]], "o-")
    for ax in axes[:2]:
        ax.set_ylim(-1.05, 1.05)
    for ax in axes[:2]:
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=6)
    axes[2].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
    setup = res["setup"]
    fig.suptitle(f"along training with `{setup['variant']}` (n_train {setup['n_train']})", fontsize=9)
    _save(plt, fig, path)


def plot_compare(res: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in res["variants"]:
        if not res["runs"][v]:
            continue
        accs = 100 * np.array([[r["test_acc"] for r in run["epochs"]] for run in res["runs"][v]])
        eps = np.arange(accs.shape[1])
        ax.errorbar(eps, accs.mean(0), yerr=accs.std(0) if len(accs) > 1 else None,
                    marker="o", capsize=3, label=v)
    ax.set_xlabel("epoch (0 = initialisation)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"784-400-400-10 on Fashion-MNIST ({res['n_train']} training samples, "
                 f"seeds {res['seeds']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(plt, fig, path)
