/* test_rates.c: history rates ("rates" in the schema) and --refit, end to end through
 * lm_prepare. Every row's COLUMN_rate and COLUMN_logcount is recomputed by brute force from the
 * dataset's own rows (labels, splits, is_new, bucket ids, task keys) and compared; so is
 * rates_COLUMN.csv. A label flipped in the input must not move its own training row's rate
 * (out of fold), but must move the rows that see the whole pool. Schema errors name their key.
 * --refit keeps the test parts row for row, empties the warm validation parts into train, with
 * ratio splits and with a split column; with rates, the pool then holds the former validation
 * rows. MovieLens-100K with LM_ML_ITEM_RATES and refit: the protocol's counts and the plain
 * dataset's features.
 *
 * Environment: LM_TMP (scratch; LM_TMP/test_rates.PID), LM_SHARED (the ../shared folder with
 * data/ml-100k; the MovieLens checks are skipped without it). Exit status 1 on any failure;
 * the last line is "N passed, M failed". */
#include "lm_testcase.h"
#include "lm_testfs.h"
#include "core/core.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ============================================================================================
 * Files, folders and text
 * ========================================================================================== */

/* A fresh folder g_base/name (name is file-safe); caller frees. */
static char *case_dir(const char *name)
{
    char *d = lm_path_join(g_base, name);
    lm_rmtree(d);
    lm_test_mkdir_p(d);
    return d;
}

static void write_in(const char *dir, const char *name, const char *text)
{
    char *path = lm_path_join(dir, name);
    lm_test_write_text(path, text);
    free(path);
}

/* ============================================================================================
 * The log: 48 tasks (user ids 1..48, so mod:5 makes 9 of them new), 1 to 20 rows each, an
 * item column of 20 values over 8 buckets, a shop column of 5 values, labels 0/1 that depend
 * on the item, and a split column (60% train, 20% val, 20% test, interleaved).
 * ========================================================================================== */

#define NTASKS 48
#define LOG_HDR "user_id,ts,clicked,x,item,shop,split\n"

typedef struct logrow {
    int user, ts, label, item, shop;
    double x;
    const char *split;
} logrow;

typedef struct logtab {
    logrow *r;
    size_t n;
} logtab;

static void make_log(logtab *t, uint64_t seed)
{
    t->r = calloc(NTASKS * 20, sizeof *t->r);
    t->n = 0;
    uint64_t s = seed;
    for (int u = 1; u <= NTASKS; u++) {
        int m = 1 + (int)(lcg(&s) % 20);
        for (int i = 0; i < m; i++) {
            logrow *r = &t->r[t->n++];
            r->user = u;
            r->ts = 1000 + 10 * i + (int)(lcg(&s) % 5);
            r->item = (int)(lcg(&s) % 20);
            r->shop = (int)(lcg(&s) % 5);
            r->label = (int)(lcg(&s) % 100) < 15 + 17 * (r->item % 4);
            r->x = (double)(lcg(&s) % 1000) / 100.0;
            uint64_t k = lcg(&s) % 10;
            r->split = k < 6 ? "train" : k < 8 ? "val" : "test";
        }
    }
}

/* The log as CSV, tasks interleaved (rows written from the end backwards); row `flip`
 * (an index into t->r, or -1) with its label flipped. Caller frees. */
static char *log_csv(const logtab *t, long flip)
{
    sbuf b = {0};
    sb_printf(&b, LOG_HDR);
    for (size_t i = t->n; i-- > 0;) {
        const logrow *r = &t->r[i];
        int y = (long)i == flip ? !r->label : r->label;
        sb_printf(&b, "%d,%d,%d,%.2f,it%d,sh%d,%s\n", r->user, r->ts, y, r->x, r->item, r->shop, r->split);
    }
    return b.p;
}

/* ============================================================================================
 * Running prepare and reading datasets
 * ========================================================================================== */

#define RATES_SCHEMA(rates)                                                                                  \
    "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'categorical': "                \
    "[{'column': 'item', 'buckets': 8, 'dim': 4}, {'column': 'shop', 'buckets': 4, 'dim': 2}], "             \
    "'rates': " rates "}"

static void opts_mod5(lm_prepare_opts *o)
{
    lm_prepare_opts_default(o);
    o->new_rule = LM_NEWRULE_MOD;
    o->new_mod = 5;
}

/* Write `schema_sq` (single-quoted JSON) and `csv` into dir, prepare dir/log.csv into
 * dir/out and open the result with LM_DATASET_VERIFY. */
static int prep(const char *dir, const char *schema_sq, const char *csv, const lm_prepare_opts *o,
                lm_prepare_summary *sum, lm_dataset **ds, lm_err *err)
{
    *ds = NULL;
    memset(err, 0, sizeof *err);
    char *json = q(schema_sq);
    write_in(dir, "schema.json", json);
    write_in(dir, "log.csv", csv);
    free(json);
    char *sp = lm_path_join(dir, "schema.json"), *log = lm_path_join(dir, "log.csv");
    char *out = lm_path_join(dir, "out");
    lm_schema *s = NULL;
    int rc = lm_schema_load(&s, sp, err);
    const char *in[1] = {log};
    if (!rc) rc = lm_prepare(s, in, 1, out, o, sum, err);
    if (!rc) rc = lm_dataset_open(ds, out, LM_DATASET_VERIFY, err);
    lm_schema_free(s);
    free(sp), free(log), free(out);
    return rc;
}

