/* test_torch_ref.c: the per-task meta-gradients against PyTorch (tools/torch_ref.py).
 *
 * For a dozen small networks and algorithms (LiMAML n = 1, 2, 3 second order and first order,
 * entire-network MAML n = 1, 2, 3, the support-loss term w = 3, an id meta block, MSE without
 * the meta features in the global block, the plain gradient), each over three tasks of 5-12
 * support and 3-8 query rows with seeded random features and labels, dropout off:
 *   1. run lm_meta_task in float and in double (objective and losses per task, adapted
 *      parameters per task, meta-gradients summed over the tasks);
 *   2. write the inputs (theta_m, theta_g, every task's rows, the options and the layout as
 *      metadata) and these outputs to case_K.safetensors with lm_st_write;
 *   3. run tools/torch_ref.py ONCE over all the cases with the Python named by
 *      $LM_PYREF_PYTHON (scripts/setup-pyref.sh makes one). It opens our files with
 *      safetensors.torch.load_file, rebuilds the network from the flat buffers, runs the
 *      algorithm with autograd (create_graph=True for second order) in float32 and float64,
 *      and writes case_K.ref.safetensors;
 *   4. compare elementwise, |a - ref| <= atol + rtol |ref|: float against PyTorch's float32
 *      (atol 1e-6, rtol 1e-4, and normwise max|diff| / max|ref| <= 1e-4 over both
 *      meta-gradients), double against float64 (atol 1e-12, rtol 1e-9). For second-order
 *      cases, the first-order meta-gradient must be far from the reference (so the
 *      comparison has teeth).
 *
 * Both files carry the metadata key "lm_torchref" (the format version, "1") as magic.
 *
 * Environment: LM_TMP (scratch; the cases go to LM_TMP/meta_torch_ref.PID, removed on
 * success); LM_PYREF_PYTHON (a Python with torch and safetensors); LM_REQUIRE_TORCH=1 makes a
 * missing LM_PYREF_PYTHON a failure (CI), otherwise the PyTorch part is skipped with a
 * message; LM_SRC (the source root, to find tools/torch_ref.py; default: derived from this
 * file's path at compile time). */
#include "meta/meta_check.h"
#include "lm_testfs.h"
#include "model/safetensors.h"

#include <inttypes.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define REF_MAGIC "lm_torchref"
#define REF_VERSION "1"
#define F32_ATOL 1e-6
#define F32_RTOL 1e-4
#define F64_ATOL 1e-12
#define F64_RTOL 1e-9
#define NTASK 3
#define MAX_CASES 16
#define MAX_TENSORS 64

/* ============================================================================================
 * the cases
 * ========================================================================================== */

typedef struct tcase {
    const char *name;
    int meta_kind, loss, algo;
    size_t steps;
    double alpha; /* exactly representable in float, so both sides step alike */
    int first_order;
    double w; /* support_weight */
    size_t nmeta_hidden, meta_hidden[2];
    size_t nglobal_hidden, global_hidden[2];
    int meta_in_global;
    int emb_logit; /* lm_net_config.emb_logit: the logit also gets E[0] */
} tcase;

