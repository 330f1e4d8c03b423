/* meta_decl.h: the per-precision part of meta/meta.h, written once over the macros REAL
 * (float or double) and LM_META_FN(name) (appends _f32 or _f64). Included twice by
 * meta/meta.h; include meta/meta.h, never this file. No include guard on purpose.
 *
 * Shapes: B rows of one task's split; P_m = net->meta_task_np (the task's slice of theta_m),
 * P_g = net->global_np. */

/* ============================================================================================
 * a task's rows as contiguous arrays
 * ========================================================================================== */

/* The examples of one task's split, row-major, in time order. Owned buffers (mem != NULL)
 * come from lm_rows_alloc; a view (mem == NULL) points into someone else's. Tests and callers
 * with their own arrays fill a view by hand: n, the widths and the pointers. */
typedef struct LM_META_FN(lm_rows) {
    size_t n;   /* rows */
    size_t cap; /* rows the owned buffers hold; 0 for a view */
    void *mem;  /* the one owned allocation, or NULL */
    size_t nmeta, ndense, ncat;
    REAL *meta;    /* meta: (n, nmeta) */
    REAL *dense;   /* dense: (n, ndense) */
    uint32_t *cat; /* cat: (n, ncat), column c's id < its buckets */
    REAL *label;   /* label: (n), 0/1 for BCE */
} LM_META_FN(lm_rows);

/* Allocate buffers for `cap` rows (n = 0). LM_ENOMEM. @note free with lm_rows_free. */
int LM_META_FN(lm_rows_alloc)(LM_META_FN(lm_rows) * r, size_t nmeta, size_t ndense, size_t ncat, size_t cap,
                              lm_err *err);
/* Free owned buffers and zero `r`; a view or a zeroed struct is left alone. */
void LM_META_FN(lm_rows_free)(LM_META_FN(lm_rows) * r);
/* A view of rows [first, first + count) of `r` (e.g. the latest example: first = n - 1). */
LM_META_FN(lm_rows) LM_META_FN(lm_rows_view)(const LM_META_FN(lm_rows) * r, size_t first, size_t count);

/* Copy task `t`'s rows of `split` (LM_SPLIT_SUPPORT .. LM_SPLIT_TEST or LM_META_SPLIT_TRAIN)
 * from `ds` into `r`, in time order, floats converted to REAL. A task whose splits are
 * consecutive runs (t->contiguous) is read as one range; otherwise its rows are scanned for
 * the split. LM_ELIMIT when the rows exceed r->cap, LM_EINVAL for a bad split, LM_EMISMATCH
 * when r's widths differ from the dataset's. Reentrant: threads may gather from one dataset. */
int LM_META_FN(lm_rows_gather)(LM_META_FN(lm_rows) * r, const lm_dataset *ds, const lm_task *t, int split,
                               lm_err *err);

/* ============================================================================================
 * workspace
 * ========================================================================================== */

/* One thread's scratch for the per-task functions: views (lm_meta_layout) into one buffer.
 * @note Not shared between threads; valid for the net it was made for. */
typedef struct LM_META_FN(lm_meta_ws) {
    lm_meta_layout lay;
    size_t meta_task_np, global_np, nin; /* the net's, to catch a mix-up */
    REAL *buf;                           /* (lay.total) */
} LM_META_FN(lm_meta_ws);

/* Allocate a workspace (see lm_meta_layout_init). @note free with lm_meta_ws_free. */
int LM_META_FN(lm_meta_ws_alloc)(LM_META_FN(lm_meta_ws) * ws, const lm_net *n, size_t max_rows,
                                 size_t max_steps, int adapt_global, lm_err *err);
void LM_META_FN(lm_meta_ws_free)(LM_META_FN(lm_meta_ws) * ws);

/* ============================================================================================
 * the network's passes over one task's rows
 * ========================================================================================== */

/* theta_m: (meta_np) set: the meta MLP by lm_mlp_params_init, or the id table ~ N(0, 1/E);
 * theta_g: (global_np) set: the global MLP by lm_mlp_params_init, tables ~ N(0, 1/dim_c).
 * Drawn in double: the f32 and f64 versions give the same numbers rounded. */
void LM_META_FN(lm_net_params_init)(const lm_net *n, REAL *theta_m, REAL *theta_g, lm_rng *rng);

/* Forward of rows `r` (B = r->n <= max_rows) into workspace slot `slot`; returns the loss,
 * the mean over the rows (0 when B = 0). theta_m: (P_m) the task's slice; theta_g: (P_g).
 * dropout_mode as lm_mlp_forward (rng only for LM_DROPOUT_SAMPLE). The caller keeps theta_m,
 * theta_g and r unchanged while it uses the slot's backward and tangent passes. */
double LM_META_FN(lm_net_forward)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, size_t slot,
                                  const REAL *theta_m, const REAL *theta_g, const LM_META_FN(lm_rows) * r,
                                  int dropout_mode, lm_rng *rng);

/* Gradients of weight * loss at the slot's forward: grad_m: (P_m) +=, grad_g: (P_g) +=;
 * either may be NULL to skip it (and its cost). */
void LM_META_FN(lm_net_backward)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, size_t slot,
                                 const REAL *theta_m, const REAL *theta_g, const LM_META_FN(lm_rows) * r,
                                 double weight, REAL *grad_m, REAL *grad_g);

