/* test_grad.c: the per-task meta-gradients against central finite differences, in double.
 *
 * For LiMAML and entire-network MAML, n = 1, 2, 3 inner steps, second and first order, with
 * and without the support-loss term (w = 0.5) and dropout (masks drawn once, then held fixed),
 * for the MLP and the id meta blocks, over a batch of three tasks of 3-12 support and 3-12
 * query rows:
 *   - second order: the summed meta-gradients (grad_m, grad_g) against central differences of
 *     F(theta_m, theta_g) = sum_i [L_q(theta_i^n) + w L_s(theta_i^n)], where the reference
 *     runs the inner loop itself (n explicit SGD steps with lm_net_grad), not lm_meta_task;
 *   - first order: against differences of the first-order surrogate, the same objective with
 *     each task's inner displacement theta_i^n - theta frozen at the base point;
 *   - the objective equals the reference; the adapted parameters equal n manual SGD steps;
 *     a second call with the masks kept reproduces the first bit for bit.
 * Then float against double for the task objective and meta-gradients, the plain algorithm,
 * task adaptation against manual steps, and accumulation over tasks (+=). */
#include "meta/meta_check.h"

#define H 1e-5
#define ATOL 1e-8
#define RTOL 1e-5
#define F32_ATOL 2e-6
#define F32_RTOL 1e-4
#define NTASK 3

static lm_rng rng;

/* a prefix naming the checks of the second pass, with lm_net_config.emb_logit on */
#define EL (check_emb_logit ? "emb_logit " : "")

typedef struct problem {
    lm_net n;
    lm_meta_opts o;
    int maml;
    size_t Pm, Pmf, Pg; // task slice, whole meta buffer, global buffer
    double *tm, *tg;    // tm: (Pmf) the whole meta buffer; tg: (Pg)
    size_t slice[NTASK];
    lm_rows_f64 S[NTASK], Q[NTASK];
    lm_meta_ws_f64 ws[NTASK]; // one per task, so every task keeps its dropout masks
    int keep;                 // the dropout mode of the reference: KEEP, or OFF without dropout
} problem;

static void problem_setup(problem *p, int kind, int algo, size_t steps, int first_order, double w,
                          double dropout)
{
    memset(p, 0, sizeof *p);
    lm_net_config cfg;
    small_config(&cfg, kind, 2, LM_NET_LOSS_BCE, dropout);
    net_make(&p->n, &cfg);
    lm_meta_opts_default(&p->o);
    p->o.algo = algo;
    p->o.steps = steps;
    p->o.alpha = 0.4;
    p->o.first_order = first_order;
    p->o.support_weight = w;
    p->o.dropout_mode = LM_DROPOUT_SAMPLE;
    p->maml = algo == LM_ALGO_MAML;
    p->Pm = p->n.meta_task_np, p->Pmf = p->n.meta_np, p->Pg = p->n.global_np;
    p->tm = dalloc(p->Pmf), p->tg = dalloc(p->Pg);
    lm_net_params_init_f64(&p->n, p->tm, p->tg, &rng);
    if (kind == LM_NET_META_MLP)
        for (size_t l = 0; l < p->n.meta.nlayers; l++)
            fill_uniform(p->tm + p->n.meta.b_off[l], p->n.meta.sizes[l + 1], &rng, -0.1, 0.1);
    for (size_t l = 0; l < p->n.global.nlayers; l++)
        fill_uniform(p->tg + p->n.global.b_off[l], p->n.global.sizes[l + 1], &rng, -0.1, 0.1);
    round_f32(p->tm, p->Pmf), round_f32(p->tg, p->Pg);
    static const size_t rows_of[NTASK] = {0, 2, 3}; /* id variant: task rows; 3 is the default */
    size_t max_rows = 0;
    for (int t = 0; t < NTASK; t++) {
        p->slice[t] = lm_net_meta_slice(&p->n, rows_of[t]);
        rows_make_f64(&p->S[t], &p->n, 3 + lm_rng_below(&rng, 10), &rng);
        rows_make_f64(&p->Q[t], &p->n, 3 + lm_rng_below(&rng, 10), &rng);
        max_rows = LM_MAX(max_rows, LM_MAX(p->S[t].n, p->Q[t].n));
    }
    for (int t = 0; t < NTASK; t++) {
        lm_err err = {0};
        if (lm_meta_ws_alloc_f64(&p->ws[t], &p->n, max_rows, steps, p->maml, &err) != LM_OK) {
            printf("FAIL ws: %s\n", err.msg);
            exit(1);
        }
    }
    p->keep = dropout > 0 ? LM_DROPOUT_KEEP : LM_DROPOUT_OFF;
}

