/* meta.h: the LiMAML network (meta block + global block) and the per-task building blocks of
 * meta-training: exact meta-gradients of LiMAML (Algorithm 2a) and entire-network MAML
 * (Algorithm 1) for any number of inner steps, the plain gradient, task adaptation and the meta
 * embedding (Algorithm 2b). Private to the library; derivations and costs in docs/META.md.
 *
 * The network (lm_net) is a description with no parameters in it, shared by both precisions:
 *
 *   meta block    E = MLP_meta(meta features)                        (LM_NET_META_MLP)
 *              or E = T_id[task row]   (an id-embedding table)       (LM_NET_META_ID)
 *   global block  z = MLP_global([meta | dense | emb_1(cat_1) ... emb_C(cat_C) | E])
 *                   (+ E[0] with the emb_logit option: a per-task shift of the logit)
 *   loss          mean over the task's B examples of BCE(z, y) (binary) or (z - y)^2 (MSE)
 *
 * Parameters are two flat buffers: theta_m, the meta block (the MLP's buffer in lm_mlp layout,
 * or the id table (id_rows, E) row-major), and theta_g, the global block (the MLP's buffer,
 * then the categorical tables (buckets_c, dim_c) in column order, at cat_off[c]). A task's
 * adapted copy is one memcpy. For the id variant a task only touches its own row, so every
 * per-task function takes the task's SLICE of theta_m: lm_net_meta_slice() gives its offset,
 * meta_task_np its length (the whole buffer for the MLP variant, one row of E for the id
 * variant); meta-gradients come back in the same slice layout.
 *
 * Everything below is written once over REAL in meta/meta_decl.h and instantiated as `_f32`
 * (production) and `_f64` (finite-difference checks), like nn/nn.h. The per-task functions
 * are reentrant: they read the net and the parameters and write only into their workspace
 * (lm_meta_ws, one per thread, sized once) and their outputs, so an OpenMP loop over the
 * tasks of a batch can call them with one workspace and one gradient buffer per thread.
 *
 * Conventions as in nn/: gradients are ADDED (+=) into the caller's buffers, so a thread sums
 * its tasks without zeroing per task; outputs that are values (adapted parameters, logits,
 * embeddings) are SET. Shapes are in comments, sizes are counts of REAL elements. Broken
 * shapes (a batch larger than the workspace, rows of the wrong width) are bugs: LM_ASSERT.
 */
#ifndef LM_META_H
#define LM_META_H

#include "core/core.h"
#include "nn/nn.h"

#include <stddef.h>
#include <stdint.h>

/* ============================================================================================
 * the network description (both precisions)
 * ========================================================================================== */

enum { LM_NET_META_MLP = 0, LM_NET_META_ID = 1 };
enum { LM_NET_LOSS_BCE = 0, LM_NET_LOSS_MSE = 1 };

#define LM_NET_MAX_CAT 64

/* What to build. lm_net_config_default gives the paper's shape (meta MLP 32 -> E = 16, global
 * MLP 64, 32 -> 1, BCE, no dropout, meta features fed to the global block too) with no
 * features; lm_net_config_from_schema fills the feature counts, tables and loss. */
typedef struct lm_net_config {
    int meta_kind;                         /* LM_NET_META_MLP or LM_NET_META_ID */
    size_t nmeta, ndense, ncat;            /* feature counts per example */
    uint32_t cat_buckets[LM_NET_MAX_CAT];  /* rows of categorical table c */
    uint32_t cat_dim[LM_NET_MAX_CAT];      /* its width */
    size_t emb_dim;                        /* E, the meta embedding width */
    size_t meta_hidden[LM_MLP_MAX_LAYERS]; /* hidden widths of the meta MLP (may be none) */
    size_t nmeta_hidden;
    size_t id_rows;                          /* LM_NET_META_ID: training tasks + 1 default */
    size_t global_hidden[LM_MLP_MAX_LAYERS]; /* hidden widths of the global MLP */
    size_t nglobal_hidden;
    int meta_in_global; /* 1: the meta features also feed the global block */
    int loss;           /* LM_NET_LOSS_BCE or LM_NET_LOSS_MSE */
    double dropout;     /* rate after every hidden ReLU of both MLPs */
    int emb_logit;      /* 1: z = MLP_global(x) + E[0] (docs/META.md) */
} lm_net_config;

