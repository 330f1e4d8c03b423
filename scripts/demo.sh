#!/usr/bin/env bash
# The main job end to end on the embedded defaults. Every step's output stays in one folder,
# named at the end. Usage: scripts/demo.sh LIMAML_BINARY OUT_DIR
set -euo pipefail
bin=${1:?limaml binary}
out=${2:?output folder}
rm -rf "$out"
mkdir -p "$out"
echo "== 1. a synthetic interaction log (5,000 members, 30 examples each on average)"
"$bin" synth --tasks 5000 --mean-examples 30 --seed 1 --out "$out/log.csv"
echo "== 2. prepare: group by member, sort by time, split"
"$bin" prepare --schema "$out/log.csv.schema.json" --in "$out/log.csv" --out "$out/dataset"
"$bin" dataset verify "$out/dataset"
echo "== 3. train the plain baseline and LiMAML (n = 1 inner step, second order)"
"$bin" train --data "$out/dataset" --algo plain --epochs 8 --lr 0.005 --log "$out/plain.log.jsonl" --out "$out/plain.safetensors"
"$bin" train --data "$out/dataset" --algo limaml --epochs 8 --lr 0.005 --log "$out/limaml.log.jsonl" --out "$out/limaml.safetensors"
echo "== 4. test AUC offline: the count floor (no learning), plain as served, LiMAML with its meta embedding adapted on each member's recent examples"
"$bin" eval --floor --data "$out/dataset"
"$bin" eval --model "$out/plain.safetensors" --data "$out/dataset"
"$bin" eval --model "$out/limaml.safetensors" --data "$out/dataset" --adapt-steps 3
echo "== 5. daily meta-embedding generation into the embedded feature store (LMDB), from the part before test"
"$bin" embed --model "$out/limaml.safetensors" --data "$out/dataset" --store "lmdb://$out/store" --version day1 --steps 3 --adapt-from val --quiet
"$bin" store ls --store "lmdb://$out/store"
member=$(sed -n 2p "$out/log.csv" | cut -d, -f1)
echo "member $member's served embedding:"
"$bin" store get --store "lmdb://$out/store" --key "$member"
# The plain model has nothing to adapt: its store holds the unadapted meta block's outputs.
"$bin" embed --model "$out/plain.safetensors" --data "$out/dataset" --store "lmdb://$out/store-plain" --version day1 --steps 0 --adapt-from val --quiet

# serve NAME MODEL STORE: start `limaml serve` on a free loopback port, replay the held-out
# part through HTTP, stop the server.
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; true' EXIT
serve() {
    local name=$1 model=$2 store=$3 port=
    "$bin" serve --model "$model" --store "$store" --listen 127.0.0.1:0 --threads 2 \
        >"$out/serve-$name.out" 2>"$out/serve-$name.log" &
    server_pid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out/serve-$name.out")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "demo: the $name server did not start:" >&2
        cat "$out/serve-$name.log" >&2
        exit 1
    fi
    sed 's/^/  /' "$out/serve-$name.out"
    "$bin" replay --url "http://127.0.0.1:$port" --data "$out/dataset" --clients 1 | tee "$out/replay-$name.txt"
    kill -TERM "$server_pid"
    wait "$server_pid"
    server_pid=
}
echo "== 6. online: serve each model on a free loopback port and score the held-out part through HTTP"
echo "plain, as served:"
serve plain "$out/plain.safetensors" "lmdb://$out/store-plain"
echo "LiMAML with the stored meta embeddings:"
serve limaml "$out/limaml.safetensors" "lmdb://$out/store"
auc() { sed -n 's/.*served test AUC \([0-9.]*\).*/\1/p' "$out/replay-$1.txt"; }
p99() { sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' "$out/replay-$1.txt"; }
floor=$("$bin" eval --floor --data "$out/dataset" | sed -n 's/.*test AUC \([0-9.]*\).*/\1/p')
echo "demo: served test AUC: plain $(auc plain), LiMAML $(auc limaml) (count floor, no learning: $floor); p99 latency $(p99 plain) ms and $(p99 limaml) ms"
echo "demo: all outputs are in $out"
