/* batch_impl.h: the per-task engine of lm_meta_batch_f32, written once and compiled per
 * instruction set by meta/batch_avx512.c, meta/batch_avx2.c and meta/batch_plain.c (never
 * include it elsewhere). The including file defines BT_RUN (the entry's name), the vector type
 * vf of VW floats with V_LD, V_ST, V_ADD, V_MUL, V_FMA(a, b, c) = a b + c, V_SET1, V_ZERO,
 * V_RELU, V_POS(x, ref) (x where ref > 0, else 0) and V_HSUM, and the kernels:
 *
 *   k_gemm(M, N, K, A, ars, aks, B, ldb, C, ldc, mode, bias, epi, ref, ldref):
 *       C[r, j] (mode) sum_k A[r ars + k aks] B[k ldb + j], r < M, j < N, then the epilogue;
 *       ars = lda, aks = 1 is C = A B; ars = 1, aks = lda is C = A^T B (weight gradients);
 *   k_nt(M, O, K, A, lda, B, ldb, C, ldc, bias, acc):
 *       C[r, o] = (acc ? C[r, o] : bias ? bias[o] : 0) + A[r, :K] . B[o, :K]
 *       (the meta block's forward with its weights as stored, (out, in));
 *   k_equal(a, b, n) (bitwise, as memcmp), k_copy(dst, src, n), k_add(dst, src, n) on short
 *       unpadded rows; optionally k_bce (else the scalar one below).
 *
 * The algorithm is lm_meta_task's (meta/algo_impl.h, docs/META.md) for LiMAML; what differs is
 * how each pass is computed (docs/BATCH.md):
 *   - layer 0 of the global block splits by columns: x W0^T = X Wfix^T + m Wm^T + E WE^T. X
 *     (dense and table columns) never moves, so P = X Wfix^T + b0 is formed once per task split;
 *     on a uniform split (all rows share their meta features) m Wm^T and E WE^T are one row
 *     vector each, the meta block runs on one row, and the sums over rows of its input
 *     gradient (dE) are formed before the meta block's backward (it is linear in dE);
 *   - the tangent of the global input is nonzero only on the E columns;
 *   - the first-order backward of the inner step at phi_k is kept in slot k and reused by the
 *     tangent sweep (the reference recomputes it).
 * With emb_logit the logit also gets E[0] (E's row, or the split's one row when uniform): the
 * backward adds d loss / d z to dE[0] (summed over the rows when uniform), the tangent pass
 * adds E_tan[0] to the logit's tangent and dzo_tan to dE_tan[0]; it is linear in E, so nothing
 * else changes. */

/* ============================================================================================
 * small helpers over padded rows (widths are multiples of VW)
 * ========================================================================================== */

/* C = A B or C += A B: A (M, K) row-major with stride lda. */
static void nn(bt_part *p, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *B,
               size_t ldb, float *C, size_t ldc, int mode, const float *bias, int epi, const float *ref,
               size_t ldref)
{
    if (M == 0 || N == 0) return;
    k_gemm(M, N, K, A, lda, 1, B, ldb, C, ldc, mode, bias, epi, ref, ldref);
    p->flops += 2.0 * (double)M * (double)N * (double)K;
}

/* C (O, N) += A^T B: A (K, O) with stride lda, B (K, N): a weight gradient summed over K rows. */
static void tn(bt_part *p, size_t O, size_t N, size_t K, const float *A, size_t lda, const float *B,
               size_t ldb, float *C, size_t ldc)
{
    if (O == 0 || N == 0 || K == 0) return;
    k_gemm(O, N, K, A, 1, lda, B, ldb, C, ldc, BT_ACC, NULL, BT_EPI_NONE, NULL, 0);
    p->flops += 2.0 * (double)O * (double)N * (double)K;
}

static void nt(bt_part *p, size_t M, size_t O, size_t K, const float *A, size_t lda, const float *B,
               size_t ldb, float *C, size_t ldc, const float *bias, int acc)
{
    if (M == 0 || O == 0) return;
    k_nt(M, O, K, A, lda, B, ldb, C, ldc, bias, acc);
    p->flops += 2.0 * (double)M * (double)O * (double)K;
}

static void vzero_f(float *x, size_t n)
{
    if (n) memset(x, 0, n * sizeof *x);
}

/* s (W) = sum over the B rows of x (B, W); every column is summed in row order. */
static void rows_sum(float *s, const float *x, size_t B, size_t W)
{
    for (size_t j = 0; j < W; j += VW) {
        vf acc = V_ZERO();
        for (size_t r = 0; r < B; r++) acc = V_ADD(acc, V_LD(x + r * W + j));
        V_ST(s + j, acc);
    }
}

