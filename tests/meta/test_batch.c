/* test_batch.c: the batch engine (lm_meta_batch_f32) against the per-task reference.
 *
 * For random nets (the small test net; the default MovieLens-shaped net; variants without meta
 * columns in the global block, without dense or table columns, with MSE, a deeper meta block,
 * one global hidden layer, odd widths) and batches of tasks with 1..60 support and query rows
 * whose meta features are the same on every row of a split (the uniform path), different per
 * row, or a mix, with n = 1, 2, 5 inner steps, second and first order, w = 0 and 3:
 *   - the summed objective and meta-gradients against the sum of lm_meta_task_f64 over the
 *     tasks on the same float-valued inputs (normwise relative error <= 1e-4), and against the
 *     sum of lm_meta_task_f32; the per-task statistics against the reference's;
 *   - both kernels (plain loops and AVX-512 where the processor has it), one and two
 *     partitions;
 *   - determinism: a second call gives the same bits, and so does a call with another number of
 *     OpenMP threads for the same partitions;
 * the same on four of the nets with lm_net_config.emb_logit on (the logit also gets E[0]);
 * then the plain algorithm, the objective alone, accumulation (+=), empty splits, the FLOP count
 * against the engine's own tally, and the options the fast path refuses. */
#include "meta/batch.h"
#include "meta/meta_check.h"

#include <omp.h>

#define TOL 1e-4

static lm_rng rng;
static double worst_obj, worst_gm, worst_gg;
static int kernels[3], nkernels; /* the kernels this processor runs */
static const char *kernel_name(int k)
{
    return k == LM_BATCH_KERNEL_AVX512 ? "avx512" : k == LM_BATCH_KERNEL_AVX2 ? "avx2  " : "plain ";
}

typedef struct batch {
    lm_net n;
    size_t T, max_rows;
    double *tm, *tg; /* theta in double (float-valued) */
    float *tmf, *tgf;
    lm_rows_f64 *S, *Q;
    lm_rows_f32 *Sf, *Qf;
} batch;

/* meta_mode: 0 uniform per split, 1 varying per row, 2 half the tasks each way */
static void batch_make(batch *b, const lm_net_config *cfg, size_t T, size_t maxB, int meta_mode,
                       int allow_empty)
{
    memset(b, 0, sizeof *b);
    net_make(&b->n, cfg);
    b->T = T;
    size_t Pm = b->n.meta_np, Pg = b->n.global_np;
    b->tm = dalloc(Pm), b->tg = dalloc(Pg), b->tmf = falloc(Pm), b->tgf = falloc(Pg);
    lm_net_params_init_f64(&b->n, b->tm, b->tg, &rng);
    for (size_t l = 0; l < b->n.meta.nlayers; l++)
        fill_uniform(b->tm + b->n.meta.b_off[l], b->n.meta.sizes[l + 1], &rng, -0.1, 0.1);
    for (size_t l = 0; l < b->n.global.nlayers; l++)
        fill_uniform(b->tg + b->n.global.b_off[l], b->n.global.sizes[l + 1], &rng, -0.1, 0.1);
    round_f32(b->tm, Pm), round_f32(b->tg, Pg);
    to_f32(b->tmf, b->tm, Pm), to_f32(b->tgf, b->tg, Pg);
    b->S = xcalloc(T, sizeof *b->S), b->Q = xcalloc(T, sizeof *b->Q);
    b->Sf = xcalloc(T, sizeof *b->Sf), b->Qf = xcalloc(T, sizeof *b->Qf);
    for (size_t t = 0; t < T; t++) {
        int uni = meta_mode == 0 || (meta_mode == 2 && t % 2 == 0);
        lm_rows_f64 *rs[2] = {&b->S[t], &b->Q[t]};
        for (int k = 0; k < 2; k++) {
            size_t B = (allow_empty ? 0 : 1) + lm_rng_below(&rng, maxB + (allow_empty ? 1 : 0));
            rows_make_f64(rs[k], &b->n, B, &rng);
            if (uni)
                for (size_t r = 1; r < B; r++)
                    memcpy(rs[k]->meta + r * b->n.nmeta, rs[k]->meta, b->n.nmeta * sizeof(double));
            b->max_rows = LM_MAX(b->max_rows, B);
        }
        rows_to_f32(&b->Sf[t], &b->S[t]);
        rows_to_f32(&b->Qf[t], &b->Q[t]);
    }
}

