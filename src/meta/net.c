/* net.c: the network's description and layouts, the workspace layout, the FLOP model and the
 * option defaults, shared by both precisions. The passes are in meta/net_impl.h, the
 * algorithms in meta/algo_impl.h (instantiated by meta_f32.c and meta_f64.c). */
#include "meta/meta.h"

#include <string.h>

/* a * b + c, or 0 with *ovf set on overflow (sizes come from configuration files). */
static size_t mul_add(size_t a, size_t b, size_t c, int *ovf)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) {
        *ovf = 1;
        return 0;
    }
    return r;
}

/* ============================================================================================
 * config and description
 * ========================================================================================== */

void lm_net_config_default(lm_net_config *c)
{
    LM_ASSERT(c);
    memset(c, 0, sizeof *c);
    c->meta_kind = LM_NET_META_MLP;
    c->emb_dim = 16;
    c->meta_hidden[0] = 32;
    c->nmeta_hidden = 1;
    c->global_hidden[0] = 64;
    c->global_hidden[1] = 32;
    c->nglobal_hidden = 2;
    c->meta_in_global = 1;
    c->loss = LM_NET_LOSS_BCE;
}

int lm_net_config_from_schema(lm_net_config *c, const lm_schema *s, lm_err *err)
{
    LM_ASSERT(c && s);
    if (s->ncat > LM_NET_MAX_CAT)
        return lm_err_set(err, LM_EINVAL, "net: the schema has %zu categorical columns, at most %d", s->ncat,
                          LM_NET_MAX_CAT);
    c->nmeta = s->nmeta;
    c->ndense = s->ndense;
    c->ncat = s->ncat;
    for (size_t i = 0; i < s->ncat; i++) {
        c->cat_buckets[i] = s->cat[i].buckets;
        c->cat_dim[i] = s->cat[i].dim;
    }
    c->loss = s->label_type == LM_LABEL_REGRESSION ? LM_NET_LOSS_MSE : LM_NET_LOSS_BCE;
    return LM_OK;
}

int lm_net_init(lm_net *n, const lm_net_config *c, lm_err *err)
{
    LM_ASSERT(n && c);
    memset(n, 0, sizeof *n);
    if (c->meta_kind != LM_NET_META_MLP && c->meta_kind != LM_NET_META_ID)
        return lm_err_set(err, LM_EINVAL, "net: meta_kind %d is neither mlp nor id", c->meta_kind);
    if (c->loss != LM_NET_LOSS_BCE && c->loss != LM_NET_LOSS_MSE)
        return lm_err_set(err, LM_EINVAL, "net: loss %d is neither bce nor mse", c->loss);
    if (c->emb_dim == 0) return lm_err_set(err, LM_EINVAL, "net: the meta embedding width is 0");
    if (c->ncat > LM_NET_MAX_CAT)
        return lm_err_set(err, LM_EINVAL, "net: %zu categorical columns, at most %d", c->ncat,
                          LM_NET_MAX_CAT);
    if (c->meta_kind == LM_NET_META_MLP && c->nmeta == 0)
        return lm_err_set(err, LM_EINVAL, "net: an mlp meta block needs meta features (none given)");
    if (c->meta_kind == LM_NET_META_ID && c->id_rows < 1)
        return lm_err_set(err, LM_EINVAL, "net: an id meta block needs id_rows >= 1 (tasks + 1)");
    if (c->nmeta_hidden + 1 > LM_MLP_MAX_LAYERS || c->nglobal_hidden + 1 > LM_MLP_MAX_LAYERS)
        return lm_err_set(err, LM_EINVAL, "net: more than %d layers", LM_MLP_MAX_LAYERS);
    n->cfg = *c;
    n->E = c->emb_dim;
    n->nmeta = c->nmeta;
    n->ndense = c->ndense;
    n->ncat = c->ncat;

    /* the global input: [meta | dense | cat_1 .. cat_C | E] */
    int ovf = 0;
    size_t col = 0;
    n->col_meta = col;
    if (c->meta_in_global) col = mul_add(1, c->nmeta, col, &ovf);
    n->col_dense = col;
    col = mul_add(1, c->ndense, col, &ovf);
    for (size_t i = 0; i < c->ncat; i++) {
        if (c->cat_buckets[i] == 0 || c->cat_dim[i] == 0)
            return lm_err_set(err, LM_EINVAL, "net: categorical column %zu has %u buckets of width %u", i,
                              c->cat_buckets[i], c->cat_dim[i]);
        n->col_cat[i] = col;
        n->cat_rows[i] = c->cat_buckets[i];
        n->cat_dim[i] = c->cat_dim[i];
        col = mul_add(1, c->cat_dim[i], col, &ovf);
    }
    n->col_emb = col;
    n->nin = mul_add(1, n->E, col, &ovf);

    int rc;
    if (c->meta_kind == LM_NET_META_MLP) {
        size_t sizes[LM_MLP_MAX_LAYERS + 1], k = 0;
        sizes[k++] = c->nmeta;
        for (size_t i = 0; i < c->nmeta_hidden; i++) sizes[k++] = c->meta_hidden[i];
        sizes[k++] = n->E;
        if ((rc = lm_mlp_init(&n->meta, sizes, k, c->dropout, err)) != LM_OK) return rc;
        n->meta_np = n->meta.nparams;
        n->meta_task_np = n->meta_np;
    } else {
        n->meta_np = mul_add(c->id_rows, n->E, 0, &ovf);
        n->meta_task_np = n->E;
    }
    {
        size_t sizes[LM_MLP_MAX_LAYERS + 1], k = 0;
        sizes[k++] = n->nin;
        for (size_t i = 0; i < c->nglobal_hidden; i++) sizes[k++] = c->global_hidden[i];
        sizes[k++] = 1;
        if ((rc = lm_mlp_init(&n->global, sizes, k, c->dropout, err)) != LM_OK) return rc;
    }
    size_t off = n->global.nparams;
    for (size_t i = 0; i < c->ncat; i++) {
        n->cat_off[i] = off;
        off = mul_add(n->cat_rows[i], n->cat_dim[i], off, &ovf);
    }
    n->global_np = off;
    if (ovf) {
        memset(n, 0, sizeof *n);
        return lm_err_set(err, LM_EINVAL, "net: parameter count overflows");
    }
    return LM_OK;
}

