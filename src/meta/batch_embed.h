/* batch_embed.h: the fast path of Algorithm 2b, a task's meta embedding: k SGD steps of the
 * meta block alone on the mean loss of the task's rows (lm_meta_adapt_f32 with LM_ALGO_LIMAML),
 * then the adapted block's output on the latest row, or pooled over all rows. The same meaning
 * as lm_meta_task_embedding (meta/meta.h), which stays the reference the tests compare against
 * (normwise relative error about 1e-6). Derivation and costs in docs/EMBED.md.
 *
 * What makes it faster, all of it exact (the tricks of meta/batch.h):
 *   - a task whose rows share their meta features (detected bitwise) runs the meta block on one
 *     row, and its embedding adds one vector to layer 0 of the global block;
 *   - layer 0 splits by columns: the dense and table columns never move during adaptation, so
 *     their product P = X Wfix^T + b0 is formed once per task; each step only adds E WE^T;
 *   - no loss value, no global-block gradient, no Hessian: forward, backward to theta_m, update;
 *   - the model is packed once (transposed and padded weights) and shared by the threads;
 *   - register-blocked AVX-512 or AVX2 kernels, chosen at run time; plain loops elsewhere.
 *
 * Determinism: a task's result depends only on the task's rows, the plan (model and kernel),
 * k, alpha and the pooling: not on the workspace's size, the thread, or the other tasks of a
 * run. Every sum over rows runs in row order. So `limaml adapt` of one task and `limaml embed`
 * of all tasks give the same bits on the same machine (the kernel is part of the plan: AVX-512,
 * AVX2 and plain loops round differently).
 *
 * Scope: an MLP meta block; a global MLP with at least one hidden layer ending in one logit;
 * BCE or MSE. Dropout does not matter (adaptation runs with dropout off). Anything else is
 * LM_EINVAL (lm_meta_embed_supported says why) and the caller uses lm_meta_task_embedding.
 * Float only. */
#ifndef LM_META_BATCH_EMBED_H
#define LM_META_BATCH_EMBED_H

#include "meta/batch.h"

/* LM_OK when the fast path serves net n; else LM_EINVAL with the reason in err (may be NULL). */
int lm_meta_embed_supported(const lm_net *n, lm_err *err);

/* ============================================================================================
 * the plan (one per model, shared) and the workspace (one per thread)
 * ========================================================================================== */

/* The model packed for the engine: the global block transposed and padded, theta_m packed.
 * @note Opaque and read only once made: threads share one plan. It copies what it packs but
 * reads the categorical tables in place, so theta_g must stay valid and unchanged while the
 * plan is used. Free with lm_meta_embed_plan_free (NULL is fine). */
typedef struct lm_meta_embed_plan lm_meta_embed_plan;

/* Pack (theta_m: (meta_np), theta_g: (global_np)) of net n for kernel LM_BATCH_KERNEL_*
 * (AUTO: AVX-512, else AVX2, else plain loops; a kernel this processor lacks is LM_EINVAL).
 * LM_EINVAL for a net lm_meta_embed_supported refuses, LM_ENOMEM. */
int lm_meta_embed_plan_alloc(lm_meta_embed_plan **out, const lm_net *n, const float *theta_m,
                             const float *theta_g, int kernel, lm_err *err);
void lm_meta_embed_plan_free(lm_meta_embed_plan *p);
/* The kernel the plan runs: LM_BATCH_KERNEL_PLAIN, _AVX512 or _AVX2. */
int lm_meta_embed_plan_kernel(const lm_meta_embed_plan *p);

/* One thread's scratch. max_rows: the task size whose layer-0 product is kept across steps
 * (larger tasks are served too: they recompute it per block of rows and step, same bits);
 * memory is about max_rows * 4 * (first global width) bytes plus a few hundred KB.
 * @note Not shared between threads; valid for plans of net n. Free with lm_meta_embed_ws_free
 * (NULL is fine). LM_EINVAL for an unsupported net, LM_ENOMEM. */
