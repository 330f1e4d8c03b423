/* experiment_sweep.c: the tables of `limaml experiment` beyond 3 and 4, each built around the
 * LiMAML configuration chosen on warm validation for Table 3 by moving one thing at a time:
 *
 *   Table 9   inner steps n (training time against plain, and the AUC gain)
 *   Table 10  dropout after every hidden layer
 *   Table 12  the inner task learning rate (also adapted at that rate, as the paper's one alpha)
 *   Table 13  the outer (global) learning rate
 *   Table 14  the meta embedding from the latest example against max, mean and cosine pooling
 *   Table 5   the task definition: per user against per (user, the item's first genre)
 *   fresh     section 5's embedding freshness: adapting on what a run `d` days earlier saw
 *
 * Every point is scored on every seed's test parts after adaptation with the chosen k and
 * alpha, and its gain taken against the same seed's plain model without adaptation, as Table 3
 * does. Where a point's configuration is Table 3's, its models and figures are reused (the same
 * options and seed give the same model bit for bit); pooling and freshness only evaluate Table
 * 3's LiMAML models again. Sweep values are a sensitivity analysis reported on test: nothing is
 * chosen from them. */
#include "eval/experiment.h"

#include "core/core.h"
#include "eval/floor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lm_xp_table_name(int table, char *buf, size_t n)
{
    if (table == LM_XP_T_FRESH) return "fresh";
    snprintf(buf, n, "%d", table);
    return buf;
}

/* ---- points --------------------------------------------------------------------------------- */

/* A new point at the chosen LiMAML configuration, adapted, gains against plain of Table 3. */
static lm_xp_point *new_point(lm_xp *x, int table, const char *param, double value, const char *value_str)
{
    LM_ASSERT(x->npt < LM_XP_MAX_SWEEP);
    lm_xp_point *p = &x->pt[x->npt++];
    memset(p, 0, sizeof *p);
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML], *pl = &x->arm[LM_XP_PLAIN];
    p->table = table;
    p->param = param;
    p->value = value;
    if (value_str)
        snprintf(p->value_str, sizeof p->value_str, "%s", value_str);
    else
        snprintf(p->value_str, sizeof p->value_str, "%g", value);
    p->algo = "limaml";
    p->adapt = 1;
    p->lr = l->lr, p->task_lr = l->task_lr, p->dropout = 0, p->inner = 1;
    p->k = l->k, p->alpha = l->alpha;
    p->pool = LM_POOL_LATEST, p->adapt_from = LM_ADAPT_VAL;
    p->floor_auc = x->floor_test.auc;
    p->nseeds = x->o->seeds;
    p->seed1_val = NAN;
    for (uint32_t s = 0; s < p->nseeds; s++) {
        p->base_auc[s] = pl->test0[s].auc;
        p->plain_secs[s] = pl->rep[s].seconds;
        p->plain_epochs[s] = pl->rep[s].epochs_run;
        p->plain_cpu[s] = pl->train_cpu[s];
    }
    return p;
}

/* Is the point's training configuration Table 3's LiMAML? (inner steps 1 is lm_train's
 * default, which Table 3 trains with.) */
static int table3_config(const lm_xp *x, const lm_xp_point *p)
{
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
    return p->lr == l->lr && p->task_lr == l->task_lr && p->dropout == 0 && p->inner == 1;
}

static void take_table3(const lm_xp *x, lm_xp_point *p, uint32_t s)
{
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
    p->train_secs[s] = l->rep[s].seconds;
    p->val_auc[s] = l->rep[s].best_val_auc;
    p->epochs[s] = l->rep[s].epochs_run;
    p->train_cpu[s] = l->train_cpu[s];
    p->trained = 1;
}

static int eval_point(const lm_xp *x, const lm_model *m, const lm_dataset *ds, const lm_xp_point *p,
                      double alpha, lm_eval_result *r, lm_err *err)
{
    lm_eval_opts e;
    lm_xp_eval_opts(x, p->k, alpha, 0, &e);
    e.pool = p->pool;
    e.adapt_from = p->adapt_from;
    e.stale_seconds = p->stale_days * 86400.0;
    return lm_evaluate(m, ds, &e, r, err);
}