/* y (W) += x (W) */
static void vadd_to(float *y, const float *x, size_t W)
{
    for (size_t j = 0; j < W; j += VW) V_ST(y + j, V_ADD(V_LD(y + j), V_LD(x + j)));
}

/* y = x + a g over n floats (any n: the meta block's parameters are not padded) */
static void vaxpy_to(float *y, const float *x, float a, const float *g, size_t n)
{
    size_t j = 0;
    vf va = V_SET1(a);
    for (; j + VW <= n; j += VW) V_ST(y + j, V_FMA(va, V_LD(g + j), V_LD(x + j)));
    for (; j < n; j++) y[j] = x[j] + a * g[j];
}

/* y[b] = relu(x[b]) in place over B rows of W */
static void relu_rows(float *y, size_t B, size_t W)
{
    for (size_t j = 0; j < B * W; j += VW) V_ST(y + j, V_RELU(V_LD(y + j)));
}

/* y = y where ref > 0, else 0 (B rows of W) */
static void pos_rows(float *y, const float *ref, size_t B, size_t W)
{
    for (size_t j = 0; j < B * W; j += VW) V_ST(y + j, V_POS(V_LD(y + j), V_LD(ref + j)));
}

static float dot_row(const float *a, const float *b, size_t W)
{
    vf acc = V_ZERO();
    for (size_t j = 0; j < W; j += VW) acc = V_FMA(V_LD(a + j), V_LD(b + j), acc);
    return V_HSUM(acc);
}

/* G (K, W) += x (K)^T outer s (W): the weight gradient of columns whose value is one row x on
 * every row of the split, given s, the sum over rows of the output gradient. */
static void outer_add(float *G, const float *x, size_t K, const float *s, size_t W)
{
    for (size_t k = 0; k < K; k++) {
        vf a = V_SET1(x[k]);
        float *g = G + k * W;
        for (size_t j = 0; j < W; j += VW) V_ST(g + j, V_FMA(a, V_LD(s + j), V_LD(g + j)));
    }
}

/* y (n) += column sums of x (M, ld), for a bias gradient in lm_mlp layout (unpadded). */
static void colsum_add(float *y, const float *x, size_t M, size_t ld, size_t n)
{
    for (size_t r = 0; r < M; r++)
        for (size_t o = 0; o < n; o++) y[o] += x[r * ld + o];
}

/* emb_logit: the logit's share of dE. dE[0] (uniform: one row) or dE[r, 0] (each row) += the
 * rows' d loss / d z, summed in row order. */
static void emb_logit_bwd(const bt_ctx *c, const bt_seg *sg, const float *dzo, float *dE)
{
    if (!c->d->emb_logit) return;
    if (sg->uni) {
        float s = 0;
        for (size_t r = 0; r < sg->B; r++) s += dzo[r];
        dE[0] += s;
    } else {
        for (size_t r = 0; r < sg->B; r++) dE[r * c->d->EP] += dzo[r];
    }
}

/* emb_logit: E[0] of row r (the one row when uniform), else 0. */
static float emb_logit_of(const bt_ctx *c, const bt_seg *sg, const float *E, size_t r)
{
    return c->d->emb_logit ? E[sg->uni ? 0 : r * c->d->EP] : 0.0f;
}

/* BCE from logits over B rows: s = sigmoid(z), dzo = grad_scale (s - y); returns the summed
 * loss max(z, 0) - z y + log1p(exp(-|z|)) in double (the reference's formula), or 0 without
 * computing it when want_loss is 0. The AVX-512 file has a vector version (BT_HAVE_K_BCE). */
#ifndef BT_HAVE_K_BCE
static double k_bce(const float *z, const float *y, float *s, float *dzo, size_t B, float grad_scale,
                    int want_loss)
{
    double sum = 0;
    for (size_t r = 0; r < B; r++) {
        /* e = exp(-|z|): sigmoid = 1 / (1 + e) or e / (1 + e), loss term log1p(e) */
        float zr = z[r], e = expf(zr > 0 ? -zr : zr), sr = zr >= 0 ? 1 / (1 + e) : e / (1 + e);
        if (want_loss) sum += (double)((zr > 0 ? zr : 0) - zr * y[r] + log1pf(e));
        s[r] = sr;
        dzo[r] = grad_scale * (sr - y[r]);
    }
    return sum;
}
#endif

