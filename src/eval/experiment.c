/* experiment.c: the driver of `limaml experiment`. It runs the protocol of PROTOCOL.md for the
 * algorithms of the paper's Tables 3 and 4 in three stages, then hands over to
 * experiment_sweep.c for the tables around the chosen LiMAML configuration (stage 4):
 *
 *   1. the floor that needs no learning (eval/floor.c), on test and on warm validation;
 *   2. on seed 1, a grid over the outer learning rate (early stopping picks the epochs), then,
 *      for the chosen model, a grid over the adaptation steps k and task learning rate alpha.
 *      Every choice is made on warm tasks' validation parts (adapting on their train parts),
 *      never on a test part, so the test figures stay an honest estimate;
 *   3. every seed with the chosen values (seed 1's model is the grid's own: the same options
 *      and seed give the same model bit for bit, so training it again would only cost time),
 *      each scored on every task's test part without and with adaptation on its validation part;
 *   4. Tables 5, 9, 10, 12, 13, 14 and freshness (experiment_sweep.c), reusing LiMAML's models.
 *
 * The output folder is built under a temporary name and renamed into place at the end. */
#include "eval/experiment.h"

#include "core/core.h"
#include "eval/floor.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

void lm_experiment_opts_default(lm_experiment_opts *o)
{
    memset(o, 0, sizeof *o);
    o->source = LM_XP_SOURCE_MOVIELENS;
    o->synth_tasks = 2000;
    o->synth_seed = 1;
    o->seeds = 3;
    o->tables = LM_XP_TABLES_ALL;
    o->epochs = 30;
    o->patience = 3;
    o->support_weight = 3;
    o->ensemble = 3;
    /* 0.01 first: the slow algorithms, whose grid is cut short, get the rate that converges in
     * fewer epochs. On MovieLens their full grid cost about 90 CPU seconds more, and taking
     * 0.01 alone costs MAML 0.009 and wide-and-deep 0.001 of validation AUC (the id LiMAML
     * chose 0.01 anyway): docs/EXPERIMENTS.md. */
    o->grid_lr[0] = 0.01, o->grid_lr[1] = 0.003, o->ngrid_lr = 2;
    /* a coarse start: the search goes on past its edge where the best point lies there */
    o->grid_k[0] = 1, o->grid_k[1] = 5, o->ngrid_k = 2;
    o->grid_alpha[0] = 0.1, o->grid_alpha[1] = 0.3, o->ngrid_alpha = 2;
    o->grid_task_lr[0] = 0.1, o->grid_task_lr[1] = 0.3, o->ngrid_task_lr = 2;
    o->max_k = 10;
    o->slow_ngrid_lr = 1;
    /* the paper's values (Tables 9, 10) and ranges around the chosen rates (12, 13); section
     * 5 compares a daily with a weekly refresh */
    for (uint32_t n = 1; n <= 5; n++) o->sweep_inner[n - 1] = n;
    o->nsweep_inner = 5;
    const double drop[] = {0, 0.1, 0.2, 0.4, 0.6}, tlr[] = {0.01, 0.03, 0.1, 0.3, 1, 3},
                 lr[] = {0.001, 0.003, 0.01, 0.03}, stale[] = {1, 7, 30};
    memcpy(o->sweep_dropout, drop, sizeof drop), o->nsweep_dropout = 5;
    memcpy(o->sweep_task_lr, tlr, sizeof tlr), o->nsweep_task_lr = 6;
    memcpy(o->sweep_lr, lr, sizeof lr), o->nsweep_lr = 4;
    memcpy(o->stale_days, stale, sizeof stale), o->nstale_days = 3;
}

void lm_experiment_opts_quick(lm_experiment_opts *o)
{
    o->epochs = 3;
    o->patience = 2;
    o->grid_lr[0] = 0.01, o->ngrid_lr = 1;
    o->grid_k[0] = 1, o->grid_k[1] = 3, o->ngrid_k = 2;
    o->grid_alpha[0] = 0.1, o->ngrid_alpha = 1;
    o->ngrid_task_lr = 1;
    o->max_k = 3;
    o->slow_ngrid_lr = 1;
    o->sweep_inner[0] = 1, o->sweep_inner[1] = 2, o->nsweep_inner = 2;
    o->sweep_dropout[0] = 0, o->sweep_dropout[1] = 0.2, o->nsweep_dropout = 2;
    o->sweep_task_lr[0] = 0.1, o->sweep_task_lr[1] = 1, o->nsweep_task_lr = 2;
    o->sweep_lr[0] = 0.01, o->sweep_lr[1] = 0.03, o->nsweep_lr = 2;
    o->stale_days[0] = 7, o->nstale_days = 1;
}

/* ---- the algorithms ------------------------------------------------------------------------- */

typedef struct arm_def {
    const char *key, *label;
    int algo;
    const char *meta_block;
    int with_support_loss;
    int emb_logit;
    int tables;
    int option_row;
    int data;
} arm_def;

/* Indexed by LM_XP_...; the meta block is the same small MLP for every algorithm of Table 3
 * (plain and MAML train it with the rest of the network), and the id blocks are Table 4's. */
