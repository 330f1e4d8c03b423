/* test_net.c: the LiMAML network's passes over one task's rows, in double against central
 * finite differences: the gradient of the mean loss w.r.t. both blocks (MLP and id meta
 * blocks, BCE and MSE, with and without dropout, masks held fixed); Hessian-vector products
 * along meta-only, global-only and joint directions against differences of the gradient;
 * float against double; the layout of a known config; evaluation helpers; empty rows. */
#include "meta/meta_check.h"

#define H 1e-5
#define ATOL 1e-8
#define RTOL 1e-5
#define F32_ATOL 1e-5
#define F32_RTOL 1e-4

static lm_rng rng;

/* One network with parameters, rows and a workspace, in double. */
typedef struct net_ctx {
    lm_net n;
    size_t Pm, Pg, B;
    double *tm, *tg; // tm: (Pm) the task's slice; tg: (Pg)
    lm_rows_f64 r;
    lm_meta_ws_f64 ws;
    int mode; // LM_DROPOUT_KEEP after the first forward (OFF without dropout)
} net_ctx;

static void ctx_setup(net_ctx *c, const lm_net_config *cfg, size_t B)
{
    memset(c, 0, sizeof *c);
    net_make(&c->n, cfg);
    c->Pm = c->n.meta_task_np, c->Pg = c->n.global_np, c->B = B;
    double *full_m = dalloc(c->n.meta_np);
    c->tm = dalloc(c->Pm), c->tg = dalloc(c->Pg);
    lm_net_params_init_f64(&c->n, full_m, c->tg, &rng);
    memcpy(c->tm, full_m + lm_net_meta_slice(&c->n, 0), c->Pm * sizeof(double));
    free(full_m);
    /* nonzero biases: exercise their gradients in general position */
    if (cfg->meta_kind == LM_NET_META_MLP)
        for (size_t l = 0; l < c->n.meta.nlayers; l++)
            fill_uniform(c->tm + c->n.meta.b_off[l], c->n.meta.sizes[l + 1], &rng, -0.1, 0.1);
    for (size_t l = 0; l < c->n.global.nlayers; l++)
        fill_uniform(c->tg + c->n.global.b_off[l], c->n.global.sizes[l + 1], &rng, -0.1, 0.1);
    rows_make_f64(&c->r, &c->n, B, &rng);
    lm_err err = {0};
    if (lm_meta_ws_alloc_f64(&c->ws, &c->n, B, 1, 1, &err) != LM_OK) {
        printf("FAIL ws: %s\n", err.msg);
        exit(1);
    }
    lm_net_forward_f64(&c->n, &c->ws, 0, c->tm, c->tg, &c->r, LM_DROPOUT_SAMPLE, &rng);
    c->mode = cfg->dropout > 0 ? LM_DROPOUT_KEEP : LM_DROPOUT_OFF;
}

static void ctx_teardown(net_ctx *c)
{
    free(c->tm), free(c->tg);
    lm_rows_free_f64(&c->r);
    lm_meta_ws_free_f64(&c->ws);
}

static double ctx_loss(net_ctx *c)
{
    return lm_net_forward_f64(&c->n, &c->ws, 0, c->tm, c->tg, &c->r, c->mode, NULL);
}

/* out = [grad_m | grad_g] at the current parameters */
static void ctx_grad(net_ctx *c, double *out)
{
    memset(out, 0, (c->Pm + c->Pg) * sizeof(double));
    lm_net_grad_f64(&c->n, &c->ws, 0, c->tm, c->tg, &c->r, out, out + c->Pm, c->mode, NULL);
}

/* ref = FD gradient of the loss over [tm | tg] */
static void fd_grad(net_ctx *c, double *ref)
{
    double *p[2] = {c->tm, c->tg};
    size_t np[2] = {c->Pm, c->Pg}, k = 0;
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < np[b]; i++, k++) {
            double keep = p[b][i];
            p[b][i] = keep + H;
            double fp = ctx_loss(c);
            p[b][i] = keep - H;
            double fm = ctx_loss(c);
            p[b][i] = keep;
            ref[k] = (fp - fm) / (2 * H);
        }
}

