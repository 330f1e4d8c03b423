/* algo_impl.h: the per-task algorithms (LiMAML, entire-network MAML, plain, adaptation),
 * written once over REAL and instantiated by meta_f32.c and meta_f64.c after net_impl.h
 * (never include it elsewhere). The backward pass through the inner loop is derived in
 * docs/META.md; in short, with F = L_q(theta^n) + w L_s(theta^n) and
 * theta^{k+1} = theta^k - alpha grad L_s(theta^k) on the adapted block(s):
 *
 *   a_n = grad_adapted F(theta^n)                 (the adjoint of theta^n)
 *   a_k = a_{k+1} - alpha H_s(theta^k) a_{k+1}    (k = n-1 .. 0; H over the adapted block(s))
 *   LiMAML only: grad_g += grad_g F(theta^n) - alpha sum_k H_gm,s(theta^k) a_{k+1}
 *   meta-gradient of the adapted block(s) = a_0
 *
 * Each H v is one lm_net_hvp along v = -alpha a_{k+1} that adds straight into a (and, for
 * LiMAML, into the caller's grad_g). The support forward at theta^k is CACHED in slot k
 * during the inner loop (its activations, masks and the iterate theta^k itself), so the
 * backward sweep costs one tangent sweep per step and no forward recomputation; the price
 * is n slots of workspace. */

/* theta^k: k = 0 is the caller's parameters, k >= 1 the stored iterates. For LiMAML the
 * global block is theta_g at every k. */
typedef struct iterate {
    REAL *m; // (P_m)
    REAL *g; // (P_g)
} iterate;

static iterate iter_at(const lm_net *n, const WS *ws, size_t k, const REAL *theta_m, const REAL *theta_g,
                       int maml)
{
    iterate it;
    if (k == 0) {
        it.m = (REAL *)theta_m;
        it.g = (REAL *)theta_g;
        return it;
    }
    LM_ASSERT(k <= ws->lay.max_steps);
    REAL *base = ws->buf + ws->lay.off_iter + (k - 1) * ws->lay.p_adapt;
    it.m = base;
    it.g = maml ? base + n->meta_task_np : (REAL *)theta_g;
    return it;
}

/* y = x - alpha g */
static void sgd_step(REAL *y, const REAL *x, const REAL *g, REAL alpha, size_t count)
{
    for (size_t i = 0; i < count; i++) y[i] = x[i] - alpha * g[i];
}