static const arm_def ARMS[LM_XP_NARMS] = {
    {"plain", "Plain (vanilla training)", LM_TRAIN_PLAIN, "mlp:32,16", 0, 0, LM_XP_TABLE3, 0,
     LM_XP_DATA_PROTOCOL},
    {"maml", "Entire-network MAML", LM_TRAIN_MAML, "mlp:32,16", 0, 0, LM_XP_TABLE3, 0, LM_XP_DATA_PROTOCOL},
    {"limaml", "LiMAML (MLP meta block)", LM_TRAIN_LIMAML, "mlp:32,16", 0, 0, LM_XP_TABLE3 | LM_XP_TABLE4, 0,
     LM_XP_DATA_PROTOCOL},
    {"limaml_sw", "LiMAML + support loss", LM_TRAIN_LIMAML, "mlp:32,16", 1, 0, LM_XP_TABLE3, 1,
     LM_XP_DATA_PROTOCOL},
    /* the independent study's second change: the meta embedding also shifts the logit
     * (docs/META.md: a learned map w.E is no more expressive than E[0]) */
    {"limaml_swl", "LiMAML + support loss + E[0] on the logit", LM_TRAIN_LIMAML, "mlp:32,16", 1, 1,
     LM_XP_TABLE3, 1, LM_XP_DATA_PROTOCOL},
    {"widedeep", "Wide-and-deep (task-id embedding)", LM_TRAIN_WIDEDEEP, "id:16", 0, 0, LM_XP_TABLE4, 0,
     LM_XP_DATA_PROTOCOL},
    {"limaml_id", "LiMAML (id-embedding meta block)", LM_TRAIN_LIMAML, "id:16", 0, 0, LM_XP_TABLE4, 0,
     LM_XP_DATA_PROTOCOL},
    {"limaml_id_sw", "LiMAML (id-embedding meta block) + support loss", LM_TRAIN_LIMAML, "id:16", 1, 0,
     LM_XP_TABLE4, 1, LM_XP_DATA_PROTOCOL},
    {"plain_rates", "Plain + item rates", LM_TRAIN_PLAIN, "mlp:32,16", 0, 0, LM_XP_TABLE3, 1,
     LM_XP_DATA_RATES},
    {"limaml_rates", "LiMAML + support loss + E[0] on the logit + item rates", LM_TRAIN_LIMAML, "mlp:32,16",
     1, 1, LM_XP_TABLE3, 1, LM_XP_DATA_RATES},
    {"limaml_refit", "LiMAML + support loss + E[0] on the logit + item rates, refit on train + val",
     LM_TRAIN_LIMAML, "mlp:32,16", 1, 1, LM_XP_TABLE3, 1, LM_XP_DATA_REFIT},
    {"limaml_rates_ens", "LiMAML + support loss + E[0] on the logit + item rates, ensemble", LM_TRAIN_LIMAML,
     "mlp:32,16", 1, 1, LM_XP_TABLE3, 1, LM_XP_DATA_RATES},
    {"limaml_refit_ens", "LiMAML + support loss + E[0] on the logit + item rates, refit, ensemble",
     LM_TRAIN_LIMAML, "mlp:32,16", 1, 1, LM_XP_TABLE3, 1, LM_XP_DATA_REFIT},
};

static int is_ensemble_arm(int i)
{
    return i == LM_XP_LIMAML_RATES_ENS || i == LM_XP_LIMAML_REFIT_ENS;
}

/* Wide-and-deep is reported without adaptation only (the paper: its id embedding is the
 * personal part); every other algorithm is reported both ways. */
static int needs_adapt(int arm)
{
    return arm != LM_XP_WIDEDEEP;
}

/* ---- small helpers -------------------------------------------------------------------------- */

void lm_xp_say(const lm_experiment_opts *o, const char *fmt, ...)
{
    if (!o->progress) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    o->progress(o->progress_ctx, line);
}

/* CPU seconds of this process, all threads: with the wall time it tells a slow phase from a
 * busy machine (other processes take cores; the CPU time does not grow with them). */
double lm_xp_cpu_seconds(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int make_dir(const char *path, lm_err *err)
{
    if (mkdir(path, 0755) != 0) return lm_err_errno(err, LM_EIO, "%s: cannot create the folder", path);
    return LM_OK;
}

char *lm_xp_path(const char *dir, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return lm_path_join(dir, name);
}

static int copy_file(const char *from, const char *to, lm_err *err)
{
    char *data;
    size_t len;
    int rc = lm_read_file(from, &data, &len, err);
    if (rc) return rc;
    rc = lm_write_file_atomic(to, data, len, err);
    free(data);
    return rc;
}

/* Seed 1's per-epoch train loss and validation AUC, read back from the JSON-lines log that
 * lm_train wrote (the same file a reader of the output folder sees). */
static void read_curve(lm_xp_arm *a, const char *log_path)
{
    char *data;
    size_t len;
    lm_err e = {0};
    a->ncurve = 0;
    if (lm_read_file(log_path, &data, &len, &e)) return;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line && a->ncurve < 256;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *l = cJSON_GetObjectItem(j, "train_loss"), *v = cJSON_GetObjectItem(j, "val_auc");
        /* a refit has no validation part: its AUC is null, its loss is still plotted */
        if (cJSON_IsNumber(l) && (cJSON_IsNumber(v) || cJSON_IsNull(v))) {
            a->curve_loss[a->ncurve] = l->valuedouble;
            a->curve_val[a->ncurve++] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        }
        cJSON_Delete(j);
    }
    free(data);
}

/* ---- training and scoring one model --------------------------------------------------------- */

void lm_xp_train_opts(const lm_xp *x, const lm_xp_arm *a, uint64_t seed, const char *log_path,
                      lm_train_opts *t)
{
    lm_train_opts_default(t);
    t->algo = a->algo;
    t->meta_block = a->meta_block;
    t->support_weight = a->support_weight;
    t->emb_logit = a->emb_logit;
    t->lr = a->lr;
    t->task_lr = a->task_lr;
    t->epochs = x->o->epochs;
    t->patience = x->o->patience;
    t->seed = seed;
    t->threads = x->threads;
    t->log_path = log_path;
}