static void task_key(const lm_dataset *ds, const lm_task *k, char *buf, size_t cap)
{
    size_t len;
    const char *p = lm_dataset_task_key(ds, k, &len);
    snprintf(buf, cap, "%.*s", (int)LM_MIN(len, cap - 1), p);
}

/* ============================================================================================
 * Brute force: a row's rate from the dataset's rows, one pass over the pool per row
 * ========================================================================================== */

/* One row of a dataset, flattened for the recomputation. */
typedef struct frow {
    uint32_t fold, bucket;
    int pool; /* a training row of a warm task (or, for refit checks, any part in pool_mask) */
    float label;
    int split;
    uint64_t task;
} frow;

/* Rows of `ds` with the fold of their task (lm_hash64 of the stored key, seed "fold") and
 * categorical `cat`'s bucket; `pool_mask` holds the splits (1 << LM_SPLIT_...) of warm tasks'
 * rows that count in the pool. Caller frees. */
static frow *flatten(const lm_dataset *ds, uint32_t cat, uint32_t folds, unsigned pool_mask)
{
    frow *f = calloc(lm_dataset_nrows(ds) + 1, sizeof *f);
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        size_t len;
        const char *key = lm_dataset_task_key(ds, k, &len);
        uint32_t fold = (uint32_t)(lm_hash64(key, len, 0x666f6c64ull) % folds);
        for (uint32_t i = 0; i < k->n; i++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            frow *r = &f[k->first + i];
            r->fold = fold;
            r->bucket = v.cat[cat];
            r->label = v.label;
            r->split = v.split;
            r->task = t;
            r->pool = !k->is_new && ((pool_mask >> v.split) & 1u);
        }
    }
    return f;
}

/* Row i's expected (rate, logcount): a pool row sees the pool rows of other folds (and their
 * mean label as the prior), any other row the whole pool. An empty pool's prior is 0.5. */
static void expect_rate(const frow *f, uint64_t n, uint64_t i, double a, double *rate, double *logcount,
                        uint64_t *count)
{
    double pos = 0, gpos = 0;
    uint64_t cnt = 0, gn = 0;
    for (uint64_t j = 0; j < n; j++) {
        if (!f[j].pool || (f[i].pool && f[j].fold == f[i].fold)) continue;
        gpos += f[j].label, gn++;
        if (f[j].bucket != f[i].bucket) continue;
        pos += f[j].label, cnt++;
    }
    double g = gn ? gpos / (double)gn : 0.5;
    *rate = (pos + a * g) / ((double)cnt + a);
    *logcount = log1p((double)cnt) / 10.0;
    if (count) *count = cnt;
}

/* Check every `stride`-th row's dense features `col` (rate) and `col + 1` (log count)
 * against the brute force; returns the number of rows checked. */
static uint64_t check_rows(const lm_dataset *ds, const frow *f, uint32_t col, double a, uint64_t stride,
                           const char *what)
{
    uint64_t n = lm_dataset_nrows(ds), bad = 0, checked = 0, first_bad = 0;
    double worst = 0, got_r = 0, want_r = 0, got_l = 0, want_l = 0;
    for (uint64_t i = 0; i < n; i += stride) {
        double rate, lc;
        expect_rate(f, n, i, a, &rate, &lc, NULL);
        lm_row_view v = lm_dataset_row(ds, i);
        double d = fmax(fabs(v.dense[col] - rate), fabs(v.dense[col + 1] - lc));
        checked++;
        if (d > 1e-6) {
            if (!bad++)
                first_bad = i, got_r = v.dense[col], want_r = rate, got_l = v.dense[col + 1], want_l = lc;
        }
        if (d > worst) worst = d;
    }
    CHECK(bad == 0,
          "%s: %llu of %llu rows differ (worst %.3g); first: row %llu (split %d, pool %d): rate %.9g, want "
          "%.9g; logcount %.9g, want %.9g",
          what, (unsigned long long)bad, (unsigned long long)checked, worst, (unsigned long long)first_bad,
          f[first_bad].split, f[first_bad].pool, got_r, want_r, got_l, want_l);
    return checked;
}