static void batch_free(batch *b)
{
    for (size_t t = 0; t < b->T; t++) {
        lm_rows_free_f64(&b->S[t]), lm_rows_free_f64(&b->Q[t]);
        lm_rows_free_f32(&b->Sf[t]), lm_rows_free_f32(&b->Qf[t]);
    }
    free(b->S), free(b->Q), free(b->Sf), free(b->Qf);
    free(b->tm), free(b->tg), free(b->tmf), free(b->tgf);
}

/* Sum of lm_meta_task over the batch: g = [grad_m | grad_g] set; per-task stats. */
static double ref_f64(batch *b, const lm_meta_opts *o, double *g, lm_meta_stats *st)
{
    lm_meta_ws_f64 ws;
    lm_err err = {0};
    if (lm_meta_ws_alloc_f64(&ws, &b->n, b->max_rows, o->steps, 0, &err)) exit(2);
    memset(g, 0, (b->n.meta_np + b->n.global_np) * sizeof *g);
    double F = 0;
    for (size_t t = 0; t < b->T; t++)
        F += lm_meta_task_f64(&b->n, o, &ws, b->tm, b->tg, &b->S[t], &b->Q[t], NULL, NULL, g,
                              g + b->n.meta_np, st ? &st[t] : NULL, NULL);
    lm_meta_ws_free_f64(&ws);
    return F;
}

static double ref_f32(batch *b, const lm_meta_opts *o, double *g)
{
    lm_meta_ws_f32 ws;
    lm_err err = {0};
    size_t Pm = b->n.meta_np, Pg = b->n.global_np;
    float *gf = falloc(Pm + Pg);
    if (lm_meta_ws_alloc_f32(&ws, &b->n, b->max_rows, o->steps, 0, &err)) exit(2);
    double F = 0;
    for (size_t t = 0; t < b->T; t++)
        F += lm_meta_task_f32(&b->n, o, &ws, b->tmf, b->tgf, &b->Sf[t], &b->Qf[t], NULL, NULL, gf, gf + Pm,
                              NULL, NULL);
    to_f64(g, gf, Pm + Pg);
    lm_meta_ws_free_f32(&ws);
    free(gf);
    return F;
}

/* The batch engine: g set to [grad_m | grad_g] (as float), the objective returned. */
static double run_batch(batch *b, const lm_meta_opts *o, lm_meta_batch_ws *ws, float *gf, lm_meta_stats *st,
                        lm_meta_batch_stats *bs)
{
    lm_err err = {0};
    size_t Pm = b->n.meta_np, Pg = b->n.global_np;
    memset(gf, 0, (Pm + Pg) * sizeof *gf);
    lm_meta_batch_stats s;
    int rc = lm_meta_batch_f32(&b->n, o, ws, b->tmf, b->tgf, b->T, b->Sf, b->Qf, gf, gf + Pm, st, &s, &err);
    if (rc) {
        printf("FAIL lm_meta_batch_f32: %s\n", err.msg);
        exit(1);
    }
    if (bs) *bs = s;
    return s.objective;
}

static double normrel(const double *a, const double *ref, size_t n)
{
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs(a[i] - ref[i]));
        mr = fmax(mr, fabs(ref[i]));
    }
    return mr > 0 ? md / mr : md;
}

static lm_meta_batch_ws *ws_make(batch *b, size_t steps, int parts, int kernel)
{
    lm_meta_batch_ws *ws = NULL;
    lm_err err = {0};
    if (lm_meta_batch_ws_alloc(&ws, &b->n, b->T, b->max_rows, steps, parts, kernel, &err)) {
        printf("FAIL lm_meta_batch_ws_alloc: %s\n", err.msg);
        exit(1);
    }
    return ws;
}