static int train_one(const lm_xp *x, const lm_dataset *ds, const lm_xp_arm *a, double lr, double task_lr,
                     uint64_t seed, const char *log_path, lm_model **m, lm_train_report *rep, lm_err *err)
{
    lm_train_opts t;
    lm_xp_train_opts(x, a, seed, log_path, &t);
    t.lr = lr;
    t.task_lr = task_lr;
    return lm_train(ds, &t, m, rep, err);
}

/* The refit: the chosen configuration trained on train + validation for as many epochs as the
 * same seed's run on train alone chose on validation (the learning-rate schedule still spans
 * the run's epochs, so the two see the same rates epoch by epoch). */
static int train_refit(const lm_xp *x, const lm_dataset *ds, const lm_xp_arm *a,
                       const lm_train_report *chosen, uint64_t seed, const char *log_path, lm_model **m,
                       lm_train_report *rep, lm_err *err)
{
    lm_train_opts t;
    lm_xp_train_opts(x, a, seed, log_path, &t);
    t.lr = a->lr;
    t.task_lr = a->task_lr;
    t.patience = 0;
    t.stop_after_epochs = LM_MAX(chosen->best_epoch, 1);
    return lm_train(ds, &t, m, rep, err);
}

/* on_val: warm tasks' validation parts after adapting on their train parts (for choosing);
 * otherwise every task's test part after adapting on its validation part (the protocol). */
void lm_xp_eval_opts(const lm_xp *x, uint32_t k, double alpha, int on_val, lm_eval_opts *e)
{
    lm_eval_opts_default(e);
    e->adapt_steps = k;
    e->task_lr = alpha;
    e->threads = x->threads;
    if (on_val) {
        e->score_split = LM_SPLIT_VAL;
        e->adapt_from = LM_ADAPT_TRAIN;
        e->warm_only = 1;
    } else {
        e->score_split = LM_SPLIT_TEST;
        e->adapt_from = LM_ADAPT_VAL;
    }
}

static int score(const lm_xp *x, const lm_model *m, const lm_dataset *ds, uint32_t k, double alpha,
                 int on_val, lm_eval_result *r, lm_err *err)
{
    lm_eval_opts e;
    lm_xp_eval_opts(x, k, alpha, on_val, &e);
    return lm_evaluate(m, ds, &e, r, err);
}

/* The test part of an arm: a refit model's warm tasks have no validation part left (it joined
 * their train part), so it adapts on train + validation, as production adapts on a window of
 * recent days; new tasks adapt on their validation part either way. */
static int score_test(const lm_xp *x, const lm_xp_arm *a, const lm_model *m, const lm_dataset *ds, uint32_t k,
                      double alpha, lm_eval_result *r, lm_err *err)
{
    lm_eval_opts e;
    lm_xp_eval_opts(x, k, alpha, 0, &e);
    if (a->data == LM_XP_DATA_REFIT) e.adapt_from = LM_ADAPT_TRAIN_VAL;
    return lm_evaluate(m, ds, &e, r, err);
}

/* One adaptation point on warm validation, remembered in the arm's list (tried once). */
static int adapt_point(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, const lm_model *m, uint32_t k,
                       double alpha, int extended, double *auc, lm_err *err)
{
    for (size_t i = 0; i < a->nadapt; i++)
        if (a->adapt_k[i] == k && a->adapt_alpha[i] == alpha) {
            *auc = a->adapt_val[i];
            return LM_OK;
        }
    if (a->nadapt >= LM_XP_MAX_POINTS) {
        *auc = -1;
        return LM_OK;
    }
    lm_eval_result r;
    int rc = score(x, m, ds, k, alpha, 1, &r, err);
    if (rc) return rc;
    size_t n = a->nadapt++;
    a->adapt_k[n] = k, a->adapt_alpha[n] = alpha, a->adapt_val[n] = r.auc, a->adapt_extended[n] = extended;
    *auc = r.auc;
    return LM_OK;
}

/* The adaptation search: the k x alpha grid, then, while the best point lies on the edge of
 * what was tried, one step past it (k doubled, alpha times or over 3). A grid whose best point
 * is its largest k says only that more steps help; going on until it stops helping is what
 * a person tuning by hand would do, and costs only the points it needs. */
int lm_xp_choose_adaptation(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, const lm_model *m, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    double best = -1, v, w0 = lm_now(), c0 = lm_xp_cpu_seconds();
    int rc = LM_OK;
    for (size_t i = 0; !rc && i < o->ngrid_k; i++)
        for (size_t j = 0; !rc && j < o->ngrid_alpha; j++) {
            rc = adapt_point(x, ds, a, m, o->grid_k[i], o->grid_alpha[j], 0, &v, err);
            if (!rc && v > best) best = v, a->k = o->grid_k[i], a->alpha = o->grid_alpha[j];
        }
    for (int moved = 1; !rc && moved;) {
        moved = 0;
        uint32_t kmax = 0;
        double amax = 0, amin = INFINITY;
        for (size_t i = 0; i < a->nadapt; i++) {
            kmax = LM_MAX(kmax, a->adapt_k[i]);
            amax = fmax(amax, a->adapt_alpha[i]), amin = fmin(amin, a->adapt_alpha[i]);
        }
        uint32_t tk[3] = {0};
        double ta[3] = {0};
        int nt = 0;
        if (a->k == kmax && a->k * 2 <= o->max_k) tk[nt] = a->k * 2, ta[nt++] = a->alpha;
        if (a->alpha == amax && a->alpha * 3 <= 3.0 + 1e-9) tk[nt] = a->k, ta[nt++] = a->alpha * 3;
        if (a->alpha == amin && a->alpha / 3 >= 0.001 - 1e-12) tk[nt] = a->k, ta[nt++] = a->alpha / 3;
        uint32_t bk = a->k;
        double ba = a->alpha;
        for (int t = 0; !rc && t < nt; t++) {
            rc = adapt_point(x, ds, a, m, tk[t], ta[t], 1, &v, err);
            if (!rc && v > best) best = v, bk = tk[t], ba = ta[t], moved = 1;
        }
        a->k = bk, a->alpha = ba;
    }
    if (!rc)
        lm_xp_say(o,
                  "grid %-10s adaptation: k %u, alpha %.3g (warm val AUC %.4f; without adaptation %.4f; %zu "
                  "points, "
                  "%.1f s, cpu %.1f s)",
                  a->key, a->k, a->alpha, best, a->noadapt_val, a->nadapt, lm_now() - w0,
                  lm_xp_cpu_seconds() - c0);
    return rc;
}

