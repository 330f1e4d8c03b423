/* batch_avx512.c: the batch engine (meta/batch_impl.h) over AVX-512 kernels. The whole file
 * is compiled for AVX-512F/VL/BW/DQ + FMA whatever the build's -march, and meta/batch.c calls
 * it only on a processor that has them (__builtin_cpu_supports).
 *
 * k_gemm is register-blocked: a tile of R rows by NV vectors of 16 columns (up to 64) keeps
 * its R x NV accumulators in registers over the whole K loop; each step loads NV vectors of B
 * and broadcasts R scalars of A (an FMA with an embedded broadcast). The shapes here are
 * small (K and N of 16 to 64, M of one task's rows) and the operands sit in L1, so the tile
 * shapes fill most of the 32 zmm registers: R = 12 for N <= 16, 10 for 32, 8 for 48, 6 for 64
 * (measured: R = 10 beats 12 at N = 32 on these shapes, about 110 against 105 GFLOP/s).
 * Column tails (widths that are not multiples of 16, only in the meta block's weights as
 * stored) use masked loads and stores, which never touch memory past the row. */
#include "meta/batch_int.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2")
#endif

#include <math.h>

#include "meta/vec_avx512.h"
#define BT_UNROLL(n) V_UNROLL(n)

static inline __mmask16 tail_mask(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

#define RMAX 12

typedef void (*tile_fn)(size_t K, const float *A, size_t ars, size_t aks, const float *B,
                        size_t ldb, float *C, size_t ldc, __mmask16 ml, int mode,
                        const float *bias, int epi, const float *ref, size_t ldref);

/* One R x (NV * 16) tile; R and NV are constants after inlining, so the loops unroll and the
 * accumulators live in registers. The last vector of a row uses mask ml. */
static inline __attribute__((always_inline)) void
tile(const int R, const int NV, size_t K, const float *A, size_t ars, size_t aks,
     const float *B, size_t ldb, float *C, size_t ldc, __mmask16 ml, int mode, const float *bias,
     int epi, const float *ref, size_t ldref)
{
    __m512 acc[RMAX][4];
BT_UNROLL(12)
    for (int r = 0; r < R; r++)
BT_UNROLL(4)
        for (int v = 0; v < NV; v++) {
            __mmask16 m = v == NV - 1 ? ml : (__mmask16)0xFFFF;
            if (mode == BT_ACC) acc[r][v] = _mm512_maskz_loadu_ps(m, C + r * ldc + 16 * v);
            else if (mode == BT_BIAS) acc[r][v] = _mm512_maskz_loadu_ps(m, bias + 16 * v);
            else acc[r][v] = _mm512_setzero_ps();
        }
    for (size_t k = 0; k < K; k++) {
        __m512 b[4];
        const float *bk = B + k * ldb;
BT_UNROLL(4)
        for (int v = 0; v < NV; v++)
            b[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(ml, bk + 16 * v) : _mm512_loadu_ps(bk + 16 * v);
        const float *ak = A + k * aks;
BT_UNROLL(12)
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(ak[r * ars]);
BT_UNROLL(4)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
BT_UNROLL(12)
    for (int r = 0; r < R; r++)
BT_UNROLL(4)
        for (int v = 0; v < NV; v++) {
            __mmask16 m = v == NV - 1 ? ml : (__mmask16)0xFFFF;
            __m512 x = acc[r][v];
            if (epi == BT_EPI_RELU) x = _mm512_max_ps(x, _mm512_setzero_ps());
            else if (epi == BT_EPI_POS)
                x = _mm512_maskz_mov_ps(
                    _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m, ref + r * ldref + 16 * v),
                                       _mm512_setzero_ps(), _CMP_GT_OQ),
                    x);
            _mm512_mask_storeu_ps(C + r * ldc + 16 * v, m, x);
        }
}

#define TILE(R, NV)                                                                            \
    static void tile_##R##_##NV(size_t K, const float *A, size_t ars, size_t aks,              \
                                const float *B, size_t ldb, float *C, size_t ldc,              \
                                __mmask16 ml, int mode, const float *bias, int epi,            \
                                const float *ref, size_t ldref)                                \
    {                                                                                          \
        tile(R, NV, K, A, ars, aks, B, ldb, C, ldc, ml, mode, bias, epi, ref, ldref);          \
    }
