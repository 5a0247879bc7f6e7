"""Write reference/results.json and reference/results.md from training run folders.

    python3 reference/make_results.py runs/repro/fmnist_mlp_s* --device "CPU ..."

The tables are made by :mod:`snnsim.analysis.results` (shared with
``python3 -m snnsim.study report``); its docstring describes the records.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from snnsim.analysis.results import PAPER, markdown, merge_records, paper_records, read_run, records_for

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (config.json, metrics.jsonl, checkpoint.h5)")
    p.add_argument("--device", required=True, help="where the runs ran, in words")
    p.add_argument("--out-dir", default=str(HERE), help="where results.json/.md go (default reference/)")
    p.add_argument("--replace", action="store_true", help="write only these runs' experiments "
                   "(default: the records of other experiments already in results.json are kept)")
    args = p.parse_args(argv)
    write([read_run(Path(folder)) for folder in args.runs], args.device, Path(args.out_dir),
          replace=args.replace)
    return 0


def write(runs: list[dict], device: str, out: Path, replace: bool = False) -> None:
    """results.json and results.md in ``out`` from runs (as :func:`read_run` returns them),
    grouped by experiment; the records of other experiments already in results.json are kept
    unless ``replace``."""
    runs_by_exp: dict[str, list] = defaultdict(list)
    for run in runs:
        runs_by_exp[run["experiment"]].append(run)
    records = []
    for exp, exp_runs in runs_by_exp.items():
        base = exp.split("+")[0]
        if base not in PAPER:
            raise SystemExit(f"unknown experiment {base!r} (run config name); known: {sorted(PAPER)}")
        if not any(r["experiment"] == base and r["source"] == "paper" for r in records):
            records += paper_records(base)
        records += records_for(exp, exp_runs, device)
    if not replace and (out / "results.json").is_file():
        records = merge_records(json.loads((out / "results.json").read_text()), records)
    (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / "results.md").write_text(markdown(records))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({len(records)} records)")


if __name__ == "__main__":
    sys.exit(main())