static void problem_teardown(problem *p)
{
    free(p->tm), free(p->tg);
    for (int t = 0; t < NTASK; t++) {
        lm_rows_free_f64(&p->S[t]);
        lm_rows_free_f64(&p->Q[t]);
        lm_meta_ws_free_f64(&p->ws[t]);
    }
}

/* The meta-gradients of all tasks summed: g = [grad_m (Pmf) | grad_g (Pg)] (set), the summed
 * objective returned; adapted: NTASK x [meta slice | global] when not NULL. */
static double run_tasks(problem *p, int mode, double *g, double *adapted)
{
    lm_meta_opts o = p->o;
    o.dropout_mode = mode;
    memset(g, 0, (p->Pmf + p->Pg) * sizeof(double));
    double F = 0;
    for (int t = 0; t < NTASK; t++) {
        double *am = adapted ? adapted + t * (p->Pm + p->Pg) : NULL;
        double *ag = am && p->maml ? am + p->Pm : NULL;
        F += lm_meta_task_f64(&p->n, &o, &p->ws[t], p->tm + p->slice[t], p->tg, &p->S[t], &p->Q[t], am, ag,
                              g + p->slice[t], g + p->Pmf, NULL, &rng);
    }
    return F;
}

/* The reference: the inner loop by hand (lm_net_grad in the same slots, so the masks of the
 * first call are reused), then the outer objective. With `frozen` (NTASK x [Pm | Pg]
 * displacements) the inner loop is replaced by theta + frozen: the first-order surrogate.
 * adapted (may be NULL) receives each task's theta^n like run_tasks. */
static double reference(problem *p, const double *frozen, double *adapted)
{
    size_t Pm = p->Pm, Pg = p->Pg;
    double *cm = dalloc(Pm), *cg = dalloc(Pg), *gm = dalloc(Pm), *gg = dalloc(Pg), F = 0;
    for (int t = 0; t < NTASK; t++) {
        lm_meta_ws_f64 *ws = &p->ws[t];
        memcpy(cm, p->tm + p->slice[t], Pm * sizeof(double));
        memcpy(cg, p->tg, Pg * sizeof(double));
        if (frozen) {
            const double *d = frozen + t * (Pm + Pg);
            for (size_t i = 0; i < Pm; i++) cm[i] += d[i];
            for (size_t i = 0; i < Pg; i++) cg[i] += d[Pm + i];
        } else {
            for (size_t k = 0; k < p->o.steps; k++) {
                memset(gm, 0, Pm * sizeof(double));
                memset(gg, 0, Pg * sizeof(double));
                lm_net_grad_f64(&p->n, ws, k, cm, cg, &p->S[t], gm, p->maml ? gg : NULL, p->keep, NULL);
                for (size_t i = 0; i < Pm; i++) cm[i] -= p->o.alpha * gm[i];
                if (p->maml)
                    for (size_t i = 0; i < Pg; i++) cg[i] -= p->o.alpha * gg[i];
            }
        }
        size_t n = p->o.steps;
        F += lm_net_forward_f64(&p->n, ws, n, cm, cg, &p->Q[t], p->keep, NULL);
        if (p->o.support_weight > 0)
            F += p->o.support_weight * lm_net_forward_f64(&p->n, ws, n + 1, cm, cg, &p->S[t], p->keep, NULL);
        if (adapted) {
            memcpy(adapted + t * (Pm + Pg), cm, Pm * sizeof(double));
            memcpy(adapted + t * (Pm + Pg) + Pm, cg, Pg * sizeof(double));
        }
    }
    free(cm), free(cg), free(gm), free(gg);
    return F;
}

