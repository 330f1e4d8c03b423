/* batch_embed_impl.h: the per-task engine of lm_meta_embed_f32, written once and compiled per
 * instruction set by meta/batch_embed_avx512.c, batch_embed_avx2.c and batch_embed_plain.c
 * (never include it elsewhere). The including file defines BE_RUN (the entry's name), the
 * vector type vf of VW floats with V_LD, V_ST, V_ADD, V_MUL, V_FMA(a, b, c) = a b + c, V_SET1,
 * V_ZERO, V_RELU, V_POS(x, ref) (x where ref > 0, else 0) and V_HSUM; and either BE_TILED
 * (the register-blocked k_gemm below, with BE_UNROLL) or its own k_gemm:
 *
 *   k_gemm(M, N, K, A, ars, aks, B, ldb, C, ldc, Cin, ldcin, bias, epi, ref, ldref):
 *       C[r, j] = init + sum_k A[r ars + k aks] B[k ldb + j] for r < M, j < N (a multiple of
 *       VW), the sum taken in k order one multiply-add at a time; init = Cin[r ldcin + j]
 *       (Cin may be C), else bias[j], else 0; then the epilogue: none, ReLU, or zero where
 *       ref[r ldref + j] is not positive. ars = lda, aks = 1 is C = A B; ars = 1, aks = lda
 *       is C = A^T B (weight gradients summed over the rows).
 *
 * Every element of a product is one chain of multiply-adds in k order whatever the tile
 * shape, and every sum over rows runs in row order across the blocks of rows: so a task's bits
 * do not depend on the block size or on whether P is kept (batch_embed.h, "Determinism").
 *
 * The algorithm is lm_meta_adapt's LiMAML steps, then lm_meta_task_embedding's output
 * (meta/embedding.c); what differs is how each pass is computed (docs/EMBED.md). */

/* ============================================================================================
 * the register-blocked product (vector instruction sets)
 * ========================================================================================== */

#ifdef BE_TILED
#if VW == 16
#define BE_RMAX 12
#define BE_NVMAX 4
static const size_t be_rmax[BE_NVMAX] = {12, 10, 8, 6};
#else
#define BE_RMAX 12
#define BE_NVMAX 2
static const size_t be_rmax[BE_NVMAX] = {12, 6};
#endif

/* One R x (NV VW) tile of C: R NV accumulators in registers over the whole k loop; each k
 * loads NV vectors of B and broadcasts R scalars of A. R and NV are constants after inlining,
 * so the loops unroll fully. */
static inline __attribute__((always_inline)) void
be_tile(const int R, const int NV, size_t K, const float *A, size_t ars, size_t aks,
        const float *B, size_t ldb, float *C, size_t ldc, const float *Cin, size_t ldcin,
        const float *bias, int epi, const float *ref, size_t ldref)
{
    vf acc[BE_RMAX][BE_NVMAX];
BE_UNROLL(12)
    for (int r = 0; r < R; r++)
BE_UNROLL(4)
        for (int v = 0; v < NV; v++)
            acc[r][v] = Cin ? V_LD(Cin + r * ldcin + VW * v) : bias ? V_LD(bias + VW * v) : V_ZERO();
    for (size_t k = 0; k < K; k++) {
        vf b[BE_NVMAX];
        const float *bk = B + k * ldb, *ak = A + k * aks;
BE_UNROLL(4)
        for (int v = 0; v < NV; v++) b[v] = V_LD(bk + VW * v);
BE_UNROLL(12)
        for (int r = 0; r < R; r++) {
            vf a = V_SET1(ak[r * ars]);
BE_UNROLL(4)
            for (int v = 0; v < NV; v++) acc[r][v] = V_FMA(a, b[v], acc[r][v]);
        }
    }
BE_UNROLL(12)
    for (int r = 0; r < R; r++)
BE_UNROLL(4)
        for (int v = 0; v < NV; v++) {
            vf x = acc[r][v];
            if (epi == BT_EPI_RELU) x = V_RELU(x);
            else if (epi == BT_EPI_POS) x = V_POS(x, V_LD(ref + r * ldref + VW * v));
            V_ST(C + r * ldc + VW * v, x);
        }
}

#define BE_TILE_ARGS                                                                           \
    size_t K, const float *A, size_t ars, size_t aks, const float *B, size_t ldb, float *C,    \
        size_t ldc, const float *Cin, size_t ldcin, const float *bias, int epi,                \
        const float *ref, size_t ldref