/* DIR/rates_COLUMN.csv against the whole pool: one line per bucket. */
static void check_table(const char *out, const char *column, const frow *f, uint64_t n, uint32_t buckets,
                        double a)
{
    char name[128];
    snprintf(name, sizeof name, "rates_%s.csv", column);
    char *path = lm_path_join(out, name);
    FILE *fp = fopen(path, "r");
    CHECK(fp != NULL, "cannot open %s", path);
    free(path);
    if (!fp) return;
    char line[512];
    CHECK(fgets(line, sizeof line, fp) && !strcmp(line, "bucket,rate,logcount,count,positives\n"),
          "%s: header %s", name, line);
    /* the whole pool's figures: a row outside the pool sees them */
    double gpos = 0;
    uint64_t gn = 0;
    for (uint64_t j = 0; j < n; j++)
        if (f[j].pool) gpos += f[j].label, gn++;
    double g = gn ? gpos / (double)gn : 0.5;
    uint32_t lines = 0;
    int bad = 0;
    while (fgets(line, sizeof line, fp)) {
        unsigned b;
        double rate, lc, pos;
        unsigned long long cnt;
        if (sscanf(line, "%u,%lf,%lf,%llu,%lf", &b, &rate, &lc, &cnt, &pos) != 5 || b != lines) {
            CHECK(0, "%s line %u: %s", name, lines + 2, line);
            break;
        }
        double wpos = 0;
        uint64_t wn = 0;
        for (uint64_t j = 0; j < n; j++)
            if (f[j].pool && f[j].bucket == b) wpos += f[j].label, wn++;
        double wrate = (wpos + a * g) / ((double)wn + a), wlc = log1p((double)wn) / 10.0;
        if (cnt != wn || pos != wpos || fabs(rate - wrate) > 1e-6 || fabs(lc - wlc) > 1e-6) {
            if (!bad++)
                CHECK(0,
                      "%s bucket %u: rate %.9g logcount %.9g count %llu positives %g; want %.9g %.9g %llu %g",
                      name, b, rate, lc, cnt, pos, wrate, wlc, (unsigned long long)wn, wpos);
        }
        lines++;
    }
    CHECK(lines == buckets, "%s: %u bucket lines, want %u", name, lines, buckets);
    fclose(fp);
}

/* The dense index of COLUMN_rate in the dataset's schema, or -1. */
static int dense_index(const lm_dataset *ds, const char *name)
{
    const lm_schema *s = lm_dataset_schema(ds);
    for (size_t j = 0; j < s->ndense; j++)
        if (!strcmp(s->dense[j], name)) return (int)j;
    return -1;
}

/* ============================================================================================
 * Rates on a small log
 * ========================================================================================== */

/* Prepare the log with `rates` (a JSON array, single-quoted) and check every row's figures
 * and the tables. `spec` lists (column, cat index, smoothing, folds) per rate. */
typedef struct rate_want {
    const char *column;
    uint32_t cat, buckets;
    double a;
    uint32_t folds;
} rate_want;

static void run_rates_case(const char *name, const char *dirname, const char *schema, int split_column,
                           const rate_want *want, size_t nwant)
{
    begin(name);
    char *dir = case_dir(dirname);
    logtab t;
    make_log(&t, 11);
    char *csv = log_csv(&t, -1);
    lm_prepare_opts o;
    opts_mod5(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, schema, csv, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        const lm_schema *s = lm_dataset_schema(ds);
        CHECK(lm_dataset_ndense(ds) == 1 + 2 * nwant && s->nrate == nwant, "ndense %u, nrate %zu",
              lm_dataset_ndense(ds), s->nrate);
        CHECK(sum.tasks_new > 0 && sum.tasks_new < sum.tasks, "%llu of %llu tasks new",
              (unsigned long long)sum.tasks_new, (unsigned long long)sum.tasks);
        CHECK(sum.split_rows[LM_SPLIT_VAL] > 0 && sum.split_rows[LM_SPLIT_TEST] > 0, "val %llu test %llu",
              (unsigned long long)sum.split_rows[LM_SPLIT_VAL],
              (unsigned long long)sum.split_rows[LM_SPLIT_TEST]);
        if (split_column) {
            int interleaved = 0;
            for (uint64_t k = 0; k < lm_dataset_ntasks(ds); k++)
                interleaved += !lm_dataset_task(ds, k)->contiguous;
            CHECK(interleaved > 0, "the split column interleaves no task");
        }
        /* the x column is read as before: the rates come after it */
        int bad_x = 0;
        for (uint64_t i = 0; i < lm_dataset_nrows(ds); i++) {
            lm_row_view v = lm_dataset_row(ds, i);
            double x = v.dense[0];
            bad_x += !(x >= 0 && x < 10);
        }
        CHECK(bad_x == 0, "%d rows with x out of its range", bad_x);
        char *out = lm_path_join(dir, "out");
        for (size_t r = 0; r < nwant && r < s->nrate; r++) {
            const rate_want *w = &want[r];
            char rn[64], ln[64];
            snprintf(rn, sizeof rn, "%s_rate", w->column);
            snprintf(ln, sizeof ln, "%s_logcount", w->column);
            int col = dense_index(ds, rn);
            CHECK(col == (int)(1 + 2 * r) && dense_index(ds, ln) == col + 1, "%s at %d, %s at %d", rn, col,
                  ln, dense_index(ds, ln));
            CHECK(!strcmp(s->rate[r].column, w->column) && s->rate[r].cat == w->cat &&
                      s->rate[r].smoothing == w->a && s->rate[r].folds == w->folds,
                  "rate[%zu]: %s cat %u smoothing %g folds %u", r, s->rate[r].column, s->rate[r].cat,
                  s->rate[r].smoothing, s->rate[r].folds);
            if (col < 0) continue;
            frow *f = flatten(ds, w->cat, w->folds, 1u << LM_SPLIT_SUPPORT | 1u << LM_SPLIT_QUERY);
            uint64_t npool = 0, nout = 0;
            for (uint64_t i = 0; i < lm_dataset_nrows(ds); i++) npool += f[i].pool, nout += !f[i].pool;
            CHECK(npool > 50 && nout > 50, "pool %llu rows, others %llu", (unsigned long long)npool,
                  (unsigned long long)nout);
            check_rows(ds, f, (uint32_t)col, w->a, 1, rn);
            check_table(out, w->column, f, lm_dataset_nrows(ds), w->buckets, w->a);
            free(f);
        }
        free(out);
    }
    lm_dataset_close(ds);
    free(csv), free(t.r), free(dir);
    end();
}

