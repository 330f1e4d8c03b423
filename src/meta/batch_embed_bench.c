/* batch_embed_bench.c: lm_meta_embed_bench, the throughput of the embedding engine alone on a
 * dataset's tasks (`limaml bench embed` times whole `limaml embed` runs instead): a full pass as
 * lm_embed computes it (each task's rows gathered from the dataset, then embedded; no store),
 * compute-only passes over a pool of tasks gathered beforehand, and the per-task reference on a
 * prefix of the tasks. */
#include "meta/batch_embed.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Every row of task k into r (r->cap >= k->n), as lm_embed with --adapt-from all. */
static void gather_all(lm_rows_f32 *r, const lm_dataset *ds, const lm_task *k)
{
    r->n = 0;
    for (uint32_t i = 0; i < k->n; i++) {
        lm_row_view v = lm_dataset_row(ds, k->first + i);
        size_t j = r->n++;
        if (r->nmeta) memcpy(r->meta + j * r->nmeta, v.meta, r->nmeta * sizeof(float));
        if (r->ndense) memcpy(r->dense + j * r->ndense, v.dense, r->ndense * sizeof(float));
        if (r->ncat) memcpy(r->cat + j * r->ncat, v.cat, r->ncat * sizeof(uint32_t));
        r->label[j] = v.label;
    }
}

static int uniform(const lm_rows_f32 *r)
{
    for (size_t b = 1; b < r->n; b++)
        if (memcmp(r->meta + b * r->nmeta, r->meta, r->nmeta * sizeof(float))) return 0;
    return 1;
}

/* One OpenMP pass over tasks [0, T): gather (or take the pool's rows) and embed, fast engine
 * (plan) or reference (plan NULL). out: (T, E) or NULL (then a per-thread scratch vector).
 * Returns the seconds, or -1 when a thread's workspace could not be allocated. */
static double pass(const lm_net *n, const lm_meta_embed_plan *plan, const float *theta_m,
                   const float *theta_g, const lm_dataset *ds, const lm_rows_f32 *pool, uint64_t T,
                   size_t maxrows, const lm_meta_embed_bench_opts *bo, int threads, float *out)
{
    int bad = 0;
    size_t E = n->E;
    double t0 = lm_now();
#pragma omp parallel num_threads(threads)
    {
        lm_meta_embed_ws *ews = NULL;
        lm_meta_ws_f32 rws = {0};
        lm_rows_f32 r = {0};
        float *tm = malloc((n->meta_np + 1) * sizeof(float)),
              *scr = malloc((maxrows * E + 1) * sizeof(float));
        float *vec = malloc((E + 1) * sizeof(float));
        int rc = !tm || !scr || !vec;
        if (!rc && !pool) rc = lm_rows_alloc_f32(&r, n->nmeta, n->ndense, n->ncat, maxrows, NULL);
        if (!rc && plan) rc = lm_meta_embed_ws_alloc(&ews, n, LM_MIN(maxrows, (size_t)16384), NULL);
        if (!rc && !plan) rc = lm_meta_ws_alloc_f32(&rws, n, maxrows, 1, 0, NULL);
#pragma omp atomic
        bad += rc != 0;
#pragma omp barrier
#pragma omp for schedule(dynamic, 64)
        for (uint64_t t = 0; t < T; t++) {
            if (bad) continue;
            const lm_rows_f32 *rows = pool ? &pool[t] : &r;
            if (!pool) gather_all(&r, ds, lm_dataset_task(ds, t));
            if (rows->n == 0) continue;
            float *o = out ? out + t * E : vec;
            if (plan) {
                lm_meta_embed_f32(plan, ews, rows, bo->steps, bo->alpha, bo->pool, o);
            } else {
                memcpy(tm, theta_m, n->meta_np * sizeof *tm);
                lm_meta_task_embedding(n, &rws, tm, theta_g, rows, bo->steps, bo->alpha, bo->pool, scr, o);
            }
        }
        lm_meta_embed_ws_free(ews);
        lm_meta_ws_free_f32(&rws);
        lm_rows_free_f32(&r);
        free(tm), free(scr), free(vec);
    }
    return bad ? -1 : lm_now() - t0;
}