void lm_net_config_default(lm_net_config *c);
/* Take nmeta, ndense, the categorical tables (buckets, dim) and the loss (binary -> BCE,
 * regression -> MSE) from a schema; the rest of `c` is left as is. LM_EINVAL with a message
 * when the schema has more than LM_NET_MAX_CAT categorical columns. */
int lm_net_config_from_schema(lm_net_config *c, const lm_schema *s, lm_err *err);

/* The network: the config plus derived layouts. Plain data, no allocation, no lm_net_free. */
typedef struct lm_net {
    lm_net_config cfg;
    lm_mlp meta;   /* LM_NET_META_MLP: [nmeta, meta_hidden..., E]; unused for ID */
    lm_mlp global; /* [nin, global_hidden..., 1] */
    size_t E;      /* meta embedding width */
    size_t nmeta, ndense, ncat;
    size_t nin;                          /* global input width */
    size_t col_meta, col_dense, col_emb; /* first column of each part in the global input */
    size_t col_cat[LM_NET_MAX_CAT];
    size_t cat_rows[LM_NET_MAX_CAT], cat_dim[LM_NET_MAX_CAT];
    size_t cat_off[LM_NET_MAX_CAT]; /* table c's offset in theta_g */
    size_t meta_np;                 /* REALs in theta_m (MLP parameters, or id_rows * E) */
    size_t meta_task_np;            /* REALs in one task's slice of theta_m (meta_np, or E) */
    size_t global_np;               /* REALs in theta_g (MLP parameters + tables) */
} lm_net;

/* Validate `c` and lay the network out. LM_EINVAL with a message naming the bad field. */
int lm_net_init(lm_net *n, const lm_net_config *c, lm_err *err);

/* Offset in theta_m of the slice a task adapts: 0 for the MLP variant; row * E for the id
 * variant (row < id_rows; the last row, id_rows - 1, is the default for unseen tasks). */
size_t lm_net_meta_slice(const lm_net *n, size_t row);

/* ============================================================================================
 * per-task options, results and workspace layout (both precisions)
 * ========================================================================================== */

enum {
    LM_ALGO_PLAIN = 0,  /* gradient of the loss on the query rows at theta (the baseline) */
    LM_ALGO_LIMAML = 1, /* inner loop adapts the meta block only (Algorithm 2a) */
    LM_ALGO_MAML = 2,   /* inner loop adapts both blocks (Algorithm 1) */
};

/* Gather both parts of a warm task's train split (support then query) with lm_rows_gather.
 * Proposed for include/limaml.h as LM_SPLIT_TRAIN; kept here meanwhile. */
#define LM_META_SPLIT_TRAIN 16

typedef struct lm_meta_opts {
    int algo;              /* LM_ALGO_... */
    size_t steps;          /* n, inner SGD steps on the support rows (0: none) */
    double alpha;          /* inner learning rate */
    int first_order;       /* 1: drop the Hessian terms (first-order MAML) */
    double support_weight; /* w >= 0: the outer objective is L_q(theta^n) + w L_s(theta^n) */
    int dropout_mode;      /* LM_DROPOUT_OFF, _SAMPLE (new masks per forward), _KEEP */
} lm_meta_opts;

/* LiMAML, 1 step, alpha 0.1, second order, w 0, dropout SAMPLE. */
void lm_meta_opts_default(lm_meta_opts *o);

/* What one task's call measured (losses are per-example means). */
typedef struct lm_meta_stats {
    double objective;          /* L_q(theta^n) + w L_s(theta^n): what the gradient is of */
    double query_loss;         /* L_q(theta^n) */
    double support_loss;       /* L_s(theta^0), before adaptation (0 when steps = 0) */
    double support_loss_after; /* L_s(theta^n), only computed when w > 0, else 0 */
} lm_meta_stats;

