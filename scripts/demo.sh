#!/usr/bin/env bash
# The main job end to end on the embedded defaults. Every step's output stays in one folder,
# named at the end. Usage: scripts/demo.sh LIMAML_BINARY OUT_DIR
set -euo pipefail
bin=${1:?limaml binary}
out=${2:?output folder}
rm -rf "$out"
mkdir -p "$out"
echo "== 1. synthetic interaction log (20,000 members)"
"$bin" synth --tasks 20000 --seed 1 --out "$out/log.csv"
echo "== 2. prepare: group by member, sort by time, split"
"$bin" prepare --schema "$out/log.csv.schema.json" --in "$out/log.csv" --out "$out/dataset"
"$bin" dataset verify "$out/dataset"
shared=$(cd "$(dirname "$0")/.." && pwd)/../shared/data/ml-100k
if [ -d "$shared" ]; then
  echo "== 3. MovieLens-100K as in ../shared/PROTOCOL.md"
  "$bin" prepare movielens --in "$shared" --out "$out/movielens"
fi
echo "demo: all outputs are in $out"