/* Central differences of the reference over [tm (Pmf) | tg (Pg)]. */
static void fd_reference(problem *p, const double *frozen, double *ref)
{
    double *x[2] = {p->tm, p->tg};
    size_t nx[2] = {p->Pmf, p->Pg}, k = 0;
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < nx[b]; i++, k++) {
            double keep = x[b][i];
            x[b][i] = keep + H;
            double fp = reference(p, frozen, NULL);
            x[b][i] = keep - H;
            double fm = reference(p, frozen, NULL);
            x[b][i] = keep;
            ref[k] = (fp - fm) / (2 * H);
        }
}

static void check_case(int kind, int algo, size_t steps, int first_order, double w, double dropout)
{
    problem p;
    problem_setup(&p, kind, algo, steps, first_order, w, dropout);
    size_t P = p.Pmf + p.Pg, PA = NTASK * (p.Pm + p.Pg);
    double *g = dalloc(P), *g2 = dalloc(P), *ref = dalloc(P), *ad = dalloc(PA), *ad_ref = dalloc(PA);
    char name[200], tag[120];
    snprintf(tag, sizeof tag, "%s%s %s n=%zu %s%s%s", EL, kind == LM_NET_META_MLP ? "mlp" : "id",
             p.maml ? "MAML" : "LiMAML", steps, first_order ? "first-order" : "second-order",
             w > 0 ? " +w*Ls" : "", dropout > 0 ? " dropout" : "");

    /* the first call draws the masks; the reference and every later call keep them */
    double F = run_tasks(&p, LM_DROPOUT_SAMPLE, g, ad);
    double F2 = run_tasks(&p, p.keep, g2, NULL);
    snprintf(name, sizeof name, "%s: masks kept reproduce the first call", tag);
    check_true(F2 == F && !memcmp(g, g2, P * sizeof(double)), "%s (F %.9f)", name, F);

    double Fref = reference(&p, NULL, ad_ref);
    snprintf(name, sizeof name, "%s: objective = reference (%.9f)", tag, Fref);
    check_close(NULL, name, &F, &Fref, 1, 1e-15, 1e-13);
    if (!p.maml) /* LiMAML leaves the global block: compare the meta slices only */
        for (int t = 0; t < NTASK; t++)
            memcpy(ad + t * (p.Pm + p.Pg) + p.Pm, ad_ref + t * (p.Pm + p.Pg) + p.Pm, p.Pg * sizeof(double));
    snprintf(name, sizeof name, "%s: adapted params = %zu manual SGD steps", tag, steps);
    check_close(NULL, name, ad, ad_ref, PA, 1e-15, 1e-12);

    if (first_order) {
        double *frozen = dalloc(PA);
        for (int t = 0; t < NTASK; t++) {
            double *d = frozen + t * (p.Pm + p.Pg);
            const double *a = ad_ref + t * (p.Pm + p.Pg);
            for (size_t i = 0; i < p.Pm; i++) d[i] = a[i] - p.tm[p.slice[t] + i];
            for (size_t i = 0; i < p.Pg; i++) d[p.Pm + i] = a[p.Pm + i] - p.tg[i];
        }
        double Fs = reference(&p, frozen, NULL);
        check_true(fabs(Fs - F) < 1e-13, "%s: surrogate at the base point = objective", tag);
        fd_reference(&p, frozen, ref);
        snprintf(name, sizeof name, "%s: meta-gradient vs FD of the surrogate", tag);
        free(frozen);
    } else {
        fd_reference(&p, NULL, ref);
        snprintf(name, sizeof name, "%s: meta-gradient vs FD", tag);
    }
    char group[160];
    snprintf(group, sizeof group, "%s%s %s %s", EL, kind == LM_NET_META_MLP ? "mlp" : "id",
             p.maml ? "MAML" : "LiMAML", first_order ? "first order" : "second order");
    check_close(group, name, g, ref, P, ATOL, RTOL);

    free(g), free(g2), free(ref), free(ad), free(ad_ref);
    problem_teardown(&p);
}

