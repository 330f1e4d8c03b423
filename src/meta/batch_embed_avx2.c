/* batch_embed_avx2.c: the embedding engine (meta/batch_embed_impl.h) over AVX2 + FMA kernels,
 * for x86-64 processors without AVX-512. Compiled for AVX2/FMA whatever the build's -march;
 * meta/batch_embed.c calls it only where __builtin_cpu_supports says so. Tiles of R rows by
 * NV vectors of 8 columns in 16 registers: R = 12 for NV = 1, 6 for NV = 2. */
#include "meta/batch_embed_int.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,bmi,bmi2")
#endif

#include <immintrin.h>
#include <math.h>

#if defined(__clang__)
#define BE_UNROLL(n) _Pragma("unroll")
#else
#define BE_STR(x) #x
#define BE_UNROLL(n) _Pragma(BE_STR(GCC unroll n))
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

static inline float hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define V_HSUM(x) hsum8(x)

#define BE_TILED
#define BE_RUN be_run_avx2
#include "meta/batch_embed_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else /* not x86: meta/batch_embed.c never selects this kernel */
void be_run_avx2(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r, uint32_t steps,
                 float alpha, int pool, float *out)
{
    LM_UNUSED(p), LM_UNUSED(w), LM_UNUSED(r), LM_UNUSED(steps), LM_UNUSED(alpha);
    LM_UNUSED(pool), LM_UNUSED(out);
    LM_ASSERT(!"no x86 vector kernels on this processor");
}
#endif
