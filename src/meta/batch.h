/* batch.h: the fast path of LiMAML meta-training. One call computes, for a batch of tasks,
 * the sum over the tasks of the outer objective and of its exact meta-gradients, with the
 * same meaning as summing lm_meta_task_f32 over the tasks (meta/meta.h), which stays the
 * reference the tests compare against. Derivation and costs in docs/BATCH.md.
 *
 * What makes it faster than the per-task engine, all of it exact:
 *   - the meta features of a task split are usually the same on every row (the user's): then
 *     the meta block runs on one row per split, and its embedding E, like the meta columns of
 *     the global input, adds one vector per task to layer 0 (detected per split; rows whose
 *     meta features differ take the per-row path);
 *   - the global input's dense and categorical columns never move during the inner loop or
 *     the Hessian-vector products: their product with layer 0 is formed once per outer step;
 *   - every tangent of the global input lives in the E columns;
 *   - the backward pass of the inner step is kept and reused by the tangent sweep;
 *   - register-blocked AVX-512 or AVX2 kernels (chosen at run time; plain loops elsewhere);
 *   - threads over tasks, each summing into its own buffers, reduced in a fixed order.
 *
 * Scope: LM_ALGO_LIMAML (any n, second or first order, any w >= 0) and LM_ALGO_PLAIN (the
 * vanilla gradient on the query rows), an MLP meta block, a global MLP with at least one hidden
 * layer, BCE or MSE, dropout off (lm_meta_opts.dropout_mode = LM_DROPOUT_OFF, or a net without
 * dropout), with or without lm_net_config.emb_logit (the logit also gets E[0]). Anything else gets LM_EINVAL (lm_meta_batch_supported says why) and the caller
 * uses lm_meta_task. Float only.
 *
 * Determinism: for a given workspace (its partition count) the results are the same bits on
 * every call with the same inputs, however many OpenMP threads actually run. Another
 * partition count sums in another order (differences at float rounding). */
#ifndef LM_META_BATCH_H
#define LM_META_BATCH_H

#include "meta/meta.h"

enum {
    LM_BATCH_KERNEL_AUTO = 0,   /* the fastest this processor runs */
    LM_BATCH_KERNEL_PLAIN = 1,  /* plain loops, any x86-64 or other processor */
    LM_BATCH_KERNEL_AVX512 = 2, /* AVX-512F/VL/BW/DQ + FMA */
    LM_BATCH_KERNEL_AVX2 = 3,   /* AVX2 + FMA */
};

/* Sums over the tasks of one call. */
typedef struct lm_meta_batch_stats {
    double objective;              /* sum of L_q(theta^n) + w L_s(theta^n) */
    double query_loss;             /* sum of L_q(theta^n) */
    double support_loss;           /* sum of L_s(theta^0) (0 for tasks without steps) */
    double support_loss_after;     /* sum of L_s(theta^n) when w > 0 */
    size_t splits, splits_uniform; /* task splits seen, and those on the one-row meta path */
    double flops;                  /* linear-layer FLOPs done (2 per multiply-add) */
} lm_meta_batch_stats;

/* The workspace of lm_meta_batch_f32: packed weights, per-partition scratch and gradient
 * accumulators, sized once. @note Opaque; one call at a time (not shared between threads);
 * valid for the net it was made for. */
typedef struct lm_meta_batch_ws lm_meta_batch_ws;

/* LM_OK when lm_meta_batch_f32 serves (n, o); else LM_EINVAL with the reason in err. */
int lm_meta_batch_supported(const lm_net *n, const lm_meta_opts *o, lm_err *err);

/* Allocate a workspace for batches of at most max_tasks tasks whose splits have at most
 * max_rows rows each, and at most max_steps inner steps. nparts: how many partitions the
 * tasks of a batch are dealt into (the OpenMP threads that run them; <= 0: the OpenMP maximum);
 * each has its own scratch and gradient buffers (about the global parameters once, plus the
 * per-task scratch). kernel: LM_BATCH_KERNEL_* (AUTO: AVX512, else AVX2, else PLAIN); a
 * kernel the processor lacks is LM_EINVAL.
 * LM_EINVAL for a net lm_meta_batch_supported refuses, LM_ENOMEM.
 * @note free with lm_meta_batch_ws_free (NULL is fine). */