/* Is the inner task learning rate searched for this algorithm? LiMAML with an MLP meta block
 * trains on the fast engine, where a second axis of the grid costs seconds. */
static int searches_task_lr(const lm_xp_arm *a)
{
    return a->algo == LM_TRAIN_LIMAML && !strncmp(a->meta_block, "mlp:", 4);
}

/* Trains on the per-task reference engine (lm_train's fast engine serves plain training and
 * LiMAML with an MLP meta block). */
static int slow_engine(const lm_xp_arm *a)
{
    return a->algo == LM_TRAIN_MAML || a->algo == LM_TRAIN_WIDEDEEP || strncmp(a->meta_block, "mlp:", 4) != 0;
}

/* Stage 2 for one algorithm: the training grid, then the adaptation search on the chosen
 * model. Leaves seed 1's model in *best and its log at logs/KEY-seed1.jsonl. */
static int choose(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, size_t nlr, lm_model **best, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    char *grid_dir = lm_path_join(x->tmp_dir, "logs/grid");
    int rc = grid_dir ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
    double best_val = -1;
    size_t best_i = 0;
    size_t ntlr = searches_task_lr(a) ? o->ngrid_task_lr : 1;
    *best = NULL;
    a->ngrid = 0;
    for (size_t i = 0; !rc && i < nlr; i++)
        for (size_t j = 0; !rc && j < ntlr; j++) {
            double lr = o->grid_lr[i], tlr = o->grid_task_lr[j];
            char *log = lm_xp_path(grid_dir, "%s-lr%g-tlr%g.jsonl", a->key, lr, tlr);
            lm_model *m = NULL;
            lm_train_report rep;
            double c0 = lm_xp_cpu_seconds();
            rc = log ? train_one(x, ds, a, lr, tlr, 1, log, &m, &rep, err)
                     : lm_err_set(err, LM_ENOMEM, "out of memory");
            double cpu = lm_xp_cpu_seconds() - c0;
            free(log);
            if (rc) break;
            size_t n = a->ngrid++;
            a->grid_lr[n] = lr, a->grid_task_lr[n] = tlr;
            a->grid_val[n] = rep.best_val_auc;
            a->grid_epochs[n] = rep.epochs_run;
            a->grid_best_epoch[n] = rep.best_epoch;
            a->grid_secs[n] = rep.seconds;
            lm_xp_say(
                o, "grid %-10s lr %-6g task lr %-4g val AUC %.4f (best epoch %u of %u, %.1f s, cpu %.1f s)",
                a->key, lr, tlr, rep.best_val_auc, rep.best_epoch, rep.epochs_run, rep.seconds,
                lm_xp_cpu_seconds() - c0);
            /* ties keep the earlier point; NaN (one class) never wins */
            if (rep.best_val_auc > best_val) {
                best_val = rep.best_val_auc;
                best_i = n;
                lm_model_free(*best);
                *best = m;
                a->rep[0] = rep;
                a->train_cpu[0] = cpu;
            } else {
                lm_model_free(m);
            }
        }
    if (!rc && !*best) rc = lm_err_set(err, LM_EINVAL, "%s: no learning rate gave a validation AUC", a->key);
    if (!rc) {
        a->lr = a->grid_lr[best_i], a->task_lr = a->grid_task_lr[best_i];
        char *from = lm_xp_path(grid_dir, "%s-lr%g-tlr%g.jsonl", a->key, a->lr, a->task_lr);
        char *to = lm_xp_path(x->tmp_dir, "logs/%s-seed1.jsonl", a->key);
        rc = from && to ? copy_file(from, to, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) read_curve(a, to);
        free(from), free(to);
    }
    lm_eval_result r;
    if (!rc) rc = score(x, *best, ds, 0, -1, 1, &r, err);
    if (!rc) a->noadapt_val = r.auc;
    a->nadapt = 0;
    a->k = 0, a->alpha = 0;
    if (!rc && needs_adapt((int)(a - x->arm))) rc = lm_xp_choose_adaptation(x, ds, a, *best, err);
    if (rc) {
        lm_model_free(*best);
        *best = NULL;
    }
    free(grid_dir);
    return rc;
}

/* Stage 3 for one model: the test part without and with adaptation. */
static int test_one(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, const lm_model *m, uint32_t s, lm_err *err)
{
    double c0 = lm_xp_cpu_seconds();
    int rc = score_test(x, a, m, ds, 0, -1, &a->test0[s], err);
    if (!rc && needs_adapt((int)(a - x->arm)))
        rc = score_test(x, a, m, ds, a->k, a->alpha, &a->test1[s], err);
    char adapted[64] = "";
    if (!rc && (a->nadapt || a->data == LM_XP_DATA_REFIT || a->members))
        snprintf(adapted, sizeof adapted, ", adapted %.4f", a->test1[s].auc);
    if (!rc)
        lm_xp_say(x->o, "seed %u %-10s test AUC %.4f%s (training %.1f s; scoring cpu %.1f s)", s + 1, a->key,
                  a->test0[s].auc, adapted, a->rep[s].seconds, lm_xp_cpu_seconds() - c0);
    a->nseeds = s + 1;
    return rc;
}

