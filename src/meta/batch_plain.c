/* batch_plain.c: the batch engine (meta/batch_impl.h) over plain loops: one float per
 * "vector". It runs on any processor, and it is the reference the tests hold the AVX-512
 * kernels to. */
#include "meta/batch_int.h"

#include <math.h>

#include "meta/vec_plain.h"

/* Row r of C is set up (bias, zero or kept), then K rank-1 updates walk B's rows contiguously,
 * then the epilogue. */
static void k_gemm(size_t M, size_t N, size_t K, const float *A, size_t ars, size_t aks, const float *B,
                   size_t ldb, float *C, size_t ldc, int mode, const float *bias, int epi, const float *ref,
                   size_t ldref)
{
    for (size_t r = 0; r < M; r++) {
        float *c = C + r * ldc;
        if (mode == BT_SET)
            for (size_t j = 0; j < N; j++) c[j] = 0;
        else if (mode == BT_BIAS)
            for (size_t j = 0; j < N; j++) c[j] = bias[j];
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

static void k_nt(size_t M, size_t O, size_t K, const float *A, size_t lda, const float *B, size_t ldb,
                 float *C, size_t ldc, const float *bias, int acc)
{
    for (size_t r = 0; r < M; r++)
        for (size_t o = 0; o < O; o++) {
            float s = 0;
            for (size_t k = 0; k < K; k++) s += A[r * lda + k] * B[o * ldb + k];
            float *c = C + r * ldc + o;
            *c = (acc ? *c : bias ? bias[o] : 0) + s;
        }
}

static int k_equal(const float *a, const float *b, size_t n)
{
    return !memcmp(a, b, n * sizeof *a);
}

static void k_copy(float *dst, const float *src, size_t n)
{
    for (size_t j = 0; j < n; j++) dst[j] = src[j];
}

static void k_add(float *dst, const float *src, size_t n)
{
    for (size_t j = 0; j < n; j++) dst[j] += src[j];
}

#define BT_RUN bt_run_plain
#include "meta/batch_impl.h"