#define MLP LM_NET_META_MLP
#define BCE LM_NET_LOSS_BCE
static const tcase cases[] = {
    /* name, meta kind, loss, algo, steps, alpha, first order, w, meta hidden, global hidden,
     * meta features in the global block, emb_logit */
    {"LiMAML n=1", MLP, BCE, LM_ALGO_LIMAML, 1, 0.5, 0, 0, 1, {6}, 2, {8, 5}, 1, 0},
    {"LiMAML n=2", MLP, BCE, LM_ALGO_LIMAML, 2, 0.5, 0, 0, 1, {6}, 1, {8}, 1, 0},
    {"LiMAML n=3", MLP, BCE, LM_ALGO_LIMAML, 3, 0.5, 0, 0, 2, {6, 4}, 2, {8, 5}, 1, 0},
    {"LiMAML n=2 first-order", MLP, BCE, LM_ALGO_LIMAML, 2, 0.5, 1, 0, 1, {6}, 2, {8, 5}, 1, 0},
    {"MAML n=1", MLP, BCE, LM_ALGO_MAML, 1, 0.5, 0, 0, 1, {6}, 2, {8, 5}, 1, 0},
    {"MAML n=2", MLP, BCE, LM_ALGO_MAML, 2, 0.5, 0, 0, 1, {6}, 1, {8}, 1, 0},
    {"LiMAML n=2 w=3", MLP, BCE, LM_ALGO_LIMAML, 2, 0.5, 0, 3, 1, {6}, 2, {8, 5}, 1, 0},
    {"MAML n=2 w=3 first-order", MLP, BCE, LM_ALGO_MAML, 2, 0.5, 1, 3, 1, {6}, 2, {8, 5}, 1, 0},
    {"MAML n=3 no meta hidden", MLP, BCE, LM_ALGO_MAML, 3, 0.375, 0, 0, 0, {0}, 2, {8, 5}, 1, 0},
    {"LiMAML id n=2", LM_NET_META_ID, BCE, LM_ALGO_LIMAML, 2, 0.5, 0, 0, 0, {0}, 2, {8, 5}, 1, 0},
    {"LiMAML n=2 mse, no meta in global",
     MLP,
     LM_NET_LOSS_MSE,
     LM_ALGO_LIMAML,
     2,
     0.125,
     0,
     0,
     1,
     {6},
     2,
     {8, 5},
     0,
     0},
    {"plain", MLP, BCE, LM_ALGO_PLAIN, 0, 0.5, 0, 0, 1, {6}, 2, {8, 5}, 1, 0},
    /* emb_logit: the logit also gets E[0] */
    {"LiMAML n=2 w=3 emb_logit", MLP, BCE, LM_ALGO_LIMAML, 2, 0.5, 0, 3, 1, {6}, 2, {8, 5}, 1, 1},
    {"MAML n=2 emb_logit", MLP, BCE, LM_ALGO_MAML, 2, 0.5, 0, 0, 1, {6}, 1, {8}, 1, 1},
    {"LiMAML id n=2 mse emb_logit",
     LM_NET_META_ID,
     LM_NET_LOSS_MSE,
     LM_ALGO_LIMAML,
     2,
     0.125,
     0,
     0,
     0,
     {0},
     2,
     {8, 5},
     1,
     1},
};
#undef MLP
#undef BCE
#define NCASES (sizeof cases / sizeof cases[0])

static const char *const algo_names[] = {"plain", "limaml", "maml"};
static const size_t id_task_rows[NTASK] = {0, 2, 3}; /* id variant: 3 is the default row */

/* One case set up and run by the C kernels, both precisions. */
typedef struct run {
    const tcase *tc;
    lm_net n;
    int maml, mlp;
    size_t Pm, Pmf, Pg; /* task slice, whole meta buffer, global buffer */
    size_t slice[NTASK], row[NTASK];
    float *tm, *tg; /* the inputs: tm: (Pmf), tg: (Pg) */
    lm_rows_f32 S[NTASK], Q[NTASK];
    lm_rows_f64 S64[NTASK], Q64[NTASK];
    /* outputs, "c32" and "c64": loss (NTASK, 4), adapted_m (NTASK, Pm), adapted_g (NTASK, Pg)
     * for MAML, grad_m (Pmf), grad_g (Pg); c32 gradients in float, kept as double here */
    double loss32[NTASK * 4], loss64[NTASK * 4];
    float *am32, *ag32, *gm32, *gg32;
    double *am64, *ag64, *gm64, *gg64;
    double *fo_g; /* second-order cases: the first-order [grad_m | grad_g] */
} run;

static void config_of(lm_net_config *c, const tcase *tc)
{
    small_config(c, tc->meta_kind, 2, tc->loss, 0.0);
    c->nmeta_hidden = tc->nmeta_hidden;
    for (size_t i = 0; i < tc->nmeta_hidden; i++) c->meta_hidden[i] = tc->meta_hidden[i];
    c->nglobal_hidden = tc->nglobal_hidden;
    for (size_t i = 0; i < tc->nglobal_hidden; i++) c->global_hidden[i] = tc->global_hidden[i];
    c->meta_in_global = tc->meta_in_global;
    c->emb_logit = tc->emb_logit;
}