typedef void (*be_tile_fn)(BE_TILE_ARGS);
#define BE_TILE(R, NV)                                                                         \
    static void be_tile_##R##_##NV(BE_TILE_ARGS)                                               \
    {                                                                                          \
        be_tile(R, NV, K, A, ars, aks, B, ldb, C, ldc, Cin, ldcin, bias, epi, ref, ldref);     \
    }
#define BE_T6(NV) BE_TILE(1, NV) BE_TILE(2, NV) BE_TILE(3, NV) BE_TILE(4, NV) BE_TILE(5, NV) BE_TILE(6, NV)
#define BE_R6(NV) be_tile_1_##NV, be_tile_2_##NV, be_tile_3_##NV, be_tile_4_##NV, be_tile_5_##NV, \
                  be_tile_6_##NV
BE_T6(1) BE_TILE(7, 1) BE_TILE(8, 1) BE_TILE(9, 1) BE_TILE(10, 1) BE_TILE(11, 1) BE_TILE(12, 1)
BE_T6(2)
#if VW == 16
BE_TILE(7, 2) BE_TILE(8, 2) BE_TILE(9, 2) BE_TILE(10, 2)
BE_T6(3) BE_TILE(7, 3) BE_TILE(8, 3)
BE_T6(4)
static const be_tile_fn be_tiles[BE_NVMAX][BE_RMAX] = {
    {BE_R6(1), be_tile_7_1, be_tile_8_1, be_tile_9_1, be_tile_10_1, be_tile_11_1, be_tile_12_1},
    {BE_R6(2), be_tile_7_2, be_tile_8_2, be_tile_9_2, be_tile_10_2, NULL, NULL},
    {BE_R6(3), be_tile_7_3, be_tile_8_3, NULL, NULL, NULL, NULL},
    {BE_R6(4), NULL, NULL, NULL, NULL, NULL, NULL},
};
#else
static const be_tile_fn be_tiles[BE_NVMAX][BE_RMAX] = {
    {BE_R6(1), be_tile_7_1, be_tile_8_1, be_tile_9_1, be_tile_10_1, be_tile_11_1, be_tile_12_1},
    {BE_R6(2), NULL, NULL, NULL, NULL, NULL, NULL},
};
#endif

/* Column blocks of BE_NVMAX vectors; row blocks of about equal heights up to the tile's. */
static void k_gemm(size_t M, size_t N, size_t K, const float *A, size_t ars, size_t aks,
                   const float *B, size_t ldb, float *C, size_t ldc, const float *Cin,
                   size_t ldcin, const float *bias, int epi, const float *ref, size_t ldref)
{
    if (M == 0) return;
    for (size_t j0 = 0; j0 < N; j0 += BE_NVMAX * VW) {
        size_t nv = LM_MIN(N - j0, (size_t)BE_NVMAX * VW) / VW, rm = be_rmax[nv - 1];
        size_t nt = (M + rm - 1) / rm, base = M / nt, extra = M % nt;
        for (size_t t = 0, r0 = 0; t < nt; t++) {
            size_t rr = base + (t < extra);
            be_tiles[nv - 1][rr - 1](K, A + r0 * ars, ars, aks, B + j0, ldb, C + r0 * ldc + j0, ldc,
                                     Cin ? Cin + r0 * ldcin + j0 : NULL, ldcin,
                                     bias ? bias + j0 : NULL, epi,
                                     ref ? ref + r0 * ldref + j0 : NULL, ldref);
            r0 += rr;
        }
    }
}
#endif /* BE_TILED */

/* ============================================================================================
 * small helpers over padded rows (widths are multiples of VW)
 * ========================================================================================== */

/* y (W) += x (W) */
static void vadd_to(float *y, const float *x, size_t W)
{
    for (size_t j = 0; j < W; j += VW) V_ST(y + j, V_ADD(V_LD(y + j), V_LD(x + j)));
}

/* y (W) = x + a g */
static void vaxpy_to(float *y, const float *x, float a, const float *g, size_t W)
{
    vf va = V_SET1(a);
    for (size_t j = 0; j < W; j += VW) V_ST(y + j, V_FMA(va, V_LD(g + j), V_LD(x + j)));
}

static float dot_row(const float *a, const float *b, size_t W)
{
    vf acc = V_ZERO();
    for (size_t j = 0; j < W; j += VW) acc = V_FMA(V_LD(a + j), V_LD(b + j), acc);
    return V_HSUM(acc);
}

static int rows_uniform(const lm_rows_f32 *r)
{
    for (size_t b = 1; b < r->n; b++)
        if (memcmp(r->meta + b * r->nmeta, r->meta, r->nmeta * sizeof(float))) return 0;
    return 1;
}