size_t lm_net_meta_slice(const lm_net *n, size_t row)
{
    if (n->cfg.meta_kind == LM_NET_META_MLP) return 0;
    LM_ASSERT(row < n->cfg.id_rows);
    return row * n->E;
}

/* ============================================================================================
 * options, splits
 * ========================================================================================== */

void lm_meta_opts_default(lm_meta_opts *o)
{
    memset(o, 0, sizeof *o);
    o->algo = LM_ALGO_LIMAML;
    o->steps = 1;
    o->alpha = 0.1;
    o->dropout_mode = LM_DROPOUT_SAMPLE;
}

size_t lm_task_split_rows(const lm_task *t, int split)
{
    if (split == LM_META_SPLIT_TRAIN) return (size_t)t->nsplit[LM_SPLIT_SUPPORT] + t->nsplit[LM_SPLIT_QUERY];
    LM_ASSERT(split >= 0 && split < LM_SPLIT_COUNT);
    return t->nsplit[split];
}

/* ============================================================================================
 * workspace layout
 * ========================================================================================== */

int lm_meta_layout_init(lm_meta_layout *l, const lm_net *n, size_t max_rows, size_t max_steps,
                        int adapt_global, lm_err *err)
{
    LM_ASSERT(l && n && n->global.nlayers >= 1);
    memset(l, 0, sizeof *l);
    int ovf = 0;
    size_t B = max_rows, E = n->E, nin = n->nin, off = 0;
    int mlp = n->cfg.meta_kind == LM_NET_META_MLP;
    l->max_rows = max_rows;
    l->max_steps = max_steps;
    l->nslots = mul_add(1, max_steps, 2, &ovf);
    l->adapt_global = adapt_global ? 1 : 0;
    l->p_adapt = mul_add(adapt_global ? 1 : 0, n->global_np, n->meta_task_np, &ovf);

#define TAKE(field, count) (l->field = off, off = mul_add(1, (count), off, &ovf))
    /* one slot */
    TAKE(st_E, mul_add(B, E, 0, &ovf));
    TAKE(st_xg, mul_add(B, nin, 0, &ovf));
    TAKE(st_mcache, mlp ? mul_add(B, n->meta.cache_row, 0, &ovf) : 0);
    TAKE(st_gcache, mul_add(B, n->global.cache_row, 0, &ovf));
    TAKE(st_z, B);
    l->st_size = off;
    off = 0;
    TAKE(off_slots, mul_add(l->nslots, l->st_size, 0, &ovf));
    /* scratch */
    TAKE(off_E_tan, mul_add(B, E, 0, &ovf));
    TAKE(off_xg_tan, mul_add(B, nin, 0, &ovf));
    TAKE(off_z_tan, B);
    TAKE(off_dz, B);
    TAKE(off_dz_tan, B);
    TAKE(off_dxg, mul_add(B, nin, 0, &ovf));
    TAKE(off_dxg_tan, mul_add(B, nin, 0, &ovf));
    TAKE(off_dE, mul_add(B, E, 0, &ovf));
    TAKE(off_dE_tan, mul_add(B, E, 0, &ovf));
    TAKE(off_mtcache, mlp ? mul_add(B, n->meta.tan_cache_row, 0, &ovf) : 0);
    TAKE(off_gtcache, mul_add(B, n->global.tan_cache_row, 0, &ovf));
    TAKE(off_mwork, mlp ? mul_add(4 * B, n->meta.max_hidden, 0, &ovf) : 0);
    TAKE(off_gwork, mul_add(4 * B, n->global.max_hidden, 0, &ovf));
    /* the algorithm */
    TAKE(off_iter, mul_add(max_steps, l->p_adapt, 0, &ovf));
    TAKE(off_g, l->p_adapt);
    TAKE(off_a, l->p_adapt);
    TAKE(off_v, l->p_adapt);
#undef TAKE
    l->total = off;
    if (ovf) {
        memset(l, 0, sizeof *l);
        return lm_err_set(err, LM_EINVAL, "meta workspace: size overflows (%zu rows, %zu steps)", max_rows,
                          max_steps);
    }
    return LM_OK;
}

