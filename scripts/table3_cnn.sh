#!/usr/bin/env bash
# Table 3's Fashion-MNIST CNN row on a CPU: start, or resume, the study in the background.
#
#   bash scripts/table3_cnn.sh [tsslbp|surrogate] [--workers=N] [--seeds=LIST] [--stop]
#
# tsslbp (default): 5 seeds x 100 epochs of the CNN 32C5-P2-64C5-P2-1024-10, the authors'
# preset and TSSL-BP, as the paper. surrogate: seeds 0 and 1 with --backward=surrogate, the
# CNN's answer to the 100-epoch MLP comparison. Two workers (--workers=N: N), one BLAS
# thread each (the 2-core machine), each in the background with its log in the study
# folder; --workers=1 for each study shares the machine between the two. --seeds=2,3,4:
# these seeds instead (a study made again on a new machine need not repeat the runs whose
# results reference/table3_cnn/runs.json keeps; see reference/make_table3_cnn.py).
#
# The study folder is outside the repository, $SNNSIM_STUDIES (default ~/studies), so that
# it outlives a fresh clone: table3-cnn/ or table3-cnn-surrogate/. The workers run from a
# clone of this repository pinned at the commit of the checkout that starts them
# ($SNNSIM_STUDIES/src), so that later commits reach a run only when the script is run
# again (by design only changes that keep a step bit-identical: a resumed run picks them
# up without a change to its result). Running the script again resumes: a worker killed
# with its session leaves its trial RUNNING; the next worker on this machine finds that
# worker's process gone and retries the trial from its last checkpoint, before any run
# not yet started (a worker elsewhere waits --grace, 10 min here). --max-retry is high
# because every session end is one retry.
#
# --stop sends the workers SIGTERM (not SIGINT, which a shell's background job ignores):
# each stops its run resumably (the epoch so far kept in interrupted.h5) and requeues its
# trial. SNNSIM_WORKER_GAP: seconds between the two
# workers' starts (default 20: the first creates the study, the second loads it).
# Progress: python3 -m snnsim.study report "$SNNSIM_STUDIES/table3-cnn".
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
kind=tsslbp stop=0 workers=2 seeds=""
for arg in "$@"; do
  case "$arg" in
    tsslbp|surrogate) kind=$arg ;;
    --stop) stop=1 ;;
    --workers=[1-9]|--workers=[1-9][0-9]) workers=${arg#--workers=} ;;
    --seeds=*) seeds=${arg#--seeds=}
      [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "table3_cnn.sh: --seeds takes a comma-separated" \
        "list of integers, e.g. --seeds=2,3,4 (got '$seeds')" >&2; exit 2; } ;;
    *) echo "table3_cnn.sh: unknown argument '$arg' (usage: table3_cnn.sh [tsslbp|surrogate]" \
            "[--workers=N] [--seeds=LIST] [--stop])" >&2; exit 2 ;;
  esac
done
studies=${SNNSIM_STUDIES:-$HOME/studies}
py=${SNNSIM_PYTHON:-$repo/.venv/bin/python3}
case "$kind" in
  tsslbp) dir=$studies/table3-cnn; args=(--seeds "${seeds:-0,1,2,3,4}") ;;
  surrogate) dir=$studies/table3-cnn-surrogate; args=(--seeds "${seeds:-0,1}" --backward=surrogate) ;;
esac
if [ "$stop" = 1 ]; then
  pkill -TERM -f "snnsim.study run $dir( |$)" && echo "asked the workers of $dir to stop" \
    || echo "no worker of $dir is running"
  exit 0
fi
if pgrep -f "snnsim.study run $dir( |$)" >/dev/null; then
  echo "table3_cnn.sh: workers of $dir are already running" >&2; exit 2
fi
[ -x "$py" ] || { echo "table3_cnn.sh: no interpreter $py (run scripts/setup.sh first)" >&2; exit 2; }
src=$studies/src
commit=$(git -C "$repo" rev-parse HEAD)
mkdir -p "$dir"
if [ ! -d "$src/.git" ]; then
  git clone -q "$repo" "$src"
fi
git -C "$src" fetch -q "$repo" "$commit" && git -C "$src" checkout -q --detach "$commit"
echo "workers of $dir run commit $(git -C "$src" log --oneline -1)"
for w in $(seq "$workers"); do
  # (the subshell forks the worker and exits at once: nothing of this script's stdout is
  # held by the workers, so a caller reading it through a pipe is not kept waiting)
  (cd "$src" || exit 1
   OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH="$src" \
     nohup "$py" -m snnsim.study run "$dir" --config fashion_mnist_cnn "${args[@]}" --epochs=100 \
       --grace 600 --max-retry 100 >> "$dir/worker$w.log" 2>&1 < /dev/null &)
  [ "$w" = "$workers" ] || sleep "${SNNSIM_WORKER_GAP:-20}"   # the first creates the study
done
logs=$(for w in $(seq "$workers"); do printf '%s ' "$dir/worker$w.log"; done)
echo "started $workers worker$([ "$workers" = 1 ] || echo s); logs: ${logs% }"
