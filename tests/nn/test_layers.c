/* test_layers.c: each layer's passes in double against central finite differences: backward
 * against differences of the forward, forward_tan against differences of the forward along
 * a tangent, backward_tan against differences of the backward along a tangent. Then float
 * against double on the same inputs, and the backward contract: parameter gradients are
 * added (+=), activation gradients set (=). */
#include "nn/check.h"
#include "nn/nn.h"

#define H 1e-6
#define ATOL 1e-8
#define RTOL 1e-6
#define F32_ATOL 1e-5
#define F32_RTOL 1e-4

static lm_rng rng;

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void check_f32(const char *name, const float *a, const double *ref, size_t n)
{
    double *a64 = dalloc(n);
    to_f64(a64, a, n);
    check_close(name, a64, ref, n, F32_ATOL, F32_RTOL);
    free(a64);
}

/* Exact equality: a pass that must SET its output, a copy. */
static void check_exact(const char *name, const double *a, const double *ref, size_t n)
{
    check_close(name, a, ref, n, 0, 0);
}

/* Equality up to the rounding of summing in another order: calling a backward twice must give
 * 2x (a backward that set instead of added would be off by 100%). */
static void check_twice(const char *name, const double *a, const double *ref, size_t n)
{
    check_close(name, a, ref, n, 1e-15, 1e-13);
}

/* ============================================================================================
 * linear
 * ========================================================================================== */

typedef struct lin_ctx {
    size_t B, I, O;
    double *x, *w, *b; // x: (B, I)  w: (O, I)  b: (O)
    double *g;         // g: (B, O) fixed projection: loss = sum g * y
    double *dy;        // dy: (B, O) the upstream gradient of the backward as a function
    double *y;         // y: (B, O) scratch
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    lm_linear_forward_f64(c->y, c->x, c->w, c->b, c->B, c->I, c->O);
    return dot(c->g, c->y, c->B * c->O);
}

static void lin_fwd(double *out, void *p)
{
    lin_ctx *c = p;
    lm_linear_forward_f64(out, c->x, c->w, c->b, c->B, c->I, c->O);
}

/* out = [dx | dw | db] of the backward at (x, w, dy). */
static void lin_bwd(double *out, void *p)
{
    lin_ctx *c = p;
    size_t nx = c->B * c->I, nw = c->O * c->I;
    fill_value(out + nx, nw + c->O, 0);
    lm_linear_backward_f64(out, out + nx, out + nx + nw, c->dy, c->x, c->w, c->B, c->I, c->O);
}

