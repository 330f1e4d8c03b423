/* nn_decl.h: declarations of the layer kernels and the MLP, written once over the macros
 * REAL (float or double) and LM_NN_FN(name) (appends _f32 or _f64). Included twice by nn/nn.h;
 * include nn/nn.h, never this file. No include guard on purpose.
 *
 * Shapes: B batch rows, I inputs, O outputs, D embedding width, N elements. Rules for the
 * tangent passes are derived in docs/NN.md. */

/* ============================================================================================
 * linear: y = x w^T + b
 * ========================================================================================== */

/* y: (B, O) set; x: (B, I); w: (O, I) row-major; b: (O) or NULL for no bias. */
void LM_NN_FN(lm_linear_forward)(REAL *y, const REAL *x, const REAL *w, const REAL *b, size_t B, size_t I,
                                 size_t O);

/* dx: (B, I) set = dy w, or NULL to skip; dw: (O, I) += dy^T x, or NULL; db: (O) += sum over
 * rows of dy, or NULL. dy: (B, O); x: (B, I) and w: (O, I) as in the forward. */
void LM_NN_FN(lm_linear_backward)(REAL *dx, REAL *dw, REAL *db, const REAL *dy, const REAL *x, const REAL *w,
                                  size_t B, size_t I, size_t O);

/* y_tan: (B, O) set = x_tan w^T + x w_tan^T + b_tan. Each of x_tan: (B, I), w_tan: (O, I),
 * b_tan: (O) may be NULL, meaning a zero tangent (e.g. w_tan = b_tan = NULL for a block whose
 * parameters are held fixed while its input moves). */
void LM_NN_FN(lm_linear_forward_tan)(REAL *y_tan, const REAL *x, const REAL *x_tan, const REAL *w,
                                     const REAL *w_tan, const REAL *b_tan, size_t B, size_t I, size_t O);

/* The tangent of lm_linear_backward along (x_tan, w_tan, dy_tan):
 *   dx_tan: (B, I) set = dy_tan w + dy w_tan            (NULL to skip)
 *   dw_tan: (O, I) += dy_tan^T x + dy^T x_tan           (NULL to skip)
 *   db_tan: (O)    += sum over rows of dy_tan           (NULL to skip)
 * dy: (B, O) and dy_tan: (B, O) (NULL: zero); x, x_tan (NULL: zero), w, w_tan (NULL: zero)
 * as in the forward. */
void LM_NN_FN(lm_linear_backward_tan)(REAL *dx_tan, REAL *dw_tan, REAL *db_tan, const REAL *dy,
                                      const REAL *dy_tan, const REAL *x, const REAL *x_tan, const REAL *w,
                                      const REAL *w_tan, size_t B, size_t I, size_t O);

/* ============================================================================================
 * embedding lookup: out[b] = table[ids[b]]
 * ========================================================================================== */

/* out: (B, D) set; ids: (B), each < rows (asserted); table: (rows, D). */
void LM_NN_FN(lm_embedding_forward)(REAL *out, const uint32_t *ids, const REAL *table, size_t B, size_t rows,
                                    size_t D);
/* dtable: (rows, D) += scatter of dout: (B, D) into rows ids[b]; repeated ids add up. */
void LM_NN_FN(lm_embedding_backward)(REAL *dtable, const REAL *dout, const uint32_t *ids, size_t B,
                                     size_t rows, size_t D);
/* The lookup is linear in the table and ids carry no tangent, so the tangent passes are the
 * first-order passes applied to tangents: out_tan = table_tan[ids] (set) and
 * dtable_tan += scatter(dout_tan). */
void LM_NN_FN(lm_embedding_forward_tan)(REAL *out_tan, const uint32_t *ids, const REAL *table_tan, size_t B,
                                        size_t rows, size_t D);
void LM_NN_FN(lm_embedding_backward_tan)(REAL *dtable_tan, const REAL *dout_tan, const uint32_t *ids,
                                         size_t B, size_t rows, size_t D);

/* ============================================================================================
 * relu: y = max(x, 0); the mask (y > 0) is read from the forward output
 * ========================================================================================== */

/* y: (N) set; x: (N). y may equal x (in place). */
void LM_NN_FN(lm_relu_forward)(REAL *y, const REAL *x, size_t N);
/* dx: (N) set = dy * (y > 0); y: (N) the forward output. dx may equal dy. */
void LM_NN_FN(lm_relu_backward)(REAL *dx, const REAL *dy, const REAL *y, size_t N);
/* y_tan = x_tan * (y > 0); dx_tan = dy_tan * (y > 0) (relu'' = 0 almost everywhere). In place
 * allowed. */
