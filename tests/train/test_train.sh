#!/usr/bin/env bash
# test_train.sh: `limaml train`, `eval` and `adapt` end to end on a small synthetic log: each
# algorithm trains and beats chance; the same seed and thread count give the same model bytes;
# --resume continues bit for bit; a damaged or mismatched model is refused; eval's JSON holds
# every field. Environment: LM_BIN, LM_TMP. Prints "N passed, M failed".
set -u
BIN=${LM_BIN:?LM_BIN must name the limaml binary}
TMP=${LM_TMP:-/tmp/limaml-test}/test_train.$$
rm -rf "$TMP"
mkdir -p "$TMP"
. "$(dirname "$0")/../lm_test.sh"

run "$BIN" synth --tasks 1000 --seed 7 --out "$TMP/log.csv"
check "synth" test "$rc" -eq 0
run "$BIN" prepare --schema "$TMP/log.csv.schema.json" --in "$TMP/log.csv" --out "$TMP/ds"
check "prepare" test "$rc" -eq 0
common=(--data "$TMP/ds" --epochs 4 --tasks-per-batch 16 --lr 0.01 --threads 2 --quiet)

for algo in plain widedeep maml limaml; do
    run "$BIN" train "${common[@]}" --algo "$algo" --out "$TMP/$algo.st"
    check "train --algo $algo" test "$rc" -eq 0
    # the meta-learned models are meant to be adapted before they score (the paper's pattern)
    k=0
    case $algo in maml | limaml) k=3 ;; esac
    run "$BIN" eval --model "$TMP/$algo.st" --data "$TMP/ds" --adapt-steps $k --json
    auc=$(sed -n 's/.*"auc":\([0-9.]*\).*/\1/p' "$TMP/.out")
    check "eval $algo: JSON with an AUC above chance ($auc)" awk -v a="${auc:-0}" 'BEGIN { exit !(a > 0.55) }'
done
run "$BIN" eval --model "$TMP/limaml.st" --data "$TMP/ds" --adapt-steps 3 --json
for f in auc slices lt25 ge25 warm new logloss examples; do
    check "eval JSON has $f" grep -q "\"$f\"" "$TMP/.out"
done

# --support-weight auto (the default): 3 for LiMAML (the best servable configuration on
# validation), 0 for MAML (the paper's Algorithm 1); a number overrides it; a bad one is a usage error.
check "default support weight: limaml 3" grep -q 'support_weight\\":3[,}]' "$TMP/limaml.st"
check "default support weight: maml 0" grep -q 'support_weight\\":0[,}]' "$TMP/maml.st"
run "$BIN" train "${common[@]}" --algo limaml --epochs 1 --support-weight 0 --out "$TMP/sw0.st"
check "--support-weight 0 (Algorithm 2a) is recorded" grep -q 'support_weight\\":0[,}]' "$TMP/sw0.st"
run "$BIN" train "${common[@]}" --algo limaml --support-weight x1 --out "$TMP/swx.st"
check "--support-weight x1 is a usage error (exit 2)" test "$rc" -eq 2
run "$BIN" train "${common[@]}" --algo limaml --support-weight -1 --out "$TMP/swx.st"
check "--support-weight -1 is a usage error (exit 2)" test "$rc" -eq 2

# The fast engine and the per-task reference follow the same trajectory (to float rounding).
run "$BIN" train "${common[@]}" --algo limaml --engine reference --out "$TMP/ref.st"
check "train --engine reference" test "$rc" -eq 0
a1=$("$BIN" eval --model "$TMP/limaml.st" --data "$TMP/ds" --adapt-steps 3 --json | sed -n 's/.*"auc":\([0-9.]*\).*/\1/p')
a2=$("$BIN" eval --model "$TMP/ref.st" --data "$TMP/ds" --adapt-steps 3 --json | sed -n 's/.*"auc":\([0-9.]*\).*/\1/p')
check "fast and reference engines agree on test AUC ($a1 vs $a2)" awk -v a="${a1:-0}" -v b="${a2:-1}" 'BEGIN { d = a - b; exit !(d < 0.01 && d > -0.01) }'
run "$BIN" train "${common[@]}" --algo maml --engine fast --out "$TMP/x.st"
check "--engine fast refuses MAML with a reason" grep -q "engine fast" "$TMP/.err"

