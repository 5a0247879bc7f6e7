"""The tables and figures of the 100-epoch comparison of backward variants, from its study.

    python3 reference/make_backward100.py STUDY [--device "CPU: ..."]

STUDY is the folder of the study that ran the trainings (``python3 -m snnsim.study run
STUDY --config fashion_mnist_mlp --seeds 0,1,2,3,4 --vary
backward=tsslbp,surrogate,timing-bw-flipped --epochs=100``; README.md of
``reference/backward100/`` has the whole recipe). Only completed trials count. Writes:

- ``reference/results.json`` and ``results.md`` (``reference/make_results.py``: the
  records of these experiments replace older ones of the same names, the others stay);
- ``reference/backward100/report.md``, ``report.json`` and ``curves.png`` (``python3 -m
  snnsim.study report``: the learning curves, mean ± std per variant);
- per variant, the firing sparsity (the paper's Fig. 7) of its best network, the
  ``best.h5`` of the seed with the highest best-epoch accuracy, on the first 100 test
  samples: ``reference/backward100/sparsity_<variant>/sparsity.png`` and a table in
  ``reference/backward100/sparsity.md``;
- ``reference/fidelity.md`` again (``python3 -m snnsim.fidelity --out reference
  --plot-dir plots report``), whose conclusion reads the new records.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:                       # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from reference import make_results  # noqa: E402
from snnsim import study as study_mod  # noqa: E402
from snnsim.analysis import plots  # noqa: E402
from snnsim.analysis.record import (  # noqa: E402
    checkpoint_meta,
    count_distributions,
    network_from_checkpoint,
    record_dataset,
    save_recording,
)
from snnsim.fidelity import cli as fidelity_cli  # noqa: E402
from snnsim.fidelity.longrun import variant_of  # noqa: E402

SPARSITY_SAMPLES = 100


def completed_runs(study_dir: Path):
    """({experiment: run folders of its completed trials, in trial order}, the Optuna study)."""
    from optuna.trial import TrialState
    storage = study_mod.open_storage(study_dir, None)
    study = study_mod.create_or_join(storage, study_dir.resolve().name, None)
    out: dict[str, list[Path]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        out[t.user_attrs["experiment"]].append(study_dir / t.user_attrs["run_dir"])
    return dict(out), study


def best_run(folders: list[Path]) -> tuple[Path, float]:
    """The run folder with the highest best-epoch test accuracy, and that accuracy (%)."""
    from snnsim.analysis.results import read_run
    runs = [(f, read_run(f)["best"]) for f in folders]
    return max(runs, key=lambda fr: fr[1])


def sparsity_rows(variant: str, folder: Path, best: float, out: Path,
                  data_dir: str | None = None) -> list[str]:
    """Record the run's best network on the first test samples; draw Fig. 7 into
    ``out/sparsity_<variant>/``; one table row per layer and one for the network."""
    net, cfg, _ = network_from_checkpoint(folder / "best.h5", backend="numpy")
    rec = record_dataset(net, cfg, SPARSITY_SAMPLES, "test", data_dir=data_dir,
                         meta={"source": str(folder / "best.h5"), **checkpoint_meta(folder / "best.h5")})
    with tempfile.TemporaryDirectory() as tmp:      # the figure from this recording, not a second one
        path = save_recording(Path(tmp) / "recording.h5", rec)
        plots.main(["sparsity", str(path), "--out", str(out / f"sparsity_{variant}"), "--formats", "png"])
    rows = []
    for name, pct in count_distributions(rec).items():
        mean_spikes = sum(k * p for k, p in enumerate(pct)) / 100.0
        rows.append(f"| `{variant}` | {folder.name} ({best:.2f} %) | {name} | {pct[0]:.1f} | "
                    f"{pct[-1]:.1f} | {mean_spikes:.3f} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", type=Path, help="the study folder (its journal.log and trials/)")
    p.add_argument("--device", default=study_mod.this_machine(), help="where the runs ran, in words")
    p.add_argument("--out-dir", type=Path, default=HERE, help="instead of reference/: results.*, "
                   "fidelity.md and its figures there, the rest in OUT_DIR/backward100")
    p.add_argument("--data-dir", help="directory holding Fashion-MNIST (default: the usual places)")
    args = p.parse_args(argv)
    out = args.out_dir / "backward100"
    by_exp, study = completed_runs(args.study)
    if not by_exp:
        raise SystemExit(f"{args.study}: no completed trial yet")
    folders = [f for fs in by_exp.values() for f in fs]
    make_results.main([*map(str, folders), "--device", args.device, "--out-dir", str(args.out_dir)])
    study_mod.report(study, args.study, args.device, out)
    lines = ["# Firing sparsity of each backward variant's best network", "",
             f"Written by `python3 reference/make_backward100.py STUDY`; do not edit by hand. "
             f"Per variant, the seed with the highest best-epoch test accuracy, its `best.h5`, on the "
             f"first {SPARSITY_SAMPLES} test samples: % of neurons silent (k = 0 spikes in T steps), "
             f"% firing at every step (k = T), and the mean number of spikes per neuron and sample. "
             f"Figures: `sparsity_<variant>/sparsity.png`.", "",
             "| backward | run (best test acc) | layer | silent % | every step % | spikes per neuron |",
             "|---|---|---|---|---|---|"]
    for exp, fs in by_exp.items():
        variant = variant_of(exp) or exp
        folder, best = best_run(fs)
        lines += sparsity_rows(variant, folder, best, out, args.data_dir)
    (out / "sparsity.md").write_text("\n".join(lines) + "\n")
    if args.out_dir.resolve() == HERE:       # the tracked report names its files relative to the repository
        cwd = os.getcwd()
        try:
            os.chdir(REPO)
            fidelity_cli.main(["--out", "reference", "--plot-dir", "plots", "report"])
        finally:
            os.chdir(cwd)
    else:
        fidelity_cli.main(["--out", str(args.out_dir), "--plot-dir", str(args.out_dir), "report"])
    print(f"wrote {out / 'sparsity.md'} and {args.out_dir / 'fidelity.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
