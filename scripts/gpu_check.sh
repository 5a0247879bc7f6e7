#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: everything the CPU-only CI cannot prove.
#
#   bash scripts/gpu_check.sh [RESULTS_DIR] [--kit DIR] [--dry-run] [--plan]
#
# RESULTS_DIR (default: $OUT, else gpu-results-<date>-<time>) must be new or empty.
# --kit DIR  for a machine without network: DIR is a kit made by scripts/gpu_kit.sh (see
#            docs/gpu.md). Its SHA256SUMS and Python version are checked first, its wheels
#            installed with `pip install --no-index --no-deps --target` into a temporary
#            folder put on PYTHONPATH after the source tree, and its Fashion-MNIST is the data
#            (SNNSIM_DATA_DIR, and --data-dir for training). Nothing is downloaded, CuPy
#            included: whichever CuPy imports (cupy-cuda12x, cupy-cuda13x) is used.
# --dry-run  on any machine, GPU or not: runs the steps that need no GPU (the kit, the imports,
#            the collection of the GPU tests, the NumPy bench line with 1 timed batch, one CPU
#            epoch of the CNN on 200 samples), and prints the command of each GPU step and
#            checks that it parses (its options exist and their values are valid).
# --plan     prints the steps, their time limits and commands, and exits.
#
# Steps, in this order; each runs under `timeout` (SIGINT at its limit, SIGKILL 5 s later),
# and the limits of a GPU run, with those 5 s each, add up to at most 8 minutes (the script
# refuses to start otherwise). The MLP and CNN figures come first, the slow baseline last. A
# failing step does not stop the others, except that no GPU step starts when gpu_info fails.
#   kit              (with --kit) the kit's wheels installed (`pip install --no-index --no-deps`)
#   imports          snnsim and every module the steps use, with versions and places
#   collect_gpu      (dry run only) pytest -m gpu --collect-only: the GPU tests are collected
#   gpu_info         gpu.txt: the GPU, driver and CUDA as nvidia-smi and CuPy see them
#   bench_cupy       bench_cupy.json: the Fashion-MNIST MLP and CNN step on cupy, with and
#                    without the fused kernels (python3 -m snnsim.bench)
#   pytest_gpu       pytest_gpu.xml: pytest -m gpu, NumPy-CuPy parity and the fused kernels
#                    (tolerances in the tests); on a GPU no GPU test may skip
#   train_cnn        train_cnn/: one epoch of the Fashion-MNIST CNN, --backend cupy --fused=true
#   bench_numpy      bench_numpy.json: the same MLP and CNN steps on numpy, on this CPU
#   cpu_epoch        (dry run only) cpu_epoch/: one CNN epoch on numpy, 200 samples
#   bench_cupy_slow  bench_cupy_slow.json: the O(T²) baseline of both steps, and the peak GPU
#                    memory of one MLP step at T = 5, 30, 100 in both formulations
# Each step's output goes to RESULTS_DIR/<step>.log; summary.txt has one line per step (exit
# status, seconds, command). Exit status: 0 all passed, 1 a step failed, 2 bad arguments or kit.
#
# Settings (environment): PYTHON (default .venv/bin/python3, else python3); SNNSIM_DATA_DIR
# (without --kit: where Fashion-MNIST's IDX files are, see data/README.md); BENCH_BATCHES
# (timed batches of bench_cupy, default 20). The bench's options change with the bench (see
# `python3 -m snnsim.bench --help`): adjust the bench lines of plan() below.
set -uo pipefail

BUDGET=480   # seconds: all the limits of a GPU run together, GRACE included
GRACE=5      # seconds between a step's SIGINT and its SIGKILL

die() { echo "gpu_check: $1" >&2; exit "${2:-2}"; }

results="" kit="" dry="" plan_only=""
while [ $# -gt 0 ]; do
  case $1 in
    --kit) [ $# -ge 2 ] || die "--kit needs a folder made by scripts/gpu_kit.sh"; kit=$2; shift 2 ;;
    --kit=*) kit=${1#*=}; shift ;;
    --dry-run) dry=1; shift ;;
    --plan) plan_only=1; shift ;;
    -h|--help) sed -n '4p' "$0" | sed 's/^# *//'; exit 0 ;;
    -*) die "unknown option $1 (usage: bash scripts/gpu_check.sh [RESULTS_DIR] [--kit DIR] [--dry-run] [--plan])" ;;
    *) [ -z "$results" ] || die "one RESULTS_DIR only, got $results and $1"; results=$1; shift ;;
  esac