/* First and second order on one problem differ (so the second-order checks test something). */
static void test_orders_differ(int algo)
{
    problem p;
    problem_setup(&p, LM_NET_META_MLP, algo, 2, 0, 0, 0);
    size_t P = p.Pmf + p.Pg;
    double *g2 = dalloc(P), *g1 = dalloc(P);
    run_tasks(&p, LM_DROPOUT_OFF, g2, NULL);
    p.o.first_order = 1;
    run_tasks(&p, LM_DROPOUT_OFF, g1, NULL);
    double dmax = 0, gmax = 0;
    for (size_t i = 0; i < P; i++) {
        dmax = LM_MAX(dmax, fabs(g2[i] - g1[i]));
        gmax = LM_MAX(gmax, fabs(g2[i]));
    }
    check_true(dmax > 1e-3 * gmax, "%s n=2: first and second order differ (max |diff| %.3e, max |g| %.3e)",
               algo == LM_ALGO_MAML ? "MAML" : "LiMAML", dmax, gmax);
    free(g1), free(g2);
    problem_teardown(&p);
}

/* ============================================================================================
 * float against double
 * ========================================================================================== */

static void test_f32_vs_f64(int kind, int algo, size_t steps, double w, double dropout)
{
    problem p;
    problem_setup(&p, kind, algo, steps, 0, w, dropout);
    size_t P = p.Pmf + p.Pg;
    double *g64 = dalloc(P), *g32d = dalloc(P);
    float *tm = falloc(p.Pmf), *tg = falloc(p.Pg), *g32 = falloc(P);
    to_f32(tm, p.tm, p.Pmf), to_f32(tg, p.tg, p.Pg);
    lm_rows_f32 S[NTASK], Q[NTASK];
    lm_meta_ws_f32 ws[NTASK];
    lm_rng r64, r32;
    lm_rng_seed(&r64, 4242), lm_rng_seed(&r32, 4242);
    double F64 = 0, F32 = 0;
    for (int t = 0; t < NTASK; t++) {
        rows_to_f32(&S[t], &p.S[t]);
        rows_to_f32(&Q[t], &p.Q[t]);
        lm_meta_ws_alloc_f32(&ws[t], &p.n, p.ws[t].lay.max_rows, steps, p.maml, NULL);
        F64 += lm_meta_task_f64(&p.n, &p.o, &p.ws[t], p.tm + p.slice[t], p.tg, &p.S[t], &p.Q[t], NULL, NULL,
                                g64 + p.slice[t], g64 + p.Pmf, NULL, &r64);
        F32 += lm_meta_task_f32(&p.n, &p.o, &ws[t], tm + p.slice[t], tg, &S[t], &Q[t], NULL, NULL,
                                g32 + p.slice[t], g32 + p.Pmf, NULL, &r32);
    }
    to_f64(g32d, g32, P);
    char name[200];
    snprintf(name, sizeof name, "f32 vs f64: %s%s %s n=%zu%s%s: objective", EL,
             kind == LM_NET_META_MLP ? "mlp" : "id", algo == LM_ALGO_MAML ? "MAML" : "LiMAML", steps,
             w > 0 ? " +w*Ls" : "", dropout > 0 ? " dropout (same seed)" : "");
    check_close("f32 vs f64", name, &F32, &F64, 1, 1e-6, F32_RTOL);
    snprintf(name, sizeof name, "f32 vs f64: %s%s %s n=%zu%s%s: meta-gradient", EL,
             kind == LM_NET_META_MLP ? "mlp" : "id", algo == LM_ALGO_MAML ? "MAML" : "LiMAML", steps,
             w > 0 ? " +w*Ls" : "", dropout > 0 ? " dropout" : "");
    check_close("f32 vs f64", name, g32d, g64, P, F32_ATOL, F32_RTOL);
    for (int t = 0; t < NTASK; t++) {
        lm_rows_free_f32(&S[t]);
        lm_rows_free_f32(&Q[t]);
        lm_meta_ws_free_f32(&ws[t]);
    }
    free(g64), free(g32d), free(tm), free(tg), free(g32);
    problem_teardown(&p);
}

