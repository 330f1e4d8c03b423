/* evaluate.c: score a model on every task, after adapting it per task as the protocol says
 * (paper 6.2.1: "validation data is used for task-level fine-tuning and test data is used for
 * final evaluation"). For LiMAML only the meta block adapts and, as served, the meta embedding
 * is the adapted block's output on the task's latest adaptation example; the other models
 * adapt the whole network. Two options serve the report's ablations: `pool` makes the
 * embedding a pooling of the block's outputs over every adaptation example (appendix A.4), and
 * `stale_seconds` adapts on the rows an embedding job run that long before the latest would
 * have seen (section 5's weekly against daily refresh). Tasks run in parallel; every score lands at a fixed position, so
 * the result does not depend on the thread count. */
#include "eval/metrics.h"
#include "meta/batch_embed.h"
#include "meta/model.h"

#include <math.h>
#include <omp.h>
#include <string.h>

void lm_eval_opts_default(lm_eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->adapt_steps = 0;
    o->task_lr = -1;
    o->adapt_from = LM_ADAPT_VAL;
    o->score_split = LM_SPLIT_TEST;
}

static int in_adapt(int adapt_from, int split)
{
    switch (adapt_from) {
    case LM_ADAPT_VAL: return split == LM_SPLIT_VAL;
    case LM_ADAPT_TRAIN: return split == LM_SPLIT_SUPPORT || split == LM_SPLIT_QUERY;
    case LM_ADAPT_ALL: return 1;
    default: return split != LM_SPLIT_TEST;
    }
}

static size_t count_split(const lm_task *t, int score_split)
{
    return t->nsplit[score_split];
}

/* Copy the rows of task `t` whose split passes `want` (the most recent `cap`, 0: all). For
 * adaptation rows (scoring 0), only those with time <= `cutoff` (INFINITY: all); *latest gets
 * the time of the latest one copied (-INFINITY when none). */
static void gather(lm_rows_f32 *r, const lm_dataset *ds, const lm_task *t, int adapt_from, int score_split,
                   int scoring, uint32_t cap, double cutoff, double *latest)
{
    size_t n = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view v = lm_dataset_row(ds, t->first + i);
        n += scoring ? v.split == score_split : in_adapt(adapt_from, v.split) && v.time <= cutoff;
    }
    size_t skip = cap && n > cap ? n - cap : 0, k = 0;
    r->n = 0;
    double last = -INFINITY;
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view v = lm_dataset_row(ds, t->first + i);
        int ok = scoring ? v.split == score_split : in_adapt(adapt_from, v.split) && v.time <= cutoff;
        if (!ok || k++ < skip) continue;
        size_t j = r->n++;
        memcpy(r->meta + j * r->nmeta, v.meta, r->nmeta * sizeof(float));
        memcpy(r->dense + j * r->ndense, v.dense, r->ndense * sizeof(float));
        memcpy(r->cat + j * r->ncat, v.cat, r->ncat * sizeof(uint32_t));
        r->label[j] = v.label;
        last = fmax(last, v.time);
    }
    if (latest) *latest = last;
}

/* The time of the task's latest adaptation row, and of its first scored row (INFINITY or
 * -INFINITY when there is none). A task's rows are sorted by time, but a split column may
 * interleave the splits, so both are looked for. */
static void task_times(const lm_dataset *ds, const lm_task *t, int adapt_from, int score_split,
                       double *adapt_latest, double *score_first)
{
    *adapt_latest = -INFINITY, *score_first = INFINITY;
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view v = lm_dataset_row(ds, t->first + i);
        if (v.split == score_split)
            *score_first = fmin(*score_first, v.time);
        else if (in_adapt(adapt_from, v.split))
            *adapt_latest = fmax(*adapt_latest, v.time);
    }
}

/* The model's logits on every scored row, into zsum (by the positions pos), with labels and
 * slice flags; and per task the adaptation rows used, lag and age. A task's rows are gathered
 * once; an ensemble's members then adapt and score them one after another, their logits summed
 * in member order (lm_evaluate divides by the count, as the server does). */