static void test_linear(void)
{
    lin_ctx c = {.B = 4, .I = 5, .O = 3};
    size_t B = c.B, I = c.I, O = c.O, nx = B * I, nw = O * I, nout = nx + nw + O;
    c.x = dalloc(nx), c.w = dalloc(nw), c.b = dalloc(O), c.g = dalloc(B * O);
    c.y = dalloc(B * O);
    fill_uniform(c.x, nx, &rng, -1, 1);
    fill_uniform(c.w, nw, &rng, -1, 1);
    fill_uniform(c.b, O, &rng, -1, 1);
    fill_uniform(c.g, B * O, &rng, -1, 1);
    c.dy = c.g;

    /* forward against the definition, and without bias */
    double *y = dalloc(B * O), *ref = dalloc(nout), *y0 = dalloc(B * O);
    lm_linear_forward_f64(y, c.x, c.w, c.b, B, I, O);
    lm_linear_forward_f64(y0, c.x, c.w, NULL, B, I, O);
    for (size_t r = 0; r < B; r++)
        for (size_t o = 0; o < O; o++) ref[r * O + o] = dot(c.x + r * I, c.w + o * I, I) + c.b[o];
    check_close("linear forward", y, ref, B * O, 1e-14, 1e-14);
    for (size_t r = 0; r < B; r++)
        for (size_t o = 0; o < O; o++) ref[r * O + o] = y[r * O + o] - c.b[o];
    check_close("linear forward, no bias", y0, ref, B * O, 1e-14, 1e-14);

    /* backward against FD of the loss */
    double *dx = dalloc(nx), *dw = dalloc(nw), *db = dalloc(O);
    lm_linear_backward_f64(dx, dw, db, c.g, c.x, c.w, B, I, O);
    fd_gradient(ref, c.x, nx, lin_loss, &c, H);
    check_close("linear backward dx vs FD", dx, ref, nx, ATOL, RTOL);
    fd_gradient(ref, c.w, nw, lin_loss, &c, H);
    check_close("linear backward dw vs FD", dw, ref, nw, ATOL, RTOL);
    fd_gradient(ref, c.b, O, lin_loss, &c, H);
    check_close("linear backward db vs FD", db, ref, O, ATOL, RTOL);

    /* forward_tan against FD of the forward, with all tangents and with some NULL */
    double *x_tan = dalloc(nx), *w_tan = dalloc(nw), *b_tan = dalloc(O), *dy_tan = dalloc(B * O);
    fill_uniform(x_tan, nx, &rng, -1, 1);
    fill_uniform(w_tan, nw, &rng, -1, 1);
    fill_uniform(b_tan, O, &rng, -1, 1);
    fill_uniform(dy_tan, B * O, &rng, -1, 1);
    double *y_tan = dalloc(B * O);
    fd_var all[3] = {{c.x, x_tan, nx}, {c.w, w_tan, nw}, {c.b, b_tan, O}};
    lm_linear_forward_tan_f64(y_tan, c.x, x_tan, c.w, w_tan, b_tan, B, I, O);
    fd_directional(ref, B * O, all, 3, lin_fwd, &c, H);
    check_close("linear forward_tan vs FD", y_tan, ref, B * O, ATOL, RTOL);
    lm_linear_forward_tan_f64(y_tan, c.x, x_tan, c.w, NULL, NULL, B, I, O);
    fd_directional(ref, B * O, all, 1, lin_fwd, &c, H);
    check_close("linear forward_tan, input tangent only", y_tan, ref, B * O, ATOL, RTOL);
    lm_linear_forward_tan_f64(y_tan, c.x, NULL, c.w, w_tan, b_tan, B, I, O);
    fd_directional(ref, B * O, all + 1, 2, lin_fwd, &c, H);
    check_close("linear forward_tan, parameter tangent only", y_tan, ref, B * O, ATOL, RTOL);

    /* backward_tan against FD of the backward along (x_tan, w_tan, dy_tan) */
    double *out_tan = dalloc(nout);
    fd_var bvars[3] = {{c.x, x_tan, nx}, {c.w, w_tan, nw}, {c.dy, dy_tan, B * O}};
    lm_linear_backward_tan_f64(out_tan, out_tan + nx, out_tan + nx + nw, c.dy, dy_tan, c.x, x_tan, c.w, w_tan,
                               B, I, O);
    fd_directional(ref, nout, bvars, 3, lin_bwd, &c, H);
    check_close("linear backward_tan [dx|dw|db] vs FD", out_tan, ref, nout, ATOL, RTOL);
    /* only dy moves (a loss tangent through a fixed layer) */
    fill_value(out_tan, nout, 0);
    lm_linear_backward_tan_f64(out_tan, out_tan + nx, out_tan + nx + nw, c.dy, dy_tan, c.x, NULL, c.w, NULL,
                               B, I, O);
    fd_directional(ref, nout, bvars + 2, 1, lin_bwd, &c, H);
    check_close("linear backward_tan, dy tangent only", out_tan, ref, nout, ATOL, RTOL);
    /* only x and w move, dy fixed */
    fill_value(out_tan, nout, 0);
    lm_linear_backward_tan_f64(out_tan, out_tan + nx, out_tan + nx + nw, c.dy, NULL, c.x, x_tan, c.w, w_tan,
                               B, I, O);
    fd_directional(ref, nout, bvars, 2, lin_bwd, &c, H);
    check_close("linear backward_tan, dy_tan NULL", out_tan, ref, nout, ATOL, RTOL);

    /* contract: dx set (pre-filled with NaN), dw/db added (twice gives 2x), NULL skips */
    double *dx2 = dalloc(nx), *dw2 = dalloc(nw), *db2 = dalloc(O);
    fill_value(dx2, nx, NAN);
    lm_linear_backward_f64(dx2, dw2, db2, c.g, c.x, c.w, B, I, O);
    lm_linear_backward_f64(dx2, dw2, db2, c.g, c.x, c.w, B, I, O);
    check_exact("linear backward sets dx", dx2, dx, nx);
    scale_into(ref, dw, nw, 2);
    check_twice("linear backward adds into dw (2 calls = 2x)", dw2, ref, nw);
    scale_into(ref, db, O, 2);
    check_twice("linear backward adds into db (2 calls = 2x)", db2, ref, O);
    lm_linear_backward_f64(NULL, dw2, NULL, c.g, c.x, c.w, B, I, O);
    scale_into(ref, dw, nw, 3);
    check_twice("linear backward with dx, db NULL", dw2, ref, nw);

    double *t2 = dalloc(nout), *t1 = dalloc(nout);
    lm_linear_backward_tan_f64(t1, t1 + nx, t1 + nx + nw, c.dy, dy_tan, c.x, x_tan, c.w, w_tan, B, I, O);
    fill_value(t2, nx, NAN);
    for (int k = 0; k < 2; k++)
        lm_linear_backward_tan_f64(t2, t2 + nx, t2 + nx + nw, c.dy, dy_tan, c.x, x_tan, c.w, w_tan, B, I, O);
    check_exact("linear backward_tan sets dx_tan", t2, t1, nx);
    scale_into(ref, t1 + nx, nw + O, 2);
    check_twice("linear backward_tan adds into dw_tan, db_tan", t2 + nx, ref, nw + O);

    free(c.x), free(c.w), free(c.b), free(c.g), free(c.y), free(y), free(y0), free(ref);
    free(dx), free(dw), free(db), free(x_tan), free(w_tan), free(b_tan), free(dy_tan);
    free(y_tan), free(out_tan), free(dx2), free(dw2), free(db2), free(t1), free(t2);
}

