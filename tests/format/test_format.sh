#!/usr/bin/env bash
# test_format.sh: every C source follows .clang-format (STYLE.md: "checked in CI").
# scripts/format.sh fixes what this reports. Environment: LM_SRC.
set -u
SRC=${LM_SRC:?LM_SRC must name the source folder}
if ! command -v clang-format >/dev/null; then
    if [ "${LM_SKIP_FORMAT:-0}" = 1 ]; then echo "skip: clang-format (LM_SKIP_FORMAT=1)"; exit 0; fi
    echo "FAIL: clang-format is not installed (scripts/install-deps.sh test installs it; or LM_SKIP_FORMAT=1)"
    exit 1
fi
if bash "$SRC/scripts/format.sh" --check 2>"${TMPDIR:-/tmp}/format.$$"; then
    echo "ok: every C source follows .clang-format"
    rm -f "${TMPDIR:-/tmp}/format.$$"
    exit 0
fi
head -40 "${TMPDIR:-/tmp}/format.$$"
echo "FAIL: $(grep -c 'warning:' "${TMPDIR:-/tmp}/format.$$") lines differ from .clang-format: run scripts/format.sh"
rm -f "${TMPDIR:-/tmp}/format.$$"
exit 1
