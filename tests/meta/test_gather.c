/* test_gather.c: gathering a task's rows of one split into contiguous arrays. Two tiny
 * datasets are built through lm_prepare from a CSV and a schema written into $LM_TMP: one
 * without a split column (every task's splits are consecutive runs, contiguous = 1) and one
 * with a split column that interleaves train, val and test rows (contiguous = 0 for some
 * tasks). For every task and split (support, query, val, test, train = support + query) the
 * gathered float and double arrays must equal the rows read with lm_dataset_row, in order.
 * Also: too small a buffer (LM_ELIMIT), wrong widths (LM_EMISMATCH), a bad split (LM_EINVAL),
 * and a LiMAML step on gathered rows. */
#include "meta/meta_check.h"
#include "lm_testfs.h"

#include <sys/stat.h>

static char tmpdir[4096];

/* A log of 7 users with 3..16 examples each: 3 meta, 2 dense, 2 categorical features. With
 * `split_col`, a part column assigns train/val/test, out of time order for some users. */
static void write_log(const char *csv, const char *schema, int split_col, lm_rng *rng)
{
    size_t cap = 1 << 16, len = 0;
    char *text = xcalloc(cap, 1);
    len += (size_t)snprintf(text + len, cap - len, "user,ts,y,m0,m1,m2,d0,d1,item,ch%s\n",
                            split_col ? ",part" : "");
    static const char *parts[] = {"train", "val", "test"};
    for (int u = 1; u <= 7; u++) {
        int n = 3 + (int)lm_rng_below(rng, 14);
        for (int i = 0; i < n; i++) {
            len += (size_t)snprintf(text + len, cap - len, "u%d,%d,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%u,%u", u,
                                    1700000000 + 3600 * i + u, lm_rng_uniform(rng) < 0.3, lm_rng_normal(rng),
                                    lm_rng_normal(rng), lm_rng_normal(rng), lm_rng_normal(rng),
                                    lm_rng_normal(rng), (unsigned)lm_rng_below(rng, 30),
                                    (unsigned)lm_rng_below(rng, 4));
            if (split_col) {
                /* users 1-3 in time order; the others in a scrambled order */
                int part = u <= 3 ? (i < n / 2 ? 0 : i < 3 * n / 4 ? 1 : 2) : (int)lm_rng_below(rng, 3);
                len += (size_t)snprintf(text + len, cap - len, ",%s", parts[part]);
            }
            len += (size_t)snprintf(text + len, cap - len, "\n");
        }
    }
    lm_test_write_text(csv, text);
    snprintf(text, cap,
             "{\"delimiter\": \",\", \"header\": true, \"task\": [\"user\"], \"time\": \"ts\", "
             "\"label\": \"y\", \"meta\": [\"m0\", \"m1\", \"m2\"], \"dense\": [\"d0\", \"d1\"], "
             "\"categorical\": [{\"column\": \"item\", \"buckets\": 32, \"dim\": 4}, "
             "{\"column\": \"ch\", \"buckets\": 4, \"dim\": 2}]%s}",
             split_col ? ", \"split\": \"part\"" : "");
    lm_test_write_text(schema, text);
    free(text);
}

static lm_dataset *build(const char *name, int split_col, lm_rng *rng)
{
    char csv[4200], schema_path[4200], out[4200];
    snprintf(csv, sizeof csv, "%s/%s.csv", tmpdir, name);
    snprintf(schema_path, sizeof schema_path, "%s/%s.schema.json", tmpdir, name);
    snprintf(out, sizeof out, "%s/%s.ds", tmpdir, name);
    write_log(csv, schema_path, split_col, rng);
    lm_err err = {0};
    lm_schema *schema = NULL;
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.force = 1;
    o.new_rule = LM_NEWRULE_NONE;
    lm_prepare_summary sum;
    const char *inputs[] = {csv};
    lm_dataset *ds = NULL;
    if (lm_schema_load(&schema, schema_path, &err) != LM_OK ||
        lm_prepare(schema, inputs, 1, out, &o, &sum, &err) != LM_OK ||
        lm_dataset_open(&ds, out, LM_DATASET_VERIFY, &err) != LM_OK) {
        printf("FAIL building %s: %s\n", name, err.msg);
        exit(1);
    }
    lm_schema_free(schema);
    return ds;
}