/* ============================================================================================
 * the passes
 * ========================================================================================== */

/* P (nb, HP0) = X Wfix^T + b0 (+ the meta columns' product when they vary by row) for rows
 * r0 .. r0 + nb - 1, X = [dense | table rows] gathered into w->X. */
static void prep_p(const lm_meta_embed_plan *pl, lm_meta_embed_ws *w, const lm_rows_f32 *r,
                   size_t r0, size_t nb, int uni, float *P)
{
    const be_dims *d = &pl->d;
    size_t H0P = d->HP[0], Kdc = d->Kdc;
    for (size_t b = 0; b < nb; b++) {
        float *x = w->X + b * Kdc;
        if (d->ndense) memcpy(x, r->dense + (r0 + b) * d->ndense, d->ndense * sizeof *x);
        if (!d->ncat) continue;
        const uint32_t *ids = r->cat + (r0 + b) * d->ncat;
        for (size_t t = 0; t < d->ncat; t++) {
            LM_ASSERT(ids[t] < d->cat_rows[t]);
            memcpy(x + d->cat_col[t], pl->tab[t] + (size_t)ids[t] * d->cat_dim[t],
                   d->cat_dim[t] * sizeof *x);
        }
    }
    k_gemm(nb, H0P, Kdc, w->X, Kdc, 1, pl->WT[0] + d->col_dense * H0P, H0P, P, H0P, NULL, 0,
           pl->b[0], BT_EPI_NONE, NULL, 0);
    if (d->meta_in_global && !uni)
        k_gemm(nb, H0P, d->nmeta, r->meta + r0 * d->nmeta, d->nmeta, 1,
               pl->WT[0] + d->col_meta * H0P, H0P, P, H0P, P, H0P, NULL, BT_EPI_NONE, NULL, 0);
}

/* The meta block at phi on M rows of meta features (stride nmeta): hidden activations into
 * w->ma, the output into w->E. */
static void meta_fwd(const be_dims *d, lm_meta_embed_ws *w, const float *phi, const float *in,
                     size_t M)
{
    size_t ldin = d->nmeta;
    for (size_t l = 0; l < d->Lm; l++) {
        int last = l + 1 == d->Lm;
        float *out = last ? w->E : w->ma[l];
        k_gemm(M, d->MOP[l], d->MI[l], in, ldin, 1, phi + d->p_wt[l], d->MOP[l], out, d->MOP[l],
               NULL, 0, phi + d->p_b[l], last ? BT_EPI_NONE : BT_EPI_RELU, NULL, 0);
        in = out;
        ldin = d->MOP[l];
    }
}

/* g (p_np) += the meta block's parameter gradient at phi for the output gradient w->mdz[Lm-1]
 * (M rows, the forward's activations in w->ma), in both layouts of each weight. */
static void meta_bwd(const be_dims *d, lm_meta_embed_ws *w, const float *phi, const float *in0,
                     size_t M, float *g)
{
    for (size_t l = d->Lm; l-- > 0;) {
        const float *x = l ? w->ma[l - 1] : in0, *dz = w->mdz[l];
        size_t ldx = l ? d->MOP[l - 1] : d->nmeta, OP = d->MOP[l];
        float *gwt = g + d->p_wt[l];
        k_gemm(d->MI[l], OP, M, x, 1, ldx, dz, OP, gwt, OP, gwt, OP, NULL, BT_EPI_NONE, NULL, 0);
        for (size_t r = 0; r < M; r++) vadd_to(g + d->p_b[l], dz + r * OP, OP);
        if (!l) break;
        size_t IP = d->MOP[l - 1];
        float *gwn = g + d->p_wn[l];
        k_gemm(d->MO[l], IP, M, dz, 1, OP, x, IP, gwn, IP, gwn, IP, NULL, BT_EPI_NONE, NULL, 0);
        k_gemm(M, IP, d->MO[l], dz, OP, 1, phi + d->p_wn[l], IP, w->mdz[l - 1], IP, NULL, 0, NULL,
               BT_EPI_POS, w->ma[l - 1], IP);
    }
}

static float sigmoid(float z)
{
    if (z >= 0) return 1 / (1 + expf(-z));
    float e = expf(z);
    return e / (1 + e);
}

