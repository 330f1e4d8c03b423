/* batch.c: lm_meta_batch_f32's set-up around the per-task engine (meta/batch_impl.h): what it
 * serves, the workspace, the packing of the global block per call, dealing the tasks to
 * partitions, the OpenMP region, and the reduction of the partitions' sums into the caller's
 * gradients in a fixed order. Contracts in meta/batch.h, layouts in meta/batch_int.h. */
#include "meta/batch_int.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct lm_meta_batch_ws {
    bt_dims d;
    size_t meta_np, global_np; /* the net's, to catch a mix-up */
    int kernel, nparts;
    size_t max_tasks;
    void (*run)(const bt_ctx *c, bt_part *p);
    float *wbuf; /* the packed global block */
    bt_gw gw;
    bt_part *parts;
    void **pmem;         /* per partition: its float buffer, then its byte buffers */
    double *cost, *load; /* (max_tasks), (nparts): dealing the tasks */
    size_t *order;
    int *owner;
};

/* ============================================================================================
 * what the fast path serves
 * ========================================================================================== */

static int net_supported(const lm_net *n, lm_err *err)
{
    if (n->cfg.meta_kind != LM_NET_META_MLP)
        return lm_err_set(err, LM_EINVAL, "batch: only an mlp meta block (this net has an id table)");
    if (n->global.nlayers < 2)
        return lm_err_set(err, LM_EINVAL, "batch: the global mlp needs a hidden layer");
    if (n->global.sizes[n->global.nlayers] != 1)
        return lm_err_set(err, LM_EINVAL, "batch: the global mlp must end in one logit");
    return LM_OK;
}

int lm_meta_batch_supported(const lm_net *n, const lm_meta_opts *o, lm_err *err)
{
    LM_ASSERT(n && o);
    int rc = net_supported(n, err);
    if (rc) return rc;
    if (o->algo != LM_ALGO_LIMAML && o->algo != LM_ALGO_PLAIN)
        return lm_err_set(err, LM_EINVAL, "batch: algorithm %d (only limaml and plain)", o->algo);
    if (n->cfg.dropout > 0 && o->dropout_mode != LM_DROPOUT_OFF)
        return lm_err_set(err, LM_EINVAL, "batch: dropout %.3g is on (only dropout off)", n->cfg.dropout);
    if (!(o->support_weight >= 0))
        return lm_err_set(err, LM_EINVAL, "batch: support weight %g < 0", o->support_weight);
    return LM_OK;
}

/* ============================================================================================
 * shapes and workspace
 * ========================================================================================== */

static void dims_init(bt_dims *d, const lm_net *n, size_t max_rows, size_t max_steps)
{
    const lm_mlp *g = &n->global, *m = &n->meta;
    memset(d, 0, sizeof *d);
    d->L = g->nlayers;
    for (size_t l = 0; l + 1 < d->L; l++) d->H[l] = g->sizes[l + 1], d->HP[l] = bt_pad(d->H[l]);
    d->nin = n->nin, d->ninP = bt_pad(n->nin);
    d->nmeta = n->nmeta, d->ndense = n->ndense, d->ncat = n->ncat;
    d->E = n->E, d->EP = bt_pad(n->E);
    d->meta_in_global = n->cfg.meta_in_global && n->nmeta;
    d->loss = n->cfg.loss;
    d->emb_logit = n->cfg.emb_logit ? 1 : 0;
    d->col_meta = n->col_meta, d->col_dense = n->col_dense, d->col_emb = n->col_emb;
    d->col_cat0 = n->ncat ? n->col_cat[0] : n->col_emb;
    d->Kdc = d->col_emb - d->col_dense;
    d->Kcat = d->col_emb - d->col_cat0;
    size_t rows = 0;
    for (size_t c = 0; c < n->ncat; c++) {
        d->cat_col[c] = n->col_cat[c] - d->col_dense;
        d->cat_dim[c] = n->cat_dim[c], d->cat_rows[c] = n->cat_rows[c];
        d->tab_off[c] = n->cat_off[c] - g->nparams;
        d->tab_row0[c] = rows;
        rows += n->cat_rows[c];
    }
    d->tab_rows = rows;
    d->tab_np = n->global_np - g->nparams;
    d->Lm = m->nlayers;
    for (size_t l = 0; l < d->Lm; l++)
        d->MI[l] = m->sizes[l], d->MO[l] = m->sizes[l + 1], d->MOP[l] = bt_pad(m->sizes[l + 1]);
    d->meta_np = n->meta_np, d->global_mlp_np = g->nparams;
    d->max_rows = max_rows, d->max_steps = max_steps;
}

