/* batch_bench.c: lm_meta_batch_bench, the outer-loop throughput of the batch engine against
 * the per-task reference on the same batches (for `limaml bench train`). The batches are
 * drawn once (random rows of the net's shape, task sizes from the caller's pool) and cycled
 * through, so only the meta-gradient is timed; each engine gets a warm-up round first, and each
 * batch's median and fastest times are summed (the machine is shared and noisy). */
#include "meta/batch.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define NBATCH 8

typedef struct bench_data {
    size_t T;
    lm_rows_f32 *S, *Q; /* (NBATCH * T) */
    double flops_ref[NBATCH], flops_own[NBATCH];
    double rows_s, rows_q;
} bench_data;

static int fill_rows(lm_rows_f32 *r, const lm_net *n, size_t B, int uniform, lm_rng *rng, lm_err *err)
{
    int rc = lm_rows_alloc_f32(r, n->nmeta, n->ndense, n->ncat, B ? B : 1, err);
    if (rc) return rc;
    r->n = B;
    for (size_t b = 0; b < B; b++) {
        float *m = r->meta + b * n->nmeta;
        if (uniform && b > 0)
            memcpy(m, r->meta, n->nmeta * sizeof *m);
        else
            for (size_t j = 0; j < n->nmeta; j++) m[j] = (float)lm_rng_uniform(rng);
        for (size_t j = 0; j < n->ndense; j++) r->dense[b * n->ndense + j] = (float)lm_rng_uniform(rng);
        for (size_t c = 0; c < n->ncat; c++)
            r->cat[b * n->ncat + c] = (uint32_t)lm_rng_below(rng, n->cat_rows[c]);
        r->label[b] = lm_rng_uniform(rng) < 0.55 ? 1.0f : 0.0f;
    }
    return LM_OK;
}