double LM_META_FN(lm_meta_task)(const lm_net *n, const lm_meta_opts *o, WS *ws, const REAL *theta_m,
                                const REAL *theta_g, const ROWS *support, const ROWS *query, REAL *adapted_m,
                                REAL *adapted_g, REAL *grad_m, REAL *grad_g, lm_meta_stats *stats,
                                lm_rng *rng)
{
    LM_ASSERT(n && o && ws && theta_m && theta_g && query);
    LM_ASSERT(!grad_m == !grad_g);
    size_t Pm = n->meta_task_np, Pg = n->global_np;
    int want = grad_m != NULL, mode = o->dropout_mode;
    lm_meta_stats st = {0, 0, 0, 0};

    if (o->algo == LM_ALGO_PLAIN) {
        LM_ASSERT(!adapted_g);
        st.query_loss = LM_META_FN(lm_net_forward)(n, ws, 0, theta_m, theta_g, query, mode, rng);
        if (want) LM_META_FN(lm_net_backward)(n, ws, 0, theta_m, theta_g, query, 1.0, grad_m, grad_g);
        if (adapted_m) memcpy(adapted_m, theta_m, Pm * sizeof *adapted_m);
        st.objective = st.query_loss;
        if (stats) *stats = st;
        return st.objective;
    }

    LM_ASSERT(o->algo == LM_ALGO_LIMAML || o->algo == LM_ALGO_MAML);
    int maml = o->algo == LM_ALGO_MAML;
    size_t nsteps = o->steps, P = Pm + (maml ? Pg : 0);
    double w = o->support_weight;
    REAL alpha = (REAL)o->alpha;
    LM_ASSERT(!maml || ws->lay.adapt_global);
    LM_ASSERT(maml || !adapted_g);
    LM_ASSERT(nsteps <= ws->lay.max_steps);
    LM_ASSERT(w >= 0);
    LM_ASSERT(support || (nsteps == 0 && w == 0));
    REAL *g = WSP(ws, off_g), *a = WSP(ws, off_a), *v = WSP(ws, off_v);

    /* ---- inner loop: theta^{k+1} = theta^k - alpha grad L_s(theta^k), forward kept in slot k */
    for (size_t k = 0; k < nsteps; k++) {
        iterate it = iter_at(n, ws, k, theta_m, theta_g, maml);
        iterate nx = iter_at(n, ws, k + 1, theta_m, theta_g, maml);
        double loss = LM_META_FN(lm_net_forward)(n, ws, k, it.m, it.g, support, mode, rng);
        if (k == 0) st.support_loss = loss;
        vzero(g, P);
        LM_META_FN(lm_net_backward)(n, ws, k, it.m, it.g, support, 1.0, g, maml ? g + Pm : NULL);
        sgd_step(nx.m, it.m, g, alpha, Pm);
        if (maml) sgd_step(nx.g, it.g, g + Pm, alpha, Pg);
    }

    /* ---- outer objective at theta^n */
    iterate itn = iter_at(n, ws, nsteps, theta_m, theta_g, maml);
    st.query_loss = LM_META_FN(lm_net_forward)(n, ws, nsteps, itn.m, itn.g, query, mode, rng);
    if (w > 0)
        st.support_loss_after =
            LM_META_FN(lm_net_forward)(n, ws, nsteps + 1, itn.m, itn.g, support, mode, rng);
    st.objective = st.query_loss + w * st.support_loss_after;

    if (want) {
        /* a_n = grad F(theta^n) on the adapted block(s); for LiMAML the global part of the
         * gradient goes straight to the caller's grad_g */
        REAL *a_g = maml ? a + Pm : grad_g;
        vzero(a, P);
        LM_META_FN(lm_net_backward)(n, ws, nsteps, itn.m, itn.g, query, 1.0, a, a_g);
        if (w > 0) LM_META_FN(lm_net_backward)(n, ws, nsteps + 1, itn.m, itn.g, support, w, a, a_g);
        /* ---- backward through the inner steps: a_k = a_{k+1} + H_s(theta^k) v, v = -alpha
         * a_{k+1}; for LiMAML the same sweep adds H_gm v into grad_g */
        if (!o->first_order) {
            for (size_t k = nsteps; k-- > 0;) {
                iterate it = iter_at(n, ws, k, theta_m, theta_g, maml);
                for (size_t i = 0; i < P; i++) v[i] = -alpha * a[i];
                LM_META_FN(lm_net_hvp)(n, ws, k, it.m, it.g, support, v, maml ? v + Pm : NULL, 1.0, a, a_g);
            }
        }
        vaxpy_r(grad_m, 1, a, Pm);
        if (maml) vaxpy_r(grad_g, 1, a + Pm, Pg);
    }
    if (adapted_m) memcpy(adapted_m, itn.m, Pm * sizeof *adapted_m);
    if (adapted_g) memcpy(adapted_g, itn.g, Pg * sizeof *adapted_g);
    if (stats) *stats = st;
    return st.objective;
}

double LM_META_FN(lm_meta_adapt)(const lm_net *n, WS *ws, int algo, size_t steps, double alpha,
                                 const REAL *theta_m, const REAL *theta_g, const ROWS *r, REAL *out_m,
                                 REAL *out_g, int dropout_mode, lm_rng *rng)
{
    LM_ASSERT(n && ws && theta_m && theta_g && r && out_m);
    LM_ASSERT(algo == LM_ALGO_PLAIN || algo == LM_ALGO_LIMAML || algo == LM_ALGO_MAML);
    int maml = algo != LM_ALGO_LIMAML; /* MAML and the plain baseline fine-tune everything */
    LM_ASSERT(maml ? out_g && ws->lay.adapt_global : !out_g);
    size_t Pm = n->meta_task_np, Pg = n->global_np;
    if (out_m != theta_m) memcpy(out_m, theta_m, Pm * sizeof *out_m);
    if (maml && out_g != theta_g) memcpy(out_g, theta_g, Pg * sizeof *out_g);
    const REAL *cur_g = maml ? out_g : theta_g;
    REAL *g = WSP(ws, off_g);
    double first = 0;
    for (size_t k = 0; k < steps && r->n; k++) {
        vzero(g, Pm + (maml ? Pg : 0));
        double loss =
            LM_META_FN(lm_net_grad)(n, ws, 0, out_m, cur_g, r, g, maml ? g + Pm : NULL, dropout_mode, rng);
        if (k == 0) first = loss;
        sgd_step(out_m, out_m, g, (REAL)alpha, Pm);
        if (maml) sgd_step(out_g, out_g, g + Pm, (REAL)alpha, Pg);
    }
    return first;
}