/* A bump allocator over one float buffer; with base NULL it only counts. Every piece starts
 * on a 64-byte boundary (the buffer is 64-byte aligned). */
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

static void slot_layout(bt_slot *s, const bt_dims *d, cursor *c)
{
    size_t R = d->max_rows;
    s->E = take(c, R * d->EP);
    for (size_t l = 0; l + 1 < d->Lm; l++) s->ma[l] = take(c, R * d->MOP[l]);
    for (size_t l = 0; l < d->Lm; l++) s->mdz[l] = take(c, R * d->MOP[l]);
    for (size_t l = 0; l + 1 < d->L; l++) {
        s->a[l] = take(c, R * d->HP[l]);
        s->dz[l] = take(c, R * d->HP[l]);
    }
    s->z = take(c, R), s->s = take(c, R), s->dzo = take(c, R);
    s->s0 = take(c, d->HP[0]);
}

/* Lay partition p out over base (NULL: count); returns the floats it needs. */
static size_t part_layout(bt_part *p, const bt_dims *d, float *base)
{
    cursor c = {base, 0};
    size_t R = d->max_rows, H0P = d->HP[0];
    /* the dense sums first, so one memset clears them */
    p->GT[0] = take(&c, d->nin * H0P);
    for (size_t l = 1; l + 1 < d->L; l++) p->GT[l] = take(&c, d->H[l - 1] * d->HP[l]);
    for (size_t l = 0; l + 1 < d->L; l++) p->gb[l] = take(&c, d->HP[l]);
    p->gwl = take(&c, d->HP[d->L - 2]);
    p->gm = take(&c, d->meta_np);
    p->acc0 = p->GT[0];
    p->nacc = c.off;
    p->gtab = take(&c, d->tab_np);
    bt_seg *segs[2] = {&p->seg_s, &p->seg_q};
    for (int i = 0; i < 2; i++) {
        segs[i]->X = take(&c, R * d->Kdc);
        segs[i]->P = take(&c, R * H0P);
        segs[i]->qm = take(&c, H0P);
    }
    for (size_t k = 0; k < p->nslots; k++) slot_layout(&p->slots[k], d, &c);
    slot_layout(&p->tan, d, &c);
    p->iter = take(&c, d->max_steps * d->meta_np);
    p->g = take(&c, d->meta_np), p->adj = take(&c, d->meta_np), p->v = take(&c, d->meta_np);
    p->zero = take(&c, d->meta_np);
    p->q = take(&c, H0P), p->qt = take(&c, H0P);
    p->dxc = take(&c, R * d->Kcat);
    p->dZs = take(&c, R * H0P), p->sZs = take(&c, H0P);
    return c.off;
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

void lm_meta_batch_ws_free(lm_meta_batch_ws *ws)
{
    if (!ws) return;
    if (ws->pmem)
        for (int q = 0; q < 2 * ws->nparts; q++) free(ws->pmem[q]);
    if (ws->parts)
        for (int q = 0; q < ws->nparts; q++) free(ws->parts[q].slots);
    free(ws->pmem), free(ws->parts), free(ws->wbuf);
    free(ws->cost), free(ws->load), free(ws->order), free(ws->owner);
    free(ws);
}

static void *zalloc_aligned(size_t bytes)
{
    bytes = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes ? bytes : 64);
    return p;
}

