/* kernel_avx2.c: the serving row kernel (lm_srv_rows_plain in serve/engine.c) over 8-float
 * AVX vectors. Compiled for AVX2 whatever the build's -march; engine.c calls it only where
 * __builtin_cpu_supports("avx2") says so. Products and sums are rounded separately (mul, then
 * add; no FMA) in the plain kernel's order, so both kernels give the same bits and `limaml
 * score` matches the server on any x86-64 machine. */
#include "serve/serve.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif
#include <immintrin.h>

/* y += a x over n floats, n a multiple of 8. */
static inline void axpy8(float *y, float a, const float *x, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    for (size_t j = 0; j < n; j += 8)
        _mm256_storeu_ps(y + j,
                         _mm256_add_ps(_mm256_loadu_ps(y + j), _mm256_mul_ps(va, _mm256_loadu_ps(x + j))));
}

/* The common widths (up to 64 floats) keep the row in registers across the whole layer. */
#define LAYER_REGS(NV)                                                                                       \
    do {                                                                                                     \
        __m256 acc[NV];                                                                                      \
        for (int v = 0; v < NV; v++) acc[v] = _mm256_loadu_ps(a + 8 * v);                                    \
        for (size_t k = 0; k < p->ndense; k++, w += W) {                                                     \
            __m256 x = _mm256_set1_ps(dense[r * p->ndense + k]);                                             \
            for (int v = 0; v < NV; v++)                                                                     \
                acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(x, _mm256_loadu_ps(w + 8 * v)));                \
        }                                                                                                    \
        for (size_t c = 0; c < p->ncat; c++) {                                                               \
            const float *e = p->tab[c] + (size_t)cat[r * p->ncat + c] * p->tab_dim[c];                       \
            for (size_t k = 0; k < p->tab_dim[c]; k++, w += W) {                                             \
                __m256 x = _mm256_set1_ps(e[k]);                                                             \
                for (int v = 0; v < NV; v++)                                                                 \
                    acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(x, _mm256_loadu_ps(w + 8 * v)));            \
            }                                                                                                \
        }                                                                                                    \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(a + 8 * v, acc[v]);                                    \
    } while (0)

/* o = b + sum_i a[i] wt[i] over NV vectors kept in registers (the hidden layers). */
#define DENSE_REGS(NV)                                                                                       \
    do {                                                                                                     \
        __m256 acc[NV];                                                                                      \
        for (int v = 0; v < NV; v++) acc[v] = _mm256_loadu_ps(p->b[l] + 8 * v);                              \
        const float *wl = p->wt[l];                                                                          \
        for (size_t i = 0; i < p->H[l - 1]; i++, wl += W2) {                                                 \
            __m256 x = _mm256_set1_ps(a[i]);                                                                 \
            for (int v = 0; v < NV; v++)                                                                     \
                acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(x, _mm256_loadu_ps(wl + 8 * v)));               \
        }                                                                                                    \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(o + 8 * v, acc[v]);                                    \
    } while (0)

void lm_srv_rows_avx2(const lm_srv_pack *p, const float *base, const float *dense, const uint32_t *cat,
                      size_t B, float zoff, float *z, float *h)
{
    float *a = h, *o = h + p->maxHP;
    const __m256 zero = _mm256_setzero_ps();
    for (size_t r = 0; r < B; r++) {
        size_t W = p->HP[0];
        memcpy(a, base, W * sizeof(float));
        const float *w = p->wt[0];
        switch (W / 8) {
        case 1: LAYER_REGS(1); break;
        case 2: LAYER_REGS(2); break;
        case 4: LAYER_REGS(4); break;
        case 8: LAYER_REGS(8); break;
        default:
            for (size_t k = 0; k < p->ndense; k++, w += W) axpy8(a, dense[r * p->ndense + k], w, W);
            for (size_t c = 0; c < p->ncat; c++) {
                const float *e = p->tab[c] + (size_t)cat[r * p->ncat + c] * p->tab_dim[c];
                for (size_t k = 0; k < p->tab_dim[c]; k++, w += W) axpy8(a, e[k], w, W);
            }
        }
        for (size_t l = 1; l < p->L; l++) {
            for (size_t j = 0; j < W; j += 8)
                _mm256_storeu_ps(a + j, _mm256_max_ps(_mm256_loadu_ps(a + j), zero));
            size_t W2 = p->HP[l];
            switch (W2 / 8) {
            case 1: DENSE_REGS(1); break;
            case 2: DENSE_REGS(2); break;
            case 4: DENSE_REGS(4); break;
            case 8: DENSE_REGS(8); break;
            default:
                memcpy(o, p->b[l], W2 * sizeof(float));
                for (size_t i = 0; i < p->H[l - 1]; i++) axpy8(o, a[i], p->wt[l] + i * W2, W2);
            }
            float *t = a;
            a = o, o = t;
            W = W2;
        }
        z[r] = a[0] + zoff;
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else /* not x86: never picked */

void lm_srv_rows_avx2(const lm_srv_pack *p, const float *base, const float *dense, const uint32_t *cat,
                      size_t B, float zoff, float *z, float *h)
{
    lm_srv_rows_plain(p, base, dense, cat, B, zoff, z, h);
}

#endif