/* ============================================================================================
 * a task split: uniform detection, fixed columns, P
 * ========================================================================================== */

/* Bitwise equality of every row's meta features with the first row's. */
static int rows_uniform(const lm_rows_f32 *r)
{
    for (size_t b = 1; b < r->n; b++)
        if (!k_equal(r->meta + b * r->nmeta, r->meta, r->nmeta)) return 0;
    return 1;
}

static void seg_prepare(const bt_ctx *c, bt_part *p, bt_seg *sg, const lm_rows_f32 *r)
{
    const bt_dims *d = c->d;
    const bt_gw *w = c->w;
    size_t B = r->n, H0P = d->HP[0], Kdc = d->Kdc;
    const float *tab = c->theta_g + d->global_mlp_np;
    sg->r = r;
    sg->B = B;
    sg->uni = rows_uniform(r);
    sg->Bm = sg->uni ? 1 : B;
    p->splits++;
    p->splits_uni += (size_t)sg->uni;
    /* X = [dense | table rows] */
    for (size_t b = 0; b < B; b++) {
        float *x = sg->X + b * Kdc;
        k_copy(x, r->dense + b * d->ndense, d->ndense);
        for (size_t t = 0; t < d->ncat; t++) {
            uint32_t id = r->cat[b * d->ncat + t];
            LM_ASSERT(id < d->cat_rows[t]);
            k_copy(x + d->cat_col[t], tab + d->tab_off[t] + (size_t)id * d->cat_dim[t], d->cat_dim[t]);
        }
    }
    /* P = X Wfix^T + b0; the meta columns go to P per row, or to qm once */
    nn(p, B, H0P, Kdc, sg->X, Kdc, w->WT[0] + d->col_dense * H0P, H0P, sg->P, H0P, BT_BIAS, w->b[0],
       BT_EPI_NONE, NULL, 0);
    const float *WTm = w->WT[0] + d->col_meta * H0P;
    if (d->meta_in_global && sg->uni)
        nn(p, 1, H0P, d->nmeta, r->meta, d->nmeta, WTm, H0P, sg->qm, H0P, BT_SET, NULL, BT_EPI_NONE, NULL, 0);
    else if (d->meta_in_global)
        nn(p, B, H0P, d->nmeta, r->meta, d->nmeta, WTm, H0P, sg->P, H0P, BT_ACC, NULL, BT_EPI_NONE, NULL, 0);
    else if (sg->uni)
        vzero_f(sg->qm, H0P);
}

/* ============================================================================================
 * the meta block (lm_mlp layout, M = 1 row on the uniform path)
 * ========================================================================================== */

static void meta_fwd(const bt_ctx *c, bt_part *p, bt_slot *sl, const float *phi, const bt_seg *sg)
{
    const bt_dims *d = c->d;
    const lm_mlp *m = &c->n->meta;
    const float *in = sg->r->meta;
    size_t M = sg->Bm, ldin = d->nmeta;
    for (size_t l = 0; l < d->Lm; l++) {
        float *out = l + 1 == d->Lm ? sl->E : sl->ma[l];
        nt(p, M, d->MO[l], d->MI[l], in, ldin, phi + m->w_off[l], d->MI[l], out, d->MOP[l], phi + m->b_off[l],
           0);
        if (l + 1 < d->Lm) relu_rows(out, M, d->MOP[l]);
        in = out;
        ldin = d->MOP[l];
    }
}

/* grad (meta_np) += the meta block's parameter gradient for the output gradient in
 * sl->mdz[Lm-1] (dE); leaves every layer's gradient in sl->mdz for the tangent sweep. */
static void meta_bwd(const bt_ctx *c, bt_part *p, bt_slot *sl, const float *phi, const bt_seg *sg,
                     float *grad)
{
    const bt_dims *d = c->d;
    const lm_mlp *m = &c->n->meta;
    size_t M = sg->Bm;
    for (size_t l = d->Lm; l-- > 0;) {
        const float *in = l ? sl->ma[l - 1] : sg->r->meta;
        size_t ldin = l ? d->MOP[l - 1] : d->nmeta;
        const float *dz = sl->mdz[l];
        tn(p, d->MO[l], d->MI[l], M, dz, d->MOP[l], in, ldin, grad + m->w_off[l], d->MI[l]);
        colsum_add(grad + m->b_off[l], dz, M, d->MOP[l], d->MO[l]);
        if (l)
            nn(p, M, d->MI[l], d->MO[l], dz, d->MOP[l], phi + m->w_off[l], d->MI[l], sl->mdz[l - 1],
               d->MOP[l - 1], BT_SET, NULL, BT_EPI_POS, sl->ma[l - 1], d->MOP[l - 1]);
    }
}