static double mean_auc(const lm_xp_point *p)
{
    double m = 0;
    for (uint32_t s = 0; s < p->nseeds; s++) m += p->res[s].auc;
    return p->nseeds ? m / p->nseeds : NAN;
}

/* Train (or reuse) and score one point of the training sweeps on every seed. */
static int run_train_point(lm_xp *x, const lm_dataset *ds, lm_model *const *limaml, lm_xp_point *p,
                           const char *tag, lm_err *err)
{
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
    double t0 = lm_now();
    int rc = LM_OK;
    p->chosen = table3_config(x, p);
    p->reused = p->chosen;
    for (uint32_t s = 0; !rc && s < p->nseeds; s++) {
        double alt_alpha = p->task_lr;
        if (p->reused) {
            take_table3(x, p, s);
            p->res[s] = l->test1[s];
            if (p->has_alt)
                rc = alt_alpha == p->alpha ? (p->alt[s] = p->res[s], LM_OK)
                                           : eval_point(x, limaml[s], ds, p, alt_alpha, &p->alt[s], err);
            continue;
        }
        char *log = lm_xp_path(x->tmp_dir, "logs/t%d-%s-seed%u.jsonl", p->table, tag, s + 1);
        if (!log) return lm_err_set(err, LM_ENOMEM, "out of memory");
        lm_train_opts t;
        lm_xp_train_opts(x, l, s + 1, log, &t);
        t.lr = p->lr;
        t.task_lr = p->task_lr;
        t.inner_steps = p->inner;
        t.dropout = p->dropout;
        lm_model *m = NULL;
        lm_train_report rep;
        double c0 = lm_xp_cpu_seconds();
        rc = lm_train(ds, &t, &m, &rep, err);
        p->train_cpu[s] = lm_xp_cpu_seconds() - c0;
        free(log);
        if (!rc) {
            p->train_secs[s] = rep.seconds;
            p->val_auc[s] = rep.best_val_auc;
            p->epochs[s] = rep.epochs_run;
            p->trained = 1;
            rc = eval_point(x, m, ds, p, p->alpha, &p->res[s], err);
        }
        if (!rc && p->has_alt) rc = eval_point(x, m, ds, p, alt_alpha, &p->alt[s], err);
        lm_model_free(m);
    }
    if (!rc)
        lm_xp_say(x->o, "table %-2d %-12s %-8s test AUC %.4f over %u seeds%s (%.1f s)", p->table, p->param,
                  p->value_str, mean_auc(p), p->nseeds, p->reused ? ", Table 3's models" : "", lm_now() - t0);
    return rc;
}

/* The asked values with the chosen one added where missing, ascending. */
static size_t with_chosen(const double *v, size_t n, double chosen, double *out)
{
    size_t m = 0;
    int have = 0;
    for (size_t i = 0; i < n; i++) {
        out[m++] = v[i];
        have |= v[i] == chosen;
    }
    if (!have) out[m++] = chosen;
    for (size_t i = 1; i < m; i++)
        for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            double t = out[j];
            out[j] = out[j - 1], out[j - 1] = t;
        }
    return m;
}

/* ---- Tables 9, 10, 12, 13 ------------------------------------------------------------------- */