/* The global block's forward and backward on nb rows (labels y) of layer-0 product P: every
 * hidden layer's gradient into w->dz; then, on the uniform path, s0 += the rows of dz0, else
 * dE (nb, EP) = dz0 WnE into w->mdz[Lm-1]. scale: 1 / the task's rows. With emb_logit the
 * logit also gets E[0] (w->E's one row when uniform, else the row's), and its d loss / d z goes
 * to dE[0]: summed into w->gsum in row order when uniform, else added row by row here. */
static void glob_pass(const lm_meta_embed_plan *pl, lm_meta_embed_ws *w, const float *P,
                      const float *y, size_t nb, int uni, float scale)
{
    const be_dims *d = &pl->d;
    size_t L = d->L, H0P = d->HP[0], HLP = d->HP[L - 2];
    float *a0 = w->a[0];
    if (uni) {
        for (size_t r = 0; r < nb; r++)
            for (size_t j = 0; j < H0P; j += VW)
                V_ST(a0 + r * H0P + j, V_RELU(V_ADD(V_LD(P + r * H0P + j), V_LD(w->q + j))));
    } else {
        k_gemm(nb, H0P, d->E, w->E, d->EP, 1, pl->WT[0] + d->col_emb * H0P, H0P, a0, H0P, P, H0P,
               NULL, BT_EPI_RELU, NULL, 0);
    }
    for (size_t l = 1; l + 1 < L; l++)
        k_gemm(nb, d->HP[l], d->H[l - 1], w->a[l - 1], d->HP[l - 1], 1, pl->WT[l], d->HP[l], w->a[l],
               d->HP[l], NULL, 0, pl->b[l], BT_EPI_RELU, NULL, 0);
    const float *aL = w->a[L - 2];
    float *dzL = w->dz[L - 2];
    for (size_t r = 0; r < nb; r++) {
        float z = dot_row(aL + r * HLP, pl->wl, HLP) + pl->bl;
        if (d->emb_logit) z += w->E[uni ? 0 : r * d->EP];
        float g = d->loss == LM_NET_LOSS_MSE ? 2 * scale * (z - y[r]) : scale * (sigmoid(z) - y[r]);
        if (d->emb_logit && uni) w->gsum += g;
        else if (d->emb_logit) w->gz[r] = g;
        vf vg = V_SET1(g);
        for (size_t j = 0; j < HLP; j += VW)
            V_ST(dzL + r * HLP + j, V_POS(V_MUL(vg, V_LD(pl->wl + j)), V_LD(aL + r * HLP + j)));
    }
    for (size_t l = L - 2; l > 0; l--)
        k_gemm(nb, d->HP[l - 1], d->H[l], w->dz[l], d->HP[l], 1, pl->Wn[l], d->HP[l - 1], w->dz[l - 1],
               d->HP[l - 1], NULL, 0, NULL, BT_EPI_POS, w->a[l - 1], d->HP[l - 1]);
    if (uni) {
        for (size_t r = 0; r < nb; r++) vadd_to(w->s0, w->dz[0] + r * H0P, H0P);
    } else {
        k_gemm(nb, d->EP, d->H[0], w->dz[0], H0P, 1, pl->WnE, d->EP, w->mdz[d->Lm - 1], d->EP, NULL,
               0, NULL, BT_EPI_NONE, NULL, 0);
        if (d->emb_logit)
            for (size_t r = 0; r < nb; r++) w->mdz[d->Lm - 1][r * d->EP] += w->gz[r];
    }
}

/* ============================================================================================
 * one task
 * ========================================================================================== */

/* phi <- phi - alpha grad of the mean loss over the rows, `steps` times; returns the adapted
 * parameters (the plan's phi0 when steps = 0, else w->phi). */
