/* test_floor.c: the count floor of PROTOCOL.md. A six-example dataset whose every score is worked
 * out by hand below (so the rules "which rows count for the task", "which for the item", "what
 * a new task uses" are each pinned), then MovieLens-100K, where the floor must give the
 * protocol's published figures to three decimals: pooled test AUC 0.750 (warm 0.745, new
 * 0.758), and 0.737 when a warm user's rate comes from its train part only.
 *
 * Environment: LM_TMP (scratch), LM_SHARED (../shared with data/ml-100k; the MovieLens checks
 * are skipped without it). Exit status 1 on any failure. */
#include "core/core.h"
#include "eval/floor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lm_check.h"
#include "lm_testfs.h"

/* AUC by counting pairs, ties one half: the definition, independent of lm_auc's sort. */
static double auc_pairs(const double *s, const int *y, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (y[i] && !y[j]) {
                den++;
                num += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
            }
    return den ? num / den : NAN;
}

static int near(double a, double b, double tol)
{
    return (isnan(a) && isnan(b)) || fabs(a - b) <= tol;
}

/* ---- a dataset small enough to score by hand ------------------------------------------------ */

/* Users A and B are warm (they have train rows), C is new (validation and test only).
 * Items: 1, 2, 3 (the first categorical column). */
static const char *LOG = "u,ts,y,item,m,x,split\n"
                         "A,1,1,1,0.5,0,train\n"
                         "A,2,0,2,0.5,0,train\n"
                         "A,3,1,1,0.5,0,train\n"
                         "A,4,1,2,0.5,0,val\n"
                         "A,5,0,1,0.5,0,test\n"
                         "A,6,1,3,0.5,0,test\n"
                         "B,1,0,2,0.1,0,train\n"
                         "B,2,0,3,0.1,0,train\n"
                         "B,3,0,1,0.1,0,val\n"
                         "B,4,1,2,0.1,0,test\n"
                         "B,5,0,1,0.1,0,test\n"
                         "C,1,1,1,0.9,0,val\n"
                         "C,2,1,3,0.9,0,val\n"
                         "C,3,0,3,0.9,0,test\n"
                         "C,4,1,2,0.9,0,test\n";

static const char *SCHEMA =
    "{\"delimiter\": \",\", \"header\": true, \"task\": [\"u\"], \"time\": \"ts\", \"label\": \"y\",\n"
    " \"meta\": [\"m\"], \"dense\": [\"x\"], \"categorical\": [{\"column\": \"item\", \"buckets\": 8, "
    "\"dim\": 4}],\n"
    " \"split\": \"split\"}\n";