/* Tangent forward along v (meta parameters; the meta input does not move) into t. */
static void meta_fwd_tan(const bt_ctx *c, bt_part *p, const bt_slot *sl, bt_slot *t, const float *phi,
                         const float *v, const bt_seg *sg)
{
    const bt_dims *d = c->d;
    const lm_mlp *m = &c->n->meta;
    const float *in = sg->r->meta, *in_t = NULL;
    size_t M = sg->Bm, ldin = d->nmeta;
    for (size_t l = 0; l < d->Lm; l++) {
        float *out = l + 1 == d->Lm ? t->E : t->ma[l];
        /* out = in V^T + v_b (+ in_tan W^T) */
        nt(p, M, d->MO[l], d->MI[l], in, ldin, v + m->w_off[l], d->MI[l], out, d->MOP[l], v + m->b_off[l], 0);
        if (in_t)
            nt(p, M, d->MO[l], d->MI[l], in_t, ldin, phi + m->w_off[l], d->MI[l], out, d->MOP[l], NULL, 1);
        if (l + 1 < d->Lm) pos_rows(out, sl->ma[l], M, d->MOP[l]);
        in = sl->ma[l];
        in_t = out;
        ldin = d->MOP[l];
    }
}

/* hv (meta_np) += R{grad} along v given t->mdz[Lm-1] = dE_tan and the slot's first-order
 * gradients sl->mdz (Pearlmutter's rules per layer, docs/NN.md). */
static void meta_bwd_tan(const bt_ctx *c, bt_part *p, const bt_slot *sl, bt_slot *t, const float *phi,
                         const float *v, const bt_seg *sg, float *hv)
{
    const bt_dims *d = c->d;
    const lm_mlp *m = &c->n->meta;
    size_t M = sg->Bm;
    for (size_t l = d->Lm; l-- > 0;) {
        const float *in = l ? sl->ma[l - 1] : sg->r->meta;
        size_t ldin = l ? d->MOP[l - 1] : d->nmeta, I = d->MI[l], O = d->MO[l];
        const float *dz = sl->mdz[l], *dzt = t->mdz[l];
        /* R{dW} = dz_tan^T in + dz^T in_tan; R{db} = sum dz_tan */
        tn(p, O, I, M, dzt, d->MOP[l], in, ldin, hv + m->w_off[l], I);
        if (l) tn(p, O, I, M, dz, d->MOP[l], t->ma[l - 1], ldin, hv + m->w_off[l], I);
        colsum_add(hv + m->b_off[l], dzt, M, d->MOP[l], O);
        if (l) { /* R{dz_{l-1}} = (dz_tan W + dz V) masked */
            nn(p, M, I, O, dzt, d->MOP[l], phi + m->w_off[l], I, t->mdz[l - 1], ldin, BT_SET, NULL,
               BT_EPI_NONE, NULL, 0);
            nn(p, M, I, O, dz, d->MOP[l], v + m->w_off[l], I, t->mdz[l - 1], ldin, BT_ACC, NULL, BT_EPI_POS,
               sl->ma[l - 1], ldin);
        }
    }
}

/* ============================================================================================
 * the global block
 * ========================================================================================== */

/* Forward of a split at the slot's meta embedding; dzo = grad_scale * d loss / d logit.
 * Returns loss_scale * the summed loss (accumulated in double like the reference), or 0
 * without computing it when loss_scale is 0. */