/* The ensemble rows of reported seed s: member 0 is the rates row's model of that seed and its
 * refit (first[0], first[1], taken over here); members j = 1..M-1 train with seed j S + s + 1
 * (so the groups of seeds are disjoint) as the rates row, and each is refit on train +
 * validation for its own best epoch; each ensemble scores the test parts as its row's single
 * model does. Training time: the members' summed. */
static int ensembles(lm_xp *x, lm_dataset *const *dsv, uint32_t s, lm_model **first, lm_err *err)
{
    uint32_t M = x->o->ensemble, S = x->o->seeds;
    lm_xp_arm *ar = &x->arm[LM_XP_LIMAML_RATES_ENS], *af = &x->arm[LM_XP_LIMAML_REFIT_ENS];
    const lm_xp_arm *sr = &x->arm[LM_XP_LIMAML_RATES], *sf = &x->arm[LM_XP_LIMAML_REFIT];
    int refit = af->enabled;
    lm_model **mr = calloc(M, sizeof *mr), **mf = calloc(M, sizeof *mf), *er = NULL, *ef = NULL;
    int rc = mr && mf ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
    double cr = sr->train_cpu[s], cf = sf->train_cpu[s];
    if (!rc) {
        mr[0] = first[0], mf[0] = first[1], first[0] = first[1] = NULL;
        ar->rep[s] = sr->rep[s], af->rep[s] = sf->rep[s];
    }
    for (uint32_t j = 1; !rc && j < M; j++) {
        uint64_t seed = (uint64_t)j * S + s + 1;
        char *log = lm_xp_path(x->tmp_dir, "logs/%s-seed%u-member%u.jsonl", ar->key, s + 1, j + 1);
        lm_train_report rr, rf;
        double c1 = lm_xp_cpu_seconds();
        rc = log ? train_one(x, dsv[ar->data], ar, ar->lr, ar->task_lr, seed, log, &mr[j], &rr, err)
                 : lm_err_set(err, LM_ENOMEM, "out of memory");
        cr += lm_xp_cpu_seconds() - c1;
        free(log);
        if (!rc) ar->rep[s].seconds += rr.seconds;
        if (rc || !refit) continue;
        log = lm_xp_path(x->tmp_dir, "logs/%s-seed%u-member%u.jsonl", af->key, s + 1, j + 1);
        c1 = lm_xp_cpu_seconds();
        rc = log ? train_refit(x, dsv[af->data], af, &rr, seed, log, &mf[j], &rf, err)
                 : lm_err_set(err, LM_ENOMEM, "out of memory");
        cf += lm_xp_cpu_seconds() - c1;
        free(log);
        if (!rc) af->rep[s].seconds += rf.seconds;
    }
    ar->train_cpu[s] = cr, af->train_cpu[s] = cf;
    if (!rc && (rc = lm_model_ensemble(&er, mr, M, err)) == LM_OK) memset(mr, 0, M * sizeof *mr);
    if (!rc) rc = test_one(x, dsv[ar->data], ar, er, s, err);
    if (!rc && refit && (rc = lm_model_ensemble(&ef, mf, M, err)) == LM_OK) memset(mf, 0, M * sizeof *mf);
    if (!rc && refit) rc = test_one(x, dsv[af->data], af, ef, s, err);
    for (uint32_t j = 0; j < M && mr && mf; j++) lm_model_free(mr[j]), lm_model_free(mf[j]);
    free(mr), free(mf);
    lm_model_free(er), lm_model_free(ef);
    return rc;
}

/* ---- the dataset ---------------------------------------------------------------------------- */

/* The option rows' datasets (MovieLens, when Table 3 is asked): with the item's history rate,
 * and the same refit on train + validation. NULL where not made. */
static int get_option_datasets(lm_xp *x, lm_dataset **ds, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    if (o->source != LM_XP_SOURCE_MOVIELENS || !(o->tables & LM_XP_TABLE3)) return LM_OK;
    int rc = LM_OK;
    const char *names[LM_XP_NDATA] = {NULL, "dataset-rates", "dataset-refit"};
    for (int d = LM_XP_DATA_RATES; !rc && d < LM_XP_NDATA; d++) {
        char *dir = lm_path_join(x->tmp_dir, names[d]);
        if (!dir) return lm_err_set(err, LM_ENOMEM, "out of memory");
        lm_prepare_opts po;
        lm_prepare_opts_default(&po);
        po.new_rule = LM_NEWRULE_MOD;
        po.new_mod = 5;
        po.refit = d == LM_XP_DATA_REFIT;
        lm_prepare_summary sum;
        rc = lm_prepare_movielens(o->input, dir, LM_ML_TASK_USER | LM_ML_ITEM_RATES, &po, &sum, err);
        if (!rc) rc = lm_dataset_open(&ds[d], dir, 0, err);
        free(dir);
    }
    return rc;
}