static int row_in(int row_split, int split)
{
    return split == LM_META_SPLIT_TRAIN ? row_split == LM_SPLIT_SUPPORT || row_split == LM_SPLIT_QUERY
                                        : row_split == split;
}

/* Compare gathered rows (float and double) with lm_dataset_row; returns mismatches. */
static size_t compare(const lm_dataset *ds, const lm_task *t, int split, const lm_rows_f32 *r32,
                      const lm_rows_f64 *r64)
{
    size_t k = 0, bad = 0, nm = r32->nmeta, nd = r32->ndense, nc = r32->ncat;
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view v = lm_dataset_row(ds, t->first + i);
        if (!row_in(v.split, split)) continue;
        if (k >= r32->n) return bad + 1;
        bad += r32->label[k] != v.label || r64->label[k] != (double)v.label;
        for (size_t j = 0; j < nm; j++)
            bad += r32->meta[k * nm + j] != v.meta[j] || r64->meta[k * nm + j] != (double)v.meta[j];
        for (size_t j = 0; j < nd; j++)
            bad += r32->dense[k * nd + j] != v.dense[j] || r64->dense[k * nd + j] != (double)v.dense[j];
        for (size_t j = 0; j < nc; j++)
            bad += r32->cat[k * nc + j] != v.cat[j] || r64->cat[k * nc + j] != v.cat[j];
        k++;
    }
    return bad + (k != r32->n) + (k != r64->n);
}

static void check_dataset(const char *name, lm_dataset *ds, int expect_noncontig)
{
    size_t nm = lm_dataset_nmeta(ds), nd = lm_dataset_ndense(ds), nc = lm_dataset_ncat(ds);
    size_t maxn = 0, noncontig = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
        const lm_task *task = lm_dataset_task(ds, t);
        maxn = LM_MAX(maxn, task->n);
        noncontig += !task->contiguous;
    }
    check_true(lm_dataset_ntasks(ds) == 7 && nm == 3 && nd == 2 && nc == 2,
               "%s: %llu tasks, widths %zu %zu %zu", name, (unsigned long long)lm_dataset_ntasks(ds), nm, nd,
               nc);
    check_true(expect_noncontig ? noncontig > 0 : noncontig == 0, "%s: %zu tasks not contiguous", name,
               noncontig);
    lm_rows_f32 r32;
    lm_rows_f64 r64;
    lm_err err = {0};
    lm_rows_alloc_f32(&r32, nm, nd, nc, maxn, NULL);
    lm_rows_alloc_f64(&r64, nm, nd, nc, maxn, NULL);
    static const int splits[] = {LM_SPLIT_SUPPORT, LM_SPLIT_QUERY, LM_SPLIT_VAL, LM_SPLIT_TEST,
                                 LM_META_SPLIT_TRAIN};
    size_t gathered = 0, mismatches = 0, failures = 0, count_bad = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
        const lm_task *task = lm_dataset_task(ds, t);
        for (size_t s = 0; s < 5; s++) {
            if (lm_rows_gather_f32(&r32, ds, task, splits[s], &err) != LM_OK ||
                lm_rows_gather_f64(&r64, ds, task, splits[s], &err) != LM_OK) {
                printf("     gather failed: %s\n", err.msg);
                failures++;
                continue;
            }
            count_bad += r32.n != lm_task_split_rows(task, splits[s]);
            gathered += r32.n;
            mismatches += compare(ds, task, splits[s], &r32, &r64);
        }
    }
    check_true(failures == 0 && mismatches == 0 && count_bad == 0 && gathered > 0,
               "%s: every task and split gathered equal to lm_dataset_row, float and double (%zu "
               "rows, %zu mismatches)",
               name, gathered, mismatches);

    /* errors */
    const lm_task *big = NULL;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++)
        if (!big || lm_dataset_task(ds, t)->n > big->n) big = lm_dataset_task(ds, t);
    lm_rows_f32 small;
    lm_rows_alloc_f32(&small, nm, nd, nc, 1, NULL);
    int rc = lm_rows_gather_f32(&small, ds, big, LM_META_SPLIT_TRAIN, &err);
    check_true(rc == LM_ELIMIT && small.n == 0, "%s: a 1-row buffer for %u train rows: LM_ELIMIT (%s)", name,
               big->nsplit[0] + big->nsplit[1], err.msg);
    lm_rows_f32 wrong;
    lm_rows_alloc_f32(&wrong, nm + 1, nd, nc, maxn, NULL);
    rc = lm_rows_gather_f32(&wrong, ds, big, LM_SPLIT_SUPPORT, &err);
    check_true(rc == LM_EMISMATCH, "%s: wrong widths: LM_EMISMATCH (%s)", name, err.msg);
    rc = lm_rows_gather_f32(&r32, ds, big, 7, &err);
    check_true(rc == LM_EINVAL, "%s: split 7: LM_EINVAL (%s)", name, err.msg);
    lm_rows_free_f32(&small);
    lm_rows_free_f32(&wrong);
    lm_rows_free_f32(&r32);
    lm_rows_free_f64(&r64);
}