/* One configuration: every kernel and partition count against the references. */
static void check_config(const char *name, const lm_net_config *cfg, int meta_mode, size_t steps,
                         int first_order, double w, int algo)
{
    batch b;
    batch_make(&b, cfg, 7 + lm_rng_below(&rng, 6), 60, meta_mode, 0);
    lm_meta_opts o;
    lm_meta_opts_default(&o);
    o.algo = algo, o.steps = steps, o.alpha = 0.3, o.first_order = first_order;
    o.support_weight = w, o.dropout_mode = LM_DROPOUT_OFF;
    size_t Pm = b.n.meta_np, Pg = b.n.global_np, P = Pm + Pg;
    double *g64 = dalloc(P), *g32 = dalloc(P), *gb = dalloc(P);
    float *gf = falloc(P), *gf2 = falloc(P);
    lm_meta_stats *st_ref = xcalloc(b.T, sizeof *st_ref), *st = xcalloc(b.T, sizeof *st);
    double F64 = ref_f64(&b, &o, g64, st_ref);
    double F32 = ref_f32(&b, &o, g32);
    char tag[200];
    snprintf(tag, sizeof tag, "%s %s n=%zu %s w=%g meta=%s", name, algo == LM_ALGO_PLAIN ? "plain" : "limaml",
             steps, first_order ? "1st" : "2nd", w,
             meta_mode == 0   ? "uniform"
             : meta_mode == 1 ? "rows"
                              : "mixed");
    for (int ki = 0; ki < nkernels; ki++)
        for (int parts = 1; parts <= 2; parts++) {
            lm_meta_batch_ws *ws = ws_make(&b, steps, parts, kernels[ki]);
            lm_meta_batch_stats bs;
            double F = run_batch(&b, &o, ws, gf, st, &bs);
            to_f64(gb, gf, P);
            double ro = fabs(F - F64) / fmax(fabs(F64), 1e-30);
            double rm = normrel(gb, g64, Pm), rg = normrel(gb + Pm, g64 + Pm, Pg);
            double rm32 = normrel(gb, g32, Pm), rg32 = normrel(gb + Pm, g32 + Pm, Pg);
            /* per-task statistics: absolute below 1, relative above (an MSE loss after a large
             * inner step can reach ~10, where float rounding alone is ~1e-6 of it) */
            double rstat = 0;
#define STAT_ERR(f) fabs(st[t].f - st_ref[t].f) / fmax(1.0, fabs(st_ref[t].f))
            for (size_t t = 0; t < b.T; t++) {
                rstat = fmax(rstat, STAT_ERR(objective));
                rstat = fmax(rstat, STAT_ERR(query_loss));
                rstat = fmax(rstat, STAT_ERR(support_loss));
                rstat = fmax(rstat, STAT_ERR(support_loss_after));
            }
#undef STAT_ERR
            worst_obj = fmax(worst_obj, ro), worst_gm = fmax(worst_gm, rm);
            worst_gg = fmax(worst_gg, rg);
            check_true(ro <= TOL && rm <= TOL && rg <= TOL && rm32 <= TOL && rg32 <= TOL && rstat <= 1e-5 &&
                           fabs(F32 - F64) <= 1e-4 * fabs(F64),
                       "%s %s parts=%d: vs f64 obj %.1e grad_m %.1e grad_g %.1e; vs f32 grad_m "
                       "%.1e grad_g %.1e; stats %.1e",
                       tag, kernel_name(kernels[ki]), parts, ro, rm, rg, rm32, rg32, rstat);
            /* the same bits again, and with one OpenMP thread for two partitions */
            double F2 = run_batch(&b, &o, ws, gf2, NULL, NULL);
            int same = F2 == F && !memcmp(gf, gf2, P * sizeof *gf);
            if (parts == 2) {
                int keep = omp_get_max_threads();
                omp_set_num_threads(1);
                double F3 = run_batch(&b, &o, ws, gf2, NULL, NULL);
                omp_set_num_threads(keep);
                same = same && F3 == F && !memcmp(gf, gf2, P * sizeof *gf);
            }
            check_true(same, "%s %s parts=%d: deterministic", tag, kernel_name(kernels[ki]), parts);
            lm_meta_batch_ws_free(ws);
        }
    free(g64), free(g32), free(gb), free(gf), free(gf2), free(st_ref), free(st);
    batch_free(&b);
}

/* ---- nets ----------------------------------------------------------------------------------- */

static void default_net(lm_net_config *c)
{
    lm_net_config_default(c);
    c->nmeta = 23, c->ndense = 20, c->ncat = 1;
    c->cat_buckets[0] = 1683, c->cat_dim[0] = 8;
}

typedef struct variant {
    const char *name;
    void (*make)(lm_net_config *c);
} variant;