int lm_meta_batch_ws_alloc(lm_meta_batch_ws **out, const lm_net *n, size_t max_tasks, size_t max_rows,
                           size_t max_steps, int nparts, int kernel, lm_err *err)
{
    LM_ASSERT(out && n);
    *out = NULL;
    int rc = net_supported(n, err);
    if (rc) return rc;
    if (kernel == LM_BATCH_KERNEL_AUTO)
        kernel = cpu_runs(LM_BATCH_KERNEL_AVX512) ? LM_BATCH_KERNEL_AVX512
                 : cpu_runs(LM_BATCH_KERNEL_AVX2) ? LM_BATCH_KERNEL_AVX2
                                                  : LM_BATCH_KERNEL_PLAIN;
    if (kernel < LM_BATCH_KERNEL_PLAIN || kernel > LM_BATCH_KERNEL_AVX2)
        return lm_err_set(err, LM_EINVAL, "batch: kernel %d is not a kernel", kernel);
    if (!cpu_runs(kernel))
        return lm_err_set(err, LM_EINVAL, "batch: this processor cannot run kernel %d (%s)", kernel,
                          kernel == LM_BATCH_KERNEL_AVX512 ? "avx-512" : "avx2+fma");
    if (nparts <= 0) nparts = omp_get_max_threads();
    if (max_tasks == 0) max_tasks = 1;
    if (max_rows == 0) max_rows = 1;
    if (max_rows > ((size_t)1 << 24) || max_steps > 4096 || max_tasks > ((size_t)1 << 24) || nparts > 1024)
        return lm_err_set(err, LM_EINVAL, "batch: workspace too large (%zu rows, %zu steps)", max_rows,
                          max_steps);

    lm_meta_batch_ws *ws = calloc(1, sizeof *ws);
    if (!ws) return lm_err_set(err, LM_ENOMEM, "batch: out of memory");
    dims_init(&ws->d, n, max_rows, max_steps);
    const bt_dims *d = &ws->d;
    ws->meta_np = n->meta_np, ws->global_np = n->global_np;
    ws->kernel = kernel, ws->nparts = nparts, ws->max_tasks = max_tasks;
    ws->run = kernel == LM_BATCH_KERNEL_AVX512 ? bt_run_avx512
              : kernel == LM_BATCH_KERNEL_AVX2 ? bt_run_avx2
                                               : bt_run_plain;

    /* packed global block */
    cursor c = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t l = 0; l + 1 < d->L; l++) {
            size_t in = l ? d->H[l - 1] : d->nin, inP = l ? d->HP[l - 1] : d->ninP;
            ws->gw.WT[l] = take(&c, in * d->HP[l]);
            ws->gw.Wn[l] = take(&c, d->H[l] * inP);
            ws->gw.b[l] = take(&c, d->HP[l]);
            ws->gw.ldn[l] = inP;
        }
        ws->gw.wl = take(&c, d->HP[d->L - 2]);
        if (pass == 0) {
            ws->wbuf = zalloc_aligned(c.off * sizeof(float));
            if (!ws->wbuf) goto oom;
            c.base = ws->wbuf, c.off = 0;
        }
    }

    ws->parts = calloc((size_t)nparts, sizeof *ws->parts);
    ws->pmem = calloc(2 * (size_t)nparts, sizeof *ws->pmem);
    ws->cost = calloc(max_tasks, sizeof *ws->cost);
    ws->load = calloc((size_t)nparts, sizeof *ws->load);
    ws->order = calloc(max_tasks, sizeof *ws->order);
    ws->owner = calloc(max_tasks, sizeof *ws->owner);
    if (!ws->parts || !ws->pmem || !ws->cost || !ws->load || !ws->order || !ws->owner) goto oom;
    for (int q = 0; q < nparts; q++) {
        bt_part *p = &ws->parts[q];
        p->nslots = max_steps + 1;
        p->slots = calloc(p->nslots, sizeof *p->slots);
        if (!p->slots) goto oom;
        size_t nf = part_layout(p, d, NULL);
        size_t nb = d->tab_rows * (sizeof(uint8_t) + sizeof(uint32_t)) + max_tasks * sizeof(size_t);
        ws->pmem[2 * q] = zalloc_aligned(nf * sizeof(float));
        ws->pmem[2 * q + 1] = zalloc_aligned(nb);
        if (!ws->pmem[2 * q] || !ws->pmem[2 * q + 1]) goto oom;
        part_layout(p, d, ws->pmem[2 * q]);
        char *bytes = ws->pmem[2 * q + 1];
        p->tasks = (size_t *)bytes;
        p->tlist = (uint32_t *)(bytes + max_tasks * sizeof(size_t));
        p->touched = (uint8_t *)(p->tlist + d->tab_rows);
    }
    *out = ws;
    return LM_OK;