static int get_dataset(lm_xp *x, lm_dataset **ds, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    lm_prepare_summary sum;
    int rc = LM_OK;
    char *dir = NULL;
    if (o->source == LM_XP_SOURCE_DATASET) {
        x->data_name = o->input;
        return lm_dataset_open(ds, o->input, 0, err);
    }
    dir = lm_path_join(x->tmp_dir, "dataset");
    if (!dir) return lm_err_set(err, LM_ENOMEM, "out of memory");
    if (o->source == LM_XP_SOURCE_MOVIELENS) {
        x->data_name = "MovieLens-100K (PROTOCOL.md)";
        rc = lm_prepare_movielens(o->input, dir, LM_ML_TASK_USER, NULL, &sum, err);
    } else {
        snprintf(x->data_buf, sizeof x->data_buf, "synthetic (%llu tasks, seed %llu)",
                 (unsigned long long)o->synth_tasks, (unsigned long long)o->synth_seed);
        x->data_name = x->data_buf;
        char *log = lm_path_join(x->tmp_dir, "synth.csv"),
             *schema_path = log ? lm_xp_path(x->tmp_dir, "synth.csv.schema.json") : NULL;
        lm_synth_opts so;
        lm_synth_opts_default(&so);
        so.tasks = o->synth_tasks;
        so.seed = o->synth_seed;
        lm_synth_summary ss;
        lm_schema *schema = NULL;
        rc = log && schema_path ? lm_synth(log, &so, &ss, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) rc = lm_schema_load(&schema, schema_path, err);
        lm_prepare_opts po;
        lm_prepare_opts_default(&po);
        const char *in[1] = {log};
        if (!rc) rc = lm_prepare(schema, in, 1, dir, &po, &sum, err);
        lm_schema_free(schema);
        if (log) remove(log);
        if (schema_path) remove(schema_path);
        free(log), free(schema_path);
    }
    if (!rc) rc = lm_dataset_open(ds, dir, 0, err);
    free(dir);
    return rc;
}

static void describe_dataset(lm_xp *x, const lm_dataset *ds)
{
    x->ntasks = lm_dataset_ntasks(ds);
    x->nrows = lm_dataset_nrows(ds);
    for (uint64_t t = 0; t < x->ntasks; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        x->nnew += k->is_new;
        for (int s = 0; s < LM_SPLIT_COUNT; s++) x->split_rows[s] += k->nsplit[s];
    }
}

/* ---- the run -------------------------------------------------------------------------------- */

static int check_opts(const lm_experiment_opts *o, lm_err *err)
{
    if (!o->out_dir || !*o->out_dir) return lm_err_set(err, LM_EINVAL, "--out: an output folder is needed");
    if (o->source != LM_XP_SOURCE_SYNTHETIC && (!o->input || !*o->input))
        return lm_err_set(err, LM_EINVAL, "--data: the input folder is needed");
    if (o->seeds < 1 || o->seeds > LM_XP_MAX_SEEDS)
        return lm_err_set(err, LM_EINVAL, "--seeds must be in [1, %d]", LM_XP_MAX_SEEDS);
    if (!(o->tables & LM_XP_TABLES_ALL) || (o->tables & ~LM_XP_TABLES_ALL))
        return lm_err_set(err, LM_EINVAL, "--tables: choose among 3, 4, 5, 9, 10, 12, 13, 14 and fresh");
    if (o->nsweep_inner < 1 || o->nsweep_inner > LM_XP_MAX_GRID || o->nsweep_dropout < 1 ||
        o->nsweep_dropout > LM_XP_MAX_GRID || o->nsweep_task_lr < 1 || o->nsweep_task_lr > LM_XP_MAX_GRID ||
        o->nsweep_lr < 1 || o->nsweep_lr > LM_XP_MAX_GRID || o->nstale_days < 1 ||
        o->nstale_days > LM_XP_MAX_GRID)
        return lm_err_set(err, LM_EINVAL, "every sweep needs 1 to %d values", LM_XP_MAX_GRID);
    for (size_t i = 0; i < o->nsweep_inner; i++)
        if (o->sweep_inner[i] < 1 || o->sweep_inner[i] > 64)
            return lm_err_set(err, LM_EINVAL, "--sweep-inner-steps: steps must be in [1, 64]");
    for (size_t i = 0; i < o->nsweep_dropout; i++)
        if (!(o->sweep_dropout[i] >= 0 && o->sweep_dropout[i] < 1))
            return lm_err_set(err, LM_EINVAL, "--sweep-dropout: rates must be in [0, 1)");
    for (size_t i = 0; i < o->nsweep_task_lr; i++)
        if (!(o->sweep_task_lr[i] > 0))
            return lm_err_set(err, LM_EINVAL, "--sweep-task-lr: rates must be > 0");
    for (size_t i = 0; i < o->nsweep_lr; i++)
        if (!(o->sweep_lr[i] > 0)) return lm_err_set(err, LM_EINVAL, "--sweep-lr: rates must be > 0");
    for (size_t i = 0; i < o->nstale_days; i++)
        if (!(o->stale_days[i] > 0 && o->stale_days[i] <= 1e6))
            return lm_err_set(err, LM_EINVAL, "--stale-days: days must be in (0, 1e6]");
    if (o->epochs < 1 || o->epochs > 256) return lm_err_set(err, LM_EINVAL, "--epochs must be in [1, 256]");
    if (o->ngrid_lr < 1 || o->ngrid_lr > LM_XP_MAX_GRID || o->ngrid_k < 1 || o->ngrid_k > LM_XP_MAX_GRID ||
        o->ngrid_alpha < 1 || o->ngrid_alpha > LM_XP_MAX_GRID)
        return lm_err_set(err, LM_EINVAL, "every grid needs 1 to %d values", LM_XP_MAX_GRID);
    for (size_t i = 0; i < o->ngrid_lr; i++)
        if (!(o->grid_lr[i] > 0)) return lm_err_set(err, LM_EINVAL, "--grid-lr: learning rates must be > 0");
    if (o->ngrid_task_lr < 1 || o->ngrid_task_lr > LM_XP_MAX_GRID)
        return lm_err_set(err, LM_EINVAL, "every grid needs 1 to %d values", LM_XP_MAX_GRID);
    for (size_t i = 0; i < o->ngrid_task_lr; i++)
        if (!(o->grid_task_lr[i] > 0)) return lm_err_set(err, LM_EINVAL, "--grid-task-lr: rates must be > 0");
    if (o->max_k > 1000) return lm_err_set(err, LM_EINVAL, "--max-k must be at most 1000");
    for (size_t i = 0; i < o->ngrid_alpha; i++)
        if (!(o->grid_alpha[i] > 0))
            return lm_err_set(err, LM_EINVAL, "--grid-alpha: task learning rates must be > 0");
    for (size_t i = 0; i < o->ngrid_k; i++)
        if (o->grid_k[i] < 1 || o->grid_k[i] > 1000)
            return lm_err_set(err, LM_EINVAL, "--grid-k: steps must be in [1, 1000]");
    if (!(o->support_weight > 0)) return lm_err_set(err, LM_EINVAL, "--support-weight must be > 0");
    if (o->synth_tasks < 10 && o->source == LM_XP_SOURCE_SYNTHETIC)
        return lm_err_set(err, LM_EINVAL, "--tasks must be at least 10");
    return LM_OK;
}

