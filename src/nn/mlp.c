/* mlp.c: the MLP's description (widths, parameter and cache layouts) and the size queries,
 * shared by both precisions. The passes themselves are in nn/mlp_impl.h. */
#include "nn/nn.h"

#include <string.h>

/* a * b + c, or 0 with *ovf set on overflow (sizes come from configuration files). */
static size_t mul_add(size_t a, size_t b, size_t c, int *ovf)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) {
        *ovf = 1;
        return 0;
    }
    return r;
}

int lm_mlp_init(lm_mlp *m, const size_t *sizes, size_t nsizes, double dropout, lm_err *err)
{
    LM_ASSERT(m != NULL);
    memset(m, 0, sizeof *m);
    if (!sizes || nsizes < 2)
        return lm_err_set(err, LM_EINVAL, "mlp: needs at least an input and an output width");
    if (nsizes - 1 > LM_MLP_MAX_LAYERS)
        return lm_err_set(err, LM_EINVAL, "mlp: %zu layers, at most %d", nsizes - 1, LM_MLP_MAX_LAYERS);
    for (size_t i = 0; i < nsizes; i++)
        if (sizes[i] == 0) return lm_err_set(err, LM_EINVAL, "mlp: width %zu is 0", i);
    if (!(dropout >= 0.0 && dropout < 1.0))
        return lm_err_set(err, LM_EINVAL, "mlp: dropout %g is outside [0, 1)", dropout);

    size_t L = nsizes - 1;
    m->nlayers = L;
    memcpy(m->sizes, sizes, nsizes * sizeof *sizes);
    m->dropout = dropout;

    int ovf = 0;
    size_t off = 0, row = 0, tan_row = 0;
    for (size_t l = 0; l < L; l++) {
        size_t I = sizes[l], O = sizes[l + 1];
        m->w_off[l] = off;
        off = mul_add(O, I, off, &ovf);
        m->b_off[l] = off;
        off = mul_add(O, 1, off, &ovf);
        if (l + 1 < L) { /* hidden: activations (and masks) are cached */
            m->act_row_off[l] = row;
            row = mul_add(O, 1, row, &ovf);
            if (dropout > 0.0) {
                m->mask_row_off[l] = row;
                row = mul_add(O, 1, row, &ovf);
            }
            m->tan_row_off[l] = tan_row;
            tan_row = mul_add(O, 1, tan_row, &ovf);
            if (O > m->max_hidden) m->max_hidden = O;
        }
    }
    if (ovf) {
        memset(m, 0, sizeof *m);
        return lm_err_set(err, LM_EINVAL, "mlp: parameter count overflows");
    }
    m->nparams = off;
    m->cache_row = row;
    m->tan_cache_row = tan_row;
    return LM_OK;
}

size_t lm_mlp_nparams(const lm_mlp *m)
{
    return m->nparams;
}

size_t lm_mlp_cache_size(const lm_mlp *m, size_t B)
{
    return B * m->cache_row;
}

size_t lm_mlp_tan_cache_size(const lm_mlp *m, size_t B)
{
    return B * m->tan_cache_row;
}

/* lm_mlp_backward ping-pongs the gradient of one hidden layer's output between two buffers. */
size_t lm_mlp_work_size(const lm_mlp *m, size_t B)
{
    return 2 * B * m->max_hidden;
}

/* lm_mlp_backward_tan ping-pongs the gradient and its tangent. */
size_t lm_mlp_tan_work_size(const lm_mlp *m, size_t B)
{
    return 4 * B * m->max_hidden;
}
