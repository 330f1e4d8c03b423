# lm_test.sh: what the shell tests (tests/*/*.sh) share, sourced once they have set BIN and TMP
# (as tests/lm_testcase.h is for the C tests): the pass/fail tally, `run` and `check`, and
# `limaml serve` started on a free loopback port and stopped. LM_TEST_TAIL: how many lines of
# the last command's stderr a failed check shows (default 3).
# shellcheck shell=bash

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL: $1"; [ -n "${2:-}" ] && echo "  $2"; }
# check NAME CMD...: CMD's status decides; a failure shows the tail of the last run's stderr.
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name" "$(tail -"${LM_TEST_TAIL:-3}" "$TMP/.err" 2>/dev/null)"; fi; }
# run CMD...: stdout to $TMP/.out, stderr to $TMP/.err, the status in $rc.
run() { "$@" >"$TMP/.out" 2>"$TMP/.err"; rc=$?; }

# Servers: start_server NAME ARGS... starts `$BIN serve` on a free loopback port and sets $port
# and NAME_pid; stop_server NAME sends SIGTERM and returns its exit status (a sanitizer's leak
# report makes it non-zero); stop_servers (for an EXIT trap) stops every one still running.
pids=()
start_server() {
    local name=$1
    shift
    "$BIN" serve --listen 127.0.0.1:0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local p=$!
    pids+=("$p")
    eval "${name}_pid=$p"
    port=
    for _ in $(seq 200); do
        grep -q "listening on" "$TMP/$name.out" 2>/dev/null && break
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/$name.out")
    [ -n "$port" ] || { echo "  $name did not start: $(tail -3 "$TMP/$name.err")"; return 1; }
}
stop_server() {
    local p
    eval "p=\$${1}_pid"
    kill -TERM "$p" 2>/dev/null
    wait "$p"
}
stop_servers() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
}

# check_cold_start NAME MODEL: a store of MODEL written with 0 adaptation steps holds the
# unadapted meta block(s) on each task's latest example of $TMP/ds, so a known task scored from
# it (requests of $TMP/req.jsonl) must equal the same request for an unknown task, which takes
# the cold path, to the rounding of `limaml embed`'s own (batched) engine (1e-6).
check_cold_start() {
    local name=$1 model=$2
    "$BIN" embed --model "$model" --data "$TMP/ds" --store "lmdb://$TMP/store0" --version s0 --steps 0 --quiet >/dev/null
    python3 - "$TMP/req.jsonl" >"$TMP/cold.jsonl" <<'EOF'
import json, sys
for i, l in enumerate(open(sys.argv[1])):
    if i % 5 == 0 or i > 60: continue
    r = json.loads(l); print(json.dumps(r)); r["task"] = {"user_id": "unknown-%d" % i}; print(json.dumps(r))
EOF
    "$BIN" score --model "$model" --store "lmdb://$TMP/store0" --in "$TMP/cold.jsonl" --out "$TMP/cold_rep.jsonl" --quiet
    check "$name" python3 -c "
import json, sys
l = [json.loads(x) for x in open('$TMP/cold_rep.jsonl')]
pairs = list(zip(l[0::2], l[1::2]))
ok = all(a['cold_start'] is False and b['cold_start'] is True and b['cold_start_reason'] == 'no_embedding'
         and len(a['scores']) == len(b['scores']) and all(abs(x - y) <= 1e-6 for x, y in zip(a['scores'], b['scores']))
         for a, b in pairs)
sys.exit(0 if ok and len(pairs) >= 40 else 1)"
}