done
if [ -z "$dry$plan_only" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  die "nvidia-smi not found: this script needs a machine with an NVIDIA GPU (or --dry-run)"
fi
# paths given relative to the caller's folder, resolved before the cd to the source tree
if [ -n "$kit" ]; then
  [ -f "$kit/kit.txt" ] || die "--kit $kit: no kit.txt there; make the kit with bash scripts/gpu_kit.sh $kit"
  kit=$(cd "$kit" && pwd)
fi
results=${results:-${OUT:-gpu-results-$(date +%Y%m%d-%H%M%S)}}
if [ -z "$plan_only" ]; then
  [ ! -e "$results" ] || [ -d "$results" ] || die "$results is a file, not a folder for the results"
  [ -z "$(ls -A "$results" 2>/dev/null)" ] || die "$results holds files already: give a new or empty folder"
  mkdir -p "$results" || die "cannot create $results"
  results=$(cd "$results" && pwd)
fi
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python3}
[ -x "$PY" ] || PY=python3
command -v "$PY" >/dev/null 2>&1 || die "no python: $PY not found (set PYTHON)"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci MPLBACKEND=Agg

# --- the kit: checked now (a bad kit is bad input), installed by the step `kit` -------------
site="" data_args=() wheels=()
if [ -n "$kit" ]; then
  kit_py=$(sed -n 's/^python //p' "$kit/kit.txt")
  here_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PY does not run"
  [ "$kit_py" = "$here_py" ] \
    || die "--kit $kit is for Python ${kit_py:-?} and $PY is $here_py: make one with bash scripts/gpu_kit.sh DIR --python-version $here_py"
  [ -f "$kit/SHA256SUMS" ] || die "--kit $kit: no SHA256SUMS; make the kit again with scripts/gpu_kit.sh"
  if ! sums=$(cd "$kit" && sha256sum -c SHA256SUMS 2>/dev/null); then
    bad=$(printf '%s\n' "$sums" | grep -v ': OK$' | cut -d: -f1 | paste -sd, -)
    die "--kit $kit: does not match its SHA256SUMS (${bad:-no checksum line read}: missing or changed); make the kit again with scripts/gpu_kit.sh"
  fi
  mapfile -t wheels < <(sed -n 's|^[0-9a-f]*  \(wheels/.*\.whl\)$|\1|p' "$kit/SHA256SUMS")
  if [ -z "$plan_only" ]; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/snnsim-gpu-kit.XXXXXX") || die "cannot make a temporary folder"
    trap 'rm -rf "$site"' EXIT
  else
    site='${TMPDIR:-/tmp}/snnsim-gpu-kit.XXXXXX'
  fi
  export SNNSIM_DATA_DIR="$kit/data"
  data_args=(--data-dir "$kit/data")
fi
export PYTHONPATH="$PWD${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"

# --- what the steps import, as the step `imports` shows it ------------------------------------
IMPORTS=$(cat <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in sys.argv[1:]:
    m = importlib.import_module(name)
    print(f"{name:24s} {getattr(m, '__version__', ''):12s} {getattr(m, '__file__', '')}")
EOF
)
IMPORT_NAMES=(snnsim array_api_compat numpy scipy h5py matplotlib yaml tqdm numba filelock
              threadpoolctl pytest pytest_timeout hypothesis snnsim.analysis.bench
              snnsim.training.train snnsim.cuda.kernels)

# --- gpu_info: the GPU as nvidia-smi and CuPy see it, and snnsim's own check of CuPy --------
GPU_INFO=$(cat <<'EOF'
import importlib.metadata as md, subprocess, sys
out = open(sys.argv[1], "w")
def say(line):
    print(line)
    print(line, file=out, flush=True)
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                      "--format=csv"], capture_output=True, text=True, timeout=20, check=True)
for line in smi.stdout.splitlines():
    say(line)
import cupy
dists = []
for d in ("cupy-cuda13x", "cupy-cuda12x", "cupy"):   # the machine's own: the check installs none
    try:
        dists.append(f"{d} {md.version(d)}")
    except md.PackageNotFoundError:
        pass
