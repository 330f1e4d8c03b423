/* engine.c: a served model: loading, packing the global block for the row kernel, the schema
 * check of a reload, per-thread scratch, the cold-start embedding and scoring. An ensemble
 * (lm_model_ensemble) is served member by member: each packs its global block, reads its slice
 * of the stored vector (or computes its own cold start) and gives its logits; the score is the
 * sigmoid of their mean, as lm_evaluate computes it. n members cost n times the global block.
 *
 * Two engines score the same thing. The reference is lm_net_predict_emb_f32, the global block
 * exactly as evaluation runs it. The fast engine (the default) packs the global block once per
 * model (lm_srv_pack in serve/serve.h) and computes each candidate on its own: a candidate's
 * score never depends on the other candidates of its request, and the plain and AVX2 kernels
 * give the same bits. The two engines agree to float rounding (tests/serve checks 1e-5). */
#include "serve/serve.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ============================================================================================
 * loading and packing
 * ========================================================================================== */

static size_t pad_vw(size_t x)
{
    return (x + LM_SRV_VW - 1) / LM_SRV_VW * LM_SRV_VW;
}

static int pack_global(lm_srv_pack *p, const lm_net *net, const float *theta_g, lm_err *err)
{
    const lm_mlp *g = &net->global;
    memset(p, 0, sizeof *p);
    p->L = g->nlayers;
    p->ndense = net->ndense;
    p->ncat = net->ncat;
    p->K0 = net->ndense;
    for (size_t c = 0; c < net->ncat; c++) {
        p->tab[c] = theta_g + net->cat_off[c];
        p->tab_dim[c] = net->cat_dim[c];
        p->K0 += net->cat_dim[c];
    }
    size_t total = 0;
    for (size_t l = 0; l < p->L; l++) {
        p->H[l] = g->sizes[l + 1];
        p->HP[l] = pad_vw(p->H[l]);
        if (p->HP[l] > p->maxHP) p->maxHP = p->HP[l];
        size_t in = l == 0 ? p->K0 : p->H[l - 1];
        total += in * p->HP[l] + (l ? p->HP[l] : 0);
    }
    p->mem = calloc(total ? total : 1, sizeof(float));
    if (!p->mem) return lm_err_set(err, LM_ENOMEM, "serve: out of memory packing the global block");
    float *q = p->mem;
    for (size_t l = 0; l < p->L; l++) {
        size_t in = l == 0 ? p->K0 : p->H[l - 1], HP = p->HP[l], I = g->sizes[l];
        const float *W = theta_g + g->w_off[l], *b = theta_g + g->b_off[l];
        p->wt[l] = q;
        q += in * HP;
        if (l == 0) {
            /* row k of wt[0] is input column col(k): the dense columns, then each table's */
            size_t k = 0;
            for (size_t i = 0; i < net->ndense; i++, k++)
                for (size_t j = 0; j < p->H[0]; j++) p->wt[0][k * HP + j] = W[j * I + net->col_dense + i];
            for (size_t c = 0; c < net->ncat; c++)
                for (size_t i = 0; i < net->cat_dim[c]; i++, k++)
                    for (size_t j = 0; j < p->H[0]; j++)
                        p->wt[0][k * HP + j] = W[j * I + net->col_cat[c] + i];
        } else {
            for (size_t i = 0; i < in; i++)
                for (size_t j = 0; j < p->H[l]; j++) p->wt[l][i * HP + j] = W[j * I + i];
            p->b[l] = q;
            q += HP;
            memcpy(p->b[l], b, p->H[l] * sizeof(float));
        }
    }
    return LM_OK;
}

int lm_srv_kernel_pick(void)
{
    const char *k = getenv("LM_SERVE_KERNEL");
    if (k && !strcmp(k, "plain")) return LM_SRV_KERNEL_PLAIN;
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("avx2")) return LM_SRV_KERNEL_AVX2;
#endif
    return LM_SRV_KERNEL_PLAIN;
}