/* ============================================================================================
 * embedding
 * ========================================================================================== */

typedef struct emb_ctx {
    size_t B, rows, D;
    const uint32_t *ids;
    double *table; // table: (rows, D)
    double *g;     // g: (B, D) projection / upstream gradient
    double *out;   // out: (B, D) scratch
} emb_ctx;

static double emb_loss(void *p)
{
    emb_ctx *c = p;
    lm_embedding_forward_f64(c->out, c->ids, c->table, c->B, c->rows, c->D);
    return dot(c->g, c->out, c->B * c->D);
}

static void emb_fwd(double *out, void *p)
{
    emb_ctx *c = p;
    lm_embedding_forward_f64(out, c->ids, c->table, c->B, c->rows, c->D);
}

static void emb_bwd(double *out, void *p)
{
    emb_ctx *c = p;
    fill_value(out, c->rows * c->D, 0);
    lm_embedding_backward_f64(out, c->g, c->ids, c->B, c->rows, c->D);
}

static void test_embedding(void)
{
    static const uint32_t ids[8] = {0, 2, 2, 5, 1, 2, 0, 4}; /* repeats; row 3 unused */
    emb_ctx c = {.B = 8, .rows = 6, .D = 3, .ids = ids};
    size_t nt = c.rows * c.D, no = c.B * c.D;
    c.table = dalloc(nt), c.g = dalloc(no), c.out = dalloc(no);
    fill_uniform(c.table, nt, &rng, -1, 1);
    fill_uniform(c.g, no, &rng, -1, 1);
    double *out = dalloc(no), *ref = dalloc(no > nt ? no : nt), *dt = dalloc(nt), *dt2 = dalloc(nt);

    lm_embedding_forward_f64(out, ids, c.table, c.B, c.rows, c.D);
    for (size_t r = 0; r < c.B; r++)
        for (size_t j = 0; j < c.D; j++) ref[r * c.D + j] = c.table[ids[r] * c.D + j];
    check_exact("embedding forward", out, ref, no);

    lm_embedding_backward_f64(dt, c.g, ids, c.B, c.rows, c.D);
    fd_gradient(ref, c.table, nt, emb_loss, &c, H);
    check_close("embedding backward dtable vs FD (repeated ids)", dt, ref, nt, ATOL, RTOL);

    double *t_tan = dalloc(nt), *g_tan = dalloc(no), *o_tan = dalloc(no), *dt_tan = dalloc(nt);
    fill_uniform(t_tan, nt, &rng, -1, 1);
    fill_uniform(g_tan, no, &rng, -1, 1);
    lm_embedding_forward_tan_f64(o_tan, ids, t_tan, c.B, c.rows, c.D);
    fd_var tv = {c.table, t_tan, nt};
    fd_directional(ref, no, &tv, 1, emb_fwd, &c, H);
    check_close("embedding forward_tan vs FD", o_tan, ref, no, ATOL, RTOL);
    lm_embedding_backward_tan_f64(dt_tan, g_tan, ids, c.B, c.rows, c.D);
    fd_var gv = {c.g, g_tan, no};
    fd_directional(ref, nt, &gv, 1, emb_bwd, &c, H);
    check_close("embedding backward_tan vs FD", dt_tan, ref, nt, ATOL, RTOL);

    lm_embedding_backward_f64(dt2, c.g, ids, c.B, c.rows, c.D);
    lm_embedding_backward_f64(dt2, c.g, ids, c.B, c.rows, c.D);
    scale_into(ref, dt, nt, 2);
    check_twice("embedding backward adds (2 calls = 2x)", dt2, ref, nt);

    free(c.table), free(c.g), free(c.out), free(out), free(ref), free(dt), free(dt2);
    free(t_tan), free(g_tan), free(o_tan), free(dt_tan);
}

