#!/usr/bin/env bash
# test_embed.sh: `limaml embed` and `limaml store` end to end: stored embeddings equal `limaml
# adapt` bit for bit; a run killed with SIGKILL leaves the previous version serving, whole;
# LMDB and Redis hold identical vectors; incremental runs carry unchanged tasks over; an
# ensemble stores its members' embeddings end to end; bad URLs, a model of another embedding
# size and a full disk fail clearly and lose nothing.
# Environment: LM_BIN, LM_TMP, LM_SRC. Redis is required unless LM_SKIP_REDIS=1.
set -u
BIN=${LM_BIN:?LM_BIN must name the limaml binary}
SRC=${LM_SRC:?LM_SRC must name the source folder}
TMP=${LM_TMP:-/tmp/limaml-test}/test_embed.$$
rm -rf "$TMP"
mkdir -p "$TMP"
. "$(dirname "$0")/../lm_test.sh"
redis_dir="$TMP/redis"
cleanup() { bash "$SRC/scripts/redis-test-server.sh" stop "$redis_dir" >/dev/null 2>&1; }
trap cleanup EXIT

"$BIN" synth --tasks 1500 --mean-examples 20 --seed 3 --out "$TMP/log.csv" >/dev/null
"$BIN" prepare --schema "$TMP/log.csv.schema.json" --in "$TMP/log.csv" --out "$TMP/ds" >/dev/null
run "$BIN" train --data "$TMP/ds" --epochs 2 --lr 0.01 --quiet --out "$TMP/m.st"
check "train" test "$rc" -eq 0
L="lmdb://$TMP/store"

run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "$L" --version v1 --steps 2 --quiet
check "embed v1 into LMDB" test "$rc" -eq 0
check "  ... reports every task" grep -q "1500 embeddings" "$TMP/.out"
keys=$(cut -d, -f1 "$TMP/log.csv" | sed 1d | sort -u | head -6)
same=1
for k in $keys; do
    a=$("$BIN" store get --store "$L" --key "$k" | sed 's/.*"embedding"://')
    b=$("$BIN" adapt --model "$TMP/m.st" --data "$TMP/ds" --task "$k" --steps 2 --adapt-from all | sed 's/.*"embedding"://')
    [ -n "$a" ] && [ "$a" = "$b" ] || { same=0; echo "  task $k: store $a / adapt $b"; }
done
check "stored embeddings equal limaml adapt, bit for bit (6 tasks)" test "$same" -eq 1
run "$BIN" store verify --store "$L"
check "store verify: ok" grep -q "1500 keys, 0 bad sizes, 0 bad values, 0 bad keys, record ok" "$TMP/.out"

# Killed half way: the previous version keeps serving, whole.
before=$("$BIN" store get --store "$L" --key "$(echo "$keys" | head -1)")
"$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "$L" --version v2 --steps 3000 --chunk 64 --threads 1 --quiet \
    >/dev/null 2>&1 &
pid=$!
sleep 1
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
run "$BIN" store ls --store "$L"
check "after SIGKILL, v1 is still current" grep -q "^v1 .*\*" "$TMP/.out"
check "  ... and v2 was begun but is not complete" grep -q "^v2 .*partial" "$TMP/.out"
after=$("$BIN" store get --store "$L" --key "$(echo "$keys" | head -1)")
check "  ... a task reads the same as before" test "$before" = "$after"
run "$BIN" store verify --store "$L"
check "  ... and v1 verifies" test "$rc" -eq 0
run "$BIN" store gc --store "$L" --keep 1
check "gc removes the half-written version" bash -c "! '$BIN' store ls --store '$L' | grep -q '^v2'"

# Many key-order partitions (--chunk 8: partitions of 512 tasks bounded by sampled splitters,
# with the heap as fallback): every task once, and the same vectors as the one-partition run.
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "lmdb://$TMP/store8" --version p --steps 2 --chunk 8 --quiet
check "embed --chunk 8 (several partitions): every task once" grep -q "1500 embeddings (1500 computed" "$TMP/.out"
run "$BIN" store verify --store "lmdb://$TMP/store8"
check "  ... and the store verifies" grep -q "1500 keys, 0 bad sizes, 0 bad values, 0 bad keys, record ok" "$TMP/.out"
same=1
for k in $(cut -d, -f1 "$TMP/log.csv" | sed 1d | sort -u | awk 'NR % 97 == 1'); do
    a=$("$BIN" store get --store "$L" --key "$k" --version v1 | sed 's/.*"embedding"://')
    b=$("$BIN" store get --store "lmdb://$TMP/store8" --key "$k" | sed 's/.*"embedding"://')
    [ -n "$a" ] && [ "$a" = "$b" ] || { same=0; echo "  task $k: $a / $b"; }
done
check "  ... with the same vectors as one partition (16 tasks across the key range)" test "$same" -eq 1