int lm_srv_model_wrap(lm_srv_model **out, lm_model *m, const char *path, int engine, lm_err *err)
{
    *out = NULL;
    lm_srv_model *sm = calloc(1, sizeof *sm);
    if (!sm || !(sm->path = lm_strdup(path))) {
        free(sm);
        lm_model_free(m);
        return lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    }
    sm->m = m;
    sm->net = &m->net;
    sm->schema = m->schema;
    sm->nm = lm_model_nmembers(m);
    sm->E = lm_model_emb_dim(m);
    sm->engine = engine;
    sm->kernel = lm_srv_kernel_pick();
    sm->binary = sm->net->cfg.loss == LM_NET_LOSS_BCE;
    atomic_init(&sm->refs, 1);
    lm_model_id(m, sm->id, sizeof sm->id);
    /* an ensemble: each member's global block packed on its own (the same shapes) */
    sm->mem = calloc(sm->nm, sizeof *sm->mem);
    int rc = sm->mem ? LM_OK : lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    for (size_t i = 0; rc == LM_OK && i < sm->nm; i++) {
        const lm_model *mi = lm_model_member(m, i);
        sm->mem[i].m = mi;
        rc = pack_global(&sm->mem[i].pack, &mi->net, mi->theta_g, err);
    }
    if (rc != LM_OK) {
        lm_srv_model_free(sm);
        return rc;
    }
    *out = sm;
    return LM_OK;
}

int lm_srv_model_load(lm_srv_model **out, const char *path, int engine, lm_err *err)
{
    lm_model *m;
    *out = NULL;
    int rc = lm_model_load(&m, path, err);
    return rc != LM_OK ? rc : lm_srv_model_wrap(out, m, path, engine, err);
}

void lm_srv_model_free(lm_srv_model *sm)
{
    if (!sm) return;
    for (size_t i = 0; sm->mem && i < sm->nm; i++) free(sm->mem[i].pack.mem);
    free(sm->mem);
    lm_model_free(sm->m);
    free(sm->path);
    free(sm);
}

static int names_differ(char *const *a, size_t na, char *const *b, size_t nb, const char *what, lm_err *err)
{
    if (na != nb)
        return lm_err_set(err, LM_EMISMATCH, "%s: %zu columns, the serving model has %zu", what, nb, na);
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return lm_err_set(err, LM_EMISMATCH, "%s[%zu] is '%s', the serving model's is '%s'", what, i,
                              b[i], a[i]);
    return LM_OK;
}

int lm_srv_model_check_fit(const lm_srv_model *cur, const lm_srv_model *next, lm_err *err)
{
    const lm_schema *a = cur->schema, *b = next->schema;
    int rc;
    if ((rc = names_differ(a->task, a->ntask, b->task, b->ntask, "task", err))) return rc;
    if ((rc = names_differ(a->meta, a->nmeta, b->meta, b->nmeta, "meta", err))) return rc;
    if ((rc = names_differ(a->dense, a->ndense, b->dense, b->ndense, "dense", err))) return rc;
    if (a->ncat != b->ncat)
        return lm_err_set(err, LM_EMISMATCH, "categorical: %zu columns, the serving model has %zu", b->ncat,
                          a->ncat);
    for (size_t c = 0; c < a->ncat; c++)
        if (strcmp(a->cat[c].column, b->cat[c].column) || a->cat[c].buckets != b->cat[c].buckets)
            return lm_err_set(err, LM_EMISMATCH,
                              "categorical[%zu] is '%s' with %u buckets, the serving model's is "
                              "'%s' with %u",
                              c, b->cat[c].column, b->cat[c].buckets, a->cat[c].column, a->cat[c].buckets);
    if (a->label_type != b->label_type)
        return lm_err_set(err, LM_EMISMATCH, "label: %s, the serving model's is %s",
                          b->label_type == LM_LABEL_REGRESSION ? "regression" : "binary",
                          a->label_type == LM_LABEL_REGRESSION ? "regression" : "binary");
    return LM_OK;
}

/* ============================================================================================
 * per-thread scratch
 * ========================================================================================== */

