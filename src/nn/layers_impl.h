/* layers_impl.h: the layer kernels, written once over REAL, LM_NN_FN, LM_NN_EXP and
 * LM_NN_LOG1P and instantiated by nn_f32.c and nn_f64.c (never include it elsewhere). The
 * declarations and contracts are in nn/nn_decl.h; the tangent rules are derived in docs/NN.md.
 *
 * These are the plain reference kernels: loops whose inner index walks contiguous memory.
 * Faster kernels, when they come, live beside these and are tested against them. */

/* ---- small vector helpers ------------------------------------------------------------------ */

static REAL vdot(const REAL *a, const REAL *b, size_t n)
{
    REAL s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += a * x */
static void vaxpy(REAL *y, REAL a, const REAL *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* y = m * x elementwise */
static void vmul(REAL *y, const REAL *m, const REAL *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = m[i] * x[i];
}

/* y = x * (ref > 0): the ReLU mask, read from the forward output. */
static void vmask_pos(REAL *y, const REAL *x, const REAL *ref, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = ref[i] > 0 ? x[i] : 0;
}

static REAL sigmoid(REAL z)
{
    if (z >= 0) return 1 / (1 + LM_NN_EXP(-z));
    REAL e = LM_NN_EXP(z);
    return e / (1 + e);
}

/* ============================================================================================
 * linear
 * ========================================================================================== */

void LM_NN_FN(lm_linear_forward)(REAL *y, const REAL *x, const REAL *w, const REAL *b, size_t B, size_t I,
                                 size_t O)
{
    // y: (B, O)  x: (B, I)  w: (O, I)  b: (O) or NULL
    LM_ASSERT(y && x && w);
    for (size_t r = 0; r < B; r++) {
        const REAL *xr = x + r * I;
        REAL *yr = y + r * O;
        for (size_t o = 0; o < O; o++) yr[o] = (b ? b[o] : 0) + vdot(xr, w + o * I, I);
    }
}

/* dw row o accumulates over the batch while it stays in cache (o outer, rows inner). */
void LM_NN_FN(lm_linear_backward)(REAL *dx, REAL *dw, REAL *db, const REAL *dy, const REAL *x, const REAL *w,
                                  size_t B, size_t I, size_t O)
{
    // dx: (B, I)  dw: (O, I)  db: (O)  dy: (B, O)  x: (B, I)  w: (O, I)
    LM_ASSERT(dy);
    if (dx) {
        LM_ASSERT(w);
        for (size_t r = 0; r < B; r++) {
            REAL *dxr = dx + r * I;
            const REAL *dyr = dy + r * O;
            for (size_t i = 0; i < I; i++) dxr[i] = 0;
            for (size_t o = 0; o < O; o++) vaxpy(dxr, dyr[o], w + o * I, I);
        }
    }
    if (dw) {
        LM_ASSERT(x);
        for (size_t o = 0; o < O; o++) {
            REAL *dwo = dw + o * I;
            for (size_t r = 0; r < B; r++) vaxpy(dwo, dy[r * O + o], x + r * I, I);
        }
    }
    if (db) {
        for (size_t r = 0; r < B; r++) {
            const REAL *dyr = dy + r * O;
            for (size_t o = 0; o < O; o++) db[o] += dyr[o];
        }
    }
}

void LM_NN_FN(lm_linear_forward_tan)(REAL *y_tan, const REAL *x, const REAL *x_tan, const REAL *w,
                                     const REAL *w_tan, const REAL *b_tan, size_t B, size_t I, size_t O)
{
    // y_tan: (B, O)  x, x_tan: (B, I)  w, w_tan: (O, I)  b_tan: (O)
    LM_ASSERT(y_tan);
    LM_ASSERT(!x_tan || w);
    LM_ASSERT(!w_tan || x);
    for (size_t r = 0; r < B; r++) {
        REAL *yr = y_tan + r * O;
        for (size_t o = 0; o < O; o++) {
            REAL s = b_tan ? b_tan[o] : 0;
            if (x_tan) s += vdot(x_tan + r * I, w + o * I, I);
            if (w_tan) s += vdot(x + r * I, w_tan + o * I, I);
            yr[o] = s;
        }
    }
}

void LM_NN_FN(lm_linear_backward_tan)(REAL *dx_tan, REAL *dw_tan, REAL *db_tan, const REAL *dy,
                                      const REAL *dy_tan, const REAL *x, const REAL *x_tan, const REAL *w,
                                      const REAL *w_tan, size_t B, size_t I, size_t O)
{
    // dx_tan: (B, I)  dw_tan: (O, I)  db_tan: (O)  dy, dy_tan: (B, O)  x, x_tan: (B, I)
    // w, w_tan: (O, I)
    LM_ASSERT(dy);
    if (dx_tan) {
        LM_ASSERT(!dy_tan || w);
        for (size_t r = 0; r < B; r++) {
            REAL *dxr = dx_tan + r * I;
            for (size_t i = 0; i < I; i++) dxr[i] = 0;
            if (dy_tan)
                for (size_t o = 0; o < O; o++) vaxpy(dxr, dy_tan[r * O + o], w + o * I, I);
            if (w_tan)
                for (size_t o = 0; o < O; o++) vaxpy(dxr, dy[r * O + o], w_tan + o * I, I);
        }
    }
    if (dw_tan) {
        LM_ASSERT(!dy_tan || x);
        for (size_t o = 0; o < O; o++) {
            REAL *dwo = dw_tan + o * I;
            for (size_t r = 0; r < B; r++) {
                if (dy_tan) vaxpy(dwo, dy_tan[r * O + o], x + r * I, I);
                if (x_tan) vaxpy(dwo, dy[r * O + o], x_tan + r * I, I);
            }
        }
    }
    if (db_tan && dy_tan) {
        for (size_t r = 0; r < B; r++) {
            const REAL *dyr = dy_tan + r * O;
            for (size_t o = 0; o < O; o++) db_tan[o] += dyr[o];
        }
    }
}

/* ============================================================================================
 * embedding
 * ========================================================================================== */

void LM_NN_FN(lm_embedding_forward)(REAL *out, const uint32_t *ids, const REAL *table, size_t B, size_t rows,
                                    size_t D)
{
    // out: (B, D)  ids: (B)  table: (rows, D)
    LM_ASSERT(out && ids && table);
    for (size_t r = 0; r < B; r++) {
        LM_ASSERT(ids[r] < rows);
        memcpy(out + r * D, table + (size_t)ids[r] * D, D * sizeof(REAL));
    }
}

void LM_NN_FN(lm_embedding_backward)(REAL *dtable, const REAL *dout, const uint32_t *ids, size_t B,
                                     size_t rows, size_t D)
{
    // dtable: (rows, D)  dout: (B, D)  ids: (B)
    LM_ASSERT(dtable && dout && ids);
    for (size_t r = 0; r < B; r++) {
        LM_ASSERT(ids[r] < rows);
        vaxpy(dtable + (size_t)ids[r] * D, 1, dout + r * D, D);
    }
}

void LM_NN_FN(lm_embedding_forward_tan)(REAL *out_tan, const uint32_t *ids, const REAL *table_tan, size_t B,
                                        size_t rows, size_t D)
{
    LM_NN_FN(lm_embedding_forward)(out_tan, ids, table_tan, B, rows, D);
}

void LM_NN_FN(lm_embedding_backward_tan)(REAL *dtable_tan, const REAL *dout_tan, const uint32_t *ids,
                                         size_t B, size_t rows, size_t D)
{
    LM_NN_FN(lm_embedding_backward)(dtable_tan, dout_tan, ids, B, rows, D);
}

/* ============================================================================================
 * relu
 * ========================================================================================== */

void LM_NN_FN(lm_relu_forward)(REAL *y, const REAL *x, size_t N)
{
    // y, x: (N)
    for (size_t i = 0; i < N; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

void LM_NN_FN(lm_relu_backward)(REAL *dx, const REAL *dy, const REAL *y, size_t N)
{
    // dx, dy, y: (N)
    vmask_pos(dx, dy, y, N);
}

void LM_NN_FN(lm_relu_forward_tan)(REAL *y_tan, const REAL *x_tan, const REAL *y, size_t N)
{
    vmask_pos(y_tan, x_tan, y, N);
}

void LM_NN_FN(lm_relu_backward_tan)(REAL *dx_tan, const REAL *dy_tan, const REAL *y, size_t N)
{
    vmask_pos(dx_tan, dy_tan, y, N);
}

/* ============================================================================================
 * dropout
 * ========================================================================================== */

void LM_NN_FN(lm_dropout_mask)(REAL *mask, size_t N, REAL p, lm_rng *rng)
{
    // mask: (N)
    LM_ASSERT(p >= 0 && p < 1);
    if (p == 0) {
        for (size_t i = 0; i < N; i++) mask[i] = 1;
        return;
    }
    LM_ASSERT(rng);
    REAL keep = 1 / (1 - p);
    for (size_t i = 0; i < N; i++) mask[i] = lm_rng_uniform(rng) < (double)p ? 0 : keep;
}

void LM_NN_FN(lm_dropout_forward)(REAL *y, const REAL *x, const REAL *mask, size_t N)
{
    // y, x, mask: (N)
    if (mask)
        vmul(y, mask, x, N);
    else if (y != x)
        memmove(y, x, N * sizeof(REAL));
}

void LM_NN_FN(lm_dropout_backward)(REAL *dx, const REAL *dy, const REAL *mask, size_t N)
{
    LM_NN_FN(lm_dropout_forward)(dx, dy, mask, N);
}

void LM_NN_FN(lm_dropout_forward_tan)(REAL *y_tan, const REAL *x_tan, const REAL *mask, size_t N)
{
    LM_NN_FN(lm_dropout_forward)(y_tan, x_tan, mask, N);
}

void LM_NN_FN(lm_dropout_backward_tan)(REAL *dx_tan, const REAL *dy_tan, const REAL *mask, size_t N)
{
    LM_NN_FN(lm_dropout_forward)(dx_tan, dy_tan, mask, N);
}

/* ============================================================================================
 * losses
 * ========================================================================================== */

void LM_NN_FN(lm_sigmoid_forward)(REAL *p, const REAL *z, size_t N)
{
    for (size_t i = 0; i < N; i++) p[i] = sigmoid(z[i]);
}

double LM_NN_FN(lm_bce_forward)(REAL *loss, const REAL *z, const REAL *y, size_t B, REAL scale)
{
    // loss: (B) or NULL  z, y: (B)
    double sum = 0;
    for (size_t r = 0; r < B; r++) {
        REAL zr = z[r];
        REAL l = (zr > 0 ? zr : 0) - zr * y[r] + LM_NN_LOG1P(LM_NN_EXP(zr > 0 ? -zr : zr));
        if (loss) loss[r] = l;
        sum += (double)l;
    }
    return (double)scale * sum;
}

void LM_NN_FN(lm_bce_backward)(REAL *dz, const REAL *z, const REAL *y, size_t B, REAL scale)
{
    for (size_t r = 0; r < B; r++) dz[r] = scale * (sigmoid(z[r]) - y[r]);
}

double LM_NN_FN(lm_bce_forward_tan)(const REAL *z, const REAL *z_tan, const REAL *y, size_t B, REAL scale)
{
    double sum = 0;
    for (size_t r = 0; r < B; r++) sum += (double)((sigmoid(z[r]) - y[r]) * z_tan[r]);
    return (double)scale * sum;
}

void LM_NN_FN(lm_bce_backward_tan)(REAL *dz_tan, const REAL *z, const REAL *z_tan, size_t B, REAL scale)
{
    for (size_t r = 0; r < B; r++) {
        REAL s = sigmoid(z[r]);
        dz_tan[r] = scale * s * (1 - s) * z_tan[r];
    }
}

double LM_NN_FN(lm_mse_forward)(REAL *loss, const REAL *z, const REAL *y, size_t B, REAL scale)
{
    double sum = 0;
    for (size_t r = 0; r < B; r++) {
        REAL d = z[r] - y[r];
        if (loss) loss[r] = d * d;
        sum += (double)(d * d);
    }
    return (double)scale * sum;
}

void LM_NN_FN(lm_mse_backward)(REAL *dz, const REAL *z, const REAL *y, size_t B, REAL scale)
{
    for (size_t r = 0; r < B; r++) dz[r] = 2 * scale * (z[r] - y[r]);
}

double LM_NN_FN(lm_mse_forward_tan)(const REAL *z, const REAL *z_tan, const REAL *y, size_t B, REAL scale)
{
    double sum = 0;
    for (size_t r = 0; r < B; r++) sum += (double)((z[r] - y[r]) * z_tan[r]);
    return 2.0 * (double)scale * sum;
}

void LM_NN_FN(lm_mse_backward_tan)(REAL *dz_tan, const REAL *z, const REAL *z_tan, size_t B, REAL scale)
{
    for (size_t r = 0; r < B; r++) dz_tan[r] = 2 * scale * z_tan[r];
}

/* ============================================================================================
 * column blocks
 * ========================================================================================== */

void LM_NN_FN(lm_cols_copy)(REAL *dst, size_t ld_dst, const REAL *src, size_t ld_src, size_t B, size_t W)
{
    // dst: (B, ld_dst)  src: (B, ld_src); W <= both leading dimensions
    LM_ASSERT(W <= ld_dst && W <= ld_src);
    for (size_t r = 0; r < B; r++) memcpy(dst + r * ld_dst, src + r * ld_src, W * sizeof(REAL));
}

void LM_NN_FN(lm_cols_add)(REAL *dst, size_t ld_dst, const REAL *src, size_t ld_src, size_t B, size_t W)
{
    LM_ASSERT(W <= ld_dst && W <= ld_src);
    for (size_t r = 0; r < B; r++) vaxpy(dst + r * ld_dst, 1, src + r * ld_src, W);
}