static int score_tasks(const lm_model *m, const lm_dataset *ds, const lm_eval_opts *o, const uint64_t *pos,
                       size_t maxrows, float *zsum, float *label, uint8_t *flags, uint32_t *arows,
                       double *lag, double *age, lm_err *err)
{
    size_t nm = lm_model_nmembers(m);
    const lm_net *net = &lm_model_member(m, 0)->net; /* every member's shapes */
    uint64_t ntasks = lm_dataset_ntasks(ds);
    int rc = LM_OK;
    int whole = m->algo != LM_TRAIN_LIMAML; /* fine-tuning moves the whole network */
    int nthreads = o->threads > 0 ? o->threads : omp_get_max_threads();
    int fail = LM_OK;
    lm_err ferr = {0};
    /* LiMAML's embeddings come from lm_embed's engine where it serves (an MLP meta block), so
     * the scores here are the ones `limaml serve` gives from a store `limaml embed` wrote with
     * the same adaptation, bit for bit, and faster than the per-task reference; a member's plan
     * (its packed weights) is shared by the threads, each has its own workspace. */
    lm_meta_embed_plan **plan = calloc(nm, sizeof *plan);
    if (!plan) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int fast = !whole && o->adapt_steps > 0 && lm_meta_embed_supported(net, NULL) == LM_OK;
    for (size_t i = 0; fast && !rc && i < nm; i++) {
        const lm_model *mi = lm_model_member(m, i);
        rc = lm_meta_embed_plan_alloc(&plan[i], net, mi->theta_m, mi->theta_g, LM_BATCH_KERNEL_AUTO, err);
    }
    if (rc) {
        for (size_t i = 0; i < nm; i++) lm_meta_embed_plan_free(plan[i]);
        free(plan);
        return rc;
    }
#pragma omp parallel num_threads(nthreads)
    {
        lm_meta_embed_ws *ews = NULL;
        lm_meta_ws_f32 ws = {0};
        lm_rows_f32 ad = {0}, sc = {0};
        float *tm = malloc((net->meta_task_np + 1) * sizeof(float));
        float *tg = whole ? malloc((net->global_np + 1) * sizeof(float)) : NULL;
        float *z = malloc((maxrows + 1) * sizeof(float));
        float *emb = malloc((net->E + 1) * sizeof(float));
        float *pooled = o->pool != LM_POOL_LATEST ? malloc((maxrows * net->E + 1) * sizeof(float)) : NULL;
        lm_err e = {0};
        int r = (!tm || (whole && !tg) || !z || !emb || (o->pool != LM_POOL_LATEST && !pooled))
                    ? lm_err_set(&e, LM_ENOMEM, "out of memory")
                    : LM_OK;
        if (!r) r = lm_meta_ws_alloc_f32(&ws, net, maxrows, 1, whole, &e);
        if (!r && fast) r = lm_meta_embed_ws_alloc(&ews, net, maxrows, &e);
        if (!r) r = lm_rows_alloc_f32(&ad, net->nmeta, net->ndense, net->ncat, maxrows, &e);
        if (!r) r = lm_rows_alloc_f32(&sc, net->nmeta, net->ndense, net->ncat, maxrows, &e);
#pragma omp for schedule(dynamic, 16)
        for (uint64_t t = 0; t < ntasks; t++) {
            if (r || pos[t + 1] == pos[t]) continue;
            const lm_task *k = lm_dataset_task(ds, t);
            size_t klen;
            const char *key = lm_dataset_task_key(ds, k, &klen);
            gather(&sc, ds, k, o->adapt_from, o->score_split, 1, 0, INFINITY, NULL);
            ad.n = 0;
            if (o->adapt_steps > 0) {
                double avail, first, used;
                task_times(ds, k, o->adapt_from, o->score_split, &avail, &first);
                double cutoff = o->stale_seconds > 0 ? avail - o->stale_seconds : INFINITY;
                gather(&ad, ds, k, o->adapt_from, o->score_split, 0, o->adapt_cap, cutoff, &used);
                if (ad.n > 0) {
                    arows[t] = (uint32_t)ad.n;
                    lag[t] = avail - used;
                    age[t] = first - used;
                }
            }
            float *zt = zsum + pos[t];
            for (size_t i = 0; i < nm; i++) {
                const lm_model *mi = lm_model_member(m, i);
                double alpha = o->task_lr > 0 ? o->task_lr : mi->task_lr;
                size_t off = net->cfg.meta_kind == LM_NET_META_ID
                                 ? lm_net_meta_slice(net, lm_model_id_row(mi, key, klen))
                                 : 0;
                memcpy(tm, mi->theta_m + off, net->meta_task_np * sizeof(float));
                const float *g = mi->theta_g;
                int have_emb = 0;
                if (ad.n > 0 && whole) {
                    memcpy(tg, mi->theta_g, net->global_np * sizeof(float));
                    lm_meta_adapt_f32(net, &ws, mi->algo == LM_TRAIN_MAML ? LM_ALGO_MAML : LM_ALGO_PLAIN,
                                      o->adapt_steps, alpha, tm, tg, &ad, tm, tg, LM_DROPOUT_OFF, NULL);
                    g = tg;
                } else if (ad.n > 0) {
                    /* served: the embedding of the latest adaptation example (or pooled over
                     * them all, as asked); Algorithm 2b's computation */
                    if (fast)
                        lm_meta_embed_f32(plan[i], ews, &ad, o->adapt_steps, alpha, o->pool, emb);
                    else
                        lm_meta_task_embedding(net, &ws, tm, mi->theta_g, &ad, o->adapt_steps, alpha, o->pool,
                                               pooled, emb);
                    have_emb = 1;
                }
                if (have_emb)
                    lm_net_predict_emb_f32(net, &ws, emb, g, &sc, z);
                else
                    lm_net_predict_f32(net, &ws, tm, g, &sc, z);
                for (size_t j = 0; j < sc.n; j++) zt[j] = i ? zt[j] + z[j] : z[j];
            }
            uint8_t fl = (uint8_t)((sc.n < 25 ? 1 : 0) | (k->is_new ? 2 : 0));
            for (size_t j = 0; j < sc.n; j++) {
                label[pos[t] + j] = sc.label[j];
                flags[pos[t] + j] = fl;
            }
        }
#pragma omp critical
        if (r && !fail) {
            fail = r;
            ferr = e;
        }
        lm_meta_ws_free_f32(&ws);
        lm_meta_embed_ws_free(ews);
        lm_rows_free_f32(&ad);
        lm_rows_free_f32(&sc);
        free(tm), free(tg), free(z), free(emb), free(pooled);
    }
    for (size_t i = 0; i < nm; i++) lm_meta_embed_plan_free(plan[i]);
    free(plan);
    if (fail && err) *err = ferr;
    return fail;
}

