#!/usr/bin/env bash
# xp_variants.sh: servable LiMAML variants beyond the report's rows, on MovieLens prepared by
# `limaml prepare movielens` (docs/EXPERIMENTS.md, "Servable variants tried"). Each variant trains
# LiMAML (lr 0.01, inner task lr 0.1, early stopping on validation), chooses the adaptation
# (k, alpha) on seed 1's warm validation parts adapted on their train parts (never on test), then
# reports the test AUC (pooled, < 25, new) over seeds 1..3 with that choice, as one markdown row.
# Usage: tools/xp_variants.sh DIR   (LM_BIN: the limaml binary, default build/limaml)
B=${LM_BIN:-build/limaml}; D=${1:?usage: tools/xp_variants.sh PREPARED_MOVIELENS_DIR}; OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
variant() {
    name=$1; shift
    fn=$(echo "$name" | tr -c "a-zA-Z0-9\n" "_")
    best=; bv=0
    $B train --data $D --algo limaml --lr 0.01 --task-lr 0.1 --epochs 30 --patience 3 --quiet --seed 1 "$@" --out $OUT/$fn-1.st >/dev/null
    for k in ${KS:-5 10}; do for a in ${AS:-0.1 0.3}; do
        v=$($B eval --model $OUT/$fn-1.st --data $D --adapt-steps $k --task-lr $a --adapt-from train --score val --warm-only --json | python3 -c "import json,sys; print(json.load(sys.stdin)['auc'])")
        if python3 -c "import sys; sys.exit(0 if $v > $bv else 1)"; then bv=$v; best="$k $a"; fi
    done; done
    set -- $best $@
    k=$1; a=$2; shift 2
    res=""
    for s in 1 2 3; do
        [ $s = 1 ] || $B train --data $D --algo limaml --lr 0.01 --task-lr 0.1 --epochs 30 --patience 3 --quiet --seed $s "$@" --out $OUT/$fn-$s.st >/dev/null
        res="$res $($B eval --model $OUT/$fn-$s.st --data $D --adapt-steps $k --task-lr $a ${EV:-} --json | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.4f/%.4f/%.4f' % (d['auc'], d['slices']['lt25'], d['slices']['new']))")"
    done
    python3 - "$name" "$k" "$a" "$bv" $res <<'PY'
import sys, statistics as st
name, k, a, bv = sys.argv[1:5]
r = [list(map(float, x.split('/'))) for x in sys.argv[5:]]
col = lambda i: [x[i] for x in r]
f = lambda v: '%.4f ± %.4f' % (st.mean(v), st.stdev(v))
print('| %s | k %s, α %s | %.4f | %s | %s | %s |' % (name, k, a, float(bv), f(col(0)), f(col(1)), f(col(2))))
PY
}
echo "| variant | adaptation chosen | seed 1 warm val | test AUC | < 25 | new |"
echo "|---|---|---|---|---|---|"
variant "w3 (the report's option row)" --support-weight 3
variant "w1" --support-weight 1
variant "w5" --support-weight 5
variant "w10" --support-weight 10
variant "w3, E = 8" --support-weight 3 --meta-block mlp:32,8
variant "w3, E = 32" --support-weight 3 --meta-block mlp:32,32
variant "w3, meta mlp:64,16" --support-weight 3 --meta-block mlp:64,16
variant "w3, global mlp:128,64" --support-weight 3 --global-block mlp:128,64
variant "w3, E = 8, global mlp:128,64" --support-weight 3 --meta-block mlp:32,8 --global-block mlp:128,64
variant "w3, inner steps 2" --support-weight 3 --inner-steps 2
variant "w3, dropout 0.1" --support-weight 3 --dropout 0.1
variant "w3, lr 0.003" --support-weight 3 --lr 0.003
KS="5 10 20" AS="0.03 0.1 0.3" variant "w3, wider (k, α) grid" --support-weight 3
EV="--adapt-from train+val" variant "w3, test part adapted on train + val (all)" --support-weight 3
EV="--adapt-from train+val --adapt-cap 50" variant "w3, test part adapted on train + val (last 50)" --support-weight 3