int lm_meta_batch_ws_alloc(lm_meta_batch_ws **ws, const lm_net *n, size_t max_tasks, size_t max_rows,
                           size_t max_steps, int nparts, int kernel, lm_err *err);
void lm_meta_batch_ws_free(lm_meta_batch_ws *ws);
/* The kernel the workspace runs (LM_BATCH_KERNEL_PLAIN, _AVX512 or _AVX2) and its
 * partitions. */
int lm_meta_batch_ws_kernel(const lm_meta_batch_ws *ws);
int lm_meta_batch_ws_parts(const lm_meta_batch_ws *ws);

/* The batch: task i has support rows support[i] and query rows query[i] (lm_rows_f32 views or
 * owned rows, widths of the net; support may be NULL when o->steps = 0 and w = 0, and is
 * ignored for LM_ALGO_PLAIN). theta_m: (meta_np), theta_g: (global_np), read only.
 * grad_m: (meta_np) +=, grad_g: (global_np) += the summed meta-gradients (both NULL: only the
 * objective). task_stats: (ntasks) filled per task like lm_meta_task's stats, or NULL.
 * stats: filled, or NULL. Returns LM_OK; LM_EINVAL (message in err, nothing written) for
 * options lm_meta_batch_supported refuses; a batch larger than the workspace (tasks, rows,
 * steps) is a bug: LM_ASSERT. */
int lm_meta_batch_f32(const lm_net *n, const lm_meta_opts *o, lm_meta_batch_ws *ws, const float *theta_m,
                      const float *theta_g, size_t ntasks, const lm_rows_f32 *support,
                      const lm_rows_f32 *query, float *grad_m, float *grad_g, lm_meta_stats *task_stats,
                      lm_meta_batch_stats *stats, lm_err *err);

/* Linear-layer FLOPs (2 per multiply-add) lm_meta_batch_f32 does for one task of Bs support
 * and Bq query rows, with uniform = 1 when both splits have one meta row, 0 when neither.
 * Compare lm_meta_task_flops, the reference's count. */
double lm_meta_batch_flops(const lm_net *n, const lm_meta_opts *o, size_t Bs, size_t Bq, int uniform);

/* ============================================================================================
 * throughput measurement (for `limaml bench train`)
 * ========================================================================================== */

typedef struct lm_meta_batch_bench_opts {
    size_t tasks_per_batch; /* T */
    int threads;            /* partitions and OpenMP threads of both engines */
    double seconds;         /* about how long to time each engine */
    int reference;          /* 1: also time lm_meta_task over the same batches */
    int uniform_meta;       /* 1: a task's meta features are equal on all its rows */
    int kernel;             /* LM_BATCH_KERNEL_* of the batch engine */
    uint64_t seed;
} lm_meta_batch_bench_opts;

typedef struct lm_meta_batch_bench_result {
    double tasks_per_s, ref_tasks_per_s;           /* batch engine, reference (0 when not run) */
    double best_tasks_per_s, ref_best_tasks_per_s; /* from each batch's fastest time */
    double gflops_ref_count;         /* batch engine: lm_meta_task_flops of its tasks per second */
    double gflops_own_count;         /* batch engine: lm_meta_batch_flops per second */
    double ref_gflops;               /* reference: lm_meta_task_flops per second */
    double mean_support, mean_query; /* rows per task over the timed batches */
    size_t batches, ref_batches;
} lm_meta_batch_bench_result;

/* Time lm_meta_batch_f32 (and, if asked, lm_meta_task_f32 over the same tasks, threaded the
 * same way, one task per thread at a time) on random data of the net's shape: each batch draws
 * T (support, query) size pairs from sizes_s[i], sizes_q[i] (npool pairs, e.g. a dataset's
 * warm tasks), random features, ids and 0/1 labels. Eight batches are drawn and cycled
 * through (after one warm-up round); throughput = tasks / the sum over the eight of each one's
 * median time, and the same with each one's fastest time (on a shared machine, other work only
 * ever slows a batch down, so "best" is the estimate least disturbed by it).
 * LM_EINVAL, LM_ENOMEM with a message. */
int lm_meta_batch_bench(const lm_net *n, const lm_meta_opts *o, const uint32_t *sizes_s,
                        const uint32_t *sizes_q, size_t npool, const lm_meta_batch_bench_opts *bo,
                        lm_meta_batch_bench_result *res, lm_err *err);

#endif