#define TILES_1_6(NV) TILE(1, NV) TILE(2, NV) TILE(3, NV) TILE(4, NV) TILE(5, NV) TILE(6, NV)
#define TILES_7_8(NV) TILE(7, NV) TILE(8, NV)
#define TILES_9_12(NV) TILE(9, NV) TILE(10, NV) TILE(11, NV) TILE(12, NV)
TILES_1_6(1) TILES_7_8(1) TILES_9_12(1)
TILES_1_6(2) TILES_7_8(2) TILE(9, 2) TILE(10, 2)
TILES_1_6(3) TILES_7_8(3)
TILES_1_6(4)

#define ROW6(NV) tile_1_##NV, tile_2_##NV, tile_3_##NV, tile_4_##NV, tile_5_##NV, tile_6_##NV
static const tile_fn tiles[4][RMAX] = {
    {ROW6(1), tile_7_1, tile_8_1, tile_9_1, tile_10_1, tile_11_1, tile_12_1},
    {ROW6(2), tile_7_2, tile_8_2, tile_9_2, tile_10_2, NULL, NULL},
    {ROW6(3), tile_7_3, tile_8_3, NULL, NULL, NULL, NULL},
    {ROW6(4), NULL, NULL, NULL, NULL, NULL, NULL},
};
static const size_t rmax[4] = {12, 10, 8, 6};

/* Column blocks of up to 64, row blocks of at most the tile height, all about equal. */
static void k_gemm(size_t M, size_t N, size_t K, const float *A, size_t ars, size_t aks,
                   const float *B, size_t ldb, float *C, size_t ldc, int mode, const float *bias,
                   int epi, const float *ref, size_t ldref)
{
    for (size_t j0 = 0; j0 < N; j0 += 64) {
        size_t nb = N - j0 < 64 ? N - j0 : 64, nv = (nb + 15) / 16, rm = rmax[nv - 1];
        __mmask16 ml = tail_mask(nb - 16 * (nv - 1));
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

/* Dot products for the meta block's weights as stored: four outputs at a time, each a
 * vector sum over K with a masked tail, reduced at the end. */
static void k_nt(size_t M, size_t O, size_t K, const float *A, size_t lda, const float *B,
                 size_t ldb, float *C, size_t ldc, const float *bias, int acc)
{
    for (size_t r = 0; r < M; r++) {
        const float *a = A + r * lda;
        float *c = C + r * ldc;
        size_t o = 0;
        for (; o + 4 <= O; o += 4) {
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            const float *b = B + o * ldb;
            for (size_t k = 0; k < K; k += 16) {
                __mmask16 m = tail_mask(K - k);
                __m512 x = _mm512_maskz_loadu_ps(m, a + k);
                s0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, b + k), s0);
                s1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, b + ldb + k), s1);
                s2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, b + 2 * ldb + k), s2);
                s3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, b + 3 * ldb + k), s3);
            }
            float t[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1),
                          _mm512_reduce_add_ps(s2), _mm512_reduce_add_ps(s3)};
            for (int q = 0; q < 4; q++)
                c[o + q] = (acc ? c[o + q] : bias ? bias[o + q] : 0) + t[q];
        }
        for (; o < O; o++) {
            __m512 s = _mm512_setzero_ps();
            for (size_t k = 0; k < K; k += 16) {
                __mmask16 m = tail_mask(K - k);
                s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k),
                                    _mm512_maskz_loadu_ps(m, B + o * ldb + k), s);
            }
            c[o] = (acc ? c[o] : bias ? bias[o] : 0) + _mm512_reduce_add_ps(s);
        }
    }
}

/* Bitwise equality of two float rows (as memcmp, compared as 32-bit integers). */
static int k_equal(const float *a, const float *b, size_t n)
{
    for (size_t k = 0; k < n; k += 16) {
        __mmask16 m = tail_mask(n - k);
        __m512i x = _mm512_maskz_loadu_epi32(m, a + k), y = _mm512_maskz_loadu_epi32(m, b + k);
        if (_mm512_cmpneq_epi32_mask(x, y)) return 0;
    }
    return 1;
}

