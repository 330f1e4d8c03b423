/* batch_embed_plain.c: the embedding engine (meta/batch_embed_impl.h) over plain loops, one
 * float per "vector". It runs on any processor, and it is the reference the tests hold the
 * vector kernels to. */
#include "meta/batch_embed_int.h"

#include <math.h>

#include "meta/vec_plain.h"

/* Row r of C is set up (Cin's row, the bias or zero), then K rank-1 updates walk B's rows
 * contiguously, then the epilogue. Cin may be C. */
static void k_gemm(size_t M, size_t N, size_t K, const float *A, size_t ars, size_t aks, const float *B,
                   size_t ldb, float *C, size_t ldc, const float *Cin, size_t ldcin, const float *bias,
                   int epi, const float *ref, size_t ldref)
{
    for (size_t r = 0; r < M; r++) {
        float *c = C + r * ldc;
        for (size_t j = 0; j < N; j++) c[j] = Cin ? Cin[r * ldcin + j] : bias ? bias[j] : 0;
        for (size_t k = 0; k < K; k++) {
            float a = A[r * ars + k * aks];
            const float *b = B + k * ldb;
            for (size_t j = 0; j < N; j++) c[j] += a * b[j];
        }
        if (epi == BT_EPI_RELU)
            for (size_t j = 0; j < N; j++) c[j] = c[j] > 0 ? c[j] : 0;
        else if (epi == BT_EPI_POS)
            for (size_t j = 0; j < N; j++) c[j] = ref[r * ldref + j] > 0 ? c[j] : 0;
    }
}

#define BE_RUN be_run_plain
#include "meta/batch_embed_impl.h"
