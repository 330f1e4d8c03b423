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
echo "== 4. test AUC: plain as served, LiMAML with its meta embedding adapted on each member's recent examples"
"$bin" eval --model "$out/plain.safetensors" --data "$out/dataset"
"$bin" eval --model "$out/limaml.safetensors" --data "$out/dataset" --adapt-steps 3
echo "== 5. daily meta-embedding generation into the embedded feature store (LMDB)"
"$bin" embed --model "$out/limaml.safetensors" --data "$out/dataset" --store "lmdb://$out/store" --version day1 --steps 3 --quiet
"$bin" store ls --store "lmdb://$out/store"
member=$(sed -n 2p "$out/log.csv" | cut -d, -f1)
echo "member $member's served embedding:"
"$bin" store get --store "lmdb://$out/store" --key "$member"
echo "demo: all outputs are in $out"