static double glob_fwd(const bt_ctx *c, bt_part *p, bt_slot *sl, const bt_seg *sg, double loss_scale,
                       float grad_scale)
{
    const bt_dims *d = c->d;
    const bt_gw *w = c->w;
    size_t B = sg->B, H0P = d->HP[0], L = d->L;
    const float *WTE = w->WT[0] + d->col_emb * H0P;
    float *a0 = sl->a[0];
    if (sg->uni) { /* q = qm + E WE^T, one row; a0 = relu(P + q) */
        nn(p, 1, H0P, d->E, sl->E, d->EP, WTE, H0P, p->q, H0P, BT_BIAS, sg->qm, BT_EPI_NONE, NULL, 0);
        for (size_t r = 0; r < B; r++)
            for (size_t j = 0; j < H0P; j += VW)
                V_ST(a0 + r * H0P + j, V_RELU(V_ADD(V_LD(sg->P + r * H0P + j), V_LD(p->q + j))));
    } else {
        memcpy(a0, sg->P, B * H0P * sizeof *a0);
        nn(p, B, H0P, d->E, sl->E, d->EP, WTE, H0P, a0, H0P, BT_ACC, NULL, BT_EPI_RELU, NULL, 0);
    }
    for (size_t l = 1; l + 1 < L; l++)
        nn(p, B, d->HP[l], d->H[l - 1], sl->a[l - 1], d->HP[l - 1], w->WT[l], d->HP[l], sl->a[l], d->HP[l],
           BT_BIAS, w->b[l], BT_EPI_RELU, NULL, 0);
    const float *aL = sl->a[L - 2];
    size_t HLP = d->HP[L - 2];
    p->flops += 2.0 * (double)B * (double)d->H[L - 2];
    const float *y = sg->r->label;
    for (size_t r = 0; r < B; r++) sl->z[r] = dot_row(aL + r * HLP, w->wl, HLP) + w->bl;
    if (d->emb_logit)
        for (size_t r = 0; r < B; r++) sl->z[r] += emb_logit_of(c, sg, sl->E, r);
    if (d->loss != LM_NET_LOSS_MSE)
        return loss_scale * k_bce(sl->z, y, sl->s, sl->dzo, B, grad_scale, loss_scale != 0);
    double sum = 0;
    for (size_t r = 0; r < B; r++) {
        float e = sl->z[r] - y[r];
        sum += (double)(e * e);
        sl->dzo[r] = 2 * grad_scale * e;
    }
    return loss_scale * sum;
}

/* Add a table-column gradient dxc (B, Kcat) into the partition's table sums. */
static void tab_scatter(const bt_ctx *c, bt_part *p, const lm_rows_f32 *r, const float *dxc)
{
    const bt_dims *d = c->d;
    for (size_t b = 0; b < r->n; b++)
        for (size_t t = 0; t < d->ncat; t++) {
            uint32_t id = r->cat[b * d->ncat + t];
            size_t row = d->tab_row0[t] + id, D = d->cat_dim[t];
            if (!p->touched[row]) {
                p->touched[row] = 1;
                p->tlist[p->ntouched++] = (uint32_t)row;
            }
            k_add(p->gtab + d->tab_off[t] + (size_t)id * D, dxc + b * d->Kcat + (d->cat_col[t] - d->ndense),
                  D);
        }
}

/* Layer 0's gradients through the columns that do not move (bias, X, meta features) and the
 * tables, for the output gradient dz0 (B, HP0) with row sum s0: gb0 += s0, GT0 += x^T dz0,
 * tables += scatter of dz0 W0[:, tables]. Linear in dz0, so the passes over the same rows can
 * sum their dz0 first (p->dZs) and call this once. */
static void layer0_fixed(const bt_ctx *c, bt_part *p, const bt_seg *sg, const float *dz0, const float *s0)
{
    const bt_dims *d = c->d;
    const bt_gw *w = c->w;
    size_t B = sg->B, H0P = d->HP[0];
    float *GT0 = p->GT[0];
    vadd_to(p->gb[0], s0, H0P);
    tn(p, d->Kdc, H0P, B, sg->X, d->Kdc, dz0, H0P, GT0 + d->col_dense * H0P, H0P);
    if (d->meta_in_global && sg->uni) {
        outer_add(GT0 + d->col_meta * H0P, sg->r->meta, d->nmeta, s0, H0P);
        p->flops += 2.0 * (double)H0P * (double)d->nmeta;
    } else if (d->meta_in_global) {
        tn(p, d->nmeta, H0P, B, sg->r->meta, d->nmeta, dz0, H0P, GT0 + d->col_meta * H0P, H0P);
    }
    if (d->ncat) {
        nn(p, B, d->Kcat, d->H[0], dz0, H0P, w->Wn[0] + d->col_cat0, w->ldn[0], p->dxc, d->Kcat, BT_SET, NULL,
           BT_EPI_NONE, NULL, 0);
        tab_scatter(c, p, sg->r, p->dxc);
    }
}

/* All of layer 0's gradients for dz0 at meta embedding E: the E columns now (E differs per
 * pass), the rest now or, with p->defer, summed into p->dZs / p->sZs for later. */
