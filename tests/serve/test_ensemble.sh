#!/usr/bin/env bash
# test_ensemble.sh: an ensemble (`limaml ensemble` of two LiMAML members trained with other
# seeds) embedded and served end to end: `limaml embed` writes 2 x E floats a task; `limaml replay`
# against `limaml serve` gives `limaml eval`'s AUC and slices after the same adaptation (1e-4, as
# test_serve.sh checks one network); the server's replies equal `limaml score`'s byte for byte;
# the fast engine agrees with the reference (1e-5); an unseen task takes the cold path, which
# equals the members' unadapted meta blocks end to end (1e-6, against a store written with 0
# steps); /v1/embedding and /healthz say 2 x E; a reload to another ensemble is taken, one to a
# single member (another width than the store's) refused. Environment: LM_BIN, LM_TMP, LM_SRC.
set -u
BIN=${LM_BIN:?LM_BIN must name the limaml binary}
SRC=${LM_SRC:?LM_SRC must name the source folder}
TMP=${LM_TMP:-/tmp/limaml-test}/test_ensemble.$$
CLIENT="python3 $SRC/tests/serve/client.py"
rm -rf "$TMP"
mkdir -p "$TMP"
. "$(dirname "$0")/../lm_test.sh"
trap stop_servers EXIT

post() { $CLIENT call "$1" POST "$2" "$3"; }
get() { $CLIENT call "$1" GET "$2" -; }

# ---- two members, the ensemble, its embeddings ----------------------------------------------------
"$BIN" synth --tasks 300 --mean-examples 20 --seed 5 --out "$TMP/log.csv" >/dev/null
"$BIN" prepare --schema "$TMP/log.csv.schema.json" --in "$TMP/log.csv" --out "$TMP/ds" >/dev/null
run "$BIN" train --data "$TMP/ds" --epochs 2 --lr 0.01 --quiet --out "$TMP/m1.st"
check "train member 1" test "$rc" -eq 0
run "$BIN" train --data "$TMP/ds" --epochs 2 --lr 0.01 --seed 9 --quiet --out "$TMP/m2.st"
check "train member 2 (another seed)" test "$rc" -eq 0
run "$BIN" ensemble --out "$TMP/e.st" "$TMP/m1.st" "$TMP/m2.st"
check "limaml ensemble packs them" test "$rc" -eq 0
"$BIN" ensemble --out "$TMP/e_swapped.st" "$TMP/m2.st" "$TMP/m1.st" >/dev/null
k1=$(cut -d, -f1 "$TMP/log.csv" | sed -n 2p)
E1=$("$BIN" adapt --model "$TMP/m1.st" --data "$TMP/ds" --task "$k1" --steps 0 | sed 's/.*"embedding"://' | tr ',' '\n' | wc -l)
L="lmdb://$TMP/store"
run "$BIN" embed --model "$TMP/e.st" --data "$TMP/ds" --store "$L" --version r1 --steps 2 --adapt-from val --quiet
check "embed the ensemble (--adapt-from val --steps 2)" test "$rc" -eq 0
run "$BIN" store ls --store "$L"
check "  ... 2 x E = $((2 * E1)) floats a task" grep -q "^r1 .*E=$((2 * E1)) " "$TMP/.out"

# ---- served as evaluated ------------------------------------------------------------------------
cp "$TMP/e.st" "$TMP/served.st"
start_server A --model "$TMP/served.st" --store "$L" --threads 2
PA=$port
check "serve the ensemble" test -n "$PA"
h=$(get "$PA" /healthz)
check "/healthz: the ensemble's id, embedding_dim 2 x E" bash -c \
    "echo '$h' | grep -q '^200 .*\"model_id\":\"limaml:ensemble2:[0-9a-f]*\".*\"embedding_dim\":$((2 * E1)),'"