static void v_small(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0);
}
static void v_default(lm_net_config *c)
{
    default_net(c);
}
static void v_nometa(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0);
    c->meta_in_global = 0;
}
static void v_nodense(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 1, LM_NET_LOSS_BCE, 0);
    c->ndense = 0;
}
static void v_nocat(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 0, LM_NET_LOSS_MSE, 0);
}
static void v_deep(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0);
    c->meta_hidden[0] = 19, c->meta_hidden[1] = 7, c->nmeta_hidden = 2;
    c->global_hidden[0] = 33, c->global_hidden[1] = 17, c->global_hidden[2] = 9;
    c->nglobal_hidden = 3, c->emb_dim = 5;
}
static void v_one(lm_net_config *c)
{
    small_config(c, LM_NET_META_MLP, 2, LM_NET_LOSS_MSE, 0);
    c->global_hidden[0] = 70, c->nglobal_hidden = 1, c->nmeta_hidden = 0, c->emb_dim = 18;
}
static void v_wide(lm_net_config *c)
{
    default_net(c);
    c->global_hidden[0] = 130, c->global_hidden[1] = 48, c->emb_dim = 20;
    c->meta_hidden[0] = 40;
}

static const variant variants[] = {
    {"small", v_small},      {"default", v_default}, {"no-meta-cols", v_nometa}, {"no-dense", v_nodense},
    {"no-cat+mse", v_nocat}, {"deep", v_deep},       {"one-hidden+mse", v_one},  {"wide", v_wide},
};

/* ---- edge cases ------------------------------------------------------------------------------ */

