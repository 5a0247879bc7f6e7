"""The GPU check for machines without network (scripts/gpu_kit.sh, scripts/gpu_check.sh,
docs/gpu.md), on the CPU: the GPU tests are collected where test-only packages are missing;
the GPU run's time limits add up to at most 8 minutes, the slow baseline last; a kit is built
without network (from a local wheel) and checked, a kit missing a wheel or over the size
limit is refused; bad arguments are one line, exit 2.

The dry run itself (every step that needs no GPU, in an environment holding only what the
GPU machines hold) runs in .ci/run: it takes a minute or two, too long for a unit test.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import fashion_mnist_available

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "gpu_check.sh"
KIT = REPO / "scripts" / "gpu_kit.sh"
#: The issue's bound on the whole GPU run (issue 27): 8 minutes.
BUDGET_S = 8 * 60
#: Test-only packages (the test extra), and the optional backends, that a GPU machine or the
#: CI's thin environment may lack.
MISSING = ("array_api_strict", "optuna", "nbclient", "nbformat", "psycopg2", "torch", "cupy",
           "build", "twine", "ipykernel", "ruff")
PY_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def run(args, env=None, timeout=300, cwd=REPO):
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHON"] = sys.executable
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


# --- collection ------------------------------------------------------------------------------
def test_gpu_tests_collect_without_the_test_only_packages():
    """Each package of MISSING made unimportable (None in sys.modules: `import x` raises
    ModuleNotFoundError): `pytest -m gpu --collect-only` still collects every GPU test,
    without an error, and the modules that need a missing package say so as a skip."""
    blocker = ("import sys\n"
               f"for name in {MISSING!r}:\n"
               "    sys.modules[name] = None\n"
               "import pytest\n"
               "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-m', 'gpu', '--collect-only',"
               " '-rs', 'tests']))\n")
    # as on a GPU machine, not in CI (where CI=true makes a missing torch an error of
    # tests/test_torch_backend.py: CI must run those tests)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=REPO,
                          env=dict(env, PYTHONPATH=str(REPO)), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "error" not in out.lower().split("short test summary")[-1], out[-3000:]
    collected = re.search(r"(\d+)/\d+ tests collected", out)
    assert collected and int(collected.group(1)) > 0, out[-3000:]
    for reason in ("array-api-strict missing", "optuna missing"):
        assert reason in out, out[-3000:]


# --- the plan --------------------------------------------------------------------------------
def plan_steps(*args):
    """(name, where, limit) of every step that `gpu_check.sh --plan ARGS` lists, in order."""
    proc = run([CHECK, "--plan", *args])
    assert proc.returncode == 0, proc.stderr
    steps = re.findall(r"^  (\S+)\s+(cpu|gpu|dry)\s+(\d+) s  ", proc.stdout, flags=re.M)
    assert steps, proc.stdout
    return [(name, where, int(limit)) for name, where, limit in steps]


def test_gpu_run_limits_add_up_to_at_most_8_minutes():
    """The limits of the steps a GPU run starts ('dry' steps are the dry run's alone), plus
    the grace each is given between SIGINT and SIGKILL, read from the script."""
    grace = int(re.search(r"^GRACE=(\d+)", CHECK.read_text(), flags=re.M).group(1))
    run_steps = [s for s in plan_steps() if s[1] != "dry"]
    assert sum(limit + grace for _, _, limit in run_steps) <= BUDGET_S


def test_figures_first_slow_baseline_last():
    names = [name for name, where, _ in plan_steps() if where != "dry"]
    gpu = [name for name, where, _ in plan_steps() if where == "gpu"]
    assert names[-1] == "bench_cupy_slow"
    assert gpu[:2] == ["gpu_info", "bench_cupy"]          # the MLP and CNN figures first


def test_plan_prints_every_gpu_step_command():
    """Every GPU step's command is printed (as a dry run shows it), writing its results file."""
    out = run([CHECK, "--plan"]).stdout
    for name, written in (("gpu_info", "/gpu.txt"), ("bench_cupy", "/bench_cupy.json"),
                          ("pytest_gpu", "/pytest_gpu.xml"), ("train_cnn", "/train_cnn"),
                          ("bench_cupy_slow", "/bench_cupy_slow.json")):
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert sys.executable in line and written in line, line


# --- bad arguments ---------------------------------------------------------------------------
def test_check_bad_arguments_are_one_line(tmp_path):
    one_line_error(run([CHECK, "--bogus"]), "--bogus")
    one_line_error(run([CHECK, "--dry-run", "--kit", tmp_path / "nothing"]), "--kit", "gpu_kit.sh")
    if shutil.which("nvidia-smi") is None:                           # not a GPU machine
        one_line_error(run([CHECK, tmp_path / "r"]), "nvidia-smi")
        assert not (tmp_path / "r").exists()
    one_line_error(run([CHECK, "--kit"]), "--kit")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    one_line_error(run([CHECK, full, "--dry-run"]), str(full), "new or empty")


def test_kit_bad_arguments_are_one_line(tmp_path):
    one_line_error(run([KIT]), "no DIR")
    one_line_error(run([KIT, tmp_path / "k", "--python-version", "3"]), "--python-version", "'3'")
    one_line_error(run([KIT, tmp_path / "k", "--wheel"]), "--wheel")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_line_error(run([KIT, other]), str(other), "not a kit")
    assert (other / "notes.txt").read_text() == "mine"


# --- a kit, built without network ------------------------------------------------------------
def fake_wheel(folder: Path, name="array_api_compat", version="99.0") -> Path:
    """A minimal valid pure-Python wheel of ``name``: what pip download reads from a local
    folder (--no-index --find-links) instead of PyPI."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"__version__ = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\n"
                                 f"Version: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def offline(wheels: Path) -> dict:
    """pip without network: no index, no configuration, wheels only from ``wheels``."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull,
            "PIP_EXTRA_INDEX_URL": "", "PIP_INDEX_URL": ""}