static void ws_make_f32(lm_meta_ws_f32 *ws, const lm_net *n, size_t rows, size_t steps, int g)
{
    lm_err err = {0};
    if (lm_meta_ws_alloc_f32(ws, n, rows, steps, g, &err) != LM_OK) {
        printf("FAIL ws: %s\n", err.msg);
        exit(1);
    }
}

static void ws_make_f64(lm_meta_ws_f64 *ws, const lm_net *n, size_t rows, size_t steps, int g)
{
    lm_err err = {0};
    if (lm_meta_ws_alloc_f64(ws, n, rows, steps, g, &err) != LM_OK) {
        printf("FAIL ws: %s\n", err.msg);
        exit(1);
    }
}

static void stats_put(double *dst, const lm_meta_stats *s)
{
    dst[0] = s->objective, dst[1] = s->query_loss, dst[2] = s->support_loss;
    dst[3] = s->support_loss_after;
}

/* Set up case `tc` with seeded parameters and rows, and run lm_meta_task over its tasks in
 * float and double (plus, for second-order cases, the first-order variant in float). */
static void run_case(run *r, const tcase *tc, lm_rng *rng)
{
    memset(r, 0, sizeof *r);
    r->tc = tc;
    lm_net_config cfg;
    config_of(&cfg, tc);
    net_make(&r->n, &cfg);
    r->maml = tc->algo == LM_ALGO_MAML;
    r->mlp = tc->meta_kind == LM_NET_META_MLP;
    r->Pm = r->n.meta_task_np, r->Pmf = r->n.meta_np, r->Pg = r->n.global_np;

    /* parameters: the library's init, nonzero biases, rounded to float */
    double *tm = dalloc(r->Pmf), *tg = dalloc(r->Pg);
    lm_net_params_init_f64(&r->n, tm, tg, rng);
    if (r->mlp)
        for (size_t l = 0; l < r->n.meta.nlayers; l++)
            fill_uniform(tm + r->n.meta.b_off[l], r->n.meta.sizes[l + 1], rng, -0.1, 0.1);
    for (size_t l = 0; l < r->n.global.nlayers; l++)
        fill_uniform(tg + r->n.global.b_off[l], r->n.global.sizes[l + 1], rng, -0.1, 0.1);
    r->tm = falloc(r->Pmf), r->tg = falloc(r->Pg);
    to_f32(r->tm, tm, r->Pmf), to_f32(r->tg, tg, r->Pg);
    to_f64(tm, r->tm, r->Pmf), to_f64(tg, r->tg, r->Pg);

    /* rows: rows_make_f64 rounds the values to float */
    size_t max_rows = 1;
    for (int t = 0; t < NTASK; t++) {
        r->row[t] = r->mlp ? 0 : id_task_rows[t];
        r->slice[t] = lm_net_meta_slice(&r->n, r->row[t]);
        rows_make_f64(&r->S64[t], &r->n, 5 + lm_rng_below(rng, 8), rng);
        rows_make_f64(&r->Q64[t], &r->n, 3 + lm_rng_below(rng, 6), rng);
        rows_to_f32(&r->S[t], &r->S64[t]);
        rows_to_f32(&r->Q[t], &r->Q64[t]);
        max_rows = LM_MAX(max_rows, LM_MAX(r->S[t].n, r->Q[t].n));
    }

    lm_meta_opts o;
    lm_meta_opts_default(&o);
    o.algo = tc->algo;
    o.steps = tc->steps;
    o.alpha = tc->alpha;
    o.first_order = tc->first_order;
    o.support_weight = tc->w;
    o.dropout_mode = LM_DROPOUT_OFF;

    size_t Pm = r->Pm, Pg = r->Pg;
    r->am32 = falloc(NTASK * Pm), r->ag32 = falloc(NTASK * Pg);
    r->gm32 = falloc(r->Pmf), r->gg32 = falloc(Pg);
    r->am64 = dalloc(NTASK * Pm), r->ag64 = dalloc(NTASK * Pg);
    r->gm64 = dalloc(r->Pmf), r->gg64 = dalloc(Pg);
    lm_meta_ws_f32 ws32;
    lm_meta_ws_f64 ws64;
    ws_make_f32(&ws32, &r->n, max_rows, tc->steps, r->maml);
    ws_make_f64(&ws64, &r->n, max_rows, tc->steps, r->maml);
    for (int t = 0; t < NTASK; t++) {
        lm_meta_stats st;
        lm_meta_task_f32(&r->n, &o, &ws32, r->tm + r->slice[t], r->tg, &r->S[t], &r->Q[t], r->am32 + t * Pm,
                         r->maml ? r->ag32 + t * Pg : NULL, r->gm32 + r->slice[t], r->gg32, &st, NULL);
        stats_put(r->loss32 + 4 * t, &st);
        lm_meta_task_f64(&r->n, &o, &ws64, tm + r->slice[t], tg, &r->S64[t], &r->Q64[t], r->am64 + t * Pm,
                         r->maml ? r->ag64 + t * Pg : NULL, r->gm64 + r->slice[t], r->gg64, &st, NULL);
        stats_put(r->loss64 + 4 * t, &st);
    }
    if (tc->algo != LM_ALGO_PLAIN && !tc->first_order && tc->steps > 0) {
        lm_meta_opts fo = o;
        fo.first_order = 1;
        float *gm = falloc(r->Pmf), *gg = falloc(Pg);
        for (int t = 0; t < NTASK; t++)
            lm_meta_task_f32(&r->n, &fo, &ws32, r->tm + r->slice[t], r->tg, &r->S[t], &r->Q[t], NULL, NULL,
                             gm + r->slice[t], gg, NULL, NULL);
        r->fo_g = dalloc(r->Pmf + Pg);
        to_f64(r->fo_g, gm, r->Pmf);
        to_f64(r->fo_g + r->Pmf, gg, Pg);
        free(gm), free(gg);
    }
    lm_meta_ws_free_f32(&ws32);
    lm_meta_ws_free_f64(&ws64);
    free(tm), free(tg);
}