/* One LiMAML step per task on gathered rows, through a net configured from the schema. */
static void check_training_step(lm_dataset *ds, lm_rng *rng)
{
    lm_net_config cfg;
    lm_net_config_default(&cfg);
    lm_err err = {0};
    check_true(lm_net_config_from_schema(&cfg, lm_dataset_schema(ds), &err) == LM_OK && cfg.nmeta == 3 &&
                   cfg.ndense == 2 && cfg.ncat == 2 && cfg.cat_buckets[0] == 32 && cfg.cat_dim[0] == 4 &&
                   cfg.cat_dim[1] == 2 && cfg.loss == LM_NET_LOSS_BCE,
               "config from the dataset's schema");
    lm_net n;
    net_make(&n, &cfg);
    size_t maxn = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) maxn = LM_MAX(maxn, lm_dataset_task(ds, t)->n);
    float *tm = falloc(n.meta_np), *tg = falloc(n.global_np), *gm = falloc(n.meta_np);
    float *gg = falloc(n.global_np);
    lm_net_params_init_f32(&n, tm, tg, rng);
    lm_rows_f32 S, Q;
    lm_rows_alloc_f32(&S, n.nmeta, n.ndense, n.ncat, maxn, NULL);
    lm_rows_alloc_f32(&Q, n.nmeta, n.ndense, n.ncat, maxn, NULL);
    lm_meta_ws_f32 ws;
    lm_meta_ws_alloc_f32(&ws, &n, maxn, 1, 0, NULL);
    lm_meta_opts o;
    lm_meta_opts_default(&o);
    double F = 0;
    size_t used = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
        const lm_task *task = lm_dataset_task(ds, t);
        if (lm_rows_gather_f32(&S, ds, task, LM_SPLIT_SUPPORT, &err) ||
            lm_rows_gather_f32(&Q, ds, task, LM_SPLIT_QUERY, &err))
            continue;
        if (!Q.n) continue;
        F += lm_meta_task_f32(&n, &o, &ws, tm, tg, &S, &Q, NULL, NULL, gm, gg, NULL, rng);
        used++;
    }
    double norm = 0;
    for (size_t i = 0; i < n.meta_np; i++) norm += (double)gm[i] * gm[i];
    for (size_t i = 0; i < n.global_np; i++) norm += (double)gg[i] * gg[i];
    check_true(used > 0 && isfinite(F) && F > 0 && isfinite(norm) && norm > 0,
               "LiMAML meta-gradient on %zu gathered tasks: objective %.4f, |g| %.4g", used, F, sqrt(norm));
    lm_rows_free_f32(&S);
    lm_rows_free_f32(&Q);
    lm_meta_ws_free_f32(&ws);
    free(tm), free(tg), free(gm), free(gg);
}

int main(void)
{
    const char *t = getenv("LM_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/meta_gather", t && *t ? t : "/tmp/limaml-test");
    lm_test_mkdir_p(tmpdir);
    lm_rng rng;
    lm_rng_seed(&rng, 31337);
    lm_dataset *a = build("ordered", 0, &rng);
    check_dataset("time-ordered splits", a, 0);
    check_training_step(a, &rng);
    lm_dataset *b = build("interleaved", 1, &rng);
    check_dataset("split column, interleaved", b, 1);
    lm_dataset_close(a);
    lm_dataset_close(b);
    lm_rmtree(tmpdir);
    return check_summary();
}
