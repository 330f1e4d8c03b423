/* batch_embed.c: lm_meta_embed_f32's set-up around the per-task engine
 * (meta/batch_embed_impl.h): what it serves, the plan (the model packed once), the per-thread
 * workspace, the kernel choice and the FLOP count. Contracts in meta/batch_embed.h, layouts in
 * meta/batch_embed_int.h, derivation in docs/EMBED.md. */
#include "meta/batch_embed_int.h"

#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * what the fast path serves, shapes
 * ========================================================================================== */

int lm_meta_embed_supported(const lm_net *n, lm_err *err)
{
    LM_ASSERT(n);
    if (n->cfg.meta_kind != LM_NET_META_MLP)
        return lm_err_set(err, LM_EINVAL, "embed: only an mlp meta block (this net has an id table)");
    if (n->global.nlayers < 2)
        return lm_err_set(err, LM_EINVAL, "embed: the global mlp needs a hidden layer");
    if (n->global.sizes[n->global.nlayers] != 1)
        return lm_err_set(err, LM_EINVAL, "embed: the global mlp must end in one logit");
    return LM_OK;
}

static void dims_init(be_dims *d, const lm_net *n)
{
    const lm_mlp *g = &n->global, *m = &n->meta;
    memset(d, 0, sizeof *d);
    d->L = g->nlayers;
    for (size_t l = 0; l + 1 < d->L; l++) d->H[l] = g->sizes[l + 1], d->HP[l] = bt_pad(d->H[l]);
    d->nin = n->nin, d->nmeta = n->nmeta, d->ndense = n->ndense, d->ncat = n->ncat;
    d->E = n->E, d->EP = bt_pad(n->E);
    d->meta_in_global = n->cfg.meta_in_global && n->nmeta;
    d->loss = n->cfg.loss;
    d->emb_logit = n->cfg.emb_logit ? 1 : 0;
    d->col_meta = n->col_meta, d->col_dense = n->col_dense, d->col_emb = n->col_emb;
    d->Kdc = d->col_emb - d->col_dense;
    for (size_t c = 0; c < n->ncat; c++) {
        d->cat_col[c] = n->col_cat[c] - d->col_dense;
        d->cat_dim[c] = n->cat_dim[c], d->cat_rows[c] = n->cat_rows[c], d->cat_off[c] = n->cat_off[c];
    }
    d->Lm = m->nlayers;
    size_t off = 0;
    for (size_t l = 0; l < d->Lm; l++) {
        d->MI[l] = m->sizes[l], d->MO[l] = m->sizes[l + 1], d->MOP[l] = bt_pad(m->sizes[l + 1]);
        d->p_wt[l] = off, off += d->MI[l] * d->MOP[l];
        d->p_b[l] = off, off += d->MOP[l];
        if (l) d->p_wn[l] = off, off += d->MO[l] * d->MOP[l - 1];
    }
    d->p_np = off;
    d->meta_np = n->meta_np, d->global_np = n->global_np;
}

static int dims_equal(const be_dims *a, const be_dims *b)
{
    return a->p_np == b->p_np && a->meta_np == b->meta_np && a->global_np == b->global_np &&
           a->nin == b->nin && a->nmeta == b->nmeta && a->E == b->E && a->L == b->L && a->Lm == b->Lm &&
           !memcmp(a->HP, b->HP, sizeof a->HP) && a->Kdc == b->Kdc && a->emb_logit == b->emb_logit;
}

/* A bump allocator over one 64-byte aligned float buffer; with base NULL it only counts.
 * Every piece starts on a BT_PAD boundary. */
typedef struct cursor {
    float *base;
    size_t off;
} cursor;

static float *take(cursor *c, size_t n)
{
    float *p = c->base ? c->base + c->off : NULL;
    c->off += bt_pad(n);
    return p;
}

static void *zalloc_aligned(size_t floats)
{
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes ? bytes : 64);
    return p;
}

/* Whether this processor (and its operating system, which libgcc's check includes) runs a
 * kernel. */
