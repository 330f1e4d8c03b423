/* test_evaluate.c: lm_evaluate's options for the experiment's ablations, on a dataset small
 * enough that the adaptation set of every task is known by hand:
 *
 * - stale_seconds (paper section 5, a stale embedding): which validation rows are kept, the
 *   realised lag and age (worked out below), and that adapting on the kept rows gives the same
 *   scores as a dataset from which the cut rows were removed; a cut that leaves nothing scores
 *   the task unadapted; fresh (0) changes nothing;
 * - pool (appendix A.4): with one adaptation row every pooling is the latest row's output; with
 *   several rows whose meta features differ, mean pooling gives other scores; pooling a model
 *   that is not LiMAML, an unknown pooling or a negative staleness is refused.
 *
 * Environment: LM_TMP (scratch). Exit status 1 on any failure. */
#include "core/core.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lm_check.h"
#include "lm_testfs.h"

#define DAY 86400.0

/* Times in seconds. A and B are warm, C is new (validation and test only). The validation rows
 * and what a one-day-stale embedding keeps of them:
 *   A: days 10, 10 + 1/48, 12   latest 12, cut at 11:   keeps 10 and 10 + 1/48 (lag 2 - 1/48 days,
 *      age: first test row (day 13) - 10 + 1/48)
 *   B: days 5, 11               latest 11, cut at 10:   keeps 5 (lag 6, age 11.5 - 5)
 *   C: days 1, 2, 2.1           latest 2.1, cut at 1.1: keeps 1 (lag 1.1, age 3 - 1)
 * With three days: A keeps nothing (cut at 9), B keeps day 5, C nothing (cut at -0.9).
 * The meta feature m changes from row to row, so pooling over several rows differs. */
#define ROWS_COMMON                                                                                          \
    "A,0,1,1,0.50,0.1,train\n"                                                                               \
    "A,1,0,2,0.51,0.2,train\n"                                                                               \
    "A,2,1,1,0.52,0.3,train\n"                                                                               \
    "A,3,0,3,0.53,0.4,train\n"                                                                               \
    "A,4,1,2,0.54,0.5,train\n"                                                                               \
    "A,5,0,3,0.55,0.6,train\n"                                                                               \
    "B,0,0,2,0.10,0.7,train\n"                                                                               \
    "B,1,1,3,0.12,0.8,train\n"                                                                               \
    "B,2,0,1,0.14,0.9,train\n"                                                                               \
    "B,3,1,2,0.16,0.1,train\n"                                                                               \
    "B,4,0,3,0.18,0.2,train\n"                                                                               \
    "B,5,1,1,0.20,0.3,train\n"
static const char *LOG_FULL = "u,ts,y,item,m,x,split\n" ROWS_COMMON "A,864000,1,2,0.60,0.2,val\n" /* day 10 */
                              "A,865800,0,1,0.90,0.7,val\n"  /* day 10 + 1/48 */
                              "A,1036800,1,3,0.20,0.4,val\n" /* day 12 */
                              "A,1123200,0,1,0.61,0.5,test\n"
                              "A,1209600,1,3,0.62,0.6,test\n"
                              "B,432000,0,1,0.30,0.3,val\n" /* day 5 */
                              "B,950400,1,2,0.80,0.9,val\n" /* day 11 */
                              "B,993600,1,2,0.31,0.4,test\n"
                              "B,1296000,0,1,0.32,0.5,test\n"
                              "C,86400,1,1,0.90,0.1,val\n"  /* day 1 */
                              "C,172800,0,3,0.40,0.2,val\n" /* day 2 */
                              "C,181440,1,3,0.70,0.3,val\n" /* day 2.1 */
                              "C,259200,0,3,0.91,0.4,test\n"
                              "C,345600,1,2,0.92,0.5,test\n";
/* The same without the rows a one-day-stale embedding does not see. */
static const char *LOG_CUT = "u,ts,y,item,m,x,split\n" ROWS_COMMON "A,864000,1,2,0.60,0.2,val\n"
                             "A,865800,0,1,0.90,0.7,val\n"
                             "A,1123200,0,1,0.61,0.5,test\n"
                             "A,1209600,1,3,0.62,0.6,test\n"
                             "B,432000,0,1,0.30,0.3,val\n"
                             "B,993600,1,2,0.31,0.4,test\n"
                             "B,1296000,0,1,0.32,0.5,test\n"
                             "C,86400,1,1,0.90,0.1,val\n"
                             "C,259200,0,3,0.91,0.4,test\n"
                             "C,345600,1,2,0.92,0.5,test\n";