static void layer0_grads(const bt_ctx *c, bt_part *p, const bt_seg *sg, const float *dz0, const float *s0,
                         const float *E)
{
    const bt_dims *d = c->d;
    size_t B = sg->B, H0P = d->HP[0];
    float *GTE = p->GT[0] + d->col_emb * H0P;
    if (sg->uni) {
        outer_add(GTE, E, d->E, s0, H0P);
        p->flops += 2.0 * (double)H0P * (double)d->E;
    } else {
        tn(p, d->E, H0P, B, E, d->EP, dz0, H0P, GTE, H0P);
    }
    if (!p->defer) {
        layer0_fixed(c, p, sg, dz0, s0);
        return;
    }
    vadd_to(p->dZs, dz0, B * H0P);
    vadd_to(p->sZs, s0, H0P);
}

/* Backward from sl->dzo: every hidden layer's gradient into sl->dz, their row sum s0, dE into
 * sl->mdz[Lm-1]; with acc, the global block's parameter gradients into the partition's sums. */
static void glob_bwd(const bt_ctx *c, bt_part *p, bt_slot *sl, const bt_seg *sg, int acc)
{
    const bt_dims *d = c->d;
    const bt_gw *w = c->w;
    size_t B = sg->B, L = d->L, HLP = d->HP[L - 2], H0P = d->HP[0];
    const float *aL = sl->a[L - 2];
    float *dzL = sl->dz[L - 2];
    for (size_t r = 0; r < B; r++) {
        vf g = V_SET1(sl->dzo[r]);
        for (size_t j = 0; j < HLP; j += VW)
            V_ST(dzL + r * HLP + j, V_POS(V_MUL(g, V_LD(w->wl + j)), V_LD(aL + r * HLP + j)));
    }
    if (acc) {
        for (size_t r = 0; r < B; r++) {
            vf g = V_SET1(sl->dzo[r]);
            for (size_t j = 0; j < HLP; j += VW)
                V_ST(p->gwl + j, V_FMA(g, V_LD(aL + r * HLP + j), V_LD(p->gwl + j)));
            p->gbl += (double)sl->dzo[r];
        }
    }
    p->flops += 2.0 * (double)B * (double)d->H[L - 2] * (acc ? 2 : 1);
    for (size_t l = L - 2; l > 0; l--) {
        if (acc) {
            tn(p, d->H[l - 1], d->HP[l], B, sl->a[l - 1], d->HP[l - 1], sl->dz[l], d->HP[l], p->GT[l],
               d->HP[l]);
            float *gb = p->gb[l];
            for (size_t r = 0; r < B; r++) vadd_to(gb, sl->dz[l] + r * d->HP[l], d->HP[l]);
        }
        nn(p, B, d->HP[l - 1], d->H[l], sl->dz[l], d->HP[l], w->Wn[l], w->ldn[l], sl->dz[l - 1], d->HP[l - 1],
           BT_SET, NULL, BT_EPI_POS, sl->a[l - 1], d->HP[l - 1]);
    }
    rows_sum(sl->s0, sl->dz[0], B, H0P);
    const float *WnE = w->Wn[0] + d->col_emb;
    float *dE = sl->mdz[d->Lm - 1];
    if (sg->uni)
        nn(p, 1, d->E, d->H[0], sl->s0, H0P, WnE, w->ldn[0], dE, d->EP, BT_SET, NULL, BT_EPI_NONE, NULL, 0);
    else
        nn(p, B, d->E, d->H[0], sl->dz[0], H0P, WnE, w->ldn[0], dE, d->EP, BT_SET, NULL, BT_EPI_NONE, NULL,
           0);
    emb_logit_bwd(c, sg, sl->dzo, dE);
    if (acc) layer0_grads(c, p, sg, sl->dz[0], sl->s0, sl->E);
}

/* The Hessian-vector sweep at support slot sl (the forward and first-order backward at phi
 * kept there) along v in the meta parameters, loss weight 1 (scale 1/B): hv += H_mm v, and the
 * partition's global sums += H_gm v. */