static void test_rates(void)
{
    static const rate_want item_default[] = {{"item", 0, 8, 5, 5}};
    run_rates_case("rates: defaults (smoothing 5, folds 5), every row and rates_item.csv", "defaults",
                   RATES_SCHEMA("[{'column': 'item'}]"), 0, item_default, 1);
    static const rate_want two[] = {{"shop", 1, 4, 2.5, 3}, {"item", 0, 8, 0.5, 7}};
    run_rates_case("rates: two columns with smoothing and folds given", "two",
                   RATES_SCHEMA("[{'column': 'shop', 'smoothing': 2.5, 'folds': 3}, "
                                "{'column': 'item', 'smoothing': 0.5, 'folds': 7}]"),
                   0, two, 2);
    static const rate_want item_split[] = {{"item", 0, 8, 5, 2}};
    run_rates_case(
        "rates: a split column (interleaved splits), folds 2", "split",
        "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'split': 'split', "
        "'categorical': [{'column': 'item', 'buckets': 8, 'dim': 4}, {'column': 'shop', 'buckets': "
        "4, 'dim': 2}], 'rates': [{'column': 'item', 'folds': 2}]}",
        1, item_split, 1);
}

/* A training row's figures leave out its own task's fold: flipping its label in the input
 * leaves its rate (and every training row of its fold) as it was, and moves the rate of a
 * validation row with the same bucket, which sees the whole pool. */