void LM_NN_FN(lm_relu_forward_tan)(REAL *y_tan, const REAL *x_tan, const REAL *y, size_t N);
void LM_NN_FN(lm_relu_backward_tan)(REAL *dx_tan, const REAL *dy_tan, const REAL *y, size_t N);

/* ============================================================================================
 * dropout (inverted): y = x * mask, mask 0 with probability p, else 1/(1-p)
 * ========================================================================================== */

/* mask: (N) set from `rng`, one lm_rng_uniform draw per element: 0 when u < p, else 1/(1-p).
 * p in [0, 1); p == 0 fills 1 and draws nothing. The caller keeps the mask for backward. */
void LM_NN_FN(lm_dropout_mask)(REAL *mask, size_t N, REAL p, lm_rng *rng);
/* y: (N) set = x * mask; mask NULL means evaluation (y = x). In place allowed. */
void LM_NN_FN(lm_dropout_forward)(REAL *y, const REAL *x, const REAL *mask, size_t N);
/* dx = dy * mask (mask NULL: copy). The tangent passes are the same product (the op is linear
 * with a fixed mask). In place allowed. */
void LM_NN_FN(lm_dropout_backward)(REAL *dx, const REAL *dy, const REAL *mask, size_t N);
void LM_NN_FN(lm_dropout_forward_tan)(REAL *y_tan, const REAL *x_tan, const REAL *mask, size_t N);
void LM_NN_FN(lm_dropout_backward_tan)(REAL *dx_tan, const REAL *dy_tan, const REAL *mask, size_t N);

/* ============================================================================================
 * losses: sigmoid + binary cross-entropy from logits, and squared error
 * ========================================================================================== */

/* p: (N) set = sigmoid(z), computed without overflow for any z. In place allowed. */
void LM_NN_FN(lm_sigmoid_forward)(REAL *p, const REAL *z, size_t N);

/* BCE from logits z: (B) with labels y: (B) in [0, 1]:
 *   l_b = max(z,0) - z*y + log1p(exp(-|z|))  (= -y log s - (1-y) log(1-s), s = sigmoid(z)).
 * Returns scale * sum_b l_b, accumulated in double (scale = 1/B for the mean, 1 for the sum,
 * as the paper's task loss). loss: (B) set to the unscaled l_b, or NULL. */
double LM_NN_FN(lm_bce_forward)(REAL *loss, const REAL *z, const REAL *y, size_t B, REAL scale);
/* dz: (B) set = scale * (sigmoid(z) - y). */
void LM_NN_FN(lm_bce_backward)(REAL *dz, const REAL *z, const REAL *y, size_t B, REAL scale);
/* Directional derivative of the returned loss along z_tan: scale * sum (sigmoid(z) - y) z_tan. */
double LM_NN_FN(lm_bce_forward_tan)(const REAL *z, const REAL *z_tan, const REAL *y, size_t B, REAL scale);
/* dz_tan: (B) set = scale * s (1 - s) * z_tan, s = sigmoid(z). */
void LM_NN_FN(lm_bce_backward_tan)(REAL *dz_tan, const REAL *z, const REAL *z_tan, size_t B, REAL scale);

/* Squared error for regression labels: l_b = (z - y)^2; returns scale * sum l_b (scale = 1/B
 * gives PyTorch's MSELoss). loss: (B) set to l_b or NULL. dz = 2 scale (z - y);
 * forward_tan = 2 scale sum (z - y) z_tan; dz_tan = 2 scale z_tan. */
double LM_NN_FN(lm_mse_forward)(REAL *loss, const REAL *z, const REAL *y, size_t B, REAL scale);
void LM_NN_FN(lm_mse_backward)(REAL *dz, const REAL *z, const REAL *y, size_t B, REAL scale);
double LM_NN_FN(lm_mse_forward_tan)(const REAL *z, const REAL *z_tan, const REAL *y, size_t B, REAL scale);
void LM_NN_FN(lm_mse_backward_tan)(REAL *dz_tan, const REAL *z, const REAL *z_tan, size_t B, REAL scale);

/* ============================================================================================
 * column blocks: concatenating inputs and splitting gradients
 * ========================================================================================== */

