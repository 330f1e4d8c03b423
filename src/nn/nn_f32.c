/* nn_f32.c: the layer kernels and MLP passes in float (production precision). The code is in
 * nn/layers_impl.h and nn/mlp_impl.h, written over REAL; see nn/nn.h. */
#include "nn/nn.h"

#include <math.h>
#include <string.h>

#define REAL float
#define LM_NN_FN(name) name##_f32
#define LM_NN_EXP expf
#define LM_NN_LOG1P log1pf

#include "nn/layers_impl.h"
#include "nn/mlp_impl.h"