/* ref = (grad(theta + h v) - grad(theta - h v)) / 2h, v = [vm | vg] */
static void fd_hvp(net_ctx *c, const double *v, double *ref)
{
    size_t P = c->Pm + c->Pg;
    double *save = dalloc(P), *gp = dalloc(P), *gm = dalloc(P);
    memcpy(save, c->tm, c->Pm * sizeof(double));
    memcpy(save + c->Pm, c->tg, c->Pg * sizeof(double));
    for (int s = 0; s < 2; s++) {
        double sign = s ? -1 : 1;
        for (size_t i = 0; i < c->Pm; i++) c->tm[i] = save[i] + sign * H * v[i];
        for (size_t i = 0; i < c->Pg; i++) c->tg[i] = save[c->Pm + i] + sign * H * v[c->Pm + i];
        ctx_grad(c, s ? gm : gp);
    }
    memcpy(c->tm, save, c->Pm * sizeof(double));
    memcpy(c->tg, save + c->Pm, c->Pg * sizeof(double));
    for (size_t i = 0; i < P; i++) ref[i] = (gp[i] - gm[i]) / (2 * H);
    free(save), free(gp), free(gm);
}

static void check_passes(const char *name, const lm_net_config *cfg, size_t B)
{
    net_ctx c;
    ctx_setup(&c, cfg, B);
    size_t Pm = c.Pm, Pg = c.Pg, P = Pm + Pg;
    char label[160];
    double *g = dalloc(P), *ref = dalloc(P), *hv = dalloc(P), *v = dalloc(P), *w = dalloc(P);
    fill_uniform(v, P, &rng, -1, 1);

    ctx_grad(&c, g);
    fd_grad(&c, ref);
    snprintf(label, sizeof label, "%s: [grad_m | grad_g] vs FD", name);
    check_close(check_emb_logit ? "emb_logit net gradient vs FD" : "net gradient vs FD", label, g, ref, P,
                ATOL, RTOL);

    /* weight scales the backward */
    memset(w, 0, P * sizeof(double));
    ctx_loss(&c);
    lm_net_backward_f64(&c.n, &c.ws, 0, c.tm, c.tg, &c.r, 0.7, w, w + Pm);
    for (size_t i = 0; i < P; i++) ref[i] = 0.7 * g[i];
    snprintf(label, sizeof label, "%s: backward with weight 0.7", name);
    check_close(NULL, label, w, ref, P, 1e-15, 1e-12);

    /* H v along three directions: meta only, global only, both */
    const char *dir[3] = {"v in meta", "v in global", "v in both"};
    for (int d = 0; d < 3; d++) {
        double *vd = dalloc(P);
        if (d != 1) memcpy(vd, v, Pm * sizeof(double));
        if (d != 0) memcpy(vd + Pm, v + Pm, Pg * sizeof(double));
        ctx_loss(&c);
        memset(hv, 0, P * sizeof(double));
        lm_net_hvp_f64(&c.n, &c.ws, 0, c.tm, c.tg, &c.r, d == 1 ? NULL : vd, d == 0 ? NULL : vd + Pm, 1.0, hv,
                       hv + Pm);
        fd_hvp(&c, vd, ref);
        snprintf(label, sizeof label, "%s: H v, %s, vs FD of the gradient", name, dir[d]);
        check_close(check_emb_logit ? "emb_logit net H v vs FD" : "net H v vs FD", label, hv, ref, P, ATOL,
                    RTOL);
        free(vd);
    }
    /* weight and accumulation: two calls with weight 0.5 add up to one with weight 1 */
    ctx_loss(&c);
    memset(w, 0, P * sizeof(double));
    for (int k = 0; k < 2; k++) lm_net_hvp_f64(&c.n, &c.ws, 0, c.tm, c.tg, &c.r, v, v + Pm, 0.5, w, w + Pm);
    snprintf(label, sizeof label, "%s: H v adds (+=), weight 0.5 twice = 1", name);
    check_close(NULL, label, w, hv, P, 1e-14, 1e-11);

    free(g), free(ref), free(hv), free(v), free(w);
    ctx_teardown(&c);
}