void lm_srv_ws_free(lm_srv_ws *w)
{
    if (!w) return;
    lm_rows_free_f32(&w->rows);
    lm_meta_ws_free_f32(&w->mws);
    free(w->meta), free(w->emb), free(w->z), free(w->zm), free(w->base), free(w->h), free(w->seen);
    free(w->str);
    lm_srv_buf_free(&w->out);
    memset(w, 0, sizeof *w);
}

int lm_srv_ws_prepare(lm_srv_ws *w, const lm_srv_model *sm, size_t cap, lm_err *err)
{
    if (w->gen == sm->gen && w->cap == cap) return LM_OK;
    lm_srv_buf out = w->out; /* the reply buffer does not depend on the model */
    char *str = w->str;
    size_t str_cap = w->str_cap;
    w->out = (lm_srv_buf){0};
    w->str = NULL;
    lm_srv_ws_free(w);
    w->out = out, w->str = str, w->str_cap = str_cap;
    const lm_net *n = sm->net;
    int rc = lm_rows_alloc_f32(&w->rows, n->nmeta, n->ndense, n->ncat, cap, err);
    if (rc == LM_OK)
        rc = lm_meta_ws_alloc_f32(&w->mws, n, sm->engine == LM_SRV_ENGINE_REFERENCE ? cap : 1, 0, 0, err);
    if (rc != LM_OK) {
        lm_srv_ws_free(w);
        return rc;
    }
    const lm_schema *s = sm->schema;
    w->nseen = LM_MAX(LM_MAX(s->ntask, s->nmeta), LM_MAX(s->ndense, s->ncat)) + 1;
    size_t maxHP = 0;
    for (size_t i = 0; i < sm->nm; i++) maxHP = LM_MAX(maxHP, sm->mem[i].pack.maxHP);
    w->meta = calloc(n->nmeta + 1, sizeof(float));
    w->emb = calloc(sm->E, sizeof(float));
    w->z = calloc(cap, sizeof(float));
    w->zm = sm->nm > 1 ? calloc(cap, sizeof(float)) : NULL;
    w->base = calloc(maxHP + LM_SRV_VW, sizeof(float));
    w->h = calloc(2 * maxHP + LM_SRV_VW, sizeof(float));
    w->seen = calloc(w->nseen, 1);
    if (!w->meta || !w->emb || !w->z || (sm->nm > 1 && !w->zm) || !w->base || !w->h || !w->seen) {
        lm_srv_ws_free(w);
        return lm_err_set(err, LM_ENOMEM, "serve: out of memory for a thread's scratch");
    }
    memset(w->rows.label, 0, cap * sizeof(float));
    w->cap = cap;
    w->gen = sm->gen;
    return LM_OK;
}

/* ============================================================================================
 * embeddings and scores
 * ========================================================================================== */

void lm_srv_cold_embedding(const lm_srv_model *sm, lm_srv_ws *w)
{
    for (size_t i = 0; i < sm->nm; i++) {
        const lm_model *m = sm->mem[i].m;
        const lm_net *n = &m->net;
        float *emb = w->emb + i * n->E;
        if (n->cfg.meta_kind == LM_NET_META_ID) {
            size_t row = lm_model_id_row(m, w->key, w->key_len);
            memcpy(emb, m->theta_m + lm_net_meta_slice(n, row), n->E * sizeof(float));
        } else {
            lm_net_embed_f32(n, &w->mws, m->theta_m, w->meta, 1, emb);
        }
    }
}

/* base = b0 + W0[:, meta] m + W0[:, E] e over the padded width of layer 0 (pads stay 0), for
 * member mb. */
static void layer0_base(const lm_srv_member *mb, const float *meta, const float *emb, float *base)
{
    const lm_net *n = &mb->m->net;
    const lm_mlp *g = &n->global;
    const float *W = mb->m->theta_g + g->w_off[0], *b = mb->m->theta_g + g->b_off[0];
    size_t I = g->sizes[0], H = mb->pack.H[0];
    int with_meta = n->cfg.meta_in_global && n->nmeta;
    memset(base, 0, mb->pack.HP[0] * sizeof(float));
    for (size_t j = 0; j < H; j++) {
        const float *wj = W + j * I;
        float s = b[j];
        if (with_meta)
            for (size_t i = 0; i < n->nmeta; i++) s += wj[n->col_meta + i] * meta[i];
        for (size_t i = 0; i < n->E; i++) s += wj[n->col_emb + i] * emb[i];
        base[j] = s;
    }
}

