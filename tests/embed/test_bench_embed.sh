#!/usr/bin/env bash
# test_bench_embed.sh: `limaml bench embed` on a tiny size (3,000 tasks, 1 run, no large run):
# the table has a row for each k and store with positive figures, the PyTorch side gives the
# same embeddings (median difference at float rounding) and a ratio, nothing is left running or
# on disk but the reusable dataset; bad options fail with a clear message and exit status 2.
# Environment: LM_BIN, LM_TMP, LM_SRC. The PyTorch part runs when LM_PYREF_PYTHON is set (make
# test sets it), is skipped otherwise unless LM_REQUIRE_TORCH=1; Redis when redis-server is
# installed.
set -u
BIN=${LM_BIN:?LM_BIN must name the limaml binary}
TMP=${LM_TMP:-/tmp/limaml-test}/test_bench_embed.$$
rm -rf "$TMP"
mkdir -p "$TMP"
LM_TEST_TAIL=5
. "$(dirname "$0")/../lm_test.sh"

torch=()
if [ -n "${LM_PYREF_PYTHON:-}" ]; then
    torch=(--python "$LM_PYREF_PYTHON")
elif [ "${LM_REQUIRE_TORCH:-0}" = 1 ]; then
    bad "LM_REQUIRE_TORCH=1 but LM_PYREF_PYTHON is not set"
    exit 1
else
    echo "skip: the PyTorch side (LM_PYREF_PYTHON is not set)"
    torch=(--no-torch)
fi
backends=lmdb,redis
command -v redis-server >/dev/null 2>&1 || { backends=lmdb; echo "skip: Redis (redis-server is not installed)"; }

start=$(date +%s)
run "$BIN" bench embed --tasks 3000 --runs 1 --big-tasks 0 --torch-tasks 3000 --sample 500 --backends "$backends" \
    --dir "$TMP/d" "${torch[@]}"
check "bench embed runs (exit 0)" test "$rc" -eq 0
cat "$TMP/.out"
check "  ... in a few seconds" test $(($(date +%s) - start)) -lt 60
check "  ... names the data and the model" grep -q "^bench embed: 3000 tasks .*initialised as \`limaml train\` starts" "$TMP/.out"
# rows: k store tasks/s seconds cpu-s bytes/task peak-RSS peak-anon runs, every figure positive
rows() { awk -v k="$1" -v s="$2" '$1 == k && $2 == s && $3 > 0 && $4 > 0 && $5 > 0 && $6 > 0 && $7 > 0 && $8 > 0' "$TMP/.out" | wc -l; }
for k in 1 5; do
    for s in ${backends//,/ }; do
        check "  ... a row for k = $k, $s, with positive figures" test "$(rows $k $s)" -eq 1
    done
done
check "  ... LMDB takes between 64 and 1,000 bytes per task (E = 16 floats)" \
    awk '$2 == "lmdb" && $1 == 1 { exit !($6 >= 64 && $6 < 1000) }' "$TMP/.out"
if [ "${torch[0]}" = --python ]; then
    # k torch-t/s ours-t/s ratio max-diff median-diff over/compared ...
    check "  ... PyTorch rows for k = 1 and 5 with a ratio" \
        test "$(awk '($1 == 1 || $1 == 5) && $2 > 0 && $4 ~ /x$/ && $7 ~ /\/500$/' "$TMP/.out" | wc -l)" -eq 2
    check "  ... the same embeddings (median difference < 1e-5)" \
        awk '($1 == 1 || $1 == 5) && $4 ~ /x$/ { n++; if (!($6 < 1e-5)) bad = 1 } END { exit bad || n != 2 }' "$TMP/.out"
fi
check "  ... leaves no store or torch input behind" \
    test -z "$(ls "$TMP/d" | grep -v -E '^(embed-3000|embed-init.safetensors|redis)$')"
check "  ... and no redis-server of its own" test ! -f "$TMP/d/redis/redis.pid"

# reuse of the dataset: a second run does not prepare again
run "$BIN" bench embed --tasks 3000 --runs 1 --big-tasks 0 --steps 1 --backends lmdb --no-torch --dir "$TMP/d"
check "a second run reuses the dataset" bash -c "test $rc -eq 0 && ! grep -q preparing '$TMP/.err'"

# bad options: exit 2, a message naming the problem, nothing started
run "$BIN" bench embed --steps 1,x --dir "$TMP/bad"
check "--steps 1,x is refused (exit 2)" test "$rc" -eq 2
check "  ... with a clear message" grep -q "limaml bench embed: --steps: '1,x' is not a list" "$TMP/.err"
check "  ... before any work" test ! -e "$TMP/bad"
run "$BIN" bench embed --backends lmdb,memcached --dir "$TMP/bad"
check "--backends lmdb,memcached is refused (exit 2)" bash -c "test $rc -eq 2 && grep -q \"'memcached' is not lmdb or redis\" '$TMP/.err'"
run "$BIN" bench embed --runs 0 --dir "$TMP/bad"
check "--runs 0 is refused (exit 2)" bash -c "test $rc -eq 2 && grep -q 'runs must be in' '$TMP/.err'"
run "$BIN" bench embed --tasks 10 --dir "$TMP/bad"
check "--tasks 10 is refused (exit 2)" bash -c "test $rc -eq 2 && grep -q 'tasks must be in' '$TMP/.err'"
run "$BIN" bench embed --no-such-option
check "an unknown option is refused (exit 2)" test "$rc" -eq 2
run env -u LM_PYREF_PYTHON "$BIN" bench embed --tasks 3000 --dir "$TMP/bad"
check "no python and no --no-torch: exit 1 with a message" \
    bash -c "test $rc -eq 1 && grep -q 'no python for the PyTorch side' '$TMP/.err'"
run "$BIN" bench embed --help
check "--help lists every option with its default" \
    bash -c "test $rc -eq 0 && grep -q -- '--big-tasks N .*(default: 10000000)' '$TMP/.out' && grep -q -- '--steps LIST .*(default: 1,5)' '$TMP/.out'"

rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