/* ============================================================================================
 * float against double
 * ========================================================================================== */

static void check_f32(const char *name, const float *a, const double *ref, size_t n)
{
    double *a64 = dalloc(n);
    to_f64(a64, a, n);
    check_close(check_emb_logit ? "emb_logit net f32 vs f64" : "net f32 vs f64", name, a64, ref, n, F32_ATOL,
                F32_RTOL);
    free(a64);
}

static void test_f32_vs_f64(int meta_kind, double dropout)
{
    lm_net_config cfg;
    small_config(&cfg, meta_kind, 2, LM_NET_LOSS_BCE, dropout);
    net_ctx c;
    ctx_setup(&c, &cfg, 11);
    size_t Pm = c.Pm, Pg = c.Pg, P = Pm + Pg;
    round_f32(c.tm, Pm), round_f32(c.tg, Pg);
    double *v = dalloc(P), *g64 = dalloc(P), *hv64 = dalloc(P);
    fill_uniform(v, P, &rng, -1, 1);
    round_f32(v, P);
    float *tm = falloc(Pm), *tg = falloc(Pg), *v32 = falloc(P), *g32 = falloc(P), *hv32 = falloc(P);
    to_f32(tm, c.tm, Pm), to_f32(tg, c.tg, Pg), to_f32(v32, v, P);
    lm_rows_f32 r32;
    rows_to_f32(&r32, &c.r);
    lm_meta_ws_f32 ws32;
    lm_meta_ws_alloc_f32(&ws32, &c.n, c.B, 1, 1, NULL);

    lm_rng r1, r2;
    lm_rng_seed(&r1, 77), lm_rng_seed(&r2, 77);
    double l64 = lm_net_grad_f64(&c.n, &c.ws, 0, c.tm, c.tg, &c.r, g64, g64 + Pm, LM_DROPOUT_SAMPLE, &r1);
    double l32 = lm_net_grad_f32(&c.n, &ws32, 0, tm, tg, &r32, g32, g32 + Pm, LM_DROPOUT_SAMPLE, &r2);
    lm_net_hvp_f64(&c.n, &c.ws, 0, c.tm, c.tg, &c.r, v, v + Pm, 1.0, hv64, hv64 + Pm);
    lm_net_hvp_f32(&c.n, &ws32, 0, tm, tg, &r32, v32, v32 + Pm, 1.0, hv32, hv32 + Pm);
    char label[160];
    const char *kind = meta_kind == LM_NET_META_MLP ? (check_emb_logit ? "emb_logit mlp" : "mlp")
                                                    : (check_emb_logit ? "emb_logit id" : "id");
    snprintf(label, sizeof label, "f32 vs f64 (%s meta, dropout %.1f, same seed): loss", kind, dropout);
    check_close(check_emb_logit ? "emb_logit net f32 vs f64" : "net f32 vs f64", label, (double[]){l32},
                (double[]){l64}, 1, F32_ATOL, F32_RTOL);
    snprintf(label, sizeof label, "f32 vs f64 (%s meta, dropout %.1f): gradient", kind, dropout);
    check_f32(label, g32, g64, P);
    snprintf(label, sizeof label, "f32 vs f64 (%s meta, dropout %.1f): H v", kind, dropout);
    check_f32(label, hv32, hv64, P);

    free(v), free(g64), free(hv64), free(tm), free(tg), free(v32), free(g32), free(hv32);
    lm_rows_free_f32(&r32);
    lm_meta_ws_free_f32(&ws32);
    ctx_teardown(&c);
}

/* ============================================================================================
 * description, evaluation helpers, edge cases
 * ========================================================================================== */

