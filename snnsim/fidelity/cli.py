"""The command line of the fidelity study: ``python3 -m snnsim.fidelity SUBCOMMAND``.

Every subcommand writes its numbers as JSON, a markdown table and a PNG figure into
``--out`` (default ``runs/fidelity``; figures into ``--plot-dir``, default the same folder).
The tracked results in ``reference/`` and ``plots/`` change only when asked for, with
``--out reference --plot-dir plots``.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ..commandline import ArgumentParser, prog_name, report_error
from ..datasets.errors import DatasetError
from ..training.checkpoint import CheckpointError
from ..training.config import ConfigError
from ..variants import VARIANTS, describe_backwards
from .measure import BATCH_VARIANTS, N_DIRECTIONS, RANDOM_VARIANTS
from .problems import run_batch, run_random
from .report import (
    activity_table,
    along_table,
    batch_table,
    build_report,
    command_line,
    compare_table,
    ladder_table,
    write_along,
    write_batch,
    write_compare,
    write_json,
    write_random,
)
from .training import RUNS_DIR, TRAIN_VARIANTS, run_along_training, run_compare_training

DEFAULT_OUT = RUNS_DIR
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Gradient fidelity: how each backward variant of TSSL-BP compares with the exact gradient of
the event-shift model (the smooth model the paper derives), with surrogate-gradient BPTT, and
how each trains. Subcommands (each --help says more):

  random            random dense networks, float64: cosines and FD checks (seconds)
  batch             784-400-400-10 on Fashion-MNIST test samples, float64 (about a minute)
  along-training    train with one variant through python3 -m snnsim.train, measure after
                    every epoch (about a minute per epoch)
  compare-training  train every variant and seed through python3 -m snnsim.train, test
                    accuracy per epoch (about 20 s per 60 000-sample epoch and run)
  report            fidelity.md from the JSON files in --out (seconds)

Results go to --out (default runs/fidelity/); the tracked reference/ and plots/ are
rewritten only when asked: python3 -m snnsim.fidelity --out reference --plot-dir plots report

Backward variants (snnsim/variants.py; also --backward of python3 -m snnsim.train, whose
default is tsslbp: the network's own TSSL-BP reading, under the authors' preset `authors`):
""" + describe_backwards(names=tuple(VARIANTS))


VARIANTS_HELP = "Backward variants (snnsim/variants.py):\n" + describe_backwards(names=tuple(VARIANTS))


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and adds each option's default."""