/* ============================================================================================
 * plain, adaptation, accumulation, stats
 * ========================================================================================== */

static void test_plain_and_adapt(int kind)
{
    problem p;
    problem_setup(&p, kind, LM_ALGO_LIMAML, 3, 0, 0, 0);
    size_t Pm = p.Pm, Pg = p.Pg, P = p.Pmf + Pg;
    char k[32];
    snprintf(k, sizeof k, "%s%s", EL, kind == LM_NET_META_MLP ? "mlp" : "id");
    double *g = dalloc(P), *ref = dalloc(P);

    /* plain: the gradient of the query loss at theta, summed over tasks */
    p.o.algo = LM_ALGO_PLAIN;
    double F = run_tasks(&p, LM_DROPOUT_OFF, g, NULL), Fr = 0;
    for (int t = 0; t < NTASK; t++)
        Fr += lm_net_grad_f64(&p.n, &p.ws[t], 0, p.tm + p.slice[t], p.tg, &p.Q[t], ref + p.slice[t],
                              ref + p.Pmf, LM_DROPOUT_OFF, NULL);
    char name[160];
    snprintf(name, sizeof name, "%s plain: summed gradient = lm_net_grad over the tasks", k);
    check_close(NULL, name, g, ref, P, 0, 0);
    check_true(F == Fr, "%s plain: objective = summed query loss (%.9f)", k, F);

    /* adaptation: LiMAML (meta block) and MAML (both), k steps on the support rows, equal to the
     * inner loop of lm_meta_task and to manual steps */
    for (int maml = 0; maml < 2; maml++) {
        size_t steps = 3;
        double *om = dalloc(Pm), *og = dalloc(Pg), *am = dalloc(Pm), *ag = dalloc(Pg);
        double *cm = dalloc(Pm), *cg = dalloc(Pg), *gm = dalloc(Pm), *gg = dalloc(Pg);
        lm_meta_ws_f64 ws;
        lm_meta_ws_alloc_f64(&ws, &p.n, p.ws[0].lay.max_rows, steps, maml, NULL);
        const double *tm = p.tm + p.slice[1];
        double l0 = lm_meta_adapt_f64(&p.n, &ws, maml ? LM_ALGO_MAML : LM_ALGO_LIMAML, steps, 0.4, tm, p.tg,
                                      &p.S[1], om, maml ? og : NULL, LM_DROPOUT_OFF, NULL);
        memcpy(cm, tm, Pm * sizeof(double));
        memcpy(cg, p.tg, Pg * sizeof(double));
        double m0 = 0;
        for (size_t s = 0; s < steps; s++) {
            memset(gm, 0, Pm * sizeof(double));
            memset(gg, 0, Pg * sizeof(double));
            double l =
                lm_net_grad_f64(&p.n, &ws, 0, cm, cg, &p.S[1], gm, maml ? gg : NULL, LM_DROPOUT_OFF, NULL);
            if (s == 0) m0 = l;
            for (size_t i = 0; i < Pm; i++) cm[i] -= 0.4 * gm[i];
            if (maml)
                for (size_t i = 0; i < Pg; i++) cg[i] -= 0.4 * gg[i];
        }
        snprintf(name, sizeof name, "%s adapt (%s, 3 steps): meta block = manual SGD", k,
                 maml ? "MAML" : "LiMAML");
        check_close(NULL, name, om, cm, Pm, 0, 0);
        if (maml) {
            snprintf(name, sizeof name, "%s adapt (MAML, 3 steps): global block = manual SGD", k);
            check_close(NULL, name, og, cg, Pg, 0, 0);
        }
        check_true(l0 == m0, "%s adapt returns the loss before adapting (%.6f)", k, l0);
        if (maml) { /* the vanilla baseline's fine-tuning moves the whole network too */
            double *pm = dalloc(Pm), *pg = dalloc(Pg);
            lm_meta_adapt_f64(&p.n, &ws, LM_ALGO_PLAIN, steps, 0.4, tm, p.tg, &p.S[1], pm, pg, LM_DROPOUT_OFF,
                              NULL);
            snprintf(name, sizeof name, "%s adapt (PLAIN): both blocks = manual SGD", k);
            check_true(!memcmp(pm, cm, Pm * sizeof(double)) && !memcmp(pg, cg, Pg * sizeof(double)), "%s",
                       name);
            free(pm), free(pg);
        }
        lm_meta_opts o = p.o;
        o.algo = maml ? LM_ALGO_MAML : LM_ALGO_LIMAML;
        o.steps = steps;
        o.dropout_mode = LM_DROPOUT_OFF;
        lm_meta_stats st;
        lm_meta_task_f64(&p.n, &o, &ws, tm, p.tg, &p.S[1], &p.Q[1], am, maml ? ag : NULL, NULL, NULL, &st,
                         NULL);
        snprintf(name, sizeof name, "%s adapt = lm_meta_task's adapted meta block (%s)", k,
                 maml ? "MAML" : "LiMAML");
        check_close(NULL, name, om, am, Pm, 0, 0);
        check_true(st.support_loss == l0 && st.objective == st.query_loss,
                   "%s stats: support loss before %.6f, query after %.6f", k, st.support_loss, st.query_loss);
        /* in place */
        memcpy(cm, tm, Pm * sizeof(double));
        lm_meta_adapt_f64(&p.n, &ws, LM_ALGO_LIMAML, steps, 0.4, cm, p.tg, &p.S[1], cm, NULL, LM_DROPOUT_OFF,
                          NULL);
        if (!maml) check_close(NULL, "adapt in place", cm, om, Pm, 0, 0);
        /* the meta embedding of Algorithm 2b: the adapted block on the latest example */
        double E[3], Eref[3];
        lm_rows_f64 last = lm_rows_view_f64(&p.S[1], p.S[1].n - 1, 1);
        lm_net_embed_f64(&p.n, &ws, om, last.meta, 1, E);
        lm_net_forward_f64(&p.n, &ws, 0, om, p.tg, &last, LM_DROPOUT_OFF, NULL);
        memcpy(Eref, ws.buf + ws.lay.off_slots + ws.lay.st_E, sizeof Eref);
        check_close(NULL, "meta embedding = the meta block's output on the latest example", E, Eref, 3, 0, 0);
        lm_meta_ws_free_f64(&ws);
        free(om), free(og), free(am), free(ag), free(cm), free(cg), free(gm), free(gg);
    }

    /* accumulation: a nonzero gradient buffer gets the meta-gradient added */
    p.o.algo = LM_ALGO_LIMAML;
    p.o.steps = 2;
    double *acc = dalloc(P), *once = dalloc(P);
    run_tasks(&p, LM_DROPOUT_OFF, once, NULL);
    for (size_t i = 0; i < P; i++) acc[i] = 1.0;
    for (int t = 0; t < NTASK; t++)
        lm_meta_task_f64(&p.n, &p.o, &p.ws[t], p.tm + p.slice[t], p.tg, &p.S[t], &p.Q[t], NULL, NULL,
                         acc + p.slice[t], acc + p.Pmf, NULL, NULL);
    for (size_t i = 0; i < P; i++) once[i] += 1.0;
    check_close(NULL, "meta-gradients add into the caller's buffers (+=)", acc, once, P, 1e-15, 1e-14);
    free(acc), free(once), free(g), free(ref);
    problem_teardown(&p);
}