needs_data = pytest.mark.skipif(not fashion_mnist_available(),
                                reason="the kit copies the real Fashion-MNIST; not found here")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    base = tmp_path_factory.mktemp("kit")
    wheels = base / "local-wheels"
    fake_wheel(wheels)
    kit_dir = base / "gpu-kit"
    proc = run([KIT, kit_dir, "--python-version", PY_VERSION], env=offline(wheels))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return kit_dir, wheels, proc.stdout


@needs_data
def test_kit_holds_wheels_data_and_checksums(kit):
    kit_dir, _, out = kit
    assert (kit_dir / "wheels" / "array_api_compat-99.0-py3-none-any.whl").is_file()
    assert f"python {PY_VERSION}" in (kit_dir / "kit.txt").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in (kit_dir / "SHA256SUMS").read_text().splitlines()}
    files = {str(p.relative_to(kit_dir)) for p in kit_dir.rglob("*")
             if p.is_file() and p.name not in ("kit.txt", "SHA256SUMS")}
    assert listed == files and len([f for f in files if f.startswith("data/")]) == 4
    size_mib = sum((kit_dir / f).stat().st_size for f in files) / 2**20
    printed = float(re.search(r"kit ready: .*, ([\d.]+) MiB", out).group(1))
    assert abs(printed - size_mib) < 0.2            # du counts kit.txt, SHA256SUMS and folders too
    assert not list(kit_dir.parent.glob(".gpu-kit.*"))  # the build folder is gone


@needs_data
def test_check_accepts_the_kit_and_refuses_it_without_a_wheel(kit, tmp_path):
    kit_dir, _, _ = kit
    proc = run([CHECK, "--plan", "--kit", kit_dir])
    assert proc.returncode == 0, proc.stderr
    assert "array_api_compat-99.0-py3-none-any.whl" in proc.stdout   # the kit step installs it
    broken = tmp_path / "broken-kit"
    subprocess.run(["cp", "-r", str(kit_dir), str(broken)], check=True)
    (broken / "wheels" / "array_api_compat-99.0-py3-none-any.whl").unlink()
    one_line_error(run([CHECK, "--plan", "--kit", broken]),
                   "wheels/array_api_compat-99.0-py3-none-any.whl", "gpu_kit.sh")


@needs_data
def test_check_refuses_a_kit_for_another_python(kit, tmp_path):
    kit_dir, _, _ = kit
    other = tmp_path / "other-python"
    subprocess.run(["cp", "-r", str(kit_dir), str(other)], check=True)
    text = (other / "kit.txt").read_text().replace(f"python {PY_VERSION}\n", "python 3.99\n")
    (other / "kit.txt").write_text(text)
    one_line_error(run([CHECK, "--plan", "--kit", other]), "3.99", f"--python-version {PY_VERSION}")


@needs_data
def test_kit_over_the_size_limit_is_refused_and_nothing_written(kit, tmp_path):
    _, wheels, _ = kit
    target = tmp_path / "too-big"
    proc = run([KIT, target, "--python-version", PY_VERSION],
               env={**offline(wheels), "GPU_KIT_MAX_MIB": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_kit: the kit would be ")
    assert "over the 1 MiB" in proc.stderr
    assert not target.exists() and not list(tmp_path.glob(".gpu-kit.*"))


@needs_data
def test_docs_table_has_the_scripts_steps_and_limits(kit):
    """docs/gpu.md's table of the GPU run: the steps of `--plan --kit`, in order, with its limits."""
    rows = [line.split("|")[1:3] for line in (REPO / "docs" / "gpu.md").read_text().splitlines()
            if line.startswith("| `")]
    documented = [(name, int(limit)) for names, limits in rows
                  for name, limit in zip(re.findall(r"`(\w+)`", names), re.findall(r"(\d+) s", limits),
                                         strict=True)]
    planned = plan_steps("--kit", kit[0])
    assert documented == [(name, limit) for name, where, limit in planned if where != "dry"]
