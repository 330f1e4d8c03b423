/* batch_embed_int.h: what meta/batch_embed.c (plan, workspace, dispatch) shares with the
 * engine meta/batch_embed_impl.h, which is compiled once per instruction set
 * (batch_embed_avx512.c, batch_embed_avx2.c, batch_embed_plain.c). Private to those files.
 *
 * Layouts (as meta/batch_int.h's): every row of an activation or gradient buffer is padded with
 * zeros to a multiple of BT_PAD floats, so vector loops need no tails and every matrix product
 * has a padded width; the pads stay zero because every weight, bias and input they come from
 * has zero pads. The global block is packed once per plan:
 *   WT[l]: layer l transposed, (in_l, HP[l]): the forward is rows x WT[l];
 *   Wn[l]: layer l as stored with padded rows, (H[l], HP[l-1]), l >= 1: the backward;
 *   WnE:   layer 0's E columns, (H[0], EP): dE = dz0 WnE.
 * The meta block is adapted, so it lives in a packed copy phi that the SGD steps update: per
 * layer l, WT (MI[l], MOP[l]), the bias (MOP[l]) and, for l >= 1, Wn (MO[l], MOP[l-1]) for the
 * backward. Both copies of a weight get the same gradient bits (a x b = b x a, summed over the
 * rows in the same order), so they stay equal: one parameter set in two layouts. */
#ifndef LM_META_BATCH_EMBED_INT_H
#define LM_META_BATCH_EMBED_INT_H

#include "meta/batch_embed.h"
#include "meta/batch_int.h"

/* Rows per block: the global block's activations are kept for one block at a time. */
#define BE_RB 64

typedef struct be_dims {
    size_t L, H[BT_ML], HP[BT_ML]; /* global: hidden widths (l < L-1), padded */
    size_t nin, nmeta, ndense, ncat, E, EP;
    int meta_in_global, loss;
    int emb_logit;                            /* 1: the logit also gets E[0] */
    size_t col_meta, col_dense, col_emb, Kdc; /* Kdc: dense + table columns (X) */
    size_t cat_col[LM_NET_MAX_CAT];           /* table c's first column in X */
    size_t cat_dim[LM_NET_MAX_CAT], cat_rows[LM_NET_MAX_CAT], cat_off[LM_NET_MAX_CAT];
    size_t Lm, MI[BT_ML], MO[BT_ML], MOP[BT_ML];       /* meta layers: in, out, out padded */
    size_t p_wt[BT_ML], p_wn[BT_ML], p_b[BT_ML], p_np; /* the packed meta layout */
    size_t meta_np, global_np;
} be_dims;

struct lm_meta_embed_plan {
    be_dims d;
    int kernel;
    void (*run)(const struct lm_meta_embed_plan *p, struct lm_meta_embed_ws *w, const lm_rows_f32 *r,
                uint32_t steps, float alpha, int pool, float *out);
    float *buf; /* everything below but tab */
    float *WT[BT_ML], *Wn[BT_ML], *b[BT_ML], *WnE, *wl;
    float bl;
    const float *tab[LM_NET_MAX_CAT]; /* theta_g's tables, read in place */
    float *phi0;                      /* (p_np) theta_m packed */
};

struct lm_meta_embed_ws {
    be_dims d;           /* of the net it was made for */
    size_t max_rows, rb; /* rows whose P is kept; rows per block */
    void *mem;
    float *P;                          /* (max_rows, HP[0]) */
    float *X;                          /* (rb, Kdc) */
    float *qm, *q, *s0;                /* (HP[0]) */
    float *gz;                         /* (rb) emb_logit: each row's d loss / d z */
    float gsum;                        /* emb_logit, uniform: their sum over the task's rows */
    float *a[BT_ML], *dz[BT_ML];       /* (rb, HP[l]) */
    float *E, *ma[BT_ML], *mdz[BT_ML]; /* (rb, EP), (rb, MOP[l]); mdz[Lm-1] is dE */
    float *phi, *g;                    /* (p_np) */
    float *last;                       /* (EP) the last row's output, for pooling */
    double *acc;                       /* (E) the pooling sums */
};

typedef void (*be_run_fn)(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r,
                          uint32_t steps, float alpha, int pool, float *out);
void be_run_plain(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r, uint32_t steps,
                  float alpha, int pool, float *out);
void be_run_avx512(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r, uint32_t steps,
                   float alpha, int pool, float *out);
void be_run_avx2(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r, uint32_t steps,
                 float alpha, int pool, float *out);

#endif