static int cpu_runs(int kernel)
{
    if (kernel == LM_BATCH_KERNEL_PLAIN) return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (kernel == LM_BATCH_KERNEL_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (kernel == LM_BATCH_KERNEL_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* ============================================================================================
 * the plan
 * ========================================================================================== */

static void plan_layout(lm_meta_embed_plan *p, cursor *c)
{
    const be_dims *d = &p->d;
    for (size_t l = 0; l + 1 < d->L; l++) {
        size_t in = l ? d->H[l - 1] : d->nin;
        p->WT[l] = take(c, in * d->HP[l]);
        p->Wn[l] = l ? take(c, d->H[l] * d->HP[l - 1]) : NULL;
        p->b[l] = take(c, d->HP[l]);
    }
    p->WnE = take(c, d->H[0] * d->EP);
    p->wl = take(c, d->HP[d->L - 2]);
    p->phi0 = take(c, d->p_np);
}

/* The global block and theta_m into the packed layouts (pads stay zero from the allocation). */
static void plan_pack(lm_meta_embed_plan *p, const lm_net *n, const float *theta_m, const float *theta_g)
{
    const be_dims *d = &p->d;
    const lm_mlp *g = &n->global, *m = &n->meta;
    for (size_t l = 0; l + 1 < d->L; l++) {
        size_t in = g->sizes[l], O = d->H[l], OP = d->HP[l];
        const float *W = theta_g + g->w_off[l];
        for (size_t o = 0; o < O; o++)
            for (size_t i = 0; i < in; i++) {
                p->WT[l][i * OP + o] = W[o * in + i];
                if (l) p->Wn[l][o * d->HP[l - 1] + i] = W[o * in + i];
            }
        memcpy(p->b[l], theta_g + g->b_off[l], O * sizeof(float));
    }
    const float *W0 = theta_g + g->w_off[0];
    for (size_t o = 0; o < d->H[0]; o++)
        memcpy(p->WnE + o * d->EP, W0 + o * d->nin + d->col_emb, d->E * sizeof(float));
    size_t last = d->L - 1;
    memcpy(p->wl, theta_g + g->w_off[last], d->H[last - 1] * sizeof(float));
    p->bl = theta_g[g->b_off[last]];
    for (size_t c = 0; c < d->ncat; c++) p->tab[c] = theta_g + d->cat_off[c];
    for (size_t l = 0; l < d->Lm; l++) {
        size_t I = d->MI[l], O = d->MO[l], OP = d->MOP[l];
        const float *W = theta_m + m->w_off[l];
        float *wt = p->phi0 + d->p_wt[l], *wn = l ? p->phi0 + d->p_wn[l] : NULL;
        for (size_t o = 0; o < O; o++)
            for (size_t i = 0; i < I; i++) {
                wt[i * OP + o] = W[o * I + i];
                if (wn) wn[o * d->MOP[l - 1] + i] = W[o * I + i];
            }
        memcpy(p->phi0 + d->p_b[l], theta_m + m->b_off[l], O * sizeof(float));
    }
}

int lm_meta_embed_plan_alloc(lm_meta_embed_plan **out, const lm_net *n, const float *theta_m,
                             const float *theta_g, int kernel, lm_err *err)
{
    LM_ASSERT(out && n && theta_m && theta_g);
    *out = NULL;
    int rc = lm_meta_embed_supported(n, err);
    if (rc) return rc;
    if (kernel == LM_BATCH_KERNEL_AUTO)
        kernel = cpu_runs(LM_BATCH_KERNEL_AVX512) ? LM_BATCH_KERNEL_AVX512
                 : cpu_runs(LM_BATCH_KERNEL_AVX2) ? LM_BATCH_KERNEL_AVX2
                                                  : LM_BATCH_KERNEL_PLAIN;
    if (kernel < LM_BATCH_KERNEL_PLAIN || kernel > LM_BATCH_KERNEL_AVX2)
        return lm_err_set(err, LM_EINVAL, "embed: kernel %d is not a kernel", kernel);
    if (!cpu_runs(kernel))
        return lm_err_set(err, LM_EINVAL, "embed: this processor cannot run kernel %d (%s)", kernel,
                          kernel == LM_BATCH_KERNEL_AVX512 ? "avx-512" : "avx2+fma");
    lm_meta_embed_plan *p = calloc(1, sizeof *p);
    if (!p) return lm_err_set(err, LM_ENOMEM, "embed: out of memory");
    dims_init(&p->d, n);
    p->kernel = kernel;
    p->run = kernel == LM_BATCH_KERNEL_AVX512 ? be_run_avx512
             : kernel == LM_BATCH_KERNEL_AVX2 ? be_run_avx2
                                              : be_run_plain;
    cursor c = {NULL, 0};
    plan_layout(p, &c);
    p->buf = zalloc_aligned(c.off);
    if (!p->buf) {
        free(p);
        return lm_err_set(err, LM_ENOMEM, "embed: out of memory (%zu floats)", c.off);
    }
    c.base = p->buf, c.off = 0;
    plan_layout(p, &c);
    plan_pack(p, n, theta_m, theta_g);
    *out = p;
    return LM_OK;
}

void lm_meta_embed_plan_free(lm_meta_embed_plan *p)
{
    if (!p) return;
    free(p->buf);
    free(p);
}

int lm_meta_embed_plan_kernel(const lm_meta_embed_plan *p)
{
    return p->kernel;
}

/* ============================================================================================
 * the workspace
 * ========================================================================================== */

static void ws_layout(lm_meta_embed_ws *w, cursor *c)
{
    const be_dims *d = &w->d;
    size_t rb = w->rb, H0P = d->HP[0];
    w->P = take(c, w->max_rows * H0P);
    w->X = take(c, rb * d->Kdc);
    w->qm = take(c, H0P), w->q = take(c, H0P), w->s0 = take(c, H0P);
    w->gz = take(c, rb);
    for (size_t l = 0; l + 1 < d->L; l++) w->a[l] = take(c, rb * d->HP[l]), w->dz[l] = take(c, rb * d->HP[l]);
    w->E = take(c, rb * d->EP);
    for (size_t l = 0; l + 1 < d->Lm; l++) w->ma[l] = take(c, rb * d->MOP[l]);
    for (size_t l = 0; l < d->Lm; l++) w->mdz[l] = take(c, rb * d->MOP[l]);
    w->phi = take(c, d->p_np), w->g = take(c, d->p_np);
    w->last = take(c, d->EP);
    w->acc = (double *)take(c, 2 * d->E);
}

int lm_meta_embed_ws_alloc(lm_meta_embed_ws **out, const lm_net *n, size_t max_rows, lm_err *err)
{
    LM_ASSERT(out && n);
    *out = NULL;
    int rc = lm_meta_embed_supported(n, err);
    if (rc) return rc;
    if (max_rows == 0) max_rows = 1;
    if (max_rows > ((size_t)1 << 26))
        return lm_err_set(err, LM_EINVAL, "embed: workspace too large (%zu rows)", max_rows);
    lm_meta_embed_ws *w = calloc(1, sizeof *w);
    if (!w) return lm_err_set(err, LM_ENOMEM, "embed: out of memory");
    dims_init(&w->d, n);
    w->max_rows = max_rows;
    w->rb = LM_MIN(max_rows, (size_t)BE_RB);
    cursor c = {NULL, 0};
    ws_layout(w, &c);
    w->mem = zalloc_aligned(c.off);
    if (!w->mem) {
        free(w);
        return lm_err_set(err, LM_ENOMEM, "embed: out of memory (%zu rows)", max_rows);
    }
    c.base = w->mem, c.off = 0;
    ws_layout(w, &c);
    *out = w;
    return LM_OK;
}

void lm_meta_embed_ws_free(lm_meta_embed_ws *ws)
{
    if (!ws) return;
    free(ws->mem);
    free(ws);
}

/* ============================================================================================
 * one task
 * ========================================================================================== */

void lm_meta_embed_f32(const lm_meta_embed_plan *p, lm_meta_embed_ws *ws, const lm_rows_f32 *r,
                       uint32_t steps, double alpha, int pool, float *out)
{
    LM_ASSERT(p && ws && r && out);
    LM_ASSERT(dims_equal(&p->d, &ws->d));
    LM_ASSERT(r->n > 0 && r->meta && r->label);
    LM_ASSERT(r->nmeta == p->d.nmeta && r->ndense == p->d.ndense && r->ncat == p->d.ncat);
    LM_ASSERT((!r->ndense || r->dense) && (!r->ncat || r->cat));
    LM_ASSERT(pool >= LM_POOL_LATEST && pool <= LM_POOL_COS);
    p->run(p, ws, r, steps, (float)alpha, pool, out);
}

/* ============================================================================================
 * FLOP count: mirrors the products of meta/batch_embed_impl.h
 * ========================================================================================== */

static double meta_fwd_f(const be_dims *d, double M)
{
    double f = 0;
    for (size_t l = 0; l < d->Lm; l++) f += 2.0 * M * (double)d->MOP[l] * (double)d->MI[l];
    return f;
}

static double meta_bwd_f(const be_dims *d, double M)
{
    double f = 0;
    for (size_t l = 0; l < d->Lm; l++) {
        f += 2.0 * (double)d->MI[l] * (double)d->MOP[l] * M;
        if (l) f += 2.0 * M * (double)d->MOP[l - 1] * (double)d->MO[l] * 2;
    }
    return f;
}

double lm_meta_embed_flops(const lm_net *n, size_t B, uint32_t steps, int pool, int uniform)
{
    LM_ASSERT(n);
    if (lm_meta_embed_supported(n, NULL) || B == 0) return 0;
    be_dims dd;
    dims_init(&dd, n);
    const be_dims *d = &dd;
    double b = (double)B, M = uniform ? 1 : b, H0P = (double)d->HP[0], f = 0;
    double fwd = 0, bwd = 0;
    for (size_t l = 1; l + 1 < d->L; l++) {
        fwd += 2.0 * b * (double)d->HP[l] * (double)d->H[l - 1];
        bwd += 2.0 * b * (double)d->HP[l - 1] * (double)d->H[l];
    }
    fwd += 2.0 * b * (double)d->HP[d->L - 2]; /* the logit */
    double step = fwd + bwd + meta_fwd_f(d, M) + meta_bwd_f(d, M);
    step += 2.0 * M * H0P * (double)d->E;              /* E WE^T */
    step += 2.0 * M * (double)d->EP * (double)d->H[0]; /* dE */
    if (steps) {
        f += 2.0 * b * H0P * (double)d->Kdc; /* P */
        if (d->meta_in_global) f += 2.0 * M * H0P * (double)d->nmeta;
        f += (double)steps * step;
    }
    f += meta_fwd_f(d, 1);
    if (pool != LM_POOL_LATEST && !uniform) f += meta_fwd_f(d, b);
    return f;
}