static void run_free(run *r)
{
    for (int t = 0; t < NTASK; t++) {
        lm_rows_free_f32(&r->S[t]), lm_rows_free_f32(&r->Q[t]);
        lm_rows_free_f64(&r->S64[t]), lm_rows_free_f64(&r->Q64[t]);
    }
    free(r->tm), free(r->tg);
    free(r->am32), free(r->ag32), free(r->gm32), free(r->gg32);
    free(r->am64), free(r->ag64), free(r->gm64), free(r->gg64);
    free(r->fo_g);
}

/* ============================================================================================
 * the case file
 * ========================================================================================== */

typedef struct st_list {
    lm_st_tensor t[MAX_TENSORS];
    void *owned[MAX_TENSORS];
    size_t n, nowned;
} st_list;

/* Add a tensor of shape (d0) or (d0, d1) (d1 = 0) pointing at `data`, kept alive by the
 * caller until the write. */
static void st_add(st_list *l, const char *name, int dtype, const void *data, size_t d0, size_t d1)
{
    LM_ASSERT(l->n < MAX_TENSORS && d0 > 0);
    lm_st_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = d0 * (d1 ? d1 : 1) * lm_dt_size(dtype);
}

static void *st_own(st_list *l, void *p)
{
    LM_ASSERT(l->nowned < MAX_TENSORS);
    return l->owned[l->nowned++] = p;
}

static void st_list_free(st_list *l)
{
    for (size_t i = 0; i < l->nowned; i++) free(l->owned[i]);
}

/* Widest dtype first, so every tensor's bytes are aligned to its element size (PyTorch maps
 * the data as is). Stable. */
static void st_sort(st_list *l)
{
    for (size_t i = 1; i < l->n; i++)
        for (size_t j = i; j > 0 && lm_dt_size(l->t[j].dtype) > lm_dt_size(l->t[j - 1].dtype); j--) {
            lm_st_tensor tmp = l->t[j];
            l->t[j] = l->t[j - 1];
            l->t[j - 1] = tmp;
        }
}

