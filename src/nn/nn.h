/* nn.h: network layers with first- and second-order passes, and the MLP built from them.
 * Private to the library (include/limaml.h exposes the model-level API, not these kernels).
 *
 * Every kernel exists in two precisions with the same code: `_f32` (production) and `_f64`
 * (gradient checks of whole algorithms, where float finite differences are too coarse). The
 * declarations are written once in nn/nn_decl.h over the macros REAL and LM_NN_FN and included
 * twice below; the definitions likewise in nn/layers_impl.h and nn/mlp_impl.h, instantiated by
 * nn_f32.c and nn_f64.c. So `lm_linear_forward` below means `lm_linear_forward_f32` and
 * `lm_linear_forward_f64`.
 *
 * Conventions (llm.c):
 * - Free functions, outputs first; each buffer's shape is in a comment: `x: (B, I)` is B rows of
 *   I contiguous values. Sizes are counts of REAL elements.
 * - Backward ADDS into parameter gradients (+=) and SETS activation gradients (=). Tangent
 *   passes follow the same rule: `dw_tan +=`, `dx_tan =`.
 * - No allocation, no printing, no threads inside kernels: callers pass every buffer (caches,
 *   masks, scratch), sized with the `_size` queries. Buffers must not overlap unless a
 *   function says so.
 * - Broken shapes or NULL where a buffer is required are bugs: LM_ASSERT.
 *
 * Second order (Pearlmutter's R-operator, derivations in docs/NN.md): `_forward_tan` pushes a
 * tangent (a direction v in parameters and/or inputs) through the forward pass, giving the
 * directional derivative of the outputs; `_backward_tan` gives the directional derivative of
 * the backward pass's outputs (the gradients). For a loss L(theta), running forward, forward_tan
 * with params_tan = v, the loss's backward and backward_tan, then backward_tan, leaves H v in
 * dparams_tan, at about the cost of two more sweeps.
 */
#ifndef LM_NN_H
#define LM_NN_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

/* ---- the MLP: description, shared by both precisions --------------------------------------- */

#define LM_MLP_MAX_LAYERS 16

/* How lm_mlp_forward treats dropout (only matters when the MLP has dropout > 0). */
enum {
    LM_DROPOUT_OFF = 0,    /* evaluation: identity; the cache's masks are filled with 1 */
    LM_DROPOUT_SAMPLE = 1, /* training: draw new masks from the rng into the cache */
    LM_DROPOUT_KEEP = 2,   /* reuse the masks already in the cache (same B), e.g. to evaluate
                            * the same network at a perturbed or adapted point */
};

/* An MLP with widths sizes[0] (input), ..., sizes[L] (output): L linear layers, ReLU after
 * every layer but the last, and inverted dropout with rate `dropout` after each hidden ReLU.
 *
 * Parameters live in ONE flat buffer of `nparams` REALs (so a task's adapted copy is one
 * memcpy): layer l has W_l: (sizes[l+1], sizes[l]) row-major at w_off[l], then
 * b_l: (sizes[l+1]) at b_off[l]; layers follow each other in order. The same layout serves
 * gradients, tangents and optimizer moments.
 *
 * The forward cache (lm_mlp_cache_size) holds, per hidden layer l < L-1, the layer's output
 * after ReLU and dropout, a_l: (B, sizes[l+1]) at B * act_row_off[l], and when dropout > 0 the
 * mask: (B, sizes[l+1]) at B * mask_row_off[l] (values 0 or 1/(1-p)). The tangent cache
 * (lm_mlp_tan_cache_size) holds a_l_tan: (B, sizes[l+1]) at B * tan_row_off[l].
 *
 * Plain data with no allocation: there is no lm_mlp_free. */
typedef struct lm_mlp {
    size_t nlayers;                        /* L, linear layers, 1 <= L <= LM_MLP_MAX_LAYERS */
    size_t sizes[LM_MLP_MAX_LAYERS + 1];   /* widths, sizes[0] in .. sizes[L] out, all >= 1 */
    size_t w_off[LM_MLP_MAX_LAYERS];       /* offset of W_l in the parameter buffer */
    size_t b_off[LM_MLP_MAX_LAYERS];       /* offset of b_l */
    size_t nparams;                        /* REALs in the parameter buffer */
    double dropout;                        /* p in [0, 1); 0 = no dropout, no masks cached */
    size_t act_row_off[LM_MLP_MAX_LAYERS]; /* per-row offsets in the forward cache */
    size_t mask_row_off[LM_MLP_MAX_LAYERS];
    size_t cache_row;                      /* REALs of forward cache per batch row */
    size_t tan_row_off[LM_MLP_MAX_LAYERS]; /* per-row offsets in the tangent cache */
    size_t tan_cache_row;                  /* REALs of tangent cache per batch row */
    size_t max_hidden;                     /* widest hidden layer, 0 when L == 1 */
} lm_mlp;

/* Describe an MLP with `nsizes` widths [in, h1, ..., out] (nsizes >= 2). LM_EINVAL with a
 * message when a width is 0, there are too many layers, or dropout is outside [0, 1). */
int lm_mlp_init(lm_mlp *m, const size_t *sizes, size_t nsizes, double dropout, lm_err *err);

/* Sizes in REAL elements (multiply by sizeof(float) or sizeof(double)) for a batch of B rows. */
size_t lm_mlp_nparams(const lm_mlp *m);
size_t lm_mlp_cache_size(const lm_mlp *m, size_t B);     /* forward cache */
size_t lm_mlp_tan_cache_size(const lm_mlp *m, size_t B); /* tangent-forward cache */
size_t lm_mlp_work_size(const lm_mlp *m, size_t B);      /* scratch of lm_mlp_backward */
size_t lm_mlp_tan_work_size(const lm_mlp *m, size_t B);  /* scratch of lm_mlp_backward_tan */

/* ---- the kernels, in float and double ------------------------------------------------------ */

#define REAL float
#define LM_NN_FN(name) name##_f32
#include "nn/nn_decl.h"
#undef REAL
#undef LM_NN_FN

#define REAL double
#define LM_NN_FN(name) name##_f64
#include "nn/nn_decl.h"
#undef REAL
#undef LM_NN_FN

#endif
