#!/usr/bin/env bash
# test_experiment.sh: `limaml experiment` end to end on a small synthetic run (--quick: a tiny
# grid and 3 epochs, 2 seeds, every table): results.json parses and every row has the fields of
# the issue, the tables beyond 3 and 4 (9, 10, 12, 13, 14, fresh) with their swept values and
# own fields, their chosen rows equal to Table 3's LiMAML row (the same models, reused); Table 5
# is skipped on synthetic data and says why, and runs on MovieLens when ../shared has it;
# report.md and report.html exist; the HTML holds inline SVG plots and refers to nothing on the
# network; a failed run leaves nothing at --out; an existing --out is refused without --force;
# usage errors exit 2. Environment: LM_BIN, LM_TMP. Prints "N passed, M failed".
set -u
BIN=${LM_BIN:?LM_BIN must name the limaml binary}
TMP=${LM_TMP:-/tmp/limaml-test}/test_experiment.$$
rm -rf "$TMP"
mkdir -p "$TMP"
. "$(dirname "$0")/../lm_test.sh"

OUT="$TMP/xp"
run "$BIN" experiment synthetic --tasks 400 --seeds 2 --quick --threads 2 --out "$OUT"
check "experiment synthetic --quick runs" test "$rc" -eq 0
check "it says what it wrote" grep -q "wrote $OUT" "$TMP/.out"
for f in results.json run.json report.md report.html logs/plain-seed1.jsonl logs/limaml-seed2.jsonl; do
    check "$f exists" test -s "$OUT/$f"
done
check "no temporary folder is left beside the output" bash -c "! ls -d '$OUT'.tmp.* 2>/dev/null | grep -q ."
check "the prepared dataset is not kept" test ! -e "$OUT/dataset"

# results.json: one object per row, each with the issue's fields; both tables; the floor first.
cat >"$TMP/check.py" <<'EOF'
import json, math, sys
rows = json.load(open(sys.argv[1]))
assert isinstance(rows, list) and rows, "results.json must be a non-empty array"
def stat(o, name):
    assert isinstance(o, dict) and "mean" in o and "std" in o, name + " must be {mean, std}"
    for k in ("mean", "std"):
        assert o[k] is None or isinstance(o[k], (int, float)), name + "." + k
for r in rows:
    for k in ("table", "algo", "adapt", "auc", "slices", "logloss", "gain_pct", "train_seconds"):
        assert k in r, "row %s lacks %s" % (r.get("algo"), k)
    assert r["table"] in ("3", "4", "5", "9", "10", "12", "13", "14", "fresh") and isinstance(r["adapt"], bool)
    stat(r["auc"], "auc"); stat(r["logloss"], "logloss"); stat(r["gain_pct"], "gain_pct")
    stat(r["train_seconds"], "train_seconds")
    for s in ("lt25", "ge25", "warm", "new"):
        stat(r["slices"][s], "slices." + s)
    assert 0 < r["auc"]["mean"] < 1, "auc in (0, 1)"
    assert len(r["auc_per_seed"]) == r["seeds"]
def table(t):
    return [r for r in rows if r["table"] == t]
t3 = table("3")
t4 = [r for r in rows if r["table"] == "4"]
assert t3[0]["algo"] == "floor" and not t3[0]["adapt"], "Table 3 opens with the floor"
want3 = {(a, d) for a in ("plain", "maml", "limaml", "limaml_sw", "limaml_swl") for d in (False, True)}
assert want3 <= {(r["algo"], r["adapt"]) for r in t3}, "Table 3 rows"
assert all(r["hyperparameters"]["emb_logit"] == (r["algo"] == "limaml_swl") for r in t3 if r["algo"].startswith("limaml")), "emb_logit only in its row"
assert {("widedeep", False), ("limaml_id", True), ("limaml_id_sw", True), ("limaml", True)} == {(r["algo"], r["adapt"]) for r in t4}
assert [r for r in t4 if r["algo"] == "limaml_id_sw"][0]["option_row"] and [r for r in t4 if r["algo"] == "limaml_id_sw"][0]["hyperparameters"]["support_weight"] > 0
base = [r for r in t3 if r["algo"] == "plain" and not r["adapt"]][0]
assert abs(base["gain_pct"]["mean"]) < 1e-9, "the baseline's gain is 0"
for r in rows:
    if r["algo"] not in ("floor", "floor_train_only"):
        assert r["hyperparameters"]["lr"] > 0
        assert r["below_floor"] == (r["auc"]["mean"] < t3[0]["auc"]["mean"]), "below_floor flag"
