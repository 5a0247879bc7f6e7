#!/usr/bin/env bash
# Set up snnsim on a fresh Debian/Ubuntu machine: the Fashion-MNIST data package
# and the Python package with its dependencies. Safe to run again.
#   bash scripts/setup.sh          # to train
#   bash scripts/setup.sh --test   # also the test dependencies (pytest, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "== installing the Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: no apt-get here; put the Fashion-MNIST IDX files in data/fashion-mnist/ (see data/README.md)"
  fi
fi

PY=${PYTHON:-python3}
echo "== installing snnsim$extras with $($PY --version)"
$PY -m pip install -q --disable-pip-version-check -e ".$extras"
