"""kill -9 soak of `python3 -m snnsim.train`: many random kills of a tiny run, resumed
each time (the long form of tests/test_faults.py::test_soak_*).

    OPENBLAS_NUM_THREADS=1 python3 scripts/soak_kill.py --kills 50

Trains the tiny MLP 784-24-10 (float64) on a tiny synthetic Fashion-MNIST written
to a temporary folder, kills the run with SIGKILL after a random delay, checks the
folder (every checkpoint loads; best.h5 holds the checkpoint's best epoch or lags
by the one promotion the next start repairs), resumes, and so on; then lets it
finish and checks metrics.jsonl, checkpoint.h5 and best.h5 against each other and
the final weights against a run never killed. Prints one line per kill and a
summary; exit status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS.parent))
sys.path.insert(0, str(TESTS))

from faults import kill_window, soak  # noqa: E402
from test_train import tiny_args, write_fashion_mnist  # noqa: E402

from snnsim.training.checkpoint import load_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_fashion_mnist(tmp / "data")
        startup, per_epoch = kill_window(lambda o, n: tiny_args(data, o, epochs=n), tmp,
                                         args.epochs)
        out = tmp / "run"
        t0 = time.perf_counter()
        result = soak(tiny_args(data, out, epochs=args.epochs),
                      ["--resume", str(out), "--progress=false"], out, epochs=args.epochs,
                      kills=args.kills, rng=np.random.default_rng(args.seed),
                      max_delay=startup + 3 * per_epoch, log=print)
        a = load_checkpoint(tmp / "ref" / "checkpoint.h5")["weights"]
        b = load_checkpoint(out / "checkpoint.h5")["weights"]
        same = all(np.array_equal(la[k], lb[k]) for la, lb in zip(a, b) for k in la)
        print(f"{result['kills']} kills in {time.perf_counter() - t0:.1f} s "
              f"(start-up {startup * 1e3:.0f} ms, {per_epoch * 1e3:.0f} ms per epoch; kill delays "
              f"uniform in [0, start-up + 3 epochs)); kills landed in "
              f"{len(set(result['epochs_at_kill']))} distinct epochs; {result['lagging']} left "
              f"best.h5 one "
              f"promotion behind (repaired on resume); every checkpoint loaded; finished run "
              f"consistent; final weights {'bit-identical to' if same else 'DIFFER from'} "
              "the run never killed")
        return 0 if same and result["kills"] >= args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
