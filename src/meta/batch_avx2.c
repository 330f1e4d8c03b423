/* batch_avx2.c: the batch engine (meta/batch_impl.h) over AVX2 + FMA kernels, for x86-64
 * processors without AVX-512. Compiled for AVX2/FMA whatever the build's -march; meta/batch.c
 * calls it only where __builtin_cpu_supports says so.
 *
 * The same register blocking as batch_avx512.c with 8-wide vectors and 16 registers: tiles
 * of R rows by NV vectors of 8 (up to 16 columns), R = 12 for NV = 1 and 6 for NV = 2, so the
 * accumulators, the row of B and one broadcast fit. Tails use maskload/maskstore, which do
 * not touch memory under a zero mask. */
#include "meta/batch_int.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,bmi,bmi2")
#endif

#include <math.h>

#include "meta/vec_avx2.h"
#define BT_UNROLL(n) V_UNROLL(n)

/* Lanes 0 .. n-1 set (n <= 8). */
static inline __m256i tail_mask(size_t n)
{
    static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(ones + 8 - (n >= 8 ? 8 : n)));
}

#define RMAX 12

typedef void (*tile_fn)(size_t K, const float *A, size_t ars, size_t aks, const float *B,
                        size_t ldb, float *C, size_t ldc, __m256i ml, int mode,
                        const float *bias, int epi, const float *ref, size_t ldref);

static inline __attribute__((always_inline)) void
tile(const int R, const int NV, size_t K, const float *A, size_t ars, size_t aks,
     const float *B, size_t ldb, float *C, size_t ldc, __m256i ml, int mode, const float *bias,
     int epi, const float *ref, size_t ldref)
{
    __m256 acc[RMAX][2];
    __m256i full = _mm256_set1_epi32(-1);
BT_UNROLL(12)
    for (int r = 0; r < R; r++)
BT_UNROLL(2)
        for (int v = 0; v < NV; v++) {
            __m256i m = v == NV - 1 ? ml : full;
            if (mode == BT_ACC) acc[r][v] = _mm256_maskload_ps(C + r * ldc + 8 * v, m);
            else if (mode == BT_BIAS) acc[r][v] = _mm256_maskload_ps(bias + 8 * v, m);
            else acc[r][v] = _mm256_setzero_ps();
        }
    for (size_t k = 0; k < K; k++) {
        __m256 b[2];
        const float *bk = B + k * ldb;
BT_UNROLL(2)
        for (int v = 0; v < NV; v++)
            b[v] = v == NV - 1 ? _mm256_maskload_ps(bk + 8 * v, ml) : _mm256_loadu_ps(bk + 8 * v);
        const float *ak = A + k * aks;
BT_UNROLL(12)
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(ak + r * ars);
BT_UNROLL(2)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
BT_UNROLL(12)
    for (int r = 0; r < R; r++)
BT_UNROLL(2)
        for (int v = 0; v < NV; v++) {
            __m256i m = v == NV - 1 ? ml : full;
            __m256 x = acc[r][v];
            if (epi == BT_EPI_RELU) x = _mm256_max_ps(x, _mm256_setzero_ps());
            else if (epi == BT_EPI_POS)
                x = V_POS(x, _mm256_maskload_ps(ref + r * ldref + 8 * v, m));
            _mm256_maskstore_ps(C + r * ldc + 8 * v, m, x);
        }
}

#define TILE(R, NV)                                                                            \
    static void tile_##R##_##NV(size_t K, const float *A, size_t ars, size_t aks,              \
                                const float *B, size_t ldb, float *C, size_t ldc, __m256i ml,  \
                                int mode, const float *bias, int epi, const float *ref,        \
                                size_t ldref)                                                  \
    {                                                                                          \
        tile(R, NV, K, A, ars, aks, B, ldb, C, ldc, ml, mode, bias, epi, ref, ldref);          \
    }
#define TILES_1_6(NV) TILE(1, NV) TILE(2, NV) TILE(3, NV) TILE(4, NV) TILE(5, NV) TILE(6, NV)
TILES_1_6(1) TILE(7, 1) TILE(8, 1) TILE(9, 1) TILE(10, 1) TILE(11, 1) TILE(12, 1)
TILES_1_6(2)