static void test_leak_free(void)
{
    begin("rates: flipping a training row's label moves other rows, not its own");
    char *dir = case_dir("leak"), *d1 = lm_path_join(dir, "a"), *d2 = lm_path_join(dir, "b");
    lm_test_mkdir_p(d1);
    lm_test_mkdir_p(d2);
    const char *schema = RATES_SCHEMA("[{'column': 'item'}]");
    logtab t;
    make_log(&t, 11);
    lm_prepare_opts o;
    opts_mod5(&o);
    lm_prepare_summary sum;
    lm_err err;
    lm_dataset *a = NULL, *b = NULL;
    char *csv = log_csv(&t, -1);
    int rc = prep(d1, schema, csv, &o, &sum, &a, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    free(csv);
    /* a support row of a warm task, found in the dataset, then in the log by (user, ts) */
    long flip = -1;
    uint64_t row = 0;
    char key[32] = "";
    for (uint64_t k = 0; a && k < lm_dataset_ntasks(a) && flip < 0; k++) {
        const lm_task *tk = lm_dataset_task(a, k);
        if (tk->is_new || tk->nsplit[LM_SPLIT_SUPPORT] < 2) continue;
        task_key(a, tk, key, sizeof key);
        row = tk->first + 1;
        double ts = lm_dataset_row(a, row).time;
        for (size_t i = 0; i < t.n; i++)
            if (t.r[i].user == atoi(key) && t.r[i].ts == (int)ts) flip = (long)i;
    }
    CHECK(flip >= 0, "no support row to flip");
    if (flip >= 0) {
        csv = log_csv(&t, flip);
        rc = prep(d2, schema, csv, &o, &sum, &b, &err);
        CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
        free(csv);
    }
    if (a && b) {
        CHECK(lm_dataset_nrows(a) == lm_dataset_nrows(b), "rows %llu vs %llu",
              (unsigned long long)lm_dataset_nrows(a), (unsigned long long)lm_dataset_nrows(b));
        lm_row_view va = lm_dataset_row(a, row), vb = lm_dataset_row(b, row);
        CHECK(va.label != vb.label && va.time == vb.time, "row %llu: label %g then %g",
              (unsigned long long)row, va.label, vb.label);
        CHECK(va.dense[1] == vb.dense[1] && va.dense[2] == vb.dense[2],
              "task %s: the flipped training row's rate %.9g became %.9g (log count %.9g, %.9g)", key,
              va.dense[1], vb.dense[1], va.dense[2], vb.dense[2]);
        frow *f = flatten(a, 0, 5, 1u << LM_SPLIT_SUPPORT | 1u << LM_SPLIT_QUERY);
        uint64_t n = lm_dataset_nrows(a);
        int same_fold_moved = 0, val_checked = 0, val_unmoved = 0, other_unmoved = 0, other_checked = 0;
        for (uint64_t i = 0; i < n; i++) {
            float ra = lm_dataset_row(a, i).dense[1], rb = lm_dataset_row(b, i).dense[1];
            if (f[i].pool && f[i].fold == f[row].fold) {
                same_fold_moved += ra != rb; /* every training row of the fold: unchanged */
            } else if (f[i].bucket == f[row].bucket && f[i].task != f[row].task) {
                if (f[i].split == LM_SPLIT_VAL && f[i].fold != f[row].fold)
                    val_checked++, val_unmoved += ra == rb;
                else if (f[i].pool)
                    other_checked++, other_unmoved += ra == rb;
            }
        }
        CHECK(same_fold_moved == 0, "%d training rows of the flipped row's fold changed", same_fold_moved);
        CHECK(val_checked > 0 && val_unmoved == 0,
              "%d of %d validation rows with the bucket (another fold) unmoved", val_unmoved, val_checked);
        CHECK(other_checked > 0 && other_unmoved == 0,
              "%d of %d training rows of other folds with the bucket unmoved", other_unmoved, other_checked);
        free(f);
    }
    lm_dataset_close(a);
    lm_dataset_close(b);
    free(t.r), free(d1), free(d2), free(dir);
    end();
}

/* ============================================================================================
 * Schema errors
 * ========================================================================================== */

#define ERR_SCHEMA(extra)                                                                                    \
    "{'task': 'u', 'time': 't', 'label': 'y', 'dense': ['x'], 'categorical': [{'column': 'item', "           \
    "'buckets': 8}, {'column': 'shop', 'buckets': 4}]" extra "}"

static void test_schema_errors(void)
{
    static const struct {
        const char *name, *schema, *what;
    } cases[] = {
        {"a dense column", ERR_SCHEMA(", 'rates': [{'column': 'x'}]"), "key 'rates[0]'|categorical"},
        {"an unknown column", ERR_SCHEMA(", 'rates': [{'column': 'nope'}]"), "key 'rates[0]'|categorical"},
        {"no column", ERR_SCHEMA(", 'rates': [{'folds': 3}]"), "key 'rates[0]'|column"},
        {"a column number", ERR_SCHEMA(", 'rates': [{'column': 3}]"), "key 'rates[0]'|column"},
        {"folds 1", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': 1}]"), "key 'rates[0]'|folds"},
        {"folds 0", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': 0}]"), "key 'rates[0]'|folds"},
        {"folds 65", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': 65}]"), "key 'rates[0]'|folds"},
        {"folds 2.5", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': 2.5}]"), "key 'rates[0]'|folds"},
        {"folds '5'", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': '5'}]"), "key 'rates[0]'|folds"},
        {"folds -3", ERR_SCHEMA(", 'rates': [{'column': 'item', 'folds': -3}]"), "key 'rates[0]'|folds"},
        {"smoothing 0", ERR_SCHEMA(", 'rates': [{'column': 'item', 'smoothing': 0}]"),
         "key 'rates[0]'|smoothing"},
        {"smoothing -1", ERR_SCHEMA(", 'rates': [{'column': 'item', 'smoothing': -1}]"),
         "key 'rates[0]'|smoothing"},
        {"smoothing 'x'", ERR_SCHEMA(", 'rates': [{'column': 'item', 'smoothing': 'x'}]"),
         "key 'rates[0]'|smoothing"},
        {"the second entry", ERR_SCHEMA(", 'rates': [{'column': 'item'}, {'column': 'shop', 'folds': 99}]"),
         "key 'rates[1]'|folds"},
        {"an entry not an object", ERR_SCHEMA(", 'rates': [{'column': 'item'}, 'shop']"),
         "key 'rates[1]'|object"},
        {"rates an object", ERR_SCHEMA(", 'rates': {'column': 'item'}"), "key 'rates'|array"},
        {"rates a string", ERR_SCHEMA(", 'rates': 'item'"), "key 'rates'|array"},
        {"the same column twice",
         ERR_SCHEMA(", 'rates': [{'column': 'item'}, {'column': 'item', 'folds': 3}]"),
         "key 'rates[1]'|already"},
        {"a derived name clashes with a dense column",
         "{'task': 'u', 'time': 't', 'label': 'y', 'dense': ['x', 'item_rate'], 'categorical': [{'column': "
         "'item', 'buckets': 8}], 'rates': [{'column': 'item'}]}",
         "'item_rate'|named twice"},
        {"a derived name clashes with a meta column",
         "{'task': 'u', 'time': 't', 'label': 'y', 'meta': ['item_logcount'], 'categorical': [{'column': "
         "'item', 'buckets': 8}], 'rates': [{'column': 'item'}]}",
         "'item_logcount'|named twice"},
        {"a derived name clashes with the label",
         "{'task': 'u', 'time': 't', 'label': 'item_rate', 'categorical': [{'column': 'item', 'buckets': "
         "8}], 'rates': [{'column': 'item'}]}",
         "'item_rate'|named twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "schema rates error: %s", cases[i].name);
        begin(name);
        char *json = q(cases[i].schema);
        lm_schema *s = NULL;
        lm_err err = {0};
        int rc = lm_schema_parse(&s, json, strlen(json), "s.json", &err);
        CHECK(rc == LM_EINVAL && s == NULL, "rc %d", rc);
        CHECK(has_phrases(err.msg, cases[i].what) && strstr(err.msg, "s.json"), "message lacks \"%s\": %s",
              cases[i].what, err.msg);
        lm_schema_free(s);
        free(json);
        end();
    }

    begin("schema rates: parsed values and derived names");
    char *json =
        q("{'task': 'u', 'time': 't', 'label': 'y', 'categorical': [{'column': 'item', 'buckets': 8}, "
          "{'column': 'shop', 'buckets': 4}], 'rates': [{'column': 'shop', 'smoothing': 0.25, 'folds': "
          "64}, {'column': 'item', 'folds': 2}]}");
    lm_schema *s = NULL;
    lm_err err = {0};
    int rc = lm_schema_parse(&s, json, strlen(json), NULL, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (s) {
        static const char *names[] = {"shop_rate", "shop_logcount", "item_rate", "item_logcount"};
        CHECK(s->ndense == 4 && s->nrate == 2, "ndense %zu nrate %zu", s->ndense, s->nrate);
        for (size_t j = 0; j < 4 && j < s->ndense; j++)
            CHECK(!strcmp(s->dense[j], names[j]), "dense[%zu] %s, want %s", j, s->dense[j], names[j]);
        if (s->nrate == 2) {
            CHECK(s->rate[0].cat == 1 && s->rate[0].smoothing == 0.25 && s->rate[0].folds == 64, "rate[0]");
            CHECK(s->rate[1].cat == 0 && s->rate[1].smoothing == 5 && s->rate[1].folds == 2, "rate[1]");
        }
        /* the stored JSON parses back to the same schema (datasets and models keep it) */
        lm_schema *s2 = NULL;
        rc = lm_schema_parse(&s2, s->json, strlen(s->json), NULL, &err);
        CHECK(rc == LM_OK && s2 && s2->ndense == 4 && s2->nrate == 2, "canonical JSON: rc %d: %s", rc,
              err.msg);
        lm_schema_free(s2);
    }
    lm_schema_free(s);
    free(json);
    end();
}

/* ============================================================================================
 * --refit
 * ========================================================================================== */

/* Rows equal in every stored field. */
static int same_row(const lm_dataset *a, uint64_t i, const lm_dataset *b, uint64_t j, uint32_t ndense)
{
    lm_row_view x = lm_dataset_row(a, i), y = lm_dataset_row(b, j);
    if (x.time != y.time || x.label != y.label) return 0;
    for (uint32_t k = 0; k < lm_dataset_nmeta(a); k++)
        if (x.meta[k] != y.meta[k]) return 0;
    for (uint32_t k = 0; k < ndense; k++)
        if (x.dense[k] != y.dense[k]) return 0;
    for (uint32_t k = 0; k < lm_dataset_ncat(a); k++)
        if (x.cat[k] != y.cat[k]) return 0;
    return 1;
}

/* `refit` against `plain` task by task: test rows the same (same order), warm validation parts
 * empty, their rows (train then validation, in time order) the refit's support and query rows,
 * support = ceil(0.75 t); new tasks unchanged. `ndense` features are compared. */
static void check_refit(const lm_dataset *plain, const lm_dataset *refit, uint32_t ndense)
{
    CHECK(lm_dataset_ntasks(plain) == lm_dataset_ntasks(refit) &&
              lm_dataset_nrows(plain) == lm_dataset_nrows(refit),
          "tasks %llu/%llu rows %llu/%llu", (unsigned long long)lm_dataset_ntasks(plain),
          (unsigned long long)lm_dataset_ntasks(refit), (unsigned long long)lm_dataset_nrows(plain),
          (unsigned long long)lm_dataset_nrows(refit));
    int bad_test = 0, bad_val = 0, bad_train = 0, bad_new = 0, bad_sup = 0, warm_val = 0;
    uint64_t moved = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(plain); t++) {
        const lm_task *p = lm_dataset_task(plain, t);
        char key[64];
        task_key(plain, p, key, sizeof key);
        const lm_task *r = find_task(refit, key);
        if (!r || r->n != p->n || r->is_new != p->is_new) {
            CHECK(0, "task %s: missing or another size", key);
            continue;
        }
        if (p->is_new) {
            int same = !memcmp(p->nsplit, r->nsplit, sizeof p->nsplit);
            for (uint32_t i = 0; i < p->n && same; i++)
                same = same_row(plain, p->first + i, refit, r->first + i, ndense) &&
                       lm_dataset_row(plain, p->first + i).split == lm_dataset_row(refit, r->first + i).split;
            bad_new += !same;
            continue;
        }
        warm_val += p->nsplit[LM_SPLIT_VAL] > 0;
        uint32_t t_all = p->nsplit[0] + p->nsplit[1] + p->nsplit[2];
        bad_val += r->nsplit[LM_SPLIT_VAL] != 0;
        bad_train +=
            r->nsplit[0] + r->nsplit[1] != t_all || r->nsplit[LM_SPLIT_TEST] != p->nsplit[LM_SPLIT_TEST];
        bad_sup += r->nsplit[LM_SPLIT_SUPPORT] != (3 * t_all + 3) / 4;
        moved += p->nsplit[LM_SPLIT_VAL];
        /* row by row: the same rows in the same order; test rows stay test; the others are
         * support for the first ceil(0.75 t) of them, query after */
        uint32_t k = 0;
        for (uint32_t i = 0; i < p->n; i++) {
            int ps = lm_dataset_row(plain, p->first + i).split,
                rs = lm_dataset_row(refit, r->first + i).split;
            if (!same_row(plain, p->first + i, refit, r->first + i, ndense)) {
                bad_test += ps == LM_SPLIT_TEST;
                bad_train += ps != LM_SPLIT_TEST;
                continue;
            }
            if (ps == LM_SPLIT_TEST)
                bad_test += rs != LM_SPLIT_TEST;
            else
                bad_train += rs != (k++ < (3 * t_all + 3) / 4 ? LM_SPLIT_SUPPORT : LM_SPLIT_QUERY);
        }
    }
    CHECK(warm_val > 5 && moved > 10, "only %d warm tasks with validation rows", warm_val);
    CHECK(bad_test == 0, "%d test rows differ", bad_test);
    CHECK(bad_val == 0, "%d warm tasks keep validation rows", bad_val);
    CHECK(bad_train == 0, "%d warm tasks whose train part is not the old train + validation", bad_train);
    CHECK(bad_sup == 0, "%d warm tasks without ceil(0.75 t) support rows", bad_sup);
    CHECK(bad_new == 0, "%d new tasks changed", bad_new);
}

static void refit_case(const char *name, const char *dirname, const char *schema, int with_rates)
{
    begin(name);
    char *dir = case_dir(dirname), *d1 = lm_path_join(dir, "plain"), *d2 = lm_path_join(dir, "refit");
    lm_test_mkdir_p(d1);
    lm_test_mkdir_p(d2);
    logtab t;
    make_log(&t, 23);
    char *csv = log_csv(&t, -1);
    lm_prepare_opts o;
    opts_mod5(&o);
    lm_prepare_summary s1, s2;
    lm_err err;
    lm_dataset *a = NULL, *b = NULL;
    int rc = prep(d1, schema, csv, &o, &s1, &a, &err);
    CHECK(rc == LM_OK, "plain: rc %d: %s", rc, err.msg);
    o.refit = 1;
    rc = prep(d2, schema, csv, &o, &s2, &b, &err);
    CHECK(rc == LM_OK, "refit: rc %d: %s", rc, err.msg);
    if (a && b) {
        check_refit(a, b, with_rates ? 1 : lm_dataset_ndense(a));
        CHECK(s2.split_rows[0] + s2.split_rows[1] + s2.split_rows[2] ==
                  s1.split_rows[0] + s1.split_rows[1] + s1.split_rows[2],
              "train + val %llu vs %llu",
              (unsigned long long)(s2.split_rows[0] + s2.split_rows[1] + s2.split_rows[2]),
              (unsigned long long)(s1.split_rows[0] + s1.split_rows[1] + s1.split_rows[2]));
        CHECK(s2.split_rows[3] == s1.split_rows[3] && s2.tasks_new == s1.tasks_new,
              "test %llu/%llu new %llu/%llu", (unsigned long long)s2.split_rows[3],
              (unsigned long long)s1.split_rows[3], (unsigned long long)s2.tasks_new,
              (unsigned long long)s1.tasks_new);
        /* the info JSON (not NUL-terminated) records the option */
        size_t len = 0;
        const char *info = lm_dataset_info_json(b, &len);
        char *text = calloc(len + 1, 1);
        if (info) memcpy(text, info, len);
        const char *rf = strstr(text, "\"refit\":");
        if (rf) rf += strlen("\"refit\":");
        while (rf && (*rf == ' ' || *rf == '\t')) rf++;
        CHECK(rf && !strncmp(rf, "true", 4), "the info JSON lacks \"refit\": true");
        free(text);
        if (with_rates) {
            /* the refit's pool: support and query rows, the former validation rows among them */
            frow *fb = flatten(b, 0, 5, 1u << LM_SPLIT_SUPPORT | 1u << LM_SPLIT_QUERY);
            check_rows(b, fb, 1, 5, 1, "refit item_rate");
            free(fb);
            /* the same figures from the plain dataset, with its validation rows in the pool: the
             * test rows (outside the pool) must agree, and some must differ from the plain's */
            frow *fa = flatten(a, 0, 5, 1u << LM_SPLIT_SUPPORT | 1u << LM_SPLIT_QUERY | 1u << LM_SPLIT_VAL);
            int bad = 0, differ = 0, checked = 0;
            uint64_t one = UINT64_MAX;
            for (uint64_t i = 0; i < lm_dataset_nrows(a); i++) {
                if (fa[i].split != LM_SPLIT_TEST) continue;
                double rate, lc;
                expect_rate(fa, lm_dataset_nrows(a), i, 5, &rate, &lc, NULL);
                lm_row_view va = lm_dataset_row(a, i), vb = lm_dataset_row(b, i);
                checked++;
                bad += fabs(vb.dense[1] - rate) > 1e-6 || fabs(vb.dense[2] - lc) > 1e-6;
                if (va.dense[1] != vb.dense[1]) differ++, one = i;
            }
            CHECK(checked > 20 && bad == 0,
                  "%d of %d test rows: the refit's rate is not the pool's with validation", bad, checked);
            CHECK(differ > 0, "no test row's rate moved with the validation rows in the pool");
            if (one != UINT64_MAX)
                printf("  e.g. row %llu: item_rate %.6f without refit, %.6f with\n", (unsigned long long)one,
                       lm_dataset_row(a, one).dense[1], lm_dataset_row(b, one).dense[1]);
            free(fa);
        }
    }
    lm_dataset_close(a);
    lm_dataset_close(b);
    free(csv), free(t.r), free(d1), free(d2), free(dir);
    end();
}

static void test_refit(void)
{
    refit_case("refit: ratio splits", "refit-ratio",
               "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'categorical': "
               "[{'column': 'item', 'buckets': 8}]}",
               0);
    refit_case("refit: a split column", "refit-split",
               "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'split': 'split', "
               "'categorical': [{'column': 'item', 'buckets': 8}]}",
               0);
    refit_case("refit with rates: the pool holds the former validation rows", "refit-rates",
               RATES_SCHEMA("[{'column': 'item'}]"), 1);
}

/* ============================================================================================
 * MovieLens-100K: --item-rates with --refit
 * ========================================================================================== */

static void test_movielens(const char *shared)
{
    char *ml = movielens_folder(shared);
    if (!ml) return;
    begin("MovieLens-100K: item rates with refit");
    char *dir = case_dir("movielens"), *out1 = lm_path_join(dir, "plain"), *out2 = lm_path_join(dir, "rates");
    lm_prepare_summary s1, s2;
    lm_err err = {0};
    lm_dataset *a = NULL, *b = NULL;
    int rc = lm_prepare_movielens(ml, out1, LM_ML_TASK_USER, NULL, &s1, &err);
    if (!rc) rc = lm_dataset_open(&a, out1, 0, &err);
    CHECK(rc == LM_OK, "plain: rc %d: %s", rc, err.msg);
    lm_prepare_opts o;
    opts_mod5(&o);
    o.refit = 1;
    rc = lm_prepare_movielens(ml, out2, LM_ML_TASK_USER | LM_ML_ITEM_RATES, &o, &s2, &err);
    if (!rc) rc = lm_dataset_open(&b, out2, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK, "rates + refit: rc %d: %s", rc, err.msg);
    if (a && b) {
        CHECK(lm_dataset_ndense(a) == 20 && lm_dataset_ndense(b) == 22, "ndense %u, %u", lm_dataset_ndense(a),
              lm_dataset_ndense(b));
        CHECK(dense_index(b, "item_id_rate") == 20 && dense_index(b, "item_id_logcount") == 21,
              "item_id_rate at %d, item_id_logcount at %d", dense_index(b, "item_id_rate"),
              dense_index(b, "item_id_logcount"));
        CHECK(s2.tasks == 943 && s2.tasks_new == 188, "tasks %llu new %llu", (unsigned long long)s2.tasks,
              (unsigned long long)s2.tasks_new);
        CHECK(s2.split_rows[0] == 48289 && s2.split_rows[1] == 15903 && s2.split_rows[2] == 9465 &&
                  s2.split_rows[3] == 26343,
              "splits %llu/%llu/%llu/%llu", (unsigned long long)s2.split_rows[0],
              (unsigned long long)s2.split_rows[1], (unsigned long long)s2.split_rows[2],
              (unsigned long long)s2.split_rows[3]);
        if (lm_dataset_ndense(b) == 22) check_refit(a, b, 20);
        /* every 37th row against the brute force; the table's counts add up to the pool */
        frow *f = flatten(b, 0, 5, 1u << LM_SPLIT_SUPPORT | 1u << LM_SPLIT_QUERY);
        uint64_t checked = lm_dataset_ndense(b) == 22 ? check_rows(b, f, 20, 5, 37, "item_id_rate") : 0;
        CHECK(checked > 2000, "%llu rows checked", (unsigned long long)checked);
        char *csv = lm_path_join(out2, "rates_item_id.csv");
        FILE *fp = fopen(csv, "r");
        CHECK(fp != NULL, "cannot open %s", csv);
        if (fp) {
            char line[256];
            unsigned long long total = 0, lines = 0, cnt;
            unsigned b_;
            double r_, l_, p_;
            while (fgets(line, sizeof line, fp))
                if (sscanf(line, "%u,%lf,%lf,%llu,%lf", &b_, &r_, &l_, &cnt, &p_) == 5) total += cnt, lines++;
            fclose(fp);
            CHECK(lines == 1683 && total == 48289 + 15903, "%llu lines, counts add to %llu", lines, total);
        }
        free(csv);
        free(f);
    }
    lm_dataset_close(a);
    lm_dataset_close(b);
    free(out1), free(out2), free(dir), free(ml);
    end();
}

int main(void)
{
    const char *tmp = getenv("LM_TMP");
    if (!tmp || !*tmp) tmp = "/tmp/limaml-test";
    snprintf(g_base, sizeof g_base, "%s/test_rates.%d", tmp, (int)getpid());
    lm_rmtree(g_base);
    lm_test_mkdir_p(g_base);
    const char *shared = getenv("LM_SHARED");

    test_schema_errors();
    test_rates();
    test_leak_free();
    test_refit();
    test_movielens(shared);

    if (!g_failed)
        lm_rmtree(g_base);
    else
        fprintf(stderr, "scratch files kept in %s\n", g_base);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
