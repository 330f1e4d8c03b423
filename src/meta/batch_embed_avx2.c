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

#include <math.h>

#include "meta/vec_avx2.h"
#define BE_UNROLL(n) V_UNROLL(n)

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
