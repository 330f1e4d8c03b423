/* batch_int.h: what meta/batch.c (set-up, packing, threads, reduction) shares with the
 * per-task engine meta/batch_impl.h, which is compiled once per instruction set
 * (batch_avx512.c, batch_avx2.c, batch_plain.c). Private to those files.
 *
 * Layouts. Every row of an activation, gradient or tangent buffer is padded to a multiple of
 * BT_PAD floats with zeros, so vector loops need no tails; the pads stay zero because every
 * weight, bias and input they are computed from has zero pads. The global block's weights are
 * repacked per call (theta_g changes every batch) into
 *   WT[l]: layer l transposed, (in_l, HP[l]): the forward is rows x WT (broadcast-FMA form);
 *   Wn[l]: layer l as stored, rows padded, (H[l], in_l padded): backward and tangent dx;
 * and their gradients are summed per partition in the WT layout (GT[l] += x^T dz), unpacked
 * into the caller's lm_mlp layout at the end. The meta block is adapted per task, so it stays
 * in lm_mlp layout (native W: (out, in) unpadded) and its kernels take masked tails. */
#ifndef LM_META_BATCH_INT_H
#define LM_META_BATCH_INT_H

#include "meta/batch.h"

#include <stdint.h>
#include <string.h>

#define BT_PAD 16
#define BT_ML LM_MLP_MAX_LAYERS

static inline size_t bt_pad(size_t x)
{
    return (x + BT_PAD - 1) / BT_PAD * BT_PAD;
}

/* The net's shapes as the engine uses them. Global hidden layers l = 0 .. L-2 have widths
 * H[l] (padded HP[l]); layer L-1 is the logit (width 1). Global input columns: [meta | dense |
 * cat_1 .. cat_C | E]; dense and cat are the "fixed" columns X: (B, Kdc) from col_dense. */
typedef struct bt_dims {
    size_t L, H[BT_ML], HP[BT_ML];
    size_t nin, ninP;
    size_t nmeta, ndense, ncat, E, EP;
    int meta_in_global, loss;
    int emb_logit; /* 1: the logit also gets E[0] (lm_net_config.emb_logit) */
    size_t col_meta, col_dense, col_emb, col_cat0, Kdc, Kcat;
    size_t cat_col[LM_NET_MAX_CAT]; /* table c's first column in X */
    size_t cat_dim[LM_NET_MAX_CAT], cat_rows[LM_NET_MAX_CAT];
    size_t tab_off[LM_NET_MAX_CAT];              /* table c's offset in the table part of theta_g */
    size_t tab_row0[LM_NET_MAX_CAT];             /* table c's first row in the partitions' touched map */
    size_t tab_np, tab_rows;                     /* REALs and rows of all tables */
    size_t Lm, MI[BT_ML], MO[BT_ML], MOP[BT_ML]; /* meta layers: in, out, out padded */
    size_t meta_np, global_mlp_np;
    size_t max_rows, max_steps;
} bt_dims;

/* The packed global block (see the top of the file). */
typedef struct bt_gw {
    float *WT[BT_ML], *Wn[BT_ML], *b[BT_ML];
    size_t ldn[BT_ML]; /* row stride of Wn[l]: ninP for l = 0, HP[l-1] above */
    float *wl;         /* (HP[L-2]) the logit layer's weights */
    float bl;          /* its bias */
} bt_gw;

/* One forward's state for up to max_rows rows (the meta part has 1 row on the uniform path). */
typedef struct bt_slot {
    float *E;                    /* (R, EP) meta embedding */
    float *ma[BT_ML];            /* (R, MOP[l]) meta hidden activations, l < Lm-1 */
    float *mdz[BT_ML];           /* (R, MOP[l]) meta pre-activation grads; [Lm-1] = dE */
    float *a[BT_ML], *dz[BT_ML]; /* (R, HP[l]) global hidden activations and grads */
    float *z, *s, *dzo;          /* (R) logit, sigmoid (BCE), d loss / d logit */
    float *s0;                   /* (HP[0]) sum over rows of dz[0] */
} bt_slot;

/* One task split prepared for the global block: X its fixed columns, P = X Wfix^T + b0 (+ its
 * meta columns' product when they vary by row), qm (uniform) the meta columns' product. */
typedef struct bt_seg {
    const lm_rows_f32 *r;
    size_t B, Bm; /* rows; meta rows (1 when uniform, else B) */
    int uni;
    float *X;  /* (R, Kdc) */
    float *P;  /* (R, HP[0]) */
    float *qm; /* (HP[0]) */
} bt_seg;

/* A partition: the tasks one thread runs, its scratch and its gradient sums. */
typedef struct bt_part {
    size_t *tasks, ntasks;
    /* gradient sums in packed layouts; acc0 (nacc) spans the dense ones, zeroed per call */
    float *acc0;
    size_t nacc;
    float *GT[BT_ML], *gb[BT_ML], *gwl;
    double gbl;
    float *gtab;      /* (tab_np) table gradients */
    uint8_t *touched; /* (tab_rows) 1 for rows with a nonzero sum */
    uint32_t *tlist;  /* (tab_rows) the touched rows, in order */
    size_t ntouched;
    float *gm; /* (meta_np) */
    /* scratch */
    bt_seg seg_s, seg_q;
    bt_slot *slots; /* max_steps + 1: support steps, then the query's */
    size_t nslots;
    bt_slot tan;               /* tangents */
    float *iter;               /* (max_steps, meta_np) phi_1 .. phi_n */
    float *g, *adj, *v, *zero; /* (meta_np) inner gradient, adjoint, direction, 0 */
    float *q, *qt;             /* (HP[0]) layer-0 row vectors */
    float *dxc;                /* (R, Kcat) table-column gradients */
    float *dZs, *sZs;          /* (R, HP[0]), (HP[0]): summed support dz0, its rows */
    int defer;                 /* 1: layer0_grads sums into dZs (see batch_impl.h) */
    /* sums */
    double obj, ql, sl, sla, flops;
    size_t splits, splits_uni;
} bt_part;

/* What every partition reads. */
typedef struct bt_ctx {
    const lm_net *n;
    const bt_dims *d;
    const bt_gw *w;
    const float *theta_m, *theta_g;
    size_t steps;
    float alpha;
    double sw;  /* support weight w */
    int second; /* second order */
    int want;   /* 1: gradients; 0: the objective only */
    const lm_rows_f32 *support, *query;
    lm_meta_stats *task_stats;
} bt_ctx;

/* k_gemm modes: C = A B, C = A B + bias (a row vector), C += A B; and the epilogue applied
 * to the result: none, ReLU, or zero where a reference array is not positive (the ReLU mask of
 * a forward activation, for gradients and tangents). */
enum { BT_SET = 0, BT_BIAS = 1, BT_ACC = 2 };
enum { BT_EPI_NONE = 0, BT_EPI_RELU = 1, BT_EPI_POS = 2 };

/* The engine per instruction set: run partition p's tasks, adding into its sums. */
void bt_run_plain(const bt_ctx *c, bt_part *p);
void bt_run_avx512(const bt_ctx *c, bt_part *p);
void bt_run_avx2(const bt_ctx *c, bt_part *p);

#endif