static char *join_sizes(char *buf, size_t cap, const size_t *v, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%zu", i ? "," : "", v[i]);
    LM_ASSERT(used < cap);
    return buf;
}

static void add_rows(st_list *l, int t, const char *split, const lm_rows_f32 *r)
{
    char name[64];
    snprintf(name, sizeof name, "t%d.%s.meta", t, split);
    st_add(l, name, LM_DT_F32, r->meta, r->n, r->nmeta);
    snprintf(name, sizeof name, "t%d.%s.dense", t, split);
    st_add(l, name, LM_DT_F32, r->dense, r->n, r->ndense);
    int64_t *cat = st_own(l, xcalloc(r->n * r->ncat, sizeof *cat));
    for (size_t i = 0; i < r->n * r->ncat; i++) cat[i] = r->cat[i];
    snprintf(name, sizeof name, "t%d.%s.cat", t, split);
    st_add(l, name, LM_DT_I64, cat, r->n, r->ncat);
    snprintf(name, sizeof name, "t%d.%s.label", t, split);
    st_add(l, name, LM_DT_F32, r->label, r->n, 0);
}

static int write_case(const run *r, const char *path)
{
    const tcase *tc = r->tc;
    const lm_net *n = &r->n;
    st_list l;
    memset(&l, 0, sizeof l);
    st_add(&l, "theta_m", LM_DT_F32, r->tm, r->Pmf, 0);
    st_add(&l, "theta_g", LM_DT_F32, r->tg, r->Pg, 0);
    for (int t = 0; t < NTASK; t++) {
        add_rows(&l, t, "S", &r->S[t]);
        add_rows(&l, t, "Q", &r->Q[t]);
    }
    st_add(&l, "c32.loss", LM_DT_F64, r->loss32, NTASK, 4);
    st_add(&l, "c32.adapted_m", LM_DT_F32, r->am32, NTASK, r->Pm);
    if (r->maml) st_add(&l, "c32.adapted_g", LM_DT_F32, r->ag32, NTASK, r->Pg);
    st_add(&l, "c32.grad_m", LM_DT_F32, r->gm32, r->Pmf, 0);
    st_add(&l, "c32.grad_g", LM_DT_F32, r->gg32, r->Pg, 0);
    st_add(&l, "c64.loss", LM_DT_F64, r->loss64, NTASK, 4);
    st_add(&l, "c64.adapted_m", LM_DT_F64, r->am64, NTASK, r->Pm);
    if (r->maml) st_add(&l, "c64.adapted_g", LM_DT_F64, r->ag64, NTASK, r->Pg);
    st_add(&l, "c64.grad_m", LM_DT_F64, r->gm64, r->Pmf, 0);
    st_add(&l, "c64.grad_g", LM_DT_F64, r->gg64, r->Pg, 0);
    st_sort(&l);

    char steps[32], alpha[40], w[40], nmeta[32], ndense[32], E[32], ntask[32], id_rows[32];
    char mh[64], gh[64], buckets[64], dims[64], task_rows[64], nin[32], meta_np[32], global_np[32],
        cat_off[64];
    size_t cb[LM_NET_MAX_CAT], cd[LM_NET_MAX_CAT];
    for (size_t c = 0; c < n->ncat; c++) cb[c] = n->cat_rows[c], cd[c] = n->cat_dim[c];
    snprintf(steps, sizeof steps, "%zu", tc->steps);
    snprintf(alpha, sizeof alpha, "%.17g", tc->alpha);
    snprintf(w, sizeof w, "%.17g", tc->w);
    snprintf(nmeta, sizeof nmeta, "%zu", n->nmeta);
    snprintf(ndense, sizeof ndense, "%zu", n->ndense);
    snprintf(E, sizeof E, "%zu", n->E);
    snprintf(ntask, sizeof ntask, "%d", NTASK);
    snprintf(id_rows, sizeof id_rows, "%zu", n->cfg.id_rows);
    snprintf(nin, sizeof nin, "%zu", n->nin);
    snprintf(meta_np, sizeof meta_np, "%zu", n->meta_np);
    snprintf(global_np, sizeof global_np, "%zu", n->global_np);
    const char *keys[] = {REF_MAGIC,     "case",          "meta_kind",   "loss",           "algo",
                          "steps",       "alpha",         "first_order", "support_weight", "nmeta",
                          "ndense",      "cat_buckets",   "cat_dim",     "emb_dim",        "meta_in_global",
                          "meta_hidden", "global_hidden", "ntask",       "task_rows",      "id_rows",
                          "nin",         "meta_np",       "global_np",   "cat_off",        "emb_logit"};
    const char *vals[] = {
        REF_VERSION,
        tc->name,
        r->mlp ? "mlp" : "id",
        tc->loss == LM_NET_LOSS_BCE ? "bce" : "mse",
        algo_names[tc->algo],
        steps,
        alpha,
        tc->first_order ? "1" : "0",
        w,
        nmeta,
        ndense,
        join_sizes(buckets, sizeof buckets, cb, n->ncat),
        join_sizes(dims, sizeof dims, cd, n->ncat),
        E,
        tc->meta_in_global ? "1" : "0",
        join_sizes(mh, sizeof mh, tc->meta_hidden, tc->nmeta_hidden),
        join_sizes(gh, sizeof gh, tc->global_hidden, tc->nglobal_hidden),
        ntask,
        join_sizes(task_rows, sizeof task_rows, r->row, NTASK),
        id_rows,
        nin,
        meta_np,
        global_np,
        join_sizes(cat_off, sizeof cat_off, n->cat_off, n->ncat),
        tc->emb_logit ? "1" : "0",
    };
    lm_err err = {0};
    int rc = lm_st_write(path, l.t, l.n, keys, vals, sizeof keys / sizeof keys[0], &err);
    if (rc != LM_OK) printf("FAIL write %s: %s\n", path, err.msg);
    st_list_free(&l);
    return rc;
}