/* Hessian-vector product of weight * loss at the slot's forward, along v = (v_m, v_g), either
 * NULL for zero: hv_m: (P_m) += H_mm v_m + H_mg v_g; hv_g: (P_g) += H_gm v_m + H_gg v_g;
 * either output may be NULL. With v_g = NULL, hv_g gets the mixed term LiMAML's outer update
 * of theta_g needs. Uses the masks of the slot's forward. */
void LM_META_FN(lm_net_hvp)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, size_t slot, const REAL *theta_m,
                            const REAL *theta_g, const LM_META_FN(lm_rows) * r, const REAL *v_m,
                            const REAL *v_g, double weight, REAL *hv_m, REAL *hv_g);

/* forward + backward: the plain gradient of the mean loss on `r` (the vanilla baseline, and
 * each step of task adaptation). grad_m, grad_g +=, either may be NULL. Returns the loss. */
double LM_META_FN(lm_net_grad)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, size_t slot, const REAL *theta_m,
                               const REAL *theta_g, const LM_META_FN(lm_rows) * r, REAL *grad_m, REAL *grad_g,
                               int dropout_mode, lm_rng *rng);

/* Evaluation (no dropout, slot 0): z: (B) set to the logits (predictions for MSE), or NULL.
 * Returns the mean loss on r's labels. */
double LM_META_FN(lm_net_predict)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, const REAL *theta_m,
                                  const REAL *theta_g, const LM_META_FN(lm_rows) * r, REAL *z);

/* The same with a given meta embedding emb: (E), as served online from the feature store
 * (the global block only). */
double LM_META_FN(lm_net_predict_emb)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, const REAL *emb,
                                      const REAL *theta_g, const LM_META_FN(lm_rows) * r, REAL *z);

/* The meta block's output (no dropout, slot 0): emb: (B, E) set for meta: (B, nmeta), B <=
 * max_rows. The id variant returns its slice (theta_m: (E)) on every row; meta may be NULL. */
void LM_META_FN(lm_net_embed)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, const REAL *theta_m,
                              const REAL *meta, size_t B, REAL *emb);

/* ============================================================================================
 * per-task algorithms
 * ========================================================================================== */

/* One task's outer objective and its exact meta-gradient (o->algo, o->steps = n <=
 * ws max_steps, o->alpha, o->first_order, o->support_weight = w, o->dropout_mode):
 *
 *   LiMAML: theta_m^{k+1} = theta_m^k - alpha grad_m L_s(theta_m^k, theta_g), k < n;
 *   MAML:   both blocks stepped the same way (needs a workspace with adapt_global);
 *   F = L_q(theta^n) + w L_s(theta^n);  grad_m += dF/dtheta_m, grad_g += dF/dtheta_g, through
 *   the inner steps (docs/META.md); first_order drops the Hessian terms (the inner steps'
 *   displacements are treated as constants). PLAIN: F = L_q(theta), its plain gradient, on
 *   the rows passed as `query` (the vanilla baseline passes the train split; support unused).
 *
 * theta_m: (P_m), theta_g: (P_g) are read only. adapted_m: (P_m) set to theta_m^n, or NULL;
 * adapted_g: (P_g) set to theta_g^n (MAML only; NULL otherwise or to skip). grad_m, grad_g:
 * += the meta-gradient; both NULL computes F only (the inner loop, the query, no backward
 * sweep); one NULL is not allowed. stats: filled, or NULL. rng: for LM_DROPOUT_SAMPLE.
 * support may have 0 rows (no adaptation happens); a query with 0 rows gives F = 0 for PLAIN.
 * Returns F. */
double LM_META_FN(lm_meta_task)(const lm_net *n, const lm_meta_opts *o, LM_META_FN(lm_meta_ws) * ws,
                                const REAL *theta_m, const REAL *theta_g, const LM_META_FN(lm_rows) * support,
                                const LM_META_FN(lm_rows) * query, REAL *adapted_m, REAL *adapted_g,
                                REAL *grad_m, REAL *grad_g, lm_meta_stats *stats, lm_rng *rng);

/* Task adaptation (Algorithm 2b, and the fine-tuning of evaluation, paper 6.2.1): `steps` SGD
 * steps at rate alpha on the mean loss of rows `r`, from (theta_m, theta_g): out_m: (P_m) set.
 * LM_ALGO_LIMAML moves the meta block only (out_g must be NULL); LM_ALGO_MAML and
 * LM_ALGO_PLAIN (the vanilla baseline's fine-tuning) move the whole network: out_g: (P_g) set,
 * and the workspace needs adapt_global. out_m may equal theta_m (in place), out_g may equal
 * theta_g. Uses slot 0, any number of steps. Returns the loss before the first step (0 when
 * steps = 0 or r is empty). */
double LM_META_FN(lm_meta_adapt)(const lm_net *n, LM_META_FN(lm_meta_ws) * ws, int algo, size_t steps,
                                 double alpha, const REAL *theta_m, const REAL *theta_g,
                                 const LM_META_FN(lm_rows) * r, REAL *out_m, REAL *out_g, int dropout_mode,
                                 lm_rng *rng);
