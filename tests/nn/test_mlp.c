/* test_mlp.c: the MLP over a batch, in double against finite differences: the gradient of
 * L(theta, x) = BCE(MLP_theta(x), y) w.r.t. parameters and input; the Hessian-vector product
 * H v (and the mixed and input terms) from the tangent passes against differences of the
 * gradient, with and without dropout (masks held fixed); the two-block chain of LiMAML (meta
 * block output fed into the global block); float against double; and the +=/= contract. */
#include "nn/check.h"
#include "nn/nn.h"

#define H 1e-6
#define ATOL 1e-8
#define RTOL 1e-6
#define F32_ATOL 1e-5
#define F32_RTOL 1e-4

static lm_rng rng;

/* NULL for an empty buffer, so the code paths that accept NULL there are the ones tested. */
static double *dalloc_or_null(size_t n)
{
    return n ? dalloc(n) : NULL;
}

/* ============================================================================================
 * one MLP with a BCE loss
 * ========================================================================================== */

typedef struct mlp_ctx {
    lm_mlp m;
    size_t B, nin, nout, np;
    int mode;               // dropout mode of every forward after the first (KEEP or OFF)
    double *params;         // params: (np)
    double *x;              // x: (B, nin)
    double *lab;            // lab: (B, nout) labels in {0, 1}
    double *y, *dy;         // y, dy: (B, nout)
    double *cache, *tcache; // forward and tangent caches
    double *work, *twork;   // scratch of backward and backward_tan
    double *y_tan, *dy_tan; // (B, nout)
} mlp_ctx;

static void mlp_setup(mlp_ctx *c, const size_t *sizes, size_t nsizes, double dropout, size_t B)
{
    memset(c, 0, sizeof *c);
    lm_err err = {0};
    if (lm_mlp_init(&c->m, sizes, nsizes, dropout, &err) != LM_OK) {
        printf("FAIL lm_mlp_init: %s\n", err.msg);
        exit(1);
    }
    c->B = B, c->nin = sizes[0], c->nout = sizes[nsizes - 1], c->np = lm_mlp_nparams(&c->m);
    c->params = dalloc(c->np);
    c->x = dalloc(B * c->nin);
    c->lab = dalloc(B * c->nout);
    c->y = dalloc(B * c->nout), c->dy = dalloc(B * c->nout);
    c->y_tan = dalloc(B * c->nout), c->dy_tan = dalloc(B * c->nout);
    c->cache = dalloc_or_null(lm_mlp_cache_size(&c->m, B));
    c->tcache = dalloc_or_null(lm_mlp_tan_cache_size(&c->m, B));
    c->work = dalloc_or_null(lm_mlp_work_size(&c->m, B));
    c->twork = dalloc_or_null(lm_mlp_tan_work_size(&c->m, B));
    lm_mlp_params_init_f64(c->params, &c->m, &rng);
    /* nonzero biases, so their gradients and tangents are exercised in general position */
    for (size_t l = 0; l < c->m.nlayers; l++)
        fill_uniform(c->params + c->m.b_off[l], sizes[l + 1], &rng, -0.1, 0.1);
    fill_uniform(c->x, B * c->nin, &rng, -1, 1);
    for (size_t i = 0; i < B * c->nout; i++) c->lab[i] = lm_rng_uniform(&rng) < 0.4;
    /* the first forward draws the masks; every later one keeps them */
    lm_mlp_forward_f64(c->y, c->cache, &c->m, c->params, c->x, B, LM_DROPOUT_SAMPLE, &rng);
    c->mode = dropout > 0 ? LM_DROPOUT_KEEP : LM_DROPOUT_OFF;
}

static void mlp_teardown(mlp_ctx *c)
{
    free(c->params), free(c->x), free(c->lab), free(c->y), free(c->dy), free(c->y_tan);
    free(c->dy_tan), free(c->cache), free(c->tcache), free(c->work), free(c->twork);
}

static double mlp_scale(const mlp_ctx *c)
{
    return 1.0 / (double)c->B;
}

