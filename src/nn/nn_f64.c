/* nn_f64.c: the layer kernels and MLP passes in double, for gradient checks of whole
 * algorithms against finite differences. Same code as nn_f32.c; see nn/nn.h. */
#include "nn/nn.h"

#include <math.h>
#include <string.h>

#define REAL double
#define LM_NN_FN(name) name##_f64
#define LM_NN_EXP exp
#define LM_NN_LOG1P log1p

#include "nn/layers_impl.h"
#include "nn/mlp_impl.h"