static void test_by_hand(const char *tmp)
{
    char dir[4096], path[4200], out[4200];
    snprintf(dir, sizeof dir, "%s/test_floor.%d", tmp, (int)getpid());
    lm_test_mkdir_p(dir);
    snprintf(path, sizeof path, "%s/log.csv", dir);
    lm_test_write_text(path, LOG);
    char sp[4200];
    snprintf(sp, sizeof sp, "%s/log.schema.json", dir);
    lm_test_write_text(sp, SCHEMA);
    snprintf(out, sizeof out, "%s/ds", dir);
    lm_err err = {0};
    lm_schema *s = NULL;
    lm_prepare_opts po;
    lm_prepare_opts_default(&po);
    po.force = 1;
    lm_prepare_summary sum;
    const char *in[1] = {path};
    int rc = lm_schema_load(&s, sp, &err);
    if (!rc) rc = lm_prepare(s, in, 1, out, &po, &sum, &err);
    CHECK(rc == 0, "prepare the hand-built dataset: %s", err.msg);
    lm_dataset *ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, out, 0, &err);
    lm_schema_free(s);
    if (rc) return;

    /* The training pool is A's and B's train rows: 2 positives of 5, g = 0.4, a g = 2.
     * item 1: 2 of 2 -> (2+2)/(2+5) = 4/7; item 2: 0 of 2 -> 2/7; item 3: 0 of 1 -> 2/6.
     * A (train+val) 3 of 4 -> 5/9; B 0 of 3 -> 2/8; C (new: val) 2 of 2 -> 4/7.
     * Train part only: A 2 of 3 -> 4/8; B 0 of 2 -> 2/7; C unchanged. */
    double i1 = 4.0 / 7, i2 = 2.0 / 7, i3 = 2.0 / 6;
    for (int variant = 0; variant < 2; variant++) {
        double uA = variant ? 4.0 / 8 : 5.0 / 9, uB = variant ? 2.0 / 7 : 2.0 / 8, uC = 4.0 / 7;
        /* test rows in task order: A(1,y0) A(3,y1) B(2,y1) B(1,y0) C(3,y0) C(2,y1) */
        double sc[6] = {uA + i1, uA + i3, uB + i2, uB + i1, uC + i3, uC + i2};
        int y[6] = {0, 1, 1, 0, 0, 1};
        double ll = 0;
        for (int i = 0; i < 6; i++) ll -= y[i] ? log(sc[i] / 2) : log(1 - sc[i] / 2);
        ll /= 6;
        lm_floor_opts o;
        lm_floor_opts_default(&o);
        o.user_from = variant ? LM_FLOOR_USER_TRAIN : LM_FLOOR_USER_TRAIN_VAL;
        lm_eval_result r;
        rc = lm_floor_evaluate(ds, &o, &r, &err);
        CHECK(rc == 0, "floor: %s", err.msg);
        double want = auc_pairs(sc, y, 6), warm = auc_pairs(sc, y, 4), nw = auc_pairs(sc + 4, y + 4, 2);
        CHECK(near(r.auc, want, 1e-6), "variant %d: pooled AUC %.6f, by hand %.6f", variant, r.auc, want);
        CHECK(near(r.auc_lt25, want, 1e-6), "variant %d: every task has < 25 test rows", variant);
        CHECK(isnan(r.auc_ge25) && r.examples_ge25 == 0, "variant %d: no task has >= 25", variant);
        CHECK(near(r.auc_warm, warm, 1e-6), "variant %d: warm AUC %.6f, by hand %.6f", variant, r.auc_warm,
              warm);
        CHECK(near(r.auc_new, nw, 1e-6), "variant %d: new AUC %.6f, by hand %.6f", variant, r.auc_new, nw);
        CHECK(near(r.logloss, ll, 1e-6), "variant %d: log loss %.6f, by hand %.6f", variant, r.logloss, ll);
        CHECK(r.examples == 6 && r.tasks == 3 && r.examples_warm == 4 && r.examples_new == 2,
              "variant %d: counts %llu examples, %llu tasks", variant, (unsigned long long)r.examples,
              (unsigned long long)r.tasks);
    }
    /* The hand values above, checked once as numbers so a wrong fraction cannot hide: in the
     * protocol variant the positives score 8/9, 15/28, 6/7 against 71/63, 23/28, 19/21. */
    {
        lm_floor_opts o;
        lm_floor_opts_default(&o);
        lm_eval_result r;
        lm_floor_evaluate(ds, &o, &r, &err);
        CHECK(near(r.auc, 2.0 / 9, 1e-9), "pooled AUC %.9f, want 2/9", r.auc);
        CHECK(near(r.auc_warm, 1.0 / 4, 1e-9), "warm AUC %.9f, want 1/4", r.auc_warm);
        CHECK(near(r.auc_new, 0.0, 1e-9), "new AUC %.9f, want 0", r.auc_new);
    }
    /* Scoring validation (for choosing hyperparameters): warm tasks' rates from train parts. A's
     * val row: 4/8 + 2/7 (y1), B's: 2/7 + 4/7 (y0), C (new, no train part) scores g + 4/7 (y1). */
    {
        lm_floor_opts o;
        lm_floor_opts_default(&o);
        o.score_split = LM_SPLIT_VAL;
        lm_eval_result r;
        rc = lm_floor_evaluate(ds, &o, &r, &err);
        double sc[4] = {4.0 / 8 + i2, 2.0 / 7 + i1, 0.4 + i1, 0.4 + i3};
        int y[4] = {1, 0, 1, 1};
        CHECK(rc == 0 && near(r.auc, auc_pairs(sc, y, 4), 1e-6), "val: AUC %.6f, by hand %.6f", r.auc,
              auc_pairs(sc, y, 4));
        o.warm_only = 1;
        rc = lm_floor_evaluate(ds, &o, &r, &err);
        CHECK(rc == 0 && r.examples == 2 && r.tasks == 2, "warm-only val: %llu examples",
              (unsigned long long)r.examples);
        CHECK(near(r.auc, 0.0, 1e-9), "warm-only val: AUC %.6f, want 0 (A's 11/14 < B's 6/7)", r.auc);
    }
    /* Without the item term the score is the task's rate alone. */
    {
        lm_floor_opts o;
        lm_floor_opts_default(&o);
        o.use_item = 0;
        lm_eval_result r;
        rc = lm_floor_evaluate(ds, &o, &r, &err);
        double sc[6] = {5.0 / 9, 5.0 / 9, 2.0 / 8, 2.0 / 8, 4.0 / 7, 4.0 / 7};
        int y[6] = {0, 1, 1, 0, 0, 1};
        CHECK(rc == 0 && near(r.auc, auc_pairs(sc, y, 6), 1e-6), "task rate only: AUC %.6f, by hand %.6f",
              r.auc, auc_pairs(sc, y, 6));
    }
    /* Bad options are refused with a message. */
    {
        lm_floor_opts o;
        lm_floor_opts_default(&o);
        o.pseudo = 0;
        lm_eval_result r;
        lm_err e2 = {0};
        CHECK(lm_floor_evaluate(ds, &o, &r, &e2) == LM_EINVAL && e2.msg[0], "pseudo 0 is refused");
        lm_floor_opts_default(&o);
        o.score_split = LM_SPLIT_SUPPORT;
        CHECK(lm_floor_evaluate(ds, &o, &r, &e2) == LM_EINVAL, "scoring the support split is refused");
    }
    lm_dataset_close(ds);
    lm_rmtree(dir);
}

