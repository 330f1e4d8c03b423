#!/usr/bin/env bash
# test_cli.sh: black-box checks of the limaml command line: help texts, usage errors (exit 2),
# input errors (exit 1, "FILE:LINE:COLUMN:" on stderr, no output folder left), bad rows
# skipped and reported, synth -> prepare -> dataset verify, a corrupted dataset refused, and
# `prepare movielens` when the shared MovieLens-100K folder is there.
#
# Environment: LM_BIN (the limaml binary), LM_TMP (scratch), LM_SHARED (the ../shared folder).
# Prints "N passed, M failed" last; exits 1 when any check failed.

# Checks are strings evaluated later by `check` (SC2016), reading variables set here (SC2034).
# shellcheck disable=SC2016,SC2034
set -u

BIN=${LM_BIN:?LM_BIN must name the limaml binary}
TMP=${LM_TMP:-/tmp/limaml-test}/test_cli.$$
SHARED=${LM_SHARED:-}
rm -rf "$TMP"
mkdir -p "$TMP"

pass=0
fail=0

# run CMD...: runs it, setting $rc, $out (stdout) and $err (stderr).
run() {
    "$@" >"$TMP/.out" 2>"$TMP/.err"
    rc=$?
    out=$(cat "$TMP/.out")
    err=$(cat "$TMP/.err")
}

# check NAME TEST...: TEST is a command (usually [[ ... ]]); on failure, show what was seen.
check() {
    local name=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
        echo "ok: $name"
    else
        fail=$((fail + 1))
        {
            echo "FAIL: $name"
            echo "    exit status: $rc"
            echo "    stdout: ${out:0:2000}"
            echo "    stderr: ${err:0:2000}"
        } >&2
    fi
}

has_out() { [[ $out == *"$1"* ]]; }
has_err() { [[ $err == *"$1"* ]]; }
# No folder at $1 and nothing named *.tmp.* or *.old.* beside it.
no_output() {
    [[ ! -e $1 ]] || return 1
    local d
    d=$(dirname "$1")
    ! compgen -G "$d/*.tmp.*" >/dev/null && ! compgen -G "$d/*.old.*" >/dev/null
}

