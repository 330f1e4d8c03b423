/* mlp_impl.h: the MLP passes, written once over REAL and LM_NN_FN and instantiated by
 * nn_f32.c and nn_f64.c after layers_impl.h (never include it elsewhere). Layouts are
 * described with lm_mlp in nn/nn.h, contracts in nn/nn_decl.h.
 *
 * Each hidden layer l computes z_l = a_{l-1} W_l^T + b_l, h_l = relu(z_l), a_l = h_l * mask_l
 * (a_{-1} = x). Only a_l and mask_l are cached: the ReLU mask (h_l > 0) is read as (a_l > 0),
 * which differs only where mask_l = 0, and there the gradient is multiplied by 0 anyway. */

/* ---- views into the caches ----------------------------------------------------------------- */

static REAL *mlp_act(const lm_mlp *m, const REAL *cache, size_t B, size_t l)
{
    // a_l: (B, sizes[l+1])
    return (REAL *)cache + B * m->act_row_off[l];
}

static REAL *mlp_mask(const lm_mlp *m, const REAL *cache, size_t B, size_t l)
{
    // mask_l: (B, sizes[l+1]), or NULL without dropout
    return m->dropout > 0 ? (REAL *)cache + B * m->mask_row_off[l] : NULL;
}

static REAL *mlp_act_tan(const lm_mlp *m, const REAL *tan_cache, size_t B, size_t l)
{
    // a_l_tan: (B, sizes[l+1])
    return (REAL *)tan_cache + B * m->tan_row_off[l];
}

/* ---- init ----------------------------------------------------------------------------------- */

void LM_NN_FN(lm_mlp_params_init)(REAL *params, const lm_mlp *m, lm_rng *rng)
{
    // params: (nparams)
    LM_ASSERT(params && m && rng && m->nlayers >= 1);
    for (size_t l = 0; l < m->nlayers; l++) {
        size_t I = m->sizes[l], O = m->sizes[l + 1];
        /* Kaiming uniform: variance gain^2 / fan_in with gain^2 = 2 before a ReLU, 1 after
         * the last layer; U(-a, a) has variance a^2 / 3. */
        double bound = sqrt((l + 1 < m->nlayers ? 6.0 : 3.0) / (double)I);
        REAL *w = params + m->w_off[l];
        REAL *b = params + m->b_off[l];
        for (size_t k = 0; k < O * I; k++) w[k] = (REAL)((2.0 * lm_rng_uniform(rng) - 1.0) * bound);
        for (size_t o = 0; o < O; o++) b[o] = 0;
    }
}

/* ---- forward -------------------------------------------------------------------------------- */

void LM_NN_FN(lm_mlp_forward)(REAL *y, REAL *cache, const lm_mlp *m, const REAL *params,
                              const REAL *x, size_t B, int dropout_mode, lm_rng *rng)
{
    // y: (B, sizes[L])  cache: (B * cache_row)  params: (nparams)  x: (B, sizes[0])
    LM_ASSERT(y && m && params && x && m->nlayers >= 1);
    LM_ASSERT(dropout_mode == LM_DROPOUT_OFF || dropout_mode == LM_DROPOUT_SAMPLE ||
              dropout_mode == LM_DROPOUT_KEEP);
    size_t L = m->nlayers;
    LM_ASSERT(L == 1 || cache);
    const REAL *in = x;
    for (size_t l = 0; l < L; l++) {
        size_t I = m->sizes[l], O = m->sizes[l + 1];
        const REAL *w = params + m->w_off[l], *b = params + m->b_off[l];
        if (l + 1 == L) {
            LM_NN_FN(lm_linear_forward)(y, in, w, b, B, I, O);
            break;
        }
        REAL *a = mlp_act(m, cache, B, l);
        LM_NN_FN(lm_linear_forward)(a, in, w, b, B, I, O);
        LM_NN_FN(lm_relu_forward)(a, a, B * O);
        REAL *mask = mlp_mask(m, cache, B, l);
        if (mask) {
            if (dropout_mode == LM_DROPOUT_SAMPLE)
                LM_NN_FN(lm_dropout_mask)(mask, B * O, (REAL)m->dropout, rng);
            else if (dropout_mode == LM_DROPOUT_OFF)
                LM_NN_FN(lm_dropout_mask)(mask, B * O, 0, NULL); /* all 1: backward is uniform */
            if (dropout_mode != LM_DROPOUT_OFF) LM_NN_FN(lm_dropout_forward)(a, a, mask, B * O);
        }
        in = a;
    }
}

/* ---- backward ------------------------------------------------------------------------------- */

/* Walks the layers down. dz is the gradient w.r.t. layer l's pre-activation output; the
 * gradient w.r.t. its input goes to work buffer (l & 1), so it never overwrites dz, which is
 * the caller's dy or buffer ((l + 1) & 1). */
void LM_NN_FN(lm_mlp_backward)(REAL *dx, REAL *dparams, REAL *work, const lm_mlp *m,
                               const REAL *params, const REAL *x, const REAL *cache,
                               const REAL *dy, size_t B)
{
    // dx: (B, sizes[0]) or NULL  dparams: (nparams) or NULL  work: (2 * B * max_hidden)
    // dy: (B, sizes[L])
    LM_ASSERT(m && params && x && dy && m->nlayers >= 1);
    size_t L = m->nlayers;
    LM_ASSERT(L == 1 || (cache && work));
    REAL *buf[2] = {work, work ? work + B * m->max_hidden : NULL};
    const REAL *dz = dy;
    for (size_t l = L; l-- > 0;) {
        size_t I = m->sizes[l], O = m->sizes[l + 1];
        const REAL *in = l ? mlp_act(m, cache, B, l - 1) : x;
        REAL *din = l ? buf[l & 1] : dx;
        LM_NN_FN(lm_linear_backward)(din, dparams ? dparams + m->w_off[l] : NULL,
                                     dparams ? dparams + m->b_off[l] : NULL, dz, in,
                                     params + m->w_off[l], B, I, O);
        if (l == 0) break;
        /* Through the dropout and ReLU that produced `in`. */
        const REAL *mask = mlp_mask(m, cache, B, l - 1);
        if (mask) LM_NN_FN(lm_dropout_backward)(din, din, mask, B * I);
        LM_NN_FN(lm_relu_backward)(din, din, in, B * I);
        dz = din;
    }
}

