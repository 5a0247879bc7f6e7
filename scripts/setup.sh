#!/usr/bin/env bash
# Set up snnsim on a fresh Debian/Ubuntu machine, with the system's own python3
# (PEP 668: no global pip). Safe to run again.
#
#   bash scripts/setup.sh          # to train
#   bash scripts/setup.sh --test   # also the test dependencies (pytest, hypothesis, ...)
#
# What it does:
#   1. Debian packages, when missing: dataset-fashion-mnist (Fashion-MNIST in
#      /usr/share/datasets/fashion-mnist/) and python3-venv (venv + pip for the
#      system interpreter); with --test also openmpi-bin + libopenmpi-dev (mpi4py,
#      data-parallel tests), postgresql (the study's PostgreSQL test) and chromium
#      (tests/test_site.py opens the documentation site headless). Uses sudo when
#      not root.
#   2. A virtual environment in .venv/ (override with SNNSIM_VENV=DIR), made with
#      $PYTHON (default: python3), and snnsim installed into it in editable mode.
# Afterwards run commands with .venv/bin/python3 (or `source .venv/bin/activate`).
set -euo pipefail
cd "$(dirname "$0")/.."

# the fast extra: numba kernels of the NumPy training step (snnsim/fast_kernels.py);
# the test extra includes it
testing=""
extras="[fast]"
[ "${1:-}" = "--test" ] && testing=1 && extras="[test]"
PY=${PYTHON:-python3}
VENV=${SNNSIM_VENV:-.venv}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here; install $* by other means" >&2
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq || true
    apt_updated=1
  fi
  echo "== installing the Debian package(s) $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  apt_install dataset-fashion-mnist \
    || echo "note: put the Fashion-MNIST IDX files in data/fashion-mnist/ (see data/README.md)"
fi

# --test: data-parallel tests need an MPI (mpi4py builds against it: mpicc), the
# study's PostgreSQL test a PostgreSQL server (initdb, pg_ctl), the site's test a
# headless browser (chromium), the study script's test pgrep and pkill (procps).
if [ -n "$testing" ]; then
  if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpiexec >/dev/null 2>&1; then
    apt_install openmpi-bin libopenmpi-dev \
      || echo "note: install an MPI (openmpi-bin libopenmpi-dev); the MPI tests will skip"
  fi
  if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql \
      || echo "note: install postgresql; the study's PostgreSQL test will skip"
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium \
      || echo "note: install chromium; the documentation site's browser test will skip"
  fi
  if ! command -v pgrep >/dev/null 2>&1; then     # (scripts/table3_cnn.sh and its test)
    apt_install procps || echo "note: install procps; the study script's test will skip"
  fi
fi

# venv needs ensurepip, which Debian ships separately (python3-venv / python3.X-venv).
if [ ! -x "$VENV/bin/python3" ]; then
  if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install python3-venv "python$ver-venv" || apt_install python3-venv
  fi
  echo "== creating the virtual environment $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi

echo "== installing snnsim$extras into $VENV"
"$VENV/bin/python3" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python3" -m pip install -q --disable-pip-version-check -e ".$extras"
echo "== ready: source $VENV/bin/activate (once per shell), then snnsim --help or"
echo "   python3 -m snnsim.train --help; without activating: $VENV/bin/python3 -m snnsim.train --help"