void lm_srv_score_rows(const lm_srv_model *sm, lm_srv_ws *w)
{
    size_t B = w->rows.n;
    if (B == 0) return;
    if (sm->engine == LM_SRV_ENGINE_REFERENCE)
        for (size_t r = 0; r < B && sm->net->nmeta; r++)
            memcpy(w->rows.meta + r * sm->net->nmeta, w->meta, sm->net->nmeta * sizeof(float));
    /* member i's logits from its slice of the embedding; an ensemble sums them in member order
     * into z and divides by the count, as lm_evaluate does (one member: the logits as they are) */
    for (size_t i = 0; i < sm->nm; i++) {
        const lm_srv_member *mb = &sm->mem[i];
        const float *emb = w->emb + i * sm->net->E;
        float *z = i ? w->zm : w->z;
        if (sm->engine == LM_SRV_ENGINE_REFERENCE) {
            lm_net_predict_emb_f32(&mb->m->net, &w->mws, emb, mb->m->theta_g, &w->rows, z);
        } else {
            layer0_base(mb, w->meta, emb, w->base);
            float zoff = sm->net->cfg.emb_logit ? emb[0] : 0.0f; /* E[0]: one shift per request */
            if (sm->kernel == LM_SRV_KERNEL_AVX2)
                lm_srv_rows_avx2(&mb->pack, w->base, w->rows.dense, w->rows.cat, B, zoff, z, w->h);
            else
                lm_srv_rows_plain(&mb->pack, w->base, w->rows.dense, w->rows.cat, B, zoff, z, w->h);
        }
        if (i)
            for (size_t r = 0; r < B; r++) w->z[r] += w->zm[r];
    }
    if (sm->nm > 1)
        for (size_t r = 0; r < B; r++) w->z[r] = w->z[r] / (float)sm->nm;
    if (sm->binary)
        for (size_t r = 0; r < B; r++) w->z[r] = 1.0f / (1.0f + expf(-w->z[r]));
}

/* ============================================================================================
 * the plain kernel (serve/kernel_avx2.c has the same loops over 8-float vectors)
 * ========================================================================================== */

/* y += a x over n floats; mul then add, rounded separately (no fused multiply-add). */
static void axpy(float *restrict y, float a, const float *restrict x, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        float t = a * x[j];
        y[j] = y[j] + t;
    }
}

void lm_srv_rows_plain(const lm_srv_pack *p, const float *base, const float *dense, const uint32_t *cat,
                       size_t B, float zoff, float *z, float *h)
{
    float *a = h, *o = h + p->maxHP;
    for (size_t r = 0; r < B; r++) {
        size_t W = p->HP[0];
        memcpy(a, base, W * sizeof(float));
        const float *w = p->wt[0];
        for (size_t k = 0; k < p->ndense; k++, w += W) axpy(a, dense[r * p->ndense + k], w, W);
        for (size_t c = 0; c < p->ncat; c++) {
            const float *e = p->tab[c] + (size_t)cat[r * p->ncat + c] * p->tab_dim[c];
            for (size_t k = 0; k < p->tab_dim[c]; k++, w += W) axpy(a, e[k], w, W);
        }
        for (size_t l = 1; l < p->L; l++) {
            for (size_t j = 0; j < W; j++) a[j] = a[j] > 0 ? a[j] : 0;
            size_t W2 = p->HP[l];
            memcpy(o, p->b[l], W2 * sizeof(float));
            for (size_t i = 0; i < p->H[l - 1]; i++) axpy(o, a[i], p->wt[l] + i * W2, W2);
            float *t = a;
            a = o, o = t;
            W = W2;
        }
        z[r] = a[0] + zoff;
    }
}