/* ---- tangent forward ------------------------------------------------------------------------ */

void LM_NN_FN(lm_mlp_forward_tan)(REAL *y_tan, REAL *tan_cache, const lm_mlp *m,
                                  const REAL *params, const REAL *params_tan, const REAL *x,
                                  const REAL *x_tan, const REAL *cache, size_t B)
{
    // y_tan: (B, sizes[L])  tan_cache: (B * tan_cache_row)  params, params_tan: (nparams)
    // x, x_tan: (B, sizes[0])  cache: from lm_mlp_forward
    LM_ASSERT(y_tan && m && params && x && m->nlayers >= 1);
    size_t L = m->nlayers;
    LM_ASSERT(L == 1 || (cache && tan_cache));
    const REAL *in = x, *in_tan = x_tan;
    for (size_t l = 0; l < L; l++) {
        size_t I = m->sizes[l], O = m->sizes[l + 1];
        const REAL *w = params + m->w_off[l];
        const REAL *w_tan = params_tan ? params_tan + m->w_off[l] : NULL;
        const REAL *b_tan = params_tan ? params_tan + m->b_off[l] : NULL;
        REAL *out_tan = l + 1 == L ? y_tan : mlp_act_tan(m, tan_cache, B, l);
        LM_NN_FN(lm_linear_forward_tan)(out_tan, in, in_tan, w, w_tan, b_tan, B, I, O);
        if (l + 1 == L) break;
        const REAL *a = mlp_act(m, cache, B, l);
        LM_NN_FN(lm_relu_forward_tan)(out_tan, out_tan, a, B * O);
        const REAL *mask = mlp_mask(m, cache, B, l);
        if (mask) LM_NN_FN(lm_dropout_forward_tan)(out_tan, out_tan, mask, B * O);
        in = a;
        in_tan = out_tan;
    }
}

/* ---- tangent backward ----------------------------------------------------------------------- */

/* The first-order backward of lm_mlp_backward, with its tangent carried alongside in a second
 * pair of ping-pong buffers. ReLU and dropout are linear given their masks and the masks do
 * not move under a small tangent, so both pass dz_tan through the same masks. */
void LM_NN_FN(lm_mlp_backward_tan)(REAL *dx, REAL *dx_tan, REAL *dparams, REAL *dparams_tan,
                                   REAL *work, const lm_mlp *m, const REAL *params,
                                   const REAL *params_tan, const REAL *x, const REAL *x_tan,
                                   const REAL *cache, const REAL *tan_cache, const REAL *dy,
                                   const REAL *dy_tan, size_t B)
{
    // dx, dx_tan: (B, sizes[0]) or NULL  dparams, dparams_tan: (nparams) or NULL
    // work: (4 * B * max_hidden)  dy, dy_tan: (B, sizes[L])
    LM_ASSERT(m && params && x && dy && m->nlayers >= 1);
    size_t L = m->nlayers;
    LM_ASSERT(L == 1 || (cache && tan_cache && work));
    size_t n = B * m->max_hidden;
    REAL *g[2] = {work, work ? work + n : NULL};
    REAL *t[2] = {work ? work + 2 * n : NULL, work ? work + 3 * n : NULL};
    const REAL *dz = dy, *dz_tan = dy_tan;
    for (size_t l = L; l-- > 0;) {
        size_t I = m->sizes[l], O = m->sizes[l + 1];
        const REAL *in = l ? mlp_act(m, cache, B, l - 1) : x;
        const REAL *in_tan = l ? mlp_act_tan(m, tan_cache, B, l - 1) : x_tan;
        const REAL *w = params + m->w_off[l];
        const REAL *w_tan = params_tan ? params_tan + m->w_off[l] : NULL;
        REAL *din = l ? g[l & 1] : dx;
        REAL *din_tan = l ? t[l & 1] : dx_tan;
        LM_NN_FN(lm_linear_backward_tan)(din_tan, dparams_tan ? dparams_tan + m->w_off[l] : NULL,
                                         dparams_tan ? dparams_tan + m->b_off[l] : NULL, dz,
                                         dz_tan, in, in_tan, w, w_tan, B, I, O);
        LM_NN_FN(lm_linear_backward)(din, dparams ? dparams + m->w_off[l] : NULL,
                                     dparams ? dparams + m->b_off[l] : NULL, dz, in, w, B, I, O);
        if (l == 0) break;
        const REAL *mask = mlp_mask(m, cache, B, l - 1);
        if (mask) {
            LM_NN_FN(lm_dropout_backward)(din, din, mask, B * I);
            LM_NN_FN(lm_dropout_backward_tan)(din_tan, din_tan, mask, B * I);
        }
        LM_NN_FN(lm_relu_backward)(din, din, in, B * I);
        LM_NN_FN(lm_relu_backward_tan)(din_tan, din_tan, in, B * I);
        dz = din;
        dz_tan = din_tan;
    }
}
