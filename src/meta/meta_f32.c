/* meta_f32.c: the network passes, per-task algorithms and row gathering in float (production
 * precision). The code is in meta/net_impl.h, meta/algo_impl.h and meta/rows_impl.h, written
 * over REAL; see meta/meta.h. */
#include "meta/meta.h"

#include <math.h>
#include <string.h>

#define REAL float
#define LM_NN_FN(name) name##_f32
#define LM_META_FN(name) name##_f32

#include "meta/net_impl.h"
#include "meta/algo_impl.h"
#include "meta/rows_impl.h"