static const float *adapt(const lm_meta_embed_plan *pl, lm_meta_embed_ws *w, const lm_rows_f32 *r,
                          int uni, uint32_t steps, float alpha)
{
    const be_dims *d = &pl->d;
    const float *phi = pl->phi0;
    size_t B = r->n, H0P = d->HP[0], rb = w->rb;
    int keep = B <= w->max_rows;
    float scale = (float)(1.0 / (double)B);
    if (steps == 0) return phi;
    if (uni && d->meta_in_global)
        k_gemm(1, H0P, d->nmeta, r->meta, d->nmeta, 1, pl->WT[0] + d->col_meta * H0P, H0P, w->qm,
               H0P, NULL, 0, NULL, BT_EPI_NONE, NULL, 0);
    else if (uni)
        memset(w->qm, 0, H0P * sizeof *w->qm);
    if (keep)
        for (size_t r0 = 0; r0 < B; r0 += rb)
            prep_p(pl, w, r, r0, LM_MIN(rb, B - r0), uni, w->P + r0 * H0P);
    for (uint32_t s = 0; s < steps; s++) {
        memset(w->g, 0, d->p_np * sizeof *w->g);
        if (uni) { /* the meta block on one row; q = qm + E WE^T */
            meta_fwd(d, w, phi, r->meta, 1);
            k_gemm(1, H0P, d->E, w->E, d->EP, 1, pl->WT[0] + d->col_emb * H0P, H0P, w->q, H0P, w->qm,
                   H0P, NULL, BT_EPI_NONE, NULL, 0);
            memset(w->s0, 0, H0P * sizeof *w->s0);
            w->gsum = 0;
        }
        for (size_t r0 = 0; r0 < B; r0 += rb) {
            size_t nb = LM_MIN(rb, B - r0);
            const float *P = w->P + r0 * H0P;
            if (!keep) {
                prep_p(pl, w, r, r0, nb, uni, w->P);
                P = w->P;
            }
            if (!uni) meta_fwd(d, w, phi, r->meta + r0 * d->nmeta, nb);
            glob_pass(pl, w, P, r->label + r0, nb, uni, scale);
            if (!uni) meta_bwd(d, w, phi, r->meta + r0 * d->nmeta, nb, w->g);
        }
        if (uni) { /* dE = s0 WE, then the meta block's backward on its one row */
            k_gemm(1, d->EP, d->H[0], w->s0, H0P, 1, pl->WnE, d->EP, w->mdz[d->Lm - 1], d->EP, NULL,
                   0, NULL, BT_EPI_NONE, NULL, 0);
            if (d->emb_logit) w->mdz[d->Lm - 1][0] += w->gsum;
            meta_bwd(d, w, phi, r->meta, 1, w->g);
        }
        vaxpy_to(w->phi, phi, -alpha, w->g, d->p_np);
        phi = w->phi;
    }
    return phi;
}

/* lm_meta_task_embedding's pooling, in double, over the B rows' outputs in row order; `last`
 * is the last row's output. On the uniform path every row's output is `last`. */
static void pool_rows(const lm_meta_embed_plan *pl, lm_meta_embed_ws *w, const float *phi,
                      const lm_rows_f32 *r, int uni, int pool, const float *last, float *out)
{
    const be_dims *d = &pl->d;
    size_t E = d->E, B = r->n;
    double *acc = w->acc, wsum = 0, lnorm = 0;
    for (size_t j = 0; j < E; j++) acc[j] = pool == LM_POOL_MAX ? -INFINITY : 0;
    for (size_t j = 0; j < E; j++) lnorm += (double)last[j] * last[j];
    lnorm = sqrt(lnorm);
    for (size_t r0 = 0; r0 < B; r0 += w->rb) {
        size_t nb = LM_MIN(w->rb, B - r0);
        if (!uni) meta_fwd(d, w, phi, r->meta + r0 * d->nmeta, nb);
        for (size_t i = 0; i < nb; i++) {
            const float *e = uni ? last : w->E + i * d->EP;
            if (pool == LM_POOL_MAX) {
                for (size_t j = 0; j < E; j++) acc[j] = fmax(acc[j], e[j]);
                continue;
            }
            double wt = 1;
            if (pool == LM_POOL_COS) {
                double dt = 0, en = 0;
                for (size_t j = 0; j < E; j++) dt += (double)e[j] * last[j], en += (double)e[j] * e[j];
                wt = en > 0 && lnorm > 0 ? dt / (sqrt(en) * lnorm) : 0;
            }
            for (size_t j = 0; j < E; j++) acc[j] += wt * e[j];
            wsum += wt;
        }
    }
    for (size_t j = 0; j < E; j++)
        out[j] = (float)(pool == LM_POOL_MAX ? acc[j] : (fabs(wsum) > 1e-12 ? acc[j] / wsum : 0));
}

void BE_RUN(const lm_meta_embed_plan *pl, lm_meta_embed_ws *w, const lm_rows_f32 *r,
            uint32_t steps, float alpha, int pool, float *out)
{
    const be_dims *d = &pl->d;
    size_t B = r->n;
    int uni = rows_uniform(r);
    const float *phi = adapt(pl, w, r, uni, steps, alpha);
    meta_fwd(d, w, phi, r->meta + (B - 1) * d->nmeta, 1);
    if (pool == LM_POOL_LATEST) {
        memcpy(out, w->E, d->E * sizeof *out);
        return;
    }
    memcpy(w->last, w->E, d->EP * sizeof *w->last);
    pool_rows(pl, w, phi, r, uni, pool, w->last, out);
}