/* Short rows (a few to a few dozen floats): masked vectors instead of a memcpy call. */
static void k_copy(float *dst, const float *src, size_t n)
{
    for (size_t k = 0; k < n; k += 16) {
        __mmask16 m = tail_mask(n - k);
        _mm512_mask_storeu_ps(dst + k, m, _mm512_maskz_loadu_ps(m, src + k));
    }
}

static void k_add(float *dst, const float *src, size_t n)
{
    for (size_t k = 0; k < n; k += 16) {
        __mmask16 m = tail_mask(n - k);
        __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + k), _mm512_maskz_loadu_ps(m, src + k));
        _mm512_mask_storeu_ps(dst + k, m, x);
    }
}

/* ---- the loss, 16 rows at a time ----------------------------------------------------------- */

/* exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial, then
 * 2^n by scalef); below -87 it is 0 or denormal, which is what BCE needs. */
static inline __m512 vexp_neg(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* log1p(e) for e in [0, 1] (Cephes logf on u = 1 + e, whose mantissa is taken in
 * [sqrt(1/2), sqrt(2)), plus the rounding of 1 + e: (e - (u - 1)) / u). */
static inline __m512 vlog1p_unit(__m512 e)
{
    __m512 one = _mm512_set1_ps(1.0f), u = _mm512_add_ps(one, e);
    __m512 c = _mm512_div_ps(_mm512_sub_ps(e, _mm512_sub_ps(u, one)), u);
    __m512 m = _mm512_getmant_ps(u, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src); /* [1, 2) */
    __m512 k = _mm512_getexp_ps(u);
    __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356237f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    k = _mm512_mask_add_ps(k, big, k, one);
    __m512 x = _mm512_sub_ps(m, one), z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(7.0376836292e-2f);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.1514610310e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.1676998740e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.2420140846e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.4249322787e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.6668057665e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(2.0000714765e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-2.4999993993e-1f));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(3.3333331174e-1f));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, z), x);
    y = _mm512_fmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), y);
    y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
    __m512 r = _mm512_add_ps(x, y);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(0.693359375f), r);
    return _mm512_add_ps(r, c);
}

#define BT_HAVE_K_BCE
static double k_bce(const float *z, const float *y, float *s, float *dzo, size_t B,
                    float grad_scale, int want_loss)
{
    __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), gs = _mm512_set1_ps(grad_scale);
    __m512d sum0 = _mm512_setzero_pd(), sum1 = sum0;
    for (size_t r = 0; r < B; r += 16) {
        __mmask16 m = tail_mask(B - r);
        __m512 zr = _mm512_maskz_loadu_ps(m, z + r), yr = _mm512_maskz_loadu_ps(m, y + r);
        __m512 az = _mm512_abs_ps(zr), e = vexp_neg(_mm512_sub_ps(zero, az));
        __m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
        __mmask16 pos = _mm512_cmp_ps_mask(zr, zero, _CMP_GE_OQ);
        __m512 sr = _mm512_mask_blend_ps(pos, _mm512_mul_ps(e, inv), inv);
        _mm512_mask_storeu_ps(s + r, m, sr);
        _mm512_mask_storeu_ps(dzo + r, m, _mm512_mul_ps(gs, _mm512_sub_ps(sr, yr)));
        if (want_loss) {
            __m512 l = _mm512_add_ps(_mm512_fnmadd_ps(zr, yr, _mm512_max_ps(zr, zero)),
                                     vlog1p_unit(e));
            l = _mm512_maskz_mov_ps(m, l);
            __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(l), 1));
            sum0 = _mm512_add_pd(sum0, _mm512_cvtps_pd(_mm512_castps512_ps256(l)));
            sum1 = _mm512_add_pd(sum1, _mm512_cvtps_pd(hi));
        }
    }
    return want_loss ? _mm512_reduce_add_pd(_mm512_add_pd(sum0, sum1)) : 0;
}

#define BT_RUN bt_run_avx512
#include "meta/batch_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else /* not x86: meta/batch.c never selects this kernel */
void bt_run_avx512(const bt_ctx *c, bt_part *p)
{
    LM_UNUSED(c), LM_UNUSED(p);
    LM_ASSERT(!"no x86 vector kernels on this processor");
}
#endif
