#!/usr/bin/env bash
# Makes a Python that can run the tree-model baseline tools/tree_baseline.py: a venv over
# /usr/bin/python3 with lightgbm, numpy and scikit-learn from PyPI (python3-venv from Debian if
# missing, installed only as root). Idempotent, and quick and quiet when everything is there.
# The venv's python is printed on the last line, so
#   py=$(scripts/setup-gbm.sh build/gbm-venv | tail -1)
#   "$py" tools/tree_baseline.py --ml ../shared/data/ml-100k
# Usage: scripts/setup-gbm.sh [VENV_DIR]   (default: build/gbm-venv)
set -euo pipefail

venv=${1:-build/gbm-venv}
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
py="$venv/bin/python"
probe='import lightgbm, numpy, sklearn.metrics'

# fast path: the venv is there and imports all three
if [ -x "$py" ] && "$py" -c "$probe" >/dev/null 2>&1; then
  echo "$py"
  exit 0
fi

# Debian's venv module, for /usr/bin/python3
"$(dirname "$0")/install-deps.sh" --only python3-venv

# a venv of its own (no system site-packages: PyPI's wheels only), with the three packages
if [ ! -x "$py" ]; then
  /usr/bin/python3 -m venv "$venv" >&2
fi
if ! "$py" -c "$probe" >/dev/null 2>&1; then
  "$py" -m pip install -q --disable-pip-version-check \
    'lightgbm>=4,<5' 'numpy>=1.24' 'scikit-learn>=1.2' >&2
fi
if ! "$py" -c "$probe" >&2; then
  echo "setup-gbm: $py cannot import lightgbm, numpy and scikit-learn" >&2
  exit 1
fi
echo "$py"
