/* check.h: comparison and finite-difference helpers for the nn tests (header only).
 *
 * check_close compares elementwise with |a - ref| <= atol + rtol * |ref| and prints one line
 * per check: "ok" with the largest error, or "FAIL" with the worst element (value, reference,
 * index). A test's main ends with `return check_summary();`, which is non-zero when any check
 * failed. */
#ifndef LM_TESTS_NN_CHECK_H
#define LM_TESTS_NN_CHECK_H

#include "core/core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;
static double check_worst_rel; /* largest normwise relative error of any passing check */

/* Compare a: (n) with ref: (n). Returns 1 when every element is within tolerance. */
static inline int check_close(const char *name, const double *a, const double *ref, size_t n, double atol,
                              double rtol)
{
    size_t worst = 0, nbad = 0;
    double worst_ratio = -1, max_diff = 0, max_ref = 0;
    check_count++;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (isnan(d)) d = INFINITY;
        double tol = atol + rtol * fabs(ref[i]);
        double ratio = tol > 0 ? d / tol : d == 0 ? 0 : INFINITY;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
        if (!(d <= tol)) nbad++;
        if (d > max_diff) max_diff = d;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    if (n == 0) {
        printf("FAIL %s: nothing to compare\n", name);
        check_failures++;
        return 0;
    }
    double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
    if (nbad) {
        printf("FAIL %s: %zu of %zu out of tolerance (atol %.1e, rtol %.1e); worst [%zu]: "
               "value %.12g, reference %.12g, |diff| %.3e\n",
               name, nbad, n, atol, rtol, worst, a[worst], ref[worst], fabs(a[worst] - ref[worst]));
        check_failures++;
        return 0;
    }
    if (rel > check_worst_rel) check_worst_rel = rel;
    printf("ok   %-52s n=%-4zu max|diff|=%.1e rel=%.1e worst/tol=%.2f\n", name, n, max_diff, rel,
           worst_ratio);
    return 1;
}

/* A condition that must hold; the message says what was seen. */
static inline int check_true(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int check_true(int cond, const char *fmt, ...)
{
    va_list ap;
    check_count++;
    printf(cond ? "ok   " : "FAIL ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) check_failures++;
    return cond;
}

static inline int check_summary(void)
{
    printf("%d checks, %d failed; worst normwise relative error of a passing check %.2e\n", check_count,
           check_failures, check_worst_rel);
    return check_failures ? 1 : 0;
}

/* ---- buffers -------------------------------------------------------------------------------- */

static inline void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static inline double *dalloc(size_t n)
{
    return xcalloc(n, sizeof(double));
}

static inline float *falloc(size_t n)
{
    return xcalloc(n, sizeof(float));
}

static inline void fill_uniform(double *v, size_t n, lm_rng *rng, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * lm_rng_uniform(rng);
}

static inline void fill_value(double *v, size_t n, double value)
{
    for (size_t i = 0; i < n; i++) v[i] = value;
}

static inline void to_f32(float *dst, const double *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

static inline void to_f64(double *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = (double)src[i];
}

static inline void scale_into(double *dst, const double *src, size_t n, double s)
{
    for (size_t i = 0; i < n; i++) dst[i] = s * src[i];
}

/* ---- central finite differences ------------------------------------------------------------ */

/* grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h for a scalar function f of x: (n), which f
 * reads through ctx. x is restored exactly afterwards. */
static inline void fd_gradient(double *grad, double *x, size_t n, double (*f)(void *ctx), void *ctx, double h)
{
    for (size_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx);
        x[i] = keep - h;
        double fm = f(ctx);
        x[i] = keep;
        grad[i] = (fp - fm) / (2 * h);
    }
}

/* One input that moves along a direction: x += t * dir. */
typedef struct fd_var {
    double *x;
    const double *dir;
    size_t n;
} fd_var;

/* out: (nout) = (f(x + h dir) - f(x - h dir)) / 2h, all vars moving together, for a vector
 * function f writing nout values. The vars are restored exactly afterwards. */
static inline void fd_directional(double *out, size_t nout, const fd_var *vars, size_t nvars,
                                  void (*f)(double *out, void *ctx), void *ctx, double h)
{
    double **saved = xcalloc(nvars, sizeof *saved);
    double *fp = dalloc(nout), *fm = dalloc(nout);
    for (size_t v = 0; v < nvars; v++) {
        saved[v] = dalloc(vars[v].n);
        memcpy(saved[v], vars[v].x, vars[v].n * sizeof(double));
    }
    for (size_t v = 0; v < nvars; v++)
        for (size_t i = 0; i < vars[v].n; i++) vars[v].x[i] = saved[v][i] + h * vars[v].dir[i];
    f(fp, ctx);
    for (size_t v = 0; v < nvars; v++)
        for (size_t i = 0; i < vars[v].n; i++) vars[v].x[i] = saved[v][i] - h * vars[v].dir[i];
    f(fm, ctx);
    for (size_t v = 0; v < nvars; v++) {
        memcpy(vars[v].x, saved[v], vars[v].n * sizeof(double));
        free(saved[v]);
    }
    for (size_t k = 0; k < nout; k++) out[k] = (fp[k] - fm[k]) / (2 * h);
    free(saved);
    free(fp);
    free(fm);
}

#endif