static void check_edges(void)
{
    lm_net_config cfg;
    small_config(&cfg, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0);
    batch b;
    batch_make(&b, &cfg, 9, 6, 2, 1); /* splits of 0..6 rows */
    b.S[0].n = b.Sf[0].n = 0, b.Q[1].n = b.Qf[1].n = 0;
    b.S[2].n = b.Sf[2].n = 0, b.Q[2].n = b.Qf[2].n = 0;
    size_t Pm = b.n.meta_np, P = Pm + b.n.global_np;
    double *g64 = dalloc(P), *gb = dalloc(P);
    float *gf = falloc(P), *gf2 = falloc(P);
    lm_meta_opts o;
    lm_meta_opts_default(&o);
    o.steps = 2, o.alpha = 0.3, o.support_weight = 0.5, o.dropout_mode = LM_DROPOUT_OFF;
    lm_meta_batch_ws *ws = ws_make(&b, 3, 2, LM_BATCH_KERNEL_AUTO);
    double F64 = ref_f64(&b, &o, g64, NULL);
    lm_meta_batch_stats bs;
    double F = run_batch(&b, &o, ws, gf, NULL, &bs);
    to_f64(gb, gf, P);
    check_true(fabs(F - F64) <= TOL * fabs(F64) && normrel(gb, g64, P) <= TOL,
               "empty splits: obj %.1e grad %.1e", fabs(F - F64) / fabs(F64), normrel(gb, g64, P));

    /* the objective alone, and accumulation */
    lm_err err = {0};
    lm_meta_batch_stats s2;
    int rc = lm_meta_batch_f32(&b.n, &o, ws, b.tmf, b.tgf, b.T, b.Sf, b.Qf, NULL, NULL, NULL, &s2, &err);
    check_true(rc == 0 && s2.objective == F, "objective alone = with gradients (%.9g)", s2.objective);
    memcpy(gf2, gf, P * sizeof *gf);
    rc = lm_meta_batch_f32(&b.n, &o, ws, b.tmf, b.tgf, b.T, b.Sf, b.Qf, gf2, gf2 + Pm, NULL, NULL, &err);
    double *g2 = dalloc(P), *twice = dalloc(P);
    to_f64(g2, gf2, P);
    for (size_t i = 0; i < P; i++) twice[i] = 2 * gb[i];
    check_true(rc == 0 && normrel(g2, twice, P) <= 1e-6, "gradients are added (+=): %.1e",
               normrel(g2, twice, P));

    /* n = 0 and the plain algorithm (the vanilla gradient on the query rows) */
    o.steps = 0, o.support_weight = 0;
    F64 = ref_f64(&b, &o, g64, NULL);
    F = run_batch(&b, &o, ws, gf, NULL, NULL);
    to_f64(gb, gf, P);
    check_true(fabs(F - F64) <= TOL * fabs(F64) && normrel(gb, g64, P) <= TOL, "n = 0: obj %.1e grad %.1e",
               fabs(F - F64) / fabs(F64), normrel(gb, g64, P));
    o.support_weight = 3; /* n = 0 with the support term: both losses at theta */
    F64 = ref_f64(&b, &o, g64, NULL);
    F = run_batch(&b, &o, ws, gf, NULL, NULL);
    to_f64(gb, gf, P);
    check_true(fabs(F - F64) <= TOL * fabs(F64) && normrel(gb, g64, P) <= TOL,
               "n = 0, w = 3: obj %.1e grad %.1e", fabs(F - F64) / fabs(F64), normrel(gb, g64, P));
    o.support_weight = 0;
    o.algo = LM_ALGO_PLAIN;
    F64 = ref_f64(&b, &o, g64, NULL);
    F = run_batch(&b, &o, ws, gf, NULL, NULL);
    to_f64(gb, gf, P);
    check_true(fabs(F - F64) <= TOL * fabs(F64) && normrel(gb, g64, P) <= TOL, "plain: obj %.1e grad %.1e",
               fabs(F - F64) / fabs(F64), normrel(gb, g64, P));

    /* refusals */
    lm_meta_opts_default(&o);
    o.algo = LM_ALGO_MAML;
    check_true(lm_meta_batch_supported(&b.n, &o, &err) == LM_EINVAL, "refuses MAML: %s", err.msg);
    lm_meta_opts_default(&o);
    lm_net_config c2 = cfg;
    c2.dropout = 0.2;
    lm_net nd;
    net_make(&nd, &c2);
    o.dropout_mode = LM_DROPOUT_SAMPLE;
    check_true(lm_meta_batch_supported(&nd, &o, &err) == LM_EINVAL, "refuses dropout: %s", err.msg);
    o.dropout_mode = LM_DROPOUT_OFF;
    check_true(lm_meta_batch_supported(&nd, &o, &err) == LM_OK, "dropout off is served");
    {
        batch bd;
        batch_make(&bd, &c2, 5, 20, 0, 0);
        size_t PD = bd.n.meta_np + bd.n.global_np;
        double *r = dalloc(PD), *x = dalloc(PD);
        float *xf = falloc(PD);
        o.steps = 2, o.alpha = 0.3;
        lm_meta_batch_ws *wsd = ws_make(&bd, 2, 1, LM_BATCH_KERNEL_AUTO);
        double Fr = ref_f64(&bd, &o, r, NULL), Fb = run_batch(&bd, &o, wsd, xf, NULL, NULL);
        to_f64(x, xf, PD);
        check_true(fabs(Fb - Fr) <= TOL * fabs(Fr) && normrel(x, r, PD) <= TOL,
                   "a net with dropout 0.2, run with dropout off: obj %.1e grad %.1e",
                   fabs(Fb - Fr) / fabs(Fr), normrel(x, r, PD));
        lm_meta_batch_ws_free(wsd);
        free(r), free(x), free(xf);
        batch_free(&bd);
        lm_meta_opts_default(&o);
        o.dropout_mode = LM_DROPOUT_OFF;
    }
    c2 = cfg;
    c2.meta_kind = LM_NET_META_ID;
    net_make(&nd, &c2);
    check_true(lm_meta_batch_supported(&nd, &o, &err) == LM_EINVAL, "refuses the id block: %s", err.msg);
    c2 = cfg;
    c2.nglobal_hidden = 0;
    net_make(&nd, &c2);
    lm_meta_batch_ws *bad = NULL;
    check_true(lm_meta_batch_ws_alloc(&bad, &nd, 4, 4, 1, 1, 0, &err) == LM_EINVAL && !bad,
               "refuses a global block without hidden layer: %s", err.msg);
    lm_meta_batch_ws_free(NULL);
    lm_meta_batch_ws_free(ws);
    free(g64), free(gb), free(gf), free(gf2), free(g2), free(twice);
    batch_free(&b);
}