static void tangent(const bt_ctx *c, bt_part *p, const bt_slot *sl, const bt_seg *sg, const float *phi,
                    const float *v, float *hv)
{
    const bt_dims *d = c->d;
    const bt_gw *w = c->w;
    bt_slot *t = &p->tan;
    size_t B = sg->B, L = d->L, H0P = d->HP[0], HLP = d->HP[L - 2];
    float scale = (float)(1.0 / (double)B);
    meta_fwd_tan(c, p, sl, t, phi, v, sg);
    /* layer 0: the tangent enters through the E columns only */
    const float *WTE = w->WT[0] + d->col_emb * H0P;
    if (sg->uni) {
        nn(p, 1, H0P, d->E, t->E, d->EP, WTE, H0P, p->qt, H0P, BT_SET, NULL, BT_EPI_NONE, NULL, 0);
        for (size_t r = 0; r < B; r++)
            for (size_t j = 0; j < H0P; j += VW)
                V_ST(t->a[0] + r * H0P + j, V_POS(V_LD(p->qt + j), V_LD(sl->a[0] + r * H0P + j)));
    } else {
        nn(p, B, H0P, d->E, t->E, d->EP, WTE, H0P, t->a[0], H0P, BT_SET, NULL, BT_EPI_POS, sl->a[0], H0P);
    }
    for (size_t l = 1; l + 1 < L; l++)
        nn(p, B, d->HP[l], d->H[l - 1], t->a[l - 1], d->HP[l - 1], w->WT[l], d->HP[l], t->a[l], d->HP[l],
           BT_SET, NULL, BT_EPI_POS, sl->a[l], d->HP[l]);
    /* the logit's tangent, the loss's: dzo_tan = scale s (1 - s) z_tan (BCE), 2 scale z_tan */
    const float *aL = sl->a[L - 2], *atL = t->a[L - 2];
    for (size_t r = 0; r < B; r++) {
        float zt = dot_row(atL + r * HLP, w->wl, HLP) + emb_logit_of(c, sg, t->E, r);
        if (d->loss == LM_NET_LOSS_MSE)
            t->dzo[r] = 2 * scale * zt;
        else
            t->dzo[r] = scale * sl->s[r] * (1 - sl->s[r]) * zt;
    }
    /* the logit layer: R{dw} = dzo_tan a + dzo a_tan; R{da} = dzo_tan w */
    float *dztL = t->dz[L - 2];
    for (size_t r = 0; r < B; r++) {
        vf gt = V_SET1(t->dzo[r]), g = V_SET1(sl->dzo[r]);
        for (size_t j = 0; j < HLP; j += VW) {
            size_t o = r * HLP + j;
            V_ST(p->gwl + j, V_FMA(g, V_LD(atL + o), V_FMA(gt, V_LD(aL + o), V_LD(p->gwl + j))));
            V_ST(dztL + o, V_POS(V_MUL(gt, V_LD(w->wl + j)), V_LD(aL + o)));
        }
        p->gbl += (double)t->dzo[r];
    }
    p->flops += 6.0 * (double)B * (double)d->H[L - 2];
    /* hidden layers: R{dW_l} = dz_tan^T a + dz^T a_tan, R{dz_{l-1}} = (dz_tan W) masked */
    for (size_t l = L - 2; l > 0; l--) {
        size_t I = d->H[l - 1], IP = d->HP[l - 1], OP = d->HP[l];
        tn(p, I, OP, B, sl->a[l - 1], IP, t->dz[l], OP, p->GT[l], OP);
        tn(p, I, OP, B, t->a[l - 1], IP, sl->dz[l], OP, p->GT[l], OP);
        for (size_t r = 0; r < B; r++) vadd_to(p->gb[l], t->dz[l] + r * OP, OP);
        nn(p, B, IP, d->H[l], t->dz[l], OP, w->Wn[l], w->ldn[l], t->dz[l - 1], IP, BT_SET, NULL, BT_EPI_POS,
           sl->a[l - 1], IP);
    }
    /* layer 0: R{dW0} = dz0_tan^T x + dz0^T x_tan, x_tan = [0 | 0 | E_tan] */
    rows_sum(t->s0, t->dz[0], B, H0P);
    layer0_grads(c, p, sg, t->dz[0], t->s0, sl->E);
    float *GTE = p->GT[0] + d->col_emb * H0P;
    if (sg->uni) {
        outer_add(GTE, t->E, d->E, sl->s0, H0P);
        p->flops += 2.0 * (double)H0P * (double)d->E;
    } else {
        tn(p, d->E, H0P, B, t->E, d->EP, sl->dz[0], H0P, GTE, H0P);
    }
    /* dE_tan = dz0_tan W0[:, E] (its row sum on the uniform path), then the meta block */
    const float *WnE = w->Wn[0] + d->col_emb;
    float *dEt = t->mdz[d->Lm - 1];
    if (sg->uni)
        nn(p, 1, d->E, d->H[0], t->s0, H0P, WnE, w->ldn[0], dEt, d->EP, BT_SET, NULL, BT_EPI_NONE, NULL, 0);
    else
        nn(p, B, d->E, d->H[0], t->dz[0], H0P, WnE, w->ldn[0], dEt, d->EP, BT_SET, NULL, BT_EPI_NONE, NULL,
           0);
    emb_logit_bwd(c, sg, t->dzo, dEt);
    meta_bwd_tan(c, p, sl, t, phi, v, sg, hv);
}

