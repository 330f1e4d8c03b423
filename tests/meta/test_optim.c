/* test_optim.c: Adam against a double-precision transcription of torch.optim.Adam's update,
 * clipping, and the learning-rate schedule. */
#include "meta/optim.h"

#include <math.h>
#include <stdio.h>

#include "lm_check.h"

int main(void)
{
    enum { N = 7, STEPS = 25 };
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    double rp[N], rm[N] = {0}, rv[N] = {0};
    lm_rng rng;
    lm_rng_seed(&rng, 3);
    for (int i = 0; i < N; i++) rp[i] = p[i] = (float)lm_rng_normal(&rng);
    lm_adam a;
    lm_adam_init(&a);
    lm_adam_span s = {p, g, m, v, N};
    double worst = 0;
    for (int t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++) g[i] = (float)(lm_rng_normal(&rng) * (t % 3 + 1));
        double lr = 0.01, clip = t % 2 ? 1.0 : 0.0;
        double norm = 0;
        for (int i = 0; i < N; i++) norm += (double)g[i] * g[i];
        norm = sqrt(norm);
        double sc = clip > 0 && norm > clip ? clip / norm : 1;
        double got = lm_adam_update(&a, &s, 1, lr, clip);
        CHECK(fabs(got - norm) <= 1e-9 * norm, "norm %g vs %g", got, norm);
        for (int i = 0; i < N; i++) {
            double gi = g[i] * sc;
            rm[i] = 0.9 * rm[i] + 0.1 * gi;
            rv[i] = 0.999 * rv[i] + 0.001 * gi * gi;
            double mh = rm[i] / (1 - pow(0.9, t)), vh = rv[i] / (1 - pow(0.999, t));
            rp[i] -= lr * mh / (sqrt(vh) + 1e-8);
            double e = fabs(p[i] - rp[i]) / (1e-6 + fabs(rp[i]));
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 1e-4, "Adam vs reference: worst relative error %g", worst);
    CHECK(a.step == STEPS, "step count %llu", (unsigned long long)a.step);

    /* the first update moves each parameter by about lr, whatever the gradient's scale */
    float q[2] = {0, 0}, gq[2] = {1000, -0.001f}, mq[2] = {0}, vq[2] = {0};
    lm_adam b;
    lm_adam_init(&b);
    lm_adam_span sq = {q, gq, mq, vq, 2};
    lm_adam_update(&b, &sq, 1, 0.1, 0);
    CHECK(fabsf(q[0] + 0.1f) < 1e-5f && fabsf(q[1] - 0.1f) < 1e-3f, "first step %g %g", q[0], q[1]);

    /* schedule */
    CHECK(fabs(lm_lr_at(1.0, 0, 100, 10, LM_DECAY_LINEAR, 0) - 0.1) < 1e-12, "warm-up start");
    CHECK(fabs(lm_lr_at(1.0, 9, 100, 10, LM_DECAY_LINEAR, 0) - 1.0) < 1e-12, "warm-up end");
    CHECK(fabs(lm_lr_at(1.0, 10, 100, 10, LM_DECAY_LINEAR, 0) - 1.0) < 1e-12, "decay start");
    CHECK(fabs(lm_lr_at(1.0, 99, 100, 10, LM_DECAY_LINEAR, 0.1) - 0.1) < 1e-12, "decay end");
    CHECK(fabs(lm_lr_at(1.0, 99, 100, 10, LM_DECAY_COSINE, 0) - 0.0) < 1e-12, "cosine end");
    CHECK(fabs(lm_lr_at(2.0, 50, 100, 0, LM_DECAY_NONE, 0) - 2.0) < 1e-12, "constant");
    double prev = 2;
    int mono = 1;
    for (uint64_t t = 10; t < 100; t++) {
        double l = lm_lr_at(1.0, t, 100, 10, LM_DECAY_COSINE, 0);
        if (l > prev + 1e-15) mono = 0;
        prev = l;
    }
    CHECK(mono, "cosine decay is monotone");
    return CHECK_DONE();
}
