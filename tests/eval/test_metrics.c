/* test_metrics.c: AUC against the O(n^2) pair count, ties, degenerate cases; log loss. */
#include "eval/metrics.h"

#include <math.h>
#include <stdio.h>

#include "lm_check.h"

static double auc_pairs(const float *s, const float *y, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (y[i] > 0.5f && y[j] < 0.5f) {
                den++;
                num += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
            }
    return num / den;
}

int main(void)
{
    float s1[] = {0.1f, 0.4f, 0.35f, 0.8f}, y1[] = {0, 0, 1, 1};
    CHECK(fabs(lm_auc(s1, y1, 4) - 0.75) < 1e-12, "sklearn's example: %g", lm_auc(s1, y1, 4));
    float s2[] = {0.5f, 0.5f, 0.5f, 0.5f}, y2[] = {0, 1, 0, 1};
    CHECK(fabs(lm_auc(s2, y2, 4) - 0.5) < 1e-12, "all tied");
    float y3[] = {1, 1, 1, 1};
    CHECK(isnan(lm_auc(s1, y3, 4)), "one class gives NaN");
    lm_rng r;
    lm_rng_seed(&r, 11);
    enum { N = 600 };
    float s[N], y[N];
    for (int trial = 0; trial < 5; trial++) {
        for (int i = 0; i < N; i++) {
            y[i] = lm_rng_uniform(&r) < 0.4;
            /* coarse scores so that ties are frequent */
            s[i] = (float)floor((lm_rng_normal(&r) + y[i]) * 4) / 4;
        }
        double a = lm_auc(s, y, N), b = auc_pairs(s, y, N);
        CHECK(fabs(a - b) < 1e-12, "trial %d: %.15f vs pairs %.15f", trial, a, b);
    }
    float p[] = {0.9f, 0.2f}, yl[] = {1, 0};
    CHECK(fabs(lm_logloss(p, yl, 2) - (-(log(0.9) + log(0.8)) / 2)) < 1e-7, "log loss");
    float p0[] = {0.0f}, y0[] = {1};
    CHECK(isfinite(lm_logloss(p0, y0, 1)), "log loss clamps");
    return CHECK_DONE();
}