/* ---- MovieLens-100K: the protocol's published figures -------------------------------------- */

static void test_movielens(const char *shared, const char *tmp)
{
    char ml[4096], marker[4200], out[4096];
    snprintf(ml, sizeof ml, "%s/data/ml-100k", shared ? shared : "");
    snprintf(marker, sizeof marker, "%s/u.data", ml);
    if (!shared || access(marker, R_OK) != 0) {
        printf("skip: MovieLens-100K (no LM_SHARED/data/ml-100k)\n");
        return;
    }
    snprintf(out, sizeof out, "%s/test_floor_ml.%d", tmp, (int)getpid());
    lm_err err = {0};
    lm_prepare_summary sum;
    int rc = lm_prepare_movielens(ml, out, LM_ML_TASK_USER, NULL, &sum, &err);
    CHECK(rc == 0, "prepare movielens: %s", err.msg);
    lm_dataset *ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, out, 0, &err);
    CHECK(rc == 0, "open: %s", err.msg);
    if (rc) return;
    lm_floor_opts o;
    lm_floor_opts_default(&o);
    lm_eval_result r;
    rc = lm_floor_evaluate(ds, &o, &r, &err);
    CHECK(rc == 0, "floor: %s", err.msg);
    printf("movielens floor: AUC %.4f (warm %.4f, new %.4f, <25 %.4f, >=25 %.4f), log loss %.4f\n", r.auc,
           r.auc_warm, r.auc_new, r.auc_lt25, r.auc_ge25, r.logloss);
    /* "to three decimals": within half a unit of the third */
    CHECK(fabs(r.auc - 0.750) < 0.0005, "pooled AUC %.4f, the protocol says 0.750", r.auc);
    CHECK(fabs(r.auc_warm - 0.745) < 0.0005, "warm AUC %.4f, the protocol says 0.745", r.auc_warm);
    CHECK(fabs(r.auc_new - 0.758) < 0.0005, "new AUC %.4f, the protocol says 0.758", r.auc_new);
    CHECK(r.examples == 26343 && r.tasks == 943, "every test row scored: %llu",
          (unsigned long long)r.examples);
    o.user_from = LM_FLOOR_USER_TRAIN;
    rc = lm_floor_evaluate(ds, &o, &r, &err);
    printf("movielens floor, train part only: AUC %.4f (warm %.4f, new %.4f)\n", r.auc, r.auc_warm,
           r.auc_new);
    CHECK(rc == 0 && fabs(r.auc - 0.737) < 0.0005, "train-only AUC %.4f, the protocol says 0.737", r.auc);
    lm_dataset_close(ds);
    lm_rmtree(out);
}

int main(void)
{
    const char *tmp = getenv("LM_TMP");
    if (!tmp || !*tmp) tmp = "/tmp";
    lm_test_mkdir_p(tmp);
    test_by_hand(tmp);
    test_movielens(getenv("LM_SHARED"), tmp);
    return CHECK_DONE();
}
