#!/usr/bin/env bash
# Makes a venv with schemathesis (PyPI), the property-based tester tests/serve/test_serve.sh runs
# against the live server and docs/openapi.yaml. Idempotent, and quick and quiet when it is
# there. The `st` command's path is printed on the last line, so
#   st=$(scripts/setup-schemathesis.sh build/schemathesis-venv | tail -1)
# Usage: scripts/setup-schemathesis.sh [VENV_DIR]   (default: build/schemathesis-venv)
set -euo pipefail

venv=${1:-build/schemathesis-venv}
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
st="$venv/bin/st"
spec='schemathesis>=4.0,<5'

# fast path: the venv is there and runs
if [ -x "$st" ] && "$st" --version >/dev/null 2>&1; then
  echo "$st"
  exit 0
fi

# Debian's venv module
"$(dirname "$0")/install-deps.sh" --only python3-venv

# Debian's python3 (a pyenv python3 may come first on PATH); a lock so that parallel test runs
# do not build the same venv at once
exec 9>"$venv.lock"
flock 9
if [ ! -x "$st" ] || ! "$st" --version >/dev/null 2>&1; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$spec" >&2
fi
if ! "$st" --version >&2; then
  echo "setup-schemathesis: $st does not run" >&2
  exit 1
fi
echo "$st"