# the tables around the chosen LiMAML configuration
lim3 = [r for r in t3 if r["algo"] == "limaml" and r["adapt"]][0]
sweeps = {"9": "inner_steps", "10": "dropout", "12": "task_lr", "13": "lr", "14": "pool", "fresh": "stale_days"}
for t, param in sweeps.items():
    rs = table(t)
    assert rs, "table %s has rows" % t
    for r in rs:
        assert r["swept"] == param and param in r, "table %s rows name the swept %s" % (t, param)
        assert isinstance(r["chosen"], bool) and isinstance(r["table3_models"], bool)
        assert "hyperparameters" in r and r["hyperparameters"]["lr"] > 0
        if r["algo"] == "plain":
            assert abs(r["gain_pct"]["mean"]) < 1e-9
    chosen = [r for r in rs if r["chosen"]]
    assert len(chosen) == 1, "table %s has one chosen row" % t
    assert chosen[0]["auc_per_seed"] == lim3["auc_per_seed"], "table %s: the chosen row is Table 3's LiMAML" % t
    lims = [r for r in rs if r["algo"] == "limaml"]
    assert all(r["adapt"] for r in lims)
t9 = table("9")
assert [r["inner_steps"] for r in t9 if r["algo"] == "limaml"] == [1, 2]
assert [r for r in t9 if r["algo"] == "plain" and not r["adapt"]], "Table 9 has the vanilla baseline"
for r in t9:
    stat(r["train_time_vs_plain_pct"], "train_time_vs_plain_pct"); stat(r["epoch_time_vs_plain_pct"], "epoch")
assert [r["dropout"] for r in table("10")] == [0, 0.2]
assert [r["task_lr"] for r in table("12")] == [0.1, 1]
for r in table("12"):
    stat(r["auc_adapted_at_swept_rate"], "auc_adapted_at_swept_rate")
assert sorted(r["lr"] for r in table("13")) == [0.01, 0.03]
assert [r["pool"] for r in table("14")] == ["latest", "max", "mean", "cos"]
assert all(0 < r["warm_val_auc_seed1"] < 1 for r in table("14"))
fr = table("fresh")
assert [(r["stale_days"], r["adapt_from"]) for r in fr] == [(0, "val"), (7, "val"), (0, "train+val"), (7, "train+val")]
for r in fr:
    for k in ("tasks_adapted_frac", "rows_adapted", "lag_days", "age_days"):
        stat(r["realised"][k], "realised." + k)
assert fr[0]["realised"]["lag_days"]["mean"] == 0 and fr[1]["realised"]["lag_days"]["mean"] >= 7, "realised lag"
assert fr[1]["realised"]["tasks_adapted_frac"]["mean"] <= fr[0]["realised"]["tasks_adapted_frac"]["mean"]
assert fr[2]["option_row"] and not fr[0]["option_row"]
assert not table("5"), "no Table 5 on synthetic data"
run = json.load(open(sys.argv[2]))
assert any("Table 5" in s for s in run["skipped"]), 'run.json says Table 5 was skipped'

assert run["patterns"] and all("held" in p for p in run["patterns"])
assert all(a["adapt_grid"] or a["algo"] == "widedeep" for a in run["algorithms"])
print("results.json: %d rows, run.json: %d patterns" % (len(rows), len(run["patterns"])))
EOF
run python3 "$TMP/check.py" "$OUT/results.json" "$OUT/run.json"
check "results.json and run.json hold every field" test "$rc" -eq 0
[ "$rc" -eq 0 ] || cat "$TMP/.err"

# report.md: both tables, the floor, the patterns, the chosen hyperparameters.
for phrase in "Table 3 analog" "Table 4 analog" "Table 9 analog" "Table 10 analog" "Table 12 analog" \
    "Table 13 analog" "Table 14 analog" "Embedding freshness" "Table 5 (task definition) is skipped" \
    "Count floor" "patterns" "Hyperparameters" "± "; do
    check "report.md has '$phrase'" grep -q "$phrase" "$OUT/report.md"
