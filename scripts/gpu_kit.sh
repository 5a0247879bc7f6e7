#!/usr/bin/env bash
# The kit for a GPU machine without network: what snnsim's GPU check (scripts/gpu_check.sh)
# needs there and such a machine may lack, in one folder that travels with the source tree.
#
#   bash scripts/gpu_kit.sh DIR [--python-version X.Y]    # X.Y: the GPU machine's (default 3.12)
#
# DIR gets:
#   wheels/               the wheels of KIT_PACKAGES below for CPython X.Y on manylinux x86_64
#                         (glibc 2.28 or later: PLATFORMS below)
#                         (pip download --only-binary :all: --no-deps: nothing is built)
#   data/fashion-mnist/   Fashion-MNIST's four IDX files, from wherever snnsim finds them
#                         ($SNNSIM_DATA_DIR, data/, /usr/share/datasets; see data/README.md),
#                         checked against snnsim/datasets/registry.py (gzip-compressed if they
#                         were not)
#   kit.txt               what the kit is for: Python X.Y, when, from which snnsim commit
#   SHA256SUMS            every file above (gpu_check.sh --kit checks them before anything else)
# It prints the kit's size and refuses, writing nothing, when the kit would exceed
# GPU_KIT_MAX_MIB (default 64: what may travel with the source tree to a lent GPU machine).
# An existing kit in DIR is replaced; a DIR holding anything else is refused.
# Put DIR inside the source tree (gpu-kit/ is ignored by git) so that it is copied with it.
#
# KIT_PACKAGES: snnsim's run-time dependencies that a GPU machine may lack. The machines this
# is made for (docs/gpu.md) hold scripts/gpu_machine_packages.txt, CuPy and PyTorch; they lack
# array-api-compat (without it `import snnsim` fails). Wheels are downloaded without their
# dependencies: a package added here whose own dependencies are missing there fails the dry
# run (`gpu_check.sh --kit DIR --dry-run` in a thin environment, as .ci/run does) until they
# are added as well. optuna, array-api-strict, nbclient/nbformat and psycopg2 are not in the
# kit: the GPU check does not need them, and the test modules that do skip without them.
set -uo pipefail

KIT_PACKAGES=(array-api-compat)
# a GPU machine is taken to have glibc 2.28 or later (RHEL 8, Ubuntu 20.04 and later); pip
# expands manylinux2014 to the older manylinux2010 and manylinux1, but a manylinux_2_x tag
# not to the ones below it: hence the list
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64)
MAX_MIB=${GPU_KIT_MAX_MIB:-64}

die() { echo "gpu_kit: $1" >&2; exit "${2:-1}"; }
usage() { sed -n '5p' "$0" | sed 's/^# *//'; }

dir="" pyver=3.12
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) [ $# -ge 2 ] || die "--python-version needs a value such as 3.12" 2
                      pyver=$2; shift 2 ;;
    --python-version=*) pyver=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (usage: bash scripts/gpu_kit.sh DIR [--python-version X.Y])" 2 ;;
    *) [ -z "$dir" ] || die "one DIR only, got $dir and $1" 2; dir=$1; shift ;;
  esac
done
[ -n "$dir" ] || die "no DIR given (usage: bash scripts/gpu_kit.sh DIR [--python-version X.Y])" 2
[[ $pyver =~ ^3\.[0-9]+$ ]] || die "--python-version must look like 3.12, got '$pyver'" 2
[[ $MAX_MIB =~ ^[0-9]+$ ]] || die "GPU_KIT_MAX_MIB must be a whole number of MiB, got '$MAX_MIB'" 2
if [ -e "$dir" ] && { [ ! -d "$dir" ] || { [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/kit.txt" ]; }; }; then
  die "$dir exists and is not a kit (no kit.txt): give a new or empty folder" 2
fi

# DIR's parent made and resolved before the cd: the kit is built next to it, then moved in place
parent=$(mkdir -p "$(dirname "$dir")" && cd "$(dirname "$dir")" && pwd) \
  || die "cannot create the folder that is to hold $dir" 2
dir="$parent/$(basename "$dir")"
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python3}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

tmp=$(mktemp -d "$parent/.gpu-kit.XXXXXX") || die "cannot write in $parent"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"   # mktemp made it private; the kit is for whoever runs the check
mkdir -p "$tmp/wheels" "$tmp/data/fashion-mnist"

echo "== wheels for CPython $pyver, x86_64, glibc 2.28 or later: ${KIT_PACKAGES[*]}"
"$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary :all: \
  --python-version "$pyver" --implementation cp "${PLATFORMS[@]/#/--platform=}" \
  --dest "$tmp/wheels" "${KIT_PACKAGES[@]}" \
  || die "pip could not download ${KIT_PACKAGES[*]} for Python $pyver (see its message above)"

echo "== Fashion-MNIST"
"$PY" - "$tmp/data/fashion-mnist" <<'EOF' || exit 1
import gzip
import shutil
import sys
from pathlib import Path

from snnsim.datasets.errors import DatasetError
from snnsim.datasets.registry import verify_dataset_files

dest = Path(sys.argv[1])
try:
    for check in verify_dataset_files("fashion-mnist"):
        target = dest / (check.entry.filename + ".gz")
        with open(check.path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        if gzipped:
            shutil.copyfile(check.path, target)
        else:  # raw IDX files are 55 MB: compressed they are 30
            with open(check.path, "rb") as src, gzip.GzipFile(target, "wb", mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        print(f"  {check.path} -> {target.name}")
    verify_dataset_files("fashion-mnist", dest)   # the copies, as the check will read them
except DatasetError as exc:
    sys.exit(f"gpu_kit: Fashion-MNIST: {str(exc).splitlines()[0]} (see data/README.md)")
EOF

commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)
{
  echo "snnsim GPU kit, made by scripts/gpu_kit.sh for scripts/gpu_check.sh --kit"
  echo "python $pyver"
  echo "platforms ${PLATFORMS[*]}"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from snnsim commit $commit"
  echo "packages ${KIT_PACKAGES[*]}"
} > "$tmp/kit.txt"
(cd "$tmp" && find wheels data -type f | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

bytes=$(du -sb "$tmp" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
if [ "$bytes" -gt $((MAX_MIB * 1048576)) ]; then
  die "the kit would be $mib MiB, over the $MAX_MIB MiB that may travel with the source tree; nothing written"
fi
rm -rf "$dir" && mv "$tmp" "$dir" || die "cannot move the kit into $dir"
echo "== kit ready: $dir, $mib MiB (at most $MAX_MIB):"
(cd "$dir" && find wheels data -type f | LC_ALL=C sort | sed 's/^/  /')