/* A task with an empty support set adapts nothing; steps = 0 is the plain gradient on the query. */
static void test_edges(void)
{
    problem p;
    problem_setup(&p, LM_NET_META_MLP, LM_ALGO_LIMAML, 2, 0, 0.5, 0);
    size_t P = p.Pmf + p.Pg;
    double *g = dalloc(P), *ref = dalloc(P), *am = dalloc(p.Pm);
    lm_rows_f64 empty = lm_rows_view_f64(&p.S[0], 0, 0);
    p.o.dropout_mode = LM_DROPOUT_OFF;
    double F = lm_meta_task_f64(&p.n, &p.o, &p.ws[0], p.tm, p.tg, &empty, &p.Q[0], am, NULL, g, g + p.Pmf,
                                NULL, NULL);
    double Fr =
        lm_net_grad_f64(&p.n, &p.ws[0], 0, p.tm, p.tg, &p.Q[0], ref, ref + p.Pmf, LM_DROPOUT_OFF, NULL);
    check_close(NULL, "empty support: the meta-gradient is the plain query gradient", g, ref, P, 1e-15,
                1e-13);
    check_close(NULL, "empty support: adapted = theta", am, p.tm, p.Pm, 0, 0);
    check_true(fabs(F - Fr) < 1e-15, "empty support: objective = query loss");
    memset(g, 0, P * sizeof(double));
    p.o.steps = 0, p.o.support_weight = 0;
    lm_meta_task_f64(&p.n, &p.o, &p.ws[0], p.tm, p.tg, NULL, &p.Q[0], NULL, NULL, g, g + p.Pmf, NULL, NULL);
    check_close(NULL, "n = 0: the meta-gradient is the plain query gradient", g, ref, P, 1e-15, 1e-13);
    free(g), free(ref), free(am);
    problem_teardown(&p);
}

