/* net_impl.h: the network's passes over one task's rows, written once over REAL, LM_NN_FN and
 * LM_META_FN and instantiated by meta_f32.c and meta_f64.c (never include it elsewhere).
 * Contracts in meta/meta_decl.h, layouts with lm_net in meta/meta.h, rules in docs/META.md.
 *
 * A forward fills one workspace slot: E: (B, E) the meta embedding; xg: (B, nin) the global
 * input [meta | dense | emb_1 .. emb_C | E]; the two MLP caches (activations and dropout
 * masks); z: (B) the logits. The backward and tangent passes read the slot back; the tangent
 * and gradient intermediates go to one shared set of scratch buffers. */

typedef LM_META_FN(lm_rows) ROWS;
typedef LM_META_FN(lm_meta_ws) WS;

/* ---- workspace views ---------------------------------------------------------------------- */

typedef struct slot_view {
    REAL *E;      // (B, E)
    REAL *xg;     // (B, nin)
    REAL *mcache; // meta MLP forward cache
    REAL *gcache; // global MLP forward cache
    REAL *z;      // (B)
} slot_view;

static slot_view ws_slot(const WS *ws, size_t k)
{
    LM_ASSERT(k < ws->lay.nslots);
    const lm_meta_layout *l = &ws->lay;
    REAL *base = ws->buf + l->off_slots + k * l->st_size;
    slot_view s = {base + l->st_E, base + l->st_xg, base + l->st_mcache, base + l->st_gcache,
                   base + l->st_z};
    return s;
}

#define WSP(ws, field) ((ws)->buf + (ws)->lay.field)

static void ws_check(const lm_net *n, const WS *ws, const ROWS *r)
{
    LM_ASSERT(n && ws && ws->buf && r);
    LM_ASSERT(ws->meta_task_np == n->meta_task_np && ws->global_np == n->global_np &&
              ws->nin == n->nin);
    LM_ASSERT(r->n <= ws->lay.max_rows);
    LM_ASSERT(r->nmeta == n->nmeta && r->ndense == n->ndense && r->ncat == n->ncat);
    LM_ASSERT(r->n == 0 || r->label);
    LM_ASSERT(r->n == 0 || !n->nmeta || r->meta);
    LM_ASSERT(r->n == 0 || !n->ndense || r->dense);
    LM_ASSERT(r->n == 0 || !n->ncat || r->cat);
}

/* ---- small helpers ------------------------------------------------------------------------- */

static void vzero(REAL *x, size_t n)
{
    if (n) memset(x, 0, n * sizeof *x);
}