static int run_training_sweeps(lm_xp *x, const lm_dataset *ds, lm_model *const *limaml, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
    double v[LM_XP_MAX_GRID + 1];
    char tag[64];
    int rc = LM_OK;
    if (o->tables & LM_XP_TABLE9) {
        /* the baseline row: plain training, whose time the others are measured against */
        lm_xp_point *b = new_point(x, 9, "inner_steps", NAN, "vanilla training");
        b->algo = "plain", b->adapt = 0, b->reused = 1, b->trained = 1;
        b->lr = x->arm[LM_XP_PLAIN].lr, b->task_lr = x->arm[LM_XP_PLAIN].task_lr, b->inner = 0, b->k = 0;
        b->alpha = 0;
        for (uint32_t s = 0; s < b->nseeds; s++) {
            const lm_xp_arm *pl = &x->arm[LM_XP_PLAIN];
            b->res[s] = pl->test0[s];
            b->train_secs[s] = pl->rep[s].seconds, b->val_auc[s] = pl->rep[s].best_val_auc;
            b->epochs[s] = pl->rep[s].epochs_run;
            b->train_cpu[s] = pl->train_cpu[s];
        }
        double in[LM_XP_MAX_GRID];
        for (size_t i = 0; i < o->nsweep_inner; i++) in[i] = o->sweep_inner[i];
        size_t n = with_chosen(in, o->nsweep_inner, 1, v);
        for (size_t i = 0; !rc && i < n; i++) {
            lm_xp_point *p = new_point(x, 9, "inner_steps", v[i], NULL);
            p->inner = (uint32_t)v[i];
            snprintf(tag, sizeof tag, "n%u", p->inner);
            rc = run_train_point(x, ds, limaml, p, tag, err);
        }
    }
    if (!rc && (o->tables & LM_XP_TABLE10)) {
        size_t n = with_chosen(o->sweep_dropout, o->nsweep_dropout, 0, v);
        for (size_t i = 0; !rc && i < n; i++) {
            lm_xp_point *p = new_point(x, 10, "dropout", v[i], NULL);
            p->dropout = v[i];
            snprintf(tag, sizeof tag, "dropout%g", v[i]);
            rc = run_train_point(x, ds, limaml, p, tag, err);
        }
    }
    if (!rc && (o->tables & LM_XP_TABLE12)) {
        size_t n = with_chosen(o->sweep_task_lr, o->nsweep_task_lr, l->task_lr, v);
        for (size_t i = 0; !rc && i < n; i++) {
            lm_xp_point *p = new_point(x, 12, "task_lr", v[i], NULL);
            p->task_lr = v[i];
            p->has_alt = 1;
            snprintf(tag, sizeof tag, "tlr%g", v[i]);
            rc = run_train_point(x, ds, limaml, p, tag, err);
        }
    }
    if (!rc && (o->tables & LM_XP_TABLE13)) {
        size_t n = with_chosen(o->sweep_lr, o->nsweep_lr, l->lr, v);
        for (size_t i = 0; !rc && i < n; i++) {
            lm_xp_point *p = new_point(x, 13, "lr", v[i], NULL);
            p->lr = v[i];
            snprintf(tag, sizeof tag, "lr%g", v[i]);
            rc = run_train_point(x, ds, limaml, p, tag, err);
        }
    }
    return rc;
}

/* ---- Table 14 and freshness: Table 3's LiMAML models evaluated again ------------------------- */

static int run_eval_only(lm_xp *x, const lm_dataset *ds, lm_model *const *limaml, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
    int rc = LM_OK;
    if (o->tables & LM_XP_TABLE14) {
        static const struct {
            int pool;
            const char *name;
        } pools[] = {
            {LM_POOL_LATEST, "latest"}, {LM_POOL_MAX, "max"}, {LM_POOL_MEAN, "mean"}, {LM_POOL_COS, "cos"}};
        for (size_t i = 0; !rc && i < 4; i++) {
            double t0 = lm_now();
            lm_xp_point *p = new_point(x, 14, "pool", NAN, pools[i].name);
            p->pool = pools[i].pool;
            p->chosen = p->pool == LM_POOL_LATEST;
            p->reused = 1;
            for (uint32_t s = 0; !rc && s < p->nseeds; s++) {
                take_table3(x, p, s);
                if (p->chosen)
                    p->res[s] = l->test1[s];
                else
                    rc = eval_point(x, limaml[s], ds, p, p->alpha, &p->res[s], err);
            }
            /* what validation would say: seed 1's warm validation AUC with this pooling */
            lm_eval_result r;
            lm_eval_opts e;
            lm_xp_eval_opts(x, p->k, p->alpha, 1, &e);
            e.pool = p->pool;
            if (!rc) rc = lm_evaluate(limaml[0], ds, &e, &r, err);
            if (!rc) p->seed1_val = r.auc;
            if (!rc)
                lm_xp_say(o, "table 14 pool %-6s test AUC %.4f, seed 1 warm val AUC %.4f (%.1f s)",
                          p->value_str, mean_auc(p), p->seed1_val, lm_now() - t0);
        }
    }
    if (!rc && (o->tables & LM_XP_FRESH)) {
        /* the protocol's adaptation on validation parts; then the recent-window variant
         * (train and validation parts), where an embedding d days stale still has rows */
        for (int win = 0; !rc && win < 2; win++)
            for (size_t i = 0; !rc && i <= o->nstale_days; i++) {
                double t0 = lm_now(), d = i ? o->stale_days[i - 1] : 0;
                lm_xp_point *p = new_point(x, LM_XP_T_FRESH, "stale_days", d, NULL);
                p->stale_days = d;
                p->adapt_from = win ? LM_ADAPT_TRAIN_VAL : LM_ADAPT_VAL;
                p->option_row = win;
                p->chosen = !win && d == 0;
                p->reused = 1;
                for (uint32_t s = 0; !rc && s < p->nseeds; s++) {
                    take_table3(x, p, s);
                    if (p->chosen)
                        p->res[s] = l->test1[s];
                    else
                        rc = eval_point(x, limaml[s], ds, p, p->alpha, &p->res[s], err);
                }
                if (!rc)
                    lm_xp_say(
                        o,
                        "fresh %-9s stale %-4g days: test AUC %.4f; seed 1: %llu of %llu tasks adapted, "
                        "lag %.1f days (%.1f s)",
                        win ? "train+val" : "val", d, mean_auc(p),
                        (unsigned long long)p->res[0].tasks_adapted, (unsigned long long)p->res[0].tasks,
                        p->res[0].adapt_lag_mean / 86400.0, lm_now() - t0);
            }
    }
    return rc;
}