static double mlp_loss(void *p)
{
    mlp_ctx *c = p;
    lm_mlp_forward_f64(c->y, c->cache, &c->m, c->params, c->x, c->B, c->mode, NULL);
    return lm_bce_forward_f64(NULL, c->y, c->lab, c->B * c->nout, mlp_scale(c));
}

static void mlp_out(double *out, void *p)
{
    mlp_ctx *c = p;
    lm_mlp_forward_f64(out, c->cache, &c->m, c->params, c->x, c->B, c->mode, NULL);
}

/* out = [dparams | dx] of the loss at the current (params, x). */
static void mlp_grad(double *out, void *p)
{
    mlp_ctx *c = p;
    mlp_loss(c);
    lm_bce_backward_f64(c->dy, c->y, c->lab, c->B * c->nout, mlp_scale(c));
    fill_value(out, c->np, 0);
    lm_mlp_backward_f64(out + c->np, out, c->work, &c->m, c->params, c->x, c->cache, c->dy, c->B);
}

/* out = [dparams_tan | dx_tan] along (v, x_tan), either NULL, from the tangent passes; also the
 * first-order [dparams | dx] computed alongside into grad (may be NULL). */
static void mlp_hvp(double *out, double *grad, mlp_ctx *c, const double *v, const double *x_tan)
{
    size_t n = c->B * c->nout;
    lm_mlp_forward_f64(c->y, c->cache, &c->m, c->params, c->x, c->B, c->mode, NULL);
    lm_mlp_forward_tan_f64(c->y_tan, c->tcache, &c->m, c->params, v, c->x, x_tan, c->cache, c->B);
    lm_bce_backward_f64(c->dy, c->y, c->lab, n, mlp_scale(c));
    lm_bce_backward_tan_f64(c->dy_tan, c->y, c->y_tan, n, mlp_scale(c));
    fill_value(out, c->np, 0);
    if (grad) fill_value(grad, c->np, 0);
    lm_mlp_backward_tan_f64(grad ? grad + c->np : NULL, out + c->np, grad, out, c->twork, &c->m, c->params, v,
                            c->x, x_tan, c->cache, c->tcache, c->dy, c->dy_tan, c->B);
}