/* ============================================================================================
 * reading back and comparing
 * ========================================================================================== */

/* Tensor `name` of `f` as doubles (n values, copied: the file's bytes need not be aligned),
 * or NULL with a FAIL line when it is missing or of the wrong size or dtype. */
static double *st_get_f64(const lm_st_file *f, const char *what, const char *name, size_t n)
{
    const lm_st_tensor *t = lm_st_find(f, name);
    size_t es = t ? lm_dt_size(t->dtype) : 0;
    if (!t || (t->dtype != LM_DT_F32 && t->dtype != LM_DT_F64) || t->nbytes != n * es) {
        check_true(0, "%s: tensor %s missing, or not %zu floats", what, name, n);
        return NULL;
    }
    double *out = dalloc(n);
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == LM_DT_F32) {
            float v;
            memcpy(&v, (const char *)t->data + i * 4, 4);
            out[i] = v;
        } else {
            memcpy(&out[i], (const char *)t->data + i * 8, 8);
        }
    }
    return out;
}

static double *f32_to_f64_new(const float *x, size_t n)
{
    double *d = dalloc(n);
    to_f64(d, x, n);
    return d;
}

/* The C file reopens with our reader and holds what was written (the round trip). */
static void check_case_file(const run *r, const char *path, const char *tag)
{
    lm_err err = {0};
    lm_st_file *f = NULL;
    if (!check_true(lm_st_open(&f, path, &err) == LM_OK, "%s: case file reopens%s%s", tag,
                    err.msg[0] ? ": " : "", err.msg))
        return;
    const char *magic = lm_st_meta(f, REF_MAGIC);
    check_true(magic && !strcmp(magic, REF_VERSION), "%s: case file carries %s = %s", tag, REF_MAGIC,
               REF_VERSION);
    double *gm = st_get_f64(f, tag, "c32.grad_m", r->Pmf);
    double *want = f32_to_f64_new(r->gm32, r->Pmf);
    if (gm) {
        char name[200];
        snprintf(name, sizeof name, "%s: case file round trip (c32.grad_m)", tag);
        check_close(NULL, name, gm, want, r->Pmf, 0, 0);
    }
    free(gm), free(want);
    lm_st_close(f);
}