/* ============================================================================================
 * one task, and a partition
 * ========================================================================================== */

static void run_task(const bt_ctx *c, bt_part *p, size_t i)
{
    const bt_dims *d = c->d;
    const lm_rows_f32 *S = c->support ? &c->support[i] : NULL, *Q = &c->query[i];
    size_t n = c->steps, Pm = d->meta_np, Bs = S ? S->n : 0, Bq = Q->n;
    double w = c->sw;
    float alpha = c->alpha;
    lm_meta_stats st = {0, 0, 0, 0};
    bt_seg *sgs = &p->seg_s, *sgq = &p->seg_q;
    if (Bs && (n || w > 0)) seg_prepare(c, p, sgs, S);
    if (Bq) seg_prepare(c, p, sgq, Q);
        /* phi_0 = theta_m; phi_k (k >= 1) in the partition's iterates (theta_m when no support) */
#define PHI(k) ((k) == 0 || Bs == 0 ? c->theta_m : (const float *)p->iter + ((k)-1) * Pm)

    /* ---- inner loop: phi_{k+1} = phi_k - alpha grad_m L_s(phi_k), forward + backward kept */
    for (size_t k = 0; k < n && Bs; k++) {
        bt_slot *sl = &p->slots[c->second ? k : 0];
        meta_fwd(c, p, sl, PHI(k), sgs);
        double loss = glob_fwd(c, p, sl, sgs, k == 0 ? 1.0 / (double)Bs : 0, (float)(1.0 / (double)Bs));
        if (k == 0) st.support_loss = loss;
        glob_bwd(c, p, sl, sgs, 0);
        vzero_f(p->g, Pm);
        meta_bwd(c, p, sl, PHI(k), sgs, p->g);
        vaxpy_to(p->iter + k * Pm, PHI(k), -alpha, p->g, Pm);
    }

    /* ---- the outer objective at phi_n and its gradient (adjoint a_n, global sums) */
    const float *phin = PHI(n);
    /* passes whose layer-0 gradients land on the support rows: sum before the fixed columns */
    size_t spass = (w > 0 ? 1 : 0) + (c->second ? n : 0);
    int defer = c->want && Bs && spass > 1;
    bt_slot *qs = &p->slots[p->nslots - 1];
    vzero_f(p->adj, Pm);
    if (Bq && !c->want) {
        meta_fwd(c, p, qs, phin, sgq);
        st.query_loss = glob_fwd(c, p, qs, sgq, 1.0 / (double)Bq, 0);
    } else if (Bq) {
        meta_fwd(c, p, qs, phin, sgq);
        st.query_loss = glob_fwd(c, p, qs, sgq, 1.0 / (double)Bq, (float)(1.0 / (double)Bq));
        glob_bwd(c, p, qs, sgq, 1);
        meta_bwd(c, p, qs, phin, sgq, p->adj);
    }
    if (defer) {
        vzero_f(p->dZs, Bs * d->HP[0]);
        vzero_f(p->sZs, d->HP[0]);
    }
    p->defer = defer;
    if (w > 0 && Bs) {
        meta_fwd(c, p, qs, phin, sgs);
        st.support_loss_after = glob_fwd(c, p, qs, sgs, 1.0 / (double)Bs, (float)(w / (double)Bs));
        if (c->want) {
            glob_bwd(c, p, qs, sgs, 1);
            meta_bwd(c, p, qs, phin, sgs, p->adj);
        }
    }
    st.objective = st.query_loss + w * st.support_loss_after;

    /* ---- back through the inner steps: a_k = a_{k+1} + H_mm(phi_k) v, v = -alpha a_{k+1} */
    if (c->want && c->second && Bs)
        for (size_t k = n; k-- > 0;) {
            vaxpy_to(p->v, p->zero, -alpha, p->adj, Pm);
            tangent(c, p, &p->slots[k], sgs, PHI(k), p->v, p->adj);
        }
#undef PHI
    if (defer) layer0_fixed(c, p, sgs, p->dZs, p->sZs);
    p->defer = 0;
    vaxpy_to(p->gm, p->gm, 1, p->adj, Pm);
    p->obj += st.objective;
    p->ql += st.query_loss;
    p->sl += st.support_loss;
    p->sla += st.support_loss_after;
    if (c->task_stats) c->task_stats[i] = st;
}

void BT_RUN(const bt_ctx *c, bt_part *p)
{
    for (size_t i = 0; i < p->ntasks; i++) run_task(c, p, p->tasks[i]);
}