static void check_mlp(const char *name, const size_t *sizes, size_t nsizes, double dropout, size_t B)
{
    mlp_ctx c;
    mlp_setup(&c, sizes, nsizes, dropout, B);
    size_t np = c.np, nx = B * c.nin, ny = B * c.nout, ng = np + nx;
    char label[128];
    double *grad = dalloc(ng), *ref = dalloc(ng), *v = dalloc(np), *x_tan = dalloc(nx);
    double *hv = dalloc(ng), *grad2 = dalloc(ng);
    fill_uniform(v, np, &rng, -1, 1);
    fill_uniform(x_tan, nx, &rng, -1, 1);

    /* first order */
    mlp_grad(grad, &c);
    fd_gradient(ref, c.params, np, mlp_loss, &c, H);
    snprintf(label, sizeof label, "%s: dparams vs FD", name);
    check_close(label, grad, ref, np, ATOL, RTOL);
    fd_gradient(ref + np, c.x, nx, mlp_loss, &c, H);
    snprintf(label, sizeof label, "%s: dx vs FD", name);
    check_close(label, grad + np, ref + np, nx, ATOL, RTOL);

    /* forward tangent */
    fd_var both[2] = {{c.params, v, np}, {c.x, x_tan, nx}};
    mlp_hvp(hv, NULL, &c, v, x_tan);
    fd_directional(ref, ny, both, 2, mlp_out, &c, H);
    snprintf(label, sizeof label, "%s: forward_tan vs FD", name);
    check_close(label, c.y_tan, ref, ny, ATOL, RTOL);

    /* H v: parameter tangent only; the first-order results come along unchanged */
    mlp_hvp(hv, grad2, &c, v, NULL);
    fd_directional(ref, ng, both, 1, mlp_grad, &c, H);
    snprintf(label, sizeof label, "%s: H v (params tangent) vs FD of grad", name);
    check_close(label, hv, ref, np, ATOL, RTOL);
    snprintf(label, sizeof label, "%s: dx_tan (params tangent) vs FD of dx", name);
    check_close(label, hv + np, ref + np, nx, ATOL, RTOL);
    snprintf(label, sizeof label, "%s: backward_tan's gradient = backward's", name);
    check_close(label, grad2, grad, ng, 1e-15, 1e-12);

    /* input tangent only: mixed term d(grad_params)/dx . x_tan and the input Hessian */
    mlp_hvp(hv, NULL, &c, NULL, x_tan);
    fd_directional(ref, ng, both + 1, 1, mlp_grad, &c, H);
    snprintf(label, sizeof label, "%s: mixed term (input tangent) vs FD of grad", name);
    check_close(label, hv, ref, np, ATOL, RTOL);
    snprintf(label, sizeof label, "%s: dx_tan (input tangent) vs FD of dx", name);
    check_close(label, hv + np, ref + np, nx, ATOL, RTOL);

    /* both */
    mlp_hvp(hv, NULL, &c, v, x_tan);
    fd_directional(ref, ng, both, 2, mlp_grad, &c, H);
    snprintf(label, sizeof label, "%s: [dparams_tan|dx_tan] (both tangents) vs FD", name);
    check_close(label, hv, ref, ng, ATOL, RTOL);

    /* contract: dparams and dparams_tan added, dx and dx_tan set */
    double *acc = dalloc(ng), *acc_tan = dalloc(ng), *twice = dalloc(ng);
    fill_value(acc + np, nx, NAN);
    fill_value(acc_tan + np, nx, NAN);
    mlp_loss(&c);
    lm_bce_backward_f64(c.dy, c.y, c.lab, ny, mlp_scale(&c));
    for (int k = 0; k < 2; k++)
        lm_mlp_backward_f64(acc + np, acc, c.work, &c.m, c.params, c.x, c.cache, c.dy, B);
    snprintf(label, sizeof label, "%s: backward sets dx", name);
    check_close(label, acc + np, grad + np, nx, 0, 0);
    scale_into(twice, grad, np, 2);
    snprintf(label, sizeof label, "%s: backward adds into dparams (2 calls = 2x)", name);
    check_close(label, acc, twice, np, 1e-15, 1e-13);
    mlp_hvp(hv, NULL, &c, v, x_tan); /* leaves dy, dy_tan and the caches of this point */
    fill_value(acc, np, 0);
    for (int k = 0; k < 2; k++)
        lm_mlp_backward_tan_f64(acc + np, acc_tan + np, acc, acc_tan, c.twork, &c.m, c.params, v, c.x, x_tan,
                                c.cache, c.tcache, c.dy, c.dy_tan, B);
    snprintf(label, sizeof label, "%s: backward_tan sets dx_tan", name);
    check_close(label, acc_tan + np, hv + np, nx, 0, 0);
    scale_into(twice, hv, np, 2);
    snprintf(label, sizeof label, "%s: backward_tan adds into dparams_tan (2x)", name);
    check_close(label, acc_tan, twice, np, 1e-15, 1e-13);
    scale_into(twice, grad, np, 2);
    snprintf(label, sizeof label, "%s: backward_tan adds into dparams (2x)", name);
    check_close(label, acc, twice, np, 1e-15, 1e-13);

    free(grad), free(ref), free(v), free(x_tan), free(hv), free(grad2), free(acc), free(acc_tan);
    free(twice);
    mlp_teardown(&c);
}

/* ============================================================================================
 * the two-block chain: z = global([x | meta(x)]), as LiMAML's inner and outer loops use it
 * ========================================================================================== */

typedef struct chain_ctx {
    mlp_ctx meta, glob;    // meta: x -> E; glob: [x | E] -> z (its x buffer holds the concat)
    size_t B, nm, ne;      // rows, meta features, meta embedding width
    double *dxg, *dxg_tan; // (B, nm + ne)
    double *de, *de_tan;   // (B, ne)
    double *xg_tan;        // (B, nm + ne)
} chain_ctx;

static double chain_loss(void *p)
{
    chain_ctx *c = p;
    size_t ng = c->nm + c->ne;
    lm_mlp_forward_f64(c->meta.y, c->meta.cache, &c->meta.m, c->meta.params, c->meta.x, c->B, c->meta.mode,
                       NULL);
    lm_cols_copy_f64(c->glob.x, ng, c->meta.x, c->nm, c->B, c->nm);
    lm_cols_copy_f64(c->glob.x + c->nm, ng, c->meta.y, c->ne, c->B, c->ne);
    return mlp_loss(&c->glob);
}