/* ---- Table 5: the task definition ----------------------------------------------------------- */

/* Train arm `a` (its chosen rates) on every seed of the (user, genre) dataset; seed 1's model
 * chooses the adaptation (k, alpha) on that dataset's warm validation parts. */
static int genre_arm(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, lm_err *err)
{
    int rc = LM_OK;
    for (uint32_t s = 0; !rc && s < x->o->seeds; s++) {
        char *log = lm_xp_path(x->tmp_dir, "logs/t5-%s-seed%u.jsonl", a->key, s + 1);
        if (!log) return lm_err_set(err, LM_ENOMEM, "out of memory");
        lm_train_opts t;
        lm_xp_train_opts(x, a, s + 1, log, &t);
        lm_model *m = NULL;
        rc = lm_train(ds, &t, &m, &a->rep[s], err);
        free(log);
        lm_eval_opts e;
        if (!rc && s == 0) {
            lm_eval_result r;
            lm_xp_eval_opts(x, 0, -1, 1, &e);
            rc = lm_evaluate(m, ds, &e, &r, err);
            a->noadapt_val = r.auc;
            a->nadapt = 0;
            if (!rc) rc = lm_xp_choose_adaptation(x, ds, a, m, err);
        }
        lm_xp_eval_opts(x, 0, -1, 0, &e);
        if (!rc) rc = lm_evaluate(m, ds, &e, &a->test0[s], err);
        lm_xp_eval_opts(x, a->k, a->alpha, 0, &e);
        if (!rc) rc = lm_evaluate(m, ds, &e, &a->test1[s], err);
        a->nseeds = s + 1;
        lm_model_free(m);
    }
    return rc;
}