/* ============================================================================================
 * relu
 * ========================================================================================== */

typedef struct act_ctx {
    size_t N;
    double *x;    // x: (N)
    double *g;    // g: (N) projection / upstream gradient
    double *mask; // mask: (N) dropout mask, or NULL
    double *y;    // y: (N) scratch
} act_ctx;

static double relu_loss(void *p)
{
    act_ctx *c = p;
    lm_relu_forward_f64(c->y, c->x, c->N);
    return dot(c->g, c->y, c->N);
}

static void relu_fwd(double *out, void *p)
{
    act_ctx *c = p;
    lm_relu_forward_f64(out, c->x, c->N);
}

static void relu_bwd(double *out, void *p)
{
    act_ctx *c = p;
    lm_relu_forward_f64(c->y, c->x, c->N);
    lm_relu_backward_f64(out, c->g, c->y, c->N);
}

static void test_relu(void)
{
    act_ctx c = {.N = 40};
    size_t N = c.N;
    c.x = dalloc(N), c.g = dalloc(N), c.y = dalloc(N);
    fill_uniform(c.x, N, &rng, -1, 1);
    for (size_t i = 0; i < N; i++) /* keep away from the kink: FD must not cross it */
        if (fabs(c.x[i]) < 0.05) c.x[i] += c.x[i] < 0 ? -0.05 : 0.05;
    fill_uniform(c.g, N, &rng, -1, 1);
    double *y = dalloc(N), *dx = dalloc(N), *ref = dalloc(N), *x_tan = dalloc(N);
    double *g_tan = dalloc(N), *t = dalloc(N);
    fill_uniform(x_tan, N, &rng, -1, 1);
    fill_uniform(g_tan, N, &rng, -1, 1);

    lm_relu_forward_f64(y, c.x, N);
    for (size_t i = 0; i < N; i++) ref[i] = c.x[i] > 0 ? c.x[i] : 0;
    check_exact("relu forward", y, ref, N);
    lm_relu_backward_f64(dx, c.g, y, N);
    fd_gradient(ref, c.x, N, relu_loss, &c, H);
    check_close("relu backward vs FD", dx, ref, N, ATOL, RTOL);

    lm_relu_forward_tan_f64(t, x_tan, y, N);
    fd_var xv = {c.x, x_tan, N};
    fd_directional(ref, N, &xv, 1, relu_fwd, &c, H);
    check_close("relu forward_tan vs FD", t, ref, N, ATOL, RTOL);
    lm_relu_backward_tan_f64(t, g_tan, y, N);
    fd_var bv[2] = {{c.x, x_tan, N}, {c.g, g_tan, N}};
    fd_directional(ref, N, bv, 2, relu_bwd, &c, H);
    check_close("relu backward_tan vs FD", t, ref, N, ATOL, RTOL);

    memcpy(t, c.x, N * sizeof *t);
    lm_relu_forward_f64(t, t, N);
    check_exact("relu forward in place", t, y, N);

    free(c.x), free(c.g), free(c.y), free(y), free(dx), free(ref), free(x_tan), free(g_tan);
    free(t);
}

/* ============================================================================================
 * dropout
 * ========================================================================================== */

static double drop_loss(void *p)
{
    act_ctx *c = p;
    lm_dropout_forward_f64(c->y, c->x, c->mask, c->N);
    return dot(c->g, c->y, c->N);
}

static void drop_fwd(double *out, void *p)
{
    act_ctx *c = p;
    lm_dropout_forward_f64(out, c->x, c->mask, c->N);
}

