/* meta_check.h: comparison helpers and small random problems for the meta tests (header only).
 *
 * check_close compares elementwise with |a - ref| <= atol + rtol * |ref| and prints one line
 * per check: "ok" with the normwise relative error (max |diff| / max |ref|), or "FAIL" with the
 * worst element (index, value, reference). A test's main ends with `return check_summary();`,
 * which prints "N passed, M failed" and is non-zero when any check failed. */
#ifndef LM_TESTS_META_CHECK_H
#define LM_TESTS_META_CHECK_H

#include "meta/meta.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed, check_failed;

/* The worst normwise relative error of the passing checks whose name contains a tag, for the
 * closing table of a test. */
#define CHECK_MAX_TAGS 64
static struct {
    char tag[64];
    double worst;
} check_tags[CHECK_MAX_TAGS];
static int check_ntags;

static inline void check_note(const char *tag, double rel)
{
    for (int i = 0; i < check_ntags; i++)
        if (!strcmp(check_tags[i].tag, tag)) {
            if (rel > check_tags[i].worst) check_tags[i].worst = rel;
            return;
        }
    if (check_ntags == CHECK_MAX_TAGS) return;
    snprintf(check_tags[check_ntags].tag, sizeof check_tags[0].tag, "%s", tag);
    check_tags[check_ntags++].worst = rel;
}

/* Compare a: (n) with ref: (n); returns the normwise relative error (INFINITY on failure).
 * `tag` (may be NULL) groups the check in the closing table. */
static inline double check_close(const char *tag, const char *name, const double *a, const double *ref,
                                 size_t n, double atol, double rtol)
{
    size_t worst = 0, nbad = 0;
    double worst_ratio = -1, max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (isnan(d)) d = INFINITY;
        double tol = atol + rtol * fabs(ref[i]);
        double ratio = tol > 0 ? d / tol : d == 0 ? 0 : INFINITY;
        if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
        if (!(d <= tol)) nbad++;
        if (d > max_diff) max_diff = d;
        if (fabs(ref[i]) > max_ref) max_ref = fabs(ref[i]);
    }
    if (n == 0) {
        printf("FAIL %s: nothing to compare\n", name);
        check_failed++;
        return INFINITY;
    }
    double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
    if (nbad) {
        printf("FAIL %s: %zu of %zu out of tolerance (atol %.1e, rtol %.1e); worst [%zu]: value "
               "%.12g, reference %.12g, |diff| %.3e; normwise rel %.2e\n",
               name, nbad, n, atol, rtol, worst, a[worst], ref[worst], fabs(a[worst] - ref[worst]), rel);
        check_failed++;
        return INFINITY;
    }
    check_passed++;
    if (tag) check_note(tag, rel);
    printf("ok   %-66s n=%-4zu rel=%.1e worst [%zu] %.3e vs %.3e\n", name, n, rel, worst, a[worst],
           ref[worst]);
    return rel;
}

static inline int check_true(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int check_true(int cond, const char *fmt, ...)
{
    va_list ap;
    printf(cond ? "ok   " : "FAIL ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (cond)
        check_passed++;
    else
        check_failed++;
    return cond;
}

static inline int check_summary(void)
{
    if (check_ntags) printf("worst normwise relative error per group:\n");
    for (int i = 0; i < check_ntags; i++) printf("  %-60s %.2e\n", check_tags[i].tag, check_tags[i].worst);
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

/* ---- buffers ------------------------------------------------------------------------------- */

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

static inline void to_f32(float *dst, const double *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

static inline void to_f64(double *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = (double)src[i];
}

/* Round a double buffer to float precision in place, so f32 and f64 runs see equal inputs. */
static inline void round_f32(double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = (double)(float)v[i];
}

/* ---- nets and rows ------------------------------------------------------------------------- */

static inline void net_make(lm_net *n, const lm_net_config *c)
{
    lm_err err = {0};
    if (lm_net_init(n, c, &err) != LM_OK) {
        printf("FAIL lm_net_init: %s\n", err.msg);
        exit(1);
    }
}

/* Set by a test to build every small config with lm_net_config.emb_logit on (the logit also
 * gets E[0]), so the same cases run again with the option. */
static int check_emb_logit;

/* A small config: nmeta 5, ndense 4, `ncat` categorical columns (buckets 7, 5; widths 3, 2),
 * E = 3, meta MLP [5, 6, 3], global MLP [nin, 8, 5, 1]; emb_logit as check_emb_logit says. */
static inline void small_config(lm_net_config *c, int meta_kind, size_t ncat, int loss, double dropout)
{
    lm_net_config_default(c);
    c->meta_kind = meta_kind;
    c->nmeta = 5;
    c->ndense = 4;
    c->ncat = ncat;
    c->cat_buckets[0] = 7, c->cat_dim[0] = 3;
    c->cat_buckets[1] = 5, c->cat_dim[1] = 2;
    c->emb_dim = 3;
    c->meta_hidden[0] = 6;
    c->nmeta_hidden = 1;
    c->id_rows = 4;
    c->global_hidden[0] = 8;
    c->global_hidden[1] = 5;
    c->nglobal_hidden = 2;
    c->loss = loss;
    c->dropout = dropout;
    c->emb_logit = check_emb_logit;
}

static inline void rows_make_f64(lm_rows_f64 *r, const lm_net *n, size_t B, lm_rng *rng)
{
    lm_err err = {0};
    if (lm_rows_alloc_f64(r, n->nmeta, n->ndense, n->ncat, B ? B : 1, &err) != LM_OK) {
        printf("FAIL lm_rows_alloc: %s\n", err.msg);
        exit(1);
    }
    r->n = B;
    fill_uniform(r->meta, B * n->nmeta, rng, -1, 1);
    if (n->ndense) fill_uniform(r->dense, B * n->ndense, rng, -1, 1);
    for (size_t b = 0; b < B; b++)
        for (size_t c = 0; c < n->ncat; c++)
            r->cat[b * n->ncat + c] = (uint32_t)lm_rng_below(rng, n->cat_rows[c]);
    for (size_t b = 0; b < B; b++)
        r->label[b] =
            n->cfg.loss == LM_NET_LOSS_MSE ? lm_rng_normal(rng) : (double)(lm_rng_uniform(rng) < 0.4);
    round_f32(r->meta, B * n->nmeta);
    if (n->ndense) round_f32(r->dense, B * n->ndense);
    round_f32(r->label, B);
}

/* The float copy of double rows (same values: rows_make_f64 rounds them). */
static inline void rows_to_f32(lm_rows_f32 *dst, const lm_rows_f64 *src)
{
    lm_err err = {0};
    if (lm_rows_alloc_f32(dst, src->nmeta, src->ndense, src->ncat, src->cap, &err) != LM_OK) {
        printf("FAIL lm_rows_alloc: %s\n", err.msg);
        exit(1);
    }
    dst->n = src->n;
    to_f32(dst->label, src->label, src->n);
    if (src->nmeta) to_f32(dst->meta, src->meta, src->n * src->nmeta);
    if (src->ndense) to_f32(dst->dense, src->dense, src->n * src->ndense);
    if (src->ncat) memcpy(dst->cat, src->cat, src->n * src->ncat * sizeof *dst->cat);
}

#endif