done

# report.html: self-contained, with its plots.
H="$OUT/report.html"
check "report.html is an HTML document" grep -q "^<!DOCTYPE html>" "$H"
check "report.html has the new tables" bash -c "grep -q 'Table 9 analog' '$H' && grep -q 'Embedding freshness' '$H'"
check "report.html holds inline SVG plots" test "$(grep -o '<svg' "$H" | wc -l)" -ge 2
check "report.html has a polyline per curve" grep -q "<polyline" "$H"
check "report.html refers to nothing on the network" bash -c "! grep -qiE 'https?://' '$H'"
check "report.html loads no script, stylesheet or image" bash -c "! grep -qiE '<script|<link|<img|@import|url\\(' '$H'"
check "report.html: tags balance (svg, table)" bash -c \
    "test \$(grep -o '<svg' '$H' | wc -l) -eq \$(grep -o '</svg>' '$H' | wc -l) && test \$(grep -o '<table' '$H' | wc -l) -eq \$(grep -o '</table>' '$H' | wc -l)"
if python3 -c 'import html.parser' 2>/dev/null; then
    run python3 - "$H" <<'EOF'
import html.parser, sys
class P(html.parser.HTMLParser):
    void = {"meta", "br", "circle", "line", "rect", "polyline", "path", "img", "link", "hr", "input"}
    def __init__(self):
        super().__init__(); self.stack = []
    def handle_starttag(self, tag, attrs):
        if tag not in self.void: self.stack.append(tag)
    def handle_startendtag(self, tag, attrs): pass
    def handle_endtag(self, tag):
        if tag in self.void: return
        assert self.stack and self.stack[-1] == tag, "unbalanced </%s> (open: %s)" % (tag, self.stack[-3:])
        self.stack.pop()
p = P(); p.feed(open(sys.argv[1]).read()); p.close()
assert not p.stack, "unclosed: %s" % p.stack
EOF
    check "report.html nests its tags properly" test "$rc" -eq 0
fi

# An existing output is refused without --force, before any work; --force replaces it.
run "$BIN" experiment synthetic --tasks 400 --seeds 1 --quick --out "$OUT"
check "an existing --out is refused (exit 1)" test "$rc" -eq 1
check "  with a message naming it" grep -q "already exists" "$TMP/.err"
run "$BIN" experiment synthetic --tasks 400 --seeds 1 --quick --tables 4 --quiet --out "$OUT" --force
check "--force replaces it (--tables 4 only)" test "$rc" -eq 0
check "  and table 4 alone was written" python3 -c "
import json, sys
rows = json.load(open('$OUT/results.json'))
sys.exit(0 if rows and all(r['table'] == '4' for r in rows) else 1)"

# A failure leaves nothing at --out; usage errors exit 2.
run "$BIN" experiment --data "$TMP/no-such-dataset" --out "$TMP/fail" --quick
check "a missing dataset fails (exit 1)" test "$rc" -eq 1
check "  and leaves nothing behind" bash -c "! ls -d '$TMP'/fail* 2>/dev/null | grep -q ."
run "$BIN" experiment synthetic --out "$TMP/u" --tables 6
check "--tables 6 is a usage error (exit 2)" test "$rc" -eq 2
run "$BIN" experiment synthetic --out "$TMP/u" --tables all,fres
check "--tables all,fres is a usage error (exit 2)" test "$rc" -eq 2
run "$BIN" experiment synthetic --out "$TMP/u" --sweep-dropout 0,1
check "--sweep-dropout 1 is a usage error (exit 2)" test "$rc" -eq 2
run "$BIN" experiment synthetic --out "$TMP/u" --grid-lr 0.01,x
check "--grid-lr with a bad value is a usage error" test "$rc" -eq 2
run "$BIN" experiment --out "$TMP/u"
check "no source is a usage error" test "$rc" -eq 2
# Table 5 needs MovieLens (the (user, genre) task definition): one seed, quick (about 40 s).
ML="${LM_SHARED:-}/data/ml-100k"
if [ -n "${LM_SHARED:-}" ] && [ -r "$ML/u.data" ]; then
    run "$BIN" experiment movielens --data "$ML" --tables 5 --seeds 1 --quick --quiet --threads 2 --out "$TMP/t5"
    check "experiment movielens --tables 5 runs" test "$rc" -eq 0
    check "  Table 5 has plain and LiMAML, without and with adaptation, for both task definitions" python3 -c "