oom:
    lm_meta_batch_ws_free(ws);
    return lm_err_set(err, LM_ENOMEM, "batch: out of memory (%zu rows, %d partitions)", max_rows, nparts);
}

int lm_meta_batch_ws_kernel(const lm_meta_batch_ws *ws)
{
    return ws->kernel;
}

int lm_meta_batch_ws_parts(const lm_meta_batch_ws *ws)
{
    return ws->nparts;
}

/* ============================================================================================
 * per call: packing, dealing, running, reducing
 * ========================================================================================== */

/* The global block of theta_g into the packed layouts (pads stay zero from the allocation). */
static void pack_global(lm_meta_batch_ws *ws, const lm_net *n, const float *theta_g)
{
    const bt_dims *d = &ws->d;
    const lm_mlp *g = &n->global;
    for (size_t l = 0; l + 1 < d->L; l++) {
        size_t in = g->sizes[l], O = d->H[l], OP = d->HP[l], ldn = ws->gw.ldn[l];
        const float *W = theta_g + g->w_off[l];
        float *WT = ws->gw.WT[l], *Wn = ws->gw.Wn[l];
        for (size_t o = 0; o < O; o++) {
            memcpy(Wn + o * ldn, W + o * in, in * sizeof *Wn);
            for (size_t i = 0; i < in; i++) WT[i * OP + o] = W[o * in + i];
        }
        memcpy(ws->gw.b[l], theta_g + g->b_off[l], O * sizeof(float));
    }
    size_t last = d->L - 1;
    memcpy(ws->gw.wl, theta_g + g->w_off[last], d->H[last - 1] * sizeof(float));
    ws->gw.bl = theta_g[g->b_off[last]];
}

/* Longest task first onto the least loaded partition: balanced partitions for tasks of very
 * different sizes, decided by the sizes alone (so the same batch sums in the same order).
 * Each partition then runs its tasks in batch order. */