static const char *SCHEMA =
    "{\"delimiter\": \",\", \"header\": true, \"task\": [\"u\"], \"time\": \"ts\", \"label\": \"y\",\n"
    " \"meta\": [\"m\"], \"dense\": [\"x\"], \"categorical\": [{\"column\": \"item\", \"buckets\": 8, "
    "\"dim\": 4}],\n"
    " \"split\": \"split\"}\n";

static lm_dataset *make(const char *dir, const char *name, const char *log)
{
    char path[4200], sp[4200], out[4200];
    snprintf(path, sizeof path, "%s/%s.csv", dir, name);
    snprintf(sp, sizeof sp, "%s/%s.schema.json", dir, name);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    lm_test_write_text(path, log);
    lm_test_write_text(sp, SCHEMA);
    lm_err err = {0};
    lm_schema *s = NULL;
    lm_prepare_opts po;
    lm_prepare_opts_default(&po);
    po.force = 1;
    lm_prepare_summary sum;
    const char *in[1] = {path};
    int rc = lm_schema_load(&s, sp, &err);
    if (!rc) rc = lm_prepare(s, in, 1, out, &po, &sum, &err);
    lm_schema_free(s);
    lm_dataset *ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, out, 0, &err);
    CHECK(rc == 0, "prepare %s: %s", name, err.msg);
    return rc ? NULL : ds;
}

static lm_model *train(const lm_dataset *ds, int algo)
{
    lm_train_opts t;
    lm_train_opts_default(&t);
    t.algo = algo;
    t.meta_block = "mlp:8,4";
    t.global_block = "mlp:8";
    t.epochs = 2;
    t.patience = 0;
    t.tasks_per_batch = 2;
    t.lr = 0.05;
    t.threads = 1;
    lm_model *m = NULL;
    lm_train_report rep;
    lm_err err = {0};
    int rc = lm_train(ds, &t, &m, &rep, &err);
    CHECK(rc == 0 && m, "train %s: %s", lm_train_algo_name(algo), err.msg);
    return rc ? NULL : m;
}

static int eval(const lm_model *m, const lm_dataset *ds, double stale, int pool, uint32_t cap, uint32_t k,
                lm_eval_result *r)
{
    lm_eval_opts o;
    lm_eval_opts_default(&o);
    o.adapt_steps = k;
    o.task_lr = 0.5;
    o.threads = 2;
    o.stale_seconds = stale;
    o.pool = pool;
    o.adapt_cap = cap;
    lm_err err = {0};
    int rc = lm_evaluate(m, ds, &o, r, &err);
    return rc;
}

static int near(double a, double b, double tol)
{
    return fabs(a - b) <= tol;
}

static lm_model *load(const char *path)
{
    lm_model *m = NULL;
    lm_err err = {0};
    CHECK(lm_model_load(&m, path, &err) == 0, "load %s: %s", path, err.msg);
    return m;
}

/* Ensembles (lm_model_ensemble): two copies of one model score as the model, bit for bit (the
 * mean of equal logits); two different members score as neither; the file round-trips; members
 * that differ in kind are refused. */