static void drop_bwd(double *out, void *p)
{
    act_ctx *c = p;
    lm_dropout_backward_f64(out, c->g, c->mask, c->N);
}

static void test_dropout(void)
{
    /* the mask: values, rate, determinism, p = 0 */
    size_t M = 20000;
    double p = 0.3;
    double *mask = dalloc(M), *mask2 = dalloc(M);
    float *mask32 = falloc(M);
    lm_rng r1, r2, r3;
    lm_rng_seed(&r1, 7);
    lm_rng_seed(&r2, 7);
    lm_rng_seed(&r3, 7);
    lm_dropout_mask_f64(mask, M, p, &r1);
    lm_dropout_mask_f64(mask2, M, p, &r2);
    lm_dropout_mask_f32(mask32, M, (float)p, &r3);
    size_t zeros = 0, bad = 0, diff32 = 0;
    double keep = 1 / (1 - p);
    for (size_t i = 0; i < M; i++) {
        if (mask[i] == 0)
            zeros++;
        else if (mask[i] != keep)
            bad++;
        if ((mask[i] == 0) != (mask32[i] == 0)) diff32++;
    }
    check_true(bad == 0, "dropout mask values are 0 or 1/(1-p) (%zu others)", bad);
    check_true(fabs((double)zeros / (double)M - p) < 0.015, "dropout rate %.4f for p = %.2f",
               (double)zeros / (double)M, p);
    check_exact("dropout mask is deterministic for a seed", mask2, mask, M);
    check_true(diff32 == 0, "dropout mask f32 drops the same elements as f64 (%zu differ)", diff32);
    lm_rng before = r1;
    lm_dropout_mask_f64(mask, 100, 0, &r1);
    size_t ones = 0;
    for (size_t i = 0; i < 100; i++) ones += mask[i] == 1;
    check_true(ones == 100 && memcmp(&before, &r1, sizeof before) == 0,
               "dropout p = 0 gives ones and draws nothing");
    free(mask), free(mask2), free(mask32);

    /* the passes with a fixed mask */
    act_ctx c = {.N = 30};
    size_t N = c.N;
    c.x = dalloc(N), c.g = dalloc(N), c.y = dalloc(N), c.mask = dalloc(N);
    fill_uniform(c.x, N, &rng, -1, 1);
    fill_uniform(c.g, N, &rng, -1, 1);
    lm_dropout_mask_f64(c.mask, N, 0.5, &rng);
    double *dx = dalloc(N), *ref = dalloc(N), *t = dalloc(N), *x_tan = dalloc(N);
    double *g_tan = dalloc(N);
    fill_uniform(x_tan, N, &rng, -1, 1);
    fill_uniform(g_tan, N, &rng, -1, 1);
    lm_dropout_backward_f64(dx, c.g, c.mask, N);
    fd_gradient(ref, c.x, N, drop_loss, &c, H);
    check_close("dropout backward vs FD (fixed mask)", dx, ref, N, ATOL, RTOL);
    lm_dropout_forward_tan_f64(t, x_tan, c.mask, N);
    fd_var xv = {c.x, x_tan, N};
    fd_directional(ref, N, &xv, 1, drop_fwd, &c, H);
    check_close("dropout forward_tan vs FD", t, ref, N, ATOL, RTOL);
    lm_dropout_backward_tan_f64(t, g_tan, c.mask, N);
    fd_var gv = {c.g, g_tan, N};
    fd_directional(ref, N, &gv, 1, drop_bwd, &c, H);
    check_close("dropout backward_tan vs FD", t, ref, N, ATOL, RTOL);
    lm_dropout_forward_f64(t, c.x, NULL, N);
    check_exact("dropout forward at evaluation (mask NULL) is the identity", t, c.x, N);

    free(c.x), free(c.g), free(c.y), free(c.mask), free(dx), free(ref), free(t), free(x_tan);
    free(g_tan);
}

/* ============================================================================================
 * losses
 * ========================================================================================== */

typedef double (*loss_fwd_fn)(double *loss, const double *z, const double *y, size_t B, double scale);
typedef void (*loss_bwd_fn)(double *dz, const double *z, const double *y, size_t B, double scale);

typedef struct loss_ctx {
    size_t B;
    double *z, *y; // z, y: (B)
    double scale;
    loss_fwd_fn fwd;
    loss_bwd_fn bwd;
} loss_ctx;