rt = cupy.cuda.runtime
props = rt.getDeviceProperties(cupy.cuda.Device().id)
say(f"cupy {cupy.__version__} ({', '.join(dists) or 'distribution unknown'}), "
    f"CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, "
    f"device {props['name'].decode()}, sm_{props['major']}{props['minor']}")
from snnsim.backend import get_backend
get_backend("cupy")
say("snnsim: the cupy backend is usable")
EOF
)

# --- a dry run's check of a GPU step's command: it parses (its options exist, its values are
# valid), without a GPU; snnsim.bench's backends are taken as numpy, cupy being the GPU's ---
ARGS_CHECK=$(cat <<'EOF'
import sys
argv = sys.argv[1:]
if argv[0] == "-c":
    compile(argv[1], "<the step's program>", "exec")
elif argv[1] == "snnsim.bench":
    from snnsim.analysis.bench import check_args, make_parser
    parser = make_parser()
    args = parser.parse_args(argv[2:])
    args.backends = "numpy"
    check_args(parser, args)
elif argv[1] == "snnsim.train":
    from snnsim.training.train import parse_args
    parse_args(argv[2:])
else:
    sys.exit(f"no check of python {' '.join(argv[:2])} here")
print("the command parses")
EOF
)

# --- the plan ---------------------------------------------------------------------------------
# step NAME LIMIT WHERE COMMAND...; WHERE: cpu (always run), gpu (needs the GPU; a dry run
# prints it), dry (a dry run's stand-in for GPU work; not part of a GPU run)
nb=(--batches 5 --max-batches-slow 2)               # bench_numpy on a GPU machine's CPU
[ -n "$dry" ] && nb=(--batches 1 --warmup 1 --max-batches-slow 1)
plan() {
  [ ${#wheels[@]} -gt 0 ] && step kit 15 cpu env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL \
    PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check \
    --no-index --no-deps -q --target "$site" "${wheels[@]/#/$kit/}"
  step imports 25 cpu "$PY" -c "$IMPORTS" "${IMPORT_NAMES[@]}"
  # env -u CI: as on the GPU machine; in CI, CI=true makes a missing torch an error of
  # tests/test_torch_backend.py (the CI suite must run those tests; a GPU machine need not)
  step collect_gpu 60 dry env -u CI "$PY" -m pytest -q -p no:cacheprovider -m gpu --collect-only
  step gpu_info 30 gpu "$PY" -c "$GPU_INFO" "$results/gpu.txt"
  step bench_cupy 60 gpu "$PY" -m snnsim.bench --backends cupy --experiments mlp,cnn --no-baseline \
    --steps-sweep "" --batches "${BENCH_BATCHES:-20}" --out "$results/bench_cupy.json"
  step pytest_gpu 80 gpu env -u CI "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
    --junitxml="$results/pytest_gpu.xml"
  step train_cnn 100 gpu "$PY" -m snnsim.train --config fashion_mnist_cnn --backend cupy --fused=true \
    --epochs 1 --progress=false "${data_args[@]}" --out "$results/train_cnn"
  step bench_numpy 45 cpu "$PY" -m snnsim.bench --backends numpy --experiments mlp,cnn --no-baseline \
    --steps-sweep "" "${nb[@]}" --floor-steps 0 --busy-steps 0 --out "$results/bench_numpy.json"
  step cpu_epoch 60 dry "$PY" -m snnsim.train --config fashion_mnist_cnn --backend numpy --epochs 1 \
    --train-subset 200 --test-subset 100 --progress=false "${data_args[@]}" --out "$results/cpu_epoch"
  step bench_cupy_slow 85 gpu "$PY" -m snnsim.bench --backends cupy --experiments mlp,cnn \
    --steps-sweep 5,30,100 --batches 10 --out "$results/bench_cupy_slow.json"
}

# a command as it is shown: arguments with spaces quoted, a Python program by its step's name
show() {
  local name=$1 a out=""; shift
  for a in "$@"; do
    case $a in
      *$'\n'*) a="<the $name program of scripts/gpu_check.sh>" ;;
      ''|*[[:space:]]*) a="'$a'" ;;
    esac
    out+="${out:+ }$a"
  done
  printf '%s' "$out"
}