# Incremental: nothing changed after the newest example: everything is carried over.
newest=$(cut -d, -f2 "$TMP/log.csv" | sed 1d | sort -n | tail -1)
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "$L" --version v3 --steps 2 --only-changed-since "$newest" --quiet
check "embed --only-changed-since the newest: all carried over" grep -q "0 computed, 1500 carried over" "$TMP/.out"
k1=$(echo "$keys" | head -1)
a=$("$BIN" store get --store "$L" --key "$k1" --version v1 | sed 's/.*"embedding"://')
b=$("$BIN" store get --store "$L" --key "$k1" --version v3 | sed 's/.*"embedding"://')
check "  ... with the same vectors" test "$a" = "$b"

# Incremental on a log that lacks some tasks (a delta, or rows out of the window): the tasks the
# current version holds but the dataset lacks are carried over too, with their vectors.
drop=$(cut -d, -f1 "$TMP/log.csv" | sed 1d | sort -u | head -40 | paste -sd'|')
awk -F, -v d="^($drop)\$" 'NR == 1 || $1 !~ d' "$TMP/log.csv" >"$TMP/log_part.csv"
"$BIN" prepare --schema "$TMP/log.csv.schema.json" --in "$TMP/log_part.csv" --out "$TMP/ds_part" >/dev/null
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds_part" --store "$L" --version v4 --steps 2 --only-changed-since "$newest" --quiet
check "embed --only-changed-since on a log without 40 tasks: they are carried over too" \
    grep -q "1500 embeddings (0 computed, 1500 carried over of which 40 absent from the dataset" "$TMP/.out"
k40=$(echo "$drop" | cut -d'|' -f7)
a=$("$BIN" store get --store "$L" --key "$k40" --version v1 | sed 's/.*"embedding"://')
b=$("$BIN" store get --store "$L" --key "$k40" --version v4 | sed 's/.*"embedding"://')
check "  ... with their vectors (task $k40)" bash -c "[ -n '$a' ] && [ '$a' = '$b' ]"
run "$BIN" store verify --store "$L" --version v4
check "  ... and the version verifies" grep -q "1500 keys, 0 bad sizes, 0 bad values, 0 bad keys, record ok" "$TMP/.out"

# f16 and int8 encodings round trip within their precision.
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "lmdb://$TMP/store16" --version h --steps 2 --encoding f16 --quiet
check "embed --encoding f16" test "$rc" -eq 0
h=$("$BIN" store get --store "lmdb://$TMP/store16" --key "$k1" | sed 's/.*\[//; s/\].*//')
f=$("$BIN" store get --store "$L" --key "$k1" --version v1 | sed 's/.*\[//; s/\].*//')
check "  ... within half precision of f32" python3 -c "
import sys
a=[float(x) for x in '$h'.split(',')]; b=[float(x) for x in '$f'.split(',')]
sys.exit(0 if len(a)==len(b) and all(abs(x-y) <= 1e-3*max(1,abs(y)) for x,y in zip(a,b)) else 1)"

# An ensemble (limaml ensemble of two members trained with other seeds): its stored vector is the
# members' embeddings end to end (2 E floats), each equal to that member's own `limaml adapt`, and
# `limaml adapt` of the ensemble prints the same 2 E floats; incremental runs carry the 2 E floats
# over, the tasks absent from the dataset included.
run "$BIN" train --data "$TMP/ds" --epochs 1 --lr 0.01 --seed 9 --quiet --out "$TMP/m2.st"
check "train a second member (another seed)" test "$rc" -eq 0
run "$BIN" ensemble --out "$TMP/e.st" "$TMP/m.st" "$TMP/m2.st"
check "limaml ensemble packs the two" test "$rc" -eq 0
E1=$("$BIN" adapt --model "$TMP/m.st" --data "$TMP/ds" --task "$k1" --steps 2 --adapt-from all | sed 's/.*"embedding"://' | tr ',' '\n' | wc -l)
EL="lmdb://$TMP/store_ens"
run "$BIN" embed --model "$TMP/e.st" --data "$TMP/ds" --store "$EL" --version e1 --steps 2 --quiet
check "embed an ensemble: every task" grep -q "1500 embeddings (1500 computed" "$TMP/.out"
run "$BIN" store ls --store "$EL"
check "  ... its version holds 2 x E = $((2 * E1)) floats a task, under the ensemble's model id" \
    grep -q "^e1 .*E=$((2 * E1)) .*model limaml:ensemble2:[0-9a-f]\{16\}$" "$TMP/.out"
