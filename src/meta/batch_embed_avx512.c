/* batch_embed_avx512.c: the embedding engine (meta/batch_embed_impl.h) over AVX-512 kernels.
 * The whole file is compiled for AVX-512F/VL/BW/DQ + FMA whatever the build's -march, and
 * meta/batch_embed.c calls it only on a processor that has them (__builtin_cpu_supports).
 * The products are the impl's register-blocked tiles: R rows by NV vectors of 16 columns
 * (R = 12, 10, 8, 6 for NV = 1 .. 4, as meta/batch_avx512.c measured on these shapes). */
#include "meta/batch_embed_int.h"

#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#pragma clang attribute push(                                                                                \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2")
#endif

#include <math.h>

#include "meta/vec_avx512.h"
#define BE_UNROLL(n) V_UNROLL(n)

#define BE_TILED
#define BE_RUN be_run_avx512
#include "meta/batch_embed_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else /* not x86: meta/batch_embed.c never selects this kernel */
void be_run_avx512(const lm_meta_embed_plan *p, lm_meta_embed_ws *w, const lm_rows_f32 *r, uint32_t steps,
                   float alpha, int pool, float *out)
{
    LM_UNUSED(p), LM_UNUSED(w), LM_UNUSED(r), LM_UNUSED(steps), LM_UNUSED(alpha);
    LM_UNUSED(pool), LM_UNUSED(out);
    LM_ASSERT(!"no x86 vector kernels on this processor");
}
#endif
