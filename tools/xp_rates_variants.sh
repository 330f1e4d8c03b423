#!/usr/bin/env bash
# xp_rates_variants.sh: servable LiMAML variants on MovieLens with the item's history rate
# (`limaml prepare movielens --item-rates`) and their refit on train + validation
# (`--item-rates --refit`), docs/EXPERIMENTS.md "Item history rates and the refit". Each variant
# trains LiMAML + support loss + E[0] on the logit with early stopping on seeds 1..3, chooses the
# adaptation (k, alpha) on seed 1's warm validation parts adapted on their train parts (never on
# test), scores the test parts adapted on validation; then trains each seed again on the refit
# dataset for that seed's best epoch (same schedule: --epochs 30 --stop-after-epochs E) and
# scores the test parts adapted on train + validation. One markdown row per variant.
# Usage: tools/xp_rates_variants.sh ML100K_DIR   (LM_BIN: the limaml binary, default build/limaml)
set -e
B=${LM_BIN:-build/limaml}
ML=${1:?usage: tools/xp_rates_variants.sh ML100K_DIR}
O=$(mktemp -d)
trap 'rm -rf "$O"' EXIT
$B prepare movielens --in "$ML" --out "$O/rates" --item-rates >/dev/null
$B prepare movielens --in "$ML" --out "$O/refit" --item-rates --refit >/dev/null
auc() { python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['auc'])"; }
variant() {
    local name=$1 best= bv=0 k a r1= r2=
    shift
    local -a ep
    for s in 1 2 3; do
        $B train --data "$O/rates" --algo limaml --epochs 30 --patience 3 --quiet --seed $s "$@" \
            --out "$O/r$s.st" --log "$O/r$s.log" >/dev/null
        ep[$s]=$(python3 -c "import json; L=[json.loads(l) for l in open('$O/r$s.log')]; print(max(L, key=lambda d: d['val_auc'])['epoch'])")
    done
    for k in 5 10 20; do for a in 0.1 0.3; do
        v=$($B eval --model "$O/r1.st" --data "$O/rates" --adapt-steps $k --task-lr $a --adapt-from train \
            --score val --warm-only --json | auc)
        if python3 -c "import sys; sys.exit(0 if $v > $bv else 1)"; then bv=$v; best="$k $a"; fi
    done; done
    read -r k a <<<"$best"
    for s in 1 2 3; do
        r1="$r1 $($B eval --model "$O/r$s.st" --data "$O/rates" --adapt-steps $k --task-lr $a --json | auc)"
        $B train --data "$O/refit" --algo limaml --epochs 30 --patience 0 --stop-after-epochs ${ep[$s]} --quiet \
            --seed $s "$@" --out "$O/f$s.st" >/dev/null
        r2="$r2 $($B eval --model "$O/f$s.st" --data "$O/refit" --adapt-steps $k --task-lr $a \
            --adapt-from train+val --json | auc)"
    done
    python3 - "$name" "$k" "$a" "$bv" "${ep[*]}" "$r1" "$r2" <<'PY'
import sys, statistics as st
n, k, a, bv, ep, r1, r2 = sys.argv[1:]
f = lambda s: '%.4f ± %.4f' % (st.mean(map(float, s.split())), st.stdev(map(float, s.split())))
print('| %s | k %s, α %s | %s | %s | %s | %s |' % (n, k, a, bv, ep.replace(' ', ', '), f(r1), f(r2)))
PY
}
C="--lr 0.003 --task-lr 0.3 --emb-logit"
echo "| variant | adaptation chosen | seed 1 warm val | best epochs | test AUC | refit, test AUC |"
echo "|---|---|---|---|---|---|"
variant "w3 (the report's row: lr 0.003, task lr 0.3)" $C --support-weight 3
variant "w1" $C --support-weight 1
variant "w10" $C --support-weight 10
variant "w3, E = 8" $C --support-weight 3 --meta-block mlp:32,8
variant "w3, meta mlp:64,32" $C --support-weight 3 --meta-block mlp:64,32
variant "w3, global mlp:128,64" $C --support-weight 3 --global-block mlp:128,64
variant "w3, inner steps 2" $C --support-weight 3 --inner-steps 2
variant "w3, dropout 0.1" $C --support-weight 3 --dropout 0.1
variant "w3, without E[0] on the logit" --lr 0.003 --task-lr 0.3 --support-weight 3
variant "w3, 64 tasks per batch" $C --support-weight 3 --tasks-per-batch 64
variant "w3, lr 0.001" --lr 0.001 --task-lr 0.3 --emb-logit --support-weight 3