/* out = [dtheta_meta | dtheta_global] */
static void chain_grad(double *out, void *p)
{
    chain_ctx *c = p;
    size_t ng = c->nm + c->ne, npm = c->meta.np;
    chain_loss(c);
    lm_bce_backward_f64(c->glob.dy, c->glob.y, c->glob.lab, c->B, mlp_scale(&c->glob));
    fill_value(out, npm + c->glob.np, 0);
    lm_mlp_backward_f64(c->dxg, out + npm, c->glob.work, &c->glob.m, c->glob.params, c->glob.x, c->glob.cache,
                        c->glob.dy, c->B);
    lm_cols_copy_f64(c->de, c->ne, c->dxg + c->nm, ng, c->B, c->ne);
    lm_mlp_backward_f64(NULL, out, c->meta.work, &c->meta.m, c->meta.params, c->meta.x, c->meta.cache, c->de,
                        c->B);
}

/* out = [H v]_meta | [H v]_global along v = (vm, vg); vg may be NULL (LiMAML's inner loop
 * adapts only the meta block: the global block then sees a tangent only through its input). */
static void chain_hvp(double *out, chain_ctx *c, const double *vm, const double *vg)
{
    size_t B = c->B, ng = c->nm + c->ne, npm = c->meta.np;
    mlp_ctx *m = &c->meta, *g = &c->glob;
    chain_loss(c);
    lm_mlp_forward_tan_f64(m->y_tan, m->tcache, &m->m, m->params, vm, m->x, NULL, m->cache, B);
    fill_value(c->xg_tan, B * ng, 0); /* the features carry no tangent, the embedding does */
    lm_cols_copy_f64(c->xg_tan + c->nm, ng, m->y_tan, c->ne, B, c->ne);
    lm_mlp_forward_tan_f64(g->y_tan, g->tcache, &g->m, g->params, vg, g->x, c->xg_tan, g->cache, B);
    lm_bce_backward_f64(g->dy, g->y, g->lab, B, mlp_scale(g));
    lm_bce_backward_tan_f64(g->dy_tan, g->y, g->y_tan, B, mlp_scale(g));
    fill_value(out, npm + g->np, 0);
    lm_mlp_backward_tan_f64(c->dxg, c->dxg_tan, NULL, out + npm, g->twork, &g->m, g->params, vg, g->x,
                            c->xg_tan, g->cache, g->tcache, g->dy, g->dy_tan, B);
    lm_cols_copy_f64(c->de, c->ne, c->dxg + c->nm, ng, B, c->ne);
    lm_cols_copy_f64(c->de_tan, c->ne, c->dxg_tan + c->nm, ng, B, c->ne);
    lm_mlp_backward_tan_f64(NULL, NULL, NULL, out, m->twork, &m->m, m->params, vm, m->x, NULL, m->cache,
                            m->tcache, c->de, c->de_tan, B);
}