/* The engine's own tally equals lm_meta_batch_flops on all-uniform and all-row batches. */
static void check_flops(void)
{
    for (int mode = 0; mode < 2; mode++) {
        lm_net_config cfg;
        default_net(&cfg);
        batch b;
        batch_make(&b, &cfg, 6, 40, mode, 0);
        lm_meta_opts o;
        lm_meta_opts_default(&o);
        o.steps = 2, o.support_weight = 1, o.dropout_mode = LM_DROPOUT_OFF;
        lm_meta_batch_ws *ws = ws_make(&b, 2, 2, LM_BATCH_KERNEL_AUTO);
        float *gf = falloc(b.n.meta_np + b.n.global_np);
        lm_meta_batch_stats bs;
        run_batch(&b, &o, ws, gf, NULL, &bs);
        double want = 0, ref = 0;
        size_t one_row = 0; /* a split of one row is uniform either way */
        for (size_t t = 0; t < b.T; t++) {
            want += lm_meta_batch_flops(&b.n, &o, b.S[t].n, b.Q[t].n, mode == 0);
            ref += lm_meta_task_flops(&b.n, &o, b.S[t].n, b.Q[t].n);
            one_row += (b.S[t].n == 1) + (b.Q[t].n == 1);
        }
        check_true(fabs(bs.flops - want) <= 1e-9 * want &&
                       bs.splits_uniform == (mode == 0 ? bs.splits : one_row),
                   "flop tally %s: %.0f = %.0f (reference %.0f, %.2fx)", mode ? "rows" : "uniform", bs.flops,
                   want, ref, ref / want);
        lm_meta_batch_ws_free(ws);
        free(gf);
        batch_free(&b);
    }
}

int main(void)
{
    lm_rng_seed(&rng, 20241125);
    {
        lm_net_config cfg;
        small_config(&cfg, LM_NET_META_MLP, 0, LM_NET_LOSS_BCE, 0);
        lm_net n;
        net_make(&n, &cfg);
        static const int all[3] = {LM_BATCH_KERNEL_PLAIN, LM_BATCH_KERNEL_AVX2, LM_BATCH_KERNEL_AVX512};
        for (int k = 0; k < 3; k++) {
            lm_meta_batch_ws *ws = NULL;
            lm_err err = {0};
            if (lm_meta_batch_ws_alloc(&ws, &n, 1, 1, 0, 1, all[k], &err) == LM_OK)
                kernels[nkernels++] = all[k];
            else
                printf("not tested here: %s\n", err.msg);
            lm_meta_batch_ws_free(ws);
        }
    }
    size_t nv = sizeof variants / sizeof variants[0];
    static const size_t steps[3] = {1, 2, 5};
    for (size_t v = 0; v < nv; v++) {
        lm_net_config cfg;
        variants[v].make(&cfg);
        for (int si = 0; si < 3; si++)
            for (int fo = 0; fo < 2; fo++)
                for (int wi = 0; wi < 2; wi++) {
                    /* the full grid on two nets, a sample of it on the others */
                    if (v >= 2 && (si + fo + wi + (int)v) % 3) continue;
                    int meta_mode = (si + wi + (int)v) % 3;
                    check_config(variants[v].name, &cfg, meta_mode, steps[si], fo, wi ? 3.0 : 0.0,
                                 LM_ALGO_LIMAML);
                }
        check_config(variants[v].name, &cfg, 2, 0, 0, 0, LM_ALGO_PLAIN);
    }
    /* emb_logit (the logit also gets E[0]) on four of the nets: every meta mode (uniform, per
     * row, mixed), n = 1, 2, 5, both orders, w = 0 and 3, and the plain algorithm */
    static const size_t el_variants[4] = {0, 1, 4, 5};
    for (size_t i = 0; i < 4; i++) {
        size_t v = el_variants[i];
        lm_net_config cfg;
        variants[v].make(&cfg);
        cfg.emb_logit = 1;
        char name[64];
        snprintf(name, sizeof name, "%s+emb_logit", variants[v].name);
        for (int si = 0; si < 3; si++)
            for (int fo = 0; fo < 2; fo++)
                for (int wi = 0; wi < 2; wi++) {
                    if (i >= 2 && (si + fo + wi + (int)i) % 2) continue;
                    check_config(name, &cfg, (si + fo + 2 * wi + (int)i) % 3, steps[si], fo, wi ? 3.0 : 0.0,
                                 LM_ALGO_LIMAML);
                }
        check_config(name, &cfg, 2, 0, 0, 0, LM_ALGO_PLAIN);
    }
    check_edges();
    check_flops();
    printf("worst normwise relative error against f64: objective %.2e, grad_m %.2e, grad_g %.2e\n", worst_obj,
           worst_gm, worst_gg);
    return check_summary();
}