int main(void)
{
    lm_rng_seed(&rng, 1637528);
    for (int kind = 0; kind < 2; kind++)
        for (int algo = LM_ALGO_LIMAML; algo <= LM_ALGO_MAML; algo++)
            for (size_t steps = 1; steps <= 3; steps++)
                for (int fo = 0; fo < 2; fo++)
                    for (int variant = 0; variant < 3; variant++) {
                        /* plain; + support loss; + support loss and dropout (the id variant
                         * runs the last one only, at n = 2) */
                        if (kind == LM_NET_META_ID && (variant != 2 || steps != 2)) continue;
                        double w = variant ? 0.5 : 0, dropout = variant == 2 ? 0.25 : 0;
                        check_case(kind, algo, steps, fo, w, dropout);
                    }
    check_case(LM_NET_META_MLP, LM_ALGO_LIMAML, 2, 0, 0, 0.25); /* dropout without w */
    check_case(LM_NET_META_ID, LM_ALGO_LIMAML, 1, 0, 0, 0);
    check_case(LM_NET_META_ID, LM_ALGO_MAML, 3, 0, 0, 0);
    test_orders_differ(LM_ALGO_LIMAML);
    test_orders_differ(LM_ALGO_MAML);

    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_LIMAML, 1, 0, 0);
    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_LIMAML, 3, 0.5, 0.25);
    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_MAML, 2, 0, 0);
    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_MAML, 3, 0.5, 0.25);
    test_f32_vs_f64(LM_NET_META_ID, LM_ALGO_LIMAML, 2, 0.5, 0.25);
    test_f32_vs_f64(LM_NET_META_ID, LM_ALGO_MAML, 1, 0, 0);

    test_plain_and_adapt(LM_NET_META_MLP);
    test_plain_and_adapt(LM_NET_META_ID);
    test_edges();

    /* again with emb_logit (the logit also gets E[0]): both blocks, both algorithms, first and
     * second order, with the support loss and dropout */
    check_emb_logit = 1;
    for (int kind = 0; kind < 2; kind++)
        for (int algo = LM_ALGO_LIMAML; algo <= LM_ALGO_MAML; algo++)
            for (size_t steps = 1; steps <= 2; steps++)
                for (int fo = 0; fo < 2; fo++) check_case(kind, algo, steps, fo, steps == 2 ? 0.5 : 0, 0);
    check_case(LM_NET_META_MLP, LM_ALGO_LIMAML, 3, 0, 0.5, 0.25);
    check_case(LM_NET_META_ID, LM_ALGO_MAML, 2, 0, 0.5, 0.25);
    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_LIMAML, 3, 0.5, 0.25);
    test_f32_vs_f64(LM_NET_META_MLP, LM_ALGO_MAML, 2, 0, 0);
    test_f32_vs_f64(LM_NET_META_ID, LM_ALGO_LIMAML, 2, 0.5, 0);
    test_plain_and_adapt(LM_NET_META_MLP);
    test_plain_and_adapt(LM_NET_META_ID);
    return check_summary();
}