int lm_evaluate(const lm_model *m, const lm_dataset *ds, const lm_eval_opts *o, lm_eval_result *res,
                lm_err *err)
{
    double t0 = lm_now();
    memset(res, 0, sizeof *res);
    int rc = lm_model_check_dataset(m, ds, err);
    if (rc) return rc;
    if (o->score_split != LM_SPLIT_TEST && o->score_split != LM_SPLIT_VAL)
        return lm_err_set(err, LM_EINVAL, "evaluate: the scored split must be test or val");
    if (o->pool < LM_POOL_LATEST || o->pool > LM_POOL_COS)
        return lm_err_set(err, LM_EINVAL, "evaluate: unknown pooling %d", o->pool);
    if (o->pool != LM_POOL_LATEST && m->algo != LM_TRAIN_LIMAML)
        return lm_err_set(err, LM_EINVAL,
                          "evaluate: pooling applies to a LiMAML model's meta embedding only");
    if (!(o->stale_seconds >= 0 && o->stale_seconds < INFINITY))
        return lm_err_set(err, LM_EINVAL, "evaluate: the staleness must be finite and >= 0");
    if (o->adapt_steps > 0 && (o->adapt_from == LM_ADAPT_ALL ||
                               (o->adapt_from == LM_ADAPT_TRAIN_VAL && o->score_split == LM_SPLIT_VAL) ||
                               (o->adapt_from == LM_ADAPT_VAL && o->score_split == LM_SPLIT_VAL)))
        return lm_err_set(err, LM_EINVAL, "evaluate: the adaptation rows include the scored rows");
    const lm_net *net = &m->net;
    uint64_t ntasks = lm_dataset_ntasks(ds);
    /* Positions of every task's scored rows in the pooled arrays. */
    uint64_t *pos = malloc((ntasks + 1) * sizeof *pos);
    if (!pos) return lm_err_set(err, LM_ENOMEM, "out of memory");
    size_t maxrows = 1;
    pos[0] = 0;
    for (uint64_t t = 0; t < ntasks; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        size_t c = (o->warm_only && k->is_new) ? 0 : count_split(k, o->score_split);
        pos[t + 1] = pos[t] + c;
        if (k->n > maxrows) maxrows = k->n;
    }
    uint64_t N = pos[ntasks];
    float *score = malloc((N + 1) * sizeof *score), *label = malloc((N + 1) * sizeof *label);
    uint8_t *flags = malloc(N + 1); /* bit 0: task has < 25 scored rows; bit 1: new task */
    /* per task: adaptation rows used, realised lag and age (summed in task order afterwards,
     * so the means do not depend on the thread count) */
    uint32_t *arows = calloc(ntasks + 1, sizeof *arows);
    double *lag = calloc(ntasks + 1, sizeof *lag), *age = calloc(ntasks + 1, sizeof *age);
    if (!score || !label || !flags || !arows || !lag || !age) {
        free(arows), free(lag), free(age);
        free(pos), free(score), free(label), free(flags);
        return lm_err_set(err, LM_ENOMEM, "out of memory (%llu scored examples)", (unsigned long long)N);
    }
    /* an ensemble's logit is the mean of its members' (each adapted and embedded on its own) */
    size_t nm = lm_model_nmembers(m);
    rc = score_tasks(m, ds, o, pos, maxrows, score, label, flags, arows, lag, age, err);
    if (rc) {
        free(pos), free(score), free(label), free(flags), free(arows), free(lag), free(age);
        return rc;
    }
    for (uint64_t p = 0; p < N; p++) {
        float z = nm > 1 ? score[p] / (float)nm : score[p];
        score[p] = net->cfg.loss == LM_NET_LOSS_BCE ? 1.0f / (1.0f + expf(-z)) : z;
    }
    res->examples = N;
    for (uint64_t t = 0; t < ntasks; t++) {
        res->tasks += pos[t + 1] > pos[t];
        if (!arows[t]) continue;
        res->tasks_adapted++;
        res->rows_adapted += arows[t];
        res->adapt_lag_mean += lag[t];
        res->adapt_age_mean += age[t];
    }
    if (res->tasks_adapted) {
        res->adapt_lag_mean /= (double)res->tasks_adapted;
        res->adapt_age_mean /= (double)res->tasks_adapted;
    }
    free(arows), free(lag), free(age);
    res->auc = lm_auc(score, label, N);
    res->logloss = net->cfg.loss == LM_NET_LOSS_BCE ? lm_logloss(score, label, N) : NAN;
    /* slices: gather each into the front of scratch copies */
    float *s2 = malloc((N + 1) * sizeof *s2), *y2 = malloc((N + 1) * sizeof *y2);
    if (!s2 || !y2) {
        free(pos), free(score), free(label), free(flags), free(s2), free(y2);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    double *slot[4] = {&res->auc_lt25, &res->auc_ge25, &res->auc_warm, &res->auc_new};
    uint64_t *cnt[4] = {&res->examples_lt25, &res->examples_ge25, &res->examples_warm, &res->examples_new};
    for (int sl = 0; sl < 4; sl++) {
        size_t n = 0;
        for (uint64_t i = 0; i < N; i++) {
            int lt = flags[i] & 1, nw = (flags[i] >> 1) & 1;
            int in = sl == 0 ? lt : sl == 1 ? !lt : sl == 2 ? !nw : nw;
            if (in) s2[n] = score[i], y2[n++] = label[i];
        }
        *cnt[sl] = n;
        *slot[sl] = n ? lm_auc(s2, y2, n) : NAN;
    }
    free(s2), free(y2), free(pos), free(score), free(label), free(flags);
    res->seconds = lm_now() - t0;
    return LM_OK;
}

int lm_adapt_task(const lm_model *m, const lm_dataset *ds, uint64_t task, uint32_t steps, double task_lr,
                  int adapt_from, int pool, float *emb, lm_err *err)
{
    int rc = lm_model_check_dataset(m, ds, err);
    if (rc) return rc;
    if (task >= lm_dataset_ntasks(ds))
        return lm_err_set(err, LM_EINVAL, "adapt: task %llu out of range", (unsigned long long)task);
    if (pool < LM_POOL_LATEST || pool > LM_POOL_COS)
        return lm_err_set(err, LM_EINVAL, "adapt: unknown pooling");
    size_t nm = lm_model_nmembers(m);
    if (nm > 1) {
        /* an ensemble: each member adapted as if it were given alone (its own default steps and
         * rate unless given), its embedding at emb + i E; lm_embed stores the same */
        for (size_t i = 0; !rc && i < nm; i++) {
            const lm_model *mi = lm_model_member(m, i);
            rc = lm_adapt_task(mi, ds, task, steps, task_lr, adapt_from, pool, emb + i * mi->net.E, err);
        }
        return rc;
    }
    const lm_net *net = &m->net;
    const lm_task *k = lm_dataset_task(ds, task);
    if (steps == UINT32_MAX) steps = m->inner_steps;
    double alpha = task_lr > 0 ? task_lr : m->task_lr;
    size_t rows = k->n ? k->n : 1;
    /* lm_embed's computation, so the two agree bit for bit: the fast engine where it serves
     * (meta/batch_embed.h: a task's bits do not depend on its workspace), else the reference */
    int fast = lm_meta_embed_supported(net, NULL) == LM_OK;
    lm_meta_embed_plan *plan = NULL;
    lm_meta_embed_ws *ews = NULL;
    lm_meta_ws_f32 ws = {0};
    lm_rows_f32 ad = {0};
    float *tm = fast ? NULL : malloc((net->meta_task_np + 1) * sizeof(float));
    float *scratch = fast ? NULL : malloc((rows * net->E + 1) * sizeof(float));
    if (!fast && (!tm || !scratch)) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc && fast)
        rc = lm_meta_embed_plan_alloc(&plan, net, m->theta_m, m->theta_g, LM_BATCH_KERNEL_AUTO, err);
    if (!rc && fast) rc = lm_meta_embed_ws_alloc(&ews, net, rows, err);
    if (!rc && !fast) rc = lm_meta_ws_alloc_f32(&ws, net, rows, 1, 0, err);
    if (!rc) rc = lm_rows_alloc_f32(&ad, net->nmeta, net->ndense, net->ncat, rows, err);
    if (!rc) {
        size_t klen;
        const char *key = lm_dataset_task_key(ds, k, &klen);
        gather(&ad, ds, k, adapt_from, LM_SPLIT_TEST, 0, 0, INFINITY, NULL);
        if (ad.n == 0) {
            rc = lm_err_set(err, LM_ENOTFOUND, "adapt: the task has no rows to adapt on");
        } else if (fast) {
            lm_meta_embed_f32(plan, ews, &ad, steps, alpha, pool, emb);
        } else {
            size_t off = net->cfg.meta_kind == LM_NET_META_ID
                             ? lm_net_meta_slice(net, lm_model_id_row(m, key, klen))
                             : 0;
            memcpy(tm, m->theta_m + off, net->meta_task_np * sizeof(float));
            lm_meta_task_embedding(net, &ws, tm, m->theta_g, &ad, steps, alpha, pool, scratch, emb);
        }
    }
    lm_meta_embed_plan_free(plan);
    lm_meta_embed_ws_free(ews);
    lm_meta_ws_free_f32(&ws);
    lm_rows_free_f32(&ad);
    free(tm), free(scratch);
    return rc;
}
