/* metrics.c: AUC by sorting (the Mann-Whitney U statistic with midranks for ties) and log loss. */
#include "eval/metrics.h"

#include <math.h>

typedef struct scored {
    float s, y;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const scored *)a)->s, z = ((const scored *)b)->s;
    return x < z ? -1 : x > z;
}

double lm_auc(const float *s, const float *y, size_t n)
{
    scored *v = lm_malloc_array(n, sizeof *v);
    if (!v) return NAN;
    double npos = 0;
    for (size_t i = 0; i < n; i++) {
        v[i].s = s[i];
        v[i].y = y[i] > 0.5f;
        npos += v[i].y;
    }
    double nneg = (double)n - npos;
    if (npos == 0 || nneg == 0) {
        free(v);
        return NAN;
    }
    qsort(v, n, sizeof *v, cmp_scored);
    /* Sum of the positives' ranks, ties getting their group's mean rank. */
    double rank_sum = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double pos = 0;
        while (j < n && v[j].s == v[i].s) pos += v[j++].y;
        double mid = 0.5 * ((double)i + 1 + (double)j); /* ranks i+1..j */
        rank_sum += pos * mid;
        i = j;
    }
    free(v);
    return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
}

double lm_logloss(const float *p, const float *y, size_t n)
{
    if (!n) return NAN;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double q = p[i] < 1e-7f ? 1e-7 : p[i] > 1 - 1e-7 ? 1 - 1e-7 : p[i];
        sum -= y[i] > 0.5f ? log(q) : log(1 - q);
    }
    return sum / (double)n;
}
