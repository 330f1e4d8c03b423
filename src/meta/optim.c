/* optim.c: Adam, clipping and the learning-rate schedule. Hand-written: a dozen lines over
 * flat buffers, and checkpoints need its exact state. */
#include "meta/optim.h"

#include <math.h>

void lm_adam_init(lm_adam *a)
{
    a->beta1 = 0.9;
    a->beta2 = 0.999;
    a->eps = 1e-8;
    a->weight_decay = 0;
    a->step = 0;
}

double lm_grad_norm(const lm_adam_span *s, size_t nspans)
{
    double ss = 0;
    for (size_t k = 0; k < nspans; k++)
        for (size_t i = 0; i < s[k].n; i++) ss += (double)s[k].grad[i] * s[k].grad[i];
    return sqrt(ss);
}

double lm_adam_update(lm_adam *a, lm_adam_span *s, size_t nspans, double lr, double clip)
{
    double norm = lm_grad_norm(s, nspans);
    float scale = clip > 0 && norm > clip ? (float)(clip / norm) : 1.0f;
    a->step++;
    double bc1 = 1.0 - pow(a->beta1, (double)a->step), bc2 = 1.0 - pow(a->beta2, (double)a->step);
    float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->eps;
    float step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    float wd = (float)(lr * a->weight_decay);
    for (size_t k = 0; k < nspans; k++) {
        float *p = s[k].param, *m = s[k].m, *v = s[k].v;
        const float *g = s[k].grad;
        for (size_t i = 0; i < s[k].n; i++) {
            float gi = g[i] * scale;
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            float denom = sqrtf(v[i]) * inv_sqrt_bc2 + eps;
            p[i] -= step_size * m[i] / denom + wd * p[i];
        }
    }
    return norm;
}

double lm_lr_at(double base, uint64_t step, uint64_t total, uint64_t warmup, int decay, double final_frac)
{
    if (warmup && step < warmup) return base * (double)(step + 1) / (double)warmup;
    if (decay == LM_DECAY_NONE || total <= warmup + 1) return base;
    double t = (double)(step - warmup) / (double)(total - warmup - 1);
    if (t > 1) t = 1;
    double f = decay == LM_DECAY_LINEAR ? 1 - t : 0.5 * (1 + cos(3.141592653589793 * t));
    return base * (final_frac + (1 - final_frac) * f);
}