/* Compare one output of precision p (0: float, 1: double) against the reference; returns the
 * normwise relative error. */
static double cmp(const lm_st_file *f, const char *tag, int p, const char *what, const double *c_out,
                  size_t n)
{
    char name[200], tname[64], group[96];
    snprintf(tname, sizeof tname, "%s.%s", p ? "ref64" : "ref32", what);
    snprintf(name, sizeof name, "%s: %s %s", tag, p ? "f64" : "f32", what);
    snprintf(group, sizeof group, "%s %s", tag, p ? "f64" : "f32");
    double *ref = st_get_f64(f, tag, tname, n);
    if (!ref) return INFINITY;
    double rel = check_close(group, name, c_out, ref, n, p ? F64_ATOL : F32_ATOL, p ? F64_RTOL : F32_RTOL);
    free(ref);
    return rel;
}

static void compare_case(const run *r, const char *ref_path, const char *tag)
{
    lm_err err = {0};
    lm_st_file *f = NULL;
    if (!check_true(lm_st_open(&f, ref_path, &err) == LM_OK, "%s: reference file opens%s%s", tag,
                    err.msg[0] ? ": " : "", err.msg))
        return;
    const char *magic = lm_st_meta(f, REF_MAGIC);
    if (!check_true(magic && !strcmp(magic, REF_VERSION), "%s: reference carries %s = %s", tag, REF_MAGIC,
                    REF_VERSION)) {
        lm_st_close(f);
        return;
    }
    size_t Pm = r->Pm, Pmf = r->Pmf, Pg = r->Pg;
    for (int p = 0; p < 2; p++) {
        double *am = p ? NULL : f32_to_f64_new(r->am32, NTASK * Pm);
        double *ag = p ? NULL : f32_to_f64_new(r->ag32, NTASK * Pg);
        double *gm = p ? NULL : f32_to_f64_new(r->gm32, Pmf);
        double *gg = p ? NULL : f32_to_f64_new(r->gg32, Pg);
        cmp(f, tag, p, "loss", p ? r->loss64 : r->loss32, NTASK * 4);
        cmp(f, tag, p, "adapted_m", p ? r->am64 : am, NTASK * Pm);
        if (r->maml) cmp(f, tag, p, "adapted_g", p ? r->ag64 : ag, NTASK * Pg);
        cmp(f, tag, p, "grad_m", p ? r->gm64 : gm, Pmf);
        cmp(f, tag, p, "grad_g", p ? r->gg64 : gg, Pg);
        free(am), free(ag), free(gm), free(gg);
    }

    /* normwise over both float meta-gradients, and the first-order teeth check */
    double *ref = dalloc(Pmf + Pg), *rm = st_get_f64(f, tag, "ref32.grad_m", Pmf),
           *rg = st_get_f64(f, tag, "ref32.grad_g", Pg);
    if (rm && rg) {
        memcpy(ref, rm, Pmf * sizeof *ref);
        memcpy(ref + Pmf, rg, Pg * sizeof *ref);
        double max_ref = 0, max_diff = 0, max_fo = 0;
        for (size_t i = 0; i < Pmf + Pg; i++) {
            double c = i < Pmf ? r->gm32[i] : r->gg32[i - Pmf];
            max_ref = fmax(max_ref, fabs(ref[i]));
            max_diff = fmax(max_diff, fabs(c - ref[i]));
            if (r->fo_g) max_fo = fmax(max_fo, fabs(r->fo_g[i] - ref[i]));
        }
        check_true(max_diff <= F32_RTOL * max_ref, "%s: f32 meta-gradient normwise rel %.2e <= %.0e", tag,
                   max_diff / max_ref, F32_RTOL);
        if (r->fo_g)
            check_true(max_fo > 100 * F32_RTOL * max_ref,
                       "%s: first order is far from the reference (normwise rel %.2e)", tag,
                       max_fo / max_ref);
    }
    free(ref), free(rm), free(rg);
    lm_st_close(f);
}

