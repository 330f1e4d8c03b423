/* vec_avx512.h: the vector vocabulary the batch kernels are written in (meta/batch_impl.h,
 * meta/batch_embed_impl.h), for AVX-512: 16 floats a vector. Include it after the file's
 * `#pragma GCC target` (or clang's attribute push), so the intrinsics compile whatever -march. */
#ifndef LM_META_VEC_AVX512_H
#define LM_META_VEC_AVX512_H

#include <immintrin.h>

/* Full unrolling of the tile loops (constant trip counts after inlining) is what keeps the
 * accumulators in registers; GCC and clang spell the request differently. */
#if defined(__clang__)
#define V_UNROLL(n) _Pragma("unroll")
#else
#define V_STR(x) #x
#define V_UNROLL(n) _Pragma(V_STR(GCC unroll n))
#endif

typedef __m512 vf;
#define VW 16
#define V_LD(p) _mm512_loadu_ps(p)
#define V_ST(p, x) _mm512_storeu_ps((p), (x))
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_MUL(a, b) _mm512_mul_ps((a), (b))
#define V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_RELU(x) _mm512_max_ps((x), _mm512_setzero_ps())
#define V_POS(x, ref) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((ref), _mm512_setzero_ps(), _CMP_GT_OQ), (x))
#define V_HSUM(x) _mm512_reduce_add_ps(x)

#endif