static void test_chain(double dropout)
{
    chain_ctx c;
    memset(&c, 0, sizeof c);
    c.B = 6, c.nm = 4, c.ne = 3;
    size_t ms[3] = {c.nm, 7, c.ne}, gs[4] = {c.nm + c.ne, 8, 5, 1};
    mlp_setup(&c.meta, ms, 3, dropout, c.B);
    mlp_setup(&c.glob, gs, 4, dropout, c.B);
    size_t ng = c.nm + c.ne, npm = c.meta.np, npg = c.glob.np, nt = npm + npg;
    c.dxg = dalloc(c.B * ng), c.dxg_tan = dalloc(c.B * ng), c.xg_tan = dalloc(c.B * ng);
    c.de = dalloc(c.B * c.ne), c.de_tan = dalloc(c.B * c.ne);

    char label[128];
    const char *tag = dropout > 0 ? "chain with dropout" : "chain";
    double *grad = dalloc(nt), *ref = dalloc(nt), *hv = dalloc(nt), *v = dalloc(nt);
    fill_uniform(v, nt, &rng, -1, 1);
    chain_grad(grad, &c);
    fd_gradient(ref, c.meta.params, npm, chain_loss, &c, H);
    fd_gradient(ref + npm, c.glob.params, npg, chain_loss, &c, H);
    snprintf(label, sizeof label, "%s: [dmeta|dglobal] vs FD", tag);
    check_close(label, grad, ref, nt, ATOL, RTOL);

    fd_var vars[2] = {{c.meta.params, v, npm}, {c.glob.params, v + npm, npg}};
    chain_hvp(hv, &c, v, NULL);
    fd_directional(ref, nt, vars, 1, chain_grad, &c, H);
    snprintf(label, sizeof label, "%s: H v, v in meta only (H_mm v | H_gm v) vs FD", tag);
    check_close(label, hv, ref, nt, ATOL, RTOL);
    chain_hvp(hv, &c, v, v + npm);
    fd_directional(ref, nt, vars, 2, chain_grad, &c, H);
    snprintf(label, sizeof label, "%s: H v, v in both blocks vs FD", tag);
    check_close(label, hv, ref, nt, ATOL, RTOL);

    free(grad), free(ref), free(hv), free(v), free(c.dxg), free(c.dxg_tan), free(c.xg_tan);
    free(c.de), free(c.de_tan);
    mlp_teardown(&c.meta);
    mlp_teardown(&c.glob);
}

/* ============================================================================================
 * description, init, dropout modes
 * ========================================================================================== */

static void test_describe(void)
{
    lm_mlp m;
    lm_err err = {0};
    size_t s[4] = {5, 7, 4, 1}, bad0[3] = {5, 0, 1}, many[LM_MLP_MAX_LAYERS + 2];
    for (size_t i = 0; i < LM_MLP_MAX_LAYERS + 2; i++) many[i] = 2;
    check_true(lm_mlp_init(&m, s, 1, 0, &err) == LM_EINVAL, "mlp_init rejects one width");
    check_true(lm_mlp_init(&m, bad0, 3, 0, &err) == LM_EINVAL && err.msg[0],
               "mlp_init rejects a zero width (%s)", err.msg);
    check_true(lm_mlp_init(&m, s, 4, 1.0, &err) == LM_EINVAL, "mlp_init rejects dropout 1");
    check_true(lm_mlp_init(&m, s, 4, NAN, &err) == LM_EINVAL, "mlp_init rejects dropout NaN");
    check_true(lm_mlp_init(&m, many, LM_MLP_MAX_LAYERS + 2, 0, &err) == LM_EINVAL,
               "mlp_init rejects more than %d layers", LM_MLP_MAX_LAYERS);
    check_true(lm_mlp_init(&m, many, LM_MLP_MAX_LAYERS + 1, 0, &err) == LM_OK, "mlp_init takes %d layers",
               LM_MLP_MAX_LAYERS);

    check_true(lm_mlp_init(&m, s, 4, 0.25, &err) == LM_OK, "mlp_init [5, 7, 4, 1]");
    check_true(lm_mlp_nparams(&m) == 7 * 5 + 7 + 4 * 7 + 4 + 4 + 1, "nparams %zu = 79", lm_mlp_nparams(&m));
    check_true(m.w_off[0] == 0 && m.b_off[0] == 35 && m.w_off[1] == 42 && m.b_off[1] == 70 &&
                   m.w_off[2] == 74 && m.b_off[2] == 78,
               "parameter offsets W0 0, b0 35, W1 42, b1 70, W2 74, b2 78");
    check_true(lm_mlp_cache_size(&m, 3) == 3 * 2 * (7 + 4) && lm_mlp_tan_cache_size(&m, 3) == 33 &&
                   lm_mlp_work_size(&m, 3) == 42 && lm_mlp_tan_work_size(&m, 3) == 84,
               "cache sizes with dropout: %zu, tan %zu, work %zu, tan work %zu", lm_mlp_cache_size(&m, 3),
               lm_mlp_tan_cache_size(&m, 3), lm_mlp_work_size(&m, 3), lm_mlp_tan_work_size(&m, 3));
    lm_mlp_init(&m, s, 4, 0, &err);
    check_true(lm_mlp_cache_size(&m, 3) == 33, "cache size without dropout %zu = 33",
               lm_mlp_cache_size(&m, 3));

    /* init: the same numbers in both precisions, within the Kaiming bounds, biases 0 */
    size_t big[3] = {200, 300, 2};
    lm_mlp_init(&m, big, 3, 0, &err);
    size_t np = lm_mlp_nparams(&m);
    double *p64 = dalloc(np);
    float *p32 = falloc(np);
    lm_rng r1, r2;
    lm_rng_seed(&r1, 99), lm_rng_seed(&r2, 99);
    lm_mlp_params_init_f64(p64, &m, &r1);
    lm_mlp_params_init_f32(p32, &m, &r2);
    size_t same = 0;
    for (size_t i = 0; i < np; i++) same += p32[i] == (float)p64[i];
    check_true(same == np, "params_init f32 = f64 rounded (%zu of %zu)", same, np);
    for (size_t l = 0; l < 2; l++) {
        size_t I = big[l], O = big[l + 1];
        double bound = sqrt((l == 0 ? 6.0 : 3.0) / (double)I), ss = 0, mx = 0, bs = 0;
        for (size_t k = 0; k < O * I; k++) {
            double w = p64[m.w_off[l] + k];
            ss += w * w;
            mx = fabs(w) > mx ? fabs(w) : mx;
        }
        for (size_t o = 0; o < O; o++) bs += fabs(p64[m.b_off[l] + o]);
        double var = ss / (double)(O * I), want = bound * bound / 3;
        check_true(mx <= bound && bs == 0 && fabs(var / want - 1) < (l == 0 ? 0.02 : 0.3),
                   "layer %zu init: max |w| %.4f <= %.4f, variance %.5f ~ %.5f, biases 0", l, mx, bound, var,
                   want);
    }
    free(p64), free(p32);
}