static void test_ensemble(const char *dir, const lm_dataset *ds, const lm_model *m, const lm_model *p)
{
    char a[4200], b[4200], e[4200];
    snprintf(a, sizeof a, "%s/a.st", dir), snprintf(b, sizeof b, "%s/b.st", dir),
        snprintf(e, sizeof e, "%s/e.st", dir);
    lm_err err = {0};
    lm_train_opts t;
    lm_train_opts_default(&t);
    t.meta_block = "mlp:8,4", t.global_block = "mlp:8", t.epochs = 2, t.patience = 0;
    t.tasks_per_batch = 2, t.lr = 0.05, t.threads = 1, t.seed = 7;
    lm_model *m2 = NULL, *pair = NULL, *same = NULL, *back = NULL, *mixed = NULL;
    lm_train_report rep;
    CHECK(lm_train(ds, &t, &m2, &rep, &err) == 0, "train a second member: %s", err.msg);
    CHECK(lm_model_save(m, a, &err) == 0 && lm_model_save(m2, b, &err) == 0, "save members: %s", err.msg);
    lm_model *two[2] = {load(a), load(a)}, *diff[2] = {load(a), load(b)}, *kinds[2] = {load(a), NULL};
    lm_model_free(m2);
    if (!two[0] || !two[1] || !diff[0] || !diff[1] || !kinds[0]) goto out;
    CHECK(lm_model_ensemble(&same, two, 2, &err) == 0, "ensemble of two copies: %s", err.msg);
    CHECK(lm_model_ensemble(&pair, diff, 2, &err) == 0, "ensemble of two members: %s", err.msg);
    if (!same || !pair) goto out;
    two[0] = two[1] = diff[0] = diff[1] = NULL; /* owned by the ensembles */
    CHECK(lm_model_nmembers(pair) == 2 && lm_model_emb_dim(pair) == 2 * lm_model_emb_dim(m),
          "2 members, embedding 2 x E (%zu)", lm_model_emb_dim(pair));
    lm_eval_result r1, rs, rp, rb, r0;
    CHECK(eval(m, ds, 0, LM_POOL_LATEST, 0, 3, &r1) == 0 && eval(same, ds, 0, LM_POOL_LATEST, 0, 3, &rs) == 0,
          "evaluate a model and the ensemble of two copies");
    CHECK(rs.auc == r1.auc && rs.logloss == r1.logloss && rs.auc_new == r1.auc_new,
          "two copies score as the model (log loss %.9f vs %.9f)", rs.logloss, r1.logloss);
    CHECK(eval(m, ds, 0, LM_POOL_LATEST, 0, 0, &r0) == 0 &&
              eval(same, ds, 0, LM_POOL_LATEST, 0, 0, &rb) == 0 && r0.logloss == rb.logloss,
          "two copies, unadapted, score as the model");
    CHECK(eval(pair, ds, 0, LM_POOL_LATEST, 0, 3, &rp) == 0 && rp.logloss != r1.logloss,
          "two different members score as neither (%.9f vs %.9f)", rp.logloss, r1.logloss);
    CHECK(lm_model_save(pair, e, &err) == 0, "save the ensemble: %s", err.msg);
    if ((back = load(e))) {
        CHECK(lm_model_nmembers(back) == 2, "the loaded ensemble has 2 members");
        CHECK(eval(back, ds, 0, LM_POOL_LATEST, 0, 3, &rb) == 0 && rb.logloss == rp.logloss &&
                  rb.auc == rp.auc,
              "the saved ensemble scores the same (%.9f vs %.9f)", rb.logloss, rp.logloss);
        lm_model *nest[2] = {back, back};
        CHECK(lm_model_ensemble(&mixed, nest, 2, &err) == LM_EINVAL && !mixed,
              "an ensemble of ensembles is refused");
    }
    char pp[4200];
    snprintf(pp, sizeof pp, "%s/p.st", dir);
    CHECK(lm_model_save(p, pp, &err) == 0 && (kinds[1] = load(pp)) != NULL, "save and load the plain model");
    if (kinds[1]) {
        CHECK(lm_model_ensemble(&mixed, kinds, 2, &err) == LM_EMISMATCH && !mixed,
              "a LiMAML and a plain member are refused: %s", err.msg);
    }
    CHECK(lm_model_ensemble(&mixed, kinds, 1, &err) == LM_EINVAL && !mixed, "one member is refused");
out:
    for (int i = 0; i < 2; i++) lm_model_free(two[i]), lm_model_free(diff[i]), lm_model_free(kinds[i]);
    lm_model_free(same), lm_model_free(pair), lm_model_free(back);
}