static double loss_value(void *p)
{
    loss_ctx *c = p;
    return c->fwd(NULL, c->z, c->y, c->B, c->scale);
}

static void loss_value_vec(double *out, void *p)
{
    out[0] = loss_value(p);
}

static void loss_grad(double *out, void *p)
{
    loss_ctx *c = p;
    c->bwd(out, c->z, c->y, c->B, c->scale);
}

/* The same checks for BCE and MSE: backward, forward_tan, backward_tan against FD. */
static void check_loss_passes(const char *name, loss_ctx *c,
                              double (*fwd_tan)(const double *, const double *, const double *, size_t,
                                                double),
                              void (*bwd_tan)(double *, const double *, const double *, size_t, double))
{
    size_t B = c->B;
    char label[96];
    double *dz = dalloc(B), *ref = dalloc(B), *z_tan = dalloc(B), *t = dalloc(B);
    fill_uniform(z_tan, B, &rng, -1, 1);
    c->bwd(dz, c->z, c->y, B, c->scale);
    fd_gradient(ref, c->z, B, loss_value, c, H);
    snprintf(label, sizeof label, "%s backward vs FD", name);
    check_close(label, dz, ref, B, ATOL, RTOL);
    double lt = fwd_tan(c->z, z_tan, c->y, B, c->scale);
    fd_var zv = {c->z, z_tan, B};
    fd_directional(ref, 1, &zv, 1, loss_value_vec, c, H);
    snprintf(label, sizeof label, "%s forward_tan vs FD", name);
    check_close(label, &lt, ref, 1, ATOL, RTOL);
    bwd_tan(t, c->z, z_tan, B, c->scale);
    fd_directional(ref, B, &zv, 1, loss_grad, c, H);
    snprintf(label, sizeof label, "%s backward_tan vs FD", name);
    check_close(label, t, ref, B, ATOL, RTOL);
    free(dz), free(ref), free(z_tan), free(t);
}

static void test_losses(void)
{
    size_t B = 9;
    double *z = dalloc(B), *y = dalloc(B), *l = dalloc(B), *ref = dalloc(B);
    fill_uniform(z, B, &rng, -4, 4);
    for (size_t r = 0; r < B; r++) y[r] = r % 3 == 0 ? 0 : r % 3 == 1 ? 1 : 0.3; /* soft too */

    /* sigmoid and BCE against the naive formulas where those are accurate */
    double *s = dalloc(B);
    lm_sigmoid_forward_f64(s, z, B);
    for (size_t r = 0; r < B; r++) ref[r] = 1 / (1 + exp(-z[r]));
    check_close("sigmoid", s, ref, B, 1e-15, 1e-14);
    double sum = lm_bce_forward_f64(l, z, y, B, 1.0),
           mean = lm_bce_forward_f64(NULL, z, y, B, 1.0 / (double)B);
    for (size_t r = 0; r < B; r++) ref[r] = -y[r] * log(s[r]) - (1 - y[r]) * log(1 - s[r]);
    check_close("bce per-example loss vs -y log s - (1-y) log(1-s)", l, ref, B, 1e-13, 1e-12);
    double total = 0;
    for (size_t r = 0; r < B; r++) total += ref[r];
    check_close("bce scale 1 = sum", &sum, &total, 1, 1e-13, 1e-12);
    double bm = mean * (double)B;
    check_close("bce scale 1/B = mean", &bm, &total, 1, 1e-13, 1e-12);

    /* extremes: no overflow, exact limits, in both precisions */
    double ze[5] = {-800, -50, 0, 50, 800}, ye[5] = {0, 1, 1, 0, 1}, le[5], de[5];
    double want[5] = {0, 50, log(2.0), 50, 0}, dwant[5] = {0, -1, -0.5, 1, 0};
    float ze32[5], ye32[5], le32[5], de32[5];
    lm_bce_forward_f64(le, ze, ye, 5, 1.0);
    lm_bce_backward_f64(de, ze, ye, 5, 1.0);
    check_close("bce extreme logits f64 loss", le, want, 5, 1e-12, 1e-12);
    check_close("bce extreme logits f64 dz", de, dwant, 5, 1e-12, 1e-12);
    to_f32(ze32, ze, 5), to_f32(ye32, ye, 5);
    lm_bce_forward_f32(le32, ze32, ye32, 5, 1.0f);
    lm_bce_backward_f32(de32, ze32, ye32, 5, 1.0f);
    check_f32("bce extreme logits f32 loss", le32, want, 5);
    check_f32("bce extreme logits f32 dz", de32, dwant, 5);

    loss_ctx c = {.B = B,
                  .z = z,
                  .y = y,
                  .scale = 1.0 / (double)B,
                  .fwd = lm_bce_forward_f64,
                  .bwd = lm_bce_backward_f64};
    check_loss_passes("bce (mean)", &c, lm_bce_forward_tan_f64, lm_bce_backward_tan_f64);
    c.scale = 1.0;
    check_loss_passes("bce (sum)", &c, lm_bce_forward_tan_f64, lm_bce_backward_tan_f64);

    /* MSE */
    fill_uniform(y, B, &rng, -2, 2);
    double msum = lm_mse_forward_f64(l, z, y, B, 1.0);
    total = 0;
    for (size_t r = 0; r < B; r++) total += ref[r] = (z[r] - y[r]) * (z[r] - y[r]);
    check_close("mse per-example loss", l, ref, B, 1e-14, 1e-14);
    check_close("mse scale 1 = sum", &msum, &total, 1, 1e-13, 1e-13);
    c = (loss_ctx){.B = B,
                   .z = z,
                   .y = y,
                   .scale = 1.0 / (double)B,
                   .fwd = lm_mse_forward_f64,
                   .bwd = lm_mse_backward_f64};
    check_loss_passes("mse (mean)", &c, lm_mse_forward_tan_f64, lm_mse_backward_tan_f64);

    free(z), free(y), free(l), free(ref), free(s);
}

