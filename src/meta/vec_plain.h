/* vec_plain.h: the vector vocabulary the batch kernels are written in (meta/batch_impl.h,
 * meta/batch_embed_impl.h), over plain floats: one float a "vector", for any processor and as
 * the reference the vector kernels are tested against. */
#ifndef LM_META_VEC_PLAIN_H
#define LM_META_VEC_PLAIN_H

typedef float vf;
#define VW 1
#define V_LD(p) (*(p))
#define V_ST(p, x) (*(p) = (x))
#define V_ADD(a, b) ((a) + (b))
#define V_MUL(a, b) ((a) * (b))
#define V_FMA(a, b, c) ((a) * (b) + (c))
#define V_SET1(x) (x)
#define V_ZERO() 0.0f
#define V_RELU(x) ((x) > 0 ? (x) : 0.0f)
#define V_POS(x, ref) ((ref) > 0 ? (x) : 0.0f)
#define V_HSUM(x) (x)

#endif