/* ============================================================================================
 * running the reference
 * ========================================================================================== */

/* tools/torch_ref.py under $LM_SRC, or under the source root this file was compiled from. */
static int script_path(char *out, size_t cap)
{
    const char *src = getenv("LM_SRC");
    if (src && *src) {
        snprintf(out, cap, "%s/tools/torch_ref.py", src);
    } else {
        const char *me = __FILE__, *suffix = "tests/meta/test_torch_ref.c";
        size_t lm = strlen(me), ls = strlen(suffix);
        if (lm < ls || strcmp(me + lm - ls, suffix) != 0 || me[0] != '/') return -1;
        snprintf(out, cap, "%.*stools/torch_ref.py", (int)(lm - ls), me);
    }
    return access(out, R_OK) == 0 ? 0 : -1;
}

/* Run `python script case...` and wait; its exit status, or -1 when it could not run. */
static int run_python(const char *python, const char *script, char paths[][4096], size_t n)
{
    const char *argv[MAX_CASES + 3];
    argv[0] = python;
    argv[1] = script;
    for (size_t i = 0; i < n; i++) argv[2 + i] = paths[i];
    argv[2 + n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(python, (char *const *)argv);
        fprintf(stderr, "cannot run %s\n", python);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(void)
{
    LM_ASSERT(NCASES <= MAX_CASES);
    const char *tmp = getenv("LM_TMP"), *python = getenv("LM_PYREF_PYTHON");
    const char *require = getenv("LM_REQUIRE_TORCH");
    int required = require && !strcmp(require, "1");
    char dir[3000];
    snprintf(dir, sizeof dir, "%s/meta_torch_ref.%d", tmp && *tmp ? tmp : "/tmp/limaml-test", (int)getpid());
    lm_test_mkdir_p(dir);

    static run runs[MAX_CASES];
    static char paths[MAX_CASES][4096], ref_paths[MAX_CASES][4096];
    lm_rng rng;
    lm_rng_seed(&rng, 20240607);
    for (size_t k = 0; k < NCASES; k++) {
        char tag[120];
        snprintf(tag, sizeof tag, "case %zu (%s)", k, cases[k].name);
        run_case(&runs[k], &cases[k], &rng);
        snprintf(paths[k], sizeof paths[k], "%s/case_%zu.safetensors", dir, k);
        snprintf(ref_paths[k], sizeof ref_paths[k], "%s/case_%zu.ref.safetensors", dir, k);
        if (write_case(&runs[k], paths[k]) != LM_OK)
            check_true(0, "%s: write", tag);
        else
            check_case_file(&runs[k], paths[k], tag);
    }

    char script[4096];
    if (!python || !*python) {
        if (required)
            check_true(0, "LM_REQUIRE_TORCH=1 but LM_PYREF_PYTHON is not set (run "
                          "scripts/setup-pyref.sh and export its last line)");
        else
            printf("SKIP the PyTorch comparison: LM_PYREF_PYTHON is not set (export "
                   "LM_PYREF_PYTHON=$(scripts/setup-pyref.sh | tail -1) to run it)\n");
    } else if (script_path(script, sizeof script) != 0) {
        check_true(0, "tools/torch_ref.py not found (set LM_SRC to the source root)");
    } else {
        double t0 = lm_now();
        int rc = run_python(python, script, paths, NCASES);
        printf("%s %s: exit %d in %.1f s\n", python, script, rc, lm_now() - t0);
        if (check_true(rc == 0, "the PyTorch reference ran (%s)", python))
            for (size_t k = 0; k < NCASES; k++) {
                char tag[120];
                snprintf(tag, sizeof tag, "case %zu (%s)", k, cases[k].name);
                compare_case(&runs[k], ref_paths[k], tag);
            }
    }

    for (size_t k = 0; k < NCASES; k++) run_free(&runs[k]);
    if (check_failed)
        printf("case files kept in %s\n", dir);
    else
        lm_rmtree(dir);
    return check_summary();
}
