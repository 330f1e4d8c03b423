#!/usr/bin/env bash
# Format (or with --check, only check) every C source of the repository with .clang-format.
# Usage: scripts/format.sh [--check]. Needs clang-format (scripts/install-deps.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format: clang-format is not installed (scripts/install-deps.sh test)" >&2; exit 2; }
# Left out: templates written with token-pasting calls, LM_NN_FN(name)(args), and kernel
# tables of tile macros, which clang-format 14 cannot lay out (it splits the call from its
# arguments, and its output is not stable from one pass to the next). They keep the same rules
# by hand.
skip='^(src/nn/mlp_impl\.h|src/meta/net_impl\.h|src/meta/batch_embed_impl\.h|src/meta/batch_avx2\.c|src/meta/batch_avx512\.c)$'
mapfile -t files < <(find include src tests tools -name '*.c' -o -name '*.h' | sort | grep -Ev "$skip")
if [ "${1:-}" = --check ]; then
    clang-format --style=file --dry-run -Werror "${files[@]}"
else
    clang-format --style=file -i "${files[@]}"
fi
