#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: everything the CPU-only CI cannot prove.
#
#   bash scripts/gpu_check.sh [RESULTS_DIR]      # default: $OUT, else gpu-results-<date>-<time>
#
# Runs, each step with its own time limit (about 10 minutes of GPU time in all), and writes
# everything into RESULTS_DIR:
#   gpu.txt             the GPU, driver and CUDA as nvidia-smi and CuPy see them
#   pytest_gpu.log/.xml pytest -m gpu: NumPy-CuPy parity, the fused kernels (tolerances in the tests)
#   bench_cupy.json/.log  python3 -m snnsim.bench on cupy: Fashion-MNIST MLP and CNN, the step with
#                       and without the fused kernels (the bench runs both) and the O(T²) baseline,
#                       and peak GPU memory of one MLP step at T = 5, 30, 100
#   bench_numpy.json/.log the same MLP and CNN steps on numpy on this machine's CPU (for the ratio;
#                       no baseline, no memory sweep: those take minutes on a CPU)
#   train_cnn/, train_cnn.log
#                       one epoch of the Fashion-MNIST CNN with --backend cupy --fused=true
#   summary.txt         one line per step: its exit status and seconds
# A failing step does not stop the others; the script exits 1 if any step failed.
#
# Settings (environment): PYTHON (default .venv/bin/python3, else python3); SNNSIM_DATA_DIR (where
# Fashion-MNIST's IDX files are; see data/README.md); BENCH_BATCHES (timed batches on cupy,
# default 20). CuPy is installed if missing (`pip install cupy-cuda12x`);
# on a machine without network, point pip at local wheels: PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR.
# The bench's options change with the bench (see `python3 -m snnsim.bench --help`): adjust the
# two bench lines below.
set -uo pipefail
cd "$(dirname "$0")/.."

RESULTS=${1:-${OUT:-gpu-results-$(date +%Y%m%d-%H%M%S)}}
PY=${PYTHON:-.venv/bin/python3}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci MPLBACKEND=Agg

mkdir -p "$RESULTS" || { echo "gpu_check: cannot create $RESULTS" >&2; exit 2; }
RESULTS=$(cd "$RESULTS" && pwd)
: > "$RESULTS/summary.txt"
failed=0

# step NAME SECONDS COMMAND...: run with a time limit, output to NAME.log, status to summary.txt
step() {
  local name=$1 limit=$2; shift 2
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%-12s exit %-3s %4d s  %s\n' "$name" "$rc" $((SECONDS - t0)) "$*" >> "$RESULTS/summary.txt"
  [ "$rc" = 0 ] || failed=1
}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi not found: this script needs a machine with an NVIDIA GPU" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv > "$RESULTS/gpu.txt"
cat "$RESULTS/gpu.txt"

if ! "$PY" -c "import cupy" >/dev/null 2>&1; then
  echo "== installing CuPy (cupy-cuda12x) into $("$PY" -c 'import sys; print(sys.prefix)')"
  "$PY" -m pip install -q --disable-pip-version-check cupy-cuda12x \
    || { echo "gpu_check: could not install cupy-cuda12x (see above)" >&2; exit 1; }
fi
"$PY" - >> "$RESULTS/gpu.txt" <<'EOF'
import cupy
dev = cupy.cuda.Device()
props = cupy.cuda.runtime.getDeviceProperties(dev.id)
print(f"cupy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
      f"driver {cupy.cuda.runtime.driverGetVersion()}, device {props['name'].decode()}, "
      f"sm_{props['major']}{props['minor']}")
EOF
tail -n 1 "$RESULTS/gpu.txt"

step pytest_gpu 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$RESULTS/pytest_gpu.xml"
skipped=$(grep -o 'skipped="[0-9]*"' "$RESULTS/pytest_gpu.xml" 2>/dev/null | head -n 1 | tr -dc 0-9)
if [ "${skipped:-0}" != 0 ]; then   # on a GPU machine no GPU test may skip
  echo "pytest_gpu   $skipped GPU tests skipped: is CuPy usable? (see pytest_gpu.log)" >> "$RESULTS/summary.txt"
  failed=1
fi
step bench_cupy 200 "$PY" -m snnsim.bench --backends cupy --experiments mlp,cnn \
  --batches "${BENCH_BATCHES:-20}" --steps-sweep 5,30,100 --out "$RESULTS/bench_cupy.json"
step bench_numpy 90 "$PY" -m snnsim.bench --backends numpy --experiments mlp,cnn \
  --batches 5 --max-batches-slow 2 --no-baseline --steps-sweep "" --out "$RESULTS/bench_numpy.json"
step train_cnn 180 "$PY" -m snnsim.train --config fashion_mnist_cnn --backend cupy --fused=true \
  --epochs 1 --progress=false --out "$RESULTS/train_cnn"

echo "== summary ($RESULTS/summary.txt)"
cat "$RESULTS/summary.txt"
exit "$failed"
