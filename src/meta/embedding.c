/* embedding.c: a task's meta embedding (Algorithm 2b): adapt a copy of the meta block with k
 * SGD steps on the task's rows, then pool the adapted block's outputs. This is the per-task
 * reference. `limaml adapt` and `limaml embed` use the fast engine of meta/batch_embed.h where
 * it serves (an MLP meta block), so their vectors agree bit for bit, and this function for the
 * rest (the id meta block); tests/meta/test_batch_embed.c holds the two to each other. */
#include "meta/meta.h"

#include <math.h>
#include <string.h>

void lm_meta_task_embedding(const lm_net *n, lm_meta_ws_f32 *ws, float *theta_m, const float *theta_g,
                            const lm_rows_f32 *r, uint32_t steps, double alpha, int pool, float *scratch,
                            float *out)
{
    LM_ASSERT(r->n > 0);
    size_t E = n->E, B = r->n;
    if (steps > 0)
        lm_meta_adapt_f32(n, ws, LM_ALGO_LIMAML, steps, alpha, theta_m, theta_g, r, theta_m, NULL,
                          LM_DROPOUT_OFF, NULL);
    if (pool == LM_POOL_LATEST) {
        lm_net_embed_f32(n, ws, theta_m, r->meta + (B - 1) * r->nmeta, 1, out);
        return;
    }
    /* scratch: (B, E), every row's output */
    lm_net_embed_f32(n, ws, theta_m, r->meta, B, scratch);
    const float *last = scratch + (B - 1) * E;
    double acc[LM_EMBED_MAX_DIM], wsum = 0;
    LM_ASSERT(E <= LM_EMBED_MAX_DIM);
    for (size_t j = 0; j < E; j++) acc[j] = pool == LM_POOL_MAX ? -INFINITY : 0;
    double lnorm = 0;
    for (size_t j = 0; j < E; j++) lnorm += (double)last[j] * last[j];
    lnorm = sqrt(lnorm);
    for (size_t i = 0; i < B; i++) {
        const float *e = scratch + i * E;
        if (pool == LM_POOL_MAX) {
            for (size_t j = 0; j < E; j++) acc[j] = fmax(acc[j], e[j]);
            continue;
        }
        double w = 1;
        if (pool == LM_POOL_COS) {
            /* the appendix's weights: the cosine similarity of each example's output with the
             * latest one's (0 when either is the zero vector) */
            double dot = 0, en = 0;
            for (size_t j = 0; j < E; j++) dot += (double)e[j] * last[j], en += (double)e[j] * e[j];
            w = en > 0 && lnorm > 0 ? dot / (sqrt(en) * lnorm) : 0;
        }
        for (size_t j = 0; j < E; j++) acc[j] += w * e[j];
        wsum += w;
    }
    for (size_t j = 0; j < E; j++)
        out[j] = (float)(pool == LM_POOL_MAX ? acc[j] : (fabs(wsum) > 1e-12 ? acc[j] / wsum : 0));
}