/* Copy a block of B rows by W columns: dst[b * ld_dst + j] = src[b * ld_src + j].
 * Concatenation [meta | dense | embedded | meta embedding] into x: (B, I) is one call per
 * part with dst = x + column offset and ld_dst = I; splitting dx: (B, I) back is the same
 * with src = dx + column offset and ld_src = I. The forward and tangent passes are this copy. */
void LM_NN_FN(lm_cols_copy)(REAL *dst, size_t ld_dst, const REAL *src, size_t ld_src, size_t B, size_t W);
/* dst[b * ld_dst + j] += src[b * ld_src + j]: for gradients of an input used by two blocks. */
void LM_NN_FN(lm_cols_add)(REAL *dst, size_t ld_dst, const REAL *src, size_t ld_src, size_t B, size_t W);

/* ============================================================================================
 * MLP over a batch (see lm_mlp in nn/nn.h for the parameter and cache layouts)
 * ========================================================================================== */

/* params: (nparams) set: W_l uniform in +-sqrt(6 / fan_in) for layers followed by ReLU (He /
 * Kaiming uniform), +-sqrt(3 / fan_in) for the last layer (gain 1), biases 0. Values are drawn
 * in double, so the f32 and f64 versions give the same numbers rounded for the same seed. */
void LM_NN_FN(lm_mlp_params_init)(REAL *params, const lm_mlp *m, lm_rng *rng);

/* y: (B, sizes[L]) set; cache: (lm_mlp_cache_size(m, B)) set (masks read instead when
 * dropout_mode is LM_DROPOUT_KEEP); params: (nparams); x: (B, sizes[0]). rng is used only for
 * LM_DROPOUT_SAMPLE with dropout > 0 (else may be NULL). The caller keeps x, params and cache
 * unchanged until the backward and tangent passes of this forward are done. */
void LM_NN_FN(lm_mlp_forward)(REAL *y, REAL *cache, const lm_mlp *m, const REAL *params, const REAL *x,
                              size_t B, int dropout_mode, lm_rng *rng);

/* dx: (B, sizes[0]) set, or NULL to skip; dparams: (nparams) +=, or NULL; work:
 * (lm_mlp_work_size(m, B)) scratch. dy: (B, sizes[L]) the gradient of the loss w.r.t. y;
 * params, x, cache as given to and left by lm_mlp_forward. */
void LM_NN_FN(lm_mlp_backward)(REAL *dx, REAL *dparams, REAL *work, const lm_mlp *m, const REAL *params,
                               const REAL *x, const REAL *cache, const REAL *dy, size_t B);

/* Tangent forward along params_tan: (nparams) and x_tan: (B, sizes[0]), either NULL for zero.
 * y_tan: (B, sizes[L]) set; tan_cache: (lm_mlp_tan_cache_size(m, B)) set. Uses the masks and
 * activations in `cache` from lm_mlp_forward at (params, x). */
void LM_NN_FN(lm_mlp_forward_tan)(REAL *y_tan, REAL *tan_cache, const lm_mlp *m, const REAL *params,
                                  const REAL *params_tan, const REAL *x, const REAL *x_tan, const REAL *cache,
                                  size_t B);

/* Tangent backward: given dy and its tangent dy_tan (both (B, sizes[L]); for a loss, dy_tan
 * comes from the loss's backward_tan at y_tan), the directional derivatives of the gradients:
 *   dx_tan: (B, sizes[0]) set, or NULL;  dparams_tan: (nparams) +=, or NULL.
 * The first-order backward runs along inside (the tangent needs its per-layer gradients), so
 * dx (set) and dparams (+=) can be had in the same sweep; pass NULL to skip them.
 * With params_tan = v and x_tan = NULL, dparams_tan += H v (H the Hessian of the loss w.r.t.
 * params); with x_tan set, dparams_tan also gets the mixed term d(grad_params)/dx . x_tan, and
 * dx_tan the tangent to pass on to an upstream block. work: (lm_mlp_tan_work_size(m, B)). */
void LM_NN_FN(lm_mlp_backward_tan)(REAL *dx, REAL *dx_tan, REAL *dparams, REAL *dparams_tan, REAL *work,
                                   const lm_mlp *m, const REAL *params, const REAL *params_tan, const REAL *x,
                                   const REAL *x_tan, const REAL *cache, const REAL *tan_cache,
                                   const REAL *dy, const REAL *dy_tan, size_t B);