/* Where things live in a workspace of `total` REALs. The forward passes of a task go to
 * numbered slots, each holding one forward's state (meta embedding, global input, both MLP
 * caches with their dropout masks, logits) for up to max_rows rows. The algorithms use slot k
 * for the support forward at theta^k (k < n), slot n for the query forward at theta^n and
 * slot n + 1 for the support forward at theta^n (when w > 0); evaluation uses slot 0. A
 * forward's slot is read again by its backward and tangent passes, and LM_DROPOUT_KEEP reuses
 * the masks a slot holds (so it needs the same rows as the forward that drew them). */
typedef struct lm_meta_layout {
    size_t max_rows, max_steps, nslots;
    int adapt_global; /* sized for MAML (global iterates and adjoint) */
    size_t p_adapt;   /* meta_task_np, + global_np when adapt_global */
    /* one slot, offsets from its start */
    size_t st_E, st_xg, st_mcache, st_gcache, st_z, st_size;
    size_t off_slots;
    /* tangent and backward scratch (one set) */
    size_t off_E_tan, off_xg_tan, off_z_tan, off_dz, off_dz_tan, off_dxg, off_dxg_tan;
    size_t off_dE, off_dE_tan, off_mtcache, off_gtcache, off_mwork, off_gwork;
    /* the algorithm: iterates theta^1..theta^n, inner gradient, adjoint, direction */
    size_t off_iter, off_g, off_a, off_v;
    size_t total;
} lm_meta_layout;

/* Lay out a workspace for tasks of at most max_rows rows per split and max_steps inner steps;
 * adapt_global: room for MAML (both blocks adapted), else LiMAML and plain only. LM_EINVAL
 * when the size overflows. */
int lm_meta_layout_init(lm_meta_layout *l, const lm_net *n, size_t max_rows, size_t max_steps,
                        int adapt_global, lm_err *err);

/* Linear-layer FLOPs (2 per multiply-add; elementwise work and O(P) vector updates not
 * counted) of one lm_meta_task call with Bs support and Bq query rows, following the exact
 * kernel calls it makes. For cost models and benchmarks; see docs/META.md. */
double lm_meta_task_flops(const lm_net *n, const lm_meta_opts *o, size_t Bs, size_t Bq);

/* Rows of `split` in a task: LM_SPLIT_SUPPORT .. LM_SPLIT_TEST, or LM_META_SPLIT_TRAIN. */
size_t lm_task_split_rows(const lm_task *t, int split);

/* ============================================================================================
 * the kernels, in float and double
 * ========================================================================================== */

#define REAL float
#define LM_META_FN(name) name##_f32
#include "meta/meta_decl.h"
#undef REAL
#undef LM_META_FN

#define REAL double
#define LM_META_FN(name) name##_f64
#include "meta/meta_decl.h"
#undef REAL
#undef LM_META_FN

/* ============================================================================================
 * meta embeddings (Algorithm 2b)
 * ========================================================================================== */

#define LM_EMBED_MAX_DIM 4096

/* Adapt theta_m (P_m, the task's slice: modified in place) with `steps` SGD steps at alpha on
 * rows r (n >= 1; LiMAML: the meta block only), then pool the adapted meta block's outputs
 * into out: (E): LM_POOL_LATEST (the latest row's output, the default), _MEAN, _MAX, or _COS
 * (a mean weighted by each output's cosine similarity with the latest one's). scratch: (n, E)
 * for the pooled kinds (unused for LATEST). The workspace needs max_rows >= r->n. */
void lm_meta_task_embedding(const lm_net *n, lm_meta_ws_f32 *ws, float *theta_m, const float *theta_g,
                            const lm_rows_f32 *r, uint32_t steps, double alpha, int pool, float *scratch,
                            float *out);

#endif