/* y += a x */
static void vaxpy_r(REAL *y, REAL a, const REAL *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* Embedding lookup into a column block: out[b * ld_out + j] = table[ids[b * ld_ids] * D + j].
 * ids are column c of the (B, ncat) id matrix, so they stride by ncat. The tangent forward is
 * the same lookup in the tangent table. */
static void emb_gather(REAL *out, size_t ld_out, const uint32_t *ids, size_t ld_ids,
                       const REAL *table, size_t rows, size_t D, size_t B)
{
    for (size_t b = 0; b < B; b++) {
        uint32_t id = ids[b * ld_ids];
        LM_ASSERT(id < rows);
        memcpy(out + b * ld_out, table + (size_t)id * D, D * sizeof *out);
    }
}

/* dtable[ids[b]] += dout[b] from a column block (repeated ids add up): the backward of
 * emb_gather, and (applied to tangents) its tangent backward. */
static void emb_scatter_add(REAL *dtable, const REAL *dout, size_t ld_out, const uint32_t *ids,
                            size_t ld_ids, size_t D, size_t B)
{
    for (size_t b = 0; b < B; b++) vaxpy_r(dtable + (size_t)ids[b * ld_ids] * D, 1,
                                           dout + b * ld_out, D);
}

/* Sum over rows of x: (B, D) added into y: (D): the id variant's backward (E = T[row] on
 * every row, so dT[row] = sum_b dE[b]). */
static void rows_sum_add(REAL *y, const REAL *x, size_t B, size_t D)
{
    for (size_t b = 0; b < B; b++) vaxpy_r(y, 1, x + b * D, D);
}

static void rows_broadcast(REAL *y, const REAL *x, size_t B, size_t D)
{
    for (size_t b = 0; b < B; b++) memcpy(y + b * D, x, D * sizeof *y);
}

static double loss_forward(const lm_net *n, const REAL *z, const REAL *y, size_t B, REAL scale)
{
    return n->cfg.loss == LM_NET_LOSS_MSE ? LM_NN_FN(lm_mse_forward)(NULL, z, y, B, scale)
                                          : LM_NN_FN(lm_bce_forward)(NULL, z, y, B, scale);
}

static void loss_backward(const lm_net *n, REAL *dz, const REAL *z, const REAL *y, size_t B,
                          REAL scale)
{
    if (n->cfg.loss == LM_NET_LOSS_MSE) LM_NN_FN(lm_mse_backward)(dz, z, y, B, scale);
    else LM_NN_FN(lm_bce_backward)(dz, z, y, B, scale);
}

static void loss_backward_tan(const lm_net *n, REAL *dz_tan, const REAL *z, const REAL *z_tan,
                              size_t B, REAL scale)
{
    if (n->cfg.loss == LM_NET_LOSS_MSE) LM_NN_FN(lm_mse_backward_tan)(dz_tan, z, z_tan, B, scale);
    else LM_NN_FN(lm_bce_backward_tan)(dz_tan, z, z_tan, B, scale);
}

/* ============================================================================================
 * init
 * ========================================================================================== */

static void fill_normal(REAL *x, size_t count, double sd, lm_rng *rng)
{
    for (size_t i = 0; i < count; i++) x[i] = (REAL)(sd * lm_rng_normal(rng));
}

void LM_META_FN(lm_net_params_init)(const lm_net *n, REAL *theta_m, REAL *theta_g, lm_rng *rng)
{
    LM_ASSERT(n && theta_m && theta_g && rng);
    if (n->cfg.meta_kind == LM_NET_META_MLP) LM_NN_FN(lm_mlp_params_init)(theta_m, &n->meta, rng);
    else fill_normal(theta_m, n->meta_np, 1.0 / sqrt((double)n->E), rng);
    LM_NN_FN(lm_mlp_params_init)(theta_g, &n->global, rng);
    for (size_t c = 0; c < n->ncat; c++)
        fill_normal(theta_g + n->cat_off[c], n->cat_rows[c] * n->cat_dim[c],
                    1.0 / sqrt((double)n->cat_dim[c]), rng);
}

/* ============================================================================================
 * forward
 * ========================================================================================== */

/* With emb_logit, z[b] += E[b, 0]: the first coordinate of the meta embedding is also a shift
 * of the logit. It is linear in E, so it adds no second-order term: the backward adds dz[b]
 * to dE[b, 0], the tangent pass adds E_tan[b, 0] to z_tan[b] and dz_tan[b] to dE_tan[b, 0].
 * A learned map w . E would be no more expressive: the meta block's last layer is linear (an
 * MLP block's E = W h + b, so w . E folds into the first row of W and b; an id block's E[0]
 * is a free parameter per task). */
static void emb_logit_add(const lm_net *n, REAL *z, const REAL *E, size_t B)
{
    if (!n->cfg.emb_logit) return;
    for (size_t b = 0; b < B; b++) z[b] += E[b * n->E];
}

/* The global block's input without its meta embedding columns, and the global forward once
 * s.E holds the embedding. */
static double global_forward(const lm_net *n, slot_view s, const REAL *theta_g, const ROWS *r,
                             int dropout_mode, lm_rng *rng)
{
    size_t B = r->n, nin = n->nin;
    if (n->cfg.meta_in_global && n->nmeta)
        LM_NN_FN(lm_cols_copy)(s.xg + n->col_meta, nin, r->meta, n->nmeta, B, n->nmeta);
    if (n->ndense) LM_NN_FN(lm_cols_copy)(s.xg + n->col_dense, nin, r->dense, n->ndense, B, n->ndense);
    for (size_t c = 0; c < n->ncat; c++)
        emb_gather(s.xg + n->col_cat[c], nin, r->cat + c, n->ncat, theta_g + n->cat_off[c],
                   n->cat_rows[c], n->cat_dim[c], B);
    LM_NN_FN(lm_cols_copy)(s.xg + n->col_emb, nin, s.E, n->E, B, n->E);
    LM_NN_FN(lm_mlp_forward)(s.z, s.gcache, &n->global, theta_g, s.xg, B, dropout_mode, rng);
    emb_logit_add(n, s.z, s.E, B);
    return loss_forward(n, s.z, r->label, B, (REAL)(1.0 / (double)B));
}

double LM_META_FN(lm_net_forward)(const lm_net *n, WS *ws, size_t slot, const REAL *theta_m,
                                  const REAL *theta_g, const ROWS *r, int dropout_mode,
                                  lm_rng *rng)
{
    ws_check(n, ws, r);
    LM_ASSERT(theta_m && theta_g);
    size_t B = r->n;
    if (B == 0) return 0;
    slot_view s = ws_slot(ws, slot);
    if (n->cfg.meta_kind == LM_NET_META_MLP)
        LM_NN_FN(lm_mlp_forward)(s.E, s.mcache, &n->meta, theta_m, r->meta, B, dropout_mode, rng);
    else
        rows_broadcast(s.E, theta_m, B, n->E);
    return global_forward(n, s, theta_g, r, dropout_mode, rng);
}

/* ============================================================================================
 * backward
 * ========================================================================================== */

void LM_META_FN(lm_net_backward)(const lm_net *n, WS *ws, size_t slot, const REAL *theta_m,
                                 const REAL *theta_g, const ROWS *r, double weight,
                                 REAL *grad_m, REAL *grad_g)
{
    ws_check(n, ws, r);
    size_t B = r->n, nin = n->nin, E = n->E;
    if (B == 0 || (!grad_m && !grad_g)) return;
    slot_view s = ws_slot(ws, slot);
    REAL *dz = WSP(ws, off_dz), *dxg = WSP(ws, off_dxg), *dE = WSP(ws, off_dE);
    loss_backward(n, dz, s.z, r->label, B, (REAL)(weight / (double)B));
    /* the global block: its input gradient is needed for the meta block and the tables */
    int need_dx = grad_m || (grad_g && n->ncat);
    LM_NN_FN(lm_mlp_backward)(need_dx ? dxg : NULL, grad_g, WSP(ws, off_gwork), &n->global,
                              theta_g, s.xg, s.gcache, dz, B);
    if (grad_g)
        for (size_t c = 0; c < n->ncat; c++)
            emb_scatter_add(grad_g + n->cat_off[c], dxg + n->col_cat[c], nin, r->cat + c, n->ncat,
                            n->cat_dim[c], B);
    if (!grad_m) return;
    LM_NN_FN(lm_cols_copy)(dE, E, dxg + n->col_emb, nin, B, E);
    if (n->cfg.emb_logit)
        for (size_t b = 0; b < B; b++) dE[b * E] += dz[b];
    if (n->cfg.meta_kind == LM_NET_META_MLP)
        LM_NN_FN(lm_mlp_backward)(NULL, grad_m, WSP(ws, off_mwork), &n->meta, theta_m, r->meta,
                                  s.mcache, dE, B);
    else
        rows_sum_add(grad_m, dE, B, E);
}

double LM_META_FN(lm_net_grad)(const lm_net *n, WS *ws, size_t slot, const REAL *theta_m,
                               const REAL *theta_g, const ROWS *r, REAL *grad_m, REAL *grad_g,
                               int dropout_mode, lm_rng *rng)
{
    double loss = LM_META_FN(lm_net_forward)(n, ws, slot, theta_m, theta_g, r, dropout_mode, rng);
    LM_META_FN(lm_net_backward)(n, ws, slot, theta_m, theta_g, r, 1.0, grad_m, grad_g);
    return loss;
}

/* ============================================================================================
 * Hessian-vector product (R-operator): tangent forward through both blocks, the loss's
 * tangent, tangent backward down the global block, then the meta block
 * ========================================================================================== */

void LM_META_FN(lm_net_hvp)(const lm_net *n, WS *ws, size_t slot, const REAL *theta_m,
                            const REAL *theta_g, const ROWS *r, const REAL *v_m, const REAL *v_g,
                            double weight, REAL *hv_m, REAL *hv_g)
{
    ws_check(n, ws, r);
    size_t B = r->n, nin = n->nin, E = n->E;
    if (B == 0 || (!hv_m && !hv_g)) return;
    int mlp = n->cfg.meta_kind == LM_NET_META_MLP;
    slot_view s = ws_slot(ws, slot);
    REAL *E_tan = WSP(ws, off_E_tan), *xg_tan = WSP(ws, off_xg_tan), *z_tan = WSP(ws, off_z_tan);
    REAL *dz = WSP(ws, off_dz), *dz_tan = WSP(ws, off_dz_tan);
    REAL *dxg = WSP(ws, off_dxg), *dxg_tan = WSP(ws, off_dxg_tan);
    REAL *dE = WSP(ws, off_dE), *dE_tan = WSP(ws, off_dE_tan);
    REAL *mtcache = WSP(ws, off_mtcache), *gtcache = WSP(ws, off_gtcache);
    REAL scale = (REAL)(weight / (double)B);

    /* tangent forward: E_tan from v_m; the global input's tangent is zero on the features,
     * v_g's rows on the categorical columns, E_tan on the embedding columns */
    if (mlp)
        LM_NN_FN(lm_mlp_forward_tan)(E_tan, mtcache, &n->meta, theta_m, v_m, r->meta, NULL,
                                     s.mcache, B);
    else if (v_m)
        rows_broadcast(E_tan, v_m, B, E);
    else
        vzero(E_tan, B * E);
    vzero(xg_tan, B * nin);
    if (v_g)
        for (size_t c = 0; c < n->ncat; c++)
            emb_gather(xg_tan + n->col_cat[c], nin, r->cat + c, n->ncat, v_g + n->cat_off[c],
                       n->cat_rows[c], n->cat_dim[c], B);
    LM_NN_FN(lm_cols_copy)(xg_tan + n->col_emb, nin, E_tan, E, B, E);
    LM_NN_FN(lm_mlp_forward_tan)(z_tan, gtcache, &n->global, theta_g, v_g, s.xg, xg_tan, s.gcache,
                                 B);
    emb_logit_add(n, z_tan, E_tan, B);

    /* the loss */
    loss_backward(n, dz, s.z, r->label, B, scale);
    loss_backward_tan(n, dz_tan, s.z, z_tan, B, scale);

    /* tangent backward of the global block: hv_g's MLP part, and dxg, dxg_tan for the tables
     * and the meta block */
    LM_NN_FN(lm_mlp_backward_tan)(dxg, dxg_tan, NULL, hv_g, WSP(ws, off_gwork), &n->global,
                                  theta_g, v_g, s.xg, xg_tan, s.gcache, gtcache, dz, dz_tan, B);
    if (hv_g)
        for (size_t c = 0; c < n->ncat; c++)
            emb_scatter_add(hv_g + n->cat_off[c], dxg_tan + n->col_cat[c], nin, r->cat + c,
                            n->ncat, n->cat_dim[c], B);
    if (!hv_m) return;
    LM_NN_FN(lm_cols_copy)(dE, E, dxg + n->col_emb, nin, B, E);
    LM_NN_FN(lm_cols_copy)(dE_tan, E, dxg_tan + n->col_emb, nin, B, E);
    if (n->cfg.emb_logit)
        for (size_t b = 0; b < B; b++) dE[b * E] += dz[b], dE_tan[b * E] += dz_tan[b];
    if (mlp)
        LM_NN_FN(lm_mlp_backward_tan)(NULL, NULL, NULL, hv_m, WSP(ws, off_mwork), &n->meta,
                                      theta_m, v_m, r->meta, NULL, s.mcache, mtcache, dE, dE_tan,
                                      B);
    else
        rows_sum_add(hv_m, dE_tan, B, E);
}

/* ============================================================================================
 * evaluation
 * ========================================================================================== */

double LM_META_FN(lm_net_predict)(const lm_net *n, WS *ws, const REAL *theta_m,
                                  const REAL *theta_g, const ROWS *r, REAL *z)
{
    double loss = LM_META_FN(lm_net_forward)(n, ws, 0, theta_m, theta_g, r, LM_DROPOUT_OFF, NULL);
    if (z && r->n) memcpy(z, ws_slot(ws, 0).z, r->n * sizeof *z);
    return loss;
}

double LM_META_FN(lm_net_predict_emb)(const lm_net *n, WS *ws, const REAL *emb,
                                      const REAL *theta_g, const ROWS *r, REAL *z)
{
    ws_check(n, ws, r);
    LM_ASSERT(emb && theta_g);
    if (r->n == 0) return 0;
    slot_view s = ws_slot(ws, 0);
    rows_broadcast(s.E, emb, r->n, n->E);
    double loss = global_forward(n, s, theta_g, r, LM_DROPOUT_OFF, NULL);
    if (z) memcpy(z, s.z, r->n * sizeof *z);
    return loss;
}

void LM_META_FN(lm_net_embed)(const lm_net *n, WS *ws, const REAL *theta_m, const REAL *meta,
                              size_t B, REAL *emb)
{
    LM_ASSERT(n && ws && theta_m && emb && B <= ws->lay.max_rows);
    if (B == 0) return;
    if (n->cfg.meta_kind == LM_NET_META_ID) {
        rows_broadcast(emb, theta_m, B, n->E);
        return;
    }
    LM_ASSERT(meta);
    LM_NN_FN(lm_mlp_forward)(emb, ws_slot(ws, 0).mcache, &n->meta, theta_m, meta, B,
                             LM_DROPOUT_OFF, NULL);
}