/* ============================================================================================
 * column blocks
 * ========================================================================================== */

static void test_cols(void)
{
    size_t B = 3, W[3] = {2, 3, 1}, I = 6;
    double *parts[3], *x = dalloc(B * I), *back = dalloc(B * 3), *ref = dalloc(B * I);
    size_t off = 0;
    for (int k = 0; k < 3; k++) {
        parts[k] = dalloc(B * W[k]);
        fill_uniform(parts[k], B * W[k], &rng, -1, 1);
        lm_cols_copy_f64(x + off, I, parts[k], W[k], B, W[k]);
        for (size_t r = 0; r < B; r++)
            for (size_t j = 0; j < W[k]; j++) ref[r * I + off + j] = parts[k][r * W[k] + j];
        off += W[k];
    }
    check_exact("cols_copy concatenates", x, ref, B * I);
    lm_cols_copy_f64(back, 3, x + 2, I, B, 3);
    check_exact("cols_copy splits", back, parts[1], B * 3);
    lm_cols_add_f64(back, 3, x + 2, I, B, 3);
    scale_into(ref, parts[1], B * 3, 2);
    check_exact("cols_add adds", back, ref, B * 3);
    for (int k = 0; k < 3; k++) free(parts[k]);
    free(x), free(back), free(ref);
}

/* ============================================================================================
 * float against double
 * ========================================================================================== */