int lm_meta_embed_bench(const lm_net *n, const float *theta_m, const float *theta_g, const lm_dataset *ds,
                        const lm_meta_embed_bench_opts *bo, lm_meta_embed_bench_result *res, lm_err *err)
{
    LM_ASSERT(n && theta_m && theta_g && ds && bo && res);
    memset(res, 0, sizeof *res);
    if (n->nmeta != lm_dataset_nmeta(ds) || n->ndense != lm_dataset_ndense(ds) ||
        n->ncat != lm_dataset_ncat(ds))
        return lm_err_set(err, LM_EMISMATCH, "bench embed: the dataset's widths differ from the net's");
    if (bo->pool < LM_POOL_LATEST || bo->pool > LM_POOL_COS)
        return lm_err_set(err, LM_EINVAL, "bench embed: unknown pooling %d", bo->pool);
    uint64_t ntasks = lm_dataset_ntasks(ds), T = bo->tasks ? LM_MIN(bo->tasks, ntasks) : ntasks;
    uint64_t Tref = LM_MIN(bo->ref_tasks, T), Tpool = LM_MIN(bo->pool_tasks ? bo->pool_tasks : 16384, T);
    int threads = bo->threads > 0 ? bo->threads : omp_get_max_threads(), runs = bo->runs > 0 ? bo->runs : 3;
    if (T == 0) return lm_err_set(err, LM_EINVAL, "bench embed: the dataset has no tasks");
    size_t maxrows = 1, E = n->E;
    for (uint64_t t = 0; t < T; t++) maxrows = LM_MAX(maxrows, lm_dataset_task(ds, t)->n);
    lm_meta_embed_plan *plan = NULL;
    int rc = lm_meta_embed_plan_alloc(&plan, n, theta_m, theta_g, bo->kernel, err);
    if (rc) return rc;

    /* the pool: its tasks' rows in one allocation each */
    lm_rows_f32 *pool = calloc(Tpool, sizeof *pool);
    float *out = malloc((LM_MAX(Tref, 1) * E) * sizeof(float)),
          *ref = malloc((LM_MAX(Tref, 1) * E) * sizeof(float));
    if (!pool || !out || !ref) rc = lm_err_set(err, LM_ENOMEM, "bench embed: out of memory");
    double rows = 0, uni = 0, flops = 0;
    for (uint64_t t = 0; !rc && t < Tpool; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        rc = lm_rows_alloc_f32(&pool[t], n->nmeta, n->ndense, n->ncat, k->n ? k->n : 1, err);
        if (rc) break;
        gather_all(&pool[t], ds, k);
        int u = uniform(&pool[t]);
        rows += (double)k->n, uni += u;
        if (k->n) flops += lm_meta_embed_flops(n, k->n, bo->steps, bo->pool, u);
    }
    if (!rc) {
        res->tasks = T;
        res->mean_rows = rows / (double)Tpool, res->uniform_frac = uni / (double)Tpool;
        /* a warm-up pass over the pool, then the timed passes; the fastest counts */
        double best =
            pass(n, plan, theta_m, theta_g, ds, pool, Tpool, maxrows, bo, threads, NULL) < 0 ? -1 : INFINITY;
        double best_full = INFINITY;
        for (int i = 0; i < runs && best >= 0; i++) {
            double s = pass(n, plan, theta_m, theta_g, ds, pool, Tpool, maxrows, bo, threads, NULL);
            best = s < 0 ? -1 : fmin(best, s);
        }
        for (int i = 0; i < runs && best_full >= 0; i++) {
            double s = pass(n, plan, theta_m, theta_g, ds, NULL, T, maxrows, bo, threads, NULL);
            best_full = s < 0 ? -1 : fmin(best_full, s);
        }
        if (best < 0 || best_full < 0)
            rc = lm_err_set(err, LM_ENOMEM, "bench embed: out of memory (workspaces)");
        res->compute_tasks_per_s = (double)Tpool / best;
        res->gflops = flops / best * 1e-9;
        res->tasks_per_s = (double)T / best_full;
    }
    if (!rc && Tref) {
        double tr = pass(n, NULL, theta_m, theta_g, ds, NULL, Tref, maxrows, bo, threads, ref);
        double tf = pass(n, plan, theta_m, theta_g, ds, NULL, Tref, maxrows, bo, threads, out);
        if (tr < 0 || tf < 0) rc = lm_err_set(err, LM_ENOMEM, "bench embed: out of memory (workspaces)");
        res->ref_tasks_per_s = (double)Tref / tr;
        for (uint64_t t = 0; !rc && t < Tref; t++) {
            double md = 0, mr = 0;
            for (size_t j = 0; j < E; j++) {
                md = fmax(md, fabs((double)out[t * E + j] - ref[t * E + j]));
                mr = fmax(mr, fabs((double)ref[t * E + j]));
            }
            double rel = mr > 0 ? md / mr : md;
            if (!lm_dataset_task(ds, t)->n) continue;
            res->max_rel_diff = fmax(res->max_rel_diff, rel);
            res->ref_over_1e4 += rel > 1e-4;
        }
    }
    for (uint64_t t = 0; pool && t < Tpool; t++) lm_rows_free_f32(&pool[t]);
    free(pool), free(out), free(ref);
    lm_meta_embed_plan_free(plan);
    return rc;
}