int lm_experiment_run(const lm_experiment_opts *o, lm_experiment_summary *sum, lm_err *err)
{
    double t0 = lm_now(), c0 = lm_xp_cpu_seconds();
    memset(sum, 0, sizeof *sum);
    int rc = check_opts(o, err);
    if (rc) return rc;
    /* Fail before minutes of work, not after: publishing would refuse anyway. */
    struct stat st;
    if (!o->force && lstat(o->out_dir, &st) == 0)
        return lm_err_set(err, LM_EEXIST, "%s: already exists (use --force to replace it)", o->out_dir);
    lm_xp *x = calloc(1, sizeof *x);
    if (!x) return lm_err_set(err, LM_ENOMEM, "out of memory");
    x->o = o;
    x->threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    char *tmp = NULL;
    rc = lm_mktemp_dir_beside(o->out_dir, &tmp, err);
    if (rc) {
        free(x);
        return rc;
    }
    x->tmp_dir = tmp;
    char *logs = lm_path_join(tmp, "logs"), *grid = lm_path_join(tmp, "logs/grid");
    rc = logs && grid ? make_dir(logs, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc) rc = make_dir(grid, err);
    free(logs), free(grid);

    lm_dataset *dsv[LM_XP_NDATA] = {0}, *ds = NULL;
    if (!rc) rc = get_dataset(x, &ds, err);
    dsv[0] = ds;
    if (!rc) rc = get_option_datasets(x, dsv, err);
    if (!rc) {
        describe_dataset(x, ds);
        lm_xp_say(o, "data: %s: %llu tasks (%llu new), %llu examples", x->data_name,
                  (unsigned long long)x->ntasks, (unsigned long long)x->nnew, (unsigned long long)x->nrows);
    }

    /* stage 1: the floor */
    lm_floor_opts fo;
    lm_floor_opts_default(&fo);
    if (!rc) rc = lm_floor_evaluate(ds, &fo, &x->floor_test, err);
    fo.user_from = LM_FLOOR_USER_TRAIN;
    if (!rc) rc = lm_floor_evaluate(ds, &fo, &x->floor_train_test, err);
    lm_floor_opts_default(&fo);
    fo.score_split = LM_SPLIT_VAL;
    fo.warm_only = 1;
    if (!rc) rc = lm_floor_evaluate(ds, &fo, &x->floor_val, err);
    if (!rc)
        lm_xp_say(o, "floor: test AUC %.4f (train part only: %.4f), warm val AUC %.4f", x->floor_test.auc,
                  x->floor_train_test.auc, x->floor_val.auc);

    /* the algorithms the asked tables need */
    for (int i = 0; i < LM_XP_NARMS; i++) {
        lm_xp_arm *a = &x->arm[i];
        a->key = ARMS[i].key;
        a->algo = ARMS[i].algo;
        a->meta_block = ARMS[i].meta_block;
        a->support_weight = ARMS[i].with_support_loss ? o->support_weight : 0;
        a->emb_logit = ARMS[i].emb_logit;
        a->tables = ARMS[i].tables;
        a->option_row = ARMS[i].option_row;
        a->data = ARMS[i].data;
        a->enabled = (ARMS[i].tables & o->tables) != 0 && dsv[a->data] != NULL;
        if (is_ensemble_arm(i) && o->ensemble < 2) a->enabled = 0;
        a->members = is_ensemble_arm(i) ? o->ensemble : 0;
        /* the sweeps are built around plain (their gains' base) and LiMAML */
        if ((i == LM_XP_PLAIN || i == LM_XP_LIMAML) && (o->tables & LM_XP_TABLES_SWEEP)) a->enabled = 1;
        if (is_ensemble_arm(i))
            snprintf(a->label, sizeof a->label, "%s of %u", ARMS[i].label, o->ensemble);
        else if (ARMS[i].data != LM_XP_DATA_PROTOCOL)
            snprintf(a->label, sizeof a->label, "%s", ARMS[i].label);
        else if (ARMS[i].with_support_loss && ARMS[i].emb_logit)
            snprintf(a->label, sizeof a->label, "LiMAML + support loss (w = %g) + E[0] on the logit",
                     o->support_weight);
        else if (ARMS[i].with_support_loss)
            snprintf(a->label, sizeof a->label, "%s (w = %g)", ARMS[i].label, o->support_weight);
        else
            snprintf(a->label, sizeof a->label, "%s", ARMS[i].label);
    }

    /* stage 2: choose on seed 1 (its models are kept for stage 3) */
    lm_model *seed1[LM_XP_NARMS] = {0};
    double tg = lm_now();
    for (int i = 0; !rc && i < LM_XP_NARMS; i++) {
        if (!x->arm[i].enabled) continue;
        if (i == LM_XP_LIMAML_REFIT || is_ensemble_arm(i)) {
            /* nothing is chosen on a refit: there is no validation part left to choose on;
             * an ensemble's members are the rates row's configuration with other seeds */
            const lm_xp_arm *c = &x->arm[LM_XP_LIMAML_RATES];
            x->arm[i].lr = c->lr, x->arm[i].task_lr = c->task_lr, x->arm[i].k = c->k,
            x->arm[i].alpha = c->alpha;
            continue;
        }
        size_t nlr = slow_engine(&x->arm[i]) ? LM_MIN(o->ngrid_lr, LM_MAX(o->slow_ngrid_lr, 1)) : o->ngrid_lr;
        rc = choose(x, dsv[x->arm[i].data], &x->arm[i], nlr, &seed1[i], err);
    }
    x->seconds_grid = lm_now() - tg;

    /* stage 3: every seed. LiMAML's models are kept for the tables that only evaluate them
     * again (pooling, freshness) or share their configuration. */
    lm_model **limaml = calloc(LM_XP_MAX_SEEDS, sizeof *limaml);
    if (!rc && !limaml) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    int keep = (o->tables & LM_XP_TABLES_SWEEP) != 0;
    /* the rates row's model of the seed and its refit, kept for the ensembles' member 0 */
    int ens = x->arm[LM_XP_LIMAML_RATES_ENS].enabled;
    lm_model *first[2] = {NULL, NULL};
    for (uint32_t s = 0; !rc && s < o->seeds; s++)
        for (int i = 0; !rc && i < LM_XP_NARMS; i++) {
            lm_xp_arm *a = &x->arm[i];
            if (!a->enabled || i == LM_XP_LIMAML_REFIT_ENS) continue; /* made with the rates one */
            if (i == LM_XP_LIMAML_RATES_ENS) {
                rc = ensembles(x, dsv, s, first, err);
                continue;
            }
            if (s == 0 && i != LM_XP_LIMAML_REFIT) {
                rc = test_one(x, dsv[a->data], a, seed1[i], 0, err);
                if (keep && i == LM_XP_LIMAML)
                    limaml[0] = seed1[i];
                else if (ens && i == LM_XP_LIMAML_RATES)
                    first[0] = seed1[i];
                else
                    lm_model_free(seed1[i]);
                seed1[i] = NULL;
                continue;
            }
            char *log = lm_xp_path(tmp, "logs/%s-seed%u.jsonl", a->key, s + 1);
            lm_model *m = NULL;
            double c1 = lm_xp_cpu_seconds();
            if (!log)
                rc = lm_err_set(err, LM_ENOMEM, "out of memory");
            else if (i == LM_XP_LIMAML_REFIT)
                rc = train_refit(x, dsv[a->data], a, &x->arm[LM_XP_LIMAML_RATES].rep[s], s + 1, log, &m,
                                 &a->rep[s], err);
            else
                rc = train_one(x, dsv[a->data], a, a->lr, a->task_lr, s + 1, log, &m, &a->rep[s], err);
            a->train_cpu[s] = lm_xp_cpu_seconds() - c1;
            if (!rc && s == 0) read_curve(a, log); /* the refit's seed 1: choose() did not run */
            free(log);
            if (!rc) rc = test_one(x, dsv[a->data], a, m, s, err);
            if (!rc && keep && i == LM_XP_LIMAML)
                limaml[s] = m;
            else if (ens && (i == LM_XP_LIMAML_RATES || i == LM_XP_LIMAML_REFIT))
                first[i == LM_XP_LIMAML_REFIT] = m;
            else
                lm_model_free(m);
        }
    lm_model_free(first[0]), lm_model_free(first[1]); /* left by a failure */
    for (int i = 0; i < LM_XP_NARMS; i++) lm_model_free(seed1[i]);

    /* stage 4: the tables around the chosen configuration */
    double tsw = lm_now();
    if (!rc && keep) rc = lm_xp_run_sweeps(x, ds, limaml, err);
    x->seconds_sweeps = lm_now() - tsw;
    for (uint32_t s = 0; limaml && s < LM_XP_MAX_SEEDS; s++) lm_model_free(limaml[s]);
    free(limaml);
    for (int d = 0; d < LM_XP_NDATA; d++) lm_dataset_close(dsv[d]);

    /* the dataset we prepared is a by-product, reproducible from the command line */
    if (!rc && o->source != LM_XP_SOURCE_DATASET) {
        const char *made[] = {"dataset", "dataset-genre", "dataset-rates", "dataset-refit"};
        for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
            char *d = lm_path_join(tmp, made[i]);
            if (d) lm_rmtree(d);
            free(d);
        }
    }
    x->seconds_total = lm_now() - t0;
    x->cpu_total = lm_xp_cpu_seconds() - c0;
    if (!rc) {
        lm_xp_build_rows(x);
        lm_xp_check_patterns(x);
        char *pj = lm_path_join(tmp, "results.json"), *pm = lm_path_join(tmp, "report.md"),
             *ph = lm_path_join(tmp, "report.html");
        rc = pj && pm && ph ? lm_xp_write_json(x, pj, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) rc = lm_xp_write_md(x, pm, err);
        if (!rc) rc = lm_xp_write_html(x, ph, err);
        free(pj), free(pm), free(ph);
    }
    if (!rc) rc = lm_publish_dir(tmp, o->out_dir, o->force, err);
    if (rc)
        lm_rmtree(tmp);
    else {
        sum->seconds = lm_now() - t0;
        sum->rows = x->nrows_out;
        for (size_t i = 0; i < x->npat; i++) sum->patterns_held += x->pat[i].held;
        sum->patterns_checked = (int)x->npat;
    }
    free(tmp);
    free(x);
    return rc;
}