int main(void)
{
    const char *tmp = getenv("LM_TMP") ? getenv("LM_TMP") : "/tmp";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/test_evaluate.%d", tmp, (int)getpid());
    lm_test_mkdir_p(dir);
    lm_dataset *full = make(dir, "full", LOG_FULL), *cut = make(dir, "cut", LOG_CUT);
    lm_model *m = full ? train(full, LM_TRAIN_LIMAML) : NULL;
    lm_model *p = full ? train(full, LM_TRAIN_PLAIN) : NULL;
    if (!full || !cut || !m || !p) goto done;

    /* fresh: every validation row, no lag; age = mean of (1, 0.5, 0.9) days */
    lm_eval_result f, s1, c1, s3, none, b;
    CHECK(eval(m, full, 0, LM_POOL_LATEST, 0, 3, &f) == 0, "fresh evaluation");
    CHECK(f.tasks == 3 && f.tasks_adapted == 3 && f.rows_adapted == 8,
          "fresh: 3 tasks, 8 rows adapted (%llu, %llu)", (unsigned long long)f.tasks_adapted,
          (unsigned long long)f.rows_adapted);
    CHECK(f.adapt_lag_mean == 0, "fresh: no lag (%g)", f.adapt_lag_mean);
    CHECK(near(f.adapt_age_mean, (1 + 0.5 + 0.9) / 3 * DAY, 1e-6), "fresh: age %g days",
          f.adapt_age_mean / DAY);

    /* one day stale: the rows worked out above, and the same scores as the cut dataset */
    CHECK(eval(m, full, DAY, LM_POOL_LATEST, 0, 3, &s1) == 0, "stale evaluation");
    CHECK(s1.tasks_adapted == 3 && s1.rows_adapted == 4, "1 day stale: 3 tasks, 4 rows (%llu, %llu)",
          (unsigned long long)s1.tasks_adapted, (unsigned long long)s1.rows_adapted);
    CHECK(near(s1.adapt_lag_mean, ((12 - (10 + 1.0 / 48)) + 6 + 1.1) / 3 * DAY, 1e-6),
          "1 day stale: lag %g days", s1.adapt_lag_mean / DAY);
    CHECK(near(s1.adapt_age_mean, ((13 - (10 + 1.0 / 48)) + 6.5 + 2) / 3 * DAY, 1e-6),
          "1 day stale: age %g days", s1.adapt_age_mean / DAY);
    CHECK(eval(m, cut, 0, LM_POOL_LATEST, 0, 3, &c1) == 0, "evaluation of the cut dataset");
    CHECK(c1.rows_adapted == 4, "the cut dataset adapts on 4 rows");
    CHECK(s1.auc == c1.auc && s1.logloss == c1.logloss && s1.auc_new == c1.auc_new,
          "1 day stale scores as the cut dataset: AUC %.9f vs %.9f, log loss %.9f vs %.9f", s1.auc, c1.auc,
          s1.logloss, c1.logloss);
    CHECK(s1.logloss != f.logloss, "a stale embedding scores differently from a fresh one");

    /* three days: only B adapts; A and C score as without adaptation. A cut that removes every
     * row: the model as trained, exactly. */
    CHECK(eval(m, full, 3 * DAY, LM_POOL_LATEST, 0, 3, &s3) == 0, "3 days stale");
    CHECK(s3.tasks_adapted == 1 && s3.rows_adapted == 1 && near(s3.adapt_lag_mean, 6 * DAY, 1e-6),
          "3 days stale: only B adapts, on one row, 6 days old (%llu, %llu)",
          (unsigned long long)s3.tasks_adapted, (unsigned long long)s3.rows_adapted);
    CHECK(eval(m, full, 1000 * DAY, LM_POOL_LATEST, 0, 3, &none) == 0 && eval(m, full, 0, 0, 0, 0, &b) == 0,
          "1000 days stale and unadapted");
    CHECK(none.tasks_adapted == 0 && none.auc == b.auc && none.logloss == b.logloss,
          "nothing left to adapt on: the unadapted model's scores (%.9f vs %.9f)", none.logloss, b.logloss);

    /* the cap takes the most recent of the rows the cut kept: A keeps day 10 + 1/48 only */
    lm_eval_result cap1;
    CHECK(eval(m, full, DAY, LM_POOL_LATEST, 1, 3, &cap1) == 0 && cap1.rows_adapted == 3 &&
              near(cap1.adapt_lag_mean, s1.adapt_lag_mean, 1e-6),
          "stale then capped at 1: 3 rows, the same lag (%llu)", (unsigned long long)cap1.rows_adapted);

    /* pooling: one row each (cap 1), every pooling is the latest; several rows, mean differs */
    lm_eval_result l1, m1, x1, q1, lat, mean;
    CHECK(eval(m, full, 0, LM_POOL_LATEST, 1, 3, &l1) == 0 &&
              eval(m, full, 0, LM_POOL_MEAN, 1, 3, &m1) == 0 &&
              eval(m, full, 0, LM_POOL_MAX, 1, 3, &x1) == 0 && eval(m, full, 0, LM_POOL_COS, 1, 3, &q1) == 0,
          "pooled evaluations");
    CHECK(l1.logloss == m1.logloss && l1.logloss == x1.logloss && l1.logloss == q1.logloss,
          "one adaptation row: every pooling is the latest (%.9f %.9f %.9f %.9f)", l1.logloss, m1.logloss,
          x1.logloss, q1.logloss);
    CHECK(eval(m, full, 0, LM_POOL_LATEST, 0, 3, &lat) == 0 &&
              eval(m, full, 0, LM_POOL_MEAN, 0, 3, &mean) == 0,
          "pooled evaluations, every row");
    CHECK(lat.logloss == f.logloss, "LM_POOL_LATEST is the default");
    CHECK(lat.logloss != mean.logloss, "meta features that differ: mean pooling scores differently");

    /* refusals */
    lm_eval_result r;
    CHECK(eval(p, full, 0, LM_POOL_MEAN, 0, 3, &r) == LM_EINVAL, "pooling a plain model is refused");
    CHECK(eval(m, full, 0, 7, 0, 3, &r) == LM_EINVAL, "an unknown pooling is refused");
    CHECK(eval(m, full, -1, LM_POOL_LATEST, 0, 3, &r) == LM_EINVAL, "a negative staleness is refused");
    CHECK(eval(p, full, DAY, LM_POOL_LATEST, 0, 3, &r) == 0 && r.rows_adapted == 4,
          "staleness applies to a plain model's adaptation too");

    test_ensemble(dir, full, m, p);

done:
    lm_model_free(m);
    lm_model_free(p);
    lm_dataset_close(full);
    lm_dataset_close(cut);
    lm_rmtree(dir);
    return CHECK_DONE();
}