static void test_describe(void)
{
    lm_net n;
    lm_net_config c;
    lm_err err = {0};
    small_config(&c, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0);
    net_make(&n, &c);
    /* global input [meta 5 | dense 4 | cat0 3 | cat1 2 | E 3] = 17 */
    check_true(n.nin == 17 && n.col_meta == 0 && n.col_dense == 5 && n.col_cat[0] == 9 &&
                   n.col_cat[1] == 12 && n.col_emb == 14,
               "global input columns: nin %zu, dense %zu, cat %zu %zu, emb %zu", n.nin, n.col_dense,
               n.col_cat[0], n.col_cat[1], n.col_emb);
    size_t gmlp = 17 * 8 + 8 + 8 * 5 + 5 + 5 + 1;
    check_true(n.meta_np == 5 * 6 + 6 + 6 * 3 + 3 && n.meta_task_np == n.meta_np,
               "meta MLP [5, 6, 3]: %zu parameters", n.meta_np);
    check_true(n.global.nparams == gmlp && n.cat_off[0] == gmlp && n.cat_off[1] == gmlp + 21 &&
                   n.global_np == gmlp + 21 + 10,
               "global block: MLP %zu, tables at %zu and %zu, total %zu", n.global.nparams, n.cat_off[0],
               n.cat_off[1], n.global_np);
    c.meta_in_global = 0;
    net_make(&n, &c);
    check_true(n.nin == 12 && n.col_dense == 0, "meta_in_global 0: nin %zu", n.nin);
    c.meta_in_global = 1;
    c.meta_kind = LM_NET_META_ID;
    net_make(&n, &c);
    check_true(n.meta_np == 4 * 3 && n.meta_task_np == 3 && lm_net_meta_slice(&n, 3) == 9,
               "id meta block: table %zu, slice %zu, default row at %zu", n.meta_np, n.meta_task_np,
               lm_net_meta_slice(&n, 3));

    lm_net_config bad = c;
    bad.emb_dim = 0;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL && err.msg[0], "rejects E = 0 (%s)", err.msg);
    bad = c, bad.meta_kind = LM_NET_META_MLP, bad.nmeta = 0;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL, "rejects an mlp meta block without features");
    bad = c, bad.id_rows = 0;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL, "rejects an id table without rows");
    bad = c, bad.cat_dim[1] = 0;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL, "rejects a categorical width 0");
    bad = c, bad.dropout = 1;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL, "rejects dropout 1");
    bad = c, bad.loss = 7;
    check_true(lm_net_init(&n, &bad, &err) == LM_EINVAL, "rejects an unknown loss");

    /* the paper-sized default: meta [23, 32, 16], global [67, 64, 32, 1], one 8-dim table */
    lm_net_config_default(&c);
    c.nmeta = 23, c.ndense = 20, c.ncat = 1, c.cat_buckets[0] = 1000, c.cat_dim[0] = 8;
    net_make(&n, &c);
    check_true(n.nin == 67 && n.meta_np == 23 * 32 + 32 + 32 * 16 + 16 &&
                   n.global.nparams == 67 * 64 + 64 + 64 * 32 + 32 + 32 + 1,
               "default net: nin %zu, meta %zu, global MLP %zu (+ table %zu)", n.nin, n.meta_np,
               n.global.nparams, n.global_np - n.global.nparams);
    lm_meta_opts o;
    lm_meta_opts_default(&o);
    double f2 = lm_meta_task_flops(&n, &o, 40, 13);
    o.first_order = 1;
    double f1 = lm_meta_task_flops(&n, &o, 40, 13);
    o.algo = LM_ALGO_PLAIN;
    double fp = lm_meta_task_flops(&n, &o, 40, 13);
    double fp53 = lm_meta_task_flops(&n, &o, 40, 53);
    o.algo = LM_ALGO_MAML, o.first_order = 0;
    double fm = lm_meta_task_flops(&n, &o, 40, 13);
    printf("     FLOPs per task, default net, 40 support + 13 query rows, n = 1: LiMAML %.0f "
           "(first order %.0f), MAML %.0f, plain on 13 rows %.0f, plain on 53 rows %.0f\n",
           f2, f1, fm, fp, fp53);
    check_true(fp < f1 && f1 < f2 && f2 < fm, "FLOP model orders plain < first order < LiMAML < MAML");
    /* by hand (docs/META.md): forward 2 (1248 + 6368) MACs per row; query forward + backward
     * 13 (15232 + 4 * 6368 + 2 * 1248 + 2 * 512); inner step 40 (15232 + 2 * 6368 + 2 * 1248 +
     * 2 * 512); H v sweep 40 (2 (736 + 2 * 512) + 2 * 6368 + 8 * 6368 + 2 (736 + 5 * 512)) */
    check_true(fp == 574912 && f1 == 1259520 + 574912 && f2 == f1 + 2951680,
               "FLOP model matches the hand count: plain %.0f, inner step + query %.0f, H v %.0f", fp, f1,
               f2 - f1);

    lm_meta_layout lay;
    lm_meta_layout_init(&lay, &n, 64, 1, 0, NULL);
    printf("     workspace for 64 rows, 1 step, LiMAML: %zu values (%zu per slot)\n", lay.total, lay.st_size);
}