static void test_dropout_modes(void)
{
    size_t s[4] = {6, 10, 8, 2}, B = 5;
    mlp_ctx c;
    mlp_setup(&c, s, 4, 0.5, B);
    lm_mlp plain;
    lm_mlp_init(&plain, s, 4, 0, NULL);
    size_t ny = B * 2;
    double *y1 = dalloc(ny), *y2 = dalloc(ny), *y3 = dalloc(ny);
    double *pc = dalloc(lm_mlp_cache_size(&plain, B));
    lm_mlp_forward_f64(y1, c.cache, &c.m, c.params, c.x, B, LM_DROPOUT_SAMPLE, &rng);
    lm_mlp_forward_f64(y2, c.cache, &c.m, c.params, c.x, B, LM_DROPOUT_KEEP, NULL);
    check_close("mlp dropout KEEP reproduces SAMPLE", y2, y1, ny, 0, 0);
    lm_mlp_forward_f64(y2, c.cache, &c.m, c.params, c.x, B, LM_DROPOUT_OFF, NULL);
    lm_mlp_forward_f64(y3, pc, &plain, c.params, c.x, B, LM_DROPOUT_OFF, NULL);
    check_close("mlp dropout OFF = the same MLP without dropout", y2, y3, ny, 0, 0);
    double diff = 0;
    for (size_t i = 0; i < ny; i++) diff += fabs(y1[i] - y2[i]);
    check_true(diff > 0, "mlp dropout SAMPLE changes the output (sum |diff| %.3g)", diff);
    free(y1), free(y2), free(y3), free(pc);
    mlp_teardown(&c);
}

/* ============================================================================================
 * float against double
 * ========================================================================================== */

static void check_f32(const char *name, const float *a, const double *ref, size_t n)
{
    double *a64 = dalloc(n);
    to_f64(a64, a, n);
    check_close(name, a64, ref, n, F32_ATOL, F32_RTOL);
    free(a64);
}