# plan mode: the GPU run's steps, their limits and their sum
total=0 count=0
declare -a listing=()
step_plan() {
  local name=$1 limit=$2 where=$3; shift 3
  if [ "$where" != dry ]; then total=$((total + limit + GRACE)); fi
  if [ "$where" != dry ] || [ -n "$dry" ]; then count=$((count + 1)); fi
  listing+=("$(printf '  %-16s %-4s %4d s  %s' "$name" "$where" "$limit" "$(show "$name" "$@")")")
}
step() { step_plan "$@"; }
plan
echo "== plan: the steps of a GPU run take at most $total s, limits and ${GRACE} s each to stop" \
     "included (at most $BUDGET); 'dry' steps run in a dry run only"
printf '%s\n' "${listing[@]}"
[ "$total" -le "$BUDGET" ] || die "the GPU run's time limits add up to $total s, over $BUDGET s: shorten them" 1
[ -z "$plan_only" ] || exit 0

# run mode
: > "$results/summary.txt"
failed=0 index=0 gpu_ok=1
note() { printf '%-16s %s\n' "$1" "$2" >> "$results/summary.txt"; }
step_run() {
  local name=$1 limit=$2 where=$3; shift 3
  if [ "$where" = dry ] && [ -z "$dry" ]; then return; fi
  index=$((index + 1))
  if [ "$where" = gpu ] && [ -n "$dry" ]; then
    echo "== [$index/$count] $name: the GPU run would run (at most $limit s): $(show "$name" "$@")"
    if [ "$name" = pytest_gpu ]; then        # its tests: collect_gpu
      note "$name" "dry run: not run"
    elif timeout "$limit" "$1" -c "$ARGS_CHECK" "${@:2}" > "$results/$name.log" 2>&1; then
      note "$name" "dry run: not run; its command parses"
    else
      echo "-- $name: its command does not parse:"
      cat "$results/$name.log"
      note "$name" "dry run: its command does not parse (see $name.log)"
      failed=1
    fi
    return
  fi
  if [ "$where" = gpu ] && [ "$gpu_ok" = 0 ]; then
    echo "== [$index/$count] $name: not run, CuPy is not usable (gpu_info.log)"
    note "$name" "not run: CuPy is not usable (gpu_info.log)"
    failed=1
    return
  fi
  echo "== [$index/$count] $name (at most $limit s): $(show "$name" "$@")"
  local t0=$SECONDS
  timeout --signal=INT --kill-after="$GRACE" "$limit" "$@" 2>&1 | tee "$results/$name.log"
  local rc=${PIPESTATUS[0]} why=""
  [ "$rc" = 124 ] && why=" (its time limit, $limit s, was reached)"
  echo "-- $name: exit $rc after $((SECONDS - t0)) s$why"
  note "$name" "$(printf 'exit %-3s %4d s  %s' "$rc" $((SECONDS - t0)) "$(show "$name" "$@")")"
  if [ "$rc" != 0 ]; then
    failed=1
    [ "$name" = gpu_info ] && gpu_ok=0
  fi
  return 0
}
step() { step_run "$@"; }

echo "== results in $results; python $PY; kit ${kit:-none}; $([ -n "$dry" ] && echo "dry run")"
plan

# on a GPU no GPU test may skip (a skip there means CuPy or the device was not usable)
skipped=$(grep -o 'skipped="[0-9]*"' "$results/pytest_gpu.xml" 2>/dev/null | head -n 1 | tr -dc 0-9)
if [ -z "$dry" ] && [ "${skipped:-0}" != 0 ]; then
  note pytest_gpu "$skipped GPU tests skipped: is CuPy usable? (see pytest_gpu.log)"
  failed=1
fi
# collected but not one GPU test: the marker or the collection is broken
collected=$(grep -oE '[0-9]+(/[0-9]+)? tests? collected' "$results/collect_gpu.log" 2>/dev/null | head -n 1 | cut -d/ -f1 | cut -d' ' -f1)
if [ -n "$dry" ] && [ "${collected:-0}" = 0 ]; then
  note collect_gpu "no GPU test collected (see collect_gpu.log)"
  failed=1
fi

echo "== summary ($results/summary.txt)"
cat "$results/summary.txt"
exit "$failed"