static void test_eval_helpers(void)
{
    lm_net_config cfg;
    small_config(&cfg, LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0.3);
    net_ctx c;
    ctx_setup(&c, &cfg, 6);
    /* the same meta features on every row: the embedding is one vector, and scoring with it
     * through the global block alone equals the full network */
    for (size_t b = 1; b < c.B; b++) memcpy(c.r.meta + b * 5, c.r.meta, 5 * sizeof(double));
    double *E = dalloc(c.B * 3), *z1 = dalloc(c.B), *z2 = dalloc(c.B);
    lm_net_embed_f64(&c.n, &c.ws, c.tm, c.r.meta, c.B, E);
    double l1 = lm_net_predict_f64(&c.n, &c.ws, c.tm, c.tg, &c.r, z1);
    double l2 = lm_net_predict_emb_f64(&c.n, &c.ws, E, c.tg, &c.r, z2);
    check_close(NULL, "predict_emb(embed(latest)) = predict (global block alone)", z2, z1, c.B, 1e-15, 1e-13);
    check_true(fabs(l1 - l2) < 1e-14, "and the same loss %.6f", l1);
    /* predict ignores dropout; the loss is the mean BCE of its logits */
    double mean = 0;
    for (size_t b = 0; b < c.B; b++) {
        double z = z1[b], y = c.r.label[b];
        mean += (z > 0 ? z : 0) - z * y + log1p(exp(-fabs(z)));
    }
    mean /= (double)c.B;
    check_true(fabs(mean - l1) < 1e-14, "predict's loss is the mean BCE over the rows (%.9f)", l1);

    /* empty rows: loss 0, gradients untouched */
    lm_rows_f64 empty = lm_rows_view_f64(&c.r, 0, 0);
    double *g = dalloc(c.Pm + c.Pg);
    double l0 = lm_net_grad_f64(&c.n, &c.ws, 0, c.tm, c.tg, &empty, g, g + c.Pm, LM_DROPOUT_SAMPLE, &rng);
    lm_net_hvp_f64(&c.n, &c.ws, 0, c.tm, c.tg, &empty, c.tm, c.tg, 1.0, g, g + c.Pm);
    double s = 0;
    for (size_t i = 0; i < c.Pm + c.Pg; i++) s += fabs(g[i]);
    check_true(l0 == 0 && s == 0, "empty rows: loss %g, gradient and H v untouched", l0);

    /* a view of the latest row */
    lm_rows_f64 last = lm_rows_view_f64(&c.r, c.B - 1, 1);
    double zl;
    lm_net_predict_f64(&c.n, &c.ws, c.tm, c.tg, &last, &zl);
    check_true(fabs(zl - z1[c.B - 1]) < 1e-14, "view of the latest row scores as in the batch");
    free(E), free(z1), free(z2), free(g);
    ctx_teardown(&c);
}

/* emb_logit shifts each logit by exactly E[b, 0]: the same parameters scored with and without
 * the option (MLP and id blocks), and E[0] is the only difference. */