static void test_f32_vs_f64(void)
{
    size_t s[4] = {20, 32, 16, 1}, B = 32;
    mlp_ctx c;
    mlp_setup(&c, s, 4, 0.2, B);
    lm_mlp *m = &c.m;
    size_t np = c.np, nx = B * c.nin;
    float *p = falloc(np), *x = falloc(nx), *lab = falloc(B), *v = falloc(np), *xt = falloc(nx);
    float *y = falloc(B), *dy = falloc(B), *yt = falloc(B), *dyt = falloc(B);
    float *cache = falloc(lm_mlp_cache_size(m, B)), *tcache = falloc(lm_mlp_tan_cache_size(m, B));
    float *work = falloc(lm_mlp_work_size(m, B)), *twork = falloc(lm_mlp_tan_work_size(m, B));
    float *dp = falloc(np), *dx = falloc(nx), *dpt = falloc(np), *dxt = falloc(nx);
    double *v64 = dalloc(np), *xt64 = dalloc(nx), *g64 = dalloc(np + nx), *hv64 = dalloc(np + nx);
    fill_uniform(v64, np, &rng, -1, 1);
    fill_uniform(xt64, nx, &rng, -1, 1);
    /* float inputs, and the double run on exactly those values */
    to_f32(p, c.params, np), to_f32(x, c.x, nx), to_f32(lab, c.lab, B), to_f32(v, v64, np);
    to_f32(xt, xt64, nx);
    to_f64(c.params, p, np), to_f64(c.x, x, nx), to_f64(v64, v, np), to_f64(xt64, xt, nx);

    lm_rng r1, r2;
    lm_rng_seed(&r1, 5), lm_rng_seed(&r2, 5);
    lm_mlp_forward_f64(c.y, c.cache, m, c.params, c.x, B, LM_DROPOUT_SAMPLE, &r1);
    lm_mlp_forward_f32(y, cache, m, p, x, B, LM_DROPOUT_SAMPLE, &r2);
    check_f32("f32 vs f64: mlp forward (same dropout seed)", y, c.y, B);

    mlp_hvp(hv64, g64, &c, v64, xt64); /* KEEP: the masks just drawn */
    lm_mlp_forward_f32(y, cache, m, p, x, B, LM_DROPOUT_KEEP, NULL);
    lm_mlp_forward_tan_f32(yt, tcache, m, p, v, x, xt, cache, B);
    lm_bce_backward_f32(dy, y, lab, B, 1.0f / (float)B);
    lm_bce_backward_tan_f32(dyt, y, yt, B, 1.0f / (float)B);
    lm_mlp_backward_f32(dx, dp, work, m, p, x, cache, dy, B);
    check_f32("f32 vs f64: mlp backward dparams", dp, g64, np);
    check_f32("f32 vs f64: mlp backward dx", dx, g64 + np, nx);
    lm_mlp_backward_tan_f32(NULL, dxt, NULL, dpt, twork, m, p, v, x, xt, cache, tcache, dy, dyt, B);
    check_f32("f32 vs f64: mlp forward_tan", yt, c.y_tan, B);
    check_f32("f32 vs f64: mlp backward_tan dparams_tan (H v + mixed)", dpt, hv64, np);
    check_f32("f32 vs f64: mlp backward_tan dx_tan", dxt, hv64 + np, nx);

    free(p), free(x), free(lab), free(v), free(xt), free(y), free(dy), free(yt), free(dyt);
    free(cache), free(tcache), free(work), free(twork), free(dp), free(dx), free(dpt), free(dxt);
    free(v64), free(xt64), free(g64), free(hv64);
    mlp_teardown(&c);
}

int main(void)
{
    lm_rng_seed(&rng, 1234567);
    test_describe();
    test_dropout_modes();

    size_t lr[2] = {6, 1}, two[4] = {6, 8, 5, 1}, deep[6] = {5, 9, 7, 6, 4, 2};
    check_mlp("mlp [6,1] (no hidden layer)", lr, 2, 0, 7);
    check_mlp("mlp [6,8,5,1]", two, 4, 0, 7);
    check_mlp("mlp [6,8,5,1] dropout 0.3, masks fixed", two, 4, 0.3, 7);
    check_mlp("mlp [5,9,7,6,4,2] dropout 0.2", deep, 6, 0.2, 5);
    test_chain(0);
    test_chain(0.3);
    test_f32_vs_f64();
    return check_summary();
}