# flip_byte FILE OFFSET: change one byte in place.
flip_byte() {
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    b=$(((b + 1) % 256))
    printf '%b' "\\0$(printf %03o "$b")" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# ---- help and usage ----------------------------------------------------------------------

run "$BIN" --help
check "limaml --help exits 0 and lists the subcommands" \
    eval '[[ $rc == 0 ]] && has_out synth && has_out prepare && has_out dataset && has_out "usage: limaml"'

run "$BIN"
check "limaml without a subcommand: exit 2, usage on stderr" eval '[[ $rc == 2 ]] && has_err "usage: limaml"'

run "$BIN" frobnicate
check "unknown subcommand: exit 2" eval '[[ $rc == 2 ]] && has_err frobnicate && has_err "usage: limaml"'

run "$BIN" --version
check "limaml --version" eval '[[ $rc == 0 ]] && has_out "limaml "'

run "$BIN" prepare --help
check "prepare --help exits 0 with the usage line" \
    eval '[[ $rc == 0 ]] && has_out "usage: limaml prepare --schema S --in FILE... --out DIR"'
# Every option is listed; each one taking a value shows its default (or that it is required).
help=$out
missing=""
for opt in schema in out task max-per-task window-days train val new-val support new-tasks \
    skip-bad-rows missing-features mem tmp-dir refit item-rates force help; do
    line=$(grep -E -- "^ +--$opt( |$)" <<<"$help")
    if [[ -z $line ]]; then
        missing+=" --$opt(absent)"
    elif [[ $opt != force && $opt != help && $opt != refit && $opt != item-rates && $line != *default* &&
        $line != *required* ]]; then
        missing+=" --$opt(no default)"
    fi
done
check "prepare --help lists every option with a default or (required)" eval '[[ -z "$missing" ]] || { err="$missing"; out=""; false; }'
defaults_ok=1
for pair in "max-per-task:0" "window-days:0" "train:0.6" "val:0.2" "new-val:0.5" "support:0.75" \
    "skip-bad-rows:0" "missing-features:error" "mem:256M" "task:user"; do
    opt=${pair%%:*}
    def=${pair#*:}
    grep -E -- "^ +--$opt " <<<"$help" | grep -qF "(default: $def)" || { defaults_ok=0; err+=" --$opt!=$def"; }
done
grep -E -- "^ +--new-tasks " <<<"$help" | grep -qF "hash:0.2" || { defaults_ok=0; err+=" --new-tasks"; }
grep -E -- "^ +--in " <<<"$help" | grep -qF "(required)" || { defaults_ok=0; err+=" --in"; }
grep -E -- "^ +--out " <<<"$help" | grep -qF "(required)" || { defaults_ok=0; err+=" --out"; }
check "prepare --help shows the documented defaults" eval '[[ $defaults_ok == 1 ]]'

for sub in synth dataset; do
    run "$BIN" $sub --help
    check "$sub --help exits 0" eval '[[ $rc == 0 ]] && has_out "usage: limaml $sub"'
done

# ---- usage errors: exit 2 --------------------------------------------------------------------

D=$TMP/usage
mkdir -p "$D"
cat >"$D/s.json" <<'EOF'
{"task": ["user_id"], "time": "ts", "label": "clicked", "dense": ["x"]}
EOF
printf 'user_id,ts,clicked,x\n1,1,0,1\n1,2,1,2\n' >"$D/log.csv"

run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o" --bogus 3
check "unknown option: exit 2, named, usage line on stderr" \
    eval '[[ $rc == 2 ]] && has_err "--bogus" && has_err "usage: limaml prepare" && no_output "$D/o"'

run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out
check "missing value (--out at the end): exit 2" \
    eval '[[ $rc == 2 ]] && has_err "--out" && has_err "usage: limaml prepare"'

run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv"
check "missing required option --out: exit 2" \
    eval '[[ $rc == 2 ]] && has_err "missing required option --out" && has_err "usage: limaml prepare"'

run "$BIN" prepare --schema "$D/s.json" --out "$D/o"
check "missing required option --in: exit 2" eval '[[ $rc == 2 ]] && has_err "--in" && no_output "$D/o"'

run "$BIN" prepare --in "$D/log.csv" --out "$D/o"
check "missing --schema: exit 2" eval '[[ $rc == 2 ]] && has_err "--schema" && no_output "$D/o"'

run "$BIN" prepare --schema "$D/s.json" --in --out "$D/o"
check "--in without a file: exit 2" eval '[[ $rc == 2 ]] && has_err "--in" && no_output "$D/o"'

for bad in "--max-per-task abc" "--max-per-task -1" "--train x" "--mem 12Q" "--new-tasks bogus" \
    "--new-tasks mod:0" "--new-tasks hash:2" "--missing-features maybe" "--force=yes"; do
    optname=${bad%% *}
    optname=${optname%%=*}
    # shellcheck disable=SC2086 # $bad is an option and its value
    run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o" $bad
    check "bad option value '$bad': exit 2" \
        eval '[[ $rc == 2 ]] && has_err "$optname" && has_err "usage: limaml prepare" && no_output "$D/o"'
done

run "$BIN" prepare movielens --schema "$D/s.json" --in "$D" --out "$D/o"
check "prepare movielens with --schema: exit 2" eval '[[ $rc == 2 ]] && no_output "$D/o"'

run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o" --item-rates
check "--item-rates without movielens: exit 2, saying where rates go" \
    eval '[[ $rc == 2 ]] && has_err "--item-rates" && has_err "rates" && has_err "usage: limaml prepare" && no_output "$D/o"'

run "$BIN" dataset verify
check "dataset verify without a folder: exit 2" eval '[[ $rc == 2 ]] && has_err "usage: limaml dataset"'

run "$BIN" synth --tasks 10
check "synth without --out: exit 2" eval '[[ $rc == 2 ]] && has_err "--out"'

# ---- input errors: exit 1, FILE:LINE:COLUMN:, nothing left ----------------------------------

D=$TMP/badinput
mkdir -p "$D"
cp "$TMP/usage/s.json" "$D/s.json"
printf 'user_id,ts,clicked,x\n1,1,0,1\n1,later,1,2\n1,3,1,3\n' >"$D/log.csv"
run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o"
check "a bad row: exit 1, $D/log.csv:3:2: on stderr, no output folder" \
    eval '[[ $rc == 1 ]] && has_err "$D/log.csv:3:2: " && has_err "not a number" && no_output "$D/o"'
check "the error is one line" eval '[[ $(wc -l <"$TMP/.err") == 1 ]]'

printf 'user_id,ts,clicked,x\n1,1,0,1\n1,2,2,2\n' >"$D/label.csv"
run "$BIN" prepare --schema "$D/s.json" --in "$D/label.csv" --out "$D/o"
check "a label of 2: exit 1, FILE:3:3:" eval '[[ $rc == 1 ]] && has_err "$D/label.csv:3:3: " && no_output "$D/o"'

run "$BIN" prepare --schema "$D/s.json" --in "$D/nothere.csv" --out "$D/o"
check "an unreadable input: exit 1, named" eval '[[ $rc == 1 ]] && has_err "$D/nothere.csv" && no_output "$D/o"'

: >"$D/empty.csv"
run "$BIN" prepare --schema "$D/s.json" --in "$D/empty.csv" --out "$D/o"
check "an empty input: exit 1" eval '[[ $rc == 1 ]] && has_err "$D/empty.csv" && has_err "empty" && no_output "$D/o"'

printf '{"task": ["user_id"],\n "time": ts}\n' >"$D/broken.json"
run "$BIN" prepare --schema "$D/broken.json" --in "$D/log.csv" --out "$D/o"
check "a schema that is not JSON: exit 1, FILE:LINE:COLUMN:" \
    eval '[[ $rc == 1 ]] && has_err "$D/broken.json:2:10: " && no_output "$D/o"'

printf '{"task": ["user_id"], "time": "ts", "label": "clicked", "dense": ["x", "age"]}\n' >"$D/age.json"
run "$BIN" prepare --schema "$D/age.json" --in "$D/log.csv" --out "$D/o"
check "a schema column missing from the header: exit 1, named" \
    eval '[[ $rc == 1 ]] && has_err "$D/log.csv" && has_err "'"'"'age'"'"'" && no_output "$D/o"'

# ---- --skip-bad-rows -------------------------------------------------------------------------

D=$TMP/skip
mkdir -p "$D"
cp "$TMP/usage/s.json" "$D/s.json"
printf 'user_id,ts,clicked,x\n1,1,0,1\n1,2,1\n2,3,1,3\n2,4,1,nan\n2,5,0,5\n' >"$D/log.csv"
run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o" --skip-bad-rows 2 --new-tasks none
check "--skip-bad-rows 2 with 2 bad rows: exit 0, each reported on stderr" \
    eval '[[ $rc == 0 ]] && has_err "skipped bad row: $D/log.csv:3:4: " && has_err "skipped bad row: $D/log.csv:5:4: " && has_out "2 bad rows skipped" && [[ -d $D/o ]]'
run "$BIN" prepare --schema "$D/s.json" --in "$D/log.csv" --out "$D/o1" --skip-bad-rows 1
check "--skip-bad-rows 1 with 2 bad rows: exit 1, the second named" \
    eval '[[ $rc == 1 ]] && has_err "$D/log.csv:5:4: " && has_err "more than 1 bad rows" && no_output "$D/o1"'

# ---- synth -> prepare -> dataset verify ------------------------------------------------------

D=$TMP/synth
mkdir -p "$D"
run "$BIN" synth --tasks 500 --seed 3 --out "$D/x.csv"
check "synth --tasks 500 --seed 3 writes the log and its schema" \
    eval '[[ $rc == 0 && -s $D/x.csv && -s $D/x.csv.schema.json ]]'
run "$BIN" prepare --schema "$D/x.csv.schema.json" --in "$D/x.csv" --out "$D/ds" --mem 8M
check "prepare the synthetic log" eval '[[ $rc == 0 && -f $D/ds/dataset.lmd ]] && has_out "wrote $D/ds" && no_output "$D/ds.none"'
run "$BIN" dataset verify "$D/ds"
check "dataset verify: exit 0, checksum ok" eval '[[ $rc == 0 ]] && has_out "checksum: ok"'
run "$BIN" dataset info "$D/ds" --json
check "dataset info --json prints the summary" eval '[[ $rc == 0 ]] && has_out "rows_kept"'
run "$BIN" prepare --schema "$D/x.csv.schema.json" --in "$D/x.csv" --out "$D/ds"
check "prepare into an existing folder without --force: exit 1" \
    eval '[[ $rc == 1 ]] && has_err "already exists" && [[ -f $D/ds/dataset.lmd ]]'
run "$BIN" prepare --schema "$D/x.csv.schema.json" --in "$D/x.csv" --out "$D/ds" --force
check "prepare --force replaces it" eval '[[ $rc == 0 ]] && no_output "$D/ds.none"'
run "$BIN" dataset verify "$D/ds"
check "the replaced dataset verifies" eval '[[ $rc == 0 ]]'

mkdir -p "$D/bad1" "$D/bad2"
cp "$D/ds/dataset.lmd" "$D/bad1/dataset.lmd"
flip_byte "$D/bad1/dataset.lmd" 5000
run "$BIN" dataset verify "$D/bad1"
check "dataset verify on a corrupted file: exit 1" eval '[[ $rc == 1 ]] && has_err "checksum"'
size=$(stat -c %s "$D/ds/dataset.lmd")
head -c $((size - 1)) "$D/ds/dataset.lmd" >"$D/bad2/dataset.lmd"
run "$BIN" dataset verify "$D/bad2"
check "dataset verify on a truncated file: exit 1" eval '[[ $rc == 1 ]]'
run "$BIN" dataset verify "$D/nothing"
check "dataset verify on a missing folder: exit 1" eval '[[ $rc == 1 ]]'

# ---- MovieLens-100K --------------------------------------------------------------------------

ML=$SHARED/data/ml-100k
if [[ -n $SHARED && -f $ML/u.data ]]; then
    D=$TMP/ml
    mkdir -p "$D"
    run "$BIN" prepare movielens --in "$ML" --out "$D/ml"
    check "prepare movielens: the protocol's counts" \
        eval '[[ $rc == 0 ]] && has_out "943 tasks (188 new)" && has_out "support 36478, query 11811, val 25368, test 26343"'
    run "$BIN" dataset verify "$D/ml"
    check "the MovieLens dataset verifies" eval '[[ $rc == 0 ]] && has_out "943 tasks (188 new"'
    run "$BIN" prepare movielens --in "$ML" --out "$D/mlg" --task user,genre
    check "prepare movielens --task user,genre" eval '[[ $rc == 0 && -f $D/mlg/dataset.lmd ]]'
    run "$BIN" prepare movielens --in "$ML" --out "$D/mlr" --item-rates --refit
    check "prepare movielens --item-rates --refit: the refit counts, 22 dense features, the rates table" \
        eval '[[ $rc == 0 && -f $D/mlr/rates_item_id.csv ]] && has_out "943 tasks (188 new)" &&
            has_out "support 48289, query 15903, val 9465, test 26343"'
    run "$BIN" dataset verify "$D/mlr"
    check "  ... and verifies" eval '[[ $rc == 0 ]] && has_out "23 meta, 22 dense, 1 categorical"'
    run "$BIN" prepare movielens --in "$ML" --out "$D/mlx" --task genre
    check "prepare movielens --task genre: exit 2" eval '[[ $rc == 2 ]] && has_err "--task" && no_output "$D/mlx"'
else
    echo "skip: MovieLens-100K (no \$LM_SHARED/data/ml-100k)"
fi

if ((fail == 0)); then
    rm -rf "$TMP"
else
    echo "scratch files kept in $TMP" >&2
fi
echo "$pass passed, $fail failed"
((fail == 0))