static void test_emb_logit_shift(int meta_kind)
{
    lm_net_config cfg;
    small_config(&cfg, meta_kind, 2, LM_NET_LOSS_BCE, 0);
    net_ctx c;
    ctx_setup(&c, &cfg, 7);
    cfg.emb_logit = 1;
    lm_net n1;
    net_make(&n1, &cfg);
    double *E = dalloc(c.B * 3), *z0 = dalloc(c.B), *z1 = dalloc(c.B), *z1e = dalloc(c.B);
    lm_net_embed_f64(&c.n, &c.ws, c.tm, c.r.meta, c.B, E);
    lm_net_predict_f64(&c.n, &c.ws, c.tm, c.tg, &c.r, z0);
    lm_net_predict_f64(&n1, &c.ws, c.tm, c.tg, &c.r, z1);
    for (size_t b = 0; b < c.B; b++) z0[b] += E[b * 3];
    check_close(NULL,
                meta_kind == LM_NET_META_MLP ? "emb_logit mlp: logit = global MLP + E[0]"
                                             : "emb_logit id: logit = global MLP + E[0]",
                z1, z0, c.B, 1e-15, 1e-14);
    /* predict_emb (the served path) shifts by the given embedding's E[0] too */
    if (meta_kind == LM_NET_META_MLP) {
        lm_net_predict_emb_f64(&n1, &c.ws, E, c.tg, &c.r, z1e);
        lm_net_predict_emb_f64(&c.n, &c.ws, E, c.tg, &c.r, z0);
        for (size_t b = 0; b < c.B; b++) z0[b] += E[0];
        check_close(NULL, "emb_logit: predict_emb adds the embedding's E[0]", z1e, z0, c.B, 1e-15, 1e-14);
    }
    free(E), free(z0), free(z1), free(z1e);
    ctx_teardown(&c);
}

int main(void)
{
    lm_rng_seed(&rng, 20240825);
    test_describe();
    test_eval_helpers();

    struct {
        const char *name;
        int kind, ncat, loss;
        double dropout;
        size_t B;
    } cases[] = {
        {"mlp meta, 2 tables, BCE", LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0, 7},
        {"mlp meta, 1 table, MSE", LM_NET_META_MLP, 1, LM_NET_LOSS_MSE, 0, 5},
        {"mlp meta, no tables, BCE", LM_NET_META_MLP, 0, LM_NET_LOSS_BCE, 0, 4},
        {"mlp meta, 2 tables, BCE, dropout 0.3", LM_NET_META_MLP, 2, LM_NET_LOSS_BCE, 0.3, 9},
        {"id meta, 2 tables, BCE", LM_NET_META_ID, 2, LM_NET_LOSS_BCE, 0, 6},
        {"id meta, 1 table, MSE, dropout 0.2", LM_NET_META_ID, 1, LM_NET_LOSS_MSE, 0.2, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lm_net_config cfg;
        small_config(&cfg, cases[i].kind, (size_t)cases[i].ncat, cases[i].loss, cases[i].dropout);
        check_passes(cases[i].name, &cfg, cases[i].B);
    }
    /* meta features not fed to the global block */
    {
        lm_net_config cfg;
        small_config(&cfg, LM_NET_META_MLP, 1, LM_NET_LOSS_BCE, 0);
        cfg.meta_in_global = 0;
        check_passes("mlp meta, meta_in_global 0", &cfg, 5);
    }
    test_f32_vs_f64(LM_NET_META_MLP, 0);
    test_f32_vs_f64(LM_NET_META_MLP, 0.3);
    test_f32_vs_f64(LM_NET_META_ID, 0.3);

    /* again with emb_logit: the logit also gets E[0] */
    test_emb_logit_shift(LM_NET_META_MLP);
    test_emb_logit_shift(LM_NET_META_ID);
    check_emb_logit = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lm_net_config cfg;
        char name[120];
        snprintf(name, sizeof name, "emb_logit, %s", cases[i].name);
        small_config(&cfg, cases[i].kind, (size_t)cases[i].ncat, cases[i].loss, cases[i].dropout);
        check_passes(name, &cfg, cases[i].B);
    }
    test_f32_vs_f64(LM_NET_META_MLP, 0.3);
    test_f32_vs_f64(LM_NET_META_ID, 0);
    return check_summary();
}