import json, sys
rows = json.load(open('$TMP/t5/results.json'))
t5 = [r for r in rows if r['table'] == '5']
got = {(r['task'], r['algo'], r['adapt']) for r in t5}
want = {(t, a, d) for t in ('user', 'user,genre') for a in ('plain', 'limaml') for d in (False, True)}
assert got == want and len(t5) == 8, got
assert all(r['swept'] == 'task' for r in t5)
base = [r for r in t5 if r['task'] == 'user,genre' and r['algo'] == 'plain' and not r['adapt']][0]
assert abs(base['gain_pct']['mean']) < 1e-9 and 'user, genre' in base['gain_base']
run = json.load(open('$TMP/t5/run.json'))
assert run['table5_user_genre']['tasks'] > 943 and not run['skipped']
"
    # The item-rate option rows and the refit (MovieLens only): the refit takes the rates row's
    # configuration, adaptation and best epoch per seed, and trains on train + validation.
    run "$BIN" experiment movielens --data "$ML" --tables 3 --seeds 2 --quick --quiet --threads 2 --out "$TMP/t3ml"
    check "experiment movielens --tables 3 runs" test "$rc" -eq 0
    check "  item-rate rows and the refit row, without and with adaptation, configured as the rates row" python3 -c "
import json
rows = json.load(open('$TMP/t3ml/results.json'))
t3 = {(r['algo'], r['adapt']): r for r in rows if r['table'] == '3'}
for a in ('plain_rates', 'limaml_rates', 'limaml_refit'):
    for d in (False, True):
        assert (a, d) in t3 and t3[(a, d)]['option_row'], (a, d)
ra, rf = t3[('limaml_rates', True)]['hyperparameters'], t3[('limaml_refit', True)]['hyperparameters']
for k in ('lr', 'task_lr', 'adapt_steps', 'adapt_task_lr', 'support_weight', 'emb_logit'):
    assert ra[k] == rf[k], k
assert ra['emb_logit'] and ra['support_weight'] > 0
assert rf['best_epoch_per_seed'] == ra['best_epoch_per_seed'], (rf, ra)
assert 'refit' in t3[('limaml_refit', True)]['label'] and 'item rates' in t3[('limaml_rates', True)]['label']
# the ensembles of 3 (the default): the rates row's configuration, members from disjoint seeds,
# member 0 being the single row's own model (its best epochs); the refit's as the refit row
for a, single in (('limaml_rates_ens', 'limaml_rates'), ('limaml_refit_ens', 'limaml_refit')):
    for d in (False, True):
        assert (a, d) in t3 and t3[(a, d)]['option_row'], (a, d)
    h, hs = t3[(a, True)]['hyperparameters'], t3[(single, True)]['hyperparameters']
    for k in ('lr', 'task_lr', 'adapt_steps', 'adapt_task_lr', 'support_weight', 'emb_logit'):
        assert h[k] == hs[k], (a, k)
    assert h['members'] == 3 and h['member_seeds_per_seed'] == [[1, 3, 5], [2, 4, 6]], h
    assert h['best_epoch_per_seed'] == hs['best_epoch_per_seed'], (h, hs)
    assert 'ensemble of 3' in t3[(a, True)]['label']
    assert t3[(a, True)]['train_seconds']['mean'] > t3[(single, True)]['train_seconds']['mean']
"
    check "  the option datasets are not left in the output" test ! -e "$TMP/t3ml/dataset-rates" -a ! -e "$TMP/t3ml/dataset-refit"
else
    echo "skip: Table 5 and the item-rate rows on MovieLens (no \$LM_SHARED/data/ml-100k)"
fi

run "$BIN" experiment --help
check "--help lists every option with its default" bash -c "grep -q -- '--seeds N' '$TMP/.out' && grep -q 'default: 3' '$TMP/.out' && grep -q -- '--grid-alpha' '$TMP/.out' && grep -q -- '--stale-days' '$TMP/.out' && grep -q 'default: all' '$TMP/.out'"

rm -rf "$TMP"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