#define ROW6(NV) tile_1_##NV, tile_2_##NV, tile_3_##NV, tile_4_##NV, tile_5_##NV, tile_6_##NV
static const tile_fn tiles[2][RMAX] = {
    {ROW6(1), tile_7_1, tile_8_1, tile_9_1, tile_10_1, tile_11_1, tile_12_1},
    {ROW6(2), NULL, NULL, NULL, NULL, NULL, NULL},
};
static const size_t rmax[2] = {12, 6};

static void k_gemm(size_t M, size_t N, size_t K, const float *A, size_t ars, size_t aks,
                   const float *B, size_t ldb, float *C, size_t ldc, int mode, const float *bias,
                   int epi, const float *ref, size_t ldref)
{
    for (size_t j0 = 0; j0 < N; j0 += 16) {
        size_t nb = N - j0 < 16 ? N - j0 : 16, nv = (nb + 7) / 8, rm = rmax[nv - 1];
        __m256i ml = tail_mask(nb - 8 * (nv - 1));
        /* balanced heights: M = 49 runs as 6,6,6,6,5,5,5,5,5, not eight 6s and a 1 */
        size_t nt = (M + rm - 1) / rm, base = M / nt, extra = M % nt;
        for (size_t t = 0, r0 = 0; t < nt; t++) {
            size_t rr = base + (t < extra);
            tiles[nv - 1][rr - 1](K, A + r0 * ars, ars, aks, B + j0, ldb, C + r0 * ldc + j0, ldc, ml,
                                  mode, bias ? bias + j0 : NULL, epi,
                                  ref ? ref + r0 * ldref + j0 : NULL, ldref);
            r0 += rr;
        }
    }
}

static void k_nt(size_t M, size_t O, size_t K, const float *A, size_t lda, const float *B,
                 size_t ldb, float *C, size_t ldc, const float *bias, int acc)
{
    for (size_t r = 0; r < M; r++) {
        const float *a = A + r * lda;
        float *c = C + r * ldc;
        size_t o = 0;
        for (; o + 4 <= O; o += 4) {
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            const float *b = B + o * ldb;
            for (size_t k = 0; k < K; k += 8) {
                __m256i m = tail_mask(K - k);
                __m256 x = _mm256_maskload_ps(a + k, m);
                s0 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + k, m), s0);
                s1 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + ldb + k, m), s1);
                s2 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + 2 * ldb + k, m), s2);
                s3 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + 3 * ldb + k, m), s3);
            }
            float t[4] = {V_HSUM(s0), V_HSUM(s1), V_HSUM(s2), V_HSUM(s3)};
            for (int q = 0; q < 4; q++)
                c[o + q] = (acc ? c[o + q] : bias ? bias[o + q] : 0) + t[q];
        }
        for (; o < O; o++) {
            __m256 s = _mm256_setzero_ps();
            for (size_t k = 0; k < K; k += 8) {
                __m256i m = tail_mask(K - k);
                s = _mm256_fmadd_ps(_mm256_maskload_ps(a + k, m),
                                    _mm256_maskload_ps(B + o * ldb + k, m), s);
            }
            c[o] = (acc ? c[o] : bias ? bias[o] : 0) + V_HSUM(s);
        }
    }
}

static int k_equal(const float *a, const float *b, size_t n)
{
    for (size_t k = 0; k < n; k += 8) {
        __m256i m = tail_mask(n - k);
        __m256i x = _mm256_maskload_epi32((const int *)(a + k), m);
        __m256i y = _mm256_maskload_epi32((const int *)(b + k), m);
        if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(x, y)) != -1) return 0;
    }
    return 1;
}

static void k_copy(float *dst, const float *src, size_t n)
{
    for (size_t k = 0; k < n; k += 8) {
        __m256i m = tail_mask(n - k);
        _mm256_maskstore_ps(dst + k, m, _mm256_maskload_ps(src + k, m));
    }
}

static void k_add(float *dst, const float *src, size_t n)
{
    for (size_t k = 0; k < n; k += 8) {
        __m256i m = tail_mask(n - k);
        __m256 x = _mm256_add_ps(_mm256_maskload_ps(dst + k, m), _mm256_maskload_ps(src + k, m));
        _mm256_maskstore_ps(dst + k, m, x);
    }
}

#define BT_RUN bt_run_avx2
#include "meta/batch_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else /* not x86: meta/batch.c never selects this kernel */
void bt_run_avx2(const bt_ctx *c, bt_part *p)
{
    LM_UNUSED(c), LM_UNUSED(p);
    LM_ASSERT(!"no x86 vector kernels on this processor");
}
#endif