def _common(top: bool) -> argparse.ArgumentParser:
    """--out and --plot-dir, accepted before or after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    default = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    said = "" if top else f" (default {DEFAULT_OUT})"
    p.add_argument("--out", "--out-dir", dest="out", type=Path, default=default(DEFAULT_OUT),
                   help=f"folder of the JSON and markdown files{said}; reference: the tracked results")
    p.add_argument("--plot-dir", type=Path, default=default(None),
                   help="folder of the PNG figures (None: the --out folder; plots: the tracked figures)")
    return p


def make_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=prog_name("python3 -m snnsim.fidelity"), description=DESCRIPTION,
                                 formatter_class=_Formatter, parents=[_common(True)])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="SUBCOMMAND")
    common = _common(False)

    def add(name, summary, description):
        return sub.add_parser(name, help=summary, description=textwrap.fill(description, 88),
                              parents=[common], formatter_class=_Formatter, epilog=VARIANTS_HELP)

    p = add("random", "random dense networks, float64 (seconds)",
            "Four random dense float64 networks (RANDOM_NETS): per layer, the cosine of each of "
            f"the variants {', '.join(RANDOM_VARIANTS)} with the exact `timing` gradient, and "
            "finite differences of the event-shift loss along random directions. Writes "
            "fidelity_random.{json,md,png}. Seconds.")
    p.add_argument("--seed", type=int, default=0, help="seed of the first network (the others: +1, +2, ...)")
    p.add_argument("--n-dirs", type=int, default=16, help="random directions per layer for the FD check")

    p = add("batch", "784-400-400-10 on Fashion-MNIST test samples, float64 (about a minute)",
            "The paper's MLP (at initialisation, with --weights, or a --checkpoint of "
            "python3 -m snnsim.train) on a batch of Fashion-MNIST test samples, float64: every "
            f"variant ({', '.join(BATCH_VARIANTS)}) against the exact gradient and finite "
            "differences, the ladder from `timing` to `authors`, and the descent probe. Writes "
            "fidelity_<tag>.{json,png} and fidelity_<tag>_table.md. About a minute.")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (and of the FD directions)")
    p.add_argument("--n-samples", type=int, default=100, help="test samples in the batch")
    p.add_argument("--offset", type=int, default=0, help="index of the first test sample")
    p.add_argument("--n-dirs", type=int, default=N_DIRECTIONS, help="random directions per layer")
    p.add_argument("--weights", default=None,
                   help="an .npz of weights saved by earlier versions of along-training")
    p.add_argument("--checkpoint", default=None,
                   help="a checkpoint or run folder of python3 -m snnsim.train (e.g. an "
                        "epoch_<k>.h5 kept by along-training)")
    p.add_argument("--tag", default="batch", help="output name fidelity_<tag>.*")

    for name in ("along-training", "compare-training"):
        if name == "along-training":
            p = add(name, "train one variant, measure after every epoch",
                    "Trains the MLP with one backward variant through python3 -m snnsim.train "
                    "(run folder <runs-dir>/along/<variant>_seed<seed>, one epoch at a time with "
                    "--resume, epoch_<k>.h5 kept), and after every epoch (0 = initialisation) "
                    "repeats the batch measurement in float64 on the first --n-samples test "
                    "samples. Writes fidelity_along.json, fidelity_along_table.md, "
                    "fidelity_along.png. About a minute per epoch on 2 CPU cores. Run again to "
                    "continue after an interruption.")
        else:
            p = add(name, "train every variant and seed, test accuracy per epoch",
                    "Trains the MLP with each backward variant and seed through python3 -m "
                    "snnsim.train (run folders <runs-dir>/compare/<variant>_seed<seed>, the "
                    "training defaults otherwise), one run at a time, and tabulates test accuracy "
                    "per epoch. Folders that hold the run already are read, not retrained (run "
                    "again to continue after an interruption). Writes fidelity_compare.json "
                    "(after every run), fidelity_compare_table.md, fidelity_compare.png. About "
                    "15-20 s per 60 000-sample epoch and run on 2 CPU cores with "
                    "OPENBLAS_NUM_THREADS=1.")
        p.add_argument("--epochs", type=int, default=3, help="epochs per run")
        p.add_argument("--n-train", type=int, default=60000, help="first N training samples")
        p.add_argument("--n-test", type=int, default=10000, help="first N test samples")
        p.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                       help="where the training run folders go")
        p.add_argument("--data-dir", default=None,
                       help="directory holding Fashion-MNIST (None: the standard search path)")
        if name == "along-training":
            p.add_argument("--seed", type=int, default=0, help="seed of the run")
            p.add_argument("--variant", default="authors", choices=sorted(VARIANTS), metavar="VARIANT",
                           help="backward variant trained (names below)")
            p.add_argument("--n-samples", type=int, default=100, help="test samples measured")
            p.add_argument("--n-dirs", type=int, default=N_DIRECTIONS, help="random directions per layer")
        else:
            p.add_argument("--seeds", type=int, nargs="+", default=[0],
                           help="seeds, one run each per variant")
            p.add_argument("--variants", nargs="+", default=list(TRAIN_VARIANTS), choices=sorted(VARIANTS),
                           metavar="VARIANT", help="backward variants trained (names below)")

    add("report", "assemble fidelity.md from the JSON files in --out",
        "Assembles <out>/fidelity.md from the JSON files the other subcommands wrote into --out "
        "(those present), redrawing the along/compare tables and figures from them. Measures "
        "nothing; seconds.")
    return ap


def main(argv=None) -> int:
    ap = make_parser()
    args = ap.parse_args(argv)
    out = args.out
    plots = args.plot_dir or out
    out.mkdir(parents=True, exist_ok=True)
    plots.mkdir(parents=True, exist_ok=True)
    cmd = command_line(argv)
    try:
        if args.cmd == "random":
            res = run_random(args.seed, args.n_dirs)
            res["cmd"] = cmd
            print(write_random(res, out, plots, cmd).read_text())
        elif args.cmd == "batch":
            res = run_batch(args.seed, args.n_samples, args.offset, args.n_dirs, args.weights,
                            args.checkpoint)
            res["cmd"] = cmd
            write_batch(res, out, plots, args.tag)
            print(activity_table(res) + "\n\n" + batch_table(res) + "\n\n" + ladder_table(res))
        elif args.cmd == "along-training":
            res = run_along_training(args.variant, args.seed, args.epochs, args.n_train, args.n_test,
                                     args.n_samples, args.n_dirs, args.runs_dir, args.data_dir)
            res["cmd"] = cmd
            write_json(res, out / "fidelity_along.json")
            write_along(res, out, plots)
            print(along_table(res))
        elif args.cmd == "compare-training":
            def save(partial):
                partial["cmd"] = cmd
                write_json(partial, out / "fidelity_compare.json")
            res = run_compare_training(args.variants, args.seeds, args.epochs, args.n_train,
                                       args.n_test, args.runs_dir, save, args.data_dir)
            save(res)
            write_compare(res, out, plots)
            print(compare_table(res))
        elif args.cmd == "report":
            print(f"wrote {build_report(out, plots, cmd)}")
    except KeyboardInterrupt:
        print("\ninterrupted; the finished runs are kept: run the same command again to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError, DatasetError, FileNotFoundError) as exc:
        return report_error(f"fidelity {args.cmd}", exc)
    return 0


__all__ = ["main", "make_parser"]