static void data_free(bench_data *bd)
{
    for (size_t i = 0; bd->S && i < NBATCH * bd->T; i++) {
        lm_rows_free_f32(&bd->S[i]);
        lm_rows_free_f32(&bd->Q[i]);
    }
    free(bd->S), free(bd->Q);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAXRUNS 4096
#define PERB (MAXRUNS / NBATCH)

/* The batches differ in size, so each batch's times are summarized apart: throughput =
 * NBATCH T / the sum over batches of their median (or fastest) time. */
static void summarize(double *times, const size_t *cnt, size_t T, double *med_tps, double *best_tps)
{
    double med = 0, best = 0;
    for (size_t b = 0; b < NBATCH; b++) {
        double *t = times + b * PERB;
        size_t n = cnt[b];
        qsort(t, n, sizeof *t, cmp_dbl);
        med += n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
        best += t[0];
    }
    *med_tps = (double)(NBATCH * T) / med;
    *best_tps = (double)(NBATCH * T) / best;
}

/* The per-task reference over batch b, threaded like the training loop (one workspace and one
 * gradient pair per thread, summed in thread order after the batch). */
static void ref_batch(const lm_net *n, const lm_meta_opts *o, const bench_data *bd, size_t b,
                      lm_meta_ws_f32 *ws, float **gm, float **gg, const float *tm, const float *tg,
                      int threads, float *grad_m, float *grad_g)
{
    size_t T = bd->T;
#pragma omp parallel num_threads(threads)
    {
        int me = omp_get_thread_num();
        lm_rng rng;
        lm_rng_seed(&rng, 1234 + (uint64_t)me);
        memset(gm[me], 0, n->meta_np * sizeof(float));
        memset(gg[me], 0, n->global_np * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < T; i++)
            lm_meta_task_f32(n, o, &ws[me], tm, tg, &bd->S[b * T + i], &bd->Q[b * T + i], NULL, NULL, gm[me],
                             gg[me], NULL, &rng);
    }
    for (int q = 0; q < threads; q++) {
        for (size_t j = 0; j < n->meta_np; j++) grad_m[j] += gm[q][j];
        for (size_t j = 0; j < n->global_np; j++) grad_g[j] += gg[q][j];
    }
}

int lm_meta_batch_bench(const lm_net *n, const lm_meta_opts *o, const uint32_t *sizes_s,
                        const uint32_t *sizes_q, size_t npool, const lm_meta_batch_bench_opts *bo,
                        lm_meta_batch_bench_result *res, lm_err *err)
{
    LM_ASSERT(n && o && bo && res);
    memset(res, 0, sizeof *res);
    int rc = lm_meta_batch_supported(n, o, err);
    if (rc) return rc;
    if (!npool || !sizes_s || !sizes_q || bo->tasks_per_batch == 0)
        return lm_err_set(err, LM_EINVAL, "bench: no task sizes or no tasks per batch");
    size_t T = bo->tasks_per_batch, maxrows = 1;
    int threads = bo->threads > 0 ? bo->threads : omp_get_max_threads();
    lm_rng rng;
    lm_rng_seed(&rng, bo->seed);

    bench_data bd;
    memset(&bd, 0, sizeof bd);
    bd.T = T;
    bd.S = calloc(NBATCH * T, sizeof *bd.S);
    bd.Q = calloc(NBATCH * T, sizeof *bd.Q);
    float *tm = malloc(n->meta_np * sizeof *tm), *tg = malloc(n->global_np * sizeof *tg);
    float *grad_m = calloc(n->meta_np, sizeof *grad_m), *grad_g = calloc(n->global_np, sizeof *grad_g);
    double *times = malloc(MAXRUNS * sizeof *times);
    lm_meta_batch_ws *ws = NULL;
    lm_meta_ws_f32 *rws = NULL;
    float **gm = NULL, **gg = NULL;
    if (!bd.S || !bd.Q || !tm || !tg || !grad_m || !grad_g || !times) {
        rc = lm_err_set(err, LM_ENOMEM, "bench: out of memory");
        goto done;
    }
    lm_net_params_init_f32(n, tm, tg, &rng);
    for (size_t b = 0; b < NBATCH && !rc; b++)
        for (size_t i = 0; i < T && !rc; i++) {
            size_t k = lm_rng_below(&rng, npool), Bs = sizes_s[k], Bq = sizes_q[k];
            maxrows = LM_MAX(maxrows, LM_MAX(Bs, Bq));
            rc = fill_rows(&bd.S[b * T + i], n, Bs, bo->uniform_meta, &rng, err);
            if (!rc) rc = fill_rows(&bd.Q[b * T + i], n, Bq, bo->uniform_meta, &rng, err);
            bd.flops_ref[b] += lm_meta_task_flops(n, o, Bs, Bq);
            bd.flops_own[b] += lm_meta_batch_flops(n, o, Bs, Bq, bo->uniform_meta);
            bd.rows_s += (double)Bs, bd.rows_q += (double)Bq;
        }
    if (rc) goto done;
    res->mean_support = bd.rows_s / (double)(NBATCH * T);
    res->mean_query = bd.rows_q / (double)(NBATCH * T);
    double fref = 0, fown = 0;
    for (size_t b = 0; b < NBATCH; b++) fref += bd.flops_ref[b], fown += bd.flops_own[b];
    fref /= NBATCH, fown /= NBATCH;

    /* ---- the batch engine */
    rc = lm_meta_batch_ws_alloc(&ws, n, T, maxrows, o->steps, threads, bo->kernel, err);
    if (rc) goto done;
    size_t runs = 0, cnt[NBATCH] = {0};
    double t_end = 0;
    for (size_t it = 0; runs < MAXRUNS; it++) {
        size_t b = it % NBATCH;
        double t0 = lm_now();
        rc = lm_meta_batch_f32(n, o, ws, tm, tg, T, &bd.S[b * T], &bd.Q[b * T], grad_m, grad_g, NULL, NULL,
                               err);
        double dt = lm_now() - t0;
        if (rc) goto done;
        if (it < NBATCH) { /* warm-up: one round */
            t_end = lm_now() + bo->seconds;
            continue;
        }
        times[b * PERB + cnt[b]++] = dt;
        runs++;
        if (b == NBATCH - 1 && (lm_now() >= t_end || cnt[b] == PERB)) break;
    }
    res->batches = runs;
    summarize(times, cnt, T, &res->tasks_per_s, &res->best_tasks_per_s);
    res->gflops_ref_count = fref * res->tasks_per_s / (double)T * 1e-9;
    res->gflops_own_count = fown * res->tasks_per_s / (double)T * 1e-9;

    /* ---- the per-task reference */
    if (bo->reference) {
        rws = calloc((size_t)threads, sizeof *rws);
        gm = calloc((size_t)threads, sizeof *gm);
        gg = calloc((size_t)threads, sizeof *gg);
        if (!rws || !gm || !gg) {
            rc = lm_err_set(err, LM_ENOMEM, "bench: out of memory");
            goto done;
        }
        for (int q = 0; q < threads && !rc; q++) {
            rc = lm_meta_ws_alloc_f32(&rws[q], n, maxrows, o->steps, 0, err);
            gm[q] = malloc(n->meta_np * sizeof(float));
            gg[q] = malloc(n->global_np * sizeof(float));
            if (!rc && (!gm[q] || !gg[q])) rc = lm_err_set(err, LM_ENOMEM, "bench: out of memory");
        }
        if (rc) goto done;
        runs = 0;
        memset(cnt, 0, sizeof cnt);
        for (size_t it = 0; runs < MAXRUNS; it++) {
            size_t b = it % NBATCH;
            double t0 = lm_now();
            ref_batch(n, o, &bd, b, rws, gm, gg, tm, tg, threads, grad_m, grad_g);
            double dt = lm_now() - t0;
            if (it < NBATCH) {
                t_end = lm_now() + bo->seconds;
                continue;
            }
            times[b * PERB + cnt[b]++] = dt;
            runs++;
            if (b == NBATCH - 1 && (lm_now() >= t_end || cnt[b] == PERB)) break;
        }
        res->ref_batches = runs;
        summarize(times, cnt, T, &res->ref_tasks_per_s, &res->ref_best_tasks_per_s);
        res->ref_gflops = fref * res->ref_tasks_per_s / (double)T * 1e-9;
    }
done:
    if (rws)
        for (int q = 0; q < threads; q++) lm_meta_ws_free_f32(&rws[q]);
    if (gm)
        for (int q = 0; q < threads; q++) free(gm[q]);
    if (gg)
        for (int q = 0; q < threads; q++) free(gg[q]);
    free(rws), free(gm), free(gg);
    lm_meta_batch_ws_free(ws);
    data_free(&bd);
    free(tm), free(tg), free(grad_m), free(grad_g), free(times);
    return rc;
}
