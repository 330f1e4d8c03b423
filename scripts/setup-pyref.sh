#!/usr/bin/env bash
# Makes a Python that can run the PyTorch reference scripts in tools/ (tools/torch_ref.py):
# Debian's python3-torch (it belongs to /usr/bin/python3, not to a pyenv python3 first on PATH)
# plus safetensors from PyPI, in a venv that sees the system packages. Idempotent, and quick
# and quiet when everything is there. The venv's python is printed on the last line, so
#   export LM_PYREF_PYTHON=$(scripts/setup-pyref.sh build/pyref-venv | tail -1)
# Usage: scripts/setup-pyref.sh [VENV_DIR]   (default: build/pyref-venv)
set -euo pipefail

venv=${1:-build/pyref-venv}
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
py="$venv/bin/python"
probe='import torch, safetensors.torch'

# fast path: the venv is there and imports both
if [ -x "$py" ] && "$py" -c "$probe" >/dev/null 2>&1; then
  echo "$py"
  exit 0
fi

# Debian's torch and venv, for /usr/bin/python3
"$(dirname "$0")/install-deps.sh" --only python3-torch python3-venv

# a venv over the system site-packages (torch), with safetensors from PyPI
if [ ! -x "$py" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv" >&2
fi
if ! "$py" -c 'import safetensors.torch' >/dev/null 2>&1; then
  "$py" -m pip install -q --disable-pip-version-check 'safetensors>=0.4,<1' >&2
fi
if ! "$py" -c "$probe" >&2; then
  echo "setup-pyref: $py cannot import torch and safetensors" >&2
  exit 1
fi
echo "$py"
