"""``python3 -m snnsim.study dashboard DIR``: a small finished study served by Optuna's own
dashboard on 127.0.0.1, read back through its JSON API and rendered in headless Chromium
(Debian's ``chromium``): the trials are there, with their run folders (user attributes) and
their test accuracy per epoch (intermediate values, reported by the worker as the run
trained). Skips only where Chromium or optuna-dashboard (the dashboard extra, in the test
extra) is missing; CI installs both."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import procs
import pytest
from test_study import TINY, finish, worker
from test_train import write_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytest.importorskip("optuna_dashboard", reason="optuna-dashboard missing (pip install -e .[test])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study: two seeds of a tiny network, two epochs each."""
    root = tmp_path_factory.mktemp("dash")
    data = write_fashion_mnist(root / "data", n_train=60, n_test=30)
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    study_dir = root / "tiny-study"
    finish(worker(study_dir, cfg, data, "--seeds", "0,1", "--epochs=2", "--heartbeat", "0.5",
                  "--grace", "3"))
    return study_dir


def served(study_dir: Path):
    """The dashboard process and its base address, once it answers."""
    port = free_port()
    proc = procs.start([sys.executable, "-m", "snnsim.study", "dashboard", str(study_dir),
                        "--port", str(port)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=2):
                return True
        except OSError:
            return False
    procs.wait_for(up, proc, 60, "the dashboard to answer")
    return proc, base


def test_the_dashboard_shows_every_trial_with_its_run_and_curve(study, tmp_path):
    proc, base = served(study)
    try:
        with urllib.request.urlopen(f"{base}/api/studies/0", timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 2
        for trial in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            rows = [json.loads(line) for line in
                    (study / attrs["run_dir"] / "metrics.jsonl").read_text().splitlines()]
            assert [(v["step"], v["value"]) for v in trial["intermediate_values"]] == [
                (r["epoch"], pytest.approx(100 * r["test_acc"])) for r in rows]
            assert attrs["run_dir"].startswith("trials/tiny-seed")
        if CHROMIUM is None:
            pytest.skip("no chromium (Debian's chromium package; scripts/setup.sh --test installs it)")
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
             "--dump-dom", f"{base}/dashboard/studies/0/trials"],
            capture_output=True, text=True, timeout=120).stdout
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(
            r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)))
        for shown in ("2 Trials", "Trial 0", "Trial 1", "Intermediate Values", "run_dir",
                      "tiny-seed0", "best_test_acc"):
            assert shown in text, (shown, text[:2000])
    finally:
        procs.kill_group(proc)


def test_dashboard_errors_are_one_line(tmp_path):
    for argv, needle in (([str(tmp_path / "none")], "no study"),
                         ([str(tmp_path), "--port", "70000"], "--port must be a port number")):
        done = procs.run([sys.executable, "-m", "snnsim.study", "dashboard", *argv], 60, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