run "$BIN" replay --url "http://127.0.0.1:$PA" --data "$TMP/ds" --json
cp "$TMP/.out" "$TMP/replay.json"
"$BIN" eval --model "$TMP/e.st" --data "$TMP/ds" --adapt-steps 2 --json >"$TMP/eval.json"
"$BIN" eval --model "$TMP/m1.st" --data "$TMP/ds" --adapt-steps 2 --json >"$TMP/eval_m1.json"
check "limaml replay: the served AUC and slices equal limaml eval's of the ensemble (1e-4)" python3 -c "
import json, sys
r, e, m = json.load(open('$TMP/replay.json')), json.load(open('$TMP/eval.json')), json.load(open('$TMP/eval_m1.json'))
pairs = [(r['auc'], e['auc'])] + [(r['auc_' + k], e['slices'][k]) for k in ('lt25', 'ge25', 'warm', 'new')]
print('  served %.6f, offline %.6f (member 1 alone %.6f)' % (pairs[0] + (m['auc'],)))
sys.exit(0 if r['candidates'] == e['examples'] and r['cold_start_candidates'] > 0 and
         all(abs(a - b) <= 1e-4 for a, b in pairs) and abs(e['auc'] - m['auc']) > 1e-4 else 1)"

$CLIENT gen "$TMP/log.csv.schema.json" "$TMP/log.csv" 100 40 1 >"$TMP/req.jsonl"
run "$BIN" score --model "$TMP/e.st" --store "$L" --in "$TMP/req.jsonl" --out "$TMP/rep.jsonl"
check "limaml score: 100 requests" bash -c "[ $rc -eq 0 ] && grep -q '100 requests (0 refused)' '$TMP/.err'"
run $CLIENT compare "$PA" "$TMP/req.jsonl" "$TMP/rep.jsonl"
check "  ... the server's replies equal them, byte for byte" test "$rc" -eq 0
run "$BIN" score --model "$TMP/e.st" --store "$L" --in "$TMP/req.jsonl" --out "$TMP/rep_ref.jsonl" --engine reference --quiet
check "  ... and the reference engine's within 1e-5" python3 -c "
import json, sys
w = 0
for a, b in zip(open('$TMP/rep.jsonl'), open('$TMP/rep_ref.jsonl')):
    a, b = json.loads(a), json.loads(b)
    assert a['cold_start'] == b['cold_start'] and len(a['scores']) == len(b['scores'])
    w = max([w] + [abs(x - y) for x, y in zip(a['scores'], b['scores'])])
print('  worst difference %.2e' % w)
sys.exit(0 if w <= 1e-5 else 1)"
a=$(post "$PA" /v1/embedding "{\"task\": {\"user_id\": \"$k1\"}}" | python3 -c "
import json, sys; d = json.loads(sys.stdin.read().split(' ', 1)[1]); print(d['dim'], len(d['embedding']), d['embedding'])")
b=$("$BIN" store get --store "$L" --key "$k1" | python3 -c "import json,sys; print(json.load(sys.stdin)['embedding'])")
check "/v1/embedding: dim 2 x E, the stored vector" test "$a" = "$((2 * E1)) $((2 * E1)) $b"

# ---- cold start: the members' unadapted meta blocks end to end ---------------------------------
# A store written with 0 steps holds each member's unadapted meta block on the task's latest row,
# end to end: a known task scored from it equals the same request for an unknown task.
check_cold_start "an unseen task: the cold path, equal to the members' 0-step embeddings end to end (1e-6)" "$TMP/e.st"

# ---- reloads --------------------------------------------------------------------------------------
cp "$TMP/e_swapped.st" "$TMP/served.st.new" && mv "$TMP/served.st.new" "$TMP/served.st"
r1=$(post "$PA" /admin/reload "")
check "reload to another ensemble of the same width: 200" bash -c "echo '$r1' | grep -q '^200 .*\"model_id\":\"limaml:ensemble2:'"
cp "$TMP/m1.st" "$TMP/served.st.new" && mv "$TMP/served.st.new" "$TMP/served.st"
r2=$(post "$PA" /admin/reload "")
check "reload to one member alone: 409, the store holds 2 x E" bash -c \
    "echo '$r2' | grep -q '^409 .*E=$E1, .*E=$((2 * E1))'"
kill -TERM "$A_pid" 2>/dev/null
wait "$A_pid"
check "SIGTERM stops the server cleanly (exit 0)" test $? -eq 0

cleanup
rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