/* ============================================================================================
 * FLOP model: mirrors the kernel calls of meta/net_impl.h and meta/algo_impl.h (linear layers
 * only, 2 FLOPs per multiply-add; biases, activations and vector updates are O(B O) or O(P)
 * and left out)
 * ========================================================================================== */

static double lin(const lm_mlp *m, size_t l, size_t B)
{
    return 2.0 * (double)B * (double)m->sizes[l] * (double)m->sizes[l + 1];
}

static double mlp_fwd(const lm_mlp *m, size_t B)
{
    double f = 0;
    for (size_t l = 0; l < m->nlayers; l++) f += lin(m, l, B);
    return f;
}

/* lm_mlp_backward: dx at every layer but the first unless asked; dW when asked. */
static double mlp_bwd(const lm_mlp *m, size_t B, int dx, int dp)
{
    double f = 0;
    for (size_t l = 0; l < m->nlayers; l++) f += ((l || dx) + (dp ? 1 : 0)) * lin(m, l, B);
    return f;
}

/* lm_mlp_forward_tan: x_tan W^T (layer 0 only with x_tan) + x W_tan^T (with params_tan). */
static double mlp_fwd_tan(const lm_mlp *m, size_t B, int ptan, int xtan)
{
    double f = 0;
    for (size_t l = 0; l < m->nlayers; l++) f += ((l || xtan) + (ptan ? 1 : 0)) * lin(m, l, B);
    return f;
}

/* lm_mlp_backward_tan: per layer, dx_tan = dy_tan W (+ dy W_tan), dW_tan = dy_tan^T x
 * (+ dy^T x_tan), and the first-order dx (always below layer 0) and dW it recomputes. */
static double mlp_bwd_tan(const lm_mlp *m, size_t B, int ptan, int xtan, int dx, int dxtan, int dp, int dptan)
{
    double f = 0;
    for (size_t l = 0; l < m->nlayers; l++) {
        double c = 0;
        if (l || dxtan) c += 1 + (ptan ? 1 : 0);
        if (dptan) c += 1 + ((l || xtan) ? 1 : 0);
        c += (l || dx) + (dp ? 1 : 0);
        f += c * lin(m, l, B);
    }
    return f;
}

static double net_fwd(const lm_net *n, size_t B)
{
    return (n->cfg.meta_kind == LM_NET_META_MLP ? mlp_fwd(&n->meta, B) : 0) + mlp_fwd(&n->global, B);
}

static double net_bwd(const lm_net *n, size_t B, int gm, int gg)
{
    int dx = gm || (gg && n->ncat);
    double f = (gm || gg) ? mlp_bwd(&n->global, B, dx, gg) : 0;
    if (gm && n->cfg.meta_kind == LM_NET_META_MLP) f += mlp_bwd(&n->meta, B, 0, 1);
    return f;
}

static double net_hvp(const lm_net *n, size_t B, int vg)
{
    int mlp = n->cfg.meta_kind == LM_NET_META_MLP;
    double f = mlp ? mlp_fwd_tan(&n->meta, B, 1, 0) : 0;
    f += mlp_fwd_tan(&n->global, B, vg, 1);
    f += mlp_bwd_tan(&n->global, B, vg, 1, 1, 1, 0, 1);
    if (mlp) f += mlp_bwd_tan(&n->meta, B, 1, 0, 0, 0, 0, 1);
    return f;
}

double lm_meta_task_flops(const lm_net *n, const lm_meta_opts *o, size_t Bs, size_t Bq)
{
    LM_ASSERT(n && o);
    if (o->algo == LM_ALGO_PLAIN) return net_fwd(n, Bq) + net_bwd(n, Bq, 1, 1);
    int maml = o->algo == LM_ALGO_MAML;
    double steps = (double)o->steps, f = 0;
    if (Bs) f += steps * (net_fwd(n, Bs) + net_bwd(n, Bs, 1, maml));
    f += net_fwd(n, Bq) + net_bwd(n, Bq, 1, 1);
    if (o->support_weight > 0 && Bs) f += net_fwd(n, Bs) + net_bwd(n, Bs, 1, 1);
    if (!o->first_order && Bs) f += steps * net_hvp(n, Bs, maml);
    return f;
}
