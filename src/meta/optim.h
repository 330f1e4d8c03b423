/* optim.h: the outer-loop optimizer: Adam with global gradient-norm clipping and a learning
 * rate schedule (linear warm-up, then linear or cosine decay), as section 6.4 of the paper
 * uses. The state (moments and step) is plain data so checkpoints store it and a resumed run
 * continues bit for bit. */
#ifndef LM_META_OPTIM_H
#define LM_META_OPTIM_H

#include "core/core.h"

/* One parameter buffer with its gradient and Adam moments (all of n floats). */
typedef struct lm_adam_span {
    float *param;
    const float *grad;
    float *m, *v;
    size_t n;
} lm_adam_span;

typedef struct lm_adam {
    double beta1, beta2, eps;
    double weight_decay; /* decoupled (AdamW); 0: plain Adam */
    uint64_t step;       /* updates taken so far */
} lm_adam;

void lm_adam_init(lm_adam *a);

/* The global L2 norm of the gradients of all spans (accumulated in double). */
double lm_grad_norm(const lm_adam_span *s, size_t nspans);

/* One Adam update at rate lr; the gradients are first scaled by min(1, clip / norm) when
 * clip > 0 (the scale is folded into the update: gradients are not modified). Returns the
 * gradient norm before clipping. */
double lm_adam_update(lm_adam *a, lm_adam_span *s, size_t nspans, double lr, double clip);

/* The learning rate at update `step` (0-based) of `total`: base * step/warmup during the
 * warm-up, then decaying to base * final_frac at the last step (or constant). */
double lm_lr_at(double base, uint64_t step, uint64_t total, uint64_t warmup, int decay, double final_frac);

#endif