typedef struct lm_meta_embed_ws lm_meta_embed_ws;
int lm_meta_embed_ws_alloc(lm_meta_embed_ws **out, const lm_net *n, size_t max_rows, lm_err *err);
void lm_meta_embed_ws_free(lm_meta_embed_ws *ws);

/* ============================================================================================
 * one task
 * ========================================================================================== */

/* Task rows r (r->n >= 1, the net's widths; a view or owned rows): adapt the plan's theta_m by
 * `steps` SGD steps at rate alpha on the mean loss of the rows (the global block fixed), then
 * write into out: (E) the adapted meta block's output pooled as `pool` says (LM_POOL_LATEST:
 * on the last row; _MEAN, _MAX, _COS: over all rows, as lm_meta_task_embedding). Reads the plan
 * and r, writes ws and out only: threads run tasks at once with one workspace each.
 * Allocates nothing. An empty task, rows of the wrong width or a table id out of range are
 * bugs: LM_ASSERT. */
void lm_meta_embed_f32(const lm_meta_embed_plan *p, lm_meta_embed_ws *ws, const lm_rows_f32 *r,
                       uint32_t steps, double alpha, int pool, float *out);

/* Linear-layer FLOPs (2 per multiply-add) lm_meta_embed_f32 does for a task of B rows (at
 * most the workspace's max_rows, so P is formed once), with uniform = 1 when they share their
 * meta features. docs/EMBED.md compares the reference's count. */
double lm_meta_embed_flops(const lm_net *n, size_t B, uint32_t steps, int pool, int uniform);

/* ============================================================================================
 * throughput measurement of the engine alone
 * ========================================================================================== */

typedef struct lm_meta_embed_bench_opts {
    uint32_t steps; /* k */
    double alpha;
    int pool;           /* LM_POOL_... */
    int threads;        /* OpenMP threads (<= 0: the OpenMP maximum) */
    int kernel;         /* LM_BATCH_KERNEL_* of the fast engine */
    uint64_t tasks;     /* tasks of the full pass (0: all of the dataset's) */
    uint64_t ref_tasks; /* tasks the reference is timed on (0: none) */
    size_t pool_tasks;  /* tasks gathered once for the compute-only timing (0: 16384) */
    int runs;           /* timed passes of each kind; the fastest counts (0: 3) */
} lm_meta_embed_bench_opts;

typedef struct lm_meta_embed_bench_result {
    double tasks_per_s;             /* full pass: each task's rows gathered, then embedded */
    double compute_tasks_per_s;     /* the pool's tasks, rows gathered beforehand */
    double ref_tasks_per_s;         /* lm_meta_task_embedding, rows gathered (0: not run) */
    double gflops;                  /* compute-only, lm_meta_embed_flops per second */
    double mean_rows, uniform_frac; /* over the pool's tasks */
    uint64_t tasks;                 /* tasks of the full pass */
    double max_rel_diff;            /* worst max|fast - ref| / max|ref| over the reference's tasks */
    uint64_t ref_over_1e4;          /* of those tasks, how many differ by more than 1e-4: with k >= 2
                                 * a few in 10,000 sit within rounding of a ReLU kink, where any
                                 * two float computations part (docs/EMBED.md) */
} lm_meta_embed_bench_result;

/* Time lm_meta_embed_f32 on the tasks of dataset ds (every row of a task, as `limaml embed
 * --adapt-from all`) for the model (net n, theta_m, theta_g), OpenMP over the tasks with bo's
 * threads and one workspace each, as lm_embed runs it: a pass over bo->tasks tasks gathering
 * each one's rows, and compute-only passes over a pool of tasks gathered beforehand; and, if
 * asked, the reference (lm_meta_task_embedding) over the first ref_tasks tasks, with the worst
 * difference. Nothing is stored. LM_EINVAL, LM_ENOMEM, LM_EMISMATCH (a dataset of other
 * widths), with a message. */
int lm_meta_embed_bench(const lm_net *n, const float *theta_m, const float *theta_g, const lm_dataset *ds,
                        const lm_meta_embed_bench_opts *bo, lm_meta_embed_bench_result *res, lm_err *err);

#endif