static int cmp_cost(const void *a, const void *b, void *ctx)
{
    const double *cost = ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (cost[i] != cost[j]) return cost[i] > cost[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

static void deal(lm_meta_batch_ws *ws, const lm_net *n, const lm_meta_opts *o, size_t T,
                 const lm_rows_f32 *support, const lm_rows_f32 *query)
{
    int np = ws->nparts;
    /* the work is close to linear in the rows of each split, plus a little per task */
    double cs = lm_meta_batch_flops(n, o, 64, 0, 1) / 64, cq = lm_meta_batch_flops(n, o, 0, 64, 1) / 64;
    for (size_t i = 0; i < T; i++) {
        size_t Bs = support ? support[i].n : 0;
        ws->cost[i] = cs * (double)Bs + cq * (double)query[i].n + 2e4;
        ws->order[i] = i;
    }
    qsort_r(ws->order, T, sizeof *ws->order, cmp_cost, ws->cost);
    for (int q = 0; q < np; q++) ws->load[q] = 0, ws->parts[q].ntasks = 0;
    for (size_t k = 0; k < T; k++) {
        int best = 0;
        for (int q = 1; q < np; q++)
            if (ws->load[q] < ws->load[best]) best = q;
        ws->owner[ws->order[k]] = best;
        ws->load[best] += ws->cost[ws->order[k]];
    }
    for (size_t i = 0; i < T; i++) {
        bt_part *p = &ws->parts[ws->owner[i]];
        p->tasks[p->ntasks++] = i;
    }
}

/* grad += the partitions' sums, partition by partition in order; tables sparse. */
static void reduce(lm_meta_batch_ws *ws, const lm_net *n, float *grad_m, float *grad_g)
{
    const bt_dims *d = &ws->d;
    const lm_mlp *g = &n->global;
    int np = ws->nparts;
    bt_part *P = ws->parts;
    for (size_t j = 0; j < d->meta_np; j++) {
        float s = P[0].gm[j];
        for (int q = 1; q < np; q++) s += P[q].gm[j];
        grad_m[j] += s;
    }
    for (size_t l = 0; l + 1 < d->L; l++) {
        size_t in = g->sizes[l], O = d->H[l], OP = d->HP[l];
        float *W = grad_g + g->w_off[l], *b = grad_g + g->b_off[l];
        for (size_t o = 0; o < O; o++) {
            for (size_t i = 0; i < in; i++) {
                float s = P[0].GT[l][i * OP + o];
                for (int q = 1; q < np; q++) s += P[q].GT[l][i * OP + o];
                W[o * in + i] += s;
            }
            float s = P[0].gb[l][o];
            for (int q = 1; q < np; q++) s += P[q].gb[l][o];
            b[o] += s;
        }
    }
    size_t last = d->L - 1;
    double sb = 0;
    for (size_t i = 0; i < d->H[last - 1]; i++) {
        float s = P[0].gwl[i];
        for (int q = 1; q < np; q++) s += P[q].gwl[i];
        grad_g[g->w_off[last] + i] += s;
    }
    for (int q = 0; q < np; q++) sb += P[q].gbl;
    grad_g[g->b_off[last]] += (float)sb;
    /* tables: each partition's touched rows, cleared as they are added */
    float *gtab = grad_g + d->global_mlp_np;
    for (int q = 0; q < np; q++) {
        bt_part *p = &P[q];
        for (size_t k = 0; k < p->ntouched; k++) {
            size_t row = p->tlist[k], t = 0;
            while (t + 1 < d->ncat && row >= d->tab_row0[t + 1]) t++;
            size_t D = d->cat_dim[t], off = d->tab_off[t] + (row - d->tab_row0[t]) * D;
            for (size_t j = 0; j < D; j++) gtab[off + j] += p->gtab[off + j];
            memset(p->gtab + off, 0, D * sizeof(float));
            p->touched[row] = 0;
        }
        p->ntouched = 0;
    }
}

static void rows_check(const lm_net *n, const lm_rows_f32 *r, size_t max_rows)
{
    LM_ASSERT(r->n <= max_rows);
    LM_ASSERT(r->nmeta == n->nmeta && r->ndense == n->ndense && r->ncat == n->ncat);
    LM_ASSERT(r->n == 0 || (r->label && r->meta && (!n->ndense || r->dense) && (!n->ncat || r->cat)));
}

int lm_meta_batch_f32(const lm_net *n, const lm_meta_opts *o, lm_meta_batch_ws *ws, const float *theta_m,
                      const float *theta_g, size_t ntasks, const lm_rows_f32 *support,
                      const lm_rows_f32 *query, float *grad_m, float *grad_g, lm_meta_stats *task_stats,
                      lm_meta_batch_stats *stats, lm_err *err)
{
    LM_ASSERT(n && o && ws && theta_m && theta_g && (query || ntasks == 0));
    LM_ASSERT(!grad_m == !grad_g);
    int rc = lm_meta_batch_supported(n, o, err);
    if (rc) return rc;
    LM_ASSERT(ws->meta_np == n->meta_np && ws->global_np == n->global_np && ws->d.nin == n->nin);
    LM_ASSERT(ntasks <= ws->max_tasks);
    int plain = o->algo == LM_ALGO_PLAIN;
    bt_ctx c;
    memset(&c, 0, sizeof c);
    c.n = n, c.d = &ws->d, c.w = &ws->gw, c.theta_m = theta_m, c.theta_g = theta_g;
    c.steps = plain ? 0 : o->steps;
    c.alpha = (float)o->alpha;
    c.sw = plain ? 0 : o->support_weight;
    c.second = !o->first_order;
    c.want = grad_m != NULL;
    c.support = plain ? NULL : support;
    c.query = query;
    c.task_stats = task_stats;
    LM_ASSERT(c.steps <= ws->d.max_steps);
    LM_ASSERT(c.support || (c.steps == 0 && c.sw == 0) || ntasks == 0);
    for (size_t i = 0; i < ntasks; i++) {
        rows_check(n, &query[i], ws->d.max_rows);
        if (c.support) rows_check(n, &c.support[i], ws->d.max_rows);
    }
    lm_meta_opts od = *o;
    od.algo = plain ? LM_ALGO_PLAIN : LM_ALGO_LIMAML;
    pack_global(ws, n, theta_g);
    deal(ws, n, &od, ntasks, c.support, query);

    int np = ws->nparts;
#pragma omp parallel num_threads(np) if (np > 1)
    {
        int nt = omp_get_num_threads();
        for (int q = omp_get_thread_num(); q < np; q += nt) {
            bt_part *p = &ws->parts[q];
            memset(p->acc0, 0, p->nacc * sizeof(float));
            p->gbl = p->obj = p->ql = p->sl = p->sla = p->flops = 0;
            p->splits = p->splits_uni = 0;
            ws->run(&c, p);
        }
    }
    if (grad_m) reduce(ws, n, grad_m, grad_g);
    if (stats) {
        memset(stats, 0, sizeof *stats);
        for (int q = 0; q < np; q++) {
            const bt_part *p = &ws->parts[q];
            stats->objective += p->obj, stats->query_loss += p->ql;
            stats->support_loss += p->sl, stats->support_loss_after += p->sla;
            stats->splits += p->splits, stats->splits_uniform += p->splits_uni;
            stats->flops += p->flops;
        }
    }
    return LM_OK;
}

/* ============================================================================================
 * FLOP count: mirrors the kernel calls of meta/batch_impl.h
 * ========================================================================================== */

static double meta_pass(const bt_dims *d, size_t M, int kind)
{
    /* kind 0 forward, 1 backward, 2 tangent forward, 3 tangent backward */
    double f = 0;
    for (size_t l = 0; l < d->Lm; l++) {
        double u = 2.0 * (double)M * (double)d->MI[l] * (double)d->MO[l];
        static const double per_l0[4] = {1, 1, 1, 1}, per_l[4] = {1, 2, 2, 4};
        f += u * (l ? per_l[kind] : per_l0[kind]);
    }
    return f;
}

static double prep(const bt_dims *d, size_t B, int uni)
{
    double f = 2.0 * (double)B * (double)d->HP[0] * (double)d->Kdc;
    if (d->meta_in_global) f += 2.0 * (double)(uni ? 1 : B) * (double)d->HP[0] * (double)d->nmeta;
    return f;
}

/* layer0_fixed and the E columns of layer0_grads */
static double l0fixed(const bt_dims *d, size_t B, int uni)
{
    double H0P = (double)d->HP[0], b = (double)B, mn = d->meta_in_global ? (double)d->nmeta : 0;
    double f = 2.0 * (double)d->Kdc * H0P * b + 2.0 * H0P * mn * (uni ? 1 : b);
    if (d->ncat) f += 2.0 * b * (double)d->Kcat * (double)d->H[0];
    return f;
}

static double l0E(const bt_dims *d, size_t B, int uni)
{
    return 2.0 * (double)d->HP[0] * (double)d->E * (uni ? 1 : (double)B);
}

static double layer0(const bt_dims *d, size_t B, int uni)
{
    return l0fixed(d, B, uni) + l0E(d, B, uni);
}

static double gfwd(const bt_dims *d, size_t B, int uni)
{
    double b = (double)B, f = 2.0 * (uni ? 1 : b) * (double)d->HP[0] * (double)d->E;
    for (size_t l = 1; l + 1 < d->L; l++) f += 2.0 * b * (double)d->HP[l] * (double)d->H[l - 1];
    return f + 2.0 * b * (double)d->H[d->L - 2];
}

static double gbwd(const bt_dims *d, size_t B, int uni, int acc)
{
    double b = (double)B, f = 2.0 * b * (double)d->H[d->L - 2] * (acc ? 2 : 1);
    for (size_t l = d->L - 2; l > 0; l--) {
        if (acc) f += 2.0 * (double)d->H[l - 1] * (double)d->HP[l] * b;
        f += 2.0 * b * (double)d->HP[l - 1] * (double)d->H[l];
    }
    f += 2.0 * (uni ? 1 : b) * (double)d->E * (double)d->H[0];
    return acc ? f + layer0(d, B, uni) : f;
}

static double gtan(const bt_dims *d, size_t B, int uni)
{
    double b = (double)B, m = uni ? 1 : b, f = 2.0 * m * (double)d->HP[0] * (double)d->E;
    for (size_t l = 1; l + 1 < d->L; l++) f += 2.0 * b * (double)d->HP[l] * (double)d->H[l - 1];
    f += 6.0 * b * (double)d->H[d->L - 2];
    for (size_t l = d->L - 2; l > 0; l--)
        f += 4.0 * (double)d->H[l - 1] * (double)d->HP[l] * b +
             2.0 * b * (double)d->HP[l - 1] * (double)d->H[l];
    f += layer0(d, B, uni);
    f += 2.0 * (double)d->HP[0] * (double)d->E * m; /* dz0^T E_tan */
    f += 2.0 * m * (double)d->E * (double)d->H[0];  /* dE_tan */
    return f;
}

double lm_meta_batch_flops(const lm_net *n, const lm_meta_opts *o, size_t Bs, size_t Bq, int uniform)
{
    LM_ASSERT(n && o);
    if (net_supported(n, NULL)) return 0;
    bt_dims dd;
    dims_init(&dd, n, 1, 0);
    const bt_dims *d = &dd;
    int plain = o->algo == LM_ALGO_PLAIN;
    double steps = plain ? 0 : (double)o->steps, w = plain ? 0 : o->support_weight, f = 0;
    int uni = uniform ? 1 : 0;
    size_t Ms = uni ? 1 : Bs, Mq = uni ? 1 : Bq;
    if (plain) Bs = 0;
    if (Bs && (steps > 0 || w > 0)) f += prep(d, Bs, uni);
    if (Bq) f += prep(d, Bq, uni);
    if (Bs) f += steps * (meta_pass(d, Ms, 0) + gfwd(d, Bs, uni) + gbwd(d, Bs, uni, 0) + meta_pass(d, Ms, 1));
    if (Bq) f += meta_pass(d, Mq, 0) + gfwd(d, Bq, uni) + gbwd(d, Bq, uni, 1) + meta_pass(d, Mq, 1);
    /* the passes over the support rows sum their fixed-column layer-0 gradients first */
    double spass = (w > 0 ? 1 : 0) + (o->first_order ? 0 : steps);
    double fixed = Bs && spass > 1 ? l0fixed(d, Bs, uni) : 0;
    if (w > 0 && Bs)
        f += meta_pass(d, Ms, 0) + gfwd(d, Bs, uni) + gbwd(d, Bs, uni, 1) + meta_pass(d, Ms, 1) - fixed;
    if (!o->first_order && Bs)
        f += steps * (meta_pass(d, Ms, 2) + gtan(d, Bs, uni) + meta_pass(d, Ms, 3) - fixed);
    return f + fixed;
}