static void test_f32_vs_f64(void)
{
    size_t B = 16, I = 33, O = 17, nx = B * I, nw = O * I, ny = B * O;
    double *x = dalloc(nx), *w = dalloc(nw), *b = dalloc(O), *dy = dalloc(ny);
    double *xt = dalloc(nx), *wt = dalloc(nw), *bt = dalloc(O), *dyt = dalloc(ny);
    fill_uniform(x, nx, &rng, -1, 1);
    fill_uniform(w, nw, &rng, -0.3, 0.3);
    fill_uniform(b, O, &rng, -0.3, 0.3);
    fill_uniform(dy, ny, &rng, -1, 1);
    fill_uniform(xt, nx, &rng, -1, 1);
    fill_uniform(wt, nw, &rng, -0.3, 0.3);
    fill_uniform(bt, O, &rng, -0.3, 0.3);
    fill_uniform(dyt, ny, &rng, -1, 1);
    float *x32 = falloc(nx), *w32 = falloc(nw), *b32 = falloc(O), *dy32 = falloc(ny);
    float *xt32 = falloc(nx), *wt32 = falloc(nw), *bt32 = falloc(O), *dyt32 = falloc(ny);
    to_f32(x32, x, nx), to_f32(w32, w, nw), to_f32(b32, b, O), to_f32(dy32, dy, ny);
    to_f32(xt32, xt, nx), to_f32(wt32, wt, nw), to_f32(bt32, bt, O), to_f32(dyt32, dyt, ny);

    /* reference inputs are the float values widened, so only arithmetic differs */
    to_f64(x, x32, nx), to_f64(w, w32, nw), to_f64(b, b32, O), to_f64(dy, dy32, ny);
    to_f64(xt, xt32, nx), to_f64(wt, wt32, nw), to_f64(bt, bt32, O), to_f64(dyt, dyt32, ny);

    double *y = dalloc(ny), *dx = dalloc(nx), *dw = dalloc(nw), *db = dalloc(O);
    float *y32 = falloc(ny), *dx32 = falloc(nx), *dw32 = falloc(nw), *db32 = falloc(O);
    lm_linear_forward_f64(y, x, w, b, B, I, O);
    lm_linear_forward_f32(y32, x32, w32, b32, B, I, O);
    check_f32("f32 vs f64: linear forward", y32, y, ny);
    lm_linear_backward_f64(dx, dw, db, dy, x, w, B, I, O);
    lm_linear_backward_f32(dx32, dw32, db32, dy32, x32, w32, B, I, O);
    check_f32("f32 vs f64: linear backward dx", dx32, dx, nx);
    check_f32("f32 vs f64: linear backward dw", dw32, dw, nw);
    check_f32("f32 vs f64: linear backward db", db32, db, O);
    lm_linear_forward_tan_f64(y, x, xt, w, wt, bt, B, I, O);
    lm_linear_forward_tan_f32(y32, x32, xt32, w32, wt32, bt32, B, I, O);
    check_f32("f32 vs f64: linear forward_tan", y32, y, ny);
    fill_value(dw, nw, 0), fill_value(db, O, 0);
    memset(dw32, 0, nw * sizeof *dw32), memset(db32, 0, O * sizeof *db32);
    lm_linear_backward_tan_f64(dx, dw, db, dy, dyt, x, xt, w, wt, B, I, O);
    lm_linear_backward_tan_f32(dx32, dw32, db32, dy32, dyt32, x32, xt32, w32, wt32, B, I, O);
    check_f32("f32 vs f64: linear backward_tan dx_tan", dx32, dx, nx);
    check_f32("f32 vs f64: linear backward_tan dw_tan", dw32, dw, nw);
    check_f32("f32 vs f64: linear backward_tan db_tan", db32, db, O);

    /* losses on the first column of y as logits */
    double *z = dalloc(B), *lab = dalloc(B), *dz = dalloc(B), *dzt = dalloc(B);
    float *z32 = falloc(B), *lab32 = falloc(B), *dz32 = falloc(B), *dzt32 = falloc(B);
    for (size_t r = 0; r < B; r++) z32[r] = 3 * x32[r * I], lab32[r] = (float)(r & 1);
    to_f64(z, z32, B), to_f64(lab, lab32, B);
    double l64 = lm_bce_forward_f64(NULL, z, lab, B, 1.0 / (double)B);
    double l32 = lm_bce_forward_f32(NULL, z32, lab32, B, 1.0f / (float)B);
    check_close("f32 vs f64: bce forward", &l32, &l64, 1, F32_ATOL, F32_RTOL);
    lm_bce_backward_f64(dz, z, lab, B, 1.0 / (double)B);
    lm_bce_backward_f32(dz32, z32, lab32, B, 1.0f / (float)B);
    check_f32("f32 vs f64: bce backward", dz32, dz, B);
    lm_bce_backward_tan_f64(dzt, z, xt, B, 1.0 / (double)B);
    lm_bce_backward_tan_f32(dzt32, z32, xt32, B, 1.0f / (float)B);
    check_f32("f32 vs f64: bce backward_tan", dzt32, dzt, B);

    free(x), free(w), free(b), free(dy), free(xt), free(wt), free(bt), free(dyt);
    free(x32), free(w32), free(b32), free(dy32), free(xt32), free(wt32), free(bt32), free(dyt32);
    free(y), free(dx), free(dw), free(db), free(y32), free(dx32), free(dw32), free(db32);
    free(z), free(lab), free(dz), free(dzt), free(z32), free(lab32), free(dz32), free(dzt32);
}

int main(void)
{
    lm_rng_seed(&rng, 20240825);
    test_linear();
    test_embedding();
    test_relu();
    test_dropout();
    test_losses();
    test_cols();
    test_f32_vs_f64();
    return check_summary();
}