# --emb-logit (the logit also gets E[0]): recorded in the model file (and only when on), the
# fast engine and the reference agree, and the model beats chance after adaptation.
run "$BIN" train --help
check "train --help documents --emb-logit" grep -q -- "--emb-logit" "$TMP/.out"
run "$BIN" train "${common[@]}" --algo limaml --emb-logit --out "$TMP/el.st"
check "train --emb-logit" test "$rc" -eq 0
check "  ... the model file records emb_logit" grep -q "emb_logit" "$TMP/el.st"
check "  ... a model without the option does not" bash -c "! grep -q emb_logit '$TMP/limaml.st'"
run "$BIN" train "${common[@]}" --algo limaml --emb-logit --engine reference --out "$TMP/el-ref.st"
check "train --emb-logit --engine reference" test "$rc" -eq 0
a1=$("$BIN" eval --model "$TMP/el.st" --data "$TMP/ds" --adapt-steps 3 --json | sed -n 's/.*"auc":\([0-9.]*\).*/\1/p')
a2=$("$BIN" eval --model "$TMP/el-ref.st" --data "$TMP/ds" --adapt-steps 3 --json | sed -n 's/.*"auc":\([0-9.]*\).*/\1/p')
check "emb_logit: AUC above chance, fast and reference engines agree ($a1 vs $a2)" awk -v a="${a1:-0}" -v b="${a2:-1}" 'BEGIN { d = a - b; exit !(a > 0.55 && d < 0.01 && d > -0.01) }'
run "$BIN" eval --model "$TMP/el.st" --data "$TMP/ds" --adapt-steps 3 --adapt-from train --score val --warm-only --json
check "eval --score val (warm validation, adapted on train)" grep -q '"auc":0\.[0-9]' "$TMP/.out"
run "$BIN" eval --model "$TMP/el.st" --data "$TMP/ds" --adapt-steps 3 --score val
check "eval --score val refuses adapting on the scored rows (usage error, exit 2)" bash -c "[ $rc -eq 2 ] && grep -q 'adapt-from train' '$TMP/.err'"

# Same seed, same threads: the same bytes. Another seed: different.
run "$BIN" train "${common[@]}" --algo limaml --out "$TMP/again.st"
check "same seed and threads give the same model" cmp -s "$TMP/limaml.st" "$TMP/again.st"
run "$BIN" train "${common[@]}" --algo limaml --seed 2 --out "$TMP/seed2.st"
check "another seed gives another model" bash -c "! cmp -s '$TMP/limaml.st' '$TMP/seed2.st'"

# A run of 4 epochs equals 2 epochs, a stop, and a resume (patience off: no early stop).
run "$BIN" train "${common[@]}" --algo limaml --patience 0 --out "$TMP/full.st"
run "$BIN" train "${common[@]}" --algo limaml --patience 0 --stop-after-epochs 2 --checkpoint "$TMP/ck.st" --out "$TMP/part.st"
check "a run stopped after 2 of 3 epochs" test "$rc" -eq 0
cp "$TMP/ck.st" "$TMP/ck-copy.st"
run "$BIN" train "${common[@]}" --algo limaml --patience 0 --checkpoint "$TMP/ck.st" --resume --out "$TMP/resumed.st"
check "resume runs" test "$rc" -eq 0
check "stop + resume gives the uninterrupted run's bytes" cmp -s "$TMP/full.st" "$TMP/resumed.st"
run "$BIN" train "${common[@]}" --algo limaml --patience 0 --lr 0.02 --checkpoint "$TMP/ck-copy.st" --resume --out "$TMP/x.st"
check "resume with other options is refused" test "$rc" -eq 1
check "  ... saying why" grep -q "other options" "$TMP/.err"

# Damaged model files are refused with a message.
cp "$TMP/limaml.st" "$TMP/trunc.st"
truncate -s -100 "$TMP/trunc.st"
run "$BIN" eval --model "$TMP/trunc.st" --data "$TMP/ds"
check "truncated model refused" test "$rc" -eq 1
check "  ... naming the file" grep -q "trunc.st" "$TMP/.err"
cp "$TMP/limaml.st" "$TMP/flip.st"
printf '\x55' | dd of="$TMP/flip.st" bs=1 seek=$(($(stat -c %s "$TMP/flip.st") - 10)) conv=notrunc 2>/dev/null
run "$BIN" eval --model "$TMP/flip.st" --data "$TMP/ds"
check "corrupt model refused (checksum)" grep -q "checksum" "$TMP/.err"
run "$BIN" prepare movielens --in "${LM_SHARED:-/nonexistent}/data/ml-100k" --out "$TMP/ml"
if [ "$rc" -eq 0 ]; then
    run "$BIN" eval --model "$TMP/limaml.st" --data "$TMP/ml"
    check "a model refuses a dataset of another schema" grep -q "features" "$TMP/.err"
fi