static int run_table5(lm_xp *x, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    if (o->source != LM_XP_SOURCE_MOVIELENS) {
        snprintf(x->skipped[x->nskipped++], sizeof x->skipped[0],
                 "Table 5 (task definition) is skipped: only MovieLens has a second task definition here "
                 "(user, the item's first genre); a %s dataset's task is fixed by its schema",
                 o->source == LM_XP_SOURCE_SYNTHETIC ? "synthetic" : "prepared");
        return LM_OK;
    }
    double t0 = lm_now();
    char *dir = lm_path_join(x->tmp_dir, "dataset-genre");
    if (!dir) return lm_err_set(err, LM_ENOMEM, "out of memory");
    lm_prepare_summary sum;
    int rc = lm_prepare_movielens(o->input, dir, LM_ML_TASK_USER_GENRE, NULL, &sum, err);
    lm_dataset *ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, dir, 0, err);
    free(dir);
    if (rc) return rc;
    x->genre_tasks = lm_dataset_ntasks(ds);
    x->genre_new = sum.tasks_new;
    lm_floor_opts fo;
    lm_floor_opts_default(&fo);
    lm_eval_result floor;
    rc = lm_floor_evaluate(ds, &fo, &floor, err);
    lm_xp_arm *g = x->genre_arm;
    for (int i = 0; i < 2; i++) {
        const lm_xp_arm *src = &x->arm[i ? LM_XP_LIMAML : LM_XP_PLAIN];
        memset(&g[i], 0, sizeof g[i]);
        g[i].key = i ? "limaml-genre" : "plain-genre";
        snprintf(g[i].label, sizeof g[i].label, "%s", src->label);
        g[i].algo = src->algo, g[i].meta_block = src->meta_block, g[i].enabled = 1;
        g[i].lr = src->lr, g[i].task_lr = src->task_lr;
    }
    if (!rc) rc = genre_arm(x, ds, &g[0], err);
    if (!rc) rc = genre_arm(x, ds, &g[1], err);
    lm_dataset_close(ds);
    if (rc) return rc;
    /* rows: per task definition, plain and LiMAML without and with adaptation; gains against
     * the same definition's plain model without adaptation (their test parts differ) */
    for (int def = 0; def < 2; def++)
        for (int i = 0; i < 2; i++)
            for (int ad = 0; ad < 2; ad++) {
                const lm_xp_arm *a = def ? &g[i] : &x->arm[i ? LM_XP_LIMAML : LM_XP_PLAIN];
                const lm_xp_arm *base = def ? &g[0] : &x->arm[LM_XP_PLAIN];
                lm_xp_point *p = new_point(x, 5, "task", NAN, def ? "user,genre" : "user");
                p->algo = i ? "limaml" : "plain";
                p->adapt = ad;
                p->chosen = !def && i == 1 && ad;
                p->reused = !def;
                p->lr = a->lr, p->task_lr = a->task_lr, p->inner = i ? 1 : 0;
                p->k = ad ? a->k : 0, p->alpha = ad ? a->alpha : 0;
                p->floor_auc = def ? floor.auc : x->floor_test.auc;
                p->trained = 1;
                snprintf(p->label, sizeof p->label, "%s, task = %s", i ? "LiMAML" : "Plain",
                         def ? "(user, first genre)" : "user");
                for (uint32_t s = 0; s < p->nseeds; s++) {
                    p->res[s] = ad ? a->test1[s] : a->test0[s];
                    p->base_auc[s] = base->test0[s].auc;
                    p->train_secs[s] = a->rep[s].seconds, p->val_auc[s] = a->rep[s].best_val_auc;
                    p->epochs[s] = a->rep[s].epochs_run;
                }
            }
    lm_xp_say(o,
              "table 5: (user, genre) tasks: plain %.4f / adapted %.4f, LiMAML %.4f / adapted %.4f (%.1f s)",
              g[0].test0[0].auc, g[0].test1[0].auc, g[1].test0[0].auc, g[1].test1[0].auc, lm_now() - t0);
    return LM_OK;
}

/* ---- all of them ---------------------------------------------------------------------------- */

int lm_xp_run_sweeps(lm_xp *x, const lm_dataset *ds, lm_model *const *limaml, lm_err *err)
{
    int rc = run_training_sweeps(x, ds, limaml, err);
    if (!rc) rc = run_eval_only(x, ds, limaml, err);
    if (!rc && (x->o->tables & LM_XP_TABLE5)) rc = run_table5(x, err);
    /* labels of the points that did not set their own */
    for (size_t i = 0; i < x->npt; i++) {
        lm_xp_point *p = &x->pt[i];
        if (p->label[0]) continue;
        if (!strcmp(p->algo, "plain"))
            snprintf(p->label, sizeof p->label, "Plain (vanilla training), no adaptation");
        else if (p->table == LM_XP_T_FRESH)
            snprintf(p->label, sizeof p->label, "LiMAML, adapted on %s, %s",
                     p->adapt_from == LM_ADAPT_VAL ? "validation parts"
                                                   : "train + validation parts (recent window)",
                     p->stale_days > 0 ? "stale" : "fresh");
        else
            snprintf(p->label, sizeof p->label, "LiMAML, %s = %s", p->param, p->value_str);
    }
    return rc;
}
