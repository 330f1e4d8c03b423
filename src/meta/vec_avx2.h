/* vec_avx2.h: the vector vocabulary the batch kernels are written in (meta/batch_impl.h,
 * meta/batch_embed_impl.h), for AVX2 + FMA: 8 floats a vector. Include it after the file's
 * `#pragma GCC target` (or clang's attribute push), so the intrinsics compile whatever -march. */
#ifndef LM_META_VEC_AVX2_H
#define LM_META_VEC_AVX2_H

#include <immintrin.h>

/* Full unrolling of the tile loops (constant trip counts after inlining) is what keeps the
 * accumulators in registers; GCC and clang spell the request differently. */
#if defined(__clang__)
#define V_UNROLL(n) _Pragma("unroll")
#else
#define V_STR(x) #x
#define V_UNROLL(n) _Pragma(V_STR(GCC unroll n))
#endif

typedef __m256 vf;
#define VW 8
#define V_LD(p) _mm256_loadu_ps(p)
#define V_ST(p, x) _mm256_storeu_ps((p), (x))
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_MUL(a, b) _mm256_mul_ps((a), (b))
#define V_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_RELU(x) _mm256_max_ps((x), _mm256_setzero_ps())
#define V_POS(x, ref) _mm256_and_ps((x), _mm256_cmp_ps((ref), _mm256_setzero_ps(), _CMP_GT_OQ))

static inline float lm_vec_hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define V_HSUM(x) lm_vec_hsum8(x)

#endif