same=1
for k in $keys; do
    s=$("$BIN" store get --store "$EL" --key "$k" | sed 's/.*"embedding"://')
    e=$("$BIN" adapt --model "$TMP/e.st" --data "$TMP/ds" --task "$k" --steps 2 --adapt-from all | sed 's/.*"embedding"://')
    a=$("$BIN" adapt --model "$TMP/m.st" --data "$TMP/ds" --task "$k" --steps 2 --adapt-from all | sed 's/.*"embedding":\[//; s/\]}$//')
    b=$("$BIN" adapt --model "$TMP/m2.st" --data "$TMP/ds" --task "$k" --steps 2 --adapt-from all | sed 's/.*"embedding":\[//; s/\]}$//')
    [ -n "$s" ] && [ "$s" = "$e" ] && [ "$s" = "[$a,$b]}" ] || { same=0; echo "  task $k: store $s / adapt $e / members [$a,$b]"; }
done
check "  ... equal to limaml adapt of the ensemble and to the members' own, end to end, bit for bit (6 tasks)" test "$same" -eq 1
n=$(echo "$e" | tr ',' '\n' | wc -l)
check "limaml adapt of a 2-member ensemble prints 2 x E = $((2 * E1)) floats" test "$n" -eq $((2 * E1))
run "$BIN" embed --model "$TMP/e.st" --data "$TMP/ds_part" --store "$EL" --version e2 --steps 2 --only-changed-since "$newest" --quiet
check "an ensemble, --only-changed-since on the log without 40 tasks: all carried over" \
    grep -q "1500 embeddings (0 computed, 1500 carried over of which 40 absent from the dataset" "$TMP/.out"
a=$("$BIN" store get --store "$EL" --key "$k40" --version e1 | sed 's/.*"embedding"://')
b=$("$BIN" store get --store "$EL" --key "$k40" --version e2 | sed 's/.*"embedding"://')
check "  ... with their 2 x E floats (task $k40)" bash -c "[ -n '$a' ] && [ '$a' = '$b' ]"
run "$BIN" store verify --store "$EL" --version e2
check "  ... and the version verifies" grep -q "1500 keys, 0 bad sizes, 0 bad values, 0 bad keys, record ok" "$TMP/.out"
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "$EL" --version single --quiet
check "one member alone into the ensemble's store: refused (another width)" test "$rc" -eq 1

# Errors.
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "foo://x" --version z --quiet
check "a bad URL: exit 1 naming the scheme" bash -c "[ $rc -eq 1 ] && grep -q 'foo' '$TMP/.err'"
touch "$TMP/afile"
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "lmdb://$TMP/afile" --version z --quiet
check "a store path that is a file: exit 1" test "$rc" -eq 1
run "$BIN" train --data "$TMP/ds" --epochs 1 --quiet --meta-block mlp:8,8 --out "$TMP/m8.st"
run "$BIN" embed --model "$TMP/m8.st" --data "$TMP/ds" --store "$L" --version e8 --quiet
check "a model of another embedding size is refused" test "$rc" -eq 1
run "$BIN" store ls --store "$L"
check "  ... and v4 still serves" grep -q "^v4 .*\*" "$TMP/.out"
run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "lmdb://$TMP/tiny?mapsize=64K" --version full --steps 1 --quiet
check "a full store fails with a clear message" bash -c "[ $rc -eq 1 ] && grep -qi 'full' '$TMP/.err'"
run "$BIN" store get --store "$L" --key no-such-task
check "get of an unknown task: exit 1 naming it" grep -q "no-such-task" "$TMP/.err"

# Redis holds the same vectors as LMDB.
if port=$(bash "$SRC/scripts/redis-test-server.sh" start "$redis_dir" 2>"$TMP/.err"); then
    R="redis://127.0.0.1:$port/0"
    run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds" --store "$R" --version v1 --steps 2 --quiet
    check "embed into Redis" test "$rc" -eq 0
    same=1
    for k in $keys; do
        a=$("$BIN" store get --store "$L" --key "$k" --version v1)
        b=$("$BIN" store get --store "$R" --key "$k")
        [ -n "$a" ] && [ "$a" = "$b" ] || same=0
    done
    check "LMDB and Redis give identical vectors" test "$same" -eq 1
    run "$BIN" embed --model "$TMP/m.st" --data "$TMP/ds_part" --store "$R" --version v4 --steps 2 --only-changed-since "$newest" --quiet
    check "Redis: --only-changed-since on the log without 40 tasks carries them over" \
        grep -q "1500 embeddings (0 computed, 1500 carried over of which 40 absent from the dataset" "$TMP/.out"
    a=$("$BIN" store get --store "$L" --key "$k40" --version v4)
    b=$("$BIN" store get --store "$R" --key "$k40")
    check "  ... the same vector as LMDB's (task $k40)" bash -c "[ -n '$b' ] && [ '$a' = '$b' ]"
elif [ "${LM_SKIP_REDIS:-0}" = 1 ]; then
    echo "skip: Redis (LM_SKIP_REDIS=1)"
else
    bad "redis-server could not be started (install redis-server, or LM_SKIP_REDIS=1)"
fi

cleanup
rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