# A refit dataset (prepare --refit: the warm validation rows join train) has no validation part:
# every epoch counts as the best, so the last epoch is kept (not the initial weights, "best 0");
# the epoch log stays JSON (null for the NaN AUC) and a checkpoint of such a run resumes.
run "$BIN" prepare --schema "$TMP/log.csv.schema.json" --in "$TMP/log.csv" --out "$TMP/ds-refit" --refit
check "prepare --refit" test "$rc" -eq 0
run "$BIN" eval --model "$TMP/limaml.st" --data "$TMP/ds-refit" --score val --warm-only --adapt-from train --json
check "  ... no validation rows left to warm tasks" grep -q '"examples":0,' "$TMP/.out"
refit=(--data "$TMP/ds-refit" --epochs 2 --tasks-per-batch 16 --lr 0.01 --threads 2 --patience 0)
run "$BIN" train "${refit[@]}" --log "$TMP/refit.log" --out "$TMP/refit.st"
check "train on a refit dataset" test "$rc" -eq 0
check "  ... keeps the last epoch: best 2" grep -q "2 epochs (best 2:" "$TMP/.out"
check "  ... every epoch of the log is the best" bash -c "[ \$(grep -c '\"best\":true' '$TMP/refit.log') -eq 2 ]"
check "  ... the log is JSON: null, not nan" bash -c "grep -q '\"val_auc\":null' '$TMP/refit.log' && ! grep -qi 'nan' '$TMP/refit.log'"
run "$BIN" train "${refit[@]}" --epochs 1 --out "$TMP/refit1.st"
check "  ... the 2-epoch model is not the 1-epoch one" bash -c "! cmp -s '$TMP/refit.st' '$TMP/refit1.st'"
run "$BIN" train "${refit[@]}" --stop-after-epochs 1 --checkpoint "$TMP/refit-ck.st" --out "$TMP/x.st"
run "$BIN" train "${refit[@]}" --checkpoint "$TMP/refit-ck.st" --resume --out "$TMP/refit-resumed.st"
check "  ... a checkpoint of a refit run resumes" test "$rc" -eq 0
check "  ... to the uninterrupted run's bytes" cmp -s "$TMP/refit.st" "$TMP/refit-resumed.st"
run "$BIN" eval --model "$TMP/refit.st" --data "$TMP/ds-refit" --adapt-steps 3 --adapt-from train+val --json
auc=$(sed -n 's/.*"auc":\([0-9.]*\).*/\1/p' "$TMP/.out")
check "eval of the refit model (--adapt-from train+val): AUC above chance ($auc)" awk -v a="${auc:-0}" 'BEGIN { exit !(a > 0.55) }'

# adapt prints the embedding of a task; unknown tasks are named.
key=$(sed -n '2p' "$TMP/log.csv" | cut -d, -f1)
run "$BIN" adapt --model "$TMP/limaml.st" --data "$TMP/ds" --task "$key" --steps 2
check "adapt prints a 16-value embedding" bash -c "grep -o '\[.*\]' '$TMP/.out' | tr ',' '\n' | wc -l | grep -qx 16"
run "$BIN" adapt --model "$TMP/limaml.st" --data "$TMP/ds" --task no-such-task
check "adapt of an unknown task fails naming it" grep -q "no-such-task" "$TMP/.err"

# --members M: M seeds in one ensemble model, the same as training them apart and packing them
# with limaml ensemble; one log with every member's lines tagged.
run "$BIN" train "${common[@]}" --algo limaml --seed 5 --members 2 --out "$TMP/ens.st" --log "$TMP/ens.log"
check "train --members 2" test "$rc" -eq 0
check "  ... says it wrote an ensemble of 2 with a 32-float embedding" grep -q "an ensemble of 2 limaml networks (seeds 5..6), meta embedding 32 floats" "$TMP/.out"
check "  ... one log, each member's epochs tagged" bash -c "[ \$(grep -c '^{\"member\":1,\"epoch\"' '$TMP/ens.log') -eq 4 ] && [ \$(grep -c '^{\"member\":2,\"epoch\"' '$TMP/ens.log') -eq 4 ] && [ ! -e '$TMP/ens.log.member1' ]"
run "$BIN" train "${common[@]}" --algo limaml --seed 5 --out "$TMP/m5.st"
run "$BIN" train "${common[@]}" --algo limaml --seed 6 --out "$TMP/m6.st"
run "$BIN" ensemble --out "$TMP/ens2.st" "$TMP/m5.st" "$TMP/m6.st"
check "limaml ensemble of the same two seeds" test "$rc" -eq 0
check "  ... is the same file, byte for byte" cmp -s "$TMP/ens.st" "$TMP/ens2.st"
run "$BIN" adapt --model "$TMP/ens.st" --data "$TMP/ds" --task "$key" --steps 2
check "  ... adapt prints its 32-value embedding" bash -c "grep -o '\[.*\]' '$TMP/.out' | tr ',' '\n' | wc -l | grep -qx 32"
run "$BIN" ensemble --out "$TMP/bad.st" "$TMP/m5.st" "$TMP/plain.st"
check "  ... a LiMAML and a plain network are refused (exit 1, named)" bash -c "[ $rc -eq 1 ] && grep -q 'differs from member 1' '$TMP/.err'"
run "$BIN" ensemble --out "$TMP/bad.st" "$TMP/m5.st"
check "  ... one member is a usage error (exit 2)" test "$rc" -eq 2
run "$BIN" train "${common[@]}" --members 2 --checkpoint "$TMP/ck.st" --out "$TMP/u.st"
check "  ... --members with --checkpoint is a usage error (exit 2)" test "$rc" -eq 2

# Usage errors exit 2.
run "$BIN" train --data "$TMP/ds" --out "$TMP/u.st" --algo nope
check "unknown algorithm: exit 2" test "$rc" -eq 2
run "$BIN" train --data "$TMP/ds"
check "missing --out: exit 2" test "$rc" -eq 2
run "$BIN" train --data "$TMP/missing" --out "$TMP/u.st"
check "missing dataset: exit 1" test "$rc" -eq 1

rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
